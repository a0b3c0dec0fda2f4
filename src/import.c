/* import.c -- an import's NDJSON body, line by line, into the import script's arguments (see
 * tally/import.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "tally/admit.h"
#include "tally/error.h"
#include "tally/import.h"
#include "tally/keys.h"

#define IMPORT_COUNT_TEXT "an integer from 0 to 1000000000000"

/* Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil). */
static int64_t import_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool import_leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int64_t tally_import_day(const char *s, size_t len)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned v[3] = {0, 0, 0}, width[3] = {4, 2, 2};
    size_t pos = 0;

    if (len != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    for (int f = 0; f < 3; f++, pos++) {
        for (unsigned i = 0; i < width[f]; i++, pos++) {
            if (s[pos] < '0' || s[pos] > '9')
                return -1;
            v[f] = v[f] * 10 + (unsigned)(s[pos] - '0');
        }
    }
    if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1)
        return -1;
    if (v[2] > mdays[v[1] - 1] + (v[1] == 2 && import_leap(v[0])))
        return -1;
    return import_days_from_civil(v[0], v[1], v[2]);
}

bool tally_import_type_ok(const char *ctype)
{
    static const char *const ok[] = {"application/x-ndjson", "text/plain"};

    return tally_admit_media_type(ctype, ok, sizeof(ok) / sizeof(ok[0]));
}

static int import_fail(struct tally_error *err, unsigned line, const char *what)
{
    err->code = "invalid_line";
    snprintf(err->message, sizeof(err->message), "line %u: %s", line, what);
    return TALLY_EINVAL;
}

/* V (a member, or NULL when absent) as a count into *OUT (0 when absent). False when V is
 * there and not a count. */
static bool import_count(const cJSON *v, uint64_t *out)
{
    double d;

    *out = 0;
    if (v == NULL)
        return true;
    if (!cJSON_IsNumber(v))
        return false;
    d = v->valuedouble;
    if (!(d >= 0 && d <= (double)TALLY_IMPORT_COUNT_MAX) || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

/* A line's numbers, read. */
struct import_line {
    const char *id;
    size_t id_len;
    int64_t day; /* -1 without a date */
    uint64_t views, comments, shares;
    uint64_t by_network[TALLY_NETWORKS];
};

static int import_read_shares(const cJSON *v, struct import_line *l, unsigned line,
                              struct tally_error *err)
{
    const cJSON *m;

    if (v == NULL)
        return 0;
    if (!cJSON_IsObject(v))
        return import_fail(err, line, "shares: an object of network: count");
    cJSON_ArrayForEach(m, v)
    {
        uint64_t n;
        enum tally_network net = tally_network_from(m->string, strlen(m->string));

        if (!import_count(m, &n))
            return import_fail(err, line, "shares: each count " IMPORT_COUNT_TEXT);
        /* Repeated or unknown names add up (unknown ones into "other"): the line's shares
         * are bounded as one count is, so no sum a script adds up passes 2^53. */
        if (n > TALLY_IMPORT_COUNT_MAX - l->shares)
            return import_fail(err, line,
                               "shares: the counts add up to at most 1000000000000");
        l->by_network[net] += n;
        l->shares += n;
    }
    return 0;
}

static int import_read_line(const cJSON *o, struct import_line *l, unsigned line, int64_t today,
                            struct tally_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "article");
    const cJSON *date = cJSON_GetObjectItemCaseSensitive(o, "date");

    memset(l, 0, sizeof(*l));
    l->day = -1;
    if (!cJSON_IsString(a))
        return import_fail(err, line, "article: required, a string");
    l->id = a->valuestring;
    l->id_len = strlen(a->valuestring);
    if (!tally_article_valid(l->id, l->id_len))
        return import_fail(err, line,
                           "article: 1-256 bytes of UTF-8, no whitespace or "
                           "control characters");
    if (!import_count(cJSON_GetObjectItemCaseSensitive(o, "views"), &l->views))
        return import_fail(err, line, "views: " IMPORT_COUNT_TEXT);
    if (!import_count(cJSON_GetObjectItemCaseSensitive(o, "comments"), &l->comments))
        return import_fail(err, line, "comments: " IMPORT_COUNT_TEXT);
    if (import_read_shares(cJSON_GetObjectItemCaseSensitive(o, "shares"), l, line, err) < 0)
        return TALLY_EINVAL;
    if (date == NULL)
        return 0;
    if (!cJSON_IsString(date) ||
        (l->day = tally_import_day(date->valuestring, strlen(date->valuestring))) < 0)
        return import_fail(err, line, "date: a day as YYYY-MM-DD, from 1970-01-01");
    if (l->day > today)
        return import_fail(err, line, "date: not after today (UTC)");
    return 0;
}

static void import_emit(struct tally_import *imp, const struct import_line *l)
{
    struct tally_buf *b = &imp->args;
    char tag[2];
    size_t nets = 0;

    tally_key_tag(tally_key_bucket(l->id, l->id_len), tag);
    tally_buf_add_bulk(b, tag, 2);
    tally_buf_add_bulk(b, l->id, l->id_len);
    if (l->day >= 0)
        tally_buf_add_bulk_i64(b, l->day);
    else
        tally_buf_add_bulk(b, "", 0);
    tally_buf_add_bulk_i64(b, (int64_t)l->views);
    tally_buf_add_bulk_i64(b, (int64_t)l->comments);
    tally_buf_add_bulk_i64(b, (int64_t)l->shares);
    for (int n = 0; n < TALLY_NETWORKS; n++)
        nets += l->by_network[n] > 0;
    tally_buf_add_bulk_i64(b, (int64_t)nets);
    for (int n = 0; n < TALLY_NETWORKS; n++) {
        const char *name = tally_network_name((enum tally_network)n);

        if (l->by_network[n] == 0)
            continue;
        tally_buf_add_bulk(b, name, strlen(name));
        tally_buf_add_bulk_i64(b, (int64_t)l->by_network[n]);
    }
    imp->n_args += 7 + 2 * nets;
    imp->lines++;
    imp->views += l->views;
    imp->shares += l->shares;
    imp->comments += l->comments;
}

/* Is P (N bytes) blank: spaces, tabs, CR? */
static bool import_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* Does P (N bytes) hold the escape \u0000? A backslash escapes the character after it, so
 * an escaped backslash followed by "u0000" (JSON "\\u0000") is not one. */
static bool import_has_nul_escape(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\')
            continue;
        if (n - i >= 6 && memcmp(p + i, "\\u0000", 6) == 0)
            return true;
        i++; /* the escaped character */
    }
    return false;
}

static int import_line(struct tally_import *imp, const char *p, size_t n, unsigned line,
                       int64_t today, struct tally_error *err)
{
    struct import_line l;
    const char *end = NULL;
    cJSON *o;
    int rc;

    /* A NUL, raw or escaped, would cut the text cJSON hands over: refused rather than read
     * short (no article id holds one). */
    if (memchr(p, '\0', n) != NULL || import_has_nul_escape(p, n))
        return import_fail(err, line, "a JSON object without NUL characters");
    o = cJSON_ParseWithLengthOpts(p, n, &end, false);
    if (o == NULL || !import_blank(end, n - (size_t)(end - p)) || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return import_fail(err, line, "one JSON object per line");
    }
    rc = import_read_line(o, &l, line, today, err);
    if (rc == 0 && imp->lines >= TALLY_IMPORT_LINES_MAX)
        rc = import_fail(err, line, "an import holds at most 10000 lines");
    if (rc == 0)
        import_emit(imp, &l);
    cJSON_Delete(o);
    return rc;
}

int tally_import_parse(struct tally_import *imp, const char *body, size_t len, int64_t today,
                       struct tally_error *err)
{
    unsigned line = 0;
    size_t pos = 0;

    memset(imp, 0, sizeof(*imp));
    tally_buf_init(&imp->args);
    while (pos < len) {
        const char *p = body + pos, *nl = memchr(p, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - p) : len - pos;
        int rc;

        line++;
        pos += n + (nl != NULL);
        if (import_blank(p, n))
            continue;
        if ((rc = import_line(imp, p, n, line, today, err)) < 0)
            return rc;
        if (imp->args.oom)
            return TALLY_ENOMEM;
    }
    if (imp->lines == 0) {
        err->code = "invalid_body";
        snprintf(err->message, sizeof(err->message), "body: no lines; one JSON object a line");
        return TALLY_EINVAL;
    }
    return 0;
}

void tally_import_release(struct tally_import *imp)
{
    tally_buf_release(&imp->args);
}

void tally_import_record(struct tally_buf *out, const struct tally_import *imp, time_t at,
                         const char *key, size_t len)
{
    char when[32];
    struct tm tm;

    gmtime_r(&at, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    tally_buf_adds(out, "{\"at\":\"");
    tally_buf_adds(out, when);
    tally_buf_adds(out, "\",\"key\":");
    tally_buf_add_json_str(out, key, len);
    tally_buf_adds(out, ",\"lines\":");
    tally_buf_add_u64(out, imp->lines);
    tally_buf_adds(out, ",\"views\":");
    tally_buf_add_u64(out, imp->views);
    tally_buf_adds(out, ",\"shares\":");
    tally_buf_add_u64(out, imp->shares);
    tally_buf_adds(out, ",\"comments\":");
    tally_buf_add_u64(out, imp->comments);
    tally_buf_adds(out, "}");
}
