/* http_routes.c -- one small handler per endpoint: parse, call the core, answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "http.h"
#include "tally/admit.h"
#include "tally/error.h"
#include "tally/idem.h"
#include "tally/keys.h"
#include "tally/log.h"
#include "tally/query.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "tally/uri.h"
#include "tally/visitor.h"
#include "tally/writer.h"

/* ---- Ingest: POST /v1/events and GET /v1/pixel.gif ----
 *
 * The rules are admit.c's: here the request's facts are gathered, the verdict is turned into
 * an answer, and an admitted batch into a write. Every ingest request ends in ingest_end(). */

/* A request whose events wait for Redis, in its arena. The events and their article ids are
 * copied in, since the parse scratch is reused by the next request. */
struct ingest_call {
    struct tally_write wr;
    struct tally_http_req *h;
    bool pixel;
    bool stats;                     /* POST /v1/events?stats=1 */
    struct tally_verdict v;         /* COUNT */
    uint64_t *visitor;              /* N visitor ids, after the events */
    struct tally_event ev[];        /* then the visitor ids, then the article text */
};

static const unsigned char ingest_gif[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c,
    0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* The answer to a pixel is always the GIF; the outcome goes in a header for debugging. */
static void ingest_send_gif(struct tally_http_req *h, const char *outcome)
{
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_header(h, "Cross-Origin-Resource-Policy", "cross-origin");
    tally_http_header(h, "Tally-Outcome", outcome);
    tally_http_send(h, 200, "image/gif", ingest_gif, sizeof(ingest_gif));
}

static void ingest_send_refusal(struct tally_http_req *h, bool pixel, int status,
                                const char *code, const char *message, uint32_t retry_s)
{
    char retry_after[12];

    if (status == 429) {
        snprintf(retry_after, sizeof(retry_after), "%u", retry_s);
        tally_http_header(h, "Retry-After", retry_after);
    }
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

/* The 200 of a batch: ACCEPTED events counted, IGNORED not on purpose; with Q (or NULL), the
 * stats of its articles after it. */
static void ingest_send_ok_with(struct tally_http_req *h, uint32_t accepted,
                                const uint32_t ignored[TALLY_IGNORES], const struct tally_query *q)
{
    struct tally_buf *b = &h->w->out;
    uint32_t total = 0;
    bool first = true;

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
    if (q != NULL) {
        tally_buf_adds(b, ",");
        tally_query_render_list(b, q);
    }
    tally_buf_adds(b, "}\n");
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "application/json", b->data, b->len);
}

/* ?stats=1: the stats of a batch's articles, read once its write is answered. */
struct ingest_stats {
    struct tally_http_req *h;
    uint32_t accepted, ignored[TALLY_IGNORES];
    struct tally_query q;
};

static void on_ingest_stats(int status, struct tally_query *q, void *arg)
{
    struct ingest_stats *c = arg;

    /* The events are counted whatever the read did: without the stats, the 200 says so, and
     * the page reads them with GET /v1/stats. */
    ingest_send_ok_with(c->h, c->accepted, c->ignored, status == 0 ? q : NULL);
    tally_query_release(q);
}

/* Once what this collector acknowledged of the batch's articles is counted. */
static void ingest_stats_read(void *arg)
{
    struct ingest_stats *c = arg;
    struct tally_http_req *h = c->h;

    if (!tally_http_read_try(h, c->q.n) ||
        tally_query_start(&c->q, h->w->redis, &h->w->cache, h->w->cfg->prefix, on_ingest_stats,
                          c) < 0) {
        ingest_send_ok_with(h, c->accepted, c->ignored, NULL);
        tally_query_release(&c->q);
    }
}

/* Answer a 200 for the N events EV; with STATS, once the stats of their articles are read. */
static void ingest_send_ok(struct tally_http_req *h, bool pixel, bool stats, uint32_t accepted,
                           const uint32_t ignored[TALLY_IGNORES], const struct tally_event *ev,
                           size_t n)
{
    struct ingest_stats *c;
    struct tally_error err;

    if (pixel) {
        ingest_send_gif(h, accepted > 0 ? "counted" : "ignored");
        return;
    }
    if (!stats || (c = tally_http_alloc(h, sizeof(*c))) == NULL) {
        ingest_send_ok_with(h, accepted, ignored, NULL);
        return;
    }
    memset(c, 0, sizeof(*c));
    c->h = h;
    c->accepted = accepted;
    memcpy(c->ignored, ignored, sizeof(c->ignored));
    if (tally_query_of_events(&c->q, ev, n, &err) < 0 ||
        !tally_http_after_folds_of(h, c->q.id, c->q.len, c->q.n, ingest_stats_read, c)) {
        ingest_send_ok_with(h, accepted, ignored, NULL);
        tally_query_release(&c->q);
    }
}

/* How the write of an admitted batch ended, for the answer. */
struct ingest_written {
    struct tally_admit_written rec;
    const char *failure;            /* not written: why, for the 503 */
    uint32_t accepted;              /* written: */
    uint32_t ignored[TALLY_IGNORES];
};

/* The end of every ingest request: its events' outcome is recorded, then it is answered
 * (with STATS, a 200 with its articles' stats). WR is how the write ended for an admitted
 * batch (NULL when V refused or ignored it). */
static void ingest_end(struct tally_http_req *h, bool pixel, bool stats,
                       const struct tally_verdict *v, const struct tally_event *ev, size_t n,
                       const struct ingest_written *wr)
{
    uint32_t ignored[TALLY_IGNORES] = {0};

    tally_admit_record(&h->w->metrics, v, ev, n, wr != NULL ? &wr->rec : NULL);
    if (v->action == TALLY_ADMIT_REFUSE) {
        ingest_send_refusal(h, pixel, v->status, v->err.code, v->err.message, v->retry_s);
    } else if (v->action == TALLY_ADMIT_IGNORE) {
        ignored[v->ignore] = (uint32_t)n;
        ingest_send_ok(h, pixel, stats, 0, ignored, ev, n);
    } else if (wr->rec.status == TALLY_EUNKNOWN && pixel) {
        ingest_send_gif(h, "unknown"); /* the pixel always answers; its GIF claims nothing */
    } else if (wr->rec.status == TALLY_EUNKNOWN) {
        tally_http_send_outcome_unknown(h, "redis did not confirm the write: it may or may "
                                           "not be counted; a retry with the same "
                                           "Idempotency-Key is counted at most once");
    } else if (wr->rec.status == TALLY_EREUSED) {
        ingest_send_refusal(h, pixel, 422, "idempotency_key_reused", wr->failure, 0);
    } else if (wr->rec.status < 0) {
        ingest_send_refusal(h, pixel, 503, "unavailable", wr->failure, 0);
    } else {
        ingest_send_ok(h, pixel, stats, wr->accepted, wr->ignored, ev, n);
    }
}

/* The write's completion: runs once for every write the writer took. */
static void on_written(int status, struct tally_write *wr, void *arg)
{
    struct ingest_call *c = arg;
    const struct tally_agg_req *r = &wr->req;
    struct ingest_written done = {.rec = {.status = status}, .failure = tally_strerror(status)};

    if (status == 0) {
        done.rec.repeat = r->repeat;
        done.rec.replayed = r->replayed;
        done.accepted = r->accepted;
        done.ignored[TALLY_IGNORE_REPEAT] = r->repeat;
        if (r->replayed) { /* as first answered */
            done.ignored[TALLY_IGNORE_BOT] = r->bot_out;
            done.ignored[TALLY_IGNORE_PREFETCH] = r->prefetch_out;
        }
    }
    ingest_end(c->h, c->pixel, c->stats, &c->v, c->ev, r->n, &done);
}

/* Copy the batch's events (the scratch is reused) into a call that waits for Redis. */
static struct ingest_call *ingest_call_new(struct tally_http_req *h, const struct tally_batch *b,
                                           bool pixel, bool stats, const struct tally_verdict *v)
{
    struct ingest_call *c = tally_http_alloc(h, sizeof(*c) + b->n * (sizeof(c->ev[0]) +
                                                                     sizeof(uint64_t)) +
                                                    b->text_len);
    char *text;

    if (c == NULL)
        return NULL;
    c->h = h;
    c->pixel = pixel;
    c->stats = stats;
    c->v = *v;
    c->visitor = (uint64_t *)&c->ev[b->n];
    text = (char *)&c->visitor[b->n];
    memcpy(text, b->text, b->text_len);
    for (size_t i = 0; i < b->n; i++) {
        c->ev[i] = b->ev[i];
        c->ev[i].article = text + (b->ev[i].article - b->text);
    }
    c->wr.req.ev = c->ev;
    c->wr.req.n = b->n;
    c->wr.done = on_written;
    c->wr.arg = c;
    return c;
}

/* Views carry who sent them, as an unsalted digest that never leaves memory; the writer turns
 * it into per-article visitor ids under the day's salt. */
static void ingest_visitor(const struct tally_admit_req *r, struct ingest_call *c)
{
    const char *ua = r->user_agent;
    bool views = false;

    for (size_t i = 0; i < c->wr.req.n; i++)
        views |= c->ev[i].type == TALLY_EVENT_VIEW;
    if (!views)
        return;
    c->wr.has_digest = true;
    c->wr.digest = tally_visitor_digest(r->addr, ua != NULL ? ua : "", ua != NULL ? strlen(ua) : 0);
    c->wr.visitor = c->visitor;
}

/* An admitted batch B: hand it to the writer, to be answered when Redis has it (with STATS,
 * read right after: the write is counted before its answer, not journaled). */
static void ingest_write(struct tally_http_req *h, const struct tally_admit_req *r,
                         const struct tally_batch *b, const struct tally_verdict *v, bool stats)
{
    struct tally_worker *w = h->w;
    struct ingest_written failed = {.rec = {.status = TALLY_ENOMEM}, .failure = "out of memory"};
    struct ingest_call *c = ingest_call_new(h, b, r->pixel, stats, v);
    int rc;

    if (c == NULL) {
        ingest_end(h, r->pixel, false, v, b->ev, b->n, &failed);
        return;
    }
    c->wr.idem = r->idempotency_key;
    c->wr.space = r->auth == 0 ? TALLY_IDEM_TOKEN : TALLY_IDEM_ANON;
    ingest_visitor(r, c);
    if (stats)
        tally_http_read_follows(h, c->ev, b->n);
    rc = tally_writer_submit(w->writer, &c->wr);
    if (rc < 0) {
        failed.rec.status = rc;
        failed.failure = rc == TALLY_EFULL ? "too many events waiting for redis; retry later"
                                           : "redis is unavailable; retry later";
        ingest_end(h, r->pixel, false, v, b->ev, b->n, &failed);
    }
}

/* The facts of H that the ingest rules look at. */
static void ingest_facts(struct tally_http_req *h, bool pixel, struct tally_admit_req *r)
{
    memset(r, 0, sizeof(*r));
    r->pixel = pixel;
    r->content_type = h->hdr.content_type;
    r->origin = h->hdr.origin;
    r->user_agent = h->hdr.user_agent;
    r->purpose = h->hdr.purpose;
    r->auth = tally_http_authorized(h);
    tally_http_client(h, r->addr);
    r->now_us = tally_http_now_us();
}

static void ingest_run(struct tally_http_req *h, const struct tally_admit_req *r, bool stats)
{
    struct tally_worker *w = h->w;
    struct tally_admit_ctx ctx = {.cfg = w->cfg, .rl = &w->server->ratelimit, .bots = &w->bots};
    struct tally_verdict v;

    tally_admit(&ctx, r, &w->batch, &v);
    if (v.action == TALLY_ADMIT_COUNT)
        ingest_write(h, r, &w->batch, &v, stats);
    else
        ingest_end(h, r->pixel, stats, &v, w->batch.ev, w->batch.n, NULL);
}

/* POST /v1/events?stats=1 (or true; 0 or false, the default: without). */
static int ingest_stats_param(const struct tally_http_req *h, bool *stats)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen;
    bool given = false;

    *stats = false;
    tally_query_iter_init(&it, h->query, h->query_len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        if (!tally_query_key_is(k, klen, "stats"))
            continue;
        if (given)
            return TALLY_EINVAL;
        given = true;
        if ((vlen == 1 && v[0] == '1') || (vlen == 4 && memcmp(v, "true", 4) == 0))
            *stats = true;
        else if (!((vlen == 1 && v[0] == '0') || (vlen == 5 && memcmp(v, "false", 5) == 0)))
            return TALLY_EINVAL;
    }
    return 0;
}

void tally_route_events(struct tally_http_req *h)
{
    struct tally_admit_req r;
    bool stats;

    if (ingest_stats_param(h, &stats) < 0) {
        tally_http_send_error(h, 400, "invalid_parameter", "stats: 1 or 0, given once");
        return;
    }
    ingest_facts(h, false, &r);
    r.idempotency_key = h->hdr.idempotency_key;
    r.input = h->body;
    r.input_len = h->body_len;
    ingest_run(h, &r, stats);
}

void tally_route_pixel(struct tally_http_req *h)
{
    struct tally_admit_req r;

    /* HEAD asks what a GET would answer; it counts nothing. */
    if (h->method == TALLY_HTTP_HEAD) {
        ingest_send_gif(h, "ignored");
        return;
    }
    ingest_facts(h, true, &r);
    r.input = h->query;
    r.input_len = h->query_len;
    ingest_run(h, &r, false);
}

/* ---- Stats ---- */

struct stats_call {
    struct tally_http_req *h;
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
    struct tally_http_req *h = c->h;
    struct tally_buf *b = &h->w->out;
    char etag[32];

    if (status < 0) {
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
        tally_query_release(q);
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
    tally_query_release(q);
}

/* Once what this collector acknowledged of C's articles is counted. */
static void stats_read(void *arg)
{
    struct stats_call *c = arg;
    struct tally_http_req *h = c->h;

    if (!tally_http_read_admit(h, c->q.n)) {
        tally_query_release(&c->q);
        return;
    }
    /* With every article cached, the answer is given before this returns. */
    if (tally_query_start(&c->q, h->w->redis, &h->w->cache, h->w->cfg->prefix, on_stats_ready,
                          c) < 0) {
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
        tally_query_release(&c->q);
    }
}

static void stats_run(struct tally_http_req *h, bool many)
{
    struct stats_call *c = tally_http_alloc(h, sizeof(*c));
    const char *inm = h->hdr.if_none_match;
    struct tally_error err;
    int rc;

    if (c == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    c->h = h;
    c->many = many;
    snprintf(c->etag_in, sizeof(c->etag_in), "%s", inm != NULL ? inm : "");
    rc = many ? tally_query_parse_articles(&c->q, h->query, h->query_len, &err)
              : tally_query_parse_path(&c->q, h->tail, h->tail_len, &err);
    if (rc < 0) {
        if (rc == TALLY_EINVAL)
            tally_http_send_error(h, 400, err.code, err.message);
        else
            tally_http_send_unavailable(h, "out of memory");
        tally_query_release(&c->q);
        return;
    }
    if (!tally_http_after_folds_of(h, c->q.id, c->q.len, c->q.n, stats_read, c)) {
        tally_http_send_unavailable(h, "out of memory");
        tally_query_release(&c->q);
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

/* Ready when every worker thread is: a load balancer's 200 must hold for whichever worker
 * accepts the next connection, not only for this one. */
void tally_route_readyz(struct tally_http_req *h)
{
    static const char stopping[] = "{\"status\":\"unavailable\",\"reason\":\"stopping\"}\n";
    struct tally_server *s = h->w->server;
    struct tally_metrics *m[TALLY_THREADS_MAX];
    struct tally_buf *b = &h->w->out;
    bool ready;

    tally_http_header(h, "Cache-Control", "no-store");
    if (h->w->draining) {
        tally_http_send(h, 503, "application/json", stopping, sizeof(stopping) - 1);
        return;
    }
    for (size_t i = 0; i < s->n_workers; i++)
        m[i] = &s->workers[i]->metrics;
    ready = tally_metrics_readiness(b, m, s->n_workers);
    tally_http_send(h, ready ? 200 : 503, "application/json", b->data, b->len);
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
