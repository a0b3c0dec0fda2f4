/* http_conn.h -- what the connection layer (http_conn.c) and the request layer
 * (http_server.c) share. Private to those two files. */
#ifndef TALLY_HTTP_CONN_H
#define TALLY_HTTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "http.h"

#define HTTP_REQ_ARENA 3072   /* bytes of arena inside each request object */
#define HTTP_BLOCK_SIZE 65536 /* arena blocks past the inline room, pooled per worker */
#define HTTP_BLOCKS_KEPT 128  /* free blocks a worker keeps for the next requests */
#define HTTP_REQS_KEPT 1024   /* free request objects a worker keeps */

/* An arena block: pooled when of HTTP_BLOCK_SIZE, else freed. */
struct http_block {
    struct http_block *next;
    size_t size; /* of DATA */
    _Alignas(16) char data[];
};

/* Per worker: the request objects and blocks it recycles, and the Date line it reuses. */
struct http_pool {
    struct tally_http_req *free_reqs;
    size_t n_free_reqs;
    struct http_block *free_blocks;
    size_t n_free_blocks;
    time_t date_at;
    char date[40]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
};

/* The worker's pool (http_conn.c keeps it with the connections). */
struct http_pool *http_pool_of(struct tally_worker *w);

/* ---- http_server.c, for http_conn.c ---- */

/* A request object for connection C, counted in W->busy; NULL when out of memory. */
struct tally_http_req *http_req_new(struct tally_worker *w, struct http_conn *c);

/* Give R and its arena back to the pool (its answer was written, or its client has gone). */
void http_req_release(struct tally_worker *w, struct tally_http_req *r);

/* Run the handler of R, framed as HEAD with BODY (BODY_LEN bytes; both borrowed for the call).
 * KEEP_ALIVE: whether the connection may serve another request after this one. */
void http_req_dispatch(struct tally_http_req *r, const struct tally_http_head *head,
                       const char *body, size_t body_len);

/* The bound of the body of a request with HEAD on worker W (ARG): TALLY_BODY_MAX, or
 * TALLY_IMPORT_BODY_MAX for an import that carries the token (a larger buffer is taken for
 * it only then). A tally_http_body_max_fn. */
size_t http_req_body_max(const struct tally_http_head *head, void *arg);

/* Answer R with the layer's JSON error WHY, then close. HEAD: what was parsed of it, or NULL. */
void http_req_refuse(struct tally_http_req *r, const struct tally_http_head *head,
                     const struct tally_http_refusal *why);

/* ---- http_conn.c, for http_server.c ---- */

/* R was answered: its connection writes what is ready at the end of this loop turn. */
void http_conn_answered(struct tally_http_req *r);

/* Should R's answer close the connection? (a request that asked, a framing error, or the
 * worker stopping with nothing else in hand on the connection). */
bool http_conn_closes_after(const struct tally_http_req *r);

/* Append LEN bytes of DATA to R's streamed answer, framed as a chunk when R->chunked (LEN > 0),
 * and write them at the end of the loop turn. Returns 0, or TALLY_ECLOSED when the connection
 * is gone or is dropped now because more than TALLY_HTTP_STREAM_BUF_MAX would wait. */
int http_conn_stream_add(struct tally_http_req *r, const void *data, size_t len);

/* Bytes of R's streamed answer not written yet (its head included). */
size_t http_conn_stream_pending(const struct tally_http_req *r);

/* R is to be answered with a stream: nothing after it on its connection is framed or run, and
 * the connection reads from now on only to hear the client leave. */
void http_conn_stream_expect(struct tally_http_req *r);

/* The peer's address, 16 bytes (IPv4-mapped). */
void http_conn_peer(const struct http_conn *c, uint8_t out[16]);

#endif
