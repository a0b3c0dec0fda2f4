/* http_reports.c -- handlers for what editors and pages read over time: top lists, series,
 * site totals, badges, and forgetting an article. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/queue.h>

#include "http.h"
#include "tally/badge.h"
#include "tally/cache.h"
#include "tally/clock.h"
#include "tally/error.h"
#include "tally/fold.h"
#include "tally/query.h"
#include "tally/redis.h"
#include "tally/reports.h"
#include "tally/store.h"
#include "tally/uri.h"
#include "tally/writer.h"

/* Every handler here reads asynchronously: its call (of SIZE bytes, beginning with a pointer
 * to the request) lives in the request's arena. NULL when out of memory, and the request is
 * answered. */
static void *reports_call(struct tally_http_req *h, size_t size)
{
    struct tally_http_req **c = tally_http_alloc(h, size);

    if (c == NULL)
        tally_http_send_unavailable(h, "out of memory");
    else
        *c = h;
    return c;
}

/* After a start function: on failure no callback will come; on success the callback may even
 * have run. */
static void reports_started(struct tally_http_req *h, int rc)
{
    if (rc < 0)
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
}

/* A parameter or the article was refused (RC TALLY_EINVAL, ERR says why), or there was no
 * memory for it. */
static void reports_refuse(struct tally_http_req *h, int rc, const struct tally_error *err)
{
    if (rc == TALLY_EINVAL)
        tally_http_send_error(h, 400, err->code, err->message);
    else
        tally_http_send_unavailable(h, "out of memory");
}

static void reports_send_json(struct tally_http_req *h, const char *cache)
{
    struct tally_buf *b = &h->w->out;

    tally_buf_adds(b, "\n");
    tally_http_header(h, "Cache-Control", cache);
    tally_http_send(h, 200, "application/json", b->data, b->len);
}

/* ---- Week and month: computed at most once a minute for everyone ---- */

/* A week's or month's top list sums up to 30 days of every bucket: about 0.3 s of Redis at
 * a million article-days. Redis keeps each bucket's part until the next whole TALLY_KEPT_MS
 * of its clock (kept.lua: every part expires at the same moment, whenever it was computed),
 * for every worker of every collector, and computes it again when it has gone, or after a
 * DELETE or an import changed the bucket. In front, each worker keeps the merged answer until
 * the parts it was merged from go (and until the UTC day ends, or a DELETE or an import
 * on this collector), so that what it answers is never older than a part Redis keeps, and a
 * reader costs Redis no round trip meanwhile; readers that come while it is loaded wait for
 * it. */
#define REPORTS_CACHE_CONTROL "public, max-age=60"

struct reports_wait {
    struct tally_http_req *h;
    unsigned limit; /* top: the length of the list asked for */
    TAILQ_ENTRY(reports_wait) link;
};
TAILQ_HEAD(reports_waits, reports_wait);

struct reports_entry {
    bool ready, loading;
    uint64_t expires;        /* ms */
    int64_t day;             /* the UTC day it holds */
    uint32_t forgets;        /* the epochs' forgets when its load began */
    struct tally_top top;    /* the first TALLY_TOP_MAX of a top list */
    struct tally_totals totals;
    struct reports_waits waiting;
};

struct reports_cache {
    struct reports_entry top[TALLY_METRICS][2]; /* [metric][week, month] */
    struct reports_entry totals[2];
};

/* One load of an entry: not a request, so it outlives whichever reader started it. */
struct reports_load {
    struct tally_worker *w;
    struct reports_entry *e;
    int64_t day;
    uint32_t forgets;
    bool is_top;
    struct tally_top top;
    struct tally_totals totals;
};

static struct reports_cache *reports_cache(struct tally_worker *w)
{
    if (w->reports == NULL && (w->reports = calloc(1, sizeof(*w->reports))) != NULL) {
        for (size_t m = 0; m < TALLY_METRICS; m++)
            for (size_t k = 0; k < 2; k++)
                TAILQ_INIT(&w->reports->top[m][k].waiting);
        TAILQ_INIT(&w->reports->totals[0].waiting);
        TAILQ_INIT(&w->reports->totals[1].waiting);
    }
    return w->reports;
}

void tally_reports_cache_free(struct tally_worker *w)
{
    if (w->reports == NULL)
        return;
    for (size_t m = 0; m < TALLY_METRICS; m++)
        for (size_t k = 0; k < 2; k++) {
            assert(TAILQ_EMPTY(&w->reports->top[m][k].waiting));
            tally_top_release(&w->reports->top[m][k].top);
        }
    free(w->reports);
    w->reports = NULL;
}

static bool reports_fresh(struct tally_worker *w, const struct reports_entry *e, int64_t day)
{
    return e->ready && e->day == day && tally_now_ms() < e->expires &&
           e->forgets == tally_epochs_forgets(&w->server->epochs);
}

/* Answer H from entry E: its top list cut at LIMIT, or its totals. */
static void reports_send_entry(struct tally_http_req *h, const struct reports_entry *e,
                               bool is_top, unsigned limit)
{
    tally_buf_reset(&h->w->out);
    if (is_top) {
        struct tally_top view = e->top;

        view.p.limit = limit;
        view.n = e->top.n < limit ? e->top.n : limit;
        tally_top_render(&h->w->out, &view);
    } else {
        tally_totals_render(&h->w->out, &e->totals);
    }
    reports_send_json(h, REPORTS_CACHE_CONTROL);
}

/* The load L of E (NULL: none could start) ended with STATUS: keep what it read and answer
 * every reader waiting for it. */
static void reports_loaded(struct reports_load *l, struct reports_entry *e, int status)
{
    bool is_top = l != NULL && l->is_top; /* without a load, only failures are answered */
    int64_t life = l == NULL ? 0 : is_top ? l->top.life_ms : l->totals.life_ms;
    struct reports_wait *r;

    if (l != NULL) {
        e->loading = false;
        l->w->busy--;
    }
    if (status == 0) {
        if (is_top) {
            tally_top_release(&e->top);
            e->top = l->top;             /* the entries and arena move to the entry */
            memset(&l->top, 0, sizeof(l->top));
        } else {
            e->totals = l->totals;
        }
        e->ready = true;
        e->day = l->day;
        e->forgets = l->forgets;
        e->expires = tally_now_ms() + (uint64_t)(life > 0 ? life : 0);
    }
    while ((r = TAILQ_FIRST(&e->waiting)) != NULL) {
        TAILQ_REMOVE(&e->waiting, r, link);
        if (status < 0)
            tally_http_send_unavailable(r->h, "redis is unavailable; retry later");
        else
            reports_send_entry(r->h, e, is_top, r->limit);
    }
    if (l != NULL)
        tally_top_release(&l->top);
    free(l);
}

static void on_cached_top(int status, struct tally_top *t, void *arg)
{
    struct reports_load *l = arg;

    (void)t;
    reports_loaded(l, l->e, status);
}

static void on_cached_totals(int status, struct tally_totals *t, void *arg)
{
    struct reports_load *l = arg;

    (void)t;
    reports_loaded(l, l->e, status);
}

/* Answer H from entry E, or wait for its load (starting one if none runs). P: the top list
 * to load, or NULL for the totals of PERIOD. */
static void reports_cached(struct tally_http_req *h, struct reports_entry *e,
                           const struct tally_top_params *p, enum tally_period period)
{
    struct tally_worker *w = h->w;
    time_t now = tally_clock_now();
    struct reports_wait *r;
    struct reports_load *l;
    int rc;

    if (reports_fresh(w, e, (int64_t)now / 86400)) {
        reports_send_entry(h, e, p != NULL, p != NULL ? p->limit : 0);
        return;
    }
    if (!tally_http_read_admit(h, e->loading ? 0 : TALLY_BUCKETS))
        return;
    if ((r = reports_call(h, sizeof(*r))) == NULL)
        return;
    r->limit = p != NULL ? p->limit : 0;
    TAILQ_INSERT_TAIL(&e->waiting, r, link);
    if (e->loading)
        return;
    if ((l = calloc(1, sizeof(*l))) == NULL) {
        reports_loaded(NULL, e, TALLY_ENOMEM);
        return;
    }
    l->w = w;
    l->e = e;
    l->day = (int64_t)now / 86400;
    l->forgets = tally_epochs_forgets(&w->server->epochs);
    l->is_top = p != NULL;
    e->loading = true;
    w->busy++;
    if (p != NULL) {
        struct tally_top_params all = *p;

        all.limit = TALLY_TOP_MAX;
        rc = tally_top_start(&l->top, &all, w->redis, w->cfg->prefix, now, on_cached_top, l);
    } else {
        rc = tally_totals_start(&l->totals, period, w->redis, w->cfg->prefix, now,
                                on_cached_totals, l);
    }
    if (rc < 0) /* no callback will come */
        reports_loaded(l, e, rc);
}

/* ---- GET /v1/top ---- */

struct top_call {
    struct tally_http_req *h;
    struct tally_top top;
};

static void on_top(int status, struct tally_top *t, void *arg)
{
    struct top_call *c = arg;

    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
    } else {
        tally_buf_reset(&c->h->w->out);
        tally_top_render(&c->h->w->out, t);
        reports_send_json(c->h, "public, max-age=1");
    }
    tally_top_release(t);
}

void tally_route_top(struct tally_http_req *h)
{
    struct tally_top_params p;
    struct tally_error err;
    struct reports_cache *cache;
    struct top_call *c;

    if (tally_top_parse(h->query, h->query_len, &p, &err) < 0) {
        tally_http_send_error(h, 400, err.code, err.message);
        return;
    }
    if (p.period == TALLY_PERIOD_WEEK || p.period == TALLY_PERIOD_MONTH) {
        if ((cache = reports_cache(h->w)) == NULL)
            tally_http_send_unavailable(h, "out of memory");
        else
            reports_cached(h, &cache->top[p.metric][p.period == TALLY_PERIOD_MONTH], &p,
                           p.period);
        return;
    }
    if (!tally_http_read_admit(h, TALLY_BUCKETS) || (c = reports_call(h, sizeof(*c))) == NULL)
        return;
    reports_started(h, tally_top_start(&c->top, &p, h->w->redis, h->w->cfg->prefix,
                                          tally_clock_now(), on_top, c));
}

/* ---- GET /v1/series/{article} ---- */

struct series_call {
    struct tally_http_req *h;
    struct tally_series series;
    struct tally_query q; /* the article, decoded */
};

static void on_series(int status, struct tally_series *s, void *arg)
{
    struct series_call *c = arg;

    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
    } else {
        tally_buf_reset(&c->h->w->out);
        tally_series_render(&c->h->w->out, s);
        reports_send_json(c->h, "public, max-age=1");
    }
    tally_series_release(s);
    tally_query_release(&c->q);
}

void tally_route_series(struct tally_http_req *h)
{
    struct tally_series_params p;
    struct tally_error err;
    struct series_call *c = reports_call(h, sizeof(*c));
    int rc;

    if (c == NULL)
        return;
    rc = tally_query_parse_path(&c->q, h->tail, h->tail_len, &err);
    if (rc == 0)
        rc = tally_series_parse(h->query, h->query_len, tally_clock_now(), &p, &err);
    if (rc < 0) {
        reports_refuse(h, rc, &err);
        tally_query_release(&c->q);
        return;
    }
    if (!tally_http_read_admit(h, p.n)) {
        tally_query_release(&c->q);
        return;
    }
    rc = tally_series_start(&c->series, &p, c->q.id[0], c->q.len[0], h->w->redis,
                            h->w->cfg->prefix, on_series, c);
    if (rc < 0) {
        tally_series_release(&c->series);
        tally_query_release(&c->q);
    }
    reports_started(h, rc);
}

/* ---- GET /v1/totals ---- */

struct totals_call {
    struct tally_http_req *h;
    struct tally_totals totals;
};

static void on_totals(int status, struct tally_totals *t, void *arg)
{
    struct totals_call *c = arg;

    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
    } else {
        tally_buf_reset(&c->h->w->out);
        tally_totals_render(&c->h->w->out, t);
        reports_send_json(c->h, "public, max-age=1");
    }
}

void tally_route_totals(struct tally_http_req *h)
{
    enum tally_period period;
    struct tally_error err;
    struct reports_cache *cache;
    struct totals_call *c;

    if (tally_totals_parse(h->query, h->query_len, &period, &err) < 0) {
        tally_http_send_error(h, 400, err.code, err.message);
        return;
    }
    if (period == TALLY_PERIOD_WEEK || period == TALLY_PERIOD_MONTH) {
        if ((cache = reports_cache(h->w)) == NULL)
            tally_http_send_unavailable(h, "out of memory");
        else
            reports_cached(h, &cache->totals[period == TALLY_PERIOD_MONTH], NULL, period);
        return;
    }
    if (!tally_http_read_admit(h, TALLY_BUCKETS) || (c = reports_call(h, sizeof(*c))) == NULL)
        return;
    reports_started(h, tally_totals_start(&c->totals, period, h->w->redis, h->w->cfg->prefix,
                                             tally_clock_now(), on_totals, c));
}

/* ---- GET /v1/badge/{article}.svg ---- */

struct badge_call {
    struct tally_http_req *h;
    enum tally_metric metric;
    char label[TALLY_BADGE_LABEL_MAX + 1];
    struct tally_query q;
};

static void on_badge(int status, struct tally_query *q, void *arg)
{
    struct badge_call *c = arg;
    const struct tally_stats *s = &q->stats[0];
    char value[32];

    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
        tally_query_release(q);
        return;
    }
    tally_badge_format(value, tally_stats_get(s, c->metric));
    tally_buf_reset(&c->h->w->out);
    tally_badge_render(&c->h->w->out, c->label, strlen(c->label), value, strlen(value));
    tally_http_header(c->h, "Cache-Control", "public, max-age=10");
    tally_http_header(c->h, "Cross-Origin-Resource-Policy", "cross-origin");
    tally_http_send(c->h, 200, "image/svg+xml; charset=utf-8", c->h->w->out.data,
                    c->h->w->out.len);
    tally_query_release(q);
}

/* metric= and label= of a badge; the label defaults to the metric's name. */
static int badge_params(struct badge_call *c, const char *query, size_t len,
                        struct tally_error *err)
{
    struct tally_top_params p;
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen;
    long n;

    /* The top-list parser knows metric=; a badge has no period or limit to misuse. */
    if (tally_top_parse(query, len, &p, err) < 0)
        return TALLY_EINVAL;
    c->metric = p.metric;
    snprintf(c->label, sizeof(c->label), "%s", tally_metric_name(p.metric));
    tally_query_iter_init(&it, query, len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        if (!tally_query_key_is(k, klen, "label"))
            continue;
        n = vlen <= 3 * TALLY_BADGE_LABEL_MAX
                ? tally_uri_decode(v, vlen, c->label, TALLY_BADGE_LABEL_MAX, TALLY_URI_PLUS_SPACE)
                : -1;
        if (n < 0 || !tally_utf8_valid(c->label, (size_t)n)) {
            err->code = "invalid_parameter";
            snprintf(err->message, sizeof(err->message), "label: at most 64 bytes of UTF-8");
            return TALLY_EINVAL;
        }
        c->label[n] = '\0';
    }
    return 0;
}

/* Once what this collector acknowledged of C's article is counted. */
static void badge_read(void *arg)
{
    struct badge_call *c = arg;
    struct tally_http_req *h = c->h;
    int rc;

    if (!tally_http_read_admit(h, 1)) {
        tally_query_release(&c->q);
        return;
    }
    rc = tally_query_start(&c->q, h->w->redis, &h->w->cache, h->w->cfg->prefix, on_badge, c);
    if (rc < 0)
        tally_query_release(&c->q);
    reports_started(h, rc);
}

void tally_route_badge(struct tally_http_req *h)
{
    struct tally_error err = {"invalid_article", "article: the path must end in .svg"};
    struct badge_call *c = reports_call(h, sizeof(*c));
    int rc = TALLY_EINVAL;

    if (c == NULL)
        return;
    if (h->tail_len > 4 && memcmp(h->tail + h->tail_len - 4, ".svg", 4) == 0)
        rc = tally_query_parse_path(&c->q, h->tail, h->tail_len - 4, &err);
    if (rc == 0)
        rc = badge_params(c, h->query, h->query_len, &err);
    if (rc < 0) {
        reports_refuse(h, rc, &err);
        tally_query_release(&c->q);
        return;
    }
    if (!tally_http_after_folds_of(h, c->q.id, c->q.len, c->q.n, badge_read, c)) {
        tally_http_send_unavailable(h, "out of memory");
        tally_query_release(&c->q);
    }
}

/* ---- DELETE /v1/articles/{article} ---- */

struct forget_call {
    struct tally_http_req *h;
    struct tally_forget forget;
    struct tally_query q;
};

static void on_forget(int status, struct tally_forget *f, void *arg)
{
    struct forget_call *c = arg;

    tally_metric_add(&c->h->w->metrics.forget_steps, f->steps);
    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
    } else {
        /* Cached totals of the article are stale now, in every worker; so is what the
         * writers know of expiries (see tally_route_forget). */
        tally_epochs_bump(&c->h->w->server->epochs,
                          tally_key_bucket(c->q.id[0], c->q.len[0]));
        /* It folded every journal first (in steps, then the rest): any bucket may have
         * changed. */
        for (unsigned b = 0; tally_writer_folder(c->h->w->writer) != NULL && b < TALLY_BUCKETS;
             b++)
            tally_epochs_bump(&c->h->w->server->epochs, b);
        tally_epochs_forgot(&c->h->w->server->epochs);
        tally_http_header(c->h, "Cache-Control", "no-store");
        tally_http_send(c->h, 204, NULL, NULL, 0);
    }
    tally_query_release(&c->q);
}

/* The article is forgotten now: with one Redis the forget folds the journals itself first
 * (drain.lua); on a cluster they were folded before (tally_folder_drain()). */
static int forget_now(struct forget_call *c)
{
    struct tally_http_req *h = c->h;
    struct tally_folder *f = tally_writer_folder(h->w->writer);
    bool cluster = tally_redis_is_cluster(h->w->redis);

    return tally_forget_start(&c->forget, c->q.id[0], c->q.len[0], h->w->cfg->view_window,
                              tally_clock_now(), h->w->redis, h->w->cfg->prefix,
                              f != NULL && !cluster ? tally_folder_registry(f) : NULL, on_forget,
                              c);
}

static void on_forget_drained(int status, unsigned steps, void *arg)
{
    struct forget_call *c = arg;

    /* The folds before the forget, as the steps of drain.lua are with one Redis. */
    tally_metric_add(&c->h->w->metrics.forget_steps, steps);
    if (status == 0)
        status = forget_now(c);
    if (status < 0) {
        tally_http_send_unavailable(c->h, "redis is unavailable; retry later");
        tally_query_release(&c->q);
    }
}

void tally_route_forget(struct tally_http_req *h)
{
    struct tally_error err;
    struct forget_call *c;
    struct tally_folder *f;
    int auth = tally_http_authorized(h), rc;

    if (auth != 0) {
        if (auth == 401)
            tally_http_header(h, "WWW-Authenticate", "Bearer");
        tally_http_send_error(h, auth, auth == 401 ? "unauthorized" : "token_not_configured",
                              auth == 401 ? "authorization: needs 'Authorization: Bearer <token>'"
                                          : "authorization: needs a token, and none is configured");
        return;
    }
    if ((c = reports_call(h, sizeof(*c))) == NULL)
        return;
    if ((rc = tally_query_parse_path(&c->q, h->tail, h->tail_len, &err)) < 0) {
        reports_refuse(h, rc, &err);
        tally_query_release(&c->q);
        return;
    }
    /* Writers forget which bucket keys have their expiry before the script runs and again
     * after: a unit built meanwhile and applied before the script may have taught them of
     * keys it then emptied. Only a unit in flight across the whole DELETE can still
     * recreate such a key without expiry. */
    tally_epochs_forgot(&h->w->server->epochs);
    f = tally_writer_folder(h->w->writer);
    rc = f != NULL && tally_redis_is_cluster(h->w->redis)
             ? tally_folder_drain(f, on_forget_drained, c)
             : forget_now(c);
    if (rc < 0)
        tally_query_release(&c->q);
    reports_started(h, rc);
}
