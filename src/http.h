/* http.h -- what the route handlers and the HTTP server share (private to src/). */
#ifndef TALLY_HTTP_H
#define TALLY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "tally/metrics.h"
#include "worker.h"

/* The request headers tally looks at, found in one pass (NULL when absent). They point into
 * the request's header list: valid while the request is. */
struct tally_http_headers {
    const char *content_type, *idempotency_key, *origin, *authorization, *user_agent,
        *if_none_match;
    const char *purpose;         /* Sec-Purpose, Purpose, X-Purpose or X-Moz */
    const char *transfer_encoding;
    unsigned n, n_content_length, n_transfer_encoding, n_forwarded_for;
    bool bad_name;               /* a header name with whitespace ("Content-Length : 5") */
};

/* One request being handled: the libevent request, its worker, its route for metrics, when
 * it started, and the raw path and query of its URI. */
struct tally_http_req {
    struct evhttp_request *req;
    struct tally_worker *w;
    enum tally_route route;
    uint64_t t0_us;
    const char *path;   /* up to the '?', still percent-encoded; NUL-terminated copy */
    size_t path_len;
    const char *query;  /* after the '?', or "" */
    size_t query_len;
    const char *tail;   /* for prefix routes: the path after the prefix */
    size_t tail_len;
    bool v1;            /* under /v1/: CORS applies */
    struct tally_http_headers hdr;
    int authorized;     /* tally_http_authorized(), once asked; -1 before */
    bool read_admitted; /* counted in the worker's reads (tally_http_read_admit) */
    uint32_t read_cost; /* and its Redis commands */
};
/* PATH, QUERY and TAIL live only while the handler runs: an asynchronous handler copies what
 * it needs. */

/* Send the answer: CODE, CTYPE (NULL: none) and LEN bytes of BODY; adds the CORS headers
 * the request's Origin earns, records metrics, and frees the request (evhttp's rule: exactly
 * one send per request). */
void tally_http_send(struct tally_http_req *h, int code, const char *ctype, const void *body,
                     size_t len);

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

/* Add the security headers that answers of media type CTYPE carry (http_policy.c): CSP,
 * Referrer-Policy and nosniff for pages, nosniff for the rest. tally_http_send() calls it. */
void tally_http_policy(struct tally_http_req *h, const char *ctype);

/* 504 {"error":"outcome_unknown","message":MESSAGE} with Retry-After (as for 503): a write
 * sent to Redis and not confirmed in time, which may or may not be counted. */
void tally_http_send_outcome_unknown(struct tally_http_req *h, const char *message);

/* Add a response header. */
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

/* http_reports.c */
void tally_route_top(struct tally_http_req *h);
void tally_route_series(struct tally_http_req *h);
void tally_route_totals(struct tally_http_req *h);
void tally_route_badge(struct tally_http_req *h);
void tally_route_forget(struct tally_http_req *h);

#endif
