/* uri.c -- strict percent-decoding and a query-string walker, both with explicit lengths.
 *
 * Unlike evhttp_uridecode() and evhttp_parse_query_str(), nothing here stops at a NUL or passes
 * a malformed escape through: an id that decodes to "a\0b" must fail, not become "a". */
#include <limits.h>
#include <string.h>

#include "tally/uri.h"

int tally_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long tally_uri_decode(const char *in, size_t len, char *out, size_t cap, unsigned flags)
{
    size_t o = 0;

    if (len > LONG_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c == '%') {
            int hi = len - i > 2 ? tally_hex_digit((unsigned char)in[i + 1]) : -1;
            int lo = hi >= 0 ? tally_hex_digit((unsigned char)in[i + 2]) : -1;

            if (lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && (flags & TALLY_URI_PLUS_SPACE)) {
            c = ' ';
        }
        /* A raw NUL is refused too: the result is what the caller sees, whatever spelled it. */
        if (c == '\0' || o == cap)
            return -1;
        out[o++] = (char)c;
    }
    return (long)o;
}

void tally_query_iter_init(struct tally_query_iter *it, const char *query, size_t len)
{
    it->p = query;
    /* NULL + 0 is still undefined behaviour in C, and UBSan says so. */
    it->end = query != NULL ? query + len : NULL;
}

bool tally_query_next(struct tally_query_iter *it, const char **key, size_t *key_len,
                      const char **val, size_t *val_len)
{
    while (it->p < it->end) {
        const char *start = it->p;
        const char *amp = memchr(start, '&', (size_t)(it->end - start));
        const char *stop = amp != NULL ? amp : it->end;
        const char *eq;

        it->p = amp != NULL ? amp + 1 : it->end;
        if (stop == start)
            continue;
        eq = memchr(start, '=', (size_t)(stop - start));
        *key = start;
        *key_len = (size_t)((eq != NULL ? eq : stop) - start);
        *val = eq != NULL ? eq + 1 : stop;
        *val_len = (size_t)(stop - *val);
        return true;
    }
    return false;
}

bool tally_query_key_is(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}
