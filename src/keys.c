/* keys.c -- builds every Redis key tally writes (see keys.h for the schema). */
#include <stdint.h>
#include <string.h>

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

/* Write V as N decimal digits, zero-padded, at OUT. */
static void keys_digits(char *out, int n, int64_t v)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Arithmetic rather than gmtime_r(): every write unit files itself under an hour, and the C
 * library's time conversion takes a lock and looks at the time zone each time. The civil date
 * of a day number is H. Hinnant's civil_from_days, as src/scripts/dates.lua has it. */
void tally_key_hour(int64_t t, char out[11])
{
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t secs = t - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);

    keys_digits(out, 4, y);
    keys_digits(out + 4, 2, m);
    keys_digits(out + 6, 2, d);
    keys_digits(out + 8, 2, secs / 3600);
    out[10] = '\0';
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
