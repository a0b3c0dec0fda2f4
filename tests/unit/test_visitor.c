/* test_visitor.c -- visitor digests and ids, UTC days, salt hex, address parsing, and the
 * client address behind trusted proxies (X-Forwarded-For), with no network and no Redis.
 *
 * Every string handed to the functions under test is copied into a heap buffer of exactly its
 * length, without a NUL, so that AddressSanitizer catches a read past LEN. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/config.h"
#include "tally/error.h"
#include "tally/salt.h"
#include "tally/visitor.h"
#include "unit.h"

/* ---- Helpers ---- */

/* A heap copy of LEN bytes of S, not NUL-terminated (malloc(0) is avoided). */
static char *exact_copy(const char *s, size_t len)
{
    char *p = malloc(len > 0 ? len : 1);

    assert_non_null(p);
    if (len > 0)
        memcpy(p, s, len);
    return p;
}

/* The 16-byte form of TEXT, by the C library alone (IPv4 mapped into ::ffff:0:0/96), so that
 * expectations do not go through tally_addr_parse(). */
static void addr16(const char *text, uint8_t out[16])
{
    struct in_addr a4;

    if (inet_pton(AF_INET, text, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        return;
    }
    if (inet_pton(AF_INET6, text, out) != 1) {
        print_error("test bug: '%s' is not an address\n", text);
        fail();
    }
}

static void print_addr(const char *what, const uint8_t a[16])
{
    char text[INET6_ADDRSTRLEN];

    print_error("%s %s\n", what, inet_ntop(AF_INET6, a, text, sizeof(text)) ? text : "?");
}

static void expect_addr(const char *ctx, const uint8_t got[16], const uint8_t want[16])
{
    if (memcmp(got, want, 16) != 0) {
        print_error("%s\n", ctx);
        print_addr("  got ", got);
        print_addr("  want", want);
        fail();
    }
}

static uint64_t digest_of(const char *addr, const char *ua, size_t len)
{
    uint8_t a[16];
    char *copy = exact_copy(ua, len);
    uint64_t d;

    addr16(addr, a);
    d = tally_visitor_digest(a, copy, len);
    free(copy);
    return d;
}

static uint64_t id_of(const uint8_t salt[TALLY_SALT_LEN], uint64_t digest, const char *article)
{
    size_t len = strlen(article);
    char *copy = exact_copy(article, len);
    uint64_t id = tally_visitor_id(salt, digest, copy, len);

    free(copy);
    return id;
}

static const char firefox_ua[] =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/* ---- tally_visitor_digest ---- */

static void test_digest_is_deterministic(void **state)
{
    (void)state;
    assert_int_equal(digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua)),
                     digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua)));
    assert_int_equal(digest_of("2001:db8::7", "", 0), digest_of("2001:db8::7", "", 0));
}

/* Collectors must agree on the digest across builds and versions: it is SipHash-2-4 under the
 * public key "tally visitor v1" of the 16 address bytes followed by the User-Agent. Both values
 * were checked against an independent Python SipHash-2-4. */
static void test_digest_matches_the_documented_construction(void **state)
{
    (void)state;
    assert_int_equal(digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua)),
                     0xbb9183f02b85c589ULL);
    assert_int_equal(digest_of("203.0.113.7", "", 0), 0xb48978e7f896167eULL);
}

static void test_digest_differs_by_address(void **state)
{
    static const char *const addrs[] = {
        "1.2.3.4", "1.2.3.5", "4.3.2.1", "::1", "::2", "2001:db8::1", "::1.2.3.4", "0.0.0.0",
    };
    uint64_t d[N_ELEMS(addrs)];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(addrs); i++) {
        d[i] = digest_of(addrs[i], firefox_ua, strlen(firefox_ua));
        for (size_t j = 0; j < i; j++)
            if (d[i] == d[j]) {
                print_error("'%s' and '%s' have the same digest\n", addrs[i], addrs[j]);
                fail();
            }
    }
}

static void test_digest_differs_by_user_agent(void **state)
{
    static const char *const uas[] = {
        "", "a", "b", "ab", firefox_ua, "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 ",
    };
    uint64_t d[N_ELEMS(uas)];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(uas); i++) {
        d[i] = digest_of("198.51.100.20", uas[i], strlen(uas[i]));
        for (size_t j = 0; j < i; j++)
            if (d[i] == d[j]) {
                print_error("UAs '%s' and '%s' have the same digest\n", uas[i], uas[j]);
                fail();
            }
    }
}

static void test_digest_uses_only_len_bytes_of_the_user_agent(void **state)
{
    (void)state;
    assert_int_equal(digest_of("1.2.3.4", "Mozilla/5.0 trailing", 11),
                     digest_of("1.2.3.4", "Mozilla/5.0", 11));
}

/* A User-Agent of any length is accepted; only its first 1024 bytes take part. */
static void test_digest_counts_only_the_first_1024_user_agent_bytes(void **state)
{
    const size_t big = 1u << 20;
    char *ua = malloc(big);
    uint8_t a[16];
    uint64_t first1024, first1023, whole;

    (void)state;
    assert_non_null(ua);
    for (size_t i = 0; i < big; i++)
        ua[i] = (char)('A' + i % 26);
    addr16("192.0.2.1", a);
    first1024 = tally_visitor_digest(a, ua, 1024);
    first1023 = tally_visitor_digest(a, ua, 1023);
    whole = tally_visitor_digest(a, ua, big);
    assert_int_equal(whole, first1024);
    assert_int_equal(tally_visitor_digest(a, ua, 1025), first1024);
    assert_int_equal(tally_visitor_digest(a, ua, 2000), first1024);
    assert_int_not_equal(first1023, first1024);

    /* Byte 1024 and beyond do not count; byte 1023 does. */
    ua[1024] = '#';
    ua[big - 1] = '#';
    assert_int_equal(tally_visitor_digest(a, ua, big), first1024);
    ua[1023] = '#';
    assert_int_not_equal(tally_visitor_digest(a, ua, big), first1024);
    free(ua);
}

/* ---- tally_visitor_id ---- */

static const uint8_t salt_a[TALLY_SALT_LEN] = {0x3f, 0x9a, 0x0c, 0x1d, 0x2e, 0x4b, 0x5a, 0x69,
                                               0x78, 0x87, 0x76, 0x95, 0xa4, 0xb3, 0xc2, 0xd1};
static const uint8_t salt_b[TALLY_SALT_LEN] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                               0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};

static void test_id_is_deterministic(void **state)
{
    (void)state;
    assert_int_equal(id_of(salt_a, 42, "news/2025/kim-missiles"),
                     id_of(salt_a, 42, "news/2025/kim-missiles"));
    assert_int_equal(tally_visitor_id(salt_a, 42, "ab-ignored", 2), id_of(salt_a, 42, "ab"));
}

/* SipHash-2-4 keyed by the salt of: the digest as 8 little-endian bytes, then the article.
 * Both values were checked against an independent Python SipHash-2-4; a change of the
 * construction (byte order, field order, key) changes them. */
static void test_id_matches_the_documented_construction(void **state)
{
    (void)state;
    assert_int_equal(id_of(salt_a, 0x0123456789abcdefULL, "news/2025/kim-missiles"),
                     0xb35273e51b44b17aULL);
    assert_int_equal(id_of(salt_b, 0xfedcba9876543210ULL, "x"), 0x549a12ce3505d289ULL);
}

/* One reader cannot be followed from article to article. */
static void test_id_differs_between_articles_of_one_reader(void **state)
{
    static const char *const articles[] = {
        "a", "b", "news/1", "news/10", "news/1/", "News/1", "2025/08/03/some-article",
    };
    uint64_t digest = digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua));
    uint64_t id[N_ELEMS(articles)];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(articles); i++) {
        id[i] = id_of(salt_a, digest, articles[i]);
        for (size_t j = 0; j < i; j++)
            if (id[i] == id[j]) {
                print_error("articles '%s' and '%s' share an id\n", articles[i], articles[j]);
                fail();
            }
    }
}

/* Every byte of an article id of the maximum length (256) takes part. */
static void test_id_counts_every_byte_of_a_256_byte_article(void **state)
{
    char a[256], b[256];
    uint64_t digest = 0x1122334455667788ULL;

    (void)state;
    memset(a, 'q', sizeof(a));
    memcpy(b, a, sizeof(b));
    b[255] = 'r';
    assert_int_not_equal(tally_visitor_id(salt_a, digest, a, sizeof(a)),
                         tally_visitor_id(salt_a, digest, b, sizeof(b)));
    b[255] = 'q';
    b[0] = 'r';
    assert_int_not_equal(tally_visitor_id(salt_a, digest, a, sizeof(a)),
                         tally_visitor_id(salt_a, digest, b, sizeof(b)));
}

/* The next day's salt gives the same reader on the same article another id. */
static void test_id_differs_under_another_days_salt(void **state)
{
    uint8_t next_day[TALLY_SALT_LEN];
    uint64_t digest = digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua));

    (void)state;
    memcpy(next_day, salt_a, sizeof(next_day));
    next_day[TALLY_SALT_LEN - 1] ^= 1;
    assert_int_not_equal(id_of(salt_a, digest, "news/1"), id_of(next_day, digest, "news/1"));
    assert_int_not_equal(id_of(salt_a, digest, "news/1"), id_of(salt_b, digest, "news/1"));
}

static void test_id_differs_between_readers_of_one_article(void **state)
{
    uint64_t d1 = digest_of("203.0.113.7", firefox_ua, strlen(firefox_ua));
    uint64_t d2 = digest_of("203.0.113.8", firefox_ua, strlen(firefox_ua));

    (void)state;
    assert_int_not_equal(id_of(salt_a, d1, "news/1"), id_of(salt_a, d2, "news/1"));
    assert_int_not_equal(id_of(salt_a, 1, "news/1"), id_of(salt_a, 1ULL << 56, "news/1"));
}

/* ---- tally_visitor_day ---- */

static void test_day_is_the_utc_date_as_yyyymmdd(void **state)
{
    static const struct {
        long long t;
        const char *day;
    } cases[] = {
        {0, "19700101"},
        {-1, "19691231"},                    /* 1969-12-31 23:59:59 */
        {1709164799, "20240228"},            /* 2024-02-28 23:59:59 */
        {1709164800, "20240229"},            /* leap day 00:00:00 */
        {1709251199, "20240229"},            /* leap day 23:59:59 */
        {1709251200, "20240301"},            /* the next midnight */
        {951825600, "20000229"},             /* 2000 is a leap year (divisible by 400) */
        {1704067199, "20231231"},            /* new year's eve 23:59:59 */
        {1704067200, "20240101"},            /* new year 00:00:00 */
        {2147483647, "20380119"},            /* the last second of a 32-bit time_t */
        {2147483648LL, "20380119"},          /* the first second past it */
        {4107542399LL, "21000228"},          /* 2100 is not a leap year... */
        {4107542400LL, "21000301"},          /* ...so no 2100-02-29 */
        {253402300799LL, "99991231"},        /* 9999-12-31 23:59:59 */
    };

    (void)state;
    assert_true(sizeof(time_t) >= 8);
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char out[9];

        memset(out, 'X', sizeof(out));
        tally_visitor_day((time_t)cases[i].t, out);
        if (memchr(out, '\0', sizeof(out)) == NULL || strcmp(out, cases[i].day) != 0) {
            print_error("t=%lld: got '%.9s', want '%s'\n", cases[i].t, out, cases[i].day);
            fail();
        }
    }
}

/* ---- Salt hex ---- */

static void test_salt_encode_is_32_lower_case_hex_digits(void **state)
{
    static const uint8_t ff[TALLY_SALT_LEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                               0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    char out[2 * TALLY_SALT_LEN + 1];

    (void)state;
    memset(out, 'X', sizeof(out));
    tally_salt_encode(salt_b, out);
    assert_string_equal(out, "000102030405060708090a0b0c0d0e0f");
    memset(out, 'X', sizeof(out));
    tally_salt_encode(salt_a, out);
    assert_string_equal(out, "3f9a0c1d2e4b5a6978877695a4b3c2d1");
    memset(out, 'X', sizeof(out));
    tally_salt_encode(ff, out);
    assert_string_equal(out, "ffffffffffffffffffffffffffffffff");
}

static void test_salt_decode_reverses_encode(void **state)
{
    uint8_t salt[TALLY_SALT_LEN], back[TALLY_SALT_LEN];
    char hex[2 * TALLY_SALT_LEN + 1];
    uint32_t x = 2463534242u;

    (void)state;
    for (int round = 0; round < 64; round++) {
        for (size_t i = 0; i < TALLY_SALT_LEN; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
            salt[i] = (uint8_t)(round == 0 ? 0 : round == 1 ? 0xff : x >> 24);
        }
        tally_salt_encode(salt, hex);
        assert_int_equal(strlen(hex), 2 * TALLY_SALT_LEN);
        {
            char *copy = exact_copy(hex, 2 * TALLY_SALT_LEN);

            memset(back, 0x5a, sizeof(back));
            assert_int_equal(tally_salt_decode(copy, 2 * TALLY_SALT_LEN, back), 0);
            free(copy);
        }
        assert_memory_equal(back, salt, TALLY_SALT_LEN);
    }
}

static void test_salt_decode_accepts_upper_and_mixed_case(void **state)
{
    static const struct {
        const char *hex;
        uint8_t want[TALLY_SALT_LEN];
    } cases[] = {
        {"3F9A0C1D2E4B5A6978877695A4B3C2D1",
         {0x3f, 0x9a, 0x0c, 0x1d, 0x2e, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x76, 0x95, 0xa4, 0xb3, 0xc2,
          0xd1}},
        {"aBcDeFABCDEFabcdef0123456789AbCd",
         {0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
          0xcd}},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        uint8_t out[TALLY_SALT_LEN];
        char *copy = exact_copy(cases[i].hex, strlen(cases[i].hex));

        assert_int_equal(tally_salt_decode(copy, strlen(cases[i].hex), out), 0);
        free(copy);
        assert_memory_equal(out, cases[i].want, TALLY_SALT_LEN);
    }
}

static void test_salt_decode_refuses_anything_but_32_hex_digits(void **state)
{
    static const struct {
        const char *hex;
        size_t len;
    } cases[] = {
        {"", 0},
        {"000102030405060708090a0b0c0d0e0", 31},
        {"000102030405060708090a0b0c0d0e0f0", 33},
        {"000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f", 64},
        {"g00102030405060708090a0b0c0d0e0f", 32}, /* non-hex, high nibble */
        {"0g0102030405060708090a0b0c0d0e0f", 32}, /* non-hex, low nibble */
        {"000102030405060708090a0b0c0d0e0G", 32}, /* the last digit */
        {"0x0102030405060708090a0b0c0d0e0f", 32},
        {" 00102030405060708090a0b0c0d0e0f", 32},
        {"-00102030405060708090a0b0c0d0e0f", 32},
        {"000102030405060708090a0b0c0d0e0\0", 32}, /* an embedded NUL */
        {"00010203040506070809:a0b0c0d0e0f", 32},  /* the character after '9' */
        {"00010203040506070809@a0b0c0d0e0f", 32},  /* the character before 'A' */
        {"00010203040506070809`a0b0c0d0e0f", 32},  /* the character before 'a' */
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        uint8_t out[TALLY_SALT_LEN];
        char *copy = exact_copy(cases[i].hex, cases[i].len);
        int rc = tally_salt_decode(copy, cases[i].len, out);

        free(copy);
        if (rc != TALLY_EINVAL) {
            print_error("case %zu (len %zu): got %d, want TALLY_EINVAL\n", i, cases[i].len, rc);
            fail();
        }
    }
}

/* The salt lives in Redis for two days; its cache can be made and freed without Redis. */
static void test_salt_is_kept_two_days_and_the_cache_needs_no_redis_to_exist(void **state)
{
    struct tally_salts *s;

    (void)state;
    assert_int_equal(TALLY_SALT_TTL, 2 * 86400);
    assert_int_equal(TALLY_SALT_LEN, 16);
    s = tally_salts_new(NULL, "tally:", NULL, NULL);
    assert_non_null(s);
    tally_salts_stale(s);
    tally_salts_free(s);
}

/* ---- tally_addr_parse ---- */

#define V4(a, b, c, d) {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d}
#define LOOP6 {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
#define DOC6 {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}

static void test_addr_parse_accepts_the_forms_proxies_write(void **state)
{
    static const struct {
        const char *text;
        uint8_t want[16];
    } cases[] = {
        {"1.2.3.4", V4(1, 2, 3, 4)},
        {" 1.2.3.4 ", V4(1, 2, 3, 4)},
        {"\t1.2.3.4\t", V4(1, 2, 3, 4)},
        {"1.2.3.4:8080", V4(1, 2, 3, 4)},
        {"0.0.0.0", V4(0, 0, 0, 0)},
        {"255.255.255.255", V4(255, 255, 255, 255)},
        {"::1", LOOP6},
        {"[::1]", LOOP6},
        {"[::1]:443", LOOP6},
        {" [::1]:443 ", LOOP6},
        {"2001:db8::1", DOC6},
        {"[2001:db8::1]:8443", DOC6},
        {"2001:0DB8:0000:0000:0000:0000:0000:0001", DOC6},
        {"::ffff:10.1.2.3", V4(10, 1, 2, 3)}, /* IPv4-mapped: the same bytes as 10.1.2.3 */
        {"[::ffff:10.1.2.3]:80", V4(10, 1, 2, 3)},
        {"::FFFF:a01:203", V4(10, 1, 2, 3)},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t len = strlen(cases[i].text);
        char *copy = exact_copy(cases[i].text, len);
        uint8_t out[16];
        int rc;

        memset(out, 0xa5, sizeof(out));
        rc = tally_addr_parse(copy, len, out);
        free(copy);
        if (rc != 0) {
            print_error("'%s': got %d, want 0\n", cases[i].text, rc);
            fail();
        }
        expect_addr(cases[i].text, out, cases[i].want);
    }
}

static void test_addr_parse_stores_ipv4_mapped_ipv6_as_the_ipv4_address(void **state)
{
    uint8_t mapped[16], plain[16];

    (void)state;
    assert_int_equal(tally_addr_parse("::ffff:10.1.2.3", 15, mapped), 0);
    assert_int_equal(tally_addr_parse("10.1.2.3", 8, plain), 0);
    assert_memory_equal(mapped, plain, 16);
}

static void test_addr_parse_refuses_what_is_not_one_address(void **state)
{
    static const char *const cases[] = {
        "", "   ", "1.2.3", "1.2.3.4.5", "999.1.1.1", "1.2.3.256", "[::1", "[::1]x", "[::1]443",
        "[]", "[]:80", "unknown", "_hidden", "1.2.3.4:port:extra", "::1::2", "1.2.3.4 5.6.7.8",
        "1.2.3.4,5.6.7.8", "fe80::1%eth0", "localhost", "12345:80", "gggg::1",
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t len = strlen(cases[i]);
        char *copy = exact_copy(cases[i], len);
        uint8_t out[16];
        int rc = tally_addr_parse(copy, len, out);

        free(copy);
        if (rc != TALLY_EINVAL) {
            print_error("'%s': got %d, want TALLY_EINVAL\n", cases[i], rc);
            fail();
        }
    }
}

static void test_addr_parse_reads_only_len_bytes(void **state)
{
    static const uint8_t want[16] = V4(1, 2, 3, 4);
    uint8_t out[16];

    (void)state;
    assert_int_equal(tally_addr_parse("1.2.3.45", 7, out), 0);
    assert_memory_equal(out, want, 16);
    assert_int_equal(tally_addr_parse("1.2.3.4", 5, out), TALLY_EINVAL); /* "1.2.3" */
    assert_int_equal(tally_addr_parse("[::1]:80", 4, out), TALLY_EINVAL); /* "[::1" */
}

/* ---- tally_client_addr ---- */

static struct tally_config trust_cfg;

/* --trust-proxy 10.0.0.0/8,::1,192.168.0.0/16, as the daemon would parse it. */
static int setup_trust(void **state)
{
    char arg0[] = "tallyd", arg1[] = "--trust-proxy", arg2[] = "10.0.0.0/8,::1,192.168.0.0/16";
    char *argv[] = {arg0, arg1, arg2, NULL};
    char err[256] = "";
    int rc;

    (void)state;
    rc = tally_config_parse(&trust_cfg, 3, argv, NULL, NULL, 2, err, sizeof(err));
    if (rc != TALLY_CONFIG_RUN) {
        fprintf(stderr, "tally_config_parse: %d %s\n", rc, err);
        return -1;
    }
    return trust_cfg.n_trust == 3 ? 0 : -1;
}

struct client_case {
    const char *peer; /* the socket peer, as text */
    const char *xff;  /* X-Forwarded-For, every instance joined by commas; NULL: none */
    const char *want; /* the client */
    const char *why;
};

static void run_client_cases(const struct client_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t peer[16], want[16], out[16];
        size_t len = cases[i].xff != NULL ? strlen(cases[i].xff) : 0;
        char *copy = cases[i].xff != NULL ? exact_copy(cases[i].xff, len) : NULL;
        char ctx[512];

        addr16(cases[i].peer, peer);
        addr16(cases[i].want, want);
        memset(out, 0xa5, sizeof(out));
        tally_client_addr(&trust_cfg, peer, copy, len, out);
        free(copy);
        snprintf(ctx, sizeof(ctx), "%s: peer %s, X-Forwarded-For '%s'", cases[i].why,
                 cases[i].peer, cases[i].xff != NULL ? cases[i].xff : "(none)");
        expect_addr(ctx, out, want);
    }
}

/* A client talking to tally directly cannot claim another address. */
static void test_client_addr_ignores_forwarded_for_from_an_untrusted_peer(void **state)
{
    static const struct client_case cases[] = {
        {"203.0.113.7", "1.2.3.4", "203.0.113.7", "spoofed client"},
        {"203.0.113.7", "10.0.0.2", "203.0.113.7", "claims to be a trusted proxy"},
        {"203.0.113.7", "1.2.3.4, 10.0.0.2", "203.0.113.7", "a whole chain"},
        {"11.0.0.1", "1.2.3.4", "11.0.0.1", "just past 10.0.0.0/8"},
        {"9.255.255.255", "1.2.3.4", "9.255.255.255", "just before 10.0.0.0/8"},
        {"192.169.0.1", "1.2.3.4", "192.169.0.1", "just past 192.168.0.0/16"},
        {"::2", "1.2.3.4", "::2", "an IPv6 neighbour of the trusted ::1"},
        {"2001:db8::1", "1.2.3.4", "2001:db8::1", "an IPv6 client"},
        {"::a00:1", "1.2.3.4", "::a00:1", "IPv4-compatible (not mapped) 10.0.0.1"},
        {"203.0.113.7", NULL, "203.0.113.7", "no header"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

/* Walk from the right, skip trusted hops, the first untrusted one is the client; the leftmost
 * (spoofable) entry is never believed while an untrusted hop stands to its right. */
static void test_client_addr_is_the_first_untrusted_hop_from_the_right(void **state)
{
    static const struct client_case cases[] = {
        {"10.0.0.1", "1.2.3.4", "1.2.3.4", "one hop"},
        {"10.0.0.1", "spoof, 1.2.3.4, 10.0.0.2", "1.2.3.4", "malformed spoof at the left"},
        {"10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4", "well-formed spoof at the left"},
        {"10.0.0.1", "10.0.0.9, 1.2.3.4", "1.2.3.4", "a trusted-looking spoof at the left"},
        {"10.0.0.1", "1.2.3.4, 10.0.0.9, 192.168.5.5, 10.0.0.2", "1.2.3.4", "several proxies"},
        {"10.0.0.1", " 1.2.3.4 ,\t10.0.0.2 ", "1.2.3.4", "spaces and tabs around hops"},
        {"10.0.0.1", "1.2.3.4,10.0.0.2", "1.2.3.4", "no spaces"},
        {"192.168.0.1", "1.2.3.4:5555", "1.2.3.4", "a port on an IPv4 hop"},
        {"10.255.255.255", "1.2.3.4", "1.2.3.4", "the top of 10.0.0.0/8 is trusted"},
        {"192.168.255.255", "1.2.3.4", "1.2.3.4", "the top of 192.168.0.0/16 is trusted"},
        {"10.0.0.1", ", 1.2.3.4", "1.2.3.4", "an empty leftmost entry"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

static void test_client_addr_is_the_leftmost_hop_when_every_hop_is_trusted(void **state)
{
    static const struct client_case cases[] = {
        {"10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3", "two trusted hops"},
        {"10.0.0.1", "10.0.0.3", "10.0.0.3", "one trusted hop"},
        {"::1", "192.168.1.1, ::1, 10.0.0.2", "192.168.1.1", "mixed families"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

/* visitor.h: "a malformed hop ends the walk at the last good one" -- the last hop walked
 * before it, or the peer itself when the rightmost hop is malformed. */
static void test_client_addr_stops_at_the_last_good_hop_before_a_malformed_one(void **state)
{
    static const struct client_case cases[] = {
        {"10.0.0.1", "1.2.3.4, garbage, 10.0.0.2", "10.0.0.2", "garbage in the middle"},
        {"10.0.0.1", "1.2.3.4, unknown, 10.0.0.3, 10.0.0.2", "10.0.0.3", "'unknown' two hops in"},
        {"10.0.0.1", "1.2.3.4, garbage", "10.0.0.1", "the rightmost hop is malformed"},
        {"10.0.0.1", "1.2.3.4, _hidden", "10.0.0.1", "an obfuscated identifier"},
        {"10.0.0.1", "1.2.3.4, 999.1.1.1, 10.0.0.2", "10.0.0.2", "an out-of-range octet"},
        {"10.0.0.1", "1.2.3.4,, 10.0.0.2", "10.0.0.2", "an empty hop in the middle"},
        {"10.0.0.1", "1.2.3.4,", "10.0.0.1", "a trailing comma"},
        {"10.0.0.1", "1.2.3.4, [::1", "10.0.0.1", "an unclosed bracket"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

static void test_client_addr_handles_ipv6_and_bracketed_hops_with_ports(void **state)
{
    static const struct client_case cases[] = {
        {"::1", "2001:db8::1", "2001:db8::1", "a bare IPv6 hop"},
        {"::1", "[2001:db8::1]:443", "2001:db8::1", "bracketed with a port"},
        {"::1", "[2001:db8::1]", "2001:db8::1", "bracketed without a port"},
        {"::1", "2001:db8::1, ::1", "2001:db8::1", "a trusted IPv6 hop is skipped"},
        {"::1", "2001:db8::1, [::1]:8080", "2001:db8::1", "a trusted bracketed hop is skipped"},
        {"10.0.0.1", "[2001:db8::1]:443, 10.0.0.2", "2001:db8::1", "IPv6 client, IPv4 proxies"},
        {"::1", "1.2.3.4, [::1]:80, 10.0.0.2:9000", "1.2.3.4", "ports on every hop"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

/* ::ffff:10.0.0.1 is 10.0.0.1: as a peer and as a hop it is trusted by 10.0.0.0/8. */
static void test_client_addr_treats_ipv4_mapped_addresses_as_ipv4(void **state)
{
    static const struct client_case cases[] = {
        {"::ffff:10.0.0.1", "1.2.3.4", "1.2.3.4", "mapped trusted peer"},
        {"::ffff:11.0.0.1", "1.2.3.4", "11.0.0.1", "mapped untrusted peer"},
        {"10.0.0.1", "1.2.3.4, ::ffff:10.0.0.2", "1.2.3.4", "mapped trusted hop"},
        {"10.0.0.1", "1.2.3.4, [::ffff:192.168.0.7]:80", "1.2.3.4", "bracketed mapped hop"},
        {"10.0.0.1", "::ffff:1.2.3.4", "1.2.3.4", "mapped client"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

static void test_client_addr_is_the_peer_without_a_usable_header(void **state)
{
    static const struct client_case cases[] = {
        {"10.0.0.1", NULL, "10.0.0.1", "no header"},
        {"10.0.0.1", "", "10.0.0.1", "an empty header"},
        {"10.0.0.1", ",", "10.0.0.1", "one comma"},
        {"10.0.0.1", ",,,", "10.0.0.1", "only commas"},
        {"10.0.0.1", " , , ", "10.0.0.1", "commas and spaces"},
        {"::1", "   ", "::1", "only spaces"},
    };

    (void)state;
    run_client_cases(cases, N_ELEMS(cases));
}

/* The header is LEN bytes: what follows is not part of it. */
static void test_client_addr_reads_only_len_bytes_of_the_header(void **state)
{
    static const char xff[] = "1.2.3.4, 10.0.0.2, 5.6.7.8";
    uint8_t peer[16], want[16], out[16];

    (void)state;
    addr16("10.0.0.1", peer);
    addr16("1.2.3.4", want);
    tally_client_addr(&trust_cfg, peer, xff, strlen("1.2.3.4, 10.0.0.2"), out);
    expect_addr("the first 17 bytes", out, want);
    tally_client_addr(&trust_cfg, peer, xff, 0, out);
    expect_addr("no bytes", out, peer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_is_deterministic),
        cmocka_unit_test(test_digest_matches_the_documented_construction),
        cmocka_unit_test(test_digest_differs_by_address),
        cmocka_unit_test(test_digest_differs_by_user_agent),
        cmocka_unit_test(test_digest_uses_only_len_bytes_of_the_user_agent),
        cmocka_unit_test(test_digest_counts_only_the_first_1024_user_agent_bytes),
        cmocka_unit_test(test_id_is_deterministic),
        cmocka_unit_test(test_id_matches_the_documented_construction),
        cmocka_unit_test(test_id_differs_between_articles_of_one_reader),
        cmocka_unit_test(test_id_counts_every_byte_of_a_256_byte_article),
        cmocka_unit_test(test_id_differs_under_another_days_salt),
        cmocka_unit_test(test_id_differs_between_readers_of_one_article),
        cmocka_unit_test(test_day_is_the_utc_date_as_yyyymmdd),
        cmocka_unit_test(test_salt_encode_is_32_lower_case_hex_digits),
        cmocka_unit_test(test_salt_decode_reverses_encode),
        cmocka_unit_test(test_salt_decode_accepts_upper_and_mixed_case),
        cmocka_unit_test(test_salt_decode_refuses_anything_but_32_hex_digits),
        cmocka_unit_test(test_salt_is_kept_two_days_and_the_cache_needs_no_redis_to_exist),
        cmocka_unit_test(test_addr_parse_accepts_the_forms_proxies_write),
        cmocka_unit_test(test_addr_parse_stores_ipv4_mapped_ipv6_as_the_ipv4_address),
        cmocka_unit_test(test_addr_parse_refuses_what_is_not_one_address),
        cmocka_unit_test(test_addr_parse_reads_only_len_bytes),
        cmocka_unit_test(test_client_addr_ignores_forwarded_for_from_an_untrusted_peer),
        cmocka_unit_test(test_client_addr_is_the_first_untrusted_hop_from_the_right),
        cmocka_unit_test(test_client_addr_is_the_leftmost_hop_when_every_hop_is_trusted),
        cmocka_unit_test(test_client_addr_stops_at_the_last_good_hop_before_a_malformed_one),
        cmocka_unit_test(test_client_addr_handles_ipv6_and_bracketed_hops_with_ports),
        cmocka_unit_test(test_client_addr_treats_ipv4_mapped_addresses_as_ipv4),
        cmocka_unit_test(test_client_addr_is_the_peer_without_a_usable_header),
        cmocka_unit_test(test_client_addr_reads_only_len_bytes_of_the_header),
    };

    return cmocka_run_group_tests_name("visitor", tests, setup_trust, NULL);
}
