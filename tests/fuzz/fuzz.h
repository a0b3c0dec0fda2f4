/* fuzz.h -- what the fuzz harnesses share: an oracle check that holds in release builds too
 * (assert() vanishes under NDEBUG). */
#ifndef TALLY_FUZZ_H
#define TALLY_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: oracle failed: %s\n", __FILE__, __LINE__, #x);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
