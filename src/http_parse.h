/* http_parse.h -- HTTP/1.1 request framing by RFC 9112, over bytes held by the caller (pure:
 * no I/O, no allocation, no globals). Private to src/.
 *
 * A request head is parsed whole, once its empty line has arrived, in place: the results
 * point into the caller's buffer and copy nothing. A body is framed by Content-Length or
 * decoded from chunked coding in place (the decoded bytes move down over the chunk framing).
 * Anything RFC 9112 lets a server refuse, and anything two parsers could read two ways, is
 * refused: see tally_http_frame(). */
#ifndef TALLY_HTTP_PARSE_H
#define TALLY_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TALLY_HTTP_HEAD_MAX 98304 /* bytes of a request line and headers; more is a 431 */
#define TALLY_HTTP_FIELDS_MAX 100 /* header lines; more is a 431 */
#define TALLY_HTTP_XFF_MAX 8      /* X-Forwarded-For lines kept */

/* Methods, as bits so that a route can name the ones it takes. */
enum tally_http_method {
    TALLY_HTTP_GET = 1 << 0,
    TALLY_HTTP_HEAD = 1 << 1,
    TALLY_HTTP_POST = 1 << 2,
    TALLY_HTTP_PUT = 1 << 3,
    TALLY_HTTP_DELETE = 1 << 4,
    TALLY_HTTP_OPTIONS = 1 << 5,
    TALLY_HTTP_PATCH = 1 << 6,
    TALLY_HTTP_TRACE = 1 << 7,
    TALLY_HTTP_CONNECT = 1 << 8,
};

/* A piece of the caller's buffer. */
struct tally_http_span {
    const char *p;
    size_t len;
};

/* The header fields tally reads (p NULL when absent; the first line of each counts). */
enum tally_http_field {
    TALLY_HF_CONTENT_TYPE,
    TALLY_HF_IDEMPOTENCY_KEY,
    TALLY_HF_ORIGIN,
    TALLY_HF_AUTHORIZATION,
    TALLY_HF_USER_AGENT,
    TALLY_HF_IF_NONE_MATCH,
    TALLY_HF_PURPOSE, /* Sec-Purpose, Purpose, X-Purpose or X-Moz */
    TALLY_HF_WANTED
};

/* A parsed head. Every span points into the buffer given to tally_http_parse_head(). */
struct tally_http_head {
    const char *base; /* the buffer's first byte (spans follow the buffer when it moves) */
    unsigned method;  /* one enum tally_http_method; 0 when unknown */
    unsigned minor;   /* HTTP/1.MINOR: 0 or 1 (1.2 and later read as 1.1) */
    struct tally_http_span method_name, target;
    struct tally_http_span field[TALLY_HF_WANTED];
    struct tally_http_span xff[TALLY_HTTP_XFF_MAX];
    unsigned n_fields, n_xff;
    uint64_t content_length; /* when HAS_LENGTH */
    bool has_length, chunked;
    bool keep_alive;      /* by version and Connection */
    bool expect_continue; /* Expect: 100-continue */
};

/* What went wrong: an HTTP status, a JSON error code and a message for the client. */
struct tally_http_refusal {
    int status;
    const char *code, *message;
};

/* Where a request's parts lie, once whole: offsets from the start of the bytes framed. */
struct tally_http_framer {
    /* Private. Zero it (tally_http_framer_reset()) before each request. */
    size_t scan;     /* the search for the head's end resumes here */
    size_t head_len; /* 0 until the head is whole */
    int chunk_state;
    uint64_t chunk_left; /* bytes of the current chunk still to come */
    size_t in, out;      /* chunked: read and write positions in the body */
    size_t body_max;     /* the body's bound, once the head is whole */
    char too_large[48];  /* the 413's message */
    /* Public, once tally_http_frame() returned TALLY_HTTP_FRAMED. */
    struct tally_http_head head; /* valid from TALLY_HTTP_BODY_MORE on */
    size_t body_len;             /* decoded */
    size_t total;                /* bytes the request took, head and body as sent */
};

enum tally_http_frame_result {
    TALLY_HTTP_MORE = 0,      /* give more bytes (the head is not whole yet) */
    TALLY_HTTP_BODY_MORE = 1, /* the head is whole (HEAD is valid); the body is not */
    TALLY_HTTP_FRAMED = 2,    /* the request is whole: HEAD, BODY_LEN and TOTAL are set */
    TALLY_HTTP_REFUSED = -1,  /* *WHY says why; the connection must close after the answer */
};

void tally_http_framer_reset(struct tally_http_framer *f);

/* Frame the request that starts at BUF[0], LEN bytes of which have arrived. Called again with
 * the same F and the same bytes (BUF may have moved, LEN may have grown) until it returns
 * TALLY_HTTP_FRAMED or TALLY_HTTP_REFUSED. BODY_MAX bounds the body (413). A chunked body is
 * decoded in place: on TALLY_HTTP_FRAMED it is BUF[HEAD.len .. +BODY_LEN); F->HEAD's spans
 * point into BUF as given to the latest call. */
enum tally_http_frame_result tally_http_frame(struct tally_http_framer *f, char *buf, size_t len,
                                              size_t body_max, struct tally_http_refusal *why);

/* The bound of a request's body by its HEAD, once whole (ARG: the caller's). */
typedef size_t tally_http_body_max_fn(const struct tally_http_head *head, void *arg);

/* tally_http_frame(), with the body's bound chosen by BODY_MAX(head, ARG) once the head is
 * whole (asked once per request). A REFUSED's message may point into F: use it before F is
 * reset. */
enum tally_http_frame_result tally_http_frame_by(struct tally_http_framer *f, char *buf, size_t len,
                                                 tally_http_body_max_fn *body_max, void *arg,
                                                 struct tally_http_refusal *why);

/* The body's bound, once the head is whole. */
static inline size_t tally_http_framer_body_max(const struct tally_http_framer *f)
{
    return f->body_max;
}

/* The head's length once whole (0 before). */
static inline size_t tally_http_framer_head_len(const struct tally_http_framer *f)
{
    return f->head_len;
}

/* Parse the head in BUF[0..LEN), which ends with its empty line. Returns 0, or -1 with *WHY
 * filled. */
int tally_http_parse_head(const char *buf, size_t len, struct tally_http_head *out,
                          struct tally_http_refusal *why);

/* The method named by the LEN bytes at P (0 when unknown), and its name from a bit. */
unsigned tally_http_method_of(const char *p, size_t len);

/* Is the LEN-byte token list at P (a Connection or Transfer-Encoding value) holding TOKEN,
 * case-insensitively? */
bool tally_http_list_has(const char *p, size_t len, const char *token);

#endif
