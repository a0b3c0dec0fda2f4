/* admit.h -- the ingest rules in one place: is a request's batch counted, ignored (and why)
 * or refused (with which HTTP status and JSON error)? And how did its events end, for the
 * metrics?
 *
 * tally_admit() decides from the facts of a request the HTTP layer has gathered (its route,
 * body or query, the headers tally reads, the Authorization verdict, the client address) and
 * from what it is given to work with (the configuration, the rate limiter, the worker's cache
 * of bot verdicts). It does no I/O, reads no globals and allocates nothing; the HTTP layer
 * only turns its verdict into an answer. A batch is all or nothing, so one verdict holds for
 * every event of it; only whether a view repeats an earlier one is decided later, by Redis.
 *
 * Checks, in order: for a POST, Content-Type (415), body size (413), Idempotency-Key (400);
 * the body or query (400); Origin (403); the token, when the batch holds comments (403 when
 * none is configured, else 401). A request with the token is then counted: a server speaks
 * for itself. Any other is charged to the rate limit (429; a batch above the burst is refused
 * whole, as it could never pass), then ignored as a prefetch or a bot, or counted. */
#ifndef TALLY_ADMIT_H
#define TALLY_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/config.h"
#include "tally/ingest.h"
#include "tally/metrics.h"
#include "tally/ratelimit.h"

/* Recent User-Agent verdicts: matching the bot list costs far more than hashing, and a site's
 * readers send few User-Agents, over and over. One per worker; zeroed is empty. */
struct tally_bot_cache {
    struct {
        uint64_t ua; /* SipHash of a User-Agent, never 0; 0: empty */
        bool bot;
    } seen[256];
};

/* Is UA (NUL-terminated, NULL when absent) a bot's, per tally_bot_match()? Remembered in C. */
bool tally_bot_cached(struct tally_bot_cache *c, const char *ua);

/* The facts of one ingest request. The strings are header values, NUL-terminated, NULL when
 * the header is absent; everything is borrowed for the call. */
struct tally_admit_req {
    bool pixel;                  /* GET /v1/pixel.gif: INPUT is its query string; else
                                    POST /v1/events: INPUT is its body */
    const char *input;
    size_t input_len;
    const char *content_type;    /* POST only */
    const char *idempotency_key; /* POST only */
    const char *origin;
    const char *user_agent;
    const char *purpose;         /* Sec-Purpose, Purpose, X-Purpose or X-Moz */
    int auth;                    /* Authorization: 0 the token, 401 missing or wrong, 403 no
                                    token configured */
    uint8_t addr[16];            /* the client's address, IPv4-mapped */
    uint64_t now_us;             /* monotonic clock */
};

/* What tally_admit() works with, borrowed. */
struct tally_admit_ctx {
    const struct tally_config *cfg;
    struct tally_ratelimit *rl;  /* shared by every worker: charged for admitted events */
    struct tally_bot_cache *bots; /* the calling worker's */
};

enum tally_admit_action {
    TALLY_ADMIT_COUNT,  /* write the batch; Redis may still find repeated views */
    TALLY_ADMIT_IGNORE, /* answer as counted, count nothing: IGNORE says why */
    TALLY_ADMIT_REFUSE, /* answer STATUS with ERR, count nothing */
};

struct tally_verdict {
    enum tally_admit_action action;
    enum tally_ignore ignore;    /* IGNORE: bot or prefetch */
    int status;                  /* REFUSE: 400, 401, 403, 413, 415 or 429 */
    enum tally_reject reject;    /* REFUSE: the metrics' reason */
    struct tally_error err;      /* REFUSE: "error" and "message" of the JSON answer */
    uint32_t retry_s;            /* 429: Retry-After */
};

/* Decide request REQ. BATCH (the worker's scratch) receives the parsed events: valid when
 * the verdict is COUNT or IGNORE, and also when a REFUSE came after parsing (403, 401, 429:
 * those events count as rejected); BATCH->n is 0 when the refusal came before. */
void tally_admit(const struct tally_admit_ctx *ctx, const struct tally_admit_req *req,
                 struct tally_batch *batch, struct tally_verdict *v);

/* How the write of an admitted batch ended. */
struct tally_admit_written {
    int status;                  /* 0 written; TALLY_EUNKNOWN: may or may not be; else not */
    uint32_t repeat;             /* written: views Redis found repeated, not counted */
    bool replayed;               /* written: the answer of an earlier request with the same
                                    Idempotency-Key, whose events were counted then */
};

/* Count in M how a request ended: the verdict V for the N events EV (N may be 0: refused
 * before parsing), and for an admitted batch, how its write ended (WR; NULL otherwise). The
 * one place where ingest outcomes are counted: events by type and outcome, ignored events
 * by reason, refused requests by reason. A write of unknown outcome counts no event, and one
 * request of unknown outcome (tally_requests_indeterminate_total). */
void tally_admit_record(struct tally_metrics *m, const struct tally_verdict *v,
                        const struct tally_event *ev, size_t n,
                        const struct tally_admit_written *wr);

/* Is CTYPE (a Content-Type value; NULL when none was sent, which passes) one of the N_OK media
 * types OK, compared case-insensitively, with any parameters? */
bool tally_admit_media_type(const char *ctype, const char *const *ok, size_t n_ok);

/* Is KEY (LEN bytes) an Idempotency-Key: 1..128 printable ASCII characters? */
bool tally_admit_idem_key(const char *key, size_t len);

#endif
