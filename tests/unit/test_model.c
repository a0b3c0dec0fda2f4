/* test_model.c -- the table of metrics and properties, and the model the scripts take. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "tally/model.h"
#include "unit.h"

static void test_model_names_the_metrics_in_order(void **state)
{
    static const struct {
        const char *name, *member;
        bool site;
        unsigned bit;
    } want[] = {
        {"views", "views", true, 0x01},
        {"visitors", "visitors", false, 0x02},
        {"shares", "shares", true, 0x04},
        {"comments", "comments", true, 0x08},
        {"engaged", "engaged_seconds", true, 0x20},
        {"reads", "reads", true, 0x40},
    };
    char list[128];

    (void)state;
    assert_int_equal(N_ELEMS(want), TALLY_METRICS);
    for (int m = 0; m < TALLY_METRICS; m++) {
        assert_string_equal(tally_metric_name((enum tally_metric)m), want[m].name);
        assert_string_equal(tally_metrics[m].member, want[m].member);
        assert_int_equal(tally_metrics[m].site, want[m].site);
        assert_int_equal(tally_metrics[m].bit, want[m].bit);
        assert_int_equal(tally_metric_from(want[m].name, strlen(want[m].name)), m);
    }
    assert_string_equal(tally_metric_name(TALLY_METRICS), "unknown");
    assert_int_equal(tally_metric_from("view", 4), -1);
    assert_int_equal(tally_metric_from("viewsx", 6), -1);
    assert_int_equal(tally_metric_from("Views", 5), -1);
    assert_int_equal(tally_metric_from("engaged_seconds", 15), -1);
    assert_int_equal(tally_metric_from("", 0), -1);
    assert_int_equal(tally_metrics[TALLY_METRIC_ENGAGED].sum, true);
    assert_int_equal(tally_metrics[TALLY_METRIC_VIEWS].sum, false);
    tally_metric_list(list, sizeof(list));
    assert_string_equal(list, "one of views, visitors, shares, comments, engaged, reads");
    tally_metric_list(list, 12);
    assert_string_equal(list, "one of view");
    assert_int_equal(TALLY_PROPERTIES, 1);
    assert_string_equal(tally_properties[0].name, "words");
    assert_string_equal(tally_properties[0].member, "words");
}

static void test_model_expiry_bits(void **state)
{
    (void)state;
    assert_int_equal(TALLY_EXPIRY_VIEWS, 0x01);
    assert_int_equal(TALLY_EXPIRY_VISITORS, 0x02);
    assert_int_equal(TALLY_EXPIRY_SHARES, 0x04);
    assert_int_equal(TALLY_EXPIRY_COMMENTS, 0x08);
    assert_int_equal(TALLY_EXPIRY_SITE, 0x10);
    assert_int_equal(TALLY_EXPIRY_ENGAGED, 0x20);
    assert_int_equal(TALLY_EXPIRY_READS, 0x40);
    assert_int_equal(TALLY_EXPIRY_HOUR_ALL, 0x6f);
    assert_int_equal(TALLY_EXPIRY_DAY_ALL, 0x7f);
}

static void test_model_reaches_stats_members(void **state)
{
    struct tally_stats s;

    (void)state;
    memset(&s, 0, sizeof(s));
    for (int m = 0; m < TALLY_METRICS; m++)
        *tally_stats_metric(&s, (enum tally_metric)m) = 100 + m;
    assert_int_equal(s.views, 100);
    assert_int_equal(s.visitors, 101);
    assert_int_equal(s.shares, 102);
    assert_int_equal(s.comments, 103);
    assert_int_equal(s.engaged_seconds, 104);
    assert_int_equal(s.reads, 105);
    assert_int_equal(s.words, 0);
    for (int k = 0; k < TALLY_NETWORKS; k++)
        assert_int_equal(s.by_network[k], 0);
    for (int m = 0; m < TALLY_METRICS; m++)
        assert_int_equal(tally_stats_get(&s, (enum tally_metric)m), 100 + m);
}

/* What apply.lua and forget.lua are told: lifetimes, then each bit's name from bit 0 up. */
static void test_model_argument_for_the_scripts(void **state)
{
    char out[TALLY_MODEL_ARG_MAX + 1];
    size_t n;

    (void)state;
    memset(out, '#', sizeof(out));
    n = tally_model_arg(out);
    assert_string_equal(
        out, "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+");
    assert_int_equal(n, strlen(out));
    assert_int_equal(TALLY_HOUR_TTL, 9 * 86400);
    assert_int_equal(TALLY_DAY_TTL, 405 * 86400);
    assert_int_equal(TALLY_VISITORS_TTL, 2 * 86400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_names_the_metrics_in_order),
        cmocka_unit_test(test_model_expiry_bits),
        cmocka_unit_test(test_model_reaches_stats_members),
        cmocka_unit_test(test_model_argument_for_the_scripts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
