/* http_server.c -- requests: the request object and its arena, the route table, CORS, and
 * the reply helpers every handler answers through. The connections they come in on are
 * http_conn.c's. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http_conn.h"
#include "tally/buf.h"
#include "tally/error.h"
#include "tally/fold.h"
#include "tally/import.h"
#include "tally/log.h"
#include "tally/store.h"
#include "tally/visitor.h"

#define HTTP_PATH_MAX 4096
/* The most an answer's head takes besides its extra headers, content type and echoed origin:
 * the longest status line (46), Date (37), Content-Length (38), "Content-Type: " and CRLF (16),
 * CORS (45), Connection (24) and the empty line (2) -- with room to spare. */
#define HTTP_HEAD_FIXED 256

enum http_methods {
    M_GET = TALLY_HTTP_GET | TALLY_HTTP_HEAD,
    M_POST = TALLY_HTTP_POST,
    M_DELETE = TALLY_HTTP_DELETE,
};

struct http_route {
    const char *path;
    bool prefix; /* PATH is a prefix: the rest is the handler's "tail" */
    bool id;     /* the tail is one path segment: an article id (percent-encoded) */
    bool fresh;  /* a read of counts: it waits for what this collector acknowledged (a read of
                  * some articles' counts does in its handler, for what it did of those) */
    unsigned methods;
    enum tally_route metric;
    void (*fn)(struct tally_http_req *h);
};

static const struct http_route http_routes[] = {
    {"/v1/events", false, false, false, M_POST, TALLY_ROUTE_EVENTS, tally_route_events},
    {"/v1/pixel.gif", false, false, false, M_GET, TALLY_ROUTE_PIXEL, tally_route_pixel},
    {"/v1/stats", false, false, false, M_GET, TALLY_ROUTE_STATS, tally_route_stats},
    {"/v1/stats/", true, true, false, M_GET, TALLY_ROUTE_STATS, tally_route_stats_one},
    {"/v1/top", false, false, true, M_GET, TALLY_ROUTE_TOP, tally_route_top},
    {"/v1/series/", true, true, true, M_GET, TALLY_ROUTE_SERIES, tally_route_series},
    {"/v1/live", false, false, false, M_GET, TALLY_ROUTE_LIVE, tally_route_live},
    {"/v1/totals", false, false, true, M_GET, TALLY_ROUTE_TOTALS, tally_route_totals},
    {"/v1/badge/", true, true, false, M_GET, TALLY_ROUTE_BADGE, tally_route_badge},
    {"/v1/articles/", true, true, false, M_DELETE, TALLY_ROUTE_ARTICLES, tally_route_forget},
    {"/v1/import", false, false, false, M_POST, TALLY_ROUTE_IMPORT, tally_route_import},
    {"/v1/imports", false, false, false, M_GET, TALLY_ROUTE_IMPORT, tally_route_imports},
    {"/dashboard", false, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/dashboard.js", false, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/dashboard.css", false, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/healthz", false, false, false, M_GET, TALLY_ROUTE_HEALTH, tally_route_healthz},
    {"/readyz", false, false, false, M_GET, TALLY_ROUTE_HEALTH, tally_route_readyz},
    {"/metrics", false, false, false, M_GET, TALLY_ROUTE_METRICS, tally_route_metrics},
    {"/tally.js", false, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/demo/", false, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/demo/", true, false, false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
};

uint64_t tally_http_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- The request object and its arena ----
 *
 * A request object carries HTTP_REQ_ARENA bytes of room; what does not fit there comes from
 * blocks of HTTP_BLOCK_SIZE that the worker recycles (larger ones are allocated alone). In a
 * steady state nothing is allocated per request: objects and blocks come back to the pool
 * when the answer has been written. */

struct http_req_slot {
    struct tally_http_req req;
    _Alignas(16) char room[HTTP_REQ_ARENA];
};

struct tally_http_req *http_req_new(struct tally_worker *w, struct http_conn *c)
{
    struct http_pool *pool = http_pool_of(w);
    struct http_req_slot *slot;

    if (pool->free_reqs != NULL) {
        slot = (struct http_req_slot *)pool->free_reqs;
        pool->free_reqs = slot->req.next;
        pool->n_free_reqs--;
    } else if ((slot = malloc(sizeof(*slot))) == NULL) {
        return NULL;
    }
    memset(&slot->req, 0, sizeof(slot->req));
    slot->req.w = w;
    slot->req.conn = c;
    slot->req.route = TALLY_ROUTE_OTHER;
    slot->req.t0_us = tally_http_now_us();
    slot->req.path = slot->req.query = slot->req.tail = slot->req.body = "";
    slot->req.authorized = -1;
    slot->req.arena = slot->room;
    slot->req.arena_left = sizeof(slot->room);
    w->busy++;
    return &slot->req;
}

void http_req_release(struct tally_worker *w, struct tally_http_req *r)
{
    struct http_pool *pool = http_pool_of(w);
    struct http_block *b, *next;

    for (b = r->blocks; b != NULL; b = next) {
        next = b->next;
        if (b->size == HTTP_BLOCK_SIZE && pool->n_free_blocks < HTTP_BLOCKS_KEPT) {
            b->next = pool->free_blocks;
            pool->free_blocks = b;
            pool->n_free_blocks++;
        } else {
            free(b);
        }
    }
    if (r->out_heap)
        free(r->out);
    w->busy--;
    if (pool->n_free_reqs < HTTP_REQS_KEPT) {
        r->next = pool->free_reqs;
        pool->free_reqs = r;
        pool->n_free_reqs++;
    } else {
        free(r);
    }
}

/* A block of at least SIZE bytes, now the arena's room. */
static struct http_block *http_block_new(struct tally_http_req *h, size_t size)
{
    struct http_pool *pool = http_pool_of(h->w);
    struct http_block *b;

    if (size <= HTTP_BLOCK_SIZE && pool->free_blocks != NULL) {
        b = pool->free_blocks;
        pool->free_blocks = b->next;
        pool->n_free_blocks--;
    } else {
        size = size <= HTTP_BLOCK_SIZE ? HTTP_BLOCK_SIZE : size;
        if ((b = malloc(sizeof(*b) + size)) == NULL)
            return NULL;
        b->size = size;
    }
    b->next = h->blocks;
    h->blocks = b;
    h->arena = b->data;
    h->arena_left = b->size;
    return b;
}

/* SIZE bytes of the arena, not zeroed. */
static void *http_arena(struct tally_http_req *h, size_t size)
{
    size_t need = (size + 15) & ~(size_t)15;
    void *p;

    if (need > h->arena_left && http_block_new(h, need) == NULL)
        return NULL;
    p = h->arena;
    h->arena += need;
    h->arena_left -= need;
    return p;
}

void *tally_http_alloc(struct tally_http_req *h, size_t size)
{
    void *p = http_arena(h, size);

    if (p != NULL)
        memset(p, 0, size);
    return p;
}

/* A NUL-terminated copy of SPAN in the arena, or NULL for an absent one (or no memory). */
static const char *http_arena_str(struct tally_http_req *h, struct tally_http_span span)
{
    char *s;

    if (span.p == NULL || (s = http_arena(h, span.len + 1)) == NULL)
        return NULL;
    memcpy(s, span.p, span.len);
    s[span.len] = '\0';
    return s;
}

/* ---- Replies ---- */

void tally_http_header(struct tally_http_req *h, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value), need = nlen + vlen + 4;

    if (h->extra_len + need > h->extra_cap) {
        size_t cap = h->extra_cap > 0 ? 2 * h->extra_cap : 512;
        char *p;

        while (cap < h->extra_len + need)
            cap *= 2;
        if ((p = http_arena(h, cap)) == NULL)
            return;
        if (h->extra_len > 0)
            memcpy(p, h->extra, h->extra_len);
        h->extra = p;
        h->extra_cap = cap;
    }
    memcpy(h->extra + h->extra_len, name, nlen);
    memcpy(h->extra + h->extra_len + nlen, ": ", 2);
    memcpy(h->extra + h->extra_len + nlen + 2, value, vlen);
    memcpy(h->extra + h->extra_len + nlen + 2 + vlen, "\r\n", 2);
    h->extra_len += need;
}

static const char *http_reason(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The Date line, made once a second. */
static const char *http_date(struct tally_worker *w)
{
    struct http_pool *pool = http_pool_of(w);
    time_t now = time(NULL);
    struct tm tm;

    if (now != pool->date_at) {
        gmtime_r(&now, &tm);
        strftime(pool->date, sizeof(pool->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        pool->date_at = now;
    }
    return pool->date;
}

/* Appends to a buffer sized beforehand. */
struct http_out {
    char *p;
};

static void out_add(struct http_out *o, const char *s, size_t n)
{
    memcpy(o->p, s, n);
    o->p += n;
}

static void out_adds(struct http_out *o, const char *s)
{
    out_add(o, s, strlen(s));
}

static void out_u64(struct http_out *o, uint64_t v)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[sizeof(tmp) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    out_add(o, tmp + sizeof(tmp) - n, n);
}

/* Browsers may read /v1/ answers from allowed origins: "*" when every origin is, else the
 * origin echoed (never an unlisted one) with Vary: Origin. */
static void http_cors(struct tally_http_req *h, struct http_out *o)
{
    const struct tally_config *cfg = h->w->cfg;
    const char *origin = h->hdr.origin;

    if (!h->v1)
        return;
    if (cfg->any_origin) {
        out_adds(o, "Access-Control-Allow-Origin: *\r\n");
        return;
    }
    out_adds(o, "Vary: Origin\r\n");
    if (origin != NULL && tally_config_origin_allowed(cfg, origin, strlen(origin))) {
        out_adds(o, "Access-Control-Allow-Origin: ");
        out_adds(o, origin);
        out_adds(o, "\r\n");
    }
}

/* How an answer's body is delimited. */
enum http_framing {
    HTTP_FRAME_LENGTH,  /* Content-Length: a whole answer */
    HTTP_FRAME_CHUNKED, /* a stream, HTTP/1.1 */
    HTTP_FRAME_CLOSE,   /* a stream, HTTP/1.0: the body ends with the connection */
};

/* Build H's answer into its arena: the head, then LEN bytes of BODY for a whole answer.
 * Returns false when there is no room (H is then abandoned). */
static bool http_build(struct tally_http_req *h, int code, const char *ctype, const void *body,
                       size_t len, enum http_framing framing)
{
    bool head_only = h->method == TALLY_HTTP_HEAD || code == 204 || code == 304;
    size_t size, blen = framing == HTTP_FRAME_LENGTH && !head_only ? len : 0; /* sent */
    struct http_out o;

    if (ctype != NULL)
        tally_http_policy(h, ctype); /* its headers first: the room below counts them */
    size = HTTP_HEAD_FIXED + h->extra_len + (ctype != NULL ? strlen(ctype) : 0) +
           (h->hdr.origin != NULL ? strlen(h->hdr.origin) : 0) + blen;
    h->close_after = framing == HTTP_FRAME_CLOSE || http_conn_closes_after(h);
    h->out = http_arena(h, size);
    if (h->out == NULL) {
        tally_http_abandon(h); /* no room for an answer: the least wrong thing left */
        return false;
    }
    o.p = h->out;
    out_adds(&o, h->http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    out_u64(&o, (uint64_t)code);
    out_add(&o, " ", 1);
    out_adds(&o, http_reason(code));
    out_add(&o, "\r\n", 2);
    out_adds(&o, http_date(h->w));
    if (framing == HTTP_FRAME_CHUNKED) {
        out_adds(&o, "Transfer-Encoding: chunked\r\n");
    } else if (framing == HTTP_FRAME_LENGTH && code != 204 && code != 304) {
        out_adds(&o, "Content-Length: ");
        out_u64(&o, len);
        out_add(&o, "\r\n", 2);
    }
    if (ctype != NULL) {
        out_adds(&o, "Content-Type: ");
        out_adds(&o, ctype);
        out_add(&o, "\r\n", 2);
    }
    http_cors(h, &o);
    if (h->extra_len > 0)
        out_add(&o, h->extra, h->extra_len);
    if (h->close_after)
        out_adds(&o, "Connection: close\r\n");
    else if (h->http10)
        out_adds(&o, "Connection: keep-alive\r\n");
    out_add(&o, "\r\n", 2);
    if (blen > 0)
        out_add(&o, body, blen);
    h->out_len = (size_t)(o.p - h->out);
    assert(h->out_len <= size);
    return true;
}

/* H's answer is built: count it, give back what it was admitted with, and write it. */
static void http_answered(struct tally_http_req *h, int code)
{
    double secs = (double)(tally_http_now_us() - h->t0_us) / 1e6;

    h->answered = true;
    tally_metrics_request(&h->w->metrics, h->route, code, secs);
    if (h->read_admitted) {
        h->w->reads--;
        h->w->read_cmds -= h->read_cost;
        h->read_admitted = false;
    }
    http_conn_answered(h);
}

void tally_http_send(struct tally_http_req *h, int code, const char *ctype, const void *body,
                     size_t len)
{
    assert(!h->answered);
    if (http_build(h, code, ctype, body, len, HTTP_FRAME_LENGTH))
        http_answered(h, code);
}

/* ---- Streamed answers ---- */

int tally_http_stream_start(struct tally_http_req *h, int code, const char *ctype,
                            tally_http_gone_cb *gone, void *arg)
{
    enum http_framing framing = h->http10 ? HTTP_FRAME_CLOSE : HTTP_FRAME_CHUNKED;

    assert(!h->answered);
    if (!http_build(h, code, ctype, NULL, 0, framing))
        return TALLY_ENOMEM;
    h->streaming = true;
    h->chunked = framing == HTTP_FRAME_CHUNKED;
    h->stream_done = h->method == TALLY_HTTP_HEAD;
    if (h->stream_done) /* the head alone: keep the connection as a whole answer would */
        h->close_after = http_conn_closes_after(h);
    h->gone = gone;
    h->gone_arg = arg;
    if (!h->stream_done)
        http_conn_stream_expect(h);
    http_answered(h, code);
    return 0;
}

void tally_http_stream_expect(struct tally_http_req *h)
{
    http_conn_stream_expect(h);
}

size_t tally_http_stream_pending(const struct tally_http_req *h)
{
    return h->streaming ? http_conn_stream_pending(h) : 0;
}

int tally_http_stream_write(struct tally_http_req *h, const void *data, size_t len)
{
    assert(h->streaming);
    if (h->stream_done)
        return TALLY_ECLOSED;
    if (len == 0)
        return 0;
    return http_conn_stream_add(h, data, len);
}

void tally_http_stream_end(struct tally_http_req *h)
{
    assert(h->streaming);
    if (h->stream_done)
        return;
    if (h->w->draining)
        h->close_after = true;
    /* The last chunk; a close-delimited body ends with the connection. */
    if (h->chunked)
        (void)http_conn_stream_add(h, NULL, 0);
    h->stream_done = true;
    http_conn_answered(h);
}

bool tally_http_read_admit(struct tally_http_req *h, size_t cost)
{
    if (!tally_http_read_try(h, cost)) {
        tally_http_send_unavailable(h, "too many reads waiting for redis; retry later");
        return false;
    }
    return true;
}

bool tally_http_read_try(struct tally_http_req *h, size_t cost)
{
    struct tally_worker *w = h->w;

    assert(!h->read_admitted);
    if (w->reads >= TALLY_READS_MAX || cost > TALLY_READ_CMDS_MAX - w->read_cmds) {
        tally_metric_add(&w->metrics.reads_refused, 1);
        return false;
    }
    w->reads++;
    w->read_cmds += cost;
    h->read_admitted = true;
    h->read_cost = (uint32_t)cost;
    return true;
}

void tally_http_send_error(struct tally_http_req *h, int status, const char *code,
                           const char *message)
{
    struct tally_buf *b = &h->w->out;

    tally_buf_reset(b);
    tally_buf_adds(b, "{\"error\":");
    tally_buf_add_json_str(b, code, strlen(code));
    tally_buf_adds(b, ",\"message\":");
    tally_buf_add_json_str(b, message, strlen(message));
    tally_buf_adds(b, "}\n");
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, status, "application/json", b->data, b->len);
}

void tally_http_send_unavailable(struct tally_http_req *h, const char *message)
{
    tally_http_header(h, "Retry-After", arc4random_uniform(2) ? "2" : "1");
    tally_http_send_error(h, 503, "unavailable", message);
}

void tally_http_send_outcome_unknown(struct tally_http_req *h, const char *message)
{
    tally_http_header(h, "Retry-After", arc4random_uniform(2) ? "2" : "1");
    tally_http_send_error(h, 504, "outcome_unknown", message);
}

void tally_http_abandon(struct tally_http_req *h)
{
    assert(!h->answered);
    tally_metric_add(&h->w->metrics.indeterminate, 1);
    h->abandoned = h->answered = h->close_after = true;
    h->out_len = 0;
    http_conn_answered(h);
}

/* TAG without a weak prefix; its length in *LEN. */
static const char *http_strong(const char *tag, size_t *len)
{
    if (*len >= 2 && tag[0] == 'W' && tag[1] == '/') {
        *len -= 2;
        return tag + 2;
    }
    return tag;
}

bool tally_http_etag_match(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *e = http_strong(etag, &elen);

    while (inm != NULL && *inm != '\0') {
        size_t n;
        const char *t;

        inm += strspn(inm, " \t,");
        n = strcspn(inm, ",");
        while (n > 0 && (inm[n - 1] == ' ' || inm[n - 1] == '\t'))
            n--;
        if (n == 1 && inm[0] == '*')
            return true;
        t = http_strong(inm, &n);
        if (n > 0 && n == elen && memcmp(t, e, n) == 0)
            return true;
        inm += strcspn(inm, ",");
    }
    return false;
}

/* Does AUTH (ALEN bytes, NULL when absent) carry TOKEN? As tally_http_authorized(). */
static int http_check_token(const char *token, const char *auth, size_t alen)
{
    size_t tlen = strlen(token);
    unsigned char diff = 0;

    if (tlen == 0)
        return 403;
    if (auth == NULL || alen < 7 || strncasecmp(auth, "Bearer ", 7) != 0)
        return 401;
    auth += 7;
    alen -= 7;
    /* In time independent of where the two differ. */
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)(token[i] ^ (i < alen ? auth[i] : 0));
    return diff == 0 && alen == tlen ? 0 : 401;
}

int tally_http_authorized(struct tally_http_req *h)
{
    if (h->authorized < 0)
        h->authorized =
            http_check_token(h->w->cfg->token, h->hdr.authorization,
                             h->hdr.authorization != NULL ? strlen(h->hdr.authorization) : 0);
    return h->authorized;
}

size_t http_req_body_max(const struct tally_http_head *head, void *arg)
{
    static const char import[] = "/v1/import";
    const struct tally_worker *w = arg;
    const struct tally_http_span *t = &head->target, *auth = &head->field[TALLY_HF_AUTHORIZATION];
    const char *q = t->p != NULL ? memchr(t->p, '?', t->len) : NULL;
    size_t path_len = q != NULL ? (size_t)(q - t->p) : t->len;

    if (head->method == TALLY_HTTP_POST && path_len == sizeof(import) - 1 &&
        memcmp(t->p, import, path_len) == 0 &&
        http_check_token(w->cfg->token, auth->p, auth->len) == 0)
        return TALLY_IMPORT_BODY_MAX;
    return TALLY_BODY_MAX;
}

void tally_http_client(struct tally_http_req *h, uint8_t out[16])
{
    uint8_t peer[16];

    http_conn_peer(h->conn, peer);
    if (h->xff == NULL || !tally_config_trusted(h->w->cfg, peer)) {
        memcpy(out, peer, 16);
        return;
    }
    tally_client_addr(h->w->cfg, peer, h->xff, h->xff_len, out);
}

/* ---- Dispatch ---- */

/* The headers tally reads, copied out of the connection's buffer into the arena: an
 * asynchronous handler's answer still needs the Origin, say. Every X-Forwarded-For line, in
 * order, is one list. */
static void http_take_headers(struct tally_http_req *h, const struct tally_http_head *head)
{
    const char **to[TALLY_HF_WANTED] = {
        &h->hdr.content_type, &h->hdr.idempotency_key, &h->hdr.origin, &h->hdr.authorization,
        &h->hdr.user_agent,   &h->hdr.if_none_match,   &h->hdr.purpose,
    };
    size_t len = 0;
    char *p;

    for (int i = 0; i < TALLY_HF_WANTED; i++)
        *to[i] = http_arena_str(h, head->field[i]);
    h->hdr.n_forwarded_for = head->n_xff;
    if (head->n_xff == 0)
        return;
    for (unsigned i = 0; i < head->n_xff; i++)
        len += head->xff[i].len + 1;
    if ((p = http_arena(h, len)) == NULL)
        return;
    h->xff = p;
    for (unsigned i = 0; i < head->n_xff; i++) {
        if (i > 0)
            *p++ = ',';
        memcpy(p, head->xff[i].p, head->xff[i].len);
        p += head->xff[i].len;
    }
    h->xff_len = (size_t)(p - h->xff);
}

static void http_preflight(struct tally_http_req *h)
{
    tally_http_header(h, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
    tally_http_header(h, "Access-Control-Allow-Headers",
                      "Content-Type, Authorization, Idempotency-Key");
    tally_http_header(h, "Access-Control-Max-Age", "7200");
    tally_http_send(h, 204, NULL, NULL, 0);
}

/* ---- Reads that see what this collector acknowledged ---- */

#define HTTP_WAIT_POLL_MS 1

/* A read waiting until every worker's folds have passed its mark (tally/fold.h). */
struct http_wait {
    struct http_wait *next;
    struct tally_http_req *h;
    const struct http_route *r; /* the route to run, or NULL: FN(ARG) */
    void (*fn)(void *arg);
    void *arg;
    uint64_t until;             /* ms: past it the read goes ahead as it stands */
    struct tally_fold_mark mark;
};

struct http_waits {
    struct http_wait *first;
    struct event *ev;
};

static void http_run(struct tally_http_req *h, const struct http_route *r)
{
    if (r->prefix) {
        h->tail = h->path + strlen(r->path);
        h->tail_len = h->path_len - strlen(r->path);
    }
    r->fn(h);
}

static void http_wait_run(struct http_wait *wt)
{
    if (wt->r != NULL)
        http_run(wt->h, wt->r);
    else
        wt->fn(wt->arg);
}

static void on_waits(evutil_socket_t fd, short what, void *arg)
{
    struct tally_worker *w = arg;
    struct tally_server *s = w->server;
    struct http_wait **pp = &w->waits->first, *wt;
    uint64_t now = tally_now_ms();

    (void)fd;
    (void)what;
    while ((wt = *pp) != NULL) {
        if (!tally_fold_passed(s->folders, s->n_workers, &wt->mark) && now < wt->until) {
            pp = &wt->next;
            continue;
        }
        if (now >= wt->until)
            log_debug("a read waited %u ms for the journal's folds and goes ahead without",
                      w->cfg->hold_ms);
        *pp = wt->next;
        http_wait_run(wt);
    }
    if (w->waits->first == NULL)
        event_del(w->waits->ev);
}

/* A wait for H, or NULL when none is needed (what every worker acknowledged is counted --
 * of the K articles IDS only, unless IDS is NULL) or when out of memory (*OOM set, H not
 * answered). */
static struct http_wait *http_wait_new(struct tally_http_req *h, const char *const *ids,
                                       const uint16_t *lens, size_t k, bool *oom)
{
    struct tally_worker *w = h->w;
    struct tally_server *s = w->server;
    struct http_wait *wt;

    *oom = false;
    if (s->folders[0] == NULL) /* no journal: counted at once */
        return NULL;
    /* The next writes of these articles are counted at once: the reads that follow them
     * will find nothing to wait for. */
    if (ids != NULL) {
        uint64_t now = tally_now_ms();

        for (size_t j = 0; j < k; j++)
            tally_lately_read(&s->lately, ids[j], lens[j], now);
    }
    if ((wt = tally_http_alloc(h, sizeof(*wt))) == NULL) {
        *oom = true;
        return NULL;
    }
    if (ids != NULL ? tally_fold_mark_articles(s->folders, s->n_workers, ids, lens, k, &wt->mark)
                    : tally_fold_mark(s->folders, s->n_workers, &wt->mark))
        return NULL;
    if (w->waits == NULL && (w->waits = calloc(1, sizeof(*w->waits))) != NULL &&
        (w->waits->ev = event_new(w->base, -1, EV_PERSIST, on_waits, w)) == NULL) {
        free(w->waits);
        w->waits = NULL;
    }
    if (w->waits == NULL) {
        *oom = true;
        return NULL;
    }
    wt->h = h;
    /* At most --hold: the read itself may then take --redis-timeout, and every request is
     * answered within the two. */
    wt->until = tally_now_ms() + w->cfg->hold_ms;
    return wt;
}

/* Reads that wait look every HTTP_WAIT_POLL_MS, and at once when a fold of their own worker
 * ends. (Waking the other workers' reads too, through an eventfd each, measured no faster
 * under load: see docs/performance.md.) */
void tally_http_folded(void *arg)
{
    struct tally_worker *w = arg;

    if (w->waits != NULL && w->waits->first != NULL)
        event_active(w->waits->ev, EV_TIMEOUT, 0);
}

static void http_wait_add(struct tally_worker *w, struct http_wait *wt)
{
    struct timeval tv = {0, HTTP_WAIT_POLL_MS * 1000};

    wt->next = w->waits->first;
    w->waits->first = wt;
    if (!event_pending(w->waits->ev, EV_TIMEOUT, NULL))
        event_add(w->waits->ev, &tv);
}

bool tally_http_after_folds_of(struct tally_http_req *h, const char *const *ids,
                               const uint16_t *lens, size_t k, void (*fn)(void *arg), void *arg)
{
    bool oom;
    struct http_wait *wt = http_wait_new(h, ids, lens, k, &oom);

    if (wt == NULL) {
        if (oom)
            return false;
        fn(arg);
        return true;
    }
    wt->fn = fn;
    wt->arg = arg;
    http_wait_add(h->w, wt);
    return true;
}

void tally_http_after_folds(struct tally_http_req *h, void (*fn)(void *arg), void *arg)
{
    if (!tally_http_after_folds_of(h, NULL, NULL, 0, fn, arg))
        fn(arg); /* out of memory: it reads what is counted */
}

void tally_http_read_follows(struct tally_http_req *h, const struct tally_event *ev, size_t n)
{
    struct tally_server *s = h->w->server;
    uint64_t now;

    if (s->folders[0] == NULL) /* no journal: every write is counted at once */
        return;
    now = tally_now_ms();
    for (size_t i = 0; i < n; i++)
        tally_lately_read(&s->lately, ev[i].article, ev[i].article_len, now);
}

/* Run R's handler for H; for a read of counts, once what every worker of the process
 * acknowledged before now is counted: at once when it is, else after the folds it asks for
 * (at most --hold later: then it reads what is counted). */
static void http_run_fresh(struct tally_http_req *h, const struct http_route *r)
{
    struct http_wait *wt;
    bool oom;
    char *query;

    if (!r->fresh || (wt = http_wait_new(h, NULL, NULL, 0, &oom)) == NULL) {
        if (r->fresh && oom)
            tally_http_send_unavailable(h, "out of memory");
        else
            http_run(h, r);
        return;
    }
    /* The query lives only while the handler could have run: a waiting read keeps a copy. */
    if ((query = http_arena(h, h->query_len + 1)) == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    memcpy(query, h->query, h->query_len);
    query[h->query_len] = '\0';
    h->query = query;
    wt->r = r;
    http_wait_add(h->w, wt);
}

void tally_http_waits_free(struct tally_worker *w)
{
    if (w->waits == NULL)
        return;
    event_free(w->waits->ev);
    free(w->waits);
    w->waits = NULL;
}

/* The route of PATH, and whether another method would find one (for 405). */
static const struct http_route *http_find(const char *path, size_t len)
{
    for (size_t i = 0; i < sizeof(http_routes) / sizeof(http_routes[0]); i++) {
        const struct http_route *r = &http_routes[i];
        size_t n = strlen(r->path);

        if (r->prefix ? len > n && memcmp(path, r->path, n) == 0
                      : len == n && memcmp(path, r->path, n) == 0)
            return r;
    }
    return NULL;
}

static void http_route(struct tally_http_req *h)
{
    const struct http_route *r = http_find(h->path, h->path_len);

    if (r == NULL || (r->id && memchr(h->path + strlen(r->path), '/',
                                      h->path_len - strlen(r->path)) != NULL)) {
        tally_http_send_error(h, 404, "not_found", "path: no such endpoint");
        return;
    }
    h->route = r->metric;
    if (h->method == TALLY_HTTP_OPTIONS && h->v1) {
        http_preflight(h);
        return;
    }
    if ((h->method & r->methods) == 0) {
        tally_http_header(h, "Allow", r->methods == M_POST     ? "POST, OPTIONS"
                                      : r->methods == M_DELETE ? "DELETE, OPTIONS"
                                                               : "GET, HEAD");
        tally_http_send_error(h, 405, "method_not_allowed", "method: not allowed here");
        return;
    }
    http_run_fresh(h, r);
}

void http_req_dispatch(struct tally_http_req *h, const struct tally_http_head *head,
                       const char *body, size_t body_len)
{
    const char *uri = head->target.p, *q;
    size_t len = head->target.len;
    char *path;

    h->method = head->method;
    h->keep_alive = head->keep_alive;
    h->http10 = head->minor == 0;
    h->body = body;
    h->body_len = body_len;
    q = memchr(uri, '?', len);
    h->path_len = q != NULL ? (size_t)(q - uri) : len;
    h->v1 = len >= 4 && memcmp(uri, "/v1/", 4) == 0;
    http_take_headers(h, head);
    if (h->method == 0) {
        tally_http_send_error(h, 501, "not_implemented", "method: not known to this server");
        return;
    }
    if (h->path_len > HTTP_PATH_MAX || uri[0] != '/') {
        tally_http_send_error(h, 400, "invalid_uri", "uri: must be a path of at most 4096 bytes");
        return;
    }
    if ((path = http_arena(h, h->path_len + 1)) == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    memcpy(path, uri, h->path_len);
    path[h->path_len] = '\0';
    h->path = path;
    if (q != NULL) {
        h->query = q + 1;
        h->query_len = len - h->path_len - 1;
    }
    http_route(h);
}

void http_req_refuse(struct tally_http_req *h, const struct tally_http_head *head,
                     const struct tally_http_refusal *why)
{
    /* CORS as for any answer: by the path when it was read, else as under /v1/ (only a page
     * could have sent it there). */
    h->v1 = head == NULL || (head->target.len >= 4 && memcmp(head->target.p, "/v1/", 4) == 0);
    h->refused = true;
    if (head != NULL) {
        h->http10 = head->minor == 0;
        h->method = head->method;
        h->hdr.origin = http_arena_str(h, head->field[TALLY_HF_ORIGIN]);
        if (why->status == 413 && head->target.len >= 10 &&
            memcmp(head->target.p, "/v1/events", 10) == 0) {
            h->route = TALLY_ROUTE_EVENTS;
            tally_metric_add(&h->w->metrics.rejected[TALLY_REJECT_TOO_LARGE], 1);
        }
    }
    tally_http_send_error(h, why->status, why->code, why->message);
}
