/* test_salt.c -- which of the two cached salt slots a fetched day's salt goes to, with no
 * network and no Redis. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "tally/salt.h"
#include "unit.h"

static void test_salt_slot_keeps_today_and_tomorrow_and_drops_late_answers(void **state)
{
    static const struct {
        const char *what, *day0, *day1, *day;
        int want;
    } cases[] = {
        {"empty: the first slot", "", "", "20261206", 0},
        {"one day held: the empty slot", "20261206", "", "20261207", 1},
        {"one day held, the other order", "", "20261206", "20261207", 0},
        {"the slot holding the day", "20261206", "20261207", "20261206", 0},
        {"the slot holding the day, second", "20261206", "20261207", "20261207", 1},
        {"a new day replaces the older", "20261206", "20261207", "20261208", 0},
        {"a new day replaces the older, second", "20261208", "20261207", "20261209", 1},
        {"across a month", "20261130", "20261201", "20261202", 0},
        {"across a year", "20261231", "20270101", "20270102", 0},
        {"a late answer for an older day", "20261207", "20261208", "20261206", -1},
        {"a late answer, both slots newer", "20261208", "20261209", "20261207", -1},
        {"an older day than one held, the other empty", "20261207", "", "20261206", 1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = tally_salt_slot(cases[i].day0, cases[i].day1, cases[i].day);

        if (got != cases[i].want) {
            print_error("%s: got %d, want %d\n", cases[i].what, got, cases[i].want);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_salt_slot_keeps_today_and_tomorrow_and_drops_late_answers),
    };

    return cmocka_run_group_tests_name("salt", tests, NULL, NULL);
}
