/* test_query.c -- stats reads: which articles a request names, totals from HGETALL, the JSON. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/query.h"
#include "unit.h"

/* struct tally_query is large: one for the whole run. */
static struct tally_query query_q;

/* ---- Parsing the articles of /v1/stats?article=... ---- */

/* Q holds exactly the articles of WANT, a '|'-separated list. */
static void query_expect_ids(const struct tally_query *q, const char *want)
{
    char got[4096];
    size_t len = 0;

    for (size_t i = 0; i < q->n; i++) {
        assert_int_equal(q->id[i][q->len[i]], '\0');
        assert_true(len + q->len[i] + 2 < sizeof(got));
        if (i > 0)
            got[len++] = '|';
        memcpy(got + len, q->id[i], q->len[i]);
        len += q->len[i];
    }
    got[len] = '\0';
    if (strcmp(got, want) != 0) {
        print_error("articles: got '%s', want '%s'\n", got, want);
        fail();
    }
}

static void test_query_parses_articles_in_order(void **state)
{
    static const struct {
        const char *query, *want;
    } cases[] = {
        {"article=a", "a"},
        {"article=a&article=b&article=c", "a|b|c"},
        {"article=b&article=a&article=b", "b|a|b"}, /* repeats are kept */
        {"article=news%2F2025%2Fkim-missiles", "news/2025/kim-missiles"},
        {"article=news/2025/x&article=news%2f2025%2fx", "news/2025/x|news/2025/x"},
        {"metric=views&article=x&foo=bar&article=y&article2=z", "x|y"},
        {"Article=x&%61rticle=y&article=z", "z"}, /* names are exact and not decoded */
        {"&&article=a&&article=b&", "a|b"},
        {"article=caf%C3%A9&article=\xe6\x96\x87", "caf\xc3\xa9|\xe6\x96\x87"},
        {"article=%7Ba%7D&article={b}", "{a}|{b}"},
        {"article=a%2Bb", "a+b"},
        {"article=x&article=x&article=x", "x|x|x"},
    };
    struct tally_query *q = &query_q;
    struct tally_error err;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int rc = tally_query_parse_articles(q, cases[i].query, strlen(cases[i].query), &err);

        if (rc != 0) {
            print_error("'%s': %d %s\n", cases[i].query, rc, err.message);
            fail();
        }
        query_expect_ids(q, cases[i].want);
    }
}

static void test_query_rejects_bad_article_lists(void **state)
{
    static const struct {
        const char *query, *code;
    } cases[] = {
        {"", "missing_article"},
        {"metric=views&limit=3", "missing_article"},
        {"articles=a", "missing_article"},
        {"article", "invalid_article"},
        {"article=", "invalid_article"},
        {"article=a&article=", "invalid_article"},
        {"article=a+b", "invalid_article"}, /* '+' is a space in a query string */
        {"article=+", "invalid_article"},
        {"article=a%20b", "invalid_article"},
        {"article=a%00b", "invalid_article"},
        {"article=%00", "invalid_article"},
        {"article=a%0Ab", "invalid_article"},
        {"article=a%7Fb", "invalid_article"},
        {"article=a%C2%85b", "invalid_article"},   /* U+0085 */
        {"article=a%E2%80%A8", "invalid_article"}, /* U+2028 */
        {"article=%C3", "invalid_article"},
        {"article=%C0%AF", "invalid_article"}, /* overlong '/' */
        {"article=%zz", "invalid_article"},
        {"article=ok&article=%4", "invalid_article"},
        {"article=ok&article=bad%", "invalid_article"},
    };
    struct tally_query *q = &query_q;
    struct tally_error err;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(
            tally_query_parse_articles(q, cases[i].query, strlen(cases[i].query), &err),
            TALLY_EINVAL);
        if (err.code == NULL || strcmp(err.code, cases[i].code) != 0) {
            print_error("'%s': got %s, want %s\n", cases[i].query, err.code, cases[i].code);
            fail();
        }
        assert_memory_equal(err.message, "article: ", 9);
    }
}

/* "article=ID&article=ID..." with N ids "a0", "a1", ... */
static size_t query_list(char *out, size_t cap, unsigned n)
{
    size_t len = 0;

    for (unsigned i = 0; i < n; i++) {
        int w = snprintf(out + len, cap - len, "%sarticle=a%u", i > 0 ? "&" : "", i);

        assert_true(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
    return len;
}

static void test_query_takes_one_to_a_hundred_articles(void **state)
{
    struct tally_query *q = &query_q;
    struct tally_error err;
    char query[2048], name[16];
    size_t len;

    (void)state;
    len = query_list(query, sizeof(query), 100);
    assert_int_equal(tally_query_parse_articles(q, query, len, &err), 0);
    assert_int_equal(q->n, 100);
    for (unsigned i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "a%u", i);
        assert_int_equal(q->len[i], strlen(name));
        assert_string_equal(q->id[i], name);
    }
    len = query_list(query, sizeof(query), 101);
    assert_int_equal(tally_query_parse_articles(q, query, len, &err), TALLY_EINVAL);
    assert_string_equal(err.code, "too_many_articles");
    assert_string_equal(err.message, "article: at most 100 per request");
    /* A reused query starts again from nothing. */
    assert_int_equal(tally_query_parse_articles(q, S("article=x"), &err), 0);
    query_expect_ids(q, "x");
}

static void test_query_takes_the_longest_ids(void **state)
{
    struct tally_query *q = &query_q;
    struct tally_error err;
    char query[8 + 3 * 257 + 1], id[257];
    size_t len;

    (void)state;
    memset(id, 'z', sizeof(id));
    /* 256 bytes, each spelled as an escape: 768 characters. */
    memcpy(query, "article=", 8);
    for (size_t i = 0; i < 256; i++)
        memcpy(query + 8 + 3 * i, "%7A", 3);
    len = 8 + 3 * 256;
    assert_int_equal(tally_query_parse_articles(q, query, len, &err), 0);
    assert_int_equal(q->n, 1);
    assert_int_equal(q->len[0], 256);
    assert_memory_equal(q->id[0], id, 256);
    assert_int_equal(q->id[0][256], '\0');
    /* One more byte is too long, spelled either way. */
    memcpy(query + len, "%7A", 3);
    assert_int_equal(tally_query_parse_articles(q, query, len + 3, &err), TALLY_EINVAL);
    assert_string_equal(err.code, "invalid_article");
    memcpy(query + 8, id, sizeof(id));
    assert_int_equal(tally_query_parse_articles(q, query, 8 + 257, &err), TALLY_EINVAL);
    assert_string_equal(err.code, "invalid_article");
    assert_int_equal(tally_query_parse_articles(q, query, 8 + 256, &err), 0);
    assert_int_equal(q->len[0], 256);
}

/* A batch's articles for ?stats=1: each once, in the order it first appears, copied (the
 * batch's text is reused by the next request); prefixes and ids of other lengths are apart. */
static void test_query_takes_a_batch_articles_once_each(void **state)
{
    static const char *const ids[] = {"b", "a/x", "b", "ab", "a", "a/x", "b", "a"};
    struct tally_event ev[N_ELEMS(ids) + TALLY_BATCH_MAX];
    char text[64], big[TALLY_BATCH_MAX][8];
    struct tally_query *q = &query_q;
    struct tally_error err;
    size_t at = 0;

    (void)state;
    memset(ev, 0, sizeof(ev));
    for (size_t i = 0; i < N_ELEMS(ids); i++) {
        size_t len = strlen(ids[i]);

        memcpy(text + at, ids[i], len + 1);
        ev[i].article = text + at;
        ev[i].article_len = (uint16_t)len;
        ev[i].type = i % 2 ? TALLY_EVENT_SHARE : TALLY_EVENT_VIEW;
        at += len + 1;
    }
    assert_int_equal(tally_query_of_events(q, ev, N_ELEMS(ids), &err), 0);
    memset(text, '#', sizeof(text));
    query_expect_ids(q, "b|a/x|ab|a");
    assert_int_equal(tally_query_of_events(q, ev, 1, &err), 0);
    query_expect_ids(q, "#");
    /* A full batch of distinct ids. */
    for (size_t i = 0; i < TALLY_BATCH_MAX; i++) {
        snprintf(big[i], sizeof(big[i]), "n%zu", i);
        ev[i].article = big[i];
        ev[i].article_len = (uint16_t)strlen(big[i]);
    }
    assert_int_equal(tally_query_of_events(q, ev, TALLY_BATCH_MAX, &err), 0);
    assert_int_equal(q->n, TALLY_BATCH_MAX);
    assert_string_equal(q->id[0], "n0");
    assert_string_equal(q->id[TALLY_BATCH_MAX - 1], "n99");
}

static void test_query_parses_a_path_article(void **state)
{
    static const struct {
        const char *raw, *want;
    } cases[] = {
        {"news%2F2025%2Fkim-missiles", "news/2025/kim-missiles"},
        {"news/2025/kim-missiles", "news/2025/kim-missiles"},
        {"news%2f2025/kim", "news/2025/kim"},
        {"%2F", "/"},
        {"a+b", "a+b"}, /* '+' is itself in a path */
        {"caf%C3%A9", "caf\xc3\xa9"},
        {"%7B%7D", "{}"},
    };
    struct tally_query *q = &query_q;
    struct tally_error err;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_int_equal(tally_query_parse_path(q, cases[i].raw, strlen(cases[i].raw), &err), 0);
        query_expect_ids(q, cases[i].want);
    }
}

static void test_query_rejects_bad_path_articles(void **state)
{
    static const char *const cases[] = {
        "", "a%00b", "%00", "a%20b", "a%09", "%", "%2", "%G0", "%FF", "a b",
    };
    struct tally_query *q = &query_q;
    struct tally_error err;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        memset(&err, 0, sizeof(err));
        if (tally_query_parse_path(q, cases[i], strlen(cases[i]), &err) != TALLY_EINVAL) {
            print_error("path '%s' was accepted\n", cases[i]);
            fail();
        }
        assert_string_equal(err.code, "invalid_article");
    }
    /* A raw NUL inside the length is refused too. */
    assert_int_equal(tally_query_parse_path(q, "a\0b", 3, &err), TALLY_EINVAL);
}

/* A parse takes room for what the request names: one short id is a few hundred bytes, not
 * room for a hundred of the longest. */
static void test_query_room_is_sized_to_the_request(void **state)
{
    struct tally_query q = {0};
    struct tally_error err;
    size_t per = sizeof(*q.id) + sizeof(*q.len) + sizeof(*q.stats) + sizeof(*q.loads) +
                 sizeof(*q.sent);
    char many[100 * 12];
    size_t n = 0;

    (void)state;
    assert_int_equal(tally_query_parse_path(&q, S("news%2Fa"), &err), 0);
    assert_int_equal(q.mem_size, per + 9); /* the encoded length, and a NUL */
    assert_int_equal(tally_query_parse_articles(&q, S("article=a&x=yyyyyyyy&article=bc"), &err),
                     0);
    assert_int_equal(q.n, 2);
    tally_query_release(&q);
    assert_int_equal(tally_query_parse_articles(&q, S("article=a&x=yyyyyyyy&article=bc"), &err),
                     0);
    assert_int_equal(q.mem_size, 2 * per + 2 + 3);
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "%sarticle=%d", i ? "&" : "", i % 10);
    assert_int_equal(tally_query_parse_articles(&q, many, n, &err), 0);
    assert_int_equal(q.n, 100);
    assert_int_equal(q.mem_size, 100 * per + 100 * 2);
    tally_query_release(&q);
    tally_query_release(&q); /* twice is fine */
}

/* ---- Reading HGETALL ---- */

static redisReply *reply_str(const char *s)
{
    return reply_text(REDIS_REPLY_STRING, s, strlen(s));
}

/* An array of the N strings in S (NULL entries become integers, to break the shape). */
static redisReply *reply_strings(const char *const *s, size_t n)
{
    redisReply *r = reply_array(n);

    for (size_t i = 0; i < n; i++)
        r->element[i] = s[i] != NULL ? reply_str(s[i]) : reply_int(1);
    return r;
}

static int query_read(const char *const *fields, size_t n, struct tally_stats *s)
{
    redisReply *r = reply_strings(fields, n);
    int rc;

    memset(s, 0, sizeof(*s));
    rc = tally_query_read_totals(r, s);
    freeReplyObject(r);
    return rc;
}

static void test_query_reads_totals_and_networks(void **state)
{
    static const char *const fields[] = {
        "views",         "7", "shares",      "6",  "share:twitter", "2",   "share:facebook", "1",
        "comments",      "4", "share:other", "1",  "share:myspace", "2",   "share:",         "1",
        "share:Twitter", "1", "visitors",    "99", "foo",           "bar", "share:copy",     "3",
        "engaged",       "95", "reads",      "2",  "words",         "1200",
    };
    struct tally_stats s;

    (void)state;
    assert_int_equal(query_read(fields, N_ELEMS(fields), &s), 0);
    assert_int_equal(s.views, 7);
    assert_int_equal(s.shares, 6);
    assert_int_equal(s.comments, 4);
    assert_int_equal(s.visitors, 99);
    assert_int_equal(s.engaged_seconds, 95);
    assert_int_equal(s.reads, 2);
    assert_int_equal(s.words, 1200);
    for (int k = 0; k < TALLY_NETWORKS; k++) {
        static const int64_t want[TALLY_NETWORKS] = {
            [TALLY_NETWORK_TWITTER] = 2,
            [TALLY_NETWORK_FACEBOOK] = 1,
            [TALLY_NETWORK_COPY] = 3,
            [TALLY_NETWORK_OTHER] = 1 + 2 + 1 + 1, /* other, myspace, "", Twitter */
        };

        assert_int_equal(s.by_network[k], want[k]);
    }
}

static void test_query_reads_an_empty_hash_as_zeros(void **state)
{
    struct tally_stats s, zero;

    (void)state;
    assert_int_equal(query_read(NULL, 0, &s), 0);
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&s, &zero, sizeof(s));
}

static void test_query_reads_large_counters(void **state)
{
    static const char *const fields[] = {"views", "9223372036854775807", "comments",
                                         "0",     "share:email",         "4294967296"};
    struct tally_stats s;

    (void)state;
    assert_int_equal(query_read(fields, N_ELEMS(fields), &s), 0);
    assert_int_equal(s.views, INT64_MAX);
    assert_int_equal(s.comments, 0);
    assert_int_equal(s.by_network[TALLY_NETWORK_EMAIL], 4294967296LL);
}

static void test_query_rejects_replies_of_another_shape(void **state)
{
    static const char *const odd[] = {"views", "7", "shares"};
    static const char *const int_value[] = {"views", NULL};
    static const char *const int_field[] = {NULL, "7"};
    static const int types[] = {REDIS_REPLY_INTEGER, REDIS_REPLY_NIL, REDIS_REPLY_STRING,
                                REDIS_REPLY_STATUS};
    struct tally_stats s;
    redisReply *r;

    (void)state;
    assert_int_equal(query_read(odd, N_ELEMS(odd), &s), TALLY_EREDIS);
    assert_int_equal(query_read(odd, 1, &s), TALLY_EREDIS);
    assert_int_equal(query_read(int_value, 2, &s), TALLY_EREDIS);
    assert_int_equal(query_read(int_field, 2, &s), TALLY_EREDIS);
    for (size_t i = 0; i < N_ELEMS(types); i++) {
        r = types[i] == REDIS_REPLY_STRING || types[i] == REDIS_REPLY_STATUS ? reply_str("OK")
                                                                             : reply_new(types[i]);
        r->type = types[i];
        assert_int_equal(tally_query_read_totals(r, &s), TALLY_EREDIS);
        freeReplyObject(r);
    }
    r = reply_str("WRONGTYPE Operation against a key holding the wrong kind of value");
    r->type = REDIS_REPLY_ERROR;
    assert_int_equal(tally_query_read_totals(r, &s), TALLY_EREDIS);
    freeReplyObject(r);
}

/* ---- Rendering ---- */

static void test_query_renders_zeros(void **state)
{
    struct tally_stats s;
    struct tally_buf b;

    (void)state;
    memset(&s, 0, sizeof(s));
    tally_buf_init(&b);
    tally_query_render_one(&b, S("news/2025/kim-missiles"), &s);
    expect_buf(&b, "{\"article\":\"news/2025/kim-missiles\",\"views\":0,\"visitors\":0,"
                          "\"shares\":0,\"shares_by_network\":{},\"comments\":0,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0}");
    tally_buf_release(&b);
}

static void test_query_renders_only_networks_with_shares_in_contract_order(void **state)
{
    struct tally_stats s;
    struct tally_buf b;

    (void)state;
    memset(&s, 0, sizeof(s));
    s.views = 7;
    s.visitors = 5;
    s.shares = 6;
    s.comments = 12;
    s.engaged_seconds = 950;
    s.reads = 3;
    s.words = 1200;
    s.by_network[TALLY_NETWORK_OTHER] = 1;
    s.by_network[TALLY_NETWORK_NATIVE] = 3;
    s.by_network[TALLY_NETWORK_FACEBOOK] = 2;
    tally_buf_init(&b);
    tally_query_render_one(&b, S("a"), &s);
    expect_buf(&b, "{\"article\":\"a\",\"views\":7,\"visitors\":5,\"shares\":6,"
                          "\"shares_by_network\":{\"facebook\":2,\"native\":3,\"other\":1},"
                          "\"comments\":12,"
                          "\"engaged_seconds\":950,\"reads\":3,\"words\":1200}");
    for (int k = 0; k < TALLY_NETWORKS; k++)
        s.by_network[k] = k + 1;
    tally_buf_reset(&b);
    tally_query_render_one(&b, S("a"), &s);
    expect_buf(&b, "{\"article\":\"a\",\"views\":7,\"visitors\":5,\"shares\":6,"
                          "\"shares_by_network\":{\"facebook\":1,\"twitter\":2,\"linkedin\":3,"
                          "\"reddit\":4,\"whatsapp\":5,\"telegram\":6,\"email\":7,\"copy\":8,"
                          "\"native\":9,\"other\":10},\"comments\":12,"
                          "\"engaged_seconds\":950,\"reads\":3,\"words\":1200}");
    memset(s.by_network, 0, sizeof(s.by_network));
    s.by_network[TALLY_NETWORK_TWITTER] = INT64_MAX;
    tally_buf_reset(&b);
    tally_query_render_one(&b, S("a"), &s);
    expect_buf(&b, "{\"article\":\"a\",\"views\":7,\"visitors\":5,\"shares\":6,"
                          "\"shares_by_network\":{\"twitter\":9223372036854775807},"
                          "\"comments\":12,"
                          "\"engaged_seconds\":950,\"reads\":3,\"words\":1200}");
    tally_buf_release(&b);
}

static void test_query_renders_ids_as_json_strings(void **state)
{
    struct tally_stats s;
    struct tally_buf b;

    (void)state;
    memset(&s, 0, sizeof(s));
    tally_buf_init(&b);
    tally_query_render_one(&b, S("a\"b\\c/caf\xc3\xa9"), &s);
    expect_buf(&b, "{\"article\":\"a\\\"b\\\\c/caf\xc3\xa9\",\"views\":0,\"visitors\":0,"
                          "\"shares\":0,\"shares_by_network\":{},\"comments\":0,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0}");
    tally_buf_release(&b);
}

static void test_query_renders_many_in_request_order(void **state)
{
    struct tally_query *q = &query_q;
    struct tally_error err;
    struct tally_buf b;

    (void)state;
    assert_int_equal(tally_query_parse_articles(q, S("article=b&article=a%2Fx&article=b"), &err),
                     0);
    memset(q->stats, 0, sizeof(q->stats[0]) * q->n);
    q->stats[0].views = 3;
    q->stats[1].visitors = 1;
    q->stats[1].shares = 1;
    q->stats[1].by_network[TALLY_NETWORK_EMAIL] = 1;
    q->stats[2].comments = 2;
    tally_buf_init(&b);
    tally_query_render_many(&b, q);
    expect_buf(&b, "{\"articles\":["
                          "{\"article\":\"b\",\"views\":3,\"visitors\":0,\"shares\":0,"
                          "\"shares_by_network\":{},\"comments\":0,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0},"
                          "{\"article\":\"a/x\",\"views\":0,\"visitors\":1,\"shares\":1,"
                          "\"shares_by_network\":{\"email\":1},\"comments\":0,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0},"
                          "{\"article\":\"b\",\"views\":0,\"visitors\":0,\"shares\":0,"
                          "\"shares_by_network\":{},\"comments\":2,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0}]}");
    tally_buf_reset(&b);
    assert_int_equal(tally_query_parse_articles(q, S("article=z"), &err), 0);
    memset(q->stats, 0, sizeof(q->stats[0]));
    tally_query_render_many(&b, q);
    expect_buf(&b, "{\"articles\":[{\"article\":\"z\",\"views\":0,\"visitors\":0,"
                          "\"shares\":0,\"shares_by_network\":{},\"comments\":0,"
                          "\"engaged_seconds\":0,\"reads\":0,\"words\":0}]}");
    tally_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_parses_articles_in_order),
        cmocka_unit_test(test_query_rejects_bad_article_lists),
        cmocka_unit_test(test_query_takes_one_to_a_hundred_articles),
        cmocka_unit_test(test_query_takes_the_longest_ids),
        cmocka_unit_test(test_query_takes_a_batch_articles_once_each),
        cmocka_unit_test(test_query_parses_a_path_article),
        cmocka_unit_test(test_query_rejects_bad_path_articles),
        cmocka_unit_test(test_query_room_is_sized_to_the_request),
        cmocka_unit_test(test_query_reads_totals_and_networks),
        cmocka_unit_test(test_query_reads_an_empty_hash_as_zeros),
        cmocka_unit_test(test_query_reads_large_counters),
        cmocka_unit_test(test_query_rejects_replies_of_another_shape),
        cmocka_unit_test(test_query_renders_zeros),
        cmocka_unit_test(test_query_renders_only_networks_with_shares_in_contract_order),
        cmocka_unit_test(test_query_renders_ids_as_json_strings),
        cmocka_unit_test(test_query_renders_many_in_request_order),
    };

    return cmocka_run_group_tests_name("query", tests, NULL, NULL);
}
