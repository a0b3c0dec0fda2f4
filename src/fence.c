/* fence.c -- deadlines of writes related to Redis's clock, and the answer each fate earns. */
#include <stdlib.h>

#include "tally/error.h"
#include "tally/fence.h"

static bool clock_digits(const redisReply *r, long long *out)
{
    char *end;

    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 18)
        return false;
    *out = strtoll(r->str, &end, 10);
    return end == r->str + r->len && *out >= 0;
}

int tally_clock_take(struct tally_clock *c, const redisReply *r, uint64_t sent, uint64_t recv)
{
    long long s, us;
    uint64_t rtt = recv - sent;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        !clock_digits(r->element[0], &s) || !clock_digits(r->element[1], &us) || us >= 1000000 ||
        recv < sent)
        return TALLY_EREDIS;
    if (c->known && recv - c->recv_ms < TALLY_CLOCK_KEEP_MS &&
        rtt > 4 * (c->recv_ms - c->sent_ms) + TALLY_FENCE_MARGIN_MS)
        return 0;
    c->known = true;
    c->redis_ms = (int64_t)s * 1000 + (int64_t)us / 1000;
    c->sent_ms = sent;
    c->recv_ms = recv;
    return 0;
}

int64_t tally_clock_floor(const struct tally_clock *c, uint64_t t)
{
    int64_t age = t >= c->recv_ms ? (int64_t)(t - c->recv_ms) : -(int64_t)(c->recv_ms - t);
    int64_t drift = age > 0 ? age * TALLY_CLOCK_DRIFT_PPM / 1000000 + 1 : 1;

    return c->redis_ms + age - drift;
}

int64_t tally_fence_at(const struct tally_clock *c, uint64_t answer_by)
{
    return tally_clock_floor(c, answer_by - TALLY_FENCE_MARGIN_MS);
}

bool tally_fence_open(uint64_t now, uint64_t answer_by)
{
    return now + TALLY_FENCE_MARGIN_MS < answer_by;
}

uint64_t tally_fence_journal_by(uint64_t beat_sent, uint32_t stale_ms)
{
    return beat_sent + stale_ms - TALLY_FENCE_GONE_MARGIN_MS;
}

int64_t tally_fence_journal_at(const struct tally_clock *c, uint64_t answer_by,
                               uint64_t journal_by)
{
    if (journal_by <= TALLY_FENCE_MARGIN_MS)
        return 0; /* none: refused whenever it arrives */
    return tally_fence_at(c, answer_by < journal_by ? answer_by : journal_by);
}

int tally_unit_status(enum tally_unit_fate fate)
{
    switch (fate) {
    case TALLY_UNIT_APPLIED:
        return 0;
    case TALLY_UNIT_UNSENT:
        return TALLY_EUNAVAIL;
    case TALLY_UNIT_REFUSED:
        return TALLY_EREDIS;
    case TALLY_UNIT_FENCED:
        return TALLY_ETIMEDOUT;
    case TALLY_UNIT_NO_REPLY:
    case TALLY_UNIT_BROKEN:
        break;
    }
    return TALLY_EUNKNOWN;
}

int tally_write_status(unsigned applied, unsigned failed, unsigned unknown, int failure)
{
    if (unknown > 0 || (applied > 0 && failed > 0))
        return TALLY_EUNKNOWN;
    return failed > 0 ? failure : 0;
}
