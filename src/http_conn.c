/* http_conn.c -- each worker's HTTP/1.1 connections on its event_base: accepting on the
 * worker's own SO_REUSEPORT socket up to its share of --max-connections, reading and framing
 * requests in place (http_parse.c), writing answers in order, and the time limits of one
 * coarse timer wheel.
 *
 * A connection is one edge-triggered EV_READ|EV_WRITE event, added once. It reads into a
 * buffer inside itself, moved to a larger one from the worker's pool only for a long head or
 * a body, and reads until a read comes back short. Requests are framed where they lie and
 * handed to http_server.c while their bytes are still in the buffer; up to HTTP_PIPELINE_MAX
 * of them may wait for their answers at once, and the connection stops reading past that.
 * Answers go out in the order the requests came, gathered at the end of the loop turn into one
 * writev per connection: the answers of one group commit, and pipelined ones, leave together.
 *
 * A connection is freed only at the end of a loop turn, and only once none of its requests is
 * held by a handler: a client that leaves does not take the requests it sent with it.
 *
 * A streamed answer (Server-Sent Events) is a request answered with its head whose body keeps
 * growing: it stays first in line, its unwritten bytes in a heap buffer of their own (freed
 * whenever all is out, so an idle stream holds none), until its handler ends it. The idle and
 * request timers leave it alone; a write that makes no progress for HTTP_WRITE_MS, or more
 * than TALLY_HTTP_STREAM_BUF_MAX waiting, drops it. The client's end of stream drops it too:
 * nothing more can be asked on that connection, and a stream has no natural end to wait for.
 * The handler hears of a drop through the stream's gone callback, at the end of the loop
 * turn. */
#define _GNU_SOURCE /* accept4() */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "http_conn.h"
#include "tally/error.h"
#include "tally/import.h"
#include "tally/ingest.h"
#include "tally/log.h"

#define HTTP_INLINE 2048  /* bytes of read buffer inside a connection */
#define HTTP_MEDIUM 16384 /* the next buffer, for a long head */
#define HTTP_BIG (TALLY_HTTP_HEAD_MAX + TALLY_BODY_MAX + 8192) /* the largest request */
/* An import's body: a buffer of its own, allocated for it alone. */
#define HTTP_HUGE (TALLY_HTTP_HEAD_MAX + TALLY_IMPORT_BODY_MAX + 65536)
#define HTTP_BUFS_KEPT 16     /* free buffers of each size a worker keeps */
#define HTTP_PIPELINE_MAX 8   /* requests waiting for answers before a connection stops reading */
#define HTTP_IDLE_MS 10000    /* no byte for this long closes a connection */
#define HTTP_REQUEST_MS 10000 /* a request must arrive whole within this from its first byte */
#define HTTP_IMPORT_MS 120000 /* the same for an import with the token: up to 8 MiB */
#define HTTP_WRITE_MS 10000   /* an answer that cannot be written for this long is dropped */
#define HTTP_LINGER_MS 2000   /* after a last answer: reading what the client still sends */
#define HTTP_STREAM_SNDBUF 32768 /* a stream's socket send buffer (Linux doubles it) */
#define HTTP_ACCEPTS_MAX 64   /* connections accepted per wake-up */
#define HTTP_IOV_MAX 64
#define WHEEL_TICK_MS 250
#define WHEEL_SLOTS 64 /* 16 s ahead */

struct http_conn {
    struct event ev;
    struct tally_worker *w;
    struct tally_http_server *srv;
    evutil_socket_t fd;   /* -1 once gone */
    char *buf;            /* INLINE_BUF, or a pool buffer of CAP bytes */
    size_t cap, len, off; /* OFF: where the request being read starts */
    struct tally_http_framer fr;
    struct tally_http_req *first, *last; /* requests waiting or being written, in order */
    unsigned n_reqs;
    size_t out_off;                            /* bytes of FIRST's answer written */
    uint64_t last_io, req_start, linger_until; /* ms */
    uint64_t out_since; /* ms: a stream's bytes began to wait, or last moved */
    uint8_t peer[16];
    bool framing;       /* a request's first bytes have arrived: FR is in use */
    bool closing;       /* no further request is read */
    bool read_paused;   /* stopped reading: too much in flight, or the buffer full */
    bool write_blocked; /* the socket took less than offered: wait for EV_WRITE */
    bool lingering, gone, dirty, continued;
    bool rdhup; /* the client's end of stream is there to read (EV_CLOSED) */
    bool stream_only; /* a stream is coming or open: what the client sends is only discarded */
    int slot;   /* wheel slot, -1 when not in the wheel */
    struct http_conn *flush_next;
    TAILQ_ENTRY(http_conn) link, wlink;
    _Alignas(16) char inline_buf[HTTP_INLINE];
};

TAILQ_HEAD(http_conn_list, http_conn);

struct tally_http_server {
    struct tally_worker *w;
    evutil_socket_t lfd; /* -1 once closed */
    struct event accept_ev, tick_ev, flush_ev;
    bool paused; /* not accepting: at the cap, or out of descriptors */
    size_t cap;  /* this worker's share of --max-connections */
    struct http_conn_list conns;
    struct http_conn_list wheel[WHEEL_SLOTS];
    uint64_t wheel_at; /* ms: the next tick to process */
    struct http_conn *flush_list;
    struct http_pool pool;
    char *free_bufs[2]; /* medium, big: chained through their first bytes */
    size_t n_free_bufs[2];
};

static uint64_t conn_now_ms(void)
{
    return tally_http_now_us() / 1000;
}

struct http_pool *http_pool_of(struct tally_worker *w)
{
    return &w->http->pool;
}

/* ---- Buffers ---- */

static char *conn_buf_get(struct tally_http_server *s, int big)
{
    char *b = s->free_bufs[big];

    if (b != NULL) {
        memcpy(&s->free_bufs[big], b, sizeof(char *));
        s->n_free_bufs[big]--;
        return b;
    }
    return malloc(big ? HTTP_BIG : HTTP_MEDIUM);
}

static void conn_buf_put(struct tally_http_server *s, char *b, size_t cap)
{
    int big = cap == HTTP_BIG;

    if (cap == HTTP_HUGE || s->n_free_bufs[big] >= HTTP_BUFS_KEPT) {
        free(b);
        return;
    }
    memcpy(b, &s->free_bufs[big], sizeof(char *));
    s->free_bufs[big] = b;
    s->n_free_bufs[big]++;
}

/* Back to the inline buffer once nothing is left in a larger one. */
static void conn_buf_shrink(struct http_conn *c)
{
    if (c->off != c->len || c->framing)
        return;
    c->off = c->len = 0;
    if (c->buf != c->inline_buf) {
        conn_buf_put(c->srv, c->buf, c->cap);
        c->buf = c->inline_buf;
        c->cap = HTTP_INLINE;
    }
}

/* Room to read into: the request being read moved to the front, or a larger buffer. False
 * when there is none (the buffer holds the largest request, or requests not yet framed). */
static bool conn_room(struct http_conn *c)
{
    char *b;
    size_t cap;

    if (c->len < c->cap)
        return true;
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
        return true;
    }
    if (c->cap == HTTP_HUGE || !c->framing)
        return false;
    if (c->cap == HTTP_BIG) {
        /* Past the largest ordinary request: only an import's body, once its head is in. */
        if (tally_http_framer_head_len(&c->fr) == 0 ||
            tally_http_framer_body_max(&c->fr) <= TALLY_BODY_MAX)
            return false;
        cap = HTTP_HUGE;
        b = malloc(HTTP_HUGE);
    } else {
        cap = c->cap == HTTP_INLINE ? HTTP_MEDIUM : HTTP_BIG;
        b = conn_buf_get(c->srv, cap == HTTP_BIG);
    }
    if (b == NULL)
        return false;
    memcpy(b, c->buf, c->len);
    if (c->buf != c->inline_buf)
        conn_buf_put(c->srv, c->buf, c->cap);
    c->buf = b;
    c->cap = cap;
    return true;
}

/* ---- The wheel ---- */

static void wheel_unlink(struct http_conn *c)
{
    if (c->slot >= 0)
        TAILQ_REMOVE(&c->srv->wheel[c->slot], c, wlink);
    c->slot = -1;
}

/* Look at C again at AT (ms), or at the next tick if that has passed. */
static void wheel_link(struct http_conn *c, uint64_t at)
{
    struct tally_http_server *s = c->srv;

    wheel_unlink(c);
    if (at < s->wheel_at)
        at = s->wheel_at;
    c->slot = (int)((at / WHEEL_TICK_MS) % WHEEL_SLOTS);
    TAILQ_INSERT_TAIL(&s->wheel[c->slot], c, wlink);
}

/* When C's time runs out, as things stand. Time only moves deadlines later, so a connection
 * filed under an earlier tick is simply filed again when that tick comes. */
static uint64_t conn_deadline(const struct http_conn *c, uint64_t now)
{
    bool import = tally_http_framer_head_len(&c->fr) > 0 &&
                  tally_http_framer_body_max(&c->fr) > TALLY_BODY_MAX;
    uint64_t idle = c->last_io + HTTP_IDLE_MS,
             whole = c->req_start + (import ? HTTP_IMPORT_MS : HTTP_REQUEST_MS);
    const struct tally_http_req *f = c->first;

    if (c->lingering)
        return c->linger_until;
    if (f != NULL && f->streaming && !f->abandoned)
        return f->out_len > c->out_off ? c->out_since + HTTP_WRITE_MS : now + HTTP_IDLE_MS;
    if (c->first != NULL && c->first->answered)
        return c->last_io + HTTP_WRITE_MS;
    if (c->n_reqs > 0)
        return now + HTTP_IDLE_MS; /* handlers' time is theirs to keep */
    if (c->framing)
        return idle < whole ? idle : whole;
    return idle;
}

/* ---- Closing ---- */

static void conn_dirty(struct http_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->flush_next = c->srv->flush_list;
    c->srv->flush_list = c;
    event_active(&c->srv->flush_ev, EV_TIMEOUT, 1);
}

/* The client is gone, or is let go: no more reading or writing. The connection is freed at
 * the end of the loop turn once no handler holds one of its requests. */
static void conn_gone(struct http_conn *c)
{
    if (c->gone)
        return;
    c->gone = true;
    event_del(&c->ev);
    close(c->fd);
    c->fd = -1;
    wheel_unlink(c);
    conn_dirty(c);
}

static void conn_free(struct http_conn *c)
{
    struct tally_http_server *s = c->srv;
    struct tally_worker *w = c->w;

    TAILQ_REMOVE(&s->conns, c, link);
    wheel_unlink(c);
    if (c->buf != c->inline_buf)
        conn_buf_put(s, c->buf, c->cap);
    free(c);
    w->conns--;
    tally_gauge_add(&w->metrics.connections, -1);
    if (s->paused && w->conns < s->cap && s->lfd >= 0) {
        event_add(&s->accept_ev, NULL);
        s->paused = false;
    }
}

static void conn_read(struct http_conn *c);

/* The last answer is out: end the stream, and read what the client still sends until it
 * closes or HTTP_LINGER_MS pass, so that it sees the answer rather than a reset. */
static void conn_finish(struct http_conn *c)
{
    c->closing = c->lingering = true;
    c->linger_until = conn_now_ms() + HTTP_LINGER_MS;
    shutdown(c->fd, SHUT_WR);
    wheel_link(c, c->linger_until);
    conn_read(c);
}

/* ---- Requests in, answers out ---- */

static void conn_enqueue(struct http_conn *c, struct tally_http_req *r)
{
    r->next = NULL;
    if (c->last != NULL)
        c->last->next = r;
    else
        c->first = r;
    c->last = r;
    c->n_reqs++;
}

static void conn_pop(struct http_conn *c)
{
    struct tally_http_req *r = c->first;

    c->first = r->next;
    if (c->first == NULL)
        c->last = NULL;
    c->n_reqs--;
    c->out_off = 0;
    http_req_release(c->w, r);
}

/* Expect: 100-continue, with nothing else in flight and none of the body sent yet. */
static void conn_continue(struct http_conn *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";

    if (!c->fr.head.expect_continue || c->continued || c->n_reqs > 0 ||
        c->len - c->off != tally_http_framer_head_len(&c->fr) || c->fr.head.minor == 0)
        return;
    c->continued = true;
    (void)!send(c->fd, line, sizeof(line) - 1, MSG_NOSIGNAL);
}

/* Frame and hand over every whole request in the buffer, up to the pipeline's bound. */
static void conn_frame(struct http_conn *c)
{
    while (!c->closing && !c->gone && c->off < c->len) {
        struct tally_http_refusal why;
        struct tally_http_req *r;
        enum tally_http_frame_result res;
        size_t start;

        if (c->n_reqs >= HTTP_PIPELINE_MAX) {
            c->read_paused = true;
            break;
        }
        if (!c->framing) {
            c->framing = true;
            c->continued = false;
            c->req_start = conn_now_ms();
            tally_http_framer_reset(&c->fr);
        }
        res = tally_http_frame_by(&c->fr, c->buf + c->off, c->len - c->off, http_req_body_max, c->w,
                                  &why);
        if (res == TALLY_HTTP_MORE)
            break;
        if (res == TALLY_HTTP_BODY_MORE) {
            conn_continue(c);
            break;
        }
        if ((r = http_req_new(c->w, c)) == NULL) {
            conn_gone(c);
            break;
        }
        conn_enqueue(c, r);
        c->framing = false;
        if (res == TALLY_HTTP_REFUSED) {
            c->closing = true;
            http_req_refuse(r, tally_http_framer_head_len(&c->fr) > 0 ? &c->fr.head : NULL, &why);
            break;
        }
        start = c->off;
        c->off += c->fr.total;
        if (!c->fr.head.keep_alive)
            c->closing = true;
        http_req_dispatch(r, &c->fr.head, c->buf + start + tally_http_framer_head_len(&c->fr),
                          c->fr.body_len);
    }
    conn_buf_shrink(c);
}

/* Does C carry a stream that has not ended? */
static bool conn_streaming(const struct http_conn *c)
{
    for (const struct tally_http_req *r = c->first; r != NULL; r = r->next)
        if (r->streaming && !r->stream_done)
            return true;
    return false;
}

/* The client ended its stream: answer what it asked in full, then close. */
static void conn_eof(struct http_conn *c)
{
    c->closing = true;
    if (c->n_reqs == 0 || conn_streaming(c))
        conn_gone(c);
}

/* Read what the client sent and discard it (lingering). */
static void conn_discard(struct http_conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->inline_buf, sizeof(c->inline_buf));

        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            conn_gone(c);
        return;
    }
}

static void conn_read(struct http_conn *c)
{
    for (;;) {
        size_t room;
        ssize_t n;

        if (c->gone)
            return;
        if (c->lingering || c->stream_only) {
            conn_discard(c); /* only to hear the client leave */
            return;
        }
        if (c->closing)
            return; /* what follows is read, and discarded, once the last answer is out */
        if (c->n_reqs >= HTTP_PIPELINE_MAX || !conn_room(c)) {
            c->read_paused = true;
            return;
        }
        room = c->cap - c->len;
        n = read(c->fd, c->buf + c->len, room);
        if (n > 0) {
            c->len += (size_t)n;
            c->last_io = conn_now_ms();
            conn_frame(c);
            /* Short: the socket is empty, and the next byte brings a new edge; an end of
             * stream that came with the bytes brings none, but EV_CLOSED told of it. */
            if ((size_t)n < room && !c->rdhup)
                return;
            continue;
        }
        if (n == 0) {
            conn_eof(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_gone(c);
        return;
    }
}

/* Gather the answers ready at the front, in order, into IOV. */
static int conn_gather(struct http_conn *c, struct iovec *iov)
{
    int n = 0;

    for (struct tally_http_req *r = c->first;
         r != NULL && r->answered && !r->abandoned && n < HTTP_IOV_MAX; r = r->next) {
        size_t skip = r == c->first ? c->out_off : 0;

        if (r->out_len > skip) {
            iov[n].iov_base = r->out + skip;
            iov[n].iov_len = r->out_len - skip;
            n++;
        }
        if (r->streaming && !r->stream_done)
            break; /* what follows a stream waits for its end */
    }
    return n;
}

/* Everything of stream R is out: its buffer goes back, so an idle stream holds none. */
static void conn_stream_drained(struct http_conn *c, struct tally_http_req *r)
{
    if (r->out_heap)
        free(r->out);
    r->out = NULL;
    r->out_len = r->out_cap = 0;
    r->out_heap = false;
    c->out_off = 0;
}

/* Account for N bytes written: release the requests whose answers are out. Returns true when
 * the connection is to close after them. */
static bool conn_written(struct http_conn *c, size_t n)
{
    while (n > 0) {
        struct tally_http_req *r = c->first;
        size_t left = r->out_len - c->out_off;
        bool close_after = r->close_after;

        if (n < left) {
            c->out_off += n;
            return false;
        }
        n -= left;
        c->out_since = conn_now_ms(); /* progress: an answer, or all of a stream, is out */
        if (r->streaming && !r->stream_done) {
            conn_stream_drained(c, r);
            return false;
        }
        conn_pop(c);
        if (close_after)
            return true;
    }
    return false;
}

/* A stream ended with nothing left to write (close-delimited, or HEAD): let it go. Returns
 * true when the connection is to close after it. */
static bool conn_pop_ended(struct http_conn *c)
{
    struct tally_http_req *r;

    while ((r = c->first) != NULL && r->streaming && r->stream_done && !r->abandoned &&
           c->out_off >= r->out_len) {
        bool close_after = r->close_after;

        conn_pop(c);
        if (close_after)
            return true;
    }
    return false;
}

/* Write every answer that is ready, in order. */
static void conn_write(struct http_conn *c)
{
    struct iovec iov[HTTP_IOV_MAX];
    int n;

    for (;;) {
        size_t offered = 0;
        ssize_t wr;

        if (c->gone || c->write_blocked)
            break;
        if (conn_pop_ended(c)) {
            conn_finish(c);
            return;
        }
        if ((n = conn_gather(c, iov)) == 0)
            break;
        wr = writev(c->fd, iov, n);
        for (int i = 0; i < n; i++)
            offered += iov[i].iov_len;
        if (wr < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                c->write_blocked = true;
            else
                conn_gone(c);
            return;
        }
        c->last_io = conn_now_ms();
        if (conn_written(c, (size_t)wr)) {
            conn_finish(c);
            return;
        }
        if ((size_t)wr < offered)
            c->write_blocked = true;
    }
    if (c->gone || c->write_blocked)
        return;
    if (c->first != NULL && c->first->answered && c->first->abandoned) {
        conn_pop(c);
        conn_gone(c); /* the others are released as their handlers answer them */
        return;
    }
    if (c->first == NULL && c->closing) {
        conn_finish(c);
        return;
    }
    if (c->read_paused && c->n_reqs < HTTP_PIPELINE_MAX) {
        c->read_paused = false;
        conn_frame(c);
        conn_read(c);
    }
}

/* A gone connection: tell the handlers of its streams. */
static void conn_streams_gone(struct http_conn *c)
{
    for (struct tally_http_req *r = c->first; r != NULL; r = r->next) {
        if (!r->streaming || r->stream_done)
            continue;
        r->stream_done = true;
        if (r->gone != NULL)
            r->gone(r, r->gone_arg);
    }
}

/* A gone connection: let go of the requests answered, wherever they are in the line. */
static void conn_release_answered(struct http_conn *c)
{
    struct tally_http_req **pp = &c->first, *r;

    c->last = NULL;
    while ((r = *pp) != NULL) {
        if (r->answered) {
            *pp = r->next;
            c->n_reqs--;
            http_req_release(c->w, r);
        } else {
            c->last = r;
            pp = &r->next;
        }
    }
    c->out_off = 0;
}

int http_conn_stream_add(struct tally_http_req *r, const void *data, size_t len)
{
    static const char last[] = "0\r\n\r\n";
    struct http_conn *c = r->conn;
    size_t off = r == c->first ? c->out_off : 0, pending = r->out_len - off, need;
    char head[24];
    int hlen = 0;

    if (c->gone)
        return TALLY_ECLOSED;
    if (r->chunked && len > 0)
        hlen = snprintf(head, sizeof(head), "%zx\r\n", len);
    need = pending + (size_t)hlen + len + (r->chunked ? 2 : 0);
    if (r->chunked && len == 0)
        need = pending + sizeof(last) - 1;
    if (need > TALLY_HTTP_STREAM_BUF_MAX) {
        tally_metric_add(&c->w->metrics.live_dropped[TALLY_LIVE_DROP_OVERFLOW], 1);
        conn_gone(c); /* a reader this slow would hold ever more */
        return TALLY_ECLOSED;
    }
    if (!r->out_heap || need > r->out_cap) {
        size_t cap = need < 512 ? 512 : need + need / 2;
        char *b;

        if (cap > TALLY_HTTP_STREAM_BUF_MAX)
            cap = TALLY_HTTP_STREAM_BUF_MAX; /* never grown past what may wait */
        if ((b = malloc(cap)) == NULL) {

            conn_gone(c);
            return TALLY_ECLOSED;
        }
        if (pending > 0)
            memcpy(b, r->out + off, pending);
        if (r->out_heap)
            free(r->out);
        r->out = b;
        r->out_cap = cap;
        r->out_heap = true;
    } else if (off > 0) {
        memmove(r->out, r->out + off, pending);
    }
    if (r == c->first) {
        c->out_off = 0;
        if (pending == 0)
            c->out_since = conn_now_ms();
    }
    r->out_len = pending;
    if (r->chunked && len == 0) {
        memcpy(r->out + r->out_len, last, sizeof(last) - 1);
        r->out_len += sizeof(last) - 1;
    } else {
        memcpy(r->out + r->out_len, head, (size_t)hlen);
        memcpy(r->out + r->out_len + hlen, data, len);
        r->out_len += (size_t)hlen + len;
        if (r->chunked) {
            memcpy(r->out + r->out_len, "\r\n", 2);
            r->out_len += 2;
        }
    }
    http_conn_answered(r);
    return 0;
}

size_t http_conn_stream_pending(const struct tally_http_req *r)
{
    const struct http_conn *c = r->conn;

    return r->out_len - (r == c->first ? c->out_off : 0);
}

void http_conn_stream_expect(struct tally_http_req *r)
{
    struct http_conn *c = r->conn;
    int sndbuf = HTTP_STREAM_SNDBUF;

    /* Nothing behind a stream is answered before it ends, and it does not end: what follows
     * it is neither framed nor run, and what the client sends from now on is discarded. The
     * bytes before C->OFF are R's own, which its handler may still be reading. */
    c->stream_only = c->closing = true;
    if (c->fd >= 0) /* the kernel's share too: a stalled reader holds no more than this */
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    c->len = c->off;
    c->framing = false;
    c->read_paused = false;
}

void http_conn_answered(struct tally_http_req *r)
{
    struct http_conn *c = r->conn;

    /* A stream's head, first in line: its write deadline counts from now. */
    if (r->streaming && !r->out_heap && r == c->first && c->out_off == 0)
        c->out_since = conn_now_ms();
    if (c->gone || r == c->first)
        conn_dirty(c);
}

bool http_conn_closes_after(const struct tally_http_req *r)
{
    const struct http_conn *c = r->conn;

    if (r->refused || !r->keep_alive)
        return true;
    /* Stopping, or the client's stream ended: the last request in hand is the last. */
    return (c->w->draining || c->closing) && r == c->last && c->off == c->len && !c->framing;
}

void http_conn_peer(const struct http_conn *c, uint8_t out[16])
{
    memcpy(out, c->peer, 16);
}

/* ---- Events ---- */

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;

    (void)fd;
    if (what & EV_CLOSED)
        c->rdhup = true;
    if ((what & EV_WRITE) && c->write_blocked) {
        c->write_blocked = false;
        conn_write(c);
    }
    if ((what & (EV_READ | EV_CLOSED)) && !c->gone)
        conn_read(c);
}

/* End of the loop turn: every connection with answers ready writes them at once. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct tally_http_server *s = arg;
    struct http_conn *c;

    (void)fd;
    (void)what;
    while ((c = s->flush_list) != NULL) {
        s->flush_list = c->flush_next;
        c->dirty = false;
        if (!c->gone)
            conn_write(c);
        if (c->gone) {
            conn_streams_gone(c);
            conn_release_answered(c);
            if (c->n_reqs == 0 && !c->dirty)
                conn_free(c);
        }
    }
}

static void conn_expire(struct http_conn *c, uint64_t now)
{
    const struct tally_http_req *f = c->first;

    /* A stream whose unwritten bytes did not drain for HTTP_WRITE_MS. */
    if (!c->lingering && f != NULL && f->streaming && !f->stream_done && !f->abandoned)
        tally_metric_add(&c->w->metrics.live_dropped[TALLY_LIVE_DROP_SLOW], 1);
    /* Bytes kept coming, too slowly for a whole request: a slow client, not an idle one. */
    if (!c->lingering && c->n_reqs == 0 && c->framing && now - c->last_io < HTTP_IDLE_MS)
        tally_metric_add(&c->w->metrics.slow_clients, 1);
    conn_gone(c);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct tally_http_server *s = arg;
    uint64_t now = conn_now_ms();

    (void)fd;
    (void)what;
    if (now - s->wheel_at > (uint64_t)WHEEL_SLOTS * WHEEL_TICK_MS)
        s->wheel_at = now - (uint64_t)WHEEL_SLOTS * WHEEL_TICK_MS;
    while (s->wheel_at <= now) {
        struct http_conn_list due = TAILQ_HEAD_INITIALIZER(due);
        struct http_conn *c;
        int slot = (int)((s->wheel_at / WHEEL_TICK_MS) % WHEEL_SLOTS);

        TAILQ_CONCAT(&due, &s->wheel[slot], wlink);
        s->wheel_at += WHEEL_TICK_MS;
        while ((c = TAILQ_FIRST(&due)) != NULL) {
            uint64_t at = conn_deadline(c, now);

            TAILQ_REMOVE(&due, c, wlink);
            c->slot = -1;
            if (at <= now)
                conn_expire(c, now);
            else
                wheel_link(c, at);
        }
    }
    /* Out of descriptors a while ago: try again. */
    if (s->paused && s->w->conns < s->cap && s->lfd >= 0) {
        event_add(&s->accept_ev, NULL);
        s->paused = false;
    }
}

static void conn_new(struct tally_http_server *s, evutil_socket_t fd,
                     const struct sockaddr_storage *ss)
{
    struct tally_worker *w = s->w;
    struct http_conn *c = malloc(sizeof(*c));
    int one = 1;

    if (c == NULL) {
        close(fd);
        return;
    }
    memset(c, 0, offsetof(struct http_conn, inline_buf));
    c->w = w;
    c->srv = s;
    c->fd = fd;
    c->buf = c->inline_buf;
    c->cap = HTTP_INLINE;
    c->slot = -1;
    c->last_io = conn_now_ms();
    if (ss->ss_family == AF_INET6) {
        memcpy(c->peer, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    } else if (ss->ss_family == AF_INET) {
        c->peer[10] = c->peer[11] = 0xff;
        memcpy(c->peer + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    }
    /* Answers leave whole, one write per turn: nothing to gain from Nagle's delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    event_assign(&c->ev, w->base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST,
                 on_conn_event, c);
    if (event_add(&c->ev, NULL) < 0) {
        close(fd);
        free(c);
        return;
    }
    TAILQ_INSERT_TAIL(&s->conns, c, link);
    wheel_link(c, c->last_io + HTTP_IDLE_MS);
    w->conns++;
    tally_gauge_add(&w->metrics.connections, 1);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct tally_http_server *s = arg;

    (void)what;
    for (int i = 0; i < HTTP_ACCEPTS_MAX; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        evutil_socket_t fd;

        if (s->w->conns >= s->cap) {
            /* The rest wait in the kernel's backlog, not in our memory. */
            event_del(&s->accept_ev);
            s->paused = true;
            return;
        }
        memset(&ss, 0, sizeof(ss));
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(s, fd, &ss);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            log_warn("cannot accept a connection: %s", strerror(errno));
            event_del(&s->accept_ev); /* until the next tick */
            s->paused = true;
        }
        return;
    }
}

/* ---- Setup and drain ---- */

int tally_http_setup(struct tally_worker *w, evutil_socket_t listener)
{
    struct tally_http_server *s = calloc(1, sizeof(*s));
    struct timeval tick = {0, WHEEL_TICK_MS * 1000};
    size_t cap = w->cfg->max_connections / w->cfg->threads;

    if (s == NULL)
        return -1;
    w->http = s;
    s->w = w;
    s->lfd = listener;
    s->cap = cap > 0 ? cap : 1;
    s->wheel_at = conn_now_ms();
    TAILQ_INIT(&s->conns);
    for (int i = 0; i < WHEEL_SLOTS; i++)
        TAILQ_INIT(&s->wheel[i]);
    event_assign(&s->accept_ev, w->base, listener, EV_READ | EV_PERSIST, on_accept, s);
    event_assign(&s->tick_ev, w->base, -1, EV_PERSIST, on_tick, s);
    event_assign(&s->flush_ev, w->base, -1, 0, on_flush, s);
    if (event_add(&s->accept_ev, NULL) < 0 || event_add(&s->tick_ev, &tick) < 0)
        return -1;
    return 0;
}

void tally_http_stop_accepting(struct tally_worker *w)
{
    struct tally_http_server *s = w->http;

    if (s == NULL || s->lfd < 0)
        return;
    event_del(&s->accept_ev);
    close(s->lfd);
    s->lfd = -1;
}

void tally_http_close_idle(struct tally_worker *w)
{
    struct http_conn *c;

    TAILQ_FOREACH(c, &w->http->conns, link)
    if (!c->gone && !c->lingering && c->n_reqs == 0 && !c->framing && c->off == c->len)
        conn_gone(c);
}

void tally_http_free(struct tally_worker *w)
{
    struct tally_http_server *s = w->http;
    struct http_conn *c;

    if (s == NULL)
        return;
    event_del(&s->accept_ev);
    event_del(&s->tick_ev);
    event_del(&s->flush_ev);
    if (s->lfd >= 0)
        close(s->lfd);
    while ((c = TAILQ_FIRST(&s->conns)) != NULL) {
        if (!c->gone) {
            event_del(&c->ev);
            close(c->fd);
        }
        while (c->first != NULL)
            conn_pop(c);
        conn_free(c);
    }
    while (s->pool.free_reqs != NULL) {
        struct tally_http_req *r = s->pool.free_reqs;

        s->pool.free_reqs = r->next;
        free(r);
    }
    while (s->pool.free_blocks != NULL) {
        struct http_block *b = s->pool.free_blocks;

        s->pool.free_blocks = b->next;
        free(b);
    }
    for (int big = 0; big < 2; big++) {
        while (s->free_bufs[big] != NULL) {
            char *b = s->free_bufs[big];

            memcpy(&s->free_bufs[big], b, sizeof(char *));
            free(b);
        }
    }
    free(s);
    w->http = NULL;
}
