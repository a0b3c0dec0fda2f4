/* ratelimit.c -- lock-free GCRA rate limiting over a fixed table of 64-bit slots. */
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/hash.h"
#include "tally/ratelimit.h"

/* A slot: the top 16 bits fingerprint its client, the low 48 bits hold the client's
 * theoretical arrival time in microseconds of the monotonic clock (8.9 years of uptime). */
#define RL_FP_SHIFT 48
#define RL_TAT_MASK ((UINT64_C(1) << RL_FP_SHIFT) - 1)

int tally_ratelimit_init(struct tally_ratelimit *rl, uint32_t rate)
{
    memset(rl, 0, sizeof(*rl));
    rl->rate = rate;
    if (rate == 0)
        return 0;
    rl->emission_ns = UINT64_C(1000000000) / rate;
    rl->burst_ns = rl->emission_ns * 4 * (uint64_t)rate;
    arc4random_buf(rl->key, sizeof(rl->key));
    rl->slots = calloc(TALLY_RATELIMIT_SLOTS, sizeof(*rl->slots));
    return rl->slots != NULL ? 0 : TALLY_ENOMEM;
}

void tally_ratelimit_release(struct tally_ratelimit *rl)
{
    free(rl->slots);
    rl->slots = NULL;
}

/* The client of an address: IPv4 whole, IPv6 by its /64. */
static uint64_t rl_client(const struct tally_ratelimit *rl, const uint8_t addr[16])
{
    static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t key[16];

    memcpy(key, addr, 16);
    if (memcmp(addr, v4, 12) != 0)
        memset(key + 8, 0, 8);
    return tally_siphash(rl->key, key, sizeof(key));
}

uint32_t tally_ratelimit_burst(const struct tally_ratelimit *rl)
{
    return 4 * rl->rate;
}

/* Whole seconds of NS, rounded up. */
static uint32_t rl_seconds(uint64_t ns)
{
    return (uint32_t)((ns + 999999999) / 1000000000);
}

bool tally_ratelimit_take(struct tally_ratelimit *rl, const uint8_t addr[16], uint32_t cost,
                          uint64_t now_us, uint32_t *retry_s)
{
    uint64_t h, fp, now = now_us * 1000, charge, old, tat, next;
    _Atomic uint64_t *slot;

    if (rl->rate == 0)
        return true;
    h = rl_client(rl, addr);
    fp = (h >> RL_FP_SHIFT) | 1; /* never 0: an empty slot belongs to no one */
    slot = &rl->slots[h & (TALLY_RATELIMIT_SLOTS - 1)];
    old = atomic_load_explicit(slot, memory_order_relaxed);
    if (cost > tally_ratelimit_burst(rl)) {
        tat = (old >> RL_FP_SHIFT) == fp ? (old & RL_TAT_MASK) * 1000 : 0;
        *retry_s = tat > now ? rl_seconds(tat - now) : 1;
        return false;
    }
    charge = rl->emission_ns * cost;
    do {
        tat = (old >> RL_FP_SHIFT) == fp ? (old & RL_TAT_MASK) * 1000 : 0;
        if (tat < now)
            tat = now;
        next = tat + charge;
        if (next - now > rl->burst_ns) {
            *retry_s = rl_seconds(next - now - rl->burst_ns);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(
        slot, &old, fp << RL_FP_SHIFT | (((next + 999) / 1000) & RL_TAT_MASK),
        memory_order_relaxed, memory_order_relaxed));
    return true;
}
