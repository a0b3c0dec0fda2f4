/* test_lately.c -- the articles read lately, whose writes are counted at once. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tally/hash.h"
#include "tally/lately.h"
#include "unit.h"

#define T0 UINT64_C(5000000) /* ms: any time of the monotonic clock */
#define W 1000               /* ms: --follow-reads */

static int setup(void **state)
{
    static struct tally_lately l;

    if (tally_lately_init(&l) != 0)
        return -1;
    memcpy(l.key, "a fixed test key", 16); /* the same slots every run */
    *state = &l;
    return 0;
}

static int teardown(void **state)
{
    tally_lately_release(*state);
    return 0;
}

static void test_lately_an_article_never_read_is_not(void **state)
{
    struct tally_lately *l = *state;

    assert_false(tally_lately_was_read(l, S("news/a"), T0, W));
    assert_false(tally_lately_was_read(l, S("news/a"), 0, W));
    assert_false(tally_lately_was_read(l, S(""), T0, W));
}

static void test_lately_a_read_counts_for_the_window(void **state)
{
    struct tally_lately *l = *state;

    tally_lately_read(l, S("news/a"), T0);
    assert_true(tally_lately_was_read(l, S("news/a"), T0, W));
    assert_true(tally_lately_was_read(l, S("news/a"), T0 + 1, W));
    assert_true(tally_lately_was_read(l, S("news/a"), T0 + W, W));
    /* Past the window and its last tick. */
    assert_false(tally_lately_was_read(l, S("news/a"), T0 + W + 32, W));
    assert_false(tally_lately_was_read(l, S("news/a"), T0 + 3600 * 1000, W));
    /* Another article, in another slot, was not read. */
    assert_int_not_equal(tally_siphash(l->key, S("news/a")) & (TALLY_LATELY_SLOTS - 1),
                         tally_siphash(l->key, S("news/b")) & (TALLY_LATELY_SLOTS - 1));
    assert_false(tally_lately_was_read(l, S("news/b"), T0, W));
}

static void test_lately_each_read_moves_the_window_on(void **state)
{
    struct tally_lately *l = *state;

    tally_lately_read(l, S("news/c"), T0);
    tally_lately_read(l, S("news/c"), T0 + 900);
    assert_true(tally_lately_was_read(l, S("news/c"), T0 + 900 + W, W));
    assert_false(tally_lately_was_read(l, S("news/c"), T0 + 900 + W + 32, W));
}

static void test_lately_a_read_at_every_time_of_a_tick_counts_as_long(void **state)
{
    struct tally_lately *l = *state;

    /* Whatever the read's place within its 16 ms tick, it counts for the whole window. */
    for (uint64_t at = T0 + 7000; at < T0 + 7000 + 32; at++) {
        tally_lately_read(l, S("news/d"), at);
        assert_true(tally_lately_was_read(l, S("news/d"), at + W, W));
        assert_false(tally_lately_was_read(l, S("news/d"), at + W + 32, W));
    }
}

static void test_lately_the_clock_at_zero_is_a_read_too(void **state)
{
    struct tally_lately *l = *state;

    /* A stamp is never 0 ("never read"), even at the clock's first tick. */
    tally_lately_read(l, S("news/e"), 3);
    assert_true(tally_lately_was_read(l, S("news/e"), 3, W));
    assert_true(tally_lately_was_read(l, S("news/e"), 500, W));
}

static void test_lately_the_window_is_the_callers(void **state)
{
    struct tally_lately *l = *state;

    tally_lately_read(l, S("news/f"), T0);
    assert_false(tally_lately_was_read(l, S("news/f"), T0, 0)); /* --follow-reads 0: off */
    assert_true(tally_lately_was_read(l, S("news/f"), T0 + 60000, 60000));
    assert_false(tally_lately_was_read(l, S("news/f"), T0 + 60032, 60000));
    assert_true(tally_lately_was_read(l, S("news/f"), T0 + 5, 5));
    assert_false(tally_lately_was_read(l, S("news/f"), T0 + 37, 5));
}

static void test_lately_a_table_never_made_knows_nothing(void **state)
{
    struct tally_lately none = {0};

    (void)state;
    tally_lately_read(&none, S("news/a"), T0);
    assert_false(tally_lately_was_read(&none, S("news/a"), T0, W));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lately_an_article_never_read_is_not, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lately_a_read_counts_for_the_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lately_each_read_moves_the_window_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lately_a_read_at_every_time_of_a_tick_counts_as_long,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_lately_the_clock_at_zero_is_a_read_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lately_the_window_is_the_callers, setup, teardown),
        cmocka_unit_test(test_lately_a_table_never_made_knows_nothing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
