/* test_config.c -- flags, environment, defaults and --help of config.c, with no real
 * environment: every test passes its variables as a table. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/config.h"
#include "tally/error.h"

/* ---- Helpers ---- */

struct env_var {
    const char *name, *value;
};

/* The getenv of these tests: a table ended by a NULL name (or no table at all). */
static const char *table_getenv(const char *name, void *arg)
{
    const struct env_var *v = arg;

    for (; v != NULL && v->name != NULL; v++)
        if (strcmp(v->name, name) == 0)
            return v->value;
    return NULL;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_ARGS ((const char *const[]){NULL})
#define NCPU 4

/* Run tally_config_parse() on "tallyd ARGS..." with ENV, as the daemon would. */
static int parse_env(struct tally_config *cfg, const struct env_var *env, char *err, size_t errlen,
                     const char *const *args)
{
    static char store[16384]; /* copies: argv holds writable strings */
    char *argv[24];
    size_t used = 0;
    int argc = 0;

    memcpy(store, "tallyd", sizeof("tallyd"));
    argv[argc++] = store;
    used = sizeof("tallyd");
    for (; *args != NULL; args++) {
        size_t n = strlen(*args) + 1;

        assert_true(used + n <= sizeof(store) && argc < 23);
        memcpy(store + used, *args, n);
        argv[argc++] = store + used;
        used += n;
    }
    argv[argc] = NULL;
    return tally_config_parse(cfg, argc, argv, table_getenv, (void *)env, NCPU, err, errlen);
}

static int parse(struct tally_config *cfg, char *err, size_t errlen, const char *const *args)
{
    return parse_env(cfg, NULL, err, errlen, args);
}

/* S repeated to LEN bytes, in a static buffer of its own for each SLOT. */
static const char *repeat(int slot, const char *s, size_t len)
{
    static char bufs[3][600];
    char *b = bufs[slot];
    size_t n = strlen(s);

    assert_true(len < sizeof(bufs[0]));
    for (size_t i = 0; i < len; i++)
        b[i] = s[i % n];
    b[len] = '\0';
    return b;
}

/* ITEM, N times, joined by commas. */
static const char *list_of(int slot, const char *item, size_t n)
{
    static char bufs[2][4096];
    char *b = bufs[slot];
    size_t used = 0;

    for (size_t i = 0; i < n; i++) {
        int k = snprintf(b + used, sizeof(bufs[0]) - used, "%s%s", i ? "," : "", item);

        assert_true(k > 0 && (size_t)k < sizeof(bufs[0]) - used);
        used += (size_t)k;
    }
    return b;
}

/* ADDR (IPv4 or IPv6 text) as the 16 bytes the server hands to tally_config_trusted(). */
static void addr16(const char *text, uint8_t out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, text, out + 12) == 1) {
        out[10] = out[11] = 0xff;
        return;
    }
    assert_int_equal(inet_pton(AF_INET6, text, out), 1);
}

static void assert_prefix(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, strlen(prefix)) != 0)
        fail_msg("error \"%s\" does not start with \"%s\"", s, prefix);
}

/* ---- Defaults ---- */

static void assert_defaults(const struct tally_config *c, uint32_t threads)
{
    assert_string_equal(c->listen.host, "127.0.0.1");
    assert_int_equal(c->listen.port, 8080);
    assert_false(c->redis.is_unix);
    assert_string_equal(c->redis.path, "");
    assert_string_equal(c->redis.addr.host, "127.0.0.1");
    assert_int_equal(c->redis.addr.port, 6379);
    assert_string_equal(c->redis.username, "");
    assert_string_equal(c->redis.password, "");
    assert_int_equal(c->redis.db, 0);
    assert_int_equal(c->n_cluster, 0);
    assert_string_equal(c->prefix, "tally:");
    assert_string_equal(c->token, "");
    assert_true(c->any_origin);
    assert_int_equal(c->n_origins, 0);
    assert_int_equal(c->rate_limit, 50);
    assert_int_equal(c->threads, threads);
    assert_int_equal(c->n_trust, 0);
    assert_int_equal(c->view_window, 1800);
    assert_int_equal(c->redis_timeout_ms, 2000);
    assert_int_equal(c->hold_ms, 1000);
    assert_int_equal(c->max_held, 10000);
    assert_int_equal(c->fold_interval_ms, 200);
    assert_int_equal(c->journal_max, 200000);
    assert_int_equal(c->follow_reads_ms, 10000);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->live_max, 5000);
    assert_int_equal(c->log_level, TALLY_LOG_INFO);
    assert_false(c->demo);
    assert_false(c->healthcheck);
}

static void test_config_defaults_fill_every_field(void **state)
{
    struct tally_config cfg;
    char err[256] = "stale";

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err), NO_ARGS), TALLY_CONFIG_RUN);
    assert_string_equal(err, "");
    assert_defaults(&cfg, NCPU);
}

static void test_config_without_getenv_every_variable_is_unset(void **state)
{
    char arg0[] = "tallyd", *argv[] = {arg0, NULL};
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(tally_config_parse(&cfg, 1, argv, NULL, NULL, 2, err, sizeof(err)),
                     TALLY_CONFIG_RUN);
    assert_defaults(&cfg, 2);
    assert_int_equal(tally_config_parse(&cfg, 0, NULL, NULL, NULL, 2, err, sizeof(err)),
                     TALLY_CONFIG_RUN);
    assert_defaults(&cfg, 2);
}

static void test_config_threads_default_is_the_cores_within_bounds(void **state)
{
    static const struct {
        unsigned ncpu;
        uint32_t threads;
    } cases[] = {{0, 1}, {1, 1}, {7, 7}, {64, 64}, {65, 64}, {512, 64}};
    char arg0[] = "tallyd", *argv[] = {arg0, NULL};
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(
            tally_config_parse(&cfg, 1, argv, NULL, NULL, cases[i].ncpu, err, sizeof(err)),
            TALLY_CONFIG_RUN);
        assert_int_equal(cfg.threads, cases[i].threads);
    }
}

/* ---- Every flag, both forms, and its variable ---- */

static void check_listen(const struct tally_config *c)
{
    assert_string_equal(c->listen.host, "0.0.0.0");
    assert_int_equal(c->listen.port, 9000);
}
static void check_redis(const struct tally_config *c)
{
    assert_string_equal(c->redis.addr.host, "db.internal");
    assert_int_equal(c->redis.addr.port, 6380);
    assert_int_equal(c->redis.db, 3);
}
static void check_cluster(const struct tally_config *c)
{
    assert_int_equal(c->n_cluster, 2);
    assert_string_equal(c->cluster[1].host, "b");
    assert_int_equal(c->cluster[1].port, 7001);
}
static void check_prefix(const struct tally_config *c)
{
    assert_string_equal(c->prefix, "stats:");
}
static void check_token(const struct tally_config *c)
{
    assert_string_equal(c->token, "0123456789abcdef");
}
static void check_origins(const struct tally_config *c)
{
    assert_false(c->any_origin);
    assert_int_equal(c->n_origins, 1);
    assert_string_equal(c->origins[0], "https://news.example");
}
static void check_rate_limit(const struct tally_config *c)
{
    assert_int_equal(c->rate_limit, 0);
}
static void check_threads(const struct tally_config *c)
{
    assert_int_equal(c->threads, 64);
}
static void check_trust(const struct tally_config *c)
{
    assert_int_equal(c->n_trust, 1);
    assert_int_equal(c->trust[0].bits, 104);
}
static void check_view_window(const struct tally_config *c)
{
    assert_int_equal(c->view_window, 0);
}
static void check_redis_timeout(const struct tally_config *c)
{
    assert_int_equal(c->redis_timeout_ms, 100);
}
static void check_hold(const struct tally_config *c)
{
    assert_int_equal(c->hold_ms, 30000);
}
static void check_max_held(const struct tally_config *c)
{
    assert_int_equal(c->max_held, 1);
}
static void check_fold_interval(const struct tally_config *c)
{
    assert_int_equal(c->fold_interval_ms, 500);
}
static void check_follow_reads(const struct tally_config *c)
{
    assert_int_equal(c->follow_reads_ms, 60000);
}
static void check_journal_max(const struct tally_config *c)
{
    assert_int_equal(c->journal_max, 10000000);
}
static void check_max_connections(const struct tally_config *c)
{
    assert_int_equal(c->max_connections, 64);
}
static void check_live_max(const struct tally_config *c)
{
    assert_int_equal(c->live_max, 0);
}
static void check_log_level(const struct tally_config *c)
{
    assert_int_equal(c->log_level, TALLY_LOG_DEBUG);
}
static void check_demo(const struct tally_config *c)
{
    assert_true(c->demo);
}
static void check_healthcheck(const struct tally_config *c)
{
    assert_true(c->healthcheck);
}

static const struct flag_case {
    const char *flag, *env, *value;
    void (*check)(const struct tally_config *);
} flag_cases[] = {
    {"listen", "TALLY_LISTEN", "0.0.0.0:9000", check_listen},
    {"redis", "TALLY_REDIS", "redis://db.internal:6380/3", check_redis},
    {"redis-cluster", "TALLY_REDIS_CLUSTER", "a:7000,b:7001", check_cluster},
    {"prefix", "TALLY_PREFIX", "stats:", check_prefix},
    {"token", "TALLY_TOKEN", "0123456789abcdef", check_token},
    {"allowed-origins", "TALLY_ALLOWED_ORIGINS", "https://news.example", check_origins},
    {"rate-limit", "TALLY_RATE_LIMIT", "0", check_rate_limit},
    {"threads", "TALLY_THREADS", "64", check_threads},
    {"trust-proxy", "TALLY_TRUST_PROXY", "10.0.0.0/8", check_trust},
    {"view-window", "TALLY_VIEW_WINDOW", "0", check_view_window},
    {"redis-timeout", "TALLY_REDIS_TIMEOUT", "100", check_redis_timeout},
    {"hold", "TALLY_HOLD", "30000", check_hold},
    {"max-held", "TALLY_MAX_HELD", "1", check_max_held},
    {"fold-interval", "TALLY_FOLD_INTERVAL", "500", check_fold_interval},
    {"journal-max", "TALLY_JOURNAL_MAX", "10000000", check_journal_max},
    {"follow-reads", "TALLY_FOLLOW_READS", "60000", check_follow_reads},
    {"max-connections", "TALLY_MAX_CONNECTIONS", "64", check_max_connections},
    {"live-max", "TALLY_LIVE_MAX", "0", check_live_max},
    {"log-level", "TALLY_LOG_LEVEL", "debug", check_log_level},
    {"demo", "TALLY_DEMO", "yes", check_demo},
    {"healthcheck", "TALLY_HEALTHCHECK", "yes", check_healthcheck},
};

static void test_config_every_flag_takes_both_forms_and_its_variable(void **state)
{
    static struct tally_config spaced, joined, from_env;
    char err[256], flag[64], eq[128];

    (void)state;
    for (size_t i = 0; i < sizeof(flag_cases) / sizeof(flag_cases[0]); i++) {
        const struct flag_case *fc = &flag_cases[i];
        const struct env_var env[] = {{fc->env, fc->value}, {NULL, NULL}};
        bool is_switch = strcmp(fc->flag, "demo") == 0 || strcmp(fc->flag, "healthcheck") == 0;

        snprintf(flag, sizeof(flag), "--%s", fc->flag);
        snprintf(eq, sizeof(eq), "--%s=%s", fc->flag, fc->value);
        if (is_switch)
            assert_int_equal(parse(&spaced, err, sizeof(err), ARGS(flag)), TALLY_CONFIG_RUN);
        else
            assert_int_equal(parse(&spaced, err, sizeof(err), ARGS(flag, fc->value)),
                             TALLY_CONFIG_RUN);
        assert_int_equal(parse(&joined, err, sizeof(err), ARGS(eq)), TALLY_CONFIG_RUN);
        assert_int_equal(parse_env(&from_env, env, err, sizeof(err), NO_ARGS), TALLY_CONFIG_RUN);
        fc->check(&spaced);
        fc->check(&joined);
        fc->check(&from_env);
        assert_memory_equal(&spaced, &joined, sizeof(spaced));
        assert_memory_equal(&spaced, &from_env, sizeof(spaced));
    }
}

static void test_config_flag_wins_over_its_variable(void **state)
{
    static const struct env_var env[] = {
        {"TALLY_RATE_LIMIT", "7"},
        {"TALLY_PREFIX", "env:"},
        {"TALLY_TRUST_PROXY", "10.0.0.1,10.0.0.2"},
        {"TALLY_DEMO", "true"},
        {"TALLY_REDIS_CLUSTER", "a:1,b:2"},
        {"TALLY_ALLOWED_ORIGINS", "http://a.example,http://b.example"},
        {NULL, NULL},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse_env(&cfg, env, err, sizeof(err),
                               ARGS("--rate-limit", "9", "--trust-proxy=::1", "--demo=no",
                                    "--redis-cluster=c:3", "--allowed-origins=http://c.example")),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.rate_limit, 9);
    assert_string_equal(cfg.prefix, "env:"); /* no flag: the variable stays */
    assert_int_equal(cfg.n_trust, 1);        /* a list flag replaces the variable's list */
    assert_int_equal(cfg.trust[0].bits, 128);
    assert_false(cfg.demo);
    assert_int_equal(cfg.n_cluster, 1);
    assert_string_equal(cfg.cluster[0].host, "c");
    assert_int_equal(cfg.n_origins, 1);
    assert_string_equal(cfg.origins[0], "http://c.example");
}

static void test_config_last_of_a_repeated_flag_wins(void **state)
{
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err),
                           ARGS("--hold", "5", "--hold=6", "--allowed-origins", "http://a.example",
                                "--allowed-origins", "*")),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.hold_ms, 6);
    assert_true(cfg.any_origin);
    assert_int_equal(cfg.n_origins, 0);
}

static void test_config_empty_variable_counts_as_unset(void **state)
{
    static const struct env_var env[] = {
        {"TALLY_TOKEN", ""}, {"TALLY_LISTEN", ""}, {"TALLY_REDIS", ""}, {NULL, NULL}};
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse_env(&cfg, env, err, sizeof(err), ARGS("--redis-cluster", "a:1")),
                     TALLY_CONFIG_RUN);
    assert_string_equal(cfg.token, "");
    assert_int_equal(cfg.listen.port, 8080);
    assert_int_equal(cfg.n_cluster, 1);
}

static void test_config_switch_reads_words_from_its_variable(void **state)
{
    static const struct {
        const char *value;
        bool on;
    } cases[] = {{"1", true},   {"0", false},  {"true", true}, {"false", false}, {"yes", true},
                 {"no", false}, {"YES", true}, {"on", true},   {"off", false}};
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct env_var env[] = {{"TALLY_DEMO", cases[i].value}, {NULL, NULL}};

        assert_int_equal(parse_env(&cfg, env, err, sizeof(err), NO_ARGS), TALLY_CONFIG_RUN);
        assert_int_equal(cfg.demo, cases[i].on);
    }
}

static void test_config_log_levels(void **state)
{
    static const struct {
        const char *value;
        enum tally_log_level level;
    } cases[] = {{"error", TALLY_LOG_ERROR},
                 {"warn", TALLY_LOG_WARN},
                 {"info", TALLY_LOG_INFO},
                 {"debug", TALLY_LOG_DEBUG},
                 {"WARN", TALLY_LOG_WARN}};
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--log-level", cases[i].value)),
                         TALLY_CONFIG_RUN);
        assert_int_equal(cfg.log_level, cases[i].level);
    }
}

/* ---- Bad values ---- */

/* A bad VALUE of one flag, and how the error goes on after "--flag: " or "TALLY_FLAG: ". */
struct bad_value {
    const char *value, *expect;
};

/* Each value is tried as "--flag v", as "--flag=v" and in the variable: the error names the
 * one that was used. */
static void run_bad_values(const char *flag, const struct bad_value *cases, size_t n)
{
    char opt[64], joined[4200], env_name[64], want[256], err[256];
    struct tally_config cfg;

    snprintf(opt, sizeof(opt), "--%s", flag);
    snprintf(env_name, sizeof(env_name), "TALLY_%s", flag);
    for (char *p = env_name; *p != '\0'; p++)
        *p = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    for (size_t i = 0; i < n; i++) {
        const struct env_var env[] = {{env_name, cases[i].value}, {NULL, NULL}};

        snprintf(want, sizeof(want), "%s: %s", opt, cases[i].expect);
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS(opt, cases[i].value)), TALLY_EINVAL);
        assert_prefix(err, want);
        assert_null(strchr(err, '\n'));
        snprintf(joined, sizeof(joined), "%s=%s", opt, cases[i].value);
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS(joined)), TALLY_EINVAL);
        assert_prefix(err, want);
        if (cases[i].value[0] == '\0')
            continue; /* an empty variable is unset, not bad */
        snprintf(want, sizeof(want), "%s: %s", env_name, cases[i].expect);
        assert_int_equal(parse_env(&cfg, env, err, sizeof(err), NO_ARGS), TALLY_EINVAL);
        assert_prefix(err, want);
    }
}

#define RUN_BAD_VALUES(flag, cases) run_bad_values(flag, cases, sizeof(cases) / sizeof(cases[0]))

static void test_config_rejects_bad_listen(void **state)
{
    static const struct bad_value cases[] = {
        {"1.2.3.4", "'1.2.3.4' needs HOST:PORT"},
        {"host:65536", "'host:65536' port must be 0..65535"},
        {"host:http", "'host:http' has a port that is not a number"},
        {"host:", "'host:' needs a port after ':'"},
        {":8080", "':8080' has an empty host"},
        {"::1:8080", "'::1:8080' needs brackets around an IPv6 address"},
        {"[::1:8080", "'[::1:8080' has '[' without ']'"},
        {"[::1]8080", "'[::1]8080' needs ':' after ']'"},
        {"[::1]", "'[::1]' needs HOST:PORT"},
        {"[nope]:80", "'[nope]:80' has no IPv6 address inside '[...]'"},
        {"[]:80", "'[]:80' has an empty host"},
        {"a b:80", "'a b:80' has spaces or control characters in the host"},
        {"a/b:80", "'a/b:80' has '/' in the host"},
        {"", "'' needs HOST:PORT"},
    };

    (void)state;
    RUN_BAD_VALUES("listen", cases);
}

static void test_config_rejects_a_host_over_255_bytes(void **state)
{
    char value[640], want[640];
    struct tally_config cfg;
    char err[256];

    (void)state;
    snprintf(value, sizeof(value), "%s:80", repeat(0, "h", 256));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--listen", value)), TALLY_EINVAL);
    snprintf(want, sizeof(want), "--listen: '%s...' has a host longer", repeat(1, "h", 60));
    assert_prefix(err, want);
    snprintf(value, sizeof(value), "%s:80", repeat(0, "h", 255));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--listen", value)), TALLY_CONFIG_RUN);
    assert_int_equal(strlen(cfg.listen.host), 255);
}

static void test_config_rejects_bad_redis(void **state)
{
    static const struct bad_value cases[] = {
        {"http://h", "'http://h' needs redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix://"},
        {"127.0.0.1:6379", "'127.0.0.1:6379' needs redis://"},
        {"rediss://h", "'rediss://h' asks for TLS (rediss://)"},
        {"redis://h/2147483648", "'redis://h/2147483648' database must be 0..2147483647"},
        {"redis://h/x", "'redis://h/x' has a database that is not a number"},
        {"redis://h:70000", "'redis://h:70000' port must be 1..65535"},
        {"redis://h:0", "'redis://h:0' port must be 1..65535"},
        {"redis://", "'redis://' has an empty host"},
        {"redis://:@h", "'redis://:@h' has an empty password"},
        {"redis://h?db=1", "'redis://h?db=1' must end after /DB"},
        {"redis://::1", "'redis://::1' needs brackets"},
        {"unix://run/redis.sock", "'unix://run/redis.sock' needs an absolute path"},
        {"unix:///s?db=99999999999", "'unix:///s?db=99999999999' database must be 0..2147483647"},
        {"unix:///s?x=1", "'unix:///s?x=1' may only end in ?db=N"},
        {"", "'' needs redis://"},
    };

    (void)state;
    RUN_BAD_VALUES("redis", cases);
}

static void test_config_redis_errors_hide_the_password(void **state)
{
    static const struct bad_value cases[] = {
        {"redis://:s3cret@h:99999", "'redis://:***@h:99999' port must be"},
        {"redis://bob:s3cret@h/-1", "'redis://bob:***@h/-1' database must be"},
        {"redis://s3cret@h", "'redis://***@h' needs ':' before the password"},
        {"redis://:s3 cret@h", "'redis://:***@h' has spaces or control characters"},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("redis", cases);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", cases[i].value)),
                         TALLY_EINVAL);
        assert_null(strstr(err, "s3"));
    }
}

static void test_config_rejects_a_unix_path_that_does_not_fit(void **state)
{
    char value[640];
    struct tally_config cfg;
    char err[256];

    (void)state;
    snprintf(value, sizeof(value), "unix:///%s", repeat(0, "s", 107)); /* 108 bytes */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", value)), TALLY_EINVAL);
    assert_non_null(strstr(err, "socket path longer than 107 bytes"));
    snprintf(value, sizeof(value), "unix:///%s", repeat(0, "s", 106)); /* 107 bytes */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", value)), TALLY_CONFIG_RUN);
    assert_int_equal(strlen(cfg.redis.path), 107);
}

static void test_config_rejects_bad_cluster(void **state)
{
    static const struct bad_value cases[] = {
        {"a:1,,b:2", "'a:1,,b:2' has an empty entry"},
        {"a:1,b", "'b' needs HOST:PORT"},
        {"a:0", "'a:0' port must be 1..65535"},
        {"[::1]:1,a", "'a' needs HOST:PORT"},
        {"", "'' has an empty entry"},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("redis-cluster", cases);
    /* Credentials are checked as --redis checks them, and never shown. */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", "s3cret@a:1")),
                     TALLY_EINVAL);
    assert_string_equal(err, "--redis-cluster: '***@a:1' needs ':' before the password, as "
                             "redis://[USER]:PASSWORD@HOST");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", "u:s3 cret@a:1")),
                     TALLY_EINVAL);
    assert_null(strstr(err, "s3"));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", "u:s3cret@a:0")),
                     TALLY_EINVAL);
    assert_null(strstr(err, "s3cret"));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", list_of(0, "n:1", 17))),
                     TALLY_EINVAL);
    assert_string_equal(err, "--redis-cluster: more than 16 seeds");
}

static void test_config_rejects_bad_prefix(void **state)
{
    static const struct bad_value cases[] = {
        {"a{b}", "'a{b}' must not contain '{' or '}': they would break Redis Cluster hash tags"},
        {"}", "'}' must not contain '{' or '}'"},
        {"a b", "'a b' must be printable ASCII without spaces"},
        {"caf\xc3\xa9", "'caf\xc3\xa9' must be printable ASCII"},
        {"", "'' must be 1..64 bytes"},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("prefix", cases);
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--prefix", repeat(0, "p", 65))),
                     TALLY_EINVAL);
    assert_non_null(strstr(err, "must be 1..64 bytes"));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--prefix", repeat(0, "p", 64))),
                     TALLY_CONFIG_RUN);
}

/* The token is a secret: its errors say what is wrong without repeating it. */
static void test_config_rejects_bad_token_without_repeating_it(void **state)
{
    static const struct bad_value cases[] = {
        {"0123456789 abcdef", "only printable ASCII without spaces"},
        {"0123456789abcdef\r", "only printable ASCII without spaces"},
        {"", "at least 1 character"},
        {"CHANGE-ME", "still the placeholder of deploy/; set a secret (openssl rand -hex 24)"},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("token", cases);
    /* A short token works (the daemon warns about it). */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--token", "secret")), TALLY_CONFIG_RUN);
    assert_string_equal(cfg.token, "secret");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--token", "0123456789 abcdef")),
                     TALLY_EINVAL);
    assert_string_equal(err, "--token: only printable ASCII without spaces");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--token", repeat(0, "t", 257))),
                     TALLY_EINVAL);
    assert_string_equal(err, "--token: at most 256 characters");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--token", repeat(0, "t", 256))),
                     TALLY_CONFIG_RUN);
    assert_int_equal(strlen(cfg.token), 256);
}

static void test_config_rejects_bad_origins(void **state)
{
    static const struct bad_value cases[] = {
        {"ftp://a.example", "'ftp://a.example' needs http:// or https://"},
        {"a.example", "'a.example' needs http:// or https://"},
        {"null", "'null' needs http:// or https://"},
        {"https://a.example/", "'https://a.example/' must have no path, not even a trailing"},
        {"https://a.example/x", "'https://a.example/x' must have no path"},
        {"*,https://a.example", "'*' must stand alone, not in a list"},
        {"https://a.example,*", "'*' must stand alone, not in a list"},
        {"https://", "'https://' has an empty host"},
        {"http://a:99999", "'http://a:99999' port must be 1..65535"},
        {"http://a,", "'http://a,' has an empty entry"},
        {"http://a,ws://b", "'ws://b' needs http:// or https://"},
    };
    char origin[640];
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("allowed-origins", cases);
    assert_int_equal(
        parse(&cfg, err, sizeof(err), ARGS("--allowed-origins", list_of(0, "http://a", 33))),
        TALLY_EINVAL);
    assert_string_equal(err, "--allowed-origins: more than 32 origins");
    snprintf(origin, sizeof(origin), "https://%s", repeat(0, "o", 248)); /* 256 characters */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--allowed-origins", origin)),
                     TALLY_EINVAL);
    assert_non_null(strstr(err, "is longer than 255 characters"));
    origin[255] = '\0';
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--allowed-origins", origin)),
                     TALLY_CONFIG_RUN);
}

static void test_config_rejects_bad_numbers(void **state)
{
    static const struct {
        const char *flag;
        struct bad_value bad;
    } cases[] = {
        {"rate-limit", {"fast", "'fast' is not a number"}},
        {"rate-limit", {"-1", "'-1' must be 0..1000000"}},
        {"rate-limit", {"1000001", "'1000001' must be 0..1000000"}},
        {"rate-limit", {"99999999999999999999", "'99999999999999999999' must be 0..1000000"}},
        {"rate-limit", {" 5", "' 5' is not a number"}},
        {"rate-limit", {"5x", "'5x' is not a number"}},
        {"rate-limit", {"+5", "'+5' is not a number"}},
        {"rate-limit", {"", "'' is not a number"}},
        {"threads", {"0", "'0' must be 1..64"}},
        {"threads", {"65", "'65' must be 1..64"}},
        {"view-window", {"86401", "'86401' must be 0..86400"}},
        {"view-window", {"1e3", "'1e3' is not a number"}},
        {"redis-timeout", {"99", "'99' must be 100..60000"}},
        {"redis-timeout", {"60001", "'60001' must be 100..60000"}},
        {"hold", {"30001", "'30001' must be 0..30000"}},
        {"max-held", {"0", "'0' must be 1..1000000"}},
        {"max-held", {"1000001", "'1000001' must be 1..1000000"}},
        {"fold-interval", {"10001", "'10001' must be 0..10000"}},
        {"fold-interval", {"-1", "'-1' must be 0..10000"}},
        {"fold-interval", {"0.5", "'0.5' is not a number"}},
        {"journal-max", {"999", "'999' must be 1000..10000000"}},
        {"journal-max", {"10000001", "'10000001' must be 1000..10000000"}},
        {"journal-max", {"0", "'0' must be 1000..10000000"}},
        {"follow-reads", {"60001", "'60001' must be 0..60000"}},
        {"follow-reads", {"-1", "'-1' must be 0..60000"}},
        {"max-connections", {"0", "'0' must be 1..1000000"}},
        {"live-max", {"1000001", "'1000001' must be 0..1000000"}},
        {"live-max", {"-1", "'-1' must be 0..1000000"}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_bad_values(cases[i].flag, &cases[i].bad, 1);
}

static void test_config_rejects_bad_log_level(void **state)
{
    static const struct bad_value cases[] = {
        {"verbose", "'verbose' must be error, warn, info or debug"},
        {"", "'' must be error, warn, info or debug"},
    };

    (void)state;
    RUN_BAD_VALUES("log-level", cases);
}

/* --demo takes no value after it; "--demo=WORD" and TALLY_DEMO take one. */
static void test_config_rejects_bad_switch_words(void **state)
{
    static const struct env_var env[] = {{"TALLY_DEMO", "maybe"}, {NULL, NULL}};
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--demo=maybe")), TALLY_EINVAL);
    assert_string_equal(err, "--demo: 'maybe' must be 1/0, true/false, yes/no or on/off");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--demo=")), TALLY_EINVAL);
    assert_prefix(err, "--demo: '' must be 1/0");
    assert_int_equal(parse_env(&cfg, env, err, sizeof(err), NO_ARGS), TALLY_EINVAL);
    assert_prefix(err, "TALLY_DEMO: 'maybe' must be 1/0");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--demo", "yes")), TALLY_EINVAL);
    assert_prefix(err, "'yes': unexpected argument");
}

static void test_config_rejects_bad_trust_proxy(void **state)
{
    static const struct bad_value cases[] = {
        {"10.0.0.0/33", "'10.0.0.0/33' needs a prefix length of 0..32 for IPv4"},
        {"::/129", "'::/129' needs a prefix length of 0..128 for IPv6"},
        {"fd00::/200", "'fd00::/200' needs a prefix length of 0..128 for IPv6"},
        {"10.0.0.1,nope", "'nope' is not an IPv4 or IPv6 address"},
        {"10.0.0.0/", "'10.0.0.0/' needs a prefix length of 0..32"},
        {"10.0.0.0/-1", "'10.0.0.0/-1' needs a prefix length"},
        {"10.1/16", "'10.1/16' is not an IPv4 or IPv6 address"},
        {"[::1]", "'[::1]' is not an IPv4 or IPv6 address"},
        {"10.0.0.1,,::1", "'10.0.0.1,,::1' has an empty entry"},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    RUN_BAD_VALUES("trust-proxy", cases);
    assert_int_equal(
        parse(&cfg, err, sizeof(err), ARGS("--trust-proxy", list_of(0, "10.0.0.1", 33))),
        TALLY_EINVAL);
    assert_string_equal(err, "--trust-proxy: more than 32 entries");
    assert_int_equal(
        parse(&cfg, err, sizeof(err), ARGS("--trust-proxy", list_of(0, "10.0.0.1", 32))),
        TALLY_CONFIG_RUN);
    assert_int_equal(cfg.n_trust, 32);
}

/* ---- Whole command lines ---- */

struct bad_case {
    const char *env, *env_value; /* or NULL */
    const char *args[3];
    const char *error; /* how the one line starts */
};

static void run_bad_cases(const struct bad_case *cases, size_t n)
{
    struct tally_config cfg;
    char err[256];

    for (size_t i = 0; i < n; i++) {
        const struct env_var env[] = {{cases[i].env, cases[i].env_value}, {NULL, NULL}};
        const char *const *args = cases[i].args;
        const char *const argv[] = {args[0], args[1], args[2], NULL};

        err[0] = '\0';
        assert_int_equal(parse_env(&cfg, env, err, sizeof(err), argv), TALLY_EINVAL);
        assert_prefix(err, cases[i].error);
        assert_null(strchr(err, '\n'));
    }
}

/* ---- Addresses ---- */

static void test_config_listen_accepts_ipv6_and_names(void **state)
{
    static const struct {
        const char *value, *host;
        uint16_t port;
    } cases[] = {
        {"[::1]:8080", "::1", 8080},
        {"[::]:0", "::", 0},
        {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
        {"[2001:db8::7]:65535", "2001:db8::7", 65535},
        {"localhost:0", "localhost", 0},
        {"0.0.0.0:80", "0.0.0.0", 80},
        {"collector.example:00443", "collector.example", 443},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--listen", cases[i].value)),
                         TALLY_CONFIG_RUN);
        assert_string_equal(cfg.listen.host, cases[i].host);
        assert_int_equal(cfg.listen.port, cases[i].port);
    }
}

static void test_config_redis_url_variants(void **state)
{
    static const struct {
        const char *url;
        bool is_unix;
        const char *host_or_path;
        uint16_t port;
        const char *user, *pass;
        unsigned db;
    } cases[] = {
        {"redis://h", false, "h", 6379, "", "", 0},
        {"redis://h/", false, "h", 6379, "", "", 0},
        {"REDIS://h:6380/15", false, "h", 6380, "", "", 15},
        {"redis://:pw@h", false, "h", 6379, "", "pw", 0},
        {"redis://:p@ss/w@h:7/2", false, "h", 7, "", "p@ss/w", 2},
        {"redis://alice:pw@h/1", false, "h", 6379, "alice", "pw", 1},
        {"redis://[::1]:6390/4", false, "::1", 6390, "", "", 4},
        {"redis://[::1]", false, "::1", 6379, "", "", 0},
        {"unix:///run/redis/redis.sock", true, "/run/redis/redis.sock", 0, "", "", 0},
        {"unix:///tmp/r.sock?db=9", true, "/tmp/r.sock", 0, "", "", 9},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tally_redis_target *t = &cfg.redis;

        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", cases[i].url)),
                         TALLY_CONFIG_RUN);
        assert_int_equal(t->is_unix, cases[i].is_unix);
        assert_string_equal(t->is_unix ? t->path : t->addr.host, cases[i].host_or_path);
        assert_int_equal(t->addr.port, cases[i].port);
        assert_string_equal(t->username, cases[i].user);
        assert_string_equal(t->password, cases[i].pass);
        assert_int_equal(t->db, cases[i].db);
        if (t->is_unix)
            assert_string_equal(t->addr.host, "");
    }
}

static void test_config_cluster_seeds(void **state)
{
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err),
                           ARGS("--redis-cluster", "10.0.0.1:7000, [::1]:7001 ,r3.internal:7002")),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.n_cluster, 3);
    assert_string_equal(cfg.cluster[0].host, "10.0.0.1");
    assert_int_equal(cfg.cluster[0].port, 7000);
    assert_string_equal(cfg.cluster[1].host, "::1");
    assert_int_equal(cfg.cluster[1].port, 7001);
    assert_string_equal(cfg.cluster[2].host, "r3.internal");
    assert_int_equal(cfg.cluster[2].port, 7002);
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", list_of(0, "n:1", 16))),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.n_cluster, 16);
    assert_string_equal(cfg.cluster_auth.password, "");
}

/* [[USER]:PASSWORD@] before the seeds, once for every node; the last '@' ends the password,
 * which may hold ',' and '@'. */
static void test_config_cluster_credentials(void **state)
{
    static const struct {
        const char *value, *user, *pass, *host0;
        size_t n;
    } cases[] = {
        {":pw@a:1,b:2", "", "pw", "a", 2},
        {"tally:pw@a:1", "tally", "pw", "a", 1},
        {"tally:p,w@x@[::1]:7000,b:2", "tally", "p,w@x", "::1", 2},
        {"a:1,b:2", "", "", "a", 2},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", cases[i].value)),
                         TALLY_CONFIG_RUN);
        assert_string_equal(cfg.cluster_auth.username, cases[i].user);
        assert_string_equal(cfg.cluster_auth.password, cases[i].pass);
        assert_int_equal(cfg.n_cluster, cases[i].n);
        assert_string_equal(cfg.cluster[0].host, cases[i].host0);
    }
}

/* --redis-cluster replaces --redis (the contract); a --redis given too is named for a warning. */
static void test_config_cluster_replaces_redis(void **state)
{
    static const struct env_var redis_env[] = {{"TALLY_REDIS", "redis://h"}, {NULL, NULL}};
    static const struct env_var cluster_env[] = {{"TALLY_REDIS_CLUSTER", "a:1"}, {NULL, NULL}};
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", "redis://h", "--redis-cluster=a:1")),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.n_cluster, 1);
    assert_string_equal(cfg.redis_replaced, "--redis");
    assert_int_equal(parse_env(&cfg, redis_env, err, sizeof(err), ARGS("--redis-cluster", "a:1")),
                     TALLY_CONFIG_RUN);
    assert_string_equal(cfg.redis_replaced, "TALLY_REDIS");
    assert_int_equal(parse_env(&cfg, cluster_env, err, sizeof(err), ARGS("--redis", "redis://h")),
                     TALLY_CONFIG_RUN);
    assert_int_equal(cfg.n_cluster, 1);
    assert_string_equal(cfg.redis_replaced, "--redis");
    /* Defaults do not count as given. */
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis-cluster", "a:1")), TALLY_CONFIG_RUN);
    assert_string_equal(cfg.redis_replaced, "");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--redis", "redis://h")), TALLY_CONFIG_RUN);
    assert_string_equal(cfg.redis_replaced, "");
}

/* ---- Origins ---- */

static void test_config_origins_are_stored_normalised(void **state)
{
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err),
                           ARGS("--allowed-origins",
                                "HTTPS://News.Example.COM, http://Foo.example:8080,"
                                "https://[::1]:8443,https://a.example:443,http://b.example:80,"
                                "http://c.example:0081")),
                     TALLY_CONFIG_RUN);
    assert_false(cfg.any_origin);
    assert_int_equal(cfg.n_origins, 6);
    assert_string_equal(cfg.origins[0], "https://news.example.com");
    assert_string_equal(cfg.origins[1], "http://foo.example:8080");
    assert_string_equal(cfg.origins[2], "https://[::1]:8443");
    assert_string_equal(cfg.origins[3], "https://a.example");
    assert_string_equal(cfg.origins[4], "http://b.example");
    assert_string_equal(cfg.origins[5], "http://c.example:81");
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--allowed-origins", " * ")),
                     TALLY_CONFIG_RUN);
    assert_true(cfg.any_origin);
}

static void test_config_origin_allowed(void **state)
{
    static const struct {
        const char *origin;
        bool allowed;
    } cases[] = {
        {"https://example.com", true},
        {"https://Example.com", true},
        {"HTTPS://EXAMPLE.COM", true},
        {"http://example.com", false},
        {"https://example.com:8443", false},
        {"https://example.com/", false},
        {"https://example.co", false},
        {"https://example.com.evil", false},
        {"https://sub.example.com", false},
        {"http://localhost:3000", true},
        {"http://localhost:3001", false},
        {"null", false},
        {"", false},
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err),
                           ARGS("--allowed-origins", "https://EXAMPLE.com,http://localhost:3000")),
                     TALLY_CONFIG_RUN);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *o = cases[i].origin;

        if (tally_config_origin_allowed(&cfg, o, strlen(o)) != cases[i].allowed)
            fail_msg("origin \"%s\" should%s be allowed", o, cases[i].allowed ? "" : " not");
    }
    /* LEN counts, not a NUL: a header value is not NUL-terminated where it ends. */
    assert_true(tally_config_origin_allowed(&cfg, "https://example.com/extra", 19));
    assert_false(tally_config_origin_allowed(&cfg, "https://example.com", 18));
}

static void test_config_any_origin_allows_everything(void **state)
{
    struct tally_config cfg;
    char err[256];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err), NO_ARGS), TALLY_CONFIG_RUN);
    assert_true(tally_config_origin_allowed(&cfg, "https://anything.example", 24));
    assert_true(tally_config_origin_allowed(&cfg, "null", 4));
}

/* ---- Trusted proxies ---- */

static void test_config_trust_proxy_is_stored_mapped_and_masked(void **state)
{
    static const struct {
        const char *entry, *addr;
        uint8_t bits;
    } cases[] = {
        {"127.0.0.1", "127.0.0.1", 128},
        {"10.1.2.3/8", "10.0.0.0", 104},
        {"10.0.0.0/32", "10.0.0.0", 128},
        {"0.0.0.0/0", "0.0.0.0", 96},
        {"::1", "::1", 128},
        {"fd12:3456::1/8", "fd00::", 8},
        {"::/0", "::", 0},
        {"2001:db8::1/128", "2001:db8::1", 128},
        {"::ffff:192.0.2.1/120", "192.0.2.0", 120},
        {"10.0.0.255/31", "10.0.0.254", 127},
    };
    struct tally_config cfg;
    uint8_t want[16];
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--trust-proxy", cases[i].entry)),
                         TALLY_CONFIG_RUN);
        assert_int_equal(cfg.n_trust, 1);
        addr16(cases[i].addr, want);
        assert_memory_equal(cfg.trust[0].addr, want, 16);
        assert_int_equal(cfg.trust[0].bits, cases[i].bits);
    }
}

static void test_config_trusted_matches_ranges(void **state)
{
    static const struct {
        const char *list, *addr;
        bool trusted;
    } cases[] = {
        {"10.0.0.0/8", "10.255.1.2", true},
        {"10.0.0.0/8", "11.0.0.1", false},
        {"10.0.0.0/8", "::ffff:10.9.9.9", true},
        {"127.0.0.1", "127.0.0.1", true},
        {"127.0.0.1/32", "127.0.0.2", false},
        {"192.168.1.128/25", "192.168.1.200", true},
        {"192.168.1.128/25", "192.168.1.127", false},
        {"0.0.0.0/0", "203.0.113.9", true},
        {"0.0.0.0/0", "2001:db8::1", false}, /* all of IPv4 is not all of IPv6 */
        {"::/0", "2001:db8::1", true},
        {"::/0", "198.51.100.1", true}, /* mapped IPv4 is inside ::/0 */
        {"::1", "::1", true},
        {"::1/128", "::2", false},
        {"fd00::/8", "fd12::5", true},
        {"fd00::/8", "fe80::1", false},
        {"2001:db8::/33", "2001:db8:7fff::1", true},
        {"2001:db8::/33", "2001:db8:8000::1", false},
        {"::ffff:0:0/96", "8.8.8.8", true},
        {"10.0.0.1, 10.0.0.2 ,fd00::/8", "10.0.0.2", true},
        {"10.0.0.1, 10.0.0.2 ,fd00::/8", "10.0.0.3", false},
    };
    struct tally_config cfg;
    uint8_t addr[16];
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--trust-proxy", cases[i].list)),
                         TALLY_CONFIG_RUN);
        addr16(cases[i].addr, addr);
        if (tally_config_trusted(&cfg, addr) != cases[i].trusted)
            fail_msg("%s in %s: want %d", cases[i].addr, cases[i].list, cases[i].trusted);
    }
    assert_int_equal(parse(&cfg, err, sizeof(err), NO_ARGS), TALLY_CONFIG_RUN);
    addr16("127.0.0.1", addr);
    assert_false(tally_config_trusted(&cfg, addr)); /* no --trust-proxy: trust nobody */
}

/* ---- The command line itself ---- */

static void test_config_help_and_version_are_actions(void **state)
{
    static const struct env_var broken[] = {{"TALLY_LISTEN", "nope"}, {NULL, NULL}};
    static const struct {
        const char *args[3];
        int action;
    } cases[] = {
        {{"--help"}, TALLY_CONFIG_HELP},
        {{"-h"}, TALLY_CONFIG_HELP},
        {{"--version"}, TALLY_CONFIG_VERSION},
        {{"-V"}, TALLY_CONFIG_VERSION},
        {{"--version", "--help"}, TALLY_CONFIG_HELP},
        {{"-h", "-V"}, TALLY_CONFIG_HELP},
        {{"--bogus", "--help"}, TALLY_CONFIG_HELP},
        {{"--rate-limit", "fast", "-V"}, TALLY_CONFIG_VERSION},
        {{"--listen", "0.0.0.0:1", "--help"}, TALLY_CONFIG_HELP},
        {{"--prefix", "-h"}, TALLY_CONFIG_RUN}, /* "-h" is the prefix here */
    };
    struct tally_config cfg;
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const *a = cases[i].args;
        const char *const argv[] = {a[0], a[1], a[2], NULL};

        assert_int_equal(parse(&cfg, err, sizeof(err), argv), cases[i].action);
        assert_string_equal(err, "");
    }
    /* A broken variable does not keep an operator from reading the help. */
    assert_int_equal(parse_env(&cfg, broken, err, sizeof(err), ARGS("--help")), TALLY_CONFIG_HELP);
    assert_int_equal(parse_env(&cfg, broken, err, sizeof(err), NO_ARGS), TALLY_EINVAL);
}

static void test_config_rejects_bad_command_lines(void **state)
{
    static const struct bad_case cases[] = {
        {NULL, NULL, {"--bogus"}, "--bogus: unknown flag (see --help)"},
        {NULL, NULL, {"--bogus=1"}, "--bogus: unknown flag (see --help)"},
        {NULL, NULL, {"-x"}, "-x: unknown flag (see --help)"},
        {NULL, NULL, {"--LISTEN", "h:1"}, "--LISTEN: unknown flag"},
        {NULL, NULL, {"--listen"}, "--listen: missing value"},
        {NULL, NULL, {"--hold", "5", "--rate-limit"}, "--rate-limit: missing value"},
        {NULL, NULL, {"serve"}, "'serve': unexpected argument"},
        {NULL, NULL, {"--hold", "5", "extra"}, "'extra': unexpected argument"},
        {NULL, NULL, {"-"}, "'-': unexpected argument"},
        {NULL, NULL, {"--help=yes"}, "--help: takes no value"},
        {NULL, NULL, {"--bo\ngus"}, "--bo?gus: unknown flag"},
    };

    (void)state;
    run_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_config_error_fits_a_small_buffer(void **state)
{
    struct tally_config cfg;
    char err[12];

    (void)state;
    memset(err, 'x', sizeof(err));
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--rate-limit", "fast")), TALLY_EINVAL);
    assert_string_equal(err, "--rate-limi");
    assert_int_equal(parse(&cfg, NULL, 0, ARGS("--rate-limit", "fast")), TALLY_EINVAL);
}

static void test_config_error_shows_a_long_value_cut(void **state)
{
    struct tally_config cfg;
    char err[256], want[640];

    (void)state;
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--log-level", repeat(0, "v", 500))),
                     TALLY_EINVAL);
    snprintf(want, sizeof(want), "--log-level: '%s...' must be", repeat(1, "v", 60));
    assert_prefix(err, want);
    assert_int_equal(parse(&cfg, err, sizeof(err), ARGS("--log-level", "a\tb\r\n")), TALLY_EINVAL);
    assert_prefix(err, "--log-level: 'a?b?"
                       "?' must be");
}

/* ---- --help ---- */

static char *usage_text(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    tally_config_usage(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(text);
    return text;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;

    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_config_usage_lists_every_flag_and_variable(void **state)
{
    static const char *const more[] = {"Usage: tallyd [OPTIONS]",
                                       "--help",
                                       "--version",
                                       "-h",
                                       "-V",
                                       "[env TALLY_LISTEN, default 127.0.0.1:8080]",
                                       "[env TALLY_THREADS, default usable CPUs (cgroup quota, affinity)]",
                                       "[env TALLY_TOKEN, default none]"};
    char *text = usage_text();
    char needle[64];

    (void)state;
    for (size_t i = 0; i < sizeof(flag_cases) / sizeof(flag_cases[0]); i++) {
        snprintf(needle, sizeof(needle), "  --%s ", flag_cases[i].flag);
        if (strstr(text, needle) == NULL)
            fail_msg("--help lacks \"%s\"", needle);
        snprintf(needle, sizeof(needle), "[env %s, default ", flag_cases[i].env);
        if (strstr(text, needle) == NULL)
            fail_msg("--help lacks \"%s\"", needle);
    }
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        if (strstr(text, more[i]) == NULL)
            fail_msg("--help lacks \"%s\"", more[i]);
    assert_null(strstr(text, "\t"));
    for (const char *line = text; *line != '\0'; line += strcspn(line, "\n") + 1) {
        if (strcspn(line, "\n") > 100)
            fail_msg("--help line over 100 columns: %.*s", (int)strcspn(line, "\n"), line);
        if (line[strcspn(line, "\n")] == '\0')
            break;
    }
    free(text);
}

static void test_config_usage_marks_no_flag_inactive(void **state)
{
    char *text = usage_text();

    (void)state;
    /* Every feature has landed: a flag marked "(not yet active)" would now be a lie. */
    assert_int_equal(count(text, "(not yet active)"), 0);
    free(text);
}

static char *man_text(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    tally_config_man(f, "2026-01-02");
    assert_int_equal(fclose(f), 0);
    assert_non_null(text);
    return text;
}

/* tallyd(8) has an entry for every flag of the table, with its variable, in roff whose
 * hyphens are escaped, and lines short enough for mandoc's style check. */
static void test_config_man_lists_every_flag_and_variable(void **state)
{
    char *text = man_text();
    char needle[96], flag[48];

    (void)state;
    assert_true(strncmp(text, ".\\\"", 3) == 0);
    assert_non_null(strstr(text, "\n.TH TALLYD 8 2026-01-02 \"tally " TALLY_VERSION "\""));
    assert_non_null(strstr(text, "\n.SH OPTIONS\n"));
    for (size_t i = 0; i < sizeof(flag_cases) / sizeof(flag_cases[0]); i++) {
        size_t n = 0;

        for (const char *p = flag_cases[i].flag; *p != '\0'; p++) {
            if (*p == '-')
                flag[n++] = '\\';
            flag[n++] = *p;
        }
        flag[n] = '\0';
        snprintf(needle, sizeof(needle), ".TP\n\\fB\\-\\-%s\\fR", flag);
        if (count(text, needle) != 1)
            fail_msg("tallyd(8) has %zu entries \"%s\"", count(text, needle), needle);
        snprintf(needle, sizeof(needle), "\nVariable: \\fB%s\\fR\n", flag_cases[i].env);
        if (count(text, needle) != 1)
            fail_msg("tallyd(8) names %s %zu times", flag_cases[i].env, count(text, needle));
    }
    {
        /* As many entries as --help has flags (each "  --flag" line): the same table. */
        char *usage = usage_text();

        assert_int_equal(count(text, ".TP\n\\fB\\-\\-"), count(usage, "\n  --"));
        free(usage);
    }
    assert_int_equal(count(text, "\\fB\\-h\\fR, \\fB\\-\\-help\\fR"), 1);
    assert_int_equal(count(text, "\\fB\\-V\\fR, \\fB\\-\\-version\\fR"), 1);
    assert_int_equal(count(text, "Default: one per CPU tallyd may use"), 1);
    assert_int_equal(count(text, "Default: \\fB\\%127.0.0.1:8080\\fR\n"), 1);
    for (const char *line = text; *line != '\0'; line += strcspn(line, "\n") + 1) {
        if (strcspn(line, "\n") > 80)
            fail_msg("tallyd(8) line over 80 bytes: %.*s", (int)strcspn(line, "\n"), line);
        if (line[0] != '.' && strstr(line, "--") != NULL)
            fail_msg("unescaped hyphens in tallyd(8): %.*s", (int)strcspn(line, "\n"), line);
        if (line[strcspn(line, "\n")] == '\0')
            break;
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_fill_every_field),
        cmocka_unit_test(test_config_without_getenv_every_variable_is_unset),
        cmocka_unit_test(test_config_threads_default_is_the_cores_within_bounds),
        cmocka_unit_test(test_config_every_flag_takes_both_forms_and_its_variable),
        cmocka_unit_test(test_config_flag_wins_over_its_variable),
        cmocka_unit_test(test_config_last_of_a_repeated_flag_wins),
        cmocka_unit_test(test_config_empty_variable_counts_as_unset),
        cmocka_unit_test(test_config_switch_reads_words_from_its_variable),
        cmocka_unit_test(test_config_log_levels),
        cmocka_unit_test(test_config_rejects_bad_listen),
        cmocka_unit_test(test_config_rejects_a_host_over_255_bytes),
        cmocka_unit_test(test_config_rejects_bad_redis),
        cmocka_unit_test(test_config_redis_errors_hide_the_password),
        cmocka_unit_test(test_config_rejects_a_unix_path_that_does_not_fit),
        cmocka_unit_test(test_config_rejects_bad_cluster),
        cmocka_unit_test(test_config_rejects_bad_prefix),
        cmocka_unit_test(test_config_rejects_bad_token_without_repeating_it),
        cmocka_unit_test(test_config_rejects_bad_origins),
        cmocka_unit_test(test_config_rejects_bad_numbers),
        cmocka_unit_test(test_config_rejects_bad_log_level),
        cmocka_unit_test(test_config_rejects_bad_switch_words),
        cmocka_unit_test(test_config_rejects_bad_trust_proxy),
        cmocka_unit_test(test_config_listen_accepts_ipv6_and_names),
        cmocka_unit_test(test_config_redis_url_variants),
        cmocka_unit_test(test_config_cluster_seeds),
        cmocka_unit_test(test_config_cluster_credentials),
        cmocka_unit_test(test_config_cluster_replaces_redis),
        cmocka_unit_test(test_config_origins_are_stored_normalised),
        cmocka_unit_test(test_config_origin_allowed),
        cmocka_unit_test(test_config_any_origin_allows_everything),
        cmocka_unit_test(test_config_trust_proxy_is_stored_mapped_and_masked),
        cmocka_unit_test(test_config_trusted_matches_ranges),
        cmocka_unit_test(test_config_help_and_version_are_actions),
        cmocka_unit_test(test_config_rejects_bad_command_lines),
        cmocka_unit_test(test_config_error_fits_a_small_buffer),
        cmocka_unit_test(test_config_error_shows_a_long_value_cut),
        cmocka_unit_test(test_config_usage_lists_every_flag_and_variable),
        cmocka_unit_test(test_config_usage_marks_no_flag_inactive),
        cmocka_unit_test(test_config_man_lists_every_flag_and_variable),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
