/* test_metrics.c -- /readyz's verdict and body from the worker threads' tally_redis_up. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "tally/metrics.h"
#include "unit.h"

static void test_metrics_readiness_needs_every_thread_up(void **state)
{
    static const struct {
        size_t n;
        int64_t up[4];
        bool ready;
        const char *body;
    } cases[] = {
        {1, {1}, true, "{\"status\":\"ready\"}\n"},
        {4, {1, 1, 1, 1}, true, "{\"status\":\"ready\"}\n"},
        {1, {0}, false,
         "{\"status\":\"unavailable\",\"reason\":\"redis\",\"threads\":1,"
         "\"threads_not_ready\":[0]}\n"},
        {2, {1, 0}, false,
         "{\"status\":\"unavailable\",\"reason\":\"redis\",\"threads\":2,"
         "\"threads_not_ready\":[1]}\n"},
        {2, {0, 1}, false,
         "{\"status\":\"unavailable\",\"reason\":\"redis\",\"threads\":2,"
         "\"threads_not_ready\":[0]}\n"},
        {4, {0, 1, 0, 0}, false,
         "{\"status\":\"unavailable\",\"reason\":\"redis\",\"threads\":4,"
         "\"threads_not_ready\":[0,2,3]}\n"},
    };
    static struct tally_metrics sets[4];
    struct tally_metrics *m[4] = {&sets[0], &sets[1], &sets[2], &sets[3]};
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        for (size_t t = 0; t < cases[i].n; t++)
            tally_gauge_set(&sets[t].redis_up, cases[i].up[t]);
        assert_int_equal(tally_metrics_readiness(&b, m, cases[i].n), cases[i].ready);
        expect_buf(&b, cases[i].body);
    }
    tally_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_readiness_needs_every_thread_up),
    };

    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
