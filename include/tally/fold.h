/* fold.h -- a worker's journal and its folds: acknowledge by appending, count by folding.
 *
 * With one Redis and --fold-interval above 0 (the default; 0 counts every unit before its
 * answer), a write unit is acknowledged by one append to its
 * worker's journal, a stream P{00}q:<writer>, in the same atomic step as its checks and markers (src/scripts/ack.lua): the 200 goes out when Redis confirmed the entry,
 * which is the durable record of what was acknowledged. The folder then counts the journal.
 * It knows what it appended: as each ack's reply comes it adds the unit's records up per
 * article and hour (tally/merge.h), in batches of consecutive entries, and a batch's fold
 * (src/scripts/merged.lua) counts each merged record once and trims the batch's entries, in
 * one atomic step -- only when the journal starts with exactly those entries, which it tells
 * from the batch's first and last entries alone, whatever its size: each entry carries its
 * number in the journal (tally_agg.entry_seq, see src/scripts/ack.lua). Else (a fold
 * sent again after a lost reply, an entry whose ack reply was lost, entries another
 * collector folded) it counts nothing, and what is left of them is folded from the journal
 * (src/scripts/fold.lua: the oldest entries read, merged and counted the same way). Either
 * way nothing is counted twice or left out. No call holds Redis for more than a step's
 * records: a merged fold counts a batch of at most a step of them (fold_step():
 * FOLD_SHORT_STEP_RECORDS, or FOLD_STEP_RECORDS while the worker is behind); a larger one it
 * counts none of and, in the same atomic step as its trim, stages whole in the writer's
 * staging list P{00}c:<writer>, a chunk of a step per element (tally_merge_put_steps()); the
 * folder then counts them a chunk a call (src/scripts/staged.lua), before anything else, and
 * counts the batch's entries folded only when the last chunk is. One fold is in flight at a
 * time: every --fold-interval while anything waits, at once when a batch is full
 * (FOLD_BATCH_RECORDS merged records or FOLD_BATCH_EVENTS events), and at once when a reader
 * asks (tally_folder_soon()).
 *
 * Journals whose writer is gone (a collector killed or cut off from Redis) are folded by any
 * collector: every worker asks Redis once a second for the journals with no entry for
 * TALLY_FOLD_STALE_MS (src/scripts/reclaim.lua).
 *
 * Readers see what the collector acknowledged: each folder counts its entries appended and
 * folded (readable from any thread), and a read waits until every worker's folder has folded
 * what it had appended when the read arrived (tally_fold_mark(), tally_fold_passed()); a
 * folder asked so folds on, fold after fold, until it has. A read of some articles' counts
 * waits only for the entries up to the latest that holds one of them: each folder keeps, per
 * slot of a table of the articles' hashes, its latest entry with a record of an article of
 * that slot (tally_fold_mark_articles()), so a read of an article nothing was acknowledged
 * for since the last fold neither waits nor asks for a fold -- unless an entry's records are not
 * known (a unit answered 504): every read waits for the folds to pass it. A write of an article
 * read lately is not journaled at all but counted before its answer (tally/lately.h), so the
 * reads that follow writes -- the embed's -- seldom wait. Other collectors see it within
 * --fold-interval and a round trip.
 *
 * Backpressure: past --journal-max events appended and not folded, a worker refuses writes
 * (503, Retry-After) until its folds catch up; the journal stays bounded.
 *
 * On a Redis Cluster (src/fold_cluster.c) a script touches one slot, so the journal and its
 * folds go apart. Each worker's journal, P{jj}q:<writer>, lies in a bucket jj whose slot a
 * master owns (the masters taken in turn by the process's workers); the writer sends it the
 * units it may count later -- no Idempotency-Key, no comment; views checked against a
 * repeat-view window in their buckets first (tally/writer.h) -- through a lane of its own
 * (ack.lua, declaring only the journal's keys), and the others to their buckets' lanes as
 * before. It does so only while the folder's heartbeat (cheartbeat, at
 * start and every second) keeps the journal's score in the registry P{00}r:journals fresh
 * (tally_folder_registered()), and fences each unit sent there no later than others may take
 * the journal for gone (tally_folder_journal_by()). A fold is a plan and its parts: cplan, in the journal's slot,
 * fixes the oldest entries as the plan (stored in P{jj}p:<writer>) and answers their records
 * merged per article and hour, grouped by bucket; each bucket's part is counted by cpart in
 * the bucket's slot, all at once, behind the journal's cursor there (P{bb}f:<writer>, the last
 * id of the last plan counted into the bucket: a part sent again counts nothing); once every
 * part was answered, the next cplan names the plan done -- which trims its entries -- and
 * plans the next. A part that fails sends the job back to cplan without naming the plan done:
 * it answers the same stored plan. No batches and no staging: what reads wait for, the
 * backlog and the backpressure are as with one Redis, the entries folded told by cplan's
 * count of what is left. Journals whose writer is gone (heartbeat older than
 * TALLY_FOLD_STALE_MS: cstale, once a second) are folded by anyone until empty, then dropped
 * (cdrop) and taken out of the registry (cgone); a DELETE first folds every journal up to its
 * last entry (tally_folder_drain()); a stopping worker drops its emptied journal
 * (tally_folder_retired()). A journal is never deleted by its own writer while it lives: its
 * ids only grow, which the cursors rely on. */
#ifndef TALLY_FOLD_H
#define TALLY_FOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "tally/config.h"

#define TALLY_FOLD_STALE_MS 5000 /* a journal with no entry this long is anyone's to fold */
#define TALLY_FOLD_STEP_RECORDS 128 /* the most merged records one fold call counts (the rest
                                    * staged, src/scripts/merged.lua): a worker's folds while it
                                    * is behind (see FOLD_SHORT_STEP_RECORDS), a reclaim's and a
                                    * DELETE's steps */
#ifndef TALLY_FOLD_SHORT_STEP_RECORDS /* -DTALLY_FOLD_SHORT_STEP_RECORDS=N builds another */
#define TALLY_FOLD_SHORT_STEP_RECORDS 32 /* the most a worker's fold call counts while its backlog
                                         * is under a quarter of --journal-max: a write waits
                                         * for at most a short call ahead of it in Redis */
#endif

struct tally_folder;
struct tally_agg;
struct tally_redis;
struct tally_metrics;
struct tally_epochs;
struct tally_known;

/* A folder for the journal named after WRITER (unique per worker and process) on ROUTER's
 * Redis (one node), on BASE, bumping EPOCHS for the buckets each fold counts, sharing KNOWN
 * (the keys known to have their expiry, tally/known.h) with the writer of the same thread.
 * Everything is borrowed for its life. NULL when out of memory. */
struct tally_folder *tally_folder_new(struct event_base *base, struct tally_redis *router,
                                      const struct tally_config *cfg,
                                      struct tally_metrics *metrics,
                                      struct tally_epochs *epochs, struct tally_known *known,
                                      const char *writer);

/* On a Redis Cluster (src/fold_cluster.c): may the writer journal a unit now? True while the
 * folder's last heartbeat -- its journal's score in the registry -- was confirmed less than
 * TALLY_FOLD_REGISTERED_MS ago (TALLY_FOLD_STALE_MS apart from it: a journal holding entries
 * is never anyone else's to fold while its writer lives), and it is not stopping. Always true
 * with one Redis. */
#define TALLY_FOLD_REGISTERED_MS 2000
bool tally_folder_registered(const struct tally_folder *f);

/* On a Redis Cluster: the monotonic time (tally_now_ms()) by which a unit must reach the
 * journal, before other collectors may take it for gone (tally_fence_journal_by()): a unit
 * bound for it is fenced no later (tally_fence_journal_at()). 0 before the first heartbeat is
 * confirmed and once the worker stops; UINT64_MAX with one Redis. */
uint64_t tally_folder_journal_by(const struct tally_folder *f);

/* The bucket of the journal's tag {jj} (0 with one Redis); known once registered. */
unsigned tally_folder_bucket(const struct tally_folder *f);

/* On a cluster, the journal's trimmed-count key P{jj}n:<writer> (F's; "" with one Redis). */
const char *tally_folder_trimmed(const struct tally_folder *f);

/* Runs once per tally_folder_drain() that returned 0: STATUS 0 when every journal was folded
 * up to its entry that was last when the drain started, else a negative TALLY_E* code. STEPS:
 * the fold calls the drain made, failed or not (each plan and each bucket's part, cplan and
 * cpart; a call sent again after MOVED or ASK is the same call), as tally_forget_steps_total
 * counts them. */
typedef void tally_folder_drained_cb(int status, unsigned steps, void *arg);

/* On a cluster, before a DELETE forgets an article: fold every journal of the registry, of
 * every collector, up to the entry that was last in it now, so that nothing acknowledged
 * before the DELETE comes back after it. Returns 0 and later calls DONE, or a negative
 * TALLY_E* code (TALLY_EINVAL with one Redis, where drain.lua does it) without calling it. */
int tally_folder_drain(struct tally_folder *f, tally_folder_drained_cb *done, void *arg);

/* A stopping worker whose backlog is folded (or cannot be): on a cluster, the journal stops
 * taking units and its heartbeat stops; emptied, it is dropped (cdrop) and leaves the
 * registry. Call it until it returns true (at once with one Redis). */
bool tally_folder_retired(struct tally_folder *f);

/* Free F (its fold in flight, if any, still reaches it: free the router first). */
void tally_folder_free(struct tally_folder *f);

/* The keys of F's journal and of the journals' registry (NUL-terminated, F's). */
const char *tally_folder_journal(const struct tally_folder *f);
const char *tally_folder_registry(const struct tally_folder *f);

/* A unit of EVENTS events was appended to F's journal: A built it, and read its ack's REPLY
 * (tally_agg_apply_reply()); F merges its records (tally_agg_merge()) before its requests are
 * answered. A NULL: a unit that may have appended an entry no reply will tell of (counted as
 * one event: reads wait for its fold, which learns whether it was). */
void tally_folder_appended(struct tally_folder *f, size_t events, struct tally_agg *a,
                           const redisReply *reply);

/* Would EVENTS more events take F past --journal-max? If so, a fold of what waits starts
 * (F's thread only). */
bool tally_folder_full(struct tally_folder *f, size_t events);

/* Events appended and not folded. */
size_t tally_folder_backlog(const struct tally_folder *f);

/* Can F's folds reach Redis: a fold in flight, or its connection ready? (A worker that stops
 * waits for its backlog to be folded only while they can.) */
bool tally_folder_can_fold(const struct tally_folder *f);

/* From any thread: entries F appended so far, and the first of them not yet known folded. */
uint64_t tally_folder_appended_count(const struct tally_folder *f);
uint64_t tally_folder_folded_count(const struct tally_folder *f);

/* From any thread: fold F's journal now rather than at the next interval. */
void tally_folder_soon(struct tally_folder *f);

/* Call CB(ARG) in F's thread each time one of its folds ends (answered, failed or not sent),
 * once what it folded is known (tally_folder_folded_count()): reads waiting for it may go
 * on at once. Set before F's thread runs. */
void tally_folder_on_ended(struct tally_folder *f, void (*cb)(void *arg), void *arg);

/* What the folders of a process had appended at one moment. */
struct tally_fold_mark {
    uint64_t appended[TALLY_THREADS_MAX];
    uint64_t tries[TALLY_THREADS_MAX]; /* the folds each had ended */
};

/* Take the mark of the N folders F (entries NULL: no journal) into M, and ask each that has
 * not folded up to it to fold now. Returns true when every one already has. A folder whose
 * folds fail (Redis down or refusing) is waited for until one fold asked for after the mark
 * has failed too: the read then answers from what is counted, as it would without a journal,
 * and a read after Redis came back waits for the fold that then goes through. */
bool tally_fold_mark(struct tally_folder *const *f, size_t n, struct tally_fold_mark *m);

/* The same for a read of the K articles IDS (LENS bytes each) only: the mark of each folder
 * is its latest entry holding a record of one of them (or of an article that shares its slot
 * in the folder's table), or whose records are not known. Entries of other articles are not
 * waited for: a read of an article nothing was acknowledged for since the last fold goes
 * ahead at once. */
#define TALLY_FOLD_ARTICLES_MAX 100 /* a read of more is marked as a read of everything */
bool tally_fold_mark_articles(struct tally_folder *const *f, size_t n, const char *const *ids,
                              const uint16_t *lens, size_t k, struct tally_fold_mark *m);

/* Has every one of the N folders F folded up to mark M, and past every entry it appended
 * whose records are not known? (Asks for the folds that takes.) */
bool tally_fold_passed(struct tally_folder *const *f, size_t n, const struct tally_fold_mark *m);

#endif
