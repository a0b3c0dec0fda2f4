/* redis.h -- where each key lives: one Redis (--redis), or the masters of a Redis Cluster
 * (--redis-cluster), seen from one worker thread.
 *
 * In cluster mode the router learns the slot map from the seeds with CLUSTER SLOTS, keeps one
 * connection (a tally_store) per node, follows MOVED by updating the slot and refreshing the
 * whole map (at most once a second), resolves ASK to the importing node, and refreshes the map
 * when a node's connection is lost and every 30 s. Not thread-safe: one router per event
 * base. */
#ifndef TALLY_REDIS_H
#define TALLY_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "tally/config.h"

struct tally_redis;
struct tally_store;
struct tally_metrics;

#define TALLY_SLOTS 16384
#define TALLY_REDIS_NODES_MAX 64

/* The slot map of a Redis Cluster: the nodes known, and per slot the index of its master.
 * Nodes that leave the map are forgotten, so that addresses that come and go (masters
 * replaced, moved, renumbered) never fill the table. Pure, for tests. */
enum tally_node_state {
    TALLY_NODE_FREE, /* no node in this entry */
    TALLY_NODE_SEED, /* a --redis-cluster seed: kept, to learn the map from */
    TALLY_NODE_LIVE, /* named by the last map, or by a redirect since */
    TALLY_NODE_LEFT, /* named by no map since the one before: forgotten at the next */
};

struct tally_slot_map {
    struct tally_hostport addr[TALLY_REDIS_NODES_MAX];
    uint8_t state[TALLY_REDIS_NODES_MAX];  /* enum tally_node_state */
    int8_t slots[TALLY_SLOTS];             /* node index, or -1: no master known */
};

/* An empty map: no node, no slot. */
void tally_slot_map_init(struct tally_slot_map *m);

/* The index of the node at ADDR, added in STATE (TALLY_NODE_SEED or TALLY_NODE_LIVE) to a free
 * entry if unknown (*ADDED set), else made live (a seed stays one). Returns -1 when no entry
 * is free. */
int tally_slot_map_node(struct tally_slot_map *m, const struct tally_hostport *addr,
                        enum tally_node_state state, bool *added);

/* Read REPLY, the answer of the node at ASKED to CLUSTER SLOTS, into M: every slot's master
 * (masters only; replicas are not used). Nodes it names are live; a live node it does not
 * name has left, and a node that had left and is still not named is forgotten: its index
 * goes into GONE (room for TALLY_REDIS_NODES_MAX), before its entry may be reused. New nodes
 * go into ADDED (the same room). The caller connects the added and disconnects the gone.
 * Returns 0, TALLY_EREDIS when REPLY is not a map (M unchanged) or TALLY_ENOMEM when it names
 * more nodes than there is room for (slots unchanged; nodes added so far are in ADDED). */
int tally_slot_map_read(struct tally_slot_map *m, const redisReply *reply,
                        const struct tally_hostport *asked, int *added, size_t *n_added,
                        int *gone, size_t *n_gone);

/* Runs when the router becomes ready (every slot has a master whose connection is ready) or
 * stops being ready. */
typedef void tally_redis_state_cb(bool ready, void *arg);

/* A router for CFG's --redis or --redis-cluster on BASE; it starts connecting at once. CFG and
 * METRICS are borrowed for its life. Returns NULL only when out of memory. */
struct tally_redis *tally_redis_new(struct event_base *base, const struct tally_config *cfg,
                                    struct tally_metrics *metrics, tally_redis_state_cb *on_state,
                                    void *arg);

/* Free every connection: their pending commands are answered TALLY_EUNKNOWN. */
void tally_redis_free(struct tally_redis *r);

bool tally_redis_ready(const struct tally_redis *r);
bool tally_redis_is_cluster(const struct tally_redis *r);

/* The write connection serving SLOT (0..16383), or NULL while no master is known for it. In
 * standalone mode, always the one write connection. */
struct tally_store *tally_redis_for_slot(struct tally_redis *r, unsigned slot);

/* The bucket of M's K-th master (K modulo the masters owning a bucket's slot, in the order of
 * M's entries): the first bucket whose slot it owns, into *BUCKET -- where a journal goes to
 * that master (tally/fold.h). False while a bucket's slot has no master known. Pure. */
bool tally_slot_map_master_bucket(const struct tally_slot_map *m, unsigned k, unsigned *bucket);

/* The same for R's slot map; false standalone. */
bool tally_redis_master_bucket(const struct tally_redis *r, unsigned k, unsigned *bucket);

/* The write connection serving KEY (LEN bytes). */
struct tally_store *tally_redis_for_key(struct tally_redis *r, const char *key, size_t len);

/* The read connection serving KEY: every node has one beside its write connection, so that
 * a read that outlives --redis-timeout drops only the reads in flight with it, never a write
 * (see tally_store_role). */
struct tally_store *tally_redis_read_for_key(struct tally_redis *r, const char *key, size_t len);

/* Are the read connections of every slot's master ready too? */
bool tally_redis_reads_ready(const struct tally_redis *r);

/* After an error reply to a command of SLOT: for "MOVED slot host:port" the slot map is
 * updated (and a full refresh scheduled) and the new owner returned; for "ASK slot host:port"
 * the importing node is returned with *ASKING set (the next command there must be preceded by
 * ASKING; the map is not changed); for anything else NULL (CLUSTERDOWN and connection losses
 * schedule a refresh). */
struct tally_store *tally_redis_redirect(struct tally_redis *r, const redisReply *reply,
                                         bool *asking);

/* The same for a read: the read connection of the node the redirection names. */
struct tally_store *tally_redis_read_redirect(struct tally_redis *r, const redisReply *reply,
                                              bool *asking);

/* The oldest Redis tallyd works with: the scripts use 7.0's commands and options. */
#define TALLY_REDIS_MIN_MAJOR 7
#define TALLY_REDIS_MIN_MINOR 0

/* Read "redis_version:MAJOR.MINOR.PATCH" from INFO (LEN bytes of INFO server's text) into
 * VERSION. Returns 0, or TALLY_EINVAL when INFO has no such line. Pure, for tests. */
int tally_redis_parse_version(const char *info, size_t len, unsigned version[3]);

/* Is VERSION (as read by tally_redis_parse_version()) recent enough for tallyd? */
bool tally_redis_version_ok(const unsigned version[3]);

/* Does the error text ERR (LEN bytes) begin with one of the N error codes CODES ("MISCONF",
 * "READONLY")? Redis starts each error with its code; a caller picks the refusals it treats
 * alike. Pure, for tests. */
bool tally_redis_error_in(const char *err, size_t len, const char *const *codes, size_t n);

/* Parse a MOVED or ASK error ("MOVED 3999 127.0.0.1:6381"): the slot and the address.
 * Returns 0, or TALLY_EINVAL for any other text. Pure, for tests. */
int tally_redis_parse_redirect(const char *err, size_t len, bool *ask, unsigned *slot,
                               struct tally_hostport *to);

#endif
