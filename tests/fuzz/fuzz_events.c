/* fuzz_events.c -- the POST /v1/events parser and validator, with oracles: whatever it
 * accepts is a valid batch, whatever it refuses names a code and a field, and it decides the
 * same way twice. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/ingest.h"


static void check_batch(const struct tally_batch *b)
{
    CHECK(b->n >= 1 && b->n <= TALLY_BATCH_MAX);
    for (size_t i = 0; i < b->n; i++) {
        const struct tally_event *ev = &b->ev[i];

        CHECK(ev->article_len >= 1 && ev->article_len <= TALLY_ARTICLE_MAX);
        CHECK(memchr(ev->article, '\0', ev->article_len) == NULL);
        CHECK(ev->article[ev->article_len] == '\0');
        CHECK(tally_article_valid(ev->article, ev->article_len));
        CHECK(ev->type < TALLY_EVENT_TYPES && ev->network < TALLY_NETWORKS);
        if (ev->type == TALLY_EVENT_COMMENT)
            CHECK(ev->delta != 0 && ev->delta >= -1000 && ev->delta <= 1000);
        else
            CHECK(ev->delta == 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tally_batch a, b;
    struct tally_error ea, eb;
    int ra = tally_ingest_parse((const char *)data, size, &a, &ea);
    int rb = tally_ingest_parse((const char *)data, size, &b, &eb);

    CHECK(ra == rb);
    if (ra == 0) {
        check_batch(&a);
        CHECK(a.n == b.n);
        for (size_t i = 0; i < a.n; i++)
            CHECK(a.ev[i].article_len == b.ev[i].article_len &&
                   memcmp(a.ev[i].article, b.ev[i].article, a.ev[i].article_len) == 0 &&
                   a.ev[i].type == b.ev[i].type && a.ev[i].delta == b.ev[i].delta);
    } else if (ra == TALLY_EINVAL) {
        CHECK(ea.code != NULL && ea.code[0] != '\0');
        CHECK(strchr(ea.message, ':') != NULL && strcmp(ea.code, eb.code) == 0);
    } else {
        CHECK(ra == TALLY_ENOMEM);
    }
    return 0;
}
