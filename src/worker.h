/* worker.h -- one worker thread: its event base, HTTP server, Redis connection and writer.
 * Workers share only the read-only configuration and the process record. */
#ifndef TALLY_WORKER_H
#define TALLY_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "tally/admit.h"
#include "tally/buf.h"
#include "tally/cache.h"
#include "tally/config.h"
#include "tally/ingest.h"
#include "tally/metrics.h"
#include "tally/ratelimit.h"

struct tally_worker;
struct conn_guard;
TAILQ_HEAD(conn_list, conn_guard);

/* The process: what /metrics sums and what every worker may read. */
struct tally_server {
    const struct tally_config *cfg;
    struct tally_worker **workers;
    size_t n_workers;
    size_t n_started;            /* workers whose thread runs */
    double start_time;           /* Unix seconds */
    struct tally_ratelimit ratelimit; /* shared by every worker, lock-free */
    struct tally_epochs epochs;  /* bumped by every write, read by every worker's cache */
    char listen_desc[300];       /* "127.0.0.1:8080", for logs */
};

struct tally_worker {
    unsigned id;
    const struct tally_config *cfg;
    struct tally_server *server;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
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
    size_t reads;                /* reads admitted and not answered yet */
    size_t read_cmds;            /* the Redis commands they may queue (http_server.c caps) */
    int stop_fd;                 /* eventfd the main thread writes to stop the worker */
    struct event *stop_ev;
    struct event *drain_ev;      /* polls until nothing is held */
    uint64_t drain_deadline;     /* ms */
    bool draining;
    size_t busy;                 /* requests waiting for Redis, reads and writes */
    size_t conns;                /* open HTTP connections */
    struct conn_list conn_list;  /* the counted ones (http_server.c) */
    size_t poisoned;             /* of them, those that sent a NUL byte */
    bool paused;                 /* not accepting: CONNS reached this worker's share of the cap */
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

/* ---- http_server.c ---- */

/* Create W's evhttp with tally's limits and routes, serving on LISTENER. Returns 0 or -1. */
int tally_http_setup(struct tally_worker *w, evutil_socket_t listener);

/* Stop accepting new connections (existing ones are served until the loop ends). */
void tally_http_stop_accepting(struct tally_worker *w);

/* Close every connection that is between requests with nothing left to send. */
void tally_http_close_idle(struct tally_worker *w);

/* ---- http_reports.c ---- */

/* Free W's cache of week and month reports (after W's Redis: their loads have ended). */
void tally_reports_cache_free(struct tally_worker *w);

#endif
