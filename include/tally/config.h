/* config.h -- the daemon's settings: one table drives flags, environment, defaults and --help.
 *
 * Parsing is pure (no I/O besides writing usage text to a FILE the caller gives): every value
 * is checked here, before anything starts. */
#ifndef TALLY_CONFIG_H
#define TALLY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TALLY_HOST_MAX 255
#define TALLY_PREFIX_MAX 64
#define TALLY_TOKEN_ADVISED 16 /* a shorter --token works, with a warning */
#define TALLY_TOKEN_MAX 256
#define TALLY_ORIGINS_MAX 32
#define TALLY_ORIGIN_LEN_MAX 255
#define TALLY_CLUSTER_SEEDS_MAX 16
#define TALLY_TRUST_MAX 32
#define TALLY_THREADS_MAX 64

struct tally_hostport {
    char host[TALLY_HOST_MAX + 1]; /* without brackets for IPv6 */
    uint16_t port;
};

struct tally_redis_target {
    bool is_unix;
    char path[108];                /* unix socket path when IS_UNIX */
    struct tally_hostport addr;    /* TCP address otherwise */
    char username[TALLY_TOKEN_MAX + 1]; /* empty: AUTH with the password alone */
    char password[TALLY_TOKEN_MAX + 1]; /* empty: no AUTH */
    unsigned db;                   /* SELECT db; 0 is not sent */
};

/* An address range; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) with BITS counted in v6. */
struct tally_cidr {
    uint8_t addr[16];
    uint8_t bits;
};

enum tally_log_level { TALLY_LOG_ERROR, TALLY_LOG_WARN, TALLY_LOG_INFO, TALLY_LOG_DEBUG };

struct tally_config {
    struct tally_hostport listen;
    struct tally_redis_target redis;
    struct tally_hostport cluster[TALLY_CLUSTER_SEEDS_MAX];
    size_t n_cluster;              /* 0: standalone --redis */
    struct tally_redis_target cluster_auth; /* USERNAME, PASSWORD for every cluster node */
    char redis_replaced[16];       /* "--redis" or "TALLY_REDIS" when given but replaced by
                                    * --redis-cluster, else empty */
    char prefix[TALLY_PREFIX_MAX + 1];
    char token[TALLY_TOKEN_MAX + 1]; /* empty: no token configured */
    bool any_origin;               /* "*" */
    char origins[TALLY_ORIGINS_MAX][TALLY_ORIGIN_LEN_MAX + 1];
    size_t n_origins;
    uint32_t rate_limit;           /* events per second per client; 0 = off */
    uint32_t threads;              /* 1..TALLY_THREADS_MAX; the default is NCPU (cpus.h) */
    struct tally_cidr trust[TALLY_TRUST_MAX];
    size_t n_trust;
    uint32_t view_window;          /* seconds; 0 counts every view */
    /* Extensions of the contract. */
    uint32_t redis_timeout_ms;     /* connect and command deadline */
    uint32_t hold_ms;              /* how long an event may wait for an unreachable Redis */
    uint32_t max_held;             /* events held at once per worker before 503s */
    uint32_t max_connections;      /* open HTTP connections, all workers together */
    uint32_t fold_interval_ms;     /* between folds of a worker's journal; 0 = no journal */
    uint32_t journal_max;          /* events acknowledged and not folded, per worker */
    uint32_t follow_reads_ms;      /* with a journal, a write of an article read within this
                                    * long is counted at once (tally/lately.h); 0 = never */
    uint32_t live_max;             /* /v1/live streams open at once, all workers; 0 = off */
    enum tally_log_level log_level;
    bool demo;                     /* serve the demo pages under /demo/ */
    bool healthcheck;              /* only ask --listen's /healthz and exit 0 or 1 */
    bool load_functions;           /* only load the Redis functions (an admin step) and exit */
};

enum tally_config_action {
    TALLY_CONFIG_RUN,
    TALLY_CONFIG_HELP,    /* --help: print tally_config_usage() and exit 0 */
    TALLY_CONFIG_VERSION, /* --version */
};

/* Looks up an environment variable; NULL when unset. getenv() in the daemon, a table in
 * tests. */
typedef const char *tally_getenv_fn(const char *name, void *arg);

/* Fill CFG from the defaults, then the environment (TALLY_<FLAG>, upper case, '-' as '_'),
 * then ARGV (flags win). Flags take "--flag value" or "--flag=value". NCPU is the default
 * of --threads. Returns a tally_config_action, or TALLY_EINVAL with a one-line reason in ERR
 * that names the flag or variable and the value ("--rate-limit: 'fast' is not a number"). */
int tally_config_parse(struct tally_config *cfg, int argc, char *const argv[],
                       tally_getenv_fn *getenv_fn, void *getenv_arg, unsigned ncpu, char *err,
                       size_t errlen);

/* Write --help to OUT: one line per flag with its variable and default, in table order. */
void tally_config_usage(FILE *out);

/* Write the manual page tallyd(8) to OUT, as roff dated DATE ("2026-12-05"): its OPTIONS
 * come from the same table as --help, one entry per flag with its variable and default. */
void tally_config_man(FILE *out, const char *date);

/* Does ORIGIN (LEN bytes, as sent in an Origin header) pass --allowed-origins? */
bool tally_config_origin_allowed(const struct tally_config *cfg, const char *origin, size_t len);

/* Is the 16-byte address ADDR (IPv4-mapped for IPv4) inside one of --trust-proxy's ranges? */
bool tally_config_trusted(const struct tally_config *cfg, const uint8_t addr[16]);

#endif
