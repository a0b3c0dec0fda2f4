/* query.h -- stats reads: which articles a request names, reading their counters from
 * Redis, and the JSON the contract promises. Parsing and rendering are pure. */
#ifndef TALLY_QUERY_H
#define TALLY_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tally/buf.h"
#include "tally/fanout.h"
#include "tally/ingest.h"
#include "tally/model.h"

struct tally_redis;
struct tally_cache;
struct cache_entry;

struct tally_query;

/* Runs exactly once per started query. STATUS 0: Q->stats hold the counters; else a
 * negative TALLY_E* code (Redis unavailable or broken). */
typedef void tally_query_done_cb(int status, struct tally_query *q, void *arg);

/* A read of 1..TALLY_BATCH_MAX articles. Its arrays have room for the articles the request
 * names, no more: one allocation, made by the parse and freed by tally_query_release(). */
struct tally_query {
    size_t n;
    const char **id;
    uint16_t *len;
    struct tally_stats *stats;
    size_t text_len;
    char *text; /* the decoded ids, each NUL-terminated */
    /* Private. */
    void *mem;                  /* the arrays above and below */
    size_t mem_size, cap, text_cap;
    struct tally_fanout fan;
    struct tally_cache *cache;
    struct cache_entry **loads; /* per article: the cache slot it fills */
    uint8_t *sent;              /* per command sent: its article */
    size_t waits;               /* articles another read is loading */
    bool fan_done;
    int status;
    tally_query_done_cb *done;
    void *arg;
};

/* Fill Q (zeroed, or filled by an earlier parse) with the articles of GET
 * /v1/stats?article=A&article=B (QUERY, LEN bytes): 1..100 of them, decoded strictly, each a
 * valid id, in order (repeats are kept). Other parameters are ignored. Returns 0, TALLY_EINVAL
 * with ERR filled, or TALLY_ENOMEM; in every case free Q's room with tally_query_release(). */
int tally_query_parse_articles(struct tally_query *q, const char *query, size_t len,
                               struct tally_error *err);

/* Fill Q (as above) with the articles of the N events EV (validated ids), each once, in the
 * order they first appear: the stats a POST /v1/events?stats=1 answers with. Returns 0 or
 * TALLY_ENOMEM (ERR filled). */
int tally_query_of_events(struct tally_query *q, const struct tally_event *ev, size_t n,
                          struct tally_error *err);

/* Fill Q (as above) with the one article of a path tail (RAW, LEN bytes, percent-encoded;
 * '/' may be encoded or not). Returns 0, TALLY_EINVAL with ERR filled, or TALLY_ENOMEM. */
int tally_query_parse_path(struct tally_query *q, const char *raw, size_t len,
                           struct tally_error *err);

/* Free what a parse allocated; Q may be parsed again. Accepts a zeroed Q. */
void tally_query_release(struct tally_query *q);

/* Read every article of Q (keys under PREFIX) through CACHE (may be NULL) from R: Q stays
 * borrowed until DONE. Returns 0 and calls DONE once -- before returning when every article
 * was cached --, or returns a negative TALLY_E* code without calling it. */
int tally_query_start(struct tally_query *q, struct tally_redis *r, struct tally_cache *cache,
                      const char *prefix, tally_query_done_cb *done, void *arg);

/* Fill S from a reply to HGETALL of an article's totals. Returns 0 or TALLY_EREDIS. */
int tally_query_read_totals(const redisReply *r, struct tally_stats *s);

/* {"article":..., then every metric by its member name in the order of model.h, the shares'
 *  "shares_by_network":{...} after "shares", then every property}: {"article":..., "views":...,
 *  "visitors":..., "shares":..., "shares_by_network":{...}, "comments":...,
 *  "engaged_seconds":..., "reads":..., "words":...}. Only networks with a non-zero count are
 *  listed. */
void tally_query_render_one(struct tally_buf *out, const char *id, size_t len,
                            const struct tally_stats *s);

/* "articles":[...] in Q's order, a member of an object the caller writes. */
void tally_query_render_list(struct tally_buf *out, const struct tally_query *q);

/* {"articles":[...]} in Q's order. */
void tally_query_render_many(struct tally_buf *out, const struct tally_query *q);

#endif
