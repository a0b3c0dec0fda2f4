/* buf.h -- a growable byte buffer, reused across requests to avoid heap churn. */
#ifndef TALLY_BUF_H
#define TALLY_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tally_buf {
    char *data; /* owned; NULL until the first append */
    size_t len, cap;
    bool oom;   /* an append failed: the content is incomplete */
};

void tally_buf_init(struct tally_buf *b);
void tally_buf_release(struct tally_buf *b);

/* Forget the content, keep the memory. */
static inline void tally_buf_reset(struct tally_buf *b)
{
    b->len = 0;
    b->oom = false;
}

/* Appends; on allocation failure they set OOM and drop the bytes. */
void tally_buf_add(struct tally_buf *b, const void *p, size_t n);
void tally_buf_adds(struct tally_buf *b, const char *s);
void tally_buf_add_i64(struct tally_buf *b, int64_t v);
void tally_buf_add_u64(struct tally_buf *b, uint64_t v);

/* One RESP bulk string: "$<n>\r\n<bytes>\r\n". */
void tally_buf_add_bulk(struct tally_buf *b, const void *p, size_t n);
void tally_buf_add_bulk_i64(struct tally_buf *b, int64_t v);

/* Grow *P, an array of SIZE-byte items with room for *CAP, to hold NEED (room doubles, from
 * 64). Returns 0, or TALLY_ENOMEM with *P and *CAP unchanged. */
int tally_grow(void *p, size_t *cap, size_t need, size_t size);

/* A JSON string literal of P (N bytes of valid UTF-8), quoted and escaped. */
void tally_buf_add_json_str(struct tally_buf *b, const char *p, size_t n);

#endif
