/* functions.c -- tally's Redis function library: the names the store calls, and the admin step
 * that loads it (`tallyd --load-functions`). The daemon's Redis user may call the functions
 * (FCALL, FCALL_RO) but neither load them nor run scripts of its own (EVAL): loading needs an
 * admin, once per version, before tallyds of that version start. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "tally/functions.h"

#define FUNCTIONS_TIMEOUT_S 10
#define FUNCTIONS_NODES_MAX 64

/* The library's text, compiled in by cmake/embed.cmake from cmake/functions.cmake's output. */
extern const unsigned char tally_asset_functions_lua[];
extern const size_t tally_asset_functions_lua_len;

/* In enum tally_script's order; the same names as TALLY_SCRIPTS in CMakeLists.txt. */
static const struct {
    const char *name;
    bool read_only;
} functions_scripts[TALLY_SCRIPTS + 1] = {
    {"apply", false},
    {"top", true},
    {"forget", false},
    {"import", false},
    {"ack", false},
    {"fold", false},
    {"merged", false},
    {"reclaim", false},
    {"staged", false},
    {"drain", false},
    {"kept", false},
    {"cplan", false},
    {"cpart", false},
    {"cheartbeat", false},
    {"cstale", true},
    {"cgone", false},
    {"cdrop", false},
    {"kept_ro", true},
    {"mark", false},
    {"unmark", false},
    {"version", true},
};

/* Filled once, by whichever thread asks first (pthread_once), read-only after. */
static pthread_once_t functions_once = PTHREAD_ONCE_INIT;
static char functions_lib[TALLY_FUNCTION_NAME_MAX];
static char functions_names[TALLY_SCRIPTS + 1][TALLY_FUNCTION_NAME_MAX];

const char *tally_functions_code(size_t *len)
{
    *len = tally_asset_functions_lua_len;
    return (const char *)tally_asset_functions_lua;
}

/* "tally_<v>" from the first line, "#!lua name=tally_<v>"; then each "tally_<name>_<v>". */
static void functions_init(void)
{
    static const char head[] = "#!lua name=";
    const char *p = (const char *)tally_asset_functions_lua + sizeof(head) - 1;

    snprintf(functions_lib, sizeof(functions_lib), "%.*s", (int)strcspn(p, "\n"), p);
    for (int i = 0; i <= TALLY_SCRIPTS; i++)
        snprintf(functions_names[i], TALLY_FUNCTION_NAME_MAX, "tally_%.16s_%.24s",
                 functions_scripts[i].name, functions_lib + strlen("tally_"));
}

const char *tally_functions_library(void)
{
    pthread_once(&functions_once, functions_init);
    return functions_lib;
}

const char *tally_functions_name(enum tally_script script)
{
    pthread_once(&functions_once, functions_init);
    return functions_names[script];
}

bool tally_functions_read_only(enum tally_script script)
{
    return functions_scripts[script].read_only;
}

enum tally_script tally_functions_read_only_twin(enum tally_script script)
{
    return script == TALLY_SCRIPT_KEPT ? TALLY_SCRIPT_KEPT_RO : TALLY_SCRIPTS;
}

/* ---- Loading ---- */

static redisContext *functions_connect_tcp(const char *host, unsigned port)
{
    struct timeval tv = {FUNCTIONS_TIMEOUT_S, 0};
    redisContext *c = redisConnectWithTimeout(host, (int)port, tv);

    if (c != NULL && c->err == 0)
        redisSetTimeout(c, tv);
    return c;
}

/* Run one command; false with a message on stderr when it fails or Redis says no. */
static bool functions_ok(redisContext *c, const char *where, int argc, const char **argv,
                         const size_t *len)
{
    redisReply *r = redisCommandArgv(c, argc, argv, len);
    bool ok = r != NULL && r->type != REDIS_REPLY_ERROR;

    if (!ok)
        fprintf(stderr, "tallyd: %s: %s failed: %s\n", where, argv[0],
                r != NULL ? r->str : c->errstr);
    freeReplyObject(r);
    return ok;
}

/* AUTH with TARGET's user and password, if any; then FUNCTION LOAD REPLACE. */
static bool functions_load_into(redisContext *c, const char *where,
                                const struct tally_redis_target *auth)
{
    size_t len;
    const char *code = tally_functions_code(&len);
    const char *load[] = {"FUNCTION", "LOAD", "REPLACE", code};
    const size_t load_len[] = {8, 4, 7, len};

    if (c == NULL || c->err != 0) {
        fprintf(stderr, "tallyd: %s: cannot connect: %s\n", where,
                c != NULL ? c->errstr : "out of memory");
        return false;
    }
    if (auth != NULL && auth->password[0] != '\0') {
        const char *argv[3] = {"AUTH"};
        size_t alen[3] = {4};
        int argc = 1;

        if (auth->username[0] != '\0') {
            argv[argc] = auth->username;
            alen[argc++] = strlen(auth->username);
        }
        argv[argc] = auth->password;
        alen[argc++] = strlen(auth->password);
        if (!functions_ok(c, where, argc, argv, alen))
            return false;
    }
    if (!functions_ok(c, where, 4, load, load_len))
        return false;
    printf("tallyd: loaded the Redis functions %s into %s\n", tally_functions_library(), where);
    return true;
}

/* The nodes of the cluster, from the CLUSTER NODES of the node at HOST:PORT (C): "host:port"
 * into OUT. Every node, replicas too: right after a failover (or the cluster's creation) one
 * node's view of who is master may lag, so each node is asked itself (ROLE). A node that has
 * never met another (a cluster of one) does not know its own address (":port@cport"): that
 * one is HOST:PORT. */
static int functions_nodes(redisContext *c, const char *host, unsigned port,
                           char out[][TALLY_HOST_MAX + 8], int max)
{
    redisReply *r = redisCommand(c, "CLUSTER NODES");
    int n = 0;

    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        fprintf(stderr, "tallyd: CLUSTER NODES failed: %s\n",
                r == NULL ? c->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "not a string");
        freeReplyObject(r);
        return -1;
    }
    /* "<id> <ip:port@cport[,hostname]> <flags> ...", one node a line. */
    for (char *line = r->str, *next; line != NULL && *line != '\0' && n < max; line = next) {
        char id[64], addr[TALLY_HOST_MAX + 32], flags[128];

        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (sscanf(line, "%63s %286s %127s", id, addr, flags) != 3 ||
            strstr(flags, "noaddr") != NULL || strstr(flags, "handshake") != NULL)
            continue;
        addr[strcspn(addr, "@,")] = '\0';
        if (addr[0] == ':' && strstr(flags, "myself") != NULL)
            snprintf(addr, sizeof(addr), "%s:%u", host, port);
        if (addr[0] == ':' || addr[0] == '\0' || strlen(addr) >= TALLY_HOST_MAX + 8)
            continue;
        memcpy(out[n++], addr, strlen(addr) + 1);
    }
    freeReplyObject(r);
    return n;
}

/* Is the node at C a master, by its own word? */
static bool functions_is_master(redisContext *c)
{
    redisReply *r = redisCommand(c, "ROLE");
    bool master = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(r->element[0]->str, "master") == 0;

    freeReplyObject(r);
    return master;
}

/* Load into the node at ADDR ("host:port"; an IPv6 host ends at the last colon) if it is a
 * master: 1 loaded, 0 a replica (it gets the library from its master), -1 failed. */
static int functions_load_node(const char *addr)
{
    char host[TALLY_HOST_MAX + 1];
    const char *colon = strrchr(addr, ':');
    unsigned port = colon != NULL ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
    redisContext *c;
    int rc;

    if (colon == NULL || port == 0 || (size_t)(colon - addr) > TALLY_HOST_MAX) {
        fprintf(stderr, "tallyd: '%s' is not host:port\n", addr);
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    c = functions_connect_tcp(host, port);
    if (c != NULL && c->err == 0 && !functions_is_master(c))
        rc = 0;
    else
        rc = functions_load_into(c, addr, NULL) ? 1 : -1;
    redisFree(c);
    return rc;
}

static int functions_load_cluster(const struct tally_config *cfg)
{
    static char nodes[FUNCTIONS_NODES_MAX][TALLY_HOST_MAX + 8];
    int n = -1, loaded = 0, failed = 0;

    for (size_t i = 0; i < cfg->n_cluster && n <= 0; i++) {
        redisContext *c = functions_connect_tcp(cfg->cluster[i].host, cfg->cluster[i].port);

        if (c != NULL && c->err == 0)
            n = functions_nodes(c, cfg->cluster[i].host, cfg->cluster[i].port, nodes,
                                FUNCTIONS_NODES_MAX);
        else
            fprintf(stderr, "tallyd: cannot connect to %s:%u: %s\n", cfg->cluster[i].host,
                    cfg->cluster[i].port, c != NULL ? c->errstr : "out of memory");
        redisFree(c);
    }
    for (int i = 0; i < n; i++) {
        int rc = functions_load_node(nodes[i]);

        loaded += rc > 0;
        failed += rc < 0;
    }
    if (loaded == 0 || failed > 0) {
        fprintf(stderr, "tallyd: the functions are not on every master of the cluster\n");
        return 1;
    }
    return 0;
}

int tally_functions_load(const struct tally_config *cfg)
{
    const struct tally_redis_target *t = &cfg->redis;
    char where[TALLY_HOST_MAX + 8];
    redisContext *c;
    bool ok;

    if (cfg->n_cluster > 0)
        return functions_load_cluster(cfg);
    if (t->is_unix) {
        struct timeval tv = {FUNCTIONS_TIMEOUT_S, 0};

        snprintf(where, sizeof(where), "%s", t->path);
        c = redisConnectUnixWithTimeout(t->path, tv);
    } else {
        snprintf(where, sizeof(where), strchr(t->addr.host, ':') ? "[%s]:%u" : "%s:%u",
                 t->addr.host, t->addr.port);
        c = functions_connect_tcp(t->addr.host, t->addr.port);
    }
    /* Functions belong to the whole server, not to one database: no SELECT. */
    ok = functions_load_into(c, where, t);
    redisFree(c);
    return ok ? 0 : 1;
}
