/* redis_router.c -- which connection serves which key: the one Redis of --redis, or the
 * masters of a Redis Cluster, learnt with CLUSTER SLOTS and kept up to date by MOVED replies,
 * lost connections and a periodic refresh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/keys.h"
#include "tally/log.h"
#include "tally/metrics.h"
#include "tally/redis.h"
#include "tally/store.h"

#define ROUTER_REFRESH_MS 30000     /* the map is read again this often */
#define ROUTER_THROTTLE_MS 1000     /* and at most this often, which is how often it is read
                                     * while some slot has no ready master (a failover) */

struct router_node {
    struct tally_redis *r;
    struct tally_store *st; /* writes, salts, CLUSTER SLOTS */
    struct tally_store *rd; /* reads: a slow one times out here, beside ST, not on it */
    struct tally_hostport addr;
};

struct tally_redis {
    struct event_base *base;
    const struct tally_config *cfg;
    struct tally_metrics *metrics;
    tally_redis_state_cb *on_state;
    void *arg;
    bool cluster, ready;
    struct router_node nodes[TALLY_REDIS_NODES_MAX]; /* ST NULL: no node in the entry */
    size_t n_nodes;                 /* entries used, in standalone mode: 1 */
    struct tally_slot_map map;      /* cluster */
    bool asking;                    /* a CLUSTER SLOTS is in flight */
    uint64_t refreshed_at;          /* ms, when the last one was sent */
    struct event *refresh_ev;
};

static void router_refresh(struct tally_redis *r);

/* ---- State ---- */

/* Has every slot a master whose write (READS: read) connection is ready? */
static bool router_all_ready(const struct tally_redis *r, bool reads)
{
    if (!r->cluster)
        return r->n_nodes > 0 && tally_store_ready(reads ? r->nodes[0].rd : r->nodes[0].st);
    for (size_t s = 0; s < TALLY_SLOTS; s++) {
        const struct router_node *n = r->map.slots[s] < 0 ? NULL : &r->nodes[r->map.slots[s]];
        const struct tally_store *st = n == NULL ? NULL : reads ? n->rd : n->st;

        if (st == NULL || !tally_store_ready(st))
            return false;
    }
    return true;
}

static bool router_compute_ready(const struct tally_redis *r)
{
    return router_all_ready(r, false);
}

static void router_update(struct tally_redis *r)
{
    bool ready = router_compute_ready(r);

    /* tally_redis_up: this worker can write and read. */
    tally_gauge_set(&r->metrics->redis_up, ready && router_all_ready(r, true));
    if (ready == r->ready)
        return;
    r->ready = ready;
    if (r->cluster)
        log_info("redis cluster %s", ready ? "ready: every slot has a master" : "not ready");
    if (r->on_state != NULL)
        r->on_state(ready, r->arg);
}

static void on_node_state(struct tally_store *st, bool ready, void *arg)
{
    struct router_node *node = arg;
    struct tally_redis *r = node->r;

    (void)st;
    /* A master gone may mean a failover: learn the new map. A node back may be the first
     * chance to learn any map at all. */
    if (r->cluster)
        router_refresh(r);
    router_update(r);
    (void)ready;
}

static void on_node_read_state(struct tally_store *st, bool ready, void *arg)
{
    struct router_node *node = arg;

    (void)st;
    (void)ready;
    router_update(node->r);
}

/* ---- Nodes ---- */

/* Connect the node of entry I, just added to the map. */
static void router_connect(struct tally_redis *r, int i)
{
    struct tally_redis_target t = {0};
    struct router_node *node = &r->nodes[i];

    node->r = r;
    node->addr = r->map.addr[i];
    t.addr = node->addr;
    memcpy(t.username, r->cfg->cluster_auth.username, sizeof(t.username));
    memcpy(t.password, r->cfg->cluster_auth.password, sizeof(t.password));
    node->st = tally_store_new(r->base, r->cfg, &t, TALLY_STORE_WRITES, r->metrics,
                               on_node_state, node);
    node->rd = tally_store_new(r->base, r->cfg, &t, TALLY_STORE_READS, r->metrics,
                               on_node_read_state, node);
}

/* Forget the node of entry I: it left the cluster's map. Its commands still in flight are
 * answered TALLY_EUNKNOWN. */
static void router_disconnect(struct tally_redis *r, int i)
{
    log_info("redis cluster node %s:%u left the slot map; disconnected", r->nodes[i].addr.host,
             r->nodes[i].addr.port);
    tally_store_free(r->nodes[i].st);
    tally_store_free(r->nodes[i].rd);
    r->nodes[i].st = r->nodes[i].rd = NULL;
}

static int router_node(struct tally_redis *r, const struct tally_hostport *addr,
                       enum tally_node_state state)
{
    bool added;
    int i = tally_slot_map_node(&r->map, addr, state, &added);

    if (i >= 0 && added)
        router_connect(r, i);
    return i >= 0 && r->nodes[i].st != NULL ? i : -1;
}

/* ---- The slot map (pure) ---- */

void tally_slot_map_init(struct tally_slot_map *m)
{
    memset(m->addr, 0, sizeof(m->addr));
    memset(m->state, TALLY_NODE_FREE, sizeof(m->state));
    memset(m->slots, -1, sizeof(m->slots));
}

static int slot_map_find(const struct tally_slot_map *m, const struct tally_hostport *addr)
{
    for (int i = 0; i < TALLY_REDIS_NODES_MAX; i++)
        if (m->state[i] != TALLY_NODE_FREE && m->addr[i].port == addr->port &&
            strcmp(m->addr[i].host, addr->host) == 0)
            return i;
    return -1;
}

int tally_slot_map_node(struct tally_slot_map *m, const struct tally_hostport *addr,
                        enum tally_node_state state, bool *added)
{
    int i = slot_map_find(m, addr);

    *added = false;
    if (i >= 0) {
        if (m->state[i] != TALLY_NODE_SEED)
            m->state[i] = (uint8_t)state;
        return i;
    }
    for (i = 0; i < TALLY_REDIS_NODES_MAX; i++)
        if (m->state[i] == TALLY_NODE_FREE) {
            m->addr[i] = *addr;
            m->state[i] = (uint8_t)state;
            *added = true;
            return i;
        }
    return -1;
}

/* One entry of CLUSTER SLOTS: [start, end, [ip, port, id, ...], replicas...], checked. */
static int slot_map_range(const redisReply *e, const struct tally_hostport *asked, long long *lo,
                          long long *hi, struct tally_hostport *addr)
{
    const redisReply *m;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY)
        return TALLY_EREDIS;
    *lo = e->element[0]->integer;
    *hi = e->element[1]->integer;
    m = e->element[2];
    if (*lo < 0 || *hi >= TALLY_SLOTS || *lo > *hi || m->elements < 2 ||
        m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER ||
        m->element[1]->integer <= 0 || m->element[1]->integer > 65535 ||
        m->element[0]->len > TALLY_HOST_MAX)
        return TALLY_EREDIS;
    /* An empty address means "the node you asked". */
    snprintf(addr->host, sizeof(addr->host), "%s",
             m->element[0]->len > 0 ? m->element[0]->str : asked->host);
    addr->port = (uint16_t)m->element[1]->integer;
    return 0;
}

int tally_slot_map_read(struct tally_slot_map *m, const redisReply *reply,
                        const struct tally_hostport *asked, int *added, size_t *n_added,
                        int *gone, size_t *n_gone)
{
    int8_t slots[TALLY_SLOTS];
    bool named[TALLY_REDIS_NODES_MAX] = {false};
    struct tally_hostport addr;
    long long lo, hi;

    *n_added = *n_gone = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return TALLY_EREDIS;
    for (size_t k = 0; k < reply->elements; k++)
        if (slot_map_range(reply->element[k], asked, &lo, &hi, &addr) < 0)
            return TALLY_EREDIS;
    /* Forget first what left two maps ago, so that its entry can take a new node. */
    for (int i = 0; i < TALLY_REDIS_NODES_MAX; i++)
        for (size_t k = 0; m->state[i] == TALLY_NODE_LEFT && k <= reply->elements; k++) {
            if (k == reply->elements) {
                m->state[i] = TALLY_NODE_FREE;
                gone[(*n_gone)++] = i;
            } else if (slot_map_range(reply->element[k], asked, &lo, &hi, &addr) == 0 &&
                       addr.port == m->addr[i].port && strcmp(addr.host, m->addr[i].host) == 0) {
                break;
            }
        }
    memset(slots, -1, sizeof(slots));
    for (size_t k = 0; k < reply->elements; k++) {
        bool is_new;
        int i;

        (void)slot_map_range(reply->element[k], asked, &lo, &hi, &addr);
        if ((i = tally_slot_map_node(m, &addr, TALLY_NODE_LIVE, &is_new)) < 0)
            return TALLY_ENOMEM;
        if (is_new)
            added[(*n_added)++] = i;
        named[i] = true;
        for (long long s = lo; s <= hi; s++)
            slots[s] = (int8_t)i;
    }
    for (int i = 0; i < TALLY_REDIS_NODES_MAX; i++)
        if (m->state[i] == TALLY_NODE_LIVE && !named[i])
            m->state[i] = TALLY_NODE_LEFT;
    memcpy(m->slots, slots, sizeof(slots));
    return 0;
}

/* ---- Reading the map ---- */

struct slots_call {
    struct tally_redis *r;
    struct tally_hostport asked;
};

static void on_slots(int status, redisReply *reply, void *arg)
{
    struct slots_call *call = arg;
    struct tally_redis *r = call->r;
    int added[TALLY_REDIS_NODES_MAX], gone[TALLY_REDIS_NODES_MAX];
    size_t n_added, n_gone;
    int rc;

    r->asking = false;
    if (status < 0 || reply->type != REDIS_REPLY_ARRAY) {
        if (status == 0)
            log_warn("CLUSTER SLOTS failed: %s", reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
        free(call);
        return;
    }
    rc = tally_slot_map_read(&r->map, reply, &call->asked, added, &n_added, gone, &n_gone);
    free(call);
    /* The gone first: an added node may take the entry of one. */
    for (size_t i = 0; i < n_gone; i++)
        router_disconnect(r, gone[i]);
    for (size_t i = 0; i < n_added; i++)
        router_connect(r, added[i]);
    if (rc < 0)
        log_warn("cannot read the cluster's slot map: %s", tally_strerror(rc));
    router_update(r);
}

/* Ask any ready node for the map (at most once a second, one request at a time). */
static void router_refresh(struct tally_redis *r)
{
    static const char *const argv[] = {"CLUSTER", "SLOTS"};
    static const size_t argvlen[] = {7, 5};
    uint64_t now = tally_now_ms();
    struct slots_call *call;

    if (!r->cluster || r->asking || now - r->refreshed_at < ROUTER_THROTTLE_MS)
        return;
    for (size_t i = 0; i < TALLY_REDIS_NODES_MAX; i++) {
        struct tally_store *st = r->nodes[(i + now) % TALLY_REDIS_NODES_MAX].st;

        if (st == NULL || !tally_store_ready(st) || (call = malloc(sizeof(*call))) == NULL)
            continue;
        call->r = r;
        call->asked = tally_store_target(st)->addr;
        if (tally_store_command(st, 2, (const char **)argv, argvlen, on_slots, call) < 0) {
            free(call);
            continue;
        }
        r->asking = true;
        r->refreshed_at = now;
        return;
    }
}

/* Every second: while a slot has no ready master (its master died and a replica is being
 * promoted), ask again until the map shows the new one; else only every 30 s. */
static void on_refresh_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tally_redis *r = arg;

    (void)fd;
    (void)what;
    if (!r->ready || tally_now_ms() - r->refreshed_at >= ROUTER_REFRESH_MS)
        router_refresh(r);
}

/* ---- Routing ---- */

struct tally_store *tally_redis_for_slot(struct tally_redis *r, unsigned slot)
{
    if (!r->cluster)
        return r->n_nodes > 0 ? r->nodes[0].st : NULL;
    if (slot >= TALLY_SLOTS || r->map.slots[slot] < 0)
        return NULL;
    return r->nodes[r->map.slots[slot]].st;
}

bool tally_slot_map_master_bucket(const struct tally_slot_map *m, unsigned k, unsigned *bucket)
{
    bool owns[TALLY_REDIS_NODES_MAX] = {false};
    unsigned n = 0;

    for (unsigned b = 0; b < TALLY_BUCKETS; b++) {
        int i = m->slots[tally_key_bucket_slot(b)];

        if (i < 0)
            return false;
        n += !owns[i];
        owns[i] = true;
    }
    k %= n;
    for (int i = 0; i < TALLY_REDIS_NODES_MAX; i++) {
        if (!owns[i] || k-- > 0)
            continue;
        for (unsigned b = 0; b < TALLY_BUCKETS; b++)
            if (m->slots[tally_key_bucket_slot(b)] == i) {
                *bucket = b;
                return true;
            }
    }
    return false;
}

bool tally_redis_master_bucket(const struct tally_redis *r, unsigned k, unsigned *bucket)
{
    return r->cluster && tally_slot_map_master_bucket(&r->map, k, bucket);
}

struct tally_store *tally_redis_for_key(struct tally_redis *r, const char *key, size_t len)
{
    return tally_redis_for_slot(r, r->cluster ? tally_key_slot(key, len) : 0);
}

struct tally_store *tally_redis_read_for_key(struct tally_redis *r, const char *key, size_t len)
{
    unsigned slot = r->cluster ? tally_key_slot(key, len) : 0;

    if (!r->cluster)
        return r->n_nodes > 0 ? r->nodes[0].rd : NULL;
    if (r->map.slots[slot] < 0)
        return NULL;
    return r->nodes[r->map.slots[slot]].rd;
}

/* Digits from *P up to END, as a number no greater than MAX: the end of them in *P. */
static int router_number(const char **p, const char *end, unsigned long max, unsigned long *out)
{
    const char *q = *p;
    unsigned long v = 0;

    while (q < end && *q >= '0' && *q <= '9' && v <= max)
        v = v * 10 + (unsigned long)(*q++ - '0');
    if (q == *p || v > max)
        return TALLY_EINVAL;
    *p = q;
    *out = v;
    return 0;
}

bool tally_redis_error_in(const char *err, size_t len, const char *const *codes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(codes[i]);

        if (len >= k && memcmp(err, codes[i], k) == 0)
            return true;
    }
    return false;
}

int tally_redis_parse_redirect(const char *err, size_t len, bool *ask, unsigned *slot,
                               struct tally_hostport *to)
{
    const char *p, *colon, *end = err + len;
    unsigned long s, port;

    if (len > 5 && memcmp(err, "MOVED ", 6) == 0)
        *ask = false, p = err + 6;
    else if (len > 4 && memcmp(err, "ASK ", 4) == 0)
        *ask = true, p = err + 4;
    else
        return TALLY_EINVAL;
    if (router_number(&p, end, TALLY_SLOTS - 1, &s) < 0 || p == end || *p != ' ')
        return TALLY_EINVAL;
    p++;
    /* host:port, the host possibly IPv6 (its last ':' separates the port). */
    for (colon = end; colon > p && colon[-1] != ':'; colon--)
        ;
    if (colon <= p + 1 || (size_t)(colon - 1 - p) > TALLY_HOST_MAX)
        return TALLY_EINVAL;
    memcpy(to->host, p, (size_t)(colon - 1 - p));
    to->host[colon - 1 - p] = '\0';
    p = colon;
    if (router_number(&p, end, 65535, &port) < 0 || p != end || port == 0)
        return TALLY_EINVAL;
    to->port = (uint16_t)port;
    *slot = (unsigned)s;
    return 0;
}

int tally_redis_parse_version(const char *info, size_t len, unsigned version[3])
{
    static const char key[] = "redis_version:";
    const char *end = info + len;

    for (const char *p = info; p < end; p++) {
        if ((p != info && p[-1] != '\n') || (size_t)(end - p) < sizeof(key) - 1 ||
            memcmp(p, key, sizeof(key) - 1) != 0)
            continue;
        p += sizeof(key) - 1;
        for (int i = 0; i < 3; i++) {
            unsigned long v;

            if (router_number(&p, end, 1000000, &v) < 0)
                return TALLY_EINVAL;
            version[i] = (unsigned)v;
            if (i < 2 && (p == end || *p++ != '.'))
                return TALLY_EINVAL;
        }
        return 0;
    }
    return TALLY_EINVAL;
}

bool tally_redis_version_ok(const unsigned version[3])
{
    unsigned long need = TALLY_REDIS_MIN_MAJOR * 1000000UL + TALLY_REDIS_MIN_MINOR;

    return version[0] * 1000000UL + version[1] >= need;
}

static struct tally_store *router_redirect(struct tally_redis *r, const redisReply *reply,
                                           bool *asking, bool reads)
{
    struct tally_hostport to;
    unsigned slot;
    int node;

    *asking = false;
    if (!r->cluster || reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return NULL;
    if (tally_redis_parse_redirect(reply->str, reply->len, asking, &slot, &to) < 0) {
        if (strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
            router_refresh(r);
        return NULL;
    }
    if ((node = router_node(r, &to, TALLY_NODE_LIVE)) < 0)
        return NULL;
    if (!*asking) {
        r->map.slots[slot] = (int8_t)node;
        router_refresh(r);
    }
    return reads ? r->nodes[node].rd : r->nodes[node].st;
}

struct tally_store *tally_redis_redirect(struct tally_redis *r, const redisReply *reply,
                                         bool *asking)
{
    return router_redirect(r, reply, asking, false);
}

struct tally_store *tally_redis_read_redirect(struct tally_redis *r, const redisReply *reply,
                                              bool *asking)
{
    return router_redirect(r, reply, asking, true);
}

/* ---- Life ---- */

bool tally_redis_ready(const struct tally_redis *r)
{
    return r->ready;
}

bool tally_redis_reads_ready(const struct tally_redis *r)
{
    return router_all_ready(r, true);
}

bool tally_redis_is_cluster(const struct tally_redis *r)
{
    return r->cluster;
}

struct tally_redis *tally_redis_new(struct event_base *base, const struct tally_config *cfg,
                                    struct tally_metrics *metrics, tally_redis_state_cb *on_state,
                                    void *arg)
{
    struct tally_redis *r = calloc(1, sizeof(*r));
    struct timeval every = {ROUTER_THROTTLE_MS / 1000, 0};

    if (r == NULL)
        return NULL;
    r->base = base;
    r->cfg = cfg;
    r->metrics = metrics;
    r->on_state = on_state;
    r->arg = arg;
    r->cluster = cfg->n_cluster > 0;
    tally_slot_map_init(&r->map);
    if (!r->cluster) {
        r->nodes[0].r = r;
        r->nodes[0].st = tally_store_new(base, cfg, &cfg->redis, TALLY_STORE_WRITES, metrics,
                                         on_node_state, &r->nodes[0]);
        r->nodes[0].rd = tally_store_new(base, cfg, &cfg->redis, TALLY_STORE_READS, metrics,
                                         on_node_read_state, &r->nodes[0]);
        r->n_nodes = r->nodes[0].st != NULL && r->nodes[0].rd != NULL;
        if (r->n_nodes == 0) {
            tally_store_free(r->nodes[0].st);
            tally_store_free(r->nodes[0].rd);
            free(r);
            return NULL;
        }
        return r;
    }
    for (size_t i = 0; i < cfg->n_cluster; i++)
        r->n_nodes += router_node(r, &cfg->cluster[i], TALLY_NODE_SEED) >= 0;
    r->refresh_ev = event_new(base, -1, EV_PERSIST, on_refresh_timer, r);
    if (r->n_nodes == 0 || r->refresh_ev == NULL || event_add(r->refresh_ev, &every) < 0) {
        tally_redis_free(r);
        return NULL;
    }
    return r;
}

void tally_redis_free(struct tally_redis *r)
{
    if (r == NULL)
        return;
    r->on_state = NULL;
    for (size_t i = 0; i < TALLY_REDIS_NODES_MAX; i++) {
        tally_store_free(r->nodes[i].st);
        tally_store_free(r->nodes[i].rd);
    }
    if (r->refresh_ev != NULL)
        event_free(r->refresh_ev);
    free(r);
}
