/* test_ingest.c -- POST bodies and pixel query strings in, validated batches or errors out. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tally/error.h"
#include "tally/ingest.h"
#include "unit.h"

/* Bodies of one event; ART and REST are spliced in as JSON text. */
#define VIEW(art) "{\"type\":\"view\",\"article\":\"" art "\"}"
#define EVENT(type, art, rest) "{\"type\":\"" type "\",\"article\":\"" art "\"" rest "}"

/* A batch is about 28 KiB: one for the whole run, as a worker would keep it. */
static struct tally_batch batch;

struct bad_case {
    const char *body;
    size_t len;
    const char *code;
    const char *where; /* the start of the message */
};

/* Every message: short, lower case, no full stop. */
static void check_message_style(const struct tally_error *err)
{
    size_t n = strlen(err->message);

    assert_true(n > 0 && n < 150);
    assert_true(islower((unsigned char)err->message[0]));
    assert_true(err->message[n - 1] != '.');
}

static void check_rejected(int rc, const struct tally_error *err, const char *input, size_t len,
                           const char *code, const char *where)
{
    if (rc != TALLY_EINVAL || err->code == NULL || strcmp(err->code, code) != 0 ||
        strncmp(err->message, where, strlen(where)) != 0) {
        print_error("input '%.*s' (%zu bytes): got rc %d, %s '%s'; want %s '%s...'\n",
                    len > 200 ? 200 : (int)len, input, len, rc, err->code ? err->code : "-",
                    err->message, code, where);
        fail();
    }
    check_message_style(err);
}

static void expect_bad_body(const char *body, size_t len, const char *code, const char *where)
{
    struct tally_error err = {0};
    int rc = tally_ingest_parse(body, len, &batch, &err);

    check_rejected(rc, &err, body, len, code, where);
}

static void expect_bad_query(const char *query, size_t len, const char *code, const char *where)
{
    struct tally_error err = {0};
    int rc = tally_ingest_parse_query(query, len, &batch, &err);

    check_rejected(rc, &err, query, len, code, where);
}

static void expect_parsed(const char *body, size_t len, size_t n)
{
    struct tally_error err = {0};
    int rc = tally_ingest_parse(body, len, &batch, &err);

    if (rc != 0 || batch.n != n) {
        print_error("body '%.*s': got rc %d (%s '%s'), %zu events; want %zu\n",
                    len > 200 ? 200 : (int)len, body, rc, err.code ? err.code : "-", err.message,
                    rc == 0 ? batch.n : 0, n);
        fail();
    }
}

static void check_event(const struct tally_event *ev, enum tally_event_type type,
                        const char *article, size_t article_len, enum tally_network net, int delta)
{
    assert_int_equal(ev->type, type);
    assert_int_equal(ev->article_len, article_len);
    assert_memory_equal(ev->article, article, article_len);
    assert_int_equal(ev->article[article_len], '\0');
    assert_int_equal(ev->network, net);
    assert_int_equal(ev->delta, delta);
}

/* ---- Valid bodies ---- */

struct good_case {
    const char *body;
    size_t len;
    enum tally_event_type type;
    const char *article;
    enum tally_network net;
    int delta;
};

static void test_ingest_accepts_single_events_of_every_shape(void **state)
{
    static const struct good_case cases[] = {
        {S(VIEW("news/2025/kim-missiles")), TALLY_EVENT_VIEW, "news/2025/kim-missiles",
         TALLY_NETWORK_OTHER, 1},
        {S("{\"article\":\"a\",\"type\":\"view\"}"), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S(" \r\n\t" VIEW("a") "\r\n "), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S("[" VIEW("a") "]"), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("share", "a", ",\"network\":\"twitter\"")), TALLY_EVENT_SHARE, "a",
         TALLY_NETWORK_TWITTER, 1},
        {S(EVENT("share", "a", "")), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("share", "a", ",\"network\":\"myspace\"")), TALLY_EVENT_SHARE, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("share", "a", ",\"network\":\"Twitter\"")), TALLY_EVENT_SHARE, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("share", "a", ",\"network\":7")), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("share", "a", ",\"network\":null")), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER,
         1},
        {S(EVENT("share", "a", ",\"delta\":1.5")), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("view", "a", ",\"network\":\"email\",\"delta\":0")), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("comment", "a", "")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("comment", "a", ",\"delta\":1")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1},
        {S(EVENT("comment", "a", ",\"delta\":-1")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         -1},
        {S(EVENT("comment", "a", ",\"delta\":1000")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1000},
        {S(EVENT("comment", "a", ",\"delta\":-1000")), TALLY_EVENT_COMMENT, "a",
         TALLY_NETWORK_OTHER, -1000},
        {S(EVENT("comment", "a", ",\"delta\":1.0")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1},
        {S(EVENT("comment", "a", ",\"delta\":-2.5e1")), TALLY_EVENT_COMMENT, "a",
         TALLY_NETWORK_OTHER, -25},
        {S(EVENT("comment", "a", ",\"network\":\"reddit\"")), TALLY_EVENT_COMMENT, "a",
         TALLY_NETWORK_OTHER, 1},
        /* unknown members, nested up to the depth cap of 8 (object + 7 arrays) */
        {S(EVENT("view", "a", ",\"ref\":\"x\",\"TYPE\":\"share\",\"n\":[1,-2.5e-3,true,null]")),
         TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("view", "a", ",\"x\":{\"y\":{\"z\":[{}]}}")), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("view", "a", ",\"x\":[[[[[[[1]]]]]]]")), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        {S("[" EVENT("view", "a", ",\"x\":[[[[[[1]]]]]]") "]"), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        /* an escaped backslash followed by "u0000" is text, not a NUL */
        {S(EVENT("view", "a", ",\"x\":\"\\\\u0000\"")), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER,
         1},
        {S(VIEW("a\\\\u0000b")), TALLY_EVENT_VIEW, "a\\u0000b", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("view", "a", ",\"\\\\u0000\":1")), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        /* escapes in the id are decoded; raw and escaped UTF-8 alike */
        {S(VIEW("news\\/2025")), TALLY_EVENT_VIEW, "news/2025", TALLY_NETWORK_OTHER, 1},
        {S(VIEW("caf\\u00e9")), TALLY_EVENT_VIEW, "caf\xC3\xA9", TALLY_NETWORK_OTHER, 1},
        {S(VIEW("\xE6\x97\xA5\xE6\x9C\xAC")), TALLY_EVENT_VIEW, "\xE6\x97\xA5\xE6\x9C\xAC",
         TALLY_NETWORK_OTHER, 1},
        {S(VIEW("\\ud83d\\ude00")), TALLY_EVENT_VIEW, "\xF0\x9F\x98\x80", TALLY_NETWORK_OTHER, 1},
        {S(VIEW("a\\\"b")), TALLY_EVENT_VIEW, "a\"b", TALLY_NETWORK_OTHER, 1},
        {S(VIEW("\xE2\x80\x8B")), TALLY_EVENT_VIEW, "\xE2\x80\x8B", TALLY_NETWORK_OTHER, 1},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const struct good_case *c = &cases[i];

        expect_parsed(c->body, c->len, 1);
        check_event(&batch.ev[0], c->type, c->article, strlen(c->article), c->net, c->delta);
        assert_int_equal(batch.text_len, strlen(c->article) + 1);
    }
}

static void test_ingest_maps_every_network(void **state)
{
    char body[128];

    (void)state;
    for (int i = 0; i < TALLY_NETWORKS; i++) {
        const char *name = tally_network_name((enum tally_network)i);
        int n = snprintf(body, sizeof(body), EVENT("share", "a", ",\"network\":\"%s\""), name);

        expect_parsed(body, (size_t)n, 1);
        check_event(&batch.ev[0], TALLY_EVENT_SHARE, "a", 1, (enum tally_network)i, 1);
    }
}

/* Appends COUNT events with ids of ID_LEN bytes ("0000...", "0001...") to BODY as an array. */
static size_t build_batch(char *body, size_t cap, int count, size_t id_len)
{
    size_t len = 0;
    char id[TALLY_ARTICLE_MAX + 16];

    body[len++] = '[';
    for (int i = 0; i < count; i++) {
        int n;

        memset(id, 'x', id_len);
        snprintf(id, sizeof(id), "%04d", i);
        if (id_len > 4)
            id[4] = 'x';
        id[id_len] = '\0';
        n = snprintf(body + len, cap - len, "%s{\"type\":\"view\",\"article\":\"%s\"}",
                     i > 0 ? "," : "", id);
        assert_true(n > 0 && (size_t)n < cap - len);
        len += (size_t)n;
    }
    body[len++] = ']';
    return len;
}

static void test_ingest_accepts_arrays_of_1_to_100_events(void **state)
{
    static char body[TALLY_BODY_MAX];
    static const int counts[] = {1, 2, 99, 100};

    (void)state;
    for (size_t c = 0; c < N_ELEMS(counts); c++) {
        size_t len = build_batch(body, sizeof(body), counts[c], 8);
        char want[16];

        expect_parsed(body, len, (size_t)counts[c]);
        for (int i = 0; i < counts[c]; i++) {
            snprintf(want, sizeof(want), "%04dxxxx", i);
            check_event(&batch.ev[i], TALLY_EVENT_VIEW, want, 8, TALLY_NETWORK_OTHER, 1);
        }
        assert_int_equal(batch.text_len, (size_t)counts[c] * 9);
    }
}

/* 100 ids of 256 bytes fill the batch's text to the last byte. */
static void test_ingest_accepts_100_events_with_256_byte_ids(void **state)
{
    static char body[TALLY_BODY_MAX];
    size_t len;

    (void)state;
    len = build_batch(body, sizeof(body), TALLY_BATCH_MAX, TALLY_ARTICLE_MAX);
    expect_parsed(body, len, TALLY_BATCH_MAX);
    assert_int_equal(batch.text_len, sizeof(batch.text));
    assert_int_equal(batch.ev[99].article_len, TALLY_ARTICLE_MAX);
    assert_memory_equal(batch.ev[99].article, "0099xxxx", 8);
}

/* Fills BUF with REPS copies of UNIT and returns the length. */
static size_t repeat(char *buf, const char *unit, size_t reps)
{
    size_t u = strlen(unit);

    for (size_t i = 0; i < reps; i++)
        memcpy(buf + i * u, unit, u);
    buf[reps * u] = '\0';
    return reps * u;
}

static void test_ingest_takes_ids_of_exactly_256_bytes(void **state)
{
    static const struct {
        const char *unit, *tail;
        size_t reps;
    } ids[] = {
        {"a", "", 256},
        {"\xC3\xA9", "", 128},        /* 2-byte sequences */
        {"\xE2\x82\xAC", "a", 85},    /* 3-byte, topped up with ASCII */
        {"\xF0\x9F\x98\x80", "", 64}, /* 4-byte */
    };
    char id[512], body[1024];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(ids); i++) {
        size_t len = repeat(id, ids[i].unit, ids[i].reps);
        int n;

        strcat(id, ids[i].tail);
        len += strlen(ids[i].tail);
        assert_int_equal(len, TALLY_ARTICLE_MAX);
        n = snprintf(body, sizeof(body), VIEW("%s"), id);
        expect_parsed(body, (size_t)n, 1);
        check_event(&batch.ev[0], TALLY_EVENT_VIEW, id, len, TALLY_NETWORK_OTHER, 1);

        /* one byte more is one too many */
        n = snprintf(body, sizeof(body), VIEW("%sb"), id);
        expect_bad_body(body, (size_t)n, "invalid_article", "article: 1-256 bytes");
        n = snprintf(body, sizeof(body), "[" VIEW("a") "," VIEW("%sb") "]", id);
        expect_bad_body(body, (size_t)n, "invalid_article", "events[1].article: 1-256 bytes");
    }
}

static void test_ingest_reuses_a_batch_between_calls(void **state)
{
    (void)state;
    expect_parsed(S("[" VIEW("first") "," VIEW("second") "]"), 2);
    expect_parsed(S(VIEW("third")), 1);
    check_event(&batch.ev[0], TALLY_EVENT_VIEW, "third", 5, TALLY_NETWORK_OTHER, 1);
    assert_int_equal(batch.text_len, 6);
}

/* ---- Hostile bodies ---- */

static void run_bad_bodies(const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect_bad_body(cases[i].body, cases[i].len, cases[i].code, cases[i].where);
}

static void test_ingest_rejects_bodies_that_hold_no_event(void **state)
{
    static const struct bad_case cases[] = {
        {S(""), "malformed_json", "body: empty"},
        {S(" \t\r\n"), "malformed_json", "body: empty"},
        {S("[]"), "empty_batch", "body:"},
        {S(" [ \n ] "), "empty_batch", "body:"},
        {S("null"), "invalid_event", "body:"},
        {S("1"), "invalid_event", "body:"},
        {S("\"view\""), "invalid_event", "body:"},
        {S("true"), "invalid_event", "body:"},
        {S("[1]"), "invalid_event", "events[0]: must be an object"},
        {S("[" VIEW("a") ",\"x\"]"), "invalid_event", "events[1]: must be an object"},
        {S("[" VIEW("a") ",[" VIEW("b") "]]"), "invalid_event", "events[1]:"},
        {S("[" VIEW("a") ",null]"), "invalid_event", "events[1]:"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_malformed_json(void **state)
{
    static const struct bad_case cases[] = {
        {S(VIEW("a") "x"), "malformed_json", "body: trailing"},
        {S(VIEW("a") VIEW("b")), "malformed_json", "body:"},
        {S(VIEW("a") "," VIEW("b")), "malformed_json", "body:"},
        {S(VIEW("a") "]"), "malformed_json", "body:"},
        {S("[" VIEW("a") ","), "malformed_json", "body:"},
        {S("[" VIEW("a") ",]"), "malformed_json", "body:"},
        {S("{\"type\":\"view\",\"article\":\"a\",}"), "malformed_json", "body:"},
        {S("{\"type\":\"view\",\"article\":\"a\""), "malformed_json", "body:"},
        {S("{\"type\":\"view\",\"article\":\"a}"), "malformed_json", "body: unterminated"},
        {S("{\"type\":\"view\",\"article\":\"a\"]"), "malformed_json", "body:"},
        {S("{'type':'view','article':'a'}"), "malformed_json", "body:"},
        {S("{type:\"view\",article:\"a\"}"), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":NaN")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":nul")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":\"\\x\"")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":\"\\ud800\"")), "malformed_json", "body:"},
        /* numbers a strtod() reader would take */
        {S(EVENT("comment", "a", ",\"delta\":01")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":1.")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":1.e1")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":-")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":1e")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":1-2")), "malformed_json", "body: malformed number"},
        {S(EVENT("comment", "a", ",\"delta\":+1")), "malformed_json", "body:"},
        {S(EVENT("comment", "a", ",\"delta\":.5")), "malformed_json", "body:"},
        /* a byte-order mark is refused, though many parsers skip it */
        {S("\xEF\xBB\xBF" VIEW("a")), "malformed_json", "body: byte-order mark"},
        {S(" \xEF\xBB\xBF" VIEW("a")), "malformed_json", "body:"},
        /* control characters: only space, tab, CR and LF are JSON whitespace */
        {S("\x01" VIEW("a")), "malformed_json", "body: control character"},
        {S("{\"type\":\"view\",\x0b\"article\":\"a\"}"), "malformed_json", "body: control"},
        {S(VIEW("a\tb")), "malformed_json", "body: control character in a string"},
        {S(VIEW("a\nb")), "malformed_json", "body: control character in a string"},
        {S(VIEW("a\x1f")), "malformed_json", "body: control character in a string"},
        /* nesting: 9 levels is one too many */
        {S(EVENT("view", "a", ",\"x\":[[[[[[[[1]]]]]]]]")), "malformed_json", "body: nested"},
        {S("[" EVENT("view", "a", ",\"x\":[[[[[[[1]]]]]]]") "]"), "malformed_json",
         "body: nested deeper than 8"},
        {S("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["), "malformed_json", "body:"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_nul_in_any_form(void **state)
{
    static const struct bad_case cases[] = {
        {S(VIEW("a\0b")), "malformed_json", "body: NUL byte"},
        {S(VIEW("a") "\0"), "malformed_json", "body: NUL byte"},
        {S("\0" VIEW("a")), "malformed_json", "body: NUL byte"},
        {S("{\"type\":\"view\",\0\"article\":\"a\"}"), "malformed_json", "body: NUL byte"},
        {S(VIEW("a\\\0")), "malformed_json", "body: NUL byte"},
        {S(VIEW("a\\u0000b")), "malformed_json", "body: \\u0000"},
        {S(VIEW("\\u0000")), "malformed_json", "body: \\u0000"},
        {S(VIEW("\\U0000")), "malformed_json", "body:"}, /* not JSON at all */
        {S(EVENT("view", "a", ",\"x\":\"\\u0000\"")), "malformed_json", "body: \\u0000"},
        {S(EVENT("view", "a", ",\"x\":[\"ok\",\"\\u0000\"]")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"\\u0000\":1")), "malformed_json", "body: \\u0000"},
        {S("{\"type\\u0000\":\"view\",\"article\":\"a\"}"), "malformed_json", "body: \\u0000"},
        /* an odd number of backslashes: an escaped backslash, then a real \u0000 */
        {S(VIEW("a\\\\\\u0000")), "malformed_json", "body: \\u0000"},
        {S(EVENT("view", "a", ",\"x\":\"\\\\\\u0000\"")), "malformed_json", "body: \\u0000"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_invalid_utf8_anywhere(void **state)
{
    static const struct bad_case cases[] = {
        {S(VIEW("\xC0\xAF")), "malformed_json", "body: invalid UTF-8"},         /* overlong / */
        {S(VIEW("\xC1\xBF")), "malformed_json", "body: invalid UTF-8"},         /* overlong */
        {S(VIEW("\xE0\x80\xAF")), "malformed_json", "body: invalid UTF-8"},     /* overlong / */
        {S(VIEW("\xF0\x8F\xBF\xBF")), "malformed_json", "body: invalid UTF-8"}, /* overlong */
        {S(VIEW("\xED\xA0\x80")), "malformed_json", "body: invalid UTF-8"},     /* surrogate */
        {S(VIEW("\xED\xBF\xBF")), "malformed_json", "body: invalid UTF-8"},     /* surrogate */
        {S(VIEW("\xF4\x90\x80\x80")), "malformed_json", "body: invalid UTF-8"}, /* > U+10FFFF */
        {S(VIEW("\xF5\x80\x80\x80")), "malformed_json", "body: invalid UTF-8"},
        {S(VIEW("\xFF\xFE")), "malformed_json", "body: invalid UTF-8"},
        {S(VIEW("\x80")), "malformed_json", "body: invalid UTF-8"},     /* lone tail */
        {S(VIEW("\xC3\x28")), "malformed_json", "body: invalid UTF-8"}, /* bad tail */
        {S(VIEW("\xE2\x28\xA1")), "malformed_json", "body: invalid UTF-8"},
        {S(VIEW("\xE2\x82")), "malformed_json", "body: invalid UTF-8"}, /* truncated */
        {S(EVENT("view", "a", ",\"x\":\"\xC0\xAF\"")), "malformed_json", "body: invalid UTF-8"},
        {S(EVENT("view", "a", ",\"\xFF\":1")), "malformed_json", "body: invalid UTF-8"},
        {S("{\"type\":\"view\",\"article\":\"a\xE2\x82"), "malformed_json", "body: invalid"},
        {S("{\"type\":\"view\",\"article\":\"a\xF0\x9F\x98"), "malformed_json", "body: invalid"},
        {S(VIEW("a") "\xE2\x82"), "malformed_json", "body:"},
        {S(VIEW("a") "\xC3\xA9"), "malformed_json", "body:"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_bad_article_ids(void **state)
{
    static const struct bad_case cases[] = {
        {S("{\"type\":\"view\"}"), "invalid_article", "article: missing"},
        {S(VIEW("")), "invalid_article", "article: 1-256 bytes"},
        {S("{\"type\":\"view\",\"article\":7}"), "invalid_article", "article:"},
        {S("{\"type\":\"view\",\"article\":null}"), "invalid_article", "article:"},
        {S("{\"type\":\"view\",\"article\":[\"a\"]}"), "invalid_article", "article:"},
        {S("{\"type\":\"view\",\"article\":{}}"), "invalid_article", "article:"},
        {S("{\"type\":\"view\",\"article\":true}"), "invalid_article", "article:"},
        {S("{\"type\":\"view\",\"Article\":\"a\"}"), "invalid_article", "article: missing"},
        {S(VIEW("a b")), "invalid_article", "article:"},
        {S(VIEW(" a")), "invalid_article", "article:"},
        {S(VIEW("a\\tb")), "invalid_article", "article:"},
        {S(VIEW("a\\nb")), "invalid_article", "article:"},
        {S(VIEW("a\\rb")), "invalid_article", "article:"},
        {S(VIEW("a\\u000bb")), "invalid_article", "article:"},
        {S(VIEW("a\\fb")), "invalid_article", "article:"},
        {S(VIEW("a\\u0001")), "invalid_article", "article:"},
        {S(VIEW("a\\u001f")), "invalid_article", "article:"},
        {S(VIEW("a\x7f")), "invalid_article", "article:"}, /* DEL */
        {S(VIEW("a\\u007f")), "invalid_article", "article:"},
        {S(VIEW("a\xC2\x80")), "invalid_article", "article:"}, /* C1 controls */
        {S(VIEW("a\xC2\x9F")), "invalid_article", "article:"},
        {S(VIEW("a\xC2\x85"
                "b")),
         "invalid_article", "article:"}, /* NEL */
        {S(VIEW("a\\u0085")), "invalid_article", "article:"},
        {S(VIEW("a\xC2\xA0"
                "b")),
         "invalid_article", "article:"}, /* NBSP */
        {S(VIEW("a\\u00a0")), "invalid_article", "article:"},
        {S(VIEW("a\xE1\x9A\x80")), "invalid_article", "article:"}, /* U+1680 */
        {S(VIEW("a\xE2\x80\x80")), "invalid_article", "article:"}, /* U+2000 */
        {S(VIEW("a\xE2\x80\x8A")), "invalid_article", "article:"}, /* U+200A */
        {S(VIEW("a\xE2\x80\xA8")), "invalid_article", "article:"}, /* U+2028 */
        {S(VIEW("a\\u2029")), "invalid_article", "article:"},      /* U+2029 */
        {S(VIEW("a\xE2\x80\xAF")), "invalid_article", "article:"}, /* U+202F */
        {S(VIEW("a\xE2\x81\x9F")), "invalid_article", "article:"}, /* U+205F */
        {S(VIEW("a\xE3\x80\x80")), "invalid_article", "article:"}, /* U+3000 */
        {S("[" VIEW("a") "," VIEW("b") "," VIEW("c d") "]"), "invalid_article",
         "events[2].article: 1-256 bytes of UTF-8, no whitespace or control characters"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_bad_types(void **state)
{
    static const struct bad_case cases[] = {
        {S("{\"article\":\"a\"}"), "invalid_type", "type: missing"},
        {S("{\"TYPE\":\"view\",\"article\":\"a\"}"), "invalid_type", "type: missing"},
        {S("{\"Type\":\"view\",\"article\":\"a\"}"), "invalid_type", "type: missing"},
        {S(EVENT("View", "a", "")), "invalid_type", "type: must be view, share, comment or engage"},
        {S(EVENT("VIEW", "a", "")), "invalid_type", "type:"},
        {S(EVENT("view ", "a", "")), "invalid_type", "type:"},
        {S(EVENT("like", "a", "")), "invalid_type", "type:"},
        {S(EVENT("", "a", "")), "invalid_type", "type:"},
        {S("{\"type\":1,\"article\":\"a\"}"), "invalid_type", "type:"},
        {S("{\"type\":null,\"article\":\"a\"}"), "invalid_type", "type:"},
        {S("{\"type\":[\"view\"],\"article\":\"a\"}"), "invalid_type", "type:"},
        {S("{\"type\":{},\"article\":\"a\"}"), "invalid_type", "type:"},
        {S("{\"type\":true,\"article\":\"a\"}"), "invalid_type", "type:"},
        {S("[" VIEW("a") ",{\"type\":\"click\",\"article\":\"a\"}]"), "invalid_type",
         "events[1].type: must be view, share, comment or engage"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_bad_comment_deltas(void **state)
{
    static const struct bad_case cases[] = {
        {S(EVENT("comment", "a", ",\"delta\":0")), "invalid_delta", "delta: must be an integer"},
        {S(EVENT("comment", "a", ",\"delta\":-0")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":0.0")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1001")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":-1001")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1000.5")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1.5")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":-0.5")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1e300")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":-1e300")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1e400")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":4294967297")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":\"1\"")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":null")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":true")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":[1]")), "invalid_delta", "delta:"},
        {S("[" VIEW("a") "," EVENT("comment", "a", ",\"delta\":2.5") "]"), "invalid_delta",
         "events[1].delta: must be an integer from -1000 to 1000, not 0"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_rejects_duplicate_member_names(void **state)
{
    static const struct bad_case cases[] = {
        {S("{\"type\":\"view\",\"type\":\"comment\",\"article\":\"a\"}"), "duplicate_key",
         "type: given more than once"},
        {S("{\"type\":\"view\",\"article\":\"a\",\"article\":\"b\"}"), "duplicate_key", "article:"},
        {S(EVENT("comment", "a", ",\"delta\":1,\"delta\":-1")), "duplicate_key", "delta:"},
        {S(EVENT("share", "a", ",\"network\":\"x\",\"network\":\"y\"")), "duplicate_key",
         "network:"},
        {S(EVENT("view", "a", ",\"x\":1,\"x\":1")), "duplicate_key", "body: duplicate member"},
        {S(EVENT("view", "a", ",\"x\":{\"y\":1,\"y\":2}")), "duplicate_key", "body:"},
        {S(EVENT("view", "a", ",\"x\":[{\"type\":1,\"type\":1}]")), "duplicate_key", "body:"},
        /* escapes do not hide a duplicate */
        {S(EVENT("view", "a", ",\"\\u0074ype\":\"share\"")), "duplicate_key", "type:"},
        {S("[" VIEW("a") ",{\"type\":\"view\",\"article\":\"a\",\"type\":\"view\"}]"),
         "duplicate_key", "events[1].type: given more than once"},
        {S("[" VIEW("a") "," EVENT("view", "a", ",\"q\":2,\"q\":3") "]"), "duplicate_key",
         "events[1]: duplicate member name"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

/* Builds an event with extra members "m0".."m<N-1>", nested in "x" when NESTED. */
static size_t build_members(char *body, size_t cap, int n, bool nested)
{
    size_t len = (size_t)snprintf(body, cap, "{\"type\":\"view\",\"article\":\"a\"%s",
                                  nested ? ",\"x\":{\"z\":0" : "");

    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, cap - len, ",\"m%d\":%d", i, i);
    len += (size_t)snprintf(body + len, cap - len, "%s", nested ? "}}" : "}");
    assert_true(len < cap);
    return len;
}

static void test_ingest_caps_members_of_every_object_at_32(void **state)
{
    char body[1024];
    size_t len;

    (void)state;
    len = build_members(body, sizeof(body), TALLY_EVENT_FIELDS_MAX - 2, false);
    expect_parsed(body, len, 1);
    len = build_members(body, sizeof(body), TALLY_EVENT_FIELDS_MAX - 1, false);
    expect_bad_body(body, len, "invalid_event", "body: an object with more than 32 members");
    len = build_members(body, sizeof(body), TALLY_EVENT_FIELDS_MAX - 1, true);
    expect_parsed(body, len, 1);
    len = build_members(body, sizeof(body), TALLY_EVENT_FIELDS_MAX, true);
    expect_bad_body(body, len, "invalid_event", "body: an object with more than 32 members");

    memcpy(body, "[{},", 4);
    len = 4 + build_members(body + 4, sizeof(body) - 4, TALLY_EVENT_FIELDS_MAX, true);
    body[len++] = ']';
    expect_bad_body(body, len, "invalid_event", "events[1]: an object with more than 32");
}

static void test_ingest_rejects_more_than_100_events(void **state)
{
    static char body[TALLY_BODY_MAX];
    size_t len;

    (void)state;
    len = build_batch(body, sizeof(body), TALLY_BATCH_MAX + 1, 8);
    expect_bad_body(body, len, "batch_too_large", "body: more than 100 events");

    /* the scanner answers when element 101 starts, before it reads what follows */
    len = build_batch(body, sizeof(body), TALLY_BATCH_MAX, 8);
    memcpy(body + len - 1, ",garbage", 8);
    expect_bad_body(body, len + 7, "batch_too_large", "body:");
}

/* The 64 KiB worst cases from the notes end where a limit is crossed: the codes prove it, as
 * reading on would have produced "invalid_event" at events[0] and "duplicate_key". */
static void test_ingest_refuses_huge_bodies_before_parsing(void **state)
{
    static char body[TALLY_BODY_MAX + 1];
    size_t len;
    clock_t start = clock();

    (void)state;
    body[0] = '[';
    len = 1 + repeat(body + 1, "1,", (TALLY_BODY_MAX - 2) / 2);
    body[len - 1] = ']';
    expect_bad_body(body, len, "batch_too_large", "body: more than 100 events");

    body[0] = '{';
    len = 1 + repeat(body + 1, "\"a\":1,", (TALLY_BODY_MAX - 2) / 6);
    body[len - 1] = '}';
    expect_bad_body(body, len, "invalid_event", "body: an object with more than 32");

    body[0] = '[';
    len = 1 + repeat(body + 1, "{},", (TALLY_BODY_MAX - 2) / 3);
    body[len - 1] = ']';
    expect_bad_body(body, len, "batch_too_large", "body:");

    memset(body, '[', TALLY_BODY_MAX);
    expect_bad_body(body, TALLY_BODY_MAX, "malformed_json", "body: nested deeper than 8");

    memset(body, ' ', TALLY_BODY_MAX + 1);
    expect_bad_body(body, TALLY_BODY_MAX + 1, "body_too_large", "body: over 65536 bytes");
    /* generous: each refusal above is a few microseconds */
    assert_true(clock() - start < CLOCKS_PER_SEC / 4);
}

static void test_ingest_reports_errors_in_a_stable_order(void **state)
{
    static const struct bad_case cases[] = {
        /* the first bad event wins, and within it: members, type, article, delta */
        {S("[" EVENT("like", "a b", "") "," EVENT("view", "", "") "]"), "invalid_type",
         "events[0].type:"},
        {S("[" VIEW("a") "," EVENT("comment", "", ",\"delta\":0") "]"), "invalid_article",
         "events[1].article:"},
        {S(EVENT("like", "a", ",\"x\":1,\"x\":2")), "duplicate_key", "body:"},
        /* byte-level problems are found before any field is looked at */
        {S("[" EVENT("like", "a", "") "," VIEW("\\u0000") "]"), "malformed_json", "body:"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

/* What the scanner reads by the letter of RFC 8259: escapes in names and values, surrogate
 * pairs only, numbers judged exactly, unknown members of any shape. */
static void test_ingest_reads_json_by_the_letter(void **state)
{
    static const struct good_case good[] = {
        /* escaped names are the names they spell */
        {S("{\"\\u0074ype\":\"view\",\"\\u0061rticle\":\"a\"}"), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("sh\\u0061re", "a", ",\"network\":\"tw\\u0069tter\"")), TALLY_EVENT_SHARE, "a",
         TALLY_NETWORK_TWITTER, 1},
        {S(VIEW("caf\\u00E9")), TALLY_EVENT_VIEW, "caf\xC3\xA9", TALLY_NETWORK_OTHER, 1},
        {S(VIEW("\\uD83D\\uDE00")), TALLY_EVENT_VIEW, "\xF0\x9F\x98\x80", TALLY_NETWORK_OTHER, 1},
        /* an integer is a value, however it is written */
        {S(EVENT("comment", "a", ",\"delta\":10e-1")), TALLY_EVENT_COMMENT, "a",
         TALLY_NETWORK_OTHER, 1},
        {S(EVENT("comment", "a", ",\"delta\":1E3")), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1000},
        {S(EVENT("comment", "a", ",\"delta\":-0.001e+6")), TALLY_EVENT_COMMENT, "a",
         TALLY_NETWORK_OTHER, -1000},
        {S(EVENT("comment", "a", ",\"delta\":7.000000000000000000000000000000")),
         TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 7},
        {S(EVENT("comment", "a", ",\"delta\":0.000000000000000000000000000000005e33")),
         TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 5},
        /* unknown members hold any JSON value */
        {S(EVENT("view", "a", ",\"x\":{\"type\":\"share\",\"article\":[],\"\":{}},\"y\":-0.0E-0,"
                 "\"z\":[\"\\ud800\\udc00\",false,null,{\"a\":{\"a\":1}}]")),
         TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S(EVENT("view", "a", ",\"x\":1e999999999999999999")), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
    };
    static const struct bad_case bad[] = {
        {S(EVENT("comment", "a", ",\"delta\":1000.0000000000000001")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1e999999999999999999")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":1e-999999999999999999")), "invalid_delta", "delta:"},
        {S(EVENT("comment", "a", ",\"delta\":0e5")), "invalid_delta", "delta:"},
        {S(VIEW("\\udc00")), "malformed_json", "body: unpaired surrogate"},
        {S(VIEW("\\ud800\\u0041")), "malformed_json", "body: unpaired surrogate"},
        {S(VIEW("\\ud800")), "malformed_json", "body: unpaired surrogate"},
        {S(VIEW("\\u12")), "malformed_json", "body: malformed escape"},
        {S(VIEW("\\u12G4")), "malformed_json", "body: malformed escape"},
        {S(EVENT("view", "a", ",\"x\":tru")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":truex")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":[1,]")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":{\"a\"}")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":{\"a\":1,}")), "malformed_json", "body:"},
        {S(EVENT("view", "a", ",\"x\":[1 2]")), "malformed_json", "body:"},
        /* an escaped name equal to another is a duplicate, nested too */
        {S(EVENT("view", "a", ",\"x\":{\"\\u00e9\":1,\"\xC3\xA9\":2}")), "duplicate_key",
         "body: duplicate member name"},
        /* a later syntax error beats an earlier bad event */
        {S("[{\"type\":\"like\",\"article\":\"a\"},{]"), "malformed_json", "body:"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(good); i++) {
        const struct good_case *c = &good[i];

        expect_parsed(c->body, c->len, 1);
        check_event(&batch.ev[0], c->type, c->article, strlen(c->article), c->net, c->delta);
    }
    run_bad_bodies(bad, N_ELEMS(bad));
}

/* ---- UTF-8, ids and names ---- */

static void test_ingest_utf8_validator_follows_unicode_table_3_7(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        bool utf8, article;
    } cases[] = {
        {S(""), true, false},
        {S("\0"), true, false},
        {S("a\x1f"), true, false},
        {S("~"), true, true},
        {S("\xC2\x80"), true, false},        /* U+0080 */
        {S("\xC2\x9F"), true, false},        /* U+009F */
        {S("\xC2\xA1"), true, true},         /* U+00A1 */
        {S("\xDF\xBF"), true, true},         /* U+07FF */
        {S("\xE0\xA0\x80"), true, true},     /* U+0800 */
        {S("\xE1\x99\xBF"), true, true},     /* U+167F */
        {S("\xE2\x80\x8B"), true, true},     /* U+200B: not White_Space */
        {S("\xE2\x80\x8A"), true, false},    /* U+200A */
        {S("\xED\x9F\xBF"), true, true},     /* U+D7FF */
        {S("\xEE\x80\x80"), true, true},     /* U+E000 */
        {S("\xEF\xBF\xBF"), true, true},     /* U+FFFF */
        {S("\xF0\x90\x80\x80"), true, true}, /* U+10000 */
        {S("\xF4\x8F\xBF\xBF"), true, true}, /* U+10FFFF */
        {S("\xC0\x80"), false, false},
        {S("\xC0\xAF"), false, false},
        {S("\xC1\xBF"), false, false},
        {S("\xE0\x9F\xBF"), false, false},
        {S("\xE0\x80\xAF"), false, false},
        {S("\xED\xA0\x80"), false, false},
        {S("\xED\xBF\xBF"), false, false},
        {S("\xF0\x8F\xBF\xBF"), false, false},
        {S("\xF4\x90\x80\x80"), false, false},
        {S("\xF8\x88\x80\x80\x80"), false, false},
        {S("\xFE"), false, false},
        {S("\x80"), false, false},
        {S("\xBF"), false, false},
        {S("\xC3"), false, false},
        {S("\xE2\x82"), false, false},
        {S("\xF0\x9F\x98"), false, false},
        {S("\xC3\x28"), false, false},
        {S("\xE2\x82\x28"), false, false},
        {S("a\xC3\xA9\xE2"), false, false},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        if (tally_utf8_valid(cases[i].s, cases[i].len) != cases[i].utf8 ||
            tally_article_valid(cases[i].s, cases[i].len) != cases[i].article) {
            print_error("case %zu: utf8 %d article %d\n", i,
                        tally_utf8_valid(cases[i].s, cases[i].len),
                        tally_article_valid(cases[i].s, cases[i].len));
            fail();
        }
    }
}

/* Bidirectional embeddings, overrides and isolates are refused; the marks and joiners around
 * them (U+200E, U+200F, U+061C, U+202F is White_Space) are refused or not as their class says. */
static void test_ingest_article_refuses_bidi_controls(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        bool article;
    } cases[] = {
        {S("a\xE2\x80\xAA"), false},        /* U+202A LRE */
        {S("a\xE2\x80\xAB"), false},        /* U+202B RLE */
        {S("a\xE2\x80\xAC"), false},        /* U+202C PDF */
        {S("a\xE2\x80\xAD"), false},        /* U+202D LRO */
        {S("\xE2\x80\xAEgnp.exe"), false},  /* U+202E RLO */
        {S("a\xE2\x81\xA6"), false},        /* U+2066 LRI */
        {S("a\xE2\x81\xA7"), false},        /* U+2067 RLI */
        {S("a\xE2\x81\xA8"), false},        /* U+2068 FSI */
        {S("a\xE2\x81\xA9"), false},        /* U+2069 PDI */
        {S("a\xE2\x80\xA9"), false},        /* U+2029: White_Space */
        {S("a\xE2\x80\xAF"), false},        /* U+202F: White_Space */
        {S("a\xE2\x81\xA5"), true},         /* U+2065: unassigned, not a control */
        {S("a\xE2\x81\xAA"), true},         /* U+206A: deprecated, outside the ranges */
        {S("a\xE2\x80\x8E"), true},         /* U+200E LRM: a mark, not an override */
        {S("\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D/1"), true}, /* Hebrew: right-to-left text */
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        if (tally_article_valid(cases[i].s, cases[i].len) != cases[i].article) {
            print_error("case %zu: article %d\n", i, !cases[i].article);
            fail();
        }
    }
}

static void test_ingest_article_check_uses_the_length(void **state)
{
    char id[TALLY_ARTICLE_MAX + 2];

    (void)state;
    memset(id, 'a', sizeof(id));
    assert_true(tally_article_valid(id, TALLY_ARTICLE_MAX));
    assert_false(tally_article_valid(id, TALLY_ARTICLE_MAX + 1));
    assert_true(tally_article_valid("ab\0c", 2));
    assert_false(tally_article_valid("ab\0c", 4));
    assert_false(tally_article_valid("", 0));
}

static void test_ingest_names_types_and_networks(void **state)
{
    static const char *const networks[] = {"facebook", "twitter", "linkedin", "reddit", "whatsapp",
                                           "telegram", "email",   "copy",     "native", "other"};

    (void)state;
    assert_string_equal(tally_event_type_name(TALLY_EVENT_VIEW), "view");
    assert_string_equal(tally_event_type_name(TALLY_EVENT_SHARE), "share");
    assert_string_equal(tally_event_type_name(TALLY_EVENT_COMMENT), "comment");
    assert_string_equal(tally_event_type_name(TALLY_EVENT_ENGAGE), "engage");
    assert_string_equal(tally_event_type_name(TALLY_EVENT_TYPES), "unknown");
    assert_int_equal(N_ELEMS(networks), TALLY_NETWORKS);
    for (int i = 0; i < TALLY_NETWORKS; i++) {
        assert_string_equal(tally_network_name((enum tally_network)i), networks[i]);
        assert_int_equal(tally_network_from(networks[i], strlen(networks[i])), i);
    }
    assert_string_equal(tally_network_name(TALLY_NETWORKS), "unknown");
    assert_int_equal(tally_network_from("twitterx", 7), TALLY_NETWORK_TWITTER);
    assert_int_equal(tally_network_from("twitte", 6), TALLY_NETWORK_OTHER);
    assert_int_equal(tally_network_from("Twitter", 7), TALLY_NETWORK_OTHER);
    assert_int_equal(tally_network_from("", 0), TALLY_NETWORK_OTHER);
    assert_int_equal(tally_network_from("x\0twitter", 9), TALLY_NETWORK_OTHER);
}

/* ---- The pixel query string ---- */

static void test_ingest_query_accepts_valid_events(void **state)
{
    static const struct good_case cases[] = {
        {S("type=view&article=news%2F2025%2Fkim-missiles"), TALLY_EVENT_VIEW,
         "news/2025/kim-missiles", TALLY_NETWORK_OTHER, 1},
        {S("article=a&type=view"), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S("&&type=view&&article=a&"), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=%76iew&article=caf%C3%A9"), TALLY_EVENT_VIEW, "caf\xC3\xA9", TALLY_NETWORK_OTHER,
         1},
        {S("type=view&article=a%2Bb"), TALLY_EVENT_VIEW, "a+b", TALLY_NETWORK_OTHER, 1},
        {S("type=view&article=a&utm_source=x%zz&Type=share&%74ype=share"), TALLY_EVENT_VIEW, "a",
         TALLY_NETWORK_OTHER, 1},
        {S("type=view&article=a&network=%zz&delta=0"), TALLY_EVENT_VIEW, "a", TALLY_NETWORK_OTHER,
         1},
        {S("type=share&article=a&network=twitter"), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_TWITTER,
         1},
        {S("type=share&article=a&network=native"), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_NATIVE, 1},
        {S("type=share&article=a"), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=share&article=a&network=myspace"), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=share&article=a&network="), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=share&article=a&delta=x"), TALLY_EVENT_SHARE, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=comment&article=a"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 1},
        {S("type=comment&article=a&delta=-1"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, -1},
        {S("type=comment&article=a&delta=1000"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1000},
        {S("type=comment&article=a&delta=-1000"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         -1000},
        {S("type=comment&article=a&delta=%2B7"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 7},
        {S("type=comment&article=a&delta=0007"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER, 7},
        {S("type=comment&article=a&network=email"), TALLY_EVENT_COMMENT, "a", TALLY_NETWORK_OTHER,
         1},
    };
    struct tally_error err = {0};

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        const struct good_case *c = &cases[i];
        int rc = tally_ingest_parse_query(c->body, c->len, &batch, &err);

        if (rc != 0 || batch.n != 1) {
            print_error("query '%s': rc %d %s '%s'\n", c->body, rc, err.code, err.message);
            fail();
        }
        check_event(&batch.ev[0], c->type, c->article, strlen(c->article), c->net, c->delta);
        assert_int_equal(batch.text_len, strlen(c->article) + 1);
    }
}

static void test_ingest_query_rejects_bad_parameters(void **state)
{
    static const struct bad_case cases[] = {
        {S(""), "invalid_type", "type: missing"},
        {S("article=a"), "invalid_type", "type: missing"},
        {S("TYPE=view&article=a"), "invalid_type", "type: missing"},
        {S("type=View&article=a"), "invalid_type", "type: must be view, share, comment or engage"},
        {S("type=like&article=a"), "invalid_type", "type:"},
        {S("type=view+&article=a"), "invalid_type", "type:"},
        {S("type=%zz&article=a"), "invalid_parameter", "type: malformed"},
        {S("type=view%00&article=a"), "invalid_parameter", "type:"},
        {S("type=view&type=view&article=a"), "invalid_parameter", "type: given more than once"},
        {S("type=view&article=a&type="), "invalid_parameter", "type: given more than once"},
        {S("type=view"), "invalid_article", "article: missing"},
        {S("type=view&article=a&article=b"), "invalid_parameter", "article: given more"},
        {S("type=view&article="), "invalid_article", "article: 1-256 bytes"},
        {S("type=view&article"), "invalid_article", "article:"},
        {S("type=view&article=a%00b"), "invalid_article", "article: malformed"},
        {S("type=view&article=a\0b"), "invalid_article", "article:"},
        {S("type=view&article=a%zz"), "invalid_article", "article:"},
        {S("type=view&article=a%2"), "invalid_article", "article:"},
        {S("type=view&article=a+b"), "invalid_article", "article: 1-256 bytes"},
        {S("type=view&article=a%20b"), "invalid_article", "article:"},
        {S("type=view&article=a%C2%A0b"), "invalid_article", "article:"},
        {S("type=view&article=%C0%AF"), "invalid_article", "article:"},
        {S("type=view&article=%ED%A0%80"), "invalid_article", "article:"},
        {S("type=view&article=a%7F"), "invalid_article", "article:"},
        {S("type=share&article=a&network=%zz"), "invalid_parameter", "network: malformed"},
        {S("type=share&article=a&network=x&network=y"), "invalid_parameter", "network:"},
        {S("type=view&article=a&delta=1&delta=2"), "invalid_parameter", "delta:"},
        {S("type=comment&article=a&delta=%zz"), "invalid_parameter", "delta: malformed"},
        {S("type=comment&article=a&delta=0"), "invalid_delta", "delta: must be an integer"},
        {S("type=comment&article=a&delta=-0"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=1001"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=-1001"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=99999999999999999999"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=1.5"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=1.0"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=1e2"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=+5"), "invalid_delta", "delta:"}, /* '+' is a space */
        {S("type=comment&article=a&delta=%205"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta="), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=-"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=--1"), "invalid_delta", "delta:"},
        {S("type=comment&article=a&delta=0x10"), "invalid_delta", "delta:"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        expect_bad_query(cases[i].body, cases[i].len, cases[i].code, cases[i].where);
}

/* ---- Engaged time and words ---- */

/* What an event carries besides its type, article, network and delta. */
struct engage_case {
    const char *input;
    size_t len;
    enum tally_event_type type;
    uint32_t words;
    unsigned seconds;
    bool read;
};

static void check_engage_cases(const struct engage_case *cases, size_t n, bool query)
{
    for (size_t i = 0; i < n; i++) {
        const struct engage_case *c = &cases[i];
        struct tally_error err = {0};
        int rc = query ? tally_ingest_parse_query(c->input, c->len, &batch, &err)
                       : tally_ingest_parse(c->input, c->len, &batch, &err);

        if (rc != 0 || batch.n != 1) {
            print_error("input '%s': rc %d %s '%s'\n", c->input, rc, err.code ? err.code : "-",
                        err.message);
            fail();
        }
        if (batch.ev[0].type != c->type || batch.ev[0].words != c->words ||
            batch.ev[0].seconds != c->seconds || batch.ev[0].read != c->read) {
            print_error("input '%s': got type %d words %u seconds %u read %d\n", c->input,
                        batch.ev[0].type, batch.ev[0].words, batch.ev[0].seconds,
                        batch.ev[0].read);
            fail();
        }
        assert_int_equal(batch.ev[0].article_len, 1);
        assert_memory_equal(batch.ev[0].article, "a", 2);
    }
}

static void test_ingest_reads_engage_and_words(void **state)
{
    static const struct engage_case cases[] = {
        {S(EVENT("engage", "a", ",\"seconds\":95,\"read\":true")), TALLY_EVENT_ENGAGE, 0, 95, true},
        {S(EVENT("engage", "a", ",\"seconds\":1")), TALLY_EVENT_ENGAGE, 0, 1, false},
        {S(EVENT("engage", "a", ",\"seconds\":3600,\"read\":false")), TALLY_EVENT_ENGAGE, 0, 3600,
         false},
        {S(EVENT("engage", "a", ",\"seconds\":3.6e3")), TALLY_EVENT_ENGAGE, 0, 3600, false},
        {S(EVENT("engage", "a", ",\"seconds\":30.0,\"read\":true")), TALLY_EVENT_ENGAGE, 0, 30,
         true},
        /* words belongs to views, delta to comments: ignored here, whatever they hold */
        {S(EVENT("engage", "a", ",\"seconds\":5,\"words\":-1,\"delta\":0")), TALLY_EVENT_ENGAGE,
         0, 5, false},
        {S("{\"read\":true,\"seconds\":7,\"article\":\"a\",\"type\":\"engage\"}"),
         TALLY_EVENT_ENGAGE, 0, 7, true},
        {S(EVENT("view", "a", ",\"words\":1200")), TALLY_EVENT_VIEW, 1200, 0, false},
        {S(EVENT("view", "a", ",\"words\":1")), TALLY_EVENT_VIEW, 1, 0, false},
        {S(EVENT("view", "a", ",\"words\":1000000")), TALLY_EVENT_VIEW, 1000000, 0, false},
        {S(EVENT("view", "a", ",\"words\":1e6")), TALLY_EVENT_VIEW, 1000000, 0, false},
        {S(EVENT("view", "a", "")), TALLY_EVENT_VIEW, 0, 0, false},
        /* seconds and read belong to engage events */
        {S(EVENT("view", "a", ",\"seconds\":0,\"read\":\"yes\"")), TALLY_EVENT_VIEW, 0, 0, false},
        {S(EVENT("share", "a", ",\"words\":0,\"seconds\":9,\"read\":true")), TALLY_EVENT_SHARE, 0,
         0, false},
        {S(EVENT("comment", "a", ",\"words\":5,\"seconds\":9")), TALLY_EVENT_COMMENT, 0, 0,
         false},
    };

    (void)state;
    check_engage_cases(cases, N_ELEMS(cases), false);
}

static void test_ingest_rejects_bad_engage_and_words(void **state)
{
    static const struct bad_case cases[] = {
        {S(EVENT("engage", "a", "")), "invalid_seconds", "seconds: missing"},
        {S(EVENT("engage", "a", ",\"read\":true")), "invalid_seconds", "seconds: missing"},
        {S(EVENT("engage", "a", ",\"seconds\":0")), "invalid_seconds",
         "seconds: must be an integer from 1 to 3600"},
        {S(EVENT("engage", "a", ",\"seconds\":3601")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":-5")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":1.5")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":\"30\"")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":null")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":1e300")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":99999999999")), "invalid_seconds", "seconds:"},
        {S(EVENT("engage", "a", ",\"seconds\":30,\"read\":1")), "invalid_read",
         "read: must be true or false"},
        {S(EVENT("engage", "a", ",\"seconds\":30,\"read\":\"true\"")), "invalid_read", "read:"},
        {S(EVENT("engage", "a", ",\"seconds\":30,\"read\":null")), "invalid_read", "read:"},
        {S(EVENT("engage", "a", ",\"seconds\":30,\"seconds\":31")), "duplicate_key",
         "seconds: given more than once"},
        {S(EVENT("engage", "a", ",\"read\":true,\"read\":true,\"seconds\":3")), "duplicate_key",
         "read: given more than once"},
        {S(EVENT("view", "a", ",\"words\":0")), "invalid_words",
         "words: must be an integer from 1 to 1000000"},
        {S(EVENT("view", "a", ",\"words\":1000001")), "invalid_words", "words:"},
        {S(EVENT("view", "a", ",\"words\":-1")), "invalid_words", "words:"},
        {S(EVENT("view", "a", ",\"words\":12.5")), "invalid_words", "words:"},
        {S(EVENT("view", "a", ",\"words\":\"1200\"")), "invalid_words", "words:"},
        {S(EVENT("view", "a", ",\"words\":null")), "invalid_words", "words:"},
        {S(EVENT("view", "a", ",\"words\":1,\"words\":2")), "duplicate_key", "words: given more"},
        /* the first bad event is named; the article comes before seconds */
        {S("[" EVENT("engage", "a", ",\"seconds\":3") "," EVENT("engage", "a", "") "]"),
         "invalid_seconds", "events[1].seconds: missing"},
        {S("[" EVENT("engage", "", "") "]"), "invalid_article", "events[0].article:"},
        {S("[" VIEW("a") "," EVENT("view", "b", ",\"words\":0") "," EVENT("engage", "a", "")
               "]"),
         "invalid_words", "events[1].words:"},
    };

    (void)state;
    run_bad_bodies(cases, N_ELEMS(cases));
}

static void test_ingest_query_reads_engage_and_words(void **state)
{
    static const struct engage_case cases[] = {
        {S("type=engage&article=a&seconds=95&read=true"), TALLY_EVENT_ENGAGE, 0, 95, true},
        {S("type=engage&article=a&seconds=95&read=1"), TALLY_EVENT_ENGAGE, 0, 95, true},
        {S("type=engage&article=a&seconds=3600&read=false"), TALLY_EVENT_ENGAGE, 0, 3600, false},
        {S("type=engage&article=a&seconds=0001&read=0"), TALLY_EVENT_ENGAGE, 0, 1, false},
        {S("type=engage&article=a&seconds=%33%30"), TALLY_EVENT_ENGAGE, 0, 30, false},
        {S("type=engage&article=a&seconds=5&words=x&delta=0"), TALLY_EVENT_ENGAGE, 0, 5, false},
        {S("type=view&article=a&words=1200"), TALLY_EVENT_VIEW, 1200, 0, false},
        {S("type=view&article=a&words=1000000"), TALLY_EVENT_VIEW, 1000000, 0, false},
        {S("type=view&article=a&seconds=0&read=maybe"), TALLY_EVENT_VIEW, 0, 0, false},
        {S("type=share&article=a&words=0&seconds=x"), TALLY_EVENT_SHARE, 0, 0, false},
    };

    (void)state;
    check_engage_cases(cases, N_ELEMS(cases), true);
}

static void test_ingest_query_rejects_bad_engage_and_words(void **state)
{
    static const struct bad_case cases[] = {
        {S("type=engage&article=a"), "invalid_seconds", "seconds: missing"},
        {S("type=engage&article=a&read=true"), "invalid_seconds", "seconds: missing"},
        {S("type=engage&article=a&seconds=0"), "invalid_seconds",
         "seconds: must be an integer from 1 to 3600"},
        {S("type=engage&article=a&seconds=3601"), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds=-1"), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds=%2B1"), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds=1.0"), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds="), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds=99999999999999999999"), "invalid_seconds", "seconds:"},
        {S("type=engage&article=a&seconds=%zz"), "invalid_parameter", "seconds: malformed"},
        {S("type=engage&article=a&seconds=1&seconds=2"), "invalid_parameter",
         "seconds: given more than once"},
        {S("type=engage&article=a&seconds=5&read=yes"), "invalid_read",
         "read: must be true or false"},
        {S("type=engage&article=a&seconds=5&read=TRUE"), "invalid_read", "read:"},
        {S("type=engage&article=a&seconds=5&read="), "invalid_read", "read:"},
        {S("type=view&article=a&words=0"), "invalid_words",
         "words: must be an integer from 1 to 1000000"},
        {S("type=view&article=a&words=1000001"), "invalid_words", "words:"},
        {S("type=view&article=a&words=-5"), "invalid_words", "words:"},
        {S("type=view&article=a&words="), "invalid_words", "words:"},
        {S("type=view&article=a&words=1&words=1"), "invalid_parameter", "words: given more"},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        expect_bad_query(cases[i].body, cases[i].len, cases[i].code, cases[i].where);
}

static void test_ingest_query_takes_ids_of_exactly_256_bytes(void **state)
{
    char query[1024], id[TALLY_ARTICLE_MAX + 2];
    struct tally_error err = {0};
    size_t len;

    (void)state;
    memset(id, 'a', sizeof(id));
    len = (size_t)snprintf(query, sizeof(query), "type=view&article=%.*s", TALLY_ARTICLE_MAX, id);
    assert_int_equal(tally_ingest_parse_query(query, len, &batch, &err), 0);
    check_event(&batch.ev[0], TALLY_EVENT_VIEW, id, TALLY_ARTICLE_MAX, TALLY_NETWORK_OTHER, 1);
    len =
        (size_t)snprintf(query, sizeof(query), "type=view&article=%.*s", TALLY_ARTICLE_MAX + 1, id);
    expect_bad_query(query, len, "invalid_article", "article:");

    /* 128 encoded two-byte characters: 768 bytes of query, 256 of id */
    len = (size_t)snprintf(query, sizeof(query), "type=view&article=");
    for (int i = 0; i < 128; i++)
        len += (size_t)snprintf(query + len, sizeof(query) - len, "%%C3%%A9");
    assert_int_equal(tally_ingest_parse_query(query, len, &batch, &err), 0);
    assert_int_equal(batch.ev[0].article_len, TALLY_ARTICLE_MAX);
    memcpy(query + len, "x", 1);
    expect_bad_query(query, len + 1, "invalid_article", "article:");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ingest_accepts_single_events_of_every_shape),
        cmocka_unit_test(test_ingest_maps_every_network),
        cmocka_unit_test(test_ingest_accepts_arrays_of_1_to_100_events),
        cmocka_unit_test(test_ingest_accepts_100_events_with_256_byte_ids),
        cmocka_unit_test(test_ingest_takes_ids_of_exactly_256_bytes),
        cmocka_unit_test(test_ingest_reuses_a_batch_between_calls),
        cmocka_unit_test(test_ingest_rejects_bodies_that_hold_no_event),
        cmocka_unit_test(test_ingest_rejects_malformed_json),
        cmocka_unit_test(test_ingest_rejects_nul_in_any_form),
        cmocka_unit_test(test_ingest_rejects_invalid_utf8_anywhere),
        cmocka_unit_test(test_ingest_rejects_bad_article_ids),
        cmocka_unit_test(test_ingest_rejects_bad_types),
        cmocka_unit_test(test_ingest_rejects_bad_comment_deltas),
        cmocka_unit_test(test_ingest_rejects_duplicate_member_names),
        cmocka_unit_test(test_ingest_caps_members_of_every_object_at_32),
        cmocka_unit_test(test_ingest_rejects_more_than_100_events),
        cmocka_unit_test(test_ingest_refuses_huge_bodies_before_parsing),
        cmocka_unit_test(test_ingest_reports_errors_in_a_stable_order),
        cmocka_unit_test(test_ingest_reads_json_by_the_letter),
        cmocka_unit_test(test_ingest_utf8_validator_follows_unicode_table_3_7),
        cmocka_unit_test(test_ingest_article_refuses_bidi_controls),
        cmocka_unit_test(test_ingest_article_check_uses_the_length),
        cmocka_unit_test(test_ingest_names_types_and_networks),
        cmocka_unit_test(test_ingest_query_accepts_valid_events),
        cmocka_unit_test(test_ingest_query_rejects_bad_parameters),
        cmocka_unit_test(test_ingest_query_takes_ids_of_exactly_256_bytes),
        cmocka_unit_test(test_ingest_reads_engage_and_words),
        cmocka_unit_test(test_ingest_rejects_bad_engage_and_words),
        cmocka_unit_test(test_ingest_query_reads_engage_and_words),
        cmocka_unit_test(test_ingest_query_rejects_bad_engage_and_words),
    };

    return cmocka_run_group_tests_name("ingest", tests, NULL, NULL);
}
