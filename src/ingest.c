/* ingest.c -- turns a POST /v1/events body or a pixel query string into a validated batch.
 *
 * Pure: bytes in, a batch or an error out; no I/O, no logging, no state between calls.
 *
 * A JSON body is checked twice. First a single pass over the raw bytes (the pre-scan) refuses
 * what cJSON 1.7.15 would accept or silently truncate (a NUL, \u0000, raw control characters,
 * invalid UTF-8, "01"), and what would make it allocate for nothing (deep nesting, element 101
 * of a batch, huge objects). Only then does cJSON build a tree, which the validators walk.
 * The pre-scan's limits are answered as soon as they are crossed, so they take precedence
 * over syntax errors later in the same body. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tally/error.h"
#include "tally/ingest.h"
#include "tally/uri.h"

#define INGEST_STR_(x) #x
#define INGEST_STR(x) INGEST_STR_(x)

#define MSG_ARTICLE                                                                                \
    "1-" INGEST_STR(TALLY_ARTICLE_MAX) " bytes of UTF-8, no whitespace or control characters"
#define MSG_TYPE "must be view, share or comment"
#define MSG_DELTA                                                                                  \
    "must be an integer from -" INGEST_STR(TALLY_COMMENT_DELTA_MAX) " to " INGEST_STR(             \
        TALLY_COMMENT_DELTA_MAX) ", not 0"
#define MSG_BATCH "more than " INGEST_STR(TALLY_BATCH_MAX) " events"
#define MSG_MEMBERS "an object with more than " INGEST_STR(TALLY_EVENT_FIELDS_MAX) " members"
#define MSG_SHAPE "must be an event object or an array of 1-" INGEST_STR(TALLY_BATCH_MAX) " of them"
#define MSG_NUL "NUL byte not allowed"

/* Bodies shorter than this are copied on the stack; a 100-event batch is about 5 KiB. */
#define INGEST_STACK_COPY 4096

static const char *const ingest_types[TALLY_EVENT_TYPES] = {"view", "share", "comment"};

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

/* Controls (C0, DEL, C1) and Unicode White_Space; U+0085 is both. */
static bool ingest_cp_allowed(uint32_t cp)
{
    if (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0))
        return false;
    if (cp < 0x1680)
        return true;
    return cp != 0x1680 && !(cp >= 0x2000 && cp <= 0x200A) && cp != 0x2028 && cp != 0x2029 &&
           cp != 0x202F && cp != 0x205F && cp != 0x3000;
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

static int ingest_malformed(struct tally_error *err, const char *what)
{
    return ingest_fail(err, "malformed_json", -1, NULL, what);
}

/* ---- Pre-scan ---- */

struct scan {
    const unsigned char *p, *end;
    int depth;                                    /* containers open at P */
    bool top_array;                               /* the body is an array of events */
    unsigned char open[TALLY_JSON_DEPTH_MAX + 1]; /* '{' or '[' at each depth (1-based) */
    unsigned commas[TALLY_JSON_DEPTH_MAX + 1];    /* commas seen so far at each depth */
};

static bool json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool json_ws_only(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!json_ws((unsigned char)p[i]))
            return false;
    return true;
}

/* The event that the scan is inside, for messages; -1 for a single-event body. */
static long scan_event_index(const struct scan *s)
{
    return s->top_array && s->depth >= 1 ? (long)s->commas[1] : -1;
}

/* P is at a backslash inside a string. Only the backslash and the letter after it are
 * consumed: the hex digits of \uXXXX are plain ASCII and get the usual checks. Returns the
 * bytes consumed, or 0 with ERR filled. */
static size_t scan_escape(const unsigned char *p, const unsigned char *end, struct tally_error *err)
{
    if (end - p < 2 || p[1] < 0x20 || p[1] >= 0x7F) {
        ingest_malformed(err, end - p >= 2 && p[1] == 0 ? MSG_NUL : "malformed escape");
        return 0;
    }
    /* cJSON decodes \u0000 and ends the C string there, truncating the value. JSON spells the
     * escape with a lower-case u only, and the digits of zero have no case. */
    if (p[1] == 'u' && end - p >= 6 && memcmp(p + 2, "0000", 4) == 0) {
        ingest_malformed(err, "\\u0000 escape not allowed");
        return 0;
    }
    return 2;
}

/* Bytes taken by the string character at P, or 0 with ERR filled. */
static size_t scan_string_char(const unsigned char *p, const unsigned char *end,
                               struct tally_error *err)
{
    size_t n = 1;
    uint32_t cp;

    if (*p == '\\')
        return scan_escape(p, end, err);
    if (*p < 0x20) {
        ingest_malformed(err, *p == 0 ? MSG_NUL : "control character in a string");
        return 0;
    }
    if (*p >= 0x80 && (n = utf8_seq(p, (size_t)(end - p), &cp)) == 0)
        ingest_malformed(err, "invalid UTF-8");
    return n;
}

static int scan_string(struct scan *s, struct tally_error *err)
{
    const unsigned char *p = s->p + 1;

    while (p < s->end && *p != '"') {
        size_t n = scan_string_char(p, s->end, err);

        if (n == 0)
            return TALLY_EINVAL;
        p += n;
    }
    if (p == s->end)
        return ingest_malformed(err, "unterminated string");
    s->p = p + 1;
    return 0;
}

static bool json_digits(const unsigned char **q, const unsigned char *end)
{
    const unsigned char *start = *q;

    while (*q < end && **q >= '0' && **q <= '9')
        (*q)++;
    return *q > start;
}

/* cJSON reads numbers with strtod() and so takes "01", "1." or "1.e5"; JSON does not. */
static int scan_number(struct scan *s, struct tally_error *err)
{
    const unsigned char *q = s->p, *end = s->end;
    bool ok = true;

    if (*q == '-')
        q++;
    if (q < end && *q == '0')
        q++;
    else if (!json_digits(&q, end))
        return ingest_malformed(err, "malformed number");
    if (q < end && *q == '.') {
        q++;
        ok = json_digits(&q, end);
    }
    if (ok && q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        ok = json_digits(&q, end);
    }
    if (!ok || (q < end && memchr("0123456789.eE+-", *q, 15) != NULL))
        return ingest_malformed(err, "malformed number");
    s->p = q;
    return 0;
}

static int scan_open(struct scan *s, unsigned char c, struct tally_error *err)
{
    if (s->depth == TALLY_JSON_DEPTH_MAX)
        return ingest_malformed(err, "nested deeper than " INGEST_STR(TALLY_JSON_DEPTH_MAX));
    if (s->depth == 0)
        s->top_array = c == '[';
    s->depth++;
    s->open[s->depth] = c;
    s->commas[s->depth] = 0;
    return 0;
}

static int scan_close(struct scan *s, unsigned char c, struct tally_error *err)
{
    if (s->depth == 0 || s->open[s->depth] != (c == '}' ? '{' : '['))
        return ingest_malformed(err, "unbalanced brackets");
    s->depth--;
    return 0;
}

static int scan_comma(struct scan *s, struct tally_error *err)
{
    unsigned n;

    if (s->depth == 0)
        return ingest_malformed(err, "comma outside an array or object");
    n = ++s->commas[s->depth];
    /* Element 101 starts here: answer now, so a 64 KiB "[1,1,1,...]" never reaches cJSON. */
    if (s->depth == 1 && s->top_array && n >= TALLY_BATCH_MAX)
        return ingest_fail(err, "batch_too_large", -1, NULL, MSG_BATCH);
    /* Finding duplicate names is quadratic in an object's size: keep every object small, not
     * only events (see ingest_check_object()). */
    if (s->open[s->depth] == '{' && n >= TALLY_EVENT_FIELDS_MAX)
        return ingest_fail(err, "invalid_event", scan_event_index(s), NULL, MSG_MEMBERS);
    return 0;
}

/* Anything but a string or a number. Letters and colons are left to cJSON's grammar. */
static int scan_other(struct scan *s, struct tally_error *err)
{
    unsigned char c = *s->p++;

    if (c == '{' || c == '[')
        return scan_open(s, c, err);
    if (c == '}' || c == ']')
        return scan_close(s, c, err);
    if (c == ',')
        return scan_comma(s, err);
    if (c == 0)
        return ingest_malformed(err, MSG_NUL);
    /* cJSON skips every byte <= 0x20 as whitespace; JSON allows only four of them. */
    if (c < 0x20 && !json_ws(c))
        return ingest_malformed(err, "control character outside a string");
    if (c >= 0x80)
        return ingest_malformed(err, "non-ASCII byte outside a string");
    return 0;
}

static int ingest_prescan(const char *body, size_t len, struct tally_error *err)
{
    struct scan s = {.depth = 0};
    int rc = 0;

    /* cJSON skips a UTF-8 byte-order mark; JSON senders must not send one (RFC 8259, 8.1), and
     * a body that one parser reads and another refuses is worse than a clear 400. */
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        return ingest_malformed(err, "byte-order mark not allowed");
    if (json_ws_only(body, len))
        return ingest_malformed(err, "empty");
    s.p = (const unsigned char *)body;
    s.end = s.p + len;
    while (rc == 0 && s.p < s.end) {
        if (*s.p == '"')
            rc = scan_string(&s, err);
        else if (*s.p == '-' || (*s.p >= '0' && *s.p <= '9'))
            rc = scan_number(&s, err);
        else
            rc = scan_other(&s, err);
    }
    return rc;
}

/* ---- Parsing ---- */

/* Parse the pre-scanned BODY into *ROOT. cJSON's own allocation failures look like syntax
 * errors to us (it does not say which), so they are answered as malformed JSON. */
static int ingest_parse_json(const char *body, size_t len, cJSON **root, struct tally_error *err)
{
    char small[INGEST_STACK_COPY];
    char *buf = len < sizeof(small) ? small : malloc(len + 1);
    const char *end = NULL;
    int rc = 0;

    if (buf == NULL) {
        err->code = "out_of_memory";
        snprintf(err->message, sizeof(err->message), "body: out of memory");
        return TALLY_ENOMEM;
    }
    /* cJSON is told the length, but a terminating NUL still stops over-reads of the kind fixed
     * in CVE-2023-53154 should an unpatched library slip in. */
    memcpy(buf, body, len);
    buf[len] = '\0';
    *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (*root == NULL) {
        rc = ingest_malformed(err, "malformed JSON");
    } else if (!json_ws_only(end, len - (size_t)(end - buf))) {
        rc = ingest_malformed(err, "trailing bytes after the JSON value");
        cJSON_Delete(*root);
        *root = NULL;
    }
    if (buf != small)
        free(buf);
    return rc;
}

/* ---- Validating the tree ---- */

static bool ingest_known_field(const char *name)
{
    return strcmp(name, "type") == 0 || strcmp(name, "article") == 0 ||
           strcmp(name, "network") == 0 || strcmp(name, "delta") == 0;
}

/* Duplicate names are refused in every object: parsers disagree on which one wins, and a body
 * that means one thing to us and another to the next reader is a smuggling vector. The
 * pre-scan has already capped the members, which keeps this quadratic loop cheap. */
static int ingest_check_object(const cJSON *obj, bool is_event, long idx, struct tally_error *err)
{
    size_t n = 0;

    for (const cJSON *a = obj->child; a != NULL; a = a->next) {
        if (++n > TALLY_EVENT_FIELDS_MAX)
            return ingest_fail(err, "invalid_event", idx, NULL, MSG_MEMBERS);
        for (const cJSON *b = obj->child; b != a; b = b->next) {
            if (strcmp(a->string, b->string) != 0)
                continue;
            if (is_event && ingest_known_field(a->string))
                return ingest_fail(err, "duplicate_key", idx, a->string, "given more than once");
            return ingest_fail(err, "duplicate_key", idx, NULL, "duplicate member name");
        }
    }
    return 0;
}

/* Check the unknown values nested in an event; the pre-scan bounds the depth. */
static int ingest_check_nested(const cJSON *item, long idx, struct tally_error *err)
{
    int rc = cJSON_IsObject(item) ? ingest_check_object(item, false, idx, err) : 0;

    for (const cJSON *c = item->child; rc == 0 && c != NULL; c = c->next)
        rc = ingest_check_nested(c, idx, err);
    return rc;
}

static int ingest_type(const cJSON *obj, long idx, struct tally_event *ev, struct tally_error *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    int type = -1;

    if (cJSON_IsString(t))
        type =
            ingest_lookup(ingest_types, TALLY_EVENT_TYPES, t->valuestring, strlen(t->valuestring));
    if (type < 0)
        return ingest_fail(err, "invalid_type", idx, "type", t == NULL ? "missing" : MSG_TYPE);
    ev->type = (uint8_t)type;
    ev->network = TALLY_NETWORK_OTHER;
    ev->delta = 1;
    return 0;
}

/* Copies the valid id S (LEN bytes) after the ids already in OUT and points EV at it. */
static void ingest_store_article(struct tally_batch *out, struct tally_event *ev, const char *s,
                                 size_t len)
{
    char *dst = out->text + out->text_len;

    assert(len <= TALLY_ARTICLE_MAX && out->text_len + len < sizeof(out->text));
    memcpy(dst, s, len);
    dst[len] = '\0';
    ev->article = dst;
    ev->article_len = (uint16_t)len;
    out->text_len += len + 1;
}

static int ingest_article(const cJSON *obj, long idx, struct tally_batch *out,
                          struct tally_event *ev, struct tally_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, "article");
    size_t len;

    if (a == NULL)
        return ingest_fail(err, "invalid_article", idx, "article", "missing");
    /* The pre-scan refused NUL and \u0000, so strlen() sees the whole value. */
    len = cJSON_IsString(a) ? strlen(a->valuestring) : 0;
    if (len == 0 || !tally_article_valid(a->valuestring, len))
        return ingest_fail(err, "invalid_article", idx, "article", MSG_ARTICLE);
    ingest_store_article(out, ev, a->valuestring, len);
    return 0;
}

/* Written as one range test that NaN fails too: JSON has no NaN or infinity, but cJSON turns
 * an overflowing literal such as 1e400 into HUGE_VAL. */
static bool ingest_delta_ok(double d)
{
    if (!(d >= -TALLY_COMMENT_DELTA_MAX && d <= TALLY_COMMENT_DELTA_MAX))
        return false;
    return d != 0 && (double)(int)d == d;
}

static int ingest_extras(const cJSON *obj, long idx, struct tally_event *ev,
                         struct tally_error *err)
{
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(obj, "network");
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(obj, "delta");

    if (ev->type == TALLY_EVENT_SHARE && cJSON_IsString(net))
        ev->network = (uint8_t)tally_network_from(net->valuestring, strlen(net->valuestring));
    if (ev->type != TALLY_EVENT_COMMENT || delta == NULL)
        return 0;
    /* valueint saturates (1e300 becomes INT_MAX) and truncates (1.5 becomes 1): not used. */
    if (!cJSON_IsNumber(delta) || !ingest_delta_ok(delta->valuedouble))
        return ingest_fail(err, "invalid_delta", idx, "delta", MSG_DELTA);
    ev->delta = (int16_t)delta->valuedouble;
    return 0;
}

/* Validate event OBJ (IDX in the array, or -1 for a single-event body) into OUT. */
static int ingest_event(const cJSON *obj, long idx, struct tally_batch *out,
                        struct tally_error *err)
{
    struct tally_event *ev = &out->ev[out->n];
    int rc;

    if (!cJSON_IsObject(obj))
        return ingest_fail(err, "invalid_event", idx, NULL, "must be an object");
    rc = ingest_check_object(obj, true, idx, err);
    for (const cJSON *c = obj->child; rc == 0 && c != NULL; c = c->next)
        rc = ingest_check_nested(c, idx, err);
    if (rc == 0)
        rc = ingest_type(obj, idx, ev, err);
    if (rc == 0)
        rc = ingest_article(obj, idx, out, ev, err);
    if (rc == 0)
        rc = ingest_extras(obj, idx, ev, err);
    if (rc == 0)
        out->n++;
    return rc;
}

static int ingest_tree(const cJSON *root, struct tally_batch *out, struct tally_error *err)
{
    long idx = 0;
    int rc = 0;

    out->n = 0;
    out->text_len = 0;
    if (cJSON_IsObject(root))
        return ingest_event(root, -1, out, err);
    if (!cJSON_IsArray(root))
        return ingest_fail(err, "invalid_event", -1, NULL, MSG_SHAPE);
    if (root->child == NULL)
        return ingest_fail(err, "empty_batch", -1, NULL, "an empty array holds no events");
    for (const cJSON *e = root->child; rc == 0 && e != NULL; e = e->next, idx++) {
        if (idx == TALLY_BATCH_MAX) /* the pre-scan stops this first; kept for OUT's sake */
            return ingest_fail(err, "batch_too_large", -1, NULL, MSG_BATCH);
        rc = ingest_event(e, idx, out, err);
    }
    return rc;
}

int tally_ingest_parse(const char *body, size_t len, struct tally_batch *out,
                       struct tally_error *err)
{
    cJSON *root = NULL;
    int rc;

    /* The HTTP layer answers 413 before this; the check keeps other callers (fuzzers) honest
     * and bounds the copy below. */
    if (len > TALLY_BODY_MAX)
        return ingest_fail(err, "body_too_large", -1, NULL,
                           "over " INGEST_STR(TALLY_BODY_MAX) " bytes");
    rc = ingest_prescan(body, len, err);
    if (rc == 0)
        rc = ingest_parse_json(body, len, &root, err);
    if (rc == 0)
        rc = ingest_tree(root, out, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- The pixel query string ---- */

enum { Q_TYPE, Q_ARTICLE, Q_NETWORK, Q_DELTA, Q_PARAMS };

static const char *const query_names[Q_PARAMS] = {"type", "article", "network", "delta"};

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

/* As in a POST, network counts for shares only and delta for comments only; for other types
 * they are not even decoded, like unknown parameters. */
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
    return 0;
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
