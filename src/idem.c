/* idem.c -- Idempotency-Key markers: body digests, marker keys, and judging a marker read
 * back. See include/tally/idem.h. */
#include <stdio.h>
#include <string.h>

#include "tally/agg.h"
#include "tally/error.h"
#include "tally/hash.h"
#include "tally/idem.h"
#include "tally/keys.h"

/* Fixed: a change would make every stored marker disagree with its body's retry. */
static const uint8_t idem_digest_key[16] = "tally body v1...";

void tally_idem_digest(const struct tally_event *ev, size_t n, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t rec[8 + 6 + TALLY_ARTICLE_MAX];
    uint64_t h = n;

    /* Chained: each event's fields and id are hashed with the digest so far, so both the
     * events and their order count. */
    for (size_t i = 0; i < n; i++) {
        size_t len = ev[i].article_len;

        memcpy(rec, &h, 8);
        rec[8] = ev[i].type;
        rec[9] = ev[i].network;
        rec[10] = (uint8_t)((uint16_t)ev[i].delta >> 8);
        rec[11] = (uint8_t)ev[i].delta;
        rec[12] = (uint8_t)(len >> 8);
        rec[13] = (uint8_t)len;
        memcpy(rec + 14, ev[i].article, len);
        h = tally_siphash(idem_digest_key, rec, 14 + len);
    }
    h = tally_siphash(idem_digest_key, &h, sizeof(h));
    for (int i = 15; i >= 0; i--, h >>= 4)
        out[i] = hex[h & 15];
    out[16] = '\0';
}

/* "<space>:<key>" into OUT (room for TALLY_IDEM_MAX + 3). */
static size_t idem_scoped(char *out, char space, const char *key, size_t len)
{
    if (len > TALLY_IDEM_MAX)
        return 0;
    out[0] = space;
    out[1] = ':';
    memcpy(out + 2, key, len);
    return len + 2;
}

unsigned tally_idem_bucket(char space, const char *key, size_t len)
{
    char scoped[TALLY_IDEM_MAX + 3];
    size_t n = idem_scoped(scoped, space, key, len);

    return tally_key_bucket(scoped, n);
}

size_t tally_idem_home_key(char *out, size_t cap, const char *prefix, char space, const char *key,
                           size_t len)
{
    char scoped[TALLY_IDEM_MAX + 3];
    size_t n = idem_scoped(scoped, space, key, len);

    if (n == 0)
        return 0;
    return tally_key_make(out, cap, prefix, tally_key_bucket(scoped, n), 'i', scoped, n);
}

size_t tally_idem_part_key(char *out, size_t cap, const char *prefix, unsigned bucket, char space,
                           const char *digest, const char *key, size_t len)
{
    char tail[TALLY_IDEM_DIGEST_LEN + TALLY_IDEM_MAX + 4];

    if (len > TALLY_IDEM_MAX || strlen(digest) != TALLY_IDEM_DIGEST_LEN)
        return 0;
    tail[0] = space;
    tail[1] = ':';
    memcpy(tail + 2, digest, TALLY_IDEM_DIGEST_LEN);
    tail[2 + TALLY_IDEM_DIGEST_LEN] = ':';
    memcpy(tail + 3 + TALLY_IDEM_DIGEST_LEN, key, len);
    return tally_key_make(out, cap, prefix, bucket, 'j', tail, len + 3 + TALLY_IDEM_DIGEST_LEN);
}

/* "a,b,c,d": four unsigned numbers, and nothing else. */
static bool idem_read_answer(const char *s, size_t len, struct tally_idem_answer *a)
{
    uint32_t *field[4] = {&a->accepted, &a->bot, &a->prefetch, &a->repeat};
    size_t i = 0;

    for (int f = 0; f < 4; f++) {
        uint64_t v = 0;
        size_t start = i;

        while (i < len && s[i] >= '0' && s[i] <= '9' && v <= UINT32_MAX)
            v = v * 10 + (uint64_t)(s[i++] - '0');
        if (i == start || v > UINT32_MAX || (f < 3 && (i == len || s[i++] != ',')))
            return false;
        *field[f] = (uint32_t)v;
    }
    return i == len;
}

int tally_idem_judge(const char *value, size_t len, const char *digest,
                     struct tally_idem_answer *answer)
{
    const size_t d = TALLY_IDEM_DIGEST_LEN;

    memset(answer, 0, sizeof(*answer));
    if (value == NULL)
        return TALLY_IDEM_PROCEED;
    /* A marker from before digests were kept: only the answer. */
    if (idem_read_answer(value, len, answer))
        return TALLY_IDEM_REPLAY;
    if (len < d || (len > d && value[d] != ' '))
        return TALLY_EINVAL;
    if (memcmp(value, digest, d) != 0)
        return TALLY_IDEM_REUSED;
    if (len == d)
        return TALLY_IDEM_PROCEED;
    return idem_read_answer(value + d + 1, len - d - 1, answer) ? TALLY_IDEM_REPLAY : TALLY_EINVAL;
}

size_t tally_idem_settled(char *out, size_t cap, const char *digest,
                          const struct tally_idem_answer *a)
{
    int n =
        snprintf(out, cap, "%s %u,%u,%u,%u", digest, a->accepted, a->bot, a->prefetch, a->repeat);

    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
