/* test_error.c -- tally_strerror: the text of every error code, and of codes it does not know. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "tally/error.h"
#include "unit.h"

static void test_error_names_every_code(void **state)
{
    static const struct {
        int code, value;
        const char *text;
    } cases[] = {
        {TALLY_EINVAL, -1, "invalid argument"},
        {TALLY_ENOMEM, -2, "out of memory"},
        {TALLY_EREDIS, -3, "redis error"},
        {TALLY_ECLOSED, -4, "store is closed"},
        {TALLY_EUNAVAIL, -5, "redis is unavailable"},
        {TALLY_ETIMEDOUT, -6, "redis did not answer in time"},
        {TALLY_EFULL, -7, "too many events held; retry later"},
        {TALLY_EUNKNOWN, -8, "outcome of the write is unknown"},
        {TALLY_EREUSED, -9, "idempotency-key: already used for another body within 24 hours"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(cases[i].code, cases[i].value);
        assert_string_equal(tally_strerror(cases[i].code), cases[i].text);
    }
}

static void test_error_codes_are_distinct_and_negative(void **state)
{
    static const int codes[] = {
#define X(name, code, text) TALLY_##name,
        TALLY_ERRNO_MAP(X)
#undef X
    };

    (void)state;
    assert_int_equal(N_ELEMS(codes), 9);
    for (size_t i = 0; i < N_ELEMS(codes); i++) {
        assert_true(codes[i] < 0);
        assert_string_not_equal(tally_strerror(codes[i]), "unknown error");
        for (size_t j = i + 1; j < N_ELEMS(codes); j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
}

static void test_error_unknown_codes_have_a_generic_text(void **state)
{
    static const int codes[] = {0, 1, 9, -10, -11, -100, INT_MIN, INT_MAX};

    (void)state;
    for (size_t i = 0; i < N_ELEMS(codes); i++)
        assert_string_equal(tally_strerror(codes[i]), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names_every_code),
        cmocka_unit_test(test_error_codes_are_distinct_and_negative),
        cmocka_unit_test(test_error_unknown_codes_have_a_generic_text),
    };

    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
