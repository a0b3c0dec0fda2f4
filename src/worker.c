/* worker.c -- a worker thread: builds its base, HTTP server, Redis store and writer, runs
 * the loop, and drains on stop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include "tally/error.h"
#include "tally/fold.h"
#include "tally/log.h"
#include "tally/salt.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "tally/writer.h"
#include "worker.h"

#define WORKER_DRAIN_POLL_MS 20
#define WORKER_DRAIN_SLACK_MS 5000 /* past --hold + --redis-timeout, when every write is
                                    * answered */

static void on_redis_state(bool ready, void *arg)
{
    struct tally_worker *w = arg;

    if (ready && w->salts != NULL)
        tally_salts_stale(w->salts);
    if (ready && w->writer != NULL)
        tally_writer_kick(w->writer);
}

static void on_salt(void *arg)
{
    struct tally_worker *w = arg;

    if (w->writer != NULL)
        tally_writer_kick(w->writer);
}

/* Draining: once nothing waits for Redis, close the connections that are between requests
 * (answers in flight finish first: they carry "Connection: close"), and stop when none is
 * left. */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct tally_worker *w = arg;
    bool late = tally_now_ms() >= w->drain_deadline;
    struct tally_folder *f = tally_writer_folder(w->writer);
    /* What was acknowledged is folded before the worker goes, while Redis can be reached:
     * nothing is lost if it is not (the journal keeps it for another collector, or a restart),
     * but counts would wait for that. With Redis gone there is nothing to wait for. */
    bool folding = f != NULL && tally_folder_backlog(f) > 0 && tally_folder_can_fold(f);

    (void)fd;
    (void)what;
    if (w->busy == 0)
        tally_http_close_idle(w);
    if (folding && !late)
        tally_folder_soon(f);
    /* On a cluster the emptied journal is then dropped and leaves the registry. */
    if (w->busy == 0 && w->conns == 0 && !folding && !late && f != NULL &&
        !tally_folder_retired(f))
        return;
    if ((w->busy == 0 && w->conns == 0 && !folding) || late) {
        if (w->busy > 0)
            log_warn("worker %u stops with %zu requests still waiting", w->id, w->busy);
        if (f != NULL && tally_folder_backlog(f) > 0)
            log_warn("worker %u stops with %zu events not folded yet; a collector folds them "
                     "within %d s", w->id, tally_folder_backlog(f), TALLY_FOLD_STALE_MS / 1000 + 1);
        event_del(w->drain_ev);
        event_base_loopexit(w->base, NULL);
    }
}

/* Stop accepting; keep serving the connections in hand until nothing waits for Redis. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct tally_worker *w = arg;
    struct timeval tv = {0, WORKER_DRAIN_POLL_MS * 1000};
    uint64_t one;

    (void)what;
    (void)!read(fd, &one, sizeof(one));
    if (w->draining)
        return;
    w->draining = true;
    w->drain_deadline = tally_now_ms() + w->cfg->hold_ms + w->cfg->redis_timeout_ms +
                        WORKER_DRAIN_SLACK_MS;
    tally_http_stop_accepting(w);
    tally_live_stop(w); /* streams have no end of their own to wait for */
    tally_http_close_idle(w);
    event_add(w->drain_ev, &tv);
}

/* A worker's base is used by its thread alone: no locks. No epoll changelist either: a
 * connection's event is added once and deleted once, just before its descriptor is closed, and
 * a deletion put off to the next turn would reach a descriptor number that is already closed --
 * and perhaps reused by a connection another worker (or this one) has accepted since. */
static struct event_base *worker_base(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (cfg == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

struct tally_worker *tally_worker_new(unsigned id, struct tally_server *server,
                                      evutil_socket_t listener, char *err, size_t errlen)
{
    struct tally_worker *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        evutil_closesocket(listener);
        return NULL;
    }
    w->id = id;
    w->stop_fd = -1;
    w->server = server;
    w->cfg = server->cfg;
    tally_buf_init(&w->out);
    tally_buf_init(&w->scratch);
    if (tally_cache_init(&w->cache, &server->epochs) < 0) {
        snprintf(err, errlen, "out of memory");
        evutil_closesocket(listener);
        free(w);
        return NULL;
    }
    w->base = worker_base();
    w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->base == NULL || w->stop_fd < 0 || tally_http_setup(w, listener) < 0) {
        snprintf(err, errlen, "cannot set up the HTTP server of worker %u", id);
        if (w->http == NULL)
            evutil_closesocket(listener);
        tally_worker_free(w);
        return NULL;
    }
    w->redis = tally_redis_new(w->base, w->cfg, &w->metrics, on_redis_state, w);
    w->salts = w->redis != NULL ? tally_salts_new(w->redis, w->cfg->prefix, on_salt, w) : NULL;
    w->writer = w->salts != NULL
                    ? tally_writer_new(w->base, w->redis, w->salts, w->cfg, &w->metrics,
                                       &server->epochs, &server->lately)
                    : NULL;
    w->stop_ev = event_new(w->base, w->stop_fd, EV_READ, on_stop, w);
    w->drain_ev = event_new(w->base, -1, EV_PERSIST, on_drain, w);
    if (w->writer == NULL || w->stop_ev == NULL || w->drain_ev == NULL ||
        tally_live_setup(w) < 0 ||
        event_add(w->stop_ev, NULL) < 0) {
        snprintf(err, errlen, "out of memory");
        tally_worker_free(w);
        return NULL;
    }
    return w;
}

void tally_worker_free(struct tally_worker *w)
{
    if (w == NULL)
        return;
    /* Redis first: its last callbacks still reach the writer, whose free then answers
     * whatever is held, before the HTTP server (and its requests) go. */
    tally_redis_free(w->redis);
    tally_live_free(w);
    tally_http_waits_free(w);
    tally_writer_free(w->writer);
    tally_salts_free(w->salts);
    tally_cache_release(&w->cache);
    tally_reports_cache_free(w);
    tally_http_free(w);
    if (w->stop_ev != NULL)
        event_free(w->stop_ev);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->base != NULL)
        event_base_free(w->base);
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    tally_buf_release(&w->out);
    tally_buf_release(&w->scratch);
    free(w);
}

static void *worker_main(void *arg)
{
    struct tally_worker *w = arg;

    event_base_dispatch(w->base);
    return NULL;
}

int tally_worker_start(struct tally_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void tally_worker_stop(struct tally_worker *w)
{
    uint64_t one = 1;

    /* The only way into another worker's loop: its bases have no locks. */
    (void)!write(w->stop_fd, &one, sizeof(one));
}

void tally_worker_join(struct tally_worker *w)
{
    pthread_join(w->thread, NULL);
}
