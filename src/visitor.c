/* visitor.c -- salted visitor ids, UTC days, and the client address behind trusted proxies. */
#include <arpa/inet.h>
#include <string.h>

#include "tally/error.h"
#include "tally/hash.h"
#include "tally/keys.h"
#include "tally/uri.h"
#include "tally/visitor.h"

/* Public and fixed: the digest must be the same on every collector, and it is never stored;
 * what keeps ids private is the daily salt. */
static const uint8_t visitor_digest_key[16] = {'t', 'a', 'l', 'l', 'y', ' ', 'v', 'i',
                                               's', 'i', 't', 'o', 'r', ' ', 'v', '1'};

uint64_t tally_visitor_digest(const uint8_t addr[16], const char *ua, size_t len)
{
    uint8_t buf[16 + 1024];

    if (len > sizeof(buf) - 16)
        len = sizeof(buf) - 16;
    memcpy(buf, addr, 16);
    if (len > 0)
        memcpy(buf + 16, ua, len);
    return tally_siphash(visitor_digest_key, buf, 16 + len);
}

uint64_t tally_visitor_id(const uint8_t salt[TALLY_SALT_LEN], uint64_t digest,
                          const char *article, size_t len)
{
    uint8_t buf[8 + 256];

    if (len > sizeof(buf) - 8)
        len = sizeof(buf) - 8;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(digest >> (8 * i));
    memcpy(buf + 8, article, len);
    return tally_siphash(salt, buf, 8 + len);
}

void tally_visitor_day(time_t t, char out[9])
{
    char hour[11];

    tally_key_hour((int64_t)t, hour);
    memcpy(out, hour, 8);
    out[8] = '\0';
}

int tally_salt_decode(const char *hex, size_t len, uint8_t out[TALLY_SALT_LEN])
{
    if (len != 2 * TALLY_SALT_LEN)
        return TALLY_EINVAL;
    for (size_t i = 0; i < TALLY_SALT_LEN; i++) {
        int hi = tally_hex_digit(hex[2 * i]), lo = tally_hex_digit(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return TALLY_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void tally_salt_encode(const uint8_t salt[TALLY_SALT_LEN], char out[2 * TALLY_SALT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < TALLY_SALT_LEN; i++) {
        out[2 * i] = hex[salt[i] >> 4];
        out[2 * i + 1] = hex[salt[i] & 15];
    }
    out[2 * TALLY_SALT_LEN] = '\0';
}

/* ---- Addresses ---- */

static void visitor_map4(const struct in_addr *a, uint8_t out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &a->s_addr, 4);
}

static size_t visitor_trim(const char **s, size_t len)
{
    while (len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        len--;
    }
    while (len > 0 && ((*s)[len - 1] == ' ' || (*s)[len - 1] == '\t'))
        len--;
    return len;
}

int tally_addr_parse(const char *s, size_t len, uint8_t out[16])
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *colon;
    struct in_addr a4;

    len = visitor_trim(&s, len);
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        /* "[v6]" or "[v6]:port": the port is dropped. */
        if (close == NULL || (close + 1 < s + len && close[1] != ':'))
            return TALLY_EINVAL;
        len = (size_t)(close - s - 1);
        s++;
    } else if ((colon = memchr(s, ':', len)) != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL) {
        len = (size_t)(colon - s); /* "v4:port" */
    }
    if (len == 0 || len >= sizeof(buf))
        return TALLY_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        visitor_map4(&a4, out);
        return 0;
    }
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : TALLY_EINVAL;
}

void tally_client_addr(const struct tally_config *cfg, const uint8_t peer[16], const char *xff,
                       size_t len, uint8_t out[16])
{
    uint8_t hop[16];
    size_t end = len;

    memcpy(out, peer, 16);
    if (xff == NULL || !tally_config_trusted(cfg, peer))
        return;
    while (end > 0) {
        size_t start = end;

        while (start > 0 && xff[start - 1] != ',')
            start--;
        if (tally_addr_parse(xff + start, end - start, hop) < 0)
            return;
        memcpy(out, hop, 16);
        if (!tally_config_trusted(cfg, hop))
            return;
        end = start > 0 ? start - 1 : 0;
    }
}
