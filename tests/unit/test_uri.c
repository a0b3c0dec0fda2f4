/* test_uri.c -- strict percent-decoding and the query-string walker. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/uri.h"
#include "unit.h"

struct decode_case {
    const char *in;
    size_t len;
    unsigned flags;
    long want;       /* decoded length, or -1 */
    const char *out; /* the decoded bytes when WANT >= 0 */
};

static void check_decode(const struct decode_case *c, size_t cap)
{
    char out[64];
    long n;

    memset(out, '#', sizeof(out));
    n = tally_uri_decode(c->in, c->len, out, cap, c->flags);
    if (n != c->want) {
        print_error("decode '%.*s' (flags %u, cap %zu): got %ld, want %ld\n", (int)c->len, c->in,
                    c->flags, cap, n, c->want);
        fail();
    }
    if (n >= 0) {
        assert_memory_equal(out, c->out, (size_t)n);
        assert_int_equal(out[n], '#'); /* no NUL written */
    }
}

static void test_uri_decodes_escapes_and_plain_bytes(void **state)
{
    static const struct decode_case cases[] = {
        {S(""), 0, 0, ""},
        {S("abc"), 0, 3, "abc"},
        {S("a%20b"), 0, 3, "a b"},
        {S("news%2F2025%2fkim"), 0, 13, "news/2025/kim"},
        {S("%41%62%7E"), 0, 3, "Ab~"},
        {S("%C0%AF"), 0, 2, "\xC0\xAF"}, /* overlong UTF-8: validity is the caller's business */
        {S("caf%C3%A9"), 0, 5, "caf\xC3\xA9"},
        {S("%25"), 0, 1, "%"},
        {S("%2B"), TALLY_URI_PLUS_SPACE, 1, "+"},
        {S("a+b"), 0, 3, "a+b"},
        {S("a+b"), TALLY_URI_PLUS_SPACE, 3, "a b"},
        {S("++"), TALLY_URI_PLUS_SPACE, 2, "  "},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        check_decode(&cases[i], 64);
}

static void test_uri_rejects_malformed_escapes_and_nul(void **state)
{
    static const struct decode_case cases[] = {
        {S("%00"), 0, -1, NULL},
        {S("a%00b"), 0, -1, NULL},
        {S("a%00b"), TALLY_URI_PLUS_SPACE, -1, NULL},
        {S("a\0b"), 0, -1, NULL}, /* a raw NUL is as bad as an encoded one */
        {S("%zz"), 0, -1, NULL},
        {S("%g0"), 0, -1, NULL},
        {S("%0g"), 0, -1, NULL},
        {S("%2"), 0, -1, NULL},
        {S("abc%2"), 0, -1, NULL},
        {S("%"), 0, -1, NULL},
        {S("abc%"), 0, -1, NULL},
        {S("%%41"), 0, -1, NULL},
        {S("% 1"), 0, -1, NULL},
        {S("%+1"), TALLY_URI_PLUS_SPACE, -1, NULL},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        check_decode(&cases[i], 64);
}

static void test_uri_decode_respects_the_capacity(void **state)
{
    static const struct decode_case fits = {S("abcd"), 0, 4, "abcd"};
    static const struct decode_case too_big = {S("abcd"), 0, -1, NULL};
    static const struct decode_case escapes_fit = {S("%41%42"), 0, 2, "AB"};
    static const struct decode_case nothing = {S(""), 0, 0, ""};

    (void)state;
    check_decode(&fits, 4);
    check_decode(&too_big, 3);
    check_decode(&escapes_fit, 2);
    check_decode(&nothing, 0);
}

/* Renders every pair the iterator yields as "[key][value]". */
static void walk(const char *query, size_t len, char *out, size_t cap)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen, used = 0;

    out[0] = '\0';
    tally_query_iter_init(&it, query, len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        int n = snprintf(out + used, cap - used, "[%.*s][%.*s]", (int)klen, k, (int)vlen, v);

        assert_true(n > 0 && (size_t)n < cap - used);
        used += (size_t)n;
    }
}

static void test_uri_query_iterator_skips_empty_pairs(void **state)
{
    static const struct {
        const char *query, *want;
    } cases[] = {
        {"a=1&&b&c=", "[a][1][b][][c][]"},
        {"&a=1&", "[a][1]"},
        {"&&&", ""},
        {"", ""},
        {"a", "[a][]"},
        {"=x", "[][x]"},
        {"a=b=c", "[a][b=c]"},
        {"type=view&article=news%2Fx", "[type][view][article][news%2Fx]"},
        {"a=%zz&b=+", "[a][%zz][b][+]"},
    };
    char got[256];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        walk(cases[i].query, strlen(cases[i].query), got, sizeof(got));
        if (strcmp(got, cases[i].want) != 0) {
            print_error("query '%s': got %s, want %s\n", cases[i].query, got, cases[i].want);
            fail();
        }
    }
}

static void test_uri_query_iterator_uses_the_length_not_a_nul(void **state)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen;
    char got[64];

    (void)state;
    walk("a=1&b=2", 3, got, sizeof(got));
    assert_string_equal(got, "[a][1]");
    tally_query_iter_init(&it, "a=1\0b=2&c", 10);
    assert_true(tally_query_next(&it, &k, &klen, &v, &vlen));
    assert_int_equal(klen, 1);
    assert_int_equal(vlen, 5);
    assert_memory_equal(v, "1\0b=2", 5);
    assert_true(tally_query_next(&it, &k, &klen, &v, &vlen));
    assert_memory_equal(k, "c", klen);
    assert_false(tally_query_next(&it, &k, &klen, &v, &vlen));
    assert_false(tally_query_next(&it, &k, &klen, &v, &vlen));
    walk(NULL, 0, got, sizeof(got));
    assert_string_equal(got, "");
}

static void test_uri_query_key_is_exact_and_undecoded(void **state)
{
    (void)state;
    assert_true(tally_query_key_is("type", 4, "type"));
    assert_true(tally_query_key_is("types", 4, "type"));
    assert_false(tally_query_key_is("types", 5, "type"));
    assert_false(tally_query_key_is("typ", 3, "type"));
    assert_false(tally_query_key_is("Type", 4, "type"));
    assert_false(tally_query_key_is("%74ype", 6, "type"));
    assert_false(tally_query_key_is("", 0, "type"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_decodes_escapes_and_plain_bytes),
        cmocka_unit_test(test_uri_rejects_malformed_escapes_and_nul),
        cmocka_unit_test(test_uri_decode_respects_the_capacity),
        cmocka_unit_test(test_uri_query_iterator_skips_empty_pairs),
        cmocka_unit_test(test_uri_query_iterator_uses_the_length_not_a_nul),
        cmocka_unit_test(test_uri_query_key_is_exact_and_undecoded),
    };

    return cmocka_run_group_tests_name("uri", tests, NULL, NULL);
}
