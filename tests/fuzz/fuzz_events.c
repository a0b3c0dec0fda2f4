/* fuzz_events.c -- the POST /v1/events scanner, with oracles: whatever it accepts is a valid
 * batch that cJSON reads the same way (type, article, network, delta of every event); whatever
 * cJSON cannot parse, it refuses; whatever it refuses names a code and a field; and it decides
 * the same way twice. cJSON is the reference only here: it is lax (it takes NULs, bad UTF-8,
 * duplicates), so the oracle goes one way in each direction. The same bytes go to the
 * POST /v1/import reader too: it accepts 1..10,000 lines whose arguments are whole RESP bulk
 * strings, as many as it says, or refuses naming a line (or the body). */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tally/error.h"
#include "tally/import.h"
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
        if (ev->type != TALLY_EVENT_SHARE)
            CHECK(ev->network == TALLY_NETWORK_OTHER);
    }
}

/* cJSON's reading of DATA: the root, or NULL when it is not one JSON text. */
static cJSON *reference_parse(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    const char *end = NULL;
    cJSON *root;

    CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    root = cJSON_ParseWithLengthOpts(copy, size, &end, 0);
    if (root != NULL) {
        end += strspn(end, " \t\r\n");
        if (end != copy + size) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    free(copy);
    return root;
}

static void check_event_as_reference(const struct tally_event *ev, const cJSON *obj)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    const cJSON *article = cJSON_GetObjectItemCaseSensitive(obj, "article");
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(obj, "network");
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(obj, "delta");

    CHECK(cJSON_IsObject(obj) && cJSON_IsString(type) && cJSON_IsString(article));
    CHECK(strcmp(type->valuestring, tally_event_type_name(ev->type)) == 0);
    CHECK(strlen(article->valuestring) == ev->article_len &&
          memcmp(article->valuestring, ev->article, ev->article_len) == 0);
    if (ev->type == TALLY_EVENT_SHARE && cJSON_IsString(net))
        CHECK(ev->network == tally_network_from(net->valuestring, strlen(net->valuestring)));
    if (ev->type == TALLY_EVENT_COMMENT && delta != NULL)
        CHECK(cJSON_IsNumber(delta) && delta->valuedouble == ev->delta);
}

static void check_as_reference(const struct tally_batch *b, const cJSON *root)
{
    const cJSON *e;
    size_t i = 0;

    CHECK(root != NULL);
    if (cJSON_IsObject(root)) {
        CHECK(b->n == 1);
        check_event_as_reference(&b->ev[0], root);
        return;
    }
    CHECK(cJSON_IsArray(root));
    for (e = root->child; e != NULL; e = e->next, i++) {
        CHECK(i < b->n);
        check_event_as_reference(&b->ev[i], e);
    }
    CHECK(i == b->n);
}

/* The number of whole RESP bulk strings in B, or -1 when it is not made of them. */
static long count_bulks(const struct tally_buf *b)
{
    size_t pos = 0;
    long n = 0;

    while (pos < b->len) {
        char *end;
        unsigned long len;

        if (b->data[pos] != '$')
            return -1;
        len = strtoul(b->data + pos + 1, &end, 10);
        pos = (size_t)(end - b->data);
        if (pos + 2 + len + 2 > b->len || memcmp(b->data + pos, "\r\n", 2) != 0 ||
            memcmp(b->data + pos + 2 + len, "\r\n", 2) != 0)
            return -1;
        pos += 2 + len + 2;
        n++;
    }
    return n;
}

static void check_import(const uint8_t *data, size_t size)
{
    struct tally_import imp;
    struct tally_error err;
    int rc = tally_import_parse(&imp, (const char *)data, size, 20427, &err);

    if (rc == 0) {
        CHECK(imp.lines >= 1 && imp.lines <= TALLY_IMPORT_LINES_MAX);
        CHECK(!imp.args.oom && count_bulks(&imp.args) == (long)imp.n_args);
        CHECK(imp.n_args >= 7 * (size_t)imp.lines);
    } else {
        CHECK(rc == TALLY_EINVAL);
        CHECK(strncmp(err.message, "line ", 5) == 0 || strncmp(err.message, "body: ", 6) == 0);
    }
    tally_import_release(&imp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tally_batch a, b;
    struct tally_error ea, eb;
    int ra = tally_ingest_parse((const char *)data, size, &a, &ea);
    int rb = tally_ingest_parse((const char *)data, size, &b, &eb);
    cJSON *ref = size <= TALLY_BODY_MAX ? reference_parse(data, size) : NULL;

    CHECK(ra == rb);
    if (ra == 0) {
        check_batch(&a);
        check_as_reference(&a, ref);
        CHECK(a.n == b.n);
        for (size_t i = 0; i < a.n; i++)
            CHECK(a.ev[i].article_len == b.ev[i].article_len &&
                  memcmp(a.ev[i].article, b.ev[i].article, a.ev[i].article_len) == 0 &&
                  a.ev[i].type == b.ev[i].type && a.ev[i].delta == b.ev[i].delta);
    } else {
        CHECK(ra == TALLY_EINVAL);
        CHECK(ea.code != NULL && ea.code[0] != '\0');
        CHECK(strchr(ea.message, ':') != NULL && strcmp(ea.code, eb.code) == 0 &&
              strcmp(ea.message, eb.message) == 0);
    }
    /* Not JSON to cJSON, which takes more than JSON: not JSON to us either (refused as such,
     * or for a limit crossed before the fault: element 101, member 33). */
    if (ref == NULL && size <= TALLY_BODY_MAX)
        CHECK(ra == TALLY_EINVAL);
    cJSON_Delete(ref);
    check_import(data, size);
    return 0;
}
