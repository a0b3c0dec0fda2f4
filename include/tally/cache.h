/* cache.h -- a worker's small cache of article totals, with single flight.
 *
 * A hot article's stats are read from Redis once per short period, and many concurrent reads
 * of it wait for one round trip. Every write bumps a per-bucket epoch shared by all workers;
 * an entry filled under an older epoch of its bucket is stale, so a reader never sees less
 * than what a 200 already confirmed in this process. Other collectors' writes show within
 * TALLY_CACHE_TTL_MS. Not thread-safe except for the epochs: one cache per worker. */
#ifndef TALLY_CACHE_H
#define TALLY_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/keys.h"
#include "tally/query.h"

#define TALLY_CACHE_SLOTS 1024
#define TALLY_CACHE_TTL_MS 500

/* Write epochs, one per bucket, shared by every worker of the process. */
struct tally_epochs {
    _Atomic uint32_t bucket[TALLY_BUCKETS];
    _Atomic uint32_t forgets; /* articles forgotten: the writers' expiry memory is stale */
};

/* An article was forgotten: bucket keys it emptied are gone, and a write that recreates
 * them must set their expiry again. Thread-safe. */
static inline void tally_epochs_forgot(struct tally_epochs *e)
{
    atomic_fetch_add_explicit(&e->forgets, 1, memory_order_release);
}

static inline uint32_t tally_epochs_forgets(struct tally_epochs *e)
{
    return atomic_load_explicit(&e->forgets, memory_order_acquire);
}

/* Something has changed in BUCKET: cached totals of its articles are stale. Thread-safe. */
static inline void tally_epochs_bump(struct tally_epochs *e, unsigned bucket)
{
    atomic_fetch_add_explicit(&e->bucket[bucket], 1, memory_order_release);
}

struct cache_entry;
struct tally_cache {
    struct cache_entry *slots;
    struct tally_epochs *epochs;
    uint64_t hits, misses, joins; /* for tests */
};

/* A reader waiting for another reader's load of an article: called once with its totals (or a
 * negative TALLY_E* code). */
typedef void tally_cache_wake_fn(void *arg, size_t i, const struct tally_stats *s, int status);

enum tally_cache_result {
    TALLY_CACHE_HIT,    /* *OUT holds fresh totals */
    TALLY_CACHE_JOINED, /* another read is loading it: WAKE will run once */
    TALLY_CACHE_LOAD,   /* read it, then tally_cache_fill(*ENTRY): waiters may join meanwhile */
    TALLY_CACHE_BYPASS, /* read it without the cache (its slot is busy loading another) */
};

/* Look up article ID (LEN bytes). */
enum tally_cache_result tally_cache_lookup(struct tally_cache *c, const char *id, size_t len,
                                           struct tally_stats *out, tally_cache_wake_fn *wake,
                                           void *arg, size_t i, struct cache_entry **entry);

/* The load of ENTRY finished with STATUS and, when 0, totals S: store them and wake its
 * waiters. */
void tally_cache_fill(struct tally_cache *c, struct cache_entry *entry,
                      const struct tally_stats *s, int status);

/* A cache using the shared EPOCHS (borrowed). Returns 0 or TALLY_ENOMEM. */
int tally_cache_init(struct tally_cache *c, struct tally_epochs *epochs);

/* Wake every waiter with an error (their loads will not finish), then free. */
void tally_cache_release(struct tally_cache *c);

#endif
