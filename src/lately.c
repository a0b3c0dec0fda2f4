/* lately.c -- the articles read lately: a table of stamps, lock-free (see tally/lately.h). */
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/hash.h"
#include "tally/lately.h"

/* Stamps count 16 ms ticks of the monotonic clock in 32 bits: they wrap every 2.2 years, and
 * a slot last read a multiple of that ago looks read lately again -- once, and only to count
 * a write at once. */
#define LATELY_TICK_SHIFT 4

int tally_lately_init(struct tally_lately *l)
{
    memset(l, 0, sizeof(*l));
    arc4random_buf(l->key, sizeof(l->key));
    l->slots = calloc(TALLY_LATELY_SLOTS, sizeof(*l->slots));
    return l->slots != NULL ? 0 : TALLY_ENOMEM;
}

void tally_lately_release(struct tally_lately *l)
{
    free(l->slots);
    l->slots = NULL;
}

static _Atomic uint32_t *lately_slot(const struct tally_lately *l, const char *id, size_t len)
{
    return &l->slots[tally_siphash(l->key, id, len) & (TALLY_LATELY_SLOTS - 1)];
}

/* NOW_MS as a stamp: never 0, which is "never read". */
static uint32_t lately_tick(uint64_t now_ms)
{
    uint32_t t = (uint32_t)(now_ms >> LATELY_TICK_SHIFT);

    return t != 0 ? t : 1;
}

void tally_lately_read(struct tally_lately *l, const char *id, size_t len, uint64_t now_ms)
{
    _Atomic uint32_t *s;
    uint32_t t = lately_tick(now_ms);

    if (l->slots == NULL)
        return;
    s = lately_slot(l, id, len);
    /* A read of a busy article stamps what is stamped already: look before writing, so that
     * the readers of one article on several threads do not fight over its cache line. */
    if (atomic_load_explicit(s, memory_order_relaxed) != t)
        atomic_store_explicit(s, t, memory_order_relaxed);
}

bool tally_lately_was_read(const struct tally_lately *l, const char *id, size_t len,
                           uint64_t now_ms, uint32_t within_ms)
{
    uint32_t at;

    if (l->slots == NULL || within_ms == 0)
        return false;
    at = atomic_load_explicit(lately_slot(l, id, len), memory_order_relaxed);
    /* Ticks cut the window to whole ticks: a read counts for WITHIN_MS at least and one tick
     * more at most. */
    return at != 0 && (uint32_t)(lately_tick(now_ms) - at) <= (within_ms >> LATELY_TICK_SHIFT) + 1;
}
