/* test_idem.c -- Idempotency-Key markers: body digests, where markers live, judging a marker. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/error.h"
#include "tally/idem.h"
#include "tally/keys.h"
#include "unit.h"

static struct tally_event ev_view(const char *id)
{
    return (struct tally_event){.article = id,
                                .article_len = (uint16_t)strlen(id),
                                .type = TALLY_EVENT_VIEW,
                                .network = TALLY_NETWORK_OTHER,
                                .delta = 1};
}

/* ---- Digests ---- */

static void test_idem_digest_tells_bodies_apart_and_order_counts(void **state)
{
    struct tally_event ab[2] = {ev_view("a"), ev_view("b")};
    struct tally_event ba[2] = {ev_view("b"), ev_view("a")};
    struct tally_event ab2[2] = {ev_view("a"), ev_view("b")};
    struct tally_event share = ev_view("a"), comment = ev_view("a"), minus = ev_view("a");
    struct tally_event split[2] = {ev_view("a"), ev_view("")}, whole = ev_view("a");
    char d_ab[17], d_ba[17], d_ab2[17], d_a[17], d_share[17], d_comment[17], d_minus[17],
        d_split[17], d_whole[17];

    (void)state;
    share.type = TALLY_EVENT_SHARE;
    share.network = TALLY_NETWORK_TWITTER;
    comment.type = TALLY_EVENT_COMMENT;
    minus.type = TALLY_EVENT_COMMENT;
    minus.delta = -1;
    tally_idem_digest(ab, 2, d_ab);
    tally_idem_digest(ba, 2, d_ba);
    tally_idem_digest(ab2, 2, d_ab2);
    tally_idem_digest(ab, 1, d_a);
    tally_idem_digest(&share, 1, d_share);
    tally_idem_digest(&comment, 1, d_comment);
    tally_idem_digest(&minus, 1, d_minus);
    tally_idem_digest(split, 2, d_split);
    tally_idem_digest(&whole, 1, d_whole);
    assert_int_equal(strlen(d_ab), 16);
    assert_string_equal(d_ab, d_ab2);
    assert_string_not_equal(d_ab, d_ba);
    assert_string_not_equal(d_ab, d_a);
    assert_string_not_equal(d_a, d_share);
    assert_string_not_equal(d_a, d_comment);
    assert_string_not_equal(d_comment, d_minus);
    assert_string_not_equal(d_split, d_whole);
}

/* ---- Keys ---- */

static void test_idem_home_depends_on_space_and_key_alone(void **state)
{
    char k1[TALLY_KEY_MAX], k2[TALLY_KEY_MAX], want[TALLY_KEY_MAX], tag[3] = {0};
    unsigned b = tally_idem_bucket(TALLY_IDEM_ANON, "key-1", 5);
    size_t n;

    (void)state;
    tally_key_tag(b, tag);
    snprintf(want, sizeof(want), "tally:{%s}i:a:key-1", tag);
    n = tally_idem_home_key(k1, sizeof(k1), "tally:", TALLY_IDEM_ANON, "key-1", 5);
    assert_int_equal(n, strlen(want));
    assert_string_equal(k1, want);
    assert_int_equal(b, tally_key_bucket("a:key-1", 7));
    /* The token holder's key of the same name is another marker. */
    tally_idem_home_key(k2, sizeof(k2), "tally:", TALLY_IDEM_TOKEN, "key-1", 5);
    tally_key_tag(tally_key_bucket("t:key-1", 7), tag);
    snprintf(want, sizeof(want), "tally:{%s}i:t:key-1", tag);
    assert_string_equal(k2, want);
    /* A brace in the key cannot move the marker: the tag comes first. */
    n = tally_idem_home_key(k1, sizeof(k1), "tally:", TALLY_IDEM_ANON, "{x}", 3);
    tally_key_tag(tally_key_bucket("a:{x}", 5), tag);
    snprintf(want, sizeof(want), "tally:{%s}i:a:{x}", tag);
    assert_string_equal(k1, want);
    assert_int_equal(tally_key_slot(k1, n), tally_key_bucket_slot(tally_key_bucket("a:{x}", 5)));
    assert_int_equal(tally_idem_home_key(k1, 8, "tally:", TALLY_IDEM_ANON, "key-1", 5), 0);
}

static void test_idem_part_key_names_bucket_digest_and_key(void **state)
{
    char k[TALLY_KEY_MAX];
    size_t n;

    (void)state;
    n = tally_idem_part_key(k, sizeof(k), "tally:", 0x8c, TALLY_IDEM_TOKEN, "0123456789abcdef", "k",
                            1);
    assert_string_equal(k, "tally:{8c}j:t:0123456789abcdef:k");
    assert_int_equal(n, strlen(k));
    assert_int_equal(tally_idem_part_key(k, sizeof(k), "tally:", 0, 'a', "0123", "k", 1), 0);
}

/* ---- Judging a home marker ---- */

static void test_idem_judge_markers(void **state)
{
    static const char d[] = "0123456789abcdef";
    static const struct {
        const char *value;
        int verdict;
        struct tally_idem_answer a;
    } cases[] = {
        {NULL, TALLY_IDEM_PROCEED, {0, 0, 0, 0}},
        {"0123456789abcdef", TALLY_IDEM_PROCEED, {0, 0, 0, 0}},
        {"0123456789abcdef 3,1,2,4", TALLY_IDEM_REPLAY, {3, 1, 2, 4}},
        {"fedcba9876543210 3,1,2,4", TALLY_IDEM_REUSED, {0, 0, 0, 0}},
        {"fedcba9876543210", TALLY_IDEM_REUSED, {0, 0, 0, 0}},
        {"5,0,0,1", TALLY_IDEM_REPLAY, {5, 0, 0, 1}}, /* before digests were kept */
        {"0123456789abcdef 3,1,2", TALLY_EINVAL, {0, 0, 0, 0}},
        {"0123456789abcdef 3,1,2,4,", TALLY_EINVAL, {0, 0, 0, 0}},
        {"0123456789abcdef 3,1,2,99999999999", TALLY_EINVAL, {0, 0, 0, 0}},
        {"0123456789abcdef-", TALLY_EINVAL, {0, 0, 0, 0}},
        {"short", TALLY_EINVAL, {0, 0, 0, 0}},
    };
    struct tally_idem_answer a;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const char *v = cases[i].value;
        int verdict = tally_idem_judge(v, v != NULL ? strlen(v) : 0, d, &a);

        assert_int_equal(verdict, cases[i].verdict);
        if (verdict == TALLY_IDEM_REPLAY)
            assert_memory_equal(&a, &cases[i].a, sizeof(a));
    }
}

static void test_idem_settled_value_is_judged_a_replay(void **state)
{
    struct tally_idem_answer in = {7, 0, 1, 2}, out;
    char v[64];
    size_t n;

    (void)state;
    n = tally_idem_settled(v, sizeof(v), "0123456789abcdef", &in);
    assert_string_equal(v, "0123456789abcdef 7,0,1,2");
    assert_int_equal(tally_idem_judge(v, n, "0123456789abcdef", &out), TALLY_IDEM_REPLAY);
    assert_memory_equal(&in, &out, sizeof(in));
    assert_int_equal(tally_idem_judge(v, n, "0123456789abcdee", &out), TALLY_IDEM_REUSED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idem_digest_tells_bodies_apart_and_order_counts),
        cmocka_unit_test(test_idem_home_depends_on_space_and_key_alone),
        cmocka_unit_test(test_idem_part_key_names_bucket_digest_and_key),
        cmocka_unit_test(test_idem_judge_markers),
        cmocka_unit_test(test_idem_settled_value_is_judged_a_replay),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
