/* test_agg.c -- write units: the apply script's arguments built from requests, and its answer
 * read back per request. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/agg.h"
#include "tally/merge.h"
#include "tally/error.h"
#include "tally/keys.h"
#include "unit.h"

/* ---- Reading the unit's RESP body back ---- */

struct resp {
    size_t n, cap;
    const char **p;
    size_t *len;
};

static void resp_push(struct resp *r, const char *p, size_t len)
{
    if (r->n == r->cap) {
        r->cap = r->cap != 0 ? 2 * r->cap : 64;
        r->p = realloc(r->p, r->cap * sizeof(*r->p));
        r->len = realloc(r->len, r->cap * sizeof(*r->len));
        assert_non_null(r->p);
        assert_non_null(r->len);
    }
    r->p[r->n] = p;
    r->len[r->n++] = len;
}

/* Split BODY into its bulk strings, asserting the framing is exactly "$<n>\r\n<n bytes>\r\n". */
static void resp_read(struct resp *r, const char *body, size_t len)
{
    size_t i = 0;

    r->n = 0;
    while (i < len) {
        size_t n = 0, digits = 0;

        assert_int_equal(body[i++], '$');
        while (i < len && body[i] >= '0' && body[i] <= '9') {
            n = n * 10 + (size_t)(body[i++] - '0');
            digits++;
        }
        assert_true(digits > 0 && (digits == 1 || body[i - digits] != '0'));
        assert_true(len - i >= 2 && n <= len - i - 2 && len - i - 2 - n >= 2);
        assert_memory_equal(body + i, "\r\n", 2);
        resp_push(r, body + i + 2, n);
        i += 2 + n;
        assert_memory_equal(body + i, "\r\n", 2);
        i += 2;
    }
}

static void resp_free(struct resp *r)
{
    free(r->p);
    free(r->len);
    memset(r, 0, sizeof(*r));
}

/* Walks the arguments, asserting each one. */
struct cur {
    const struct resp *r;
    size_t i;
};

static void cur_bytes(struct cur *c, const char *want, size_t len)
{
    if (c->i >= c->r->n) {
        print_error("argument %zu: missing, want '%.*s'\n", c->i, (int)len, want);
        fail();
    }
    if (c->r->len[c->i] != len || memcmp(c->r->p[c->i], want, len) != 0) {
        print_error("argument %zu: got '%.*s', want '%.*s'\n", c->i, (int)c->r->len[c->i],
                    c->r->p[c->i], (int)len, want);
        for (size_t k = c->i > 12 ? c->i - 12 : 0; k < c->i + 4 && k < c->r->n; k++)
            print_error("  [%zu] '%.*s'\n", k, (int)c->r->len[k], c->r->p[k]);
        fail();
    }
    c->i++;
}

static void cur_str(struct cur *c, const char *want)
{
    cur_bytes(c, want, strlen(want));
}

static void cur_int(struct cur *c, long long v)
{
    char tmp[24];

    snprintf(tmp, sizeof(tmp), "%lld", v);
    cur_str(c, tmp);
}

static void cur_end(const struct cur *c)
{
    if (c->i != c->r->n) {
        print_error("%zu arguments, want %zu\n", c->r->n, c->i);
        fail();
    }
}

/* The model as apply.lua takes it (include/tally/model.h). */
#define MODEL_ARG "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+"

/* ---- Building requests ---- */

static struct tally_event ev_make(const char *id, enum tally_event_type type,
                                  enum tally_network net, int delta)
{
    return (struct tally_event){.article = id,
                                .article_len = (uint16_t)strlen(id),
                                .type = (uint8_t)type,
                                .network = (uint8_t)net,
                                .delta = (int16_t)delta};
}

static struct tally_event ev_view(const char *id)
{
    return ev_make(id, TALLY_EVENT_VIEW, TALLY_NETWORK_OTHER, 1);
}

static struct tally_event ev_share(const char *id, enum tally_network net)
{
    return ev_make(id, TALLY_EVENT_SHARE, net, 1);
}

static struct tally_event ev_comment(const char *id, int delta)
{
    return ev_make(id, TALLY_EVENT_COMMENT, TALLY_NETWORK_OTHER, delta);
}

/* ---- Expectations ---- */

static void bucket_hex(const char *id, size_t len, char out[3])
{
    snprintf(out, 3, "%02x", tally_key_bucket(id, len));
}

/* Split the comma-separated LIST into at most MAX items of up to 31 bytes. */
static size_t split(const char *list, char items[][32], size_t max)
{
    size_t n = 0;

    while (*list != '\0') {
        size_t len = strcspn(list, ",");

        assert_true(n < max && len < 32);
        memcpy(items[n], list, len);
        items[n++][len] = '\0';
        list += len + (list[len] == ',');
    }
    return n;
}

/* One article record. VISITORS: hex visitor ids, SHARES: "network=count", DELTAS: integers,
 * each a comma-separated list. */
struct want_art {
    const char *id;
    long long views;
    const char *visitors, *shares, *deltas;
    const char *sums, *props; /* "name=n", comma-separated; NULL: none */
};

/* "count (name n)..." of LIST ("name=n", comma-separated; NULL: none). */
static void expect_pairs(struct cur *c, const char *list)
{
    char items[16][32];
    size_t n = split(list != NULL ? list : "", items, 16);

    cur_int(c, (long long)n);
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(items[i], '=');

        assert_non_null(eq);
        *eq = '\0';
        cur_str(c, items[i]);
        cur_str(c, eq + 1);
    }
}

static void expect_article(struct cur *c, const struct want_art *w)
{
    char items[64][32], tag[3], hex[17];
    size_t n;

    bucket_hex(w->id, strlen(w->id), tag);
    cur_str(c, tag);
    cur_str(c, w->id);
    cur_int(c, w->views);
    cur_int(c, (long long)(n = split(w->visitors, items, 64)));
    for (size_t i = 0; i < n; i++) {
        snprintf(hex, sizeof(hex), "%016llx", strtoull(items[i], NULL, 16));
        cur_str(c, hex);
    }
    cur_int(c, (long long)(n = split(w->shares, items, 64)));
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(items[i], '=');

        assert_non_null(eq);
        *eq = '\0';
        cur_str(c, items[i]);
        cur_str(c, eq + 1);
    }
    cur_int(c, (long long)(n = split(w->deltas, items, 64)));
    for (size_t i = 0; i < n; i++)
        cur_str(c, items[i]);
    expect_pairs(c, w->sums);
    expect_pairs(c, w->props);
}

static void expect_segment(struct cur *c, const char *idem, long long accepted, long long bot,
                           long long prefetch, const struct want_art *arts, size_t n)
{
    cur_str(c, idem != NULL ? idem : "");
    cur_str(c, ""); /* no digest given */
    cur_int(c, accepted);
    cur_int(c, bot);
    cur_int(c, prefetch);
    cur_int(c, (long long)n);
    for (size_t i = 0; i < n; i++)
        expect_article(c, &arts[i]);
}

/* One article's entry in a journal segment's checks ("cur prev n visitor...", its
 * repeat-view hashes of the unit's slot and the one before, "tally:{tag}w:<id>:<slot>";
 * LIST: hex visitor ids) or comments ("tag id n delta...", LIST: deltas), comma-separated. */
struct want_list {
    const char *id, *list;
};

/* A journal segment (src/scripts/ack.lua): idem_key digest accepted bot prefetch, the checks,
 * the comments (each up to the first without an id) and the entry's text. */
struct want_seg {
    const char *idem, *digest;
    long long accepted, bot, prefetch;
    struct want_list checks[4], comments[4];
    const char *text;
};

/* The checks (SLOT: the unit's window-long slot) or, SLOT -1, the comments. */
static void expect_lists(struct cur *c, const struct want_list *w, size_t max, long long slot)
{
    bool hex = slot >= 0;
    char items[64][32], tag[3], h[17], key[128];
    size_t n = 0;

    while (n < max && w[n].id != NULL)
        n++;
    cur_int(c, (long long)n);
    for (size_t i = 0; i < n; i++) {
        size_t k = split(w[i].list, items, 64);

        bucket_hex(w[i].id, strlen(w[i].id), tag);
        if (hex) {
            snprintf(key, sizeof(key), "tally:{%s}w:%s:%lld", tag, w[i].id, slot);
            cur_str(c, key);
            snprintf(key, sizeof(key), "tally:{%s}w:%s:%lld", tag, w[i].id, slot - 1);
            cur_str(c, key);
        } else {
            cur_str(c, tag);
            cur_str(c, w[i].id);
        }
        cur_int(c, (long long)k);
        for (size_t j = 0; j < k; j++) {
            if (!hex) {
                cur_str(c, items[j]);
                continue;
            }
            snprintf(h, sizeof(h), "%016llx", strtoull(items[j], NULL, 16));
            cur_str(c, h);
        }
    }
}

/* W, of a unit whose window-long slot is SLOT. */
static void expect_journal_segment(struct cur *c, const struct want_seg *w, long long slot)
{
    cur_str(c, w->idem);
    cur_str(c, w->digest);
    cur_int(c, w->accepted);
    cur_int(c, w->bot);
    cur_int(c, w->prefetch);
    expect_lists(c, w->checks, N_ELEMS(w->checks), slot);
    expect_lists(c, w->comments, N_ELEMS(w->comments), -1);
    cur_str(c, w->text);
}

/* The "fresh" argument with nothing known: "<tag>d7f<tag>h6f" per bucket (every metric's day
 * key and the site totals, every metric's hour key). */
static void expect_fresh(struct cur *c)
{
    const char *f = c->r->p[c->i];
    size_t len = c->r->len[c->i];

    assert_int_equal(len % 10, 0);
    for (size_t i = 0; i < len; i += 10) {
        assert_memory_equal(f + i, f + i + 5, 2);
        assert_memory_equal(f + i + 2, "d7f", 3);
        assert_memory_equal(f + i + 7, "h6f", 3);
    }
    c->i++;
}

/* "1", "P{bb}x:<attempt>" with bb the bucket of FIRST_ID (with a journal: "3", the marker,
 * the journal and its registry), "P", window, 600, 86400, now, the fence (not set yet: 15
 * zeros) and the "fresh" list, nothing known here. */
static void expect_header(struct cur *c, const struct tally_agg *a, const char *first_id,
                          const char *attempt)
{
    char key[TALLY_KEY_MAX], tag[3];

    bucket_hex(first_id, strlen(first_id), tag);
    snprintf(key, sizeof(key), "%s{%s}x:%s", a->prefix, tag, attempt);
    cur_str(c, a->journal != NULL ? "3" : "1");
    cur_str(c, key);
    if (a->journal != NULL) {
        cur_str(c, a->journal);
        cur_str(c, a->registry);
    }
    cur_str(c, a->prefix);
    cur_int(c, a->window);
    cur_str(c, "600");
    cur_str(c, "86400");
    cur_int(c, a->now);
    cur_str(c, "000000000000000");
    expect_fresh(c);
    cur_str(c, MODEL_ARG);
    assert_int_equal(a->attempt_len, strlen(key));
    assert_string_equal(a->attempt_key, key);
}

/* Build the unit of REQS and split its body into R, checking the argument count. */
static void agg_build_ok(struct tally_agg *a, struct tally_agg_req *const *reqs, size_t n,
                         const char *attempt, struct resp *r, struct cur *c)
{
    assert_int_equal(tally_agg_build(a, reqs, n, attempt), 0);
    assert_false(a->body.oom);
    resp_read(r, a->body.data, a->body.len);
    assert_int_equal(r->n, a->nargs);
    *c = (struct cur){.r = r, .i = 0};
}

/* ---- Building units ---- */

static void test_agg_writes_visitor_ids_as_sixteen_hex_digits(void **state)
{
    static const struct {
        uint64_t v;
        const char *want;
    } cases[] = {
        {0, "0000000000000000"},
        {1, "0000000000000001"},
        {0x0123456789abcdefULL, "0123456789abcdef"},
        {0xfedcba9876543210ULL, "fedcba9876543210"},
        {UINT64_MAX, "ffffffffffffffff"},
    };
    char out[17];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        out[16] = '#';
        tally_visitor_hex(cases[i].v, out);
        assert_memory_equal(out, cases[i].want, 16);
        assert_int_equal(out[16], '#');
    }
}

static void test_agg_frames_a_one_view_unit_exactly(void **state)
{
    static const char want[] = "$1\r\n1\r\n"
                               "$16\r\ntally:{8c}x:n0-1\r\n"
                               "$6\r\ntally:\r\n"
                               "$4\r\n1800\r\n"
                               "$3\r\n600\r\n"
                               "$5\r\n86400\r\n"
                               "$10\r\n1800000000\r\n"
                               "$15\r\n000000000000000\r\n"
                               "$10\r\n8cd7f8ch6f\r\n"
                               "$77\r\n" MODEL_ARG "\r\n"
                               "$0\r\n\r\n$0\r\n\r\n$1\r\n1\r\n$1\r\n0\r\n$1\r\n0\r\n"
                               "$1\r\n1\r\n$2\r\n8c\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n0\r\n$1\r\n0\r\n"
                               "$1\r\n0\r\n$1\r\n0\r\n$1\r\n0\r\n";
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&r0};
    struct tally_agg a;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    a.now = 1800000000;
    assert_int_equal(tally_agg_build(&a, reqs, 1, "n0-1"), 0);
    assert_int_equal(a.nargs, 24);
    assert_int_equal(a.body.len, sizeof(want) - 1);
    assert_memory_equal(a.body.data, want, sizeof(want) - 1);
    tally_agg_release(&a);
}

/* The fence is rewritten in place for each send, at its fixed width; the rest of the unit
 * stays as built. */
static void test_agg_sets_the_fence_in_place(void **state)
{
    static const struct {
        int64_t fence;
        const char *want;
    } cases[] = {
        {1764950000123, "001764950000123"},
        {0, "000000000000000"},
        {-5, "000000000000000"},
        {999999999999999, "999999999999999"},
        {42, "000000000000042"},
    };
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1, .idem_key = "k", .idem_len = 1};
    struct tally_agg_req *reqs[] = {&r0};
    struct tally_agg a;
    char *before;
    size_t len;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    a.now = 1800000000;
    assert_int_equal(tally_agg_build(&a, reqs, 1, "n0-1"), 0);
    len = a.body.len;
    before = malloc(len);
    assert_non_null(before);
    memcpy(before, a.body.data, len);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct resp r = {0};

        tally_agg_fence(&a, cases[i].fence);
        assert_int_equal(a.body.len, len);
        resp_read(&r, a.body.data, a.body.len);
        assert_int_equal(r.len[7], 15);
        assert_memory_equal(r.p[7], cases[i].want, 15);
        /* Nothing else moved. */
        assert_memory_equal(a.body.data, before, a.fence_at);
        assert_memory_equal(a.body.data + a.fence_at + 15, before + a.fence_at + 15,
                            len - a.fence_at - 15);
        resp_free(&r);
    }
    free(before);
    tally_agg_release(&a);
}

/* Redis Cluster: every key the script will touch is declared -- and only those: the bucket
 * keys of the metrics the unit counts, the site totals' when one of them is summed there --,
 * all in the article's slot. "d{b}views:..." stands for "t:{<bucket of x>}d:views:...". */
static void test_agg_declares_the_keys_the_unit_touches_in_cluster_mode(void **state)
{
    static const uint64_t one_visitor[] = {7};
    static const struct {
        const char *what;
        uint32_t window;
        struct tally_event ev[3];
        size_t n;
        const uint64_t *visitor;
        bool keyed;
        const char *want[32];
    } cases[] = {
        {"a keyed view without a visitor id",
         1800,
         {{.article = "x", .article_len = 1, .type = TALLY_EVENT_VIEW}},
         1,
         NULL,
         true,
         {"i{b}key-1", "a{b}x", "d{b}views:20270115", "h{b}views:2027011508", "t{b}views",
          "s{b}20270115", "s{b}all"}},
        {"a view with a visitor and a repeat window",
         1800,
         {{.article = "x", .article_len = 1, .type = TALLY_EVENT_VIEW}},
         1,
         one_visitor,
         false,
         {"a{b}x", "v{b}20270115:x", "w{b}x:1000001", "w{b}x:1000000", "d{b}views:20270115",
          "h{b}views:2027011508", "t{b}views", "d{b}visitors:20270115",
          "h{b}visitors:2027011508", "t{b}visitors", "s{b}20270115", "s{b}all"}},
        {"a view with a visitor, no window",
         0,
         {{.article = "x", .article_len = 1, .type = TALLY_EVENT_VIEW}},
         1,
         one_visitor,
         false,
         {"a{b}x", "v{b}20270115:x", "d{b}views:20270115", "h{b}views:2027011508",
          "t{b}views", "d{b}visitors:20270115", "h{b}visitors:2027011508", "t{b}visitors",
          "s{b}20270115", "s{b}all"}},
        {"a share and a comment",
         0,
         {{.article = "x", .article_len = 1, .type = TALLY_EVENT_SHARE,
           .network = TALLY_NETWORK_EMAIL},
          {.article = "x", .article_len = 1, .type = TALLY_EVENT_COMMENT, .delta = -1}},
         2,
         NULL,
         false,
         {"a{b}x", "d{b}shares:20270115", "h{b}shares:2027011508", "t{b}shares",
          "d{b}comments:20270115", "h{b}comments:2027011508", "t{b}comments", "s{b}20270115",
          "s{b}all"}},
        {"engaged seconds and a read",
         0,
         {{.article = "x", .article_len = 1, .type = TALLY_EVENT_ENGAGE, .seconds = 30,
           .read = true}},
         1,
         NULL,
         false,
         {"a{b}x", "d{b}engaged:20270115", "h{b}engaged:2027011508", "t{b}engaged",
          "d{b}reads:20270115", "h{b}reads:2027011508", "t{b}reads", "s{b}20270115",
          "s{b}all"}},
    };
    char tag[3], key[TALLY_KEY_MAX], idem[64];

    (void)state;
    bucket_hex("x", 1, tag);
    snprintf(idem, sizeof(idem), "t:{%s}i:key-1", tag);
    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        struct tally_agg_req r0 = {.ev = cases[c].ev, .n = cases[c].n,
                                   .visitor = cases[c].visitor};
        struct tally_agg_req *reqs[] = {&r0};
        struct tally_agg a;
        struct resp r;
        unsigned slot;
        size_t n = 0;

        while (n < N_ELEMS(cases[c].want) && cases[c].want[n] != NULL)
            n++;
        if (cases[c].keyed) {
            r0.idem_key = idem;
            r0.idem_len = strlen(idem);
        }
        tally_agg_init(&a, "t:", cases[c].window);
        a.declare = true;
        a.now = 1800001800; /* 2027-01-15 08:30 UTC, window slot 1000001 */
        assert_int_equal(tally_agg_build(&a, reqs, 1, "n-1"), 0);
        memset(&r, 0, sizeof(r));
        resp_read(&r, a.body.data, a.body.len);
        if (atoi(r.p[0]) != 1 + (int)n) {
            print_error("%s: %d keys, want %zu\n", cases[c].what, atoi(r.p[0]), 1 + n);
            fail();
        }
        slot = tally_key_slot(r.p[1], r.len[1]);
        for (size_t i = 0; i < n; i++) {
            const char *want = cases[c].want[i], *brace = strchr(want, '{');

            snprintf(key, sizeof(key), "t:{%s}%.*s:%s", tag, (int)(brace - want), want,
                     brace + 3);
            if (r.len[2 + i] != strlen(key) || memcmp(r.p[2 + i], key, strlen(key)) != 0) {
                print_error("%s: key %zu is %.*s, want %s\n", cases[c].what, i + 1,
                            (int)r.len[2 + i], r.p[2 + i], key);
                fail();
            }
            assert_int_equal(tally_key_slot(r.p[2 + i], r.len[2 + i]), slot);
        }
        resp_free(&r);
        tally_agg_release(&a);
    }
}

/* Keys known to have their expiry are left out of "fresh", per bucket and metric: knowing a
 * bucket's views keys says nothing of its shares keys. */
static void test_agg_asks_for_expiry_only_where_it_may_be_missing(void **state)
{
    struct tally_event ev[] = {ev_view("a"), ev_view("b")};
    struct tally_agg_req r0 = {.ev = ev, .n = 2};
    struct tally_agg_req *reqs[] = {&r0};
    uint8_t day[TALLY_BUCKETS] = {0}, hour[TALLY_BUCKETS] = {0};
    unsigned ba = tally_key_bucket("a", 1), bb = tally_key_bucket("b", 1);
    char want[32], ta[3], tb[3];
    struct tally_agg a;
    struct resp r = {0};

    (void)state;
    assert_int_not_equal(ba, bb);
    bucket_hex("a", 1, ta);
    bucket_hex("b", 1, tb);
    day[ba] = TALLY_EXPIRY_DAY_ALL;
    hour[ba] = TALLY_EXPIRY_HOUR_ALL;
    day[bb] = TALLY_EXPIRY_VIEWS | TALLY_EXPIRY_SITE;
    hour[bb] = TALLY_EXPIRY_HOUR_ALL;
    tally_agg_init(&a, "p:", 0);
    a.known_day = day;
    a.known_hour = hour;
    assert_int_equal(tally_agg_build(&a, reqs, 1, "u-1"), 0);
    resp_read(&r, a.body.data, a.body.len);
    /* numkeys, marker, P, window, 600, 86400, now, fence, fresh: bucket b's day keys of
     * visitors, shares, comments, reads and engaged only */
    snprintf(want, sizeof(want), "%sd6e", tb);
    assert_int_equal(r.len[8], strlen(want));
    assert_memory_equal(r.p[8], want, strlen(want));
    resp_free(&r);
    tally_agg_release(&a);
}

static void test_agg_header_names_the_marker_key_and_settings(void **state)
{
    struct tally_event ev0[] = {ev_view("news/2025/kim-missiles"), ev_view("b")};
    struct tally_event ev1[] = {ev_share("c", TALLY_NETWORK_EMAIL)};
    struct tally_agg_req r0 = {.ev = ev0, .n = 2, .bot = 3, .prefetch = 1};
    struct tally_agg_req r1 = {.ev = ev1, .n = 1, .bot = 2};
    struct tally_agg_req *reqs[] = {&r0, &r1};
    const struct want_art arts[] = {
        {"news/2025/kim-missiles", 1, "", "", "", NULL, NULL},
        {"b", 1, "", "", "", NULL, NULL},
        {"c", 0, "", "email=1", "", NULL, NULL},
    };
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "site7/", 0);
    agg_build_ok(&a, reqs, 2, "abcdef0123456789-42", &r, &c);
    expect_header(&c, &a, "news/2025/kim-missiles", "abcdef0123456789-42");
    expect_segment(&c, NULL, 3, 5, 1, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_coalesces_views_of_one_article(void **state)
{
    struct tally_event ev[40], other[] = {ev_view("other")};
    struct tally_agg_req rq[5];
    struct tally_agg_req *reqs[5];
    const struct want_art arts[] = {
        {"hot", 40, "", "", "", NULL, NULL},
        {"other", 1, "", "", "", NULL, NULL},
    };
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    for (size_t i = 0; i < 40; i++)
        ev[i] = ev_view("hot");
    /* 10 views in each of four requests, and one of another article between them. */
    for (size_t i = 0; i < 5; i++) {
        rq[i] = (struct tally_agg_req){.ev = &ev[10 * (i - (i > 2))], .n = 10};
        reqs[i] = &rq[i];
    }
    rq[2] = (struct tally_agg_req){.ev = other, .n = 1};
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, reqs, 5, "u-1", &r, &c);
    expect_header(&c, &a, "hot", "u-1");
    expect_segment(&c, NULL, 41, 0, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_counts_shares_per_network_in_contract_order(void **state)
{
    struct tally_event ev0[] = {
        ev_share("a", TALLY_NETWORK_TWITTER), ev_share("a", TALLY_NETWORK_OTHER),
        ev_share("b", TALLY_NETWORK_NATIVE),  ev_share("a", TALLY_NETWORK_TWITTER),
        ev_share("a", TALLY_NETWORK_COPY),
    };
    struct tally_event ev1[] = {
        ev_share("a", TALLY_NETWORK_FACEBOOK),
        ev_share("a", TALLY_NETWORK_TWITTER),
        ev_share("a", TALLY_NETWORK_OTHER),
    };
    struct tally_agg_req r0 = {.ev = ev0, .n = N_ELEMS(ev0)}, r1 = {.ev = ev1, .n = N_ELEMS(ev1)};
    struct tally_agg_req *reqs[] = {&r0, &r1};
    const struct want_art arts[] = {
        {"a", 0, "", "facebook=1,twitter=3,copy=1,other=2", "", NULL, NULL},
        {"b", 0, "", "native=1", "", NULL, NULL},
    };
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, reqs, 2, "u-1", &r, &c);
    expect_header(&c, &a, "a", "u-1");
    expect_segment(&c, NULL, 8, 0, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_keeps_comment_deltas_in_arrival_order(void **state)
{
    struct tally_event ev0[] = {ev_comment("a", 5), ev_comment("b", 1), ev_comment("a", -1)};
    struct tally_event ev1[] = {ev_comment("a", -1000), ev_view("b"), ev_comment("a", 1000),
                                ev_comment("a", -1)};
    struct tally_agg_req r0 = {.ev = ev0, .n = N_ELEMS(ev0)}, r1 = {.ev = ev1, .n = N_ELEMS(ev1)};
    struct tally_agg_req *reqs[] = {&r0, &r1};
    const struct want_art arts[] = {
        {"a", 0, "", "", "5,-1,-1000,1000,-1", NULL, NULL},
        {"b", 1, "", "", "1", NULL, NULL},
    };
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, reqs, 2, "u-1", &r, &c);
    expect_header(&c, &a, "a", "u-1");
    expect_segment(&c, NULL, 7, 0, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

/* With a window, a view with a visitor is checked by the script and is not in plain_views;
 * without one, every view is plain and the visitors only feed the HyperLogLog. */
static void test_agg_sends_visitors_in_arrival_order(void **state)
{
    static const struct {
        uint32_t window;
        long long views_a, views_b;
    } cases[] = {{1800, 2, 0}, {1, 2, 0}, {0, 5, 2}};
    struct tally_event ev0[] = {ev_view("a"),       ev_share("b", TALLY_NETWORK_REDDIT),
                                ev_view("b"),       ev_view("a"),
                                ev_comment("a", 2), ev_view("b")};
    const uint64_t vis0[] = {0x11, 0xdead, 0xfedcba9876543210ULL, 0x13, 0xbeef, 0x11};
    struct tally_event ev1[] = {ev_view("a"), ev_view("a")};
    struct tally_event ev2[] = {ev_view("a")};
    const uint64_t vis2[] = {0x21};
    struct tally_agg_req r0 = {.ev = ev0, .n = N_ELEMS(ev0), .visitor = vis0};
    struct tally_agg_req r1 = {.ev = ev1, .n = N_ELEMS(ev1)}; /* no visitor ids */
    struct tally_agg_req r2 = {.ev = ev2, .n = N_ELEMS(ev2), .visitor = vis2};
    struct tally_agg_req *reqs[] = {&r0, &r1, &r2};
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const struct want_art arts[] = {
            {"a", cases[i].views_a, "11,13,21", "", "2", NULL, NULL},
            {"b", cases[i].views_b, "fedcba9876543210,11", "reddit=1", "", NULL, NULL},
        };

        tally_agg_init(&a, "tally:", cases[i].window);
        agg_build_ok(&a, reqs, 3, "u-1", &r, &c);
        expect_header(&c, &a, "a", "u-1");
        expect_segment(&c, NULL, 9, 0, 0, arts, N_ELEMS(arts));
        cur_end(&c);
        tally_agg_release(&a);
    }
    resp_free(&r);
}

/* A view a cluster's mark found a repeat (SEEN) brings its visitor to the estimate and no
 * view, in a unit without a window (the journal's on a cluster). */
static void test_agg_counts_no_view_of_a_view_seen_a_repeat(void **state)
{
    struct tally_event ev[] = {ev_view("a"), ev_view("a"), ev_view("b"),
                               ev_share("b", TALLY_NETWORK_REDDIT)};
    const uint64_t vis[] = {0x11, 0x12, 0x13, 0};
    const uint8_t seen[] = {1, 0, 1, 0};
    struct tally_agg_req r0 = {.ev = ev, .n = N_ELEMS(ev), .visitor = vis, .seen = seen};
    struct tally_agg_req *reqs[] = {&r0};
    const struct want_art arts[] = {
        {"a", 1, "11,12", "", "", NULL, NULL},
        {"b", 0, "13", "reddit=1", "", NULL, NULL},
    };
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "tally:", 0);
    agg_build_ok(&a, reqs, 1, "u-1", &r, &c);
    expect_header(&c, &a, "a", "u-1");
    expect_segment(&c, NULL, 4, 0, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_gives_each_keyed_request_its_own_segment(void **state)
{
    static const char idem_b[] = "tally:{8c}i:retry-1", idem_d[] = "tally:{8c}i:{x}";
    struct tally_event eva[] = {ev_view("a"), ev_view("a")};
    struct tally_event evb[] = {ev_view("a"), ev_share("b", TALLY_NETWORK_TWITTER), ev_view("a")};
    struct tally_event evc[] = {ev_view("c"), ev_comment("a", -1)};
    struct tally_event evd[] = {ev_view("a"), ev_view("a"), ev_view("a")};
    const uint64_t visd[] = {1, 2, 3};
    struct tally_agg_req ra = {.ev = eva, .n = 2, .bot = 1};
    struct tally_agg_req rb = {
        .ev = evb, .n = 3, .idem_key = idem_b, .idem_len = 19, .bot = 2, .prefetch = 1};
    struct tally_agg_req rc = {.ev = evc, .n = 2, .prefetch = 3};
    struct tally_agg_req rd = {
        .ev = evd, .n = 3, .visitor = visd, .idem_key = idem_d, .idem_len = 15};
    struct tally_agg_req *reqs[] = {&ra, &rb, &rc, &rd};
    const struct want_art shared[] = {{"a", 2, "", "", "-1", NULL, NULL}, {"c", 1, "", "", "", NULL, NULL}};
    const struct want_art keyed_b[] = {{"a", 2, "", "", "", NULL, NULL}, {"b", 0, "", "twitter=1", "", NULL, NULL}};
    const struct want_art keyed_d[] = {{"a", 0, "1,2,3", "", "", NULL, NULL}};
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, reqs, 4, "u-7", &r, &c);
    expect_header(&c, &a, "a", "u-7");
    expect_segment(&c, NULL, 4, 1, 3, shared, N_ELEMS(shared));
    expect_segment(&c, idem_b, 3, 2, 1, keyed_b, N_ELEMS(keyed_b));
    expect_segment(&c, idem_d, 3, 0, 0, keyed_d, N_ELEMS(keyed_d));
    cur_end(&c);

    /* Only keyed requests: no shared segment; the marker follows the first request's article. */
    reqs[0] = &rd;
    reqs[1] = &rb;
    agg_build_ok(&a, reqs, 2, "u-8", &r, &c);
    expect_header(&c, &a, "a", "u-8");
    expect_segment(&c, idem_d, 3, 0, 0, keyed_d, N_ELEMS(keyed_d));
    expect_segment(&c, idem_b, 3, 2, 1, keyed_b, N_ELEMS(keyed_b));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_skips_requests_without_events(void **state)
{
    struct tally_event ev[] = {ev_view("z"), ev_view("y")};
    struct tally_agg_req empty0 = {.ev = ev, .n = 0, .bot = 5, .prefetch = 5};
    struct tally_agg_req empty1 = {
        .ev = ev, .n = 0, .bot = 2, .idem_key = "tally:{00}i:k", .idem_len = 13};
    struct tally_agg_req one = {.ev = ev + 1, .n = 1, .bot = 1};
    struct tally_agg_req *reqs[] = {&empty0, &one, &empty1};
    const struct want_art arts[] = {{"y", 1, "", "", "", NULL, NULL}};
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, reqs, 3, "u-1", &r, &c);
    expect_header(&c, &a, "y", "u-1"); /* not "z": the empty request has no first event */
    expect_segment(&c, NULL, 1, 1, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_refuses_units_without_events(void **state)
{
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req empty = {.ev = ev, .n = 0, .bot = 1};
    struct tally_agg_req empty_keyed = {.ev = ev, .n = 0, .idem_key = "k", .idem_len = 1};
    struct tally_agg_req *reqs[] = {&empty, &empty_keyed};
    struct tally_agg a;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    assert_int_equal(tally_agg_build(&a, reqs, 0, "u-1"), TALLY_EINVAL);
    assert_int_equal(tally_agg_build(&a, reqs, 1, "u-1"), TALLY_EINVAL);
    assert_int_equal(tally_agg_build(&a, reqs, 2, "u-1"), TALLY_EINVAL);
    tally_agg_release(&a);
}

static void test_agg_refuses_an_attempt_too_long_for_its_key(void **state)
{
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req one = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&one};
    char attempt[200];
    struct tally_agg a;

    (void)state;
    tally_agg_init(&a, "tally:", 0);
    /* The marker key "tally:{8c}x:" + attempt must fit in 128 bytes with its NUL. */
    memset(attempt, 'n', sizeof(attempt));
    attempt[115] = '\0';
    assert_int_equal(tally_agg_build(&a, reqs, 1, attempt), 0);
    assert_int_equal(a.attempt_len, 127);
    attempt[115] = 'n';
    attempt[116] = '\0';
    assert_int_equal(tally_agg_build(&a, reqs, 1, attempt), TALLY_EINVAL);
    attempt[199] = '\0';
    assert_int_equal(tally_agg_build(&a, reqs, 1, attempt), TALLY_EINVAL);
    tally_agg_release(&a);
}

static void test_agg_reuses_its_scratch_between_units(void **state)
{
    struct tally_event ev0[] = {ev_view("a"), ev_comment("b", 3), ev_view("a")};
    const uint64_t vis0[] = {7, 0, 8};
    struct tally_event ev1[] = {ev_share("c", TALLY_NETWORK_TELEGRAM)};
    struct tally_agg_req r0 = {.ev = ev0, .n = 3, .visitor = vis0};
    struct tally_agg_req r1 = {.ev = ev1, .n = 1};
    struct tally_agg_req *first[] = {&r0}, *second[] = {&r1};
    const struct want_art arts[] = {{"c", 0, "", "telegram=1", "", NULL, NULL}};
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;
    char *copy;
    size_t len;

    (void)state;
    tally_agg_init(&a, "tally:", 1800);
    assert_int_equal(tally_agg_build(&a, first, 1, "u-1"), 0);
    len = a.body.len;
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, a.body.data, len);
    agg_build_ok(&a, second, 1, "u-2", &r, &c);
    expect_header(&c, &a, "c", "u-2");
    expect_segment(&c, NULL, 1, 0, 0, arts, N_ELEMS(arts));
    cur_end(&c);
    /* Built again, the first unit is byte for byte what it was. */
    assert_int_equal(tally_agg_build(&a, first, 1, "u-1"), 0);
    assert_int_equal(a.body.len, len);
    assert_memory_equal(a.body.data, copy, len);
    free(copy);
    tally_agg_release(&a);
    resp_free(&r);
}

/* ---- Replies, written in a compact notation ---- */

/* "[...]" an array, "12" or "-1" an integer, "nil", "+word" a status, "!word" an error,
 * "" an empty bulk string, "word" (quoted: it may start with a digit) or any other word a
 * bulk string. */
static redisReply *reply_parse(const char **s)
{
    redisReply *items[64], *r;
    size_t n = 0, len;

    *s += strspn(*s, " ");
    if (**s == '[') {
        ++*s;
        for (;;) {
            *s += strspn(*s, " ");
            if (**s == ']')
                break;
            assert_true(**s != '\0' && n < N_ELEMS(items));
            items[n++] = reply_parse(s);
        }
        ++*s;
        r = reply_array(n);
        memcpy(r->element, items, n * sizeof(items[0]));
        return r;
    }
    len = strcspn(*s, " ]");
    assert_true(len > 0);
    if (((*s)[0] >= '0' && (*s)[0] <= '9') || ((*s)[0] == '-' && len > 1))
        r = reply_int(strtoll(*s, NULL, 10));
    else if (len == 3 && memcmp(*s, "nil", 3) == 0)
        r = reply_new(REDIS_REPLY_NIL);
    else if (len >= 2 && (*s)[0] == '"' && (*s)[len - 1] == '"')
        r = reply_text(REDIS_REPLY_STRING, *s + 1, len - 2);
    else if ((*s)[0] == '+')
        r = reply_text(REDIS_REPLY_STATUS, *s + 1, len - 1);
    else if ((*s)[0] == '!')
        r = reply_text(REDIS_REPLY_ERROR, *s + 1, len - 1);
    else
        r = reply_text(REDIS_REPLY_STRING, *s, len);
    *s += len;
    return r;
}

static redisReply *reply_of(const char *text)
{
    const char *s = text;
    redisReply *r = reply_parse(&s);

    assert_int_equal(s[strspn(s, " ")], '\0');
    return r;
}

static int apply_text(struct tally_agg *a, const char *text, struct tally_agg_req *const *reqs,
                      size_t n)
{
    redisReply *r = reply_of(text);
    int rc = tally_agg_apply_reply(a, r, reqs, n);

    freeReplyObject(r);
    return rc;
}

/* A writer's journal and the journals' registry, for the units built for ack.lua. */
#define JOURNAL "tally:{00}q:w1"
#define REGISTRY "tally:{00}journals"

/* The unit the reply tests answer. Shared visitors in emission order (per article, then in
 * arrival order): x: 11 (R0), 13 (R0), 21 (R1); y: 12 (R0); z: 41 (R3). So repeat_index 1, 2
 * and 4 are R0's, 3 is R1's, 5 is R3's. R2 is keyed. */
struct reply_unit {
    struct tally_event ev0[3], ev1[2], ev2[1], ev3[1];
    uint64_t vis0[3], vis1[2], vis2[1], vis3[1];
    struct tally_agg_req rq[4];
    struct tally_agg_req *reqs[4];
    struct tally_agg a;
};

/* With JOURNAL, for ack.lua, at 2027-01-15 08:29:59 UTC (hour 500000). */
static void reply_unit_make(struct reply_unit *u, bool journal)
{
    static const char idem[] = "tally:{00}i:k2";
    struct resp r = {0};
    struct cur c;
    const struct want_seg journal_segs[] = {
        {"", "", 6, 4, 2, {{"x", "11,13,21"}, {"y", "12"}, {"z", "41"}}, {{NULL, NULL}},
         "18\nx\n0\n3\n0000000000000011\n0000000000000013\n0000000000000021\n0\n0\n0\n0\n"
         "46\ny\n0\n1\n0000000000000012\n1\nwhatsapp\n1\n0\n0\n0\n"
         "be\nz\n0\n1\n0000000000000041\n0\n0\n0\n0"},
        {idem, "", 1, 1, 2, {{"x", "31"}}, {{NULL, NULL}},
         "18\nx\n0\n1\n0000000000000031\n0\n0\n0\n0"},
    };
    const struct want_art shared[] = {
        {"x", 0, "11,13,21", "", "", NULL, NULL},
        {"y", 0, "12", "whatsapp=1", "", NULL, NULL},
        {"z", 0, "41", "", "", NULL, NULL},
    };
    const struct want_art keyed[] = {{"x", 0, "31", "", "", NULL, NULL}};

    u->ev0[0] = ev_view("x");
    u->ev0[1] = ev_view("y");
    u->ev0[2] = ev_view("x");
    u->ev1[0] = ev_view("x");
    u->ev1[1] = ev_share("y", TALLY_NETWORK_WHATSAPP);
    u->ev2[0] = ev_view("x");
    u->ev3[0] = ev_view("z");
    u->vis0[0] = 0x11;
    u->vis0[1] = 0x12;
    u->vis0[2] = 0x13;
    u->vis1[0] = 0x21;
    u->vis1[1] = 0;
    u->vis2[0] = 0x31;
    u->vis3[0] = 0x41;
    u->rq[0] = (struct tally_agg_req){.ev = u->ev0, .n = 3, .visitor = u->vis0};
    u->rq[1] = (struct tally_agg_req){.ev = u->ev1, .n = 2, .visitor = u->vis1, .prefetch = 2};
    u->rq[2] = (struct tally_agg_req){.ev = u->ev2,
                                      .n = 1,
                                      .visitor = u->vis2,
                                      .idem_key = idem,
                                      .idem_len = 14,
                                      .bot = 1,
                                      .prefetch = 2};
    u->rq[3] = (struct tally_agg_req){.ev = u->ev3, .n = 1, .visitor = u->vis3, .bot = 4};
    for (size_t i = 0; i < 4; i++)
        u->reqs[i] = &u->rq[i];
    tally_agg_init(&u->a, "tally:", 1800);
    if (journal) {
        u->a.journal = JOURNAL;
        u->a.registry = REGISTRY;
        u->a.now = 1800001799;
    }
    agg_build_ok(&u->a, u->reqs, 4, "u-1", &r, &c);
    expect_header(&c, &u->a, "x", "u-1");
    if (journal) {
        expect_journal_segment(&c, &journal_segs[0], 1800001799 / 1800);
        expect_journal_segment(&c, &journal_segs[1], 1800001799 / 1800);
    } else {
        expect_segment(&c, NULL, 6, 4, 2, shared, N_ELEMS(shared));
        expect_segment(&c, idem, 1, 1, 2, keyed, N_ELEMS(keyed));
    }
    cur_end(&c);
    resp_free(&r);
}

static void reply_unit_build(struct reply_unit *u)
{
    reply_unit_make(u, false);
}

struct answer {
    uint32_t accepted, repeat, bot_out, prefetch_out;
    bool replayed;
};

static void expect_answers(const struct reply_unit *u, const struct answer want[4])
{
    for (size_t i = 0; i < 4; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        if (q->accepted != want[i].accepted || q->repeat != want[i].repeat ||
            q->bot_out != want[i].bot_out || q->prefetch_out != want[i].prefetch_out ||
            q->replayed != want[i].replayed) {
            print_error("request %zu: got accepted %u repeat %u bot %u prefetch %u replayed %d, "
                        "want %u %u %u %u %d\n",
                        i, q->accepted, q->repeat, q->bot_out, q->prefetch_out, q->replayed,
                        want[i].accepted, want[i].repeat, want[i].bot_out, want[i].prefetch_out,
                        want[i].replayed);
            fail();
        }
    }
}

/* The script's list of the keys it set the expiry of is read per bucket, kind and metric;
 * anything malformed is an error. */
static void test_agg_reads_the_expired_keys(void **state)
{
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&r0};
    static const char *const bad[] = {"aa", "aad1", "aax01", "zzd01", "aad80", "aah10", "aadg1"};
    struct tally_agg a;
    char text[128];

    (void)state;
    tally_agg_init(&a, "p:", 0);
    assert_int_equal(tally_agg_build(&a, reqs, 1, "u-1"), 0);
    assert_int_equal(apply_text(&a, "[ok aad15ffh0caad02 [1 1 0 0 0]]", reqs, 1), 0);
    assert_int_equal(a.expired_day[0xaa], 0x17);
    assert_int_equal(a.expired_hour[0xff], 0x0c);
    assert_int_equal(a.expired_day[0xff], 0);
    assert_int_equal(a.expired_hour[0xaa], 0);
    /* Each reply is read afresh. */
    assert_int_equal(apply_text(&a, "[ok \"\" [1 1 0 0 0]]", reqs, 1), 0);
    assert_int_equal(a.expired_day[0xaa], 0);
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        snprintf(text, sizeof(text), "[ok %s [1 1 0 0 0]]", bad[i]);
        assert_int_equal(apply_text(&a, text, reqs, 1), TALLY_EREDIS);
    }
    tally_agg_release(&a);
}

/* The answer's status: "ok", or "ok <n> <the last refusal>" when counting skipped N commands
 * Redis refused (src/scripts/count.lua); anything else is an error. */
static void test_agg_reads_the_commands_a_unit_skipped(void **state)
{
    static const char *const bad[] = {"ok ",
                                      "ok 0 WRONGTYPE",
                                      "ok 3",
                                      "ok 3WRONGTYPE",
                                      "ok x WRONGTYPE",
                                      "okay",
                                      "ok 99999999999 WRONGTYPE",
                                      "fenced",
                                      "OK"};
    static const char why[] = "WRONGTYPE Operation against a key holding the wrong kind of value";
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&r0};
    struct tally_agg a;
    char text[160];

    (void)state;
    tally_agg_init(&a, "p:", 0);
    assert_int_equal(tally_agg_build(&a, reqs, 1, "u-1"), 0);
    for (size_t i = 0; i <= N_ELEMS(bad); i++) {
        redisReply *r = reply_of("[ok \"\" [1 1 0 0 0]]");
        const char *status = i < N_ELEMS(bad) ? bad[i] : text;

        snprintf(text, sizeof(text), "ok 12 %s", why);
        freeReplyObject(r->element[0]);
        r->element[0] = reply_text(REDIS_REPLY_STRING, status, strlen(status));
        if (i < N_ELEMS(bad)) {
            assert_int_equal(tally_agg_apply_reply(&a, r, reqs, 1), TALLY_EREDIS);
        } else {
            assert_int_equal(tally_agg_apply_reply(&a, r, reqs, 1), 0);
            assert_int_equal(a.skipped, 12);
            assert_int_equal(a.skip_why_len, strlen(why));
            assert_memory_equal(a.skip_why, why, strlen(why));
            assert_int_equal(r0.accepted, 1);
        }
        freeReplyObject(r);
    }
    /* Each reply is read afresh. */
    assert_int_equal(apply_text(&a, "[ok \"\" [1 1 0 0 0]]", reqs, 1), 0);
    assert_int_equal(a.skipped, 0);
    assert_null(a.skip_why);
    tally_agg_release(&a);
}

static void test_agg_reads_an_answer_without_repeats(void **state)
{
    static const struct answer want[4] = {
        {3, 0, 0, 0, false}, {2, 0, 0, 2, false}, {1, 0, 1, 2, false}, {1, 0, 4, 0, false}};
    struct reply_unit u;

    (void)state;
    reply_unit_build(&u);
    assert_int_equal(apply_text(&u.a, "[ok \"\" [1 7 4 2 0] [1 1 1 2 0]]", u.reqs, 4), 0);
    expect_answers(&u, want);
    /* The status form of "ok" reads the same. */
    assert_int_equal(apply_text(&u.a, "[+ok \"\" [1 7 4 2 0] [1 1 1 2 0]]", u.reqs, 4), 0);
    expect_answers(&u, want);
    tally_agg_release(&u.a);
}

static void test_agg_attributes_repeats_to_their_requests(void **state)
{
    static const struct {
        const char *reply;
        struct answer want[4];
    } cases[] = {
        {"[ok \"\" [1 5 4 2 2 3 5] [1 1 1 2 0]]",
         {{3, 0, 0, 0, false}, {1, 1, 0, 2, false}, {1, 0, 1, 2, false}, {0, 1, 4, 0, false}}},
        {"[ok \"\" [1 4 4 2 3 1 2 4] [1 1 1 2 0]]",
         {{0, 3, 0, 0, false}, {2, 0, 0, 2, false}, {1, 0, 1, 2, false}, {1, 0, 4, 0, false}}},
        {"[ok \"\" [1 6 4 2 1 4] [1 0 1 2 1 1]]",
         {{2, 1, 0, 0, false}, {2, 0, 0, 2, false}, {0, 1, 1, 2, false}, {1, 0, 4, 0, false}}},
        {"[ok \"\" [1 2 4 2 5 1 2 3 4 5] [1 1 1 2 0]]",
         {{0, 3, 0, 0, false}, {1, 1, 0, 2, false}, {1, 0, 1, 2, false}, {0, 1, 4, 0, false}}},
    };
    struct reply_unit u;

    (void)state;
    reply_unit_build(&u);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        /* Applied twice: the second reading starts from nothing, it does not add up. */
        assert_int_equal(apply_text(&u.a, cases[i].reply, u.reqs, 4), 0);
        assert_int_equal(apply_text(&u.a, cases[i].reply, u.reqs, 4), 0);
        expect_answers(&u, cases[i].want);
    }
    tally_agg_release(&u.a);
}

/* Two requests that ask for their repeats' flags: views of a, b, a by visitors 1, 2, 3, then a
 * view of b by visitor 4 and a share of a. The shared segment's visitors go by article: a's
 * (r0's 1st, r0's 3rd), then b's (r0's 2nd, r1's 1st). */
struct flagged {
    struct tally_event ev0[3], ev1[2];
    uint64_t vis0[3], vis1[2];
    uint8_t rep0[3], rep1[2];
    struct tally_agg_req r0, r1;
    struct tally_agg_req *reqs[2];
};

static void flagged_init(struct flagged *f)
{
    *f = (struct flagged){
        .ev0 = {ev_view("a"), ev_view("b"), ev_view("a")},
        .ev1 = {ev_view("b"), ev_share("a", TALLY_NETWORK_EMAIL)},
        .vis0 = {0x1, 0x2, 0x3},
        .vis1 = {0x4, 0},
        .rep0 = {9, 9, 9},
        .rep1 = {9, 9},
    };
    f->r0 = (struct tally_agg_req){.ev = f->ev0, .n = 3, .visitor = f->vis0, .repeated = f->rep0};
    f->r1 = (struct tally_agg_req){.ev = f->ev1, .n = 2, .visitor = f->vis1, .repeated = f->rep1};
    f->reqs[0] = &f->r0;
    f->reqs[1] = &f->r1;
}

/* The repeats the script lists (positions among the shared segment's visitors, which go by
 * article) are flagged at their requests' events, where a request asks for the flags. */
static void test_agg_flags_each_repeat_at_its_event(void **state)
{
    static const struct {
        const char *reply;
        uint8_t rep0[3], rep1[2];
        uint32_t repeat0, repeat1;
    } cases[] = {
        {"[ok \"\" [1 3 0 0 2 2 3]]", {0, 1, 1}, {0, 0}, 2, 0},
        {"[ok \"\" [1 4 0 0 1 4]]", {0, 0, 0}, {1, 0}, 0, 1},
        {"[ok \"\" [1 5 0 0 0]]", {0, 0, 0}, {0, 0}, 0, 0},
    };
    struct flagged f;
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    flagged_init(&f);
    tally_agg_init(&a, "tally:", 1800);
    agg_build_ok(&a, f.reqs, 2, "u-1", &r, &c);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(apply_text(&a, cases[i].reply, f.reqs, 2), 0);
        assert_memory_equal(f.rep0, cases[i].rep0, 3);
        assert_memory_equal(f.rep1, cases[i].rep1, 2);
        assert_int_equal(f.r0.repeat, cases[i].repeat0);
        assert_int_equal(f.r1.repeat, cases[i].repeat1);
        assert_int_equal(f.r0.accepted + f.r1.accepted,
                         5 - cases[i].repeat0 - cases[i].repeat1);
    }
    tally_agg_release(&a);
    resp_free(&r);
}

/* A mark's unit (src/scripts/mark.lua): its attempt marker and each article's repeat-view
 * hashes as its keys, then window, now and fence, and its views alone, by article; its answer
 * is read as a unit's, each repeat flagged at its event. Nothing of the unit's counting goes:
 * no prefix, no "fresh", no model, no share. */
static void test_agg_builds_a_mark_of_views_alone(void **state)
{
    struct flagged f;
    char ta[3], tb[3], want[13][40];
    const char *tail[] = {"1800", "1800001800", "000000000000000", "5", "0", "0", "2",
                          "2", "0000000000000001", "0000000000000003",
                          "2", "0000000000000002", "0000000000000004"};
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    flagged_init(&f);
    bucket_hex("a", 1, ta);
    bucket_hex("b", 1, tb);
    snprintf(want[0], sizeof(want[0]), "5");
    snprintf(want[1], sizeof(want[1]), "tally:{%s}x:u-1", ta);
    snprintf(want[2], sizeof(want[2]), "tally:{%s}w:a:1000001", ta);
    snprintf(want[3], sizeof(want[3]), "tally:{%s}w:a:1000000", ta);
    snprintf(want[4], sizeof(want[4]), "tally:{%s}w:b:1000001", tb);
    snprintf(want[5], sizeof(want[5]), "tally:{%s}w:b:1000000", tb);
    tally_agg_init(&a, "tally:", 1800);
    a.declare = true;
    a.mark = true;
    a.now = 1800001800; /* 2027-01-15 08:30 UTC, window slot 1000001 */
    agg_build_ok(&a, f.reqs, 2, "u-1", &r, &c);
    assert_int_equal(r.n, 6 + N_ELEMS(tail));
    for (size_t i = 0; i < r.n; i++) {
        const char *w = i < 6 ? want[i] : tail[i - 6];

        if (r.len[i] != strlen(w) || memcmp(r.p[i], w, r.len[i]) != 0) {
            print_error("argument %zu is %.*s, want %s\n", i, (int)r.len[i], r.p[i], w);
            fail();
        }
    }
    /* r0's 3rd view and r1's 1st repeat. */
    assert_int_equal(apply_text(&a, "[ok \"\" [1 3 0 0 2 2 4]]", f.reqs, 2), 0);
    assert_memory_equal(f.rep0, ((uint8_t[]){0, 0, 1}), 3);
    assert_memory_equal(f.rep1, ((uint8_t[]){1, 0}), 2);
    assert_int_equal(f.r0.accepted + f.r1.accepted, 3);
    /* A keyed request is never marked: refused, not built half-way. */
    f.r1.idem_key = "tally:{00}i:k";
    f.r1.idem_len = strlen(f.r1.idem_key);
    assert_int_equal(tally_agg_build(&a, f.reqs, 2, "u-2"), TALLY_EINVAL);
    tally_agg_release(&a);
    resp_free(&r);
}

static void test_agg_reads_a_replayed_keyed_segment(void **state)
{
    static const struct answer want[4] = {
        {3, 0, 0, 0, false}, {2, 0, 0, 2, false}, {0, 1, 3, 0, true}, {1, 0, 4, 0, false}};
    struct reply_unit u;

    (void)state;
    reply_unit_build(&u);
    /* The stored first answer: accepted 0, bot 3, prefetch 0, repeat 1; not this request's. */
    assert_int_equal(apply_text(&u.a, "[ok \"\" [1 7 4 2 0] [0 0 3 0 1]]", u.reqs, 4), 0);
    expect_answers(&u, want);
    tally_agg_release(&u.a);
}

/* {"fenced"}: the script refused the unit past its fence; nothing else is that. */
static void test_agg_tells_a_fenced_unit(void **state)
{
    static const struct {
        const char *reply;
        bool fenced;
    } cases[] = {
        {"[fenced]", true},
        {"[fence]", false},
        {"[fenced fenced]", false},
        {"[[fenced]]", false},
        {"fenced", false},
        {"!fenced", false},
        {"[ok \"\" [1 7 4 2 0] [1 1 1 2 0]]", false},
        {"[]", false},
        {"nil", false},
    };

    (void)state;
    assert_false(tally_agg_fenced(NULL));
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        redisReply *r = reply_of(cases[i].reply);

        if (tally_agg_fenced(r) != cases[i].fenced) {
            print_error("reply %s: want fenced %d\n", cases[i].reply, cases[i].fenced);
            fail();
        }
        freeReplyObject(r);
    }
}

static void test_agg_rejects_replies_of_another_shape(void **state)
{
    static const char *const cases[] = {
        "!NOSCRIPT",
        "!ERR",
        "5",
        "nil",
        "ok",
        "+OK",
        "[]",
        "[1 [1 7 4 2 0] [1 1 1 2 0]]",
        "[nil [1 7 4 2 0] [1 1 1 2 0]]",
        "[[ok] [1 7 4 2 0] [1 1 1 2 0]]",
        "[!ok [1 7 4 2 0] [1 1 1 2 0]]",
        "[okay [1 7 4 2 0] [1 1 1 2 0]]",
        "[fence [1 7 4 2 0] [1 1 1 2 0]]",
        "[ok]",                                     /* both segments missing */
        "[ok [1 7 4 2 0] [1 1 1 2 0]]",             /* the list of expired keys missing */
        "[ok 1 [1 7 4 2 0] [1 1 1 2 0]]",
        "[ok aad1 [1 7 4 2 0] [1 1 1 2 0]]",
        "[ok \"\" [1 7 4 2 0]]",                         /* the keyed segment missing */
        "[ok \"\" [1 7 4 2 0] [1 1 1 2 0] [1 1 1 2 0]]", /* one segment too many */
        "[ok \"\" [1 7 4 2 0] [1 1 1 2 0] 0]",
        "[ok \"\" [1 7 4 2] [1 1 1 2 0]]", /* short segments */
        "[ok \"\" [1 7 4 2 0] [1 1 1 2]]",
        "[ok \"\" [] [1 1 1 2 0]]",
        "[ok \"\" 1 [1 1 1 2 0]]", /* segments that are not arrays */
        "[ok \"\" [1 7 4 2 0] nil]",
        "[ok \"\" [1 7 4 2 0] ok]",
        "[ok \"\" [1 7 4 2 x] [1 1 1 2 0]]", /* members that are not integers */
        "[ok \"\" [1 7 4 2 0] [1 1 1 2 +0]]",
        "[ok \"\" [1 7 4 2 0] [1 1 1 [2] 0]]",
        "[ok \"\" [1 7 4 2 1 nil] [1 1 1 2 0]]",
        "[ok \"\" [1 7 4 2 -1] [1 1 1 2 0]]", /* negative counts */
        "[ok \"\" [1 7 4 2 0] [1 -1 1 2 0]]",
        "[ok \"\" [1 7 4 2 1 0] [1 1 1 2 0]]", /* repeat_index out of range */
        "[ok \"\" [1 7 4 2 1 6] [1 1 1 2 0]]",
        "[ok \"\" [1 7 4 2 1 -5] [1 1 1 2 0]]",
        "[ok \"\" [1 7 4 2 1 4294967297] [1 1 1 2 0]]",
        "[ok \"\" [1 7 4 2 2 5 5] [1 1 1 2 0]]", /* more repeats than R3 has events */
    };
    struct reply_unit u;

    (void)state;
    reply_unit_build(&u);
    assert_int_equal(tally_agg_apply_reply(&u.a, NULL, u.reqs, 4), TALLY_EREDIS);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int rc = apply_text(&u.a, cases[i], u.reqs, 4);

        if (rc != TALLY_EREDIS) {
            print_error("reply %s: got %d, want TALLY_EREDIS\n", cases[i], rc);
            fail();
        }
    }
    tally_agg_release(&u.a);
}

static void test_agg_reads_answers_of_units_without_a_shared_segment(void **state)
{
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1, .idem_key = "k0", .idem_len = 2};
    struct tally_agg_req r1 = {.ev = ev, .n = 1, .idem_key = "k1", .idem_len = 2, .bot = 1};
    struct tally_agg_req empty = {.ev = ev, .n = 0};
    struct tally_agg_req *reqs[] = {&r0, &empty, &r1};
    struct tally_agg a;

    (void)state;
    tally_agg_init(&a, "tally:", 0);
    assert_int_equal(tally_agg_build(&a, reqs, 3, "u-1"), 0);
    assert_int_equal(apply_text(&a, "[ok \"\" [1 1 0 0 0] [0 1 1 0 0]]", reqs, 3), 0);
    assert_int_equal(r0.accepted, 1);
    assert_false(r0.replayed);
    assert_int_equal(r1.accepted, 1);
    assert_int_equal(r1.bot_out, 1);
    assert_true(r1.replayed);
    /* No shared segment was sent, so none may come back. */
    assert_int_equal(apply_text(&a, "[ok \"\" [1 0 0 0 0] [1 1 0 0 0] [1 1 1 0 0]]", reqs, 3),
                     TALLY_EREDIS);
    assert_int_equal(apply_text(&a, "[ok \"\" [1 1 0 0 0]]", reqs, 3), TALLY_EREDIS);
    tally_agg_release(&a);
}

/* ---- A writer that keeps a journal (src/scripts/ack.lua) ---- */

/* Three keys: the marker, the journal, its registry. A segment: idem digest accepted bot
 * prefetch, the views to check (none without a window), the comment deltas, the entry's text. */
static void test_agg_frames_a_journal_unit_exactly(void **state)
{
#define JOURNAL_HEAD(window)                                                                       \
    "$1\r\n3\r\n"                                                                                  \
    "$16\r\ntally:{8c}x:n0-1\r\n"                                                                  \
    "$14\r\n" JOURNAL "\r\n"                                                                       \
    "$18\r\n" REGISTRY "\r\n"                                                                      \
    "$6\r\ntally:\r\n" window "$3\r\n600\r\n"                                                      \
    "$5\r\n86400\r\n"                                                                              \
    "$10\r\n1800000000\r\n"                                                                        \
    "$15\r\n000000000000000\r\n"                                                                   \
    "$10\r\n8cd7f8ch6f\r\n"                                                                        \
    "$77\r\n" MODEL_ARG "\r\n"                                                                     \
    "$0\r\n\r\n$0\r\n\r\n$1\r\n1\r\n$1\r\n0\r\n$1\r\n0\r\n"
    static const struct {
        uint32_t window;
        bool visitor;
        size_t nargs;
        const char *want;
    } cases[] = {
        /* Checked: the view counts unless the ack finds it a repeat. */
        {1800, true, 24,
         JOURNAL_HEAD("$4\r\n1800\r\n") "$1\r\n1\r\n$21\r\ntally:{8c}w:a:1000000\r\n"
                                        "$20\r\ntally:{8c}w:a:999999\r\n$1\r\n1\r\n"
                                        "$16\r\n0000000000000011\r\n"
                                        "$1\r\n0\r\n"
                                        "$33\r\n8c\na\n0\n1\n0000000000000011\n0\n0\n0\n0\r\n"},
        /* No window: nothing to check, the view counts; its visitor is for the estimate. */
        {0, true, 20,
         JOURNAL_HEAD("$1\r\n0\r\n") "$1\r\n0\r\n"
                                     "$1\r\n0\r\n"
                                     "$33\r\n8c\na\n1\n1\n0000000000000011\n0\n0\n0\n0\r\n"},
        /* A view without a visitor id is not checked either. */
        {1800, false, 20,
         JOURNAL_HEAD("$4\r\n1800\r\n") "$1\r\n0\r\n"
                                        "$1\r\n0\r\n"
                                        "$16\r\n8c\na\n1\n0\n0\n0\n0\n0\r\n"},
    };
#undef JOURNAL_HEAD
    static const uint64_t vis[] = {0x11};
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&r0};
    struct tally_agg a;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        r0.visitor = cases[i].visitor ? vis : NULL;
        tally_agg_init(&a, "tally:", cases[i].window);
        a.journal = JOURNAL;
        a.registry = REGISTRY;
        a.now = 1800000000;
        assert_int_equal(tally_agg_build(&a, reqs, 1, "n0-1"), 0);
        assert_int_equal(a.nargs, cases[i].nargs);
        if (a.body.len != strlen(cases[i].want) ||
            memcmp(a.body.data, cases[i].want, a.body.len) != 0) {
            print_error("case %zu: got\n%.*s\nwant\n%s\n", i, (int)a.body.len, a.body.data,
                        cases[i].want);
            fail();
        }
        tally_agg_release(&a);
    }
}

/* The unit of the reply tests, for a journal: a keyed request has a segment of its own. */
static void test_agg_gives_keyed_requests_their_own_journal_segment(void **state)
{
    struct reply_unit u;

    (void)state;
    reply_unit_make(&u, true);
    tally_agg_release(&u.a);
}

/* M's records, put and read back: exactly WANT (up to the first NULL), each
 * "<hour*3600>\n<record as text>". */
static void expect_merged(struct tally_merge *m, const char *const *want, size_t max)
{
    struct tally_buf b;
    struct resp r = {0};
    struct cur c = {.r = &r, .i = 0};
    size_t n = 0, args;

    tally_buf_init(&b);
    args = tally_merge_put(m, &b);
    assert_false(b.oom);
    resp_read(&r, b.data, b.len);
    assert_int_equal(args, r.n);
    for (; n < max && want[n] != NULL; n++)
        for (const char *t = want[n];; t++) {
            size_t len = strcspn(t, "\n");

            cur_bytes(&c, t, len);
            t += len;
            if (*t == '\0')
                break;
        }
    cur_end(&c);
    assert_int_equal(tally_merge_records(m), n);
    resp_free(&r);
    tally_buf_release(&b);
}

/* Apply TEXT as the unit's reply (it must read), then merge it into M, cleared first unless
 * ADD. Returns what tally_agg_merge() returns. */
static int merge_text(struct tally_agg *a, const char *text, struct tally_agg_req *const *reqs,
                      size_t n, struct tally_merge *m, bool add)
{
    redisReply *r = reply_of(text);
    int rc;

    assert_int_equal(tally_agg_apply_reply(a, r, reqs, n), 0);
    if (!add)
        tally_merge_clear(m);
    rc = tally_agg_merge(a, r, m);
    freeReplyObject(r);
    return rc;
}

/* A comment's deltas are counted by the ack: they are in the segment's list of comments, not
 * in the entry's text, and an article with nothing but comments is not in the text at all. */
static void test_agg_lists_comments_apart_from_the_journal_text(void **state)
{
    static const uint32_t windows[] = {1800, 0};
    static const char digest[] = "0123456789abcdef";
    struct tally_event ev0[] = {ev_comment("b", 5), ev_view("a"), ev_comment("a", -1),
                                ev_share("c", TALLY_NETWORK_TWITTER), ev_comment("b", -2)};
    const uint64_t vis0[] = {0, 7, 0, 0, 0};
    struct tally_event ev1[] = {ev_comment("b", 1)};
    struct tally_event ev2[] = {ev_view("a"),
                                ev_make("a", TALLY_EVENT_ENGAGE, TALLY_NETWORK_OTHER, 1)};
    const uint64_t vis2[] = {9, 0};
    struct tally_agg_req r0 = {.ev = ev0, .n = 5, .visitor = vis0};
    struct tally_agg_req r1 = {
        .ev = ev1, .n = 1, .idem_key = "tally:{00}i:k1", .idem_len = 14, .digest = digest};
    struct tally_agg_req r2 = {
        .ev = ev2, .n = 2, .visitor = vis2, .idem_key = "tally:{00}i:k2", .idem_len = 14};
    struct tally_agg_req *reqs[] = {&r0, &r1, &r2};
    static const char *const merged[] = {
        "1800000000\n8c\na\n2\n2\n0000000000000007\n0000000000000009\n0\n0\n"
        "2\nengaged\n30\nreads\n1\n1\nwords\n120",
        "1800000000\na5\nc\n0\n0\n1\ntwitter\n1\n0\n0\n0",
    };
    static const char *const merged_repeat[] = {
        "1800000000\n8c\na\n1\n2\n0000000000000007\n0000000000000009\n0\n0\n"
        "2\nengaged\n30\nreads\n1\n1\nwords\n120",
        "1800000000\na5\nc\n0\n0\n1\ntwitter\n1\n0\n0\n0",
    };
    struct tally_merge *m = tally_merge_new();
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;
    redisReply *reply;

    (void)state;
    assert_non_null(m);
    ev2[0].words = 120;
    ev2[1].seconds = 30;
    ev2[1].read = true;
    for (size_t i = 0; i < N_ELEMS(windows); i++) {
        bool checked = windows[i] > 0;
        char text0[128], text2[128];
        struct want_seg want[3] = {
            {"", "", 5, 0, 0, {{checked ? "a" : NULL, "7"}}, {{"b", "5,-2"}, {"a", "-1"}}, text0},
            {"tally:{00}i:k1", digest, 1, 0, 0, {{NULL, NULL}}, {{"b", "1"}}, ""},
            {"tally:{00}i:k2", "", 2, 0, 0, {{checked ? "a" : NULL, "9"}}, {{NULL, NULL}}, text2},
        };

        snprintf(text0, sizeof(text0),
                 "8c\na\n%d\n1\n0000000000000007\n0\n0\n0\n0\na5\nc\n0\n0\n1\ntwitter\n1\n0\n0\n0",
                 !checked);
        snprintf(text2, sizeof(text2),
                 "8c\na\n%d\n1\n0000000000000009\n0\n0\n2\nengaged\n30\nreads\n1\n1\nwords\n120",
                 !checked);
        tally_agg_init(&a, "tally:", windows[i]);
        a.journal = JOURNAL;
        a.registry = REGISTRY;
        a.now = 1800001799;
        agg_build_ok(&a, reqs, 3, "u-1", &r, &c);
        expect_header(&c, &a, "b", "u-1");
        for (size_t k = 0; k < N_ELEMS(want); k++)
            expect_journal_segment(&c, &want[k], windows[i] > 0 ? 1800001799 / windows[i] : 0);
        cur_end(&c);
        /* Merged: b made no record; each segment's a adds up. */
        assert_int_equal(merge_text(&a, "[ok \"\" [1 5 0 0 0] [1 1 0 0 0] [1 2 0 0 0] \"1-0\" 1]",
                                    reqs, 3, m, false),
                         0);
        expect_merged(m, merged, N_ELEMS(merged));
        /* The shared segment's view of a repeated: a counts R2's view alone, both visitors.
         * Without a window nothing was checked: a repeat is an error. */
        reply = reply_of("[ok \"\" [1 5 0 0 1 1] [1 1 0 0 0] [1 2 0 0 0] \"1-0\" 1]");
        tally_merge_clear(m);
        assert_int_equal(tally_agg_merge(&a, reply, m), checked ? 0 : TALLY_EREDIS);
        freeReplyObject(reply);
        if (checked)
            expect_merged(m, merged_repeat, N_ELEMS(merged_repeat));
        tally_agg_release(&a);
    }
    tally_merge_free(m);
    resp_free(&r);
}

/* The reply's last two elements are the journal entry's id ("" when nothing was appended) and
 * its number (0: none, or not known); without them, or of other types, the reply is not the
 * ack's. */
static void test_agg_reads_the_journal_entry_id(void **state)
{
    static const struct {
        const char *reply;
        int rc;
        const char *id;
        uint64_t seq;
    } cases[] = {
        {"[ok \"\" [1 1 0 0 0] \"1800000000000-0\" 1]", 0, "1800000000000-0", 1},
        {"[+ok \"\" [1 1 0 0 0] \"1800000000123-17\" 4096]", 0, "1800000000123-17", 4096},
        {"[ok \"\" [1 1 0 0 0] \"1-0\" 9007199254740993]", 0, "1-0", 9007199254740993u},
        {"[ok \"\" [1 1 0 0 0] \"1-0\" 0]", 0, "1-0", 0}, /* no number: a call built by hand */
        {"[ok \"\" [1 1 0 0 0] \"\" 0]", 0, "", 0},
        {"[ok \"\" [1 1 0 0 0] \"1800000000000-0\"]", TALLY_EREDIS, NULL, 0}, /* no number */
        {"[ok \"\" [1 1 0 0 0] \"1-0\" -1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] \"1-0\" \"7\"]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] \"1-0\" nil]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] 7 \"1-0\"]", TALLY_EREDIS, NULL, 0}, /* the other way round */
        {"[ok \"\" [1 1 0 0 0]]", TALLY_EREDIS, NULL, 0}, /* an answer for apply.lua */
        {"[ok \"\" [1 1 0 0 0] 5 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] nil 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] +1-0 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] !1-0 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] [\"1-0\"] 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" [1 1 0 0 0] \"1-0\" \"2-0\" 1]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" \"1-0\" 1 [1 1 0 0 0]]", TALLY_EREDIS, NULL, 0},
        {"[ok \"\" \"1-0\" 1]", TALLY_EREDIS, NULL, 0}, /* the segment missing */
        {"[ok \"1-0\" 1]", TALLY_EREDIS, NULL, 0},
        {"[ok 1]", TALLY_EREDIS, NULL, 0},
        {"[ok]", TALLY_EREDIS, NULL, 0},
    };
    struct tally_event ev[] = {ev_view("a")};
    struct tally_agg_req r0 = {.ev = ev, .n = 1};
    struct tally_agg_req *reqs[] = {&r0};
    char text[128], id[64];
    struct tally_agg a;

    (void)state;
    tally_agg_init(&a, "tally:", 0);
    a.journal = JOURNAL;
    a.registry = REGISTRY;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(tally_agg_build(&a, reqs, 1, "u-1"), 0);
        assert_int_equal(a.entry_len, 0);
        if (apply_text(&a, cases[i].reply, reqs, 1) != cases[i].rc) {
            print_error("reply %s: want %d\n", cases[i].reply, cases[i].rc);
            fail();
        }
        if (cases[i].rc == 0) {
            assert_int_equal(a.entry_len, strlen(cases[i].id));
            assert_string_equal(a.entry_id, cases[i].id);
            assert_true(a.entry_seq == cases[i].seq);
            assert_int_equal(r0.accepted, 1);
        }
    }
    /* 47 bytes fit with the NUL; 48 do not. */
    memset(id, '7', sizeof(id));
    for (size_t len = 46; len <= 49; len++) {
        snprintf(text, sizeof(text), "[ok \"\" [1 1 0 0 0] \"%.*s\" 3]", (int)len, id);
        assert_int_equal(apply_text(&a, text, reqs, 1), len < 48 ? 0 : TALLY_EREDIS);
        if (len < 48) {
            assert_int_equal(a.entry_len, len);
            assert_memory_equal(a.entry_id, id, len);
            assert_int_equal(a.entry_id[len], '\0');
        }
    }
    tally_agg_release(&a);
}

/* What the journal appended, as the reply says, merged: a repeat named in the reply is no
 * view, but its visitor stays; a replayed (first 0) or reused (first 2) segment was appended
 * by an earlier unit or not at all. All of the unit is in hour 500000. */
#define MERGED_X(views, nvis, vis) "1800000000\n18\nx\n" views "\n" nvis "\n" vis "\n0\n0\n0\n0"
#define MERGED_Y(views) "1800000000\n46\ny\n" views "\n1\n0000000000000012\n1\nwhatsapp\n1\n0\n0\n0"
#define MERGED_Z(views) "1800000000\nbe\nz\n" views "\n1\n0000000000000041\n0\n0\n0\n0"
#define VIS_X3 "0000000000000011\n0000000000000013\n0000000000000021"
#define VIS_X4 VIS_X3 "\n0000000000000031"

static void test_agg_merges_what_the_journal_appended(void **state)
{
    static const struct {
        const char *reply;
        const char *want[3];
    } cases[] = {
        {"[ok \"\" [1 7 4 2 0] [1 1 1 2 0] \"1-0\" 1]",
         {MERGED_X("4", "4", VIS_X4), MERGED_Y("1"), MERGED_Z("1")}},
        /* Repeats 2 and 3 are x's (13, 21), 5 is z's: z counts its visitor alone. */
        {"[ok \"\" [1 5 4 2 3 2 3 5] [1 1 1 2 0] \"1-0\" 1]",
         {MERGED_X("2", "4", VIS_X4), MERGED_Y("1"), MERGED_Z("0")}},
        {"[ok \"\" [1 6 4 2 1 4] [1 1 1 2 0] \"1-0\" 1]",
         {MERGED_X("4", "4", VIS_X4), MERGED_Y("0"), MERGED_Z("1")}},
        {"[ok \"\" [1 7 4 2 0] [0 0 3 0 1] \"1-0\" 1]",
         {MERGED_X("3", "3", VIS_X3), MERGED_Y("1"), MERGED_Z("1")}},
        {"[ok \"\" [1 7 4 2 0] [2 0 0 0 0] \"1-0\" 1]",
         {MERGED_X("3", "3", VIS_X3), MERGED_Y("1"), MERGED_Z("1")}},
        /* The keyed segment's repeat is its own first visitor (31). */
        {"[ok \"\" [1 6 4 2 0] [1 0 1 2 1 1] \"1-0\" 1]",
         {MERGED_X("3", "4", VIS_X4), MERGED_Y("1"), MERGED_Z("1")}},
        {"[ok \"\" [1 2 4 2 5 1 2 3 4 5] [1 0 1 2 1 1] \"1-0\" 1]",
         {MERGED_X("0", "4", VIS_X4), MERGED_Y("0"), MERGED_Z("0")}},
    };
    static const char *const twice[] = {
        MERGED_X("8", "4", VIS_X4),
        "1800000000\n46\ny\n2\n1\n0000000000000012\n1\nwhatsapp\n2\n0\n0\n0",
        MERGED_Z("2"),
    };
    struct tally_merge *m = tally_merge_new();
    struct reply_unit u;

    (void)state;
    assert_non_null(m);
    reply_unit_make(&u, true);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(merge_text(&u.a, cases[i].reply, u.reqs, 4, m, false), 0);
        expect_merged(m, cases[i].want, N_ELEMS(cases[i].want));
    }
    /* Another unit's reply adds up: its views are counted again, its visitors pooled once. */
    assert_int_equal(merge_text(&u.a, cases[0].reply, u.reqs, 4, m, false), 0);
    assert_int_equal(merge_text(&u.a, cases[0].reply, u.reqs, 4, m, true), 0);
    expect_merged(m, twice, N_ELEMS(twice));
    tally_agg_release(&u.a);
    tally_merge_free(m);
}

/* Repeats are read in order, each once, within the segment's visitors; the reply has a
 * segment per segment sent and the entry id. */
static void test_agg_merge_rejects_replies_it_cannot_place(void **state)
{
    static const char *const cases[] = {
        "[ok \"\" [1 5 4 2 2 3 2] [1 1 1 2 0] \"1-0\" 1]", /* out of order */
        "[ok \"\" [1 5 4 2 2 2 2] [1 1 1 2 0] \"1-0\" 1]", /* twice */
        "[ok \"\" [1 6 4 2 1 6] [1 1 1 2 0] \"1-0\" 1]",   /* past the segment's 5 visitors */
        "[ok \"\" [1 6 4 2 1 0] [1 1 1 2 0] \"1-0\" 1]",
        "[ok \"\" [1 6 4 2 1 -1] [1 1 1 2 0] \"1-0\" 1]",
        "[ok \"\" [1 7 4 2 0] [1 0 1 2 1 2] \"1-0\" 1]", /* past the keyed segment's 1 */
        "[ok \"\" [1 7 4 2 0] [1 0 1 2 2 1 1] \"1-0\" 1]",
        "[ok \"\" [1 7 4 2 0] [1 1 1 2 0]]", /* no entry id */
        "[ok \"\" [1 7 4 2 0] \"1-0\" 1]",     /* a segment missing */
        "[ok \"\" [1 7 4 2 0] [1 1 1 2 0] [1 1 1 2 0] \"1-0\" 1]",
        "[ok \"\" [1 7 4 2 x] [1 1 1 2 0] \"1-0\" 1]",
        "[ok \"\" [1 7 4 2] [1 1 1 2 0] \"1-0\" 1]",
        "[ok \"\" [1 7 4 2 0] nil \"1-0\" 1]",
        "[]",
        "nil",
        "!ERR",
    };
    struct tally_merge *m = tally_merge_new();
    struct reply_unit u;

    (void)state;
    assert_non_null(m);
    reply_unit_make(&u, true);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        redisReply *r = reply_of(cases[i]);
        int rc = tally_agg_merge(&u.a, r, m);

        freeReplyObject(r);
        if (rc != TALLY_EREDIS) {
            print_error("reply %s: got %d, want TALLY_EREDIS\n", cases[i], rc);
            fail();
        }
    }
    tally_agg_release(&u.a);
    tally_merge_free(m);
}

/* ---- Many requests against a brute-force count ---- */

#define RAND_ARTICLES 3000
#define RAND_REQUESTS 400
#define RAND_EVENTS_MAX 40

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

/* A comment delta: -1000..1000, never 0. */
static int rand_delta(uint64_t *s)
{
    int d = (int)rand_below(s, 2001) - 1000;

    return d != 0 ? d : 7;
}

struct rand_unit {
    char ids[RAND_ARTICLES][24];
    struct tally_event ev[RAND_REQUESTS * RAND_EVENTS_MAX];
    uint32_t art[RAND_REQUESTS * RAND_EVENTS_MAX]; /* the article index of each event */
    uint64_t vis[RAND_REQUESTS * RAND_EVENTS_MAX];
    char idem[RAND_REQUESTS][32];
    struct tally_agg_req rq[RAND_REQUESTS];
    struct tally_agg_req *reqs[RAND_REQUESTS];
    /* Brute force, per segment. */
    uint32_t order[RAND_ARTICLES]; /* articles in order of first appearance */
    int32_t seen[RAND_ARTICLES];
    uint32_t vis_req[RAND_REQUESTS * RAND_EVENTS_MAX]; /* per emitted shared visitor */
    size_t n_vis_req;
};

static void rand_fill(struct rand_unit *u, uint64_t seed)
{
    uint64_t s = seed;
    size_t used = 0;

    for (uint32_t i = 0; i < RAND_ARTICLES; i++)
        snprintf(u->ids[i], sizeof(u->ids[i]), i % 7 == 0 ? "\xc3\xa9t\xc3\xa9/%u" : "art-%u", i);
    for (uint32_t i = 0; i < RAND_REQUESTS; i++) {
        struct tally_agg_req *q = &u->rq[i];
        uint32_t roll = rand_below(&s, 100);

        *q = (struct tally_agg_req){.ev = &u->ev[used],
                                    .n = roll < 3 ? 0 : 1 + rand_below(&s, RAND_EVENTS_MAX),
                                    .bot = rand_below(&s, 3),
                                    .prefetch = rand_below(&s, 2)};
        if (rand_below(&s, 2) == 0)
            q->visitor = &u->vis[used];
        if (rand_below(&s, 10) == 0) {
            snprintf(u->idem[i], sizeof(u->idem[i]), "tally:{00}i:key-%u", i);
            q->idem_key = u->idem[i];
            q->idem_len = strlen(u->idem[i]);
        }
        for (size_t k = 0; k < q->n; k++, used++) {
            uint32_t a = rand_below(&s, RAND_ARTICLES), t = rand_below(&s, 20);

            u->art[used] = a;
            u->vis[used] = rand_next(&s);
            if (t < 11) {
                u->ev[used] = ev_view(u->ids[a]);
                if (rand_below(&s, 3) == 0)
                    u->ev[used].words = 1 + rand_below(&s, TALLY_WORDS_MAX);
            } else if (t < 12) {
                u->ev[used] = ev_make(u->ids[a], TALLY_EVENT_ENGAGE, TALLY_NETWORK_OTHER, 1);
                u->ev[used].seconds = (uint16_t)(1 + rand_below(&s, TALLY_ENGAGE_SECONDS_MAX));
                u->ev[used].read = rand_below(&s, 2) == 0;
            } else if (t < 17)
                u->ev[used] = ev_share(u->ids[a], (enum tally_network)rand_below(&s, 10));
            else
                u->ev[used] = ev_comment(u->ids[a], rand_delta(&s));
        }
        u->reqs[i] = q;
    }
}

/* Is request Q in the segment for KEYED (NULL: the shared one)? */
static bool rand_in_segment(const struct tally_agg_req *q, const struct tally_agg_req *keyed)
{
    if (q->n == 0)
        return false;
    return keyed != NULL ? q == keyed : q->idem_key == NULL;
}

/* The expected record of article A in the segment, from every event of its requests. */
static void rand_expect_article(struct rand_unit *u, struct cur *c, uint32_t window,
                                const struct tally_agg_req *keyed, uint32_t a)
{
    long long views = 0, shares[TALLY_NETWORKS] = {0}, n_vis = 0, n_deltas = 0, n_net = 0;
    long long engaged = 0, reads = 0, words = 0;
    char tag[3], hex[17];

    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        for (size_t k = 0; rand_in_segment(q, keyed) && k < q->n; k++) {
            size_t e = (size_t)(q->ev - u->ev) + k;

            if (u->art[e] != a)
                continue;
            if (q->ev[k].type == TALLY_EVENT_VIEW) {
                views += q->visitor == NULL || window == 0;
                n_vis += q->visitor != NULL;
                words = q->ev[k].words != 0 ? q->ev[k].words : words;
            } else if (q->ev[k].type == TALLY_EVENT_ENGAGE) {
                engaged += q->ev[k].seconds;
                reads += q->ev[k].read;
            } else if (q->ev[k].type == TALLY_EVENT_SHARE) {
                n_net += shares[q->ev[k].network]++ == 0;
            } else {
                n_deltas++;
            }
        }
    }
    bucket_hex(u->ids[a], strlen(u->ids[a]), tag);
    cur_str(c, tag);
    cur_str(c, u->ids[a]);
    cur_int(c, views);
    cur_int(c, n_vis);
    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        for (size_t k = 0; rand_in_segment(q, keyed) && q->visitor != NULL && k < q->n; k++) {
            if (u->art[(size_t)(q->ev - u->ev) + k] != a || q->ev[k].type != TALLY_EVENT_VIEW)
                continue;
            snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)q->visitor[k]);
            cur_str(c, hex);
            if (keyed == NULL)
                u->vis_req[u->n_vis_req++] = (uint32_t)i;
        }
    }
    cur_int(c, n_net);
    for (int k = 0; k < TALLY_NETWORKS; k++) {
        if (shares[k] == 0)
            continue;
        cur_str(c, tally_network_name((enum tally_network)k));
        cur_int(c, shares[k]);
    }
    cur_int(c, n_deltas);
    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        for (size_t k = 0; rand_in_segment(q, keyed) && k < q->n; k++)
            if (u->art[(size_t)(q->ev - u->ev) + k] == a && q->ev[k].type == TALLY_EVENT_COMMENT)
                cur_int(c, q->ev[k].delta);
    }
    cur_int(c, (engaged != 0) + (reads != 0));
    if (engaged != 0) {
        cur_str(c, "engaged");
        cur_int(c, engaged);
    }
    if (reads != 0) {
        cur_str(c, "reads");
        cur_int(c, reads);
    }
    cur_int(c, words != 0);
    if (words != 0) {
        cur_str(c, "words");
        cur_int(c, words);
    }
}

/* Check the segment of KEYED (NULL: the shared one); returns its number of articles. */
static size_t rand_expect_segment(struct rand_unit *u, struct cur *c, uint32_t window,
                                  const struct tally_agg_req *keyed)
{
    long long accepted = 0, bot = 0, prefetch = 0;
    size_t n_art = 0;

    memset(u->seen, 0, sizeof(u->seen));
    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        if (!rand_in_segment(q, keyed))
            continue;
        accepted += (long long)q->n;
        bot += q->bot;
        prefetch += q->prefetch;
        for (size_t k = 0; k < q->n; k++) {
            uint32_t a = u->art[(size_t)(q->ev - u->ev) + k];

            if (!u->seen[a]) {
                u->seen[a] = 1;
                u->order[n_art++] = a;
            }
        }
    }
    if (n_art == 0)
        return 0;
    cur_str(c, keyed != NULL ? keyed->idem_key : "");
    cur_str(c, "");
    cur_int(c, accepted);
    cur_int(c, bot);
    cur_int(c, prefetch);
    cur_int(c, (long long)n_art);
    for (size_t i = 0; i < n_art; i++)
        rand_expect_article(u, c, window, keyed, u->order[i]);
    return n_art;
}

/* Answer the unit with random repeats and check each request's reading of it. */
static void rand_check_reply(struct rand_unit *u, struct tally_agg *a, uint64_t *s)
{
    uint32_t repeats[RAND_REQUESTS] = {0}, keyed[RAND_REQUESTS][5];
    size_t n_seg = 1, n_rep = 0, next = 2; /* the shared segment always has requests here */
    redisReply *r, *seg;

    for (size_t i = 0; i < u->n_vis_req; i++)
        n_rep += rand_below(s, 3) == 0;
    for (size_t i = 0; i < RAND_REQUESTS; i++)
        n_seg += u->rq[i].idem_key != NULL && u->rq[i].n > 0;
    r = reply_array(2 + n_seg);
    r->element[0] = reply_text(REDIS_REPLY_STRING, S("ok"));
    r->element[1] = reply_text(REDIS_REPLY_STRING, S(""));
    seg = r->element[next++] = reply_array(5 + n_rep);
    for (size_t i = 0; i < 5; i++)
        seg->element[i] = reply_int(0);
    for (size_t i = 0, j = 5; j < seg->elements; i++) {
        if (rand_below(s, 3) != 0 && u->n_vis_req - i > seg->elements - j)
            continue;
        seg->element[j++] = reply_int((long long)i + 1);
        repeats[u->vis_req[i]]++;
    }
    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        if (u->rq[i].idem_key == NULL || u->rq[i].n == 0)
            continue;
        seg = r->element[next++] = reply_array(5);
        for (size_t k = 0; k < 5; k++) {
            keyed[i][k] = rand_below(s, k == 0 ? 2 : 50);
            seg->element[k] = reply_int(keyed[i][k]);
        }
    }
    assert_int_equal(next, r->elements);
    assert_int_equal(tally_agg_apply_reply(a, r, u->reqs, RAND_REQUESTS), 0);
    freeReplyObject(r);
    for (size_t i = 0; i < RAND_REQUESTS; i++) {
        const struct tally_agg_req *q = &u->rq[i];

        if (q->n == 0)
            continue;
        if (q->idem_key == NULL) {
            assert_int_equal(q->repeat, repeats[i]);
            assert_int_equal(q->accepted, q->n - repeats[i]);
            assert_int_equal(q->bot_out, q->bot);
            assert_int_equal(q->prefetch_out, q->prefetch);
            assert_false(q->replayed);
        } else {
            assert_int_equal(q->replayed, keyed[i][0] == 0);
            assert_int_equal(q->accepted, keyed[i][1]);
            assert_int_equal(q->bot_out, keyed[i][2]);
            assert_int_equal(q->prefetch_out, keyed[i][3]);
            assert_int_equal(q->repeat, keyed[i][4]);
        }
    }
}

static void test_agg_matches_a_brute_force_count_of_many_requests(void **state)
{
    static const struct {
        uint64_t seed;
        uint32_t window;
    } rounds[] = {{0x9e3779b97f4a7c15ULL, 1800}, {42, 0}, {0xdecafbad, 60}};
    struct rand_unit *u = calloc(1, sizeof(*u));
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;
    char attempt[32];

    (void)state;
    assert_non_null(u);
    tally_agg_init(&a, "tally:", 0);
    for (size_t round = 0; round < N_ELEMS(rounds); round++) {
        uint64_t s = rounds[round].seed;
        size_t first = 0, n_shared;

        a.window = rounds[round].window;
        rand_fill(u, rounds[round].seed);
        snprintf(attempt, sizeof(attempt), "rand-%zu", round);
        agg_build_ok(&a, u->reqs, RAND_REQUESTS, attempt, &r, &c);
        while (u->rq[first].n == 0)
            first++;
        expect_header(&c, &a, u->rq[first].ev[0].article, attempt);
        u->n_vis_req = 0;
        n_shared = rand_expect_segment(u, &c, a.window, NULL);
        assert_true(n_shared > 1024); /* the table rehashed, more than once */
        for (size_t i = 0; i < RAND_REQUESTS; i++)
            if (u->rq[i].idem_key != NULL && u->rq[i].n > 0)
                assert_true(rand_expect_segment(u, &c, a.window, &u->rq[i]) > 0);
        cur_end(&c);
        rand_check_reply(u, &a, &s);
    }
    tally_agg_release(&a);
    resp_free(&r);
    free(u);
}

/* ---- Many requests merged from a journal's ack, against a brute-force count ---- */

#define RAND_VIS (RAND_REQUESTS * RAND_EVENTS_MAX)

/* What the merge of one random unit must hold, per article (all in one hour). */
struct rand_merged {
    long order[RAND_ARTICLES]; /* of its first merged record; -1: none */
    uint32_t by_order[RAND_ARTICLES];
    size_t n;
    long long views[RAND_ARTICLES], shares[RAND_ARTICLES][TALLY_NETWORKS];
    long long engaged[RAND_ARTICLES], reads[RAND_ARTICLES], words[RAND_ARTICLES];
    /* Visitors pooled per article, in order of first merge: chained from HEAD through NEXT. */
    uint64_t vis[RAND_VIS];
    uint32_t next[RAND_VIS], head[RAND_ARTICLES], tail[RAND_ARTICLES], n_vis[RAND_ARTICLES];
    size_t used;
    /* One segment's visitors in the order sent (per article, then in arrival order), 1-based,
     * and whether the reply names each a repeat. */
    uint64_t seg_vis[RAND_VIS + 1];
    uint32_t seg_art[RAND_VIS + 1];
    bool rep[RAND_VIS + 1];
};

static void rand_pool(struct rand_merged *w, uint32_t a, uint64_t v)
{
    uint32_t i;

    for (i = w->head[a]; i != UINT32_MAX; i = w->next[i])
        if (w->vis[i] == v)
            return;
    i = (uint32_t)w->used++;
    w->vis[i] = v;
    w->next[i] = UINT32_MAX;
    if (w->head[a] == UINT32_MAX)
        w->head[a] = i;
    else
        w->next[w->tail[a]] = i;
    w->tail[a] = i;
    w->n_vis[a]++;
}

/* Segment KEYED (NULL: the shared one) as sent: fill W's visitor positions; answer it in SEG
 * (FIRST, random repeats when checked) and, when FIRST is 1, add what it merges to W. */
static void rand_merge_segment(struct rand_unit *u, struct rand_merged *w, uint32_t window,
                               const struct tally_agg_req *keyed, long long first,
                               redisReply **seg, uint64_t *s)
{
    size_t n_art = 0, n_pos = 0, n_rep = 0;

    memset(u->seen, 0, sizeof(u->seen));
    for (size_t i = 0; i < RAND_REQUESTS; i++)
        for (size_t k = 0; rand_in_segment(&u->rq[i], keyed) && k < u->rq[i].n; k++) {
            uint32_t a = u->art[(size_t)(u->rq[i].ev - u->ev) + k];

            if (!u->seen[a]) {
                u->seen[a] = 1;
                u->order[n_art++] = a;
            }
        }
    for (size_t j = 0; j < n_art; j++)
        for (size_t i = 0; i < RAND_REQUESTS; i++) {
            const struct tally_agg_req *q = &u->rq[i];

            for (size_t k = 0; rand_in_segment(q, keyed) && q->visitor != NULL && k < q->n; k++)
                if (u->art[(size_t)(q->ev - u->ev) + k] == u->order[j] &&
                    q->ev[k].type == TALLY_EVENT_VIEW) {
                    n_pos++;
                    w->seg_vis[n_pos] = q->visitor[k];
                    w->seg_art[n_pos] = u->order[j];
                    w->rep[n_pos] = window > 0 && rand_below(s, 3) == 0;
                    n_rep += w->rep[n_pos];
                }
        }
    *seg = reply_array(5 + n_rep);
    (*seg)->element[0] = reply_int(first);
    for (size_t k = 1; k < 5; k++)
        (*seg)->element[k] = reply_int(k == 4 ? (long long)n_rep : 0);
    for (size_t p = 1, j = 5; p <= n_pos; p++)
        if (w->rep[p])
            (*seg)->element[j++] = reply_int((long long)p);
    if (first != 1)
        return;
    for (size_t j = 0; j < n_art; j++) {
        uint32_t a = u->order[j];
        long long views = 0, n_vis = 0, other = 0;

        for (size_t i = 0; i < RAND_REQUESTS; i++) {
            const struct tally_agg_req *q = &u->rq[i];

            for (size_t k = 0; rand_in_segment(q, keyed) && k < q->n; k++) {
                const struct tally_event *ev = &q->ev[k];

                if (u->art[(size_t)(q->ev - u->ev) + k] != a)
                    continue;
                if (ev->type == TALLY_EVENT_VIEW) {
                    views += q->visitor == NULL || window == 0;
                    n_vis += q->visitor != NULL;
                    other += ev->words != 0;
                    w->words[a] = ev->words != 0 ? ev->words : w->words[a];
                } else if (ev->type == TALLY_EVENT_ENGAGE) {
                    other++;
                    w->engaged[a] += ev->seconds;
                    w->reads[a] += ev->read;
                } else if (ev->type == TALLY_EVENT_SHARE) {
                    other++;
                    w->shares[a][ev->network]++;
                }
            }
        }
        for (size_t p = 1; p <= n_pos; p++)
            if (w->seg_art[p] == a) {
                views += window > 0 && !w->rep[p];
                rand_pool(w, a, w->seg_vis[p]);
            }
        w->views[a] += views;
        /* A record of comment deltas alone is counted by the ack, not merged. */
        if ((views != 0 || n_vis != 0 || other != 0) && w->order[a] < 0) {
            w->order[a] = (long)w->n;
            w->by_order[w->n++] = a;
        }
    }
}

static void rand_expect_merged(struct rand_unit *u, struct rand_merged *w, struct cur *c)
{
    char tag[3], hex[17];

    for (size_t j = 0; j < w->n; j++) {
        uint32_t a = w->by_order[j];
        long long n_net = 0;

        cur_str(c, "1800000000");
        bucket_hex(u->ids[a], strlen(u->ids[a]), tag);
        cur_str(c, tag);
        cur_str(c, u->ids[a]);
        cur_int(c, w->views[a]);
        cur_int(c, w->n_vis[a]);
        for (uint32_t i = w->head[a]; i != UINT32_MAX; i = w->next[i]) {
            snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)w->vis[i]);
            cur_str(c, hex);
        }
        for (int k = 0; k < TALLY_NETWORKS; k++)
            n_net += w->shares[a][k] != 0;
        cur_int(c, n_net);
        for (int k = 0; k < TALLY_NETWORKS; k++)
            if (w->shares[a][k] != 0) {
                cur_str(c, tally_network_name((enum tally_network)k));
                cur_int(c, w->shares[a][k]);
            }
        cur_int(c, 0);
        cur_int(c, (w->engaged[a] != 0) + (w->reads[a] != 0));
        if (w->engaged[a] != 0) {
            cur_str(c, "engaged");
            cur_int(c, w->engaged[a]);
        }
        if (w->reads[a] != 0) {
            cur_str(c, "reads");
            cur_int(c, w->reads[a]);
        }
        cur_int(c, w->words[a] != 0);
        if (w->words[a] != 0) {
            cur_str(c, "words");
            cur_int(c, w->words[a]);
        }
    }
    cur_end(c);
}

/* Each journal segment of the unit in R, from argument AT on: its checks are its text's
 * records with visitors, in the same order with the same visitors (none without a WINDOW),
 * each named by its repeat-view hashes of the slot of NOW and the one before, and its text
 * has no comment deltas. Returns the number of segments. */
static size_t rand_check_journal_text(const struct resp *r, size_t at, uint32_t window,
                                      int64_t now)
{
    size_t n_segs = 0;

    while (at < r->n) {
        size_t checks, chk_at, text;
        const char *t, *end;

        at += 5; /* idem digest accepted bot prefetch */
        checks = strtoul(r->p[at], NULL, 10);
        assert_true(window > 0 || checks == 0);
        chk_at = ++at;
        for (size_t i = 0; i < checks; i++)
            at += 3 + strtoul(r->p[at + 2], NULL, 10);
        for (size_t i = 0, n = strtoul(r->p[at++], NULL, 10); i < n; i++)
            at += 3 + strtoul(r->p[at + 2], NULL, 10);
        text = at++;
        /* Walk the text's tokens: tag id views nvis vis... nshares (network n)... 0
         * nsums (metric n)... nprops (property n)... */
        t = r->p[text];
        end = t + r->len[text];
        while (t < end) {
            const char *tok[4096];
            size_t n_tok = 0, k = 0, nvis;

            /* One record's tokens: up to its last list. */
            for (int list = 0; list < 5; list++) {
                size_t want = list == 0 ? 4 : 1, more;

                for (size_t j = 0; j < want; j++) {
                    assert_true(t < end && n_tok < N_ELEMS(tok));
                    tok[n_tok++] = t;
                    t = memchr(t, '\n', (size_t)(end - t));
                    t = t != NULL ? t + 1 : end;
                }
                more = strtoul(tok[n_tok - 1], NULL, 10) * (list == 0 || list == 2 ? 1 : 2);
                assert_true(list != 2 || more == 0);
                for (size_t j = 0; j < more; j++) {
                    assert_true(t < end && n_tok < N_ELEMS(tok));
                    tok[n_tok++] = t;
                    t = memchr(t, '\n', (size_t)(end - t));
                    t = t != NULL ? t + 1 : end;
                }
            }
            nvis = strtoul(tok[3], NULL, 10);
            if (window == 0 || nvis == 0)
                continue;
            /* The next check is this record's: its two hashes, nvisitors, its visitors (the
             * text has its views between id and nvisitors). */
            assert_true(checks-- > 0);
            for (k = 0; k < 2; k++) {
                char key[512];
                int len = snprintf(key, sizeof(key), "tally:{%.2s}w:%.*s:%lld", tok[0],
                                   (int)strcspn(tok[1], "\n"), tok[1],
                                   (long long)(now / window) - (long long)k);

                assert_int_equal(r->len[chk_at + k], (size_t)len);
                assert_memory_equal(r->p[chk_at + k], key, (size_t)len);
            }
            for (; k < 3 + nvis; k++) {
                const char *want = tok[k + 1];
                size_t len = strcspn(want, "\n");

                assert_int_equal(r->len[chk_at + k], len);
                assert_memory_equal(r->p[chk_at + k], want, len);
            }
            chk_at += k;
        }
        assert_int_equal(checks, 0);
        n_segs++;
    }
    return n_segs;
}

/* A random unit for a journal, answered with random repeats and random keyed segments
 * replayed or reused: its merge is what the segments applied carry, each view counted unless
 * a repeat, each visitor once. */
static void test_agg_merges_a_brute_force_count_of_many_requests(void **state)
{
    static const struct {
        uint64_t seed;
        uint32_t window;
    } rounds[] = {{0x9e3779b97f4a7c15ULL, 1800}, {42, 0}, {0xdecafbad, 60}, {7, 1800}};
    struct rand_unit *u = calloc(1, sizeof(*u));
    struct rand_merged *w = malloc(sizeof(*w));
    struct tally_merge *m = tally_merge_new();
    struct tally_buf b;
    struct tally_agg a;
    struct resp r = {0};
    struct cur c;

    (void)state;
    assert_non_null(u);
    assert_non_null(w);
    assert_non_null(m);
    tally_buf_init(&b);
    tally_agg_init(&a, "tally:", 0);
    a.journal = JOURNAL;
    a.registry = REGISTRY;
    a.now = 1800001799;
    for (size_t round = 0; round < N_ELEMS(rounds); round++) {
        uint64_t s = rounds[round].seed ^ 0x5555;
        size_t n_seg = 1, next = 2, args;
        redisReply *reply;

        a.window = rounds[round].window;
        rand_fill(u, rounds[round].seed);
        agg_build_ok(&a, u->reqs, RAND_REQUESTS, "rand", &r, &c);
        for (size_t i = 0; i < RAND_REQUESTS; i++)
            n_seg += u->rq[i].idem_key != NULL && u->rq[i].n > 0;
        /* numkeys, 3 keys, P window 600 86400 now fence fresh model: 12 arguments */
        assert_int_equal(rand_check_journal_text(&r, 12, a.window, a.now), n_seg);
        memset(w, 0, sizeof(*w));
        for (size_t i = 0; i < RAND_ARTICLES; i++) {
            w->order[i] = -1;
            w->head[i] = UINT32_MAX;
        }
        reply = reply_array(4 + n_seg);
        reply->element[0] = reply_text(REDIS_REPLY_STRING, S("ok"));
        reply->element[1] = reply_text(REDIS_REPLY_STRING, S(""));
        rand_merge_segment(u, w, a.window, NULL, 1, &reply->element[next++], &s);
        for (size_t i = 0; i < RAND_REQUESTS; i++)
            if (u->rq[i].idem_key != NULL && u->rq[i].n > 0)
                rand_merge_segment(u, w, a.window, &u->rq[i], rand_below(&s, 3),
                                   &reply->element[next++], &s);
        reply->element[next++] = reply_text(REDIS_REPLY_STRING, S("1800000000000-0"));
        reply->element[next++] = reply_int(1);
        assert_int_equal(next, reply->elements);
        assert_int_equal(tally_agg_apply_reply(&a, reply, u->reqs, RAND_REQUESTS), 0);
        tally_merge_clear(m);
        assert_int_equal(tally_agg_merge(&a, reply, m), 0);
        freeReplyObject(reply);
        assert_true(w->n > 1024); /* the merge's table grew */
        tally_buf_reset(&b);
        args = tally_merge_put(m, &b);
        assert_false(b.oom);
        resp_read(&r, b.data, b.len);
        assert_int_equal(args, r.n);
        assert_int_equal(tally_merge_records(m), w->n);
        c = (struct cur){.r = &r, .i = 0};
        rand_expect_merged(u, w, &c);
    }
    tally_agg_release(&a);
    tally_merge_free(m);
    tally_buf_release(&b);
    resp_free(&r);
    free(w);
    free(u);
}

/* ---- The keys of a part of a journal's fold (Redis Cluster) ---- */

/* TEXT with each "TT" replaced by TAG and each "YY" by Y, into OUT (room for CAP). */
static void with_tag(const char *text, const char *tag, const char *y, char *out, size_t cap)
{
    size_t n = 0;

    for (; *text != '\0'; text++) {
        const char *put = NULL;

        if (text[0] == 'T' && text[1] == 'T')
            put = tag;
        else if (text[0] == 'Y' && text[1] == 'Y')
            put = y;
        if (put != NULL) {
            assert_true(n + strlen(put) + 1 < cap);
            memcpy(out + n, put, strlen(put));
            n += strlen(put);
            text++;
        } else {
            assert_true(n + 2 < cap);
            out[n++] = *text;
        }
    }
    out[n] = '\0';
}

/* An article id other than "x" in the bucket of "x", into Y. */
static void same_bucket_as_x(char y[16])
{
    for (int i = 0;; i++) {
        snprintf(y, 16, "y%d", i);
        if (tally_key_bucket(y, strlen(y)) == tally_key_bucket("x", 1))
            return;
    }
}

/* Every key count_record() (src/scripts/count.lua) may touch for a chunk's records, in the
 * bucket's slot, the journal's cursor first: per record its totals (and its day's visitor
 * estimate), per hour the keys of each metric counted there, the site totals when one of them
 * is kept there. "d{b}views:..." stands for "t:{<bucket of x>}d:views:...". 1800001800 is
 * 2027-01-15 08:30 UTC; 1800059400 is 2027-01-16 00:30 UTC. */
static void test_agg_lists_the_keys_a_fold_part_touches(void **state)
{
    static const struct {
        const char *what, *chunk;
        const char *want[40];
    } cases[] = {
        {"nothing: the cursor alone", "", {NULL}},
        {"views",
         "1800001800\nTT\nx\n3\n0\n0\n0\n0\n0",
         {"a{b}x", "d{b}views:20270115", "h{b}views:2027011508", "t{b}views", "s{b}20270115",
          "s{b}all"}},
        {"views and visitors",
         "1800001800\nTT\nx\n2\n2\n00000000000000a1\n00000000000000a2\n0\n0\n0\n0",
         {"a{b}x", "v{b}20270115:x", "d{b}views:20270115", "h{b}views:2027011508", "t{b}views",
          "d{b}visitors:20270115", "h{b}visitors:2027011508", "t{b}visitors", "s{b}20270115",
          "s{b}all"}},
        {"visitors of repeat views only: no views, and nothing in the site totals",
         "1800001800\nTT\nx\n0\n1\n00000000000000a1\n0\n0\n0\n0",
         {"a{b}x", "v{b}20270115:x", "d{b}visitors:20270115", "h{b}visitors:2027011508",
          "t{b}visitors"}},
        {"shares of two networks",
         "1800001800\nTT\nx\n0\n0\n2\nemail\n1\ncopy\n2\n0\n0\n0",
         {"a{b}x", "d{b}shares:20270115", "h{b}shares:2027011508", "t{b}shares",
          "s{b}20270115", "s{b}all"}},
        {"comment deltas",
         "1800001800\nTT\nx\n0\n0\n0\n2\n-1\n3\n0\n0",
         {"a{b}x", "d{b}comments:20270115", "h{b}comments:2027011508", "t{b}comments",
          "s{b}20270115", "s{b}all"}},
        {"sums and a property",
         "1800001800\nTT\nx\n0\n0\n0\n0\n2\nengaged\n30\nreads\n1\n1\nwords\n900",
         {"a{b}x", "d{b}engaged:20270115", "h{b}engaged:2027011508", "t{b}engaged",
          "d{b}reads:20270115", "h{b}reads:2027011508", "t{b}reads", "s{b}20270115",
          "s{b}all"}},
        {"a property alone: the totals",
         "1800001800\nTT\nx\n0\n0\n0\n0\n0\n1\nwords\n900",
         {"a{b}x"}},
        {"a sum of a metric this collector does not know, by its name",
         "1800001800\nTT\nx\n0\n0\n0\n0\n1\nlikes\n4\n0",
         {"d{b}likes:20270115", "h{b}likes:2027011508", "t{b}likes", "a{b}x", "s{b}20270115",
          "s{b}all"}},
        {"two articles, three hours over two days: each hour's keys of its own metrics",
         "1800001800\nTT\nx\n1\n0\n0\n0\n0\n0\n"
         "1800001800\nTT\nYY\n0\n0\n1\nemail\n1\n0\n0\n0\n"
         "1800005400\nTT\nx\n1\n1\n00000000000000a1\n0\n0\n0\n0\n"
         "1800059400\nTT\nYY\n2\n0\n0\n0\n0\n0\n",
         {"a{b}x", "a{b}YY", "a{b}x", "v{b}20270115:x", "a{b}YY", "d{b}views:20270115",
          "h{b}views:2027011508", "t{b}views", "d{b}shares:20270115", "h{b}shares:2027011508",
          "t{b}shares", "s{b}20270115", "s{b}all", "d{b}views:20270115",
          "h{b}views:2027011509", "t{b}views", "d{b}visitors:20270115",
          "h{b}visitors:2027011509", "t{b}visitors", "s{b}20270115", "s{b}all",
          "d{b}views:20270116", "h{b}views:2027011600", "t{b}views", "s{b}20270116",
          "s{b}all"}},
    };
    char tag[3], y[16], chunk[1024], key[TALLY_KEY_MAX], want[128];
    unsigned bucket = tally_key_bucket("x", 1);
    const char *why;

    (void)state;
    bucket_hex("x", 1, tag);
    same_bucket_as_x(y);
    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        struct tally_buf b;
        struct resp r;
        size_t n = 0;
        int got;

        while (n < N_ELEMS(cases[c].want) && cases[c].want[n] != NULL)
            n++;
        with_tag(cases[c].chunk, tag, y, chunk, sizeof(chunk));
        tally_buf_init(&b);
        tally_buf_add(&b, "keep", 4); /* appended after what OUT holds */
        got = tally_agg_part_keys(&b, "t:", bucket, "w-1", 3, chunk, strlen(chunk), &why);
        if (got != 1 + (int)n) {
            print_error("%s: %d keys, want %zu\n", cases[c].what, got, 1 + n);
            fail();
        }
        assert_memory_equal(b.data, "keep", 4);
        memset(&r, 0, sizeof(r));
        resp_read(&r, b.data + 4, b.len - 4);
        assert_int_equal(r.n, 1 + n);
        snprintf(key, sizeof(key), "t:{%s}f:w-1", tag);
        assert_int_equal(r.len[0], strlen(key));
        assert_memory_equal(r.p[0], key, strlen(key));
        for (size_t i = 0; i < n; i++) {
            const char *brace;

            with_tag(cases[c].want[i], tag, y, want, sizeof(want));
            brace = strchr(want, '{');
            snprintf(key, sizeof(key), "t:{%s}%.*s:%s", tag, (int)(brace - want), want,
                     brace + 3);
            if (r.len[1 + i] != strlen(key) || memcmp(r.p[1 + i], key, strlen(key)) != 0) {
                print_error("%s: key %zu is %.*s, want %s\n", cases[c].what, i + 1,
                            (int)r.len[1 + i], r.p[1 + i], key);
                fail();
            }
            assert_int_equal(tally_key_slot(r.p[1 + i], r.len[1 + i]),
                             tally_key_bucket_slot(bucket));
        }
        resp_free(&r);
        tally_buf_release(&b);
    }
}

/* A chunk the scripts did not write is refused whole, OUT left as it was: a record of another
 * bucket (its keys would be in another slot), a count that is not one, a record cut short. */
static void test_agg_refuses_a_fold_part_it_cannot_read(void **state)
{
    static const char *const chunks[] = {
        "1800001800\nZZ\nx\n1\n0\n0\n0\n0\n0",        /* another bucket ("ZZ": see below) */
        "1800001800\nTT\nx\n1\n0\n0\n0\n0",           /* cut short */
        "1800001800\nTT\nx\n1\n0\n0\n0\n0\n0\n1800001800", /* a second record cut short */
        "1800001800\nTT\nx\n-1\n0\n0\n0\n0\n0",       /* a count that is not one */
        "1800001800\nTT\nx\n1\n2\n00000000000000a1",  /* fewer visitors than said */
        "1800001800\nTT\nx\n1\n0\n1\nemail\nmany\n0\n0\n0", /* a share count that is not one */
        "1800001800\nTT\n\nx\n1\n0\n0\n0\n0\n0",      /* an empty token */
        "18000018x0\nTT\nx\n1\n0\n0\n0\n0\n0",        /* a time that is not one */
    };
    char tag[3], other[3], chunk[256];
    unsigned bucket = tally_key_bucket("x", 1);
    struct tally_buf b;
    const char *why;

    (void)state;
    bucket_hex("x", 1, tag);
    snprintf(other, sizeof(other), "%02x", (bucket + 1) % TALLY_BUCKETS);
    tally_buf_init(&b);
    for (size_t c = 0; c < N_ELEMS(chunks); c++) {
        with_tag(chunks[c], tag, "y", chunk, sizeof(chunk));
        /* "ZZ": the tag of the next bucket. */
        if (strncmp(chunk + 11, "ZZ", 2) == 0)
            memcpy(chunk + 11, other, 2);
        tally_buf_reset(&b);
        tally_buf_add(&b, "keep", 4);
        if (tally_agg_part_keys(&b, "t:", bucket, "w-1", 3, chunk, strlen(chunk), &why) !=
            TALLY_EINVAL) {
            print_error("chunk %zu was not refused: %s\n", c, chunk);
            fail();
        }
        assert_string_equal(why, "not a chunk of merged records of its bucket");
        assert_int_equal(b.len, 4);
    }
    assert_int_equal(tally_agg_part_keys(&b, "t:", TALLY_BUCKETS, "w-1", 3, "", 0, &why),
                     TALLY_EINVAL);
    assert_string_equal(why, "bucket: out of range");
    assert_int_equal(b.len, 4);
    tally_buf_release(&b);
}

/* A key past TALLY_KEY_MAX (511 bytes and its end) -- a metric's name written by another
 * version, an id -- is not left out of the declared keys: the chunk is refused whole, saying
 * why, OUT as it was. A sum of a metric this collector does not know declares its day, hour
 * and all-time keys by its name; the hour key, "t:{bb}h:<name>:<hour>", is 19 bytes and the
 * name. An article's totals, "t:{bb}a:<id>", are 8 bytes and the id. */
static void test_agg_refuses_a_fold_part_with_a_key_too_long(void **state)
{
    static const struct {
        size_t name, id;
        int want; /* keys: the cursor and 6 (as for "likes" in the list above), or refused */
    } cases[] = {
        {492, 1, 7}, {493, 1, TALLY_EINVAL}, {5, 503, 7}, {5, 504, TALLY_EINVAL},
    };
    char tag[3], name[600], id[600], chunk[1400];
    unsigned bucket = tally_key_bucket("x", 1);
    struct tally_buf b;
    struct resp r;
    const char *why;

    (void)state;
    bucket_hex("x", 1, tag);
    memset(name, 'n', sizeof(name));
    memset(id, 'i', sizeof(id));
    tally_buf_init(&b);
    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        size_t longest = 0;
        int got;

        snprintf(chunk, sizeof(chunk), "1800001800\n%s\n%.*s\n0\n0\n0\n0\n1\n%.*s\n4\n0",
                 tag, (int)cases[c].id, id, (int)cases[c].name, name);
        tally_buf_reset(&b);
        tally_buf_add(&b, "keep", 4);
        why = NULL;
        got = tally_agg_part_keys(&b, "t:", bucket, "w-1", 3, chunk, strlen(chunk), &why);
        if (got != cases[c].want) {
            print_error("case %zu (a name of %zu bytes, an id of %zu): %d, want %d\n", c,
                        cases[c].name, cases[c].id, got, cases[c].want);
            fail();
        }
        if (got < 0) {
            assert_string_equal(why, "a key too long: an article id or a metric's name past "
                                     "TALLY_KEY_MAX");
            assert_int_equal(b.len, 4);
            continue;
        }
        memset(&r, 0, sizeof(r));
        resp_read(&r, b.data + 4, b.len - 4);
        assert_int_equal(r.n, got);
        for (size_t i = 0; i < r.n; i++)
            longest = r.len[i] > longest ? r.len[i] : longest;
        assert_int_equal(longest, TALLY_KEY_MAX - 1); /* the longest that fits */
        resp_free(&r);
    }
    tally_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agg_writes_visitor_ids_as_sixteen_hex_digits),
        cmocka_unit_test(test_agg_frames_a_one_view_unit_exactly),
        cmocka_unit_test(test_agg_sets_the_fence_in_place),
        cmocka_unit_test(test_agg_header_names_the_marker_key_and_settings),
        cmocka_unit_test(test_agg_declares_the_keys_the_unit_touches_in_cluster_mode),
        cmocka_unit_test(test_agg_asks_for_expiry_only_where_it_may_be_missing),
        cmocka_unit_test(test_agg_reads_the_expired_keys),
        cmocka_unit_test(test_agg_reads_the_commands_a_unit_skipped),
        cmocka_unit_test(test_agg_coalesces_views_of_one_article),
        cmocka_unit_test(test_agg_counts_shares_per_network_in_contract_order),
        cmocka_unit_test(test_agg_keeps_comment_deltas_in_arrival_order),
        cmocka_unit_test(test_agg_sends_visitors_in_arrival_order),
        cmocka_unit_test(test_agg_counts_no_view_of_a_view_seen_a_repeat),
        cmocka_unit_test(test_agg_gives_each_keyed_request_its_own_segment),
        cmocka_unit_test(test_agg_skips_requests_without_events),
        cmocka_unit_test(test_agg_refuses_units_without_events),
        cmocka_unit_test(test_agg_refuses_an_attempt_too_long_for_its_key),
        cmocka_unit_test(test_agg_reuses_its_scratch_between_units),
        cmocka_unit_test(test_agg_reads_an_answer_without_repeats),
        cmocka_unit_test(test_agg_attributes_repeats_to_their_requests),
        cmocka_unit_test(test_agg_flags_each_repeat_at_its_event),
        cmocka_unit_test(test_agg_builds_a_mark_of_views_alone),
        cmocka_unit_test(test_agg_reads_a_replayed_keyed_segment),
        cmocka_unit_test(test_agg_tells_a_fenced_unit),
        cmocka_unit_test(test_agg_rejects_replies_of_another_shape),
        cmocka_unit_test(test_agg_reads_answers_of_units_without_a_shared_segment),
        cmocka_unit_test(test_agg_frames_a_journal_unit_exactly),
        cmocka_unit_test(test_agg_gives_keyed_requests_their_own_journal_segment),
        cmocka_unit_test(test_agg_lists_comments_apart_from_the_journal_text),
        cmocka_unit_test(test_agg_reads_the_journal_entry_id),
        cmocka_unit_test(test_agg_merges_what_the_journal_appended),
        cmocka_unit_test(test_agg_merge_rejects_replies_it_cannot_place),
        cmocka_unit_test(test_agg_matches_a_brute_force_count_of_many_requests),
        cmocka_unit_test(test_agg_merges_a_brute_force_count_of_many_requests),
        cmocka_unit_test(test_agg_lists_the_keys_a_fold_part_touches),
        cmocka_unit_test(test_agg_refuses_a_fold_part_it_cannot_read),
        cmocka_unit_test(test_agg_refuses_a_fold_part_with_a_key_too_long),
    };

    return cmocka_run_group_tests_name("agg", tests, NULL, NULL);
}
