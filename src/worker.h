/* worker.h -- one worker thread: its event base, HTTP server, Redis connection and writer.
 * Workers share only the read-only configuration and the process record. */
#ifndef TALLY_WORKER_H
#define TALLY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "tally/admit.h"
#include "tally/buf.h"
#include "tally/cache.h"
#include "tally/config.h"
#include "tally/ingest.h"
#include "tally/lately.h"
#include "tally/metrics.h"
#include "tally/ratelimit.h"

struct tally_worker;
struct tally_folder;
struct http_waits;
struct tally_http_server;
struct tally_live;

/* The process: what /metrics sums and what every worker may read. */
struct tally_server {
    const struct tally_config *cfg;
    struct tally_worker **workers;
    size_t n_workers;
    size_t n_started;            /* workers whose thread runs */
    double start_time;           /* Unix seconds */
    struct tally_ratelimit ratelimit; /* shared by every worker, lock-free */
    struct tally_epochs epochs;  /* bumped by every write, read by every worker's cache */
    struct tally_lately lately;  /* with a journal: the articles read lately, whose writes
                                  * are counted at once (tally/lately.h) */
    /* Each worker's journal folds, NULL without (fixed before the threads start): a read
     * waits until what every worker acknowledged before it is counted (tally/fold.h). */
    struct tally_folder *folders[TALLY_THREADS_MAX];
    _Atomic uint32_t live_streams; /* /v1/live streams open, all workers (--live-max) */
    char listen_desc[300];       /* "127.0.0.1:8080", for logs */
};

struct tally_worker {
    unsigned id;
    const struct tally_config *cfg;
    struct tally_server *server;
    struct event_base *base;
    struct tally_http_server *http; /* its connections: http_conn.c's */
    struct tally_redis *redis;   /* one Redis, or the nodes of a cluster */
    struct tally_salts *salts;
    struct tally_writer *writer;
    struct tally_metrics metrics;
    struct tally_batch batch;    /* scratch for parsing a request */
    struct tally_buf out;        /* scratch for building a reply */
    struct tally_buf scratch;    /* scratch for joining headers */
    struct tally_cache cache;    /* recent article totals */
    struct tally_bot_cache bots; /* recent User-Agent verdicts */
    struct reports_cache *reports; /* week and month tops and totals (http_reports.c) */
    struct tally_live *live;     /* the articles its /v1/live streams watch (live.c) */
    struct http_waits *waits;    /* reads waiting for folds (http_server.c), or NULL */
    size_t reads;                /* reads admitted and not answered yet */
    size_t read_cmds;            /* the Redis commands they may queue (http_server.c caps) */
    int stop_fd;                 /* eventfd the main thread writes to stop the worker */
    struct event *stop_ev;
    struct event *drain_ev;      /* polls until nothing is held */
    uint64_t drain_deadline;     /* ms */
    bool draining;
    size_t busy;                 /* HTTP requests from their head to their answer written */
    size_t conns;                /* open HTTP connections */
    pthread_t thread;
};

/* A worker bound to LISTENER (an already bound SO_REUSEPORT socket; the worker owns it).
 * Returns NULL with ERR filled. */
struct tally_worker *tally_worker_new(unsigned id, struct tally_server *server,
                                      evutil_socket_t listener, char *err, size_t errlen);
void tally_worker_free(struct tally_worker *w);

/* Run the worker's loop in a new thread. */
int tally_worker_start(struct tally_worker *w);

/* From any thread: stop accepting, answer what is held, then end the loop. */
void tally_worker_stop(struct tally_worker *w);

/* Wait for the worker's thread to end. */
void tally_worker_join(struct tally_worker *w);

/* ---- server.c ---- */

/* Bind one socket per --threads on --listen, create the workers and start their threads.
 * Returns 0, or -1 with ERR filled (what was started must then be stopped and freed). */
int tally_server_start(struct tally_server *s, const struct tally_config *cfg, char *err,
                       size_t errlen);

/* Stop every worker (they drain) and wait for their threads. */
void tally_server_stop(struct tally_server *s);

void tally_server_free(struct tally_server *s);

/* ---- http_conn.c ---- */

/* Serve HTTP on W's base from LISTENER (bound, listening, non-blocking; W's from now on, even
 * on failure). Returns 0 or -1. */
int tally_http_setup(struct tally_worker *w, evutil_socket_t listener);

/* Close every connection and release every request, answered or not: after the loop has
 * ended and nothing will answer them any more. */
void tally_http_free(struct tally_worker *w);

/* Stop accepting new connections (existing ones are served until the loop ends). */
void tally_http_stop_accepting(struct tally_worker *w);

/* Close every connection that is between requests with nothing left to send. */
void tally_http_close_idle(struct tally_worker *w);

/* Free W's reads waiting for folds (after its loop has ended). */
void tally_http_waits_free(struct tally_worker *w);

/* A fold of worker ARG's journal ended (tally_folder_on_ended(), in its thread): its reads
 * waiting for folds look at once (http_server.c). */
void tally_http_folded(void *arg);

/* ---- live.c ---- */

/* W's registry of watched articles and its once-a-second read. Returns 0 or -1. */
int tally_live_setup(struct tally_worker *w);

/* End every stream of W at once (the worker stops): each gets its last chunk. */
void tally_live_stop(struct tally_worker *w);

/* Free W's registry, after W's Redis (whose last callbacks reach it) and before its HTTP
 * server (which releases the streams' requests). */
void tally_live_free(struct tally_worker *w);

/* ---- http_reports.c ---- */

/* Free W's cache of week and month reports (after W's Redis: their loads have ended). */
void tally_reports_cache_free(struct tally_worker *w);

#endif
