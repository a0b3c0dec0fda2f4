/* test_hash.c -- SipHash-2-4 against the reference vectors, and its determinism. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "tally/hash.h"
#include "unit.h"

/* The reference implementation's vectors_sip64: key 00..0f, message 00..(n-1), n = 0..63. */
static const uint64_t hash_vectors[64] = {
    0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL,
    0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL,
    0x93f5f5799a932462ULL, 0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
    0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL, 0xa129ca6149be45e5ULL,
    0x3f2acc7f57c29bdbULL, 0x699ae9f52cbe4794ULL, 0x4bc1b3f0968dd39cULL, 0xbb6dc91da77961bdULL,
    0xbed65cf21aa2ee98ULL, 0xd0f2cbb02e3b67c7ULL, 0x93536795e3a33e88ULL, 0xa80c038ccd5ccec8ULL,
    0xb8ad50c6f649af94ULL, 0xbce192de8a85b8eaULL, 0x17d835b85bbb15f3ULL, 0x2f2e6163076bcfadULL,
    0xde4daaaca71dc9a5ULL, 0xa6a2506687956571ULL, 0xad87a3535c49ef28ULL, 0x32d892fad841c342ULL,
    0x7127512f72f27cceULL, 0xa7f32346f95978e3ULL, 0x12e0b01abb051238ULL, 0x15e034d40fa197aeULL,
    0x314dffbe0815a3b4ULL, 0x027990f029623981ULL, 0xcadcd4e59ef40c4dULL, 0x9abfd8766a33735cULL,
    0x0e3ea96b5304a7d0ULL, 0xad0c42d6fc585992ULL, 0x187306c89bc215a9ULL, 0xd4a60abcf3792b95ULL,
    0xf935451de4f21df2ULL, 0xa9538f0419755787ULL, 0xdb9acddff56ca510ULL, 0xd06c98cd5c0975ebULL,
    0xe612a3cb9ecba951ULL, 0xc766e62cfcadaf96ULL, 0xee64435a9752fe72ULL, 0xa192d576b245165aULL,
    0x0a8787bf8ecb74b2ULL, 0x81b3e73d20b49b6fULL, 0x7fa8220ba3b2eceaULL, 0x245731c13ca42499ULL,
    0xb78dbfaf3a8d83bdULL, 0xea1ad565322a1a0bULL, 0x60e61c23a3795013ULL, 0x6606d7e446282b93ULL,
    0x6ca4ecb15c5f91e1ULL, 0x9f626da15c9625f3ULL, 0xe51b38608ef25f57ULL, 0x958a324ceb064572ULL,
};

static void hash_reference_input(uint8_t key[16], uint8_t msg[64])
{
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
}

static void test_hash_matches_the_reference_vectors(void **state)
{
    uint8_t key[16], msg[64];

    (void)state;
    hash_reference_input(key, msg);
    for (size_t n = 0; n < N_ELEMS(hash_vectors); n++) {
        uint64_t got = tally_siphash(key, msg, n);

        if (got != hash_vectors[n]) {
            print_error("length %zu: got %#018llx, want %#018llx\n", n, (unsigned long long)got,
                        (unsigned long long)hash_vectors[n]);
            fail();
        }
    }
}

/* Every vector again from every misalignment: the reads are bytewise, not word loads. */
static void test_hash_does_not_depend_on_alignment(void **state)
{
    uint8_t key[16], msg[64], shifted[64 + 8], kshifted[16 + 8];

    (void)state;
    hash_reference_input(key, msg);
    for (size_t off = 1; off < 8; off++) {
        memcpy(shifted + off, msg, sizeof(msg));
        memcpy(kshifted + off, key, sizeof(key));
        for (size_t n = 0; n < N_ELEMS(hash_vectors); n++)
            assert_int_equal(tally_siphash(kshifted + off, shifted + off, n), hash_vectors[n]);
    }
}

static void test_hash_is_deterministic(void **state)
{
    static const uint8_t key[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    static const char text[] = "news/2025/kim-missiles";
    char copy[sizeof(text)];
    uint64_t first = tally_siphash(key, text, strlen(text));

    (void)state;
    memcpy(copy, text, sizeof(text));
    for (int i = 0; i < 100; i++)
        assert_int_equal(tally_siphash(key, text, strlen(text)), first);
    assert_int_equal(tally_siphash(key, copy, strlen(copy)), first);
}

static void test_hash_depends_on_key_length_and_every_byte(void **state)
{
    uint8_t key[16], msg[64], other[16];
    uint64_t base;

    (void)state;
    hash_reference_input(key, msg);
    base = tally_siphash(key, msg, 32);
    /* The length, not a terminator, ends the message: a trailing zero byte changes the hash. */
    assert_int_not_equal(tally_siphash(key, "a\0", 2), tally_siphash(key, "a", 1));
    assert_int_not_equal(tally_siphash(key, msg, 31), base);
    for (size_t i = 0; i < 32; i++) {
        msg[i] ^= 1;
        assert_int_not_equal(tally_siphash(key, msg, 32), base);
        msg[i] ^= 1;
    }
    for (size_t i = 0; i < 16; i++) {
        memcpy(other, key, sizeof(other));
        other[i] ^= 0x80;
        assert_int_not_equal(tally_siphash(other, msg, 32), base);
    }
    assert_int_equal(tally_siphash(key, msg, 32), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_matches_the_reference_vectors),
        cmocka_unit_test(test_hash_does_not_depend_on_alignment),
        cmocka_unit_test(test_hash_is_deterministic),
        cmocka_unit_test(test_hash_depends_on_key_length_and_every_byte),
    };

    return cmocka_run_group_tests_name("hash", tests, NULL, NULL);
}
