/* agg.h -- aggregation: turns the events of many held requests into one write unit.
 *
 * A write unit is one call of the apply script (src/scripts/apply.lua): it carries every
 * counted event of the requests in it, coalesced per article (40 views of one article become
 * one increment), and is applied by Redis atomically. Requests without an Idempotency-Key
 * share one segment; each keyed request gets its own, so a retry of it is answered as the
 * first time. Pure: builds bytes and reads replies, no I/O. */
#ifndef TALLY_AGG_H
#define TALLY_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "tally/buf.h"
#include "tally/ingest.h"
#include "tally/keys.h"
#include "tally/model.h"

#define TALLY_ATTEMPT_TTL 600   /* seconds a unit's marker answers for it */
#define TALLY_IDEM_TTL 86400    /* seconds an Idempotency-Key is remembered */
#define TALLY_IDEM_TTL_TEXT "86400"
#define TALLY_IDEM_MAX 128      /* bytes of an Idempotency-Key */

/* One request's part of a unit. The caller owns it and everything it points to, which must
 * stay valid until the unit's reply has been applied. */
struct tally_agg_req {
    const struct tally_event *ev; /* N events to count */
    size_t n;
    const uint64_t *visitor;      /* per event: the visitor id (views); NULL for none */
    const char *idem_key;         /* the Redis key of its Idempotency-Key marker, or NULL */
    size_t idem_len;
    const char *digest;           /* with IDEM_KEY: its body's digest (tally_idem_digest()) */
    uint32_t bot, prefetch;       /* events already ignored, for the answer */
    const uint8_t *seen;          /* per event, or NULL: a view found a repeat already (a
                                   * cluster's mark, see tally/writer.h), which brings its
                                   * visitor to the estimate and counts no view */
    /* Filled by tally_agg_apply_reply(): */
    uint8_t *repeated;            /* per event, if not NULL: 1 where the script found a view
                                   * a repeat (requests without an Idempotency-Key) */
    uint32_t accepted, repeat;    /* the answer: repeat views are ignored too */
    uint32_t bot_out, prefetch_out; /* as first answered (differs from the input on a replay) */
    bool replayed;                /* an earlier answer to the same Idempotency-Key */
    bool reused;                  /* the key holds another body: nothing applied */
};

struct agg_rec;
struct agg_vis;
struct agg_delta;
struct tally_merge;

struct tally_agg {
    const char *prefix;
    uint32_t window;              /* --view-window */
    bool declare;                 /* list every key the unit touches (Redis Cluster) */
    /* A mark's unit (src/scripts/mark.lua, see tally/writer.h): its views alone, checked
     * against WINDOW and counted nothing. Its keys are its attempt marker (which names the
     * unit, never written) and the repeat-view hashes it touches, its answer a unit's. */
    bool mark;
    /* A writer that keeps a journal (see tally/fold.h): the unit is for src/scripts/ack.lua,
     * with these keys after its marker. Borrowed; NULL: for apply.lua. */
    const char *journal, *registry;
    /* A journal on a Redis Cluster (tally/fold.h): the journal's trimmed-count key, declared
     * after the journal in the registry's place (the cluster's ack registers nothing), and
     * the bucket of the journal's tag, where the attempt marker goes too. Borrowed; NULL and
     * -1 (the marker in the bucket of the unit's first event) otherwise. */
    const char *trimmed;
    int marker_bucket;
    /* After its reply, with a journal: the id of the entry the unit appended ("" for none),
     * and its number (entries the journal had taken, this one included; 0: not known, see
     * src/scripts/ack.lua). */
    char entry_id[48];
    size_t entry_len;
    uint64_t entry_seq;
    /* After its reply: the counting commands Redis refused and the unit skipped (a key of
     * another type, written by someone else), and the last refusal (SKIP_WHY_LEN bytes, not
     * NUL-terminated, pointing into the reply: valid until it is freed). */
    uint32_t skipped;
    const char *skip_why;
    size_t skip_why_len;
    int64_t now;                  /* the unit's time, Unix seconds: set before building */
    struct tally_buf body;        /* the unit: script arguments from numkeys on, as RESP */
    size_t nargs;                 /* RESP arguments in BODY */
    size_t fence_at;              /* where in BODY the fence's digits are */
    /* Per bucket, the metrics (TALLY_EXPIRY_* bits) whose key of this day or hour is known to
     * have its expiry: the script is told to set it only on the others. NULL: none is known.
     * Borrowed; set before building. */
    const uint8_t *known_day, *known_hour;
    /* After a build: the buckets the unit touches. After its reply: per bucket, the metrics
     * whose day or hour key the script set the expiry of. */
    uint64_t touched[TALLY_BUCKETS / 64];
    uint8_t expired_day[TALLY_BUCKETS], expired_hour[TALLY_BUCKETS];
    /* Scratch for building BODY. */
    struct tally_buf keys, head, args;
    size_t nkeys;
    bool key_too_long;            /* a key to declare did not fit TALLY_KEY_MAX: left out */
    uint8_t declare_mask[TALLY_BUCKETS]; /* per bucket: the keys to declare, TALLY_EXPIRY_* */
    char day[9], hour[11];
    char model[TALLY_MODEL_ARG_MAX + 1]; /* tally_model_arg(), the script's "model" */
    size_t model_len;
    char attempt_key[128];
    size_t attempt_len;
    /* Scratch reused for every unit: its records, per segment (the segment s ends before
     * SEG_END[s]; the one being collected starts at SEG_FIRST), kept until the next build. */
    struct agg_rec *rec;
    size_t n_rec, cap_rec, seg_first;
    uint32_t *seg_end;
    size_t n_segs, cap_segs;
    struct agg_vis *vis;
    size_t n_vis, cap_vis;
    struct agg_delta *deltas;
    size_t n_deltas, cap_deltas;
    uint32_t *slots;              /* open addressing over REC, 0 = empty, else index + 1 */
    size_t n_slots;
    uint32_t *vis_req;            /* per visitor of the shared segment, in order: its request */
    size_t cap_vis_req, n_vis_req;
    uint32_t *vis_ev;             /* ... and its event's index in that request */
    size_t cap_vis_ev;
    uint64_t *vscratch;           /* one record's visitors */
    size_t cap_vscratch;
    int64_t *dscratch;            /* one record's comment deltas */
    size_t cap_dscratch;
    struct tally_buf text;        /* one segment's journal text */
};

void tally_agg_init(struct tally_agg *a, const char *prefix, uint32_t window);
void tally_agg_release(struct tally_agg *a);

/* Build the unit for the N requests REQS (borrowed until tally_agg_apply_reply()) under the
 * attempt id ATTEMPT (unique per unit; a resend of the same unit keeps it), filed at a->now.
 * The unit's RESP body is then a->body (a->nargs arguments: numkeys, the marker key -- and,
 * with a->journal, the journal and its registry; with a->declare, every other key the unit
 * touches --, the script's ARGV: see src/scripts/unit.lua; a->mark: src/scripts/mark.lua),
 * its fence still to be set with tally_agg_fence().
 * Returns 0, TALLY_EINVAL when N is 0 or no request has an event (or, a->mark, a request
 * has an Idempotency-Key), or TALLY_ENOMEM. */
int tally_agg_build(struct tally_agg *a, struct tally_agg_req *const *reqs, size_t n,
                    const char *attempt);

/* Set the fence of the unit last built: FENCE_MS on Redis's clock (Unix ms; see
 * tally/fence.h), written over the previous one, so that each send of the unit carries its
 * own. A unit is built with fence 0: it would be refused. */
void tally_agg_fence(struct tally_agg *a, int64_t fence_ms);

/* Is REPLY the script's refusal of a unit past its fence ({"fenced"})? */
bool tally_agg_fenced(const redisReply *reply);

/* Read the script's REPLY for the unit last built from REQS and fill each request's answer
 * (and a->expired_day, a->expired_hour, a->skipped).
 * Returns 0, or TALLY_EREDIS when the reply is an error or not of the script's shape. */
int tally_agg_apply_reply(struct tally_agg *a, const redisReply *reply,
                          struct tally_agg_req *const *reqs, size_t n);

/* With a journal: add what the unit last built from its requests appended to the journal,
 * as its REPLY (read by tally_agg_apply_reply() already) says -- the segments applied now,
 * each view counted unless the script found it a repeat -- to M, filed in the unit's hour.
 * Call it before the requests are answered (the records point into them).
 * Returns 0, TALLY_EREDIS (a reply of another shape) or TALLY_ENOMEM; on either, M holds
 * part of the unit. */
int tally_agg_merge(struct tally_agg *a, const redisReply *reply, struct tally_merge *m);

/* The records of the unit last built: how many, and record I's article id (*LEN bytes, not
 * NUL-terminated; it points into the requests, valid until they are answered). */
size_t tally_agg_records(const struct tally_agg *a);
const char *tally_agg_record_id(const struct tally_agg *a, size_t i, size_t *len);

/* ---- A part of a journal's fold on a Redis Cluster (src/scripts/cpart.lua) ----
 *
 * The keys the call of cpart.lua that counts CHUNK in bucket BUCKET for the journal of
 * WRITER (WRITER_LEN bytes: its name's tail, "P{jj}q:<writer>") must declare, in the order
 * it takes them: first the journal's cursor in the bucket, "P{bb}f:<writer>", then every key
 * count_record() (src/scripts/count.lua) may touch for CHUNK's records -- per record its
 * totals "P{bb}a:<id>", with visitors its day's estimate "P{bb}v:<day>:<id>"; per hour of the
 * chunk, the day, hour and all-time keys of each metric a record counts there
 * ("P{bb}d:<metric>:<day>", "P{bb}h:<metric>:<hour>", "P{bb}t:<metric>": views, visitors,
 * shares, comments and each sum, a sum this collector does not know by its name too) and, if
 * one of them is kept in the site totals, "P{bb}s:<day>" and "P{bb}s:all". The same keys a
 * unit declares for the same records (agg_declare_article(), agg_declare_bucket()): a key
 * may be declared twice or without being touched (harmless: one slot), never missed.
 * CHUNK (LEN bytes) is one bucket's merged records as src/scripts/cplan.lua answers them:
 * per record the Unix time of its hour, then its tokens as count.lua reads them, all joined
 * by "\n". The keys are appended to OUT as RESP bulk strings (to follow numkeys). Pure.
 * Returns the number of keys, TALLY_EINVAL or TALLY_ENOMEM; on an error OUT is as it was.
 * TALLY_EINVAL sets *WHY (static text) to what was wrong: BUCKET out of range, CHUNK not of
 * that form or holding a record of another bucket, or a key longer than TALLY_KEY_MAX allows
 * (an id or a metric's name too long: a key left out would not be declared, and the part
 * would be refused while its slot moves, or worse, so the chunk is refused whole). */
int tally_agg_part_keys(struct tally_buf *out, const char *prefix, unsigned bucket,
                        const char *writer, size_t writer_len, const char *chunk, size_t len,
                        const char **why);

#endif
