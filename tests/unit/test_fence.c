/* test_fence.c -- Redis's clock seen from the collector, the fences of write units, and the
 * answer each fate of a unit earns (503: not counted; 504: unknown). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "tally/error.h"
#include "tally/fence.h"
#include "unit.h"

/* A TIME reply: [seconds, microseconds] as bulk strings. */
static redisReply *time_reply(const char *s, const char *us)
{
    redisReply *r = reply_array(2);

    r->element[0] = reply_text(REDIS_REPLY_STRING, s, strlen(s));
    r->element[1] = reply_text(REDIS_REPLY_STRING, us, strlen(us));
    return r;
}

static void test_fence_reads_a_time_reply(void **state)
{
    struct tally_clock c = {0};
    redisReply *r = time_reply("1764950000", "123999");

    (void)state;
    assert_int_equal(tally_clock_take(&c, r, 5000, 5003), 0);
    assert_true(c.known);
    assert_int_equal(c.redis_ms, 1764950000123);
    assert_int_equal(c.sent_ms, 5000);
    assert_int_equal(c.recv_ms, 5003);
    freeReplyObject(r);
}

static void test_fence_refuses_what_is_not_a_time_reply(void **state)
{
    static const struct {
        const char *s, *us;
    } bad[] = {
        {"", "1"},   {"17x", "1"}, {"1", "1000000"},
        {"-1", "5"}, {"1", "-5"},  {"1234567890123456789", "0"},
    };
    struct tally_clock c = {0};
    redisReply *r;

    (void)state;
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        r = time_reply(bad[i].s, bad[i].us);
        assert_int_equal(tally_clock_take(&c, r, 0, 1), TALLY_EREDIS);
        freeReplyObject(r);
    }
    assert_int_equal(tally_clock_take(&c, NULL, 0, 1), TALLY_EREDIS);
    r = reply_int(1764950000);
    assert_int_equal(tally_clock_take(&c, r, 0, 1), TALLY_EREDIS);
    freeReplyObject(r);
    r = reply_array(1);
    r->element[0] = reply_text(REDIS_REPLY_STRING, S("1764950000"));
    assert_int_equal(tally_clock_take(&c, r, 0, 1), TALLY_EREDIS);
    freeReplyObject(r);
    /* An answer before its question: the monotonic clock is broken, the sample useless. */
    r = time_reply("1764950000", "0");
    assert_int_equal(tally_clock_take(&c, r, 10, 9), TALLY_EREDIS);
    freeReplyObject(r);
    assert_false(c.known);
}

/* Redis read its clock at some instant between sending and receiving: wherever that was,
 * the floor never passes the true clock, and it trails it by the round trip at most (plus the
 * drift allowance and a millisecond of rounding). */
static void test_fence_floor_never_passes_redis_clock(void **state)
{
    static const int64_t true_offset = 1764950000000 - 100000; /* Redis = monotonic + this */
    static const uint64_t sent = 100000;
    static const uint64_t rtts[] = {0, 1, 7, 250, 3000};
    static const uint64_t later[] = {0, 1, 999, 1000, 20000, 600000};

    (void)state;
    for (size_t i = 0; i < N_ELEMS(rtts); i++)
        for (uint64_t at = sent; at <= sent + rtts[i]; at += rtts[i] > 0 ? rtts[i] : 1) {
            /* Redis read its clock at AT. */
            struct tally_clock c = {.known = true,
                                    .redis_ms = (int64_t)at + true_offset,
                                    .sent_ms = sent,
                                    .recv_ms = sent + rtts[i]};

            for (size_t k = 0; k < N_ELEMS(later); k++) {
                uint64_t t = c.recv_ms + later[k];
                int64_t truth = (int64_t)t + true_offset, floor = tally_clock_floor(&c, t);
                int64_t slack = (int64_t)rtts[i] + (int64_t)later[k] / 1000 + 1;

                if (floor >= truth || truth - floor > slack) {
                    print_error("rtt %llu read at +%llu, %llu ms later: floor %lld, "
                                "truth %lld\n",
                                (unsigned long long)rtts[i], (unsigned long long)(at - sent),
                                (unsigned long long)later[k], (long long)floor, (long long)truth);
                    fail();
                }
            }
            if (rtts[i] == 0)
                break;
        }
}

/* Drift: 1 ms per second of the sample's age, at 1000 ppm, and 1 ms of rounding. */
static void test_fence_floor_allows_for_drift(void **state)
{
    static const struct {
        uint64_t age;
        int64_t want; /* floor - redis_ms */
    } cases[] = {
        {0, -1}, {1, 0}, {999, 998}, {1000, 998}, {2000, 1997}, {60000, 59939},
    };
    struct tally_clock c = {.known = true, .redis_ms = 1764950000000, .sent_ms = 10, .recv_ms = 12};

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_clock_floor(&c, 12 + cases[i].age) - c.redis_ms, cases[i].want);
}

/* The fence falls TALLY_FENCE_MARGIN_MS before the first answer, on the floor of Redis's
 * clock: when the answer goes out, Redis's clock has passed it, so a copy still queued
 * cannot run after the answer. */
static void test_fence_falls_before_the_answer(void **state)
{
    struct tally_clock c = {
        .known = true, .redis_ms = 1764950000000, .sent_ms = 1000, .recv_ms = 1004};
    uint64_t answer_by = 1004 + 1500;
    int64_t fence = tally_fence_at(&c, answer_by);

    (void)state;
    assert_int_equal(fence, tally_clock_floor(&c, answer_by - TALLY_FENCE_MARGIN_MS));
    assert_int_equal(fence, 1764950000000 + 1500 - TALLY_FENCE_MARGIN_MS - 2);
    /* Below Redis's clock at the answer, wherever in the round trip it was read (at the
     * end of it, the clock reads the least then). */
    assert_true(fence < 1764950000000 + 1500);
}

/* A cluster journal's units must arrive a margin before others may find its heartbeat stale:
 * its last confirmed heartbeat, sent at 10000, scored at the earliest with the registry
 * master's clock then, so stale no earlier than 10000 + 5000 on any clock that keeps time. */
static void test_fence_journal_by_falls_before_the_heartbeat_goes_stale(void **state)
{
    (void)state;
    assert_int_equal(tally_fence_journal_by(10000, 5000),
                     10000 + 5000 - TALLY_FENCE_GONE_MARGIN_MS);
    assert_int_equal(TALLY_FENCE_GONE_MARGIN_MS, 1000);
    assert_int_equal(tally_fence_journal_by(10000, 5000), 14000);
}

/* A journal's unit is fenced by the earlier of its answer's time and the journal's, each on
 * the floor of the journal's Redis's clock, TALLY_FENCE_MARGIN_MS before. */
static void test_fence_journal_at_takes_the_earlier_time(void **state)
{
    struct tally_clock c = {
        .known = true, .redis_ms = 1764950000000, .sent_ms = 1000, .recv_ms = 1004};
    static const struct {
        uint64_t answer_by, journal_by, by;
    } cases[] = {
        {4004, 5004, 4004}, /* the answer first: as any unit */
        {5004, 4004, 4004}, /* the journal's time first */
        {4004, 4004, 4004},
        {4004, UINT64_MAX, 4004}, /* one Redis: no journal's time */
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_fence_journal_at(&c, cases[i].answer_by, cases[i].journal_by),
                         tally_fence_at(&c, cases[i].by));
    assert_int_equal(tally_fence_journal_at(&c, 5004, 4004),
                     1764950000000 + 3000 - TALLY_FENCE_MARGIN_MS - 3);
    /* No journal's time (not registered yet, or stopping): refused whenever it arrives. */
    assert_int_equal(tally_fence_journal_at(&c, 4004, 0), 0);
}

/* A sample held back (its round trip far longer) does not replace a recent one; an older
 * one is replaced whatever the round trip. */
static void test_fence_keeps_a_sharp_sample_over_a_stalled_one(void **state)
{
    struct tally_clock c = {0};
    redisReply *fast = time_reply("1000", "0"), *slow = time_reply("1002", "500000");

    (void)state;
    assert_int_equal(tally_clock_take(&c, fast, 100, 102), 0);
    /* 2.5 s round trip, 2.4 s after: dropped. */
    assert_int_equal(tally_clock_take(&c, slow, 100, 2500), 0);
    assert_int_equal(c.redis_ms, 1000000);
    assert_int_equal(c.recv_ms, 102);
    /* A round trip within 4x + the margin: taken. */
    assert_int_equal(tally_clock_take(&c, slow, 2475, 2500), 0);
    assert_int_equal(c.redis_ms, 1002500);
    assert_int_equal(c.recv_ms, 2500);
    /* Once the held sample is TALLY_CLOCK_KEEP_MS old, even a slow one is taken. */
    assert_int_equal(
        tally_clock_take(&c, fast, 2500 + TALLY_CLOCK_KEEP_MS - 2000, 2500 + TALLY_CLOCK_KEEP_MS),
        0);
    assert_int_equal(c.redis_ms, 1000000);
    freeReplyObject(fast);
    freeReplyObject(slow);
}

static void test_fence_open_only_before_the_margin(void **state)
{
    static const struct {
        uint64_t now, answer_by;
        bool open;
    } cases[] = {
        {1000, 2500, true},  {2479, 2500, true},
        {2480, 2500, false}, /* its fence would be now: refused for sure */
        {2500, 2500, false}, {3000, 2500, false},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_fence_open(cases[i].now, cases[i].answer_by), cases[i].open);
}

/* 503 only for what surely did not and will not run; 504 for what may have. */
static void test_fence_answers_each_fate(void **state)
{
    static const struct {
        enum tally_unit_fate fate;
        int status;
    } cases[] = {
        {TALLY_UNIT_APPLIED, 0},
        {TALLY_UNIT_UNSENT, TALLY_EUNAVAIL},
        {TALLY_UNIT_REFUSED, TALLY_EREDIS},
        {TALLY_UNIT_FENCED, TALLY_ETIMEDOUT},
        {TALLY_UNIT_NO_REPLY, TALLY_EUNKNOWN},
        {TALLY_UNIT_BROKEN, TALLY_EUNKNOWN},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_unit_status(cases[i].fate), cases[i].status);
}

static void test_fence_answers_a_write_in_parts(void **state)
{
    static const struct {
        unsigned applied, failed, unknown;
        int status;
    } cases[] = {
        {1, 0, 0, 0},
        {3, 0, 0, 0},
        {0, 1, 0, TALLY_EUNAVAIL},
        {0, 2, 0, TALLY_EUNAVAIL},
        {0, 0, 1, TALLY_EUNKNOWN},
        {2, 1, 0, TALLY_EUNKNOWN}, /* written in part: neither answer is true */
        {2, 0, 1, TALLY_EUNKNOWN},
        {0, 1, 1, TALLY_EUNKNOWN},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(
            tally_write_status(cases[i].applied, cases[i].failed, cases[i].unknown, TALLY_EUNAVAIL),
            cases[i].status);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fence_reads_a_time_reply),
        cmocka_unit_test(test_fence_refuses_what_is_not_a_time_reply),
        cmocka_unit_test(test_fence_floor_never_passes_redis_clock),
        cmocka_unit_test(test_fence_floor_allows_for_drift),
        cmocka_unit_test(test_fence_falls_before_the_answer),
        cmocka_unit_test(test_fence_journal_by_falls_before_the_heartbeat_goes_stale),
        cmocka_unit_test(test_fence_journal_at_takes_the_earlier_time),
        cmocka_unit_test(test_fence_keeps_a_sharp_sample_over_a_stalled_one),
        cmocka_unit_test(test_fence_open_only_before_the_margin),
        cmocka_unit_test(test_fence_answers_each_fate),
        cmocka_unit_test(test_fence_answers_a_write_in_parts),
    };

    return cmocka_run_group_tests_name("fence", tests, NULL, NULL);
}
