/* test_merge.c -- an article's record as the scripts read it (RESP arguments and the journal's
 * text), and a writer's records added up per article and hour until a fold counts them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/merge.h"
#include "unit.h"

/* ---- Expected bytes ---- */

/* Append TEXT's tokens (separated by "\n"; N bytes) to B as RESP bulk strings, framed here
 * by hand: the form tally_record_put() writes when not asked for text. */
static void resp_of_text(struct tally_buf *b, const char *text, size_t n)
{
    const char *end = text + n;

    for (;;) {
        const char *nl = memchr(text, '\n', (size_t)(end - text));
        size_t len = (size_t)((nl != NULL ? nl : end) - text);
        char head[32];

        snprintf(head, sizeof(head), "$%zu\r\n", len);
        tally_buf_adds(b, head);
        tally_buf_add(b, text, len);
        tally_buf_add(b, "\r\n", 2);
        if (nl == NULL)
            break;
        text = nl + 1;
    }
}

/* B holds exactly the N bytes WANT. */
static void expect_bytes(const struct tally_buf *b, const char *want, size_t n)
{
    assert_false(b->oom);
    if (b->len != n || (n > 0 && memcmp(b->data, want, n) != 0)) {
        print_error("got  %zu bytes '%.*s'\nwant %zu bytes '%.*s'\n", b->len, (int)b->len,
                    b->data != NULL ? b->data : "", n, (int)n, want);
        fail();
    }
}

/* ---- One record ---- */

static const uint64_t vis_three[] = {0x11, 0xfedcba9876543210ULL, 0};
static const uint64_t vis_two[] = {1, 2};
static const int64_t deltas_four[] = {5, -1, -1000, 1000};
static const int64_t deltas_extreme[] = {INT64_MIN, INT64_MAX, 0};
static const int64_t deltas_one[] = {-3};

/* Text cases: each token followed by "\n" but the last. */
static const struct {
    struct tally_record r;
    const char *text;
    size_t tokens;
} put_cases[] = {
    /* The empty record: tag id views nvisitors nshares ncomments nsums nprops. */
    {{.bucket = 0x8c, .id = "a", .len = 1}, "8c\na\n0\n0\n0\n0\n0\n0", 8},
    {{.bucket = 0, .id = "art", .len = 3, .views = 40}, "00\nart\n40\n0\n0\n0\n0\n0", 8},
    /* LEN bytes of the id, no more; visitors in their order, 16 hex digits each. */
    {{.bucket = 0xff, .id = "abcdef", .len = 3, .views = 1, .vis = vis_three, .n_vis = 3},
     "ff\nabc\n1\n3\n0000000000000011\nfedcba9876543210\n0000000000000000\n0\n0\n0\n0",
     11},
    /* Shares in the contract's network order, whatever order they were set in. */
    {{.bucket = 0xef,
      .id = "b",
      .len = 1,
      .shares = {[TALLY_NETWORK_OTHER] = 2,
                 [TALLY_NETWORK_COPY] = 5,
                 [TALLY_NETWORK_TWITTER] = 3,
                 [TALLY_NETWORK_FACEBOOK] = 1}},
     "ef\nb\n0\n0\n4\nfacebook\n1\ntwitter\n3\ncopy\n5\nother\n2\n0\n0\n0",
     16},
    {{.bucket = 0xef, .id = "b", .len = 1, .deltas = deltas_four, .n_deltas = 4},
     "ef\nb\n0\n0\n0\n4\n5\n-1\n-1000\n1000\n0\n0",
     12},
    {{.bucket = 0xef, .id = "b", .len = 1, .deltas = deltas_extreme, .n_deltas = 3},
     "ef\nb\n0\n0\n0\n3\n-9223372036854775808\n9223372036854775807\n0\n0\n0",
     11},
    /* Sums and properties by name, only those not 0. */
    {{.bucket = 0xa5,
      .id = "c",
      .len = 1,
      .sums = {[TALLY_METRIC_ENGAGED] = 3600, [TALLY_METRIC_READS] = 1}},
     "a5\nc\n0\n0\n0\n0\n2\nengaged\n3600\nreads\n1\n0",
     12},
    {{.bucket = 0xa5, .id = "c", .len = 1, .sums = {[TALLY_METRIC_READS] = 7}},
     "a5\nc\n0\n0\n0\n0\n1\nreads\n7\n0",
     10},
    {{.bucket = 0xa5, .id = "c", .len = 1, .props = {[TALLY_PROPERTY_WORDS] = 1000000}},
     "a5\nc\n0\n0\n0\n0\n0\n1\nwords\n1000000",
     10},
    /* Everything at once. */
    {{.bucket = 0x5e,
      .id = "\xc3\xa9t\xc3\xa9/7",
      .len = 7,
      .views = 4294967296ULL,
      .vis = vis_two,
      .n_vis = 2,
      .shares = {[TALLY_NETWORK_NATIVE] = 1, [TALLY_NETWORK_EMAIL] = 2},
      .deltas = deltas_one,
      .n_deltas = 1,
      .sums = {[TALLY_METRIC_ENGAGED] = 12},
      .props = {[TALLY_PROPERTY_WORDS] = 250}},
     "5e\n\xc3\xa9t\xc3\xa9/7\n4294967296\n2\n0000000000000001\n0000000000000002\n2\nemail\n2\n"
     "native\n1\n1\n-3\n1\nengaged\n12\n1\nwords\n250",
     19},
};

static void test_merge_puts_a_record_as_text(void **state)
{
    struct tally_buf b, want;

    (void)state;
    tally_buf_init(&b);
    tally_buf_init(&want);
    for (size_t i = 0; i < N_ELEMS(put_cases); i++) {
        /* Appended after what the buffer holds, with no separator of its own. */
        tally_buf_reset(&b);
        tally_buf_adds(&b, "before\n");
        tally_buf_reset(&want);
        tally_buf_adds(&want, "before\n");
        tally_buf_adds(&want, put_cases[i].text);
        assert_int_equal(tally_record_put(&b, &put_cases[i].r, true), put_cases[i].tokens);
        expect_bytes(&b, want.data, want.len);
    }
    tally_buf_release(&b);
    tally_buf_release(&want);
}

static void test_merge_puts_a_record_as_resp(void **state)
{
    struct tally_buf b, want;

    (void)state;
    tally_buf_init(&b);
    tally_buf_init(&want);
    for (size_t i = 0; i < N_ELEMS(put_cases); i++) {
        tally_buf_reset(&b);
        tally_buf_adds(&b, "$1\r\nx\r\n");
        tally_buf_reset(&want);
        tally_buf_adds(&want, "$1\r\nx\r\n");
        resp_of_text(&want, put_cases[i].text, strlen(put_cases[i].text));
        assert_int_equal(tally_record_put(&b, &put_cases[i].r, false), put_cases[i].tokens);
        expect_bytes(&b, want.data, want.len);
    }
    tally_buf_release(&b);
    tally_buf_release(&want);
}

/* One case written out byte for byte, the table's RESP framing not taken on trust. */
static void test_merge_frames_a_record_exactly(void **state)
{
    static const char want[] = "$2\r\n8c\r\n$1\r\na\r\n$1\r\n2\r\n$1\r\n1\r\n"
                               "$16\r\n00000000000000ff\r\n$1\r\n1\r\n$6\r\nreddit\r\n$2\r\n10\r\n"
                               "$1\r\n2\r\n$1\r\n1\r\n$2\r\n-1\r\n$1\r\n0\r\n"
                               "$1\r\n1\r\n$5\r\nwords\r\n$1\r\n9\r\n";
    static const uint64_t vis[] = {0xff};
    static const int64_t deltas[] = {1, -1};
    const struct tally_record r = {.bucket = 0x8c,
                                   .id = "a",
                                   .len = 1,
                                   .views = 2,
                                   .vis = vis,
                                   .n_vis = 1,
                                   .shares = {[TALLY_NETWORK_REDDIT] = 10},
                                   .deltas = deltas,
                                   .n_deltas = 2,
                                   .props = {[TALLY_PROPERTY_WORDS] = 9}};
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    assert_int_equal(tally_record_put(&b, &r, false), 15);
    expect_bytes(&b, want, sizeof(want) - 1);
    tally_buf_release(&b);
}

static void test_merge_tells_whether_a_record_counts(void **state)
{
    static const uint64_t vis[] = {0};
    static const int64_t deltas[] = {-1};
    static const struct {
        struct tally_record r;
        bool counts;
    } cases[] = {
        {{.id = "a", .len = 1}, false},
        /* Comment deltas alone are counted by the ack, not by a journal. */
        {{.id = "a", .len = 1, .deltas = deltas, .n_deltas = 1}, false},
        {{.id = "a", .len = 1, .views = 1}, true},
        /* A visitor alone, of a repeated view: the estimate still counts it. */
        {{.id = "a", .len = 1, .vis = vis, .n_vis = 1}, true},
        {{.id = "a", .len = 1, .shares = {[TALLY_NETWORK_OTHER] = 1}}, true},
        {{.id = "a", .len = 1, .shares = {[TALLY_NETWORK_FACEBOOK] = 1}}, true},
        {{.id = "a", .len = 1, .sums = {[TALLY_METRIC_READS] = 1}}, true},
        {{.id = "a", .len = 1, .sums = {[TALLY_METRIC_ENGAGED] = 1}}, true},
        {{.id = "a", .len = 1, .props = {[TALLY_PROPERTY_WORDS] = 1}}, true},
        {{.id = "a", .len = 1, .deltas = deltas, .n_deltas = 1, .views = 1}, true},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        if (tally_record_counts(&cases[i].r) != cases[i].counts) {
            print_error("case %zu: want counts %d\n", i, cases[i].counts);
            fail();
        }
}

/* ---- Records added up ---- */

#define HOUR 500000 /* 2027-01-15 08:00 UTC: Unix time 1800000000 */

struct add {
    int64_t hour;
    struct tally_record r;
};

/* M's arguments are exactly the records WANT (each "<hour*3600>\n<record as text>"), in that
 * order; put twice, they are the same (putting consumes nothing). */
static void expect_merged(struct tally_merge *m, const char *const *want, size_t n)
{
    struct tally_buf b, w;
    size_t args = 0;

    tally_buf_init(&b);
    tally_buf_init(&w);
    for (size_t i = 0; i < n; i++) {
        resp_of_text(&w, want[i], strlen(want[i]));
        args += 1;
        for (const char *p = want[i]; (p = strchr(p, '\n')) != NULL; p++)
            args++;
    }
    assert_int_equal(tally_merge_records(m), n);
    for (int round = 0; round < 2; round++) {
        tally_buf_reset(&b);
        assert_int_equal(tally_merge_put(m, &b), args);
        expect_bytes(&b, w.data, w.len);
    }
    tally_buf_release(&b);
    tally_buf_release(&w);
}

static void merge_adds(struct tally_merge *m, const struct add *adds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tally_merge_add(m, adds[i].hour, &adds[i].r), 0);
}

static const uint64_t vis_1_2_1[] = {1, 2, 1};
static const uint64_t vis_3_2[] = {3, 2};
static const uint64_t vis_1[] = {1};
static const uint64_t vis_2[] = {2};
static const int64_t delta_7[] = {7};

/* Adds of article "a" (bucket 8c) in hours HOUR - 1, HOUR and HOUR + 1, of "b" (ef) and of
 * "ab" (12) in HOUR. */
static const struct add adds_two_hours[] = {
    /* Visitor 1 twice in one record: pooled once. */
    {HOUR,
     {.bucket = 0x8c,
      .id = "a",
      .len = 1,
      .views = 1,
      .vis = vis_1_2_1,
      .n_vis = 3,
      .props = {[TALLY_PROPERTY_WORDS] = 100}}},
    {HOUR + 1,
     {.bucket = 0x8c,
      .id = "a",
      .len = 1,
      .views = 2,
      .vis = vis_2,
      .n_vis = 1,
      .shares = {[TALLY_NETWORK_TWITTER] = 1}}},
    /* Visitor 1 of another article. */
    {HOUR,
     {.bucket = 0xef,
      .id = "b",
      .len = 1,
      .vis = vis_1,
      .n_vis = 1,
      .shares = {[TALLY_NETWORK_FACEBOOK] = 2},
      .sums = {[TALLY_METRIC_ENGAGED] = 30}}},
    /* Its own id bytes, not the same pointer; no words given: they stay. Comment deltas are
     * not merged (the ack counted them). */
    {HOUR,
     {.bucket = 0x8c,
      .id = "a-b",
      .len = 1,
      .views = 3,
      .vis = vis_3_2,
      .n_vis = 2,
      .shares = {[TALLY_NETWORK_TWITTER] = 1, [TALLY_NETWORK_OTHER] = 1},
      .deltas = delta_7,
      .n_deltas = 1,
      .sums = {[TALLY_METRIC_ENGAGED] = 5, [TALLY_METRIC_READS] = 1}}},
    {HOUR, {.bucket = 0x8c, .id = "a", .len = 1, .props = {[TALLY_PROPERTY_WORDS] = 250}}},
    {HOUR, {.bucket = 0x8c, .id = "a", .len = 1, .sums = {[TALLY_METRIC_READS] = 1}}},
    {HOUR + 1, {.bucket = 0x8c, .id = "a", .len = 1, .props = {[TALLY_PROPERTY_WORDS] = 80}}},
    /* An earlier hour added later: it comes later. */
    {HOUR - 1, {.bucket = 0x8c, .id = "a", .len = 1, .views = 1, .vis = vis_1, .n_vis = 1}},
    {HOUR, {.bucket = 0x12, .id = "ab", .len = 2, .views = 1}},
    {HOUR + 1, {.bucket = 0x8c, .id = "a", .len = 1, .props = {[TALLY_PROPERTY_WORDS] = 90}}},
    {HOUR, {.bucket = 0x8c, .id = "a", .len = 1, .views = 0}},
};

static const char *const merged_two_hours[] = {
    "1800000000\n8c\na\n4\n3\n0000000000000001\n0000000000000002\n0000000000000003\n"
    "2\ntwitter\n1\nother\n1\n0\n2\nengaged\n5\nreads\n2\n1\nwords\n250",
    "1800003600\n8c\na\n2\n1\n0000000000000002\n1\ntwitter\n1\n0\n0\n1\nwords\n90",
    "1800000000\nef\nb\n0\n1\n0000000000000001\n1\nfacebook\n2\n0\n1\nengaged\n30\n0",
    "1799996400\n8c\na\n1\n1\n0000000000000001\n0\n0\n0\n0",
    "1800000000\n12\nab\n1\n0\n0\n0\n0\n0",
};

/* A merge of adds_two_hours. */
static struct tally_merge *merge_two_hours(void)
{
    struct tally_merge *m = tally_merge_new();

    assert_non_null(m);
    merge_adds(m, adds_two_hours, N_ELEMS(adds_two_hours));
    return m;
}

static void test_merge_adds_up_per_article_and_hour(void **state)
{
    struct tally_merge *m = tally_merge_new();

    (void)state;
    assert_non_null(m);
    assert_int_equal(tally_merge_records(m), 0);
    merge_adds(m, adds_two_hours, N_ELEMS(adds_two_hours));
    expect_merged(m, merged_two_hours, N_ELEMS(merged_two_hours));
    tally_merge_free(m);
    tally_merge_free(NULL);
}

/* The first add of a record names its bucket; the tables are by hour and id alone. */
static void test_merge_keeps_the_first_records_bucket(void **state)
{
    static const struct add adds[] = {
        {HOUR, {.bucket = 0x01, .id = "k", .len = 1, .views = 1}},
        {HOUR, {.bucket = 0x02, .id = "k", .len = 1, .views = 1}},
        {0, {.bucket = 0x03, .id = "k", .len = 1, .views = 5}},
    };
    static const char *const want[] = {
        "1800000000\n01\nk\n2\n0\n0\n0\n0\n0",
        "0\n03\nk\n5\n0\n0\n0\n0\n0",
    };
    struct tally_merge *m = tally_merge_new();

    (void)state;
    assert_non_null(m);
    merge_adds(m, adds, N_ELEMS(adds));
    expect_merged(m, want, N_ELEMS(want));
    tally_merge_free(m);
}

/* One article in many hours: as many records. The hours are 8,192 apart, so that each
 * one's slot is where the others' are (the table has fewer slots): a lookup probes past the
 * same id in other hours. */
#define MANY_HOURS 1200

static void test_merge_keeps_many_hours_of_one_article_apart(void **state)
{
    struct tally_merge *m = tally_merge_new();
    struct tally_buf b, want;
    char text[64];
    size_t args = 0;

    (void)state;
    assert_non_null(m);
    tally_buf_init(&b);
    tally_buf_init(&want);
    for (int round = 0; round < 2; round++)
        for (int64_t h = 0; h < MANY_HOURS; h++) {
            int64_t k = round == 0 ? h : MANY_HOURS - 1 - h;
            const struct tally_record r = {
                .bucket = 0x8c, .id = "a", .len = 1, .views = (uint64_t)h + 1};

            assert_int_equal(tally_merge_add(m, HOUR + 8192 * k, &r), 0);
        }
    for (int64_t h = 0; h < MANY_HOURS; h++) {
        /* Each hour's views: h + 1 in the first round, MANY_HOURS - h in the second. */
        snprintf(text, sizeof(text), "%lld\n8c\na\n%d\n0\n0\n0\n0\n0",
                 (long long)(HOUR + 8192 * h) * 3600, MANY_HOURS + 1);
        resp_of_text(&want, text, strlen(text));
        args += 9;
    }
    assert_int_equal(tally_merge_records(m), MANY_HOURS);
    assert_int_equal(tally_merge_put(m, &b), args);
    expect_bytes(&b, want.data, want.len);
    tally_buf_release(&b);
    tally_buf_release(&want);
    tally_merge_free(m);
}

static void test_merge_clears_and_is_reused(void **state)
{
    static const struct add again[] = {
        /* Visitor 1 of "a" in HOUR was pooled before the clear: it is new again. */
        {HOUR, {.bucket = 0x8c, .id = "a", .len = 1, .views = 1, .vis = vis_1, .n_vis = 1}},
        {HOUR, {.bucket = 0xef, .id = "b", .len = 1, .vis = vis_1_2_1, .n_vis = 3}},
    };
    static const char *const want[] = {
        "1800000000\n8c\na\n1\n1\n0000000000000001\n0\n0\n0\n0",
        "1800000000\nef\nb\n0\n2\n0000000000000001\n0000000000000002\n0\n0\n0\n0",
    };
    struct tally_merge *m = merge_two_hours();
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    /* The buckets of its records: 0x12, 0x8c and 0xef. */
    assert_int_equal(tally_merge_touched(m)[0], UINT64_C(1) << 0x12);
    assert_int_equal(tally_merge_touched(m)[1], 0);
    assert_int_equal(tally_merge_touched(m)[2], UINT64_C(1) << (0x8c - 128));
    assert_int_equal(tally_merge_touched(m)[3], UINT64_C(1) << (0xef - 192));
    tally_merge_clear(m);
    assert_int_equal(tally_merge_records(m), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(tally_merge_touched(m)[i], 0);
    assert_int_equal(tally_merge_put(m, &b), 0);
    assert_int_equal(b.len, 0);
    merge_adds(m, again, N_ELEMS(again));
    expect_merged(m, want, N_ELEMS(want));
    assert_int_equal(tally_merge_touched(m)[0], 0);
    assert_int_equal(tally_merge_touched(m)[2], UINT64_C(1) << (0x8c - 128));
    /* And once more, the first adds as at first. */
    tally_merge_clear(m);
    merge_adds(m, adds_two_hours, N_ELEMS(adds_two_hours));
    expect_merged(m, merged_two_hours, N_ELEMS(merged_two_hours));
    tally_merge_free(m);
    tally_buf_release(&b);
}

/* ---- Many records against a brute-force sum ---- */

#define RAND_ARTICLES 300
#define RAND_HOURS 4
#define RAND_RECORDS 6000
#define RAND_VISITORS 64 /* a small pool: visitors repeat within and across records */
#define RAND_VIS_MAX 8

static uint64_t rand_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint32_t rand_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rand_next(s) % n);
}

/* One (hour, article)'s sum, as the test counts it. */
struct naive {
    long order; /* of its first add; -1: never added */
    uint64_t views, shares[TALLY_NETWORKS], sums[TALLY_METRICS];
    uint32_t props[TALLY_PROPERTIES];
    uint64_t vis[RAND_VISITORS];
    size_t n_vis;
};

struct rand_merge {
    char ids[RAND_ARTICLES][24];
    struct naive sum[RAND_HOURS][RAND_ARTICLES];
    uint32_t order[RAND_HOURS * RAND_ARTICLES]; /* hour * RAND_ARTICLES + article */
    size_t n_order;
    const char **tok; /* the arguments put, read back */
    size_t *tok_len, n_tok;
};

/* Split the RESP bulk strings of BODY into U's tokens, asserting their framing. */
static void rand_read(struct rand_merge *u, const char *body, size_t len)
{
    size_t i = 0, cap = 0;

    u->n_tok = 0;
    while (i < len) {
        size_t n = 0, digits = 0;

        assert_int_equal(body[i++], '$');
        for (; i < len && body[i] >= '0' && body[i] <= '9'; digits++)
            n = n * 10 + (size_t)(body[i++] - '0');
        assert_true(digits > 0 && len - i >= 4 && n <= len - i - 4);
        assert_memory_equal(body + i, "\r\n", 2);
        assert_memory_equal(body + i + 2 + n, "\r\n", 2);
        if (u->n_tok == cap) {
            cap = cap != 0 ? 2 * cap : 1024;
            u->tok = realloc(u->tok, cap * sizeof(*u->tok));
            u->tok_len = realloc(u->tok_len, cap * sizeof(*u->tok_len));
            assert_non_null(u->tok);
            assert_non_null(u->tok_len);
        }
        u->tok[u->n_tok] = body + i + 2;
        u->tok_len[u->n_tok++] = n;
        i += 4 + n;
    }
}

static void rand_tok(const struct rand_merge *u, size_t *at, const char *want)
{
    if (*at >= u->n_tok) {
        print_error("argument %zu missing, want '%s'\n", *at, want);
        fail();
    }
    if (u->tok_len[*at] != strlen(want) || memcmp(u->tok[*at], want, strlen(want)) != 0) {
        print_error("argument %zu: got '%.*s', want '%s'\n", *at, (int)u->tok_len[*at], u->tok[*at],
                    want);
        fail();
    }
    ++*at;
}

static void rand_tok_int(const struct rand_merge *u, size_t *at, long long v)
{
    char s[24];

    snprintf(s, sizeof(s), "%lld", v);
    rand_tok(u, at, s);
}

/* "count (name n)..." of the N values V not 0, named by NAME(i). */
static void rand_tok_pairs(const struct rand_merge *u, size_t *at, const uint64_t *v, int n,
                           const char *(*name)(int))
{
    long long k = 0;

    for (int i = 0; i < n; i++)
        k += v[i] != 0;
    rand_tok_int(u, at, k);
    for (int i = 0; i < n; i++)
        if (v[i] != 0) {
            rand_tok(u, at, name(i));
            rand_tok_int(u, at, (long long)v[i]);
        }
}

static const char *name_network(int i)
{
    return tally_network_name((enum tally_network)i);
}

static const char *name_metric(int i)
{
    return tally_metric_name((enum tally_metric)i);
}

static const char *name_property(int i)
{
    return tally_properties[i].name;
}

/* Add RAND_RECORDS random records to M and to U's sums. */
static void rand_add(struct rand_merge *u, struct tally_merge *m, uint64_t seed, int64_t hour0)
{
    uint64_t s = seed, vis[RAND_VIS_MAX];
    int64_t deltas[2] = {3, -4};

    memset(u->sum, 0, sizeof(u->sum));
    for (size_t h = 0; h < RAND_HOURS; h++)
        for (size_t a = 0; a < RAND_ARTICLES; a++)
            u->sum[h][a].order = -1;
    u->n_order = 0;
    for (size_t i = 0; i < RAND_RECORDS; i++) {
        uint32_t h = rand_below(&s, RAND_HOURS), a = rand_below(&s, RAND_ARTICLES);
        struct naive *x = &u->sum[h][a];
        struct tally_record r = {.bucket = a % 256,
                                 .id = u->ids[a],
                                 .len = strlen(u->ids[a]),
                                 .views = rand_below(&s, 4),
                                 .vis = vis,
                                 .n_vis = rand_below(&s, RAND_VIS_MAX + 1)};

        for (size_t v = 0; v < r.n_vis; v++)
            vis[v] = rand_below(&s, RAND_VISITORS) * UINT64_C(0x9e3779b97f4a7c15);
        for (int k = 0; k < TALLY_NETWORKS; k++)
            if (rand_below(&s, 6) == 0)
                r.shares[k] = 1 + rand_below(&s, 3);
        if (rand_below(&s, 3) == 0)
            r.sums[TALLY_METRIC_ENGAGED] = 1 + rand_below(&s, 3600);
        if (rand_below(&s, 4) == 0)
            r.sums[TALLY_METRIC_READS] = 1;
        if (rand_below(&s, 3) == 0)
            r.props[TALLY_PROPERTY_WORDS] = 1 + rand_below(&s, 1000000);
        if (rand_below(&s, 10) == 0) {
            r.deltas = deltas;
            r.n_deltas = 2;
        }
        assert_int_equal(tally_merge_add(m, hour0 + h, &r), 0);

        if (x->order < 0) {
            x->order = (long)u->n_order;
            u->order[u->n_order++] = h * RAND_ARTICLES + a;
        }
        x->views += r.views;
        for (int k = 0; k < TALLY_NETWORKS; k++)
            x->shares[k] += r.shares[k];
        for (int k = 0; k < TALLY_METRICS; k++)
            x->sums[k] += r.sums[k];
        for (int k = 0; k < TALLY_PROPERTIES; k++)
            x->props[k] = r.props[k] != 0 ? r.props[k] : x->props[k];
        for (size_t v = 0; v < r.n_vis; v++) {
            size_t k = 0;

            while (k < x->n_vis && x->vis[k] != vis[v])
                k++;
            if (k == x->n_vis)
                x->vis[x->n_vis++] = vis[v];
        }
    }
}

/* M's arguments, read back, are U's sums in the order of first add. */
static void rand_expect(struct rand_merge *u, struct tally_merge *m, int64_t hour0)
{
    struct tally_buf b;
    size_t args, at = 0, n_vis = 0;

    tally_buf_init(&b);
    args = tally_merge_put(m, &b);
    assert_false(b.oom);
    rand_read(u, b.data, b.len);
    assert_int_equal(args, u->n_tok);
    assert_int_equal(tally_merge_records(m), u->n_order);
    for (size_t i = 0; i < u->n_order; i++) {
        uint32_t h = u->order[i] / RAND_ARTICLES, a = u->order[i] % RAND_ARTICLES;
        const struct naive *x = &u->sum[h][a];
        uint64_t props[TALLY_PROPERTIES];
        char tag[3], hex[17];

        rand_tok_int(u, &at, (long long)(hour0 + h) * 3600);
        snprintf(tag, sizeof(tag), "%02x", a % 256);
        rand_tok(u, &at, tag);
        rand_tok(u, &at, u->ids[a]);
        rand_tok_int(u, &at, (long long)x->views);
        rand_tok_int(u, &at, (long long)x->n_vis);
        for (size_t v = 0; v < x->n_vis; v++) {
            snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)x->vis[v]);
            rand_tok(u, &at, hex);
        }
        n_vis += x->n_vis;
        rand_tok_pairs(u, &at, x->shares, TALLY_NETWORKS, name_network);
        rand_tok_int(u, &at, 0);
        rand_tok_pairs(u, &at, x->sums, TALLY_METRICS, name_metric);
        for (int k = 0; k < TALLY_PROPERTIES; k++)
            props[k] = x->props[k];
        rand_tok_pairs(u, &at, props, TALLY_PROPERTIES, name_property);
    }
    assert_int_equal(at, u->n_tok);
    /* Both tables grew past their first 1,024 slots, more than once. */
    assert_true(u->n_order > 1024);
    assert_true(n_vis > 4096);
    tally_buf_release(&b);
}

/* The records RS (N of merged_two_hours) as one chunk of text: joined by "\n". */
static void put_chunk(struct tally_buf *b, const size_t *rs, size_t n)
{
    for (size_t r = 0; r < n; r++) {
        if (r > 0)
            tally_buf_add(b, "\n", 1);
        tally_buf_adds(b, merged_two_hours[rs[r]]);
    }
}

/* A fold that counts at most STEP records at once: more than STEP records go, STEP at a time,
 * into chunks of text (each record "<hour*3600>\n<record>", joined by "\n"), none as RESP;
 * STEP or fewer all as RESP; the order of the records is kept. */
static void test_merge_puts_records_in_steps(void **state)
{
    static const struct {
        size_t step, chunks;
    } cases[] = {{0, 0}, {1, 5}, {2, 3}, {3, 2}, {4, 2}, {5, 0}, {6, 0}, {1000, 0}};
    const size_t n = N_ELEMS(merged_two_hours);
    struct tally_merge *m = merge_two_hours();
    struct tally_buf b, w;

    (void)state;
    tally_buf_init(&b);
    tally_buf_init(&w);
    assert_int_equal(tally_merge_records(m), n);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t step = cases[i].step, first = cases[i].chunks > 0 ? 0 : n, args;
        char head[32];

        tally_buf_reset(&w);
        snprintf(head, sizeof(head), "$1\r\n%zu\r\n", cases[i].chunks);
        tally_buf_adds(&w, head);
        args = 1 + cases[i].chunks;
        for (size_t c = 0; c < cases[i].chunks; c++) {
            struct tally_buf chunk;
            size_t rs[8], k = 0;

            for (size_t r = first + c * step; r < first + (c + 1) * step && r < n; r++)
                rs[k++] = r;
            tally_buf_init(&chunk);
            put_chunk(&chunk, rs, k);
            snprintf(head, sizeof(head), "$%zu\r\n", chunk.len);
            tally_buf_adds(&w, head);
            tally_buf_add(&w, chunk.data, chunk.len);
            tally_buf_add(&w, "\r\n", 2);
            tally_buf_release(&chunk);
        }
        for (size_t r = 0; r < first; r++) {
            resp_of_text(&w, merged_two_hours[r], strlen(merged_two_hours[r]));
            args++;
            for (const char *p = merged_two_hours[r]; (p = strchr(p, '\n')) != NULL; p++)
                args++;
        }
        assert_int_equal(tally_merge_chunks(m, step), cases[i].chunks);
        tally_buf_reset(&b);
        assert_int_equal(tally_merge_put_steps(m, &b, step), args);
        expect_bytes(&b, w.data, w.len);
    }
    /* An empty merge: no chunk, no record. */
    tally_merge_clear(m);
    tally_buf_reset(&b);
    assert_int_equal(tally_merge_put_steps(m, &b, 2), 1);
    expect_bytes(&b, "$1\r\n0\r\n", 7);
    tally_buf_release(&b);
    tally_buf_release(&w);
    tally_merge_free(m);
}

/* A cluster fold's parts: a chunk of text per bucket, buckets in the order of their first
 * record, each bucket's records in the order first added (8c: records 0, 1 and 3). */
static void test_merge_puts_records_by_bucket(void **state)
{
    static const struct {
        unsigned bucket;
        size_t records[3], n;
    } want[] = {{0x8c, {0, 1, 3}, 3}, {0xef, {2}, 1}, {0x12, {4}, 1}};
    struct tally_merge_part parts[TALLY_BUCKETS];
    struct tally_merge *m = merge_two_hours();
    struct tally_buf b, w;

    (void)state;
    tally_buf_init(&b);
    tally_buf_init(&w);
    tally_buf_adds(&b, "before");
    assert_int_equal(tally_merge_put_buckets(m, &b, parts), (int)N_ELEMS(want));
    tally_buf_adds(&w, "before");
    for (size_t p = 0; p < N_ELEMS(want); p++) {
        size_t at = w.len;

        put_chunk(&w, want[p].records, want[p].n);
        assert_int_equal(parts[p].bucket, want[p].bucket);
        assert_int_equal(parts[p].at, at);
        assert_int_equal(parts[p].len, w.len - at);
    }
    expect_bytes(&b, w.data, w.len);
    /* Again: the same (the chains are made afresh). */
    tally_buf_reset(&b);
    tally_buf_adds(&b, "before");
    assert_int_equal(tally_merge_put_buckets(m, &b, parts), (int)N_ELEMS(want));
    expect_bytes(&b, w.data, w.len);
    /* An empty merge: no part. */
    tally_merge_clear(m);
    tally_buf_reset(&b);
    assert_int_equal(tally_merge_put_buckets(m, &b, parts), 0);
    assert_int_equal(b.len, 0);
    tally_buf_release(&b);
    tally_buf_release(&w);
    tally_merge_free(m);
}

static void test_merge_matches_a_brute_force_sum(void **state)
{
    static const struct {
        uint64_t seed;
        int64_t hour0;
    } rounds[] = {{0x9e3779b97f4a7c15ULL, HOUR}, {42, 0}, {0xdecafbad, HOUR + 7}};
    struct rand_merge *u = calloc(1, sizeof(*u));
    struct tally_merge *m = tally_merge_new();

    (void)state;
    assert_non_null(u);
    assert_non_null(m);
    for (uint32_t a = 0; a < RAND_ARTICLES; a++)
        snprintf(u->ids[a], sizeof(u->ids[a]), a % 7 == 0 ? "\xc3\xa9t\xc3\xa9/%u" : "art-%u", a);
    /* The same merge each round, cleared between: its grown tables are reused. */
    for (size_t i = 0; i < N_ELEMS(rounds); i++) {
        tally_merge_clear(m);
        rand_add(u, m, rounds[i].seed, rounds[i].hour0);
        rand_expect(u, m, rounds[i].hour0);
    }
    tally_merge_free(m);
    free(u->tok);
    free(u->tok_len);
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_puts_a_record_as_text),
        cmocka_unit_test(test_merge_puts_a_record_as_resp),
        cmocka_unit_test(test_merge_frames_a_record_exactly),
        cmocka_unit_test(test_merge_tells_whether_a_record_counts),
        cmocka_unit_test(test_merge_adds_up_per_article_and_hour),
        cmocka_unit_test(test_merge_keeps_the_first_records_bucket),
        cmocka_unit_test(test_merge_keeps_many_hours_of_one_article_apart),
        cmocka_unit_test(test_merge_clears_and_is_reused),
        cmocka_unit_test(test_merge_puts_records_in_steps),
        cmocka_unit_test(test_merge_puts_records_by_bucket),
        cmocka_unit_test(test_merge_matches_a_brute_force_sum),
    };

    return cmocka_run_group_tests_name("merge", tests, NULL, NULL);
}
