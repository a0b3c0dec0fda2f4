/* hash.h -- SipHash-2-4: a keyed 64-bit hash, for key buckets and visitor ids. */
#ifndef TALLY_HASH_H
#define TALLY_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of LEN bytes at DATA under the 16-byte KEY. */
uint64_t tally_siphash(const uint8_t key[16], const void *data, size_t len);

#endif
