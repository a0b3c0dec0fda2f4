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
 * With a Redis Cluster there is a lane per key bucket (each a slot, on whichever master owns
 * it); a request touching several buckets is split into parts, each applied atomically and at
 * most once by its own unit. */
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
struct tally_write;
struct write_lane;

/* Runs exactly once per accepted write, by its ANSWER_BY. STATUS 0: written, W->req holds
 * the answer. TALLY_EUNAVAIL / TALLY_EREDIS / TALLY_ETIMEDOUT: not written (not sent in
 * time, Redis refused it, or its fence did) and never will be. TALLY_EUNKNOWN: sent, and no
 * answer came in time, or (cluster) some parts were written and others not: it may be
 * written, and it will not be after this call. */
typedef void tally_write_done_cb(int status, struct tally_write *w, void *arg);

/* The part of a write that goes to one lane. Private to the writer. */
struct tally_write_part {
    struct tally_agg_req req;
    struct tally_write *w;
    struct write_lane *lane;
    uint64_t *visitor;            /* room for req.n ids, when the write has a digest */
    char idem_key[TALLY_KEY_MAX]; /* its Idempotency-Key marker, in its own bucket */
    TAILQ_ENTRY(tally_write_part) link;
};

/* One request's write, embedded in the caller's request context. */
struct tally_write {
    struct tally_agg_req req;     /* the events; the answer is filled in when done */
    tally_write_done_cb *done;
    void *arg;
    const char *idem;             /* the request's Idempotency-Key, or NULL */
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
};

/* A writer for ROUTER's Redis on BASE, taking visitor salts from SALTS, bumping EPOCHS for
 * the buckets of every unit applied (before any of its requests is answered). Everything is
 * borrowed for its life. */
struct tally_writer *tally_writer_new(struct event_base *base, struct tally_redis *router,
                                      struct tally_salts *salts, const struct tally_config *cfg,
                                      struct tally_metrics *metrics, struct tally_epochs *epochs);

/* Answers every held write (not written: TALLY_EUNAVAIL; in flight: TALLY_EUNKNOWN), then
 * frees. Free the router first: its last replies still reach the writer. */
void tally_writer_free(struct tally_writer *w);

/* Hold WR (filled by the caller: req.ev, req.n, req.bot, req.prefetch, done, arg, idem,
 * digest) until it is written. Returns 0 and later calls WR->done, or returns TALLY_EFULL
 * (too much held), TALLY_EUNAVAIL (Redis down and no hold configured) or TALLY_ENOMEM
 * without calling it. */
int tally_writer_submit(struct tally_writer *w, struct tally_write *wr);

/* Redis (or a visitor salt) became ready: send what waits. */
void tally_writer_kick(struct tally_writer *w);

/* Events held now (waiting or in flight). */
size_t tally_writer_held(const struct tally_writer *w);

#endif
