/* known.c -- which bucket keys of this day and hour have their expiry (see tally/known.h). */
#include <stdbool.h>
#include <string.h>

#include "tally/error.h"
#include "tally/known.h"
#include "tally/model.h"
#include "tally/uri.h"

void tally_known_update(struct tally_known *k, int64_t now, uint64_t now_ms, uint32_t forgets)
{
    char stamp[11];
    bool late = now_ms - k->since >= TALLY_KNOWN_MS || forgets != k->forgets;

    tally_key_hour(now, stamp);
    if (strcmp(stamp, k->stamp) == 0 && !late)
        return;
    if (strncmp(stamp, k->stamp, 8) != 0 || late)
        memset(k->day, 0, sizeof(k->day));
    memset(k->hour, 0, sizeof(k->hour));
    memcpy(k->stamp, stamp, sizeof(stamp));
    k->since = now_ms;
    k->forgets = forgets;
}

/* One entry: "<tag><kind><mask>", MASK the metrics whose key may be new. */
static size_t known_entry(char *out, unsigned b, char kind, unsigned mask)
{
    tally_key_tag(b, out);
    out[2] = kind;
    tally_key_tag(mask, out + 3); /* two hex digits, like a tag */
    return 5;
}

size_t tally_known_fresh(const uint8_t *day, const uint8_t *hour,
                         const uint64_t touched[TALLY_BUCKETS / 64], char *out)
{
    size_t n = 0;

    for (unsigned b = 0; b < TALLY_BUCKETS; b++) {
        unsigned d, h;

        if ((touched[b / 64] & (UINT64_C(1) << (b % 64))) == 0)
            continue;
        d = TALLY_EXPIRY_DAY_ALL & ~(day != NULL ? day[b] : 0u);
        h = TALLY_EXPIRY_HOUR_ALL & ~(hour != NULL ? hour[b] : 0u);
        if (d != 0)
            n += known_entry(out + n, b, 'd', d);
        if (h != 0)
            n += known_entry(out + n, b, 'h', h);
    }
    return n;
}

int tally_known_read(const char *s, size_t len, uint8_t day[TALLY_BUCKETS],
                     uint8_t hour[TALLY_BUCKETS])
{
    memset(day, 0, TALLY_BUCKETS);
    memset(hour, 0, TALLY_BUCKETS);
    if (len % 5 != 0)
        return TALLY_EREDIS;
    for (size_t i = 0; i < len; i += 5) {
        const char *e = s + i;
        int t1 = tally_hex_digit(e[0]), t0 = tally_hex_digit(e[1]);
        int m1 = tally_hex_digit(e[3]), m0 = tally_hex_digit(e[4]);
        unsigned mask;

        if (t1 < 0 || t0 < 0 || m1 < 0 || m0 < 0)
            return TALLY_EREDIS;
        mask = (unsigned)(m1 << 4 | m0);
        if (e[2] == 'd' && (mask & ~TALLY_EXPIRY_DAY_ALL) == 0)
            day[t1 << 4 | t0] |= (uint8_t)mask;
        else if (e[2] == 'h' && (mask & ~TALLY_EXPIRY_HOUR_ALL) == 0)
            hour[t1 << 4 | t0] |= (uint8_t)mask;
        else
            return TALLY_EREDIS;
    }
    return 0;
}

void tally_known_learn(struct tally_known *k, const char *stamp, uint32_t forgets,
                       uint32_t forgets_now, const uint8_t day[TALLY_BUCKETS],
                       const uint8_t hour[TALLY_BUCKETS])
{
    if (strcmp(stamp, k->stamp) != 0 || forgets != k->forgets || forgets != forgets_now)
        return;
    for (size_t b = 0; b < TALLY_BUCKETS; b++) {
        k->day[b] |= day[b];
        k->hour[b] |= hour[b];
    }
}
