/* fold_private.h -- a worker's folder, shared by its single-node folds (src/fold.c) and its
 * folds on a Redis Cluster (src/fold_cluster.c); private to src/. */
#ifndef TALLY_FOLD_PRIVATE_H
#define TALLY_FOLD_PRIVATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "tally/buf.h"
#include "tally/config.h"
#include "tally/fold.h"
#include "tally/keys.h"
#include "tally/model.h"

struct tally_merge;
struct fold_cluster;

#define FOLD_EVENTS 2000       /* a fold from the journal takes at most about this many
                                  * (whole entries, at least one) */
#ifndef FOLD_BATCH_RECORDS      /* -DFOLD_BATCH_RECORDS=N builds another, to measure it */
#define FOLD_BATCH_RECORDS 10000 /* a batch closes (and its fold starts) at this many merged
                                  * records (staged in chunks of a step, a chunk a call;
                                  * on a cluster per bucket). Larger batches merge more where
                                  * batches fill before the clock closes them (20-event batches
                                  * over 10,000 Zipf-drawn articles: 1.0-1.2 Redis commands per
                                  * event against 1.5-1.7 at 4,000, and every request acknowledged
                                  * at 256 connections); the merged fold's check reads two
                                  * entries whatever the size, but the call still carries the
                                  * batch's chunks to stage them (78 at 10,000). Memory: the
                                  * records of unfolded entries, which --journal-max bounds (at
                                  * most one record per event). */
#endif
#ifndef FOLD_BATCH_EVENTS
#define FOLD_BATCH_EVENTS 50000  /* or at this many events */
#endif
#define FOLD_BATCHES 64          /* batches held at most: entries past them are folded from
                                  * the journal */
#define FOLD_RECLAIM_MS 1000     /* how often a worker looks for journals of writers gone */
#define FOLD_RECLAIM_ENTRIES 16 /* the most entries of theirs one look folds (a unit is at
                                 * most 2,000 events: a look holds Redis briefly) */
#define FOLD_RETRY_MS 100        /* after a fold refused or lost, or one that found nothing */
#define FOLD_MERGED_TRIES 3      /* merged folds of a batch refused or lost in a row before its
                                  * entries are folded from the journal instead */
#define FOLD_TOUCH 4096          /* slots of the table of articles' latest entries (a power of
                                  * two): a read waits for the entries of its articles' slots */
#define FOLD_STEP_RECORDS TALLY_FOLD_STEP_RECORDS /* a merged fold stages a batch of more than
                                  * a step in chunks of a step, each counted by a call of its
                                  * own (src/scripts/staged.lua): this many while the worker is
                                  * behind, and in a reclaim */
#define FOLD_SHORT_STEP_RECORDS TALLY_FOLD_SHORT_STEP_RECORDS /* this many while it keeps up */

/* Entries the folder merged (their acks' records added up, see tally/merge.h): a merged fold
 * (src/scripts/merged.lua) counts them once they are the oldest in the journal. */
struct fold_batch {
    struct tally_merge *m;       /* owned */
    uint64_t first_entry;        /* the index of its first entry (see appended) */
    size_t entries, events;
    char first[48], last[48];    /* the ids of its first and last entries */
    char first_u[128], last_u[128]; /* and their units' attempt markers (see ack.lua) */
    uint64_t first_seq, last_seq; /* and their numbers (0: not known, see ack.lua) */
};

struct tally_folder {
    struct event_base *base;
    struct tally_redis *router;
    const struct tally_config *cfg;
    struct tally_metrics *metrics;
    struct tally_epochs *epochs;
    /* Which keys of this day and hour have their expiry: the writer's (borrowed). A fold asks
     * the script to set it only on the others, and learns what it set. */
    struct tally_known *known;
    char known_stamp[11];        /* the fold in flight was told of KNOWN as of this hour */
    uint32_t known_forgets;      /* and these forgets */
    uint8_t expired_day[TALLY_BUCKETS], expired_hour[TALLY_BUCKETS];
    char journal[TALLY_KEY_MAX], registry[TALLY_KEY_MAX];
    char staged[TALLY_KEY_MAX];  /* the journal's staging list (see merged.lua) */
    char model[TALLY_MODEL_ARG_MAX + 1];
    /* The events of each entry appended and not known folded, oldest first: a ring. */
    uint32_t *ring;
    size_t cap, head, len;
    size_t backlog;              /* their sum */
    _Atomic uint64_t appended;   /* entries appended so far */
    _Atomic uint64_t folded;     /* of them, known folded */
    _Atomic bool wanted;         /* a reader asked for a fold */
    _Atomic uint64_t want_upto;  /* readers wait for the entries before this one: folds go on
                                  * until they are folded */
    /* Per slot of the articles' hashes (fold_slot()), the entries up to the latest holding a
     * record of an article of that slot (its index + 1; 0: none yet), and the same for the
     * latest entry whose records are not known (a unit whose reply was lost): what a read of
     * those articles waits to see folded. Written by the folder's thread, read by any. */
    _Atomic uint64_t touched[FOLD_TOUCH];
    _Atomic uint64_t blind;
    _Atomic bool blocked;        /* the last fold could not be sent or failed (Redis is down
                                  * or refuses) */
    _Atomic uint64_t tries;      /* folds that ended (answered, failed or not sent): a read
                                  * waits for one that ends after it arrived */
    void (*ended_cb)(void *arg); /* told, in the folder's thread, that a fold ended */
    void *ended_arg;
    bool in_flight, reclaiming, again;
    bool merged_in_flight;       /* the fold in flight is the oldest batch's */
    bool staged_in_flight;       /* the fold in flight counts a staged chunk */
    bool staging;                /* chunks wait in the staging list (or may: a merged fold's
                                  * reply was lost): they are counted before anything else, and
                                  * the entries they came from count as folded only then */
    unsigned merged_errors;      /* of the oldest batch's folds, refused or lost in a row */
    /* Batches of consecutive entries, oldest first: a ring. The newest takes more entries
     * while OPEN. Entries before the oldest, between two, or past FOLD_BATCHES are folded
     * from the journal (fold.lua). */
    struct fold_batch batch[FOLD_BATCHES];
    size_t b_head, b_len;
    bool b_open;
    struct tally_merge *spare[FOLD_BATCHES]; /* merges of batches gone, kept for new ones */
    size_t n_spare;
    struct tally_buf body;       /* the fold's call, kept until its reply */
    struct tally_buf reclaim;    /* the reclaim's call, kept until its reply */
    /* On a Redis Cluster (src/fold_cluster.c): the journal's folds, its heartbeat, reclaims
     * and a stop's last steps. NULL with one Redis. Owned. */
    struct fold_cluster *cluster;
    int wake_fd;                 /* eventfd: tally_folder_soon() from any thread */
    struct event *wake_ev, *timer_ev, *reclaim_ev;
};

/* ---- Shared by fold.c and fold_cluster.c ---- */

/* The oldest batch whose first entry is ENTRY (an index, see appended) or later, or NULL. */
struct fold_batch *fold_batch_from(struct tally_folder *f, uint64_t entry);

/* Is B the newest batch (the one that takes more entries while F->b_open)? */
bool fold_batch_newest(const struct tally_folder *f, const struct fold_batch *b);

/* An entry's number (see ack.lua) as an argument: "" when not known (0). */
void fold_put_seq(struct tally_buf *b, uint64_t seq);

/* A fold ended: BLOCKED when it failed or could not be sent. */
void fold_ended(struct tally_folder *f, bool blocked);

/* Bump the cache epochs of the buckets in TAGS (a string of two-hex-digit tags). */
void fold_bump(struct tally_folder *f, const redisReply *tags);

/* Commands a fold skipped (N, an integer reply) because Redis refused them, the last WHY. */
void fold_skipped(struct tally_folder *f, const redisReply *n, const redisReply *why);

/* The oldest N entries are folded. */
void fold_forget(struct tally_folder *f, size_t n);

/* Start a fold in MS unless one is armed already. */
void fold_arm(struct tally_folder *f, uint32_t ms);

/* Do readers wait for entries not folded yet? */
bool fold_wanted(struct tally_folder *f);

/* Is REPLY the one word WORD? */
bool fold_said(const redisReply *reply, const char *word);

/* A fold's reply said LEFT entries are left of those F knows of, N of them taken by this fold:
 * the others are folded (see on_fold_reply()). Returns how many went. */
size_t fold_left(struct tally_folder *f, long long left, long long n);

/* ---- The cluster's folds (src/fold_cluster.c) ---- */

/* Make F's cluster state for the journal of WRITER. Returns 0 or TALLY_ENOMEM. */
int fold_cluster_init(struct tally_folder *f, const char *writer);
void fold_cluster_free(struct tally_folder *f);

/* Start the next step of F's own job (a plan, or the parts of one held), as fold_start(). */
void fold_cluster_start(struct tally_folder *f);

/* Once a second: look for a journal whose writer is gone. */
void fold_cluster_reclaim(struct tally_folder *f);

/* Should a fold of F's journal start now rather than at the next interval? */
bool fold_cluster_due(struct tally_folder *f);

/* The connection to F's journal's master, or NULL. */
struct tally_store *fold_cluster_store(const struct tally_folder *f);

#endif
