/* salt.c -- per-worker cache of the shared daily visitor salts, fetched from Redis. */
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
    bool known, asked;
    uint64_t fetched_at; /* ms */
};

struct tally_salts {
    struct tally_redis *router;
    const char *prefix;
    tally_salts_cb *cb;
    void *arg;
    struct salt_slot slot[2]; /* today and tomorrow, in either order */
};

/* A fetch in flight: which day it is for. */
struct salt_fetch {
    struct tally_salts *s;
    char day[9];
};

static struct salt_slot *salt_find(struct tally_salts *s, const char day[9])
{
    for (int i = 0; i < 2; i++)
        if (strcmp(s->slot[i].day, day) == 0)
            return &s->slot[i];
    return NULL;
}

/* The slot for DAY: its own, or the one holding the older day. */
static struct salt_slot *salt_slot_for(struct tally_salts *s, const char day[9])
{
    struct salt_slot *x = salt_find(s, day);

    if (x != NULL)
        return x;
    x = strcmp(s->slot[0].day, s->slot[1].day) <= 0 ? &s->slot[0] : &s->slot[1];
    memset(x, 0, sizeof(*x));
    memcpy(x->day, day, 9);
    return x;
}

static void on_salt(int status, redisReply *reply, void *arg)
{
    struct salt_fetch *f = arg;
    struct tally_salts *s = f->s;
    struct salt_slot *x = salt_find(s, f->day);
    uint8_t salt[TALLY_SALT_LEN];

    free(f);
    if (x == NULL)
        return; /* a newer day took the slot meanwhile */
    x->asked = false;
    /* Into a copy: a malformed value must not damage a salt already in use. */
    if (status < 0 || reply->type != REDIS_REPLY_STRING ||
        tally_salt_decode(reply->str, reply->len, salt) < 0) {
        if (status == 0 && reply->type == REDIS_REPLY_NIL)
            log_warn("the visitor salt of %s is missing in redis; asking again", x->day);
        else if (status == 0)
            log_warn("the visitor salt of %s in redis is not 32 hex digits", x->day);
        return;
    }
    memcpy(x->salt, salt, sizeof(salt));
    x->known = true;
    x->fetched_at = tally_now_ms();
    if (s->cb != NULL)
        s->cb(s->arg);
}

/* Create the day's salt unless some collector did, then read whichever won. */
static void salt_fetch(struct tally_salts *s, struct salt_slot *x)
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
    if ((x->known && tally_now_ms() - x->fetched_at < SALT_REFRESH_MS) || x->asked ||
        (f = malloc(sizeof(*f))) == NULL)
        return;
    f->s = s;
    memcpy(f->day, x->day, 9);
    snprintf(key, sizeof(key), "%ssalt:%s", s->prefix, x->day);
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
    x->asked = true;
}

bool tally_salts_get(struct tally_salts *s, time_t now, uint8_t out[TALLY_SALT_LEN])
{
    char today[9], tomorrow[9];
    struct salt_slot *x;

    tally_visitor_day(now, today);
    x = salt_slot_for(s, today);
    salt_fetch(s, x);
    /* In the last hour of a day, fetch tomorrow's too, so midnight waits for nothing. */
    if (now % 86400 >= 82800) {
        tally_visitor_day(now + 3600, tomorrow);
        salt_fetch(s, salt_slot_for(s, tomorrow));
    }
    if (!x->known)
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
    for (int i = 0; i < 2; i++)
        s->slot[i].fetched_at = 0;
}

void tally_salts_free(struct tally_salts *s)
{
    free(s);
}
