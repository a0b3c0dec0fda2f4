/* writer.c -- group commit of held requests into write units, one unit in flight at a time,
 * with a deadline per request and exactly-once resends of a unit whose reply was lost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tally/error.h"
#include "tally/log.h"
#include "tally/metrics.h"
#include "tally/salt.h"
#include "tally/store.h"
#include "tally/writer.h"

#define WRITER_UNIT_EVENTS_MAX 2000 /* events per unit: bounds how long the script runs */
#define WRITER_UNKNOWN_MAX_MS 30000 /* how long a unit with a lost reply is resent */
#define WRITER_TICK_MS 50

TAILQ_HEAD(write_list, tally_write);

enum unit_state {
    UNIT_NONE,   /* nothing in flight */
    UNIT_SENT,   /* in flight */
    UNIT_RESEND, /* its reply was lost: send the same unit again, it applies at most once */
};

struct tally_writer {
    struct event_base *base;
    struct tally_store *store;
    struct tally_salts *salts;
    const struct tally_config *cfg;
    struct tally_metrics *metrics;
    struct tally_agg agg;
    struct write_list pending;    /* not yet in a unit, oldest first */
    struct tally_write **unit;    /* the unit in flight */
    struct tally_agg_req **reqs;  /* its requests, as the agg reads them */
    size_t n_unit, cap_unit;
    enum unit_state state;
    bool uncertain;               /* the unit may have applied: only resend it as it is */
    uint64_t unit_sent_at;
    uint64_t retry_at;            /* ms: after Redis refused a unit, wait until then */
    unsigned refusals;            /* in a row, for the backoff */
    uint64_t seq;
    char nonce[17];
    char attempt[40];
    size_t held_events, held_requests;
    struct event *flush_ev;       /* activated: runs after the callbacks already ready, so
                                   * requests that arrived together leave together */
    struct event *tick_ev;        /* deadlines */
};

/* ---- Answering ---- */

static void writer_release(struct tally_writer *w, struct tally_write *wr)
{
    w->held_events -= wr->req.n;
    w->held_requests--;
    tally_gauge_add(&w->metrics->held_events, -(int64_t)wr->req.n);
    tally_gauge_add(&w->metrics->held_requests, -1);
}

static void writer_answer(struct tally_writer *w, struct tally_write *wr, int status)
{
    writer_release(w, wr);
    wr->done(status, wr, wr->arg);
}

/* Take the unit's writes out of flight and answer them all with STATUS. */
static void writer_answer_unit(struct tally_writer *w, int status)
{
    size_t n = w->n_unit;

    w->n_unit = 0;
    w->state = UNIT_NONE;
    w->uncertain = false;
    for (size_t i = 0; i < n; i++)
        writer_answer(w, w->unit[i], status);
}

/* The unit surely did not apply: its writes wait again, in their order, at the front. */
static void writer_requeue_unit(struct tally_writer *w)
{
    for (size_t i = w->n_unit; i-- > 0;)
        TAILQ_INSERT_HEAD(&w->pending, w->unit[i], link);
    w->n_unit = 0;
    w->state = UNIT_NONE;
}

/* ---- Sending ---- */

static void on_unit_reply(int status, redisReply *reply, void *arg);

static void writer_schedule(struct tally_writer *w)
{
    if (!event_pending(w->flush_ev, EV_TIMEOUT, NULL))
        event_active(w->flush_ev, EV_TIMEOUT, 0);
}

static void writer_send(struct tally_writer *w)
{
    struct tally_buf *b = &w->agg.body;
    int rc = tally_store_eval(w->store, TALLY_SCRIPT_APPLY, b->data, b->len, w->agg.nargs,
                              on_unit_reply, w);

    if (rc == 0) {
        if (w->state == UNIT_NONE)
            w->unit_sent_at = tally_now_ms();
        w->state = UNIT_SENT;
    } else if (w->state == UNIT_NONE) {
        writer_requeue_unit(w);
    }
}

static int writer_grow(struct tally_writer *w, size_t need)
{
    size_t cap = w->cap_unit != 0 ? w->cap_unit : 64;
    struct tally_write **u;
    struct tally_agg_req **r;

    if (need <= w->cap_unit)
        return 0;
    while (cap < need)
        cap *= 2;
    u = realloc(w->unit, cap * sizeof(*u));
    if (u != NULL)
        w->unit = u;
    r = realloc(w->reqs, cap * sizeof(*r));
    if (r != NULL)
        w->reqs = r;
    if (u == NULL || r == NULL)
        return TALLY_ENOMEM;
    w->cap_unit = cap;
    return 0;
}

/* Move the oldest waiting writes into a new unit, up to the unit's size. */
static int writer_take(struct tally_writer *w)
{
    size_t events = 0;
    struct tally_write *wr;

    while ((wr = TAILQ_FIRST(&w->pending)) != NULL) {
        if (w->n_unit > 0 && events + wr->req.n > WRITER_UNIT_EVENTS_MAX)
            break;
        if (writer_grow(w, w->n_unit + 1) < 0)
            return TALLY_ENOMEM;
        TAILQ_REMOVE(&w->pending, wr, link);
        w->unit[w->n_unit] = wr;
        w->reqs[w->n_unit++] = &wr->req;
        events += wr->req.n;
    }
    return 0;
}

/* Give the unit's views their visitor ids under today's salt. False while the salt is not
 * known yet: the salts call back (and kick the writer) when it arrives. */
static bool writer_visitors(struct tally_writer *w)
{
    uint8_t salt[TALLY_SALT_LEN];
    bool need = false;

    for (size_t i = 0; i < w->n_unit && !need; i++)
        need = w->unit[i]->has_digest;
    if (!need)
        return true;
    if (!tally_salts_get(w->salts, time(NULL), salt))
        return false;
    for (size_t i = 0; i < w->n_unit; i++) {
        struct tally_write *wr = w->unit[i];

        if (!wr->has_digest)
            continue;
        for (size_t j = 0; j < wr->req.n; j++) {
            const struct tally_event *ev = &wr->req.ev[j];

            wr->visitor[j] = ev->type != TALLY_EVENT_VIEW
                                 ? 0
                                 : tally_visitor_id(salt, wr->digest, ev->article,
                                                    ev->article_len);
        }
        wr->req.visitor = wr->visitor;
    }
    return true;
}

static void writer_flush(struct tally_writer *w)
{
    int rc;

    if (w->state == UNIT_SENT || !tally_store_ready(w->store) || tally_now_ms() < w->retry_at)
        return;
    if (w->state == UNIT_RESEND) {
        writer_send(w);
        return;
    }
    if (TAILQ_EMPTY(&w->pending))
        return;
    rc = writer_take(w);
    if (rc == 0 && !writer_visitors(w)) {
        writer_requeue_unit(w);
        return;
    }
    snprintf(w->attempt, sizeof(w->attempt), "%s-%llu", w->nonce,
             (unsigned long long)++w->seq);
    if (rc == 0)
        rc = tally_agg_build(&w->agg, w->reqs, w->n_unit, w->attempt);
    if (rc < 0) {
        log_error("cannot build a write unit: %s", tally_strerror(rc));
        writer_answer_unit(w, TALLY_EUNAVAIL);
        return;
    }
    writer_send(w);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    writer_flush(arg);
}

/* ---- Replies ---- */

/* Errors with which Redis refuses a command without running it, and that pass. */
static bool writer_transient(const redisReply *r)
{
    static const char *const words[] = {"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN",
                                        "MASTERDOWN", "READONLY", "OOM"};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strncmp(r->str, words[i], strlen(words[i])) == 0)
            return true;
    return false;
}

static void writer_refused(struct tally_writer *w, const redisReply *reply)
{
    unsigned shift = w->refusals < 5 ? w->refusals : 5;

    /* Back off (50 ms doubling to 1.6 s): the periodic tick sends again. */
    w->retry_at = tally_now_ms() + (50u << shift);
    w->refusals++;
    if (writer_transient(reply) || w->uncertain) {
        /* Nothing ran this time. A unit that may have run before keeps its attempt id. */
        log_debug("redis refused a write unit for now: %s", reply->str);
        if (w->uncertain)
            w->state = UNIT_RESEND;
        else
            writer_requeue_unit(w);
        return;
    }
    log_error("redis refused a write unit: %s", reply->str);
    writer_answer_unit(w, TALLY_EREDIS);
}

static void writer_applied(struct tally_writer *w, const redisReply *reply)
{
    int rc = tally_agg_apply_reply(&w->agg, reply, w->reqs, w->n_unit);

    if (rc == 0) {
        w->refusals = 0;
        tally_metric_add(&w->metrics->redis_units, 1);
        for (size_t i = 0; i < w->n_unit; i++)
            tally_metric_add(&w->metrics->redis_unit_events, w->unit[i]->req.n);
        writer_answer_unit(w, 0);
    } else if (rc == TALLY_EFENCED) {
        writer_answer_unit(w, TALLY_EUNAVAIL);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        writer_refused(w, reply);
    } else {
        log_error("unexpected reply to a write unit (type %d)", reply->type);
        writer_answer_unit(w, TALLY_EUNKNOWN);
    }
}

static void on_unit_reply(int status, redisReply *reply, void *arg)
{
    struct tally_writer *w = arg;

    if (w->n_unit == 0)
        return; /* the writer is being freed */
    if (status == 0) {
        writer_applied(w, reply);
    } else if (status == TALLY_EUNKNOWN) {
        w->state = UNIT_RESEND;
        w->uncertain = true;
    } else if (w->uncertain) {
        w->state = UNIT_RESEND;
    } else {
        writer_requeue_unit(w);
    }
    writer_schedule(w);
}

/* ---- Deadlines ---- */

static void writer_expire(struct tally_writer *w, uint64_t now)
{
    struct tally_write *wr, *next;

    for (wr = TAILQ_FIRST(&w->pending); wr != NULL; wr = next) {
        next = TAILQ_NEXT(wr, link);
        if (now < wr->deadline)
            continue;
        TAILQ_REMOVE(&w->pending, wr, link);
        writer_answer(w, wr, TALLY_EUNAVAIL);
    }
    if (w->uncertain && w->state == UNIT_RESEND && now - w->unit_sent_at > WRITER_UNKNOWN_MAX_MS) {
        log_error("a write unit's outcome stayed unknown for %d s; its %zu requests get no answer",
                  WRITER_UNKNOWN_MAX_MS / 1000, w->n_unit);
        writer_answer_unit(w, TALLY_EUNKNOWN);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct tally_writer *w = arg;

    (void)fd;
    (void)what;
    writer_expire(w, tally_now_ms());
    writer_flush(w);
    if (w->held_requests == 0)
        event_del(w->tick_ev);
}

/* ---- Life ---- */

int tally_writer_submit(struct tally_writer *w, struct tally_write *wr)
{
    bool ready = tally_store_ready(w->store);
    uint64_t now = tally_now_ms();
    struct timeval tv = {0, WRITER_TICK_MS * 1000};

    if (w->held_events + wr->req.n > w->cfg->max_held)
        return TALLY_EFULL;
    if (!ready && w->cfg->hold_ms == 0)
        return TALLY_EUNAVAIL;
    /* Waiting behind a unit in flight is normal; waiting for a Redis that is down is what
     * --hold bounds. */
    wr->deadline = now + w->cfg->hold_ms + (ready ? w->cfg->redis_timeout_ms : 0);
    TAILQ_INSERT_TAIL(&w->pending, wr, link);
    w->held_events += wr->req.n;
    w->held_requests++;
    tally_gauge_add(&w->metrics->held_events, (int64_t)wr->req.n);
    tally_gauge_add(&w->metrics->held_requests, 1);
    if (!event_pending(w->tick_ev, EV_TIMEOUT, NULL))
        event_add(w->tick_ev, &tv);
    writer_schedule(w);
    return 0;
}

void tally_writer_kick(struct tally_writer *w)
{
    writer_schedule(w);
}

size_t tally_writer_held(const struct tally_writer *w)
{
    return w->held_events;
}

struct tally_writer *tally_writer_new(struct event_base *base, struct tally_store *store,
                                      struct tally_salts *salts, const struct tally_config *cfg,
                                      struct tally_metrics *metrics)
{
    struct tally_writer *w = calloc(1, sizeof(*w));
    uint8_t rnd[8];

    if (w == NULL)
        return NULL;
    w->base = base;
    w->store = store;
    w->salts = salts;
    w->cfg = cfg;
    w->metrics = metrics;
    TAILQ_INIT(&w->pending);
    tally_agg_init(&w->agg, cfg->prefix, cfg->view_window);
    /* Attempt ids must never repeat, across threads, restarts and collectors. */
    arc4random_buf(rnd, sizeof(rnd));
    for (int i = 0; i < 8; i++)
        snprintf(w->nonce + 2 * i, 3, "%02x", rnd[i]);
    w->flush_ev = event_new(base, -1, 0, on_flush, w);
    w->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, w);
    if (w->flush_ev == NULL || w->tick_ev == NULL) {
        tally_writer_free(w);
        return NULL;
    }
    return w;
}

void tally_writer_free(struct tally_writer *w)
{
    struct tally_write *wr;

    if (w == NULL)
        return;
    while ((wr = TAILQ_FIRST(&w->pending)) != NULL) {
        TAILQ_REMOVE(&w->pending, wr, link);
        writer_answer(w, wr, TALLY_EUNAVAIL);
    }
    writer_answer_unit(w, w->state == UNIT_NONE ? TALLY_EUNAVAIL : TALLY_EUNKNOWN);
    if (w->flush_ev != NULL)
        event_free(w->flush_ev);
    if (w->tick_ev != NULL)
        event_free(w->tick_ev);
    tally_agg_release(&w->agg);
    free(w->unit);
    free(w->reqs);
    free(w);
}
