/* fold_cluster.c -- a worker's journal on a Redis Cluster (see tally/fold.h): its tag, its
 * heartbeat in the registry, its folds (a plan of the oldest entries in the journal's slot,
 * then each bucket's part of it counted in the bucket's slot behind the journal's cursor
 * there), the folds of journals whose writer is gone, a DELETE's folds of every journal, and
 * the last steps of a stop. */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/agg.h"
#include "tally/buf.h"
#include "tally/cache.h"
#include "tally/clock.h"
#include "tally/error.h"
#include "tally/fence.h"
#include "tally/fold.h"
#include "tally/keys.h"
#include "tally/known.h"
#include "tally/log.h"
#include "tally/merge.h"
#include "tally/metrics.h"
#include "tally/model.h"
#include "tally/redis.h"
#include "tally/store.h"
#include "fold_private.h"

#define CFOLD_PLAN_EVENTS 4000     /* a plan takes about this many events' entries (at least
                                    * one): its parts merge them per article and hour */
#define CFOLD_OTHERS_ENTRIES 16   /* a plan of another's journal (a reclaim, a DELETE's): at
                                    * most this many entries, whose sizes the folder does not
                                    * know (a unit is at most 2,000 events) */
#define CFOLD_HEARTBEAT_MS 1000    /* how often a folder renews its journal's registry score */
#define CFOLD_HEARTBEAT_RETRY_MS 100 /* until the first is confirmed */
#define CFOLD_REDIRECTS 5          /* MOVED/ASK followed per call */
#define CFOLD_ID_MAX 48            /* a stream id's text, "<ms>-<seq>" */
#define CFOLD_PASSED 16            /* journals whose reclaim failed, passed over for a while:
                                    * as many as cstale.lua looks at (its SPREAD) */
#define CFOLD_PASSED_MS 5000       /* for this long */

enum cfold_kind {
    CFOLD_OWN,     /* the folder's own journal: runs for ever, feeds what reads wait for */
    CFOLD_RECLAIM, /* a journal whose writer is gone: folded until empty, then dropped */
    CFOLD_DRAIN,   /* a DELETE's: folded up to the entry that was last when it arrived */
};

enum cfold_state {
    CFOLD_IDLE,     /* nothing in flight */
    CFOLD_PLANNING, /* a cplan in flight */
    CFOLD_HOLDING,  /* a plan came, its parts not sent yet (the own job, between intervals) */
    CFOLD_COUNTING, /* its parts in flight */
};

struct cfold_job;

/* A call other than a part's: its body, kept until its answer, and what sending it again
 * after a MOVED or ASK takes (cfold_call_send(), cfold_call_follow()). */
struct cfold_call {
    struct tally_buf body;
    enum tally_script script;
    size_t nargs;
    unsigned redirects;
};

/* One bucket's part of a plan: its chunk in JOB->chunks, its call's body in JOB->bodies. */
struct cfold_part {
    struct cfold_job *job;
    unsigned bucket;
    size_t chunk_at, chunk_len;
    size_t body_at, body_len, nargs;
    unsigned redirects;
};

struct cfold_drain;

/* The folds of one journal. */
struct cfold_job {
    struct tally_folder *f;
    enum cfold_kind kind;
    enum cfold_state state;
    unsigned bucket;                    /* the journal's tag */
    char writer[TALLY_KEY_MAX];         /* names the cursors P{bb}f:<writer> */
    char journal[TALLY_KEY_MAX], plan[TALLY_KEY_MAX], trimmed[TALLY_KEY_MAX];
    char first[CFOLD_ID_MAX], last[CFOLD_ID_MAX]; /* the plan at hand */
    long long entries;                  /* its entries */
    bool done;                          /* every part of it was answered: the next cplan
                                         * names it, and trims it */
    long long done_entries;             /* the entries of the plan named done */
    bool failed;                        /* a part of the plan at hand failed */
    bool counted;                       /* a part of it was counted here (not "done") */
    bool merged;                        /* CFOLD_OWN: the cplan in flight offers the oldest
                                         * batch (see cplan.lua) */
    uint64_t merged_entry;              /* that batch's first entry */
    bool from_merge;                    /* the plan at hand's parts are of that batch */
    char overlap[CFOLD_ID_MAX];         /* the earliest cursor a part found inside the plan
                                         * (cpart.lua's "overlap"), or "": the next cplan
                                         * plans up to it */
    char refused[CFOLD_ID_MAX];         /* the first id of the last plan with a part whose
                                         * keys could not be listed (said once a plan) */
    size_t parts_left;
    struct cfold_part *parts;
    size_t n_parts, cap_parts;
    struct tally_buf chunks, bodies;    /* the plan's chunks; the parts' calls */
    struct cfold_call call;             /* a cplan, or another call about the journal */
    struct tally_buf keys;              /* scratch: one part's keys */
    char stamp[11];                     /* the parts were told of KNOWN as of this hour */
    uint32_t forgets;                   /* and these forgets */
    char upto[CFOLD_ID_MAX];            /* CFOLD_DRAIN: the last entry when the DELETE came */
    struct cfold_drain *drain;          /* CFOLD_DRAIN: whose */
    struct cfold_job *next;             /* CFOLD_DRAIN: the drain's next job */
};

/* A DELETE's folds: a job per journal of the registry. */
struct cfold_drain {
    struct tally_folder *f;
    tally_folder_drained_cb *done;
    void *arg;
    size_t pending;                     /* the registry read, the journals' last entries, jobs */
    int status;
    struct cfold_job *jobs;
    struct cfold_call call;             /* the registry read */
    unsigned steps;                     /* the jobs' cplan and cpart calls sent */
};

enum cfold_retire {
    CFOLD_LIVE,
    CFOLD_DROPPING, /* cdrop of the emptied journal in flight */
    CFOLD_LEAVING,  /* its ZREM from the registry in flight */
    CFOLD_RETIRED,
};

struct fold_cluster {
    struct cfold_job own, reclaim;
    char writer[TALLY_KEY_MAX];
    bool chosen;                        /* the journal's tag is chosen */
    bool beating;                       /* a cheartbeat in flight */
    struct cfold_call beat;             /* its call */
    uint64_t beat_sent;                 /* ms (tally_now_ms): it was sent */
    _Atomic uint64_t confirmed_sent;    /* ms (tally_now_ms): the last heartbeat confirmed was
                                         * sent (0: none yet), see tally_folder_journal_by() */
    bool looking;                       /* a cstale, cdrop or cgone of a reclaim in flight */
    struct {                            /* journals whose reclaim failed: the looks pass over
                                         * them until UNTIL (ms, tally_now_ms) */
        char journal[TALLY_KEY_MAX];
        uint64_t until;
    } passed[CFOLD_PASSED];
    int sibling;                        /* its place in cfold_siblings, or -1 */
    enum cfold_retire retire;
    struct event *beat_ev;
};

/* The journals of this process's folders, so that a reclaim passes over its siblings'. Their
 * names are copied here, into a table that outlives every folder, under a lock: a worker never
 * reads a folder of another thread, which may be freed (a folder leaves the table before it is
 * freed, and stays out of it while it goes: no thread holds its name then). Taken by each
 * worker's look and its reply (once a second), and once at a folder's start and end: never on
 * a request's path. */
static struct {
    pthread_mutex_t lock;
    bool used[TALLY_THREADS_MAX];
    char journal[TALLY_THREADS_MAX][TALLY_KEY_MAX];
} cfold_siblings = {.lock = PTHREAD_MUTEX_INITIALIZER};
static _Atomic unsigned cfold_chosen; /* journals whose tag was chosen: the next master */
static _Atomic unsigned cfold_offset = UINT_MAX; /* the process's first master: collectors of
                                                   * a few workers each spread over them all */

static void cfold_plan(struct cfold_job *j);
static void cfold_count(struct cfold_job *j);
static void cfold_job_end(struct cfold_job *j, bool ok, bool empty);

/* ---- Names ---- */

/* The journal's keys for the writer WRITER and the tag of BUCKET into J. Returns 0, or
 * TALLY_EINVAL when a key does not fit. */
static int cfold_names(struct cfold_job *j, const char *prefix, unsigned bucket,
                       const char *writer, size_t len)
{
    if (len >= sizeof(j->writer) ||
        tally_key_make(j->journal, sizeof(j->journal), prefix, bucket, 'q', writer, len) == 0 ||
        tally_key_make(j->plan, sizeof(j->plan), prefix, bucket, 'p', writer, len) == 0 ||
        tally_key_make(j->trimmed, sizeof(j->trimmed), prefix, bucket, 'n', writer, len) == 0)
        return TALLY_EINVAL;
    memcpy(j->writer, writer, len);
    j->writer[len] = '\0';
    j->bucket = bucket;
    return 0;
}

/* Read the journal's name "P{bb}q:<writer>" (LEN bytes) into J's keys. */
static int cfold_parse(struct cfold_job *j, const char *prefix, const char *name, size_t len)
{
    size_t pl = strlen(prefix);
    char hex[3];
    char *end;
    unsigned long b;

    if (len < pl + 7 || memcmp(name, prefix, pl) != 0 || name[pl] != '{' || name[pl + 3] != '}' ||
        name[pl + 4] != 'q' || name[pl + 5] != ':')
        return TALLY_EINVAL;
    hex[0] = name[pl + 1];
    hex[1] = name[pl + 2];
    hex[2] = '\0';
    b = strtoul(hex, &end, 16);
    if (*end != '\0' || b >= TALLY_BUCKETS)
        return TALLY_EINVAL;
    return cfold_names(j, prefix, (unsigned)b, name + pl + 6, len - pl - 6);
}

/* Stream ids "<ms>-<seq>" compared as numbers: negative, 0 or positive as A is before, the
 * same as or after B. */
static int cfold_id_cmp(const char *a, const char *b)
{
    unsigned long long am = strtoull(a, NULL, 10), bm = strtoull(b, NULL, 10);
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad != NULL ? strtoull(ad + 1, NULL, 10) : 0;
    unsigned long long bs = bd != NULL ? strtoull(bd + 1, NULL, 10) : 0;

    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

static bool cfold_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

/* ---- Sending ---- */

#define CFOLD_COMMAND TALLY_SCRIPTS /* not a function: the call's body is a whole command */

/* Send SCRIPT's call BODY (kept by the caller until DONE) for the keys of SLOT, or after a
 * redirection to ST. With CFOLD_COMMAND, BODY[AT, AT+LEN) is a whole command in RESP (NARGS
 * unused). Returns 0 or a negative TALLY_E* code (DONE never called). */
static int cfold_eval(struct tally_folder *f, unsigned slot, struct tally_store *st,
                      bool asking, enum tally_script script, const struct tally_buf *body,
                      size_t at, size_t len, size_t nargs, tally_store_reply_cb *done, void *arg)
{
    if (st == NULL)
        st = tally_redis_for_slot(f->router, slot);
    if (st == NULL || !tally_store_ready(st) || body->oom)
        return TALLY_EUNAVAIL;
    if (script == CFOLD_COMMAND)
        return tally_store_formatted(st, asking, body->data + at, len, done, arg);
    return tally_store_eval_asking(st, asking, script, body->data + at, len, nargs, done, arg);
}

/* After the reply (STATUS, REPLY) to a call that cfold_eval() sent with these arguments: when
 * REPLY is a MOVED or ASK and the call has followed fewer than CFOLD_REDIRECTS (*REDIRECTS
 * counts them), send it again where REPLY says and return true: DONE runs again, with the
 * answer from there. False: REPLY is the answer. */
static bool cfold_follow(struct tally_folder *f, int status, const redisReply *reply,
                         unsigned *redirects, enum tally_script script,
                         const struct tally_buf *body, size_t at, size_t len, size_t nargs,
                         tally_store_reply_cb *done, void *arg)
{
    struct tally_store *to;
    bool asking;

    if (status != 0 || reply->type != REDIS_REPLY_ERROR || ++*redirects > CFOLD_REDIRECTS)
        return false;
    to = tally_redis_redirect(f->router, reply, &asking);
    return to != NULL && cfold_eval(f, 0, to, asking, script, body, at, len, nargs, done, arg) == 0;
}

/* Send CALL, SCRIPT's call of NARGS arguments in its body (or with CFOLD_COMMAND a whole
 * command), for the keys of SLOT: cfold_eval(), its redirects counted from none. */
static int cfold_call_send(struct tally_folder *f, struct cfold_call *call, unsigned slot,
                           enum tally_script script, size_t nargs, tally_store_reply_cb *done,
                           void *arg)
{
    call->script = script;
    call->nargs = nargs;
    call->redirects = 0;
    return cfold_eval(f, slot, NULL, false, script, &call->body, 0, call->body.len, nargs, done,
                      arg);
}

/* cfold_follow() for the reply (STATUS, REPLY) to CALL. */
static bool cfold_call_follow(struct tally_folder *f, struct cfold_call *call, int status,
                              const redisReply *reply, tally_store_reply_cb *done, void *arg)
{
    return cfold_follow(f, status, reply, &call->redirects, call->script, &call->body, 0,
                        call->body.len, call->nargs, done, arg);
}

/* The registry's slot: its calls go there. */
static unsigned cfold_registry_slot(const struct tally_folder *f)
{
    return tally_key_slot(f->registry, strlen(f->registry));
}

/* The command of the N words ARGV into B, in RESP: a call of CFOLD_COMMAND. */
static void cfold_put_command(struct tally_buf *b, size_t n, const char *const *argv)
{
    tally_buf_reset(b);
    tally_buf_add(b, "*", 1);
    tally_buf_add_u64(b, n);
    tally_buf_add(b, "\r\n", 2);
    for (size_t i = 0; i < n; i++)
        tally_buf_add_bulk(b, argv[i], strlen(argv[i]));
}

/* ---- A job: plan, parts, plan ---- */

static void cfold_job_init(struct cfold_job *j, struct tally_folder *f, enum cfold_kind kind)
{
    memset(j, 0, sizeof(*j));
    j->f = f;
    j->kind = kind;
    tally_buf_init(&j->chunks);
    tally_buf_init(&j->bodies);
    tally_buf_init(&j->call.body);
    tally_buf_init(&j->keys);
}

static void cfold_job_release(struct cfold_job *j)
{
    tally_buf_release(&j->chunks);
    tally_buf_release(&j->bodies);
    tally_buf_release(&j->call.body);
    tally_buf_release(&j->keys);
    free(j->parts);
    j->parts = NULL;
    j->n_parts = j->cap_parts = 0;
}

/* A job's journal: the slot of its tag. */
static unsigned cfold_slot(const struct cfold_job *j)
{
    return tally_key_bucket_slot(j->bucket);
}

/* Keep the plan of REPLY ({first, last, n, left, nparts, tag, chunk, ...}) in J. Returns
 * false when it is not of that shape. */
static bool cfold_keep_plan(struct cfold_job *j, const redisReply *reply)
{
    const redisReply *const *e = (const redisReply *const *)reply->element;
    long long nparts;

    if (reply->elements < 5 || !cfold_str(e[0]) || !cfold_str(e[1]) ||
        e[0]->len >= CFOLD_ID_MAX || e[1]->len >= CFOLD_ID_MAX ||
        e[2]->type != REDIS_REPLY_INTEGER || e[3]->type != REDIS_REPLY_INTEGER ||
        e[4]->type != REDIS_REPLY_INTEGER)
        return false;
    nparts = e[4]->integer;
    if (nparts < 0 || reply->elements != 5 + 2 * (size_t)nparts)
        return false;
    if (tally_grow(&j->parts, &j->cap_parts, (size_t)nparts, sizeof(*j->parts)) < 0)
        return false;
    memcpy(j->first, e[0]->str, e[0]->len);
    j->first[e[0]->len] = '\0';
    memcpy(j->last, e[1]->str, e[1]->len);
    j->last[e[1]->len] = '\0';
    j->entries = e[2]->integer;
    j->from_merge = false;
    tally_buf_reset(&j->chunks);
    j->n_parts = 0;
    for (size_t i = 5; i < reply->elements; i += 2) {
        struct cfold_part *p = &j->parts[j->n_parts];
        char hex[3] = {0};
        char *end;
        unsigned long b;

        if (!cfold_str(e[i]) || e[i]->len != 2 || e[i + 1]->type != REDIS_REPLY_STRING)
            return false;
        memcpy(hex, e[i]->str, 2);
        b = strtoul(hex, &end, 16);
        if (*end != '\0' || b >= TALLY_BUCKETS)
            return false;
        memset(p, 0, sizeof(*p));
        p->job = j;
        p->bucket = (unsigned)b;
        p->chunk_at = j->chunks.len;
        p->chunk_len = e[i + 1]->len;
        tally_buf_add(&j->chunks, e[i + 1]->str, e[i + 1]->len);
        j->n_parts++;
    }
    return !j->chunks.oom;
}

/* Keep the plan of REPLY ({first, last, n, left, -1}: the oldest batch, offered by J's cplan)
 * in J, each bucket's part from the batch's merge. Returns false when the batch is not the
 * plan (then the plan, stored, comes back from the journal at the next cplan). */
static bool cfold_keep_merged(struct cfold_job *j, const redisReply *reply)
{
    struct tally_merge_part mp[TALLY_BUCKETS];
    const redisReply *const *e = (const redisReply *const *)reply->element;
    const struct fold_batch *b = fold_batch_from(j->f, j->merged_entry);
    int n;

    if (!j->merged || b == NULL || b->first_entry != j->merged_entry ||
        e[2]->integer != (long long)b->entries || strlen(b->first) != e[0]->len ||
        memcmp(b->first, e[0]->str, e[0]->len) != 0 || strlen(b->last) != e[1]->len ||
        memcmp(b->last, e[1]->str, e[1]->len) != 0 ||
        tally_grow(&j->parts, &j->cap_parts, TALLY_BUCKETS, sizeof(*j->parts)) < 0)
        return false;
    tally_buf_reset(&j->chunks);
    if ((n = tally_merge_put_buckets(b->m, &j->chunks, mp)) < 0)
        return false;
    memcpy(j->first, b->first, e[0]->len + 1);
    memcpy(j->last, b->last, e[1]->len + 1);
    j->entries = e[2]->integer;
    j->from_merge = true;
    j->n_parts = (size_t)n;
    for (size_t i = 0; i < j->n_parts; i++)
        j->parts[i] = (struct cfold_part){.job = j, .bucket = mp[i].bucket,
                                          .chunk_at = mp[i].at, .chunk_len = mp[i].len};
    return true;
}

/* Part P's call: KEYS the cursor and every key counting its chunk may touch
 * (tally_agg_part_keys()); ARGV P model first_id last_id hour fresh chunk
 * (src/scripts/cpart.lua). */
static void cfold_put_part(struct cfold_job *j, struct cfold_part *p)
{
    struct tally_folder *f = j->f;
    struct tally_buf *b = &j->bodies;
    uint64_t touched[TALLY_BUCKETS / 64] = {0};
    char list[TALLY_FRESH_MAX];
    const char *why;
    int nkeys;
    size_t n;

    tally_buf_reset(&j->keys);
    nkeys = tally_agg_part_keys(&j->keys, f->cfg->prefix, p->bucket, j->writer,
                                strlen(j->writer), j->chunks.data + p->chunk_at, p->chunk_len,
                                &why);
    p->body_at = b->len;
    p->body_len = 0;
    if (nkeys < 0) {
        /* The part is not sent, and its plan fails: it is tried again, and refused again,
         * so it is said once a plan. */
        if (strcmp(j->refused, j->first) != 0)
            log_error("cannot list the keys of bucket %02x's part of the plan %s-%s of '%s': "
                      "%s", p->bucket, j->first, j->last, j->journal,
                      nkeys == TALLY_EINVAL ? why : tally_strerror(nkeys));
        memcpy(j->refused, j->first, sizeof(j->refused));
        return;
    }
    tally_buf_add_bulk_i64(b, nkeys);
    tally_buf_add(b, j->keys.data, j->keys.len);
    touched[p->bucket / 64] = UINT64_C(1) << (p->bucket % 64);
    n = tally_known_fresh(f->known->day, f->known->hour, touched, list);
    tally_buf_add_bulk(b, f->cfg->prefix, strlen(f->cfg->prefix));
    tally_buf_add_bulk(b, f->model, strlen(f->model));
    tally_buf_add_bulk(b, j->first, strlen(j->first));
    tally_buf_add_bulk(b, j->last, strlen(j->last));
    tally_buf_add_bulk(b, j->stamp, strlen(j->stamp));
    tally_buf_add_bulk(b, list, n);
    tally_buf_add_bulk(b, j->chunks.data + p->chunk_at, p->chunk_len);
    if (j->keys.oom)
        b->oom = true;
    p->body_len = b->len - p->body_at;
    p->nargs = 1 + (size_t)nkeys + 7;
}

/* A part failed: its plan is tried again from cplan, without naming it done. */
static void cfold_part_failed(struct cfold_job *j, const char *why)
{
    if (!j->failed && why != NULL)
        log_warn("a fold's part was not counted (%s): the plan is folded again", why);
    j->failed = true;
}

static void cfold_parts_end(struct cfold_job *j);

static void on_part_reply(int status, redisReply *reply, void *arg)
{
    struct cfold_part *p = arg;
    struct cfold_job *j = p->job;
    struct tally_folder *f = j->f;

    if (cfold_follow(f, status, reply, &p->redirects, TALLY_SCRIPT_CPART, &j->bodies,
                     p->body_at, p->body_len, p->nargs, on_part_reply, p))
        return;
    if (status != 0)
        cfold_part_failed(j, tally_strerror(status));
    else if (reply->type == REDIS_REPLY_ERROR)
        cfold_part_failed(j, reply->str);
    else if (fold_said(reply, "done"))
        ; /* counted already, by this plan's earlier try or by another folder */
    else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
             cfold_str(reply->element[0]) && strcmp(reply->element[0]->str, "overlap") == 0 &&
             cfold_str(reply->element[1]) && reply->element[1]->len < CFOLD_ID_MAX) {
        /* The bucket counted entries of this plan already: the journal's master failed over
         * before a trim reached its replica. Nothing counted; the plan is made again to end
         * at the earliest such cursor (cplan.lua's upto). */
        if (j->overlap[0] == '\0' || cfold_id_cmp(reply->element[1]->str, j->overlap) < 0) {
            memcpy(j->overlap, reply->element[1]->str, reply->element[1]->len);
            j->overlap[reply->element[1]->len] = '\0';
        }
        cfold_part_failed(j, NULL);
    }
    else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
        cfold_part_failed(j, "unexpected reply");
    else {
        j->counted = true;
        fold_bump(f, reply->element[0]);
        fold_skipped(f, reply->element[1], reply->element[2]);
        if (reply->element[3]->type == REDIS_REPLY_STRING &&
            tally_known_read(reply->element[3]->str, reply->element[3]->len, f->expired_day,
                             f->expired_hour) == 0)
            tally_known_learn(f->known, j->stamp, j->forgets, tally_epochs_forgets(f->epochs),
                              f->expired_day, f->expired_hour);
    }
    if (--j->parts_left == 0)
        cfold_parts_end(j);
}

/* Send every part of J's plan at once. */
static void cfold_count(struct cfold_job *j)
{
    struct tally_folder *f = j->f;

    j->state = CFOLD_COUNTING;
    j->failed = false;
    j->counted = false;
    j->done = false;
    tally_known_update(f->known, (int64_t)tally_clock_now(), tally_now_ms(),
                       tally_epochs_forgets(f->epochs));
    memcpy(j->stamp, f->known->stamp, sizeof(j->stamp));
    j->forgets = f->known->forgets;
    tally_buf_reset(&j->bodies);
    for (size_t i = 0; i < j->n_parts; i++)
        cfold_put_part(j, &j->parts[i]);
    /* One more than the parts: the last reply cannot end the plan while parts are sent. */
    j->parts_left = j->n_parts + 1;
    for (size_t i = 0; i < j->n_parts; i++) {
        struct cfold_part *p = &j->parts[i];

        p->redirects = 0;
        if (p->body_len == 0) {
            cfold_part_failed(j, NULL); /* its keys could not be listed: said above */
            j->parts_left--;
        } else if (cfold_eval(f, tally_key_bucket_slot(p->bucket), NULL, false,
                              TALLY_SCRIPT_CPART, &j->bodies, p->body_at, p->body_len, p->nargs,
                              on_part_reply, p) < 0) {
            cfold_part_failed(j, "redis is not ready");
            j->parts_left--;
        } else if (j->kind == CFOLD_DRAIN) {
            j->drain->steps++;
        }
    }
    if (--j->parts_left == 0)
        cfold_parts_end(j);
}

/* Every part of the plan answered. */
static void cfold_parts_end(struct cfold_job *j)
{
    struct tally_folder *f = j->f;

    j->state = CFOLD_IDLE;
    if (j->overlap[0] != '\0') {
        /* Planned again at once, up to the cursor found inside it (not a failure: nothing is
         * wrong with Redis). */
        log_warn("a fold's plan of '%s' went past entries a bucket counted already (the "
                 "journal's master failed over before a trim reached its replica): planned "
                 "again up to %s", j->journal, j->overlap);
        tally_metric_add(&f->metrics->fold_stale, 1);
        cfold_plan(j);
        return;
    }
    if (j->failed) {
        tally_metric_add(&f->metrics->fold_errors, 1);
        cfold_job_end(j, false, false);
        return;
    }
    j->done = true;
    j->done_entries = j->entries;
    /* A journal of a writer gone may be folded by several collectors at once: its entries
     * are this one's when it counted a part of them. */
    if (j->kind == CFOLD_RECLAIM && j->counted) {
        tally_metric_add(&f->metrics->reclaimed, (uint64_t)j->entries);
    } else if (j->kind == CFOLD_OWN) {
        tally_metric_add(&f->metrics->folds, 1);
        tally_metric_add(&f->metrics->fold_entries, (uint64_t)j->entries);
        if (j->from_merge)
            tally_metric_add(&f->metrics->fold_merged, 1);
    }
    /* The next plan trims this one: at once, so that what it counted is known folded. */
    cfold_plan(j);
}

static void on_plan_reply(int status, redisReply *reply, void *arg);

/* cplan: KEYS journal plan trimmed, ARGV P model count done_first done_last upto (the cursor
 * a part found inside the last plan, or ""), and for the own journal when its oldest batch
 * comes first after the plan done: n first last first_unit last_unit first_number
 * last_number of the batch (see cplan.lua), which then needs no merge in Redis. */
static void cfold_plan(struct cfold_job *j)
{
    struct tally_folder *f = j->f;
    struct tally_buf *b = &j->call.body;
    struct fold_batch *mb = NULL;
    size_t count = 1, events = 0, nargs = 10;

    j->merged = false;
    if (j->kind == CFOLD_OWN) {
        /* The entries after the plan done, up to a plan's worth and not into the oldest
         * batch: a plan of the journal's makes way for the batch's. */
        size_t start = j->done && (size_t)j->done_entries < f->len ? (size_t)j->done_entries : 0;
        uint64_t head = atomic_load(&f->folded) + start;
        size_t limit = f->len - start;

        mb = fold_batch_from(f, head);
        if (mb != NULL && mb->first_entry > head && mb->first_entry - head < limit)
            limit = (size_t)(mb->first_entry - head);
        count = 0;
        while (count < limit &&
               (count == 0 || events + f->ring[(f->head + start + count) % f->cap] <=
                                  CFOLD_PLAN_EVENTS))
            events += f->ring[(f->head + start + count++) % f->cap];
        if (count == 0)
            count = 1;
        if (mb == NULL || mb->first_entry != head || mb->entries == 0 || j->overlap[0] != '\0')
            mb = NULL;
    } else {
        count = CFOLD_OTHERS_ENTRIES; /* another's journal: units of unknown size */
    }
    tally_buf_reset(b);
    tally_buf_add_bulk(b, "3", 1);
    tally_buf_add_bulk(b, j->journal, strlen(j->journal));
    tally_buf_add_bulk(b, j->plan, strlen(j->plan));
    tally_buf_add_bulk(b, j->trimmed, strlen(j->trimmed));
    tally_buf_add_bulk(b, f->cfg->prefix, strlen(f->cfg->prefix));
    tally_buf_add_bulk(b, f->model, strlen(f->model));
    tally_buf_add_bulk_i64(b, (int64_t)count);
    tally_buf_add_bulk(b, j->done ? j->first : "", j->done ? strlen(j->first) : 0);
    tally_buf_add_bulk(b, j->done ? j->last : "", j->done ? strlen(j->last) : 0);
    tally_buf_add_bulk(b, j->overlap, strlen(j->overlap));
    j->overlap[0] = '\0';
    if (mb != NULL) {
        if (fold_batch_newest(f, mb))
            f->b_open = false; /* what comes next goes to a batch of its own */
        tally_buf_add_bulk_i64(b, (int64_t)mb->entries);
        tally_buf_add_bulk(b, mb->first, strlen(mb->first));
        tally_buf_add_bulk(b, mb->last, strlen(mb->last));
        tally_buf_add_bulk(b, mb->first_u, strlen(mb->first_u));
        tally_buf_add_bulk(b, mb->last_u, strlen(mb->last_u));
        fold_put_seq(b, mb->first_seq);
        fold_put_seq(b, mb->last_seq);
        j->merged = true;
        j->merged_entry = mb->first_entry;
        nargs = 17;
    }
    if (cfold_call_send(f, &j->call, cfold_slot(j), TALLY_SCRIPT_CPLAN, nargs, on_plan_reply,
                        j) < 0) {
        cfold_job_end(j, false, false);
        return;
    }
    if (j->kind == CFOLD_DRAIN)
        j->drain->steps++;
    j->state = CFOLD_PLANNING;
}

static void on_plan_reply(int status, redisReply *reply, void *arg)
{
    struct cfold_job *j = arg;
    struct tally_folder *f = j->f;
    long long trimmed = j->done ? j->done_entries : 0;

    if (cfold_call_follow(f, &j->call, status, reply, on_plan_reply, j))
        return;
    j->state = CFOLD_IDLE;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused a fold's plan of '%s': %s", j->journal, reply->str);
        tally_metric_add(&f->metrics->fold_errors, 1);
        /* DONE stays: a plan it trimmed already is no longer the one stored, so naming it
         * again trims nothing. */
        cfold_job_end(j, false, false);
        return;
    }
    if (fold_said(reply, "empty") ||
        (reply->elements == 2 && cfold_str(reply->element[0]) &&
         strcmp(reply->element[0]->str, "empty") == 0)) {
        long long left = reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_INTEGER
                             ? reply->element[1]->integer
                             : 0;

        j->done = false;
        if (j->kind == CFOLD_OWN)
            fold_left(f, left, trimmed);
        cfold_job_end(j, true, true);
        return;
    }
    j->done = false;
    if (reply->elements == 5 && reply->element[4]->type == REDIS_REPLY_INTEGER &&
        reply->element[4]->integer == -1 && cfold_str(reply->element[0]) &&
        cfold_str(reply->element[1]) && reply->element[2]->type == REDIS_REPLY_INTEGER &&
        reply->element[3]->type == REDIS_REPLY_INTEGER) {
        if (!cfold_keep_merged(j, reply)) {
            log_warn("a fold's plan of '%s' is not the batch it was offered", j->journal);
            tally_metric_add(&f->metrics->fold_errors, 1);
            cfold_job_end(j, false, false);
            return;
        }
    } else if (!cfold_keep_plan(j, reply)) {
        log_warn("unexpected reply to a fold's plan of '%s'", j->journal);
        tally_metric_add(&f->metrics->fold_errors, 1);
        cfold_job_end(j, false, false);
        return;
    }
    if (j->kind == CFOLD_OWN)
        fold_left(f, reply->element[3]->integer, trimmed);
    if (j->kind == CFOLD_DRAIN && cfold_id_cmp(j->first, j->upto) > 0) {
        cfold_job_end(j, true, true); /* what the DELETE waits for is folded */
        return;
    }
    if (j->kind == CFOLD_OWN) {
        /* The plan came: what reads wait for may be folded now; the parts go now when a fold
         * is due, else at the next interval. */
        fold_ended(f, false);
        if (f->len > 0 &&
            !(f->again || atomic_load(&f->wanted) || fold_cluster_due(f) || fold_wanted(f))) {
            j->state = CFOLD_HOLDING;
            f->in_flight = false;
            fold_arm(f, f->cfg->fold_interval_ms);
            return;
        }
        f->again = false;
        atomic_store(&f->wanted, false);
    }
    cfold_count(j);
}

/* ---- The own job ---- */

static void cfold_own_end(struct tally_folder *f, bool ok, bool empty)
{
    bool wanted = atomic_exchange(&f->wanted, false), again = f->again;

    f->in_flight = false;
    f->again = false;
    if (!ok) {
        fold_ended(f, true);
        if (wanted)
            atomic_store(&f->wanted, true);
        fold_arm(f, FOLD_RETRY_MS);
        return;
    }
    fold_ended(f, false);
    (void)empty;
    if (f->len == 0)
        return;
    /* Entries whose acks came after the plan: the next, now or at the interval. */
    if (again || wanted || fold_cluster_due(f) || fold_wanted(f))
        fold_cluster_start(f);
    else
        fold_arm(f, f->cfg->fold_interval_ms);
}

void fold_cluster_start(struct tally_folder *f)
{
    struct cfold_job *j = &f->cluster->own;

    if (f->in_flight) {
        f->again = true;
        return;
    }
    atomic_store(&f->wanted, false);
    if (!f->cluster->chosen)
        return;
    if (j->state == CFOLD_HOLDING) {
        f->in_flight = true;
        cfold_count(j);
        return;
    }
    if (f->len == 0)
        return;
    f->in_flight = true;
    cfold_plan(j);
}

/* Due at once when more than a plan's worth waits beyond the plan at hand: under load plans
 * follow each other, as batches do with one Redis. */
bool fold_cluster_due(struct tally_folder *f)
{
    return f->len > 0 && f->backlog >= 2 * CFOLD_PLAN_EVENTS;
}

struct tally_store *fold_cluster_store(const struct tally_folder *f)
{
    if (!f->cluster->chosen)
        return NULL;
    return tally_redis_for_slot(f->router, cfold_slot(&f->cluster->own));
}

/* ---- Reclaim: journals whose writer is gone ---- */

static void cfold_look(struct tally_folder *f);

static void on_gone_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;

    if (cfold_call_follow(f, &f->cluster->reclaim.call, status, reply, on_gone_reply, f))
        return;
    f->cluster->looking = false;
    if (status == 0 && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis refused to remove a journal from the registry: %s", reply->str);
    if (status == 0 && reply->type != REDIS_REPLY_ERROR)
        cfold_look(f); /* there may be more */
}

static void cfold_send_gone(struct tally_folder *f)
{
    struct cfold_job *j = &f->cluster->reclaim;
    struct tally_buf *b = &j->call.body;

    tally_buf_reset(b);
    tally_buf_add_bulk(b, "1", 1);
    tally_buf_add_bulk(b, f->registry, strlen(f->registry));
    tally_buf_add_bulk(b, j->journal, strlen(j->journal));
    tally_buf_add_bulk_i64(b, TALLY_FOLD_STALE_MS);
    if (cfold_call_send(f, &j->call, cfold_registry_slot(f), TALLY_SCRIPT_CGONE, 4,
                        on_gone_reply, f) == 0)
        f->cluster->looking = true;
}

static void on_drop_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;

    if (cfold_call_follow(f, &f->cluster->reclaim.call, status, reply, on_drop_reply, f))
        return;
    f->cluster->looking = false;
    if (status != 0 || reply->type != REDIS_REPLY_INTEGER) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused to drop an emptied journal: %s", reply->str);
        return;
    }
    /* 0: entries came meanwhile (its writer is back); left to it, or to the next look. */
    if (reply->integer == 1) {
        log_info("folded and dropped the journal '%s' of a writer gone",
                 f->cluster->reclaim.journal);
        cfold_send_gone(f);
    }
}

/* cdrop: KEYS journal trimmed plan -- DEL them if the journal is empty. */
static int cfold_send_drop(struct tally_folder *f, struct cfold_job *j,
                           tally_store_reply_cb *done)
{
    struct tally_buf *b = &j->call.body;

    tally_buf_reset(b);
    tally_buf_add_bulk(b, "3", 1);
    tally_buf_add_bulk(b, j->journal, strlen(j->journal));
    tally_buf_add_bulk(b, j->trimmed, strlen(j->trimmed));
    tally_buf_add_bulk(b, j->plan, strlen(j->plan));
    return cfold_call_send(f, &j->call, cfold_slot(j), TALLY_SCRIPT_CDROP, 4, done, f);
}

/* A journal whose reclaim failed -- its slot half-moved (TRYAGAIN), its master failing over,
 * a record this version cannot fold -- is passed over by this folder's looks for
 * CFOLD_PASSED_MS, so that it holds up no other journal gone: cstale.lua looks at the few
 * stalest only. Returns true when it had a place of its own (none of the table's was taken
 * from another journal still passed over): then the next look may come at once, as it ends
 * with a journal passed over or with none to fold. */
static bool cfold_pass_over(struct fold_cluster *c, const char *journal)
{
    uint64_t now = tally_now_ms();
    size_t at = 0;
    bool own;

    for (size_t i = 0; i < CFOLD_PASSED; i++) {
        if (c->passed[i].until <= now || strcmp(c->passed[i].journal, journal) == 0) {
            at = i;
            break;
        }
        if (c->passed[i].until < c->passed[at].until)
            at = i; /* the table is full: the one passed over the longest */
    }
    own = c->passed[at].until <= now || strcmp(c->passed[at].journal, journal) == 0;
    snprintf(c->passed[at].journal, sizeof(c->passed[at].journal), "%s", journal);
    c->passed[at].until = now + CFOLD_PASSED_MS;
    return own;
}

/* The reclaim job ended: emptied, its journal is dropped and leaves the registry. */
static void cfold_reclaim_end(struct tally_folder *f, bool ok, bool empty)
{
    if (!ok && cfold_pass_over(f->cluster, f->cluster->reclaim.journal)) {
        cfold_look(f); /* another journal gone may be foldable */
        return;
    }
    if (!ok || !empty)
        return; /* again at the next look */
    if (cfold_send_drop(f, &f->cluster->reclaim, on_drop_reply) == 0)
        f->cluster->looking = true;
}

static bool cfold_sibling(const char *name, size_t len)
{
    bool found = false;

    pthread_mutex_lock(&cfold_siblings.lock);
    for (size_t i = 0; i < TALLY_THREADS_MAX && !found; i++) {
        const char *s = cfold_siblings.journal[i];

        found = cfold_siblings.used[i] && strlen(s) == len && memcmp(s, name, len) == 0;
    }
    pthread_mutex_unlock(&cfold_siblings.lock);
    return found;
}

static void on_stale_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;
    struct cfold_job *j = &f->cluster->reclaim;

    if (cfold_call_follow(f, &j->call, status, reply, on_stale_reply, f))
        return;
    f->cluster->looking = false;
    if (status != 0 || !cfold_str(reply) || reply->len == 0) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused to look for journals of writers gone: %s", reply->str);
        return;
    }
    if (cfold_sibling(reply->str, reply->len))
        return; /* this process's own (a worker that started since the look): its own */
    if (cfold_parse(j, f->cfg->prefix, reply->str, reply->len) < 0) {
        log_warn("a journal of an unexpected name in the registry: '%.*s'", (int)reply->len,
                 reply->str);
        return;
    }
    j->done = false;
    cfold_plan(j);
}

/* cstale: KEYS registry, ARGV stale_ms pick skip... (a random pick: the workers of every
 * collector spread over the journals gone, src/scripts/cstale.lua; skipped: the process's own
 * journals and those this folder passes over, cfold_pass_over()). */
static void cfold_look(struct tally_folder *f)
{
    struct fold_cluster *c = f->cluster;
    struct tally_buf *b = &c->reclaim.call.body;
    size_t nargs;

    if (c->looking || c->reclaim.state != CFOLD_IDLE || !c->chosen || c->retire != CFOLD_LIVE)
        return;
    tally_buf_reset(b);
    tally_buf_add_bulk(b, "1", 1);
    tally_buf_add_bulk(b, f->registry, strlen(f->registry));
    tally_buf_add_bulk_i64(b, TALLY_FOLD_STALE_MS);
    tally_buf_add_bulk_i64(b, (int64_t)(arc4random() & 0xffff));
    nargs = 4;
    pthread_mutex_lock(&cfold_siblings.lock);
    for (size_t i = 0; i < TALLY_THREADS_MAX; i++) {
        const char *s = cfold_siblings.journal[i];

        if (cfold_siblings.used[i]) {
            tally_buf_add_bulk(b, s, strlen(s));
            nargs++;
        }
    }
    pthread_mutex_unlock(&cfold_siblings.lock);
    for (size_t i = 0; i < CFOLD_PASSED; i++) {
        if (c->passed[i].until > tally_now_ms()) {
            tally_buf_add_bulk(b, c->passed[i].journal, strlen(c->passed[i].journal));
            nargs++;
        }
    }
    if (cfold_call_send(f, &c->reclaim.call, cfold_registry_slot(f), TALLY_SCRIPT_CSTALE, nargs,
                        on_stale_reply, f) == 0)
        c->looking = true;
}

void fold_cluster_reclaim(struct tally_folder *f)
{
    cfold_look(f);
}

/* ---- A DELETE's folds ---- */

static void cfold_drain_settle(struct cfold_drain *d)
{
    struct cfold_job *j;

    if (--d->pending > 0)
        return;
    d->done(d->status, d->steps, d->arg);
    while ((j = d->jobs) != NULL) {
        d->jobs = j->next;
        cfold_job_release(j);
        free(j);
    }
    tally_buf_release(&d->call.body);
    free(d);
}

static void cfold_drain_end(struct cfold_job *j, bool ok)
{
    struct cfold_drain *d = j->drain;

    if (!ok && d->status == 0)
        d->status = TALLY_EUNAVAIL;
    cfold_drain_settle(d);
}

/* The last entry of a journal when the DELETE came: fold up to it. */
static void on_last_reply(int status, redisReply *reply, void *arg)
{
    struct cfold_job *j = arg;
    const redisReply *e;

    if (cfold_call_follow(j->f, &j->call, status, reply, on_last_reply, j))
        return;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused to read the last entry of '%s': %s", j->journal, reply->str);
        cfold_drain_end(j, false);
        return;
    }
    if (reply->elements == 0) {
        cfold_drain_end(j, true); /* empty: nothing waits in it */
        return;
    }
    e = reply->element[0];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 1 || !cfold_str(e->element[0]) ||
        e->element[0]->len >= CFOLD_ID_MAX) {
        cfold_drain_end(j, false);
        return;
    }
    memcpy(j->upto, e->element[0]->str, e->element[0]->len);
    j->upto[e->element[0]->len] = '\0';
    cfold_plan(j);
}

/* A job for the journal NAME of the registry: its last entry first. */
static int cfold_drain_job(struct cfold_drain *d, const char *name, size_t len)
{
    struct tally_folder *f = d->f;
    struct cfold_job *j = malloc(sizeof(*j));
    const char *argv[] = {"XREVRANGE", NULL, "+", "-", "COUNT", "1"};

    if (j == NULL)
        return TALLY_ENOMEM;
    cfold_job_init(j, f, CFOLD_DRAIN);
    j->drain = d;
    j->next = d->jobs;
    d->jobs = j;
    if (cfold_parse(j, f->cfg->prefix, name, len) < 0)
        return 0; /* not a journal of ours: nothing to fold */
    argv[1] = j->journal;
    cfold_put_command(&j->call.body, 6, argv);
    if (cfold_call_send(f, &j->call, cfold_slot(j), CFOLD_COMMAND, 0, on_last_reply, j) < 0)
        return TALLY_EUNAVAIL;
    d->pending++;
    return 0;
}

static void on_journals_reply(int status, redisReply *reply, void *arg)
{
    struct cfold_drain *d = arg;

    if (cfold_call_follow(d->f, &d->call, status, reply, on_journals_reply, d))
        return;
    if (status != 0 || reply->type != REDIS_REPLY_ARRAY) {
        if (status == 0 && reply->type == REDIS_REPLY_ERROR)
            log_warn("redis refused to read the journals' registry: %s", reply->str);
        d->status = TALLY_EUNAVAIL;
    } else {
        /* Every journal's last entry is asked for at once, one round trip for them all; each
         * job folds as soon as its own answer comes, and the drain ends with the last job. */
        for (size_t i = 0; i < reply->elements && d->status == 0; i++) {
            const redisReply *e = reply->element[i];
            int rc;

            if (e->type == REDIS_REPLY_STRING &&
                (rc = cfold_drain_job(d, e->str, e->len)) < 0)
                d->status = rc;
        }
    }
    cfold_drain_settle(d);
}

int tally_folder_drain(struct tally_folder *f, tally_folder_drained_cb *done, void *arg)
{
    const char *argv[] = {"ZRANGE", f->registry, "0", "-1"};
    struct cfold_drain *d;

    if (f->cluster == NULL)
        return TALLY_EINVAL;
    if ((d = calloc(1, sizeof(*d))) == NULL)
        return TALLY_ENOMEM;
    d->f = f;
    d->done = done;
    d->arg = arg;
    d->pending = 1;
    tally_buf_init(&d->call.body);
    cfold_put_command(&d->call.body, 4, argv);
    if (cfold_call_send(f, &d->call, cfold_registry_slot(f), CFOLD_COMMAND, 0, on_journals_reply,
                        d) < 0) {
        tally_buf_release(&d->call.body);
        free(d);
        return TALLY_EUNAVAIL;
    }
    return 0;
}

/* ---- A job ended ---- */

static void cfold_job_end(struct cfold_job *j, bool ok, bool empty)
{
    j->state = CFOLD_IDLE;
    switch (j->kind) {
    case CFOLD_OWN:
        cfold_own_end(j->f, ok, empty);
        break;
    case CFOLD_RECLAIM:
        cfold_reclaim_end(j->f, ok, empty);
        break;
    case CFOLD_DRAIN:
        cfold_drain_end(j, ok);
        break;
    }
}

/* ---- The journal's tag and heartbeat ---- */

/* The journal's tag: a bucket whose slot a master owns, the masters taken in turn by the
 * process's journals from one picked at random (a hash of the first writer's random name);
 * the writer's own bucket when no master is known for some bucket. */
static bool cfold_choose(struct tally_folder *f)
{
    struct fold_cluster *c = f->cluster;
    unsigned bucket, offset;

    if (c->chosen)
        return true;
    if (!tally_redis_ready(f->router))
        return false;
    offset = UINT_MAX;
    atomic_compare_exchange_strong(&cfold_offset, &offset,
                                   tally_key_bucket(c->writer, strlen(c->writer)));
    if (!tally_redis_master_bucket(f->router,
                                   atomic_load(&cfold_offset) + atomic_fetch_add(&cfold_chosen, 1),
                                   &bucket))
        bucket = tally_key_bucket(c->writer, strlen(c->writer));
    if (cfold_names(&c->own, f->cfg->prefix, bucket, c->writer, strlen(c->writer)) < 0 ||
        cfold_names(&c->reclaim, f->cfg->prefix, bucket, c->writer, strlen(c->writer)) < 0)
        return false;
    memcpy(f->journal, c->own.journal, sizeof(f->journal));
    pthread_mutex_lock(&cfold_siblings.lock);
    for (size_t i = 0; i < TALLY_THREADS_MAX && c->sibling < 0; i++) {
        if (!cfold_siblings.used[i]) {
            memcpy(cfold_siblings.journal[i], f->journal, sizeof(cfold_siblings.journal[i]));
            cfold_siblings.used[i] = true;
            c->sibling = (int)i;
        }
    }
    pthread_mutex_unlock(&cfold_siblings.lock);
    c->chosen = true;
    return true;
}

static void cfold_beat_arm(struct fold_cluster *c, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};

    evtimer_add(c->beat_ev, &tv);
}

static void on_beat_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;
    struct fold_cluster *c = f->cluster;

    if (cfold_call_follow(f, &c->beat, status, reply, on_beat_reply, f))
        return;
    c->beating = false;
    if (status == 0 && reply->type != REDIS_REPLY_ERROR) {
        if (atomic_exchange(&c->confirmed_sent, c->beat_sent) == 0)
            log_debug("journal '%s' registered", f->journal);
    } else if (status == 0) {
        log_warn("redis refused the heartbeat of journal '%s': %s", f->journal, reply->str);
    }
}

/* cheartbeat: KEYS registry, ARGV journal. */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct tally_folder *f = arg;
    struct fold_cluster *c = f->cluster;
    struct tally_buf *b = &c->beat.body;

    (void)fd;
    (void)what;
    if (c->retire != CFOLD_LIVE)
        return;
    if (!cfold_choose(f) || c->beating) {
        cfold_beat_arm(c, CFOLD_HEARTBEAT_RETRY_MS);
        return;
    }
    tally_buf_reset(b);
    tally_buf_add_bulk(b, "1", 1);
    tally_buf_add_bulk(b, f->registry, strlen(f->registry));
    tally_buf_add_bulk(b, f->journal, strlen(f->journal));
    c->beat_sent = tally_now_ms();
    if (cfold_call_send(f, &c->beat, cfold_registry_slot(f), TALLY_SCRIPT_CHEARTBEAT, 3,
                        on_beat_reply, f) == 0)
        c->beating = true;
    cfold_beat_arm(c, atomic_load(&c->confirmed_sent) != 0 ? CFOLD_HEARTBEAT_MS
                                                            : CFOLD_HEARTBEAT_RETRY_MS);
}

/* Both below count from the sending of the last heartbeat confirmed, not from its reply: its
 * score is the registry master's clock when it ran, which was after it was sent and may have
 * been long before the reply came (a stall of that master). */
bool tally_folder_registered(const struct tally_folder *f)
{
    uint64_t sent;

    if (f->cluster == NULL)
        return true;
    sent = atomic_load(&f->cluster->confirmed_sent);
    return f->cluster->retire == CFOLD_LIVE && sent != 0 &&
           tally_now_ms() - sent < TALLY_FOLD_REGISTERED_MS;
}

/* A unit put in the journal's lane while the journal was registered may reach Redis up to
 * --hold + --redis-timeout later: a Redis down, then back; a stall. Were the heartbeats to fail
 * meanwhile, another collector could find the journal stale, fold it until empty, drop it and
 * take it out of the registry before the unit arrives: its entry would then make the journal
 * anew, out of the registry, folded by none but its writer (and never, if the writer dies).
 * So a unit bound for the journal is fenced no later than the time others may take it for gone
 * (tally_fence_journal_at()): arriving later, it is refused ("fenced", never run), and the
 * writer sends its events to their buckets instead. ack.lua cannot check the registry itself:
 * the registry is in slot {00}, the journal in its own, and a script touches one slot. */
uint64_t tally_folder_journal_by(const struct tally_folder *f)
{
    uint64_t sent;

    if (f->cluster == NULL)
        return UINT64_MAX;
    sent = atomic_load(&f->cluster->confirmed_sent);
    /* A stopping worker's journal takes nothing more: it may be dropped now. */
    if (f->cluster->retire != CFOLD_LIVE || sent == 0)
        return 0;
    return tally_fence_journal_by(sent, TALLY_FOLD_STALE_MS);
}

unsigned tally_folder_bucket(const struct tally_folder *f)
{
    return f->cluster != NULL ? f->cluster->own.bucket : 0;
}

const char *tally_folder_trimmed(const struct tally_folder *f)
{
    return f->cluster != NULL ? f->cluster->own.trimmed : "";
}

/* ---- Stopping ---- */

static void on_leave_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;

    if (cfold_call_follow(f, &f->cluster->own.call, status, reply, on_leave_reply, f))
        return;
    f->cluster->retire = CFOLD_RETIRED;
}

static void on_retire_drop_reply(int status, redisReply *reply, void *arg)
{
    struct tally_folder *f = arg;
    struct cfold_call *call = &f->cluster->own.call;
    const char *argv[] = {"ZREM", f->registry, f->journal};

    if (cfold_call_follow(f, call, status, reply, on_retire_drop_reply, f))
        return;
    /* Dropped: it leaves the registry. Not empty (or not known): it stays there, and is
     * anyone's to fold once its heartbeat is old. */
    f->cluster->retire = CFOLD_RETIRED;
    if (status != 0 || reply->type != REDIS_REPLY_INTEGER || reply->integer != 1)
        return;
    cfold_put_command(&call->body, 3, argv);
    if (cfold_call_send(f, call, cfold_registry_slot(f), CFOLD_COMMAND, 0, on_leave_reply, f) ==
        0)
        f->cluster->retire = CFOLD_LEAVING;
}

bool tally_folder_retired(struct tally_folder *f)
{
    struct fold_cluster *c = f->cluster;

    if (c == NULL || c->retire == CFOLD_RETIRED)
        return true;
    if (c->retire != CFOLD_LIVE)
        return false;
    /* Writes stop going to the journal (the writer asks tally_folder_registered()) and the
     * heartbeat stops: a journal left in the registry is folded by others. */
    c->retire = CFOLD_RETIRED;
    if (!c->chosen || f->len > 0 || f->in_flight)
        return true;
    if (cfold_send_drop(f, &c->own, on_retire_drop_reply) == 0)
        c->retire = CFOLD_DROPPING;
    return c->retire == CFOLD_RETIRED;
}

/* ---- Life ---- */

int fold_cluster_init(struct tally_folder *f, const char *writer)
{
    struct fold_cluster *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return TALLY_ENOMEM;
    f->cluster = c;
    c->sibling = -1;
    snprintf(c->writer, sizeof(c->writer), "%s", writer);
    cfold_job_init(&c->own, f, CFOLD_OWN);
    cfold_job_init(&c->reclaim, f, CFOLD_RECLAIM);
    tally_buf_init(&c->beat.body);
    c->beat_ev = evtimer_new(f->base, on_beat, f);
    if (c->beat_ev == NULL)
        return TALLY_ENOMEM;
    cfold_beat_arm(c, 0);
    return 0;
}

void fold_cluster_free(struct tally_folder *f)
{
    struct fold_cluster *c = f->cluster;

    if (c == NULL)
        return;
    if (c->sibling >= 0) {
        pthread_mutex_lock(&cfold_siblings.lock);
        cfold_siblings.used[c->sibling] = false;
        pthread_mutex_unlock(&cfold_siblings.lock);
    }
    if (c->beat_ev != NULL)
        event_free(c->beat_ev);
    cfold_job_release(&c->own);
    cfold_job_release(&c->reclaim);
    tally_buf_release(&c->beat.body);
    free(c);
    f->cluster = NULL;
}
