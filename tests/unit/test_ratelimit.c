/* test_ratelimit.c -- the per-client GCRA limiter: burst, refill, Retry-After, clients. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "tally/ratelimit.h"

static const uint8_t client_a[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
static const uint8_t client_b[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2};

#define SEC UINT64_C(1000000)
#define T0 (UINT64_C(1000) * SEC) /* an arbitrary monotonic time */

static unsigned take_many(struct tally_ratelimit *rl, const uint8_t *addr, unsigned n,
                          uint64_t now)
{
    unsigned ok = 0;
    uint32_t retry;

    for (unsigned i = 0; i < n; i++)
        ok += tally_ratelimit_take(rl, addr, 1, now, &retry);
    return ok;
}

static void test_ratelimit_allows_a_burst_of_four_times_the_rate(void **state)
{
    struct tally_ratelimit rl;
    uint32_t retry = 0;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 50), 0);
    assert_int_equal(take_many(&rl, client_a, 200, T0), 200);
    assert_false(tally_ratelimit_take(&rl, client_a, 1, T0, &retry));
    assert_int_equal(retry, 1);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_refills_at_the_rate(void **state)
{
    struct tally_ratelimit rl;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 50), 0);
    assert_int_equal(take_many(&rl, client_a, 300, T0), 200);
    /* One second later, 50 more events fit, and not 51. */
    assert_int_equal(take_many(&rl, client_a, 51, T0 + SEC), 50);
    /* Ten idle seconds refill the bucket only up to the burst. */
    assert_int_equal(take_many(&rl, client_a, 300, T0 + 11 * SEC), 200);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_charges_a_batch_per_event(void **state)
{
    struct tally_ratelimit rl;
    uint32_t retry = 0;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 50), 0);
    assert_true(tally_ratelimit_take(&rl, client_a, 100, T0, &retry));
    assert_true(tally_ratelimit_take(&rl, client_a, 100, T0, &retry));
    assert_false(tally_ratelimit_take(&rl, client_a, 100, T0, &retry));
    /* 100 events at 50/s: two seconds until they fit. */
    assert_int_equal(retry, 2);
    assert_true(tally_ratelimit_take(&rl, client_a, 100, T0 + 2 * SEC, &retry));
    tally_ratelimit_release(&rl);
}

/* A batch above the burst never passes, and costs nothing: it must not get through for the
 * price of the burst. Its Retry-After is the time until the bucket is full. */
static void test_ratelimit_refuses_a_batch_above_the_burst_and_charges_nothing(void **state)
{
    struct tally_ratelimit rl;
    uint32_t retry = 0;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 5), 0);
    assert_int_equal(tally_ratelimit_burst(&rl), 20);
    assert_false(tally_ratelimit_take(&rl, client_a, 100, T0, &retry));
    assert_int_equal(retry, 1);
    assert_false(tally_ratelimit_take(&rl, client_a, 21, T0, &retry));
    assert_int_equal(retry, 1);
    /* Nothing was charged: the whole burst is still there, and exactly the burst passes. */
    assert_true(tally_ratelimit_take(&rl, client_a, 20, T0, &retry));
    assert_false(tally_ratelimit_take(&rl, client_a, 1, T0, &retry));
    /* One second later the bucket is 3 seconds from full. */
    assert_false(tally_ratelimit_take(&rl, client_a, 21, T0 + SEC, &retry));
    assert_int_equal(retry, 3);
    /* A batch within the burst is charged per event: 5 now leave it full at T0 + 5 s. */
    assert_true(tally_ratelimit_take(&rl, client_a, 5, T0 + SEC, &retry));
    assert_false(tally_ratelimit_take(&rl, client_a, 20, T0 + 3 * SEC, &retry));
    assert_int_equal(retry, 2);
    assert_false(tally_ratelimit_take(&rl, client_a, 21, T0 + 3 * SEC, &retry));
    assert_int_equal(retry, 2);
    assert_true(tally_ratelimit_take(&rl, client_a, 20, T0 + 5 * SEC, &retry));
    /* Another client is not affected. */
    assert_true(tally_ratelimit_take(&rl, client_b, 20, T0 + 5 * SEC, &retry));
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_burst_is_four_times_the_rate_or_off(void **state)
{
    struct tally_ratelimit rl;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 2), 0);
    assert_int_equal(tally_ratelimit_burst(&rl), 8);
    tally_ratelimit_release(&rl);
    assert_int_equal(tally_ratelimit_init(&rl, 0), 0);
    assert_int_equal(tally_ratelimit_burst(&rl), 0);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_keeps_clients_apart(void **state)
{
    struct tally_ratelimit rl;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 10), 0);
    assert_int_equal(take_many(&rl, client_a, 100, T0), 40);
    assert_int_equal(take_many(&rl, client_b, 100, T0), 40);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_counts_an_ipv6_slash_64_as_one_client(void **state)
{
    uint8_t x[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t y[16], other[16];
    struct tally_ratelimit rl;

    (void)state;
    memcpy(y, x, 16);
    y[15] = 0x99;
    y[9] = 0x42;
    memcpy(other, x, 16);
    other[7] = 3;
    assert_int_equal(tally_ratelimit_init(&rl, 10), 0);
    assert_int_equal(take_many(&rl, x, 30, T0), 30);
    assert_int_equal(take_many(&rl, y, 30, T0), 10);
    assert_int_equal(take_many(&rl, other, 50, T0), 40);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_zero_is_off(void **state)
{
    struct tally_ratelimit rl;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 0), 0);
    assert_int_equal(take_many(&rl, client_a, 100000, T0), 100000);
    tally_ratelimit_release(&rl);
}

static void test_ratelimit_high_rates_keep_their_precision(void **state)
{
    struct tally_ratelimit rl;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 1000000), 0);
    assert_int_equal(take_many(&rl, client_a, 4000100, T0), 4000000);
    assert_int_equal(take_many(&rl, client_a, 1100, T0 + 1000), 1000);
    tally_ratelimit_release(&rl);
}

/* Many threads on one client at one instant: exactly the burst passes, no more. */
struct race {
    struct tally_ratelimit *rl;
    unsigned ok;
};

static void *race_main(void *arg)
{
    struct race *r = arg;

    r->ok = take_many(r->rl, client_a, 20000, T0);
    return NULL;
}

static void test_ratelimit_is_exact_across_threads(void **state)
{
    struct tally_ratelimit rl;
    struct race r[4];
    pthread_t t[4];
    unsigned total = 0;

    (void)state;
    assert_int_equal(tally_ratelimit_init(&rl, 1000), 0);
    for (int i = 0; i < 4; i++) {
        r[i] = (struct race){.rl = &rl};
        assert_int_equal(pthread_create(&t[i], NULL, race_main, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += r[i].ok;
    }
    assert_int_equal(total, 4000);
    tally_ratelimit_release(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_allows_a_burst_of_four_times_the_rate),
        cmocka_unit_test(test_ratelimit_refills_at_the_rate),
        cmocka_unit_test(test_ratelimit_charges_a_batch_per_event),
        cmocka_unit_test(test_ratelimit_refuses_a_batch_above_the_burst_and_charges_nothing),
        cmocka_unit_test(test_ratelimit_burst_is_four_times_the_rate_or_off),
        cmocka_unit_test(test_ratelimit_keeps_clients_apart),
        cmocka_unit_test(test_ratelimit_counts_an_ipv6_slash_64_as_one_client),
        cmocka_unit_test(test_ratelimit_zero_is_off),
        cmocka_unit_test(test_ratelimit_high_rates_keep_their_precision),
        cmocka_unit_test(test_ratelimit_is_exact_across_threads),
    };

    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
