/* ingest.h -- turning request bytes into validated events.
 *
 * Everything here is pure: bytes in, a validated batch or an error out. No I/O, no globals,
 * no allocation that outlives a call. The HTTP layer calls it; the fuzzers and unit tests
 * call it directly. */
#ifndef TALLY_INGEST_H
#define TALLY_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TALLY_ARTICLE_MAX 256       /* bytes of an article id */
#define TALLY_BATCH_MAX 100         /* events in one POST */
#define TALLY_BODY_MAX 65536        /* bytes of a POST body; more is a 413 */
#define TALLY_JSON_DEPTH_MAX 8      /* nesting of arrays and objects in a body */
#define TALLY_EVENT_FIELDS_MAX 32   /* members of one event object */
#define TALLY_COMMENT_DELTA_MAX 1000
#define TALLY_ENGAGE_SECONDS_MAX 3600 /* seconds of one engage event */
#define TALLY_WORDS_MAX 1000000       /* words of an article, as a view reports them */

enum tally_event_type {
    TALLY_EVENT_VIEW,
    TALLY_EVENT_SHARE,
    TALLY_EVENT_COMMENT,
    TALLY_EVENT_ENGAGE,
    TALLY_EVENT_TYPES
};

/* The share networks of the contract, in the order they are reported. */
#define TALLY_NETWORK_MAP(X)                                                                       \
    X(FACEBOOK, "facebook")                                                                        \
    X(TWITTER, "twitter")                                                                          \
    X(LINKEDIN, "linkedin")                                                                        \
    X(REDDIT, "reddit")                                                                            \
    X(WHATSAPP, "whatsapp")                                                                        \
    X(TELEGRAM, "telegram")                                                                        \
    X(EMAIL, "email")                                                                              \
    X(COPY, "copy")                                                                                \
    X(NATIVE, "native")                                                                            \
    X(OTHER, "other")

enum tally_network {
#define X(name, text) TALLY_NETWORK_##name,
    TALLY_NETWORK_MAP(X)
#undef X
        TALLY_NETWORKS
};

/* One validated event. ARTICLE points into the batch that holds the event. */
struct tally_event {
    const char *article; /* ARTICLE_LEN bytes, valid per tally_article_valid(); NUL-terminated */
    uint16_t article_len;
    uint8_t type;    /* enum tally_event_type */
    uint8_t network; /* enum tally_network; TALLY_NETWORK_OTHER unless a share */
    int16_t delta;   /* comments: -1000..1000 and never 0; 1 for views and shares */
    uint16_t seconds; /* engage: 1..TALLY_ENGAGE_SECONDS_MAX; 0 for other types */
    bool read;        /* engage: the reader read the article through */
    uint32_t words;   /* views: 1..TALLY_WORDS_MAX as the page counted them; 0 when not given */
};

/* A validated batch of 1..TALLY_BATCH_MAX events. It is large (about 28 KiB): keep one per
 * worker and reuse it rather than putting it on a small stack. */
struct tally_batch {
    size_t n;
    struct tally_event ev[TALLY_BATCH_MAX];
    size_t text_len;                                        /* bytes used in TEXT */
    char text[TALLY_BATCH_MAX * (TALLY_ARTICLE_MAX + 1)];   /* article ids, each NUL-ended */
};

/* Why input was refused: CODE is a stable machine word for the "error" member of a 400 body
 * (e.g. "invalid_article"); MESSAGE names the field first ("events[2].article: ..."). */
struct tally_error {
    const char *code;
    char message[192];
};

/* Is S (LEN bytes) a valid article id: 1..256 bytes of valid UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF), no control characters (U+0000-U+001F, U+007F-U+009F)
 * and no whitespace (ASCII or Unicode White_Space)? */
bool tally_article_valid(const char *s, size_t len);

/* Is S (LEN bytes) valid UTF-8 in the sense of tally_article_valid() (any length, controls
 * allowed)? */
bool tally_utf8_valid(const char *s, size_t len);

/* Parse and validate a POST /v1/events body of LEN bytes (not NUL-terminated; may hold NULs).
 * The body is one event object or an array of 1..100 of them, as JSON text by RFC 8259 (no
 * byte-order mark, no trailing bytes, valid UTF-8, surrogate escapes in pairs), with tally's
 * rules on top: duplicate member names in an event or any object within it, a NUL or \u0000
 * anywhere, nesting deeper than TALLY_JSON_DEPTH_MAX and more than TALLY_EVENT_FIELDS_MAX
 * members in any object are errors; "delta", "seconds" and "words" must be integers (1.0 and
 * -2.5e1 are), "read" true or false; each is checked for the types it belongs to only. Unknown
 * members are ignored, whatever JSON value they hold. Comment events are returned as they
 * are: checking the token is the caller's business. Allocates nothing: OUT is filled in place,
 * article ids decoded into its text.
 * Returns 0 and fills OUT, or TALLY_EINVAL and fills ERR (OUT is then unspecified). Grammar
 * errors and crossed limits are answered in byte order, before any fault of an event (the
 * first faulty event is named, and within it: duplicates, type, article, delta, words,
 * seconds, read). */
int tally_ingest_parse(const char *body, size_t len, struct tally_batch *out,
                       struct tally_error *err);

/* Parse the query string of GET /v1/pixel.gif (QUERY, LEN bytes, without the '?') into a
 * one-event batch: type=view|share|comment|engage, article=ID, network=N (shares), delta=D
 * (comments), words=W (views), seconds=S and read=true|false|1|0 (engage). Values are
 * percent-decoded strictly (see tally_uri_decode()); repeated or unknown parameters follow
 * the POST rules (a repeated known parameter is an error). Returns 0 or TALLY_EINVAL. */
int tally_ingest_parse_query(const char *query, size_t len, struct tally_batch *out,
                             struct tally_error *err);

/* Names, for replies and keys. */
const char *tally_event_type_name(enum tally_event_type t);
const char *tally_network_name(enum tally_network n);

/* The network named by S (LEN bytes), exactly and case-sensitively; TALLY_NETWORK_OTHER for
 * anything else. */
enum tally_network tally_network_from(const char *s, size_t len);

#endif
