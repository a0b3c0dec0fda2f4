/* test_buf.c -- the growable byte buffer: appends, growth, reuse, numbers, RESP and JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tally/buf.h"
#include "unit.h"

/* B holds exactly the LEN bytes WANT (and no failed append). */
static void buf_expect(const struct tally_buf *b, const char *want, size_t len)
{
    assert_false(b->oom);
    if (b->len != len || (len > 0 && memcmp(b->data, want, len) != 0)) {
        print_error("buffer: got %zu bytes '%.*s', want %zu bytes '%.*s'\n", b->len, (int)b->len,
                    b->data != NULL ? b->data : "", len, (int)len, want);
        fail();
    }
    assert_true(b->len <= b->cap);
}

static void test_buf_starts_empty_and_allocates_lazily(void **state)
{
    struct tally_buf b;

    (void)state;
    memset(&b, 0xa5, sizeof(b));
    tally_buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_false(b.oom);
    tally_buf_add(&b, "x", 0);
    tally_buf_adds(&b, "");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    tally_buf_release(&b);
    tally_buf_release(&b);
    assert_null(b.data);
}

static void test_buf_appends_bytes_in_order(void **state)
{
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    tally_buf_add(&b, "abc", 3);
    tally_buf_adds(&b, "def");
    tally_buf_add(&b, "g\0h", 3);
    tally_buf_add(&b, "ignored", 0);
    tally_buf_adds(&b, "\r\n");
    buf_expect(&b, S("abcdefg\0h\r\n"));
    tally_buf_release(&b);
}

static void test_buf_grows_past_several_reallocs(void **state)
{
    enum { TOTAL = 100000 };
    struct tally_buf b;
    char *want = malloc(TOTAL);
    size_t grows = 0, cap = 0;

    (void)state;
    assert_non_null(want);
    for (size_t i = 0; i < TOTAL; i++)
        want[i] = (char)(i % 251);
    tally_buf_init(&b);
    for (size_t i = 0; i < TOTAL; i++) {
        tally_buf_add(&b, &want[i], 1);
        if (b.cap != cap) {
            assert_true(b.cap > cap);
            cap = b.cap;
            grows++;
        }
    }
    buf_expect(&b, want, TOTAL);
    assert_true(grows >= 4);
    /* One append much larger than the buffer grows it in one go. */
    tally_buf_reset(&b);
    tally_buf_add(&b, "abc", 3);
    tally_buf_add(&b, want, TOTAL);
    tally_buf_add(&b, want, TOTAL);
    assert_int_equal(b.len, 3 + 2 * TOTAL);
    assert_memory_equal(b.data, "abc", 3);
    assert_memory_equal(b.data + 3, want, TOTAL);
    assert_memory_equal(b.data + 3 + TOTAL, want, TOTAL);
    tally_buf_release(&b);
    free(want);
}

static void test_buf_reset_keeps_memory(void **state)
{
    struct tally_buf b;
    char big[1000];
    char *data;
    size_t cap;

    (void)state;
    memset(big, 'z', sizeof(big));
    tally_buf_init(&b);
    tally_buf_add(&b, big, sizeof(big));
    data = b.data;
    cap = b.cap;
    tally_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    tally_buf_adds(&b, "xy");
    buf_expect(&b, S("xy"));
    tally_buf_add(&b, big, sizeof(big) - 2);
    assert_ptr_equal(b.data, data); /* filled to the same size: no new allocation */
    assert_int_equal(b.cap, cap);
    tally_buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    tally_buf_adds(&b, "again");
    buf_expect(&b, S("again"));
    tally_buf_release(&b);
}

static void test_buf_writes_integers_in_decimal(void **state)
{
    static const struct {
        int64_t v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-1, "-1"},
        {1, "1"},
        {9, "9"},
        {10, "10"},
        {-10, "-10"},
        {1000000, "1000000"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
        {INT64_MIN + 1, "-9223372036854775807"},
    };
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_buf_reset(&b);
        tally_buf_add_i64(&b, cases[i].v);
        buf_expect(&b, cases[i].want, strlen(cases[i].want));
    }
    tally_buf_reset(&b);
    tally_buf_add_u64(&b, UINT64_MAX);
    tally_buf_adds(&b, ",");
    tally_buf_add_u64(&b, 0);
    tally_buf_adds(&b, ",");
    tally_buf_add_u64(&b, (uint64_t)INT64_MAX + 1);
    buf_expect(&b, S("18446744073709551615,0,9223372036854775808"));
    tally_buf_release(&b);
}

static void test_buf_frames_resp_bulk_strings(void **state)
{
    static char big[300];
    static const struct {
        const char *p;
        size_t n;
        const char *want;
        size_t want_len;
    } cases[] = {
        {S("hello"), S("$5\r\nhello\r\n")},
        {S(""), S("$0\r\n\r\n")},
        {S("a\r\nb\0c"), S("$6\r\na\r\nb\0c\r\n")},
        {S("caf\xc3\xa9"), S("$5\r\ncaf\xc3\xa9\r\n")},
    };
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_buf_reset(&b);
        tally_buf_add_bulk(&b, cases[i].p, cases[i].n);
        buf_expect(&b, cases[i].want, cases[i].want_len);
    }
    memset(big, 'q', sizeof(big));
    tally_buf_reset(&b);
    tally_buf_add_bulk(&b, big, sizeof(big));
    assert_int_equal(b.len, 4 + 2 + 300 + 2);
    assert_memory_equal(b.data, "$300\r\n", 6);
    assert_memory_equal(b.data + 6, big, sizeof(big));
    assert_memory_equal(b.data + 306, "\r\n", 2);
    tally_buf_release(&b);
}

static void test_buf_frames_resp_integers(void **state)
{
    static const struct {
        int64_t v;
        const char *want;
    } cases[] = {
        {0, "$1\r\n0\r\n"},
        {-1, "$2\r\n-1\r\n"},
        {40, "$2\r\n40\r\n"},
        {86400, "$5\r\n86400\r\n"},
        {-1000, "$5\r\n-1000\r\n"},
        {INT64_MAX, "$19\r\n9223372036854775807\r\n"},
        {INT64_MIN, "$20\r\n-9223372036854775808\r\n"},
    };
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_buf_reset(&b);
        tally_buf_add_bulk_i64(&b, cases[i].v);
        buf_expect(&b, cases[i].want, strlen(cases[i].want));
    }
    /* Appends follow each other. */
    tally_buf_reset(&b);
    tally_buf_add_bulk_i64(&b, 7);
    tally_buf_add_bulk(&b, "ab", 2);
    buf_expect(&b, S("$1\r\n7\r\n$2\r\nab\r\n"));
    tally_buf_release(&b);
}

static void test_buf_escapes_json_strings(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {S(""), "\"\""},
        {S("news/2025/kim-missiles"), "\"news/2025/kim-missiles\""},
        {S("a\"b"), "\"a\\\"b\""},
        {S("a\\b"), "\"a\\\\b\""},
        {S("\"\\\""), "\"\\\"\\\\\\\"\""},
        {S("\x01"), "\"\\u0001\""},
        {S("a\nb\tc\rd"), "\"a\\u000ab\\u0009c\\u000dd\""},
        {S("\x1f\x1e"), "\"\\u001f\\u001e\""},
        {S("x\0y"), "\"x\\u0000y\""},
        {S(" \x7f~"), "\" \x7f~\""},
        {S("caf\xc3\xa9 \xe6\x96\x87 \xf0\x9f\x98\x80"),
         "\"caf\xc3\xa9 \xe6\x96\x87 \xf0\x9f\x98\x80\""},
        {S("\xe2\x80\xa8\xc2\x85"), "\"\xe2\x80\xa8\xc2\x85\""},
        {S("</script>"), "\"</script>\""},
    };
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_buf_reset(&b);
        tally_buf_add_json_str(&b, cases[i].in, cases[i].n);
        buf_expect(&b, cases[i].want, strlen(cases[i].want));
    }
    tally_buf_release(&b);
}

static void test_buf_escapes_every_control_character(void **state)
{
    static const char hex[] = "0123456789abcdef";
    struct tally_buf b;
    char in[32], want[2 + 32 * 6];

    (void)state;
    for (int c = 0; c < 32; c++) {
        in[c] = (char)c;
        memcpy(want + 1 + 6 * c, "\\u00", 4);
        want[1 + 6 * c + 4] = hex[c >> 4];
        want[1 + 6 * c + 5] = hex[c & 15];
    }
    want[0] = want[sizeof(want) - 1] = '"';
    tally_buf_init(&b);
    tally_buf_add_json_str(&b, in, sizeof(in));
    buf_expect(&b, want, sizeof(want));
    tally_buf_release(&b);
}

/* A size no allocation can hold is an out-of-memory append, not a hang or a wrapped length. */
static void test_buf_refuses_sizes_that_overflow(void **state)
{
    struct tally_buf b;
    char *data;

    (void)state;
    tally_buf_init(&b);
    tally_buf_adds(&b, "ab");
    data = b.data;
    tally_buf_add(&b, "x", SIZE_MAX); /* 2 + SIZE_MAX wraps around */
    assert_true(b.oom);
    assert_int_equal(b.len, 2);
    assert_ptr_equal(b.data, data);
    tally_buf_adds(&b, "cd"); /* dropped: the content is already incomplete */
    assert_int_equal(b.len, 2);
    tally_buf_reset(&b);
    assert_false(b.oom);
    tally_buf_add(&b, "x", SIZE_MAX - 1); /* no power of two of a size_t is that large */
    assert_true(b.oom);
    assert_int_equal(b.len, 0);
    tally_buf_reset(&b);
    tally_buf_adds(&b, "ok");
    buf_expect(&b, S("ok"));
    tally_buf_release(&b);
}

/* An array grows to hold what is asked, its room doubling from 64; asking for no more than
 * its room changes nothing. */
static void test_grow_doubles_room_from_64(void **state)
{
    static const struct {
        size_t need, cap;
    } steps[] = {{0, 0}, {1, 64}, {64, 64}, {10, 64}, {65, 128}, {129, 256}, {1000, 1024},
                 {1025, 2048}, {2048, 2048}};
    uint32_t *a = NULL;
    size_t cap = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        uint32_t *before = a;

        assert_int_equal(tally_grow(&a, &cap, steps[i].need, sizeof(*a)), 0);
        assert_int_equal(cap, steps[i].cap);
        if (steps[i].need == 0)
            assert_null(a);
        else
            a[steps[i].need - 1] = (uint32_t)i; /* the room is there (ASan would say) */
        if (i > 0 && steps[i].cap == steps[i - 1].cap)
            assert_ptr_equal(a, before);
    }
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_starts_empty_and_allocates_lazily),
        cmocka_unit_test(test_buf_appends_bytes_in_order),
        cmocka_unit_test(test_buf_grows_past_several_reallocs),
        cmocka_unit_test(test_buf_reset_keeps_memory),
        cmocka_unit_test(test_buf_writes_integers_in_decimal),
        cmocka_unit_test(test_buf_frames_resp_bulk_strings),
        cmocka_unit_test(test_buf_frames_resp_integers),
        cmocka_unit_test(test_buf_escapes_json_strings),
        cmocka_unit_test(test_buf_escapes_every_control_character),
        cmocka_unit_test(test_buf_refuses_sizes_that_overflow),
        cmocka_unit_test(test_grow_doubles_room_from_64),
    };

    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
