/* http_import.c -- POST /v1/import (counts carried over from an earlier system, applied by
 * one script call: all of them, once per Idempotency-Key) and GET /v1/imports (the record of
 * the last TALLY_IMPORT_KEEP imports). Both need the token. */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "tally/admit.h"
#include "tally/cache.h"
#include "tally/clock.h"
#include "tally/error.h"
#include "tally/fanout.h"
#include "tally/hash.h"
#include "tally/import.h"
#include "tally/keys.h"
#include "tally/model.h"
#include "tally/redis.h"

/* The key every collector keeps the import record under, and the markers' prefix. The tag
 * puts them in one slot. */
#define IMPORT_LIST "{import}l"
#define IMPORT_MARKER "{import}m:"

/* Does H carry the token? If not, it is answered (401 or 403) and false returned. */
static bool import_authorized(struct tally_http_req *h)
{
    int auth = tally_http_authorized(h);

    if (auth == 0)
        return true;
    if (auth == 401)
        tally_http_header(h, "WWW-Authenticate", "Bearer");
    tally_http_send_error(h, auth, auth == 401 ? "unauthorized" : "token_not_configured",
                          auth == 401 ? "authorization: needs 'Authorization: Bearer <token>'"
                                      : "authorization: needs a token, and none is configured");
    return false;
}

/* ---- POST /v1/import ---- */

enum import_outcome {
    IMPORT_APPLIED, /* now or before */
    IMPORT_REUSED,  /* another body holds the key */
    IMPORT_LIMIT,   /* a counter would near 2^63: nothing applied */
};

struct import_call {
    struct tally_http_req *h;
    struct tally_fanout fan;
    enum import_outcome outcome;
    uint32_t lines; /* as the script answered: the lines, or with IMPORT_LIMIT the line */
};

/* The script's answer: {"ok"|"replay", lines}, {"reused", 0} or {"limit", line}. */
static int on_import_reply(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct import_call *c = f->arg;
    const redisReply *what;

    (void)i;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        (what = reply->element[0])->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_INTEGER)
        return TALLY_EREDIS;
    c->lines = (uint32_t)reply->element[1]->integer;
    c->outcome = strcmp(what->str, "reused") == 0  ? IMPORT_REUSED
                 : strcmp(what->str, "limit") == 0 ? IMPORT_LIMIT
                                                   : IMPORT_APPLIED;
    return 0;
}

static void on_import_done(struct tally_fanout *f, int status)
{
    struct import_call *c = f->arg;
    struct tally_http_req *h = c->h;
    struct tally_buf *b = &h->w->out;

    if (status == TALLY_EREDIS) {
        /* Redis answered with an error: the script may have stopped half-way, its marker
         * unset, and a retry would count again what it applied. */
        tally_http_send_error(h, 500, "import_failed",
                              "import: redis answered the import script with an error; some "
                              "of its lines may have been applied: check the counts before "
                              "sending it again");
        return;
    }
    if (status < 0) {
        /* Sent or not, the script ran whole or not at all: a retry under the same key is
         * applied at most once. */
        tally_http_send_unavailable(h, "redis did not confirm the import: retry with the same "
                                       "Idempotency-Key, which applies it at most once");
        return;
    }
    if (c->outcome == IMPORT_REUSED) {
        tally_http_send_error(h, 422, "idempotency_key_reused",
                              "idempotency-key: already used for another import body");
        return;
    }
    if (c->outcome == IMPORT_LIMIT) {
        char msg[160];

        snprintf(msg, sizeof(msg),
                 "line %u: would take a count of its article or of the site to about "
                 "9223372036853727232 (2^63 - 2^20) or more; nothing imported",
                 (unsigned)c->lines);
        tally_http_send_error(h, 409, "count_limit", msg);
        return;
    }
    /* Cached totals of any article may be stale now, and so may the week's and month's
     * lists and totals (an import may add to past days): as after a DELETE. */
    for (unsigned k = 0; k < TALLY_BUCKETS; k++)
        tally_epochs_bump(&h->w->server->epochs, k);
    tally_epochs_forgot(&h->w->server->epochs);
    tally_buf_reset(b);
    tally_buf_adds(b, "{\"imported\":");
    tally_buf_add_u64(b, c->lines);
    tally_buf_adds(b, "}\n");
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "application/json", b->data, b->len);
}

/* The head's checks, in the contract's order; false when H was answered. */
static bool import_head_ok(struct tally_http_req *h)
{
    const char *key = h->hdr.idempotency_key;

    if (!import_authorized(h))
        return false;
    if (tally_redis_is_cluster(h->w->redis)) {
        tally_http_send_error(h, 501, "not_implemented",
                              "import: needs a single Redis (--redis); on a Redis Cluster an "
                              "import's articles span many slots, and it could not be applied "
                              "all at once");
        return false;
    }
    if (!tally_import_type_ok(h->hdr.content_type)) {
        tally_http_send_error(h, 415, "unsupported_media_type",
                              "content-type: send application/x-ndjson or text/plain");
        return false;
    }
    if (key == NULL) {
        tally_http_send_error(h, 400, "missing_idempotency_key",
                              "idempotency-key: required for an import (1-128 printable ASCII "
                              "characters), so that a retry is applied once");
        return false;
    }
    if (!tally_admit_idem_key(key, strlen(key))) {
        tally_http_send_error(h, 400, "invalid_idempotency_key",
                              "idempotency-key: 1-128 printable ASCII characters");
        return false;
    }
    return true;
}

/* The body's digest, 16 hex digits: the same key with another body is refused. */
static void import_digest(const char *body, size_t len, char out[17])
{
    static const uint8_t k[16] = "tally import v1";

    snprintf(out, 17, "%016llx", (unsigned long long)tally_siphash(k, body, len));
}

/* The script call's arguments for IMP under KEY into B; their number. */
static size_t import_args(struct tally_buf *b, struct tally_http_req *h,
                          const struct tally_import *imp, const char *marker, size_t marker_len,
                          time_t now)
{
    const char *prefix = h->w->cfg->prefix, *key = h->hdr.idempotency_key;
    struct tally_buf record;
    char digest[17], model[TALLY_MODEL_ARG_MAX + 1];
    size_t model_len = tally_model_arg(model);

    import_digest(h->body, h->body_len, digest);
    tally_buf_init(&record);
    tally_import_record(&record, imp, now, key, strlen(key));
    tally_buf_add_bulk(b, "1", 1);
    tally_buf_add_bulk(b, marker, marker_len);
    tally_buf_add_bulk(b, prefix, strlen(prefix));
    tally_buf_add_bulk(b, digest, 16);
    tally_buf_add_bulk_i64(b, TALLY_IMPORT_MARKER_TTL);
    tally_buf_add_bulk(b, record.data != NULL ? record.data : "", record.len);
    tally_buf_add_bulk_i64(b, TALLY_IMPORT_KEEP);
    tally_buf_add_bulk_i64(b, (int64_t)now);
    tally_buf_add_bulk(b, model, model_len);
    tally_buf_add(b, imp->args.data, imp->args.len);
    b->oom |= record.oom;
    tally_buf_release(&record);
    return 9 + imp->n_args;
}

void tally_route_import(struct tally_http_req *h)
{
    const char *prefix = h->w->cfg->prefix, *key = h->hdr.idempotency_key;
    time_t now = tally_clock_now();
    struct tally_import imp;
    struct tally_error err;
    struct import_call *c;
    struct tally_buf b;
    char marker[TALLY_KEY_MAX];
    size_t marker_len, nargs;
    int rc;

    if (!import_head_ok(h))
        return;
    rc = tally_import_parse(&imp, h->body, h->body_len, (int64_t)(now / 86400), &err);
    if (rc < 0) {
        if (rc == TALLY_EINVAL)
            tally_http_send_error(h, 400, err.code, err.message);
        else
            tally_http_send_unavailable(h, "out of memory");
        tally_import_release(&imp);
        return;
    }
    marker_len = (size_t)snprintf(marker, sizeof(marker), "%s" IMPORT_MARKER "%s", prefix, key);
    tally_buf_init(&b);
    nargs = import_args(&b, h, &imp, marker, marker_len, now);
    tally_import_release(&imp);
    if (b.oom || (c = tally_http_alloc(h, sizeof(*c))) == NULL) {
        tally_buf_release(&b);
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    c->h = h;
    (void)tally_fanout_init(&c->fan, 1, on_import_reply, on_import_done, c);
    /* A failed send is what tally_fanout_end() returns. */
    (void)tally_fanout_eval(&c->fan, h->w->redis, marker, marker_len, TALLY_SCRIPT_IMPORT, b.data,
                            b.len, nargs);
    tally_buf_release(&b);
    if (tally_fanout_end(&c->fan) < 0)
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
}

/* ---- GET /v1/imports ---- */

struct imports_call {
    struct tally_http_req *h;
    struct tally_fanout fan;
    struct tally_buf *out;
};

static int on_imports_reply(struct tally_fanout *f, size_t i, const redisReply *reply)
{
    struct imports_call *c = f->arg;
    struct tally_buf *b = c->out;

    (void)i;
    if (reply->type != REDIS_REPLY_ARRAY)
        return TALLY_EREDIS;
    tally_buf_reset(b);
    tally_buf_adds(b, "{\"imports\":[");
    for (size_t k = 0; k < reply->elements; k++) {
        const redisReply *e = reply->element[k];

        if (e->type != REDIS_REPLY_STRING)
            return TALLY_EREDIS;
        if (k > 0)
            tally_buf_adds(b, ",");
        tally_buf_add(b, e->str, e->len); /* JSON the collector wrote */
    }
    tally_buf_adds(b, "]}\n");
    return b->oom ? TALLY_ENOMEM : 0;
}

static void on_imports_done(struct tally_fanout *f, int status)
{
    struct imports_call *c = f->arg;
    struct tally_http_req *h = c->h;

    if (status < 0) {
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
        return;
    }
    tally_http_header(h, "Cache-Control", "no-store");
    tally_http_send(h, 200, "application/json", c->out->data, c->out->len);
}

void tally_route_imports(struct tally_http_req *h)
{
    char key[TALLY_KEY_MAX], last[24];
    const char *argv[4] = {"LRANGE", key, "0", last};
    size_t argvlen[4] = {6, 0, 1, 0};
    struct imports_call *c;

    if (!import_authorized(h))
        return;
    if ((c = tally_http_alloc(h, sizeof(*c))) == NULL) {
        tally_http_send_unavailable(h, "out of memory");
        return;
    }
    c->h = h;
    c->out = &h->w->out;
    argvlen[1] = (size_t)snprintf(key, sizeof(key), "%s" IMPORT_LIST, h->w->cfg->prefix);
    argvlen[3] = (size_t)snprintf(last, sizeof(last), "%d", TALLY_IMPORT_KEEP - 1);
    (void)tally_fanout_init(&c->fan, 1, on_imports_reply, on_imports_done, c);
    (void)tally_fanout_command(&c->fan, h->w->redis, 4, argv, argvlen);
    if (tally_fanout_end(&c->fan) < 0)
        tally_http_send_unavailable(h, "redis is unavailable; retry later");
}
