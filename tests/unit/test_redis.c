/* test_redis.c -- tally_redis_parse_redirect(), the pure parser of Redis Cluster's MOVED and
 * ASK errors. The router itself needs a cluster and is covered by the integration tests. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_redirect_reads_moved_and_ask),
        cmocka_unit_test(test_parse_redirect_takes_a_host_of_up_to_255_bytes),
        cmocka_unit_test(test_parse_redirect_refuses_anything_else),
        cmocka_unit_test(test_parse_redirect_refuses_a_host_longer_than_255_bytes),
        cmocka_unit_test(test_parse_redirect_reads_only_len_bytes),
    };

    return cmocka_run_group_tests_name("redis", tests, NULL, NULL);
}
