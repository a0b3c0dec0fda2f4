/* salt.c -- the process's cache of the shared daily visitor salts, fetched from Redis by its
 * workers and shared by them. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/log.h"
#include "tally/salt.h"
#include "tally/redis.h"
#include "tally/store.h"

#define SALT_REFRESH_MS 600000 /* read a known salt again this often: Redis may have lost it */

struct salt_slot {
    char day[9];
    uint8_t salt[TALLY_SALT_LEN];
    bool known;
    uint64_t fetched_at; /* ms */
};

/* The salts of this process, one copy for all its workers: were each worker to fetch its own, a
 * worker fetching after Redis lost the salt would create a new one while the others kept the
 * old, and one visitor would be two. A fetch publishes here under the lock and bumps the
 * version; a worker copies the slots under the lock only when the version moved, so reading
 * the salt of a request is one atomic load. */
static struct {
    pthread_mutex_t lock;
    struct salt_slot slot[2];     /* guarded by lock: today and tomorrow, in either order */
    atomic_uint_fast64_t version; /* bumped under lock after every change of slot */
} salt_share = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct tally_salts {
    struct tally_redis *router; /* borrowed: the worker's */
    const char *prefix;         /* borrowed: the configuration's */
    tally_salts_cb *cb;
    void *arg;
    uint_fast64_t version;    /* of salt_share that slot copies; 0: none yet */
    struct salt_slot slot[2]; /* this worker's copy of salt_share.slot */
    char asked[2][9];         /* the days this worker has a fetch in flight for, or "" */
    bool connected;           /* tally_salts_stale() ran before: the next is a reconnect */
};

/* A fetch in flight: which day it is for. */
struct salt_fetch {
    struct tally_salts *s;
    char day[9];
};

static struct salt_slot *salt_find(struct salt_slot slot[2], const char day[9])
{
    for (int i = 0; i < 2; i++)
        if (strcmp(slot[i].day, day) == 0)
            return &slot[i];
    return NULL;
}

int tally_salt_slot(const char *day0, const char *day1, const char *day)
{
    int older = strcmp(day0, day1) <= 0 ? 0 : 1;

    if (strcmp(day0, day) == 0)
        return 0;
    if (strcmp(day1, day) == 0)
        return 1;
    return strcmp(older == 0 ? day0 : day1, day) < 0 ? older : -1;
}

/* The shared slot for DAY (emptied when it held another day), or NULL for a late answer. Call
 * with salt_share.lock held. */
static struct salt_slot *salt_slot_for(const char day[9])
{
    int i = tally_salt_slot(salt_share.slot[0].day, salt_share.slot[1].day, day);
    struct salt_slot *x;

    if (i < 0)
        return NULL;
    x = &salt_share.slot[i];
    if (strcmp(x->day, day) != 0) {
        memset(x, 0, sizeof(*x));
        memcpy(x->day, day, 9);
    }
    return x;
}

/* Bring the worker's copy up to the shared slots when they changed. */
static void salt_sync(struct tally_salts *s)
{
    if (atomic_load_explicit(&salt_share.version, memory_order_acquire) == s->version)
        return;
    pthread_mutex_lock(&salt_share.lock);
    memcpy(s->slot, salt_share.slot, sizeof(s->slot));
    s->version = atomic_load_explicit(&salt_share.version, memory_order_relaxed);
    pthread_mutex_unlock(&salt_share.lock);
}

/* Whether this worker has a fetch in flight for DAY; ASK sets (1) or clears (0) it, -1 only
 * asks. */
static bool salt_asked(struct tally_salts *s, const char day[9], int ask)
{
    for (int i = 0; i < 2; i++)
        if (strcmp(s->asked[i], day) == 0) {
            if (ask == 0)
                s->asked[i][0] = '\0';
            return true;
        }
    if (ask == 1) /* into a free place, or over the older day */
        memcpy(s->asked[strcmp(s->asked[0], s->asked[1]) <= 0 ? 0 : 1], day, 9);
    return false;
}

static void on_salt(int status, redisReply *reply, void *arg)
{
    struct salt_fetch *f = arg; /* ours: freed here */
    struct tally_salts *s = f->s;
    struct salt_slot *x;
    uint8_t salt[TALLY_SALT_LEN];
    char day[9];

    memcpy(day, f->day, 9);
    free(f);
    salt_asked(s, day, 0);
    /* Into a copy: a malformed value must not damage a salt already in use. */
    if (status < 0 || reply->type != REDIS_REPLY_STRING ||
        tally_salt_decode(reply->str, reply->len, salt) < 0) {
        if (status == 0 && reply->type == REDIS_REPLY_NIL)
            log_warn("the visitor salt of %s is missing in redis; asking again", day);
        else if (status == 0)
            log_warn("the visitor salt of %s in redis is not 32 hex digits", day);
        return;
    }
    /* Published to every worker of the process at once: whichever worker uses the salt next
     * uses this one. */
    pthread_mutex_lock(&salt_share.lock);
    x = salt_slot_for(day);
    if (x != NULL) { /* NULL: two newer days took the slots meanwhile */
        memcpy(x->salt, salt, sizeof(salt));
        x->known = true;
        x->fetched_at = tally_now_ms();
        atomic_fetch_add_explicit(&salt_share.version, 1, memory_order_release);
    }
    pthread_mutex_unlock(&salt_share.lock);
    if (s->cb != NULL)
        s->cb(s->arg);
}

/* Create DAY's salt unless some collector did, then read whichever won. X is this worker's copy
 * of the day's slot, NULL when it has none. */
static void salt_fetch(struct tally_salts *s, const char day[9], const struct salt_slot *x)
{
    char key[128], fresh[2 * TALLY_SALT_LEN + 1];
    uint8_t rnd[TALLY_SALT_LEN];
    const char *set[] = {"SET", key, fresh, "NX", "EX", "172800"};
    const char *get[] = {"GET", key};
    size_t setlen[6], getlen[2];
    struct tally_store *st;
    struct salt_fetch *f;

    /* A known salt is read again now and then: if Redis lost it (a flush, a restart without
     * persistence), a new one was made, and every collector must move to it. */
    if ((x != NULL && x->known && tally_now_ms() - x->fetched_at < SALT_REFRESH_MS) ||
        salt_asked(s, day, -1) || (f = malloc(sizeof(*f))) == NULL)
        return;
    f->s = s;
    memcpy(f->day, day, 9);
    snprintf(key, sizeof(key), "%ssalt:%s", s->prefix, day);
    arc4random_buf(rnd, sizeof(rnd));
    tally_salt_encode(rnd, fresh);
    for (int i = 0; i < 6; i++)
        setlen[i] = strlen(set[i]);
    getlen[0] = 3;
    getlen[1] = strlen(key);
    st = tally_redis_for_key(s->router, key, strlen(key));
    if (st == NULL || tally_store_command(st, 6, set, setlen, NULL, NULL) < 0 ||
        tally_store_command(st, 2, get, getlen, on_salt, f) < 0) {
        free(f);
        return;
    }
    salt_asked(s, day, 1);
}

bool tally_salts_get(struct tally_salts *s, time_t now, uint8_t out[TALLY_SALT_LEN])
{
    char today[9], tomorrow[9];
    struct salt_slot *x;

    salt_sync(s);
    tally_visitor_day(now, today);
    x = salt_find(s->slot, today);
    salt_fetch(s, today, x);
    /* In the last hour of a day, fetch tomorrow's too, so midnight waits for nothing. */
    if (now % 86400 >= 82800) {
        tally_visitor_day(now + 3600, tomorrow);
        salt_fetch(s, tomorrow, salt_find(s->slot, tomorrow));
    }
    if (x == NULL || !x->known)
        return false;
    memcpy(out, x->salt, TALLY_SALT_LEN);
    return true;
}

struct tally_salts *tally_salts_new(struct tally_redis *router, const char *prefix,
                                    tally_salts_cb *cb, void *arg)
{
    struct tally_salts *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->router = router;
    s->prefix = prefix;
    s->cb = cb;
    s->arg = arg;
    return s;
}

void tally_salts_stale(struct tally_salts *s)
{
    /* The first is this worker's first connect, no reconnect: the salts other workers read
     * meanwhile are as fresh as their age says. */
    if (!s->connected) {
        s->connected = true;
        return;
    }
    pthread_mutex_lock(&salt_share.lock);
    for (int i = 0; i < 2; i++)
        salt_share.slot[i].fetched_at = 0;
    atomic_fetch_add_explicit(&salt_share.version, 1, memory_order_release);
    pthread_mutex_unlock(&salt_share.lock);
}

void tally_salts_free(struct tally_salts *s)
{
    free(s);
}
