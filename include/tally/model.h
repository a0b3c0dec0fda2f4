/* model.h -- what tally counts per article, in one table: each metric's names, where it is
 * kept, how an event feeds it and the bit of its expiry; the lifetimes of what is kept.
 *
 * The table drives the stats struct and its JSON (query.c), the site totals (reports.c), the
 * top and series metric names and their keys (reports.c, keys.h), the keys a write unit
 * declares and the expiry bits it asks for (agg.c), and what the scripts learn of the model:
 * apply.lua and forget.lua get the lifetimes, the metric names and their bits as arguments
 * (tally_model_arg()), never as literals of their own.
 *
 * A metric of rule SUM (an integer member of one event type added up) needs nothing but its
 * row: the write unit carries it as a (name, amount) pair that the write script adds to the
 * totals hash and to the hour's, the day's and the all-time lists under that name. A property
 * (the latest value an event carried, e.g. words) needs its row in TALLY_PROPERTY_MAP. A
 * metric with rules of its own (OWN: views and their repeat checks, visitors, shares by
 * network, comments that never go below 0) is counted by code in agg.c and apply.lua. */
#ifndef TALLY_MODEL_H
#define TALLY_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/ingest.h"

/* Lifetimes, in seconds, of what the write script keeps (include/tally/keys.h). */
#define TALLY_HOUR_TTL (9 * 86400)     /* hourly buckets: at least 8 days of series */
#define TALLY_DAY_TTL (405 * 86400)    /* daily buckets and site totals: at least 400 days */
#define TALLY_VISITORS_TTL (2 * 86400) /* an article's distinct-visitor estimate of a day */

/* The metrics, in the order of enum tally_metric, of the stats' JSON members and of the
 * error message that lists them:
 *   X(ID, member, name, site, bit, rule)
 *   ID      TALLY_METRIC_<ID>
 *   member  its member of struct tally_stats and of the stats JSON
 *   name    its name in metric= of /v1/top, /v1/series and badges, in the totals hash (the
 *           field) and in the bucket keys (h:<name>:..., d:<name>:..., t:<name>)
 *   site    1: also summed into the site totals (/v1/totals), 0: not
 *   bit     its bit in the expiry masks of a bucket's day and hour keys (TALLY_EXPIRY_SITE
 *           is taken)
 *   rule    OWN (counted by rules of its own) or SUM(TYPE, field): the event member FIELD of
 *           every TALLY_EVENT_TYPE event added up */
#define TALLY_METRIC_MAP(X)                                                                        \
    X(VIEWS, views, "views", 1, 0x01, OWN)                                                         \
    X(VISITORS, visitors, "visitors", 0, 0x02, OWN)                                                \
    X(SHARES, shares, "shares", 1, 0x04, OWN)                                                      \
    X(COMMENTS, comments, "comments", 1, 0x08, OWN)                                                \
    X(ENGAGED, engaged_seconds, "engaged", 1, 0x20, SUM(ENGAGE, seconds))                          \
    X(READS, reads, "reads", 1, 0x40, SUM(ENGAGE, read))

/* Properties: the latest value an event carried, kept in the totals hash only.
 *   X(ID, member, name, type)
 *   member  its member of struct tally_stats and of the stats JSON, and of struct tally_event
 *   name    its field in the totals hash
 *   type    the event type that carries it (0 there means "not given") */
#define TALLY_PROPERTY_MAP(X) X(WORDS, words, "words", VIEW)

enum tally_metric {
#define X(id, member, name, site, bit, rule) TALLY_METRIC_##id,
    TALLY_METRIC_MAP(X)
#undef X
        TALLY_METRICS
};

enum tally_property {
#define X(id, member, name, type) TALLY_PROPERTY_##id,
    TALLY_PROPERTY_MAP(X)
#undef X
        TALLY_PROPERTIES
};

/* Which of a bucket's day or hour keys: one bit per metric, and the site totals (day only). */
enum tally_expiry {
#define X(id, member, name, site, bit, rule) TALLY_EXPIRY_##id = (bit),
    TALLY_METRIC_MAP(X)
#undef X
        TALLY_EXPIRY_SITE = 0x10,
    TALLY_EXPIRY_HOUR_ALL = 0
#define X(id, member, name, site, bit, rule) | (bit)
        TALLY_METRIC_MAP(X)
#undef X
    ,
    TALLY_EXPIRY_DAY_ALL = TALLY_EXPIRY_HOUR_ALL | TALLY_EXPIRY_SITE
};

/* One article's counts, as /v1/stats shows them. */
struct tally_stats {
#define X(id, member, name, site, bit, rule) int64_t member;
    TALLY_METRIC_MAP(X)
#undef X
    int64_t by_network[TALLY_NETWORKS];
#define X(id, member, name, type) int64_t member;
    TALLY_PROPERTY_MAP(X)
#undef X
};

/* Site totals of a period: the metrics whose site column is 1 (the others stay 0). */
struct tally_site {
#define X(id, member, name, site, bit, rule) int64_t member;
    TALLY_METRIC_MAP(X)
#undef X
};

/* A metric's row. */
struct tally_metric_info {
    const char *name;
    const char *member;
    size_t stats_offset; /* of its int64_t in struct tally_stats */
    size_t site_offset;  /* of its int64_t in struct tally_site */
    bool site;
    uint8_t bit;
    bool sum; /* rule SUM: carried as a (name, amount) pair */
};

struct tally_property_info {
    const char *name;
    const char *member;
    size_t stats_offset;
};

extern const struct tally_metric_info tally_metrics[TALLY_METRICS];
extern const struct tally_property_info tally_properties[TALLY_PROPERTIES];

const char *tally_metric_name(enum tally_metric m);

/* The metric named S (LEN bytes), exactly; -1 for none. */
int tally_metric_from(const char *s, size_t len);

/* Metric M's count in S. */
int64_t *tally_stats_metric(struct tally_stats *s, enum tally_metric m);
int64_t tally_stats_get(const struct tally_stats *s, enum tally_metric m);

/* Write "one of views, visitors, ..." (every metric's name, in order) into OUT (CAP bytes,
 * always NUL-terminated). */
void tally_metric_list(char *out, size_t cap);

/* The model as the scripts take it, one argument: the lifetimes of hour, day and
 * distinct-visitor keys in seconds, then the name of each expiry bit from bit 0 up ("site"
 * for TALLY_EXPIRY_SITE), a '+' after the name of a metric also summed in the site totals:
 * "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+". Returns
 * its length (at most TALLY_MODEL_ARG_MAX), OUT always NUL-terminated. */
#define TALLY_MODEL_ARG_MAX 160
size_t tally_model_arg(char out[TALLY_MODEL_ARG_MAX + 1]);

#endif
