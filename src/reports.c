/* reports.c -- top articles, series and site totals read from the time buckets that the
 * write script keeps (see keys.h), and forgetting an article. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/fold.h"
#include "tally/keys.h"
#include "tally/reports.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "tally/uri.h"
#include "tally/visitor.h"

static const char *const reports_periods[] = {"day", "week", "month", "all"};

const char *tally_period_name(enum tally_period p)
{
    return (unsigned)p <= TALLY_PERIOD_ALL ? reports_periods[p] : "unknown";
}

int tally_period_days(enum tally_period p)
{
    static const int days[] = {1, 7, 30, 0};

    return days[p];
}

/* ---- Parameters ---- */

static int reports_fail(struct tally_error *err, const char *code, const char *message)
{
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s", message);
    return TALLY_EINVAL;
}

/* Decode a parameter value into OUT (CAP bytes, NUL-terminated). */
static int reports_value(const char *v, size_t vlen, char *out, size_t cap)
{
    long n = vlen < cap ? tally_uri_decode(v, vlen, out, cap - 1, TALLY_URI_PLUS_SPACE) : -1;

    if (n < 0)
        return TALLY_EINVAL;
    out[n] = '\0';
    return 0;
}

/* The index of VALUE in NAMES (N of them), or -1. */
static int reports_pick(const char *value, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0)
            return (int)i;
    return -1;
}

static int reports_metric(const char *value, enum tally_metric *m, struct tally_error *err)
{
    int i = tally_metric_from(value, strlen(value));
    char list[128];

    if (i < 0) {
        tally_metric_list(list, sizeof(list));
        err->code = "invalid_parameter";
        snprintf(err->message, sizeof(err->message), "metric: %s", list);
        return TALLY_EINVAL;
    }
    *m = (enum tally_metric)i;
    return 0;
}

static int reports_period(const char *value, enum tally_period *p, struct tally_error *err)
{
    int i = reports_pick(value, reports_periods, 4);

    if (i < 0)
        return reports_fail(err, "invalid_parameter", "period: one of day, week, month, all");
    *p = (enum tally_period)i;
    return 0;
}

static int reports_limit(const char *value, unsigned *limit, struct tally_error *err)
{
    char *end;
    unsigned long n = strtoul(value, &end, 10);

    if (value[0] < '0' || value[0] > '9' || *end != '\0' || n < 1 || n > TALLY_TOP_MAX)
        return reports_fail(err, "invalid_parameter", "limit: an integer from 1 to 100");
    *limit = (unsigned)n;
    return 0;
}

/* Calls FN(name, value) for each known parameter of QUERY; repeats and bad encodings are
 * errors, unknown names are ignored. */
typedef int reports_param_fn(void *ctx, const char *name, const char *value,
                             struct tally_error *err);

static int reports_params(const char *query, size_t len, const char *const *known, size_t n_known,
                          reports_param_fn *fn, void *ctx, struct tally_error *err)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen;
    unsigned seen = 0;
    char value[64];

    tally_query_iter_init(&it, query, len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        for (size_t i = 0; i < n_known; i++) {
            int rc;

            if (!tally_query_key_is(k, klen, known[i]))
                continue;
            if (seen & (1u << i) || reports_value(v, vlen, value, sizeof(value)) < 0) {
                snprintf(err->message, sizeof(err->message), "%s: given twice or malformed",
                         known[i]);
                err->code = "invalid_parameter";
                return TALLY_EINVAL;
            }
            seen |= 1u << i;
            if ((rc = fn(ctx, known[i], value, err)) < 0)
                return rc;
        }
    }
    return 0;
}

static int top_param(void *ctx, const char *name, const char *value, struct tally_error *err)
{
    struct tally_top_params *p = ctx;

    if (strcmp(name, "metric") == 0)
        return reports_metric(value, &p->metric, err);
    if (strcmp(name, "period") == 0)
        return reports_period(value, &p->period, err);
    return reports_limit(value, &p->limit, err);
}

int tally_top_parse(const char *query, size_t len, struct tally_top_params *p,
                    struct tally_error *err)
{
    static const char *const known[] = {"metric", "period", "limit"};

    *p = (struct tally_top_params){TALLY_METRIC_VIEWS, TALLY_PERIOD_DAY, 10};
    return reports_params(query, len, known, 3, top_param, p, err);
}

static int totals_param(void *ctx, const char *name, const char *value, struct tally_error *err)
{
    (void)name;
    return reports_period(value, ctx, err);
}

int tally_totals_parse(const char *query, size_t len, enum tally_period *period,
                       struct tally_error *err)
{
    static const char *const known[] = {"period"};

    *period = TALLY_PERIOD_DAY;
    return reports_params(query, len, known, 1, totals_param, period, err);
}

/* ---- Time ---- */

static int reports_digits(const char *s, size_t n, int *out)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TALLY_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Seconds east of UTC of an offset "Z", "+hh:mm" or "-hh:mm" (S, LEN bytes). */
static int reports_offset(const char *s, size_t len, int64_t *off)
{
    int hh, mm;

    if (len == 1 && (s[0] == 'Z' || s[0] == 'z')) {
        *off = 0;
        return 0;
    }
    if (len != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' ||
        reports_digits(s + 1, 2, &hh) < 0 || reports_digits(s + 4, 2, &mm) < 0 || hh > 23 ||
        mm > 59)
        return TALLY_EINVAL;
    *off = (s[0] == '-' ? -1 : 1) * (int64_t)(hh * 3600 + mm * 60);
    return 0;
}

/* Parse "hh:mm:ss[.frac]" followed by an offset. */
static int reports_clock(const char *s, size_t len, struct tm *tm, int64_t *off)
{
    size_t i = 8;

    if (len < 9 || s[2] != ':' || s[5] != ':' || reports_digits(s, 2, &tm->tm_hour) < 0 ||
        reports_digits(s + 3, 2, &tm->tm_min) < 0 || reports_digits(s + 6, 2, &tm->tm_sec) < 0 ||
        tm->tm_hour > 23 || tm->tm_min > 59 || tm->tm_sec > 60)
        return TALLY_EINVAL;
    if (s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == 9)
            return TALLY_EINVAL;
    }
    return reports_offset(s + i, len - i, off);
}

int tally_time_parse(const char *s, size_t len, int64_t *out)
{
    struct tm tm = {0}, back;
    int64_t off = 0;
    time_t t;

    if (len < 10 || s[4] != '-' || s[7] != '-' || reports_digits(s, 4, &tm.tm_year) < 0 ||
        reports_digits(s + 5, 2, &tm.tm_mon) < 0 || reports_digits(s + 8, 2, &tm.tm_mday) < 0 ||
        tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1)
        return TALLY_EINVAL;
    if (len > 10 && ((s[10] != 'T' && s[10] != 't') ||
                     reports_clock(s + 11, len - 11, &tm, &off) < 0))
        return TALLY_EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    back = tm;
    t = timegm(&tm);
    /* timegm normalises the 31st of November into December: refuse what it had to mend. */
    if (t == (time_t)-1 || tm.tm_mday != back.tm_mday || tm.tm_mon != back.tm_mon)
        return TALLY_EINVAL;
    /* An offset may carry the first or last day past what tally_time_format() writes. */
    if ((int64_t)t - off < 0 || (int64_t)t - off > TALLY_TIME_MAX)
        return TALLY_EINVAL;
    *out = (int64_t)t - off;
    return 0;
}

size_t tally_time_format(int64_t t, char out[TALLY_TIME_LEN + 1])
{
    time_t tt = (time_t)t;
    struct tm tm;
    int n;

    out[0] = '\0';
    if (t < 0 || t > TALLY_TIME_MAX || gmtime_r(&tt, &tm) == NULL)
        return 0;
    n = snprintf(out, TALLY_TIME_LEN + 1, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return n == TALLY_TIME_LEN ? TALLY_TIME_LEN : (out[0] = '\0', 0);
}

/* T rounded down to a multiple of STEP, also below 0. */
static int64_t reports_floor(int64_t t, int64_t step)
{
    int64_t r = t % step;

    return r < 0 ? t - r - step : t - r;
}

/* ---- Series parameters ---- */

struct series_raw {
    struct tally_series_params *p;
    bool has_from, has_to;
};

static int series_param(void *ctx, const char *name, const char *value, struct tally_error *err)
{
    struct series_raw *r = ctx;

    if (strcmp(name, "metric") == 0)
        return reports_metric(value, &r->p->metric, err);
    if (strcmp(name, "interval") == 0) {
        if (strcmp(value, "hour") != 0 && strcmp(value, "day") != 0)
            return reports_fail(err, "invalid_parameter", "interval: hour or day");
        r->p->interval = value[0] == 'h' ? TALLY_INTERVAL_HOUR : TALLY_INTERVAL_DAY;
        return 0;
    }
    if (tally_time_parse(value, strlen(value), name[0] == 'f' ? &r->p->from : &r->p->to) < 0)
        return reports_fail(err, "invalid_parameter",
                            name[0] == 'f' ? "from: YYYY-MM-DD or RFC 3339 (2026-11-27T13:00:00Z)"
                                           : "to: YYYY-MM-DD or RFC 3339 (2026-11-27T13:00:00Z)");
    if (name[0] == 'f')
        r->has_from = true;
    else
        r->has_to = true;
    return 0;
}

/* Refuse a series reaching past what the buckets keep (include/tally/keys.h: hourly keys live
 * 9 days, daily ones 405, counted from their first write): zeros there would be data already
 * deleted, not a quiet hour. The margin keeps a point whole on a collector whose clock is
 * somewhat behind. */
static int series_retention(const struct tally_series_params *p, int64_t now,
                            struct tally_error *err)
{
    bool hour = p->interval == TALLY_INTERVAL_HOUR;
    int64_t step = hour ? 3600 : 86400;
    int64_t earliest = reports_floor(now, step) - (hour ? TALLY_SERIES_HOURS_KEPT * step
                                                        : TALLY_SERIES_DAYS_KEPT * step);
    char when[TALLY_TIME_LEN + 1];

    if (p->from >= earliest)
        return 0;
    tally_time_format(earliest < 0 ? 0 : earliest, when);
    err->code = "invalid_parameter";
    snprintf(err->message, sizeof(err->message),
             hour ? "from: hourly points are kept 8 days; the earliest is %s"
                  : "from: daily points are kept 400 days; the earliest is %s",
             when);
    return TALLY_EINVAL;
}

int tally_series_parse(const char *query, size_t len, time_t now, struct tally_series_params *p,
                       struct tally_error *err)
{
    static const char *const known[] = {"metric", "interval", "from", "to"};
    struct series_raw r = {.p = p};
    int64_t step, span;
    size_t max;
    int rc;

    *p = (struct tally_series_params){.metric = TALLY_METRIC_VIEWS,
                                      .interval = TALLY_INTERVAL_DAY};
    if ((rc = reports_params(query, len, known, 4, series_param, &r, err)) < 0)
        return rc;
    step = p->interval == TALLY_INTERVAL_HOUR ? 3600 : 86400;
    span = p->interval == TALLY_INTERVAL_HOUR ? 23 : 29; /* the last 24 hours, 30 days */
    max = p->interval == TALLY_INTERVAL_HOUR ? TALLY_SERIES_HOURS_MAX : TALLY_SERIES_DAYS_MAX;
    if (!r.has_to)
        p->to = r.has_from ? p->from + span * step : (int64_t)now;
    p->to = reports_floor(p->to, step);
    if (!r.has_from)
        p->from = p->to - span * step;
    p->from = reports_floor(p->from, step);
    if (p->to > TALLY_TIME_MAX)
        return reports_fail(err, "invalid_parameter", "to: at most 9999-12-31T23:59:59Z");
    if (p->from > p->to)
        return reports_fail(err, "invalid_parameter", "from: must not be after to");
    if ((p->to - p->from) / step + 1 > (int64_t)max)
        return reports_fail(err, "invalid_parameter",
                            p->interval == TALLY_INTERVAL_HOUR
                                ? "from: an hourly series has at most 744 points"
                                : "from: a daily series has at most 731 points");
    if ((rc = series_retention(p, (int64_t)now, err)) < 0)
        return rc;
    p->n = (size_t)((p->to - p->from) / step + 1);
    return 0;
}

/* ---- Keys of buckets ---- */

/* "P{bb}<kind>:<metric>:<stamp>", the stamp being the day or hour of T. */
static size_t reports_bucket_key(char *out, size_t cap, const char *prefix, unsigned bucket,
                                 char kind, enum tally_metric m, int64_t t, bool hour)
{
    char stamp[11], tail[32];
    int k;

    tally_key_hour(t, stamp);
    k = snprintf(tail, sizeof(tail), "%s:%.*s", tally_metric_name(m), hour ? 10 : 8, stamp);
    if (k < 0 || (size_t)k >= sizeof(tail))
        return 0;
    return tally_key_make(out, cap, prefix, bucket, kind, tail, (size_t)k);
}

/* "P{bb}k:<what>:<period>:<YYYYMMDD>", where a bucket's part of a week or month ending on the
 * day of T is kept (src/scripts/kept.lua); WHAT is a metric, or "site" for the totals. */
static size_t reports_kept_key(char *out, size_t cap, const char *prefix, unsigned bucket,
                               const char *what, enum tally_period p, int64_t t)
{
    char stamp[11], tail[48];
    int k;

    tally_key_hour(t, stamp);
    k = snprintf(tail, sizeof(tail), "%s:%s:%.8s", what, tally_period_name(p), stamp);
    if (k < 0 || (size_t)k >= sizeof(tail))
        return 0;
    return tally_key_make(out, cap, prefix, bucket, 'k', tail, (size_t)k);
}

/* The head of a call of kept.lua for BUCKET into B: the number of keys (NDAYS days' keys
 * follow, which the caller writes, then the arguments), the kept answer's key -- also into
 * FIRST, which routes the call -- and the bucket's epoch. */
static void reports_kept_head(struct tally_buf *b, const char *prefix, unsigned bucket,
                              const char *what, enum tally_period p, int64_t t, size_t ndays,
                              char *first, size_t *first_len)
{
    char key[TALLY_KEY_MAX];
    size_t n;

    tally_buf_add_bulk_i64(b, (int64_t)ndays + 2);
    *first_len = reports_kept_key(first, TALLY_KEY_MAX, prefix, bucket, what, p, t);
    tally_buf_add_bulk(b, first, *first_len);
    n = tally_key_make(key, sizeof(key), prefix, bucket, 'k', "epoch", 5);
    tally_buf_add_bulk(b, key, n);
}

/* A reply of kept.lua: {life, answer}; LIFE_MS becomes the least life seen. NULL when it is
 * not one. */
static const redisReply *reports_kept_answer(const redisReply *reply, int64_t *life_ms)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    if (reply->element[0]->integer < *life_ms)
        *life_ms = reply->element[0]->integer;
    return reply->element[1];
}

static int64_t reports_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* ---- Series ---- */

static int on_point(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct tally_series *s = f->arg;

    s->values[i] = reports_int(reply);
    return 0;
}

static void on_series_done(struct tally_fanout *f, int status)
{
    struct tally_series *s = f->arg;

    s->done(status, s, s->arg);
}

int tally_series_start(struct tally_series *s, const struct tally_series_params *p,
                       const char *id, size_t len, struct tally_redis *r, const char *prefix,
                       tally_series_done_cb *done, void *arg)
{
    bool hour = p->interval == TALLY_INTERVAL_HOUR;
    int64_t step = hour ? 3600 : 86400;
    unsigned bucket = tally_key_bucket(id, len);
    int rc;

    memset(s, 0, sizeof(*s));
    s->p = *p;
    s->id = id;
    s->len = (uint16_t)len;
    s->done = done;
    s->arg = arg;
    s->values = calloc(p->n, sizeof(*s->values));
    if (s->values == NULL || (rc = tally_fanout_init(&s->fan, p->n, on_point, on_series_done, s)) < 0)
        return TALLY_ENOMEM;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        char key[TALLY_KEY_MAX];
        size_t klen = reports_bucket_key(key, sizeof(key), prefix, bucket, hour ? 'h' : 'd',
                                         p->metric, p->from + (int64_t)i * step, hour);
        const char *argv[3] = {hour ? "HGET" : "ZSCORE", key, id};
        size_t argvlen[3] = {strlen(argv[0]), klen, len};

        rc = tally_fanout_command(&s->fan, r, 3, argv, argvlen);
    }
    return tally_fanout_end(&s->fan);
}

void tally_series_release(struct tally_series *s)
{
    free(s->values);
    s->values = NULL;
}

void tally_series_render(struct tally_buf *out, const struct tally_series *s)
{
    int64_t step = s->p.interval == TALLY_INTERVAL_HOUR ? 3600 : 86400;
    char t[TALLY_TIME_LEN + 1];

    tally_buf_adds(out, "{\"article\":");
    tally_buf_add_json_str(out, s->id, s->len);
    tally_buf_adds(out, ",\"metric\":\"");
    tally_buf_adds(out, tally_metric_name(s->p.metric));
    tally_buf_adds(out, s->p.interval == TALLY_INTERVAL_HOUR ? "\",\"interval\":\"hour\""
                                                             : "\",\"interval\":\"day\"");
    tally_buf_adds(out, ",\"points\":[");
    for (size_t i = 0; i < s->p.n; i++) {
        tally_time_format(s->p.from + (int64_t)i * step, t);
        tally_buf_adds(out, i > 0 ? ",{\"t\":\"" : "{\"t\":\"");
        tally_buf_adds(out, t);
        tally_buf_adds(out, "\",\"value\":");
        tally_buf_add_i64(out, s->values[i]);
        tally_buf_adds(out, "}");
    }
    tally_buf_adds(out, "]}");
}

/* ---- Top ---- */

int tally_top_add(struct tally_top *t, const char *id, size_t len, int64_t count)
{
    if (t->n == t->cap) {
        size_t cap = t->cap != 0 ? t->cap * 2 : 256;
        struct tally_top_entry *e = realloc(t->entries, cap * sizeof(*e));

        if (e == NULL)
            return TALLY_ENOMEM;
        t->entries = e;
        t->cap = cap;
    }
    /* Offsets now, pointers once the arena stops moving (tally_top_finish). */
    t->entries[t->n++] = (struct tally_top_entry){
        .id = (char *)(uintptr_t)t->arena.len, .len = (uint16_t)len, .count = count};
    tally_buf_add(&t->arena, id, len);
    return t->arena.oom ? TALLY_ENOMEM : 0;
}

static int top_order(const void *a, const void *b)
{
    const struct tally_top_entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c;

    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    c = memcmp(x->id, y->id, n);
    return c != 0 ? c : (int)x->len - (int)y->len;
}

void tally_top_finish(struct tally_top *t)
{
    size_t kept = 0;

    for (size_t i = 0; i < t->n; i++)
        t->entries[i].id = t->arena.data + (uintptr_t)t->entries[i].id;
    if (t->n > 1)
        qsort(t->entries, t->n, sizeof(*t->entries), top_order);
    for (size_t i = 0; i < t->n && kept < t->p.limit; i++) {
        bool repeat = false;

        /* Each article lives in one bucket; a repeat would only come from a misbehaving
         * server, but must not be listed twice. */
        for (size_t j = 0; j < kept && !repeat; j++)
            repeat = t->entries[j].len == t->entries[i].len &&
                     memcmp(t->entries[j].id, t->entries[i].id, t->entries[i].len) == 0;
        if (!repeat)
            t->entries[kept++] = t->entries[i];
    }
    t->n = kept;
}

static int on_bucket_top(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct tally_top *t = f->arg;
    int rc = 0;

    (void)i;
    if (tally_period_days(t->p.period) > 1 &&
        (reply = reports_kept_answer(reply, &t->life_ms)) == NULL)
        return TALLY_EREDIS;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
        return TALLY_EREDIS;
    for (size_t k = 0; k < reply->elements && rc == 0; k += 2) {
        const redisReply *id = reply->element[k], *score = reply->element[k + 1];

        if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > TALLY_ARTICLE_MAX)
            return TALLY_EREDIS;
        rc = tally_top_add(t, id->str, id->len, reports_int(score));
    }
    return rc;
}

static void on_top_done(struct tally_fanout *f, int status)
{
    struct tally_top *t = f->arg;

    if (status == 0)
        tally_top_finish(t);
    t->done(status, t, t->arg);
}

/* One bucket's call: top.lua with its sorted set of the day or of all time and the limit, or
 * kept.lua with its days' sorted sets of the week or month and TALLY_TOP_MAX. */
static int top_send_bucket(struct tally_top *t, struct tally_redis *r, const char *prefix,
                           unsigned bucket, int64_t now, struct tally_buf *b)
{
    int days = tally_period_days(t->p.period);
    const char *metric = tally_metric_name(t->p.metric);
    size_t nkeys = days > 0 ? (size_t)days : 1, first_len = 0;
    char key[TALLY_KEY_MAX], first[TALLY_KEY_MAX];
    bool kept = days > 1;

    tally_buf_reset(b);
    if (kept) {
        reports_kept_head(b, prefix, bucket, metric, t->p.period, now, nkeys, first, &first_len);
    } else {
        tally_buf_add_bulk_i64(b, 1);
        first_len = days == 0
                        ? tally_key_make(first, sizeof(first), prefix, bucket, 't', metric,
                                         strlen(metric))
                        : reports_bucket_key(first, sizeof(first), prefix, bucket, 'd',
                                             t->p.metric, now, false);
        tally_buf_add_bulk(b, first, first_len);
    }
    for (int d = 0; kept && d < days; d++) {
        size_t n = reports_bucket_key(key, sizeof(key), prefix, bucket, 'd', t->p.metric,
                                      now - 86400 * (int64_t)d, false);

        tally_buf_add_bulk(b, key, n);
    }
    if (kept) {
        tally_buf_add_bulk(b, "top", 3);
        tally_buf_add_bulk_i64(b, TALLY_KEPT_MS);
    }
    tally_buf_add_bulk_i64(b, kept ? TALLY_TOP_MAX : t->p.limit);
    if (b->oom)
        return tally_fanout_fail(&t->fan, TALLY_ENOMEM);
    return tally_fanout_eval(&t->fan, r, first, first_len,
                             kept ? TALLY_SCRIPT_KEPT : TALLY_SCRIPT_TOP, b->data, b->len,
                             kept ? nkeys + 6 : 3);
}

int tally_top_start(struct tally_top *t, const struct tally_top_params *p,
                    struct tally_redis *r, const char *prefix, time_t now,
                    tally_top_done_cb *done, void *arg)
{
    struct tally_buf b;
    int rc;

    memset(t, 0, sizeof(*t));
    t->p = *p;
    t->life_ms = TALLY_KEPT_MS;
    t->done = done;
    t->arg = arg;
    tally_buf_init(&t->arena);
    if ((rc = tally_fanout_init(&t->fan, TALLY_BUCKETS, on_bucket_top, on_top_done, t)) < 0)
        return rc;
    tally_buf_init(&b);
    for (unsigned k = 0; k < TALLY_BUCKETS && rc == 0; k++)
        rc = top_send_bucket(t, r, prefix, k, (int64_t)now, &b);
    tally_buf_release(&b);
    return tally_fanout_end(&t->fan);
}

void tally_top_release(struct tally_top *t)
{
    free(t->entries);
    tally_buf_release(&t->arena);
    t->entries = NULL;
    t->n = t->cap = 0;
}

void tally_top_render(struct tally_buf *out, const struct tally_top *t)
{
    tally_buf_adds(out, "{\"metric\":\"");
    tally_buf_adds(out, tally_metric_name(t->p.metric));
    tally_buf_adds(out, "\",\"period\":\"");
    tally_buf_adds(out, tally_period_name(t->p.period));
    tally_buf_adds(out, "\",\"articles\":[");
    for (size_t i = 0; i < t->n; i++) {
        tally_buf_adds(out, i > 0 ? ",{\"article\":" : "{\"article\":");
        tally_buf_add_json_str(out, t->entries[i].id, t->entries[i].len);
        tally_buf_adds(out, ",\"count\":");
        tally_buf_add_i64(out, t->entries[i].count);
        tally_buf_adds(out, "}");
    }
    tally_buf_adds(out, "]}");
}

/* ---- Site totals ---- */

static int on_bucket_totals(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct tally_totals *t = f->arg;
    bool kept = tally_period_days(t->period) > 1;
    size_t step = kept ? 3 : 2; /* kept: field, high, low (kept.lua) */

    (void)i;
    if (kept && (reply = reports_kept_answer(reply, &t->life_ms)) == NULL)
        return TALLY_EREDIS;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % step != 0)
        return TALLY_EREDIS;
    for (size_t k = 0; k < reply->elements; k += step) {
        const redisReply *name = reply->element[k];
        int64_t n = reports_int(reply->element[k + 1]);
        int m;

        if (name->type != REDIS_REPLY_STRING)
            return TALLY_EREDIS;
        if (kept) /* high * 10^9 + low, unsigned: a sum past 2^63 wraps, never traps */
            n = (int64_t)((uint64_t)n * 1000000000u +
                          (uint64_t)reports_int(reply->element[k + 2]));
        m = tally_metric_from(name->str, name->len);
        if (m >= 0 && tally_metrics[m].site)
            *(int64_t *)(void *)((char *)&t->sums + tally_metrics[m].site_offset) += n;
    }
    return 0;
}

static void on_totals_done(struct tally_fanout *f, int status)
{
    struct tally_totals *t = f->arg;

    t->done(status, t, t->arg);
}

/* One bucket's call of kept.lua: its share of the site totals of each day of the week or
 * month, summed. */
static int totals_send_kept(struct tally_totals *t, struct tally_redis *r, const char *prefix,
                            unsigned bucket, time_t now, struct tally_buf *b)
{
    int days = tally_period_days(t->period);
    char first[TALLY_KEY_MAX], key[TALLY_KEY_MAX], day[9];
    size_t first_len;

    tally_buf_reset(b);
    reports_kept_head(b, prefix, bucket, "site", t->period, (int64_t)now, (size_t)days, first,
                      &first_len);
    for (int d = 0; d < days; d++) {
        tally_visitor_day(now - 86400 * (time_t)d, day);
        tally_buf_add_bulk(b, key, tally_key_make(key, sizeof(key), prefix, bucket, 's', day, 8));
    }
    tally_buf_add_bulk(b, "site", 4);
    tally_buf_add_bulk_i64(b, TALLY_KEPT_MS);
    if (b->oom)
        return tally_fanout_fail(&t->fan, TALLY_ENOMEM);
    return tally_fanout_eval(&t->fan, r, first, first_len, TALLY_SCRIPT_KEPT, b->data, b->len,
                             (size_t)days + 5);
}

int tally_totals_start(struct tally_totals *t, enum tally_period period, struct tally_redis *r,
                       const char *prefix, time_t now, tally_totals_done_cb *done, void *arg)
{
    bool kept = tally_period_days(period) > 1;
    struct tally_buf b;
    int rc;

    memset(t, 0, sizeof(*t));
    t->period = period;
    t->life_ms = TALLY_KEPT_MS;
    t->done = done;
    t->arg = arg;
    rc = tally_fanout_init(&t->fan, TALLY_BUCKETS, on_bucket_totals, on_totals_done, t);
    tally_buf_init(&b);
    for (unsigned k = 0; k < TALLY_BUCKETS && rc == 0; k++) {
        bool today = period == TALLY_PERIOD_DAY;
        char key[TALLY_KEY_MAX], day[9];
        const char *argv[2] = {"HGETALL", key};
        size_t argvlen[2] = {7, 0};

        if (kept) {
            rc = totals_send_kept(t, r, prefix, k, now, &b);
            continue;
        }
        tally_visitor_day(now, day);
        argvlen[1] = tally_key_make(key, sizeof(key), prefix, k, 's', today ? day : "all",
                                    today ? 8 : 3);
        rc = tally_fanout_command(&t->fan, r, 2, argv, argvlen);
    }
    tally_buf_release(&b);
    return rc == TALLY_ENOMEM && t->fan.slots == NULL ? rc : tally_fanout_end(&t->fan);
}

void tally_totals_render(struct tally_buf *out, const struct tally_totals *t)
{
    tally_buf_adds(out, "{\"period\":\"");
    tally_buf_adds(out, tally_period_name(t->period));
    tally_buf_adds(out, "\"");
    for (int m = 0; m < TALLY_METRICS; m++) {
        if (!tally_metrics[m].site)
            continue;
        tally_buf_adds(out, ",\"");
        tally_buf_adds(out, tally_metrics[m].member);
        tally_buf_adds(out, "\":");
        tally_buf_add_i64(out, *(const int64_t *)(const void *)((const char *)&t->sums +
                                                               tally_metrics[m].site_offset));
    }
    tally_buf_adds(out, "}");
}

/* ---- Forgetting ---- */

static int on_forgot(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    (void)f;
    (void)i;
    return reply->type == REDIS_REPLY_INTEGER ? 0 : TALLY_EREDIS;
}

static void on_forget_done(struct tally_fanout *f, int status)
{
    struct tally_forget *g = f->arg;

    g->done(status, g, g->arg);
}

/* The call that forgets: it folds what the steps left, then removes the article's keys. */
static int forget_last(struct tally_forget *f)
{
    char key[TALLY_KEY_MAX], tag[2], model[TALLY_MODEL_ARG_MAX + 1];
    size_t klen = tally_key_article(key, sizeof(key), f->prefix, 'a', f->id, f->len);
    struct tally_buf b;
    int rc;

    if ((rc = tally_fanout_init(&f->fan, 1, on_forgot, on_forget_done, f)) < 0)
        return rc;
    f->fan.writes = true; /* it deletes: beside the writes, not behind slow reads */
    tally_key_tag(tally_key_bucket(f->id, f->len), tag);
    tally_buf_init(&b);
    tally_buf_add_bulk(&b, "1", 1);
    tally_buf_add_bulk(&b, key, klen);
    tally_buf_add_bulk(&b, f->prefix, strlen(f->prefix));
    tally_buf_add_bulk(&b, tag, 2);
    tally_buf_add_bulk(&b, f->id, f->len);
    tally_buf_add_bulk_i64(&b, f->window);
    tally_buf_add_bulk_i64(&b, (int64_t)f->now);
    tally_buf_add_bulk(&b, model, tally_model_arg(model));
    if (f->registry != NULL)
        tally_buf_add_bulk(&b, f->registry, strlen(f->registry));
    if (b.oom) {
        tally_buf_release(&b);
        (void)tally_fanout_end(&f->fan); /* nothing sent: only releases it */
        return TALLY_ENOMEM;
    }
    /* A failed send is what tally_fanout_end() returns. */
    (void)tally_fanout_eval(&f->fan, f->r, key, klen, TALLY_SCRIPT_FORGET, b.data, b.len,
                            f->registry != NULL ? 9 : 8);
    tally_buf_release(&b);
    return tally_fanout_end(&f->fan);
}

static int forget_step(struct tally_forget *f);

bool tally_forget_step_due(long long left, long long chunks, unsigned steps)
{
    return (left > TALLY_FORGET_LEFT_ENTRIES || chunks > 0) && steps < TALLY_FORGET_STEPS_MAX;
}

/* A step's answer: {entries folded, chunks counted, buckets, refused, refusal, entries left,
 * chunks left} (src/scripts/drain.lua). */
static int on_drained(struct tally_fanout *fan, size_t i, const redisReply *reply)
{
    struct tally_forget *f = fan->arg;

    (void)i;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7 ||
        reply->element[5]->type != REDIS_REPLY_INTEGER ||
        reply->element[6]->type != REDIS_REPLY_INTEGER)
        return TALLY_EREDIS;
    f->left = reply->element[5]->integer;
    f->chunks = reply->element[6]->integer;
    return 0;
}

static void on_drain_done(struct tally_fanout *fan, int status)
{
    struct tally_forget *f = fan->arg;
    int rc;

    f->steps++;
    /* A step that failed (Redis away, slow or refusing) fails the DELETE, which forgot
     * nothing yet: the client sends it again. What the steps folded stays folded, once. */
    if (status < 0)
        rc = status;
    else if (tally_forget_step_due(f->left, f->chunks, f->steps))
        rc = forget_step(f);
    else
        rc = forget_last(f);
    if (rc < 0)
        f->done(rc, f, f->arg);
}

/* One bounded step of the folds before the DELETE (src/scripts/drain.lua). */
static int forget_step(struct tally_forget *f)
{
    char model[TALLY_MODEL_ARG_MAX + 1];
    struct tally_buf b;
    int rc;

    if ((rc = tally_fanout_init(&f->fan, 1, on_drained, on_drain_done, f)) < 0)
        return rc;
    f->fan.writes = true; /* it folds: beside the writes, as the folds go */
    tally_buf_init(&b);
    tally_buf_add_bulk(&b, "1", 1);
    tally_buf_add_bulk(&b, f->registry, strlen(f->registry));
    tally_buf_add_bulk(&b, f->prefix, strlen(f->prefix));
    tally_buf_add_bulk(&b, model, tally_model_arg(model));
    tally_buf_add_bulk_i64(&b, TALLY_FORGET_STEP_ENTRIES);
    tally_buf_add_bulk_i64(&b, TALLY_FOLD_STEP_RECORDS);
    tally_buf_add_bulk_i64(&b, TALLY_FORGET_STEP_BYTES);
    if (b.oom) {
        tally_buf_release(&b);
        (void)tally_fanout_end(&f->fan);
        return TALLY_ENOMEM;
    }
    (void)tally_fanout_eval(&f->fan, f->r, f->registry, strlen(f->registry), TALLY_SCRIPT_DRAIN,
                            b.data, b.len, 7);
    tally_buf_release(&b);
    return tally_fanout_end(&f->fan);
}

int tally_forget_start(struct tally_forget *f, const char *id, size_t len, uint32_t window,
                       time_t now, struct tally_redis *r, const char *prefix,
                       const char *registry, tally_forget_done_cb *done, void *arg)
{
    f->done = done;
    f->arg = arg;
    f->steps = 0;
    f->id = id;
    f->len = len;
    f->window = window;
    f->now = now;
    f->r = r;
    f->prefix = prefix;
    f->registry = registry;
    f->left = f->chunks = 0;
    /* Without journals (a cluster, --fold-interval 0) there is nothing to fold first. */
    return registry != NULL ? forget_step(f) : forget_last(f);
}
