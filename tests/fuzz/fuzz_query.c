/* fuzz_query.c -- everything that decodes a URL: percent-decoding, the pixel's query, the
 * stats, top and series parameters, and the client address behind X-Forwarded-For. The
 * first byte picks the target; the rest is its input. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tally/config.h"
#include "tally/error.h"
#include "tally/ingest.h"
#include "tally/query.h"
#include "tally/reports.h"
#include "tally/uri.h"
#include "tally/visitor.h"


static void fuzz_decode(const char *in, size_t len)
{
    char out[4096], again[4096];
    long n = tally_uri_decode(in, len, out, sizeof(out), 0);

    if (n < 0)
        return;
    CHECK((size_t)n <= len && memchr(out, '\0', (size_t)n) == NULL);
    /* Decoding what has no '%' left changes nothing. */
    if (memchr(out, '%', (size_t)n) == NULL) {
        long m = tally_uri_decode(out, (size_t)n, again, sizeof(again), 0);

        CHECK(m == n && memcmp(out, again, (size_t)n) == 0);
    }
}

static void fuzz_pixel(const char *in, size_t len)
{
    static struct tally_batch b;
    struct tally_error err;

    if (tally_ingest_parse_query(in, len, &b, &err) == 0) {
        CHECK(b.n == 1 && tally_article_valid(b.ev[0].article, b.ev[0].article_len));
        CHECK(memchr(b.ev[0].article, '\0', b.ev[0].article_len) == NULL);
    }
}

static void fuzz_stats(const char *in, size_t len)
{
    static struct tally_query q;
    struct tally_error err;

    if (tally_query_parse_articles(&q, in, len, &err) == 0) {
        CHECK(q.n >= 1 && q.n <= TALLY_BATCH_MAX);
        for (size_t i = 0; i < q.n; i++)
            CHECK(tally_article_valid(q.id[i], q.len[i]));
    }
    if (tally_query_parse_path(&q, in, len, &err) == 0)
        CHECK(q.n == 1 && tally_article_valid(q.id[0], q.len[0]));
}

static void fuzz_reports(const char *in, size_t len)
{
    struct tally_top_params t;
    struct tally_series_params s;
    struct tally_error err;
    int64_t when;

    if (tally_top_parse(in, len, &t, &err) == 0)
        CHECK(t.limit >= 1 && t.limit <= TALLY_TOP_MAX && t.metric < TALLY_METRICS);
    if (tally_series_parse(in, len, 1800000000, &s, &err) == 0)
        CHECK(s.from <= s.to && s.n >= 1 && s.n <= TALLY_SERIES_DAYS_MAX + 13);
    (void)tally_time_parse(in, len, &when);
}

/* The client must be the peer, or a hop named in the header. */
static void fuzz_xff(const char *in, size_t len)
{
    static struct tally_config cfg;
    uint8_t peer[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, out[16];

    if (cfg.n_trust == 0) {
        static char a0[] = "tallyd", a1[] = "--trust-proxy", a2[] = "10.0.0.0/8,::1,192.168.0.0/16";
        char err[128], *argv[] = {a0, a1, a2, NULL};

        CHECK(tally_config_parse(&cfg, 3, argv, NULL, NULL, 1, err, sizeof(err)) == 0);
    }
    tally_client_addr(&cfg, peer, in, len, out);
    if (memcmp(out, peer, 16) != 0) {
        uint8_t hop[16];
        bool found = false;

        for (size_t start = 0, end = 0; end <= len; end++) {
            if (end < len && in[end] != ',')
                continue;
            found |= tally_addr_parse(in + start, end - start, hop) == 0 &&
                     memcmp(hop, out, 16) == 0;
            start = end + 1;
        }
        CHECK(found);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static void (*const targets[])(const char *, size_t) = {fuzz_decode, fuzz_pixel, fuzz_stats,
                                                            fuzz_reports, fuzz_xff};
    char *copy;

    if (size == 0)
        return 0;
    /* An exact-size copy: any read past the end is caught. */
    copy = malloc(size - 1 > 0 ? size - 1 : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    targets[data[0] % (sizeof(targets) / sizeof(targets[0]))](copy, size - 1);
    free(copy);
    return 0;
}
