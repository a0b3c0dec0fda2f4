/* fence.h -- bounded answers for writes: when a request must be answered, when a unit may
 * still be sent, and the fence that keeps a unit from running after its answer.
 *
 * Every write is answered by its ANSWER-BY time (arrival + --hold + --redis-timeout). A unit
 * carries a fence: a time on Redis's own clock (Unix ms, as TIME tells) past which the apply
 * script refuses it, and marks it refused so that no copy of it runs later. The fence falls
 * TALLY_FENCE_MARGIN_MS before the first answer-by of the unit's requests, so that a unit
 * still queued behind a stall when its answers fall due either ran before they went out or
 * never runs.
 *
 * The collector relates its monotonic clock to Redis's with TIME samples: Redis read its
 * clock somewhere between the sending of TIME and the arrival of its answer, so at any later
 * instant T Redis's clock reads at least R + (T - arrival), less an allowance for the drift
 * of the two clocks. Fences are computed from that floor: the script refuses a unit no later
 * than the collector believes. (A step of Redis's clock backwards -- someone setting the
 * date -- is the one thing this cannot see until the next sample.) Pure: no I/O. */
#ifndef TALLY_FENCE_H
#define TALLY_FENCE_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define TALLY_FENCE_MARGIN_MS 20   /* fence before the answer: time for a refusal to return */
#define TALLY_CLOCK_DRIFT_PPM 1000 /* allowance for the drift of the clocks, per sample age */
#define TALLY_CLOCK_SAMPLE_MS 1000 /* how often a ready connection asks TIME */
#define TALLY_CLOCK_KEEP_MS 5000   /* a sample is kept over a much slower one this long */
#define TALLY_FENCE_GONE_MARGIN_MS 1000 /* a cluster journal's deadline before others may take
                                        * it for gone: a fast clock, small steps of it */

/* One TIME sample of one Redis. */
struct tally_clock {
    bool known;
    int64_t redis_ms; /* Redis's clock, Unix ms */
    uint64_t sent_ms; /* monotonic ms: TIME went out */
    uint64_t recv_ms; /* monotonic ms: its answer came back */
};

/* Take the TIME reply R (sent at SENT, answered at RECV, monotonic ms) into *C. A sample
 * whose round trip is far longer than that of the sample held (an answer held back by a
 * stall tells little) is dropped while the held one is younger than TALLY_CLOCK_KEEP_MS.
 * Returns 0 (taken or dropped) or TALLY_EREDIS when R is not a TIME reply. */
int tally_clock_take(struct tally_clock *c, const redisReply *r, uint64_t sent, uint64_t recv);

/* The least Redis's clock can read at monotonic instant T; C must be known. */
int64_t tally_clock_floor(const struct tally_clock *c, uint64_t t);

/* The fence of a unit whose first answer falls due at monotonic ANSWER_BY, on the Redis that
 * C samples: Redis's clock has passed it when the collector's reaches ANSWER_BY - margin. */
int64_t tally_fence_at(const struct tally_clock *c, uint64_t answer_by);

/* May a unit whose first answer falls due at ANSWER_BY still be sent at NOW? Not when its
 * fence has passed already: the script would surely refuse it. */
bool tally_fence_open(uint64_t now, uint64_t answer_by);

/* On a Redis Cluster, the monotonic time by which a unit must reach its worker's journal, whose
 * last confirmed heartbeat was sent at monotonic BEAT_SENT, when other collectors take a
 * journal whose heartbeat score is STALE_MS old on Redis's clock for gone (src/fold_cluster.c:
 * they fold it until it is empty, drop it and unregister it; an entry appended after that lies
 * in a journal nobody folds). TALLY_FENCE_GONE_MARGIN_MS before the earliest instant they can:
 * the score is the registry master's clock when the heartbeat ran, after it was sent, so they
 * cannot find it stale before BEAT_SENT + STALE_MS, less what that clock runs ahead meanwhile.
 * The deadline is on the collector's monotonic clock, not on the score's: the registry and the
 * journal live on different masters, whose clocks need not agree. */
uint64_t tally_fence_journal_by(uint64_t beat_sent, uint32_t stale_ms);

/* The fence of a unit for a cluster journal: the earlier of its answer's (tally_fence_at())
 * and the journal's, JOURNAL_BY (tally_fence_journal_by()), on the journal's Redis that C
 * samples (0, long past, when JOURNAL_BY is 0: no journal takes it). Past it the script refuses
 * the unit ("fenced"), so no entry lands in a journal that others may have dropped already. */
int64_t tally_fence_journal_at(const struct tally_clock *c, uint64_t answer_by,
                               uint64_t journal_by);

/* What became of a unit, as far as the collector knows. */
enum tally_unit_fate {
    TALLY_UNIT_APPLIED,  /* its reply came: applied, now or by an earlier copy */
    TALLY_UNIT_UNSENT,   /* no copy of it ever left the collector */
    TALLY_UNIT_REFUSED,  /* Redis refused it before running it (an error reply) */
    TALLY_UNIT_FENCED,   /* the script refused it past its fence: it never runs */
    TALLY_UNIT_NO_REPLY, /* a copy was sent and no reply came (yet) */
    TALLY_UNIT_BROKEN,   /* the script failed part-way: what it wrote before stays */
};

/* The status a unit's requests are answered with: 0 (200), TALLY_EUNAVAIL / TALLY_EREDIS /
 * TALLY_ETIMEDOUT (503: surely not counted) or TALLY_EUNKNOWN (504: may be counted). */
int tally_unit_status(enum tally_unit_fate fate);

/* The status of a request written in parts (one per bucket in a Redis Cluster), from how
 * many APPLIED, FAILED (FAILURE: the first failure's status) and ended UNKNOWN: written only
 * when all were, not written only when none was, else unknown. */
int tally_write_status(unsigned applied, unsigned failed, unsigned unknown, int failure);

#endif
