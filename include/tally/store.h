/* store.h -- one asynchronous Redis connection on a libevent base.
 *
 * The store connects by itself and keeps reconnecting with backoff and jitter; it sends
 * commands only while ready (connected, authenticated, this version's functions found in
 * Redis), and gives
 * every command a deadline, since hiredis 0.14 has none: a connection whose oldest command
 * is late is dropped (rather than kept: new writes then wait for a Redis that answers, and
 * are refused by --hold, instead of queueing behind the stall; what stays queued in Redis on
 * the dropped connection is kept from running late by its fence, see tally/fence.h). It asks
 * Redis's clock (TIME) at every connect and every TALLY_CLOCK_SAMPLE_MS, which also notices
 * a stalled Redis on an idle connection. Not thread-safe: one store per event base. */
#ifndef TALLY_STORE_H
#define TALLY_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "tally/config.h"

struct tally_store;
struct tally_metrics;
struct tally_clock;

/* The server-side scripts: functions of tally's Redis function library (functions.h). */
enum tally_script {
    TALLY_SCRIPT_APPLY,  /* src/scripts/apply.lua: a write unit */
    TALLY_SCRIPT_TOP,    /* src/scripts/top.lua: one bucket's top list */
    TALLY_SCRIPT_FORGET, /* src/scripts/forget.lua: every key of one article */
    TALLY_SCRIPT_IMPORT, /* src/scripts/import.lua: an import of carried-over counts */
    TALLY_SCRIPT_ACK,    /* src/scripts/ack.lua: a write unit, appended to a journal */
    TALLY_SCRIPT_FOLD,   /* src/scripts/fold.lua: a journal's oldest entries counted */
    TALLY_SCRIPT_MERGED, /* src/scripts/merged.lua: the same, from the writer's merge */
    TALLY_SCRIPT_RECLAIM, /* src/scripts/reclaim.lua: the journals of writers gone */
    TALLY_SCRIPT_STAGED, /* src/scripts/staged.lua: a chunk a merged fold left staged */
    TALLY_SCRIPT_DRAIN,  /* src/scripts/drain.lua: a bounded step of a DELETE's folds */
    TALLY_SCRIPT_KEPT,   /* src/scripts/kept.lua: a bucket's week or month, kept a minute */
    /* A journal on a Redis Cluster (src/scripts/cplan.lua explains the fold): */
    TALLY_SCRIPT_CPLAN,  /* src/scripts/cplan.lua: a journal's plan finished, the next made */
    TALLY_SCRIPT_CPART,  /* src/scripts/cpart.lua: one bucket's part of a plan counted */
    TALLY_SCRIPT_CHEARTBEAT, /* src/scripts/cheartbeat.lua: a journal's writer is alive */
    TALLY_SCRIPT_CSTALE, /* src/scripts/cstale.lua: a journal whose writer has gone */
    TALLY_SCRIPT_CGONE,  /* src/scripts/cgone.lua: a reclaimed journal out of the registry */
    TALLY_SCRIPT_CDROP,  /* src/scripts/cdrop.lua: an emptied journal deleted */
    TALLY_SCRIPT_KEPT_RO, /* src/scripts/kept.lua, read-only: the same answer, not kept (while
                           * Redis takes no writes) */
    /* A write with a repeat-view window journaled on a Redis Cluster (tally/writer.h): */
    TALLY_SCRIPT_MARK,   /* src/scripts/mark.lua: one bucket's views checked, none counted */
    TALLY_SCRIPT_UNMARK, /* src/scripts/unmark.lua: those views forgotten again */
    TALLY_SCRIPTS
};

/* What a connection carries. Reads have a connection of their own beside the writes' (per
 * node, per worker): a read that outlives --redis-timeout drops its connection, and with it
 * only the reads in flight there, never a write. */
enum tally_store_role {
    TALLY_STORE_WRITES, /* write units, salts, the slot map */
    TALLY_STORE_READS,  /* stats, series, top lists, totals */
};

/* Runs whenever the store becomes ready or stops being ready. */
typedef void tally_store_state_cb(struct tally_store *st, bool ready, void *arg);

/* Runs exactly once per command that tally_store_*() accepted. STATUS is 0 with REPLY
 * (possibly an error reply; it dies when the callback returns), TALLY_EUNKNOWN when the
 * command was sent but no reply came (it may or may not have run), or TALLY_EUNAVAIL when it
 * surely did not run. */
typedef void tally_store_reply_cb(int status, redisReply *reply, void *arg);

/* A store for the Redis at TARGET (copied) on BASE, carrying ROLE's commands; it starts
 * connecting at once. CFG (for its timeouts) and METRICS are borrowed for the store's life.
 * ON_STATE may be NULL. Returns NULL only when out of memory. */
struct tally_store *tally_store_new(struct event_base *base, const struct tally_config *cfg,
                                    const struct tally_redis_target *target,
                                    enum tally_store_role role,
                                    struct tally_metrics *metrics,
                                    tally_store_state_cb *on_state, void *arg);

/* Drop the connection; pending commands get TALLY_EUNKNOWN; no state callback runs. */
void tally_store_free(struct tally_store *st);

bool tally_store_ready(const struct tally_store *st);

/* The last sample of Redis's clock (see tally/fence.h): taken in every handshake, so never
 * NULL while ready, and every TALLY_CLOCK_SAMPLE_MS after. */
const struct tally_clock *tally_store_clock(const struct tally_store *st);

/* Where the store connects. */
const struct tally_redis_target *tally_store_target(const struct tally_store *st);

/* Call SCRIPT's function (FCALL, or FCALL_RO for a read-only one) with the RESP arguments
 * BODY (LEN bytes, NARGS arguments, from numkeys on). BODY is borrowed until DONE runs. When
 * Redis lacks the function, DONE gets TALLY_EUNAVAIL (nothing ran) and the store stops being
 * ready until a reconnect finds it. Returns 0 and later calls DONE, or TALLY_EUNAVAIL (not
 * ready) or TALLY_ENOMEM without calling it. */
int tally_store_eval(struct tally_store *st, enum tally_script script, const char *body,
                     size_t len, size_t nargs, tally_store_reply_cb *done, void *arg);

/* The same, preceded on the same connection by ASKING (a Redis Cluster redirection to a
 * slot being imported) when ASKING is true. */
int tally_store_eval_asking(struct tally_store *st, bool asking, enum tally_script script,
                            const char *body, size_t len, size_t nargs,
                            tally_store_reply_cb *done, void *arg);

/* Send one command of ARGC arguments with explicit lengths (copied at once). Same return
 * and callback rules as tally_store_eval(). */
int tally_store_command(struct tally_store *st, int argc, const char **argv,
                        const size_t *argvlen, tally_store_reply_cb *done, void *arg);

/* Send a command already in RESP form (CMD, LEN bytes, copied at once), preceded by ASKING
 * when ASKING is true. Same return and callback rules as tally_store_eval(). */
int tally_store_formatted(struct tally_store *st, bool asking, const char *cmd, size_t len,
                          tally_store_reply_cb *done, void *arg);

/* Milliseconds since an arbitrary start, from the monotonic clock. */
uint64_t tally_now_ms(void);

#endif
