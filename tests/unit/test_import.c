/* test_import.c -- an import's NDJSON body: the script arguments each line becomes, the sums
 * its record keeps, and the first faulty line named. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/admit.h"
#include "tally/error.h"
#include "tally/import.h"
#include "tally/keys.h"
#include "unit.h"

#define TODAY 20427 /* 2025-12-05 */

/* The RESP bulk strings of B, joined by '|' into OUT. */
static void join_bulks(const struct tally_buf *b, char *out, size_t cap)
{
    size_t pos = 0, o = 0;

    out[0] = '\0';
    while (pos < b->len) {
        size_t n;
        char *end;

        assert_int_equal(b->data[pos], '$');
        n = strtoul(b->data + pos + 1, &end, 10);
        pos = (size_t)(end - b->data) + 2;
        assert_true(o + n + 2 < cap);
        if (o > 0)
            out[o++] = '|';
        memcpy(out + o, b->data + pos, n);
        o += n;
        out[o] = '\0';
        pos += n + 2;
    }
}

/* The bucket tag of ID into OUT. */
static const char *tag_of(const char *id, char out[3])
{
    tally_key_tag(tally_key_bucket(id, strlen(id)), out);
    out[2] = '\0';
    return out;
}

static void test_import_day_reads_calendar_dates(void **state)
{
    static const struct {
        const char *s;
        int64_t day;
    } cases[] = {
        {"1970-01-01", 0},     {"2025-12-05", 20427}, {"2024-02-29", 19782},
        {"2000-02-29", 11016}, {"2023-02-29", -1},    {"1900-02-28", -1},
        {"1969-12-31", -1},    {"2025-13-01", -1},    {"2025-04-31", -1},
        {"2025-00-10", -1},    {"2025-1-01", -1},     {"2025-01-01T", -1},
        {"2025/01/01", -1},    {"2025-01-0x", -1},    {"", -1},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_import_day(cases[i].s, strlen(cases[i].s)), cases[i].day);
}

static void test_import_lines_become_script_arguments(void **state)
{
    static const char body[] =
        "{\"article\":\"news/a\",\"views\":1000000000000,\"shares\":{\"twitter\":3,"
        "\"mastodon\":2,\"other\":1,\"email\":0},\"comments\":7,\"extra\":[1]}\r\n"
        "\n"
        "  \t\r\n"
        "{\"date\":\"2025-12-05\",\"article\":\"b\",\"views\":1e1}\n"
        "{\"article\":\"c\"}";
    struct tally_import imp;
    struct tally_error err;
    char got[1024], want[1024], t1[3], t2[3], t3[3];

    (void)state;
    assert_int_equal(tally_import_parse(&imp, S(body), TODAY, &err), 0);
    join_bulks(&imp.args, got, sizeof(got));
    snprintf(want, sizeof(want),
             "%s|news/a||1000000000000|7|6|2|twitter|3|other|3|"
             "%s|b|20427|10|0|0|0|"
             "%s|c||0|0|0|0",
             tag_of("news/a", t1), tag_of("b", t2), tag_of("c", t3));
    assert_string_equal(got, want);
    assert_int_equal(imp.n_args, 9 + 2 + 7 + 7);
    assert_int_equal(imp.lines, 3);
    assert_true(imp.views == 1000000000010ULL && imp.shares == 6 && imp.comments == 7);
    tally_import_release(&imp);
}

static void test_import_refuses_the_first_faulty_line(void **state)
{
    static const struct {
        const char *line, *message;
    } cases[] = {
        {"{\"article\":\"a\",\"views\":-1}", "line 2: views: an integer from 0 to "
                                             "1000000000000"},
        {"{\"article\":\"a\",\"views\":1000000000001}", "line 2: views:"},
        {"{\"article\":\"a\",\"views\":0.5}", "line 2: views:"},
        {"{\"article\":\"a\",\"views\":true}", "line 2: views:"},
        {"{\"article\":\"a\",\"comments\":\"1\"}", "line 2: comments:"},
        {"{\"article\":\"a\",\"shares\":3}", "line 2: shares: an object"},
        {"{\"article\":\"a\",\"shares\":{\"x\":-3}}", "line 2: shares: each count"},
        /* Repeated or unknown names add up: the line's shares are one bounded count. */
        {"{\"article\":\"a\",\"shares\":{\"x\":1000000000000,\"y\":1}}",
         "line 2: shares: the counts add up to at most 1000000000000"},
        {"{\"article\":\"a\",\"shares\":{\"twitter\":600000000000,\"twitter\":"
         "400000000001}}",
         "line 2: shares: the counts add up to at most 1000000000000"},
        {"{\"article\":\"\"}", "line 2: article: 1-256 bytes"},
        {"{\"article\":\"a b\"}", "line 2: article: 1-256 bytes"},
        {"{\"article\":7}", "line 2: article: required"},
        {"{}", "line 2: article: required"},
        {"{\"article\":\"a\",\"date\":\"2025-12-06\"}", "line 2: date: not after today (UTC)"},
        {"{\"article\":\"a\",\"date\":\"2025-02-30\"}", "line 2: date: a day as YYYY-MM-DD"},
        {"{\"article\":\"a\",\"date\":20251201}", "line 2: date: a day as YYYY-MM-DD"},
        {"{\"article\":\"a\"} {}", "line 2: one JSON object per line"},
        {"[{\"article\":\"a\"}]", "line 2: one JSON object per line"},
        {"{\"article\":\"a\"", "line 2: one JSON object per line"},
    };
    struct tally_import imp;
    struct tally_error err;
    char body[256];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int n = snprintf(body, sizeof(body), "{\"article\":\"ok\"}\n%s\n{\"article\":\"z\"}\n",
                         cases[i].line);

        assert_int_equal(tally_import_parse(&imp, body, (size_t)n, TODAY, &err), TALLY_EINVAL);
        assert_string_equal(err.code, "invalid_line");
        if (strncmp(err.message, cases[i].message, strlen(cases[i].message)) != 0)
            fail_msg("case %zu: got '%s', want '%s...'", i, err.message, cases[i].message);
        tally_import_release(&imp);
    }
}

static void test_import_refuses_a_nul_byte_and_an_empty_body(void **state)
{
    static const char nul[] = "{\"article\":\"a\"}\n{\"article\":\"b\0\"}\n";
    struct tally_import imp;
    struct tally_error err;

    (void)state;
    assert_int_equal(tally_import_parse(&imp, nul, sizeof(nul) - 1, TODAY, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "line 2: a JSON object without NUL characters");
    tally_import_release(&imp);
    assert_int_equal(tally_import_parse(&imp, S("{\"article\":\"a\\u0000b\"}"), TODAY, &err),
                     TALLY_EINVAL);
    assert_string_equal(err.message, "line 1: a JSON object without NUL characters");
    tally_import_release(&imp);
    /* An escaped backslash before "u0000" is a backslash, not a NUL. */
    assert_int_equal(tally_import_parse(&imp, S("{\"article\":\"a\\\\u0000b\"}"), TODAY, &err),
                     0);
    assert_int_equal(imp.lines, 1);
    tally_import_release(&imp);
    assert_int_equal(tally_import_parse(&imp, S("{\"article\":\"a\\\\\\u0000b\"}"), TODAY, &err),
                     TALLY_EINVAL);
    tally_import_release(&imp);
    assert_int_equal(tally_import_parse(&imp, S(" \n\r\n"), TODAY, &err), TALLY_EINVAL);
    assert_string_equal(err.code, "invalid_body");
    tally_import_release(&imp);
    assert_int_equal(tally_import_parse(&imp, "", 0, TODAY, &err), TALLY_EINVAL);
    tally_import_release(&imp);
}

static void test_import_holds_at_most_ten_thousand_lines(void **state)
{
    static const char line[] = "{\"article\":\"a\",\"views\":1}\n";
    size_t n = TALLY_IMPORT_LINES_MAX + 1, len = n * (sizeof(line) - 1);
    char *body = malloc(len);
    struct tally_import imp;
    struct tally_error err;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < n; i++)
        memcpy(body + i * (sizeof(line) - 1), line, sizeof(line) - 1);
    assert_int_equal(tally_import_parse(&imp, body, len - (sizeof(line) - 1), TODAY, &err), 0);
    assert_int_equal(imp.lines, TALLY_IMPORT_LINES_MAX);
    assert_true(imp.views == TALLY_IMPORT_LINES_MAX);
    tally_import_release(&imp);
    assert_int_equal(tally_import_parse(&imp, body, len, TODAY, &err), TALLY_EINVAL);
    assert_string_equal(err.message, "line 10001: an import holds at most 10000 lines");
    tally_import_release(&imp);
    free(body);
}

static void test_import_line_shares_add_up_to_the_bound(void **state)
{
    static const char body[] =
        "{\"article\":\"a\",\"shares\":{\"x\":999999999999,\"y\":1}}";
    struct tally_import imp;
    struct tally_error err;
    char got[256], want[256], t[3];

    (void)state;
    assert_int_equal(tally_import_parse(&imp, S(body), TODAY, &err), 0);
    join_bulks(&imp.args, got, sizeof(got));
    snprintf(want, sizeof(want), "%s|a||0|0|1000000000000|1|other|1000000000000",
             tag_of("a", t));
    assert_string_equal(got, want);
    tally_import_release(&imp);
}

static void test_import_headers(void **state)
{
    (void)state;
    assert_true(tally_import_type_ok(NULL));
    assert_true(tally_import_type_ok("application/x-ndjson"));
    assert_true(tally_import_type_ok("Application/X-NDJSON; charset=utf-8"));
    assert_true(tally_import_type_ok("text/plain;charset=UTF-8"));
    assert_false(tally_import_type_ok("application/json"));
    assert_false(tally_import_type_ok("application/x-www-form-urlencoded"));
    assert_false(tally_import_type_ok("text/plainx"));
    assert_true(tally_admit_idem_key(S("k")));
    assert_true(tally_admit_idem_key(S("migration-2025-12-05/part-1")));
    assert_false(tally_admit_idem_key("", 0));
    assert_false(tally_admit_idem_key(S("a b")));
    assert_false(tally_admit_idem_key(S("caf\xc3\xa9")));
}

static void test_import_record_is_json(void **state)
{
    struct tally_import imp = {
        .lines = 3, .views = 10000000000000000ULL, .shares = 2, .comments = 1};
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    tally_import_record(&b, &imp, 1764979200, S("key \"1\""));
    expect_buf(&b, "{\"at\":\"2025-12-06T00:00:00Z\",\"key\":\"key \\\"1\\\"\",\"lines\":3,"
                   "\"views\":10000000000000000,\"shares\":2,\"comments\":1}");
    tally_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_day_reads_calendar_dates),
        cmocka_unit_test(test_import_lines_become_script_arguments),
        cmocka_unit_test(test_import_refuses_the_first_faulty_line),
        cmocka_unit_test(test_import_refuses_a_nul_byte_and_an_empty_body),
        cmocka_unit_test(test_import_holds_at_most_ten_thousand_lines),
        cmocka_unit_test(test_import_line_shares_add_up_to_the_bound),
        cmocka_unit_test(test_import_headers),
        cmocka_unit_test(test_import_record_is_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
