/* writer.c -- group commit of held requests into write units, one unit in flight per lane,
 * with a deadline per request, fenced units, exactly-once resends of a unit whose reply was
 * lost, and (in a Redis Cluster) one lane per key bucket, following MOVED and ASK. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tally/cache.h"
#include "tally/clock.h"
#include "tally/error.h"
#include "tally/fence.h"
#include "tally/fold.h"
#include "tally/functions.h"
#include "tally/idem.h"
#include "tally/known.h"
#include "tally/lately.h"
#include "tally/log.h"
#include "tally/metrics.h"
#include "tally/redis.h"
#include "tally/salt.h"
#include "tally/store.h"
#include "tally/writer.h"

#define WRITER_UNIT_EVENTS_MAX 2000 /* events per unit: bounds how long the script runs */
#define WRITER_TICK_MS 50           /* backoffs and holds are looked at this often at least */
#define WRITER_JOURNAL_MOVING_MS 1000 /* writes pass the journal this long after it answered
                                       * TRYAGAIN (its slot half-moved) */
#define WRITER_AT_ONCE 1 /* one Redis with a journal: the lane of writes counted at once */

/* The steps of a write journaled with a repeat-view window on a cluster (tally_write.phase). */
enum { WRITE_MARK = 1, WRITE_APPEND = 2 };

TAILQ_HEAD(part_list, tally_write_part);

enum unit_state {
    UNIT_NONE,   /* nothing in flight */
    UNIT_SENT,   /* in flight: exactly one copy awaits its reply */
    UNIT_RESEND, /* not confirmed yet: send the same unit again, it applies at most once */
};

/* A queue of parts with at most one unit in flight: the whole Redis, or one bucket's slot. */
struct write_lane {
    struct tally_writer *w;
    unsigned slot;                 /* cluster: the bucket's slot */
    bool mark;                     /* cluster: its units mark views (mark.lua), count nothing */
    struct tally_agg agg;
    struct part_list pending;      /* not yet in a unit, oldest first */
    struct tally_write_part **unit;
    struct tally_agg_req **reqs;   /* the unit's parts, as the agg reads them */
    size_t n_unit, cap_unit;
    enum unit_state state;
    bool uncertain;                /* the unit may have applied: only resend it as it is */
    bool orphan;                   /* SENT, its requests answered already (their time was
                                    * up): the reply only tells whether counts changed */
    uint64_t answer_by;            /* ms: the first answer-by of the unit's requests */
    struct tally_store *redirect;  /* MOVED/ASK: where the next resend goes */
    bool asking;
    uint64_t retry_at;             /* ms */
    unsigned refusals;             /* in a row, for the backoff */
    uint32_t forgets;              /* the writer's known.forgets when the unit was built */
    char attempt[40];
    /* After a unit's reply was lost, new units wait until a probe (a small write to the
     * lane's slot) shows that Redis runs writes again: a Redis that stalls, or takes reads
     * but not writes (CLIENT PAUSE WRITE), then gets no units whose outcome would be unknown
     * too; their requests are answered 503 when their time to be sent is over. */
    bool suspect, probing;
    char probe_key[TALLY_KEY_MAX];
};

struct tally_writer {
    struct event_base *base;
    struct tally_redis *router;
    struct tally_salts *salts;
    const struct tally_config *cfg;
    struct tally_metrics *metrics;
    struct tally_epochs *epochs;
    struct tally_folder *folder;   /* --fold-interval: units go to its journal (those it
                                    * takes: see writer_journaled()) */
    const struct tally_lately *lately; /* the articles read lately (tally/lately.h) */
    bool cluster;
    struct write_lane *lanes;
    size_t n_lanes;                /* one Redis: 1, the journal's lane with a folder, and then
                                    * the lane of units counted at once (WRITER_AT_ONCE);
                                    * a cluster: TALLY_BUCKETS (and the journal's lane after
                                    * them, with a folder; then, with a repeat-view window,
                                    * TALLY_BUCKETS lanes of marks) */
    bool closing;                  /* tally_writer_free() is answering what it holds */
    uint64_t seq;
    char nonce[17];
    /* Which keys of this day and hour have their expiry (as the scripts reported): units,
     * and the folder's folds, ask the scripts to set it only on the others. */
    struct tally_known known;
    size_t held_events, held_requests;
    struct event *flush_ev;        /* activated: runs after the callbacks already ready, so
                                    * requests that arrived together leave together */
    struct event *tick_ev;         /* deadlines, backoffs */
    uint64_t journal_moving_until; /* ms (tally_now_ms): the journal's slot is being moved,
                                    * writes go to their buckets until then */
};

/* ---- Answering ---- */

static void writer_settle(struct tally_writer *w, struct tally_write *wr);
static void writer_marked(struct tally_writer *w, struct tally_write *wr);
static void writer_unmark(struct tally_writer *w, struct tally_write *wr);

/* WR leaves the writer: answer it with STATUS. */
static void writer_answer(struct tally_writer *w, struct tally_write *wr, int status)
{
    w->held_requests--;
    tally_gauge_add(&w->metrics->held_requests, -1);
    wr->done(status, wr, wr->arg);
}

/* WR's marks (see writer_marked()) are done with. */
static void writer_marks_free(struct tally_write *wr)
{
    free(wr->marks);
    free(wr->seen);
    wr->marks = NULL;
    wr->seen = NULL;
}

/* Fold part P's outcome into its write, and answer the write after its last part. */
static void writer_part_done(struct tally_writer *w, struct tally_write_part *p, int status)
{
    struct tally_write *wr = p->w;

    w->held_events -= p->req.n;
    tally_gauge_add(&w->metrics->held_events, -(int64_t)p->req.n);
    if (wr->phase == WRITE_MARK)
        p->marked = status == 0 ? 1 : status == TALLY_EUNKNOWN ? 2 : 0;
    if (status == 0 && p->req.reused) {
        wr->failed++; /* the key holds another body: this part applied nothing */
        if (wr->failure == 0)
            wr->failure = TALLY_EREUSED;
    } else if (status == 0) {
        wr->applied++;
        wr->req.accepted += p->req.accepted;
        wr->req.repeat += p->req.repeat;
        wr->req.bot_out += p->req.bot_out;
        wr->req.prefetch_out += p->req.prefetch_out;
        wr->req.replayed = wr->req.replayed && p->req.replayed;
    } else if (status == TALLY_EUNKNOWN) {
        wr->unknown++;
    } else {
        wr->failed++;
        if (wr->failure == 0)
            wr->failure = status;
    }
    if (--wr->parts_left > 0)
        return;
    if (wr->phase == WRITE_MARK) {
        writer_marked(w, wr);
        return;
    }
    /* Some parts written and others not: neither "written" nor "not written" is true. */
    status = tally_write_status(wr->applied, wr->failed, wr->unknown, wr->failure);
    if (status == TALLY_EUNKNOWN && wr->unknown == 0)
        log_warn("a request was written in part only (%u of %zu buckets); its outcome is "
                 "answered as unknown", wr->applied, wr->n_parts);
    if (wr->phase == WRITE_APPEND) {
        /* Appended: its answer is the marks' repeats and the rest accepted. Surely not: the
         * marks are forgotten, so that the request sent again is no repeat of itself. */
        if (status == 0) {
            wr->req.accepted -= wr->n_seen;
            wr->req.repeat = wr->repeats;
        } else if (status != TALLY_EUNKNOWN) {
            writer_unmark(w, wr);
        }
        writer_marks_free(wr);
    }
    free(wr->parts);
    wr->parts = NULL;
    if (status == 0 && wr->claimed)
        writer_settle(w, wr);
    writer_answer(w, wr, status);
}

/* Take the unit's parts out of flight and answer them all with STATUS. */
static void writer_answer_unit(struct write_lane *l, int status)
{
    size_t n = l->n_unit;

    l->n_unit = 0;
    l->state = UNIT_NONE;
    l->uncertain = false;
    l->orphan = false;
    l->redirect = NULL;
    l->asking = false;
    for (size_t i = 0; i < n; i++)
        writer_part_done(l->w, l->unit[i], status);
}

/* The unit surely did not apply: its parts wait again, in their order, at the front. */
static void writer_requeue_unit(struct write_lane *l)
{
    for (size_t i = l->n_unit; i-- > 0;)
        TAILQ_INSERT_HEAD(&l->pending, l->unit[i], link);
    l->n_unit = 0;
    l->state = UNIT_NONE;
    l->redirect = NULL;
    l->asking = false;
}

/* ---- Sending ---- */

static void on_unit_reply(int status, redisReply *reply, void *arg);
static void writer_unjournal(struct write_lane *l);

static void writer_schedule(struct tally_writer *w)
{
    if (!event_pending(w->flush_ev, EV_TIMEOUT, NULL))
        event_active(w->flush_ev, EV_TIMEOUT, 0);
}

/* Where the lane's next unit goes: a MOVED or ASK target while it can take it, else the
 * slot's master in the map (which answers with a redirect again if need be). */
static struct tally_store *writer_store(struct write_lane *l)
{
    if (l->redirect != NULL && tally_store_ready(l->redirect))
        return l->redirect;
    l->redirect = NULL;
    l->asking = false;
    return tally_redis_for_slot(l->w->router, l->slot);
}

/* The time by which the lane's units must reach Redis whatever their answers' time: on a
 * cluster, the journal's lane's, before others may take the journal for gone
 * (tally_folder_journal_by()). */
static uint64_t writer_lane_by(const struct write_lane *l)
{
    return l->agg.journal != NULL ? tally_folder_journal_by(l->w->folder) : UINT64_MAX;
}

/* Send the lane's unit to ST, fenced on ST's clock (each copy carries its own fence: in a
 * cluster a resend may go to another node, and a journal's heartbeat may have moved its
 * time on). */
static void writer_send(struct write_lane *l, struct tally_store *st)
{
    struct tally_buf *b = &l->agg.body;
    const struct tally_clock *clock = tally_store_clock(st);
    int rc = TALLY_EUNAVAIL;

    if (clock != NULL) {
        tally_agg_fence(&l->agg, tally_fence_journal_at(clock, l->answer_by, writer_lane_by(l)));
        rc = tally_store_eval_asking(st, l->asking,
                                     l->agg.journal != NULL ? TALLY_SCRIPT_ACK
                                     : l->mark              ? TALLY_SCRIPT_MARK
                                                            : TALLY_SCRIPT_APPLY,
                                     b->data, b->len, l->agg.nargs, on_unit_reply, l);
    }
    l->redirect = NULL;
    l->asking = false;
    if (rc == 0) {
        l->state = UNIT_SENT;
    } else if (l->state == UNIT_NONE) {
        writer_requeue_unit(l);
    }
}

static int writer_grow(struct write_lane *l, size_t need)
{
    size_t cap = l->cap_unit != 0 ? l->cap_unit : 64;
    struct tally_write_part **u;
    struct tally_agg_req **r;

    if (need <= l->cap_unit)
        return 0;
    while (cap < need)
        cap *= 2;
    u = realloc(l->unit, cap * sizeof(*u));
    if (u != NULL)
        l->unit = u;
    r = realloc(l->reqs, cap * sizeof(*r));
    if (r != NULL)
        l->reqs = r;
    if (u == NULL || r == NULL)
        return TALLY_ENOMEM;
    l->cap_unit = cap;
    return 0;
}

/* Move the oldest waiting parts into a new unit, up to the unit's size; a part too late to
 * be sent (its unit would be fenced at once) is answered instead. */
static int writer_take(struct write_lane *l, uint64_t now)
{
    size_t events = 0;
    struct tally_write_part *p;

    while ((p = TAILQ_FIRST(&l->pending)) != NULL) {
        if (l->n_unit > 0 && events + p->req.n > WRITER_UNIT_EVENTS_MAX)
            break;
        if (!tally_fence_open(now, p->w->answer_by)) {
            TAILQ_REMOVE(&l->pending, p, link);
            writer_part_done(l->w, p, tally_unit_status(TALLY_UNIT_UNSENT));
            continue;
        }
        if (writer_grow(l, l->n_unit + 1) < 0)
            return TALLY_ENOMEM;
        TAILQ_REMOVE(&l->pending, p, link);
        if (l->n_unit == 0 || p->w->answer_by < l->answer_by)
            l->answer_by = p->w->answer_by;
        l->unit[l->n_unit] = p;
        l->reqs[l->n_unit++] = &p->req;
        events += p->req.n;
    }
    return 0;
}

/* Give the unit's views their visitor ids under today's salt. False while the salt is not
 * known yet: the salts call back (and kick the writer) when it arrives. */
static bool writer_visitors(struct write_lane *l)
{
    uint8_t salt[TALLY_SALT_LEN];
    bool need = false;

    for (size_t i = 0; i < l->n_unit && !need; i++)
        need = l->unit[i]->w->has_digest;
    if (!need)
        return true;
    if (!tally_salts_get(l->w->salts, tally_clock_now(), salt))
        return false;
    for (size_t i = 0; i < l->n_unit; i++) {
        struct tally_write_part *p = l->unit[i];

        if (!p->w->has_digest)
            continue;
        for (size_t j = 0; j < p->req.n; j++) {
            const struct tally_event *ev = &p->req.ev[j];

            p->visitor[j] = ev->type != TALLY_EVENT_VIEW
                                ? 0
                                : tally_visitor_id(salt, p->w->digest, ev->article,
                                                   ev->article_len);
        }
        p->req.visitor = p->visitor;
    }
    return true;
}

static void on_probe_reply(int status, redisReply *reply, void *arg)
{
    struct write_lane *l = arg;

    l->probing = false;
    if (status == 0 && reply->type != REDIS_REPLY_ERROR)
        l->suspect = false;
    else
        l->retry_at = tally_now_ms() + WRITER_TICK_MS;
    writer_schedule(l->w);
}

static void writer_probe(struct write_lane *l, struct tally_store *st)
{
    const char *argv[] = {"SET", l->probe_key, "1", "PX", "60000"};
    size_t len[] = {3, strlen(l->probe_key), 1, 2, 5};

    if (tally_store_command(st, 5, argv, len, on_probe_reply, l) == 0)
        l->probing = true;
}

static void writer_flush_lane(struct write_lane *l)
{
    uint64_t now, seq;
    struct tally_store *st;
    int rc;

    /* Most of a cluster's 256 lanes have nothing to send at any time: they are passed over
     * before reading the clock. */
    if (l->state == UNIT_SENT || l->probing || (l->state == UNIT_NONE && TAILQ_EMPTY(&l->pending)))
        return;
    now = tally_now_ms();
    if (now < l->retry_at)
        return;
    st = writer_store(l);
    if (st == NULL || !tally_store_ready(st))
        return;
    if (l->state == UNIT_RESEND) {
        /* Past its fence a copy would only be refused: the deadlines settle it. */
        if (tally_fence_open(now, l->answer_by))
            writer_send(l, st);
        return;
    }
    if (l->suspect) {
        writer_probe(l, st);
        return;
    }
    rc = writer_take(l, now);
    if (rc == 0 && l->n_unit == 0)
        return;
    if (rc == 0 && !writer_visitors(l)) {
        writer_requeue_unit(l);
        return;
    }
    seq = ++l->w->seq;
    snprintf(l->attempt, sizeof(l->attempt), "%s-%llu", l->w->nonce, (unsigned long long)seq);
    l->agg.now = (int64_t)tally_clock_now();
    tally_known_update(&l->w->known, l->agg.now, tally_now_ms(),
                       tally_epochs_forgets(l->w->epochs));
    l->forgets = l->w->known.forgets;
    if (rc == 0)
        rc = tally_agg_build(&l->agg, l->reqs, l->n_unit, l->attempt);
    for (size_t i = 0; l->mark && i < l->n_unit; i++) {
        l->unit[i]->now = l->agg.now; /* its views' stamp (see writer_unmark_part()) */
        l->unit[i]->seq = seq;
    }
    if (rc < 0) {
        log_error("cannot build a write unit: %s", tally_strerror(rc));
        writer_answer_unit(l, TALLY_EUNAVAIL);
        return;
    }
    writer_send(l, st);
}

/* On a cluster, once the journal could no longer take a unit before its time
 * (tally_folder_journal_by()), what waits in its lane goes to the buckets' lanes: a unit
 * that surely did not run, and the parts not sent yet. (A unit that may have run is sent again
 * as it is: its marker tells, or its fence refuses it.) */
static void writer_journal_check(struct tally_writer *w)
{
    struct write_lane *l;

    if (w->n_lanes <= TALLY_BUCKETS)
        return;
    l = &w->lanes[TALLY_BUCKETS];
    if ((TAILQ_EMPTY(&l->pending) && !(l->state == UNIT_RESEND && !l->uncertain)) ||
        tally_fence_open(tally_now_ms(), writer_lane_by(l)))
        return;
    if (l->state == UNIT_RESEND && !l->uncertain)
        writer_requeue_unit(l);
    writer_unjournal(l);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct tally_writer *w = arg;

    (void)fd;
    (void)what;
    writer_journal_check(w);
    for (size_t i = 0; i < w->n_lanes; i++)
        writer_flush_lane(&w->lanes[i]);
}

/* ---- Replies ---- */

/* Errors with which Redis refuses a command without running it, and that pass.
 *
 * OOM, MISCONF and NOREPLICAS are among them: the write function is registered with flags, so
 * Redis checks maxmemory, a failed background save and min-replicas-to-write before running
 * it. Were they raised inside (a script without flags: "... on @user_script:N."), still
 * nothing was written: Redis checks OOM only until the first write, and MISCONF and
 * NOREPLICAS depend on state that only changes between commands, so if the first write
 * passes, every later one does. Either way the unit was refused at its first write: it is
 * retried, then answered TALLY_EUNAVAIL (503), never taken for one that failed part-way. */
static bool writer_transient(const redisReply *r)
{
    static const char *const codes[] = {"LOADING", "BUSY",     "TRYAGAIN", "CLUSTERDOWN",
                                        "MASTERDOWN", "READONLY", "OOM",   "MISCONF",
                                        "NOREPLICAS"};

    return tally_redis_error_in(r->str, r->len, codes, sizeof(codes) / sizeof(codes[0]));
}

static void writer_refused(struct write_lane *l, const redisReply *reply)
{
    unsigned shift = l->refusals < 5 ? l->refusals : 5;
    bool asking;

    /* Nothing ran. MOVED and ASK say where to send the same unit at once. */
    if ((l->redirect = tally_redis_redirect(l->w->router, reply, &asking)) != NULL) {
        l->asking = asking;
        l->state = UNIT_RESEND;
        return;
    }
    /* The journal's slot is half-moved: a unit's keys (its new attempt marker among them) are
     * on neither master all together, which Redis refuses until the move ends, however long
     * that takes (a reshard stopped half-way). A unit that surely did not run goes to its
     * buckets instead, and so do the writes of the next second. */
    if (l->agg.trimmed != NULL && !l->uncertain && strncmp(reply->str, "TRYAGAIN", 8) == 0) {
        l->w->journal_moving_until = tally_now_ms() + WRITER_JOURNAL_MOVING_MS;
        l->refusals = 0;
        writer_requeue_unit(l);
        writer_unjournal(l);
        return;
    }
    /* Else back off (50 ms doubling to 1.6 s): the periodic tick sends again. */
    l->retry_at = tally_now_ms() + (50u << shift);
    l->refusals++;
    if (writer_transient(reply) || l->uncertain) {
        /* A unit that may have run before keeps its attempt id. */
        log_debug("redis refused a write unit for now: %s", reply->str);
        if (l->uncertain)
            l->state = UNIT_RESEND;
        else
            writer_requeue_unit(l);
        return;
    }
    /* An error raised while the function ran ("... script: tally_apply_<v>, on
     * @user_function:N."; its checks' keys -- attempt, Idempotency-Key and repeat-view markers
     * -- of another type: a counting command Redis refuses is skipped instead): what it wrote
     * before stays written, so "not counted" would not be true. */
    if (strstr(reply->str, "@user_function:") != NULL || strstr(reply->str, "@user_script:") != NULL) {
        log_error("the write script failed part-way: %s", reply->str);
        writer_answer_unit(l, tally_unit_status(TALLY_UNIT_BROKEN));
        return;
    }
    log_error("redis refused a write unit: %s", reply->str);
    writer_answer_unit(l, tally_unit_status(TALLY_UNIT_REFUSED));
}

/* Events of the unit that its reply says were written now (not answered from a marker) and
 * that went to the journal: all but comments, which the ack counts itself. */
static size_t writer_unit_new_events(const struct write_lane *l)
{
    size_t n = 0;

    for (size_t i = 0; i < l->n_unit; i++)
        if (!l->reqs[i]->replayed && !l->reqs[i]->reused)
            for (size_t j = 0; j < l->reqs[i]->n; j++)
                n += l->reqs[i]->ev[j].type != TALLY_EVENT_COMMENT;
    return n;
}

/* Cached totals of the unit's buckets are stale, in every worker: before any answer goes.
 * (With a journal the unit counted its comments only; its fold bumps them again.) */
static void writer_bump(struct tally_writer *w, const struct tally_agg *a)
{
    for (unsigned b = 0; b < TALLY_BUCKETS; b++)
        if (a->touched[b / 64] & (UINT64_C(1) << (b % 64)))
            tally_epochs_bump(w->epochs, b);
}

static void writer_applied(struct write_lane *l, const redisReply *reply)
{
    struct tally_writer *w = l->w;
    int rc;

    if (tally_agg_fenced(reply)) {
        /* Redis reached it past its fence (late, or behind a stall): it never runs. */
        tally_metric_add(&w->metrics->redis_units_fenced, 1);
        l->refusals = 0;
        if (l->agg.trimmed != NULL && tally_fence_open(tally_now_ms(), l->answer_by)) {
            /* Past the journal's time, not its answers': its events go to their buckets. */
            l->uncertain = false;
            writer_requeue_unit(l);
            writer_unjournal(l);
            return;
        }
        writer_answer_unit(l, tally_unit_status(TALLY_UNIT_FENCED));
        return;
    }
    rc = tally_agg_apply_reply(&l->agg, reply, l->reqs, l->n_unit);
    if (rc == 0) {
        l->refusals = 0;
        if (l->agg.skipped > 0) {
            /* Counted but for those: the answer stays 200, as a fold's would (README,
             * "Guarantees": one bad key never stops counting). */
            tally_metric_add(&w->metrics->write_skipped, l->agg.skipped);
            log_error("a write skipped %u commands redis refused, the last with: %.*s",
                      (unsigned)l->agg.skipped, (int)l->agg.skip_why_len, l->agg.skip_why);
        }
        /* A unit filed under an earlier hour set the expiry of that hour's keys; one built
         * before a DELETE ended may have seen keys the DELETE then removed. */
        tally_known_learn(&w->known, l->agg.hour, l->forgets, tally_epochs_forgets(w->epochs),
                          l->agg.expired_day, l->agg.expired_hour);
        if (!l->mark)
            writer_bump(w, &l->agg);
        if (l->agg.journal != NULL && writer_unit_new_events(l) > 0)
            tally_folder_appended(w->folder, writer_unit_new_events(l), &l->agg, reply);
        for (size_t i = 0; !l->mark && i < l->n_unit; i++)
            tally_metric_add(&w->metrics->redis_unit_events, l->unit[i]->req.n);
        if (!l->mark)
            tally_metric_add(&w->metrics->redis_units, 1);
        writer_answer_unit(l, 0);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        writer_refused(l, reply);
    } else {
        log_error("unexpected reply to a write unit (type %d)", reply->type);
        writer_answer_unit(l, tally_unit_status(TALLY_UNIT_BROKEN));
    }
}

/* The reply to a unit whose requests were answered already (as unknown). Applied: the counts
 * changed, and cached totals must learn it; anything else changes nothing. The lane is free
 * again either way. */
static void writer_orphan_reply(struct write_lane *l, int status, const redisReply *reply)
{
    l->suspect = status != 0;
    l->orphan = false;
    l->state = UNIT_NONE;
    l->uncertain = false;
    l->redirect = NULL;
    l->asking = false;
    if (status == 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
        !tally_agg_fenced(reply)) {
        log_debug("a write unit answered as unknown was applied before its fence");
        writer_bump(l->w, &l->agg);
    }
}

static void on_unit_reply(int status, redisReply *reply, void *arg)
{
    struct write_lane *l = arg;

    if (l->orphan) {
        writer_orphan_reply(l, status, reply);
        writer_schedule(l->w);
        return;
    }
    if (l->n_unit == 0)
        return; /* no unit in flight here any more (answered already): nothing to do */
    if (status == 0 && reply->type != REDIS_REPLY_ERROR)
        l->suspect = false;
    if (status == 0) {
        writer_applied(l, reply);
    } else if (status == TALLY_EUNKNOWN) {
        l->state = UNIT_RESEND;
        l->uncertain = true;
        l->suspect = true;
    } else if (l->uncertain) {
        l->state = UNIT_RESEND;
    } else {
        writer_requeue_unit(l);
    }
    writer_schedule(l->w);
}

/* ---- Deadlines ---- */

/* The lane's store is ready (Redis reachable): else its requests wait at most --hold. */
static bool writer_lane_ready(struct write_lane *l)
{
    struct tally_store *st = tally_redis_for_slot(l->w->router, l->slot);

    return st != NULL && tally_store_ready(st);
}

/* The unit's first answer is due and its outcome is unknown: answer its requests so. A copy
 * still in flight keeps the lane until its reply or its connection's end (its fence keeps it
 * from running later); a unit between copies is dropped. */
static void writer_give_up(struct write_lane *l)
{
    size_t n = l->n_unit;

    /* The store has said so once per lost connection; this is per unit. */
    log_debug("redis did not confirm a write unit in time; its %zu requests are answered as "
              "of unknown outcome", n);
    l->suspect = true;
    /* It may have made a journal entry that no reply will tell of: the folder counts one
     * (of one event: its requests go now), so that reads wait for it and the next fold takes
     * it. A folder that counted one too many learns better from that fold. */
    if (l->agg.journal != NULL && (l->state == UNIT_SENT || l->uncertain))
        tally_folder_appended(l->w->folder, 1, NULL, NULL);
    if (l->state != UNIT_SENT) {
        writer_answer_unit(l, tally_unit_status(TALLY_UNIT_NO_REPLY));
        return;
    }
    l->n_unit = 0;
    l->orphan = true;
    for (size_t i = 0; i < n; i++)
        writer_part_done(l->w, l->unit[i], tally_unit_status(TALLY_UNIT_NO_REPLY));
}

/* Answer what is due on lane L at NOW. Waiting parts are in arrival order (a unit put back
 * goes first, and is older), so their deadlines are too. */
static void writer_expire_lane(struct write_lane *l, uint64_t now)
{
    struct tally_write_part *p;
    bool ready;

    if (l->n_unit == 0 && TAILQ_EMPTY(&l->pending))
        return;
    ready = writer_lane_ready(l);
    if (l->n_unit > 0 && l->state != UNIT_NONE) {
        /* Refused with a redirect, or refused for now: it did not run, so past the time to
         * send it its parts wait with the others (and are answered below). */
        if (l->state == UNIT_RESEND && !l->uncertain && !tally_fence_open(now, l->answer_by))
            writer_requeue_unit(l);
        else if ((l->state == UNIT_SENT || l->uncertain) && now >= l->answer_by)
            writer_give_up(l);
    }
    while ((p = TAILQ_FIRST(&l->pending)) != NULL &&
           (!tally_fence_open(now, p->w->answer_by) || (!ready && now >= p->w->hold_until))) {
        TAILQ_REMOVE(&l->pending, p, link);
        writer_part_done(l->w, p, tally_unit_status(TALLY_UNIT_UNSENT));
    }
}

/* *NEXT becomes AT when AT is after NOW and before *NEXT. */
static void writer_sooner(uint64_t *next, uint64_t at, uint64_t now)
{
    if (at > now && at < *next)
        *next = at;
}

/* Lower *NEXT to the time lane L next has something due after NOW. */
static void writer_lane_next(struct write_lane *l, uint64_t now, uint64_t *next)
{
    struct tally_write_part *p = TAILQ_FIRST(&l->pending);

    if (l->n_unit > 0 && (l->state == UNIT_SENT || l->uncertain))
        writer_sooner(next, l->answer_by, now);
    else if (l->n_unit > 0 && l->state == UNIT_RESEND)
        writer_sooner(next, l->answer_by - TALLY_FENCE_MARGIN_MS, now);
    if (p != NULL) {
        writer_sooner(next, p->w->answer_by - TALLY_FENCE_MARGIN_MS, now);
        if (!writer_lane_ready(l))
            writer_sooner(next, p->w->hold_until, now);
    }
    writer_sooner(next, l->retry_at, now);
}

/* Run the timer at the next deadline, or in WRITER_TICK_MS at the latest, while anything is
 * held. */
static void writer_arm(struct tally_writer *w, uint64_t now)
{
    uint64_t next = now + WRITER_TICK_MS;
    struct timeval tv;

    if (w->held_requests == 0) {
        event_del(w->tick_ev);
        return;
    }
    for (size_t i = 0; i < w->n_lanes; i++)
        writer_lane_next(&w->lanes[i], now, &next);
    tv.tv_sec = (time_t)((next - now) / 1000);
    tv.tv_usec = (suseconds_t)((next - now) % 1000) * 1000;
    event_add(w->tick_ev, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct tally_writer *w = arg;
    uint64_t now = tally_now_ms();

    (void)fd;
    (void)what;
    writer_journal_check(w);
    for (size_t i = 0; i < w->n_lanes; i++) {
        writer_expire_lane(&w->lanes[i], now);
        writer_flush_lane(&w->lanes[i]);
    }
    writer_arm(w, tally_now_ms());
}

/* ---- Splitting a write into parts ---- */

static void writer_part_init(struct tally_writer *w, struct tally_write_part *p,
                             struct tally_write *wr, struct write_lane *lane)
{
    p->w = wr;
    p->lane = lane;
    p->req.idem_key = NULL;
    if (wr->idem != NULL && p->req.n > 0) {
        /* One Redis: the script keeps the home marker itself. A cluster: the part's marker in
         * its own bucket, the home marker having been claimed (see writer.h). */
        unsigned bucket = (unsigned)(lane - w->lanes);
        size_t len = strlen(wr->idem);
        size_t n = !w->cluster
                       ? tally_idem_home_key(p->idem_key, sizeof(p->idem_key), w->cfg->prefix,
                                             wr->space, wr->idem, len)
                       : tally_idem_part_key(p->idem_key, sizeof(p->idem_key), w->cfg->prefix,
                                             bucket, wr->space, wr->body_digest, wr->idem, len);

        if (n > 0) {
            p->req.idem_key = p->idem_key;
            p->req.idem_len = n;
            p->req.digest = wr->body_digest;
        }
    }
}

/* Cluster: one part per bucket the request touches, each with its own copy of its events
 * and room for their visitor ids (and, for marks, their repeat flags), in one allocation, in
 * the lanes from LANES on (the buckets' lanes, or their marks' lanes). */
static int writer_split(struct tally_writer *w, struct tally_write *wr, struct write_lane *lanes)
{
    uint16_t bucket[TALLY_BATCH_MAX], count[TALLY_BUCKETS] = {0};
    size_t n = wr->req.n, n_parts = 0, at = 0;
    struct tally_write_part *parts;
    struct tally_event *ev;
    uint64_t *vis;
    uint8_t *rep;
    int part_of[TALLY_BUCKETS];

    for (size_t i = 0; i < n; i++) {
        bucket[i] = (uint16_t)tally_key_bucket(wr->req.ev[i].article, wr->req.ev[i].article_len);
        n_parts += count[bucket[i]]++ == 0;
    }
    parts = calloc(1, n_parts * sizeof(*parts) + n * (sizeof(*ev) + sizeof(*vis) + 1));
    if (parts == NULL)
        return TALLY_ENOMEM;
    ev = (struct tally_event *)&parts[n_parts];
    vis = (uint64_t *)&ev[n];
    rep = (uint8_t *)&vis[n];
    memset(part_of, -1, sizeof(part_of));
    for (size_t i = 0, k = 0; i < n; i++) {
        struct tally_write_part *p;

        if (part_of[bucket[i]] < 0) {
            part_of[bucket[i]] = (int)k;
            p = &parts[k++];
            p->req.ev = ev + at;
            p->visitor = vis + at;
            p->lane = &lanes[bucket[i]];
            if (p->lane->mark)
                p->req.repeated = p->repeated = rep + at;
            at += count[bucket[i]];
        }
        p = &parts[part_of[bucket[i]]];
        ((struct tally_event *)p->req.ev)[p->req.n++] = wr->req.ev[i];
    }
    /* What was ignored before the write is answered once: it rides on the first part. */
    parts[0].req.bot = wr->req.bot;
    parts[0].req.prefetch = wr->req.prefetch;
    for (size_t k = 0; k < n_parts; k++)
        writer_part_init(w, &parts[k], wr, parts[k].lane);
    wr->parts = parts;
    wr->n_parts = n_parts;
    return 0;
}

/* ---- The journal on a cluster ---- */

/* Put P in lane L's queue in the order of the answers' times, which writer_expire_lane()
 * relies on. */
static void writer_insert(struct write_lane *l, struct tally_write_part *p)
{
    struct tally_write_part *q;

    TAILQ_FOREACH_REVERSE(q, &l->pending, part_list, link) {
        if (q->w->answer_by <= p->w->answer_by) {
            TAILQ_INSERT_AFTER(&l->pending, q, p, link);
            return;
        }
    }
    TAILQ_INSERT_HEAD(&l->pending, p, link);
}

/* The journal's lane L may take nothing more in time: each write waiting in it (a single part,
 * not sent, or sent and surely not run) is split by bucket into the buckets' lanes, as if it
 * had never been journaled; its answer-by time stays. */
static void writer_unjournal(struct write_lane *l)
{
    struct tally_writer *w = l->w;
    struct tally_write_part *p;

    while ((p = TAILQ_FIRST(&l->pending)) != NULL) {
        struct tally_write *wr = p->w;

        assert(p == &wr->single && wr->n_parts == 1);
        TAILQ_REMOVE(&l->pending, p, link);
        if (wr->phase == WRITE_APPEND) {
            /* Its views were checked already: counted in their buckets they would be taken
             * for repeats of themselves. Not written (its marks are forgotten). */
            writer_part_done(w, p, TALLY_EUNAVAIL);
            continue;
        }
        if (writer_split(w, wr, w->lanes) < 0) {
            wr->parts = NULL;
            wr->n_parts = 1;
            writer_part_done(w, p, TALLY_EUNAVAIL);
            continue;
        }
        wr->parts_left = wr->n_parts;
        for (size_t k = 0; k < wr->n_parts; k++)
            writer_insert(wr->parts[k].lane, &wr->parts[k]);
    }
    writer_schedule(w);
}

/* The lane of the folder's journal on a cluster, following the journal's tag. */
static struct write_lane *writer_journal_lane(struct tally_writer *w)
{
    struct write_lane *l = &w->lanes[TALLY_BUCKETS];
    unsigned bucket = tally_folder_bucket(w->folder);

    if (l->agg.marker_bucket != (int)bucket) {
        l->agg.marker_bucket = (int)bucket;
        l->slot = tally_key_bucket_slot(bucket);
        if (tally_key_make(l->probe_key, sizeof(l->probe_key), w->cfg->prefix, bucket, 'x',
                           "probe", 5) == 0)
            l->probe_key[0] = '\0';
    }
    return l;
}

/* Can the journal on a cluster take a write now: while the folder's heartbeat keeps it
 * registered, so that a journal holding entries is never anyone else's to fold while its
 * writer lives; not while the journal's slot is being moved (writer_refused()). */
static bool writer_journal_open(struct tally_writer *w)
{
    return tally_folder_registered(w->folder) && tally_now_ms() >= w->journal_moving_until;
}

/* Was an article of WR read lately on this collector (tally/lately.h)? Then a read of it
 * will likely follow WR too, and would wait for WR's fold. */
static bool writer_read_lately(const struct tally_writer *w, const struct tally_write *wr)
{
    uint64_t now = tally_now_ms();

    for (size_t i = 0; w->cfg->follow_reads_ms > 0 && i < wr->req.n; i++)
        if (tally_lately_was_read(w->lately, wr->req.ev[i].article, wr->req.ev[i].article_len,
                                  now, w->cfg->follow_reads_ms))
            return true;
    return false;
}

/* Does WR go to the journal (tally/fold.h)? Not when an article of it was read lately: it is
 * counted at once. On a cluster, only when counting it later is the same as counting it now:
 * no Idempotency-Key (its markers have homes of their own), no comment (its floor at 0
 * depends on order); views checked against a repeat-view window are marked in their buckets
 * first (writer_marked()). */
static bool writer_journaled(struct tally_writer *w, const struct tally_write *wr)
{
    if (w->folder == NULL || (w->cluster && (wr->idem != NULL || !writer_journal_open(w))))
        return false;
    for (size_t i = 0; w->cluster && i < wr->req.n; i++)
        if (wr->req.ev[i].type == TALLY_EVENT_COMMENT)
            return false;
    if (writer_read_lately(w, wr)) {
        tally_metric_add(&w->metrics->writes_at_once, 1);
        return false;
    }
    return true;
}

/* Does WR, journaled, have views for a repeat-view window to check (in their buckets, before
 * its append: see writer.h)? */
static bool writer_marks(const struct tally_writer *w, const struct tally_write *wr)
{
    if (w->cfg->view_window == 0 || !wr->has_digest)
        return false;
    for (size_t i = 0; i < wr->req.n; i++)
        if (wr->req.ev[i].type == TALLY_EVENT_VIEW)
            return true;
    return false;
}

/* WR whole, as the one part of a unit of lane L. */
static struct tally_write_part *writer_single(struct tally_writer *w, struct tally_write *wr,
                                              struct write_lane *l)
{
    struct tally_write_part *p = &wr->single;

    memset(p, 0, sizeof(*p));
    p->req.ev = wr->req.ev;
    p->req.n = wr->req.n;
    p->req.bot = wr->req.bot;
    p->req.prefetch = wr->req.prefetch;
    p->visitor = wr->visitor;
    writer_part_init(w, p, wr, l);
    wr->n_parts = 1;
    return p;
}

static int writer_parts(struct tally_writer *w, struct tally_write *wr)
{
    bool journaled = writer_journaled(w, wr);

    wr->parts = NULL;
    wr->applied = wr->failed = wr->unknown = 0;
    wr->failure = 0;
    wr->req.accepted = wr->req.repeat = wr->req.bot_out = wr->req.prefetch_out = 0;
    wr->req.replayed = true;
    wr->req.reused = false;
    wr->phase = 0;
    wr->marks = NULL;
    wr->seen = NULL;
    if (!w->cluster) {
        writer_single(w, wr, w->folder != NULL && !journaled ? &w->lanes[WRITER_AT_ONCE]
                                                              : &w->lanes[0]);
        return 0;
    }
    if (journaled && writer_marks(w, wr)) {
        wr->phase = WRITE_MARK;
        return writer_split(w, wr, &w->lanes[TALLY_BUCKETS + 1]);
    }
    if (!journaled)
        return writer_split(w, wr, w->lanes);
    writer_single(w, wr, writer_journal_lane(w));
    return 0;
}

/* ---- Marks: a journaled write's views checked in their buckets first (see writer.h) ---- */

static void on_unmark_reply(int status, redisReply *reply, void *arg)
{
    (void)arg;
    if (status < 0 || reply->type == REDIS_REPLY_ERROR)
        log_warn("redis did not forget the views of a request it did not count (%s): sent "
                 "again within --view-window, they are taken for repeats",
                 status < 0 ? tally_strerror(status) : reply->str);
}

/* Ask mark P's bucket to forget the views P's mark remembered (src/scripts/unmark.lua): the
 * views that were no repeat, or every view if its answer never came. Not waited for. */
static void writer_unmark_part(struct tally_writer *w, struct tally_write_part *p)
{
    size_t n = 0, max = p->req.n;
    /* FCALL name numkeys key... at attempt visitor...: keys' and visitors' texts in TEXT. */
    const char **argv = malloc((2 * max + 5) * sizeof(*argv));
    size_t *lens = malloc((2 * max + 5) * sizeof(*lens));
    char *text = malloc(max * (TALLY_KEY_MAX + 48) + 64), *t = text;
    char numkeys[24], at[24], attempt[sizeof(w->nonce) + 24];
    struct tally_store *st = tally_redis_for_slot(w->router, p->lane->slot);
    int64_t slot = p->now / (int64_t)w->cfg->view_window;

    if (argv == NULL || lens == NULL || text == NULL || st == NULL || !tally_store_ready(st))
        goto out;
    for (size_t j = 0; j < p->req.n; j++) {
        const struct tally_event *ev = &p->req.ev[j];
        size_t k;

        if (ev->type != TALLY_EVENT_VIEW || (p->marked == 1 && p->repeated[j]))
            continue;
        k = tally_key_make(t, TALLY_KEY_MAX, w->cfg->prefix,
                           tally_key_bucket(ev->article, ev->article_len), 'w', ev->article,
                           ev->article_len);
        if (k == 0)
            continue;
        k += (size_t)snprintf(t + k, 24, ":%lld", (long long)slot);
        argv[3 + n] = t;
        lens[3 + n] = k;
        t += k + 1;
        /* Its visitor, after every key: parked at the far end for now. */
        argv[5 + max + n] = t;
        lens[5 + max + n] = (size_t)snprintf(t, 17, "%016llx", (unsigned long long)p->visitor[j]);
        t += 17;
        n++;
    }
    if (n == 0)
        goto out;
    argv[0] = "FCALL";
    lens[0] = 5;
    argv[1] = tally_functions_name(TALLY_SCRIPT_UNMARK);
    lens[1] = strlen(argv[1]);
    argv[2] = numkeys;
    lens[2] = (size_t)snprintf(numkeys, sizeof(numkeys), "%zu", n);
    /* The mark's stamp: its unit's time and attempt id (see src/scripts/unit.lua). */
    argv[3 + n] = at;
    lens[3 + n] = (size_t)snprintf(at, sizeof(at), "%lld", (long long)p->now);
    argv[4 + n] = attempt;
    lens[4 + n] = (size_t)snprintf(attempt, sizeof(attempt), "%s-%llu", w->nonce,
                                   (unsigned long long)p->seq);
    memmove(&argv[5 + n], &argv[5 + max], n * sizeof(*argv));
    memmove(&lens[5 + n], &lens[5 + max], n * sizeof(*lens));
    (void)tally_store_command(st, (int)(5 + 2 * n), argv, lens, on_unmark_reply, NULL);
out:
    free(argv);
    free(lens);
    free(text);
}

/* WR was not appended, and surely will not be: forget what its marks remembered. */
static void writer_unmark(struct tally_writer *w, struct tally_write *wr)
{
    for (size_t k = 0; k < wr->n_marks; k++)
        if (wr->marks[k].marked)
            writer_unmark_part(w, &wr->marks[k]);
}

/* Every mark of WR was answered. All ran: WR goes to the journal, its repeats flagged (SEEN:
 * each brings its visitor alone, as on one Redis). Else nothing was counted: the marks are
 * forgotten and WR is answered not written. */
static void writer_marked(struct tally_writer *w, struct tally_write *wr)
{
    struct tally_write_part *p;
    int part_of[TALLY_BUCKETS];
    uint32_t repeats = wr->req.repeat;
    int status = wr->unknown == 0 && wr->failure != 0 ? wr->failure : TALLY_EUNAVAIL;

    wr->marks = wr->parts;
    wr->n_marks = wr->n_parts;
    wr->parts = NULL;
    wr->phase = WRITE_APPEND;
    wr->n_seen = 0;
    if (wr->failed > 0 || wr->unknown > 0 || w->closing || !writer_journal_open(w) ||
        (wr->seen = calloc(wr->req.n, 1)) == NULL) {
        writer_unmark(w, wr);
        writer_marks_free(wr);
        writer_answer(w, wr, status);
        return;
    }
    memset(part_of, -1, sizeof(part_of));
    for (size_t k = 0; k < wr->n_marks; k++)
        part_of[wr->marks[k].lane - &w->lanes[TALLY_BUCKETS + 1]] = (int)k;
    for (size_t i = 0; i < wr->req.n; i++) {
        const struct tally_event *ev = &wr->req.ev[i];
        struct tally_write_part *m =
            &wr->marks[part_of[tally_key_bucket(ev->article, ev->article_len)]];

        wr->seen[i] = m->repeated[m->taken++];
        wr->n_seen += wr->seen[i];
    }
    if (wr->n_seen == wr->req.n) {
        /* Repeats alone: nothing to append. */
        wr->req.accepted = 0;
        wr->req.repeat = repeats;
        wr->req.bot_out = wr->req.bot;
        wr->req.prefetch_out = wr->req.prefetch;
        writer_marks_free(wr);
        writer_answer(w, wr, 0);
        return;
    }
    p = writer_single(w, wr, writer_journal_lane(w));
    p->req.seen = wr->seen;
    wr->parts_left = 1;
    wr->applied = wr->failed = wr->unknown = 0;
    wr->failure = 0;
    wr->req.accepted = wr->req.repeat = wr->req.bot_out = wr->req.prefetch_out = 0;
    wr->repeats = repeats;
    w->held_events += wr->req.n;
    tally_gauge_add(&w->metrics->held_events, (int64_t)wr->req.n);
    TAILQ_INSERT_TAIL(&p->lane->pending, p, link);
    writer_schedule(w);
}

/* ---- Life ---- */

/* Put WR's parts in their lanes' queues. */
static void writer_queue(struct tally_writer *w, struct tally_write *wr)
{
    struct tally_write_part *parts = wr->parts != NULL ? wr->parts : &wr->single;

    wr->parts_left = wr->n_parts;
    for (size_t k = 0; k < wr->n_parts; k++)
        TAILQ_INSERT_TAIL(&parts[k].lane->pending, &parts[k], link);
    /* Deadlines only grow with arrival: a timer already set is due no later than this
     * write's (the hold of a Redis down aside, looked at every WRITER_TICK_MS). */
    if (!event_pending(w->tick_ev, EV_TIMEOUT, NULL))
        writer_arm(w, tally_now_ms());
    writer_schedule(w);
}

/* ---- Claiming an Idempotency-Key (cluster; see writer.h) ---- */

/* A claimed write answered without any part: release what it held and answer. */
static void writer_claim_end(struct tally_writer *w, struct tally_write *wr, int status)
{
    w->held_events -= wr->req.n;
    tally_gauge_add(&w->metrics->held_events, -(int64_t)wr->req.n);
    writer_answer(w, wr, status);
}

struct claim_call {
    struct tally_writer *w;
    struct tally_write *wr;
};

static int writer_claim_send(struct tally_writer *w, struct tally_write *wr,
                             struct tally_store *st, bool asking);

/* The home marker as it was before the claim: go on writing, replay, or refuse. */
static void writer_claimed(struct tally_writer *w, struct tally_write *wr, const redisReply *r)
{
    struct tally_idem_answer a;
    int verdict = tally_idem_judge(r->type == REDIS_REPLY_STRING ? r->str : NULL,
                                   r->type == REDIS_REPLY_STRING ? r->len : 0, wr->body_digest, &a);

    if (verdict == TALLY_IDEM_PROCEED && writer_parts(w, wr) == 0) {
        wr->claimed = true;
        writer_queue(w, wr);
    } else if (verdict == TALLY_IDEM_PROCEED) {
        writer_claim_end(w, wr, TALLY_EUNAVAIL);
    } else if (verdict == TALLY_IDEM_REPLAY) {
        wr->req.accepted = a.accepted;
        wr->req.repeat = a.repeat;
        wr->req.bot_out = a.bot;
        wr->req.prefetch_out = a.prefetch;
        wr->req.replayed = true;
        writer_claim_end(w, wr, 0);
    } else if (verdict == TALLY_IDEM_REUSED) {
        writer_claim_end(w, wr, TALLY_EREUSED);
    } else {
        log_error("unexpected idempotency marker at '%s'", wr->home);
        writer_claim_end(w, wr, TALLY_EREDIS);
    }
}

static void on_claim_reply(int status, redisReply *reply, void *arg)
{
    struct claim_call *call = arg;
    struct tally_writer *w = call->w;
    struct tally_write *wr = call->wr;
    struct tally_store *to;
    bool asking;

    free(call);
    /* A claim that failed or went unanswered wrote at most a pending marker, which a retry
     * of the same body passes: nothing was counted. */
    if (status < 0) {
        writer_claim_end(w, wr, TALLY_EUNAVAIL);
    } else if (reply->type != REDIS_REPLY_ERROR) {
        writer_claimed(w, wr, reply);
    } else if ((to = tally_redis_redirect(w->router, reply, &asking)) != NULL &&
               ++wr->claim_tries < 5 && writer_claim_send(w, wr, to, asking) == 0) {
        return;
    } else {
        log_debug("redis refused an idempotency claim: %s", reply->str);
        writer_claim_end(w, wr, TALLY_EUNAVAIL);
    }
}

static int writer_claim_send(struct tally_writer *w, struct tally_write *wr,
                             struct tally_store *st, bool asking)
{
    const char *argv[] = {"SET", wr->home, wr->body_digest, "NX", "GET", "EX", TALLY_IDEM_TTL_TEXT};
    size_t argvlen[7];
    struct claim_call *call = malloc(sizeof(*call));
    char *cmd = NULL;
    int len, rc = TALLY_ENOMEM;

    for (int i = 0; i < 7; i++)
        argvlen[i] = strlen(argv[i]);
    argvlen[1] = wr->home_len;
    if (call == NULL || (len = redisFormatCommandArgv(&cmd, 7, argv, argvlen)) < 0)
        goto out;
    call->w = w;
    call->wr = wr;
    rc = st != NULL ? tally_store_formatted(st, asking, cmd, (size_t)len, on_claim_reply, call)
                    : TALLY_EUNAVAIL;
out:
    if (rc < 0)
        free(call);
    redisFreeCommand(cmd);
    return rc;
}

static int writer_claim(struct tally_writer *w, struct tally_write *wr)
{
    return writer_claim_send(w, wr, tally_redis_for_key(w->router, wr->home, wr->home_len), false);
}

static void on_settle_reply(int status, redisReply *reply, void *arg)
{
    (void)status;
    (void)reply;
    (void)arg;
}

/* Every part applied: the home marker keeps the answer for the key's retries. Not waited
 * for: if it is lost, a retry passes the claim and its parts answer from their markers. */
static void writer_settle(struct tally_writer *w, struct tally_write *wr)
{
    struct tally_idem_answer a = {wr->req.accepted, wr->req.bot_out, wr->req.prefetch_out,
                                  wr->req.repeat};
    char value[64];
    const char *argv[] = {"SET", wr->home, value, "XX", "KEEPTTL"};
    size_t argvlen[5] = {3, wr->home_len, 0, 2, 7};
    struct tally_store *st = tally_redis_for_key(w->router, wr->home, wr->home_len);
    char *cmd = NULL;
    int len;

    argvlen[2] = tally_idem_settled(value, sizeof(value), wr->body_digest, &a);
    if (st == NULL || argvlen[2] == 0 || (len = redisFormatCommandArgv(&cmd, 5, argv, argvlen)) < 0)
        return;
    (void)tally_store_formatted(st, false, cmd, (size_t)len, on_settle_reply, NULL);
    redisFreeCommand(cmd);
}

int tally_writer_submit(struct tally_writer *w, struct tally_write *wr)
{
    bool ready = tally_redis_ready(w->router);
    uint64_t now = tally_now_ms();
    int rc;

    if (w->held_events + wr->req.n > w->cfg->max_held)
        return TALLY_EFULL;
    if (w->folder != NULL && tally_folder_full(w->folder, w->held_events + wr->req.n)) {
        tally_metric_add(&w->metrics->journal_refused, 1);
        return TALLY_EFULL;
    }
    if (!ready && w->cfg->hold_ms == 0)
        return TALLY_EUNAVAIL;
    wr->claimed = false;
    wr->claim_tries = 0;
    if (wr->idem != NULL) {
        tally_idem_digest(wr->req.ev, wr->req.n, wr->body_digest);
        wr->home_len = tally_idem_home_key(wr->home, sizeof(wr->home), w->cfg->prefix, wr->space,
                                           wr->idem, strlen(wr->idem));
        if (wr->home_len == 0)
            return TALLY_EINVAL;
    }
    /* Waiting behind a unit in flight is normal; waiting for a Redis that is down is what
     * --hold bounds; the answer goes by --hold + --redis-timeout, whatever Redis does. A
     * keyed write on a cluster is claimed first (see writer.h); the claim is bounded by
     * --redis-timeout like any command, and its parts by the same answer-by time. */
    wr->hold_until = now + w->cfg->hold_ms;
    wr->answer_by = wr->hold_until + w->cfg->redis_timeout_ms;
    if (wr->idem != NULL && w->cluster) {
        if (!ready)
            return TALLY_EUNAVAIL; /* the claim is not held: it has no lane to wait in */
        rc = writer_claim(w, wr);
    } else {
        rc = writer_parts(w, wr);
    }
    if (rc < 0)
        return rc;
    w->held_events += wr->req.n;
    w->held_requests++;
    tally_gauge_add(&w->metrics->held_events, (int64_t)wr->req.n);
    tally_gauge_add(&w->metrics->held_requests, 1);
    if (wr->idem == NULL || !w->cluster)
        writer_queue(w, wr);
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

struct tally_folder *tally_writer_folder(struct tally_writer *w)
{
    return w->folder;
}

static void writer_lane_init(struct tally_writer *w, struct write_lane *l, unsigned bucket)
{
    l->w = w;
    /* After the journal's lane (TALLY_BUCKETS): each bucket's lane of marks. */
    l->mark = bucket > TALLY_BUCKETS;
    if (l->mark)
        bucket -= TALLY_BUCKETS + 1;
    l->slot = tally_key_bucket_slot(bucket % TALLY_BUCKETS);
    if (tally_key_make(l->probe_key, sizeof(l->probe_key), w->cfg->prefix,
                       bucket % TALLY_BUCKETS, 'x', "probe", 5) == 0)
        l->probe_key[0] = '\0';
    TAILQ_INIT(&l->pending);
    tally_agg_init(&l->agg, w->cfg->prefix, w->cfg->view_window);
    l->agg.known_day = w->known.day;
    l->agg.known_hour = w->known.hour;
    /* In a cluster every key is declared, so that a slot being migrated refuses the unit
     * whole instead of failing half-way through it. */
    l->agg.declare = w->cluster;
    l->agg.mark = l->mark;
    if (w->folder != NULL && !w->cluster && bucket == 0) {
        l->agg.journal = tally_folder_journal(w->folder);
        l->agg.registry = tally_folder_registry(w->folder);
    } else if (w->folder != NULL && bucket == TALLY_BUCKETS) {
        /* The journal's lane on a cluster: its unit touches the journal's keys alone, which
         * it declares (its marker, the journal, the trimmed count); its slot follows the
         * journal's tag (writer_journal_lane()). */
        l->agg.declare = false;
        l->agg.journal = tally_folder_journal(w->folder);
        l->agg.trimmed = tally_folder_trimmed(w->folder);
        l->agg.window = 0; /* views with a window were checked by their marks */
    }
}

struct tally_writer *tally_writer_new(struct event_base *base, struct tally_redis *router,
                                      struct tally_salts *salts, const struct tally_config *cfg,
                                      struct tally_metrics *metrics, struct tally_epochs *epochs,
                                      const struct tally_lately *lately)
{
    struct tally_writer *w = calloc(1, sizeof(*w));
    uint8_t rnd[8];

    if (w == NULL)
        return NULL;
    w->base = base;
    w->router = router;
    w->salts = salts;
    w->cfg = cfg;
    w->metrics = metrics;
    w->epochs = epochs;
    w->lately = lately;
    w->cluster = tally_redis_is_cluster(router);
    w->n_lanes = !w->cluster ? (cfg->fold_interval_ms == 0 ? 1 : 2)
                 : cfg->fold_interval_ms == 0  ? TALLY_BUCKETS
                 : cfg->view_window == 0       ? TALLY_BUCKETS + 1
                                               : 2 * TALLY_BUCKETS + 1;
    w->lanes = calloc(w->n_lanes, sizeof(*w->lanes));
    /* Attempt ids must never repeat, across threads, restarts and collectors. */
    arc4random_buf(rnd, sizeof(rnd));
    for (int i = 0; i < 8; i++)
        snprintf(w->nonce + 2 * i, 3, "%02x", rnd[i]);
    w->flush_ev = event_new(base, -1, 0, on_flush, w);
    w->tick_ev = evtimer_new(base, on_tick, w);
    if (cfg->fold_interval_ms > 0)
        w->folder =
            tally_folder_new(base, router, cfg, metrics, epochs, &w->known, w->nonce);
    if (w->lanes == NULL || w->flush_ev == NULL || w->tick_ev == NULL ||
        (cfg->fold_interval_ms > 0 && w->folder == NULL)) {
        tally_writer_free(w);
        return NULL;
    }
    for (size_t i = 0; i < w->n_lanes; i++)
        writer_lane_init(w, &w->lanes[i], (unsigned)i);
    return w;
}

static void writer_lane_release(struct write_lane *l)
{
    struct tally_write_part *p;

    while ((p = TAILQ_FIRST(&l->pending)) != NULL) {
        TAILQ_REMOVE(&l->pending, p, link);
        writer_part_done(l->w, p, TALLY_EUNAVAIL);
    }
    writer_answer_unit(l, tally_unit_status(l->state == UNIT_NONE ? TALLY_UNIT_UNSENT
                                            : l->uncertain || l->state == UNIT_SENT
                                                ? TALLY_UNIT_NO_REPLY
                                                : TALLY_UNIT_REFUSED));
    tally_agg_release(&l->agg);
    free(l->unit);
    free(l->reqs);
}

void tally_writer_free(struct tally_writer *w)
{
    if (w == NULL)
        return;
    w->closing = true;
    for (size_t i = 0; w->lanes != NULL && i < w->n_lanes; i++)
        writer_lane_release(&w->lanes[i]);
    if (w->flush_ev != NULL)
        event_free(w->flush_ev);
    if (w->tick_ev != NULL)
        event_free(w->tick_ev);
    tally_folder_free(w->folder);
    free(w->lanes);
    free(w);
}
