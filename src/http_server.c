/* http_server.c -- each worker's evhttp: limits, the route table, CORS, and the reply
 * helpers every handler answers through. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "http.h"
#include "tally/buf.h"
#include "tally/log.h"
#include "tally/visitor.h"

/* The request line and headers: room for a batch of 100 article ids of 256 bytes, every
 * byte percent-encoded (GET /v1/stats?article=...&...). */
#define HTTP_HEADERS_MAX 98304
#define HTTP_HEADER_COUNT_MAX 100
#define HTTP_TIMEOUT_S 10             /* idle: no byte for this long closes a connection */
#define HTTP_REQUEST_MAX_US 10000000  /* a request must arrive whole within this from its first byte */
#define HTTP_PATH_MAX 4096

enum http_methods {
    M_GET = EVHTTP_REQ_GET | EVHTTP_REQ_HEAD,
    M_POST = EVHTTP_REQ_POST,
    M_DELETE = EVHTTP_REQ_DELETE,
};

struct http_route {
    const char *path;
    bool prefix; /* PATH is a prefix: the rest is the handler's "tail" */
    unsigned methods;
    enum tally_route metric;
    void (*fn)(struct tally_http_req *h);
};

static const struct http_route http_routes[] = {
    {"/v1/events", false, M_POST, TALLY_ROUTE_EVENTS, tally_route_events},
    {"/v1/pixel.gif", false, M_GET, TALLY_ROUTE_PIXEL, tally_route_pixel},
    {"/v1/stats", false, M_GET, TALLY_ROUTE_STATS, tally_route_stats},
    {"/v1/stats/", true, M_GET, TALLY_ROUTE_STATS, tally_route_stats_one},
    {"/v1/top", false, M_GET, TALLY_ROUTE_TOP, tally_route_top},
    {"/v1/series/", true, M_GET, TALLY_ROUTE_SERIES, tally_route_series},
    {"/v1/totals", false, M_GET, TALLY_ROUTE_TOTALS, tally_route_totals},
    {"/v1/badge/", true, M_GET, TALLY_ROUTE_BADGE, tally_route_badge},
    {"/v1/articles/", true, M_DELETE, TALLY_ROUTE_ARTICLES, tally_route_forget},
    {"/dashboard", false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/dashboard.js", false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/dashboard.css", false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/healthz", false, M_GET, TALLY_ROUTE_HEALTH, tally_route_healthz},
    {"/readyz", false, M_GET, TALLY_ROUTE_HEALTH, tally_route_readyz},
    {"/metrics", false, M_GET, TALLY_ROUTE_METRICS, tally_route_metrics},
    {"/tally.js", false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/demo/", false, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
    {"/demo/", true, M_GET, TALLY_ROUTE_ASSETS, tally_route_asset},
};

uint64_t tally_http_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- Replies ---- */

void tally_http_header(struct tally_http_req *h, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(h->req), name, value);
}

/* Browsers may read /v1/ answers from allowed origins: "*" when every origin is, else the
 * origin echoed (never an unlisted one) with Vary: Origin. */
static void http_cors(struct tally_http_req *h)
{
    const struct tally_config *cfg = h->w->cfg;
    const char *origin;

    if (!h->v1)
        return;
    if (cfg->any_origin) {
        tally_http_header(h, "Access-Control-Allow-Origin", "*");
        return;
    }
    tally_http_header(h, "Vary", "Origin");
    origin = h->hdr.origin;
    if (origin != NULL && tally_config_origin_allowed(cfg, origin, strlen(origin)))
        tally_http_header(h, "Access-Control-Allow-Origin", origin);
}

void tally_http_send(struct tally_http_req *h, int code, const char *ctype, const void *body,
                     size_t len)
{
    double secs = (double)(tally_http_now_us() - h->t0_us) / 1e6;

    if (ctype != NULL) {
        tally_http_header(h, "Content-Type", ctype);
        tally_http_policy(h, ctype);
    }
    http_cors(h);
    if (h->w->draining)
        tally_http_header(h, "Connection", "close");
    /* libevent 2.1 would send a body after the headers of a HEAD answer too. */
    if (len > 0 && evhttp_request_get_command(h->req) != EVHTTP_REQ_HEAD)
        evbuffer_add(evhttp_request_get_output_buffer(h->req), body, len);
    tally_metrics_request(&h->w->metrics, h->route, code, secs);
    if (h->read_admitted) {
        h->w->reads--;
        h->w->read_cmds -= h->read_cost;
        h->read_admitted = false;
    }
    evhttp_send_reply(h->req, code, NULL, NULL);
}

bool tally_http_read_admit(struct tally_http_req *h, size_t cost)
{
    struct tally_worker *w = h->w;

    assert(!h->read_admitted);
    if (w->reads >= TALLY_READS_MAX || cost > TALLY_READ_CMDS_MAX - w->read_cmds) {
        tally_metric_add(&w->metrics.reads_refused, 1);
        tally_http_send_unavailable(h, "too many reads waiting for redis; retry later");
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

static int http_check_token(const char *token, const char *auth)
{
    size_t tlen = strlen(token), alen;
    unsigned char diff = 0;

    if (tlen == 0)
        return 403;
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 401;
    auth += 7;
    alen = strlen(auth);
    /* In time independent of where the two differ. */
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)(token[i] ^ (i < alen ? auth[i] : 0));
    return diff == 0 && alen == tlen ? 0 : 401;
}

int tally_http_authorized(struct tally_http_req *h)
{
    if (h->authorized < 0)
        h->authorized = http_check_token(h->w->cfg->token, h->hdr.authorization);
    return h->authorized;
}

static void http_peer(struct evhttp_request *req, uint8_t out[16])
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const struct sockaddr *sa = evcon != NULL ? evhttp_connection_get_addr(evcon) : NULL;

    memset(out, 0, 16);
    if (sa != NULL && sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa != NULL && sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}

void tally_http_client(struct tally_http_req *h, uint8_t out[16])
{
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(h->req);
    struct tally_buf *b = &h->w->scratch;
    struct evkeyval *kv;
    uint8_t peer[16];

    http_peer(h->req, peer);
    if (h->hdr.n_forwarded_for == 0 || !tally_config_trusted(h->w->cfg, peer)) {
        memcpy(out, peer, 16);
        return;
    }
    /* Every X-Forwarded-For line, in order, is one list. */
    tally_buf_reset(b);
    for (kv = hdrs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "X-Forwarded-For") != 0)
            continue;
        if (b->len > 0)
            tally_buf_add(b, ",", 1);
        tally_buf_adds(b, kv->value);
    }
    tally_client_addr(h->w->cfg, peer, b->len > 0 ? b->data : NULL, b->len, out);
}

/* ---- Dispatch ---- */

/* One pass over the request headers: the ones tally reads, and counts for the checks. */
static void http_scan_headers(struct evhttp_request *req, struct tally_http_headers *hd)
{
    static const struct {
        const char *name;
        size_t offset; /* of the field in struct tally_http_headers */
    } wanted[] = {
        {"Content-Type", offsetof(struct tally_http_headers, content_type)},
        {"Idempotency-Key", offsetof(struct tally_http_headers, idempotency_key)},
        {"Origin", offsetof(struct tally_http_headers, origin)},
        {"Authorization", offsetof(struct tally_http_headers, authorization)},
        {"User-Agent", offsetof(struct tally_http_headers, user_agent)},
        {"If-None-Match", offsetof(struct tally_http_headers, if_none_match)},
        {"Sec-Purpose", offsetof(struct tally_http_headers, purpose)},
        {"Purpose", offsetof(struct tally_http_headers, purpose)},
        {"X-Purpose", offsetof(struct tally_http_headers, purpose)},
        {"X-Moz", offsetof(struct tally_http_headers, purpose)},
        {"Transfer-Encoding", offsetof(struct tally_http_headers, transfer_encoding)},
    };
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;

    memset(hd, 0, sizeof(*hd));
    for (kv = hdrs->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        size_t len = strlen(kv->key);

        hd->n++;
        hd->bad_name |= strpbrk(kv->key, " \t") != NULL;
        hd->n_content_length += len == 14 && strcasecmp(kv->key, "Content-Length") == 0;
        hd->n_transfer_encoding += len == 17 && strcasecmp(kv->key, "Transfer-Encoding") == 0;
        hd->n_forwarded_for += len == 15 && strcasecmp(kv->key, "X-Forwarded-For") == 0;
        for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
            const char **field = (const char **)((char *)hd + wanted[i].offset);

            if (*field == NULL && len == strlen(wanted[i].name) &&
                strcasecmp(kv->key, wanted[i].name) == 0)
                *field = kv->value;
        }
    }
}

/* Framing libevent 2.1 would read one way and a proxy in front another (RFC 9112 6.3, 5.1),
 * so that a request could hide in a body: more than one Content-Length, one beside
 * Transfer-Encoding, a Transfer-Encoding other than "chunked" (libevent would take the body
 * as absent), or whitespace in a header name (a "Content-Length : 5" it would ignore). */
static bool http_framing_ambiguous(const struct tally_http_headers *hd)
{
    const char *te = hd->transfer_encoding;

    if (te != NULL) {
        te += strspn(te, " \t");
        if (strncasecmp(te, "chunked", 7) != 0 || te[7 + strspn(te + 7, " \t")] != '\0')
            return true;
    }
    return hd->bad_name || hd->n_content_length > 1 || hd->n_transfer_encoding > 1 ||
           (hd->n_content_length > 0 && hd->n_transfer_encoding > 0);
}

static void http_preflight(struct tally_http_req *h)
{
    tally_http_header(h, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
    tally_http_header(h, "Access-Control-Allow-Headers",
                      "Content-Type, Authorization, Idempotency-Key");
    tally_http_header(h, "Access-Control-Max-Age", "7200");
    tally_http_send(h, 204, NULL, NULL, 0);
}

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

static void http_dispatch(struct tally_http_req *h)
{
    const struct http_route *r = http_find(h->path, h->path_len);
    enum evhttp_cmd_type method = evhttp_request_get_command(h->req);

    if (r == NULL) {
        tally_http_send_error(h, 404, "not_found", "path: no such endpoint");
        return;
    }
    h->route = r->metric;
    if (method == EVHTTP_REQ_OPTIONS && h->v1) {
        http_preflight(h);
        return;
    }
    if (((unsigned)method & r->methods) == 0) {
        tally_http_header(h, "Allow", r->methods == M_POST     ? "POST, OPTIONS"
                                      : r->methods == M_DELETE ? "DELETE, OPTIONS"
                                                               : "GET, HEAD");
        tally_http_send_error(h, 405, "method_not_allowed", "method: not allowed here");
        return;
    }
    if (r->prefix) {
        h->tail = h->path + strlen(r->path);
        h->tail_len = h->path_len - strlen(r->path);
    }
    r->fn(h);
}

static bool http_poisoned(struct tally_worker *w, struct evhttp_request *req);

static void on_request(struct evhttp_request *req, void *arg)
{
    struct tally_http_req h = {.req = req, .w = arg, .route = TALLY_ROUTE_OTHER,
                               .t0_us = tally_http_now_us(), .path = "", .query = "",
                               .authorized = -1};
    const char *uri = evhttp_request_get_uri(req), *q;
    char path[HTTP_PATH_MAX + 1];

    q = strchr(uri, '?');
    h.path_len = q != NULL ? (size_t)(q - uri) : strlen(uri);
    h.v1 = strncmp(uri, "/v1/", 4) == 0;
    if (h.path_len > HTTP_PATH_MAX || uri[0] != '/') {
        tally_http_send_error(&h, 400, "invalid_uri", "uri: must be a path of at most 4096 bytes");
        return;
    }
    memcpy(path, uri, h.path_len);
    path[h.path_len] = '\0';
    h.path = path;
    if (q != NULL) {
        h.query = q + 1;
        h.query_len = strlen(q + 1);
    }
    http_scan_headers(req, &h.hdr);
    if (h.hdr.n > HTTP_HEADER_COUNT_MAX) {
        tally_http_header(&h, "Connection", "close");
        tally_http_send_error(&h, 400, "too_many_headers", "headers: at most 100");
        return;
    }
    if (http_poisoned(h.w, req)) {
        tally_http_header(&h, "Connection", "close");
        tally_http_send_error(&h, 400, "invalid_bytes", "request: holds a NUL byte");
        return;
    }
    if (http_framing_ambiguous(&h.hdr)) {
        tally_http_header(&h, "Connection", "close");
        tally_http_send_error(&h, 400, "ambiguous_framing",
                              "headers: repeated or conflicting Content-Length/Transfer-Encoding");
        return;
    }
    http_dispatch(&h);
}

/* ---- Connections ----
 *
 * The worker makes each connection's bufferevent itself (evhttp's bevcb), so that it can
 * count connections -- and stop accepting at its share of --max-connections: the rest wait
 * in the kernel's backlog, not in our memory -- and cut off a client that trickles a request
 * in: evhttp only has an idle timeout, which a byte every few seconds keeps resetting. The
 * connection's end is learnt from evhttp's close callback, set once evhttp has taken the
 * bufferevent over. */

struct conn_guard {
    struct tally_worker *w;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* once attached */
    bool poisoned;          /* a NUL byte came in a head: libevent would cut a value at it */
    uint8_t head_end;       /* how much of the "\r\n\r\n" ending a head was seen; 4: body */
    struct event attach;    /* runs once evhttp's accept has finished with the connection */
    uint64_t reading_since; /* us: the first byte of the request being received, or 0 */
    TAILQ_ENTRY(conn_guard) link;
};

static size_t http_conn_cap(const struct tally_worker *w)
{
    size_t cap = w->cfg->max_connections / w->server->n_workers;

    return cap > 0 ? cap : 1;
}

static void http_conn_gone(struct conn_guard *g)
{
    struct tally_worker *w = g->w;

    event_del(&g->attach);
    if (g->poisoned)
        w->poisoned--;
    TAILQ_REMOVE(&w->conn_list, g, link);
    free(g);
    w->conns--;
    tally_gauge_add(&w->metrics.connections, -1);
    if (w->paused && w->conns < http_conn_cap(w) && w->bound != NULL) {
        evconnlistener_enable(evhttp_bound_socket_get_listener(w->bound));
        w->paused = false;
    }
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    http_conn_gone(arg);
}

/* Bytes arrived (or were consumed): a request must arrive whole within its time. */
/* A request head (line and headers) with a NUL byte in it: libevent would cut the value at
 * it and read the rest of the value as gone. Mark the connection: its request gets a 400.
 * N bytes from AT are new; the head ends at the first "\r\n\r\n". */
static void http_scan_head(struct conn_guard *g, struct evbuffer *buf, struct evbuffer_ptr *at,
                           size_t n)
{
    static const char end[4] = {'\r', '\n', '\r', '\n'};
    struct evbuffer_iovec v[8];

    while (n > 0 && g->head_end < 4) {
        int nv = evbuffer_peek(buf, (ev_ssize_t)n, at, v, 8);
        size_t seen = 0;

        if (nv <= 0)
            return;
        for (int k = 0; k < nv && k < 8 && seen < n && g->head_end < 4; k++) {
            const char *p = v[k].iov_base;
            size_t len = v[k].iov_len < n - seen ? v[k].iov_len : n - seen;

            for (size_t i = 0; i < len && g->head_end < 4; i++) {
                if (p[i] == '\0') {
                    g->poisoned = true;
                    g->w->poisoned++;
                    return;
                }
                g->head_end = p[i] == end[g->head_end] ? g->head_end + 1 : p[i] == '\r';
            }
            seen += len;
        }
        /* More extents than V holds: go on after those scanned. */
        if (seen == 0 || evbuffer_ptr_set(buf, at, seen, EVBUFFER_PTR_ADD) < 0)
            return;
        n -= seen;
    }
}

static void on_conn_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn_guard *g = arg;
    struct evbuffer_ptr at;
    uint64_t now;

    if (info->n_added == 0 || g->bev == NULL)
        return;
    if (g->head_end < 4 && !g->poisoned &&
        evbuffer_ptr_set(buf, &at, info->orig_size, EVBUFFER_PTR_SET) == 0)
        http_scan_head(g, buf, &at, info->n_added);
    now = tally_http_now_us();
    if (g->reading_since == 0) {
        g->reading_since = now;
    } else if (now - g->reading_since > HTTP_REQUEST_MAX_US) {
        /* Deferred: evhttp frees the connection in its error callback, not under us. */
        tally_metric_add(&g->w->metrics.slow_clients, 1);
        g->reading_since = now; /* one cut is enough */
        bufferevent_disable(g->bev, EV_READ);
        bufferevent_trigger_event(g->bev, BEV_EVENT_READING | BEV_EVENT_ERROR,
                                  BEV_TRIG_DEFER_CALLBACKS);
    }
}

/* An answer going out: the request is complete; the next one starts its own clock. */
static void on_conn_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct conn_guard *g = arg;

    (void)buf;
    if (info->n_added > 0) {
        g->reading_since = 0;
        g->head_end = 0; /* the next request's head */
    }
}

/* evhttp has set the bufferevent up, with its connection as the callbacks' argument, or has
 * already given up on it (its callbacks are then cleared). Our reference kept it alive. */
static void on_conn_attach(evutil_socket_t fd, short what, void *arg)
{
    struct conn_guard *g = arg;
    struct bufferevent *bev = g->bev;
    void *evcon = NULL;

    (void)fd;
    (void)what;
    bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
    g->evcon = evcon;
    if (evcon != NULL)
        evhttp_connection_set_closecb(evcon, on_conn_close, g);
    else
        http_conn_gone(g);
    bufferevent_decref(bev);
}

static struct bufferevent *on_conn_new(struct event_base *base, void *arg)
{
    struct tally_worker *w = arg;
    struct conn_guard *g = calloc(1, sizeof(*g));
    struct bufferevent *bev = g != NULL ? bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)
                                        : NULL;

    if (bev == NULL) {
        /* evhttp makes its own bufferevent when given none: served, uncounted. */
        free(g);
        return NULL;
    }
    g->w = w;
    g->bev = bev;
    bufferevent_incref(bev);
    evbuffer_add_cb(bufferevent_get_input(bev), on_conn_input, g);
    evbuffer_add_cb(bufferevent_get_output(bev), on_conn_output, g);
    event_assign(&g->attach, base, -1, 0, on_conn_attach, g);
    event_active(&g->attach, EV_TIMEOUT, 0);
    TAILQ_INSERT_TAIL(&w->conn_list, g, link);
    w->conns++;
    tally_gauge_add(&w->metrics.connections, 1);
    if (w->conns >= http_conn_cap(w) && w->bound != NULL && !w->paused) {
        evconnlistener_disable(evhttp_bound_socket_get_listener(w->bound));
        w->paused = true;
    }
    return bev;
}

/* ---- Setup ---- */

int tally_http_setup(struct tally_worker *w, evutil_socket_t listener)
{
    struct evconnlistener *lst;

    TAILQ_INIT(&w->conn_list);
    w->http = evhttp_new(w->base);
    if (w->http == NULL)
        return -1;
    /* Twice the limit, so that a body just over it gets tally's JSON 413, not libevent's
     * HTML one (which larger bodies still get). */
    evhttp_set_max_body_size(w->http, 2 * TALLY_BODY_MAX);
    evhttp_set_max_headers_size(w->http, HTTP_HEADERS_MAX);
    evhttp_set_timeout(w->http, HTTP_TIMEOUT_S);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_DELETE);
    evhttp_set_default_content_type(w->http, "application/json");
    evhttp_set_gencb(w->http, on_request, w);
    evhttp_set_bevcb(w->http, on_conn_new, w);
    /* Backlog 0: the socket listens already, with server.c's backlog (-1 would shrink it to
     * libevent's 128). */
    lst = evconnlistener_new(w->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                             0, listener);
    if (lst == NULL)
        return -1;
    w->bound = evhttp_bind_listener(w->http, lst);
    return w->bound != NULL ? 0 : -1;
}

/* Did a NUL byte arrive on REQ's connection? Rare: only then are the connections searched. */
static bool http_poisoned(struct tally_worker *w, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev;
    struct conn_guard *g;

    if (w->poisoned == 0 || evcon == NULL)
        return false;
    bev = evhttp_connection_get_bufferevent(evcon);
    TAILQ_FOREACH(g, &w->conn_list, link)
        if (g->bev == bev)
            return g->poisoned;
    return false;
}

void tally_http_close_idle(struct tally_worker *w)
{
    struct conn_guard *g, *next;

    for (g = TAILQ_FIRST(&w->conn_list); g != NULL; g = next) {
        next = TAILQ_NEXT(g, link);
        /* Its close callback frees G (and unlinks it) from inside the free. */
        if (g->evcon != NULL && g->reading_since == 0 &&
            evbuffer_get_length(bufferevent_get_output(g->bev)) == 0)
            evhttp_connection_free(g->evcon);
    }
}

void tally_http_stop_accepting(struct tally_worker *w)
{
    if (w->bound != NULL) {
        evhttp_del_accept_socket(w->http, w->bound);
        w->bound = NULL;
    }
}
