/* writer.h -- group commit: held requests become write units, one in flight per lane.
 *
 * While a lane's unit is in flight, everything that arrives for it waits; when it returns,
 * everything waiting goes out as the next unit at once. At low load a request costs one round
 * trip; under load units grow by themselves. Every request is answered by its answer-by time
 * (arrival + --hold + --redis-timeout), whatever Redis does: written when Redis confirmed its
 * events; not written when they surely were not and will not be (never sent, refused, or
 * refused by the unit's fence -- see tally/fence.h); else the outcome is unknown, and the
 * fence makes sure the unit does not run after that answer.
 *
 * With one Redis there is one lane, and a request is one part of one unit: all or nothing.
 * With a journal (tally/fold.h) there are two: the journal's, and the lane of the writes
 * counted at once -- those of an article read lately on this collector (tally/lately.h), which
 * a read would otherwise soon wait for. Both run the same checks on the same markers
 * (src/scripts/unit.lua), so a request sent again after a lost reply, by either lane, is
 * counted once. With a Redis Cluster there is a lane per key bucket (each a slot, on
 * whichever master owns it); a request touching several buckets is split into parts, each
 * applied atomically and at most once by its own unit -- unless the journal takes it whole
 * (tally/fold.h): then it is one part of a unit of the journal's lane, in the journal's slot.
 * A write of an article read lately is not the journal's there either.
 *
 * A journaled request with views and a repeat-view window on a cluster goes in two steps, as
 * a view's markers lie in its article's bucket and the journal in another slot:
 *   1. mark: split by bucket into the marks' lanes (one per bucket), each part checked by
 *      src/scripts/mark.lua -- fence, each view against the window, remembered with the
 *      unit's stamp (its time and attempt id: a copy sent again finds its own) when it is no
 *      repeat -- and nothing counted. Each part's answer flags the views it found repeats.
 *   2. append: once every mark ran, the whole request is one part of the journal's lane, its
 *      repeats flagged SEEN (each brings its visitor alone to the estimate, as on one
 *      Redis); a request of repeats alone appends nothing and is answered at once.
 * Whatever fails surely -- a mark refused or unanswered, the append refused, fenced or not
 * sent in time, the journal not open when the marks end -- counted nothing: the request is
 * answered not written (503) and every mark that ran, or may have, is forgotten
 * (src/scripts/unmark.lua deletes a marker only while it holds that mark's stamp), so that
 * the request sent again is no repeat of itself. An append answered by no reply answers the
 * request unknown (504) and its marks stay. A collector that dies between the steps leaves
 * marks of views it never acknowledged.
 *
 * Idempotency-Key (see idem.h). With one Redis, the unit's script reads the key's home marker,
 * compares the body's digest, and applies and settles it in the same atomic step. On a
 * cluster the home marker and the parts' buckets lie in different slots, so a keyed write
 * goes in three steps:
 *   1. claim: "SET home <digest> NX GET" in the home slot. No marker: claimed. Another
 *      body's digest: 422, nothing written. This body settled: answered as then, nothing
 *      written. This body still pending (an earlier try died or is under way): go on.
 *   2. parts: each bucket's part is a segment keyed by its part marker
 *      "P{bb}j:<space>:<digest>:<key>", which the script writes with the part's counts in
 *      one atomic step and answers from when it exists: each part applies at most once per
 *      (key, body), however often the request is tried.
 *   3. settle: once every part is applied, the home marker becomes "<digest> <answer>"
 *      (KEEPTTL); it is sent without waiting for its reply.
 * A crash or a lost reply anywhere leaves the home marker pending at worst: a retry of the
 * same body passes the claim, its written parts answer from their markers and only the rest
 * apply, so nothing counts twice; a 200 is sent only after every part was confirmed, so
 * nothing acknowledged is lost; a lost settle costs only that step again. The claim is checked
 * before anything is written, so another body under the key counts nothing. (A failover that
 * loses an acknowledged claim -- Redis replicates asynchronously -- can let another body in,
 * as it can lose counts.)
 *
 * With the answer-by time and the fence (tally/fence.h), on one Redis as on a cluster:
 *   - A fenced unit never ran: the script checks the fence before any segment, and its
 *     "fenced" mark is on the unit's own marker, never on a key's home or part marker. The
 *     request is answered 503; on a cluster its claim stays pending, which the same body's
 *     retry passes, and its parts apply then -- a pending claim never answers 200 by itself:
 *     only a settled marker is replayed, and only after every part was confirmed.
 *   - A unit answered 504 may have run (before its fence, never after). Every segment it ran
 *     left its marker with its counts in the same atomic step, so a retry of the same body
 *     answers those parts from their markers and applies only the rest: counted at most once.
 *     No settle follows a 504 (nor a 503): the home marker stays pending until a retry in
 *     which every part is confirmed.
 *   - A claim is a command like any other, bounded by --redis-timeout; a claim that fails or
 *     goes unanswered wrote at most a pending marker and nothing counted: 503. Parts queued
 *     after a slow claim keep the request's answer-by time, so they too are answered by it. */
#ifndef TALLY_WRITER_H
#define TALLY_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "tally/agg.h"
#include "tally/config.h"
#include "tally/keys.h"

struct tally_writer;
struct tally_salts;
struct tally_redis;
struct tally_metrics;
struct tally_epochs;
struct tally_lately;
struct tally_write;
struct write_lane;

/* Runs exactly once per accepted write, by its ANSWER_BY. STATUS 0: written, W->req holds
 * the answer. TALLY_EUNAVAIL / TALLY_EREDIS / TALLY_ETIMEDOUT: not written (not sent in
 * time, Redis refused it, or its fence did) and never will be; a script refused at its first
 * write -- OOM, MISCONF, NOREPLICAS -- ran nothing and is TALLY_EUNAVAIL. TALLY_EREUSED: the
 * Idempotency-Key names another body; nothing written. TALLY_EUNKNOWN: sent, and no answer
 * came in time, or (cluster) some parts were written and others not: it may be written, and
 * it will not be after this call. */
typedef void tally_write_done_cb(int status, struct tally_write *w, void *arg);

/* The part of a write that goes to one lane. Private to the writer. */
struct tally_write_part {
    struct tally_agg_req req;
    struct tally_write *w;
    struct write_lane *lane;
    uint64_t *visitor;            /* room for req.n ids, when the write has a digest */
    /* A mark (a journaled write's first step with a repeat-view window, on a cluster): */
    uint8_t *repeated;            /* per event: found a repeat by its mark */
    int64_t now;                  /* its unit's time and number (its attempt id's), whose */
    uint64_t seq;                 /* stamp the mark wrote (src/scripts/unit.lua) */
    uint32_t taken;               /* events gone over while reading its answer */
    uint8_t marked;               /* 1: its mark ran (its repeats known); 2: it may have */
    char idem_key[TALLY_KEY_MAX]; /* its Idempotency-Key marker, in its own bucket */
    TAILQ_ENTRY(tally_write_part) link;
};

/* One request's write, embedded in the caller's request context. */
struct tally_write {
    struct tally_agg_req req;     /* the events; the answer is filled in when done */
    tally_write_done_cb *done;
    void *arg;
    const char *idem;             /* the request's Idempotency-Key, or NULL */
    char space;                   /* its key space: TALLY_IDEM_ANON or TALLY_IDEM_TOKEN */
    bool has_digest;              /* views carry visitor ids, from DIGEST at write time */
    uint64_t digest;              /* the client's unsalted digest: memory only */
    uint64_t *visitor;            /* room for req.n visitor ids, when HAS_DIGEST */
    uint64_t hold_until;          /* ms: while Redis is not ready, it waits until then */
    uint64_t answer_by;           /* ms: it is answered by then, whatever Redis does */
    /* Private to the writer. */
    struct tally_write_part single; /* the one part, unless split */
    struct tally_write_part *parts; /* split: N_PARTS of them, owned */
    size_t n_parts, parts_left;
    unsigned applied, failed, unknown;
    int failure;
    char body_digest[17];         /* with IDEM: the body's digest */
    bool claimed;                 /* cluster: the key was claimed in its home slot */
    unsigned claim_tries;         /* cluster: redirected claims */
    char home[TALLY_KEY_MAX];     /* with IDEM: the home marker's key */
    size_t home_len;
    /* Cluster, journaled with a repeat-view window: marked by bucket, then appended. */
    uint8_t phase;                /* 0, or WRITE_MARK, then WRITE_APPEND (writer.c) */
    struct tally_write_part *marks; /* while appending: the marks, owned */
    size_t n_marks;
    uint8_t *seen;                /* per event: a view its mark found a repeat */
    uint32_t n_seen, repeats;
};

/* A writer for ROUTER's Redis on BASE, taking visitor salts from SALTS, bumping EPOCHS for
 * the buckets of every unit applied (before any of its requests is answered), counting the
 * writes of articles LATELY says were read lately at once (with a journal). Everything is
 * borrowed for its life. */
struct tally_writer *tally_writer_new(struct event_base *base, struct tally_redis *router,
                                      struct tally_salts *salts, const struct tally_config *cfg,
                                      struct tally_metrics *metrics, struct tally_epochs *epochs,
                                      const struct tally_lately *lately);

/* Answers every held write (not written: TALLY_EUNAVAIL; in flight: TALLY_EUNKNOWN), then
 * frees. Free the router first: its last replies still reach the writer. */
void tally_writer_free(struct tally_writer *w);

/* Hold WR (filled by the caller: req.ev, req.n, req.bot, req.prefetch, done, arg, idem,
 * space, digest) until it is written. Returns 0 and later calls WR->done, or returns TALLY_EFULL
 * (too much held), TALLY_EUNAVAIL (Redis down and no hold configured) or TALLY_ENOMEM
 * without calling it. */
int tally_writer_submit(struct tally_writer *w, struct tally_write *wr);

/* Redis (or a visitor salt) became ready: send what waits. */
void tally_writer_kick(struct tally_writer *w);

/* Events held now (waiting or in flight). */
size_t tally_writer_held(const struct tally_writer *w);

/* The writer's journal and its folds (tally/fold.h), or NULL: units are counted at once
 * (--fold-interval 0). On a cluster only the units the journal takes go to it (see fold.h);
 * the others are counted at once, per bucket. */
struct tally_folder *tally_writer_folder(struct tally_writer *w);

#endif
