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

/* The connection serving SLOT (0..16383), or NULL while no master is known for it. In
 * standalone mode, always the one connection. */
struct tally_store *tally_redis_for_slot(struct tally_redis *r, unsigned slot);

/* The connection serving KEY (LEN bytes). */
struct tally_store *tally_redis_for_key(struct tally_redis *r, const char *key, size_t len);

/* After an error reply to a command of SLOT: for "MOVED slot host:port" the slot map is
 * updated (and a full refresh scheduled) and the new owner returned; for "ASK slot host:port"
 * the importing node is returned with *ASKING set (the next command there must be preceded by
 * ASKING; the map is not changed); for anything else NULL (CLUSTERDOWN and connection losses
 * schedule a refresh). */
struct tally_store *tally_redis_redirect(struct tally_redis *r, const redisReply *reply,
                                         bool *asking);

/* Parse a MOVED or ASK error ("MOVED 3999 127.0.0.1:6381"): the slot and the address.
 * Returns 0, or TALLY_EINVAL for any other text. Pure, for tests. */
int tally_redis_parse_redirect(const char *err, size_t len, bool *ask, unsigned *slot,
                               struct tally_hostport *to);

#endif
