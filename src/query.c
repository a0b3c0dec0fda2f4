/* query.c -- stats reads: parse which articles are asked for, read their totals (one hash
 * per article, visitor estimate included) from Redis in one pipeline, render the contract's
 * JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/cache.h"
#include "tally/error.h"
#include "tally/fanout.h"
#include "tally/keys.h"
#include "tally/query.h"
#include "tally/store.h"
#include "tally/uri.h"

/* ---- Parsing ---- */

/* Room in Q for N articles of TEXT bytes of decoded ids (NULs included), in one block. */
static int query_room(struct tally_query *q, size_t n, size_t text, struct tally_error *err)
{
    size_t size = n * (sizeof(*q->id) + sizeof(*q->stats) + sizeof(*q->loads) +
                       sizeof(*q->len) + sizeof(*q->sent)) + text;
    char *p;

    q->n = q->text_len = 0;
    if (size > q->mem_size) {
        free(q->mem);
        q->mem_size = 0;
        if ((q->mem = malloc(size)) == NULL) {
            err->code = "unavailable";
            snprintf(err->message, sizeof(err->message), "out of memory");
            return TALLY_ENOMEM;
        }
        q->mem_size = size;
    }
    /* Widest alignment first. */
    p = q->mem;
    q->stats = (struct tally_stats *)(void *)p;
    p += n * sizeof(*q->stats);
    q->id = (const char **)(void *)p;
    p += n * sizeof(*q->id);
    q->loads = (struct cache_entry **)(void *)p;
    p += n * sizeof(*q->loads);
    q->len = (uint16_t *)(void *)p;
    p += n * sizeof(*q->len);
    q->sent = (uint8_t *)p;
    p += n * sizeof(*q->sent);
    q->text = p;
    q->cap = n;
    q->text_cap = text;
    return 0;
}

void tally_query_release(struct tally_query *q)
{
    free(q->mem);
    q->mem = NULL;
    q->mem_size = 0;
    q->n = q->cap = 0;
}

static int query_add(struct tally_query *q, const char *raw, size_t len, unsigned flags,
                     struct tally_error *err)
{
    char *dst = q->text + q->text_len;
    long n;

    if (q->n == q->cap) {
        err->code = "too_many_articles";
        snprintf(err->message, sizeof(err->message), "article: at most %d per request",
                 TALLY_BATCH_MAX);
        return TALLY_EINVAL;
    }
    n = len <= TALLY_ARTICLE_MAX * 3 && q->text_cap - q->text_len > 0
            ? tally_uri_decode(raw, len, dst,
                               q->text_cap - q->text_len - 1 < TALLY_ARTICLE_MAX
                                   ? q->text_cap - q->text_len - 1
                                   : TALLY_ARTICLE_MAX,
                               flags)
            : -1;
    if (n < 0 || !tally_article_valid(dst, (size_t)n)) {
        err->code = "invalid_article";
        snprintf(err->message, sizeof(err->message),
                 "article: 1-256 bytes of UTF-8, no whitespace or control characters");
        return TALLY_EINVAL;
    }
    dst[n] = '\0';
    q->id[q->n] = dst;
    q->len[q->n++] = (uint16_t)n;
    q->text_len += (size_t)n + 1;
    return 0;
}

int tally_query_parse_articles(struct tally_query *q, const char *query, size_t len,
                               struct tally_error *err)
{
    struct tally_query_iter it;
    const char *k, *v;
    size_t klen, vlen, n = 0, text = 0;
    int rc;

    /* Room for the first TALLY_BATCH_MAX articles (one more is refused as too many); an id
     * decodes to at most its encoded length, and at most TALLY_ARTICLE_MAX bytes. */
    tally_query_iter_init(&it, query, len);
    while (n < TALLY_BATCH_MAX && tally_query_next(&it, &k, &klen, &v, &vlen))
        if (tally_query_key_is(k, klen, "article")) {
            n++;
            text += (vlen < TALLY_ARTICLE_MAX ? vlen : TALLY_ARTICLE_MAX) + 1;
        }
    if ((rc = query_room(q, n > 0 ? n : 1, text > 0 ? text : 1, err)) < 0)
        return rc;
    tally_query_iter_init(&it, query, len);
    while (tally_query_next(&it, &k, &klen, &v, &vlen)) {
        if (!tally_query_key_is(k, klen, "article"))
            continue;
        if ((rc = query_add(q, v, vlen, TALLY_URI_PLUS_SPACE, err)) < 0)
            return rc;
    }
    if (q->n == 0) {
        err->code = "missing_article";
        snprintf(err->message, sizeof(err->message), "article: give 1-%d article parameters",
                 TALLY_BATCH_MAX);
        return TALLY_EINVAL;
    }
    return 0;
}

int tally_query_of_events(struct tally_query *q, const struct tally_event *ev, size_t n,
                          struct tally_error *err)
{
    size_t text = 0;
    int rc;

    for (size_t i = 0; i < n; i++)
        text += ev[i].article_len + 1u;
    if ((rc = query_room(q, n > 0 ? n : 1, text > 0 ? text : 1, err)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct tally_event *e = &ev[i];
        char *dst = q->text + q->text_len;
        bool seen = false;

        for (size_t j = 0; j < q->n && !seen; j++)
            seen = q->len[j] == e->article_len && memcmp(q->id[j], e->article, e->article_len) == 0;
        if (seen)
            continue;
        memcpy(dst, e->article, e->article_len);
        dst[e->article_len] = '\0';
        q->id[q->n] = dst;
        q->len[q->n++] = e->article_len;
        q->text_len += e->article_len + 1u;
    }
    return 0;
}

int tally_query_parse_path(struct tally_query *q, const char *raw, size_t len,
                           struct tally_error *err)
{
    int rc = query_room(q, 1, (len < TALLY_ARTICLE_MAX ? len : TALLY_ARTICLE_MAX) + 1, err);

    return rc < 0 ? rc : query_add(q, raw, len, 0, err);
}

/* ---- Reading Redis ---- */

int tally_query_read_totals(const redisReply *r, struct tally_stats *s)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0)
        return TALLY_EREDIS;
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        int64_t n;
        int m;

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return TALLY_EREDIS;
        n = strtoll(v->str, NULL, 10);
        if (strncmp(f->str, "share:", 6) == 0) {
            s->by_network[tally_network_from(f->str + 6, f->len - 6)] += n;
        } else if ((m = tally_metric_from(f->str, f->len)) >= 0) {
            *tally_stats_metric(s, (enum tally_metric)m) = n;
        } else {
            for (int p = 0; p < TALLY_PROPERTIES; p++)
                if (strcmp(f->str, tally_properties[p].name) == 0)
                    *(int64_t *)(void *)((char *)s + tally_properties[p].stats_offset) = n;
        }
    }
    return 0;
}

/* Done when every command answered and every joined load woke us. */
static void query_settle(struct tally_query *q)
{
    if (q->fan_done && q->waits == 0)
        q->done(q->status, q, q->arg);
}

static int on_totals(struct tally_fanout *f, size_t k, const redisReply *reply)
{
    struct tally_query *q = f->arg;
    size_t i = q->sent[k];
    int rc = tally_query_read_totals(reply, &q->stats[i]);

    if (q->loads[i] != NULL) {
        tally_cache_fill(q->cache, q->loads[i], &q->stats[i], rc);
        q->loads[i] = NULL;
    }
    return rc;
}

static void on_totals_done(struct tally_fanout *f, int status)
{
    struct tally_query *q = f->arg;

    /* Loads whose reply never came: their waiters must not wait for ever. */
    for (size_t i = 0; i < q->n; i++)
        if (q->loads[i] != NULL) {
            tally_cache_fill(q->cache, q->loads[i], NULL, status < 0 ? status : TALLY_EUNAVAIL);
            q->loads[i] = NULL;
        }
    if (status < 0 && q->status == 0)
        q->status = status;
    q->fan_done = true;
    query_settle(q);
}

static void on_woken(void *arg, size_t i, const struct tally_stats *s, int status)
{
    struct tally_query *q = arg;

    if (status == 0)
        q->stats[i] = *s;
    else if (q->status == 0)
        q->status = status;
    q->waits--;
    query_settle(q);
}

/* Article I from the cache (hit or joined), or from Redis: 1 when a command was sent. */
static int query_one(struct tally_query *q, struct tally_redis *r, const char *prefix, size_t i)
{
    char key[TALLY_KEY_MAX];
    size_t klen = tally_key_article(key, sizeof(key), prefix, 'a', q->id[i], q->len[i]);
    const char *argv[2] = {"HGETALL", key};
    size_t argvlen[2] = {7, klen};
    struct cache_entry *e = NULL;
    int rc;

    if (q->cache != NULL) {
        switch (tally_cache_lookup(q->cache, q->id[i], q->len[i], &q->stats[i], on_woken, q, i,
                                   &e)) {
        case TALLY_CACHE_HIT:
            return 0;
        case TALLY_CACHE_JOINED:
            q->waits++;
            return 0;
        default:
            break;
        }
    }
    q->sent[q->fan.sent] = (uint8_t)i;
    q->loads[i] = e;
    rc = tally_fanout_command(&q->fan, r, 2, argv, argvlen);
    if (rc < 0 && e != NULL) {
        tally_cache_fill(q->cache, e, NULL, rc);
        q->loads[i] = NULL;
    }
    return rc < 0 ? rc : 1;
}

int tally_query_start(struct tally_query *q, struct tally_redis *r, struct tally_cache *cache,
                      const char *prefix, tally_query_done_cb *done, void *arg)
{
    int rc = tally_fanout_init(&q->fan, q->n, on_totals, on_totals_done, q);
    size_t sent = 0;

    if (rc < 0)
        return rc;
    memset(q->stats, 0, sizeof(q->stats[0]) * q->n);
    memset(q->loads, 0, sizeof(q->loads[0]) * q->n);
    q->cache = cache;
    q->done = done;
    q->arg = arg;
    q->waits = 0;
    q->status = 0;
    q->fan_done = false;
    for (size_t i = 0; i < q->n && rc >= 0; i++)
        if ((rc = query_one(q, r, prefix, i)) > 0)
            sent++;
    if (sent > 0)
        return tally_fanout_end(&q->fan); /* DONE after the replies, with any send error */
    tally_fanout_end(&q->fan);            /* nothing sent: only releases it */
    if (rc < 0 && q->waits == 0)
        return rc;
    /* Every article was cached, or is being loaded by another read that will wake us. */
    if (rc < 0)
        q->status = rc;
    q->fan_done = true;
    query_settle(q);
    return 0;
}

/* ---- Rendering ---- */

static void query_field(struct tally_buf *out, const char *name, int64_t v)
{
    tally_buf_adds(out, name);
    tally_buf_add_i64(out, v);
}

static void query_networks(struct tally_buf *out, const struct tally_stats *s)
{
    bool first = true;

    tally_buf_adds(out, ",\"shares_by_network\":{");
    for (int k = 0; k < TALLY_NETWORKS; k++) {
        if (s->by_network[k] == 0)
            continue;
        tally_buf_adds(out, first ? "\"" : ",\"");
        tally_buf_adds(out, tally_network_name((enum tally_network)k));
        query_field(out, "\":", s->by_network[k]);
        first = false;
    }
    tally_buf_adds(out, "}");
}

static void query_member(struct tally_buf *out, const char *member, int64_t v)
{
    tally_buf_adds(out, ",\"");
    tally_buf_adds(out, member);
    query_field(out, "\":", v);
}

void tally_query_render_one(struct tally_buf *out, const char *id, size_t len,
                            const struct tally_stats *s)
{
    tally_buf_adds(out, "{\"article\":");
    tally_buf_add_json_str(out, id, len);
    for (int m = 0; m < TALLY_METRICS; m++) {
        query_member(out, tally_metrics[m].member, tally_stats_get(s, (enum tally_metric)m));
        if (m == TALLY_METRIC_SHARES)
            query_networks(out, s);
    }
    for (int p = 0; p < TALLY_PROPERTIES; p++)
        query_member(out, tally_properties[p].member,
                     *(const int64_t *)(const void *)((const char *)s +
                                                      tally_properties[p].stats_offset));
    tally_buf_adds(out, "}");
}

void tally_query_render_list(struct tally_buf *out, const struct tally_query *q)
{
    tally_buf_adds(out, "\"articles\":[");
    for (size_t i = 0; i < q->n; i++) {
        if (i > 0)
            tally_buf_adds(out, ",");
        tally_query_render_one(out, q->id[i], q->len[i], &q->stats[i]);
    }
    tally_buf_adds(out, "]");
}

void tally_query_render_many(struct tally_buf *out, const struct tally_query *q)
{
    tally_buf_adds(out, "{");
    tally_query_render_list(out, q);
    tally_buf_adds(out, "}");
}
