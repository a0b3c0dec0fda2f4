/* test_redis.c -- tally_redis_parse_redirect(), the pure parser of Redis Cluster's MOVED and
 * ASK errors, tally_redis_error_in() (an error's code among some), and the slot map read from CLUSTER SLOTS. The router's connections need a
 * cluster and are covered by the integration tests. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/keys.h"
#include "tally/redis.h"
#include "unit.h"

struct redirect_case {
    const char *err;
    bool ask;
    unsigned slot;
    const char *host;
    unsigned port;
};

static void expect_redirect(const char *err, size_t len, const struct redirect_case *want)
{
    struct tally_hostport to;
    bool ask = !want->ask;
    unsigned slot = 99999;
    int rc;

    memset(&to, 'X', sizeof(to));
    rc = tally_redis_parse_redirect(err, len, &ask, &slot, &to);
    if (rc != 0) {
        print_error("'%.*s': got %d, want 0\n", (int)len, err, rc);
        fail();
    }
    if (ask != want->ask || slot != want->slot || to.port != want->port ||
        memchr(to.host, '\0', sizeof(to.host)) == NULL || strcmp(to.host, want->host) != 0) {
        print_error("'%.*s': got ask=%d slot=%u host='%.40s' port=%u, want ask=%d slot=%u "
                    "host='%.40s' port=%u\n",
                    (int)len, err, ask, slot, to.host, to.port, want->ask, want->slot, want->host,
                    want->port);
        fail();
    }
}

static void test_parse_redirect_reads_moved_and_ask(void **state)
{
    static const struct redirect_case cases[] = {
        {"MOVED 3999 127.0.0.1:6381", false, 3999, "127.0.0.1", 6381},
        {"ASK 3999 127.0.0.1:6381", true, 3999, "127.0.0.1", 6381},
        {"MOVED 0 10.0.0.5:7000", false, 0, "10.0.0.5", 7000},
        {"MOVED 16383 10.0.0.5:7000", false, 16383, "10.0.0.5", 7000},
        {"ASK 1 10.0.0.5:1", true, 1, "10.0.0.5", 1},
        {"MOVED 1 10.0.0.5:65535", false, 1, "10.0.0.5", 65535},
        /* IPv6: the last ':' separates the port. */
        {"MOVED 1 ::1:7000", false, 1, "::1", 7000},
        {"ASK 12182 2001:db8::17:6379", true, 12182, "2001:db8::17", 6379},
        {"MOVED 5 fe80::1:2:3:4:30001", false, 5, "fe80::1:2:3:4", 30001},
        /* Hostnames (cluster-announce-hostname). */
        {"MOVED 866 redis-2.redis.svc.cluster.local:6379", false, 866,
         "redis-2.redis.svc.cluster.local", 6379},
        {"ASK 15495 node-c:7002", true, 15495, "node-c", 7002},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        expect_redirect(cases[i].err, strlen(cases[i].err), &cases[i]);
}

static void test_parse_redirect_takes_a_host_of_up_to_255_bytes(void **state)
{
    char err[300], host[TALLY_HOST_MAX + 1];
    struct redirect_case want = {err, false, 42, host, 6379};

    (void)state;
    memset(host, 'h', TALLY_HOST_MAX);
    host[TALLY_HOST_MAX] = '\0';
    snprintf(err, sizeof(err), "MOVED 42 %s:6379", host);
    expect_redirect(err, strlen(err), &want);
}

static void test_parse_redirect_refuses_anything_else(void **state)
{
    static const char *const cases[] = {
        "",
        "MOVED",
        "MOVED ",
        "ASK",
        "ASK ",
        "MOVED 1",
        "MOVED 1 ",
        "MOVED x 1.2.3.4:1",
        "MOVED  1.2.3.4:1",      /* no slot */
        "MOVED 1x 1.2.3.4:1",
        "MOVED 16384 h:1",       /* slots are 0..16383 */
        "MOVED 99999999999999999999999 h:1",
        "MOVED -1 h:1",
        "MOVED 1 h",             /* no port */
        "MOVED 1 h:",
        "MOVED 1 h:0",
        "MOVED 1 h:65536",
        "MOVED 1 h:99999999999999999999999",
        "MOVED 1 h:-1",
        "MOVED 1 h:80x",
        "MOVED 1 h:80 ",
        "MOVED 1 :80",           /* no host */
        "ERR something",
        "CLUSTERDOWN The cluster is down",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "MOVEDX 1 h:1",
        "moved 1 h:1",
        "ASKING 1 h:1",
        " MOVED 1 h:1",
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct tally_hostport to;
        bool ask;
        unsigned slot;
        int rc = tally_redis_parse_redirect(cases[i], strlen(cases[i]), &ask, &slot, &to);

        if (rc != TALLY_EINVAL) {
            print_error("'%s': got %d, want TALLY_EINVAL\n", cases[i], rc);
            fail();
        }
    }
}

static void test_parse_redirect_refuses_a_host_longer_than_255_bytes(void **state)
{
    char err[600], host[TALLY_HOST_MAX + 2];
    struct tally_hostport to;
    bool ask;
    unsigned slot;

    (void)state;
    memset(host, 'h', TALLY_HOST_MAX + 1);
    host[TALLY_HOST_MAX + 1] = '\0';
    snprintf(err, sizeof(err), "MOVED 42 %s:6379", host);
    assert_int_equal(tally_redis_parse_redirect(err, strlen(err), &ask, &slot, &to), TALLY_EINVAL);
    memset(err, 'h', sizeof(err));
    memcpy(err, "ASK 7 ", 6);
    memcpy(err + sizeof(err) - 5, ":6379", 5);
    assert_int_equal(tally_redis_parse_redirect(err, sizeof(err), &ask, &slot, &to), TALLY_EINVAL);
}

/* The error is LEN bytes: what follows them in memory is not part of it (redis.h gives the
 * parser a length, so it must not run on into the next bytes). */
static void test_parse_redirect_reads_only_len_bytes(void **state)
{
    static const char text[] = "MOVED 3999 127.0.0.1:63819";
    static const struct redirect_case want = {text, false, 3999, "127.0.0.1", 6381};

    (void)state;
    expect_redirect(text, strlen(text) - 1, &want);
}

/* ---- The slot map ---- */

/* CLUSTER SLOTS with N masters at HOST:PORT[i], owning equal ranges, each with a replica. */
static redisReply *slots_reply(size_t n, const char *host, const unsigned *port)
{
    redisReply *r = reply_array(n);

    for (size_t i = 0; i < n; i++) {
        redisReply *e = reply_array(4), *m = reply_array(3), *rep = reply_array(3);

        e->element[0] = reply_int((long long)(i * TALLY_SLOTS / n));
        e->element[1] = reply_int((long long)((i + 1) * TALLY_SLOTS / n) - 1);
        m->element[0] = reply_text(REDIS_REPLY_STRING, host, strlen(host));
        m->element[1] = reply_int(port[i]);
        m->element[2] = reply_text(REDIS_REPLY_STRING, S("id"));
        rep->element[0] = reply_text(REDIS_REPLY_STRING, host, strlen(host));
        rep->element[1] = reply_int(port[i] + 10000);
        rep->element[2] = reply_text(REDIS_REPLY_STRING, S("id"));
        e->element[2] = m;
        e->element[3] = rep;
        r->element[i] = e;
    }
    return r;
}

static const struct tally_hostport *slot_owner(const struct tally_slot_map *m, unsigned slot)
{
    assert_true(m->slots[slot] >= 0);
    assert_int_not_equal(m->state[m->slots[slot]], TALLY_NODE_FREE);
    return &m->addr[m->slots[slot]];
}

static size_t slot_map_nodes(const struct tally_slot_map *m)
{
    size_t n = 0;

    for (int i = 0; i < TALLY_REDIS_NODES_MAX; i++)
        n += m->state[i] != TALLY_NODE_FREE;
    return n;
}

static void test_slot_map_forgets_nodes_that_left_however_many_come_and_go(void **state)
{
    static struct tally_slot_map m;
    struct tally_hostport seed = {"127.0.0.1", 7000}, asked = seed;
    int added[TALLY_REDIS_NODES_MAX], gone[TALLY_REDIS_NODES_MAX];
    size_t n_added, n_gone, total_added = 0, total_gone = 0;
    bool is_new;

    (void)state;
    tally_slot_map_init(&m);
    assert_int_equal(tally_slot_map_node(&m, &seed, TALLY_NODE_SEED, &is_new), 0);
    assert_true(is_new);
    /* 300 maps, each with three masters of which one is new every time: 300 addresses pass
     * through a table of 64 entries, and every map is read whole. */
    for (unsigned round = 0; round < 300; round++) {
        unsigned port[3] = {8000 + round, 8001 + round, 8002 + round};
        redisReply *r = slots_reply(3, round % 2 ? "10.0.0.1" : "", port);

        assert_int_equal(tally_slot_map_read(&m, r, &asked, added, &n_added, gone, &n_gone), 0);
        freeReplyObject(r);
        total_added += n_added;
        total_gone += n_gone;
        for (unsigned k = 0; k < 3; k++) {
            const struct tally_hostport *a = slot_owner(&m, k * TALLY_SLOTS / 3);

            assert_int_equal(a->port, port[k]);
            assert_string_equal(a->host, round % 2 ? "10.0.0.1" : "127.0.0.1");
            assert_ptr_equal(slot_owner(&m, (k + 1) * TALLY_SLOTS / 3 - 1), a);
        }
        /* The seed, the three masters, what left at the map before: no more. */
        assert_true(slot_map_nodes(&m) <= 1 + 3 + 3);
        assert_int_equal(m.state[0], TALLY_NODE_SEED);
        for (size_t i = 0; i < n_gone; i++)
            assert_int_not_equal(m.state[gone[i]] == TALLY_NODE_FREE ||
                                     m.state[gone[i]] == TALLY_NODE_LIVE,
                                 0);
    }
    /* Each round adds one address (three the first time, and hosts alternate), each is
     * forgotten after two maps without it. */
    assert_true(total_added >= 300);
    assert_int_equal(total_added - total_gone, slot_map_nodes(&m) - 1);
}

static void test_slot_map_keeps_a_node_that_comes_back_and_a_seed_always(void **state)
{
    static struct tally_slot_map m;
    struct tally_hostport seed = {"127.0.0.1", 7000};
    int added[TALLY_REDIS_NODES_MAX], gone[TALLY_REDIS_NODES_MAX];
    size_t n_added, n_gone;
    unsigned ab[2] = {7001, 7002}, a[1] = {7001};
    redisReply *both = slots_reply(2, "127.0.0.1", ab), *one = slots_reply(1, "127.0.0.1", a);
    bool is_new;

    (void)state;
    tally_slot_map_init(&m);
    tally_slot_map_node(&m, &seed, TALLY_NODE_SEED, &is_new);
    assert_int_equal(tally_slot_map_read(&m, both, &seed, added, &n_added, gone, &n_gone), 0);
    assert_int_equal(n_added, 2);
    assert_int_equal(n_gone, 0);
    /* 7002 leaves, comes back before it is forgotten: the same entry, nothing reconnected. */
    assert_int_equal(tally_slot_map_read(&m, one, &seed, added, &n_added, gone, &n_gone), 0);
    assert_int_equal(n_added + n_gone, 0);
    assert_int_equal(tally_slot_map_read(&m, both, &seed, added, &n_added, gone, &n_gone), 0);
    assert_int_equal(n_added + n_gone, 0);
    /* Two maps without it: forgotten. The seed, named by none, stays. */
    assert_int_equal(tally_slot_map_read(&m, one, &seed, added, &n_added, gone, &n_gone), 0);
    assert_int_equal(tally_slot_map_read(&m, one, &seed, added, &n_added, gone, &n_gone), 0);
    assert_int_equal(n_gone, 1);
    assert_int_equal(m.addr[gone[0]].port, 7002);
    assert_int_equal(m.state[gone[0]], TALLY_NODE_FREE);
    assert_int_equal(m.state[0], TALLY_NODE_SEED);
    assert_int_equal(slot_map_nodes(&m), 2);
    assert_int_equal(slot_owner(&m, TALLY_SLOTS - 1)->port, 7001);
    freeReplyObject(both);
    freeReplyObject(one);
}

static void test_slot_map_refuses_a_bad_reply_and_keeps_the_map(void **state)
{
    static struct tally_slot_map m;
    struct tally_hostport seed = {"127.0.0.1", 7000};
    int added[TALLY_REDIS_NODES_MAX], gone[TALLY_REDIS_NODES_MAX];
    size_t n_added, n_gone;
    unsigned ab[2] = {7001, 7002};
    redisReply *good = slots_reply(2, "127.0.0.1", ab), *bad = slots_reply(2, "127.0.0.1", ab);
    redisReply *err = reply_text(REDIS_REPLY_ERROR, S("ERR cluster support disabled"));
    bool is_new;

    (void)state;
    tally_slot_map_init(&m);
    tally_slot_map_node(&m, &seed, TALLY_NODE_SEED, &is_new);
    assert_int_equal(tally_slot_map_read(&m, good, &seed, added, &n_added, gone, &n_gone), 0);
    bad->element[1]->element[1]->integer = TALLY_SLOTS; /* a range past the last slot */
    assert_int_equal(tally_slot_map_read(&m, bad, &seed, added, &n_added, gone, &n_gone),
                     TALLY_EREDIS);
    assert_int_equal(tally_slot_map_read(&m, err, &seed, added, &n_added, gone, &n_gone),
                     TALLY_EREDIS);
    assert_int_equal(n_added + n_gone, 0);
    assert_int_equal(slot_owner(&m, 0)->port, 7001);
    assert_int_equal(slot_owner(&m, TALLY_SLOTS - 1)->port, 7002);
    freeReplyObject(good);
    freeReplyObject(bad);
    freeReplyObject(err);
}

/* ---- The version of Redis ---- */

static void test_slot_map_gives_each_master_in_turn_a_bucket_it_owns(void **state)
{
    struct tally_slot_map m;
    struct tally_hostport seed = {"127.0.0.1", 7000};
    unsigned port[3] = {7001, 7002, 7003}, bucket, seen[3] = {0};
    redisReply *r = slots_reply(3, "", port);
    int added[TALLY_REDIS_NODES_MAX], gone[TALLY_REDIS_NODES_MAX];
    size_t n_added, n_gone;

    (void)state;
    tally_slot_map_init(&m);
    assert_false(tally_slot_map_master_bucket(&m, 0, &bucket)); /* no map yet */
    assert_int_equal(tally_slot_map_read(&m, r, &seed, added, &n_added, gone, &n_gone), 0);
    /* Six journals: two on each master, each in a bucket whose slot it owns. */
    for (unsigned k = 0; k < 6; k++) {
        const struct tally_hostport *a;

        assert_true(tally_slot_map_master_bucket(&m, k, &bucket));
        assert_true(bucket < TALLY_BUCKETS);
        a = slot_owner(&m, tally_key_bucket_slot(bucket));
        assert_int_equal(a->port, port[k % 3]);
        seen[k % 3]++;
    }
    assert_int_equal(seen[0] + seen[1] + seen[2], 6);
    /* A slot with no master: no choice. */
    m.slots[tally_key_bucket_slot(200)] = -1;
    assert_false(tally_slot_map_master_bucket(&m, 0, &bucket));
    freeReplyObject(r);
}

static void test_parse_version_reads_info_server(void **state)
{
    static const struct {
        const char *info;
        int rc;
        unsigned v[3];
        bool ok;
    } cases[] = {
        {"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n", 0, {7, 0, 15}, true},
        {"# Server\r\nredis_version:6.2.0\r\n", 0, {6, 2, 0}, false},
        {"redis_version:7.2.4\r\n", 0, {7, 2, 4}, true},
        {"redis_version:8.0.0", 0, {8, 0, 0}, true},
        {"redis_version:5.0.14\r\n", 0, {5, 0, 14}, false},
        {"redis_version:6.9.99\r\n", 0, {6, 9, 99}, false},
        {"# Server\r\nxredis_version:7.0.0\r\nredis_version:6.0.0\r\n", 0, {6, 0, 0}, false},
        {"# Server\r\nredis_mode:standalone\r\n", TALLY_EINVAL, {0, 0, 0}, false},
        {"redis_version:7\r\n", TALLY_EINVAL, {0, 0, 0}, false},
        {"redis_version:7.0\r\n", TALLY_EINVAL, {0, 0, 0}, false},
        {"redis_version:seven\r\n", TALLY_EINVAL, {0, 0, 0}, false},
        {"", TALLY_EINVAL, {0, 0, 0}, false},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned v[3] = {0, 0, 0};
        int rc = tally_redis_parse_version(cases[i].info, strlen(cases[i].info), v);

        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_memory_equal(v, cases[i].v, sizeof(v));
            assert_int_equal(tally_redis_version_ok(v), cases[i].ok);
        }
    }
}

/* An error is one of the codes given when its text begins with one of them: the code and what
 * follows it, or the code alone; not a code that only appears later, a prefix of a code, or
 * another case. */
static void test_error_in_matches_the_code_an_error_begins_with(void **state)
{
    static const char *const codes[] = {"MISCONF", "NOREPLICAS", "READONLY"};
    static const struct {
        const char *err;
        bool in;
    } cases[] = {
        {"MISCONF Redis is configured to save RDB snapshots, but it's currently unable", true},
        {"NOREPLICAS Not enough good replicas to write.", true},
        {"READONLY You can't write against a read only replica.", true},
        {"READONLY", true},
        {"ERR Error running script: READONLY You can't write", false},
        {"READ", false},
        {"readonly you can't write", false},
        {"OOM command not allowed when used memory > 'maxmemory'.", false},
        {"", false},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        assert_int_equal(tally_redis_error_in(cases[i].err, strlen(cases[i].err), codes,
                                              N_ELEMS(codes)),
                         cases[i].in);
    /* LEN bounds the text: a code past it does not count. */
    assert_false(tally_redis_error_in("READONLY", 4, codes, N_ELEMS(codes)));
    assert_false(tally_redis_error_in("MISCONF", 7, codes, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_redirect_reads_moved_and_ask),
        cmocka_unit_test(test_parse_redirect_takes_a_host_of_up_to_255_bytes),
        cmocka_unit_test(test_parse_redirect_refuses_anything_else),
        cmocka_unit_test(test_parse_redirect_refuses_a_host_longer_than_255_bytes),
        cmocka_unit_test(test_parse_redirect_reads_only_len_bytes),
        cmocka_unit_test(test_slot_map_forgets_nodes_that_left_however_many_come_and_go),
        cmocka_unit_test(test_slot_map_keeps_a_node_that_comes_back_and_a_seed_always),
        cmocka_unit_test(test_slot_map_refuses_a_bad_reply_and_keeps_the_map),
        cmocka_unit_test(test_slot_map_gives_each_master_in_turn_a_bucket_it_owns),
        cmocka_unit_test(test_parse_version_reads_info_server),
        cmocka_unit_test(test_error_in_matches_the_code_an_error_begins_with),
    };

    return cmocka_run_group_tests_name("redis", tests, NULL, NULL);
}
