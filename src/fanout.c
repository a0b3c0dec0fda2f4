/* fanout.c -- sends many commands for one request and calls back once, after the last. */
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/fanout.h"
#include "tally/functions.h"
#include "tally/redis.h"

struct fanout_slot {
    struct tally_fanout *f;
    struct tally_redis *r;
    size_t i;
    char *cmd;      /* the command in RESP form, kept to resend it where MOVED or ASK says */
    size_t len;
    char *body;     /* or an eval's arguments */
    size_t nargs;
    enum tally_script script;
    struct tally_store *st; /* where it went last, and whether with ASKING */
    bool asking;
    int redirects;
};

#define FANOUT_REDIRECTS_MAX 3

int tally_fanout_init(struct tally_fanout *f, size_t n, tally_fanout_reply_cb *on_reply,
                      tally_fanout_done_cb *done, void *arg)
{
    /* The slots come with the first command: a read answered from the cache sends none. */
    f->slots = NULL;
    f->on_reply = on_reply;
    f->done = done;
    f->arg = arg;
    f->writes = false;
    f->n = n;
    f->sent = 0;
    f->status = 0;
    /* One count for the sender, so DONE cannot run while commands are still going out. */
    f->pending = 1;
    return 0;
}

static void fanout_settle(struct tally_fanout *f, int status)
{
    if (status < 0 && f->status == 0)
        f->status = status;
    if (--f->pending > 0)
        return;
    free(f->slots);
    f->slots = NULL;
    f->done(f, f->status);
}

static void on_fanout_reply(int status, redisReply *reply, void *arg);

/* A Redis Cluster redirection: send the same command where it says. Returns 0 when resent. */
static int fanout_redirect(struct fanout_slot *slot, const redisReply *reply)
{
    bool asking;
    struct tally_store *st;

    if (slot->redirects++ >= FANOUT_REDIRECTS_MAX)
        return -1;
    st = slot->f->writes ? tally_redis_redirect(slot->r, reply, &asking)
                         : tally_redis_read_redirect(slot->r, reply, &asking);
    if (st == NULL)
        return -1;
    if (slot->cmd != NULL)
        return tally_store_formatted(st, asking, slot->cmd, slot->len, on_fanout_reply, slot);
    slot->st = st;
    slot->asking = asking;
    return tally_store_eval_asking(st, asking, slot->script, slot->body, slot->len, slot->nargs,
                                   on_fanout_reply, slot);
}

/* A script call refused because Redis takes no writes now (a failed background save,
 * min-replicas-to-write unmet, a replica) whose function has a read-only twin (kept.lua's,
 * which keeps a week's or month's part): send the same call to the twin, which answers
 * without keeping anything. Returns 0 when resent. */
static int fanout_read_only(struct fanout_slot *slot, const redisReply *reply)
{
    static const char *const codes[] = {"MISCONF", "NOREPLICAS", "READONLY"};
    enum tally_script twin;

    if (slot->body == NULL || slot->st == NULL ||
        (twin = tally_functions_read_only_twin(slot->script)) == TALLY_SCRIPTS ||
        !tally_redis_error_in(reply->str, reply->len, codes, sizeof(codes) / sizeof(codes[0])))
        return -1;
    slot->script = twin;
    return tally_store_eval_asking(slot->st, slot->asking, twin, slot->body, slot->len,
                                   slot->nargs, on_fanout_reply, slot);
}

static void on_fanout_reply(int status, redisReply *reply, void *arg)
{
    struct fanout_slot *slot = arg;
    struct tally_fanout *f = slot->f;

    if (status == 0 && reply->type == REDIS_REPLY_ERROR &&
        (fanout_redirect(slot, reply) == 0 || fanout_read_only(slot, reply) == 0))
        return;
    free(slot->body);
    slot->body = NULL;
    if (slot->cmd != NULL)
        redisFreeCommand(slot->cmd);
    slot->cmd = NULL;
    if (status < 0)
        status = TALLY_EUNAVAIL;
    else if (reply->type == REDIS_REPLY_ERROR)
        status = TALLY_EREDIS;
    else
        status = f->on_reply(f, slot->i, reply);
    fanout_settle(f, status);
}

static struct fanout_slot *fanout_next(struct tally_fanout *f)
{
    struct fanout_slot *slot;

    if (f->sent == f->n)
        return NULL;
    if (f->slots == NULL && (f->slots = calloc(f->n, sizeof(*f->slots))) == NULL) {
        if (f->status == 0)
            f->status = TALLY_ENOMEM;
        return NULL;
    }
    slot = &f->slots[f->sent];
    slot->f = f;
    slot->i = f->sent;
    slot->st = NULL;
    slot->asking = false;
    slot->redirects = 0;
    return slot;
}

/* Where F's command for KEY goes: the read connection of its node, or the write one. */
static struct tally_store *fanout_store(struct tally_fanout *f, struct tally_redis *r,
                                        const char *key, size_t len)
{
    return f->writes ? tally_redis_for_key(r, key, len) : tally_redis_read_for_key(r, key, len);
}

static int fanout_sent(struct tally_fanout *f, int rc)
{
    if (rc < 0) {
        if (f->status == 0)
            f->status = rc;
        return rc;
    }
    f->sent++;
    f->pending++;
    return 0;
}

int tally_fanout_command(struct tally_fanout *f, struct tally_redis *r, int argc,
                         const char **argv, const size_t *argvlen)
{
    struct fanout_slot *slot = fanout_next(f);
    struct tally_store *st = argc > 1 ? fanout_store(f, r, argv[1], argvlen[1]) : NULL;
    long long len;
    int rc;

    if (slot == NULL)
        return f->status < 0 ? f->status : TALLY_EINVAL;
    if (st == NULL)
        return fanout_sent(f, TALLY_EUNAVAIL);
    slot->r = r;
    len = redisFormatCommandArgv(&slot->cmd, argc, argv, argvlen);
    if (len < 0)
        return fanout_sent(f, TALLY_ENOMEM);
    slot->len = (size_t)len;
    rc = tally_store_formatted(st, false, slot->cmd, slot->len, on_fanout_reply, slot);
    if (rc < 0) {
        redisFreeCommand(slot->cmd);
        slot->cmd = NULL;
    }
    return fanout_sent(f, rc);
}

int tally_fanout_eval(struct tally_fanout *f, struct tally_redis *r, const char *key,
                      size_t key_len, enum tally_script script, const char *body, size_t len,
                      size_t nargs)
{
    struct fanout_slot *slot = fanout_next(f);
    struct tally_store *st = fanout_store(f, r, key, key_len);
    int rc;

    if (slot == NULL)
        return f->status < 0 ? f->status : TALLY_EINVAL;
    if (st == NULL)
        return fanout_sent(f, TALLY_EUNAVAIL);
    if ((slot->body = malloc(len > 0 ? len : 1)) == NULL)
        return fanout_sent(f, TALLY_ENOMEM);
    memcpy(slot->body, body, len);
    slot->r = r;
    slot->len = len;
    slot->nargs = nargs;
    slot->script = script;
    slot->st = st;
    rc = tally_store_eval(st, script, slot->body, len, nargs, on_fanout_reply, slot);
    if (rc < 0) {
        free(slot->body);
        slot->body = NULL;
    }
    return fanout_sent(f, rc);
}

int tally_fanout_fail(struct tally_fanout *f, int status)
{
    if (status < 0 && f->status == 0)
        f->status = status;
    return status;
}

int tally_fanout_end(struct tally_fanout *f)
{
    int rc = f->status;

    if (f->sent == 0) {
        free(f->slots);
        f->slots = NULL;
        return rc < 0 ? rc : TALLY_EINVAL;
    }
    fanout_settle(f, 0);
    return 0;
}
