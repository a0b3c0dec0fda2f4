/* test_fanout.c -- the part of a fan-out that runs without Redis: how a command that could not
 * be made ready to send fails the whole read, and which failure a read reports. A fan-out
 * with commands in flight is driven against a real Redis by the integration tests. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tally/error.h"
#include "tally/fanout.h"
#include "unit.h"

static int dones;

static int on_reply(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    (void)f;
    (void)i;
    (void)reply;
    fail();
    return 0;
}

static void on_done(struct tally_fanout *f, int status)
{
    (void)f;
    (void)status;
    dones++;
}

/* Each case: the failures recorded, in order, and what tally_fanout_end() returns. */
static const struct {
    int fails[2];
    size_t nfails;
    int end;
} fail_cases[] = {
    {{0, 0}, 0, TALLY_EINVAL},                           /* nothing sent, nothing failed */
    {{TALLY_ENOMEM, 0}, 1, TALLY_ENOMEM},                /* the first command's memory */
    {{TALLY_EUNAVAIL, TALLY_ENOMEM}, 2, TALLY_EUNAVAIL}, /* the first failure stays */
    {{0, TALLY_ENOMEM}, 2, TALLY_ENOMEM},                /* 0 is no failure */
};

static void test_fanout_fail(void **state)
{
    (void)state;
    for (size_t c = 0; c < N_ELEMS(fail_cases); c++) {
        struct tally_fanout f;

        dones = 0;
        assert_int_equal(tally_fanout_init(&f, 4, on_reply, on_done, NULL), 0);
        for (size_t k = 0; k < fail_cases[c].nfails; k++)
            assert_int_equal(tally_fanout_fail(&f, fail_cases[c].fails[k]), fail_cases[c].fails[k]);
        assert_int_equal(tally_fanout_end(&f), fail_cases[c].end);
        assert_int_equal(dones, 0); /* nothing was sent: DONE never runs */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fanout_fail),
    };

    return cmocka_run_group_tests_name("fanout", tests, NULL, NULL);
}
