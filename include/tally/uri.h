/* uri.h -- strict percent-decoding and query-string walking, with explicit lengths.
 *
 * libevent's helpers truncate at %00 and pass malformed escapes through; these do neither. */
#ifndef TALLY_URI_H
#define TALLY_URI_H

#include <stdbool.h>
#include <stddef.h>

enum tally_uri_flags {
    TALLY_URI_PLUS_SPACE = 1 << 0, /* '+' decodes to a space (query strings) */
};

/* Percent-decode IN (LEN bytes) into OUT, which has room for CAP bytes (LEN bytes always
 * suffice; no NUL is written). Returns the decoded length, or -1 when an escape is malformed
 * ('%' not followed by two hex digits), the result holds a NUL byte, or it does not fit. */
long tally_uri_decode(const char *in, size_t len, char *out, size_t cap, unsigned flags);

/* The value of the hex digit C (either case), or -1. */
int tally_hex_digit(int c);

/* Walks "k=v&k2=v2" without decoding. Empty pairs ("a=1&&b=2") are skipped; a pair without
 * '=' has an empty value. */
struct tally_query_iter {
    const char *p, *end;
};

void tally_query_iter_init(struct tally_query_iter *it, const char *query, size_t len);

/* Sets KEY/KEY_LEN and VAL/VAL_LEN to the next raw (still encoded) pair and returns true, or
 * returns false at the end. */
bool tally_query_next(struct tally_query_iter *it, const char **key, size_t *key_len,
                      const char **val, size_t *val_len);

/* Does the raw key K (KLEN bytes) equal NAME? Keys are compared undecoded: tally's parameter
 * names are plain ASCII, so an encoded key is an unknown key. */
bool tally_query_key_is(const char *k, size_t klen, const char *name);

#endif
