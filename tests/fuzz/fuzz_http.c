/* fuzz_http.c -- the HTTP/1.1 framing of whole byte streams, as a connection reads them:
 * pipelined requests one after another, each framed where it lies, until one is refused.
 * The first byte of the input picks how the rest is split into reads; the rest is the stream.
 *
 * Oracle: the stream given whole and the stream given in pieces (a byte at a time when short,
 * the buffer moving now and then as a connection's does) yield the same requests -- method,
 * target, body, length -- and the same verdict at the end; and every request stays within the
 * bytes that arrived and within the body limit. */
#include "fuzz.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

#define BODY_MAX 65536
#define EVENTS_MAX 64

/* What framing a stream yielded: one record per request, then the verdict. */
struct record {
    int result; /* TALLY_HTTP_FRAMED, or the last result */
    int status; /* when refused */
    unsigned method, minor;
    bool keep_alive;
    size_t total, body_len, target_len;
    uint64_t body_hash, target_hash;
};

struct trace {
    struct record r[EVENTS_MAX];
    size_t n;
};

static uint64_t fuzz_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

/* A reader's buffer: bytes arrive at the end, requests leave from OFF. */
struct reader {
    char *buf;
    size_t len, off;
    struct tally_http_framer f;
    bool framing, done;
};

/* Frame what the buffer holds; append records to T. */
static void fuzz_frame(struct reader *rd, struct trace *t)
{
    while (!rd->done && rd->off < rd->len && t->n < EVENTS_MAX) {
        struct tally_http_refusal why;
        struct record *r = &t->r[t->n];
        const struct tally_http_head *h = &rd->f.head;
        int res;

        if (!rd->framing) {
            tally_http_framer_reset(&rd->f);
            rd->framing = true;
        }
        res = tally_http_frame(&rd->f, rd->buf + rd->off, rd->len - rd->off, BODY_MAX, &why);
        if (res == TALLY_HTTP_MORE || res == TALLY_HTTP_BODY_MORE)
            return;
        memset(r, 0, sizeof(*r));
        r->result = res;
        t->n++;
        if (res == TALLY_HTTP_REFUSED) {
            CHECK(why.status >= 400 && why.status < 600 && why.code != NULL);
            r->status = why.status;
            rd->done = true;
            return;
        }
        CHECK(rd->f.total <= rd->len - rd->off && rd->f.body_len <= BODY_MAX);
        CHECK(tally_http_framer_head_len(&rd->f) + rd->f.body_len <= rd->f.total);
        CHECK(h->target.p >= rd->buf + rd->off &&
              h->target.p + h->target.len <= rd->buf + rd->off + rd->f.total);
        CHECK(!h->has_length || h->chunked || h->content_length == rd->f.body_len);
        CHECK(!(h->has_length && h->chunked));
        r->method = h->method;
        r->minor = h->minor;
        r->keep_alive = h->keep_alive;
        r->total = rd->f.total;
        r->body_len = rd->f.body_len;
        r->target_len = h->target.len;
        r->target_hash = fuzz_hash(h->target.p, h->target.len);
        r->body_hash =
            fuzz_hash(rd->buf + rd->off + tally_http_framer_head_len(&rd->f), rd->f.body_len);
        rd->off += rd->f.total;
        rd->framing = false;
    }
}

/* Feed IN to a reader in pieces of STEP bytes (1: every byte), moving its buffer now and
 * then. */
static void fuzz_feed(const char *in, size_t len, size_t step, struct trace *t)
{
    struct reader rd = {0};

    rd.buf = malloc(len > 0 ? len : 1);
    CHECK(rd.buf != NULL);
    for (size_t at = 0, k = 0; at < len && !rd.done; at += step, k++) {
        size_t n = len - at < step ? len - at : step;

        memcpy(rd.buf + rd.len, in + at, n);
        rd.len += n;
        fuzz_frame(&rd, t);
        /* As a connection does: the request being read moves to the front, or to another
         * buffer; spans must follow it. */
        if (k % 7 == 3 && !rd.done) {
            char *moved = malloc(len);

            CHECK(moved != NULL);
            memcpy(moved, rd.buf + rd.off, rd.len - rd.off);
            rd.len -= rd.off;
            rd.off = 0;
            free(rd.buf);
            rd.buf = moved;
        }
    }
    free(rd.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct trace whole, split;
    size_t len, step;

    if (size == 0)
        return 0;
    len = size - 1;
    /* A byte at a time for short streams; longer ones in pieces the first byte picks. */
    step = len <= 4096 ? 1 : 1 + (size_t)data[0] * 7;
    whole.n = split.n = 0;
    fuzz_feed((const char *)data + 1, len, len > 0 ? len : 1, &whole);
    fuzz_feed((const char *)data + 1, len, step, &split);
    CHECK(whole.n == split.n);
    CHECK(memcmp(whole.r, split.r, whole.n * sizeof(whole.r[0])) == 0);
    return 0;
}
