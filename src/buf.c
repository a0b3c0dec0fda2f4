/* buf.c -- growable byte buffer with RESP and JSON appenders. */
#include <stdlib.h>
#include <string.h>

#include "tally/buf.h"
#include "tally/error.h"

void tally_buf_init(struct tally_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void tally_buf_release(struct tally_buf *b)
{
    free(b->data);
    tally_buf_init(b);
}

static bool buf_reserve(struct tally_buf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->oom)
        return false;
    if (n <= b->cap - b->len)
        return true;
    cap = b->cap != 0 ? b->cap : 256;
    /* A size no doubling reaches fails like any allocation, not by wrapping around. */
    while (cap < b->len + n && cap <= SIZE_MAX / 2)
        cap *= 2;
    p = n <= SIZE_MAX - b->len && cap >= b->len + n ? realloc(b->data, cap) : NULL;
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void tally_buf_add(struct tally_buf *b, const void *p, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void tally_buf_adds(struct tally_buf *b, const char *s)
{
    tally_buf_add(b, s, strlen(s));
}

/* Digits of V, written backwards into the end of TMP; returns where they start. */
static char *buf_digits(char tmp[24], uint64_t v)
{
    char *p = tmp + 24;

    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

void tally_buf_add_u64(struct tally_buf *b, uint64_t v)
{
    char tmp[24], *p = buf_digits(tmp, v);

    tally_buf_add(b, p, (size_t)(tmp + 24 - p));
}

void tally_buf_add_i64(struct tally_buf *b, int64_t v)
{
    if (v < 0) {
        tally_buf_add(b, "-", 1);
        tally_buf_add_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        tally_buf_add_u64(b, (uint64_t)v);
    }
}

void tally_buf_add_bulk(struct tally_buf *b, const void *p, size_t n)
{
    tally_buf_add(b, "$", 1);
    tally_buf_add_u64(b, n);
    tally_buf_add(b, "\r\n", 2);
    tally_buf_add(b, p, n);
    tally_buf_add(b, "\r\n", 2);
}

void tally_buf_add_bulk_i64(struct tally_buf *b, int64_t v)
{
    char tmp[24], *p = buf_digits(tmp, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);

    if (v < 0)
        *--p = '-';
    tally_buf_add_bulk(b, p, (size_t)(tmp + 24 - p));
}

void tally_buf_add_json_str(struct tally_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    tally_buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        tally_buf_add(b, p + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            tally_buf_add(b, esc, 2);
        } else {
            tally_buf_add(b, esc, 6);
        }
    }
    tally_buf_add(b, p + run, n - run);
    tally_buf_add(b, "\"", 1);
}

int tally_grow(void *p, size_t *cap, size_t need, size_t size)
{
    void **arr = p;
    size_t n = *cap != 0 ? *cap : 64;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    q = realloc(*arr, n * size);
    if (q == NULL)
        return TALLY_ENOMEM;
    *arr = q;
    *cap = n;
    return 0;
}
