/* cache.c -- a worker's direct-mapped cache of article totals, with single flight and
 * per-bucket write epochs. */
#include <stdlib.h>
#include <string.h>

#include "tally/cache.h"
#include "tally/error.h"
#include "tally/hash.h"
#include "tally/store.h"

struct cache_waiter {
    tally_cache_wake_fn *wake;
    void *arg;
    size_t i;
    struct cache_waiter *next;
};

struct cache_entry {
    uint16_t len;             /* 0: empty */
    uint8_t bucket;
    bool loading, valid;
    uint32_t epoch;           /* of its bucket when the load was sent */
    uint64_t at;              /* ms, when the load was sent */
    struct tally_stats stats;
    struct cache_waiter *waiters;
    char id[TALLY_ARTICLE_MAX];
};

static const uint8_t cache_key[16] = {'t', 'a', 'l', 'l', 'y', ' ', 'c', 'a',
                                      'c', 'h', 'e', ' ', 's', 'l', 'o', 't'};

int tally_cache_init(struct tally_cache *c, struct tally_epochs *epochs)
{
    memset(c, 0, sizeof(*c));
    c->epochs = epochs;
    c->slots = calloc(TALLY_CACHE_SLOTS, sizeof(*c->slots));
    return c->slots != NULL ? 0 : TALLY_ENOMEM;
}

static void cache_wake(struct cache_entry *e, const struct tally_stats *s, int status)
{
    struct cache_waiter *w = e->waiters, *next;

    e->waiters = NULL;
    for (; w != NULL; w = next) {
        next = w->next;
        w->wake(w->arg, w->i, s, status);
        free(w);
    }
}

void tally_cache_release(struct tally_cache *c)
{
    for (size_t i = 0; c->slots != NULL && i < TALLY_CACHE_SLOTS; i++)
        cache_wake(&c->slots[i], NULL, TALLY_EUNAVAIL);
    free(c->slots);
    c->slots = NULL;
}

static uint32_t cache_epoch(const struct tally_cache *c, unsigned bucket)
{
    return atomic_load_explicit(&c->epochs->bucket[bucket], memory_order_acquire);
}

static bool cache_fresh(const struct tally_cache *c, const struct cache_entry *e)
{
    return e->valid && e->epoch == cache_epoch(c, e->bucket) &&
           tally_now_ms() - e->at < TALLY_CACHE_TTL_MS;
}

enum tally_cache_result tally_cache_lookup(struct tally_cache *c, const char *id, size_t len,
                                           struct tally_stats *out, tally_cache_wake_fn *wake,
                                           void *arg, size_t i, struct cache_entry **entry)
{
    struct cache_entry *e = &c->slots[tally_siphash(cache_key, id, len) % TALLY_CACHE_SLOTS];
    bool same = e->len == len && memcmp(e->id, id, len) == 0;
    struct cache_waiter *w;

    if (same && cache_fresh(c, e)) {
        c->hits++;
        *out = e->stats;
        return TALLY_CACHE_HIT;
    }
    if (same && e->loading && e->epoch == cache_epoch(c, e->bucket) &&
        (w = malloc(sizeof(*w))) != NULL) {
        c->joins++;
        *w = (struct cache_waiter){.wake = wake, .arg = arg, .i = i, .next = e->waiters};
        e->waiters = w;
        return TALLY_CACHE_JOINED;
    }
    c->misses++;
    if (e->loading)
        return TALLY_CACHE_BYPASS;
    /* Take the slot; the epoch is read before the load is sent, so a write confirmed while
     * it is in flight makes the result stale at once. */
    e->len = (uint16_t)len;
    memcpy(e->id, id, len);
    e->bucket = (uint8_t)tally_key_bucket(id, len);
    e->epoch = cache_epoch(c, e->bucket);
    e->at = tally_now_ms();
    e->loading = true;
    e->valid = false;
    *entry = e;
    return TALLY_CACHE_LOAD;
}

void tally_cache_fill(struct tally_cache *c, struct cache_entry *e, const struct tally_stats *s,
                      int status)
{
    (void)c;
    e->loading = false;
    e->valid = status == 0;
    if (status == 0)
        e->stats = *s;
    cache_wake(e, status == 0 ? &e->stats : NULL, status);
}
