/* test_admit.c -- the ingest rules: count, ignore or refuse, in their order, and the outcome
 * counting of every kind of end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tally/admit.h"
#include "tally/agg.h"
#include "tally/bots.h"
#include "tally/error.h"
#include "unit.h"

#define VIEW "{\"type\":\"view\",\"article\":\"a\"}"
#define COMMENT "{\"type\":\"comment\",\"article\":\"a\"}"
#define BROWSER "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#define BOT "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
#define ORIGIN "https://news.example"
#define SEC UINT64_C(1000000)
#define T0 (UINT64_C(1000) * SEC)

static struct tally_batch batch;

/* The world of one test: a configuration, a limiter and a bot cache. */
struct world {
    struct tally_config cfg;
    struct tally_ratelimit rl;
    struct tally_bot_cache bots;
    struct tally_admit_ctx ctx;
};

static struct world *world_new(const char *origins, uint32_t rate)
{
    static struct world w;
    static char args[3][256];
    char *argv[] = {args[0], args[1], args[2], NULL};
    char err[256];

    snprintf(args[0], sizeof(args[0]), "tallyd");
    snprintf(args[1], sizeof(args[1]), "--allowed-origins");
    snprintf(args[2], sizeof(args[2]), "%s", origins);

    memset(&w, 0, sizeof(w));
    assert_int_equal(tally_config_parse(&w.cfg, 3, argv, NULL, NULL, 1, err, sizeof(err)), 0);
    assert_int_equal(tally_ratelimit_init(&w.rl, rate), 0);
    w.ctx = (struct tally_admit_ctx){.cfg = &w.cfg, .rl = &w.rl, .bots = &w.bots};
    return &w;
}

static void world_free(struct world *w)
{
    tally_ratelimit_release(&w->rl);
}

/* A browser's POST of BODY from 10.0.0.1, with no token. */
static struct tally_admit_req post(const char *body)
{
    struct tally_admit_req r = {.input = body,
                                .input_len = strlen(body),
                                .user_agent = BROWSER,
                                .auth = 401,
                                .now_us = T0,
                                .addr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}};

    return r;
}

/* The batch of N views. */
static const char *views(int n)
{
    static char body[4096];
    size_t len = 1;

    body[0] = '[';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s" VIEW, i > 0 ? "," : "");
    memcpy(body + len, "]", 2);
    return body;
}

struct expect {
    enum tally_admit_action action;
    int status;       /* REFUSE */
    const char *code; /* REFUSE */
    size_t n;         /* events known */
};

static void expect_verdict(const char *what, const struct tally_verdict *v, struct expect e)
{
    if (v->action != e.action || batch.n != e.n ||
        (e.action == TALLY_ADMIT_REFUSE &&
         (v->status != e.status || strcmp(v->err.code, e.code) != 0))) {
        print_error("%s: got action %d status %d code %s (%s), %zu events; want %d %d %s, %zu\n",
                    what, v->action, v->status, v->err.code ? v->err.code : "-", v->err.message,
                    batch.n, e.action, e.status, e.code ? e.code : "-", e.n);
        fail();
    }
}

#define COUNT(n) ((struct expect){TALLY_ADMIT_COUNT, 0, NULL, (n)})
#define REFUSE(status, code, n) ((struct expect){TALLY_ADMIT_REFUSE, (status), (code), (n)})

/* ---- The order of the checks ---- */

static void test_admit_checks_a_post_head_before_its_body(void **state)
{
    static char big[TALLY_BODY_MAX + 2];
    static const struct {
        const char *what, *ctype, *idem, *body;
        size_t len; /* 0: strlen(body) */
        struct expect want;
    } cases[] = {
        {"json", "application/json", NULL, VIEW, 0, COUNT(1)},
        {"json with charset", "application/json; charset=utf-8", NULL, VIEW, 0, COUNT(1)},
        {"text/plain (sendBeacon)", "text/plain;charset=UTF-8", NULL, VIEW, 0, COUNT(1)},
        {"form-encoded", "APPLICATION/X-WWW-FORM-URLENCODED", NULL, VIEW, 0, COUNT(1)},
        {"no content type", NULL, NULL, VIEW, 0, COUNT(1)},
        {"multipart", "multipart/form-data; boundary=x", NULL, VIEW, 0,
         REFUSE(415, "unsupported_media_type", 0)},
        {"json prefix", "application/jsonx", NULL, VIEW, 0,
         REFUSE(415, "unsupported_media_type", 0)},
        {"415 before 413", "text/html", NULL, big, TALLY_BODY_MAX + 1,
         REFUSE(415, "unsupported_media_type", 0)},
        {"64 KiB + 1", NULL, NULL, big, TALLY_BODY_MAX + 1, REFUSE(413, "payload_too_large", 0)},
        {"413 before a bad key", NULL, "", big, TALLY_BODY_MAX + 1,
         REFUSE(413, "payload_too_large", 0)},
        {"64 KiB of spaces is read", NULL, NULL, big, TALLY_BODY_MAX,
         REFUSE(400, "malformed_json", 0)},
        {"empty key", NULL, "", VIEW, 0, REFUSE(400, "invalid_idempotency_key", 0)},
        {"key with a space", NULL, "a b", VIEW, 0, REFUSE(400, "invalid_idempotency_key", 0)},
        {"key with a control", NULL, "a\x7f", VIEW, 0, REFUSE(400, "invalid_idempotency_key", 0)},
        {"key of UTF-8", NULL, "caf\xC3\xA9", VIEW, 0, REFUSE(400, "invalid_idempotency_key", 0)},
        {"bad key before a bad body", NULL, "", "{", 0, REFUSE(400, "invalid_idempotency_key", 0)},
        {"key", NULL, "order-17/retry", VIEW, 0, COUNT(1)},
        {"bad body", NULL, NULL, "[" VIEW ",{}]", 0, REFUSE(400, "invalid_type", 0)},
        {"no body", NULL, NULL, "", 0, REFUSE(400, "malformed_json", 0)},
    };
    struct world *w = world_new("*", 0);
    struct tally_verdict v;

    (void)state;
    memset(big, ' ', sizeof(big) - 1);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_admit_req r = post(cases[i].body);

        r.content_type = cases[i].ctype;
        r.idempotency_key = cases[i].idem;
        if (cases[i].len > 0)
            r.input_len = cases[i].len;
        tally_admit(&w->ctx, &r, &batch, &v);
        expect_verdict(cases[i].what, &v, cases[i].want);
        assert_true(v.action != TALLY_ADMIT_REFUSE || v.err.message[0] != '\0');
    }
    world_free(w);
}

static void test_admit_takes_idempotency_keys_of_1_to_128_printable_characters(void **state)
{
    char key[TALLY_IDEM_MAX + 2];
    struct world *w = world_new("*", 0);
    struct tally_admit_req r = post(VIEW);
    struct tally_verdict v;

    (void)state;
    memset(key, '~', sizeof(key));
    key[TALLY_IDEM_MAX] = '\0';
    r.idempotency_key = key;
    tally_admit(&w->ctx, &r, &batch, &v);
    expect_verdict("128", &v, COUNT(1));
    key[TALLY_IDEM_MAX] = '!';
    key[TALLY_IDEM_MAX + 1] = '\0';
    tally_admit(&w->ctx, &r, &batch, &v);
    expect_verdict("129", &v, REFUSE(400, "invalid_idempotency_key", 0));
    world_free(w);
}

static void test_admit_checks_origin_then_token_after_the_body(void **state)
{
    static const struct {
        const char *what, *origin, *body;
        int auth;
        struct expect want;
    } cases[] = {
        {"listed origin", ORIGIN, VIEW, 401, COUNT(1)},
        {"no origin (a server)", NULL, VIEW, 401, COUNT(1)},
        {"other origin", "https://evil.example", VIEW, 401, REFUSE(403, "origin_forbidden", 1)},
        {"origin with a path", ORIGIN "/", VIEW, 401, REFUSE(403, "origin_forbidden", 1)},
        {"bad body before origin", "https://evil.example", "[]", 401,
         REFUSE(400, "empty_batch", 0)},
        {"origin before token", "https://evil.example", COMMENT, 401,
         REFUSE(403, "origin_forbidden", 1)},
        {"comment without token", ORIGIN, COMMENT, 401, REFUSE(401, "unauthorized", 1)},
        {"comment, none configured", ORIGIN, COMMENT, 403, REFUSE(403, "token_not_configured", 1)},
        {"one comment in a batch", NULL, "[" VIEW "," VIEW "," COMMENT "]", 401,
         REFUSE(401, "unauthorized", 3)},
        {"comment with the token", NULL, COMMENT, 0, COUNT(1)},
        {"views need no token", NULL, "[" VIEW "," VIEW "]", 403, COUNT(2)},
    };
    struct world *w = world_new(ORIGIN ",https://b.example", 0);
    struct tally_verdict v;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_admit_req r = post(cases[i].body);

        r.origin = cases[i].origin;
        r.auth = cases[i].auth;
        tally_admit(&w->ctx, &r, &batch, &v);
        expect_verdict(cases[i].what, &v, cases[i].want);
    }
    world_free(w);
}

static void test_admit_reads_the_pixel_query_with_the_same_rules(void **state)
{
    static const struct {
        const char *what, *query, *origin;
        int auth;
        struct expect want;
    } cases[] = {
        {"view", "type=view&article=a", NULL, 401, COUNT(1)},
        {"no Content-Type rule", "type=view&article=a", NULL, 401, COUNT(1)},
        {"bad query", "type=like&article=a", NULL, 401, REFUSE(400, "invalid_type", 0)},
        {"origin", "type=view&article=a", "https://evil.example", 401,
         REFUSE(403, "origin_forbidden", 1)},
        {"comment", "type=comment&article=a", NULL, 401, REFUSE(401, "unauthorized", 1)},
    };
    struct world *w = world_new(ORIGIN, 0);
    struct tally_verdict v;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_admit_req r = post("");

        r.pixel = true;
        r.input = cases[i].query;
        r.input_len = strlen(cases[i].query);
        r.content_type = "multipart/form-data"; /* a GET has no body: not looked at */
        r.origin = cases[i].origin;
        r.auth = cases[i].auth;
        tally_admit(&w->ctx, &r, &batch, &v);
        expect_verdict(cases[i].what, &v, cases[i].want);
    }
    world_free(w);
}

/* ---- Rate limit ---- */

/* --rate-limit 2: a burst of 8 events. A batch of 9 or 100 never passes and costs nothing. */
static void test_admit_charges_every_event_and_refuses_a_batch_above_the_burst(void **state)
{
    static const struct {
        const char *what;
        int n;
        uint64_t at; /* seconds after T0 */
        int auth;
        struct expect want;
        uint32_t retry_s;
    } steps[] = {
        {"100 events", 100, 0, 401, REFUSE(429, "batch_over_burst", 100), 1},
        {"9 events", 9, 0, 401, REFUSE(429, "batch_over_burst", 9), 1},
        {"the burst, untouched", 8, 0, 401, COUNT(8), 0},
        {"one more", 1, 0, 401, REFUSE(429, "rate_limited", 1), 1},
        {"100 with the token", 100, 0, 0, COUNT(100), 0},
        {"a second later, 2 events", 3, 1, 401, REFUSE(429, "rate_limited", 3), 1},
        {"a second later", 2, 1, 401, COUNT(2), 0},
        {"9, 4 s from a full bucket", 9, 1, 401, REFUSE(429, "batch_over_burst", 9), 4},
        {"5 s later, the burst", 8, 6, 401, COUNT(8), 0},
    };
    struct world *w = world_new("*", 2);
    struct tally_verdict v;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(steps); i++) {
        struct tally_admit_req r = post(views(steps[i].n));

        r.auth = steps[i].auth;
        r.now_us = T0 + steps[i].at * SEC;
        tally_admit(&w->ctx, &r, &batch, &v);
        expect_verdict(steps[i].what, &v, steps[i].want);
        if (v.action == TALLY_ADMIT_REFUSE)
            assert_int_equal(v.retry_s, steps[i].retry_s);
        if (steps[i].n == 9)
            assert_string_equal(v.err.message, "body: 9 events are more than the burst of 8 (4 x "
                                               "--rate-limit); send at most 8 in one request");
    }
    world_free(w);
}

/* ---- Ignored requests ---- */

static void test_admit_ignores_prefetches_and_bots_after_the_rate_limit(void **state)
{
    static const struct {
        const char *what, *purpose, *ua;
        int auth;
        enum tally_admit_action action;
        enum tally_ignore ignore;
    } cases[] = {
        {"reader", NULL, BROWSER, 401, TALLY_ADMIT_COUNT, 0},
        {"Sec-Purpose: prefetch", "prefetch", BROWSER, 401, TALLY_ADMIT_IGNORE,
         TALLY_IGNORE_PREFETCH},
        {"prefetch;prerender", "prefetch;prerender", BROWSER, 401, TALLY_ADMIT_IGNORE,
         TALLY_IGNORE_PREFETCH},
        {"X-Purpose: preview", "preview", BROWSER, 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_PREFETCH},
        {"other purpose", "navigate", BROWSER, 401, TALLY_ADMIT_COUNT, 0},
        {"bot", NULL, BOT, 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_BOT},
        {"bot, cached", NULL, BOT, 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_BOT},
        {"prefetch before bot", "prefetch", BOT, 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_PREFETCH},
        {"no User-Agent", NULL, NULL, 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_BOT},
        {"empty User-Agent", NULL, "", 401, TALLY_ADMIT_IGNORE, TALLY_IGNORE_BOT},
        {"reader, cached", NULL, BROWSER, 401, TALLY_ADMIT_COUNT, 0},
        {"the token: no bot rule", NULL, BOT, 0, TALLY_ADMIT_COUNT, 0},
        {"the token: no prefetch rule", "prefetch", NULL, 0, TALLY_ADMIT_COUNT, 0},
    };
    struct world *w = world_new("*", 50);
    struct tally_verdict v;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_admit_req r = post(views(2));

        r.purpose = cases[i].purpose;
        r.user_agent = cases[i].ua;
        r.auth = cases[i].auth;
        tally_admit(&w->ctx, &r, &batch, &v);
        if (v.action != cases[i].action || batch.n != 2 ||
            (v.action == TALLY_ADMIT_IGNORE && v.ignore != cases[i].ignore)) {
            print_error("%s: action %d ignore %d\n", cases[i].what, v.action, v.ignore);
            fail();
        }
    }
    /* A bot over the limit is refused, not ignored: the limit comes first. */
    for (int i = 0; i < 99; i++) {
        struct tally_admit_req r = post(views(2));

        r.user_agent = BOT;
        tally_admit(&w->ctx, &r, &batch, &v);
    }
    expect_verdict("bot over the limit", &v, REFUSE(429, "rate_limited", 2));
    world_free(w);
}

static void test_admit_bot_cache_agrees_with_the_list(void **state)
{
    static const char *const uas[] = {
        BROWSER, BOT,     "curl/8.0", "facebookexternalhit/1.1", "Slackbot-LinkExpanding 1.0",
        "x",     BROWSER, BOT};
    static struct tally_bot_cache cache;

    (void)state;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < N_ELEMS(uas); i++)
            assert_int_equal(tally_bot_cached(&cache, uas[i]),
                             tally_bot_match(uas[i], strlen(uas[i])));
}

/* ---- Outcomes ---- */

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load(c);
}

static void test_admit_records_every_end_in_one_place(void **state)
{
    static struct tally_metrics m;
    static const struct tally_event ev[] = {
        {.type = TALLY_EVENT_VIEW}, {.type = TALLY_EVENT_VIEW},    {.type = TALLY_EVENT_SHARE},
        {.type = TALLY_EVENT_VIEW}, {.type = TALLY_EVENT_COMMENT},
    };
    struct tally_verdict count = {.action = TALLY_ADMIT_COUNT};
    struct tally_verdict bot = {.action = TALLY_ADMIT_IGNORE, .ignore = TALLY_IGNORE_BOT};
    struct tally_verdict limited = {
        .action = TALLY_ADMIT_REFUSE, .status = 429, .reject = TALLY_REJECT_RATE_LIMITED};
    struct tally_verdict invalid = {
        .action = TALLY_ADMIT_REFUSE, .status = 400, .reject = TALLY_REJECT_INVALID};
    struct tally_admit_written written = {.status = 0, .repeat = 2};
    struct tally_admit_written replayed = {.status = 0, .repeat = 1, .replayed = true};
    struct tally_admit_written failed = {.status = TALLY_EUNAVAIL};
    struct tally_admit_written unknown = {.status = TALLY_EUNKNOWN};

    (void)state;
    memset(&m, 0, sizeof(m));
    tally_admit_record(&m, &count, ev, 5, &written);  /* 3 views, 2 repeated */
    tally_admit_record(&m, &count, ev, 5, &replayed); /* counted the first time */
    tally_admit_record(&m, &count, ev, 5, &unknown);  /* nothing known */
    tally_admit_record(&m, &count, ev, 2, &failed);
    tally_admit_record(&m, &bot, ev, 3, NULL);
    tally_admit_record(&m, &limited, ev, 4, NULL);
    tally_admit_record(&m, &invalid, ev, 0, NULL);

    assert_int_equal(get(&m.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_COUNTED]), 1);
    assert_int_equal(get(&m.events[TALLY_EVENT_SHARE][TALLY_OUTCOME_COUNTED]), 1);
    assert_int_equal(get(&m.events[TALLY_EVENT_COMMENT][TALLY_OUTCOME_COUNTED]), 1);
    assert_int_equal(get(&m.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_IGNORED]), 2 + 2);
    assert_int_equal(get(&m.events[TALLY_EVENT_SHARE][TALLY_OUTCOME_IGNORED]), 1);
    assert_int_equal(get(&m.ignored[TALLY_IGNORE_REPEAT]), 2);
    assert_int_equal(get(&m.ignored[TALLY_IGNORE_BOT]), 3);
    assert_int_equal(get(&m.ignored[TALLY_IGNORE_PREFETCH]), 0);
    assert_int_equal(get(&m.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_FAILED]), 2);
    assert_int_equal(get(&m.events[TALLY_EVENT_VIEW][TALLY_OUTCOME_REJECTED]), 3);
    assert_int_equal(get(&m.events[TALLY_EVENT_SHARE][TALLY_OUTCOME_REJECTED]), 1);
    assert_int_equal(get(&m.events[TALLY_EVENT_COMMENT][TALLY_OUTCOME_REJECTED]), 0);
    assert_int_equal(get(&m.rejected[TALLY_REJECT_RATE_LIMITED]), 1);
    assert_int_equal(get(&m.rejected[TALLY_REJECT_INVALID]), 1);
    assert_int_equal(get(&m.rejected[TALLY_REJECT_UNAVAILABLE]), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admit_checks_a_post_head_before_its_body),
        cmocka_unit_test(test_admit_takes_idempotency_keys_of_1_to_128_printable_characters),
        cmocka_unit_test(test_admit_checks_origin_then_token_after_the_body),
        cmocka_unit_test(test_admit_reads_the_pixel_query_with_the_same_rules),
        cmocka_unit_test(test_admit_charges_every_event_and_refuses_a_batch_above_the_burst),
        cmocka_unit_test(test_admit_ignores_prefetches_and_bots_after_the_rate_limit),
        cmocka_unit_test(test_admit_bot_cache_agrees_with_the_list),
        cmocka_unit_test(test_admit_records_every_end_in_one_place),
    };

    return cmocka_run_group_tests_name("admit", tests, NULL, NULL);
}
