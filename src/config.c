/* config.c -- the daemon's settings from defaults, the environment and flags, all driven by
 * one table (cfg_options) that also writes --help.
 *
 * Each row's default is a string that goes through the row's own parser, so a default obeys
 * the same bounds as an operator's value. A variable's name is derived from its flag, so the
 * two cannot disagree. Parsing is pure -- no I/O, no getenv() (the caller passes a lookup), no
 * globals but constant tables, nothing allocated -- so tests drive it with plain tables. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tally/config.h"
#include "tally/error.h"
#include "tally/log.h"

/* ---- The table ---- */

struct cfg_span {
    const char *p;
    size_t len;
};

struct cfg_option;

#define CFG_SHOW_MAX 60                   /* bytes of a value an error repeats */
#define CFG_SHOWN_SIZE (CFG_SHOW_MAX + 8) /* room for them, "***" and "..." */

/* One value being applied: which row, named the way the operator gave it. */
struct cfg_ctx {
    const struct cfg_option *opt;
    char name[CFG_SHOWN_SIZE + 2]; /* "--listen", "TALLY_LISTEN", "default of --listen" */
    struct cfg_span item;          /* what an error quotes: the value, or the bad entry of a list */
    char *err;                     /* the caller's buffer, may be NULL */
    size_t errlen;
};

/* Parse VALUE into the row's field of CFG: 0, or TALLY_EINVAL with one line in CTX->err. */
typedef int cfg_parse_fn(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value);

enum cfg_flags {
    CFG_NCPU = 1 << 0,   /* no DEF: the default is the CPUs tallyd may use (cpus.h) */
    CFG_SECRET = 1 << 1, /* an error never repeats the value */
};

struct cfg_option {
    const char *flag; /* without "--"; the variable is TALLY_<FLAG>, '-' as '_' */
    cfg_parse_fn *parse;
    size_t field;        /* offsetof(struct tally_config, ...) */
    const char *def;     /* parsed like any value; NULL: none (or CFG_NCPU) */
    const char *metavar; /* NULL: a switch, given without a value */
    uint32_t min, max;   /* bounds, for cfg_parse_uint */
    unsigned flags;      /* enum cfg_flags */
    const char *help;    /* short: the line stays within 100 columns */
};

static cfg_parse_fn cfg_parse_listen, cfg_parse_redis, cfg_parse_cluster, cfg_parse_prefix,
    cfg_parse_token, cfg_parse_origins, cfg_parse_uint, cfg_parse_trust, cfg_parse_log_level,
    cfg_parse_bool;

#define CFG_FIELD(name) offsetof(struct tally_config, name)

/* clang-format off */
static const struct cfg_option cfg_options[] = {
    {"listen", cfg_parse_listen, CFG_FIELD(listen), "127.0.0.1:8080", "HOST:PORT", 0, 0, 0,
     "HTTP address; IPv6 as [::1]:8080, port 0 lets the kernel pick"},
    {"redis", cfg_parse_redis, CFG_FIELD(redis), "redis://127.0.0.1:6379/0", "URL", 0, 0, 0,
     "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH[?db=N]"},
    {"redis-cluster", cfg_parse_cluster, CFG_FIELD(cluster), NULL, "HOST:PORT,...", 0, 0,
     0, "cluster seeds (1..16), [[USER]:PASSWORD@] first; replaces --redis"},
    {"prefix", cfg_parse_prefix, CFG_FIELD(prefix), "tally:", "P", 0, 0, 0,
     "prefix of every Redis key the collector writes (no '{' or '}')"},
    {"token", cfg_parse_token, CFG_FIELD(token), NULL, "T", 0, 0, CFG_SECRET,
     "bearer token for comments and write/admin calls (16+ chars advised)"},
    {"allowed-origins", cfg_parse_origins, CFG_FIELD(origins), "*", "LIST", 0, 0, 0,
     "* or scheme://host[:port],... whose browsers may send events"},
    {"rate-limit", cfg_parse_uint, CFG_FIELD(rate_limit), "50", "N", 0, 1000000, 0,
     "events/s per client address, burst 4 x N, no batch over it; 0 = off"},
    {"threads", cfg_parse_uint, CFG_FIELD(threads), NULL, "N", 1, TALLY_THREADS_MAX,
     CFG_NCPU, "HTTP worker threads (1..64)"},
    {"trust-proxy", cfg_parse_trust, CFG_FIELD(trust), NULL, "LIST", 0, 0, 0,
     "proxy IPs/CIDRs whose X-Forwarded-For is believed"},
    {"view-window", cfg_parse_uint, CFG_FIELD(view_window), "1800", "S", 0, 86400, 0,
     "a repeat view within S seconds is not counted (0..86400; 0 = all)"},
    {"redis-timeout", cfg_parse_uint, CFG_FIELD(redis_timeout_ms), "2000", "MS", 100, 60000, 0,
     "ms per Redis connect/command; answers in --hold + MS (100..60000)"},
    {"hold", cfg_parse_uint, CFG_FIELD(hold_ms), "1000", "MS", 0, 30000, 0,
     "ms an event may wait for a down Redis before a 503 (0..30000)"},
    {"max-held", cfg_parse_uint, CFG_FIELD(max_held), "10000", "N", 1, 1000000, 0,
     "events held at once per worker thread before 503s (1..1000000)"},
    {"fold-interval", cfg_parse_uint, CFG_FIELD(fold_interval_ms), "200", "MS", 0, 10000, 0,
     "ms between journal folds (any Redis; 0..10000; 0 = count at once)"},
    {"journal-max", cfg_parse_uint, CFG_FIELD(journal_max), "200000", "N", 1000, 10000000, 0,
     "unfolded events per worker thread before 503s (1000..10000000)"},
    {"follow-reads", cfg_parse_uint, CFG_FIELD(follow_reads_ms), "10000", "MS", 0, 60000, 0,
     "count writes of articles read here within MS ms at once (0 = off)"},
    {"max-connections", cfg_parse_uint, CFG_FIELD(max_connections), "10000", "N", 1, 1000000, 0,
     "open HTTP connections; past it, new ones wait in the backlog"},
    {"live-max", cfg_parse_uint, CFG_FIELD(live_max), "5000", "N", 0, 1000000, 0,
     "/v1/live streams open at once; past it 503 (0 = off)"},
    {"log-level", cfg_parse_log_level, CFG_FIELD(log_level), "info", "LEVEL", 0, 0, 0,
     "error, warn, info or debug"},
    {"demo", cfg_parse_bool, CFG_FIELD(demo), "off", NULL, 0, 0, 0,
     "serve the /demo/ pages (variable: 1/0, true/false, yes/no, on/off)"},
    {"healthcheck", cfg_parse_bool, CFG_FIELD(healthcheck), "off", NULL, 0, 0, 0,
     "ask the running tallyd at --listen for /healthz; exit 0 or 1"},
    {"load-functions", cfg_parse_bool, CFG_FIELD(load_functions), "off", NULL, 0, 0, 0,
     "as a Redis admin, load the functions tallyd calls; exit"},
};
/* clang-format on */

#define CFG_N_OPTIONS (sizeof(cfg_options) / sizeof(cfg_options[0]))
#define CFG_NCPU_DEFAULT "usable CPUs (cgroup quota, affinity)" /* what --help says */
/* What the man page says of CFG_NCPU's default; lines of roff text. */
#define CFG_NCPU_MAN                                                                               \
    "one per CPU tallyd may use: the fewest of the online cores,\n"                                \
    "the affinity mask (taskset, cpusets) and the CPU quota of its cgroup rounded up\n"            \
    "(cpu.max, or cpu.cfs_quota_us over cpu.cfs_period_us in cgroup v1;\n"                         \
    "a quota of 1.5 CPUs gives 2)"
#define CFG_USAGE_COL 29 /* width of "--redis-cluster HOST:PORT,...", the longest */

/* ---- Small helpers ---- */

static struct cfg_span cfg_span_of(const char *s)
{
    return (struct cfg_span){s, strlen(s)};
}

static void *cfg_field(struct tally_config *cfg, const struct cfg_option *opt)
{
    return (char *)cfg + opt->field;
}

static char cfg_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ASCII only, whatever the locale: these are protocol tokens, not text. */
static bool cfg_equal_nocase(struct cfg_span a, const char *b)
{
    size_t len = strlen(b);

    if (a.len != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (cfg_lower(a.p[i]) != cfg_lower(b[i]))
            return false;
    return true;
}

static bool cfg_starts_nocase(const char *s, const char *prefix)
{
    size_t len = strlen(prefix);

    return strnlen(s, len) == len && cfg_equal_nocase((struct cfg_span){s, len}, prefix);
}

static bool cfg_is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Printable ASCII without spaces: what a token or key prefix may hold. */
static bool cfg_is_graph(struct cfg_span s)
{
    for (size_t i = 0; i < s.len; i++)
        if ((unsigned char)s.p[i] <= 0x20 || (unsigned char)s.p[i] >= 0x7f)
            return false;
    return true;
}

/* No spaces or control bytes; UTF-8 passes, as Redis passwords are binary-safe. */
static bool cfg_is_visible(struct cfg_span s)
{
    for (size_t i = 0; i < s.len; i++)
        if (s.p[i] == ' ' || cfg_is_control((unsigned char)s.p[i]))
            return false;
    return true;
}

static void cfg_copy(char *out, struct cfg_span s)
{
    memcpy(out, s.p, s.len);
    out[s.len] = '\0';
}

static size_t cfg_copy_lower(char *out, struct cfg_span s)
{
    for (size_t i = 0; i < s.len; i++)
        out[i] = cfg_lower(s.p[i]);
    return s.len;
}

/* 0 when S is a decimal number within MIN..MAX; 1 when it is a number out of range (a minus
 * sign included); -1 when it is not a number. */
static int cfg_number(struct cfg_span s, uint32_t min, uint32_t max, uint32_t *out)
{
    bool negative = s.len > 1 && s.p[0] == '-';
    uint64_t v = 0;

    if (s.len == 0 || (negative && s.len == 1))
        return -1;
    for (size_t i = negative ? 1 : 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        if (v <= UINT32_MAX) /* past it, only the digits still need checking */
            v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    if (negative || v < min || v > max)
        return 1;
    *out = (uint32_t)v;
    return 0;
}

/* Next comma-separated entry after *POS, blanks around it trimmed (env files write "a, b");
 * false once the list is done. */
static bool cfg_next_entry(const char **pos, struct cfg_span *entry)
{
    const char *s = *pos, *end;

    if (s == NULL)
        return false;
    end = strchr(s, ',');
    *pos = end != NULL ? end + 1 : NULL;
    if (end == NULL)
        end = s + strlen(s);
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *entry = (struct cfg_span){s, (size_t)(end - s)};
    return true;
}

/* ---- Error messages ---- */

/* The bytes of S that hide a URL's password ("redis://user:PASSWORD@host", or the whole
 * user part when it has no ':'; without a scheme, as in --redis-cluster's
 * "user:PASSWORD@host:port,..." too), as [*FROM, *TO); an empty range when there is none. */
static void cfg_secret_range(struct cfg_span s, size_t *from, size_t *to)
{
    size_t start = 0, at = 0;
    bool found = false;

    *from = *to = 0;
    for (size_t i = 0; i + 3 <= s.len && start == 0; i++)
        if (memcmp(s.p + i, "://", 3) == 0)
            start = i + 3;
    for (size_t i = start; i < s.len; i++)
        if (s.p[i] == '@')
            at = i, found = true;
    if (!found)
        return;
    *from = start;
    for (size_t i = start; i < at; i++) {
        if (s.p[i] == ':') {
            *from = i + 1;
            break;
        }
    }
    *to = at;
}

/* Write S into OUT (CFG_SHOWN_SIZE bytes) for a message: a password becomes "***", control
 * bytes '?' and a long value is cut, so the message stays one short line. */
static void cfg_show(char out[CFG_SHOWN_SIZE], struct cfg_span s)
{
    size_t n = 0, from, to;

    cfg_secret_range(s, &from, &to);
    for (size_t i = 0; i < s.len; i++) {
        if (i == from && to > from) {
            memcpy(out + n, "***", 3);
            n += 3;
            i = to - 1;
            continue;
        }
        if (n >= CFG_SHOW_MAX) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        out[n++] = cfg_is_control((unsigned char)s.p[i]) ? '?' : s.p[i];
    }
    out[n] = '\0';
}

/* Write "NAME: WHY", or with QUOTE "NAME: 'ITEM' WHY", to the caller's buffer. */
static __attribute__((format(printf, 3, 0))) int cfg_verror(struct cfg_ctx *ctx, bool quote,
                                                            const char *fmt, va_list ap)
{
    char why[192], shown[CFG_SHOWN_SIZE];

    if (ctx->err == NULL || ctx->errlen == 0)
        return TALLY_EINVAL;
    vsnprintf(why, sizeof(why), fmt, ap);
    cfg_show(shown, ctx->item);
    if (quote && (ctx->opt == NULL || !(ctx->opt->flags & CFG_SECRET)))
        snprintf(ctx->err, ctx->errlen, "%s: '%s' %s", ctx->name, shown, why);
    else
        snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->name, why);
    return TALLY_EINVAL;
}

/* "NAME: WHY", for reasons that need no value (or must not repeat it). */
static __attribute__((format(printf, 2, 3))) int cfg_fail(struct cfg_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = cfg_verror(ctx, false, fmt, ap);
    va_end(ap);
    return rc;
}

/* "NAME: 'ITEM' WHY": the value (or the entry of a list) that is wrong, and why. A secret's
 * row never shows it. */
static __attribute__((format(printf, 2, 3))) int cfg_bad(struct cfg_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = cfg_verror(ctx, true, fmt, ap);
    va_end(ap);
    return rc;
}

/* An empty entry is best shown in the whole list ("a:1,,b:2"). */
static int cfg_empty_entry(struct cfg_ctx *ctx, const char *list)
{
    ctx->item = cfg_span_of(list);
    return cfg_bad(ctx, "has an empty entry");
}

/* ---- Hosts and ports ---- */

struct cfg_hostport {
    struct cfg_span host; /* without brackets */
    struct cfg_span port; /* P is NULL when there is no ":port" */
    bool is_v6;           /* was in brackets */
};

/* "[v6]" or "[v6]:port". */
static int cfg_split_bracketed(struct cfg_ctx *ctx, struct cfg_span s, struct cfg_hostport *hp)
{
    const char *close = memchr(s.p, ']', s.len), *end = s.p + s.len;

    if (close == NULL)
        return cfg_bad(ctx, "has '[' without ']'");
    hp->is_v6 = true;
    hp->host = (struct cfg_span){s.p + 1, (size_t)(close - s.p - 1)};
    if (close + 1 == end)
        return 0;
    if (close[1] != ':')
        return cfg_bad(ctx, "needs ':' after ']'");
    hp->port = (struct cfg_span){close + 2, (size_t)(end - close - 2)};
    return 0;
}

/* Split S into host and optional port. An IPv6 address must be in brackets: bare, its last
 * group could not be told from a port. */
static int cfg_split_host(struct cfg_ctx *ctx, struct cfg_span s, struct cfg_hostport *hp)
{
    const char *colon = NULL;

    memset(hp, 0, sizeof(*hp));
    if (s.len > 0 && s.p[0] == '[')
        return cfg_split_bracketed(ctx, s, hp);
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] != ':')
            continue;
        if (colon != NULL)
            return cfg_bad(ctx, "needs brackets around an IPv6 address, as [::1]:8080");
        colon = s.p + i;
    }
    hp->host = (struct cfg_span){s.p, colon != NULL ? (size_t)(colon - s.p) : s.len};
    if (colon != NULL)
        hp->port = (struct cfg_span){colon + 1, s.len - hp->host.len - 1};
    return 0;
}

/* An IPv6 literal, with an optional "%zone" (fe80::1%eth0) that inet_pton() does not take. */
static bool cfg_is_v6(struct cfg_span host)
{
    char buf[TALLY_HOST_MAX + 1];
    unsigned char addr[16];
    const char *zone = memchr(host.p, '%', host.len);
    struct cfg_span zone_id;

    if (zone != NULL) {
        zone_id = (struct cfg_span){zone + 1, (size_t)(host.p + host.len - zone - 1)};
        if (zone_id.len == 0 || !cfg_is_visible(zone_id))
            return false;
        host.len = (size_t)(zone - host.p);
    }
    cfg_copy(buf, host);
    return inet_pton(AF_INET6, buf, addr) == 1;
}

static int cfg_check_host(struct cfg_ctx *ctx, const struct cfg_hostport *hp)
{
    if (hp->host.len == 0)
        return cfg_bad(ctx, "has an empty host");
    if (hp->host.len > TALLY_HOST_MAX)
        return cfg_bad(ctx, "has a host longer than %d bytes", TALLY_HOST_MAX);
    if (hp->is_v6)
        return cfg_is_v6(hp->host) ? 0 : cfg_bad(ctx, "has no IPv6 address inside '[...]'");
    if (!cfg_is_visible(hp->host))
        return cfg_bad(ctx, "has spaces or control characters in the host");
    for (size_t i = 0; i < hp->host.len; i++)
        if (strchr("[]/@?#", hp->host.p[i]) != NULL)
            return cfg_bad(ctx, "has '%c' in the host", hp->host.p[i]);
    return 0;
}

static int cfg_port(struct cfg_ctx *ctx, struct cfg_span port, uint32_t min, uint16_t *out)
{
    uint32_t v;
    int rc;

    if (port.len == 0)
        return cfg_bad(ctx, "needs a port after ':'");
    rc = cfg_number(port, min, 65535, &v);
    if (rc < 0)
        return cfg_bad(ctx, "has a port that is not a number");
    if (rc > 0)
        return cfg_bad(ctx, "port must be %" PRIu32 "..65535", min);
    *out = (uint16_t)v;
    return 0;
}

/* HOST:PORT with the port required and at least MIN_PORT. */
static int cfg_hostport(struct cfg_ctx *ctx, struct cfg_span s, uint32_t min_port,
                        struct tally_hostport *out)
{
    struct cfg_hostport hp;

    if (cfg_split_host(ctx, s, &hp) < 0)
        return TALLY_EINVAL;
    if (hp.port.p == NULL)
        return cfg_bad(ctx, "needs HOST:PORT");
    if (cfg_check_host(ctx, &hp) < 0 || cfg_port(ctx, hp.port, min_port, &out->port) < 0)
        return TALLY_EINVAL;
    cfg_copy(out->host, hp.host);
    return 0;
}

static int cfg_parse_listen(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    return cfg_hostport(ctx, cfg_span_of(value), 0, cfg_field(cfg, ctx->opt));
}

/* ---- Redis ---- */

static int cfg_redis_db(struct cfg_ctx *ctx, struct cfg_span db, unsigned *out)
{
    uint32_t v = 0;
    /* "redis://host/" is db 0; Redis itself says whether the number exists (SELECT). */
    int rc = db.len == 0 ? 0 : cfg_number(db, 0, INT32_MAX, &v);

    if (rc < 0)
        return cfg_bad(ctx, "has a database that is not a number");
    if (rc > 0)
        return cfg_bad(ctx, "database must be 0..2147483647");
    *out = v;
    return 0;
}

/* "[USER]:PASSWORD", kept literal (no percent-decoding). */
static int cfg_redis_auth(struct cfg_ctx *ctx, struct tally_redis_target *t, struct cfg_span u)
{
    const char *colon = memchr(u.p, ':', u.len);
    struct cfg_span user, pass;

    if (colon == NULL)
        return cfg_bad(ctx, "needs ':' before the password, as redis://[USER]:PASSWORD@HOST");
    user = (struct cfg_span){u.p, (size_t)(colon - u.p)};
    pass = (struct cfg_span){colon + 1, u.len - user.len - 1};
    if (pass.len == 0)
        return cfg_bad(ctx, "has an empty password");
    if (user.len > TALLY_TOKEN_MAX || pass.len > TALLY_TOKEN_MAX)
        return cfg_bad(ctx, "has a user name or password longer than %d bytes", TALLY_TOKEN_MAX);
    if (!cfg_is_visible(user) || !cfg_is_visible(pass))
        return cfg_bad(ctx, "has spaces or control characters in the user name or password");
    cfg_copy(t->username, user);
    cfg_copy(t->password, pass);
    return 0;
}

/* After "redis://": [[USER]:PASSWORD@]HOST[:PORT][/DB]. The last '@' ends the password, so
 * a password may hold '@' or '/'. */
static int cfg_redis_tcp(struct cfg_ctx *ctx, struct tally_redis_target *t, const char *rest)
{
    const char *at = strrchr(rest, '@'), *host = at != NULL ? at + 1 : rest;
    const char *slash = strchr(host, '/');
    struct cfg_span addr = {host, slash != NULL ? (size_t)(slash - host) : strlen(host)};
    struct cfg_hostport hp;

    if (strpbrk(host, "?#") != NULL)
        return cfg_bad(ctx, "must end after /DB (no query or fragment)");
    if (at != NULL && cfg_redis_auth(ctx, t, (struct cfg_span){rest, (size_t)(at - rest)}) < 0)
        return TALLY_EINVAL;
    if (cfg_split_host(ctx, addr, &hp) < 0 || cfg_check_host(ctx, &hp) < 0)
        return TALLY_EINVAL;
    t->addr.port = 6379;
    if (hp.port.p != NULL && cfg_port(ctx, hp.port, 1, &t->addr.port) < 0)
        return TALLY_EINVAL;
    cfg_copy(t->addr.host, hp.host);
    return slash != NULL ? cfg_redis_db(ctx, cfg_span_of(slash + 1), &t->db) : 0;
}

/* After "unix://": an absolute path that fits sockaddr_un, then optionally "?db=N". */
static int cfg_redis_unix(struct cfg_ctx *ctx, struct tally_redis_target *t, const char *path)
{
    const char *query = strchr(path, '?');
    struct cfg_span p = {path, query != NULL ? (size_t)(query - path) : strlen(path)};

    t->is_unix = true;
    if (p.len == 0 || path[0] != '/')
        return cfg_bad(ctx, "needs an absolute path, as unix:///path/to/sock");
    if (p.len >= sizeof(t->path))
        return cfg_bad(ctx, "has a socket path longer than %zu bytes", sizeof(t->path) - 1);
    for (size_t i = 0; i < p.len; i++)
        if (cfg_is_control((unsigned char)path[i]))
            return cfg_bad(ctx, "has control characters in the socket path");
    cfg_copy(t->path, p);
    if (query == NULL)
        return 0;
    if (strncmp(query, "?db=", 4) != 0)
        return cfg_bad(ctx, "may only end in ?db=N");
    return cfg_redis_db(ctx, cfg_span_of(query + 4), &t->db);
}

static int cfg_parse_redis(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    struct tally_redis_target *t = cfg_field(cfg, ctx->opt);

    memset(t, 0, sizeof(*t));
    if (cfg_starts_nocase(value, "unix://"))
        return cfg_redis_unix(ctx, t, value + strlen("unix://"));
    if (cfg_starts_nocase(value, "redis://"))
        return cfg_redis_tcp(ctx, t, value + strlen("redis://"));
    if (cfg_starts_nocase(value, "rediss://"))
        return cfg_bad(ctx, "asks for TLS (rediss://), which tallyd does not support");
    return cfg_bad(ctx, "needs redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH");
}

static int cfg_parse_cluster(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    struct tally_hostport *seeds = cfg_field(cfg, ctx->opt);
    const char *at = strrchr(value, '@'), *pos = at != NULL ? at + 1 : value;
    struct cfg_span entry;

    cfg->n_cluster = 0; /* a flag replaces the variable's list, it does not add to it */
    memset(&cfg->cluster_auth, 0, sizeof(cfg->cluster_auth));
    /* "[[USER]:PASSWORD@]" once, for every node: as in --redis, the last '@' ends it. */
    if (at != NULL) {
        ctx->item = cfg_span_of(value);
        struct cfg_span auth = {value, (size_t)(at - value)};

        if (cfg_redis_auth(ctx, &cfg->cluster_auth, auth) < 0)
            return TALLY_EINVAL;
    }
    while (cfg_next_entry(&pos, &entry)) {
        if (entry.len == 0)
            return cfg_empty_entry(ctx, value);
        if (cfg->n_cluster == TALLY_CLUSTER_SEEDS_MAX)
            return cfg_fail(ctx, "more than %d seeds", TALLY_CLUSTER_SEEDS_MAX);
        ctx->item = entry;
        if (cfg_hostport(ctx, entry, 1, &seeds[cfg->n_cluster++]) < 0)
            return TALLY_EINVAL;
    }
    return 0;
}

/* ---- Keys and the token ---- */

static int cfg_parse_prefix(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    struct cfg_span s = cfg_span_of(value);

    if (s.len == 0 || s.len > TALLY_PREFIX_MAX)
        return cfg_bad(ctx, "must be 1..%d bytes", TALLY_PREFIX_MAX);
    if (strpbrk(value, "{}") != NULL)
        return cfg_bad(ctx, "must not contain '{' or '}': they would break Redis Cluster "
                            "hash tags");
    if (!cfg_is_graph(s))
        return cfg_bad(ctx, "must be printable ASCII without spaces");
    cfg_copy(cfg_field(cfg, ctx->opt), s);
    return 0;
}

/* The token is a secret: its errors say what is wrong but never repeat it. */
static int cfg_parse_token(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    struct cfg_span s = cfg_span_of(value);

    if (s.len == 0)
        return cfg_fail(ctx, "at least 1 character");
    if (s.len >= 9 && memcmp(s.p, "CHANGE-ME", 9) == 0)
        return cfg_fail(ctx, "still the placeholder of deploy/; set a secret (openssl rand -hex 24)");
    if (s.len > TALLY_TOKEN_MAX)
        return cfg_fail(ctx, "at most %d characters", TALLY_TOKEN_MAX);
    if (!cfg_is_graph(s))
        return cfg_fail(ctx, "only printable ASCII without spaces");
    cfg_copy(cfg_field(cfg, ctx->opt), s);
    return 0;
}

/* ---- Origins ---- */

/* Store ENTRY as browsers send an Origin: scheme and host in lower case, no default port. */
static int cfg_origin(struct cfg_ctx *ctx, struct cfg_span entry, char *out)
{
    const char *sep = NULL;
    struct cfg_span scheme, rest;
    struct cfg_hostport hp;
    uint16_t port = 0;
    size_t n;

    for (size_t i = 0; i + 3 <= entry.len && sep == NULL; i++)
        if (memcmp(entry.p + i, "://", 3) == 0)
            sep = entry.p + i;
    if (entry.len > TALLY_ORIGIN_LEN_MAX)
        return cfg_bad(ctx, "is longer than %d characters", TALLY_ORIGIN_LEN_MAX);
    scheme = (struct cfg_span){entry.p, sep != NULL ? (size_t)(sep - entry.p) : 0};
    if (!cfg_equal_nocase(scheme, "http") && !cfg_equal_nocase(scheme, "https"))
        return cfg_bad(ctx, "needs http:// or https://");
    rest = (struct cfg_span){sep + 3, entry.len - scheme.len - 3};
    if (memchr(rest.p, '/', rest.len) != NULL)
        return cfg_bad(ctx, "must have no path, not even a trailing slash");
    if (cfg_split_host(ctx, rest, &hp) < 0 || cfg_check_host(ctx, &hp) < 0)
        return TALLY_EINVAL;
    if (hp.port.p != NULL && cfg_port(ctx, hp.port, 1, &port) < 0)
        return TALLY_EINVAL;
    /* Never longer than ENTRY: only a default port or a port's leading zeros go. */
    n = cfg_copy_lower(out, scheme);
    memcpy(out + n, "://", 3);
    n += 3;
    if (hp.is_v6)
        out[n++] = '[';
    n += cfg_copy_lower(out + n, hp.host);
    if (hp.is_v6)
        out[n++] = ']';
    out[n] = '\0';
    if (port != 0 && port != (scheme.len == 5 ? 443 : 80))
        snprintf(out + n, TALLY_ORIGIN_LEN_MAX + 1 - n, ":%u", (unsigned)port);
    return 0;
}

static int cfg_parse_origins(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    char(*origins)[TALLY_ORIGIN_LEN_MAX + 1] = cfg_field(cfg, ctx->opt);
    const char *pos = value;
    struct cfg_span entry;

    cfg->any_origin = false;
    cfg->n_origins = 0;
    if (cfg_next_entry(&pos, &entry) && pos == NULL && entry.len == 1 && entry.p[0] == '*') {
        cfg->any_origin = true;
        return 0;
    }
    for (pos = value; cfg_next_entry(&pos, &entry);) {
        if (entry.len == 0)
            return cfg_empty_entry(ctx, value);
        if (cfg->n_origins == TALLY_ORIGINS_MAX)
            return cfg_fail(ctx, "more than %d origins", TALLY_ORIGINS_MAX);
        ctx->item = entry;
        if (entry.len == 1 && entry.p[0] == '*')
            return cfg_bad(ctx, "must stand alone, not in a list");
        if (cfg_origin(ctx, entry, origins[cfg->n_origins++]) < 0)
            return TALLY_EINVAL;
    }
    return 0;
}

/* ---- Address ranges ---- */

static void cfg_mask(struct tally_cidr *c)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = c->bits > 8 * i ? c->bits - 8 * i : 0;

        if (keep < 8)
            c->addr[i] &= (uint8_t)(0xff00u >> keep);
    }
}

/* ADDR or ADDR/BITS; IPv4 becomes IPv4-mapped, so one match covers both families. */
static int cfg_cidr(struct cfg_ctx *ctx, struct cfg_span entry, struct tally_cidr *out)
{
    char buf[INET6_ADDRSTRLEN];
    const char *slash = memchr(entry.p, '/', entry.len);
    struct cfg_span addr = {entry.p, slash != NULL ? (size_t)(slash - entry.p) : entry.len};
    uint32_t bits, max = 128;

    memset(out, 0, sizeof(*out));
    if (addr.len >= sizeof(buf))
        return cfg_bad(ctx, "is not an IPv4 or IPv6 address");
    cfg_copy(buf, addr);
    if (inet_pton(AF_INET, buf, out->addr + 12) == 1) {
        out->addr[10] = out->addr[11] = 0xff;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) != 1) {
        return cfg_bad(ctx, "is not an IPv4 or IPv6 address");
    }
    bits = max;
    if (slash != NULL &&
        cfg_number((struct cfg_span){slash + 1, entry.len - addr.len - 1}, 0, max, &bits) != 0)
        return cfg_bad(ctx, "needs a prefix length of 0..%" PRIu32 " for IPv%d", max,
                       max == 32 ? 4 : 6);
    out->bits = (uint8_t)(bits + 128 - max);
    cfg_mask(out); /* host bits past the prefix are allowed, but must not take part */
    return 0;
}

static int cfg_parse_trust(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    struct tally_cidr *trust = cfg_field(cfg, ctx->opt);
    const char *pos = value;
    struct cfg_span entry;

    cfg->n_trust = 0;
    while (cfg_next_entry(&pos, &entry)) {
        if (entry.len == 0)
            return cfg_empty_entry(ctx, value);
        if (cfg->n_trust == TALLY_TRUST_MAX)
            return cfg_fail(ctx, "more than %d entries", TALLY_TRUST_MAX);
        ctx->item = entry;
        if (cfg_cidr(ctx, entry, &trust[cfg->n_trust++]) < 0)
            return TALLY_EINVAL;
    }
    return 0;
}

/* ---- Numbers, levels, switches ---- */

static int cfg_parse_uint(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    const struct cfg_option *opt = ctx->opt;
    int rc = cfg_number(cfg_span_of(value), opt->min, opt->max, cfg_field(cfg, opt));

    if (rc < 0)
        return cfg_bad(ctx, "is not a number");
    if (rc > 0)
        return cfg_bad(ctx, "must be %" PRIu32 "..%" PRIu32, opt->min, opt->max);
    return 0;
}

static int cfg_parse_log_level(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    enum tally_log_level *level = cfg_field(cfg, ctx->opt);

    for (int l = TALLY_LOG_ERROR; l <= TALLY_LOG_DEBUG; l++) {
        if (cfg_equal_nocase(cfg_span_of(value), tally_log_level_name((enum tally_log_level)l))) {
            *level = (enum tally_log_level)l;
            return 0;
        }
    }
    return cfg_bad(ctx, "must be error, warn, info or debug");
}

static int cfg_parse_bool(struct cfg_ctx *ctx, struct tally_config *cfg, const char *value)
{
    static const char *const words[] = {"0", "false", "no", "off", "1", "true", "yes", "on"};
    bool *on = cfg_field(cfg, ctx->opt);

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (cfg_equal_nocase(cfg_span_of(value), words[i])) {
            *on = i >= 4;
            return 0;
        }
    }
    return cfg_bad(ctx, "must be 1/0, true/false, yes/no or on/off");
}

/* ---- Sources: defaults, environment, command line ---- */

enum cfg_source { CFG_FROM_DEFAULT, CFG_FROM_ENV, CFG_FROM_FLAG };

static void cfg_env_name(const struct cfg_option *opt, char *out, size_t size)
{
    size_t n = (size_t)snprintf(out, size, "TALLY_%s", opt->flag);

    for (size_t i = 0; i < n && i < size; i++) {
        if (out[i] == '-')
            out[i] = '_';
        else if (out[i] >= 'a' && out[i] <= 'z')
            out[i] = (char)(out[i] - 'a' + 'A');
    }
}

static int cfg_apply(struct cfg_ctx *ctx, struct tally_config *cfg, const struct cfg_option *opt,
                     const char *value)
{
    ctx->opt = opt;
    ctx->item = cfg_span_of(value);
    return opt->parse(ctx, cfg, value);
}

static int cfg_apply_defaults(struct cfg_ctx *ctx, struct tally_config *cfg, unsigned ncpu)
{
    char cores[16];

    /* A machine with more cores than threads allowed still starts, with the most allowed. */
    if (ncpu > TALLY_THREADS_MAX)
        ncpu = TALLY_THREADS_MAX;
    snprintf(cores, sizeof(cores), "%u", ncpu < 1 ? 1 : ncpu);
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_option *opt = &cfg_options[i];
        const char *def = opt->flags & CFG_NCPU ? cores : opt->def;

        if (def == NULL)
            continue;
        snprintf(ctx->name, sizeof(ctx->name), "default of --%s", opt->flag);
        if (cfg_apply(ctx, cfg, opt, def) < 0)
            return TALLY_EINVAL;
    }
    return 0;
}

static int cfg_apply_env(struct cfg_ctx *ctx, struct tally_config *cfg, enum cfg_source *src,
                         tally_getenv_fn *getenv_fn, void *getenv_arg)
{
    for (size_t i = 0; i < CFG_N_OPTIONS && getenv_fn != NULL; i++) {
        const char *value;

        cfg_env_name(&cfg_options[i], ctx->name, sizeof(ctx->name));
        value = getenv_fn(ctx->name, getenv_arg);
        /* Empty counts as unset: env files and compose files write "TALLY_TOKEN=". */
        if (value == NULL || value[0] == '\0')
            continue;
        if (cfg_apply(ctx, cfg, &cfg_options[i], value) < 0)
            return TALLY_EINVAL;
        src[i] = CFG_FROM_ENV;
    }
    return 0;
}

static bool cfg_is_action(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "--version") == 0 ||
           strcmp(arg, "-V") == 0;
}

/* The row of "--flag" or "--flag=value"; NULL for anything else. */
static const struct cfg_option *cfg_lookup(const char *arg)
{
    size_t len;

    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    arg += 2;
    len = strcspn(arg, "=");
    for (size_t i = 0; i < CFG_N_OPTIONS; i++)
        if (strlen(cfg_options[i].flag) == len && strncmp(cfg_options[i].flag, arg, len) == 0)
            return &cfg_options[i];
    return NULL;
}

/* The row ARG names, with CTX->name set for messages; or why ARG is not one. */
static int cfg_flag_of(struct cfg_ctx *ctx, const char *arg, const struct cfg_option **opt)
{
    struct cfg_span name = {arg, strcspn(arg, "=")};
    char shown[CFG_SHOWN_SIZE];

    ctx->opt = NULL;
    if (arg[0] != '-' || strcmp(arg, "-") == 0) {
        cfg_show(shown, cfg_span_of(arg));
        snprintf(ctx->name, sizeof(ctx->name), "'%s'", shown);
        return cfg_fail(ctx, "unexpected argument (tallyd takes only flags, see --help)");
    }
    cfg_show(ctx->name, name);
    *opt = cfg_lookup(arg);
    if (*opt != NULL)
        return 0;
    if (arg[name.len] == '=' && cfg_is_action(ctx->name))
        return cfg_fail(ctx, "takes no value");
    return cfg_fail(ctx, "unknown flag (see --help)");
}

static int cfg_apply_argv(struct cfg_ctx *ctx, struct tally_config *cfg, enum cfg_source *src,
                          int argc, char *const argv[])
{
    for (int i = 1; i < argc; i++) {
        const struct cfg_option *opt;
        const char *value = strchr(argv[i], '=');

        if (cfg_is_action(argv[i]))
            continue; /* found by cfg_action() */
        if (cfg_flag_of(ctx, argv[i], &opt) < 0)
            return TALLY_EINVAL;
        if (value != NULL)
            value++;
        else if (opt->metavar == NULL)
            value = "on";
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return cfg_fail(ctx, "missing value (%s)", opt->metavar);
        if (cfg_apply(ctx, cfg, opt, value) < 0)
            return TALLY_EINVAL;
        src[opt - cfg_options] = CFG_FROM_FLAG;
    }
    return 0;
}

/* --help or --version, wherever they stand, and whatever else is wrong: an operator with a
 * broken variable can still read the help. Values are skipped as cfg_apply_argv() would. */
static int cfg_action(int argc, char *const argv[])
{
    bool help = false, version = false;

    for (int i = 1; i < argc; i++) {
        const struct cfg_option *opt = cfg_lookup(argv[i]);

        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            help = true;
        else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0)
            version = true;
        else if (opt != NULL && opt->metavar != NULL && strchr(argv[i], '=') == NULL)
            i++;
    }
    return help ? TALLY_CONFIG_HELP : version ? TALLY_CONFIG_VERSION : TALLY_CONFIG_RUN;
}

/* --redis-cluster replaces --redis (the contract): a --redis given as well is ignored, and
 * REDIS_REPLACED names it so that the daemon can say so. Defaults do not count as given. */
static void cfg_note_replaced(struct tally_config *cfg, const enum cfg_source *src)
{
    const struct cfg_option *cluster = cfg_lookup("--redis-cluster");
    const struct cfg_option *redis = cfg_lookup("--redis");
    enum cfg_source r = src[redis - cfg_options];

    cfg->redis_replaced[0] = '\0';
    if (src[cluster - cfg_options] == CFG_FROM_DEFAULT || r == CFG_FROM_DEFAULT)
        return;
    if (r == CFG_FROM_ENV)
        cfg_env_name(redis, cfg->redis_replaced, sizeof(cfg->redis_replaced));
    else
        snprintf(cfg->redis_replaced, sizeof(cfg->redis_replaced), "--%s", redis->flag);
}

int tally_config_parse(struct tally_config *cfg, int argc, char *const argv[],
                       tally_getenv_fn *getenv_fn, void *getenv_arg, unsigned ncpu, char *err,
                       size_t errlen)
{
    enum cfg_source src[CFG_N_OPTIONS] = {CFG_FROM_DEFAULT};
    struct cfg_ctx ctx = {.err = err, .errlen = errlen};
    int action, rc;

    if (argv == NULL || argc < 0)
        argc = 0;
    action = cfg_action(argc, argv);
    memset(cfg, 0, sizeof(*cfg));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    rc = cfg_apply_defaults(&ctx, cfg, ncpu);
    if (rc == 0)
        rc = cfg_apply_env(&ctx, cfg, src, getenv_fn, getenv_arg);
    if (rc == 0)
        rc = cfg_apply_argv(&ctx, cfg, src, argc, argv);
    if (rc == 0)
        cfg_note_replaced(cfg, src);
    if (action == TALLY_CONFIG_RUN)
        return rc;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return action;
}

/* ---- Help ---- */

static void cfg_usage_option(FILE *out, const struct cfg_option *opt)
{
    char left[48], env[48];
    const char *def = opt->def;

    snprintf(left, sizeof(left), "--%s%s%s", opt->flag, opt->metavar != NULL ? " " : "",
             opt->metavar != NULL ? opt->metavar : "");
    cfg_env_name(opt, env, sizeof(env));
    if (def == NULL)
        def = opt->flags & CFG_NCPU ? CFG_NCPU_DEFAULT : "none";
    fprintf(out, "  %-*s  %s\n", CFG_USAGE_COL, left, opt->help);
    fprintf(out, "  %-*s  [env %s, default %s]\n", CFG_USAGE_COL, "", env, def);
}

void tally_config_usage(FILE *out)
{
    fputs("Usage: tallyd [OPTIONS]\n"
          "\n"
          "tallyd receives view, share and comment events over HTTP and counts them in Redis.\n"
          "Every option also reads its environment variable (an empty one counts as unset);\n"
          "a flag wins over its variable.\n"
          "\n"
          "Options:\n",
          out);
    for (size_t i = 0; i < CFG_N_OPTIONS; i++)
        cfg_usage_option(out, &cfg_options[i]);
    fprintf(out, "  %-*s  print this help and exit\n", CFG_USAGE_COL, "-h, --help");
    fprintf(out, "  %-*s  print the version and exit\n", CFG_USAGE_COL, "-V, --version");
}

/* ---- The manual page ---- */

/* S as roff text: backslashes and hyphens escaped, so that "--flag" stays two hyphens. */
static void cfg_roff(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            fputs("\\e", out);
        else if (*s == '-')
            fputs("\\-", out);
        else
            fputc(*s, out);
    }
}

static void cfg_man_option(FILE *out, const struct cfg_option *opt)
{
    char env[48];

    cfg_env_name(opt, env, sizeof(env));
    fputs(".TP\n\\fB\\-\\-", out);
    cfg_roff(out, opt->flag);
    fputs("\\fR", out);
    if (opt->metavar != NULL) {
        fputs(" \\fI", out);
        cfg_roff(out, opt->metavar);
        fputs("\\fR", out);
    }
    fputs("\n\\&", out); /* \& : a help text starting with '.' stays text */
    cfg_roff(out, opt->help);
    fputs(".\n.br\nVariable: \\fB", out);
    cfg_roff(out, env);
    fputs("\\fR\n.br\nDefault: ", out);
    if (opt->def != NULL) {
        fputs("\\fB\\%", out); /* \% : never hyphenated */
        cfg_roff(out, opt->def);
        fputs("\\fR", out);
    } else {
        cfg_roff(out, opt->flags & CFG_NCPU ? CFG_NCPU_MAN : "none");
    }
    fputs("\n", out);
}

void tally_config_man(FILE *out, const char *date)
{
    fputs(".\\\" tallyd.8 -- written by tally_config_man() from the option table of config.c,\n"
          ".\\\" the table --help is written from.\n",
          out);
    fprintf(out, ".TH TALLYD 8 %s \"tally %s\" \"System Manager's Manual\"\n", date, TALLY_VERSION);
    fputs(".SH NAME\n"
          "tallyd \\- count views, shares and comments of articles in Redis\n"
          ".SH SYNOPSIS\n"
          ".B tallyd\n"
          ".RI [ OPTION ...]\n"
          ".SH DESCRIPTION\n"
          ".B tallyd\n"
          "receives view, share and comment events over HTTP and counts them in Redis.\n"
          "It serves the counts back as JSON, the embed script\n"
          ".IR tally.js ,\n"
          "badges, a dashboard and Prometheus metrics.\n"
          "All its state is in Redis: it needs no writable directory.\n"
          ".PP\n"
          "Every option also reads an environment variable, named after the flag\n"
          "(\\fB\\-\\-rate\\-limit\\fR reads \\fBTALLY_RATE_LIMIT\\fR);\n"
          "a flag wins over its variable, and an empty variable counts as unset.\n"
          "A bad flag or value prints one line naming it and exits with status 2, before\n"
          "anything starts.\n"
          ".SH OPTIONS\n",
          out);
    for (size_t i = 0; i < CFG_N_OPTIONS; i++)
        cfg_man_option(out, &cfg_options[i]);
    fputs(".TP\n"
          "\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n"
          "Print the options, their variables and defaults, and exit.\n"
          ".TP\n"
          "\\fB\\-V\\fR, \\fB\\-\\-version\\fR\n"
          "Print the versions of tally, libevent, hiredis and cJSON, and exit.\n"
          ".SH SIGNALS\n"
          "On\n"
          ".B SIGTERM\n"
          "or\n"
          ".BR SIGINT ,\n"
          "tallyd stops accepting connections, answers the requests in flight and exits.\n"
          ".SH EXIT STATUS\n"
          "0 after a signal (or a healthy\n"
          "\\fB\\-\\-healthcheck\\fR),\n"
          "1 when it cannot start (or an unhealthy check),\n"
          "2 for a bad flag or value.\n"
          ".SH FILES\n"
          ".TP\n"
          ".I /etc/default/tallyd\n"
          "The variables the systemd unit\n"
          ".I tallyd.service\n"
          "reads; an example with every variable is\n"
          ".IR tallyd.env ,\n"
          "under\n"
          ".I /usr/share/doc/tally/examples\n"
          "in the package.\n"
          ".SH SEE ALSO\n"
          ".BR redis\\-server (1),\n"
          ".BR systemd.exec (5),\n"
          ".BR taskset (1)\n",
          out);
}

/* ---- Questions the server asks ---- */

bool tally_config_origin_allowed(const struct tally_config *cfg, const char *origin, size_t len)
{
    struct cfg_span o = {origin, len};

    if (cfg->any_origin)
        return true;
    /* Stored origins always hold "://", so the literal "null" matches none. */
    for (size_t i = 0; i < cfg->n_origins; i++)
        if (cfg_equal_nocase(o, cfg->origins[i]))
            return true;
    return false;
}

static bool cfg_in_range(const struct tally_cidr *c, const uint8_t addr[16])
{
    unsigned full = c->bits / 8, rest = c->bits % 8;

    if (memcmp(c->addr, addr, full) != 0)
        return false;
    return rest == 0 || ((c->addr[full] ^ addr[full]) & (0xff00u >> rest) & 0xffu) == 0;
}

bool tally_config_trusted(const struct tally_config *cfg, const uint8_t addr[16])
{
    for (size_t i = 0; i < cfg->n_trust; i++)
        if (cfg_in_range(&cfg->trust[i], addr))
            return true;
    return false;
}
