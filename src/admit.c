/* admit.c -- the ingest rules: count, ignore or refuse a request's batch, and the counting of
 * how its events ended. See admit.h for the order of the checks. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tally/admit.h"
#include "tally/agg.h"
#include "tally/bots.h"
#include "tally/error.h"
#include "tally/hash.h"

/* ---- Bots ---- */

bool tally_bot_cached(struct tally_bot_cache *c, const char *ua)
{
    static const uint8_t key[16] = {'t', 'a', 'l', 'l', 'y', ' ', 'u', 's',
                                    'e', 'r', '-', 'a', 'g', 'e', 'n', 't'};
    size_t len = ua != NULL ? strlen(ua) : 0;
    uint64_t h;

    if (len == 0)
        return tally_bot_match(ua, len);
    h = tally_siphash(key, ua, len) | 1;
    if (c->seen[h & 255].ua != h) {
        c->seen[h & 255].ua = h;
        c->seen[h & 255].bot = tally_bot_match(ua, len);
    }
    return c->seen[h & 255].bot;
}

/* ---- Verdicts ---- */

static void admit_refuse(struct tally_verdict *v, int status, enum tally_reject why,
                         const char *code, const char *message)
{
    v->action = TALLY_ADMIT_REFUSE;
    v->status = status;
    v->reject = why;
    v->err.code = code;
    snprintf(v->err.message, sizeof(v->err.message), "%s", message);
}

bool tally_admit_media_type(const char *ctype, const char *const *ok, size_t n_ok)
{
    size_t n;

    if (ctype == NULL)
        return true;
    n = strcspn(ctype, "; \t");
    for (size_t i = 0; i < n_ok; i++)
        if (n == strlen(ok[i]) && strncasecmp(ctype, ok[i], n) == 0)
            return true;
    return false;
}

static bool admit_type_ok(const char *ctype)
{
    static const char *const ok[] = {"application/json", "text/plain",
                                     "application/x-www-form-urlencoded"};

    return tally_admit_media_type(ctype, ok, sizeof(ok) / sizeof(ok[0]));
}

bool tally_admit_idem_key(const char *key, size_t len)
{
    if (len == 0 || len > TALLY_IDEM_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

/* What a POST must be before its body is read. */
static bool admit_post_head(const struct tally_admit_req *r, struct tally_verdict *v)
{
    if (!admit_type_ok(r->content_type)) {
        admit_refuse(v, 415, TALLY_REJECT_INVALID, "unsupported_media_type",
                     "content-type: send application/json or text/plain");
        return false;
    }
    if (r->input_len > TALLY_BODY_MAX) {
        admit_refuse(v, 413, TALLY_REJECT_TOO_LARGE, "payload_too_large",
                     "body: at most 65536 bytes");
        return false;
    }
    if (r->idempotency_key != NULL &&
        !tally_admit_idem_key(r->idempotency_key, strlen(r->idempotency_key))) {
        admit_refuse(v, 400, TALLY_REJECT_INVALID, "invalid_idempotency_key",
                     "idempotency-key: 1-128 printable ASCII characters");
        return false;
    }
    return true;
}

static bool admit_has_comments(const struct tally_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (b->ev[i].type == TALLY_EVENT_COMMENT)
            return true;
    return false;
}

/* The origin, then the token for comments. */
static bool admit_sender(const struct tally_admit_ctx *ctx, const struct tally_admit_req *r,
                         const struct tally_batch *b, struct tally_verdict *v)
{
    if (r->origin != NULL && !tally_config_origin_allowed(ctx->cfg, r->origin, strlen(r->origin))) {
        admit_refuse(v, 403, TALLY_REJECT_ORIGIN, "origin_forbidden",
                     "origin: not in --allowed-origins");
        return false;
    }
    if (r->auth == 0 || !admit_has_comments(b))
        return true;
    if (r->auth == 403)
        admit_refuse(v, 403, TALLY_REJECT_FORBIDDEN, "token_not_configured",
                     "authorization: comment events need a token, and none is configured");
    else
        admit_refuse(v, 401, TALLY_REJECT_UNAUTHORIZED, "unauthorized",
                     "authorization: comment events need 'Authorization: Bearer <token>'");
    return false;
}

/* Charge the batch's events to the client. */
static bool admit_rate(const struct tally_admit_ctx *ctx, const struct tally_admit_req *r,
                       const struct tally_batch *b, struct tally_verdict *v)
{
    uint32_t burst = tally_ratelimit_burst(ctx->rl), n = (uint32_t)b->n;
    char msg[sizeof(v->err.message)];

    if (tally_ratelimit_take(ctx->rl, r->addr, n, r->now_us, &v->retry_s))
        return true;
    if (burst > 0 && n > burst) {
        snprintf(msg, sizeof(msg),
                 "body: %u events are more than the burst of %u (4 x --rate-limit); send at "
                 "most %u in one request",
                 n, burst, burst);
        admit_refuse(v, 429, TALLY_REJECT_RATE_LIMITED, "batch_over_burst", msg);
    } else {
        admit_refuse(v, 429, TALLY_REJECT_RATE_LIMITED, "rate_limited",
                     "client: over --rate-limit events per second; retry later");
    }
    return false;
}

/* Why a browser's request is answered but not counted: a prefetch or prerender, or a bot,
 * crawler or link preview. */
static bool admit_ignored(const struct tally_admit_ctx *ctx, const struct tally_admit_req *r,
                          struct tally_verdict *v)
{
    const char *p = r->purpose;

    v->action = TALLY_ADMIT_IGNORE;
    if (p != NULL && (strstr(p, "prefetch") != NULL || strstr(p, "preview") != NULL)) {
        v->ignore = TALLY_IGNORE_PREFETCH;
        return true;
    }
    if (tally_bot_cached(ctx->bots, r->user_agent)) {
        v->ignore = TALLY_IGNORE_BOT;
        return true;
    }
    v->action = TALLY_ADMIT_COUNT;
    return false;
}

void tally_admit(const struct tally_admit_ctx *ctx, const struct tally_admit_req *r,
                 struct tally_batch *b, struct tally_verdict *v)
{
    int rc;

    memset(v, 0, sizeof(*v));
    v->action = TALLY_ADMIT_COUNT;
    b->n = 0;
    if (!r->pixel && !admit_post_head(r, v))
        return;
    rc = r->pixel ? tally_ingest_parse_query(r->input, r->input_len, b, &v->err)
                  : tally_ingest_parse(r->input, r->input_len, b, &v->err);
    if (rc < 0) {
        b->n = 0; /* no event of an invalid batch is known */
        v->action = TALLY_ADMIT_REFUSE;
        v->status = 400;
        v->reject = TALLY_REJECT_INVALID;
        return;
    }
    if (!admit_sender(ctx, r, b, v))
        return;
    /* A server with the token speaks for itself: no rate limit, bot or prefetch rules. */
    if (r->auth == 0)
        return;
    if (admit_rate(ctx, r, b, v))
        admit_ignored(ctx, r, v);
}

/* ---- Outcomes ---- */

static void admit_count_events(struct tally_metrics *m, const struct tally_event *ev, size_t n,
                               enum tally_outcome outcome)
{
    for (size_t i = 0; i < n; i++)
        tally_metric_add(&m->events[ev[i].type][outcome], 1);
}

static void admit_record_written(struct tally_metrics *m, const struct tally_event *ev, size_t n,
                                 const struct tally_admit_written *wr)
{
    if (wr->replayed)
        return; /* counted (or not) the first time */
    tally_metric_add(&m->ignored[TALLY_IGNORE_REPEAT], wr->repeat);
    tally_metric_add(&m->events[TALLY_EVENT_VIEW][TALLY_OUTCOME_IGNORED], wr->repeat);
    /* Only views repeat: the first views of the batch stand for the counted ones. */
    for (size_t i = 0, repeats = wr->repeat; i < n; i++) {
        if (ev[i].type == TALLY_EVENT_VIEW && repeats > 0) {
            repeats--;
            continue;
        }
        tally_metric_add(&m->events[ev[i].type][TALLY_OUTCOME_COUNTED], 1);
    }
}

void tally_admit_record(struct tally_metrics *m, const struct tally_verdict *v,
                        const struct tally_event *ev, size_t n,
                        const struct tally_admit_written *wr)
{
    switch (v->action) {
    case TALLY_ADMIT_REFUSE:
        tally_metric_add(&m->rejected[v->reject], 1);
        admit_count_events(m, ev, n, TALLY_OUTCOME_REJECTED);
        return;
    case TALLY_ADMIT_IGNORE:
        tally_metric_add(&m->ignored[v->ignore], n);
        admit_count_events(m, ev, n, TALLY_OUTCOME_IGNORED);
        return;
    case TALLY_ADMIT_COUNT:
        break;
    }
    if (wr == NULL)
        return;
    if (wr->status == TALLY_EUNKNOWN) {
        tally_metric_add(&m->indeterminate, 1); /* answered 504, or the pixel's GIF */
        return;
    }
    if (wr->status == TALLY_EREUSED) {
        tally_metric_add(&m->rejected[TALLY_REJECT_INVALID], 1);
        admit_count_events(m, ev, n, TALLY_OUTCOME_REJECTED);
        return;
    }
    if (wr->status < 0) {
        tally_metric_add(&m->rejected[TALLY_REJECT_UNAVAILABLE], 1);
        admit_count_events(m, ev, n, TALLY_OUTCOME_FAILED);
        return;
    }
    admit_record_written(m, ev, n, wr);
}
