/* ratelimit.h -- per-client rate limit: events per second with a burst of 4x, shared by all
 * worker threads without locks, in fixed memory however many addresses appear.
 *
 * Each client (an IPv4 address, or an IPv6 /64: a host rotating through its own /64 stays one
 * client) maps to one slot of a table; a slot is one 64-bit word holding a fingerprint of its
 * client and the GCRA "theoretical arrival time", updated by compare-and-swap. A client that
 * lands on a slot held by another takes it over with a full bucket: collisions can only make
 * the limit more lenient, never block an innocent client. */
#ifndef TALLY_RATELIMIT_H
#define TALLY_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TALLY_RATELIMIT_SLOTS (1u << 16) /* 512 KiB */

struct tally_ratelimit {
    uint32_t rate;          /* events per second; 0: unlimited */
    uint64_t emission_ns;   /* the time one event takes at RATE */
    uint64_t burst_ns;      /* what 4 x RATE events take */
    uint8_t key[16];        /* random: which slot a client takes cannot be aimed at */
    _Atomic uint64_t *slots;
};

/* A limiter of RATE events per second per client, burst 4 x RATE. Returns 0 or TALLY_ENOMEM. */
int tally_ratelimit_init(struct tally_ratelimit *rl, uint32_t rate);
void tally_ratelimit_release(struct tally_ratelimit *rl);

/* Charge COST events to the client ADDR (16 bytes, IPv4-mapped) at NOW_US (microseconds on a
 * monotonic clock). Returns true when allowed (and charged); false when over the limit, with
 * *RETRY_S the whole seconds after which the same cost would pass. A cost above the burst
 * never passes and charges nothing: a batch must not get through for the price of the burst.
 * It gets false, with *RETRY_S the seconds until the client's bucket is full (at least 1).
 * Thread-safe. */
bool tally_ratelimit_take(struct tally_ratelimit *rl, const uint8_t addr[16], uint32_t cost,
                          uint64_t now_us, uint32_t *retry_s);

/* The burst: the most events one request may cost (4 x RATE); 0 when the limit is off. */
uint32_t tally_ratelimit_burst(const struct tally_ratelimit *rl);

#endif
