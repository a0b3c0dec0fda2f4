/* worker.c -- a worker thread: builds its base, HTTP server, Redis store and writer, runs
 * the loop, and drains on stop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "tally/error.h"
#include "tally/log.h"
#include "tally/salt.h"
#include "tally/store.h"
#include "tally/writer.h"
#include "worker.h"

#define WORKER_DRAIN_POLL_MS 20
#define WORKER_DRAIN_MAX_MS 35000 /* past the writer's longest wait for an unknown outcome */

static void on_store_state(struct tally_store *st, bool ready, void *arg)
{
    struct tally_worker *w = arg;

    (void)st;
    if (ready && w->writer != NULL)
        tally_writer_kick(w->writer);
}

static void on_salt(void *arg)
{
    struct tally_worker *w = arg;

    if (w->writer != NULL)
        tally_writer_kick(w->writer);
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct tally_worker *w = arg;

    (void)fd;
    (void)what;
    if (w->busy == 0 || tally_now_ms() >= w->drain_deadline) {
        if (w->busy > 0)
            log_warn("worker %u stops with %zu requests still waiting", w->id, w->busy);
        event_del(w->drain_ev);
        event_base_loopexit(w->base, NULL);
    }
}

/* Stop accepting; keep serving the connections in hand until nothing waits for Redis. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct tally_worker *w = arg;
    struct timeval tv = {0, WORKER_DRAIN_POLL_MS * 1000};

    (void)fd;
    (void)what;
    if (w->draining)
        return;
    w->draining = true;
    w->drain_deadline = tally_now_ms() + WORKER_DRAIN_MAX_MS;
    tally_http_stop_accepting(w);
    event_add(w->drain_ev, &tv);
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
    w->server = server;
    w->cfg = server->cfg;
    tally_buf_init(&w->out);
    tally_buf_init(&w->scratch);
    w->base = event_base_new();
    if (w->base == NULL || tally_http_setup(w, listener) < 0) {
        snprintf(err, errlen, "cannot set up the HTTP server of worker %u", id);
        if (w->http == NULL)
            evutil_closesocket(listener);
        tally_worker_free(w);
        return NULL;
    }
    w->store = tally_store_new(w->base, w->cfg, &w->metrics, on_store_state, w);
    w->salts = w->store != NULL ? tally_salts_new(w->store, w->cfg->prefix, on_salt, w) : NULL;
    w->writer = w->salts != NULL
                    ? tally_writer_new(w->base, w->store, w->salts, w->cfg, &w->metrics)
                    : NULL;
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->drain_ev = event_new(w->base, -1, EV_PERSIST, on_drain, w);
    if (w->writer == NULL || w->stop_ev == NULL || w->drain_ev == NULL) {
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
    /* The store first: its last callbacks still reach the writer, whose free then answers
     * whatever is held, before the HTTP server (and its requests) go. */
    tally_store_free(w->store);
    tally_writer_free(w->writer);
    tally_salts_free(w->salts);
    if (w->http != NULL)
        evhttp_free(w->http);
    if (w->stop_ev != NULL)
        event_free(w->stop_ev);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->base != NULL)
        event_base_free(w->base);
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
    event_active(w->stop_ev, EV_TIMEOUT, 0);
}

void tally_worker_join(struct tally_worker *w)
{
    pthread_join(w->thread, NULL);
}
