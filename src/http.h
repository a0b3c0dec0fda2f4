/* http.h -- what the route handlers and the HTTP server share (private to src/). */
#ifndef TALLY_HTTP_H
#define TALLY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"
#include "tally/metrics.h"
#include "worker.h"

/* The request headers tally looks at (NULL when absent), NUL-terminated copies in the
 * request's arena: valid until its answer is written. */
struct tally_http_headers {
    const char *content_type, *idempotency_key, *origin, *authorization, *user_agent,
        *if_none_match;
    const char *purpose;         /* Sec-Purpose, Purpose, X-Purpose or X-Moz */
    unsigned n_forwarded_for;
};

struct http_conn;
struct http_block;
struct tally_http_req;

/* A streamed answer's client has gone (closed, reset, or dropped for reading too slowly)
 * before the handler ended the stream. Runs once, at the end of a loop turn; H is released
 * when it returns and must not be used after. */
typedef void tally_http_gone_cb(struct tally_http_req *h, void *arg);

/* One request, from its whole head to its answer written: the object http_server.c hands a
 * handler. The layer owns it; a handler borrows it and must answer it exactly once, now or
 * later, through tally_http_send() or one of the helpers below (or tally_http_abandon()).
 * The memory of the request and of what tally_http_alloc() gave is released once the answer
 * has been written (or the client has gone): never inside a call a handler makes. Counted in
 * the worker's BUSY from its head to its answer. */
struct tally_http_req {
    struct tally_worker *w;     /* the handler's context: configuration, Redis, scratch */
    enum tally_route route;
    unsigned method;            /* one enum tally_http_method */
    uint64_t t0_us;
    const char *path;   /* up to the '?', still percent-encoded; NUL-terminated */
    size_t path_len;
    const char *query;  /* after the '?', or "" */
    size_t query_len;
    const char *tail;   /* for prefix routes: the path after the prefix */
    size_t tail_len;
    const char *body;   /* the body, decoded from chunks; "" when none */
    size_t body_len;
    bool v1;            /* under /v1/: CORS applies */
    struct tally_http_headers hdr;
    int authorized;     /* tally_http_authorized(), once asked; -1 before */
    bool read_admitted; /* counted in the worker's reads (tally_http_read_admit) */
    uint32_t read_cost; /* and its Redis commands */
    /* Private to http_server.c. */
    struct http_conn *conn;       /* NULL once the client has gone */
    struct tally_http_req *next;  /* the connection's next request, in order */
    const char *xff;              /* X-Forwarded-For lines joined by ',', or NULL */
    size_t xff_len;
    char *extra;                  /* header lines added before the answer */
    size_t extra_len, extra_cap;
    char *out;                    /* the whole answer, once sent */
    size_t out_len;
    char *arena;                  /* free room of the current block */
    size_t arena_left;
    struct http_block *blocks;    /* arena blocks beyond the inline one */
    bool keep_alive, http10;      /* as the head asked */
    bool answered, close_after, abandoned, refused;
    /* A streamed answer: OUT is then the heap buffer of what is not written yet (OUT_CAP
     * bytes, NULL when empty), and the request stays until STREAM_DONE and all is out. */
    bool streaming, stream_done, chunked, out_heap;
    size_t out_cap;
    tally_http_gone_cb *gone;
    void *gone_arg;
};
/* PATH, QUERY, TAIL and BODY live only while the handler runs: an asynchronous handler
 * copies what it needs. */

/* SIZE bytes, zeroed, that live until the request's answer has been written (or its client
 * has gone): for what a handler keeps while it waits. NULL when out of memory. */
void *tally_http_alloc(struct tally_http_req *h, size_t size);

/* Send the answer: CODE, CTYPE (NULL: none) and LEN bytes of BODY (copied: borrowed for the
 * call); adds the CORS headers the request's Origin earns and records metrics. Exactly one
 * answer per request; it leaves with the connection's other answers, in order, at the end of
 * the loop turn. H stays valid until then. */
void tally_http_send(struct tally_http_req *h, int code, const char *ctype, const void *body,
                     size_t len);

/* The most a streamed answer may have waiting to be written, and the largest its buffer
 * grows: a client that reads slower than its stream grows is dropped (its GONE callback runs).
 * Room for the first events of 100 articles of the longest IDs; a writer that adds only while
 * nothing waits (tally_http_stream_pending) never comes near it. */
#define TALLY_HTTP_STREAM_BUF_MAX (128 * 1024)

/* H will be answered with a stream (tally_http_stream_start, now or later): no request
 * pipelined after it on its connection is run -- nothing behind an endless answer could be
 * answered -- and from now on what its client sends is read only to hear it leave, then
 * discarded. Call it before the handler returns, while later requests are not yet framed. */
void tally_http_stream_expect(struct tally_http_req *h);

/* Run FN(ARG) once what every worker of the process acknowledged before now is counted (the
 * journal's folds, tally/fold.h): at once when it is or there is no journal, else after the
 * folds it asks for, and at most --hold later. For a read of counts whose route does
 * not wait by itself (a stream). H must stay unanswered until then. */
void tally_http_after_folds(struct tally_http_req *h, void (*fn)(void *arg), void *arg);

/* The same for a read of the K articles IDS (LENS bytes each; borrowed until FN runs) alone:
 * it waits only for what the collector acknowledged of them (tally_fold_mark_articles();
 * IDS NULL: of every article, as tally_http_after_folds()).
 * Returns false, without running FN, when out of memory: the caller answers H. */
bool tally_http_after_folds_of(struct tally_http_req *h, const char *const *ids,
                               const uint16_t *lens, size_t k, void (*fn)(void *arg), void *arg);

/* A read of the articles of the N events EV follows their write, which H is about to hand
 * to the writer: the write is counted before its answer instead of journaled (as for
 * articles read within --follow-reads, tally/lately.h), so that the read finds nothing to
 * wait for. Nothing without a journal, or with --follow-reads 0. */
void tally_http_read_follows(struct tally_http_req *h, const struct tally_event *ev, size_t n);

/* Bytes of H's stream not written yet: 0 once its reader has taken everything. */
size_t tally_http_stream_pending(const struct tally_http_req *h);

/* Start a streamed answer: the head (CODE, CTYPE, the headers added so far, CORS) without a
 * Content-Length; the body follows in tally_http_stream_write() calls -- chunked for HTTP/1.1,
 * delimited by the connection's close for HTTP/1.0 -- until tally_http_stream_end(). Neither
 * the idle nor the request timer closes the connection meanwhile; only bytes that wait 10 s
 * without all being written do (whatever trickles out meanwhile). GONE (with ARG) runs once if the client leaves first. For HEAD only
 * the head is sent, and the stream is ended at once (GONE never runs). Returns 0, or
 * TALLY_ENOMEM when the request was abandoned instead (GONE never runs). */
int tally_http_stream_start(struct tally_http_req *h, int code, const char *ctype,
                            tally_http_gone_cb *gone, void *arg);

/* Send LEN bytes of DATA (copied) on H's stream, at the end of the loop turn. Returns 0, or
 * TALLY_ECLOSED when the stream has ended or its client is gone or is being dropped now for
 * having more than TALLY_HTTP_STREAM_BUF_MAX waiting (its GONE runs at the end of the turn). */
int tally_http_stream_write(struct tally_http_req *h, const void *data, size_t len);

/* End H's stream (after what was written); H must not be used after. No-op for a stream
 * already ended. While the worker stops, the connection closes after it. */
void tally_http_stream_end(struct tally_http_req *h);

/* A JSON error body {"error":CODE,"message":MESSAGE} with status STATUS. */
void tally_http_send_error(struct tally_http_req *h, int status, const char *code,
                           const char *message);

/* 503 with Retry-After (1-2 s, jittered so that clients do not retry in step). */
void tally_http_send_unavailable(struct tally_http_req *h, const char *message);

/* Caps per worker on what reads may hold while they wait for Redis: reads admitted and not
 * answered, and the Redis commands they may queue. */
#define TALLY_READS_MAX 128
#define TALLY_READ_CMDS_MAX 8192

/* Admit a read of H that sends up to COST Redis commands. False past the worker's caps: H is
 * then answered (503, Retry-After) and counted as refused. What was admitted is given back
 * when H (or a copy of it) is answered. */
bool tally_http_read_admit(struct tally_http_req *h, size_t cost);

/* The same, but past the caps H is not answered (the caller answers it otherwise). */
bool tally_http_read_try(struct tally_http_req *h, size_t cost);

/* Add the security headers that answers of media type CTYPE carry (http_policy.c): CSP,
 * Referrer-Policy and nosniff for pages, nosniff for the rest. tally_http_send() calls it. */
void tally_http_policy(struct tally_http_req *h, const char *ctype);

/* 504 {"error":"outcome_unknown","message":MESSAGE} with Retry-After (as for 503): a write
 * sent to Redis and not confirmed in time, which may or may not be counted. */
void tally_http_send_outcome_unknown(struct tally_http_req *h, const char *message);

/* Add a response header (NAME and VALUE copied). */
void tally_http_header(struct tally_http_req *h, const char *name, const char *value);

/* The client's address (16 bytes, IPv4-mapped): the peer, or with a trusted peer the hop
 * that X-Forwarded-For names (see tally_client_addr()). */
void tally_http_client(struct tally_http_req *h, uint8_t out[16]);

/* Does an If-None-Match value (INM, may be NULL) match ETAG? "*" matches anything; a list
 * matches when one entry does; comparison is weak (a W/ prefix is ignored), per RFC 9110. */
bool tally_http_etag_match(const char *inm, const char *etag);

/* Does the request carry --token as "Authorization: Bearer <token>"? 0 when it does, 401
 * when not, 403 when no token is configured. */
int tally_http_authorized(struct tally_http_req *h);

/* Answer nothing and close the connection once the answers before this one are written:
 * for a write whose outcome is unknown. */
void tally_http_abandon(struct tally_http_req *h);

uint64_t tally_http_now_us(void);

/* Route handlers (http_routes.c). */
void tally_route_events(struct tally_http_req *h);
void tally_route_pixel(struct tally_http_req *h);
void tally_route_stats(struct tally_http_req *h);
void tally_route_stats_one(struct tally_http_req *h);
void tally_route_healthz(struct tally_http_req *h);
void tally_route_readyz(struct tally_http_req *h);
void tally_route_metrics(struct tally_http_req *h);
void tally_route_asset(struct tally_http_req *h);

/* live.c */
void tally_route_live(struct tally_http_req *h);

/* http_reports.c */
void tally_route_top(struct tally_http_req *h);
void tally_route_series(struct tally_http_req *h);
void tally_route_totals(struct tally_http_req *h);
void tally_route_badge(struct tally_http_req *h);
void tally_route_forget(struct tally_http_req *h);

/* http_import.c */
void tally_route_import(struct tally_http_req *h);
void tally_route_imports(struct tally_http_req *h);

#endif
