/* test_cache.c -- the stats cache: hits, single flight, and invalidation by write epochs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "tally/cache.h"
#include "tally/error.h"

struct woken {
    size_t calls, i;
    int status;
    int64_t views;
};

static void wake(void *arg, size_t i, const struct tally_stats *s, int status)
{
    struct woken *w = arg;

    w->calls++;
    w->i = i;
    w->status = status;
    w->views = s != NULL ? s->views : -1;
}

static void test_cache_loads_once_then_hits(void **state)
{
    static struct tally_epochs epochs;
    struct tally_cache c;
    struct tally_stats out = {0}, s = {.views = 7};
    struct cache_entry *e = NULL;
    struct woken w = {0};

    (void)state;
    assert_int_equal(tally_cache_init(&c, &epochs), 0);
    assert_int_equal(tally_cache_lookup(&c, "a", 1, &out, wake, &w, 0, &e), TALLY_CACHE_LOAD);
    assert_non_null(e);
    tally_cache_fill(&c, e, &s, 0);
    assert_int_equal(tally_cache_lookup(&c, "a", 1, &out, wake, &w, 0, &e), TALLY_CACHE_HIT);
    assert_int_equal(out.views, 7);
    assert_int_equal(w.calls, 0);
    tally_cache_release(&c);
}

static void test_cache_joins_concurrent_reads_of_one_article(void **state)
{
    static struct tally_epochs epochs;
    struct tally_cache c;
    struct tally_stats out, s = {.views = 42};
    struct cache_entry *e = NULL, *e2 = NULL;
    struct woken w1 = {0}, w2 = {0};

    (void)state;
    assert_int_equal(tally_cache_init(&c, &epochs), 0);
    assert_int_equal(tally_cache_lookup(&c, "hot", 3, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    assert_int_equal(tally_cache_lookup(&c, "hot", 3, &out, wake, &w1, 3, &e2), TALLY_CACHE_JOINED);
    assert_int_equal(tally_cache_lookup(&c, "hot", 3, &out, wake, &w2, 5, &e2), TALLY_CACHE_JOINED);
    assert_int_equal(w1.calls + w2.calls, 0);
    tally_cache_fill(&c, e, &s, 0);
    assert_int_equal(w1.calls, 1);
    assert_int_equal(w1.i, 3);
    assert_int_equal(w1.views, 42);
    assert_int_equal(w2.calls, 1);
    assert_int_equal(w2.i, 5);
    assert_int_equal(c.joins, 2);
    tally_cache_release(&c);
}

static void test_cache_wakes_waiters_with_the_loads_error(void **state)
{
    static struct tally_epochs epochs;
    struct tally_cache c;
    struct tally_stats out;
    struct cache_entry *e = NULL, *e2 = NULL;
    struct woken w = {0};

    (void)state;
    assert_int_equal(tally_cache_init(&c, &epochs), 0);
    assert_int_equal(tally_cache_lookup(&c, "x", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    assert_int_equal(tally_cache_lookup(&c, "x", 1, &out, wake, &w, 1, &e2), TALLY_CACHE_JOINED);
    tally_cache_fill(&c, e, NULL, TALLY_EUNAVAIL);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, TALLY_EUNAVAIL);
    /* A failed load is not cached. */
    assert_int_equal(tally_cache_lookup(&c, "x", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    tally_cache_release(&c);
}

static void test_cache_a_write_to_the_bucket_makes_entries_stale(void **state)
{
    static struct tally_epochs epochs;
    struct tally_cache c;
    struct tally_stats out, s = {.views = 1};
    struct cache_entry *e = NULL;
    struct woken w = {0};

    (void)state;
    assert_int_equal(tally_cache_init(&c, &epochs), 0);
    assert_int_equal(tally_cache_lookup(&c, "b", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    tally_cache_fill(&c, e, &s, 0);
    tally_epochs_bump(&epochs, tally_key_bucket("b", 1));
    assert_int_equal(tally_cache_lookup(&c, "b", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    /* A write confirmed while a load is in flight: the load's result is stale at once, and a
     * new reader must not join it. */
    tally_epochs_bump(&epochs, tally_key_bucket("b", 1));
    assert_int_equal(tally_cache_lookup(&c, "b", 1, &out, wake, &w, 0, &e), TALLY_CACHE_BYPASS);
    tally_cache_fill(&c, e, &s, 0);
    assert_int_equal(tally_cache_lookup(&c, "b", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    tally_cache_release(&c);
}

static void test_cache_release_wakes_every_waiter(void **state)
{
    static struct tally_epochs epochs;
    struct tally_cache c;
    struct tally_stats out;
    struct cache_entry *e = NULL, *e2 = NULL;
    struct woken w = {0};

    (void)state;
    assert_int_equal(tally_cache_init(&c, &epochs), 0);
    assert_int_equal(tally_cache_lookup(&c, "q", 1, &out, wake, NULL, 0, &e), TALLY_CACHE_LOAD);
    assert_int_equal(tally_cache_lookup(&c, "q", 1, &out, wake, &w, 9, &e2), TALLY_CACHE_JOINED);
    tally_cache_release(&c);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, TALLY_EUNAVAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_loads_once_then_hits),
        cmocka_unit_test(test_cache_joins_concurrent_reads_of_one_article),
        cmocka_unit_test(test_cache_wakes_waiters_with_the_loads_error),
        cmocka_unit_test(test_cache_a_write_to_the_bucket_makes_entries_stale),
        cmocka_unit_test(test_cache_release_wakes_every_waiter),
    };

    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
