/* reports.h -- what editors look at over time: top articles, an article's series, site
 * totals, and forgetting an article. Parameter parsing, time arithmetic, merging and
 * rendering are pure; the reads go through a fan-out of Redis commands. */
#ifndef TALLY_REPORTS_H
#define TALLY_REPORTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tally/buf.h"
#include "tally/fanout.h"
#include "tally/ingest.h"
#include "tally/model.h"

struct tally_redis;

#define TALLY_TOP_MAX 100
/* How long Redis keeps each bucket's part of a week's or month's top list or site totals
 * (src/scripts/kept.lua), for every collector: milliseconds. Every part expires at the next
 * multiple of it of Redis's clock (Unix milliseconds), whenever it was computed. */
#define TALLY_KEPT_MS 60000
#define TALLY_SERIES_HOURS_MAX (31 * 24) /* points of an hourly series */
#define TALLY_SERIES_DAYS_MAX 731        /* points of a daily series */
/* How far back a series may reach from the current hour or day: the buckets' lifetimes
 * (include/tally/model.h) less a margin of a day, and of five days. */
#define TALLY_SERIES_HOURS_KEPT (TALLY_HOUR_TTL / 3600 - 24)
#define TALLY_SERIES_DAYS_KEPT (TALLY_DAY_TTL / 86400 - 5)

enum tally_period { TALLY_PERIOD_DAY, TALLY_PERIOD_WEEK, TALLY_PERIOD_MONTH, TALLY_PERIOD_ALL };
enum tally_interval { TALLY_INTERVAL_HOUR, TALLY_INTERVAL_DAY };

const char *tally_period_name(enum tally_period p);

/* The days of PERIOD ending on the day of NOW: 1, 7, 30; 0 for all time. */
int tally_period_days(enum tally_period p);

#define TALLY_TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define TALLY_TIME_LEN 20                    /* "2026-11-27T13:00:00Z" */

/* Parse a time parameter: "YYYY-MM-DD" (midnight UTC) or RFC 3339 ("2026-11-27T13:05:00Z",
 * fractions and numeric offsets allowed). Returns 0 with *OUT in Unix seconds, or
 * TALLY_EINVAL -- also for a moment before 1970-01-01T00:00:00Z or after TALLY_TIME_MAX
 * once the offset is applied (what tally_time_format() could not write). */
int tally_time_parse(const char *s, size_t len, int64_t *out);

/* Write T as "2026-11-27T13:00:00Z" into OUT, always NUL-terminated. Returns TALLY_TIME_LEN,
 * or 0 with OUT empty when T is outside 0..TALLY_TIME_MAX. */
size_t tally_time_format(int64_t t, char out[TALLY_TIME_LEN + 1]);

/* ---- Top ---- */

struct tally_top_params {
    enum tally_metric metric; /* default views */
    enum tally_period period; /* default day */
    unsigned limit;           /* 1..100, default 10 */
};

int tally_top_parse(const char *query, size_t len, struct tally_top_params *p,
                    struct tally_error *err);

struct tally_top_entry {
    char *id; /* owned by the top's arena */
    uint16_t len;
    int64_t count;
};

struct tally_top;
typedef void tally_top_done_cb(int status, struct tally_top *t, void *arg);

/* A top list being read: candidates from every bucket, then merged. */
struct tally_top {
    struct tally_top_params p;
    struct tally_top_entry *entries; /* sorted: count descending, then id ascending */
    size_t n, cap;
    struct tally_buf arena;
    int64_t life_ms; /* week, month: how long the buckets' kept parts stay kept, the least */
    /* Private. */
    struct tally_fanout fan;
    tally_top_done_cb *done;
    void *arg;
};

/* Read the top list P from ST as of NOW (keys under PREFIX). T is initialised here and
 * borrowed until DONE; free it with tally_top_release(). Returns 0 and later calls DONE, or
 * a negative TALLY_E* code without calling it. A week or a month: each bucket answers its
 * first TALLY_TOP_MAX as Redis keeps them for everyone (computed at most once per
 * TALLY_KEPT_MS, and again after a DELETE or an import touched the bucket); T->life_ms says
 * how much longer they stay kept (the least any bucket answered: all expire together). */
int tally_top_start(struct tally_top *t, const struct tally_top_params *p,
                    struct tally_redis *r, const char *prefix, time_t now,
                    tally_top_done_cb *done, void *arg);
void tally_top_release(struct tally_top *t);

/* Add a candidate (for tests and the reader): copies ID. Returns 0 or TALLY_ENOMEM. */
int tally_top_add(struct tally_top *t, const char *id, size_t len, int64_t count);

/* Sort the candidates, fold repeats (an article listed twice keeps its larger count) and
 * keep the first LIMIT. */
void tally_top_finish(struct tally_top *t);

void tally_top_render(struct tally_buf *out, const struct tally_top *t);

/* ---- Series ---- */

struct tally_series_params {
    enum tally_metric metric;     /* default views */
    enum tally_interval interval; /* default day */
    int64_t from, to;             /* aligned to the interval, inclusive */
    size_t n;                     /* points */
};

/* Parse the query of GET /v1/series/{article} as of NOW. */
int tally_series_parse(const char *query, size_t len, time_t now, struct tally_series_params *p,
                       struct tally_error *err);

struct tally_series;
typedef void tally_series_done_cb(int status, struct tally_series *s, void *arg);

struct tally_series {
    struct tally_series_params p;
    const char *id;
    uint16_t len;
    int64_t *values; /* P.n points */
    /* Private. */
    struct tally_fanout fan;
    tally_series_done_cb *done;
    void *arg;
};

/* Read the series P of article ID (LEN bytes, borrowed until DONE). Release with
 * tally_series_release(). Same return rules as tally_top_start(). */
int tally_series_start(struct tally_series *s, const struct tally_series_params *p,
                       const char *id, size_t len, struct tally_redis *r, const char *prefix,
                       tally_series_done_cb *done, void *arg);
void tally_series_release(struct tally_series *s);

void tally_series_render(struct tally_buf *out, const struct tally_series *s);

/* ---- Site totals (GET /v1/totals) ---- */

struct tally_totals;
typedef void tally_totals_done_cb(int status, struct tally_totals *t, void *arg);

struct tally_totals {
    enum tally_period period;
    struct tally_site sums;
    int64_t life_ms; /* week, month: as in struct tally_top */
    /* Private. */
    struct tally_fanout fan;
    tally_totals_done_cb *done;
    void *arg;
};

int tally_totals_parse(const char *query, size_t len, enum tally_period *period,
                       struct tally_error *err);
/* Read the site totals of PERIOD as of NOW; as tally_top_start(), a week's or month's parts
 * kept by Redis (one call per bucket). */
int tally_totals_start(struct tally_totals *t, enum tally_period period, struct tally_redis *r,
                       const char *prefix, time_t now, tally_totals_done_cb *done, void *arg);
void tally_totals_render(struct tally_buf *out, const struct tally_totals *t);

/* ---- Forgetting (DELETE /v1/articles/{article}) ---- */

#define TALLY_FORGET_STEP_ENTRIES 256 /* the most journal entries a DELETE's step folds (each one
                                        * write unit, at most 2,000 events) */
#define TALLY_FORGET_STEP_BYTES 16384 /* and, past the first, the most bytes of their records */
#define TALLY_FORGET_LEFT_ENTRIES 16  /* the steps end when no more than this many are left */
#define TALLY_FORGET_STEPS_MAX 1024   /* or after this many steps (writes outrunning them) */

struct tally_forget;
typedef void tally_forget_done_cb(int status, struct tally_forget *f, void *arg);

struct tally_forget {
    struct tally_fanout fan;
    tally_forget_done_cb *done;
    void *arg;
    unsigned steps;          /* bounded fold calls made before the last (src/scripts/drain.lua) */
    /* Private. */
    const char *id, *prefix, *registry; /* borrowed until DONE */
    size_t len;
    uint32_t window;
    time_t now;
    struct tally_redis *r;
    long long left, chunks;  /* what the last step left in every journal */
};

/* After STEPS steps, the last of which left LEFT entries and CHUNKS staged chunks in every
 * journal: is another step due (else the call that forgets)? */
bool tally_forget_step_due(long long left, long long chunks, unsigned steps);

/* Remove every key of article ID (LEN bytes) in one script call: its buckets are found by
 * the collector's clock NOW (the clock writes file them under) and one day or hour either
 * side, for collectors whose clocks differ a little. WINDOW is --view-window. REGISTRY: the
 * journals' registry when the collectors keep journals (tally/fold.h), else NULL: every
 * journal is folded first, so that nothing acknowledged before comes back after -- in steps
 * of at most TALLY_FORGET_STEP_ENTRIES entries and TALLY_FORGET_STEP_BYTES of their records
 * (at least one entry; TALLY_FOLD_STEP_RECORDS merged records counted, the rest staged) or
 * one staged chunk a call, until at most TALLY_FORGET_LEFT_ENTRIES entries and no
 * chunk are left or TALLY_FORGET_STEPS_MAX steps were made; the call that forgets folds what
 * is left. ID, PREFIX and REGISTRY are borrowed until DONE runs. */
int tally_forget_start(struct tally_forget *f, const char *id, size_t len, uint32_t window,
                       time_t now, struct tally_redis *r, const char *prefix,
                       const char *registry, tally_forget_done_cb *done, void *arg);

#endif
