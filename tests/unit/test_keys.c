/* test_keys.c -- the Redis key schema: buckets, the bytes of each key, and cluster slots. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tally/keys.h"
#include "unit.h"

/* ---- Buckets ---- */

/* Computed once from SipHash-2-4 under the key "tally buckets v1" by an independent
 * implementation: a change of the hash or its key moves every article's keys, so it must fail
 * here first. */
static void test_keys_bucket_is_pinned(void **state)
{
    static char braces[256];
    static char exes[256];
    static const struct {
        const char *id;
        size_t len;
        unsigned bucket;
    } cases[] = {
        {S(""), 212},
        {S("a"), 140},
        {S("news/2025/kim-missiles"), 122},
        {S("}x"), 161},
        {S("{a}b}"), 146},
        {S("{"), 169},
        {S("}"), 5},
        {S("caf\xc3\xa9/\xe6\x96\x87\xe7\xab\xa0"), 38},
        {braces, sizeof(braces), 1},
        {exes, sizeof(exes), 181},
    };

    (void)state;
    memset(braces, '{', sizeof(braces));
    memset(exes, 'x', sizeof(exes));
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned got = tally_key_bucket(cases[i].id, cases[i].len);

        if (got != cases[i].bucket) {
            print_error("bucket of case %zu: got %u, want %u\n", i, got, cases[i].bucket);
            fail();
        }
    }
}

static void test_keys_bucket_is_in_range_stable_and_spread(void **state)
{
    static unsigned hits[TALLY_BUCKETS];
    char id[32];

    (void)state;
    memset(hits, 0, sizeof(hits));
    for (unsigned i = 0; i < 20000; i++) {
        int len = snprintf(id, sizeof(id), "article-%u", i);
        unsigned b = tally_key_bucket(id, (size_t)len);

        assert_in_range(b, 0, TALLY_BUCKETS - 1);
        assert_int_equal(tally_key_bucket(id, (size_t)len), b);
        hits[b]++;
    }
    /* About 78 per bucket: every bucket is used and none hoards articles. */
    for (unsigned b = 0; b < TALLY_BUCKETS; b++)
        assert_in_range(hits[b], 30, 140);
}

static void test_keys_bucket_reads_length_bytes_only(void **state)
{
    (void)state;
    assert_int_equal(tally_key_bucket("ab", 1), tally_key_bucket("a", 1));
    assert_int_equal(tally_key_bucket("a\0b", 3), tally_key_bucket("a\0b", 3));
    assert_int_not_equal(tally_key_bucket("a\0b", 3), tally_key_bucket("a", 1));
}

/* ---- Key bytes ---- */

static void test_keys_base_writes_prefix_tag_and_kind(void **state)
{
    static const struct {
        const char *prefix;
        unsigned bucket;
        char kind;
        const char *want;
    } cases[] = {
        {"tally:", 0, 'a', "tally:{00}a:"},    {"tally:", 10, 'x', "tally:{0a}x:"},
        {"tally:", 255, 'u', "tally:{ff}u:"},  {"", 171, 'i', "{ab}i:"},
        {"site7/", 0x5c, 'w', "site7/{5c}w:"},
    };
    char out[TALLY_KEY_MAX];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t n =
            tally_key_base(out, sizeof(out), cases[i].prefix, cases[i].bucket, cases[i].kind);

        assert_int_equal(n, strlen(cases[i].want));
        assert_memory_equal(out, cases[i].want, n + 1);
    }
}

static void test_keys_base_refuses_what_does_not_fit(void **state)
{
    char out[16];

    (void)state;
    /* "tally:{00}a:" is 12 bytes: 13 with its NUL. */
    assert_int_equal(tally_key_base(out, 13, "tally:", 0, 'a'), 12);
    assert_string_equal(out, "tally:{00}a:");
    assert_int_equal(tally_key_base(out, 12, "tally:", 0, 'a'), 0);
    assert_int_equal(tally_key_base(out, 1, "tally:", 0, 'a'), 0);
}

/* "tally:{bb}K:" + ID, built by hand from the pinned bucket. */
static void keys_expect_article(const char *id, size_t len, unsigned bucket)
{
    static const char kinds[] = "auwix";
    char out[TALLY_KEY_MAX], want[TALLY_KEY_MAX];

    for (size_t k = 0; k < sizeof(kinds) - 1; k++) {
        int head = snprintf(want, sizeof(want), "tally:{%02x}%c:", bucket, kinds[k]);
        size_t n;

        assert_int_equal(head, 12);
        memcpy(want + head, id, len);
        want[(size_t)head + len] = '\0';
        memset(out, '#', sizeof(out));
        n = tally_key_article(out, sizeof(out), "tally:", kinds[k], id, len);
        assert_int_equal(n, (size_t)head + len);
        assert_memory_equal(out, want, n + 1);
    }
}

static void test_keys_article_key_is_prefix_tag_kind_and_id(void **state)
{
    char id[256];

    (void)state;
    keys_expect_article(S("news/2025/kim-missiles"), 0x7a);
    keys_expect_article(S("a"), 0x8c);
    keys_expect_article(S("}x"), 0xa1);
    keys_expect_article(S("{a}b}"), 0x92);
    keys_expect_article(S("caf\xc3\xa9/\xe6\x96\x87\xe7\xab\xa0"), 0x26);
    memset(id, '{', sizeof(id));
    keys_expect_article(id, sizeof(id), 0x01);
    memset(id, 'x', sizeof(id));
    keys_expect_article(id, sizeof(id), 0xb5);
}

static void test_keys_article_key_is_binary_safe(void **state)
{
    static const char id[] = "a\0{b}";
    char out[64];
    size_t n;

    (void)state;
    n = tally_key_article(out, sizeof(out), "p:", 'a', id, sizeof(id) - 1);
    assert_int_equal(n, 2 + 4 + 2 + 5);
    assert_memory_equal(out + 8, id, sizeof(id)); /* the id's five bytes and the NUL */
}

static void test_keys_article_key_fits_the_longest_prefix_and_id(void **state)
{
    char prefix[65], id[256], out[TALLY_KEY_MAX];
    size_t n;

    (void)state;
    memset(prefix, 'p', 64);
    prefix[64] = '\0';
    memset(id, 0xe2, sizeof(id)); /* not valid UTF-8, but the key builder does not care */
    n = tally_key_article(out, sizeof(out), prefix, 'w', id, sizeof(id));
    assert_int_equal(n, 64 + 4 + 2 + 256);
    assert_memory_equal(out, prefix, 64);
    assert_memory_equal(out + 70, id, sizeof(id));
    assert_int_equal(out[n], '\0');
}

static void test_keys_article_key_refuses_what_does_not_fit(void **state)
{
    char out[32];

    (void)state;
    /* "tally:{8c}a:" + "a" is 13 bytes, 14 with the NUL. */
    memset(out, '#', sizeof(out));
    assert_int_equal(tally_key_article(out, 14, "tally:", 'a', "a", 1), 13);
    assert_string_equal(out, "tally:{8c}a:a");
    memset(out, '#', sizeof(out));
    assert_int_equal(tally_key_article(out, 13, "tally:", 'a', "a", 1), 0);
    assert_int_equal(out[13], '#'); /* nothing past the capacity */
    assert_int_equal(tally_key_article(out, 12, "tally:", 'a', "a", 1), 0);
    assert_int_equal(tally_key_article(out, 4, "tally:", 'a', "a", 1), 0);
}

/* ---- Cluster slots ---- */

static void test_keys_slot_follows_the_cluster_spec(void **state)
{
    static const struct {
        const char *key;
        size_t len;
        unsigned slot;
    } cases[] = {
        {S("123456789"), 12739}, /* CRC16-XMODEM check value 0x31C3 */
        {S("{user1000}.following"), 3443},
        {S("{user1000}.followers"), 3443},
        {S("user1000"), 3443},
        {S("foo{}{bar}"), 8363},    /* empty tag: the whole key */
        {S("foo{{bar}}zap"), 4015}, /* the tag is "{bar" */
        {S("{bar"), 4015},          /* no closing brace: the whole key */
        {S("foo{bar}{zap}"), 5061}, /* the first tag only */
        {S("bar"), 5061},
        {S("{}"), 15257},
        {S("{"), 4092},
        {S("}{a}"), 15495}, /* a '}' before the first '{' does not close anything */
        {S("a{b"), 13340},
        {S("tally:{00}a:x"), 13254},
        {S(""), 0},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned got = tally_key_slot(cases[i].key, cases[i].len);

        if (got != cases[i].slot) {
            print_error("slot of '%s': got %u, want %u\n", cases[i].key, got, cases[i].slot);
            fail();
        }
    }
}

static void test_keys_slot_reads_length_bytes_only(void **state)
{
    (void)state;
    /* The tag "{ab}" is cut short: the whole three bytes are hashed, not "ab". */
    assert_int_not_equal(tally_key_slot("{ab}", 3), tally_key_slot("{ab}", 4));
    assert_int_equal(tally_key_slot("{ab}", 3), tally_key_slot("{abZZ", 3));
    assert_int_equal(tally_key_slot("{ab}", 4), tally_key_slot("ab", 2));
    assert_int_equal(tally_key_slot("x{a\0b}", 6), tally_key_slot("a\0b", 3));
}

/* Every key of one article, hostile id or not, lands in the slot of its two-digit tag. */
static void test_keys_all_kinds_of_one_article_share_a_slot(void **state)
{
    static char braces[256];
    static const struct {
        const char *id;
        size_t len;
        unsigned slot; /* of "{bb}" for the article's bucket */
    } cases[] = {
        {S("}x"), 7785},
        {S("{a}b}"), 10524},
        {S("{"), 8033},
        {S("}"), 9059},
        {braces, sizeof(braces), 9191},
        {S("news/2025/kim-missiles"), 8325},
        {S("caf\xc3\xa9/\xe6\x96\x87\xe7\xab\xa0"), 13666},
    };
    static const char kinds[] = "auvhdtwix"; /* every kind of keys.h's schema */
    char key[TALLY_KEY_MAX];

    (void)state;
    memset(braces, '{', sizeof(braces));
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned bucket = tally_key_bucket(cases[i].id, cases[i].len);

        for (size_t k = 0; k < sizeof(kinds) - 1; k++) {
            size_t n =
                tally_key_article(key, sizeof(key), "tally:", kinds[k], cases[i].id, cases[i].len);

            assert_true(n > 0);
            assert_int_equal(tally_key_slot(key, n), cases[i].slot);
            /* Longer suffixes ("v:<day>:<id>", "w:<id>:<slot>", "i:<key>"...) with braces. */
            n = tally_key_base(key, sizeof(key), "tally:", bucket, kinds[k]);
            memcpy(key + n, "0123456789abcdef:}{", 19);
            memcpy(key + n + 19, cases[i].id, cases[i].len);
            assert_int_equal(tally_key_slot(key, n + 19 + cases[i].len), cases[i].slot);
        }
    }
}

/* ---- Tags, tails, hour stamps ---- */

static void test_keys_tag_is_two_lower_hex_digits(void **state)
{
    char tag[2], key[64];

    (void)state;
    for (unsigned b = 0; b < TALLY_BUCKETS; b++) {
        char want[3];

        snprintf(want, sizeof(want), "%02x", b);
        tally_key_tag(b, tag);
        assert_memory_equal(tag, want, 2);
        /* The same tag stands in every key of the bucket, and gives the bucket's slot. */
        assert_int_equal(tally_key_base(key, sizeof(key), "p:", b, 'a'), 8);
        assert_memory_equal(key + 3, want, 2);
        assert_int_equal(tally_key_bucket_slot(b), tally_key_slot(key, 8));
    }
}

static void test_keys_make_appends_the_tail_or_refuses(void **state)
{
    char key[16];

    (void)state;
    assert_int_equal(tally_key_make(key, sizeof(key), "p:", 0xab, 'x', S("n0-1")), 12);
    assert_string_equal(key, "p:{ab}x:n0-1");
    /* 15 bytes and the NUL fit exactly; one more does not. */
    assert_int_equal(tally_key_make(key, sizeof(key), "p:", 0xab, 'x', S("n0-12345")), 0);
    assert_int_equal(tally_key_make(key, sizeof(key), "p:", 0xab, 'x', S("n0-1234")), 15);
    assert_string_equal(key, "p:{ab}x:n0-1234");
    assert_int_equal(tally_key_make(key, sizeof(key), "p:", 0xab, 'i', S("")), 8);
    assert_string_equal(key, "p:{ab}i:");
}

static void test_keys_hour_is_utc(void **state)
{
    static const struct {
        int64_t t;
        const char *want;
    } cases[] = {
        {0, "1970010100"},
        {1800000000, "2027011508"},   /* 2027-01-15T08:00:00Z */
        {1800003599, "2027011508"},
        {1800003600, "2027011509"},
        {951782400, "2000022900"},    /* a leap day */
        {4102444799, "2099123123"},
    };
    char out[11];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_key_hour(cases[i].t, out);
        assert_string_equal(out, cases[i].want);
    }
}

/* The hour computed by arithmetic is the C library's UTC hour: at the first and last second
 * of hours spread over 1970..2200, and at random times in between. */
static void test_keys_hour_matches_gmtime(void **state)
{
    uint64_t seed = 0x9e3779b97f4a7c15u;
    char out[11], want[11];

    (void)state;
    for (int64_t t = 0; t < INT64_C(7258118400); t += 7 * 3600 + 1) {
        int64_t at[3];

        seed = seed * 6364136223846793005u + 1442695040888963407u;
        at[0] = t - t % 3600;
        at[1] = at[0] + 3599;
        at[2] = t + (int64_t)((seed >> 40) % 25200);
        for (int k = 0; k < 3; k++) {
            time_t tt = (time_t)at[k];
            struct tm tm;

            assert_non_null(gmtime_r(&tt, &tm));
            assert_int_equal(strftime(want, sizeof(want), "%Y%m%d%H", &tm), 10);
            tally_key_hour(at[k], out);
            if (strcmp(out, want) != 0) {
                print_error("t=%lld: %s, want %s\n", (long long)at[k], out, want);
                fail();
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_bucket_is_pinned),
        cmocka_unit_test(test_keys_bucket_is_in_range_stable_and_spread),
        cmocka_unit_test(test_keys_bucket_reads_length_bytes_only),
        cmocka_unit_test(test_keys_base_writes_prefix_tag_and_kind),
        cmocka_unit_test(test_keys_base_refuses_what_does_not_fit),
        cmocka_unit_test(test_keys_article_key_is_prefix_tag_kind_and_id),
        cmocka_unit_test(test_keys_article_key_is_binary_safe),
        cmocka_unit_test(test_keys_article_key_fits_the_longest_prefix_and_id),
        cmocka_unit_test(test_keys_article_key_refuses_what_does_not_fit),
        cmocka_unit_test(test_keys_slot_follows_the_cluster_spec),
        cmocka_unit_test(test_keys_slot_reads_length_bytes_only),
        cmocka_unit_test(test_keys_all_kinds_of_one_article_share_a_slot),
        cmocka_unit_test(test_keys_tag_is_two_lower_hex_digits),
        cmocka_unit_test(test_keys_make_appends_the_tail_or_refuses),
        cmocka_unit_test(test_keys_hour_is_utc),
        cmocka_unit_test(test_keys_hour_matches_gmtime),
    };

    return cmocka_run_group_tests_name("keys", tests, NULL, NULL);
}
