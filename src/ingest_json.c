/* ingest_json.c -- the event scanner: a POST /v1/events body, read by the grammar of RFC 8259
 * straight into a batch.
 *
 * One pass over the body bytes: no tree, no copy of the body, no allocation. Member names are
 * remembered per open object as a hash and an offset, to find duplicates; the event members
 * tally reads are decoded as they pass (the article into the batch's text, the type and
 * network into a few bytes on the stack, delta evaluated exactly from its digits).
 *
 * Errors come in two kinds. The grammar's, and the limits that keep the work small (nesting,
 * members per object, events per batch), end the scan where they occur: the first one in byte
 * order is answered. An event's own faults (a bad type, a duplicate member) are only noted,
 * the first one in event order, and answered if the whole body is well-formed JSON. */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "tally/error.h"
#include "tally/ingest.h"
#include "ingest_private.h"

#define SCAN_NAME_CAP 8 /* bytes of a member name kept: the known ones are shorter */
#define SCAN_WORD_CAP 16 /* bytes of a type or network value kept */

enum scan_field {
    F_OTHER,
    F_TYPE,
    F_ARTICLE,
    F_NETWORK,
    F_DELTA,
    F_WORDS,
    F_SECONDS,
    F_READ,
    F_FIELDS
};

static const char *const scan_fields[F_FIELDS] = {"",      "type",    "article", "network",
                                                  "delta", "words", "seconds", "read"};

/* Where a string's decoded bytes go: up to CAP of them into DST (NULL: nowhere). LEN counts
 * them all, past CAP too; HASH is FNV-1a over them all. */
struct scan_str {
    char *dst;
    size_t cap, len;
    uint64_t hash;
};

/* A member name of an open object: enough to tell two names apart without keeping them. */
struct scan_name {
    uint64_t hash;
    uint32_t len; /* decoded bytes */
    uint32_t at;  /* offset of its opening quote in the body */
};

/* What one event object held, for the checks made when it closes. */
struct scan_event {
    long idx;                     /* in the batch; -1 for a single-event body */
    bool seen[F_FIELDS];
    bool is_string[F_FIELDS];
    enum scan_field dup;          /* the first member named twice in the event (F_OTHER: an
                                     unknown one; valid when HAS_DUP) */
    bool has_dup, nested_dup;     /* a name twice in the event, or in an object within it */
    char type[SCAN_WORD_CAP], network[SCAN_WORD_CAP];
    size_t type_len, network_len;
    size_t article_len;           /* decoded into the batch's text, after what is used */
    bool delta_ok, words_ok, seconds_ok, read_ok;
    int16_t delta;
    uint16_t seconds;
    uint32_t words;
    bool read;
};

struct scan {
    const unsigned char *start, *p, *end;
    struct tally_batch *out;
    struct tally_error *err;
    bool noted;                   /* ERR holds an event's fault, to answer if nothing worse */
    int depth;                    /* containers open around P */
    long element;                 /* index of the top array's element being read, or -1 */
    struct scan_event *event;     /* the event being read, or NULL */
    uint32_t n_names[TALLY_JSON_DEPTH_MAX];
    struct scan_name names[TALLY_JSON_DEPTH_MAX][TALLY_EVENT_FIELDS_MAX];
};

static int scan_malformed(struct tally_error *err, const char *what)
{
    return tally_ingest_fail(err, "malformed_json", -1, NULL, what);
}

static bool json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void scan_skip_ws(struct scan *s)
{
    while (s->p < s->end && json_ws(*s->p))
        s->p++;
}

/* Note an event's fault: only the first one is answered. */
static void scan_note(struct scan *s, const char *code, long idx, const char *field,
                      const char *what)
{
    if (!s->noted)
        tally_ingest_fail(s->err, code, idx, field, what);
    s->noted = true;
}

/* A byte where the grammar wants something else: name what it is, if it is remarkable. */
static int scan_unexpected(struct scan *s)
{
    unsigned char c;

    if (s->p == s->end)
        return scan_malformed(s->err, "unexpected end of the body");
    c = *s->p;
    if (c == 0)
        return scan_malformed(s->err, MSG_NUL);
    if (c < 0x20 && !json_ws(c))
        return scan_malformed(s->err, "control character outside a string");
    if (c >= 0x80)
        return scan_malformed(s->err, "non-ASCII byte outside a string");
    return scan_malformed(s->err, "malformed JSON");
}

static int scan_expect(struct scan *s, unsigned char c)
{
    scan_skip_ws(s);
    if (s->p == s->end || *s->p != c)
        return scan_unexpected(s);
    s->p++;
    return 0;
}

/* ---- Strings ---- */

static void scan_put(struct scan_str *out, unsigned char b)
{
    if (out->len < out->cap)
        out->dst[out->len] = (char)b;
    out->len++;
    out->hash = (out->hash ^ b) * UINT64_C(1099511628211);
}

static void scan_put_cp(struct scan_str *out, uint32_t cp)
{
    if (cp < 0x80) {
        scan_put(out, (unsigned char)cp);
    } else if (cp < 0x800) {
        scan_put(out, (unsigned char)(0xC0 | cp >> 6));
        scan_put(out, (unsigned char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        scan_put(out, (unsigned char)(0xE0 | cp >> 12));
        scan_put(out, (unsigned char)(0x80 | (cp >> 6 & 0x3F)));
        scan_put(out, (unsigned char)(0x80 | (cp & 0x3F)));
    } else {
        scan_put(out, (unsigned char)(0xF0 | cp >> 18));
        scan_put(out, (unsigned char)(0x80 | (cp >> 12 & 0x3F)));
        scan_put(out, (unsigned char)(0x80 | (cp >> 6 & 0x3F)));
        scan_put(out, (unsigned char)(0x80 | (cp & 0x3F)));
    }
}

/* The four hex digits at P (AVAIL bytes left) as a code unit, or -1. */
static long scan_hex4(const unsigned char *p, size_t avail)
{
    long v = 0;

    if (avail < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;

        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* The escape at P (a backslash): its code point in *CP and the bytes it takes, or 0 with ERR
 * filled. A surrogate must come as a pair: alone it is no character, and UTF-8 cannot hold
 * it. \u0000 is refused as the NUL byte is: ids are C strings down the line. */
static size_t scan_escape(const unsigned char *p, const unsigned char *end, uint32_t *cp,
                          struct tally_error *err)
{
    static const char plain[] = "\"\\/bfnrt", means[] = "\"\\/\b\f\n\r\t";
    const char *k;
    long hi, lo;

    if (end - p < 2 || p[1] == 0) {
        scan_malformed(err, end - p >= 2 ? MSG_NUL : "unterminated string");
        return 0;
    }
    if (p[1] != 'u') {
        if ((k = strchr(plain, p[1])) == NULL) {
            scan_malformed(err, "malformed escape");
            return 0;
        }
        *cp = (unsigned char)means[k - plain];
        return 2;
    }
    if ((hi = scan_hex4(p + 2, (size_t)(end - p - 2))) < 0) {
        scan_malformed(err, "malformed escape");
        return 0;
    }
    if (hi == 0) {
        scan_malformed(err, "\\u0000 escape not allowed");
        return 0;
    }
    if (hi < 0xD800 || hi > 0xDFFF) {
        *cp = (uint32_t)hi;
        return 6;
    }
    if (hi > 0xDBFF || end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
        (lo = scan_hex4(p + 8, 4)) < 0xDC00 || lo > 0xDFFF) {
        scan_malformed(err, "unpaired surrogate escape");
        return 0;
    }
    *cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
    return 12;
}

/* The string at P (its opening quote), decoded into OUT (NULL: only checked). */
static int scan_string(struct scan *s, struct scan_str *out)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    uint32_t cp;
    size_t n;

    if (out != NULL) {
        out->len = 0;
        out->hash = UINT64_C(14695981039346656037);
    }
    while (p < end && *p != '"') {
        if (*p >= 0x20 && *p < 0x80 && *p != '\\') {
            n = 1;
            if (out != NULL)
                scan_put(out, *p);
        } else if (*p == '\\') {
            if ((n = scan_escape(p, end, &cp, s->err)) == 0)
                return TALLY_EINVAL;
            if (out != NULL)
                scan_put_cp(out, cp);
        } else if (*p < 0x20) {
            return scan_malformed(s->err, *p == 0 ? MSG_NUL : "control character in a string");
        } else {
            if ((n = tally_utf8_seq(p, (size_t)(end - p), &cp)) == 0)
                return scan_malformed(s->err, "invalid UTF-8");
            for (size_t i = 0; out != NULL && i < n; i++)
                scan_put(out, p[i]);
        }
        p += n;
    }
    if (p == end)
        return scan_malformed(s->err, "unterminated string");
    s->p = p + 1;
    return 0;
}

/* The next code point of the string at *P (scanned before, so well-formed), or -1 at its
 * closing quote. Two strings are equal when their code points are. */
static long scan_cp_next(const unsigned char **p, const unsigned char *end)
{
    struct tally_error ignored;
    uint32_t cp;
    size_t n;

    if (**p == '"')
        return -1;
    if (**p == '\\')
        n = scan_escape(*p, end, &cp, &ignored);
    else
        n = tally_utf8_seq(*p, (size_t)(end - *p), &cp);
    assert(n > 0);
    *p += n;
    return (long)cp;
}

static bool scan_names_equal(const struct scan *s, const struct scan_name *a,
                             const struct scan_name *b)
{
    const unsigned char *p = s->start + a->at + 1, *q = s->start + b->at + 1;
    long c;

    if (a->hash != b->hash || a->len != b->len)
        return false;
    do {
        c = scan_cp_next(&p, s->end);
        if (c != scan_cp_next(&q, s->end))
            return false;
    } while (c >= 0);
    return true;
}

/* ---- Numbers and literals ---- */

static bool json_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool json_digits(const unsigned char **q, const unsigned char *end)
{
    const unsigned char *start = *q;

    while (*q < end && json_digit(**q))
        (*q)++;
    return *q > start;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, and then no byte that would continue a
 * number: "01", "1.", "1.e5" and "1-2" are malformed numbers, not a number and garbage. */
static int scan_number(struct scan *s)
{
    const unsigned char *q = s->p, *end = s->end;
    bool ok = true;

    if (*q == '-')
        q++;
    if (q < end && *q == '0')
        q++;
    else if (!json_digits(&q, end))
        return scan_malformed(s->err, "malformed number");
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
        return scan_malformed(s->err, "malformed number");
    s->p = q;
    return 0;
}

/* The well-formed number from B to E, if it is an integer of at most DIGITS (1..9)
 * significant digits, exactly: 1.0, 10e-1 and -2.5e1 are integers; 1.5, 1e-400 and
 * 1000.0000000000000001 are not. */
static bool scan_small_int(const unsigned char *b, const unsigned char *e, long digits,
                           long *out)
{
    const unsigned char *p = b + (*b == '-'), *ib = p, *fb, *fe;
    long exp = 0, n_int, total, first = -1, last = -1, scale;
    bool exp_neg = false;
    long v = 0;

    while (p < e && json_digit(*p))
        p++;
    n_int = p - ib;
    fb = fe = p;
    if (p < e && *p == '.') {
        fb = ++p;
        while (p < e && json_digit(*p))
            p++;
        fe = p;
    }
    if (p < e) { /* the exponent, saturated far beyond anything that could fit */
        p++;
        exp_neg = *p == '-';
        p += *p == '-' || *p == '+';
        for (; p < e; p++)
            if (exp < 1000000)
                exp = exp * 10 + (*p - '0');
    }
    total = n_int + (fe - fb);
#define SCAN_DIGIT(i) ((i) < n_int ? ib[i] : fb[(i) - n_int])
    for (long i = 0; i < total; i++) {
        if (SCAN_DIGIT(i) != '0') {
            first = first < 0 ? i : first;
            last = i;
        }
    }
    if (first < 0) {
        *out = 0;
        return true;
    }
    /* The power of ten of the last significant digit. */
    scale = (exp_neg ? -exp : exp) - (fe - fb) + (total - 1 - last);
    if (scale < 0 || last - first + 1 + scale > digits)
        return false;
    for (long i = first; i <= last; i++)
        v = v * 10 + (SCAN_DIGIT(i) - '0');
#undef SCAN_DIGIT
    while (scale-- > 0)
        v *= 10;
    *out = *b == '-' ? -v : v;
    return true;
}

/* true, false or null; *WHICH learns its index in that order. */
static int scan_literal(struct scan *s, int *which)
{
    static const char *const words[] = {"true", "false", "null"};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);

        if ((size_t)(s->end - s->p) >= n && memcmp(s->p, words[i], n) == 0) {
            s->p += n;
            *which = (int)i;
            return 0;
        }
    }
    return scan_unexpected(s);
}

/* ---- Values, arrays and objects ---- */

/* What a value was, for the event member it belongs to. */
struct scan_value {
    bool is_string, is_number, is_true, is_false;
    struct scan_str str;            /* a string, decoded into STR.dst */
    const unsigned char *num, *num_end;
};

static int scan_object(struct scan *s, struct scan_event *ev);
static int scan_array(struct scan *s);

/* The value at P (after whitespace); V (may be NULL) learns what it was. */
static int scan_value(struct scan *s, struct scan_value *v)
{
    struct scan_value none;
    unsigned char c;
    int rc, which = -1;

    if (v == NULL)
        v = &none;
    v->is_string = v->is_number = v->is_true = v->is_false = false;
    scan_skip_ws(s);
    if (s->p == s->end)
        return scan_unexpected(s);
    c = *s->p;
    if (c == '"') {
        v->is_string = true;
        return scan_string(s, v == &none ? NULL : &v->str);
    }
    if (c == '-' || json_digit(c)) {
        v->num = s->p;
        rc = scan_number(s);
        v->num_end = s->p;
        v->is_number = rc == 0;
        return rc;
    }
    if (c == '{')
        return scan_object(s, NULL);
    if (c == '[')
        return scan_array(s);
    if ((rc = scan_literal(s, &which)) == 0) {
        v->is_true = which == 0;
        v->is_false = which == 1;
    }
    return rc;
}

static int scan_open(struct scan *s)
{
    if (s->depth == TALLY_JSON_DEPTH_MAX)
        return scan_malformed(s->err, "nested deeper than " INGEST_STR(TALLY_JSON_DEPTH_MAX));
    s->depth++;
    s->p++;
    return 0;
}

/* After an element: a comma (true) or the closing CLOSE (false, consumed), else an error. */
static int scan_next(struct scan *s, unsigned char close, bool *more)
{
    scan_skip_ws(s);
    if (s->p < s->end && (*s->p == ',' || *s->p == close)) {
        *more = *s->p++ == ',';
        return 0;
    }
    return scan_unexpected(s);
}

/* An array that is not the batch: any values. */
static int scan_array(struct scan *s)
{
    bool more = true;
    int rc = scan_open(s);

    scan_skip_ws(s);
    if (rc == 0 && s->p < s->end && *s->p == ']') {
        s->p++;
        more = false;
    }
    while (rc == 0 && more) {
        rc = scan_value(s, NULL);
        if (rc == 0)
            rc = scan_next(s, ']', &more);
    }
    s->depth--;
    return rc;
}

static enum scan_field scan_field_of(const char *name, size_t len)
{
    for (int f = F_OTHER + 1; f < F_FIELDS; f++)
        if (strlen(scan_fields[f]) == len && memcmp(scan_fields[f], name, len) == 0)
            return (enum scan_field)f;
    return F_OTHER;
}

/* Duplicate names are refused in every object of an event: parsers disagree on which one
 * wins, and a body that means one thing to us and another to the next reader is a smuggling
 * vector. The names of each open object are kept (at most TALLY_EVENT_FIELDS_MAX of them),
 * compared by hash first. */
static void scan_name_add(struct scan *s, struct scan_event *ev, enum scan_field f,
                          const struct scan_name *name)
{
    struct scan_name *names = s->names[s->depth - 1];
    uint32_t *n = &s->n_names[s->depth - 1];

    for (uint32_t i = 0; i < *n; i++) {
        if (!scan_names_equal(s, &names[i], name))
            continue;
        if (ev != NULL && !ev->has_dup) {
            ev->has_dup = true;
            ev->dup = f;
        } else if (ev == NULL && s->event != NULL) {
            s->event->nested_dup = true;
        }
        break;
    }
    assert(*n < TALLY_EVENT_FIELDS_MAX);
    names[(*n)++] = *name;
}

/* The value of member F of event EV: the members tally reads are decoded on the way. */
static int scan_member_value(struct scan *s, struct scan_event *ev, enum scan_field f)
{
    struct tally_batch *out = s->out;
    struct scan_value v = {.is_string = false};
    long n;
    int rc;

    if (ev == NULL || f == F_OTHER)
        return scan_value(s, NULL);
    if (f == F_TYPE)
        v.str = (struct scan_str){.dst = ev->type, .cap = sizeof(ev->type)};
    else if (f == F_NETWORK)
        v.str = (struct scan_str){.dst = ev->network, .cap = sizeof(ev->network)};
    else if (f == F_ARTICLE) /* the batch's text has room for 100 ids and their NULs */
        v.str = (struct scan_str){.dst = out->text + out->text_len, .cap = TALLY_ARTICLE_MAX};
    if ((rc = scan_value(s, &v)) != 0)
        return rc;
    ev->seen[f] = true;
    ev->is_string[f] = v.is_string;
    if (f == F_TYPE)
        ev->type_len = v.str.len;
    else if (f == F_NETWORK)
        ev->network_len = v.str.len;
    else if (f == F_ARTICLE)
        ev->article_len = v.str.len;
    else if (f == F_READ)
        ev->read_ok = v.is_true || v.is_false;
    if (f == F_READ)
        ev->read = v.is_true;
    if (f != F_DELTA && f != F_WORDS && f != F_SECONDS)
        return 0;
    if (!v.is_number || !scan_small_int(v.num, v.num_end, 7, &n))
        return 0;
    if (f == F_DELTA && n != 0 && n >= -TALLY_COMMENT_DELTA_MAX && n <= TALLY_COMMENT_DELTA_MAX) {
        ev->delta_ok = true;
        ev->delta = (int16_t)n;
    } else if (f == F_WORDS && n >= 1 && n <= TALLY_WORDS_MAX) {
        ev->words_ok = true;
        ev->words = (uint32_t)n;
    } else if (f == F_SECONDS && n >= 1 && n <= TALLY_ENGAGE_SECONDS_MAX) {
        ev->seconds_ok = true;
        ev->seconds = (uint16_t)n;
    }
    return 0;
}

/* One member: its name, the colon, its value. */
static int scan_member(struct scan *s, struct scan_event *ev)
{
    char name[SCAN_NAME_CAP];
    struct scan_str str = {.dst = name, .cap = sizeof(name)};
    struct scan_name n;
    enum scan_field f = F_OTHER;
    int rc;

    scan_skip_ws(s);
    if (s->p == s->end || *s->p != '"')
        return scan_unexpected(s);
    n.at = (uint32_t)(s->p - s->start);
    if ((rc = scan_string(s, &str)) != 0)
        return rc;
    n.hash = str.hash;
    n.len = (uint32_t)str.len;
    if (ev != NULL && str.len <= str.cap)
        f = scan_field_of(name, str.len);
    scan_name_add(s, ev, f, &n);
    if ((rc = scan_expect(s, ':')) != 0)
        return rc;
    return scan_member_value(s, ev, f);
}

static void scan_event_close(struct scan *s, struct scan_event *ev);

/* An object; EV is non-NULL when it is an event of the body. */
static int scan_object(struct scan *s, struct scan_event *ev)
{
    uint32_t members = 0;
    bool more = true;
    int rc = scan_open(s);

    if (rc != 0)
        return rc;
    s->n_names[s->depth - 1] = 0;
    scan_skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        more = false;
    }
    while (rc == 0 && more) {
        /* Answered as soon as member 33 starts: an object of 64 KiB of members ends here. */
        if (members++ == TALLY_EVENT_FIELDS_MAX)
            return tally_ingest_fail(s->err, "invalid_event", s->element, NULL, MSG_MEMBERS);
        rc = scan_member(s, ev);
        if (rc == 0)
            rc = scan_next(s, '}', &more);
    }
    s->depth--;
    if (rc == 0 && ev != NULL)
        scan_event_close(s, ev);
    return rc;
}

/* ---- Events and the body ---- */

/* The event EV has closed: check it in the order of its fields' importance, then add it. */
static void scan_event_close(struct scan *s, struct scan_event *ev)
{
    struct tally_batch *out = s->out;
    struct tally_event *e = &out->ev[out->n];
    long idx = ev->idx;
    int type = -1;

    if (ev->has_dup || ev->nested_dup)
        return scan_note(s, "duplicate_key", idx,
                         ev->has_dup && ev->dup != F_OTHER ? scan_fields[ev->dup] : NULL,
                         ev->has_dup && ev->dup != F_OTHER ? "given more than once"
                                                           : "duplicate member name");
    if (ev->is_string[F_TYPE] && ev->type_len <= sizeof(ev->type))
        type = tally_ingest_type_from(ev->type, ev->type_len);
    if (type < 0)
        return scan_note(s, "invalid_type", idx, "type", ev->seen[F_TYPE] ? MSG_TYPE : "missing");
    if (!ev->seen[F_ARTICLE])
        return scan_note(s, "invalid_article", idx, "article", "missing");
    if (!ev->is_string[F_ARTICLE] ||
        !tally_article_valid(out->text + out->text_len, ev->article_len))
        return scan_note(s, "invalid_article", idx, "article", MSG_ARTICLE);
    if (type == TALLY_EVENT_COMMENT && ev->seen[F_DELTA] && !ev->delta_ok)
        return scan_note(s, "invalid_delta", idx, "delta", MSG_DELTA);
    if (type == TALLY_EVENT_VIEW && ev->seen[F_WORDS] && !ev->words_ok)
        return scan_note(s, "invalid_words", idx, "words", MSG_WORDS);
    if (type == TALLY_EVENT_ENGAGE && !ev->seconds_ok)
        return scan_note(s, "invalid_seconds", idx, "seconds",
                         ev->seen[F_SECONDS] ? MSG_SECONDS : "missing");
    if (type == TALLY_EVENT_ENGAGE && ev->seen[F_READ] && !ev->read_ok)
        return scan_note(s, "invalid_read", idx, "read", MSG_READ);
    if (s->noted)
        return; /* an earlier event failed: the batch is refused anyway */
    e->type = (uint8_t)type;
    e->network = TALLY_NETWORK_OTHER;
    if (type == TALLY_EVENT_SHARE && ev->is_string[F_NETWORK] &&
        ev->network_len <= sizeof(ev->network))
        e->network = (uint8_t)tally_network_from(ev->network, ev->network_len);
    e->delta = type == TALLY_EVENT_COMMENT && ev->seen[F_DELTA] ? ev->delta : 1;
    e->words = type == TALLY_EVENT_VIEW && ev->seen[F_WORDS] ? ev->words : 0;
    e->seconds = type == TALLY_EVENT_ENGAGE ? ev->seconds : 0;
    e->read = type == TALLY_EVENT_ENGAGE && ev->seen[F_READ] && ev->read;
    assert(out->text_len + ev->article_len < sizeof(out->text));
    e->article = out->text + out->text_len;
    e->article_len = (uint16_t)ev->article_len;
    out->text[out->text_len + ev->article_len] = '\0';
    out->text_len += ev->article_len + 1;
    out->n++;
}

/* The top array: 1..TALLY_BATCH_MAX events. */
static int scan_batch(struct scan *s)
{
    bool more = true;
    int rc = scan_open(s);

    scan_skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        scan_note(s, "empty_batch", -1, NULL, "an empty array holds no events");
        more = false;
    }
    for (s->element = 0; rc == 0 && more;) {
        struct scan_event ev = {.idx = s->element};

        scan_skip_ws(s);
        if (s->p < s->end && *s->p == '{') {
            s->event = &ev;
            rc = scan_object(s, &ev);
            s->event = NULL;
        } else if ((rc = scan_value(s, NULL)) == 0) {
            scan_note(s, "invalid_event", s->element, NULL, "must be an object");
        }
        if (rc == 0)
            rc = scan_next(s, ']', &more);
        /* Element 101 starts: answered now, before anything of it is read. */
        if (rc == 0 && more && ++s->element == TALLY_BATCH_MAX)
            return tally_ingest_fail(s->err, "batch_too_large", -1, NULL, MSG_BATCH);
    }
    s->depth--;
    return rc;
}

static int scan_body(struct scan *s)
{
    struct scan_event ev = {.idx = -1};
    int rc;

    scan_skip_ws(s);
    if (*s->p == '{') {
        s->event = &ev;
        rc = scan_object(s, &ev);
        s->event = NULL;
    } else if (*s->p == '[') {
        rc = scan_batch(s);
    } else if ((rc = scan_value(s, NULL)) == 0) {
        scan_note(s, "invalid_event", -1, NULL, MSG_SHAPE);
    }
    if (rc != 0)
        return rc;
    scan_skip_ws(s);
    if (s->p == s->end)
        return 0;
    return scan_malformed(s->err, *s->p == 0 ? MSG_NUL : "trailing bytes after the JSON value");
}

int tally_ingest_parse(const char *body, size_t len, struct tally_batch *out,
                       struct tally_error *err)
{
    struct scan s = {.start = (const unsigned char *)body, .out = out, .err = err,
                     .element = -1};
    int rc;

    out->n = 0;
    out->text_len = 0;
    /* The HTTP layer answers 413 before this; the check keeps other callers (fuzzers) honest
     * and the offsets of member names in 32 bits. */
    if (len > TALLY_BODY_MAX)
        return tally_ingest_fail(err, "body_too_large", -1, NULL,
                           "over " INGEST_STR(TALLY_BODY_MAX) " bytes");
    /* JSON senders must not send a byte-order mark (RFC 8259, 8.1); parsers that skip one and
     * parsers that refuse it would read the body differently. */
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        return scan_malformed(err, "byte-order mark not allowed");
    s.p = s.start;
    s.end = s.start + len;
    scan_skip_ws(&s);
    if (s.p == s.end)
        return scan_malformed(err, "empty");
    rc = scan_body(&s);
    return rc == 0 && s.noted ? TALLY_EINVAL : rc;
}
