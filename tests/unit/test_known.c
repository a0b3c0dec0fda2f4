/* test_known.c -- which bucket keys of this day and hour are known to have their expiry: when
 * that is forgotten, the fresh list a script is given, the list a script answers, and what is
 * learnt from it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/error.h"
#include "tally/known.h"
#include "tally/model.h"
#include "unit.h"

#define T0 INT64_C(1800000000) /* 2027-01-15 08:00:00 UTC */
#define HOUR 3600
#define MIN_MS 60000

/* K with bucket 7's day and hour keys of views known, as of the hour of T0. */
static void known_at_t0(struct tally_known *k)
{
    memset(k, 0, sizeof(*k));
    tally_known_update(k, T0, 1000, 5);
    k->day[7] = TALLY_EXPIRY_VIEWS;
    k->hour[7] = TALLY_EXPIRY_VIEWS;
}

static void test_known_is_forgotten_at_a_new_hour_day_after_10_minutes_or_a_delete(void **state)
{
    static const struct {
        const char *what;
        int64_t now;
        uint64_t now_ms;
        uint32_t forgets;
        uint8_t day, hour; /* bucket 7's after the update */
        const char *stamp;
    } cases[] = {
        {"the same hour", T0 + 59 * 60, 1000 + 9 * MIN_MS, 5, 1, 1, "2027011508"},
        {"a new hour", T0 + HOUR, 1000 + MIN_MS, 5, 1, 0, "2027011509"},
        {"a new day", T0 + 16 * HOUR, 1000 + MIN_MS, 5, 0, 0, "2027011600"},
        {"10 minutes", T0 + 60, 1000 + 10 * MIN_MS, 5, 0, 0, "2027011508"},
        {"a DELETE", T0 + 60, 1000 + MIN_MS, 6, 0, 0, "2027011508"},
    };
    struct tally_known k;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        known_at_t0(&k);
        tally_known_update(&k, cases[i].now, cases[i].now_ms, cases[i].forgets);
        if (k.day[7] != cases[i].day || k.hour[7] != cases[i].hour ||
            strcmp(k.stamp, cases[i].stamp) != 0 || k.forgets != cases[i].forgets) {
            print_error("%s: day %u hour %u stamp %s forgets %u\n", cases[i].what, k.day[7],
                        k.hour[7], k.stamp, k.forgets);
            fail();
        }
    }
    /* Ten minutes count from the last time anything was forgotten, a new hour included. */
    known_at_t0(&k);
    tally_known_update(&k, T0 + HOUR, 1000 + 9 * MIN_MS, 5);
    k.day[7] = k.hour[7] = TALLY_EXPIRY_VIEWS;
    tally_known_update(&k, T0 + HOUR + 60, 1000 + 18 * MIN_MS, 5);
    assert_int_equal(k.day[7], TALLY_EXPIRY_VIEWS);
    assert_int_equal(k.hour[7], TALLY_EXPIRY_VIEWS);
}

static void test_known_lists_the_keys_of_touched_buckets_that_may_be_new(void **state)
{
    uint8_t day[TALLY_BUCKETS] = {0}, hour[TALLY_BUCKETS] = {0};
    uint64_t touched[TALLY_BUCKETS / 64] = {0};
    char out[TALLY_FRESH_MAX + 1];
    size_t n;

    (void)state;
    /* Nothing touched: nothing listed. */
    assert_int_equal(tally_known_fresh(day, hour, touched, out), 0);
    touched[0] = UINT64_C(1) << 0x0a;
    touched[3] = UINT64_C(1) << (0xff - 192);
    touched[1] = UINT64_C(1) << (0x41 - 64);
    day[0x0a] = TALLY_EXPIRY_DAY_ALL; /* everything known: left out */
    hour[0x0a] = TALLY_EXPIRY_HOUR_ALL;
    day[0x41] = TALLY_EXPIRY_VIEWS | TALLY_EXPIRY_SITE;
    hour[0x41] = TALLY_EXPIRY_HOUR_ALL;
    day[0x42] = 0; /* not touched: left out, known or not */
    n = tally_known_fresh(day, hour, touched, out);
    out[n] = '\0';
    assert_string_equal(out, "41d6effd7fffh6f");
    /* Nothing known (NULL): every key of every touched bucket. */
    n = tally_known_fresh(NULL, NULL, touched, out);
    out[n] = '\0';
    assert_string_equal(out, "0ad7f0ah6f41d7f41h6fffd7fffh6f");
    /* The longest list fits. */
    memset(touched, 0xff, sizeof(touched));
    assert_int_equal(tally_known_fresh(NULL, NULL, touched, out), TALLY_FRESH_MAX);
}

static void test_known_reads_what_a_script_set(void **state)
{
    static const char *const bad[] = {"aa", "aad1", "aax01", "zzd01", "aad80", "aah10", "aadg1"};
    uint8_t day[TALLY_BUCKETS], hour[TALLY_BUCKETS];

    (void)state;
    memset(day, 0xff, sizeof(day));
    memset(hour, 0xff, sizeof(hour));
    assert_int_equal(tally_known_read(S("aad15ffh0caad02"), day, hour), 0);
    assert_int_equal(day[0xaa], 0x17);
    assert_int_equal(hour[0xff], 0x0c);
    assert_int_equal(day[0xff], 0);
    assert_int_equal(hour[0xaa], 0);
    assert_int_equal(day[0], 0); /* cleared first */
    assert_int_equal(tally_known_read(S(""), day, hour), 0);
    assert_int_equal(day[0xaa], 0);
    for (size_t i = 0; i < N_ELEMS(bad); i++)
        assert_int_equal(tally_known_read(bad[i], strlen(bad[i]), day, hour), TALLY_EREDIS);
}

static void test_known_learns_only_of_its_hour_with_nothing_forgotten_since(void **state)
{
    static const struct {
        const char *what, *stamp;
        uint32_t forgets, forgets_now;
        uint8_t day, hour; /* bucket 7's after */
    } cases[] = {
        {"its hour", "2027011508", 5, 5, 0x03, 0x05},
        {"another hour", "2027011507", 5, 5, 0x01, 0x01},
        {"built before a forget", "2027011508", 4, 5, 0x01, 0x01},
        {"a DELETE ended since", "2027011508", 5, 6, 0x01, 0x01},
    };
    uint8_t day[TALLY_BUCKETS] = {0}, hour[TALLY_BUCKETS] = {0};
    struct tally_known k;

    (void)state;
    day[7] = 0x02;
    hour[7] = 0x04;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        known_at_t0(&k);
        tally_known_learn(&k, cases[i].stamp, cases[i].forgets, cases[i].forgets_now, day, hour);
        if (k.day[7] != cases[i].day || k.hour[7] != cases[i].hour) {
            print_error("%s: day %02x hour %02x\n", cases[i].what, k.day[7], k.hour[7]);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_is_forgotten_at_a_new_hour_day_after_10_minutes_or_a_delete),
        cmocka_unit_test(test_known_lists_the_keys_of_touched_buckets_that_may_be_new),
        cmocka_unit_test(test_known_reads_what_a_script_set),
        cmocka_unit_test(test_known_learns_only_of_its_hour_with_nothing_forgotten_since),
    };

    return cmocka_run_group_tests_name("known", tests, NULL, NULL);
}
