/* metrics.c -- per-thread counters and their Prometheus text rendering. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <cjson/cJSON.h>

#include "tally/metrics.h"

static const double metrics_bounds[TALLY_LATENCY_BUCKETS] = TALLY_LATENCY_BOUNDS;

static const char *const metrics_outcomes[] = {
#define X(name, text) text,
    TALLY_OUTCOME_MAP(X)
#undef X
};
static const char *const metrics_ignores[] = {
#define X(name, text) text,
    TALLY_IGNORE_MAP(X)
#undef X
};
static const char *const metrics_rejects[] = {
#define X(name, text) text,
    TALLY_REJECT_MAP(X)
#undef X
};
static const char *const metrics_routes[] = {
#define X(name, text) text,
    TALLY_ROUTE_MAP(X)
#undef X
};

const char *tally_ignore_name(enum tally_ignore r)
{
    return (unsigned)r < TALLY_IGNORES ? metrics_ignores[r] : "unknown";
}

void tally_metrics_request(struct tally_metrics *m, enum tally_route route, int status,
                           double seconds)
{
    int cls = status / 100 - 1;
    size_t b = 0;

    if (cls < 0 || cls >= TALLY_STATUS_CLASSES)
        cls = TALLY_STATUS_CLASSES - 1;
    tally_metric_add(&m->requests[route][cls], 1);
    while (b < TALLY_LATENCY_BUCKETS && seconds > metrics_bounds[b])
        b++;
    tally_metric_add(&m->latency[route][b], 1);
    tally_metric_add(&m->latency_sum_us[route], (uint64_t)(seconds * 1e6));
}

/* ---- Readiness ---- */

bool tally_metrics_readiness(struct tally_buf *out, struct tally_metrics *const *m, size_t n)
{
    bool ready = true;

    tally_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        if (atomic_load_explicit(&m[i]->redis_up, memory_order_relaxed) == 1)
            continue;
        if (ready) {
            tally_buf_adds(out, "{\"status\":\"unavailable\",\"reason\":\"redis\",\"threads\":");
            tally_buf_add_u64(out, n);
            tally_buf_adds(out, ",\"threads_not_ready\":[");
        } else {
            tally_buf_adds(out, ",");
        }
        tally_buf_add_u64(out, i);
        ready = false;
    }
    tally_buf_adds(out, ready ? "{\"status\":\"ready\"}\n" : "]}\n");
    return ready;
}

/* ---- Rendering ---- */

static uint64_t metrics_sum(struct tally_metrics *const *m, size_t n, size_t offset)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v += atomic_load_explicit((_Atomic uint64_t *)((char *)m[i] + offset),
                                  memory_order_relaxed);
    return v;
}

static int64_t metrics_gauge(struct tally_metrics *const *m, size_t n, size_t offset)
{
    int64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v += atomic_load_explicit((_Atomic int64_t *)((char *)m[i] + offset),
                                  memory_order_relaxed);
    return v;
}

#define SUM(field) metrics_sum(m, n, offsetof(struct tally_metrics, field))
#define GAUGE(field) metrics_gauge(m, n, offsetof(struct tally_metrics, field))

static void metrics_head(struct tally_buf *out, const char *name, const char *type,
                         const char *help)
{
    char line[512];

    snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    tally_buf_adds(out, line);
}

static void metrics_sample(struct tally_buf *out, const char *name, const char *labels,
                           double v)
{
    char line[512];

    /* Counters are whole numbers: print them whole; sums of seconds need no more than 9
     * significant digits. */
    if (v == (double)(int64_t)v)
        snprintf(line, sizeof(line), "%s%s %lld\n", name, labels, (long long)v);
    else
        snprintf(line, sizeof(line), "%s%s %.9g\n", name, labels, v);
    tally_buf_adds(out, line);
}

static void metrics_events(struct tally_buf *out, struct tally_metrics *const *m, size_t n)
{
    char labels[128];

    metrics_head(out, "tally_events_total", "counter",
                 "Events received, by type and outcome (counted, ignored, rejected, failed).");
    for (int t = 0; t < TALLY_EVENT_TYPES; t++)
        for (int o = 0; o < TALLY_OUTCOMES; o++) {
            snprintf(labels, sizeof(labels), "{type=\"%s\",outcome=\"%s\"}",
                     tally_event_type_name((enum tally_event_type)t), metrics_outcomes[o]);
            metrics_sample(out, "tally_events_total", labels, (double)SUM(events[t][o]));
        }
    metrics_head(out, "tally_events_ignored_total", "counter",
                 "Valid events not counted on purpose, by reason.");
    for (int r = 0; r < TALLY_IGNORES; r++) {
        snprintf(labels, sizeof(labels), "{reason=\"%s\"}", metrics_ignores[r]);
        metrics_sample(out, "tally_events_ignored_total", labels, (double)SUM(ignored[r]));
    }
    metrics_head(out, "tally_requests_rejected_total", "counter",
                 "Ingest requests refused, by reason.");
    for (int r = 0; r < TALLY_REJECTS; r++) {
        snprintf(labels, sizeof(labels), "{reason=\"%s\"}", metrics_rejects[r]);
        metrics_sample(out, "tally_requests_rejected_total", labels, (double)SUM(rejected[r]));
    }
}

static void metrics_http(struct tally_buf *out, struct tally_metrics *const *m, size_t n)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    const char *h = "tally_http_request_duration_seconds";
    char labels[128], name[128];

    metrics_head(out, "tally_http_requests_total", "counter",
                 "HTTP requests answered, by route and status class.");
    for (int r = 0; r < TALLY_ROUTES; r++)
        for (int c = 0; c < TALLY_STATUS_CLASSES; c++) {
            snprintf(labels, sizeof(labels), "{route=\"%s\",code=\"%s\"}", metrics_routes[r],
                     classes[c]);
            metrics_sample(out, "tally_http_requests_total", labels,
                           (double)SUM(requests[r][c]));
        }
    metrics_head(out, h, "histogram", "Time from request to answer, by route.");
    for (int r = 0; r < TALLY_ROUTES; r++) {
        uint64_t cum = 0;

        for (int b = 0; b <= TALLY_LATENCY_BUCKETS; b++) {
            cum += SUM(latency[r][b]);
            if (b < TALLY_LATENCY_BUCKETS)
                snprintf(labels, sizeof(labels), "{route=\"%s\",le=\"%g\"}", metrics_routes[r],
                         metrics_bounds[b]);
            else
                snprintf(labels, sizeof(labels), "{route=\"%s\",le=\"+Inf\"}",
                         metrics_routes[r]);
            snprintf(name, sizeof(name), "%s_bucket", h);
            metrics_sample(out, name, labels, (double)cum);
        }
        snprintf(labels, sizeof(labels), "{route=\"%s\"}", metrics_routes[r]);
        snprintf(name, sizeof(name), "%s_sum", h);
        metrics_sample(out, name, labels, (double)SUM(latency_sum_us[r]) / 1e6);
        snprintf(name, sizeof(name), "%s_count", h);
        metrics_sample(out, name, labels, (double)cum);
    }
}

static void metrics_counter(struct tally_buf *out, const char *name, const char *help,
                            double v)
{
    metrics_head(out, name, "counter", help);
    metrics_sample(out, name, "", v);
}

static void metrics_gauge_line(struct tally_buf *out, const char *name, const char *help,
                               double v)
{
    metrics_head(out, name, "gauge", help);
    metrics_sample(out, name, "", v);
}

static void metrics_redis(struct tally_buf *out, struct tally_metrics *const *m, size_t n)
{
    metrics_counter(out, "tally_redis_roundtrips_total", "Replies received from Redis.",
                    (double)SUM(redis_roundtrips));
    metrics_counter(out, "tally_redis_errors_total", "Redis error replies and lost replies.",
                    (double)SUM(redis_errors));
    metrics_counter(out, "tally_redis_timeouts_total",
                    "Redis connections dropped because a reply was late.",
                    (double)SUM(redis_timeouts));
    metrics_counter(out, "tally_redis_reconnects_total", "Redis connections re-established.",
                    (double)SUM(redis_reconnects));
    metrics_counter(out, "tally_redis_write_units_total",
                    "Write units (atomic script calls) applied.", (double)SUM(redis_units));
    metrics_counter(out, "tally_redis_write_unit_events_total",
                    "Events carried by the applied write units.",
                    (double)SUM(redis_unit_events));
    metrics_counter(out, "tally_redis_write_units_fenced_total",
                    "Write units Redis reached past their fence, and refused.",
                    (double)SUM(redis_units_fenced));
    metrics_counter(out, "tally_requests_indeterminate_total",
                    "Writes answered as of unknown outcome (504, or the pixel's GIF): sent, "
                    "and not confirmed in time.",
                    (double)SUM(indeterminate));
    metrics_counter(out, "tally_http_slow_clients_total",
                    "Connections closed because a request took over 10 s to arrive.",
                    (double)SUM(slow_clients));
    metrics_counter(out, "tally_reads_refused_total",
                    "Reads answered 503 because their worker had too many reads, or too many "
                    "Redis commands of reads, waiting for Redis.",
                    (double)SUM(reads_refused));
    metrics_counter(out, "tally_live_reads_total",
                    "Round trips reading the articles watched on /v1/live: at most one a second "
                    "per worker thread, whatever the number of streams.",
                    (double)SUM(live_reads));
    metrics_counter(out, "tally_live_events_total",
                    "Stats events sent on /v1/live streams (the first of each stream included).",
                    (double)SUM(live_events));
    metrics_counter(out, "tally_live_refused_total",
                    "/v1/live requests answered 503 because --live-max streams were open.",
                    (double)SUM(live_refused));
    metrics_head(out, "tally_live_dropped_total", "counter",
                 "/v1/live streams cut off because their reader fell behind: slow (what waited "
                 "did not drain for 10 s) or overflow (more would have waited than a stream "
                 "may hold).");
    for (int r = 0; r < TALLY_LIVE_DROPS; r++) {
        static const char *const reasons[TALLY_LIVE_DROPS] = {"slow", "overflow"};
        char labels[32];

        snprintf(labels, sizeof(labels), "{reason=\"%s\"}", reasons[r]);
        metrics_sample(out, "tally_live_dropped_total", labels, (double)SUM(live_dropped[r]));
    }
    metrics_gauge_line(out, "tally_redis_up",
                       "Worker threads whose Redis connections, for writes and for reads, are "
                       "ready.",
                       (double)GAUGE(redis_up));
    metrics_gauge_line(out, "tally_worker_threads", "Worker threads (--threads).", (double)n);
    metrics_gauge_line(out, "tally_pending_events", "Events held while waiting for Redis.",
                       (double)GAUGE(held_events));
    metrics_gauge_line(out, "tally_pending_requests", "Requests held while waiting for Redis.",
                       (double)GAUGE(held_requests));
    metrics_gauge_line(out, "tally_http_connections", "Open HTTP connections.",
                       (double)GAUGE(connections));
    metrics_gauge_line(out, "tally_live_streams", "Open /v1/live streams (Server-Sent Events).",
                       (double)GAUGE(live_streams));
    metrics_gauge_line(out, "tally_live_articles",
                       "Distinct articles the open /v1/live streams watch, summed over worker "
                       "threads (each reads its own once a second).",
                       (double)GAUGE(live_articles));
}

/* The journals of the write path (tally/fold.h), with one Redis or a cluster (there a fold is
 * a plan counted per bucket, and a DELETE's folds are not steps): all 0 without them
 * (--fold-interval 0). */
static void metrics_journal(struct tally_buf *out, struct tally_metrics *const *m, size_t n)
{
    metrics_counter(out, "tally_folds_total",
                    "Folds of the worker threads' own journals answered by Redis: each counts "
                    "the oldest acknowledged entries and removes them in one atomic step.",
                    (double)SUM(folds));
    metrics_counter(out, "tally_fold_entries_total",
                    "Journal entries (one per acknowledged write unit) those folds counted.",
                    (double)SUM(fold_entries));
    metrics_counter(out, "tally_fold_errors_total",
                    "Folds Redis refused or did not answer; each is sent again 100 ms later, and "
                    "finds only what no fold has counted yet.",
                    (double)SUM(fold_errors));
    metrics_counter(out, "tally_fold_stale_total",
                    "Folds of a worker's own merge of its entries that counted nothing because "
                    "the journal did not start with exactly those entries (an acknowledgement "
                    "whose reply was lost, a fold sent again, another collector's fold); what "
                    "is left of them is folded from the journal instead.",
                    (double)SUM(fold_stale));
    metrics_counter(out, "tally_fold_chunks_total",
                    "Chunks of merged records counted each by a call of its own: a fold of a "
                    "batch counts at most a step of merged records (32, or 128 while its worker "
                    "is behind) and stages a larger batch in chunks of that many, so that no "
                    "call holds Redis long.",
                    (double)SUM(fold_chunks));
    metrics_counter(out, "tally_fold_merged_total",
                    "Folds counted from the worker thread's own merge of what it acknowledged "
                    "(its records added up per article and hour as the acknowledgements came "
                    "back), Redis reading none of the entries' records: with one Redis a merged "
                    "fold, on a cluster a plan of the oldest batch. The others were folded from "
                    "the journal.",
                    (double)SUM(fold_merged));
    metrics_counter(out, "tally_fold_skipped_commands_total",
                    "Commands of folds that Redis refused (a key of another type, written by "
                    "someone else) and that were skipped so that the fold could finish: what "
                    "they would have added is lost, and each is logged.",
                    (double)SUM(fold_skipped));
    metrics_counter(out, "tally_journal_reclaimed_entries_total",
                    "Entries of journals whose writer is gone (no entry for 5 s: a collector "
                    "stopped, killed or cut off) that this collector counted.",
                    (double)SUM(reclaimed));
    metrics_counter(out, "tally_journal_reclaimed_chunks_total",
                    "Staged chunks of merged records of writers gone that this collector "
                    "counted.",
                    (double)SUM(reclaimed_chunks));
    metrics_counter(out, "tally_forget_steps_total",
                    "Bounded fold calls DELETEs made before the call that forgets the article: "
                    "each folds at most 256 journal entries and 16 KiB of their records (128 "
                    "merged records counted, the rest staged) or counts one staged chunk, so "
                    "that no call holds Redis long. On a Redis Cluster, each plan of at most "
                    "16 entries of a journal (cplan) and each bucket's part of one (cpart).",
                    (double)SUM(forget_steps));
    metrics_counter(out, "tally_journal_refused_total",
                    "Write requests answered 503 because their worker thread had --journal-max "
                    "events acknowledged and not folded yet.",
                    (double)SUM(journal_refused));
    metrics_counter(out, "tally_writes_at_once_total",
                    "Write requests counted before their answer instead of journaled, because "
                    "one of their articles was read on this collector within --follow-reads, "
                    "or they asked for their articles' stats (POST /v1/events?stats=1): a read "
                    "after them finds nothing to wait for.",
                    (double)SUM(writes_at_once));
    metrics_counter(out, "tally_write_skipped_commands_total",
                    "Commands of writes counted before their answer (without a journal, an "
                    "article read lately, comment deltas) that Redis refused (a key of another "
                    "type, written by someone else) and that were skipped so that the write "
                    "could finish: what they would have added is lost, and the write is "
                    "logged.",
                    (double)SUM(write_skipped));
    metrics_gauge_line(out, "tally_journal_backlog_events",
                       "Events acknowledged (appended to the journals) and not folded yet, summed "
                       "over worker threads; past --journal-max on a thread its writes get 503.",
                       (double)GAUGE(journal_backlog));
}

static long metrics_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void metrics_process(struct tally_buf *out, double start_time)
{
    struct rusage ru;
    char labels[256];
    long rss = 0, pages;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%*s %ld", &pages) == 1)
            rss = pages * sysconf(_SC_PAGESIZE);
        fclose(f);
    }
    getrusage(RUSAGE_SELF, &ru);
    metrics_counter(out, "process_cpu_seconds_total", "User and system CPU time spent.",
                    (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    metrics_gauge_line(out, "process_resident_memory_bytes", "Resident memory size.",
                       (double)rss);
    metrics_gauge_line(out, "process_open_fds", "Open file descriptors.", (double)metrics_fds());
    /* Microseconds, not the 9 significant digits of other samples (10 s at today's epoch). */
    metrics_head(out, "process_start_time_seconds", "gauge",
                 "Start time of the process since the Unix epoch.");
    snprintf(labels, sizeof(labels), "process_start_time_seconds %.6f\n", start_time);
    tally_buf_adds(out, labels);
    metrics_head(out, "tally_build_info", "gauge", "Versions tally was built with.");
    snprintf(labels, sizeof(labels),
             "{version=\"%s\",libevent=\"%s\",hiredis=\"%d.%d.%d\",cjson=\"%s\"}",
             TALLY_VERSION, event_get_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
             cJSON_Version());
    metrics_sample(out, "tally_build_info", labels, 1);
}

void tally_metrics_render(struct tally_buf *out, struct tally_metrics *const *m, size_t n,
                          double start_time)
{
    metrics_events(out, m, n);
    metrics_http(out, m, n);
    metrics_redis(out, m, n);
    metrics_journal(out, m, n);
    metrics_process(out, start_time);
}
