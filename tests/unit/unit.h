/* unit.h -- what several unit tests share: table sizes, string literals with their lengths,
 * exact comparison of rendered bytes, and hand-made Redis replies. Include after cmocka.h. */
#ifndef TALLY_TEST_UNIT_H
#define TALLY_TEST_UNIT_H

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tally/buf.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define S(lit) lit, sizeof(lit) - 1

/* B holds exactly WANT (and nothing failed to append). */
static inline void expect_buf(const struct tally_buf *b, const char *want)
{
    assert_false(b->oom);
    if (b->len != strlen(want) || memcmp(b->data, want, b->len) != 0) {
        print_error("got  %.*s\nwant %s\n", (int)b->len, b->data, want);
        fail();
    }
}

/* Replies as hiredis builds them, freed with freeReplyObject(). */
static inline redisReply *reply_new(int type)
{
    redisReply *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    r->type = type;
    return r;
}

static inline redisReply *reply_text(int type, const char *s, size_t len)
{
    redisReply *r = reply_new(type);

    r->str = malloc(len + 1);
    assert_non_null(r->str);
    memcpy(r->str, s, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static inline redisReply *reply_int(long long v)
{
    redisReply *r = reply_new(REDIS_REPLY_INTEGER);

    r->integer = v;
    return r;
}

/* An array of N elements, all NULL: fill them in. */
static inline redisReply *reply_array(size_t n)
{
    redisReply *r = reply_new(REDIS_REPLY_ARRAY);

    r->elements = n;
    r->element = calloc(n != 0 ? n : 1, sizeof(*r->element));
    assert_non_null(r->element);
    return r;
}

#endif
