/* http_parse.c -- request heads and bodies framed by RFC 9112: what a message is made of
 * (§2-§3, §5), its length (§6), chunked coding (§7) and connection persistence (§9.3).
 *
 * Written for tally rather than taken from a library: Debian's libhttp-parser (joyent
 * http-parser 2.9.4, archived upstream) accepts obs-fold, a Transfer-Encoding list ending in
 * chunked, Transfer-Encoding in HTTP/1.0 and any number of Host lines, stops at an Upgrade,
 * and hands header names and values over in fragments through callbacks. Each of those would
 * need a check beside it; a head parsed whole, in place, as picohttpparser and nginx do, is
 * shorter than the checks and is fuzzed here whole (tests/fuzz/fuzz_http.c). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http_parse.h"

/* ---- Characters (RFC 9110 5.6.2, 5.5) ---- */

/* tchar: "!#$%&'*+-.^_`|~", digits and letters. */
static bool parse_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
        return true;
    return c != '\0' && strchr(extra, c) != NULL;
}

/* field-vchar, SP or HTAB: a byte a field value may hold. obs-text (0x80-0xff) included. */
static bool parse_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int parse_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_refuse(struct tally_http_refusal *why, int status, const char *code,
                        const char *message)
{
    why->status = status;
    why->code = code;
    why->message = message;
    return -1;
}

#define BAD(why, message) parse_refuse(why, 400, "bad_request", message)
#define AMBIGUOUS(why, message) parse_refuse(why, 400, "ambiguous_framing", message)

/* ---- Methods ---- */

static const struct {
    const char *name;
    unsigned bit;
} parse_methods[] = {
    {"GET", TALLY_HTTP_GET},     {"HEAD", TALLY_HTTP_HEAD},     {"POST", TALLY_HTTP_POST},
    {"PUT", TALLY_HTTP_PUT},     {"DELETE", TALLY_HTTP_DELETE}, {"OPTIONS", TALLY_HTTP_OPTIONS},
    {"PATCH", TALLY_HTTP_PATCH}, {"TRACE", TALLY_HTTP_TRACE},   {"CONNECT", TALLY_HTTP_CONNECT},
};

unsigned tally_http_method_of(const char *p, size_t len)
{
    for (size_t i = 0; i < sizeof(parse_methods) / sizeof(parse_methods[0]); i++)
        if (len == strlen(parse_methods[i].name) && memcmp(p, parse_methods[i].name, len) == 0)
            return parse_methods[i].bit;
    return 0;
}

/* ---- Lists ---- */

bool tally_http_list_has(const char *p, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0;

    while (i < len) {
        size_t start, end;

        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        start = i;
        while (i < len && p[i] != ',')
            i++;
        end = i;
        while (end > start && (p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(p + start, token, tlen) == 0)
            return true;
    }
    return false;
}

/* ---- The head ---- */

/* The request line: method SP request-target SP HTTP-version (§3). Returns its length without
 * the CRLF, or -1. */
static long parse_request_line(const char *p, size_t len, struct tally_http_head *h,
                               struct tally_http_refusal *why)
{
    size_t i = 0, t;

    while (i < len && parse_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= len || p[i] != ' ')
        return BAD(why, "request line: method SP target SP HTTP/1.x");
    h->method_name = (struct tally_http_span){p, i};
    h->method = tally_http_method_of(p, i);
    t = ++i;
    /* A target is URI characters: no whitespace, controls or bytes past ASCII. */
    while (i < len && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || i >= len || p[i] != ' ')
        return parse_refuse(why, 400, "invalid_uri",
                            "request line: a target without spaces, "
                            "controls or raw non-ASCII bytes");
    h->target = (struct tally_http_span){p + t, i - t};
    i++;
    if (len - i < 10 || memcmp(p + i, "HTTP/1.", 7) != 0 || p[i + 7] < '0' || p[i + 7] > '9' ||
        p[i + 8] != '\r' || p[i + 9] != '\n')
        return BAD(why, "request line: the version must be HTTP/1.0 or HTTP/1.1");
    h->minor = p[i + 7] == '0' ? 0 : 1;
    return (long)(i + 8);
}

/* Field names tally reads, by lower-case name. */
static int parse_wanted(const char *name, size_t len)
{
    static const struct {
        const char *name;
        int field;
    } wanted[] = {
        {"content-type", TALLY_HF_CONTENT_TYPE},
        {"idempotency-key", TALLY_HF_IDEMPOTENCY_KEY},
        {"origin", TALLY_HF_ORIGIN},
        {"authorization", TALLY_HF_AUTHORIZATION},
        {"user-agent", TALLY_HF_USER_AGENT},
        {"if-none-match", TALLY_HF_IF_NONE_MATCH},
        {"sec-purpose", TALLY_HF_PURPOSE},
        {"purpose", TALLY_HF_PURPOSE},
        {"x-purpose", TALLY_HF_PURPOSE},
        {"x-moz", TALLY_HF_PURPOSE},
    };

    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
        if (len == strlen(wanted[i].name) && strncasecmp(name, wanted[i].name, len) == 0)
            return wanted[i].field;
    return -1;
}

static bool parse_name_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* Content-Length = 1*DIGIT (§6.2); a value too large for any body reads as UINT64_MAX. */
static int parse_length(const char *v, size_t len, uint64_t *out)
{
    uint64_t n = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return 0;
}

/* Counts kept while the fields are read, for the checks after them. */
struct parse_counts {
    unsigned host, length, te, connection_close, connection_keep_alive;
    const char *te_value;
    size_t te_len;
    bool expect_other;
};

/* One field line NAME: VALUE (§5): the name a token right before the colon, the value
 * without surrounding whitespace and free of controls. */
static int parse_field(const char *p, size_t len, struct tally_http_head *h, struct parse_counts *c,
                       struct tally_http_refusal *why)
{
    size_t n = 0, v, e;
    int w;

    while (n < len && parse_tchar((unsigned char)p[n]))
        n++;
    if (n == 0 || n >= len || p[n] != ':')
        return BAD(why, "headers: a field name is a token followed at once by ':'");
    for (v = n + 1; v < len && (p[v] == ' ' || p[v] == '\t'); v++)
        ;
    for (e = v; e < len; e++)
        if (!parse_value_char((unsigned char)p[e]))
            return BAD(why, "headers: a field value holds a control character");
    while (e > v && (p[e - 1] == ' ' || p[e - 1] == '\t'))
        e--;
    if (parse_name_is(p, n, "host")) {
        c->host++;
    } else if (parse_name_is(p, n, "content-length")) {
        if (++c->length > 1)
            return AMBIGUOUS(why, "headers: more than one Content-Length");
        if (parse_length(p + v, e - v, &h->content_length) < 0)
            return AMBIGUOUS(why, "content-length: digits only");
        h->has_length = true;
    } else if (parse_name_is(p, n, "transfer-encoding")) {
        c->te++;
        c->te_value = p + v;
        c->te_len = e - v;
    } else if (parse_name_is(p, n, "connection")) {
        c->connection_close += tally_http_list_has(p + v, e - v, "close");
        c->connection_keep_alive += tally_http_list_has(p + v, e - v, "keep-alive");
    } else if (parse_name_is(p, n, "expect")) {
        if (e - v == 12 && strncasecmp(p + v, "100-continue", 12) == 0)
            h->expect_continue = true;
        else
            c->expect_other = true;
    } else if (parse_name_is(p, n, "x-forwarded-for")) {
        if (h->n_xff == TALLY_HTTP_XFF_MAX)
            return BAD(why, "x-forwarded-for: at most 8 lines");
        h->xff[h->n_xff++] = (struct tally_http_span){p + v, e - v};
    } else if ((w = parse_wanted(p, n)) >= 0 && h->field[w].p == NULL) {
        h->field[w] = (struct tally_http_span){p + v, e - v};
    }
    return 0;
}

/* The framing the fields add up to (§6.1, §6.3, §3.2, §9.3). */
static int parse_framing(struct tally_http_head *h, const struct parse_counts *c,
                         struct tally_http_refusal *why)
{
    if (c->te > 0) {
        if (h->minor == 0)
            return AMBIGUOUS(why, "transfer-encoding: not in HTTP/1.0");
        if (c->te > 1 || c->te_len != 7 || strncasecmp(c->te_value, "chunked", 7) != 0)
            return AMBIGUOUS(why, "transfer-encoding: only 'chunked', once");
        if (h->has_length)
            return AMBIGUOUS(why, "headers: Transfer-Encoding with Content-Length");
        h->chunked = true;
    }
    if (h->minor == 1 ? c->host != 1 : c->host > 1)
        return BAD(why, "host: an HTTP/1.1 request has exactly one");
    if (c->expect_other)
        return parse_refuse(why, 417, "expectation_failed", "expect: only 100-continue");
    h->keep_alive = c->connection_close == 0 && (h->minor == 1 || c->connection_keep_alive > 0);
    return 0;
}

int tally_http_parse_head(const char *buf, size_t len, struct tally_http_head *h,
                          struct tally_http_refusal *why)
{
    struct parse_counts c = {0};
    size_t i;
    long n;

    memset(h, 0, sizeof(*h));
    h->base = buf;
    if ((n = parse_request_line(buf, len, h, why)) < 0)
        return -1;
    i = (size_t)n + 2;
    for (;;) {
        const char *eol = memchr(buf + i, '\r', len - i);
        size_t end;

        if (eol == NULL || (size_t)(eol - buf) + 1 >= len || eol[1] != '\n')
            return BAD(why, "headers: every line ends in CRLF");
        end = (size_t)(eol - buf);
        if (end == i)
            break; /* the empty line */
        if (buf[i] == ' ' || buf[i] == '\t')
            return BAD(why, "headers: obsolete line folding");
        if (++h->n_fields > TALLY_HTTP_FIELDS_MAX)
            return parse_refuse(why, 431, "too_many_headers", "headers: at most 100");
        if (parse_field(buf + i, end - i, h, &c, why) < 0)
            return -1;
        i = end + 2;
    }
    return parse_framing(h, &c, why);
}

/* ---- Chunked bodies (§7.1) ---- */

enum {
    CH_SIZE_FIRST, /* a size's first hex digit */
    CH_SIZE,       /* its further digits */
    CH_EXT,        /* after the size: BWS, then ';' and extensions, up to CR */
    CH_EXT_TEXT,
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER, /* at the start of a trailer line, or of the final CRLF */
    CH_TRAILER_LINE,
    CH_TRAILER_LF,
    CH_END_LF,
};

/* The 413 of F's bound, its message in F. */
static int parse_too_large(struct tally_http_framer *f, struct tally_http_refusal *why)
{
    snprintf(f->too_large, sizeof(f->too_large), "body: at most %zu bytes", f->body_max);
    return parse_refuse(why, 413, "payload_too_large", f->too_large);
}
#define TOO_LARGE(why) parse_too_large(f, why)

/* The byte CH of a chunk-size line, in state F->chunk_state: 0, or -1 with *WHY. */
static int parse_size_line(struct tally_http_framer *f, unsigned char ch,
                           struct tally_http_refusal *why)
{
    size_t body_max = f->body_max;
    int d = parse_hex(ch);

    switch (f->chunk_state) {
    case CH_SIZE_FIRST:
        if (d < 0)
            return BAD(why, "chunk size: hexadecimal digits");
        f->chunk_left = (uint64_t)d;
        f->chunk_state = CH_SIZE;
        return 0;
    case CH_SIZE:
        if (d >= 0) {
            if (f->chunk_left > (uint64_t)body_max)
                return TOO_LARGE(why);
            f->chunk_left = f->chunk_left * 16 + (uint64_t)d;
            return 0;
        }
        if (f->out + f->chunk_left > body_max)
            return TOO_LARGE(why);
        f->chunk_state = CH_EXT; /* CH is the first byte after the digits */
        /* fall through */
    case CH_EXT:
        if (ch == '\r')
            f->chunk_state = CH_SIZE_LF;
        else if (ch == ';')
            f->chunk_state = CH_EXT_TEXT;
        else if (ch != ' ' && ch != '\t')
            return BAD(why, "chunk size: hexadecimal digits, then extensions after ';'");
        return 0;
    case CH_EXT_TEXT:
        if (ch == '\r')
            f->chunk_state = CH_SIZE_LF;
        else if (!parse_value_char(ch))
            return BAD(why, "chunk extension: a control character");
        return 0;
    default: /* CH_SIZE_LF */
        if (ch != '\n')
            return BAD(why, "chunk size: a line ends in CRLF");
        f->chunk_state = f->chunk_left > 0 ? CH_DATA : CH_TRAILER;
        return 0;
    }
}

/* The byte CH of the trailer section: 0, 1 at its end, or -1 with *WHY. */
static int parse_trailer(struct tally_http_framer *f, unsigned char ch,
                         struct tally_http_refusal *why)
{
    switch (f->chunk_state) {
    case CH_TRAILER:
        if (ch == '\r') {
            f->chunk_state = CH_END_LF;
            return 0;
        }
        if (!parse_tchar(ch))
            return BAD(why, "trailer: a field line");
        f->chunk_state = CH_TRAILER_LINE;
        return 0;
    case CH_TRAILER_LINE:
        if (ch == '\r')
            f->chunk_state = CH_TRAILER_LF;
        else if (!parse_value_char(ch))
            return BAD(why, "trailer: a field value holds a control character");
        return 0;
    default: /* CH_TRAILER_LF, CH_END_LF */
        if (ch != '\n')
            return BAD(why, "trailer: a line ends in CRLF");
        if (f->chunk_state == CH_END_LF)
            return 1;
        f->chunk_state = CH_TRAILER;
        return 0;
    }
}

/* Decode what arrived of BODY[0..LEN): 1 when the last chunk and the trailers are in,
 * 0 for more, -1 with *WHY. F->out is the decoded length so far, F->in what was read. */
static int parse_chunked(struct tally_http_framer *f, char *body, size_t len,
                         struct tally_http_refusal *why)
{
    while (f->in < len) {
        unsigned char ch = (unsigned char)body[f->in];
        int rc;

        if (f->chunk_state == CH_DATA) {
            size_t n = len - f->in < f->chunk_left ? len - f->in : (size_t)f->chunk_left;

            memmove(body + f->out, body + f->in, n);
            f->out += n;
            f->in += n;
            f->chunk_left -= n;
            if (f->chunk_left == 0)
                f->chunk_state = CH_DATA_CR;
            continue;
        }
        if (f->chunk_state == CH_DATA_CR || f->chunk_state == CH_DATA_LF) {
            if (ch != (f->chunk_state == CH_DATA_CR ? '\r' : '\n'))
                return BAD(why, "chunk: data ends in CRLF");
            f->chunk_state = f->chunk_state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE_FIRST;
            f->in++;
            continue;
        }
        rc = f->chunk_state >= CH_TRAILER ? parse_trailer(f, ch, why) : parse_size_line(f, ch, why);
        if (rc < 0)
            return -1;
        f->in++;
        if (rc == 1)
            return 1;
    }
    return 0;
}

/* ---- Framing a request ---- */

void tally_http_framer_reset(struct tally_http_framer *f)
{
    memset(f, 0, sizeof(*f));
}

/* The end of the head in BUF[0..LEN): the length up to and with its empty line, 0 while it
 * has not arrived, -1 for a bare LF (§2.2: a line ends in CRLF). *SCAN: where to resume. */
static long parse_head_end(const char *buf, size_t len, size_t *scan)
{
    size_t i = *scan;

    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        size_t at;

        if (lf == NULL) {
            *scan = len;
            return 0;
        }
        at = (size_t)(lf - buf);
        if (at == 0 || buf[at - 1] != '\r')
            return -1;
        if (at >= 3 && buf[at - 2] == '\n' && buf[at - 3] == '\r')
            return (long)(at + 1);
        i = at + 1;
    }
    *scan = i;
    return 0;
}

/* Point F's head spans into BUF, where the head now lies. */
static void parse_rebase(struct tally_http_head *h, const char *buf)
{
    struct tally_http_span *spans[2 + TALLY_HF_WANTED + TALLY_HTTP_XFF_MAX];
    size_t n = 0;

    if (h->base == buf)
        return;
    spans[n++] = &h->method_name;
    spans[n++] = &h->target;
    for (int i = 0; i < TALLY_HF_WANTED; i++)
        spans[n++] = &h->field[i];
    for (unsigned i = 0; i < h->n_xff; i++)
        spans[n++] = &h->xff[i];
    for (size_t i = 0; i < n; i++)
        if (spans[i]->p != NULL)
            spans[i]->p = buf + (spans[i]->p - h->base);
    h->base = buf;
}

static size_t parse_fixed_max(const struct tally_http_head *head, void *arg)
{
    (void)head;
    return *(const size_t *)arg;
}

enum tally_http_frame_result tally_http_frame(struct tally_http_framer *f, char *buf, size_t len,
                                              size_t body_max, struct tally_http_refusal *why)
{
    return tally_http_frame_by(f, buf, len, parse_fixed_max, &body_max, why);
}

enum tally_http_frame_result tally_http_frame_by(struct tally_http_framer *f, char *buf, size_t len,
                                                 tally_http_body_max_fn *body_max, void *arg,
                                                 struct tally_http_refusal *why)
{
    char *body;
    int rc;

    if (f->head_len == 0) {
        /* Nothing past the limit is looked at: the verdict is the same however the bytes
         * arrive. */
        long end =
            parse_head_end(buf, len < TALLY_HTTP_HEAD_MAX ? len : TALLY_HTTP_HEAD_MAX, &f->scan);

        if (end < 0)
            return BAD(why, "request: every line ends in CRLF");
        if (end == 0 && len > TALLY_HTTP_HEAD_MAX)
            return parse_refuse(why, 431, "headers_too_large",
                                "request line and headers: at most 98304 bytes");
        if (end == 0)
            return TALLY_HTTP_MORE;
        if (tally_http_parse_head(buf, (size_t)end, &f->head, why) < 0)
            return TALLY_HTTP_REFUSED;
        f->head_len = (size_t)end;
        f->body_max = body_max(&f->head, arg);
        if (f->head.has_length && f->head.content_length > f->body_max)
            return TOO_LARGE(why);
    }
    parse_rebase(&f->head, buf);
    body = buf + f->head_len;
    if (f->head.chunked) {
        rc = parse_chunked(f, body, len - f->head_len, why);
        if (rc < 0)
            return TALLY_HTTP_REFUSED;
        if (rc == 0)
            return TALLY_HTTP_BODY_MORE;
        f->body_len = f->out;
        f->total = f->head_len + f->in;
        return TALLY_HTTP_FRAMED;
    }
    f->body_len = f->head.has_length ? (size_t)f->head.content_length : 0;
    if (len - f->head_len < f->body_len)
        return TALLY_HTTP_BODY_MORE;
    f->total = f->head_len + f->body_len;
    return TALLY_HTTP_FRAMED;
}
