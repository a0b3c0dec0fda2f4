/* test_reports.c -- the pure half of the reports: parameters of /v1/top and /v1/series, time
 * parsing and formatting, the exact merge of top lists, and the JSON of top, series and
 * totals. Every parse runs as of a fixed NOW; nothing here touches the network. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/buf.h"
#include "tally/error.h"
#include "tally/reports.h"
#include "unit.h"

#define HOUR INT64_C(3600)
#define DAY INT64_C(86400)

/* Unix seconds of a UTC civil time, computed here independently of timegm() (H. Hinnant's
 * days_from_civil). */
static int64_t utc(int y, int m, int d, int hh, int mm, int ss)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (era * 146097 + doe - 719468) * DAY + hh * HOUR + mm * 60 + ss;
}

/* The fixed "now" of every parse: 2027-01-15T08:00:00Z, and a moment inside that hour. */
#define NOW ((time_t)1800000000)
#define NOW_MID ((time_t)(1800000000 + 25 * 60 + 7)) /* 08:25:07 */
#define TODAY (INT64_C(1799971200))                  /* 2027-01-15T00:00:00Z */

static void test_reports_fixed_now_is_what_the_cases_assume(void **state)
{
    (void)state;
    assert_int_equal(utc(2027, 1, 15, 8, 0, 0), (int64_t)NOW);
    assert_int_equal(utc(2027, 1, 15, 0, 0, 0), TODAY);
    assert_int_equal(utc(1970, 1, 1, 0, 0, 0), 0);
    assert_int_equal(utc(2000, 2, 29, 0, 0, 0), 951782400);
    assert_int_equal(utc(2026, 11, 27, 13, 5, 0), 1795784700);
}

/* ERR's message begins with "FIELD: ". */
static void expect_field_first(const struct tally_error *err, const char *field, const char *what)
{
    size_t n = strlen(field);

    if (err->code == NULL || strcmp(err->code, "invalid_parameter") != 0) {
        print_error("'%s': code %s, want invalid_parameter\n", what,
                    err->code != NULL ? err->code : "(null)");
        fail();
    }
    if (strncmp(err->message, field, n) != 0 || err->message[n] != ':' ||
        err->message[n + 1] != ' ') {
        print_error("'%s': message '%s' does not begin with '%s: '\n", what, err->message, field);
        fail();
    }
}

/* ---- Names and periods ---- */

static void test_reports_names_and_period_days(void **state)
{
    (void)state;
    assert_string_equal(tally_metric_name(TALLY_METRIC_VIEWS), "views");
    assert_string_equal(tally_metric_name(TALLY_METRIC_VISITORS), "visitors");
    assert_string_equal(tally_metric_name(TALLY_METRIC_SHARES), "shares");
    assert_string_equal(tally_metric_name(TALLY_METRIC_COMMENTS), "comments");
    assert_string_equal(tally_period_name(TALLY_PERIOD_DAY), "day");
    assert_string_equal(tally_period_name(TALLY_PERIOD_WEEK), "week");
    assert_string_equal(tally_period_name(TALLY_PERIOD_MONTH), "month");
    assert_string_equal(tally_period_name(TALLY_PERIOD_ALL), "all");
    assert_int_equal(tally_period_days(TALLY_PERIOD_DAY), 1);
    assert_int_equal(tally_period_days(TALLY_PERIOD_WEEK), 7);
    assert_int_equal(tally_period_days(TALLY_PERIOD_MONTH), 30);
    assert_int_equal(tally_period_days(TALLY_PERIOD_ALL), 0);
}

/* ---- /v1/top parameters ---- */

static void test_reports_top_parse_accepts(void **state)
{
    static const struct {
        const char *query;
        enum tally_metric metric;
        enum tally_period period;
        unsigned limit;
    } cases[] = {
        {"", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"&&", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"metric=views", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"metric=visitors", TALLY_METRIC_VISITORS, TALLY_PERIOD_DAY, 10},
        {"metric=shares", TALLY_METRIC_SHARES, TALLY_PERIOD_DAY, 10},
        {"metric=comments", TALLY_METRIC_COMMENTS, TALLY_PERIOD_DAY, 10},
        {"period=day", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"period=week", TALLY_METRIC_VIEWS, TALLY_PERIOD_WEEK, 10},
        {"period=month", TALLY_METRIC_VIEWS, TALLY_PERIOD_MONTH, 10},
        {"period=all", TALLY_METRIC_VIEWS, TALLY_PERIOD_ALL, 10},
        {"limit=1", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 1},
        {"limit=100", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 100},
        {"limit=37", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 37},
        {"metric=shares&period=month&limit=5", TALLY_METRIC_SHARES, TALLY_PERIOD_MONTH, 5},
        {"limit=5&period=all&metric=comments", TALLY_METRIC_COMMENTS, TALLY_PERIOD_ALL, 5},
        /* Unknown parameters are ignored, whatever they hold, even repeated. */
        {"foo=bar&limit=5&foo=baz&x", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 5},
        {"limits=0&metrics=likes&Period=year", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"interval=hour&from=garbage&metric=shares", TALLY_METRIC_SHARES, TALLY_PERIOD_DAY, 10},
        /* Names are compared undecoded: an encoded name is an unknown one. */
        {"%6Cimit=500&limit=3", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 3},
        /* Values are percent-decoded. */
        {"metric=%76iews", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10},
        {"metric=%63%6F%6D%6D%65%6E%74%73", TALLY_METRIC_COMMENTS, TALLY_PERIOD_DAY, 10},
        {"period=w%65ek", TALLY_METRIC_VIEWS, TALLY_PERIOD_WEEK, 10},
        {"period=%61ll&limit=%31%30%30", TALLY_METRIC_VIEWS, TALLY_PERIOD_ALL, 100},
        {"limit=%32", TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 2},
        {"&metric=visitors&&period=week&", TALLY_METRIC_VISITORS, TALLY_PERIOD_WEEK, 10},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_top_params p;
        struct tally_error err = {0};
        int rc = tally_top_parse(cases[i].query, strlen(cases[i].query), &p, &err);

        if (rc != 0 || p.metric != cases[i].metric || p.period != cases[i].period ||
            p.limit != cases[i].limit) {
            print_error("'%s': rc %d (%s), got %d/%d/%u, want %d/%d/%u\n", cases[i].query, rc,
                        err.message, p.metric, p.period, p.limit, cases[i].metric, cases[i].period,
                        cases[i].limit);
            fail();
        }
    }
}

static void test_reports_top_parse_handles_no_query(void **state)
{
    struct tally_top_params p;
    struct tally_error err = {0};

    (void)state;
    assert_int_equal(tally_top_parse(NULL, 0, &p, &err), 0);
    assert_int_equal(p.metric, TALLY_METRIC_VIEWS);
    assert_int_equal(p.period, TALLY_PERIOD_DAY);
    assert_int_equal(p.limit, 10);
    /* The length is what counts, not a NUL: the rest of the buffer is not the query. */
    assert_int_equal(tally_top_parse("limit=5&limit=0", 7, &p, &err), 0);
    assert_int_equal(p.limit, 5);
}

static void test_reports_top_parse_rejects(void **state)
{
    static const struct {
        const char *query, *field;
    } cases[] = {
        {"limit=0", "limit"},
        {"limit=101", "limit"},
        {"limit=1000", "limit"},
        {"limit=abc", "limit"},
        {"limit=-1", "limit"},
        {"limit=1.5", "limit"},
        {"limit=", "limit"},
        {"limit", "limit"},
        {"limit=+5", "limit"},
        {"limit=%205", "limit"},
        {"limit=5%20", "limit"},
        {"limit=5+", "limit"}, /* '+' is a space in a query */
        {"limit=1e2", "limit"},
        {"limit=0x10", "limit"},
        {"limit=99999999999999999999999999", "limit"},
        {"limit=18446744073709551617", "limit"},
        {"limit=%zz", "limit"},
        {"limit=5%", "limit"},
        {"limit=%00", "limit"},
        {"metric=", "metric"},
        {"metric=likes", "metric"},
        {"metric=Views", "metric"},
        {"metric=VIEWS", "metric"},
        {"metric=view", "metric"},
        {"metric=viewsx", "metric"},
        {"metric=views+", "metric"},
        {"metric=%76iew", "metric"},
        {"metric=views%00", "metric"},
        {"period=", "period"},
        {"period=year", "period"},
        {"period=Day", "period"},
        {"period=days", "period"},
        {"period=7", "period"},
        /* A known parameter given twice is an error, even with the same value. */
        {"limit=5&limit=5", "limit"},
        {"limit=5&limit=6", "limit"},
        {"metric=views&metric=shares", "metric"},
        {"metric=views&metric=views", "metric"},
        {"period=day&limit=3&period=week", "period"},
        {"period=day&period=", "period"},
        /* A value too long to be any good. */
        {"metric=vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
         "metric"},
        /* A good parameter before a bad one does not save it. */
        {"metric=shares&period=all&limit=0", "limit"},
        {"limit=3&metric=likes", "metric"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_top_params p;
        struct tally_error err = {0};
        int rc = tally_top_parse(cases[i].query, strlen(cases[i].query), &p, &err);

        if (rc != TALLY_EINVAL) {
            print_error("'%s': rc %d, want TALLY_EINVAL (limit %u)\n", cases[i].query, rc, p.limit);
            fail();
        }
        expect_field_first(&err, cases[i].field, cases[i].query);
    }
}

static void test_reports_top_parse_messages(void **state)
{
    struct tally_top_params p;
    struct tally_error err = {0};

    (void)state;
    assert_int_equal(tally_top_parse(S("limit=0"), &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "limit: an integer from 1 to 100");
    assert_int_equal(tally_top_parse(S("metric=likes"), &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "metric: one of views, visitors, shares, comments, engaged, reads");
    assert_int_equal(tally_top_parse(S("period=year"), &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "period: one of day, week, month, all");
    assert_int_equal(tally_top_parse(S("limit=5&limit=5"), &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "limit: given twice or malformed");
}

static void test_reports_totals_parse(void **state)
{
    static const struct {
        const char *query;
        int rc;
        enum tally_period period;
    } cases[] = {
        {"", 0, TALLY_PERIOD_DAY},
        {"period=day", 0, TALLY_PERIOD_DAY},
        {"period=week", 0, TALLY_PERIOD_WEEK},
        {"period=month", 0, TALLY_PERIOD_MONTH},
        {"period=all", 0, TALLY_PERIOD_ALL},
        {"period=%61ll", 0, TALLY_PERIOD_ALL},
        {"metric=likes&limit=0&period=week", 0, TALLY_PERIOD_WEEK},
        {"period=year", TALLY_EINVAL, 0},
        {"period=", TALLY_EINVAL, 0},
        {"period=day&period=day", TALLY_EINVAL, 0},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        enum tally_period period = TALLY_PERIOD_ALL;
        struct tally_error err = {0};
        int rc = tally_totals_parse(cases[i].query, strlen(cases[i].query), &period, &err);

        if (rc != cases[i].rc || (rc == 0 && period != cases[i].period)) {
            print_error("'%s': rc %d period %d\n", cases[i].query, rc, period);
            fail();
        }
        if (rc != 0)
            expect_field_first(&err, "period", cases[i].query);
    }
}

/* ---- Time ---- */

static void test_reports_time_parse_accepts(void **state)
{
    const struct {
        const char *s;
        int64_t want;
    } cases[] = {
        {"2026-11-27", utc(2026, 11, 27, 0, 0, 0)},
        {"1970-01-01", 0},
        {"1970-01-01T00:00:00Z", 0},
        {"2027-01-15", TODAY},
        {"2026-11-27T13:05:00Z", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27t13:05:00z", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27T13:05:00z", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27t13:05:00Z", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27T00:00:00Z", utc(2026, 11, 27, 0, 0, 0)},
        {"2026-11-27T23:59:59Z", utc(2026, 11, 27, 23, 59, 59)},
        {"2026-12-31T23:59:59Z", utc(2026, 12, 31, 23, 59, 59)},
        /* Fractions of a second are allowed and dropped. */
        {"2026-11-27T13:05:07.5Z", utc(2026, 11, 27, 13, 5, 7)},
        {"2026-11-27T13:05:07.999999999Z", utc(2026, 11, 27, 13, 5, 7)},
        {"2026-11-27T13:05:07.000Z", utc(2026, 11, 27, 13, 5, 7)},
        /* Numeric offsets are converted to UTC. */
        {"2026-11-27T13:05:00+02:00", utc(2026, 11, 27, 11, 5, 0)},
        {"2026-11-27T13:05:00-05:30", utc(2026, 11, 27, 18, 35, 0)},
        {"2026-11-27T13:05:00+00:00", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27T13:05:00-00:00", utc(2026, 11, 27, 13, 5, 0)},
        {"2026-11-27T13:05:00+23:59", utc(2026, 11, 26, 13, 6, 0)},
        {"2026-11-27T01:00:00+02:00", utc(2026, 11, 26, 23, 0, 0)}, /* the day before */
        {"2026-11-27T23:30:00-05:30", utc(2026, 11, 28, 5, 0, 0)},  /* the day after */
        {"2026-12-31T22:00:00-03:00", utc(2027, 1, 1, 1, 0, 0)},    /* the year after */
        {"2026-11-27T13:05:07.25+02:00", utc(2026, 11, 27, 11, 5, 7)},
        /* Leap days. */
        {"2024-02-29", utc(2024, 2, 29, 0, 0, 0)},
        {"2000-02-29", 951782400},
        {"2028-02-29T12:00:00Z", utc(2028, 2, 29, 12, 0, 0)},
        {"2026-01-31", utc(2026, 1, 31, 0, 0, 0)},
        {"2026-04-30", utc(2026, 4, 30, 0, 0, 0)},
        {"9999-12-31", utc(9999, 12, 31, 0, 0, 0)},
        /* The ends of what can be written back: 1970 to 9999, offsets applied. */
        {"9999-12-31T23:59:59Z", utc(9999, 12, 31, 23, 59, 59)},
        {"9999-12-31T23:59:59.999Z", utc(9999, 12, 31, 23, 59, 59)},
        {"9999-12-31T23:00:00+23:00", utc(9999, 12, 31, 0, 0, 0)},
        {"1970-01-01T01:00:00+01:00", 0},
        {"1970-01-01T00:00:00-23:59", utc(1970, 1, 1, 23, 59, 0)},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int64_t got = -12345;
        int rc = tally_time_parse(cases[i].s, strlen(cases[i].s), &got);

        if (rc != 0 || got != cases[i].want) {
            print_error("'%s': rc %d, got %lld, want %lld\n", cases[i].s, rc, (long long)got,
                        (long long)cases[i].want);
            fail();
        }
    }
}

static void test_reports_time_parse_rejects(void **state)
{
    static const char *const cases[] = {
        "",
        "garbage",
        "2026-02-30",
        "2026-02-29", /* not a leap year */
        "2100-02-29", /* neither */
        "2026-04-31",
        "2026-11-31",
        "2026-11-32",
        "2026-11-99",
        "2026-11-00",
        "2026-13-01",
        "2026-00-10",
        "1969-12-31",
        "1969-12-31T23:59:59Z",
        "0000-01-01",
        "2026-11-27T24:00:00Z",
        "2026-11-27T13:60:00Z",
        "2026-11-27T25:00:00Z",
        "2026-11-27 13:00:00Z",
        "2026-11-27_13:00:00Z",
        "2026-11-27T13:05:00",     /* no offset */
        "2026-11-27T13:05:00.123", /* no offset after a fraction */
        "2026-11-27T13:05:00.Z",   /* an empty fraction */
        "2026-11-27T13:05Z",       /* no seconds */
        "2026-11-27T13:05:00ZZ",
        "2026-11-27T13:05:00Z ",
        "2026-11-27T13:05:00 Z",
        "2026-11-27T13:05:00UTC",
        "2026-11-27T13:05:00+0200",
        "2026-11-27T13:05:00+02",
        "2026-11-27T13:05:00+2:00",
        "2026-11-27T13:05:00+24:00",
        "2026-11-27T13:05:00+02:60",
        "2026-11-27T13:05:00 02:00", /* '+' decoded to a space */
        "2026-11-27T13:05:00+02:00x",
        "2026-11-27T1:05:00Z",
        "2026-11-27T13:5:00Z",
        "2026-11-27T",
        "2026-11-27x",
        "2026-11-27Z",
        "2026-11-2",
        "2026-1-27",
        "26-11-27",
        "20261127",
        "2026/11/27",
        "2026-11-27T13-05-00Z",
        " 2026-11-27",
        "+2026-11-27",
        "-2026-11-27",
        "2026-1a-27",
        "202a-11-27",
        "2026-11-2a",
        "2026-11-27T1a:05:00Z",
        "1800000000",
        /* Past 9999 or before 1970 once the offset is applied: nothing could write it back. */
        "9999-12-31T23:00:00-23:00",
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:59:60Z",
        "1970-01-01T00:30:00+01:00",
        "1970-01-01T00:00:00+00:01",
        "1970-01-01T00:00:59.9+00:01",
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int64_t got = -12345;
        int rc = tally_time_parse(cases[i], strlen(cases[i]), &got);

        if (rc != TALLY_EINVAL) {
            print_error("'%s': rc %d (got %lld), want TALLY_EINVAL\n", cases[i], rc,
                        (long long)got);
            fail();
        }
    }
}

/* The length is explicit: bytes past it are not read, and a NUL is not an end. */
static void test_reports_time_parse_uses_the_length(void **state)
{
    int64_t got;

    (void)state;
    assert_int_equal(tally_time_parse("2026-11-27T13:05:00Zjunk", 20, &got), 0);
    assert_int_equal(got, utc(2026, 11, 27, 13, 5, 0));
    assert_int_equal(tally_time_parse("2026-11-27junk", 10, &got), 0);
    assert_int_equal(got, utc(2026, 11, 27, 0, 0, 0));
    assert_int_equal(tally_time_parse("2026-11-27T13:05:00Z", 19, &got), TALLY_EINVAL);
    assert_int_equal(tally_time_parse("2026-11-27", 9, &got), TALLY_EINVAL);
    assert_int_equal(tally_time_parse("2026-11-27\0T13:05:00Z", 21, &got), TALLY_EINVAL);
}

static void test_reports_time_format(void **state)
{
    const struct {
        int64_t t;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00Z"},
        {1800000000, "2027-01-15T08:00:00Z"},
        {1800000000 + 3599, "2027-01-15T08:59:59Z"},
        {TODAY, "2027-01-15T00:00:00Z"},
        {TODAY - 1, "2027-01-14T23:59:59Z"},
        {951782400, "2000-02-29T00:00:00Z"},
        {utc(2026, 11, 27, 13, 5, 0), "2026-11-27T13:05:00Z"},
        {utc(2026, 12, 31, 23, 59, 59), "2026-12-31T23:59:59Z"},
        {utc(9999, 12, 31, 23, 59, 59), "9999-12-31T23:59:59Z"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char out[21];
        int64_t back;

        memset(out, 'x', sizeof(out));
        assert_int_equal(tally_time_format(cases[i].t, out), TALLY_TIME_LEN);
        assert_int_equal(strlen(out), 20);
        assert_string_equal(out, cases[i].want);
        /* What is written is read back. */
        assert_int_equal(tally_time_parse(out, strlen(out), &back), 0);
        assert_int_equal(back, cases[i].t);
    }
}

/* What cannot be written leaves an empty string, never unterminated bytes. */
static void test_reports_time_format_refuses_what_it_cannot_write(void **state)
{
    const int64_t cases[] = {-1, -3600, INT64_MIN, TALLY_TIME_MAX + 1,
                             utc(10000, 1, 1, 22, 0, 0), INT64_MAX};

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char out[TALLY_TIME_LEN + 1];

        memset(out, 'x', sizeof(out));
        assert_int_equal(tally_time_format(cases[i], out), 0);
        assert_string_equal(out, "");
    }
    {
        char out[TALLY_TIME_LEN + 1];

        assert_int_equal(tally_time_format(TALLY_TIME_MAX, out), TALLY_TIME_LEN);
        assert_string_equal(out, "9999-12-31T23:59:59Z");
    }
}

/* ---- /v1/series parameters ---- */

static void test_reports_series_parse_accepts(void **state)
{
    const int64_t d1201 = utc(2026, 12, 1, 0, 0, 0);
    const int64_t d0110 = utc(2027, 1, 10, 0, 0, 0); /* within the 8 days of hourly points */
    const struct {
        const char *query;
        time_t now;
        enum tally_metric metric;
        enum tally_interval interval;
        int64_t from, to;
        size_t n;
    } cases[] = {
        /* Defaults: the last 30 UTC days ending today, and the last 24 hours ending this hour. */
        {"", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, TODAY - 29 * DAY, TODAY, 30},
        {"", NOW_MID, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, TODAY - 29 * DAY, TODAY, 30},
        {"interval=day", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, TODAY - 29 * DAY, TODAY, 30},
        {"interval=hour", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR, (int64_t)NOW - 23 * HOUR,
         (int64_t)NOW, 24},
        {"interval=hour", NOW_MID, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR,
         (int64_t)NOW - 23 * HOUR, (int64_t)NOW, 24},
        {"interval=hour", (time_t)TODAY, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR, TODAY - 23 * HOUR,
         TODAY, 24},
        {"interval=day", (time_t)(TODAY - 1), TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY,
         TODAY - 30 * DAY, TODAY - DAY, 30},
        /* Every metric. */
        {"metric=visitors", NOW, TALLY_METRIC_VISITORS, TALLY_INTERVAL_DAY, TODAY - 29 * DAY, TODAY,
         30},
        {"metric=shares&interval=hour", NOW, TALLY_METRIC_SHARES, TALLY_INTERVAL_HOUR,
         (int64_t)NOW - 23 * HOUR, (int64_t)NOW, 24},
        {"interval=day&metric=comments", NOW, TALLY_METRIC_COMMENTS, TALLY_INTERVAL_DAY,
         TODAY - 29 * DAY, TODAY, 30},
        /* Both ends given: rounded down to their interval, both included. */
        {"from=2026-12-01&to=2026-12-05", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, d1201,
         d1201 + 4 * DAY, 5},
        {"from=2026-12-01&to=2026-12-01", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, d1201, d1201,
         1},
        {"from=2026-12-01T23:59:59Z&to=2026-12-03T00:00:01Z", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_DAY, d1201, d1201 + 2 * DAY, 3},
        {"interval=hour&from=2027-01-10T13:59:59Z&to=2027-01-10T15:00:00Z", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, d0110 + 13 * HOUR, d0110 + 15 * HOUR, 3},
        {"interval=hour&from=2027-01-10T13:00:00Z&to=2027-01-10T13:00:00Z", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, d0110 + 13 * HOUR, d0110 + 13 * HOUR, 1},
        /* Offsets are converted before rounding: 01:30+02:00 is the 30th at 23:30 UTC. */
        {"from=2026-12-01T01:30:00%2B02:00&to=2026-12-02", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_DAY, d1201 - DAY, d1201 + DAY, 3},
        {"interval=hour&from=2027-01-10T13%3A05%3A00-05%3A30&to=2027-01-10T19:00:00Z", NOW,
         TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR, d0110 + 18 * HOUR, d0110 + 19 * HOUR, 2},
        /* Only from: that much from it; only to: that much up to it. */
        {"from=2026-12-01", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, d1201, d1201 + 29 * DAY,
         30},
        {"to=2026-12-01", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, d1201 - 29 * DAY, d1201, 30},
        {"to=2026-12-01T17:45:00Z", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, d1201 - 29 * DAY,
         d1201, 30},
        {"interval=hour&from=2027-01-10T05:00:00Z", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR,
         d0110 + 5 * HOUR, d0110 + 28 * HOUR, 24},
        {"interval=hour&to=2027-01-10T05:10:00Z", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR,
         d0110 + 5 * HOUR - 23 * HOUR, d0110 + 5 * HOUR, 24},
        /* Retention: hourly points reach back 8 days from this hour, daily ones 400 days. */
        {"interval=hour&from=2027-01-07T08:00:00Z", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR,
         (int64_t)NOW - 192 * HOUR, (int64_t)NOW - 169 * HOUR, 24},
        {"interval=hour&from=2027-01-07T08:00:00Z", NOW_MID, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, (int64_t)NOW - 192 * HOUR, (int64_t)NOW - 169 * HOUR, 24},
        {"from=2025-12-11", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, TODAY - 400 * DAY,
         TODAY - 371 * DAY, 30},
        /* The last moment that can be written: its hour and day. */
        {"interval=hour&to=9999-12-31T23:59:59Z", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_HOUR,
         utc(9999, 12, 31, 0, 0, 0), utc(9999, 12, 31, 23, 0, 0), 24},
        {"from=9999-12-02", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, utc(9999, 12, 2, 0, 0, 0),
         utc(9999, 12, 31, 0, 0, 0), 30},
        /* The future is allowed (zeros). */
        {"from=2027-01-10&to=2027-01-20", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY,
         TODAY - 5 * DAY, TODAY + 5 * DAY, 11},
        /* The most points: 744 hourly (31 days), 731 daily. */
        {"interval=hour&from=2027-01-10&to=2027-02-09T23:00:00Z", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, d0110, d0110 + 743 * HOUR, 744},
        {"interval=hour&from=2027-01-10&to=2027-02-09T23:59:59Z", NOW, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, d0110, d0110 + 743 * HOUR, 744},
        {"from=2026-01-01&to=2028-01-01", NOW, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY,
         utc(2026, 1, 1, 0, 0, 0), utc(2028, 1, 1, 0, 0, 0), 731},
        /* Near the start of 1970, as of a clock there. */
        {"from=1970-01-01&to=1970-01-02", (time_t)DAY, TALLY_METRIC_VIEWS, TALLY_INTERVAL_DAY, 0,
         DAY, 2},
        {"interval=hour&from=1970-01-01T01:30:00%2B01:00", (time_t)HOUR, TALLY_METRIC_VIEWS,
         TALLY_INTERVAL_HOUR, 0, 23 * HOUR, 24},
        /* Unknown parameters are ignored; values are percent-decoded. */
        {"period=year&limit=0&interval=%64ay&metric=%73hares", NOW, TALLY_METRIC_SHARES,
         TALLY_INTERVAL_DAY, TODAY - 29 * DAY, TODAY, 30},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_series_params p;
        struct tally_error err = {0};
        int rc = tally_series_parse(cases[i].query, strlen(cases[i].query), cases[i].now, &p, &err);

        if (rc != 0 || p.metric != cases[i].metric || p.interval != cases[i].interval ||
            p.from != cases[i].from || p.to != cases[i].to || p.n != cases[i].n) {
            print_error("'%s': rc %d (%s): got %d/%d %lld..%lld n %zu, "
                        "want %d/%d %lld..%lld n %zu\n",
                        cases[i].query, rc, err.message, p.metric, p.interval, (long long)p.from,
                        (long long)p.to, p.n, cases[i].metric, cases[i].interval,
                        (long long)cases[i].from, (long long)cases[i].to, cases[i].n);
            fail();
        }
    }
}

static void test_reports_series_parse_rejects(void **state)
{
    static const struct {
        const char *query, *field;
    } cases[] = {
        {"metric=likes", "metric"},
        {"metric=", "metric"},
        {"metric=Views", "metric"},
        {"interval=week", "interval"},
        {"interval=minute", "interval"},
        {"interval=Hour", "interval"},
        {"interval=hours", "interval"},
        {"interval=", "interval"},
        {"interval", "interval"},
        {"interval=hour&interval=hour", "interval"},
        {"metric=views&metric=views", "metric"},
        {"from=2026-12-01&from=2026-12-01", "from"},
        {"to=2026-12-01&to=2026-12-02", "to"},
        {"from=2026-02-30", "from"},
        {"from=garbage", "from"},
        {"from=", "from"},
        {"from=1969-12-31", "from"},
        {"to=2026-13-01", "to"},
        {"to=2026-11-27T24:00:00Z", "to"},
        {"to=2026-11-27T13:00:00", "to"},
        /* An unencoded '+' is a space: the offset is then malformed. */
        {"from=2026-11-27T13:00:00+02:00", "from"},
        {"from=%zz", "from"},
        /* From after to. */
        {"from=2026-12-02&to=2026-12-01", "from"},
        {"interval=hour&from=2026-12-01T14:00:00Z&to=2026-12-01T13:00:00Z", "from"},
        /* Too many points. */
        {"interval=hour&from=2026-12-01&to=2027-01-01", "from"},
        {"interval=hour&from=2026-01-01&to=2027-01-01", "from"},
        {"from=2025-01-01&to=2027-01-02", "from"},
        {"from=1970-01-01&to=2027-01-01", "from"},
        /* Before 1970 or past 9999 once the offset is applied. */
        {"interval=hour&from=9999-12-31T23:00:00-23:00", "from"},
        {"interval=hour&from=1970-01-01T00:30:00%2B01:00", "from"},
        {"to=9999-12-31T23:59:59-00:01", "to"},
        /* A default end past 9999. */
        {"interval=hour&from=9999-12-31T23:00:00Z", "to"},
        {"from=9999-12-03", "to"},
        /* Past what the buckets keep. */
        {"interval=hour&from=2027-01-07T07:59:59Z", "from"},
        {"interval=hour&from=2026-12-01T13:00:00Z&to=2026-12-01T15:00:00Z", "from"},
        {"interval=hour&to=2027-01-08T06:00:00Z", "from"},
        {"from=2025-12-10", "from"},
        {"from=2025-01-01&to=2025-01-02", "from"},
        {"to=2026-01-08", "from"},
        {"from=1970-01-01&to=1970-01-02", "from"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_series_params p;
        struct tally_error err = {0};
        int rc = tally_series_parse(cases[i].query, strlen(cases[i].query), NOW, &p, &err);
        if (rc != TALLY_EINVAL) {
            print_error("'%s': rc %d (n %zu), want TALLY_EINVAL\n", cases[i].query, rc, p.n);
            fail();
        }
        expect_field_first(&err, cases[i].field, cases[i].query);
    }
}

static void test_reports_series_parse_messages(void **state)
{
    struct tally_series_params p;
    struct tally_error err = {0};

    (void)state;
    assert_int_equal(tally_series_parse(S("from=2026-12-02&to=2026-12-01"), NOW, &p, &err),
                     TALLY_EINVAL);
    assert_string_equal(err.message, "from: must not be after to");
    assert_int_equal(
        tally_series_parse(S("interval=hour&from=2026-12-01&to=2027-01-01"), NOW, &p, &err),
        TALLY_EINVAL);
    assert_string_equal(err.message, "from: an hourly series has at most 744 points");
    assert_int_equal(tally_series_parse(S("from=2025-01-01&to=2027-01-02"), NOW, &p, &err),
                     TALLY_EINVAL);
    assert_string_equal(err.message, "from: a daily series has at most 731 points");
    assert_int_equal(tally_series_parse(S("interval=week"), NOW, &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "interval: hour or day");
    assert_int_equal(tally_series_parse(S("to=nope"), NOW, &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "to: YYYY-MM-DD or RFC 3339 (2026-11-27T13:00:00Z)");
    assert_int_equal(tally_series_parse(S("interval=hour&from=2027-01-01"), NOW_MID, &p, &err),
                     TALLY_EINVAL);
    assert_string_equal(err.message,
                        "from: hourly points are kept 8 days; the earliest is 2027-01-07T08:00:00Z");
    assert_int_equal(tally_series_parse(S("from=2025-01-01"), NOW, &p, &err), TALLY_EINVAL);
    assert_string_equal(err.message,
                        "from: daily points are kept 400 days; the earliest is 2025-12-11T00:00:00Z");
}

/* ---- Merging top lists ---- */

struct cand {
    const char *id;
    int64_t count;
};

static void top_init(struct tally_top *t, unsigned limit)
{
    memset(t, 0, sizeof(*t));
    t->p = (struct tally_top_params){TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, limit};
    tally_buf_init(&t->arena);
}

/* T holds exactly WANT ("id=count|id=count..."). */
static void top_expect(const struct tally_top *t, const char *want, const char *what)
{
    char got[8192];
    size_t len = 0;

    got[0] = '\0';
    for (size_t i = 0; i < t->n; i++) {
        int w = snprintf(got + len, sizeof(got) - len, "%s%.*s=%lld", i > 0 ? "|" : "",
                         (int)t->entries[i].len, t->entries[i].id, (long long)t->entries[i].count);

        assert_true(w > 0 && (size_t)w < sizeof(got) - len);
        len += (size_t)w;
    }
    if (strcmp(got, want) != 0) {
        print_error("%s: got '%s', want '%s'\n", what, got, want);
        fail();
    }
}

static void test_reports_top_merge_table(void **state)
{
    static const struct cand all_kinds[] = {
        {"b", 5}, {"a", 5},   {"c", 9},   {"ab", 5}, {"B", 5}, {"\xc3\xa9", 5},
        {"z", 1}, {"a/b", 5}, {"{x}", 5}, {"}x", 5}, {"a", 0},
    };
    static const struct {
        const char *what;
        const struct cand *c;
        size_t n;
        unsigned limit;
        const char *want;
    } cases[] = {
        {"empty", NULL, 0, 10, ""},
        {"count descending, then id ascending bytewise", all_kinds, 11, 100,
         /* Bytewise: 'B' (0x42) < 'a' < "a/b" < "ab" < 'b' < '{' < '}' < 0xC3; a prefix first. */
         "c=9|B=5|a=5|a/b=5|ab=5|b=5|{x}=5|}x=5|\xc3\xa9=5|z=1"},
        {"limit 3", all_kinds, 11, 3, "c=9|B=5|a=5"},
        {"ties at the limit are resolved by id", all_kinds, 11, 4, "c=9|B=5|a=5|a/b=5"},
        {"limit 1", all_kinds, 11, 1, "c=9"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_top t;

        top_init(&t, cases[i].limit);
        for (size_t k = 0; k < cases[i].n; k++)
            assert_int_equal(
                tally_top_add(&t, cases[i].c[k].id, strlen(cases[i].c[k].id), cases[i].c[k].count),
                0);
        tally_top_finish(&t);
        top_expect(&t, cases[i].want, cases[i].what);
        tally_top_release(&t);
    }
}

static void test_reports_top_keeps_each_article_once(void **state)
{
    static const struct {
        const char *what;
        struct cand c[6];
        size_t n;
        unsigned limit;
        const char *want;
    } cases[] = {
        {"larger first", {{"x", 7}, {"x", 3}, {"y", 5}}, 3, 10, "x=7|y=5"},
        {"larger last", {{"x", 3}, {"y", 5}, {"x", 7}}, 3, 10, "x=7|y=5"},
        {"same count twice", {{"x", 4}, {"x", 4}, {"y", 4}}, 3, 10, "x=4|y=4"},
        {"a repeat does not use up the limit",
         {{"x", 9}, {"x", 9}, {"x", 8}, {"y", 1}},
         4,
         2,
         "x=9|y=1"},
        {"prefixes are other articles", {{"x", 2}, {"xx", 2}, {"x", 1}}, 3, 10, "x=2|xx=2"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_top t;

        top_init(&t, cases[i].limit);
        for (size_t k = 0; k < cases[i].n; k++)
            assert_int_equal(
                tally_top_add(&t, cases[i].c[k].id, strlen(cases[i].c[k].id), cases[i].c[k].count),
                0);
        tally_top_finish(&t);
        top_expect(&t, cases[i].want, cases[i].what);
        tally_top_release(&t);
    }
}

/* Ids with bytes that a signed comparison or a C-string comparison would get wrong. */
static void test_reports_top_orders_raw_bytes(void **state)
{
    struct tally_top t;

    (void)state;
    top_init(&t, 10);
    assert_int_equal(tally_top_add(&t, "\xff", 1, 3), 0);
    assert_int_equal(tally_top_add(&t, "\x7f", 1, 3), 0);
    assert_int_equal(tally_top_add(&t, "\x80", 1, 3), 0);
    assert_int_equal(tally_top_add(&t, "A", 1, 3), 0);
    assert_int_equal(tally_top_add(&t, "AB", 2, 3), 0);
    tally_top_finish(&t);
    assert_int_equal(t.n, 5);
    assert_memory_equal(t.entries[0].id, "A", 1);
    assert_int_equal(t.entries[0].len, 1);
    assert_memory_equal(t.entries[1].id, "AB", 2);
    assert_memory_equal(t.entries[2].id, "\x7f", 1);
    assert_memory_equal(t.entries[3].id, "\x80", 1);
    assert_memory_equal(t.entries[4].id, "\xff", 1);
    tally_top_release(&t);
}

/* Reference order of the brute force below. */
struct ref {
    char id[16];
    int64_t count;
};

static int ref_order(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;

    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->id, y->id); /* ASCII ids: bytewise */
}

/* Many candidates (the array and the arena grow and move), shuffled, with many ties and every
 * article offered several times with lower counts too: the merge equals a sort of the
 * per-article maxima, for every limit. */
static void test_reports_top_matches_brute_force(void **state)
{
    enum { ARTICLES = 700, COPIES = 3 };
    static struct ref ref[ARTICLES];
    static struct ref cands[ARTICLES * COPIES];
    static const unsigned limits[] = {1, 2, 7, 10, 50, 99, 100};
    uint32_t seed = 12345;

    (void)state;
    for (size_t i = 0; i < ARTICLES; i++) {
        seed = seed * 1103515245u + 12345u;
        snprintf(ref[i].id, sizeof(ref[i].id), "art-%03zu/%u", (i * 7919) % ARTICLES,
                 (unsigned)(seed >> 16) % 3);
        ref[i].count = (int64_t)((seed >> 8) % 40) + 1; /* many ties */
        for (size_t c = 0; c < COPIES; c++) {
            cands[i * COPIES + c] = ref[i];
            if (c > 0)
                cands[i * COPIES + c].count -= (int64_t)c; /* lower repeats */
        }
    }
    /* Shuffle the candidates (Fisher-Yates). */
    for (size_t i = N_ELEMS(cands) - 1; i > 0; i--) {
        struct ref tmp;
        size_t j;

        seed = seed * 1103515245u + 12345u;
        j = (seed >> 8) % (i + 1);
        tmp = cands[i];
        cands[i] = cands[j];
        cands[j] = tmp;
    }
    qsort(ref, ARTICLES, sizeof(ref[0]), ref_order);
    for (size_t l = 0; l < N_ELEMS(limits); l++) {
        struct tally_top t;

        top_init(&t, limits[l]);
        for (size_t i = 0; i < N_ELEMS(cands); i++)
            assert_int_equal(tally_top_add(&t, cands[i].id, strlen(cands[i].id), cands[i].count),
                             0);
        tally_top_finish(&t);
        assert_int_equal(t.n, limits[l]);
        for (size_t i = 0; i < t.n; i++) {
            if (t.entries[i].len != strlen(ref[i].id) ||
                memcmp(t.entries[i].id, ref[i].id, t.entries[i].len) != 0 ||
                t.entries[i].count != ref[i].count) {
                print_error("limit %u, rank %zu: got %.*s=%lld, want %s=%lld\n", limits[l], i,
                            (int)t.entries[i].len, t.entries[i].id, (long long)t.entries[i].count,
                            ref[i].id, (long long)ref[i].count);
                fail();
            }
        }
        tally_top_release(&t);
    }
}

/* ---- JSON ---- */

static void test_reports_top_render(void **state)
{
    struct tally_top t;
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    top_init(&t, 10);
    tally_top_finish(&t);
    tally_top_render(&b, &t);
    expect_buf(&b, "{\"metric\":\"views\",\"period\":\"day\",\"articles\":[]}");
    tally_top_release(&t);

    top_init(&t, 10);
    t.p.metric = TALLY_METRIC_SHARES;
    t.p.period = TALLY_PERIOD_WEEK;
    assert_int_equal(tally_top_add(&t, S("news/2025/kim-missiles"), 12), 0);
    assert_int_equal(tally_top_add(&t, S("caf\xc3\xa9/{x}"), 7), 0);
    assert_int_equal(tally_top_add(&t, S("q\"uo\\te"), 7), 0);
    assert_int_equal(tally_top_add(&t, S("big"), INT64_C(12345678901234)), 0);
    tally_top_finish(&t);
    tally_buf_reset(&b);
    tally_top_render(&b, &t);
    expect_buf(&b, "{\"metric\":\"shares\",\"period\":\"week\",\"articles\":["
                    "{\"article\":\"big\",\"count\":12345678901234},"
                    "{\"article\":\"news/2025/kim-missiles\",\"count\":12},"
                    "{\"article\":\"caf\xc3\xa9/{x}\",\"count\":7},"
                    "{\"article\":\"q\\\"uo\\\\te\",\"count\":7}]}");
    tally_top_release(&t);

    for (int m = 0; m < TALLY_METRICS; m++) {
        static const char *const want[] = {
            "{\"metric\":\"views\",\"period\":\"all\",\"articles\":[{\"article\":\"a\",\"count\":1}"
            "]}",
            "{\"metric\":\"visitors\",\"period\":\"all\",\"articles\":[{\"article\":\"a\","
            "\"count\":1}]}",
            "{\"metric\":\"shares\",\"period\":\"all\",\"articles\":[{\"article\":\"a\",\"count\":"
            "1}]}",
            "{\"metric\":\"comments\",\"period\":\"all\",\"articles\":[{\"article\":\"a\","
            "\"count\":1}]}",
            "{\"metric\":\"engaged\",\"period\":\"all\",\"articles\":[{\"article\":\"a\","
            "\"count\":1}]}",
            "{\"metric\":\"reads\",\"period\":\"all\",\"articles\":[{\"article\":\"a\","
            "\"count\":1}]}",
        };

        top_init(&t, 1);
        t.p.metric = (enum tally_metric)m;
        t.p.period = TALLY_PERIOD_ALL;
        assert_int_equal(tally_top_add(&t, S("a"), 1), 0);
        tally_top_finish(&t);
        tally_buf_reset(&b);
        tally_top_render(&b, &t);
        expect_buf(&b, want[m]);
        tally_top_release(&t);
    }
    top_init(&t, 1);
    t.p.period = TALLY_PERIOD_MONTH;
    tally_buf_reset(&b);
    tally_top_finish(&t);
    tally_top_render(&b, &t);
    expect_buf(&b, "{\"metric\":\"views\",\"period\":\"month\",\"articles\":[]}");
    tally_top_release(&t);
    tally_buf_release(&b);
}

static void test_reports_series_render(void **state)
{
    struct tally_series s;
    struct tally_series_params p;
    struct tally_error err = {0};
    struct tally_buf b;
    int64_t values[3] = {0, 7, 12345678901};

    (void)state;
    tally_buf_init(&b);
    assert_int_equal(tally_series_parse(S("from=2027-01-13&to=2027-01-15"), NOW, &p, &err), 0);
    memset(&s, 0, sizeof(s));
    s.p = p;
    s.id = "news/2025/kim-missiles";
    s.len = (uint16_t)strlen(s.id);
    s.values = values;
    tally_series_render(&b, &s);
    expect_buf(&b, "{\"article\":\"news/2025/kim-missiles\",\"metric\":\"views\","
                    "\"interval\":\"day\",\"points\":["
                    "{\"t\":\"2027-01-13T00:00:00Z\",\"value\":0},"
                    "{\"t\":\"2027-01-14T00:00:00Z\",\"value\":7},"
                    "{\"t\":\"2027-01-15T00:00:00Z\",\"value\":12345678901}]}");

    assert_int_equal(tally_series_parse(S("metric=comments&interval=hour&from=2026-12-31T22:30:00Z"
                                          "&to=2027-01-01T00:59:59Z"),
                                        (time_t)utc(2027, 1, 1, 12, 0, 0), &p, &err),
                     0);
    assert_int_equal(p.n, 3);
    s.p = p;
    s.id = "caf\xc3\xa9/\"q\"";
    s.len = (uint16_t)strlen(s.id);
    values[0] = 3;
    values[1] = 0;
    values[2] = 1;
    tally_buf_reset(&b);
    tally_series_render(&b, &s);
    expect_buf(&b, "{\"article\":\"caf\xc3\xa9/\\\"q\\\"\",\"metric\":\"comments\","
                    "\"interval\":\"hour\",\"points\":["
                    "{\"t\":\"2026-12-31T22:00:00Z\",\"value\":3},"
                    "{\"t\":\"2026-12-31T23:00:00Z\",\"value\":0},"
                    "{\"t\":\"2027-01-01T00:00:00Z\",\"value\":1}]}");

    /* The default hourly series: 24 points ending with this hour, in order. */
    {
        int64_t zeros[24] = {0};
        char want[4096];
        size_t len;

        assert_int_equal(tally_series_parse(S("interval=hour&metric=visitors"), NOW_MID, &p, &err),
                         0);
        assert_int_equal(p.n, 24);
        s.p = p;
        s.id = "a";
        s.len = 1;
        zeros[23] = 5;
        s.values = zeros;
        len = (size_t)snprintf(want, sizeof(want),
                               "{\"article\":\"a\",\"metric\":\"visitors\",\"interval\":\"hour\","
                               "\"points\":[");
        for (int i = 0; i < 24; i++) {
            char t[21];

            tally_time_format((int64_t)NOW - (23 - i) * HOUR, t);
            len += (size_t)snprintf(want + len, sizeof(want) - len, "%s{\"t\":\"%s\",\"value\":%d}",
                                    i > 0 ? "," : "", t, i == 23 ? 5 : 0);
        }
        snprintf(want + len, sizeof(want) - len, "]}");
        tally_buf_reset(&b);
        tally_series_render(&b, &s);
        expect_buf(&b, want);
        assert_non_null(strstr(want, "{\"t\":\"2027-01-14T09:00:00Z\",\"value\":0}"));
        assert_non_null(strstr(want, "{\"t\":\"2027-01-15T08:00:00Z\",\"value\":5}]}"));
    }
    tally_buf_release(&b);
}

static void test_reports_totals_render(void **state)
{
    static const struct {
        enum tally_period period;
        int64_t views, shares, comments, reads, engaged;
        const char *want;
    } cases[] = {
        {TALLY_PERIOD_DAY, 0, 0, 0, 0, 0,
         "{\"period\":\"day\",\"views\":0,\"shares\":0,\"comments\":0,\"engaged_seconds\":0,"
         "\"reads\":0}"},
        {TALLY_PERIOD_WEEK, 1520, 31, 12, 40, 6015,
         "{\"period\":\"week\",\"views\":1520,\"shares\":31,\"comments\":12,\"engaged_seconds\":6015,"
         "\"reads\":40}"},
        {TALLY_PERIOD_MONTH, 1, 2, 3, 4, 5,
         "{\"period\":\"month\",\"views\":1,\"shares\":2,\"comments\":3,\"engaged_seconds\":5,"
         "\"reads\":4}"},
        {TALLY_PERIOD_ALL, INT64_C(9007199254740993), 0, 7, 0, INT64_C(9007199254740993),
         "{\"period\":\"all\",\"views\":9007199254740993,\"shares\":0,\"comments\":7,"
         "\"engaged_seconds\":9007199254740993,\"reads\":0}"},
    };
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_totals t;

        memset(&t, 0, sizeof(t));
        t.period = cases[i].period;
        t.sums.views = cases[i].views;
        t.sums.shares = cases[i].shares;
        t.sums.comments = cases[i].comments;
        t.sums.reads = cases[i].reads;
        t.sums.engaged_seconds = cases[i].engaged;
        tally_buf_reset(&b);
        tally_totals_render(&b, &t);
        expect_buf(&b, cases[i].want);
    }
    tally_buf_release(&b);
}

/* A DELETE's steps go on while more than TALLY_FORGET_LEFT_ENTRIES entries or any staged chunk
 * wait, at most TALLY_FORGET_STEPS_MAX of them; then the call that forgets folds the rest. */
static void test_reports_forget_step_due(void **state)
{
    static const struct {
        long long left, chunks;
        unsigned steps;
        bool due;
    } cases[] = {
        {0, 0, 0, false},
        {TALLY_FORGET_LEFT_ENTRIES, 0, 1, false},
        {TALLY_FORGET_LEFT_ENTRIES + 1, 0, 1, true},
        {0, 1, 1, true},
        {TALLY_FORGET_LEFT_ENTRIES, 3, 7, true},
        {100000, 0, TALLY_FORGET_STEPS_MAX - 1, true},
        {100000, 0, TALLY_FORGET_STEPS_MAX, false},
        {0, 5, TALLY_FORGET_STEPS_MAX, false},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_forget_step_due(cases[i].left, cases[i].chunks, cases[i].steps),
                         cases[i].due);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reports_fixed_now_is_what_the_cases_assume),
        cmocka_unit_test(test_reports_names_and_period_days),
        cmocka_unit_test(test_reports_top_parse_accepts),
        cmocka_unit_test(test_reports_top_parse_handles_no_query),
        cmocka_unit_test(test_reports_top_parse_rejects),
        cmocka_unit_test(test_reports_top_parse_messages),
        cmocka_unit_test(test_reports_totals_parse),
        cmocka_unit_test(test_reports_time_parse_accepts),
        cmocka_unit_test(test_reports_time_parse_rejects),
        cmocka_unit_test(test_reports_time_parse_uses_the_length),
        cmocka_unit_test(test_reports_time_format),
        cmocka_unit_test(test_reports_time_format_refuses_what_it_cannot_write),
        cmocka_unit_test(test_reports_series_parse_accepts),
        cmocka_unit_test(test_reports_series_parse_rejects),
        cmocka_unit_test(test_reports_series_parse_messages),
        cmocka_unit_test(test_reports_top_merge_table),
        cmocka_unit_test(test_reports_top_keeps_each_article_once),
        cmocka_unit_test(test_reports_top_orders_raw_bytes),
        cmocka_unit_test(test_reports_top_matches_brute_force),
        cmocka_unit_test(test_reports_top_render),
        cmocka_unit_test(test_reports_series_render),
        cmocka_unit_test(test_reports_totals_render),
        cmocka_unit_test(test_reports_forget_step_due),
    };

    return cmocka_run_group_tests_name("reports", tests, NULL, NULL);
}
