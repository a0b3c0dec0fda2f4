/* merge.c -- article records as the scripts read them, and records added up per article and
 * hour (see tally/merge.h). */
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/hash.h"
#include "tally/keys.h"
#include "tally/merge.h"

#define MERGE_NONE UINT32_MAX

void tally_visitor_hex(uint64_t v, char out[16])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = hex[v & 15];
}

/* ---- One record ---- */

bool tally_record_counts(const struct tally_record *r)
{
    bool any = r->views > 0 || r->n_vis > 0;

    for (int i = 0; i < TALLY_NETWORKS; i++)
        any |= r->shares[i] != 0;
    for (int i = 0; i < TALLY_METRICS; i++)
        any |= r->sums[i] != 0;
    for (int i = 0; i < TALLY_PROPERTIES; i++)
        any |= r->props[i] != 0;
    return any;
}

struct record_out {
    struct tally_buf *b;
    bool text;
    size_t n;
};

static void record_token(struct record_out *o, const void *p, size_t n)
{
    if (!o->text) {
        tally_buf_add_bulk(o->b, p, n);
    } else {
        if (o->n > 0)
            tally_buf_add(o->b, "\n", 1);
        tally_buf_add(o->b, p, n);
    }
    o->n++;
}

static void record_int(struct record_out *o, int64_t v)
{
    if (!o->text) {
        tally_buf_add_bulk_i64(o->b, v);
    } else {
        if (o->n > 0)
            tally_buf_add(o->b, "\n", 1);
        tally_buf_add_i64(o->b, v);
    }
    o->n++;
}

/* The non-zero ones of the N values V as "count (name value)...", each named by NAME(i). */
static void record_pairs(struct record_out *o, const uint64_t *v, int n,
                         const char *(*name)(int))
{
    int64_t k = 0;

    for (int i = 0; i < n; i++)
        k += v[i] != 0;
    record_int(o, k);
    for (int i = 0; i < n; i++) {
        if (v[i] == 0)
            continue;
        record_token(o, name(i), strlen(name(i)));
        record_int(o, (int64_t)v[i]);
    }
}

static const char *record_network(int i)
{
    return tally_network_name((enum tally_network)i);
}

static const char *record_metric(int i)
{
    return tally_metrics[i].name;
}

static const char *record_property(int i)
{
    return tally_properties[i].name;
}

size_t tally_record_put(struct tally_buf *b, const struct tally_record *r, bool text)
{
    struct record_out o = {b, text, 0};
    uint64_t props[TALLY_PROPERTIES];
    char tag[2], vh[16];

    tally_key_tag(r->bucket, tag);
    record_token(&o, tag, 2);
    record_token(&o, r->id, r->len);
    record_int(&o, (int64_t)r->views);
    record_int(&o, (int64_t)r->n_vis);
    for (size_t i = 0; i < r->n_vis; i++) {
        tally_visitor_hex(r->vis[i], vh);
        record_token(&o, vh, sizeof(vh));
    }
    record_pairs(&o, r->shares, TALLY_NETWORKS, record_network);
    record_int(&o, (int64_t)r->n_deltas);
    for (size_t i = 0; i < r->n_deltas; i++)
        record_int(&o, r->deltas[i]);
    record_pairs(&o, r->sums, TALLY_METRICS, record_metric);
    for (int i = 0; i < TALLY_PROPERTIES; i++)
        props[i] = r->props[i];
    record_pairs(&o, props, TALLY_PROPERTIES, record_property);
    return o.n;
}

/* ---- Records added up ---- */

struct merge_rec {
    int64_t hour;
    size_t id_at;             /* in ids */
    uint16_t len;
    uint8_t bucket;
    uint32_t n_vis, vis_head, vis_tail;
    uint64_t views;
    uint64_t shares[TALLY_NETWORKS];
    uint64_t sums[TALLY_METRICS];
    uint32_t props[TALLY_PROPERTIES];
};

/* A visitor of a record, chained per record in the order first added. */
struct merge_vis {
    uint64_t id;
    uint32_t rec;
    uint32_t next;
};

struct tally_merge {
    struct merge_rec *rec;
    size_t n_rec, cap_rec;
    struct merge_vis *vis;
    size_t n_vis, cap_vis;
    char *ids;
    size_t ids_len, ids_cap;
    /* Open addressing, half full at most: index + 1 into REC, and into VIS. */
    uint32_t *slots, *vslots;
    size_t n_slots, n_vslots;
    uint64_t *scratch;        /* one record's visitors, to put it */
    size_t cap_scratch;
    uint32_t *next;           /* per record, the next of its bucket (tally_merge_put_buckets()) */
    size_t cap_next;
    uint64_t touched[TALLY_BUCKETS / 64]; /* the buckets of its records */
    struct tally_buf text;    /* one chunk of records as text, to put it */
};

struct tally_merge *tally_merge_new(void)
{
    struct tally_merge *m = calloc(1, sizeof(struct tally_merge));

    if (m != NULL)
        tally_buf_init(&m->text);
    return m;
}

void tally_merge_free(struct tally_merge *m)
{
    if (m == NULL)
        return;
    free(m->rec);
    free(m->vis);
    free(m->ids);
    free(m->slots);
    free(m->vslots);
    free(m->scratch);
    free(m->next);
    tally_buf_release(&m->text);
    free(m);
}

void tally_merge_clear(struct tally_merge *m)
{
    m->n_rec = m->n_vis = m->ids_len = 0;
    memset(m->touched, 0, sizeof(m->touched));
    if (m->slots != NULL)
        memset(m->slots, 0, m->n_slots * sizeof(*m->slots));
    if (m->vslots != NULL)
        memset(m->vslots, 0, m->n_vslots * sizeof(*m->vslots));
}

size_t tally_merge_records(const struct tally_merge *m)
{
    return m->n_rec;
}

const uint64_t *tally_merge_touched(const struct tally_merge *m)
{
    return m->touched;
}

static uint32_t merge_rec_home(int64_t hour, const char *id, size_t len, size_t slots)
{
    uint64_t h = tally_siphash((const uint8_t *)"tally merge recs", id, len);

    return (uint32_t)((h ^ ((uint64_t)hour * UINT64_C(0x9e3779b97f4a7c15))) & (slots - 1));
}

static uint32_t merge_vis_home(uint64_t v, uint32_t rec, size_t slots)
{
    uint64_t h = (v ^ ((uint64_t)rec * UINT64_C(0x9e3779b97f4a7c15))) * UINT64_C(0xff51afd7ed558ccd);

    return (uint32_t)((h ^ (h >> 32)) & (slots - 1));
}

/* Make *TABLE (of *N slots) at least twice NEED, empty. Returns 1 when it was made anew (its
 * items are to be put back), 0 when it was big enough, or TALLY_ENOMEM. */
static int merge_rehash(uint32_t **table, size_t *n, size_t need)
{
    size_t slots = *n;
    uint32_t *t;

    if (slots >= 2 * need)
        return 0;
    while (slots < 2 * need)
        slots = slots != 0 ? slots * 2 : 1024;
    t = calloc(slots, sizeof(*t));
    if (t == NULL)
        return TALLY_ENOMEM;
    free(*table);
    *table = t;
    *n = slots;
    return 1;
}

static int merge_reserve(struct tally_merge *m, size_t n_vis, size_t id_len)
{
    int rc;

    if (tally_grow(&m->rec, &m->cap_rec, m->n_rec + 1, sizeof(*m->rec)) < 0 ||
        tally_grow(&m->vis, &m->cap_vis, m->n_vis + n_vis, sizeof(*m->vis)) < 0 ||
        tally_grow(&m->ids, &m->ids_cap, m->ids_len + id_len, 1) < 0)
        return TALLY_ENOMEM;
    if ((rc = merge_rehash(&m->slots, &m->n_slots, m->n_rec + 1)) < 0)
        return rc;
    if (rc == 1)
        for (size_t i = 0; i < m->n_rec; i++) {
            const struct merge_rec *r = &m->rec[i];
            uint32_t s = merge_rec_home(r->hour, m->ids + r->id_at, r->len, m->n_slots);

            while (m->slots[s] != 0)
                s = (uint32_t)((s + 1) & (m->n_slots - 1));
            m->slots[s] = (uint32_t)i + 1;
        }
    if ((rc = merge_rehash(&m->vslots, &m->n_vslots, m->n_vis + n_vis)) < 0)
        return rc;
    if (rc == 1)
        for (size_t i = 0; i < m->n_vis; i++) {
            uint32_t s = merge_vis_home(m->vis[i].id, m->vis[i].rec, m->n_vslots);

            while (m->vslots[s] != 0)
                s = (uint32_t)((s + 1) & (m->n_vslots - 1));
            m->vslots[s] = (uint32_t)i + 1;
        }
    return 0;
}

static struct merge_rec *merge_find(struct tally_merge *m, int64_t hour,
                                    const struct tally_record *r)
{
    uint32_t s = merge_rec_home(hour, r->id, r->len, m->n_slots);
    struct merge_rec *x;

    for (; m->slots[s] != 0; s = (uint32_t)((s + 1) & (m->n_slots - 1))) {
        x = &m->rec[m->slots[s] - 1];
        if (x->hour == hour && x->len == r->len && memcmp(m->ids + x->id_at, r->id, r->len) == 0)
            return x;
    }
    x = &m->rec[m->n_rec];
    memset(x, 0, sizeof(*x));
    x->hour = hour;
    x->id_at = m->ids_len;
    x->len = (uint16_t)r->len;
    x->bucket = (uint8_t)r->bucket;
    m->touched[r->bucket / 64] |= UINT64_C(1) << (r->bucket % 64);
    x->vis_head = x->vis_tail = MERGE_NONE;
    memcpy(m->ids + m->ids_len, r->id, r->len);
    m->ids_len += r->len;
    m->slots[s] = (uint32_t)++m->n_rec;
    return x;
}

static void merge_visitor(struct tally_merge *m, struct merge_rec *x, uint64_t v)
{
    uint32_t rec = (uint32_t)(x - m->rec), i;
    uint32_t s = merge_vis_home(v, rec, m->n_vslots);

    for (; m->vslots[s] != 0; s = (uint32_t)((s + 1) & (m->n_vslots - 1)))
        if (m->vis[m->vslots[s] - 1].id == v && m->vis[m->vslots[s] - 1].rec == rec)
            return; /* pooled already: the estimate counts it once either way */
    i = (uint32_t)m->n_vis++;
    m->vis[i] = (struct merge_vis){.id = v, .rec = rec, .next = MERGE_NONE};
    m->vslots[s] = i + 1;
    if (x->vis_head == MERGE_NONE)
        x->vis_head = i;
    else
        m->vis[x->vis_tail].next = i;
    x->vis_tail = i;
    x->n_vis++;
}

int tally_merge_add(struct tally_merge *m, int64_t hour, const struct tally_record *r)
{
    struct merge_rec *x;

    if (r->len > UINT16_MAX || m->n_rec >= UINT32_MAX / 2 || m->n_vis + r->n_vis >= UINT32_MAX / 2)
        return TALLY_ENOMEM;
    if (merge_reserve(m, r->n_vis, r->len) < 0)
        return TALLY_ENOMEM;
    x = merge_find(m, hour, r);
    x->views += r->views;
    for (int i = 0; i < TALLY_NETWORKS; i++)
        x->shares[i] += r->shares[i];
    for (int i = 0; i < TALLY_METRICS; i++)
        x->sums[i] += r->sums[i];
    for (int i = 0; i < TALLY_PROPERTIES; i++)
        if (r->props[i] != 0)
            x->props[i] = r->props[i]; /* the latest value wins */
    for (size_t i = 0; i < r->n_vis; i++)
        merge_visitor(m, x, r->vis[i]);
    return 0;
}

/* Record I of M as a tally_record (its visitors in M's scratch, valid until the next call).
 * False when out of memory. */
static bool merge_record_at(struct tally_merge *m, size_t i, struct tally_record *r)
{
    const struct merge_rec *x = &m->rec[i];
    size_t k = 0;

    if (tally_grow(&m->scratch, &m->cap_scratch, x->n_vis, sizeof(*m->scratch)) < 0)
        return false;
    for (uint32_t v = x->vis_head; v != MERGE_NONE; v = m->vis[v].next)
        m->scratch[k++] = m->vis[v].id;
    *r = (struct tally_record){.bucket = x->bucket, .id = m->ids + x->id_at, .len = x->len,
                               .views = x->views, .vis = m->scratch, .n_vis = k};
    memcpy(r->shares, x->shares, sizeof(r->shares));
    memcpy(r->sums, x->sums, sizeof(r->sums));
    memcpy(r->props, x->props, sizeof(r->props));
    return true;
}

/* Records FROM..TO-1 of M, each its hour's Unix time then the record: as RESP bulk strings
 * (TEXT false), or as text joined by "\n" (TEXT true). Returns the number of tokens. */
/* Record I of M, its hour's Unix time then the record: as RESP bulk strings (TEXT false), or
 * as text (TEXT true), after a "\n" unless FIRST. Returns the number of tokens, 0 when out of
 * memory (B->oom set). */
static size_t merge_put_one(struct tally_merge *m, struct tally_buf *b, size_t i, bool text,
                            bool first)
{
    struct tally_record r;

    if (!merge_record_at(m, i, &r)) {
        b->oom = true;
        return 0;
    }
    if (!text) {
        tally_buf_add_bulk_i64(b, m->rec[i].hour * 3600);
    } else {
        if (!first)
            tally_buf_add(b, "\n", 1);
        tally_buf_add_i64(b, m->rec[i].hour * 3600);
        tally_buf_add(b, "\n", 1);
    }
    return 1 + tally_record_put(b, &r, text);
}

static size_t merge_put_range(struct tally_merge *m, struct tally_buf *b, size_t from,
                              size_t to, bool text)
{
    size_t args = 0;

    for (size_t i = from; i < to && !b->oom; i++)
        args += merge_put_one(m, b, i, text, i == from);
    return args;
}

size_t tally_merge_put(struct tally_merge *m, struct tally_buf *b)
{
    return merge_put_range(m, b, 0, m->n_rec, false);
}

size_t tally_merge_chunks(const struct tally_merge *m, size_t step)
{
    return step == 0 || m->n_rec <= step ? 0 : (m->n_rec + step - 1) / step;
}

size_t tally_merge_put_steps(struct tally_merge *m, struct tally_buf *b, size_t step)
{
    size_t chunks = tally_merge_chunks(m, step);
    size_t first = chunks > 0 ? 0 : m->n_rec;

    tally_buf_add_bulk_i64(b, (int64_t)chunks);
    for (size_t c = 0; c < chunks; c++) {
        size_t from = first + c * step, to = from + step < m->n_rec ? from + step : m->n_rec;

        tally_buf_reset(&m->text);
        merge_put_range(m, &m->text, from, to, true);
        if (m->text.oom) {
            b->oom = true;
            return 1 + c;
        }
        tally_buf_add_bulk(b, m->text.data, m->text.len);
    }
    return 1 + chunks + merge_put_range(m, b, 0, first, false);
}

int tally_merge_put_buckets(struct tally_merge *m, struct tally_buf *b,
                            struct tally_merge_part parts[TALLY_BUCKETS])
{
    uint32_t head[TALLY_BUCKETS], tail[TALLY_BUCKETS];
    int n = 0;

    if (m->n_rec >= MERGE_NONE ||
        tally_grow(&m->next, &m->cap_next, m->n_rec, sizeof(*m->next)) < 0) {
        b->oom = true;
        return -1;
    }
    /* Each bucket's records chained in the order first added; buckets in the order of their
     * first record. */
    for (unsigned k = 0; k < TALLY_BUCKETS; k++)
        head[k] = MERGE_NONE;
    for (size_t i = 0; i < m->n_rec; i++) {
        unsigned k = m->rec[i].bucket;

        m->next[i] = MERGE_NONE;
        if (head[k] == MERGE_NONE) {
            head[k] = (uint32_t)i;
            parts[n++].bucket = k;
        } else {
            m->next[tail[k]] = (uint32_t)i;
        }
        tail[k] = (uint32_t)i;
    }
    for (int p = 0; p < n; p++) {
        parts[p].at = b->len;
        for (uint32_t i = head[parts[p].bucket]; i != MERGE_NONE && !b->oom; i = m->next[i])
            merge_put_one(m, b, i, true, i == head[parts[p].bucket]);
        parts[p].len = b->len - parts[p].at;
    }
    return b->oom ? -1 : n;
}
