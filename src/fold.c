/* fold.c -- a worker's journal and its folds (see tally/fold.h). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tally/agg.h"
#include "tally/buf.h"
#include "tally/cache.h"
#include "tally/clock.h"
#include "tally/error.h"
#include "tally/fold.h"
#include "tally/hash.h"
#include "tally/keys.h"
#include "tally/known.h"
#include "tally/log.h"
#include "tally/merge.h"
#include "tally/metrics.h"
#include "tally/model.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "fold_private.h"

static void fold_start(struct tally_folder *f);
static void on_reclaim_timer(evutil_socket_t fd, short what, void *arg);

/* A fold ended: BLOCKED when it failed or could not be sent. */
void fold_ended(struct tally_folder *f, bool blocked)
{
    atomic_store(&f->blocked, blocked);
    atomic_fetch_add_explicit(&f->tries, 1, memory_order_release);
    if (f->ended_cb != NULL)
        f->ended_cb(f->ended_arg);
}

void tally_folder_on_ended(struct tally_folder *f, void (*cb)(void *arg), void *arg)
{
    f->ended_cb = cb;
    f->ended_arg = arg;
}

void fold_bump(struct tally_folder *f, const redisReply *tags)
{
    if (tags == NULL || tags->type != REDIS_REPLY_STRING)
        return;
    for (size_t i = 0; i + 1 < tags->len; i += 2) {
        char hex[3] = {tags->str[i], tags->str[i + 1], '\0'};
        unsigned long b = strtoul(hex, NULL, 16);

        if (b < TALLY_BUCKETS)
            tally_epochs_bump(f->epochs, (unsigned)b);
    }
}

/* Commands a fold skipped because Redis refused them (a key of another type, written by
 * someone else): what they would have added is lost, the rest counted once. */
void fold_skipped(struct tally_folder *f, const redisReply *n, const redisReply *why)
{
    if (n->type != REDIS_REPLY_INTEGER || n->integer == 0)
        return;
    tally_metric_add(&f->metrics->fold_skipped, (uint64_t)n->integer);
    log_error("a fold skipped %lld commands redis refused, the last with: %.*s", n->integer,
              why->type == REDIS_REPLY_STRING ? (int)why->len : 0,
              why->type == REDIS_REPLY_STRING ? why->str : "");
}

/* The fold answered EXPIRED: the keys whose expiry it set, as a fresh list. */
static void fold_learn(struct tally_folder *f, const redisReply *expired)
{
    if (expired->type != REDIS_REPLY_STRING ||
        tally_known_read(expired->str, expired->len, f->expired_day, f->expired_hour) < 0)
        return;
    tally_known_learn(f->known, f->known_stamp, f->known_forgets,
                      tally_epochs_forgets(f->epochs), f->expired_day, f->expired_hour);
}

/* Append a fold's "hour fresh" arguments: the hour the list is of and the day and hour keys
 * of the buckets TOUCHED not known to have their expiry (see tally/known.h). */
static void fold_put_fresh(struct tally_folder *f, const uint64_t touched[TALLY_BUCKETS / 64])
{
    char list[TALLY_FRESH_MAX];
    size_t n;

    tally_known_update(f->known, (int64_t)tally_clock_now(), tally_now_ms(),
                       tally_epochs_forgets(f->epochs));
    memcpy(f->known_stamp, f->known->stamp, sizeof(f->known_stamp));
    f->known_forgets = f->known->forgets;
    n = tally_known_fresh(f->known->day, f->known->hour, touched, list);
    tally_buf_add_bulk(&f->body, f->known_stamp, strlen(f->known_stamp));
    tally_buf_add_bulk(&f->body, list, n);
}

/* ---- Batches ---- */

static struct fold_batch *fold_oldest(struct tally_folder *f)
{
    return f->b_len > 0 ? &f->batch[f->b_head] : NULL;
}

struct fold_batch *fold_batch_from(struct tally_folder *f, uint64_t entry)
{
    for (size_t i = 0; i < f->b_len; i++) {
        struct fold_batch *b = &f->batch[(f->b_head + i) % FOLD_BATCHES];

        if (b->first_entry >= entry)
            return b;
    }
    return NULL;
}

bool fold_batch_newest(const struct tally_folder *f, const struct fold_batch *b)
{
    return f->b_len > 0 && b == &f->batch[(f->b_head + f->b_len - 1) % FOLD_BATCHES];
}

/* Keep the merge of batch B, which goes, for a batch to come. */
static void fold_spare(struct tally_folder *f, struct fold_batch *b)
{
    f->spare[f->n_spare++] = b->m;
    b->m = NULL;
}

/* Forget the oldest batch: its entries left in the journal are folded from there. */
static void fold_drop_oldest(struct tally_folder *f)
{
    fold_spare(f, &f->batch[f->b_head]);
    f->b_head = (f->b_head + 1) % FOLD_BATCHES;
    if (--f->b_len == 0)
        f->b_open = false;
}

/* Forget the newest batch (its merge failed part-way): the same. */
static void fold_drop_newest(struct tally_folder *f)
{
    fold_spare(f, &f->batch[(f->b_head + --f->b_len) % FOLD_BATCHES]);
    f->b_open = false;
}

/* Is the oldest entry not folded the first of the oldest batch? */
static bool fold_head_merged(struct tally_folder *f)
{
    const struct fold_batch *b = fold_oldest(f);

    return f->len > 0 && b != NULL && b->first_entry == atomic_load(&f->folded);
}

/* Should a fold start as soon as none is in flight, rather than at the next interval: a
 * batch closed (not the one in flight), or entries first in line that only the journal
 * holds? */
static bool fold_due(struct tally_folder *f)
{
    if (f->cluster != NULL)
        return fold_cluster_due(f);
    size_t closed = f->b_len - (f->b_open ? 1 : 0) - (f->merged_in_flight ? 1 : 0);

    return f->staging || (f->len > 0 && (closed > 0 || !fold_head_merged(f)));
}

/* Add the entry of index INDEX, which the unit last built in A appended (its REPLY read by
 * A already), to the newest batch, or to a new one. Left unmerged (folded from the journal
 * then) when the batches are full or out of memory. */
static void fold_merge(struct tally_folder *f, uint64_t index, struct tally_agg *a,
                       const redisReply *reply, size_t events)
{
    struct fold_batch *b = f->b_len > 0 ? &f->batch[(f->b_head + f->b_len - 1) % FOLD_BATCHES]
                                        : NULL;
    int rc;

    if (a->entry_len == 0 || a->entry_len >= sizeof(b->first) ||
        a->attempt_len >= sizeof(b->first_u))
        return;
    if (f->b_open && b->first_entry + b->entries != index)
        f->b_open = false; /* an entry in between was not merged */
    if (!f->b_open) {
        if (f->b_len == FOLD_BATCHES)
            return;
        b = &f->batch[(f->b_head + f->b_len) % FOLD_BATCHES];
        b->m = f->n_spare > 0 ? f->spare[--f->n_spare] : tally_merge_new();
        if (b->m == NULL)
            return;
        tally_merge_clear(b->m);
        b->first_entry = index;
        b->entries = b->events = 0;
        memcpy(b->first, a->entry_id, a->entry_len + 1);
        memcpy(b->first_u, a->attempt_key, a->attempt_len);
        b->first_u[a->attempt_len] = '\0';
        b->first_seq = a->entry_seq;
        f->b_len++;
        f->b_open = true;
    }
    if ((rc = tally_agg_merge(a, reply, b->m)) < 0) {
        log_error("cannot merge a journal entry (%s): its batch is folded from the journal",
                  tally_strerror(rc));
        fold_drop_newest(f);
        return;
    }
    memcpy(b->last, a->entry_id, a->entry_len + 1);
    memcpy(b->last_u, a->attempt_key, a->attempt_len);
    b->last_u[a->attempt_len] = '\0';
    b->last_seq = a->entry_seq;
    b->entries++;
    b->events += events;
    if (b->events >= FOLD_BATCH_EVENTS || tally_merge_records(b->m) >= FOLD_BATCH_RECORDS)
        f->b_open = false;
}

/* The oldest N entries are folded (or all but LEFT of them, if fewer). */
void fold_forget(struct tally_folder *f, size_t n)
{
    struct fold_batch *b;

    while (f->len > 0 && n-- > 0) {
        f->backlog -= f->ring[f->head];
        f->head = (f->head + 1) % f->cap;
        f->len--;
        atomic_fetch_add_explicit(&f->folded, 1, memory_order_release);
    }
    /* Batches whose entries went in part (folded by another collector) are folded from the
     * journal now. */
    while ((b = fold_oldest(f)) != NULL && b->first_entry < atomic_load(&f->folded))
        fold_drop_oldest(f);
    tally_gauge_set(&f->metrics->journal_backlog, (int64_t)f->backlog);
}

void fold_arm(struct tally_folder *f, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    if (!evtimer_pending(f->timer_ev, NULL))
        evtimer_add(f->timer_ev, &tv);
}

/* Do readers wait for entries not folded yet? */
bool fold_wanted(struct tally_folder *f)
{
    return atomic_load_explicit(&f->folded, memory_order_acquire) <
           atomic_load_explicit(&f->want_upto, memory_order_acquire);
}

/* Is REPLY the one word WORD ({"stale"}, {"staged"})? */
bool fold_said(const redisReply *reply, const char *word)
{
    return reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
           (reply->element[0]->type == REDIS_REPLY_STRING ||
            reply->element[0]->type == REDIS_REPLY_STATUS) &&
           strcmp(reply->element[0]->str, word) == 0;
}

size_t fold_left(struct tally_folder *f, long long left, long long n)
{
    size_t gone;

    /* What the fold left is the newest LEFT entries of those appended before it ran -- every
     * ack whose reply came before this one. Others may have folded some of ours meanwhile (a
     * DELETE folds every journal): what is not left is folded either way. */
    if (left < 0 || (size_t)left >= f->len)
        return 0;
    gone = f->len - (size_t)left;
    /* More went than this fold took: another collector folded some of ours (a DELETE, a
     * reclaim) and bumped only its own process's cache epochs. */
    if (gone > (size_t)n)
        for (unsigned b = 0; b < TALLY_BUCKETS; b++)
            tally_epochs_bump(f->epochs, b);
    fold_forget(f, gone);
    return gone;
}

static void on_fold_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;
    bool wanted = atomic_exchange(&f->wanted, false), again = f->again;
    bool merged = f->merged_in_flight, staged = f->staged_in_flight;
    long long n, left, chunks;
    size_t gone = 0;

    f->in_flight = false;
    f->again = false;
    f->merged_in_flight = false;
    f->staged_in_flight = false;
    if (status == 0 && !staged && fold_said(reply, "staged")) {
        /* Chunks wait in the staging list (a merged fold whose reply was lost staged them):
         * nothing was counted; they are counted first, then this fold is sent again. */
        f->staging = true;
        fold_ended(f, false);
        fold_start(f);
        return;
    }
    if (status == 0 && merged && fold_said(reply, "stale")) {
        /* Its entries are not all the oldest of the journal (an entry the collector does
         * not know of, a fold resent after its reply was lost, another's fold): count none
         * of them from the merge, fold what is left of them from the journal. */
        log_debug("a merged fold found the journal changed: folding it from the journal");
        tally_metric_add(&f->metrics->fold_stale, 1);
        fold_drop_oldest(f);
        fold_ended(f, false);
        fold_start(f);
        return;
    }
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements != 7 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER ||
        reply->element[6]->type != REDIS_REPLY_INTEGER) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused a fold of the journal: %s", reply->str);
        tally_metric_add(&f->metrics->fold_errors, 1);
        /* A batch whose folds keep failing (a refusal that is not Redis being away) is not
         * tried for ever: its entries are folded from the journal. */
        if (merged && ++f->merged_errors >= FOLD_MERGED_TRIES) {
            f->merged_errors = 0;
            fold_drop_oldest(f);
        }
        /* A merged fold lost on the way may have staged chunks: whatever is sent next
         * answers "staged" if it did. */
        fold_ended(f, true);
        if (wanted)
            atomic_store(&f->wanted, true);
        fold_arm(f, FOLD_RETRY_MS);
        return;
    }
    f->merged_errors = 0;
    n = reply->element[0]->integer;
    left = reply->element[1]->integer;
    chunks = reply->element[6]->integer;
    fold_bump(f, reply->element[2]);
    fold_skipped(f, reply->element[3], reply->element[4]);
    fold_learn(f, reply->element[5]);
    tally_metric_add(&f->metrics->folds, 1);
    if (staged)
        tally_metric_add(&f->metrics->fold_chunks, (uint64_t)n);
    else
        tally_metric_add(&f->metrics->fold_entries, (uint64_t)n);
    if (merged) {
        tally_metric_add(&f->metrics->fold_merged, 1);
        fold_drop_oldest(f);
    }
    if (chunks > 0) {
        /* Chunks wait: the next call counts one. The entries they came from are not folded
         * until the last is counted (a read waits for them; a stop drains them). */
        f->staging = true;
        fold_ended(f, false);
        fold_start(f);
        return;
    }
    f->staging = false;
    gone = fold_left(f, left, n);
    fold_ended(f, false);
    if (f->len == 0)
        return;
    /* A fold from the journal that found nothing to take (its entries are not there yet:
     * an ack whose reply is still to come) is tried again shortly, not at once. */
    if (!merged && !staged && gone == 0)
        fold_arm(f, FOLD_RETRY_MS);
    else if (again || wanted || fold_due(f) || fold_wanted(f))
        fold_start(f);
    else
        fold_arm(f, f->cfg->fold_interval_ms);
}

/* Append the number SEQ of a batch's entry, "" when not known. */
void fold_put_seq(struct tally_buf *b, uint64_t seq)
{
    if (seq > 0)
        tally_buf_add_bulk_i64(b, (int64_t)seq);
    else
        tally_buf_add_bulk(b, "", 0);
}

/* A step: the most merged records one of F's fold calls counts (a larger merged batch is
 * staged whole in chunks of a step, a fold from the journal counts a step and stages the rest,
 * and each chunk is counted by a call of its own). A call holds Redis while it counts, and
 * writes queue behind it: short steps while F keeps up (32 records against 128 measured a
 * write p99 at 64 connections about half as long, 4.6-5.6 ms against 9-16 for single views,
 * at the same Redis CPU per event, see docs/performance.md); long ones while its backlog is
 * past a quarter of --journal-max, where fewer calls let its folds catch up (20-event batches
 * at 256 connections acknowledged 10-40 % fewer events with short steps: their
 * folds fell behind and --journal-max refused writes). */
static size_t fold_step(const struct tally_folder *f)
{
    return f->backlog >= f->cfg->journal_max / 4 ? FOLD_STEP_RECORDS : FOLD_SHORT_STEP_RECORDS;
}

/* The oldest batch's fold: KEYS journal registry staged, ARGV P model n first last first_unit
 * last_unit first_number last_number hour fresh nchunks chunk... record... (at most a step,
 * fold_step(), counted at once; a larger batch staged whole, in chunks of a step). The script
 * reads the first and the last entry only, whatever N (see merged.lua). */
static size_t fold_put_merged(struct tally_folder *f, struct fold_batch *b)
{
    size_t nargs = 15;

    if (fold_batch_newest(f, b))
        f->b_open = false; /* what comes next goes to a batch of its own */
    tally_buf_add_bulk_i64(&f->body, (int64_t)b->entries);
    tally_buf_add_bulk(&f->body, b->first, strlen(b->first));
    tally_buf_add_bulk(&f->body, b->last, strlen(b->last));
    tally_buf_add_bulk(&f->body, b->first_u, strlen(b->first_u));
    tally_buf_add_bulk(&f->body, b->last_u, strlen(b->last_u));
    fold_put_seq(&f->body, b->first_seq);
    fold_put_seq(&f->body, b->last_seq);
    fold_put_fresh(f, tally_merge_touched(b->m));
    return nargs + tally_merge_put_steps(b->m, &f->body, fold_step(f));
}

/* Every bucket: a fold from the journal, or of a staged chunk, does not know which it touches. */
static const uint64_t fold_every[TALLY_BUCKETS / 64] = {UINT64_MAX, UINT64_MAX, UINT64_MAX,
                                                        UINT64_MAX};

/* A fold from the journal of the oldest entries before the oldest batch, about FOLD_EVENTS
 * events' worth: KEYS journal registry staged, ARGV P model count hour fresh step [before]
 * (fresh of every bucket: the folder does not know what the entries hold). */
static size_t fold_put_journal(struct tally_folder *f)
{
    const struct fold_batch *b = fold_oldest(f);
    uint64_t head = atomic_load(&f->folded);
    size_t limit = b != NULL && b->first_entry > head ? (size_t)(b->first_entry - head) : f->len;
    size_t count = 0, events = 0;

    while (count < limit && (count == 0 || events + f->ring[(f->head + count) % f->cap] <=
                                                      FOLD_EVENTS))
        events += f->ring[(f->head + count++) % f->cap];
    tally_buf_add_bulk_i64(&f->body, (int64_t)count);
    fold_put_fresh(f, fold_every);
    tally_buf_add_bulk_i64(&f->body, (int64_t)fold_step(f));
    if (b == NULL)
        return 10;
    tally_buf_add_bulk(&f->body, b->first, strlen(b->first));
    return 11;
}

/* Send the next fold: a staged chunk's while chunks wait, else the oldest batch's when its
 * entries are the oldest not folded, else one from the journal of those before it. */
static void fold_start(struct tally_folder *f)
{
    struct tally_store *st = tally_redis_for_slot(f->router, 0);
    bool merged, staged = f->staging;
    enum tally_script script;
    size_t nargs;

    if (f->cluster != NULL) {
        fold_cluster_start(f);
        return;
    }
    if (f->in_flight) {
        f->again = true;
        return;
    }
    atomic_store(&f->wanted, false);
    if (f->len == 0 && !staged)
        return;
    if (st == NULL || !tally_store_ready(st)) {
        fold_ended(f, true);
        fold_arm(f, FOLD_RETRY_MS);
        return;
    }
    merged = !staged && fold_head_merged(f);
    tally_buf_reset(&f->body);
    tally_buf_add_bulk(&f->body, "3", 1);
    tally_buf_add_bulk(&f->body, f->journal, strlen(f->journal));
    tally_buf_add_bulk(&f->body, f->registry, strlen(f->registry));
    tally_buf_add_bulk(&f->body, f->staged, strlen(f->staged));
    tally_buf_add_bulk(&f->body, f->cfg->prefix, strlen(f->cfg->prefix));
    tally_buf_add_bulk(&f->body, f->model, strlen(f->model));
    if (staged) {
        script = TALLY_SCRIPT_STAGED;
        fold_put_fresh(f, fold_every);
        nargs = 8;
    } else if (merged) {
        script = TALLY_SCRIPT_MERGED;
        nargs = fold_put_merged(f, fold_oldest(f));
    } else {
        script = TALLY_SCRIPT_FOLD;
        nargs = fold_put_journal(f);
    }
    if (f->body.oom ||
        tally_store_eval(st, script, f->body.data, f->body.len, nargs, on_fold_reply, f) < 0) {
        fold_ended(f, true);
        fold_arm(f, FOLD_RETRY_MS);
        return;
    }
    f->in_flight = true;
    f->merged_in_flight = merged;
    f->staged_in_flight = staged;
}

static void on_fold_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fold_start(arg);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;

    (void)what;
    while (read(fd, &v, sizeof(v)) > 0)
        ;
    fold_start(arg);
}

static void on_reclaim_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;

    f->reclaiming = false;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements != 6 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[4]->type != REDIS_REPLY_INTEGER ||
        reply->element[5]->type != REDIS_REPLY_INTEGER) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused to fold the journals of writers gone: %s", reply->str);
        return;
    }
    if (reply->element[0]->integer > 0) {
        log_info("folded %lld journal entries of writers gone", reply->element[0]->integer);
        tally_metric_add(&f->metrics->reclaimed, (uint64_t)reply->element[0]->integer);
    }
    if (reply->element[4]->integer > 0) {
        log_info("counted a chunk of merged records a writer gone had staged");
        tally_metric_add(&f->metrics->reclaimed_chunks, (uint64_t)reply->element[4]->integer);
    }
    if (reply->element[0]->integer > 0 || reply->element[4]->integer > 0)
        fold_bump(f, reply->element[1]);
    fold_skipped(f, reply->element[2], reply->element[3]);
    /* A look folds one journal (at most FOLD_RECLAIM_ENTRIES entries, FOLD_STEP_RECORDS
     * records counted, the rest staged) or counts one staged chunk: one that found work looks
     * again now, not in a second (a long journal would otherwise take a second per call). */
    if (reply->element[0]->integer > 0 || reply->element[4]->integer > 0 ||
        reply->element[5]->integer > 0)
        on_reclaim_timer(-1, 0, f);
}

static void on_reclaim_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tally_folder *f = arg;
    struct tally_store *st = tally_redis_for_slot(f->router, 0);
    struct tally_buf *b = &f->reclaim;

    (void)fd;
    (void)what;
    if (f->cluster != NULL) {
        fold_cluster_reclaim(f);
        return;
    }
    if (f->reclaiming || st == NULL || !tally_store_ready(st))
        return;
    /* The store borrows the call's body until the reply (tally_store_eval()): it stays in the
     * folder, not on this stack, until on_reclaim_reply(). */
    tally_buf_reset(b);
    tally_buf_add_bulk(b, "1", 1);
    tally_buf_add_bulk(b, f->registry, strlen(f->registry));
    tally_buf_add_bulk(b, f->cfg->prefix, strlen(f->cfg->prefix));
    tally_buf_add_bulk(b, f->model, strlen(f->model));
    tally_buf_add_bulk_i64(b, FOLD_RECLAIM_ENTRIES);
    tally_buf_add_bulk_i64(b, TALLY_FOLD_STALE_MS);
    tally_buf_add_bulk_i64(b, FOLD_STEP_RECORDS);
    if (!b->oom && tally_store_eval(st, TALLY_SCRIPT_RECLAIM, b->data, b->len, 7,
                                    on_reclaim_reply, f) == 0)
        f->reclaiming = true;
}

struct tally_folder *tally_folder_new(struct event_base *base, struct tally_redis *router,
                                      const struct tally_config *cfg,
                                      struct tally_metrics *metrics,
                                      struct tally_epochs *epochs, struct tally_known *known,
                                      const char *writer)
{
    struct tally_folder *f = calloc(1, sizeof(*f));
    struct timeval every = {FOLD_RECLAIM_MS / 1000, (FOLD_RECLAIM_MS % 1000) * 1000};

    if (f == NULL)
        return NULL;
    f->base = base;
    f->router = router;
    f->cfg = cfg;
    f->metrics = metrics;
    f->epochs = epochs;
    f->known = known;
    f->wake_fd = -1;
    tally_buf_init(&f->body);
    tally_buf_init(&f->reclaim);
    tally_model_arg(f->model);
    /* On a cluster the journal's name waits for its tag, chosen once the slot map is known
     * (src/fold_cluster.c). */
    if (tally_redis_is_cluster(router) && fold_cluster_init(f, writer) < 0)
        goto fail;
    if ((f->cluster == NULL && tally_key_make(f->journal, sizeof(f->journal), cfg->prefix, 0,
                                              'q', writer, strlen(writer)) == 0) ||
        tally_key_make(f->staged, sizeof(f->staged), cfg->prefix, 0, 'c', writer,
                       strlen(writer)) == 0 ||
        tally_key_make(f->registry, sizeof(f->registry), cfg->prefix, 0, 'r', "journals", 8) ==
            0)
        goto fail;
    f->cap = 1024;
    f->ring = malloc(f->cap * sizeof(*f->ring));
    f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->ring == NULL || f->wake_fd < 0)
        goto fail;
    f->wake_ev = event_new(base, f->wake_fd, EV_READ | EV_PERSIST, on_wake, f);
    f->timer_ev = evtimer_new(base, on_fold_timer, f);
    f->reclaim_ev = event_new(base, -1, EV_PERSIST, on_reclaim_timer, f);
    if (f->wake_ev == NULL || f->timer_ev == NULL || f->reclaim_ev == NULL ||
        event_add(f->wake_ev, NULL) < 0 || event_add(f->reclaim_ev, &every) < 0)
        goto fail;
    return f;
fail:
    tally_folder_free(f);
    return NULL;
}

void tally_folder_free(struct tally_folder *f)
{
    if (f == NULL)
        return;
    if (f->wake_ev != NULL)
        event_free(f->wake_ev);
    if (f->timer_ev != NULL)
        event_free(f->timer_ev);
    if (f->reclaim_ev != NULL)
        event_free(f->reclaim_ev);
    if (f->wake_fd >= 0)
        close(f->wake_fd);
    fold_cluster_free(f);
    tally_buf_release(&f->body);
    tally_buf_release(&f->reclaim);
    for (size_t i = 0; i < f->b_len; i++)
        tally_merge_free(f->batch[(f->b_head + i) % FOLD_BATCHES].m);
    for (size_t i = 0; i < f->n_spare; i++)
        tally_merge_free(f->spare[i]);
    free(f->ring);
    free(f);
}

const char *tally_folder_journal(const struct tally_folder *f)
{
    return f->journal;
}

const char *tally_folder_registry(const struct tally_folder *f)
{
    return f->registry;
}

/* The slot of the article ID (LEN bytes) in the folders' tables of latest entries. */
static size_t fold_slot(const char *id, size_t len)
{
    return (size_t)tally_siphash((const uint8_t *)"tally read waits", id, len) & (FOLD_TOUCH - 1);
}

/* Note that the entry of index INDEX holds the records A built. */
static void fold_touch(struct tally_folder *f, uint64_t index, const struct tally_agg *a)
{
    for (size_t i = 0, n = tally_agg_records(a); i < n; i++) {
        size_t len;
        const char *id = tally_agg_record_id(a, i, &len);

        atomic_store_explicit(&f->touched[fold_slot(id, len)], index + 1, memory_order_release);
    }
}

void tally_folder_appended(struct tally_folder *f, size_t events, struct tally_agg *a,
                           const redisReply *reply)
{
    uint64_t index = atomic_load(&f->appended);

    if (f->len == f->cap) {
        uint32_t *ring = malloc(2 * f->cap * sizeof(*ring));

        if (ring == NULL) {
            /* Nothing is lost (the entry is in the journal): it is only not waited for. */
            log_error("out of memory noting a journal entry");
            f->b_open = false;
            return;
        }
        for (size_t i = 0; i < f->len; i++)
            ring[i] = f->ring[(f->head + i) % f->cap];
        free(f->ring);
        f->ring = ring;
        f->head = 0;
        f->cap *= 2;
    }
    f->ring[(f->head + f->len++) % f->cap] = events > UINT32_MAX ? UINT32_MAX : (uint32_t)events;
    f->backlog += events;
    tally_gauge_set(&f->metrics->journal_backlog, (int64_t)f->backlog);
    if (a != NULL) {
        fold_touch(f, index, a);
        fold_merge(f, index, a, reply, events);
    } else {
        atomic_store_explicit(&f->blind, index + 1, memory_order_release);
        f->b_open = false; /* an entry that may or may not be: entries after it go apart */
    }
    atomic_fetch_add_explicit(&f->appended, 1, memory_order_release);
    /* With a fold in flight its reply looks again. */
    if (fold_due(f) && !f->in_flight)
        fold_start(f);
    else
        fold_arm(f, f->cfg->fold_interval_ms);
}

bool tally_folder_full(struct tally_folder *f, size_t events)
{
    if (f->backlog + events <= f->cfg->journal_max)
        return false;
    /* Refused: room is made now, not at the next --fold-interval (up to 10 s away), so that
     * a client waiting the refusal's Retry-After gets in. */
    fold_start(f);
    return true;
}

size_t tally_folder_backlog(const struct tally_folder *f)
{
    return f->backlog;
}

bool tally_folder_can_fold(const struct tally_folder *f)
{
    struct tally_store *st = f->cluster != NULL ? fold_cluster_store(f)
                                                : tally_redis_for_slot(f->router, 0);

    return f->in_flight || (st != NULL && tally_store_ready(st));
}

uint64_t tally_folder_appended_count(const struct tally_folder *f)
{
    return atomic_load_explicit(&f->appended, memory_order_acquire);
}

uint64_t tally_folder_folded_count(const struct tally_folder *f)
{
    return atomic_load_explicit(&f->folded, memory_order_acquire);
}

/* Fold F until the entries before UPTO are folded, starting now. */
static void fold_soon_upto(struct tally_folder *f, uint64_t upto)
{
    uint64_t one = 1;
    uint64_t was = atomic_load_explicit(&f->want_upto, memory_order_acquire);

    /* Folds go on until what was appended by now is folded, however many it takes. */
    while (was < upto && !atomic_compare_exchange_weak(&f->want_upto, &was, upto))
        ;
    if (atomic_exchange(&f->wanted, true))
        return; /* asked already, not started yet */
    if (write(f->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("cannot wake a folder: %s", strerror(errno));
}

void tally_folder_soon(struct tally_folder *f)
{
    fold_soon_upto(f, tally_folder_appended_count(f));
}

/* Folder I of a mark M: what a read waits to see folded is F's entries before NEED. Asks F to
 * fold up to it unless it has. Returns whether it has. */
static bool fold_mark_one(struct tally_folder *f, size_t i, uint64_t need,
                          struct tally_fold_mark *m)
{
    m->tries[i] = atomic_load_explicit(&f->tries, memory_order_acquire);
    m->appended[i] = need;
    if (tally_folder_folded_count(f) >= need)
        return true;
    fold_soon_upto(f, need);
    return false;
}

bool tally_fold_mark(struct tally_folder *const *f, size_t n, struct tally_fold_mark *m)
{
    bool passed = true;

    for (size_t i = 0; i < n && i < TALLY_THREADS_MAX; i++) {
        m->appended[i] = 0;
        m->tries[i] = 0;
        if (f[i] != NULL && !fold_mark_one(f[i], i, tally_folder_appended_count(f[i]), m))
            passed = false;
    }
    return passed;
}

bool tally_fold_mark_articles(struct tally_folder *const *f, size_t n, const char *const *ids,
                              const uint16_t *lens, size_t k, struct tally_fold_mark *m)
{
    size_t slot[TALLY_FOLD_ARTICLES_MAX];
    bool passed = true;

    if (k > TALLY_FOLD_ARTICLES_MAX)
        return tally_fold_mark(f, n, m);
    for (size_t j = 0; j < k; j++)
        slot[j] = fold_slot(ids[j], lens[j]);
    for (size_t i = 0; i < n && i < TALLY_THREADS_MAX; i++) {
        uint64_t need;

        m->appended[i] = 0;
        m->tries[i] = 0;
        if (f[i] == NULL)
            continue;
        need = atomic_load_explicit(&f[i]->blind, memory_order_acquire);
        for (size_t j = 0; j < k; j++) {
            uint64_t t = atomic_load_explicit(&f[i]->touched[slot[j]], memory_order_acquire);

            if (t > need)
                need = t;
        }
        if (!fold_mark_one(f[i], i, need, m))
            passed = false;
    }
    return passed;
}

bool tally_fold_passed(struct tally_folder *const *f, size_t n, const struct tally_fold_mark *m)
{
    for (size_t i = 0; i < n && i < TALLY_THREADS_MAX; i++) {
        uint64_t folded, blind;

        if (f[i] == NULL)
            continue;
        folded = tally_folder_folded_count(f[i]);
        blind = atomic_load_explicit(&f[i]->blind, memory_order_acquire);
        /* An entry whose outcome was not learnt may be in no journal: until the folds have
         * passed it, the folder may count entries before it folded one too early (it tells
         * what a fold took from what the fold left). So a read waits for it too, whenever it
         * came. */
        if (folded >= m->appended[i] && folded >= blind)
            continue;
        if (folded < blind)
            fold_soon_upto(f[i], blind);
        /* A fold that ended after the mark failed: Redis is down or refuses, no use waiting. */
        if (atomic_load_explicit(&f[i]->tries, memory_order_acquire) > m->tries[i] &&
            atomic_load(&f[i]->blocked))
            continue;
        return false;
    }
    return true;
}
