/* live.c -- GET /v1/live: article stats as Server-Sent Events.
 *
 * A stream opens with one "stats" event per article it names, read as /v1/stats reads them
 * (through the worker's cache), then joins its worker's registry of watched articles. Once a
 * second the worker reads every article of its registry in one pipeline of HGETALLs -- one
 * round trip, however many streams watch them -- renders each exactly as /v1/stats/{article}
 * does, and pushes an article whose rendering changed to the streams that watch it. So
 * whichever collector acknowledged an event, every stream shows it within about a second.
 *
 * The registry is per worker, not per process: a worker's base, Redis connection and
 * connections are its thread's alone, and the request path takes no locks. One shared registry
 * would need a lock on every open, close and push, and a wake-up across threads to write on
 * another worker's connections. A collector thus makes at most one such round trip a second
 * per worker thread (--threads), each with the articles its own streams watch.
 *
 * Each watcher remembers a digest of what it was last sent of each article, and the article
 * the digest of its last reading: an unchanged article costs one comparison, and a watcher
 * that joined with a newer or older first event than the registry's is still sent each
 * change once. A comment line every LIVE_KEEPALIVE_MS keeps proxies and browsers from taking
 * a quiet stream for a dead one.
 *
 * A stream whose reader has not taken everything by a tick is behind: it is sent nothing
 * until it has, and then each article's latest state once -- the changes in between are
 * replaced, not queued. So what a stream holds unwritten is at most one burst: its first
 * events, or one event per article it watches, plus a keepalive; and the HTTP layer drops
 * it when that does not drain within 10 s. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "http.h"
#include "tally/error.h"
#include "tally/fanout.h"
#include "tally/keys.h"
#include "tally/query.h"
#include "tally/redis.h"
#include "tally/store.h"

#define LIVE_TICK_MS 1000
#define LIVE_KEEPALIVE_MS 15000 /* the contract promises one at least every 30 s */
#define LIVE_BUCKETS_MIN 64

struct live_stream;

/* One stream watching one article. */
struct live_sub {
    TAILQ_ENTRY(live_sub) link; /* the article's watchers */
    struct live_stream *s;
    struct live_article *a;
    uint64_t sent; /* digest of what S was last sent of A */
};

TAILQ_HEAD(live_subs, live_sub);

/* A watched article: in the registry while a stream watches it or a read holds it. */
struct live_article {
    struct live_article *next; /* hash chain */
    struct live_subs subs;
    size_t refs;   /* watchers, plus one while the read in flight holds it */
    uint64_t seen; /* digest of its last rendering read; 0: none, or watchers differ */
    uint32_t hash;
    uint16_t len;
    char id[]; /* LEN bytes, NUL-terminated */
};

struct live_stream {
    TAILQ_ENTRY(live_stream) link; /* the worker's open streams */
    struct tally_http_req *h;
    struct tally_query q; /* the first read; released once the stream is open */
    uint64_t last_ms;     /* the last write */
    bool behind;          /* at the last tick its reader had not taken all it was sent */
    size_t n_subs;
    struct live_sub subs[]; /* one per distinct article */
};

TAILQ_HEAD(live_streams, live_stream);

struct tally_live {
    struct tally_worker *w;
    struct event *tick;
    struct live_article **table;
    size_t n_buckets, n_articles;
    struct live_streams streams;
    /* The read in flight: the articles it holds, in the order of its commands. */
    bool reading;
    struct tally_fanout fan;
    struct live_article **batch;
    size_t n_batch;
};

/* ---- The registry ---- */

static uint32_t live_hash(const char *id, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    return h;
}

/* A digest of a rendering, never 0. */
static uint64_t live_digest(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h | 1;
}

static void live_grow(struct tally_live *lv)
{
    size_t n = lv->n_buckets * 2;
    struct live_article **t = calloc(n, sizeof(*t));

    if (t == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < lv->n_buckets; i++) {
        struct live_article *a, *next;

        for (a = lv->table[i]; a != NULL; a = next) {
            next = a->next;
            a->next = t[a->hash & (n - 1)];
            t[a->hash & (n - 1)] = a;
        }
    }
    free(lv->table);
    lv->table = t;
    lv->n_buckets = n;
}

/* Article ID (LEN bytes) from the registry, added when new (with no reference). NULL when out
 * of memory. */
static struct live_article *live_article_get(struct tally_live *lv, const char *id, size_t len)
{
    uint32_t hash = live_hash(id, len);
    struct live_article *a;

    for (a = lv->table[hash & (lv->n_buckets - 1)]; a != NULL; a = a->next)
        if (a->hash == hash && a->len == len && memcmp(a->id, id, len) == 0)
            return a;
    if ((a = malloc(sizeof(*a) + len + 1)) == NULL)
        return NULL;
    TAILQ_INIT(&a->subs);
    a->refs = 0;
    a->seen = 0;
    a->hash = hash;
    a->len = (uint16_t)len;
    memcpy(a->id, id, len);
    a->id[len] = '\0';
    a->next = lv->table[hash & (lv->n_buckets - 1)];
    lv->table[hash & (lv->n_buckets - 1)] = a;
    lv->n_articles++;
    tally_gauge_add(&lv->w->metrics.live_articles, 1);
    if (lv->n_articles > lv->n_buckets)
        live_grow(lv);
    return a;
}

/* Drop a reference to A: the last one takes it out of the registry. */
static void live_article_put(struct tally_live *lv, struct live_article *a)
{
    struct live_article **pp = &lv->table[a->hash & (lv->n_buckets - 1)];

    if (--a->refs > 0)
        return;
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    lv->n_articles--;
    tally_gauge_add(&lv->w->metrics.live_articles, -1);
    free(a);
}

/* ---- Streams ---- */

static bool live_admit(struct tally_worker *w)
{
    uint32_t n = atomic_fetch_add_explicit(&w->server->live_streams, 1, memory_order_relaxed);

    if (n < w->cfg->live_max)
        return true;
    atomic_fetch_sub_explicit(&w->server->live_streams, 1, memory_order_relaxed);
    return false;
}

/* Free a stream that never opened (or whose registration is undone). */
static void live_stream_free(struct tally_worker *w, struct live_stream *s)
{
    tally_query_release(&s->q);
    free(s);
    atomic_fetch_sub_explicit(&w->server->live_streams, 1, memory_order_relaxed);
}

/* Take an open stream out of the registry and free it; its request is no longer ours. */
static void live_stream_close(struct tally_live *lv, struct live_stream *s)
{
    for (size_t i = 0; i < s->n_subs; i++) {
        struct live_sub *sub = &s->subs[i];

        TAILQ_REMOVE(&sub->a->subs, sub, link);
        live_article_put(lv, sub->a);
    }
    TAILQ_REMOVE(&lv->streams, s, link);
    tally_gauge_add(&lv->w->metrics.live_streams, -1);
    live_stream_free(lv->w, s);
}

static void on_live_gone(struct tally_http_req *h, void *arg)
{
    live_stream_close(h->w->live, arg);
}

static void live_write(struct live_stream *s, const struct tally_buf *b, uint64_t now)
{
    (void)tally_http_stream_write(s->h, b->data, b->len); /* a drop ends in on_live_gone */
    s->last_ms = now;
}

/* Append one stats event of article ID (LEN bytes) with totals ST to OUT; its rendering goes
 * through JSON (reset). Returns the rendering's digest. */
static uint64_t live_event(struct tally_buf *out, struct tally_buf *json, const char *id,
                           size_t len, const struct tally_stats *st)
{
    tally_buf_reset(json);
    tally_query_render_one(json, id, len, st);
    tally_buf_adds(out, "event: stats\ndata: ");
    tally_buf_add(out, json->data, json->len);
    tally_buf_adds(out, "\n\n");
    return live_digest(json->data, json->len);
}

static bool live_seen_before(const struct tally_query *q, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (q->len[j] == q->len[i] && memcmp(q->id[j], q->id[i], q->len[i]) == 0)
            return true;
    return false;
}

static void live_headers(struct tally_http_req *h)
{
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_header(h, "X-Accel-Buffering", "no"); /* nginx: pass each event on at once */
}

/* The first read is in: open the stream with one event per distinct article, and watch
 * them. */
static void on_live_first(int status, struct tally_query *q, void *arg)
{
    struct live_stream *s = arg;
    struct tally_http_req *h = s->h;
    struct tally_worker *w = h->w;
    struct tally_live *lv = w->live;
    struct tally_buf *out = &w->out;
    uint64_t now = tally_now_ms();

    if (status < 0 || w->draining) {
        tally_http_send_unavailable(h, status < 0 ? "redis is unavailable; retry later"
                                                  : "the collector is stopping");
        live_stream_free(w, s);
        return;
    }
    live_headers(h);
    if (tally_http_stream_start(h, 200, "text/event-stream", on_live_gone, s) < 0) {
        live_stream_free(w, s);
        return;
    }
    tally_buf_reset(out);
    tally_buf_adds(out, "retry: 2000\n\n"); /* how soon a browser reconnects */
    for (size_t i = 0; i < q->n; i++) {
        struct live_sub *sub = &s->subs[s->n_subs];
        uint64_t d;

        if (live_seen_before(q, i))
            continue;
        d = live_event(out, &w->scratch, q->id[i], q->len[i], &q->stats[i]);
        tally_metric_add(&w->metrics.live_events, 1);
        if ((sub->a = live_article_get(lv, q->id[i], q->len[i])) == NULL)
            continue; /* shown, not watched: out of memory */
        sub->s = s;
        sub->sent = d;
        sub->a->refs++;
        if (sub->a->seen != d)
            sub->a->seen = 0; /* its next reading is compared with each watcher's */
        TAILQ_INSERT_TAIL(&sub->a->subs, sub, link);
        s->n_subs++;
    }
    tally_query_release(&s->q);
    TAILQ_INSERT_TAIL(&lv->streams, s, link);
    tally_gauge_add(&w->metrics.live_streams, 1);
    live_write(s, out, now);
}

static void live_first_read(void *arg)
{
    struct live_stream *s = arg;
    struct tally_worker *w = s->h->w;

    /* With every article cached, on_live_first runs before this returns. */
    if (tally_query_start(&s->q, w->redis, &w->cache, w->cfg->prefix, on_live_first, s) < 0) {
        tally_http_send_unavailable(s->h, "redis is unavailable; retry later");
        live_stream_free(w, s);
    }
}

void tally_route_live(struct tally_http_req *h)
{
    struct tally_worker *w = h->w;
    struct tally_query q;
    struct tally_error err;
    struct live_stream *s;
    int rc;

    memset(&q, 0, sizeof(q));
    if ((rc = tally_query_parse_articles(&q, h->query, h->query_len, &err)) < 0) {
        if (rc == TALLY_EINVAL)
            tally_http_send_error(h, 400, err.code, err.message);
        else
            tally_http_send_unavailable(h, "out of memory");
        tally_query_release(&q);
        return;
    }
    if (w->draining) {
        tally_http_send_unavailable(h, "the collector is stopping");
        tally_query_release(&q);
        return;
    }
    if (h->method == TALLY_HTTP_HEAD) {
        live_headers(h);
        if (tally_http_stream_start(h, 200, "text/event-stream", NULL, NULL) == 0)
            tally_http_stream_end(h);
        tally_query_release(&q);
        return;
    }
    if (!live_admit(w)) {
        tally_metric_add(&w->metrics.live_refused, 1);
        tally_http_send_unavailable(h, "too many live streams on this collector; retry later");
        tally_query_release(&q);
        return;
    }
    if ((s = calloc(1, sizeof(*s) + q.n * sizeof(s->subs[0]))) == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        tally_query_release(&q);
        atomic_fetch_sub_explicit(&w->server->live_streams, 1, memory_order_relaxed);
        return;
    }
    s->h = h;
    s->q = q; /* the query's room moves with it */
    if (!tally_http_read_admit(h, s->q.n)) {
        live_stream_free(w, s);
        return;
    }
    tally_http_stream_expect(h); /* nothing pipelined behind a stream is run */
    /* The first events show what this collector acknowledged before. */
    tally_http_after_folds(h, live_first_read, s);
}

/* ---- The read once a second ---- */

/* Push a new reading of A to the watchers that were sent something else. */
static void live_push(struct tally_live *lv, struct live_article *a, const struct tally_stats *st)
{
    struct tally_worker *w = lv->w;
    struct tally_buf *out = &w->out;
    struct live_sub *sub;
    uint64_t d, now;

    tally_buf_reset(out);
    d = live_event(out, &w->scratch, a->id, a->len, st);
    if (d == a->seen)
        return;
    a->seen = d;
    now = tally_now_ms();
    for (sub = TAILQ_FIRST(&a->subs); sub != NULL; sub = TAILQ_NEXT(sub, link)) {
        if (sub->sent == d)
            continue;
        if (sub->s->behind) {
            a->seen = 0; /* compared with each watcher again at the next reading */
            continue;
        }
        sub->sent = d;
        live_write(sub->s, out, now);
        tally_metric_add(&w->metrics.live_events, 1);
    }
}

static int on_live_reply(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct tally_live *lv = f->arg;
    struct live_article *a = lv->batch[i];
    struct tally_stats st;
    int rc;

    memset(&st, 0, sizeof(st));
    if ((rc = tally_query_read_totals(reply, &st)) < 0)
        return rc;
    if (!TAILQ_EMPTY(&a->subs))
        live_push(lv, a, &st);
    return 0;
}

static void live_read_end(struct tally_live *lv)
{
    for (size_t i = 0; i < lv->n_batch; i++)
        live_article_put(lv, lv->batch[i]);
    free(lv->batch);
    lv->batch = NULL;
    lv->n_batch = 0;
    lv->reading = false;
}

static void on_live_read_done(struct tally_fanout *f, int status)
{
    (void)status; /* a failed read is tried again at the next tick */
    live_read_end(f->arg);
}

/* One pipeline of HGETALLs, one per watched article. */
static void live_read(struct tally_live *lv)
{
    struct tally_worker *w = lv->w;
    size_t n = 0;

    if ((lv->batch = malloc(lv->n_articles * sizeof(*lv->batch))) == NULL)
        return;
    for (size_t b = 0; b < lv->n_buckets; b++)
        for (struct live_article *a = lv->table[b]; a != NULL; a = a->next) {
            a->refs++;
            lv->batch[n++] = a;
        }
    lv->n_batch = n;
    lv->reading = true;
    tally_fanout_init(&lv->fan, n, on_live_reply, on_live_read_done, lv);
    for (size_t i = 0; i < n; i++) {
        char key[TALLY_KEY_MAX];
        size_t klen = tally_key_article(key, sizeof(key), w->cfg->prefix, 'a', lv->batch[i]->id,
                                        lv->batch[i]->len);
        const char *argv[2] = {"HGETALL", key};
        size_t argvlen[2] = {7, klen};

        if (tally_fanout_command(&lv->fan, w->redis, 2, argv, argvlen) < 0)
            break;
    }
    tally_metric_add(&w->metrics.live_reads, 1);
    if (tally_fanout_end(&lv->fan) < 0) /* nothing went out: no callback comes */
        live_read_end(lv);
}

static void on_live_tick(evutil_socket_t fd, short what, void *arg)
{
    static const char keepalive[] = ": keepalive\n\n";
    struct tally_live *lv = arg;
    struct live_stream *s;
    uint64_t now = tally_now_ms();

    (void)fd;
    (void)what;
    for (s = TAILQ_FIRST(&lv->streams); s != NULL; s = TAILQ_NEXT(s, link)) {
        s->behind = tally_http_stream_pending(s->h) > 0;
        if (s->behind || now - s->last_ms < LIVE_KEEPALIVE_MS)
            continue;
        (void)tally_http_stream_write(s->h, keepalive, sizeof(keepalive) - 1);
        s->last_ms = now;
    }
    if (!lv->reading && lv->n_articles > 0 && tally_redis_ready(lv->w->redis))
        live_read(lv);
}

/* ---- The worker's side ---- */

int tally_live_setup(struct tally_worker *w)
{
    struct tally_live *lv = calloc(1, sizeof(*lv));
    struct timeval tv = {LIVE_TICK_MS / 1000, (LIVE_TICK_MS % 1000) * 1000};

    if (lv == NULL)
        return -1;
    w->live = lv;
    lv->w = w;
    TAILQ_INIT(&lv->streams);
    lv->n_buckets = LIVE_BUCKETS_MIN;
    lv->table = calloc(lv->n_buckets, sizeof(*lv->table));
    lv->tick = event_new(w->base, -1, EV_PERSIST, on_live_tick, lv);
    if (lv->table == NULL || lv->tick == NULL || event_add(lv->tick, &tv) < 0)
        return -1;
    return 0;
}

void tally_live_stop(struct tally_worker *w)
{
    struct tally_live *lv = w->live;
    struct live_stream *s;

    if (lv == NULL)
        return;
    while ((s = TAILQ_FIRST(&lv->streams)) != NULL) {
        tally_http_stream_end(s->h);
        live_stream_close(lv, s);
    }
}

void tally_live_free(struct tally_worker *w)
{
    struct tally_live *lv = w->live;
    struct live_stream *s;

    if (lv == NULL)
        return;
    /* Redis is gone: its last callbacks have ended any read. The requests are the HTTP
     * server's to release. */
    if (lv->reading)
        live_read_end(lv);
    while ((s = TAILQ_FIRST(&lv->streams)) != NULL)
        live_stream_close(lv, s);
    if (lv->tick != NULL)
        event_free(lv->tick);
    free(lv->table);
    free(lv);
    w->live = NULL;
}
