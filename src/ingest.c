/* ingest.c -- turns a POST /v1/events body or a pixel query string into a validated batch.
 *
 * Pure: bytes in, a batch or an error out; no I/O, no logging, no allocation, no state
 * between calls. Names, UTF-8 and article ids, errors and the pixel's query string live here;
 * a JSON body is read by the event scanner in ingest_json.c. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/ingest.h"
#include "tally/uri.h"
#include "ingest_private.h"

static const char *const ingest_types[TALLY_EVENT_TYPES] = {"view", "share", "comment",
                                                               "engage"};

static const char *const ingest_networks[TALLY_NETWORKS] = {
#define X(name, text) text,
    TALLY_NETWORK_MAP(X)
#undef X
};

/* ---- Names ---- */

const char *tally_event_type_name(enum tally_event_type t)
{
    return (unsigned)t < TALLY_EVENT_TYPES ? ingest_types[t] : "unknown";
}

const char *tally_network_name(enum tally_network n)
{
    return (unsigned)n < TALLY_NETWORKS ? ingest_networks[n] : "unknown";
}

/* Index of S (LEN bytes) in NAMES (N entries), or -1. */
static int ingest_lookup(const char *const *names, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -1;
}

enum tally_network tally_network_from(const char *s, size_t len)
{
    int i = ingest_lookup(ingest_networks, TALLY_NETWORK_OTHER, s, len);

    return i < 0 ? TALLY_NETWORK_OTHER : (enum tally_network)i;
}

/* ---- UTF-8 and article ids ---- */

/* Length of a sequence starting with B (0 if B cannot start one) and the range its second byte
 * must fall in: Unicode table 3-7, which leaves out overlongs, surrogates and > U+10FFFF. */
static size_t utf8_lead(unsigned char b, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b < 0xC2 || b > 0xF4)
        return 0;
    if (b < 0xE0)
        return 2;
    if (b == 0xE0)
        *lo = 0xA0;
    else if (b == 0xED)
        *hi = 0x9F;
    if (b < 0xF0)
        return 3;
    if (b == 0xF0)
        *lo = 0x90;
    else if (b == 0xF4)
        *hi = 0x8F;
    return 4;
}

/* Length of the well-formed sequence at S (AVAIL > 0 bytes left), its code point in *CP; 0 if
 * the bytes there are not well-formed UTF-8. */
static size_t utf8_seq(const unsigned char *s, size_t avail, uint32_t *cp)
{
    unsigned char lo, hi;
    size_t n = utf8_lead(s[0], &lo, &hi);
    uint32_t c;

    if (n == 0 || n > avail)
        return 0;
    c = n == 1 ? s[0] : s[0] & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++) {
        if (s[i] < lo || s[i] > hi)
            return 0;
        c = c << 6 | (s[i] & 0x3Fu);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = c;
    return n;
}

bool tally_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;

    for (size_t i = 0, n; i < len; i += n)
        if ((n = utf8_seq(p + i, len - i, &cp)) == 0)
            return false;
    return true;
}

/* Controls (C0, DEL, C1), Unicode White_Space (U+0085 is both) and the bidirectional
 * embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069): an id holding one
 * would turn the text around it when shown ("\u202Eevil.com/gnp.exe" reads "exe.png/..."). */
static bool ingest_cp_allowed(uint32_t cp)
{
    if (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0))
        return false;
    if (cp < 0x1680)
        return true;
    return cp != 0x1680 && !(cp >= 0x2000 && cp <= 0x200A) && cp != 0x2028 && cp != 0x2029 &&
           !(cp >= 0x202A && cp <= 0x202E) && !(cp >= 0x2066 && cp <= 0x2069) && cp != 0x202F &&
           cp != 0x205F && cp != 0x3000;
}

bool tally_article_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;

    if (len == 0 || len > TALLY_ARTICLE_MAX)
        return false;
    for (size_t i = 0, n; i < len; i += n) {
        n = utf8_seq(p + i, len - i, &cp);
        if (n == 0 || !ingest_cp_allowed(cp))
            return false;
    }
    return true;
}

/* ---- Errors ---- */

/* Fill ERR and return TALLY_EINVAL. The message starts with where the problem is:
 * "events[IDX].FIELD", "events[IDX]", "FIELD" or "body" (IDX < 0: the body is one event). */
static int ingest_fail(struct tally_error *err, const char *code, long idx, const char *field,
                       const char *what)
{
    err->code = code;
    if (idx >= 0 && field != NULL)
        snprintf(err->message, sizeof(err->message), "events[%ld].%s: %s", idx, field, what);
    else if (idx >= 0)
        snprintf(err->message, sizeof(err->message), "events[%ld]: %s", idx, what);
    else
        snprintf(err->message, sizeof(err->message), "%s: %s", field != NULL ? field : "body",
                 what);
    return TALLY_EINVAL;
}

/* ---- For the event scanner (ingest_private.h) ---- */

int tally_ingest_fail(struct tally_error *err, const char *code, long idx, const char *field,
                      const char *what)
{
    return ingest_fail(err, code, idx, field, what);
}

size_t tally_utf8_seq(const unsigned char *s, size_t avail, uint32_t *cp)
{
    return utf8_seq(s, avail, cp);
}

int tally_ingest_type_from(const char *s, size_t len)
{
    return ingest_lookup(ingest_types, TALLY_EVENT_TYPES, s, len);
}

/* ---- The pixel query string ---- */

enum { Q_TYPE, Q_ARTICLE, Q_NETWORK, Q_DELTA, Q_WORDS, Q_SECONDS, Q_READ, Q_PARAMS };

static const char *const query_names[Q_PARAMS] = {"type",  "article", "network", "delta",
                                                  "words", "seconds", "read"};

/* The known parameters of one query, still percent-encoded; VAL[i] is NULL when absent. */
struct query_raw {
    const char *val[Q_PARAMS];
    size_t len[Q_PARAMS];
};

static int query_collect(const char *query, size_t len, struct query_raw *raw,
                         struct tally_error *err)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen;

    memset(raw, 0, sizeof(*raw));
    tally_query_iter_init(&it, query, len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        int i = 0;

        while (i < Q_PARAMS && !tally_query_key_is(k, klen, query_names[i]))
            i++;
        if (i == Q_PARAMS) /* utm_source and friends */
            continue;
        if (raw->val[i] != NULL)
            return ingest_fail(err, "invalid_parameter", -1, query_names[i],
                               "given more than once");
        raw->val[i] = v;
        raw->len[i] = vlen;
    }
    return 0;
}

/* Decode parameter I into BUF (CAP bytes): its length, or -1 with ERR filled. */
static long query_decode(const struct query_raw *raw, int i, char *buf, size_t cap,
                         struct tally_error *err)
{
    long n = tally_uri_decode(raw->val[i], raw->len[i], buf, cap, TALLY_URI_PLUS_SPACE);

    if (n < 0)
        ingest_fail(err, i == Q_ARTICLE ? "invalid_article" : "invalid_parameter", -1,
                    query_names[i], "malformed percent-escape, %00 or too long");
    return n;
}

/* A plain decimal integer with an optional sign: no spaces, fraction or exponent. */
static bool query_delta(const char *s, size_t len, int16_t *delta)
{
    size_t i = len > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    int v = 0;

    if (i == len)
        return false;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
        if (v > TALLY_COMMENT_DELTA_MAX) /* also keeps "000...0001" from overflowing */
            return false;
    }
    *delta = (int16_t)(s[0] == '-' ? -v : v);
    return v != 0;
}

/* A plain decimal integer from 1 to MAX: no sign, spaces, fraction or exponent. */
static bool query_count(const char *s, size_t len, uint32_t max, uint32_t *out)
{
    uint32_t v = 0;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
        if (v > max) /* also keeps "000...0001" from overflowing */
            return false;
    }
    *out = v;
    return v != 0;
}

/* true or 1, false or 0. */
static bool query_bool(const char *s, size_t len, bool *out)
{
    if ((len == 4 && memcmp(s, "true", 4) == 0) || (len == 1 && s[0] == '1'))
        *out = true;
    else if ((len == 5 && memcmp(s, "false", 5) == 0) || (len == 1 && s[0] == '0'))
        *out = false;
    else
        return false;
    return true;
}

static int query_type(const struct query_raw *raw, char *buf, size_t cap, struct tally_event *ev,
                      struct tally_error *err)
{
    long n;
    int type;

    if (raw->val[Q_TYPE] == NULL)
        return ingest_fail(err, "invalid_type", -1, "type", "missing");
    if ((n = query_decode(raw, Q_TYPE, buf, cap, err)) < 0)
        return TALLY_EINVAL;
    type = ingest_lookup(ingest_types, TALLY_EVENT_TYPES, buf, (size_t)n);
    if (type < 0)
        return ingest_fail(err, "invalid_type", -1, "type", MSG_TYPE);
    ev->type = (uint8_t)type;
    ev->network = TALLY_NETWORK_OTHER;
    ev->delta = 1;
    ev->seconds = 0;
    ev->read = false;
    ev->words = 0;
    return 0;
}

/* The id is decoded straight into its place at the start of OUT's text: one that does not fit
 * in TALLY_ARTICLE_MAX bytes is invalid anyway. */
static int query_article(const struct query_raw *raw, struct tally_batch *out,
                         struct tally_event *ev, struct tally_error *err)
{
    long n;

    if (raw->val[Q_ARTICLE] == NULL)
        return ingest_fail(err, "invalid_article", -1, "article", "missing");
    if ((n = query_decode(raw, Q_ARTICLE, out->text, TALLY_ARTICLE_MAX, err)) < 0)
        return TALLY_EINVAL;
    if (!tally_article_valid(out->text, (size_t)n))
        return ingest_fail(err, "invalid_article", -1, "article", MSG_ARTICLE);
    out->text[n] = '\0';
    out->text_len = (size_t)n + 1;
    ev->article = out->text;
    ev->article_len = (uint16_t)n;
    return 0;
}

/* seconds (required) and read (default false) of an engage event. */
static int query_engage(const struct query_raw *raw, char *buf, size_t cap,
                        struct tally_event *ev, struct tally_error *err)
{
    uint32_t seconds;
    long n;

    if (raw->val[Q_SECONDS] == NULL)
        return ingest_fail(err, "invalid_seconds", -1, "seconds", "missing");
    if ((n = query_decode(raw, Q_SECONDS, buf, cap, err)) < 0)
        return TALLY_EINVAL;
    if (!query_count(buf, (size_t)n, TALLY_ENGAGE_SECONDS_MAX, &seconds))
        return ingest_fail(err, "invalid_seconds", -1, "seconds", MSG_SECONDS);
    ev->seconds = (uint16_t)seconds;
    if (raw->val[Q_READ] != NULL) {
        if ((n = query_decode(raw, Q_READ, buf, cap, err)) < 0)
            return TALLY_EINVAL;
        if (!query_bool(buf, (size_t)n, &ev->read))
            return ingest_fail(err, "invalid_read", -1, "read", MSG_READ);
    }
    return 0;
}

/* As in a POST, network counts for shares only, delta for comments only, words for views
 * only, seconds and read for engage only; for other types they are not even decoded, like
 * unknown parameters. */
static int query_extras(const struct query_raw *raw, char *buf, size_t cap, struct tally_event *ev,
                        struct tally_error *err)
{
    long n;

    if (ev->type == TALLY_EVENT_SHARE && raw->val[Q_NETWORK] != NULL) {
        if ((n = query_decode(raw, Q_NETWORK, buf, cap, err)) < 0)
            return TALLY_EINVAL;
        ev->network = (uint8_t)tally_network_from(buf, (size_t)n);
    }
    if (ev->type == TALLY_EVENT_COMMENT && raw->val[Q_DELTA] != NULL) {
        if ((n = query_decode(raw, Q_DELTA, buf, cap, err)) < 0)
            return TALLY_EINVAL;
        if (!query_delta(buf, (size_t)n, &ev->delta))
            return ingest_fail(err, "invalid_delta", -1, "delta", MSG_DELTA);
    }
    if (ev->type == TALLY_EVENT_VIEW && raw->val[Q_WORDS] != NULL) {
        if ((n = query_decode(raw, Q_WORDS, buf, cap, err)) < 0)
            return TALLY_EINVAL;
        if (!query_count(buf, (size_t)n, TALLY_WORDS_MAX, &ev->words))
            return ingest_fail(err, "invalid_words", -1, "words", MSG_WORDS);
    }
    return ev->type == TALLY_EVENT_ENGAGE ? query_engage(raw, buf, cap, ev, err) : 0;
}

int tally_ingest_parse_query(const char *query, size_t len, struct tally_batch *out,
                             struct tally_error *err)
{
    /* type, network and delta are decoded one after another into the text after the id's
     * place: its size keeps "does not fit" for absurd values only. */
    char *scratch = out->text + TALLY_ARTICLE_MAX + 1;
    size_t cap = sizeof(out->text) - TALLY_ARTICLE_MAX - 1;
    struct query_raw raw;
    int rc = query_collect(query, len, &raw, err);

    out->n = 0;
    out->text_len = 0;
    if (rc == 0)
        rc = query_type(&raw, scratch, cap, &out->ev[0], err);
    if (rc == 0)
        rc = query_article(&raw, out, &out->ev[0], err);
    if (rc == 0)
        rc = query_extras(&raw, scratch, cap, &out->ev[0], err);
    if (rc == 0)
        out->n = 1;
    return rc;
}
