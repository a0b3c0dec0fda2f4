/* keys.c -- builds every Redis key tally writes (see keys.h for the schema). */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tally/hash.h"
#include "tally/keys.h"

/* Fixed, public and shared by every collector: buckets only spread load, they are not a
 * secret. An attacker who aims ids at one bucket only slows their own articles' slot. */
static const uint8_t keys_bucket_key[16] = {'t', 'a', 'l', 'l', 'y', ' ', 'b', 'u',
                                            'c', 'k', 'e', 't', 's', ' ', 'v', '1'};

unsigned tally_key_bucket(const char *id, size_t len)
{
    return (unsigned)(tally_siphash(keys_bucket_key, id, len) % TALLY_BUCKETS);
}

void tally_key_tag(unsigned bucket, char out[2])
{
    static const char hex[] = "0123456789abcdef";

    out[0] = hex[bucket >> 4 & 15];
    out[1] = hex[bucket & 15];
}

size_t tally_key_base(char *out, size_t cap, const char *prefix, unsigned bucket, char kind)
{
    size_t n = strlen(prefix);

    if (n + 6 >= cap)
        return 0;
    memcpy(out, prefix, n);
    out[n] = '{';
    tally_key_tag(bucket, out + n + 1);
    out[n + 3] = '}';
    out[n + 4] = kind;
    out[n + 5] = ':';
    out[n + 6] = '\0';
    return n + 6;
}

size_t tally_key_make(char *out, size_t cap, const char *prefix, unsigned bucket, char kind,
                      const char *tail, size_t len)
{
    size_t n = tally_key_base(out, cap, prefix, bucket, kind);

    if (n == 0 || n + len >= cap)
        return 0;
    memcpy(out + n, tail, len);
    out[n + len] = '\0';
    return n + len;
}

size_t tally_key_article(char *out, size_t cap, const char *prefix, char kind, const char *id,
                         size_t len)
{
    return tally_key_make(out, cap, prefix, tally_key_bucket(id, len), kind, id, len);
}

void tally_key_hour(int64_t t, char out[11])
{
    time_t tt = (time_t)t;
    struct tm tm;

    gmtime_r(&tt, &tm);
    strftime(out, 11, "%Y%m%d%H", &tm);
}

/* CRC16-XMODEM (poly 0x1021, init 0), bit by bit: slots are computed rarely enough. */
static uint16_t keys_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

unsigned tally_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;

        close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return keys_crc16(open + 1, (size_t)(close - open - 1)) & 16383u;
    }
    return keys_crc16(key, len) & 16383u;
}

unsigned tally_key_bucket_slot(unsigned bucket)
{
    char tag[4] = {'{', 0, 0, '}'};

    tally_key_tag(bucket, tag + 1);
    return tally_key_slot(tag, sizeof(tag));
}
