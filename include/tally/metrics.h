/* metrics.h -- per-thread counters, summed when /metrics is scraped.
 *
 * Each worker thread owns one struct tally_metrics and is its only writer; the scrape reads
 * all of them. Counters are atomics written with relaxed plain stores (one writer), so the
 * request path takes no lock and no locked instruction. */
#ifndef TALLY_METRICS_H
#define TALLY_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/buf.h"
#include "tally/ingest.h"

/* What happened to an event. */
#define TALLY_OUTCOME_MAP(X)                                                                       \
    X(COUNTED, "counted")                                                                          \
    X(IGNORED, "ignored")                                                                          \
    X(REJECTED, "rejected")                                                                        \
    X(FAILED, "failed")

enum tally_outcome {
#define X(name, text) TALLY_OUTCOME_##name,
    TALLY_OUTCOME_MAP(X)
#undef X
        TALLY_OUTCOMES
};

/* Why a valid event was not counted (reported in "ignored_reasons"). */
#define TALLY_IGNORE_MAP(X)                                                                        \
    X(BOT, "bot")                                                                                  \
    X(PREFETCH, "prefetch")                                                                        \
    X(REPEAT, "repeat")

enum tally_ignore {
#define X(name, text) TALLY_IGNORE_##name,
    TALLY_IGNORE_MAP(X)
#undef X
        TALLY_IGNORES
};

/* The name of reason R, as in "ignored_reasons" and the metrics' labels. */
const char *tally_ignore_name(enum tally_ignore r);

/* Why a request was refused. */
#define TALLY_REJECT_MAP(X)                                                                        \
    X(INVALID, "invalid")                                                                          \
    X(UNAUTHORIZED, "unauthorized")                                                                \
    X(FORBIDDEN, "forbidden")                                                                      \
    X(ORIGIN, "origin")                                                                            \
    X(TOO_LARGE, "too_large")                                                                      \
    X(RATE_LIMITED, "rate_limited")                                                                \
    X(UNAVAILABLE, "unavailable")

enum tally_reject {
#define X(name, text) TALLY_REJECT_##name,
    TALLY_REJECT_MAP(X)
#undef X
        TALLY_REJECTS
};

/* Routes, for request counts and the latency histogram. */
#define TALLY_ROUTE_MAP(X)                                                                         \
    X(EVENTS, "events")                                                                            \
    X(PIXEL, "pixel")                                                                              \
    X(STATS, "stats")                                                                              \
    X(TOP, "top")                                                                                  \
    X(TOTALS, "totals")                                                                            \
    X(SERIES, "series")                                                                            \
    X(LIVE, "live")                                                                                \
    X(BADGE, "badge")                                                                              \
    X(ARTICLES, "articles")                                                                        \
    X(IMPORT, "import")                                                                            \
    X(ASSETS, "assets")                                                                            \
    X(HEALTH, "health")                                                                            \
    X(METRICS, "metrics")                                                                          \
    X(OTHER, "other")

enum tally_route {
#define X(name, text) TALLY_ROUTE_##name,
    TALLY_ROUTE_MAP(X)
#undef X
        TALLY_ROUTES
};

/* Upper bounds of the latency buckets, in seconds. */
#define TALLY_LATENCY_BOUNDS                                                                       \
    {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
#define TALLY_LATENCY_BUCKETS 13

#define TALLY_STATUS_CLASSES 5 /* 1xx .. 5xx */

/* Why a streamed answer (/v1/live) was cut off. */
enum tally_live_drop {
    TALLY_LIVE_DROP_SLOW,     /* what waited did not drain for 10 s */
    TALLY_LIVE_DROP_OVERFLOW, /* more than TALLY_HTTP_STREAM_BUF_MAX would have waited */
    TALLY_LIVE_DROPS
};

struct tally_metrics {
    _Atomic uint64_t events[TALLY_EVENT_TYPES][TALLY_OUTCOMES];
    _Atomic uint64_t ignored[TALLY_IGNORES];
    _Atomic uint64_t rejected[TALLY_REJECTS];
    _Atomic uint64_t requests[TALLY_ROUTES][TALLY_STATUS_CLASSES];
    _Atomic uint64_t latency[TALLY_ROUTES][TALLY_LATENCY_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t latency_sum_us[TALLY_ROUTES];
    _Atomic uint64_t redis_roundtrips;   /* replies received */
    _Atomic uint64_t redis_errors;       /* error replies and lost replies */
    _Atomic uint64_t redis_timeouts;     /* connections dropped for a late reply */
    _Atomic uint64_t redis_reconnects;   /* successful connections after the first */
    _Atomic uint64_t redis_units;        /* write units applied */
    _Atomic uint64_t redis_unit_events;  /* events in those units */
    _Atomic uint64_t redis_units_fenced; /* write units refused past their fence */
    _Atomic uint64_t indeterminate;      /* requests answered 504: outcome unknown */
    _Atomic uint64_t slow_clients;       /* connections cut for trickling a request */
    _Atomic uint64_t reads_refused;      /* reads answered 503: the worker's read caps */
    _Atomic uint64_t live_reads;         /* round trips reading the watched articles */
    _Atomic uint64_t live_events;        /* stats events pushed on live streams */
    _Atomic uint64_t live_refused;       /* /v1/live answered 503: --live-max */
    _Atomic uint64_t live_dropped[TALLY_LIVE_DROPS]; /* streams cut off, by reason */
    _Atomic uint64_t folds;              /* folds of the worker's journal counted */
    _Atomic uint64_t fold_entries;       /* journal entries they counted */
    _Atomic uint64_t fold_errors;        /* folds refused or unanswered (retried) */
    _Atomic uint64_t fold_skipped;       /* commands a fold skipped: Redis refused them */
    _Atomic uint64_t fold_stale;         /* merged folds that counted nothing: journal changed */
    _Atomic uint64_t fold_chunks;        /* staged chunks of merged records the worker counted */
    _Atomic uint64_t fold_merged;        /* folds counted from the worker's own merge */
    _Atomic uint64_t reclaimed_chunks;   /* staged chunks of writers gone counted */
    _Atomic uint64_t reclaimed;          /* entries of other writers' journals counted */
    _Atomic uint64_t forget_steps;       /* bounded fold calls DELETEs made before forgetting */
    _Atomic uint64_t journal_refused;    /* writes answered 503: --journal-max */
    _Atomic uint64_t writes_at_once;     /* writes counted at once: articles read lately */
    _Atomic uint64_t write_skipped;      /* commands a write counted at once skipped */
    _Atomic int64_t journal_backlog;     /* gauge: events appended, not folded */
    _Atomic int64_t redis_up;            /* gauge: 1 ready, 0 not; what /readyz reads */
    _Atomic int64_t held_events;         /* gauge: events waiting for Redis */
    _Atomic int64_t held_requests;       /* gauge */
    _Atomic int64_t connections;         /* gauge: open HTTP connections */
    _Atomic int64_t live_streams;        /* gauge: open /v1/live streams */
    _Atomic int64_t live_articles;       /* gauge: distinct articles they watch */
};

/* Add N to counter C: only the owning thread calls this. */
static inline void tally_metric_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void tally_gauge_add(_Atomic int64_t *g, int64_t n)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void tally_gauge_set(_Atomic int64_t *g, int64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

/* Record one request of ROUTE answered with STATUS after SECONDS. */
void tally_metrics_request(struct tally_metrics *m, enum tally_route route, int status,
                           double seconds);

/* Render /readyz's body for the N worker threads whose metric sets are M[i] (M[i] is thread
 * I's) into OUT, and return whether the collector is ready: every thread's tally_redis_up is 1.
 * Not ready, the body names the threads that are not: {"status":"unavailable","reason":"redis",
 * "threads":N,"threads_not_ready":[I,...]}. Reads only the atomics their owners publish: any
 * thread may call it, without a lock. */
bool tally_metrics_readiness(struct tally_buf *out, struct tally_metrics *const *m, size_t n);

/* Render the sum of the N metric sets M[i] in Prometheus text format (0.0.4) into OUT.
 * START_TIME is the process start (Unix seconds). */
void tally_metrics_render(struct tally_buf *out, struct tally_metrics *const *m, size_t n,
                          double start_time);

#endif
