/* store_redis.c -- one asynchronous hiredis connection per event base: connects and
 * reconnects with backoff, authenticates, checks that Redis has this version's functions
 * (loaded beforehand by `tallyd --load-functions`), refuses a Redis older than 7.0, and gives every command a deadline of its
 * own (hiredis 0.14 has neither connect nor command timeouts). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>

#include "tally/buf.h"
#include "tally/error.h"
#include "tally/fence.h"
#include "tally/functions.h"
#include "tally/log.h"
#include "tally/metrics.h"
#include "tally/redis.h"
#include "tally/store.h"

#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000

enum store_state { STORE_DOWN, STORE_CONNECTING, STORE_HANDSHAKE, STORE_READY };

/* A command on the wire. Freed by its reply callback, which hiredis runs exactly once. */
struct store_cmd {
    struct tally_store *st;
    tally_store_reply_cb *done;
    void *arg;
    uint64_t deadline; /* ms, monotonic */
    const char *body;  /* a function call's borrowed arguments; else NULL */
    size_t len, nargs;
    enum tally_script script;
    bool handshake;
    TAILQ_ENTRY(store_cmd) link;
};

TAILQ_HEAD(store_cmd_list, store_cmd);

/* A handshake command's context: what the command was for; SENT: when it went out (for
 * TIME, whose answer is Redis's clock). */
struct handshake_step {
    struct tally_store *st;
    int what; /* STORE_STEP_* */
    uint64_t sent;
};

#define STORE_STEP_PLAIN 0
#define STORE_STEP_PROBE 1 /* it asks for this version's functions */
#define STORE_STEP_INFO 2  /* INFO server: the version is checked */
#define STORE_STEP_TIME 3  /* TIME: Redis's clock */

/* Said once per process while no connection finds the functions, not once per connection
 * and retry; said again after one found them. */
static atomic_bool store_missing_said;

struct tally_store {
    struct event_base *base;
    const struct tally_config *cfg;
    struct tally_redis_target target; /* where this connection goes */
    char name[TALLY_HOST_MAX + 16];   /* "host:port" or the socket path, for logs; reads
                                       * say " (reads)" after it */
    enum tally_store_role role;
    struct tally_metrics *metrics;
    tally_store_state_cb *on_state;
    void *arg;
    redisAsyncContext *ac;      /* NULL while down; hiredis frees it, see on_connect */
    enum store_state state;
    unsigned attempts;          /* failed connects in a row, for the backoff */
    bool ever_ready, warned;
    struct store_cmd_list inflight; /* in send order; the head is the oldest */
    struct event *retry_ev;     /* reconnect after backoff */
    struct event *deadline_ev;  /* the connect deadline, then the head command's */
    struct event *clock_ev;     /* asks TIME again now and then */
    struct tally_clock clock;   /* Redis's clock, as last sampled */
    bool timing;                /* a TIME of ours is in flight */
    uint64_t connect_deadline;
    struct tally_buf cmd;       /* scratch for building evals */
};

uint64_t tally_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void store_connect(struct tally_store *st);
static void store_arm_deadline(struct tally_store *st);

/* ---- State ---- */

static void store_set_state(struct tally_store *st, enum store_state s)
{
    bool was = st->state == STORE_READY, is = s == STORE_READY;

    st->state = s;
    if (was != is && st->on_state != NULL)
        st->on_state(st, is, st->arg);
}

static void store_schedule_retry(struct tally_store *st)
{
    unsigned shift = st->attempts < 6 ? st->attempts : 6;
    uint64_t ms = (uint64_t)STORE_BACKOFF_MIN_MS << shift;
    struct timeval tv;

    if (ms > STORE_BACKOFF_MAX_MS)
        ms = STORE_BACKOFF_MAX_MS;
    /* +-20 % so that many collectors do not reconnect in step. */
    ms = ms * (80 + arc4random_uniform(41)) / 100;
    st->attempts++;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    evtimer_add(st->retry_ev, &tv);
}

/* The context is gone (hiredis freed it, or is about to): forget it and try again later. */
static void store_lost(struct tally_store *st, const char *why)
{
    st->ac = NULL;
    if (st->state == STORE_READY || !st->warned) {
        log_warn("redis connection to %s lost: %s; reconnecting", st->name, why);
        st->warned = true;
    }
    store_set_state(st, STORE_DOWN);
    evtimer_del(st->deadline_ev);
    store_schedule_retry(st);
}

/* Drop the connection from our side (deadline passed, handshake failed). Outside hiredis
 * callbacks the free is immediate: pending replies run with NULL, then on_disconnect. */
static void store_drop(struct tally_store *st, const char *why)
{
    redisAsyncContext *ac = st->ac;

    if (ac == NULL)
        return;
    log_debug("dropping redis connection: %s", why);
    if (st->state == STORE_CONNECTING) {
        /* No disconnect callback follows a connect that never completed. */
        ac->data = NULL;
        redisAsyncFree(ac);
        store_lost(st, why);
        return;
    }
    redisAsyncFree(ac);
}

/* ---- Replies ---- */

static void store_finish(struct store_cmd *c, int status, redisReply *reply)
{
    struct tally_store *st = c->st;

    TAILQ_REMOVE(&st->inflight, c, link);
    if (st->state != STORE_DOWN)
        store_arm_deadline(st);
    if (c->done != NULL)
        c->done(status, reply, c->arg);
    free(c);
}

/* Redis has no function of that name: nothing ran (a Redis restarted empty, or functions
 * deleted). */
static bool store_is_missing_function(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "ERR Function not found", 22) == 0;
}

static void store_say_missing(const struct tally_store *st)
{
    if (!atomic_exchange(&store_missing_said, true))
        log_error("redis at %s does not have the functions %s: load them with 'tallyd "
                  "--load-functions' and an admin user (deploy/README.md); not ready until then",
                  st->name, tally_functions_library());
}


static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct store_cmd *c = privdata;
    struct tally_store *st = c->st;
    redisReply *reply = r;

    (void)ac;
    if (reply == NULL) {
        tally_metric_add(&st->metrics->redis_errors, 1);
        store_finish(c, TALLY_EUNKNOWN, NULL);
        return;
    }
    tally_metric_add(&st->metrics->redis_roundtrips, 1);
    if (reply->type == REDIS_REPLY_ERROR)
        tally_metric_add(&st->metrics->redis_errors, 1);
    if (c->body != NULL && store_is_missing_function(reply)) {
        /* Nothing ran. Not ready until a new handshake finds the functions again. */
        store_say_missing(st);
        store_finish(c, TALLY_EUNAVAIL, NULL);
        store_drop(st, "the functions are missing");
        return;
    }
    store_finish(c, 0, reply);
}

/* ---- Deadlines ---- */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct tally_store *st = arg;
    struct store_cmd *head = TAILQ_FIRST(&st->inflight);
    uint64_t now = tally_now_ms();

    (void)fd;
    (void)what;
    if (st->state == STORE_CONNECTING || st->state == STORE_HANDSHAKE) {
        if (now >= st->connect_deadline) {
            tally_metric_add(&st->metrics->redis_timeouts, 1);
            store_drop(st, "connect timed out");
            return;
        }
    } else if (head != NULL && now >= head->deadline) {
        tally_metric_add(&st->metrics->redis_timeouts, 1);
        log_warn("redis did not answer within %u ms; dropping the connection",
                 st->cfg->redis_timeout_ms);
        store_drop(st, "command timed out");
        return;
    }
    store_arm_deadline(st);
}

static void store_arm_deadline(struct tally_store *st)
{
    struct store_cmd *head = TAILQ_FIRST(&st->inflight);
    uint64_t at = 0, now = tally_now_ms();
    struct timeval tv;

    if (st->state == STORE_CONNECTING || st->state == STORE_HANDSHAKE)
        at = st->connect_deadline;
    else if (head != NULL)
        at = head->deadline;
    if (at == 0) {
        evtimer_del(st->deadline_ev);
        return;
    }
    at = at > now ? at - now : 0;
    tv.tv_sec = (time_t)(at / 1000);
    tv.tv_usec = (suseconds_t)(at % 1000) * 1000;
    evtimer_add(st->deadline_ev, &tv);
}

/* ---- Sending ---- */

static struct store_cmd *store_cmd_new(struct tally_store *st, tally_store_reply_cb *done,
                                       void *arg)
{
    struct store_cmd *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->st = st;
    c->done = done;
    c->arg = arg;
    c->deadline = tally_now_ms() + st->cfg->redis_timeout_ms;
    return c;
}

static void store_track(struct tally_store *st, struct store_cmd *c)
{
    bool first = TAILQ_EMPTY(&st->inflight);

    TAILQ_INSERT_TAIL(&st->inflight, c, link);
    if (first)
        store_arm_deadline(st);
}

static int store_send_argv(struct tally_store *st, struct store_cmd *c, int argc,
                           const char **argv, const size_t *argvlen)
{
    if (st->ac == NULL ||
        redisAsyncCommandArgv(st->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK)
        return TALLY_EUNAVAIL;
    store_track(st, c);
    return 0;
}

/* FCALL (FCALL_RO for a read-only function) of C's function, followed by C's body, as one RESP
 * command. */
static int store_send_fcall(struct tally_store *st, struct store_cmd *c)
{
    struct tally_buf *b = &st->cmd;
    const char *fn = tally_functions_name(c->script);

    tally_buf_reset(b);
    tally_buf_add(b, "*", 1);
    tally_buf_add_u64(b, c->nargs + 2);
    tally_buf_add(b, "\r\n", 2);
    if (tally_functions_read_only(c->script))
        tally_buf_add_bulk(b, "FCALL_RO", 8);
    else
        tally_buf_add_bulk(b, "FCALL", 5);
    tally_buf_add_bulk(b, fn, strlen(fn));
    tally_buf_add(b, c->body, c->len);
    if (b->oom)
        return TALLY_ENOMEM;
    if (st->ac == NULL ||
        redisAsyncFormattedCommand(st->ac, on_reply, c, b->data, b->len) != REDIS_OK)
        return TALLY_EUNAVAIL;
    store_track(st, c);
    return 0;
}

/* ASKING: lets the next command on this connection into a slot being imported. */
static int store_asking(struct tally_store *st)
{
    static const char *const argv[] = {"ASKING"};
    static const size_t len[] = {6};

    return tally_store_command(st, 1, (const char **)argv, len, NULL, NULL);
}

int tally_store_eval(struct tally_store *st, enum tally_script script, const char *body,
                     size_t len, size_t nargs, tally_store_reply_cb *done, void *arg)
{
    return tally_store_eval_asking(st, false, script, body, len, nargs, done, arg);
}

int tally_store_eval_asking(struct tally_store *st, bool asking, enum tally_script script,
                            const char *body, size_t len, size_t nargs,
                            tally_store_reply_cb *done, void *arg)
{
    struct store_cmd *c;
    int rc;

    if (st->state != STORE_READY || (asking && store_asking(st) < 0))
        return TALLY_EUNAVAIL;
    if ((c = store_cmd_new(st, done, arg)) == NULL)
        return TALLY_ENOMEM;
    c->body = body;
    c->len = len;
    c->nargs = nargs;
    c->script = script;
    if ((rc = store_send_fcall(st, c)) < 0)
        free(c);
    return rc;
}

int tally_store_command(struct tally_store *st, int argc, const char **argv,
                        const size_t *argvlen, tally_store_reply_cb *done, void *arg)
{
    struct store_cmd *c;
    int rc;

    if (st->state != STORE_READY)
        return TALLY_EUNAVAIL;
    if ((c = store_cmd_new(st, done, arg)) == NULL)
        return TALLY_ENOMEM;
    if ((rc = store_send_argv(st, c, argc, argv, argvlen)) < 0)
        free(c);
    return rc;
}

int tally_store_formatted(struct tally_store *st, bool asking, const char *cmd, size_t len,
                          tally_store_reply_cb *done, void *arg)
{
    struct store_cmd *c;

    if (st->state != STORE_READY || st->ac == NULL || (asking && store_asking(st) < 0))
        return TALLY_EUNAVAIL;
    if ((c = store_cmd_new(st, done, arg)) == NULL)
        return TALLY_ENOMEM;
    if (redisAsyncFormattedCommand(st->ac, on_reply, c, cmd, len) != REDIS_OK) {
        free(c);
        return TALLY_EUNAVAIL;
    }
    store_track(st, c);
    return 0;
}

bool tally_store_ready(const struct tally_store *st)
{
    return st->state == STORE_READY;
}

const struct tally_redis_target *tally_store_target(const struct tally_store *st)
{
    return &st->target;
}

/* ---- Connecting and the handshake ---- */

/* A Redis too old is said once per process, not at every reconnection of every thread. */
static atomic_bool store_old_said;

/* False, with one log line, when the INFO server text of REPLY shows a Redis older than
 * tallyd needs: its scripts would fail on it. */
static bool store_version_ok(struct tally_store *st, const redisReply *reply)
{
    unsigned v[3];

    if (reply->type != REDIS_REPLY_STRING)
        return true;
    if (tally_redis_parse_version(reply->str, reply->len, v) < 0 || tally_redis_version_ok(v))
        return true;
    if (!atomic_exchange(&store_old_said, true))
        log_error("redis at %s is version %u.%u.%u; tallyd needs %d.%d or later (not ready)",
                  st->name, v[0], v[1], v[2], TALLY_REDIS_MIN_MAJOR, TALLY_REDIS_MIN_MINOR);
    return false;
}

/* One handshake step answered. The last one (PING) makes the store ready. */
static void on_handshake(int status, redisReply *reply, void *arg)
{
    struct handshake_step *step = arg;
    struct tally_store *st = step->st;
    bool probe = step->what == STORE_STEP_PROBE, info = step->what == STORE_STEP_INFO;
    bool time = step->what == STORE_STEP_TIME;
    uint64_t sent = step->sent;
    bool last = TAILQ_EMPTY(&st->inflight);

    free(step);
    if (status < 0 || st->state != STORE_HANDSHAKE)
        return; /* the connection is going away; on_disconnect takes it from here */
    if (probe && store_is_missing_function(reply)) {
        store_say_missing(st);
        store_drop(st, "the functions are missing");
        return;
    }
    /* A user without +info cannot be asked its version: it is taken on trust. */
    if (reply->type == REDIS_REPLY_ERROR && info) {
        log_debug("redis refused INFO server, its version is not checked: %s", reply->str);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis refused the handshake: %s", reply->str);
        store_drop(st, "handshake failed");
        return;
    }
    if (time && tally_clock_take(&st->clock, reply, sent, tally_now_ms()) < 0) {
        log_error("redis answered TIME with something else");
        store_drop(st, "handshake failed");
        return;
    }
    if (info && !store_version_ok(st, reply)) {
        store_drop(st, "redis is too old");
        return;
    }
    if (!last)
        return;
    atomic_store(&store_missing_said, false);
    if (st->ever_ready)
        tally_metric_add(&st->metrics->redis_reconnects, 1);
    log_info("redis ready at %s", st->name);
    st->ever_ready = true;
    st->warned = false;
    st->attempts = 0;
    store_set_state(st, STORE_READY);
    store_arm_deadline(st);
}

/* WHAT: what the command asks for (STORE_STEP_*). */
static void store_handshake_cmd(struct tally_store *st, int argc, const char **argv,
                                const size_t *len, int what)
{
    struct handshake_step *step = malloc(sizeof(*step));
    struct store_cmd *c = step != NULL ? store_cmd_new(st, on_handshake, step) : NULL;

    if (c == NULL) {
        free(step);
        return;
    }
    step->st = st;
    step->what = what;
    step->sent = tally_now_ms();
    c->handshake = true;
    if (store_send_argv(st, c, argc, argv, len) < 0) {
        free(step);
        free(c);
    }
}

static void store_handshake_words(struct tally_store *st, int argc, const char **argv)
{
    size_t len[3];

    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    store_handshake_cmd(st, argc, argv, len, STORE_STEP_PLAIN);
}

static void store_handshake(struct tally_store *st)
{
    const struct tally_redis_target *r = &st->target;
    char db[12];
    const char *auth[] = {"AUTH", r->username, r->password};
    const char *sel[] = {"SELECT", db};
    const char *ping[] = {"PING"};
    const char *probe[] = {"FCALL_RO", tally_functions_name(TALLY_SCRIPTS), "0"};
    const size_t probe_len[] = {8, strlen(probe[1]), 1};
    const char *time_argv[] = {"TIME"};
    const size_t time_len[] = {4};

    st->state = STORE_HANDSHAKE;
    if (r->password[0] != '\0' && r->username[0] != '\0')
        store_handshake_words(st, 3, auth);
    else if (r->password[0] != '\0')
        store_handshake_words(st, 2, (const char *[]){"AUTH", r->password});
    if (r->db != 0) {
        snprintf(db, sizeof(db), "%u", r->db);
        store_handshake_words(st, 2, sel);
    }
    store_handshake_cmd(st, 2, (const char *[]){"INFO", "server"}, (const size_t[]){4, 6},
                        STORE_STEP_INFO);
    /* The functions of this version: loaded by an admin, never by the daemon's user. */
    store_handshake_cmd(st, 3, probe, probe_len, STORE_STEP_PROBE);
    /* Redis's clock, for the fences of write units (see tally/fence.h), sampled afresh: this
     * may be another server than the last connection's. */
    st->clock.known = false;
    store_handshake_cmd(st, 1, time_argv, time_len, STORE_STEP_TIME);
    store_handshake_words(st, 1, ping);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct tally_store *st = ac->data;

    if (st == NULL)
        return; /* we dropped it while connecting */
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback; no disconnect callback follows. */
        store_lost(st, ac->errstr);
        return;
    }
    store_handshake(st);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct tally_store *st = ac->data;

    (void)status;
    if (st == NULL)
        return; /* tally_store_free() is tearing down */
    store_lost(st, ac->err != 0 ? ac->errstr : "closed");
}

static void store_connect(struct tally_store *st)
{
    const struct tally_redis_target *r = &st->target;
    redisAsyncContext *ac;

    ac = r->is_unix ? redisAsyncConnectUnix(r->path)
                    : redisAsyncConnect(r->addr.host, r->addr.port);
    if (ac == NULL || ac->err != 0) {
        if (!st->warned)
            log_warn("cannot connect to redis at %s: %s", st->name,
                     ac != NULL ? ac->errstr : "out of memory");
        st->warned = true;
        if (ac != NULL)
            redisAsyncFree(ac);
        store_schedule_retry(st);
        return;
    }
    ac->data = st;
    st->ac = ac;
    redisLibeventAttach(ac, st->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    st->state = STORE_CONNECTING;
    st->connect_deadline = tally_now_ms() + st->cfg->redis_timeout_ms;
    store_arm_deadline(st);
}

/* ---- Redis's clock ---- */

static void on_clock(int status, redisReply *reply, void *arg)
{
    struct handshake_step *step = arg;
    struct tally_store *st = step->st;

    st->timing = false;
    if (status == 0 && tally_clock_take(&st->clock, reply, step->sent, tally_now_ms()) < 0)
        log_warn("redis answered TIME with something else");
    free(step);
}

/* Every TALLY_CLOCK_SAMPLE_MS while ready: a new sample keeps the drift allowance small and
 * follows Redis's clock when it is set. */
static void on_clock_timer(evutil_socket_t fd, short what, void *arg)
{
    static const char *const argv[] = {"TIME"};
    static const size_t len[] = {4};
    struct tally_store *st = arg;
    struct handshake_step *step;

    (void)fd;
    (void)what;
    if (st->state != STORE_READY || st->timing || (step = malloc(sizeof(*step))) == NULL)
        return;
    step->st = st;
    step->what = STORE_STEP_TIME;
    step->sent = tally_now_ms();
    if (tally_store_command(st, 1, (const char **)argv, len, on_clock, step) < 0) {
        free(step);
        return;
    }
    st->timing = true;
}

const struct tally_clock *tally_store_clock(const struct tally_store *st)
{
    return st->clock.known ? &st->clock : NULL;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    store_connect(arg);
}

struct tally_store *tally_store_new(struct event_base *base, const struct tally_config *cfg,
                                    const struct tally_redis_target *target,
                                    enum tally_store_role role, struct tally_metrics *metrics,
                                    tally_store_state_cb *on_state, void *arg)
{
    struct tally_store *st = calloc(1, sizeof(*st));
    struct timeval every = {TALLY_CLOCK_SAMPLE_MS / 1000, TALLY_CLOCK_SAMPLE_MS % 1000 * 1000};

    if (st == NULL)
        return NULL;
    st->base = base;
    st->cfg = cfg;
    st->target = *target;
    st->role = role;
    if (target->is_unix)
        snprintf(st->name, sizeof(st->name), "%s", target->path);
    else
        snprintf(st->name, sizeof(st->name), strchr(target->addr.host, ':') ? "[%s]:%u" : "%s:%u",
                 target->addr.host, target->addr.port);
    if (role == TALLY_STORE_READS)
        snprintf(st->name + strlen(st->name), sizeof(st->name) - strlen(st->name), " (reads)");
    st->metrics = metrics;
    st->on_state = on_state;
    st->arg = arg;
    TAILQ_INIT(&st->inflight);
    tally_buf_init(&st->cmd);
    st->retry_ev = evtimer_new(base, on_retry, st);
    st->deadline_ev = evtimer_new(base, on_deadline, st);
    /* Only writes are fenced with Redis's clock: a read connection samples it at connect. */
    st->clock_ev = role == TALLY_STORE_WRITES
                       ? event_new(base, -1, EV_PERSIST, on_clock_timer, st)
                       : NULL;
    if (st->retry_ev == NULL || st->deadline_ev == NULL ||
        (role == TALLY_STORE_WRITES &&
         (st->clock_ev == NULL || event_add(st->clock_ev, &every) < 0))) {
        tally_store_free(st);
        return NULL;
    }
    store_connect(st);
    return st;
}

void tally_store_free(struct tally_store *st)
{
    if (st == NULL)
        return;
    st->on_state = NULL;
    if (st->ac != NULL) {
        /* The disconnect callback may still run from inside the free: it must not touch us. */
        st->ac->data = NULL;
        redisAsyncFree(st->ac);
    }
    if (st->retry_ev != NULL)
        event_free(st->retry_ev);
    if (st->deadline_ev != NULL)
        event_free(st->deadline_ev);
    if (st->clock_ev != NULL)
        event_free(st->clock_ev);
    tally_buf_release(&st->cmd);
    free(st);
}
