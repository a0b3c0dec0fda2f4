/* agg.c -- builds write units: the events of many held requests, coalesced per article, as
 * the arguments of one apply-script call; and reads the script's answer back per request. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/agg.h"
#include "tally/error.h"
#include "tally/hash.h"
#include "tally/keys.h"
#include "tally/known.h"
#include "tally/merge.h"
#include "tally/reports.h"
#include "tally/uri.h"

#define AGG_FENCE_DIGITS 15 /* Unix ms, zero-padded: a fixed width, rewritten in place */
#define AGG_FENCE_DIGITS_STR "15"

#define AGG_NONE UINT32_MAX

/* One article's counters within a segment. */
struct agg_rec {
    const char *id;
    uint16_t len;
    uint8_t bucket;
    uint32_t slot;  /* its place in a->slots, to clear it cheaply */
    uint32_t views; /* views counted without a repeat check */
    uint32_t n_vis, vis_head, vis_tail;
    uint32_t n_deltas, del_head, del_tail;
    uint32_t shares[TALLY_NETWORKS];
    uint32_t sums[TALLY_METRICS];     /* the metrics of rule SUM (model.h) */
    uint32_t props[TALLY_PROPERTIES]; /* the latest of each property; 0: none given */
};

/* A visitor entry of a view (or a comment delta), chained per article in arrival order. */
struct agg_vis {
    uint64_t id;
    uint32_t req;
    uint32_t ev;   /* its event's index in the request */
    uint32_t next;
};

struct agg_delta {
    int16_t d;
    uint32_t next;
};

void tally_agg_init(struct tally_agg *a, const char *prefix, uint32_t window)
{
    memset(a, 0, sizeof(*a));
    a->prefix = prefix;
    a->window = window;
    a->marker_bucket = -1;
    a->model_len = tally_model_arg(a->model);
    tally_buf_init(&a->body);
    tally_buf_init(&a->keys);
    tally_buf_init(&a->head);
    tally_buf_init(&a->args);
    tally_buf_init(&a->text);
}

void tally_agg_release(struct tally_agg *a)
{
    tally_buf_release(&a->body);
    tally_buf_release(&a->keys);
    tally_buf_release(&a->head);
    tally_buf_release(&a->args);
    free(a->rec);
    free(a->vis);
    free(a->deltas);
    free(a->slots);
    free(a->vis_req);
    free(a->vis_ev);
    free(a->seg_end);
    free(a->vscratch);
    free(a->dscratch);
    tally_buf_release(&a->text);
    memset(a, 0, sizeof(*a));
}

/* ---- Segments: articles coalesced in an open-addressing table ---- */

/* The home slot of article ID (LEN bytes) in a table of SLOTS (a power of two). */
static uint32_t agg_home(const char *id, size_t len, size_t slots)
{
    return (uint32_t)(tally_siphash((const uint8_t *)"tally agg table!", id, len) & (slots - 1));
}

static int agg_reserve(struct tally_agg *a, size_t events)
{
    size_t need = a->n_rec + events, slots = a->n_slots, seg = a->n_rec - a->seg_first + events;
    uint32_t *table;

    if (tally_grow(&a->rec, &a->cap_rec, need, sizeof(*a->rec)) < 0 ||
        tally_grow(&a->vis, &a->cap_vis, a->n_vis + events, sizeof(*a->vis)) < 0 ||
        tally_grow(&a->deltas, &a->cap_deltas, a->n_deltas + events, sizeof(*a->deltas)) < 0)
        return TALLY_ENOMEM;
    if (slots >= 2 * seg)
        return 0;
    /* Rehash: the table is only ever half full. Out of memory, the old table stays. */
    while (slots < 2 * seg)
        slots = slots != 0 ? slots * 2 : 1024;
    table = calloc(slots, sizeof(*table));
    if (table == NULL)
        return TALLY_ENOMEM;
    free(a->slots);
    a->slots = table;
    a->n_slots = slots;
    for (size_t i = a->seg_first; i < a->n_rec; i++) {
        uint32_t s = agg_home(a->rec[i].id, a->rec[i].len, slots);

        while (a->slots[s] != 0)
            s = (uint32_t)((s + 1) & (slots - 1));
        a->slots[s] = (uint32_t)i + 1;
        a->rec[i].slot = s;
    }
    return 0;
}

static struct agg_rec *agg_find(struct tally_agg *a, const struct tally_event *ev)
{
    uint32_t s = agg_home(ev->article, ev->article_len, a->n_slots);
    struct agg_rec *r;

    for (; a->slots[s] != 0; s = (uint32_t)((s + 1) & (a->n_slots - 1))) {
        r = &a->rec[a->slots[s] - 1];
        if (r->len == ev->article_len && memcmp(r->id, ev->article, r->len) == 0)
            return r;
    }
    r = &a->rec[a->n_rec];
    memset(r, 0, sizeof(*r));
    r->id = ev->article;
    r->len = ev->article_len;
    r->bucket = (uint8_t)tally_key_bucket(ev->article, ev->article_len);
    r->slot = s;
    r->vis_head = r->del_head = AGG_NONE;
    a->slots[s] = (uint32_t)++a->n_rec;
    return r;
}

static void agg_add_visitor(struct tally_agg *a, struct agg_rec *r, uint64_t id, uint32_t req,
                            uint32_t ev)
{
    uint32_t i = (uint32_t)a->n_vis++;

    a->vis[i] = (struct agg_vis){.id = id, .req = req, .ev = ev, .next = AGG_NONE};
    if (r->vis_head == AGG_NONE)
        r->vis_head = i;
    else
        a->vis[r->vis_tail].next = i;
    r->vis_tail = i;
    r->n_vis++;
}

static void agg_add_delta(struct tally_agg *a, struct agg_rec *r, int16_t d)
{
    struct agg_delta *del = a->deltas;
    uint32_t i = (uint32_t)a->n_deltas++;

    del[i] = (struct agg_delta){.d = d, .next = AGG_NONE};
    if (r->del_head == AGG_NONE)
        r->del_head = i;
    else
        del[r->del_tail].next = i;
    r->del_tail = i;
    r->n_deltas++;
}

/* The metrics of rule SUM and the properties of model.h, for any event EV of record R. */
#define AGG_SUM_OWN
#define AGG_SUM_SUM(t, field)                                                                      \
    if (ev->type == TALLY_EVENT_##t)                                                               \
        r->sums[m] += (uint32_t)ev->field;

static void agg_add_model(struct agg_rec *r, const struct tally_event *ev)
{
    int m = 0;

#define X(id, member, name, site, bit, rule)                                                       \
    AGG_SUM_##rule;                                                                                \
    m++;
    TALLY_METRIC_MAP(X)
#undef X
    m = 0;
#define X(id, member, name, t)                                                                     \
    if (ev->type == TALLY_EVENT_##t && ev->member != 0)                                            \
        r->props[m] = ev->member;                                                                  \
    m++;
    TALLY_PROPERTY_MAP(X)
#undef X
    (void)m;
}

static void agg_add_event(struct tally_agg *a, const struct tally_agg_req *q, size_t i,
                          uint32_t req)
{
    const struct tally_event *ev = &q->ev[i];
    struct agg_rec *r = agg_find(a, ev);

    agg_add_model(r, ev);
    switch (ev->type) {
    case TALLY_EVENT_VIEW:
        if (q->visitor != NULL)
            agg_add_visitor(a, r, q->visitor[i], req, (uint32_t)i);
        /* With a window the script counts checked views itself; a view found a repeat
         * already (SEEN) brings its visitor alone. */
        if ((q->visitor == NULL || a->window == 0) && (q->seen == NULL || !q->seen[i]))
            r->views++;
        break;
    case TALLY_EVENT_SHARE:
        r->shares[ev->network]++;
        break;
    case TALLY_EVENT_COMMENT:
        agg_add_delta(a, r, ev->delta);
        break;
    default: /* counted by the model's sums alone */
        break;
    }
}

/* The segment collected so far is complete: the next one coalesces its articles apart. Its
 * records stay until the next unit (a journal's writer merges them once the reply came). */
static int agg_seg_end(struct tally_agg *a)
{
    for (size_t i = a->seg_first; i < a->n_rec; i++)
        a->slots[a->rec[i].slot] = 0;
    a->seg_first = a->n_rec;
    if (tally_grow(&a->seg_end, &a->cap_segs, a->n_segs + 1, sizeof(*a->seg_end)) < 0)
        return TALLY_ENOMEM;
    a->seg_end[a->n_segs++] = (uint32_t)a->n_rec;
    return 0;
}

static void agg_unit_clear(struct tally_agg *a)
{
    for (size_t i = a->seg_first; i < a->n_rec; i++)
        a->slots[a->rec[i].slot] = 0;
    a->n_rec = a->n_vis = a->n_deltas = a->seg_first = a->n_segs = 0;
}

/* ---- Which buckets' keys may be new ---- */

/* The "fresh" argument: for each bucket the unit touches, its day and hour keys that are not
 * known to have their expiry (any metric's may be new: which ones the script writes depends on
 * what Redis holds, e.g. whether a visitor estimate grows); then the "model" argument. */
static void agg_fresh_arg(struct tally_agg *a)
{
    char list[TALLY_FRESH_MAX];
    size_t n = tally_known_fresh(a->known_day, a->known_hour, a->touched, list);

    tally_buf_add_bulk(&a->head, list, n);
    tally_buf_add_bulk(&a->head, a->model, a->model_len);
    a->nargs += 2;
}

/* ---- Emitting a segment as RESP arguments ---- */

static void agg_arg(struct tally_agg *a, const void *p, size_t n)
{
    tally_buf_add_bulk(&a->args, p, n);
    a->nargs++;
}

static void agg_arg_int(struct tally_agg *a, int64_t v)
{
    tally_buf_add_bulk_i64(&a->args, v);
    a->nargs++;
}

/* ---- Declared keys (Redis Cluster) ----
 *
 * Every key the script will touch, built exactly as the script builds it, so that Redis
 * checks them all -- a slot being migrated is refused before anything runs. Only those: a
 * unit of views names its bucket's views, visitors and site keys, not those of shares or
 * comments (each key costs Redis its parsing and slot check, and one missing on a migrating
 * slot sends the unit elsewhere). */

/* "P{bb}K:" + the N parts (pointer, length) after it: one key of BUCKET. One that does not
 * fit TALLY_KEY_MAX is left out and said in KEY_TOO_LONG. */
static void agg_key(struct tally_agg *a, unsigned bucket, char kind, size_t n, ...)
{
    char key[TALLY_KEY_MAX];
    size_t len = tally_key_base(key, sizeof(key), a->prefix, bucket, kind);
    va_list ap;

    if (len == 0) {
        a->key_too_long = true;
        return;
    }
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        const char *p = va_arg(ap, const char *);
        size_t k = va_arg(ap, size_t);

        if (len + k >= sizeof(key)) {
            va_end(ap);
            a->key_too_long = true;
            return;
        }
        memcpy(key + len, p, k);
        len += k;
    }
    va_end(ap);
    tally_buf_add_bulk(&a->keys, key, len);
    a->nkeys++;
}

/* The TALLY_EXPIRY_* bits of the bucket keys record R makes the script touch (see
 * src/scripts/count.lua): each metric it counts -- views are counted from the visitors
 * checked with a window -- and the site totals if one of those is summed there. */
static unsigned agg_rec_metrics(const struct tally_agg *a, const struct agg_rec *r)
{
    unsigned mask = 0, site = 0;

    if (r->views > 0 || (a->window > 0 && r->n_vis > 0))
        mask |= TALLY_EXPIRY_VIEWS;
    if (r->n_vis > 0)
        mask |= TALLY_EXPIRY_VISITORS;
    for (int i = 0; i < TALLY_NETWORKS; i++)
        if (r->shares[i] > 0)
            mask |= TALLY_EXPIRY_SHARES;
    if (r->n_deltas > 0)
        mask |= TALLY_EXPIRY_COMMENTS;
    for (int m = 0; m < TALLY_METRICS; m++) {
        if (r->sums[m] > 0)
            mask |= tally_metrics[m].bit;
        if (tally_metrics[m].site && (mask & tally_metrics[m].bit))
            site = TALLY_EXPIRY_SITE;
    }
    return mask | site;
}

/* The day, hour and all-time keys of the metric NAME (NL bytes) in BUCKET. */
static void agg_declare_metric(struct tally_agg *a, unsigned bucket, const char *name, size_t nl)
{
    agg_key(a, bucket, 'd', 3, name, nl, ":", (size_t)1, a->day, strlen(a->day));
    agg_key(a, bucket, 'h', 3, name, nl, ":", (size_t)1, a->hour, strlen(a->hour));
    agg_key(a, bucket, 't', 1, name, nl);
}

/* The bucket keys of the metrics in MASK, and the site totals' with TALLY_EXPIRY_SITE. */
static void agg_declare_bucket(struct tally_agg *a, unsigned bucket, unsigned mask)
{
    size_t dl = strlen(a->day);

    for (int m = 0; m < TALLY_METRICS; m++)
        if (mask & tally_metrics[m].bit)
            agg_declare_metric(a, bucket, tally_metrics[m].name, strlen(tally_metrics[m].name));
    if (mask & TALLY_EXPIRY_SITE) {
        agg_key(a, bucket, 's', 1, a->day, dl);
        agg_key(a, bucket, 's', 1, "all", (size_t)3);
    }
}

/* Record R's repeat-view hash of the unit's window-long slot (PREV 0) or of the one before
 * (PREV 1), "P{bb}w:<id>:<slot>" as src/scripts/unit.lua names them, into KEY (TALLY_KEY_MAX
 * bytes). Its length; 0 if it does not fit. */
static size_t agg_window_key(const struct tally_agg *a, const struct agg_rec *r, int prev,
                             char *key)
{
    size_t len = tally_key_base(key, TALLY_KEY_MAX, a->prefix, r->bucket, 'w');
    int n;

    if (len == 0 || len + r->len >= TALLY_KEY_MAX)
        return 0;
    memcpy(key + len, r->id, r->len);
    len += r->len;
    n = snprintf(key + len, TALLY_KEY_MAX - len, ":%lld",
                 (long long)(a->now / a->window) - prev);
    return n > 0 && (size_t)n < TALLY_KEY_MAX - len ? len + (size_t)n : 0;
}

/* Record R's own keys; its bucket keys are declared once per unit, by agg_declare_buckets(). */
static void agg_declare_article(struct tally_agg *a, const struct agg_rec *r)
{
    size_t len = r->len, dl = strlen(a->day);

    a->declare_mask[r->bucket] |= (uint8_t)agg_rec_metrics(a, r);
    agg_key(a, r->bucket, 'a', 1, r->id, len);
    if (r->n_vis == 0)
        return;
    agg_key(a, r->bucket, 'v', 3, a->day, dl, ":", (size_t)1, r->id, len);
    if (a->window > 0)
        for (int k = 0; k < 2; k++) {
            char key[TALLY_KEY_MAX];
            size_t n = agg_window_key(a, r, k, key);

            if (n > 0) {
                tally_buf_add_bulk(&a->keys, key, n);
                a->nkeys++;
            } else {
                a->key_too_long = true;
            }
        }
}

static void agg_declare_buckets(struct tally_agg *a)
{
    for (unsigned b = 0; b < TALLY_BUCKETS; b++)
        if (a->declare_mask[b] != 0)
            agg_declare_bucket(a, b, a->declare_mask[b]);
}

/* Record R as count.lua reads it, into OUT (valid until the next call), with its comment
 * deltas when DELTAS. */
static int agg_record(struct tally_agg *a, const struct agg_rec *r, bool deltas,
                      struct tally_record *out)
{
    size_t k = 0;

    if (tally_grow(&a->vscratch, &a->cap_vscratch, r->n_vis, sizeof(*a->vscratch)) < 0 ||
        tally_grow(&a->dscratch, &a->cap_dscratch, r->n_deltas, sizeof(*a->dscratch)) < 0)
        return TALLY_ENOMEM;
    memset(out, 0, sizeof(*out));
    out->bucket = r->bucket;
    out->id = r->id;
    out->len = r->len;
    out->views = r->views;
    for (uint32_t v = r->vis_head; v != AGG_NONE; v = a->vis[v].next)
        a->vscratch[k++] = a->vis[v].id;
    out->vis = a->vscratch;
    out->n_vis = r->n_vis;
    k = 0;
    if (deltas)
        for (uint32_t d = r->del_head; d != AGG_NONE; d = a->deltas[d].next)
            a->dscratch[k++] = a->deltas[d].d;
    out->deltas = a->dscratch;
    out->n_deltas = k;
    for (int i = 0; i < TALLY_NETWORKS; i++)
        out->shares[i] = r->shares[i];
    for (int i = 0; i < TALLY_METRICS; i++)
        out->sums[i] = r->sums[i];
    memcpy(out->props, r->props, sizeof(out->props));
    return 0;
}

/* The visitors of record R of the shared segment: note each one's request, in order, to
 * attribute the repeats the script finds. */
static void agg_note_visitors(struct tally_agg *a, const struct agg_rec *r)
{
    for (uint32_t v = r->vis_head; v != AGG_NONE; v = a->vis[v].next) {
        a->vis_ev[a->n_vis_req] = a->vis[v].ev;
        a->vis_req[a->n_vis_req++] = a->vis[v].req;
    }
}

static int agg_emit_rec(struct tally_agg *a, const struct agg_rec *r, bool shared)
{
    struct tally_record rec;

    if (agg_record(a, r, true, &rec) < 0)
        return TALLY_ENOMEM;
    if (a->declare)
        agg_declare_article(a, r);
    a->touched[r->bucket / 64] |= UINT64_C(1) << (r->bucket % 64);
    a->nargs += tally_record_put(&a->args, &rec, false);
    if (shared)
        agg_note_visitors(a, r);
    return 0;
}

/* Record R's views to check: its repeat-view hashes (this slot's, then the one before) -- as
 * arguments, or AS_KEYS declared as keys --, then its visitors, counted. */
static int agg_emit_views(struct tally_agg *a, const struct agg_rec *r, bool as_keys)
{
    char vh[16], key[TALLY_KEY_MAX];

    for (int k = 0; k < 2; k++) {
        size_t len = agg_window_key(a, r, k, key);

        if (len == 0)
            return TALLY_EINVAL;
        if (as_keys) {
            tally_buf_add_bulk(&a->keys, key, len);
            a->nkeys++;
        } else {
            agg_arg(a, key, len);
        }
    }
    agg_arg_int(a, r->n_vis);
    for (uint32_t v = r->vis_head; v != AGG_NONE; v = a->vis[v].next) {
        tally_visitor_hex(a->vis[v].id, vh);
        agg_arg(a, vh, sizeof(vh));
    }
    return 0;
}

/* A journal's segment (src/scripts/ack.lua): the views to check (each record's repeat-view
 * hashes named in full: the script builds no key per view), the comment deltas, then every
 * record's other counts as the journal entry's text. */
static int agg_emit_journal_seg(struct tally_agg *a, bool shared)
{
    const struct agg_rec *r, *end = a->rec + a->n_rec;
    struct tally_record rec;
    char tag[2];
    size_t n = 0;

    for (r = a->rec + a->seg_first; r < end; r++) {
        a->touched[r->bucket / 64] |= UINT64_C(1) << (r->bucket % 64);
        n += a->window > 0 && r->n_vis > 0;
    }
    agg_arg_int(a, (int64_t)n);
    for (r = a->rec + a->seg_first; r < end && n > 0; r++) {
        if (r->n_vis == 0)
            continue;
        if (agg_emit_views(a, r, false) < 0)
            return TALLY_EINVAL;
        if (shared)
            agg_note_visitors(a, r);
    }
    n = 0;
    for (r = a->rec + a->seg_first; r < end; r++)
        n += r->n_deltas > 0;
    agg_arg_int(a, (int64_t)n);
    for (r = a->rec + a->seg_first; r < end && n > 0; r++) {
        if (r->n_deltas == 0)
            continue;
        tally_key_tag(r->bucket, tag);
        agg_arg(a, tag, 2);
        agg_arg(a, r->id, r->len);
        agg_arg_int(a, r->n_deltas);
        for (uint32_t d = r->del_head; d != AGG_NONE; d = a->deltas[d].next)
            agg_arg_int(a, a->deltas[d].d);
    }
    tally_buf_reset(&a->text);
    for (r = a->rec + a->seg_first; r < end; r++) {
        if (agg_record(a, r, false, &rec) < 0)
            return TALLY_ENOMEM;
        if (!tally_record_counts(&rec))
            continue;
        if (a->text.len > 0)
            tally_buf_add(&a->text, "\n", 1);
        tally_record_put(&a->text, &rec, true);
    }
    agg_arg(a, a->text.data, a->text.len);
    return a->text.oom ? TALLY_ENOMEM : 0;
}

/* A mark's segment (src/scripts/mark.lua), after its accepted, bot and prefetch: the records
 * with visitors, each as its visitors alone; its repeat-view hashes (this slot's, then the
 * one before) are declared as keys, in the same order. */
static int agg_emit_mark_seg(struct tally_agg *a)
{
    const struct agg_rec *r, *end = a->rec + a->n_rec;
    size_t n = 0;

    for (r = a->rec + a->seg_first; r < end; r++)
        n += r->n_vis > 0;
    agg_arg_int(a, (int64_t)n);
    for (r = a->rec + a->seg_first; r < end; r++) {
        if (r->n_vis == 0)
            continue;
        if (agg_emit_views(a, r, true) < 0)
            return TALLY_EINVAL;
        agg_note_visitors(a, r);
    }
    return a->args.oom || a->keys.oom ? TALLY_ENOMEM : 0;
}

/* Emit the segment collected so far. For the shared segment (IDEM NULL), VIS_REQ records the
 * request of each visitor entry, to attribute the repeats the script finds. */
static int agg_emit_seg(struct tally_agg *a, const struct tally_agg_req *idem, uint64_t accepted,
                        uint64_t bot, uint64_t prefetch)
{
    if (idem == NULL &&
        (tally_grow(&a->vis_req, &a->cap_vis_req, a->n_vis, sizeof(*a->vis_req)) < 0 ||
         tally_grow(&a->vis_ev, &a->cap_vis_ev, a->n_vis, sizeof(*a->vis_ev)) < 0))
        return TALLY_ENOMEM;
    if (a->mark) {
        /* A mark's writes have no Idempotency-Key (tally/writer.h). */
        if (idem != NULL)
            return TALLY_EINVAL;
        agg_arg_int(a, (int64_t)accepted);
        agg_arg_int(a, (int64_t)bot);
        agg_arg_int(a, (int64_t)prefetch);
        return agg_emit_mark_seg(a);
    }
    if (idem != NULL) {
        const char *digest = idem->digest != NULL ? idem->digest : "";

        agg_arg(a, idem->idem_key, idem->idem_len);
        agg_arg(a, digest, strlen(digest));
        if (a->declare) {
            tally_buf_add_bulk(&a->keys, idem->idem_key, idem->idem_len);
            a->nkeys++;
        }
    } else {
        agg_arg(a, "", 0);
        agg_arg(a, "", 0);
    }
    agg_arg_int(a, (int64_t)accepted);
    agg_arg_int(a, (int64_t)bot);
    agg_arg_int(a, (int64_t)prefetch);
    if (a->journal != NULL) {
        int rc = agg_emit_journal_seg(a, idem == NULL);

        if (rc < 0)
            return rc;
    } else {
        agg_arg_int(a, (int64_t)(a->n_rec - a->seg_first));
        for (size_t i = a->seg_first; i < a->n_rec; i++)
            if (agg_emit_rec(a, &a->rec[i], idem == NULL) < 0)
                return TALLY_ENOMEM;
    }
    return a->args.oom ? TALLY_ENOMEM : 0;
}

/* ---- Units ---- */

/* The day and hour of the unit's time, as the script files them. */
static void agg_stamp(struct tally_agg *a)
{
    tally_key_hour(a->now, a->hour);
    memcpy(a->day, a->hour, 8);
    a->day[8] = '\0';
}

static int agg_header(struct tally_agg *a, const struct tally_event *first, const char *attempt)
{
    unsigned bucket = a->marker_bucket >= 0
                          ? (unsigned)a->marker_bucket
                          : tally_key_bucket(first->article, first->article_len);

    a->attempt_len = tally_key_make(a->attempt_key, sizeof(a->attempt_key), a->prefix, bucket,
                                    'x', attempt, strlen(attempt));
    if (a->attempt_len == 0)
        return TALLY_EINVAL;
    tally_buf_add_bulk(&a->keys, a->attempt_key, a->attempt_len);
    a->nkeys = 1;
    if (a->journal != NULL) {
        tally_buf_add_bulk(&a->keys, a->journal, strlen(a->journal));
        if (a->registry != NULL)
            tally_buf_add_bulk(&a->keys, a->registry, strlen(a->registry));
        else
            tally_buf_add_bulk(&a->keys, a->trimmed, strlen(a->trimmed));
        a->nkeys = 3;
    }
    /* A mark's: window now fence (src/scripts/mark.lua). */
    if (!a->mark)
        tally_buf_add_bulk(&a->head, a->prefix, strlen(a->prefix));
    tally_buf_add_bulk_i64(&a->head, a->window);
    if (!a->mark) {
        tally_buf_add_bulk_i64(&a->head, TALLY_ATTEMPT_TTL);
        tally_buf_add_bulk_i64(&a->head, TALLY_IDEM_TTL);
    }
    tally_buf_add_bulk_i64(&a->head, a->now);
    /* The fence: set for each send by tally_agg_fence(), in place. */
    tally_buf_add(&a->head, "$" AGG_FENCE_DIGITS_STR "\r\n", 1 + strlen(AGG_FENCE_DIGITS_STR) + 2);
    a->fence_at = a->head.len;
    tally_buf_add(&a->head, "000000000000000\r\n", AGG_FENCE_DIGITS + 2);
    a->nargs += a->mark ? 3 : 6;
    return 0;
}

/* The unit: numkeys, the keys, then the script's arguments: the settings, "fresh", the
 * model, and the segments. */
static int agg_assemble(struct tally_agg *a)
{
    if (a->declare)
        agg_declare_buckets(a);
    /* A unit's ids are at most TALLY_ARTICLE_MAX bytes, its prefix TALLY_PREFIX_MAX and its
     * metrics' names this version's: every key fits. */
    assert(!a->key_too_long);
    if (!a->mark)
        agg_fresh_arg(a);
    tally_buf_reset(&a->body);
    tally_buf_add_bulk_i64(&a->body, (int64_t)a->nkeys);
    tally_buf_add(&a->body, a->keys.data, a->keys.len);
    a->fence_at += a->body.len;
    tally_buf_add(&a->body, a->head.data, a->head.len);
    tally_buf_add(&a->body, a->args.data, a->args.len);
    a->nargs += 1 + a->nkeys;
    return a->body.oom || a->keys.oom || a->head.oom || a->args.oom ? TALLY_ENOMEM : 0;
}

static int agg_add_req(struct tally_agg *a, const struct tally_agg_req *q, uint32_t req)
{
    if (agg_reserve(a, q->n) < 0)
        return TALLY_ENOMEM;
    for (size_t i = 0; i < q->n; i++)
        agg_add_event(a, q, i, req);
    return 0;
}

static int agg_shared_segment(struct tally_agg *a, struct tally_agg_req *const *reqs, size_t n)
{
    uint64_t accepted = 0, bot = 0, prefetch = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        if (reqs[i]->idem_key != NULL || reqs[i]->n == 0)
            continue;
        if ((rc = agg_add_req(a, reqs[i], (uint32_t)i)) < 0)
            return rc;
        accepted += reqs[i]->n;
        bot += reqs[i]->bot;
        prefetch += reqs[i]->prefetch;
    }
    if (a->n_rec == 0)
        return 0;
    if ((rc = agg_emit_seg(a, NULL, accepted, bot, prefetch)) < 0)
        return rc;
    return agg_seg_end(a);
}

int tally_agg_build(struct tally_agg *a, struct tally_agg_req *const *reqs, size_t n,
                    const char *attempt)
{
    const struct tally_event *first = NULL;
    int rc;

    for (size_t i = 0; i < n && first == NULL; i++)
        if (reqs[i]->n > 0)
            first = &reqs[i]->ev[0];
    if (first == NULL)
        return TALLY_EINVAL;
    tally_buf_reset(&a->keys);
    tally_buf_reset(&a->head);
    tally_buf_reset(&a->args);
    a->nargs = a->nkeys = a->n_vis_req = 0;
    a->key_too_long = false;
    memset(a->declare_mask, 0, sizeof(a->declare_mask));
    memset(a->touched, 0, sizeof(a->touched));
    agg_stamp(a);
    agg_unit_clear(a);
    a->entry_len = 0;
    a->entry_seq = 0;
    if ((rc = agg_header(a, first, attempt)) < 0 || (rc = agg_shared_segment(a, reqs, n)) < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct tally_agg_req *q = reqs[i];

        if (q->idem_key == NULL || q->n == 0)
            continue;
        if ((rc = agg_add_req(a, q, (uint32_t)i)) < 0)
            return rc;
        if ((rc = agg_emit_seg(a, q, q->n, q->bot, q->prefetch)) < 0 ||
            (rc = agg_seg_end(a)) < 0)
            return rc;
    }
    return agg_assemble(a);
}

void tally_agg_fence(struct tally_agg *a, int64_t fence_ms)
{
    char *p = a->body.data + a->fence_at;
    uint64_t v = fence_ms > 0 ? (uint64_t)fence_ms : 0;

    for (int i = AGG_FENCE_DIGITS; i-- > 0; v /= 10)
        p[i] = (char)('0' + v % 10);
}

/* ---- Reading the answer ---- */

static bool agg_int_at(const redisReply *seg, size_t i, long long *v)
{
    if (i >= seg->elements || seg->element[i]->type != REDIS_REPLY_INTEGER)
        return false;
    *v = seg->element[i]->integer;
    return *v >= 0;
}

static bool agg_seg_ok(const redisReply *seg)
{
    long long v;

    if (seg->type != REDIS_REPLY_ARRAY || seg->elements < 5)
        return false;
    for (size_t i = 0; i < seg->elements; i++)
        if (!agg_int_at(seg, i, &v))
            return false;
    return true;
}

/* The shared segment: attribute each repeat to the request whose visitor it was. */
static int agg_read_shared(struct tally_agg *a, const redisReply *seg,
                           struct tally_agg_req *const *reqs, size_t n)
{
    for (size_t i = 5; i < seg->elements; i++) {
        long long idx = seg->element[i]->integer;
        struct tally_agg_req *q;

        if (idx < 1 || (size_t)idx > a->n_vis_req || a->vis_req[idx - 1] >= n)
            return TALLY_EREDIS;
        q = reqs[a->vis_req[idx - 1]];
        q->repeat++;
        if (q->repeated != NULL && a->vis_ev[idx - 1] < q->n)
            q->repeated[a->vis_ev[idx - 1]] = 1;
    }
    for (size_t i = 0; i < n; i++) {
        struct tally_agg_req *q = reqs[i];

        if (q->idem_key != NULL || q->n == 0)
            continue;
        if (q->repeat > q->n)
            return TALLY_EREDIS;
        q->accepted = (uint32_t)q->n - q->repeat;
        q->bot_out = q->bot;
        q->prefetch_out = q->prefetch;
    }
    return 0;
}

static void agg_read_keyed(const redisReply *seg, struct tally_agg_req *q)
{
    q->replayed = seg->element[0]->integer == 0;
    q->reused = seg->element[0]->integer == 2;
    q->accepted = (uint32_t)seg->element[1]->integer;
    q->bot_out = (uint32_t)seg->element[2]->integer;
    q->prefetch_out = (uint32_t)seg->element[3]->integer;
    q->repeat = (uint32_t)seg->element[4]->integer;
}

/* The script's list of the keys whose expiry it set: "<tag><kind><mask>" entries. */
static int agg_read_expired(struct tally_agg *a, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING) {
        memset(a->expired_day, 0, sizeof(a->expired_day));
        memset(a->expired_hour, 0, sizeof(a->expired_hour));
        return TALLY_EREDIS;
    }
    return tally_known_read(r->str, r->len, a->expired_day, a->expired_hour);
}

bool tally_agg_fenced(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
           (reply->element[0]->type == REDIS_REPLY_STATUS ||
            reply->element[0]->type == REDIS_REPLY_STRING) &&
           strcmp(reply->element[0]->str, "fenced") == 0;
}

/* With a journal, the reply's last two elements: the id of the entry appended, or "", and
 * its number (an integer, 0 when not known). */
static int agg_read_entry(struct tally_agg *a, const redisReply *reply, size_t *end)
{
    const redisReply *id, *seq;

    a->entry_len = 0;
    a->entry_seq = 0;
    if (a->journal == NULL)
        return 0;
    seq = reply->element[--*end];
    id = reply->element[--*end];
    if (id->type != REDIS_REPLY_STRING || id->len >= sizeof(a->entry_id) ||
        seq->type != REDIS_REPLY_INTEGER || seq->integer < 0)
        return TALLY_EREDIS;
    a->entry_seq = (uint64_t)seq->integer;
    memcpy(a->entry_id, id->str, id->len);
    a->entry_id[id->len] = '\0';
    a->entry_len = id->len;
    return 0;
}

/* A unit's status, "ok" or "ok <n> <the last refusal>" (src/scripts/unit.lua): into
 * a->skipped and a->skip_why. */
static int agg_read_status(struct tally_agg *a, const redisReply *r)
{
    const char *p = r->str + 3, *end = r->str + r->len;
    uint32_t n = 0;

    a->skipped = 0;
    a->skip_why = NULL;
    a->skip_why_len = 0;
    if (r->len == 2 && memcmp(r->str, "ok", 2) == 0)
        return 0;
    if (r->len < 4 || memcmp(r->str, "ok ", 3) != 0)
        return TALLY_EREDIS;
    for (; p < end && *p >= '0' && *p <= '9' && n < UINT32_MAX / 10; p++)
        n = n * 10 + (uint32_t)(*p - '0');
    if (n == 0 || p >= end || *p != ' ')
        return TALLY_EREDIS;
    a->skipped = n;
    a->skip_why = p + 1;
    a->skip_why_len = (size_t)(end - p - 1);
    return 0;
}

int tally_agg_apply_reply(struct tally_agg *a, const redisReply *reply,
                          struct tally_agg_req *const *reqs, size_t n)
{
    size_t next = 2, end;
    bool shared = false;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        (reply->element[0]->type != REDIS_REPLY_STATUS &&
         reply->element[0]->type != REDIS_REPLY_STRING))
        return TALLY_EREDIS;
    end = reply->elements;
    if (agg_read_status(a, reply->element[0]) < 0 ||
        reply->elements < 2 + 2 * (a->journal != NULL) ||
        agg_read_expired(a, reply->element[1]) < 0 || agg_read_entry(a, reply, &end) < 0)
        return TALLY_EREDIS;
    for (size_t i = 0; i < n; i++) {
        reqs[i]->repeat = 0;
        reqs[i]->replayed = false;
        reqs[i]->reused = false;
        if (reqs[i]->repeated != NULL)
            memset(reqs[i]->repeated, 0, reqs[i]->n);
        shared |= reqs[i]->idem_key == NULL && reqs[i]->n > 0;
    }
    if (shared) {
        if (next >= end || !agg_seg_ok(reply->element[next]) ||
            agg_read_shared(a, reply->element[next], reqs, n) < 0)
            return TALLY_EREDIS;
        next++;
    }
    for (size_t i = 0; i < n; i++) {
        if (reqs[i]->idem_key == NULL || reqs[i]->n == 0)
            continue;
        if (next >= end || !agg_seg_ok(reply->element[next]))
            return TALLY_EREDIS;
        agg_read_keyed(reply->element[next++], reqs[i]);
    }
    return next == end ? 0 : TALLY_EREDIS;
}

int tally_agg_merge(struct tally_agg *a, const redisReply *reply, struct tally_merge *m)
{
    int64_t hour = a->now / 3600;
    size_t first = 0;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 + a->n_segs)
        return TALLY_EREDIS;
    for (size_t s = 0; s < a->n_segs; first = a->seg_end[s++]) {
        const redisReply *seg = reply->element[2 + s];
        size_t k = 5, seen = 0; /* the next repeat's index in SEG; visitors so far */

        if (!agg_seg_ok(seg))
            return TALLY_EREDIS;
        if (seg->element[0]->integer != 1)
            continue; /* answered from its Idempotency-Key: appended by an earlier unit */
        for (size_t i = first; i < a->seg_end[s]; i++) {
            struct tally_record rec;
            int rc;

            if ((rc = agg_record(a, &a->rec[i], false, &rec)) < 0)
                return rc;
            for (size_t v = 0; a->window > 0 && v < rec.n_vis; v++) {
                if (k < seg->elements && (size_t)seg->element[k]->integer == seen + v + 1)
                    k++; /* a repeat: only its visitor counts, in the estimate */
                else
                    rec.views++;
            }
            seen += rec.n_vis;
            if (tally_record_counts(&rec) && (rc = tally_merge_add(m, hour, &rec)) < 0)
                return rc;
        }
        if (k != seg->elements)
            return TALLY_EREDIS;
    }
    return 0;
}

size_t tally_agg_records(const struct tally_agg *a)
{
    return a->n_rec;
}

const char *tally_agg_record_id(const struct tally_agg *a, size_t i, size_t *len)
{
    *len = a->rec[i].len;
    return a->rec[i].id;
}

/* ---- The keys of a part of a journal's fold (Redis Cluster) ---- */

/* A chunk's tokens, one at a time: each ends at "\n" or at the chunk's end. */
struct agg_chunk {
    const char *p, *end;
};

/* The next token into *TOK (*N bytes); false at the end or at an empty token. */
static bool agg_chunk_token(struct agg_chunk *c, const char **tok, size_t *n)
{
    const char *nl;

    if (c->p >= c->end)
        return false;
    nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    *tok = c->p;
    *n = (size_t)((nl != NULL ? nl : c->end) - c->p);
    c->p = nl != NULL ? nl + 1 : c->end;
    return *n > 0;
}

/* The next token as a count of at most MAX: digits only. */
static bool agg_chunk_uint(struct agg_chunk *c, uint64_t max, uint64_t *v)
{
    const char *t;
    size_t n;

    if (!agg_chunk_token(c, &t, &n) || n > 19)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return false;
        *v = *v * 10 + (uint64_t)(t[i] - '0');
    }
    return *v <= max;
}

/* Skip N tokens (PAIRS: N pairs) after reading the count N; with SUM, *SUM gets the total of
 * the pairs' counts (shares: network n). */
static bool agg_chunk_skip(struct agg_chunk *c, bool pairs, uint64_t *n, uint64_t *sum)
{
    const char *t;
    size_t len;
    uint64_t v;

    if (!agg_chunk_uint(c, (uint64_t)(c->end - c->p), n))
        return false;
    for (uint64_t i = 0; i < *n; i++) {
        if (!agg_chunk_token(c, &t, &len))
            return false;
        if (!pairs)
            continue;
        if (sum == NULL ? !agg_chunk_token(c, &t, &len) : !agg_chunk_uint(c, UINT32_MAX, &v))
            return false;
        if (sum != NULL)
            *sum += v;
    }
    return true;
}

/* One hour of a chunk and the metrics (TALLY_EXPIRY_* bits) its records count in it. */
struct agg_chunk_hour {
    char hour[11];
    unsigned mask;
};

/* The mask of hour HOUR in the list H (*N of them, room for *CAP), added if new. */
static unsigned *agg_chunk_hour_mask(struct agg_chunk_hour **h, size_t *n, size_t *cap,
                                     const char *hour)
{
    for (size_t i = 0; i < *n; i++)
        if (memcmp((*h)[i].hour, hour, 10) == 0)
            return &(*h)[i].mask;
    if (tally_grow(h, cap, *n + 1, sizeof(**h)) < 0)
        return NULL;
    memcpy((*h)[*n].hour, hour, 11);
    (*h)[*n].mask = 0;
    return &(*h)[(*n)++].mask;
}

/* Read CHUNK's next record (filed at its time's hour) and declare its own keys in A (A's day
 * and hour: the record's); the bucket metrics it counts are added to its hour's mask in H.
 * Returns 0, TALLY_EINVAL or TALLY_ENOMEM. */
static int agg_chunk_record(struct tally_agg *a, struct agg_chunk *c, unsigned bucket,
                            struct agg_chunk_hour **h, size_t *n_h, size_t *cap_h)
{
    struct agg_rec r;
    char tag[2];
    const char *t;
    size_t len;
    uint64_t time, views, n, shares = 0;
    unsigned *mask;

    memset(&r, 0, sizeof(r));
    tally_key_tag(bucket, tag);
    if (!agg_chunk_uint(c, INT64_MAX / 2, &time) || !agg_chunk_token(c, &t, &len) || len != 2 ||
        memcmp(t, tag, 2) != 0 || !agg_chunk_token(c, &t, &len) || len > UINT16_MAX ||
        !agg_chunk_uint(c, UINT64_MAX, &views))
        return TALLY_EINVAL;
    r.id = t;
    r.len = (uint16_t)len;
    r.bucket = (uint8_t)bucket;
    r.views = views > 0;
    if (!agg_chunk_skip(c, false, &n, NULL))
        return TALLY_EINVAL;
    r.n_vis = (uint32_t)(n > 0);
    if (!agg_chunk_skip(c, true, &n, &shares))
        return TALLY_EINVAL;
    r.shares[0] = (uint32_t)(shares > 0); /* any network: the metric is shares */
    if (!agg_chunk_skip(c, false, &n, NULL))
        return TALLY_EINVAL;
    r.n_deltas = (uint32_t)(n > 0);
    a->now = (int64_t)time;
    agg_stamp(a);
    mask = agg_chunk_hour_mask(h, n_h, cap_h, a->hour);
    if (mask == NULL)
        return TALLY_ENOMEM;
    /* The sums, by name: a metric this collector does not know (written by another version)
     * has its keys declared all the same, and the site totals with them. */
    if (!agg_chunk_uint(c, (uint64_t)(c->end - c->p), &n))
        return TALLY_EINVAL;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v;
        int m = 0;

        if (!agg_chunk_token(c, &t, &len) || !agg_chunk_uint(c, UINT32_MAX, &v))
            return TALLY_EINVAL;
        while (m < TALLY_METRICS && (strlen(tally_metrics[m].name) != len ||
                                     memcmp(tally_metrics[m].name, t, len) != 0))
            m++;
        if (m < TALLY_METRICS)
            r.sums[m] += v > 0;
        else if (v > 0) {
            agg_declare_metric(a, bucket, t, len);
            *mask |= TALLY_EXPIRY_SITE;
        }
    }
    if (!agg_chunk_skip(c, true, &n, NULL))
        return TALLY_EINVAL;
    *mask |= agg_rec_metrics(a, &r);
    agg_declare_article(a, &r);
    return 0;
}

int tally_agg_part_keys(struct tally_buf *out, const char *prefix, unsigned bucket,
                        const char *writer, size_t writer_len, const char *chunk, size_t len,
                        const char **why)
{
    struct tally_agg a;
    struct agg_chunk c = {chunk, chunk + len};
    struct agg_chunk_hour *h = NULL;
    size_t n_h = 0, cap_h = 0;
    char cursor[TALLY_KEY_MAX];
    size_t cl;
    int rc = 0;

    *why = "bucket: out of range";
    if (bucket >= TALLY_BUCKETS)
        return TALLY_EINVAL;
    *why = "a key too long: the writer's name past TALLY_KEY_MAX";
    cl = tally_key_make(cursor, sizeof(cursor), prefix, bucket, 'f', writer, writer_len);
    if (cl == 0)
        return TALLY_EINVAL;
    tally_agg_init(&a, prefix, 0); /* no window: a part touches no repeat-view hash */
    tally_buf_add_bulk(&a.keys, cursor, cl);
    a.nkeys = 1;
    while (rc == 0 && c.p < c.end)
        rc = agg_chunk_record(&a, &c, bucket, &h, &n_h, &cap_h);
    for (size_t i = 0; rc == 0 && i < n_h; i++) {
        memcpy(a.hour, h[i].hour, 11);
        memcpy(a.day, h[i].hour, 8);
        a.day[8] = '\0';
        agg_declare_bucket(&a, bucket, h[i].mask);
    }
    *why = "not a chunk of merged records of its bucket";
    if (rc == 0 && a.key_too_long) {
        *why = "a key too long: an article id or a metric's name past TALLY_KEY_MAX";
        rc = TALLY_EINVAL;
    }
    if (rc == 0 && a.keys.oom)
        rc = TALLY_ENOMEM;
    if (rc == 0) {
        tally_buf_add(out, a.keys.data, a.keys.len);
        rc = out->oom ? TALLY_ENOMEM : (int)a.nkeys;
    }
    free(h);
    tally_agg_release(&a);
    return rc;
}
