/* http_routes.c -- one small handler per endpoint: parse, call the core, answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "http.h"
#include "tally/bots.h"
#include "tally/error.h"
#include "tally/hash.h"
#include "tally/keys.h"
#include "tally/log.h"
#include "tally/query.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "tally/visitor.h"
#include "tally/writer.h"

/* ---- Ingest: POST /v1/events and GET /v1/pixel.gif ---- */

/* A request whose events wait for Redis. The events and their article ids are copied in,
 * since the parse scratch is reused by the next request. */
struct ingest_call {
    struct tally_write wr;
    struct tally_http_req h;
    bool pixel;
    uint32_t n_views;               /* views among the events to count */
    uint32_t ignored[TALLY_IGNORES]; /* known before writing (bots, prefetch) */
    uint64_t *visitor;               /* N visitor ids, after the events */
    struct tally_event ev[];         /* then the visitor ids, then the article text */
};

static const unsigned char ingest_gif[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

static void ingest_count(struct tally_worker *w, const struct tally_batch *b, size_t from,
                         enum tally_outcome outcome)
{
    for (size_t i = from; i < b->n; i++)
        tally_metric_add(&w->metrics.events[b->ev[i].type][outcome], 1);
}

/* The answer to a pixel is always the GIF; the outcome goes in a header for debugging. */
static void ingest_send_gif(struct tally_http_req *h, const char *outcome)
{
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_header(h, "Cross-Origin-Resource-Policy", "cross-origin");
    tally_http_header(h, "Tally-Outcome", outcome);
    tally_http_send(h, 200, "image/gif", ingest_gif, sizeof(ingest_gif));
}

static void ingest_reject(struct tally_http_req *h, bool pixel, int status, enum tally_reject why,
                          const char *code, const char *message)
{
    tally_metric_add(&h->w->metrics.rejected[why], 1);
    if (pixel) {
        ingest_send_gif(h, code);
        return;
    }
    if (status == 401)
        tally_http_header(h, "WWW-Authenticate", "Bearer");
    if (status == 503) {
        tally_http_send_unavailable(h, message);
        return;
    }
    tally_http_send_error(h, status, code, message);
}

static void ingest_send_ok(struct tally_http_req *h, bool pixel, uint32_t accepted,
                           const uint32_t ignored[TALLY_IGNORES])
{
    struct tally_buf *b = &h->w->out;
    uint32_t total = 0;
    bool first = true;

    if (pixel) {
        ingest_send_gif(h, accepted > 0 ? "counted" : "ignored");
        return;
    }
    for (int r = 0; r < TALLY_IGNORES; r++)
        total += ignored[r];
    tally_buf_reset(b);
    tally_buf_adds(b, "{\"accepted\":");
    tally_buf_add_u64(b, accepted);
    tally_buf_adds(b, ",\"ignored\":");
    tally_buf_add_u64(b, total);
    if (total > 0) {
        tally_buf_adds(b, ",\"ignored_reasons\":{");
        for (int r = 0; r < TALLY_IGNORES; r++) {
            if (ignored[r] == 0)
                continue;
            tally_buf_adds(b, first ? "\"" : ",\"");
            tally_buf_adds(b, tally_ignore_name((enum tally_ignore)r));
            tally_buf_adds(b, "\":");
            tally_buf_add_u64(b, ignored[r]);
            first = false;
        }
        tally_buf_adds(b, "}");
    }
    tally_buf_adds(b, "}\n");
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "application/json", b->data, b->len);
}

static bool ingest_has_comments(const struct tally_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->ev[i].type == TALLY_EVENT_COMMENT)
            return true;
    return false;
}

/* Is UA a bot's? Matching the list costs far more than hashing, and readers' browsers send a
 * few User-Agents over and over: remember recent verdicts. */
static bool ingest_is_bot(struct tally_worker *w, const char *ua)
{
    static const uint8_t key[16] = {'t', 'a', 'l', 'l', 'y', ' ', 'u', 's',
                                    'e', 'r', '-', 'a', 'g', 'e', 'n', 't'};
    size_t len = ua != NULL ? strlen(ua) : 0;
    uint64_t h;

    if (len == 0)
        return tally_bot_match(ua, len);
    h = tally_siphash(key, ua, len) | 1;
    if (w->bot_seen[h & 255].ua != h) {
        w->bot_seen[h & 255].ua = h;
        w->bot_seen[h & 255].bot = tally_bot_match(ua, len);
    }
    return w->bot_seen[h & 255].bot;
}

/* Why a browser's request is answered but not counted: a prefetch or prerender, or a bot,
 * crawler or link preview. -1 when it counts. */
static int ingest_ignore_reason(struct tally_http_req *h)
{
    const char *p = h->hdr.purpose, *ua = h->hdr.user_agent;

    if (p != NULL && (strstr(p, "prefetch") != NULL || strstr(p, "preview") != NULL))
        return TALLY_IGNORE_PREFETCH;
    if (ingest_is_bot(h->w, ua))
        return TALLY_IGNORE_BOT;
    return -1;
}

static void ingest_count_written(struct tally_worker *w, const struct ingest_call *c)
{
    uint32_t repeat = c->wr.req.repeat;

    if (c->wr.req.replayed)
        return; /* counted (or not) the first time */
    tally_metric_add(&w->metrics.ignored[TALLY_IGNORE_REPEAT], repeat);
    tally_metric_add(&w->metrics.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_IGNORED], repeat);
    tally_metric_add(&w->metrics.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_COUNTED],
                     c->n_views - repeat);
    for (size_t i = 0; i < c->wr.req.n; i++)
        if (c->ev[i].type != TALLY_EVENT_VIEW)
            tally_metric_add(&w->metrics.events[c->ev[i].type][TALLY_OUTCOME_COUNTED], 1);
}

static void on_written(int status, struct tally_write *wr, void *arg)
{
    struct ingest_call *c = arg;
    struct tally_http_req *h = &c->h;
    struct tally_worker *w = h->w;
    uint32_t ignored[TALLY_IGNORES];

    (void)wr;
    w->busy--;
    if (status == TALLY_EUNKNOWN && c->pixel) {
        ingest_send_gif(h, "unknown"); /* the pixel always answers; its GIF claims nothing */
    } else if (status == TALLY_EUNKNOWN) {
        tally_http_abandon(h);
    } else if (status < 0) {
        for (size_t i = 0; i < c->wr.req.n; i++)
            tally_metric_add(&w->metrics.events[c->ev[i].type][TALLY_OUTCOME_FAILED], 1);
        ingest_reject(h, c->pixel, 503, TALLY_REJECT_UNAVAILABLE, "unavailable",
                      tally_strerror(status));
    } else {
        memcpy(ignored, c->ignored, sizeof(ignored));
        if (c->wr.req.replayed) {
            ignored[TALLY_IGNORE_BOT] = c->wr.req.bot_out;
            ignored[TALLY_IGNORE_PREFETCH] = c->wr.req.prefetch_out;
        }
        ignored[TALLY_IGNORE_REPEAT] = c->wr.req.repeat;
        ingest_count_written(w, c);
        ingest_send_ok(h, c->pixel, c->wr.req.accepted, ignored);
    }
    free(c);
}

/* Copy the batch's events (the scratch is reused) into a call that waits for Redis. */
static struct ingest_call *ingest_call_new(struct tally_http_req *h, const struct tally_batch *b,
                                           bool pixel)
{
    struct ingest_call *c = malloc(sizeof(*c) + b->n * (sizeof(c->ev[0]) + sizeof(uint64_t)) +
                                   b->text_len);
    char *text;

    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->h = *h;
    c->h.path = c->h.query = c->h.tail = NULL;
    c->pixel = pixel;
    c->visitor = (uint64_t *)&c->ev[b->n];
    text = (char *)&c->visitor[b->n];
    memcpy(text, b->text, b->text_len);
    for (size_t i = 0; i < b->n; i++) {
        c->ev[i] = b->ev[i];
        c->ev[i].article = text + (b->ev[i].article - b->text);
        c->n_views += b->ev[i].type == TALLY_EVENT_VIEW;
    }
    c->wr.req.ev = c->ev;
    c->wr.req.n = b->n;
    c->wr.done = on_written;
    c->wr.arg = c;
    return c;
}

/* Views carry who sent them, as an unsalted digest that never leaves memory; the writer turns
 * it into per-article visitor ids under the day's salt. */
static void ingest_visitor(struct tally_http_req *h, struct ingest_call *c, const uint8_t addr[16])
{
    const char *ua = h->hdr.user_agent;

    if (c->n_views == 0)
        return;
    c->wr.has_digest = true;
    c->wr.digest = tally_visitor_digest(addr, ua != NULL ? ua : "", ua != NULL ? strlen(ua) : 0);
    c->wr.visitor = c->visitor;
}

/* Validated batch B, authorized: count it (or not) and answer when Redis has it. */
static void ingest_submit(struct tally_http_req *h, const struct tally_batch *b, bool pixel,
                          const char *idem)
{
    struct tally_worker *w = h->w;
    uint32_t ignored[TALLY_IGNORES] = {0}, retry;
    struct ingest_call *c;
    uint8_t addr[16];
    char retry_after[12];
    int why = -1, rc;

    tally_http_client(h, addr);
    /* A server with the token speaks for itself: no rate limit, bot or prefetch rules. */
    if (tally_http_authorized(h) != 0) {
        if (!tally_ratelimit_take(&w->server->ratelimit, addr, (uint32_t)b->n,
                                  tally_http_now_us(), &retry)) {
            ingest_count(w, b, 0, TALLY_OUTCOME_REJECTED);
            snprintf(retry_after, sizeof(retry_after), "%u", retry);
            tally_http_header(h, "Retry-After", retry_after);
            ingest_reject(h, pixel, 429, TALLY_REJECT_RATE_LIMITED, "rate_limited",
                          "client: over --rate-limit events per second; retry later");
            return;
        }
        why = ingest_ignore_reason(h);
    }
    if (why >= 0) {
        ignored[why] = (uint32_t)b->n;
        tally_metric_add(&w->metrics.ignored[why], b->n);
        ingest_count(w, b, 0, TALLY_OUTCOME_IGNORED);
        ingest_send_ok(h, pixel, 0, ignored);
        return;
    }
    if ((c = ingest_call_new(h, b, pixel)) == NULL) {
        ingest_reject(h, pixel, 503, TALLY_REJECT_UNAVAILABLE, "unavailable", "out of memory");
        return;
    }
    c->wr.idem = idem;
    ingest_visitor(h, c, addr);
    rc = tally_writer_submit(w->writer, &c->wr);
    if (rc < 0) {
        free(c);
        ingest_count(w, b, 0, TALLY_OUTCOME_FAILED);
        ingest_reject(h, pixel, 503, TALLY_REJECT_UNAVAILABLE, "unavailable",
                      rc == TALLY_EFULL ? "too many events waiting for redis; retry later"
                                        : "redis is unavailable; retry later");
        return;
    }
    w->busy++;
}

/* An Idempotency-Key is 1-128 printable ASCII characters. */
static bool ingest_idem_valid(const char *k)
{
    size_t n = strlen(k);

    if (n == 0 || n > TALLY_IDEM_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] < 0x21 || k[i] > 0x7e)
            return false;
    return true;
}

static bool ingest_type_ok(const char *ctype)
{
    static const char *const ok[] = {"application/json", "text/plain",
                                     "application/x-www-form-urlencoded"};
    size_t n;

    if (ctype == NULL)
        return true;
    n = strcspn(ctype, "; \t");
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (n == strlen(ok[i]) && strncasecmp(ctype, ok[i], n) == 0)
            return true;
    return false;
}

/* Checks shared by the POST and the pixel, once the batch is valid: the origin, then the
 * token. Returns true when the request may be counted; else it has been answered. */
static bool ingest_admit(struct tally_http_req *h, const struct tally_batch *b, bool pixel)
{
    const char *origin = h->hdr.origin;
    int auth;

    if (origin != NULL &&
        !tally_config_origin_allowed(h->w->cfg, origin, strlen(origin))) {
        ingest_count(h->w, b, 0, TALLY_OUTCOME_REJECTED);
        ingest_reject(h, pixel, 403, TALLY_REJECT_ORIGIN, "origin_forbidden",
                      "origin: not in --allowed-origins");
        return false;
    }
    if (!ingest_has_comments(b) || (auth = tally_http_authorized(h)) == 0)
        return true;
    ingest_count(h->w, b, 0, TALLY_OUTCOME_REJECTED);
    if (auth == 403)
        ingest_reject(h, pixel, 403, TALLY_REJECT_FORBIDDEN, "token_not_configured",
                      "authorization: comment events need a token, and none is configured");
    else
        ingest_reject(h, pixel, 401, TALLY_REJECT_UNAUTHORIZED, "unauthorized",
                      "authorization: comment events need 'Authorization: Bearer <token>'");
    return false;
}

void tally_route_events(struct tally_http_req *h)
{
    struct tally_worker *w = h->w;
    struct evbuffer *in = evhttp_request_get_input_buffer(h->req);
    size_t len = evbuffer_get_length(in);
    const char *idem = h->hdr.idempotency_key;
    struct tally_error err;
    int rc;

    if (!ingest_type_ok(h->hdr.content_type)) {
        ingest_reject(h, false, 415, TALLY_REJECT_INVALID, "unsupported_media_type",
                      "content-type: send application/json or text/plain");
        return;
    }
    if (len > TALLY_BODY_MAX) {
        ingest_reject(h, false, 413, TALLY_REJECT_TOO_LARGE, "payload_too_large",
                      "body: at most 65536 bytes");
        return;
    }
    if (idem != NULL && !ingest_idem_valid(idem)) {
        ingest_reject(h, false, 400, TALLY_REJECT_INVALID, "invalid_idempotency_key",
                      "idempotency-key: 1-128 printable ASCII characters");
        return;
    }
    rc = tally_ingest_parse((const char *)evbuffer_pullup(in, -1), len, &w->batch, &err);
    if (rc == TALLY_ENOMEM) {
        ingest_reject(h, false, 503, TALLY_REJECT_UNAVAILABLE, "unavailable", "out of memory");
        return;
    }
    if (rc < 0) {
        ingest_reject(h, false, 400, TALLY_REJECT_INVALID, err.code, err.message);
        return;
    }
    if (ingest_admit(h, &w->batch, false))
        ingest_submit(h, &w->batch, false, idem);
}

void tally_route_pixel(struct tally_http_req *h)
{
    struct tally_worker *w = h->w;
    struct tally_error err;

    /* HEAD asks what a GET would answer; it counts nothing. */
    if (evhttp_request_get_command(h->req) == EVHTTP_REQ_HEAD) {
        ingest_send_gif(h, "ignored");
        return;
    }
    if (tally_ingest_parse_query(h->query, h->query_len, &w->batch, &err) < 0) {
        ingest_reject(h, true, 400, TALLY_REJECT_INVALID, err.code, err.message);
        return;
    }
    if (ingest_admit(h, &w->batch, true))
        ingest_submit(h, &w->batch, true, NULL);
}

/* ---- Stats ---- */

struct stats_call {
    struct tally_http_req h;
    bool many;
    char etag_in[64];
    struct tally_query q;
};

/* A weak validator of the body: equal bodies, equal tags. */
static void stats_etag(const struct tally_buf *b, char out[32])
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < b->len; i++)
        h = (h ^ (unsigned char)b->data[i]) * 1099511628211ULL;
    snprintf(out, 32, "W/\"%016llx\"", (unsigned long long)h);
}

static void on_stats_ready(int status, struct tally_query *q, void *arg)
{
    struct stats_call *c = arg;
    struct tally_http_req *h = &c->h;
    struct tally_buf *b = &h->w->out;
    char etag[32];

    h->w->busy--;
    if (status < 0) {
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
        free(c);
        return;
    }
    tally_buf_reset(b);
    if (c->many)
        tally_query_render_many(b, q);
    else
        tally_query_render_one(b, q->id[0], q->len[0], &q->stats[0]);
    tally_buf_adds(b, "\n");
    stats_etag(b, etag);
    tally_http_header(h, "ETag", etag);
    tally_http_header(h, "Cache-Control", "public, max-age=1");
    if (tally_http_etag_match(c->etag_in, etag))
        tally_http_send(h, 304, NULL, NULL, 0);
    else
        tally_http_send(h, 200, "application/json", b->data, b->len);
    free(c);
}

static void stats_run(struct tally_http_req *h, bool many)
{
    struct stats_call *c = malloc(sizeof(*c));
    const char *inm = h->hdr.if_none_match;
    struct tally_error err;
    int rc;

    if (c == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    c->h = *h;
    c->many = many;
    snprintf(c->etag_in, sizeof(c->etag_in), "%s", inm != NULL ? inm : "");
    rc = many ? tally_query_parse_articles(&c->q, h->query, h->query_len, &err)
              : tally_query_parse_path(&c->q, h->tail, h->tail_len, &err);
    if (rc < 0) {
        tally_http_send_error(h, 400, err.code, err.message);
        free(c);
        return;
    }
    /* Counted first: with every article cached, the answer goes out before this returns. */
    h->w->busy++;
    rc = tally_query_start(&c->q, h->w->redis, &h->w->cache, h->w->cfg->prefix, on_stats_ready,
                           c);
    if (rc < 0) {
        h->w->busy--;
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
        free(c);
    }
}

void tally_route_stats(struct tally_http_req *h)
{
    stats_run(h, true);
}

void tally_route_stats_one(struct tally_http_req *h)
{
    stats_run(h, false);
}

/* ---- Operating ---- */

void tally_route_healthz(struct tally_http_req *h)
{
    static const char body[] = "{\"status\":\"ok\"}\n";

    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "application/json", body, sizeof(body) - 1);
}

void tally_route_readyz(struct tally_http_req *h)
{
    static const char ok[] = "{\"status\":\"ready\"}\n";
    static const char down[] = "{\"status\":\"unavailable\",\"reason\":\"redis\"}\n";
    static const char stopping[] = "{\"status\":\"unavailable\",\"reason\":\"stopping\"}\n";

    tally_http_header(h, "Cache-Control", "no-store");
    if (h->w->draining)
        tally_http_send(h, 503, "application/json", stopping, sizeof(stopping) - 1);
    else if (!tally_redis_ready(h->w->redis))
        tally_http_send(h, 503, "application/json", down, sizeof(down) - 1);
    else
        tally_http_send(h, 200, "application/json", ok, sizeof(ok) - 1);
}

void tally_route_metrics(struct tally_http_req *h)
{
    struct tally_server *s = h->w->server;
    struct tally_metrics *m[TALLY_THREADS_MAX];
    struct tally_buf *b = &h->w->out;

    for (size_t i = 0; i < s->n_workers; i++)
        m[i] = &s->workers[i]->metrics;
    tally_buf_reset(b);
    tally_metrics_render(b, m, s->n_workers, s->start_time);
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "text/plain; version=0.0.4; charset=utf-8", b->data, b->len);
}
