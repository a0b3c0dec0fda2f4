/* json_suite.c -- the event scanner against JSONTestSuite's parsing cases (files named y_*,
 * n_*, i_* in the directory given).
 *
 * Each case's text T is read twice: as a whole body, and as the value of an unknown member of
 * a valid event, {"type":"view","article":"a","x":T}. Then:
 *   y_  as the member's value: accepted, except where tally's documented rules refuse it
 *       (listed below with the answer they get); as the body: accepted, or refused only
 *       for what an event must be (a body of 1 or [] is valid JSON but holds no event).
 *   n_  refused both ways, as malformed JSON (or, past 64 KiB, as too large), unless
 *       listed below as text that becomes valid once it is a member's value.
 *   i_  free either way (the suite leaves them to the parser); counted and printed.
 * The scanner allocates nothing: the program is linked with malloc, calloc and realloc
 * wrapped, and every parse is checked to have called none of them.
 * Exits 0 when every case holds, 1 otherwise, naming each case that does not. */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/ingest.h"

#define WRAP_HEAD "{\"type\":\"view\",\"article\":\"a\",\"x\":"
#define WRAP_TAIL "}"
#define CASE_MAX (1 << 20) /* n_structure_open_array_object.json is 250 KB */

/* Valid JSON tally refuses by its documented rules, with the answer it gives. */
static const struct {
    const char *name, *code, *message;
} y_refused[] = {
    {"y_object_duplicated_key.json", "duplicate_key", "body: duplicate member name"},
    {"y_object_duplicated_key_and_value.json", "duplicate_key", "body: duplicate member name"},
    {"y_object_escaped_null_in_key.json", "malformed_json", "body: \\u0000 escape not allowed"},
    {"y_string_null_escape.json", "malformed_json", "body: \\u0000 escape not allowed"},
};

/* Invalid texts that are valid JSON as the value of a member (none known). */
static const char *const n_valid_wrapped[] = {NULL};

/* ---- Allocations, counted (linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc) ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static unsigned long allocations;

void *__wrap_malloc(size_t n)
{
    allocations++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocations++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    allocations++;
    return __real_realloc(p, n);
}

static struct tally_batch batch;
static char text[CASE_MAX], wrapped[CASE_MAX + 64];

struct tally_count {
    unsigned cases, accepted, refused;
};

#define N_REFUSED (sizeof(y_refused) / sizeof(y_refused[0]))
static bool y_refused_seen[N_REFUSED];

static int find_refusal(const char *name)
{
    for (size_t i = 0; i < N_REFUSED; i++) {
        if (strcmp(y_refused[i].name, name) == 0) {
            y_refused_seen[i] = true;
            return (int)i;
        }
    }
    return -1;
}

static bool listed_valid_wrapped(const char *name)
{
    for (size_t i = 0; n_valid_wrapped[i] != NULL; i++)
        if (strcmp(n_valid_wrapped[i], name) == 0)
            return true;
    return false;
}

static unsigned long parses, parses_allocating;

static int parse(const char *s, size_t len, struct tally_error *err)
{
    unsigned long before = allocations;
    int rc;

    memset(err, 0, sizeof(*err));
    rc = tally_ingest_parse(s, len, &batch, err);
    parses++;
    parses_allocating += allocations != before;
    return rc;
}

static bool event_reason(const char *code)
{
    return strcmp(code, "invalid_event") == 0 || strcmp(code, "empty_batch") == 0 ||
           strcmp(code, "invalid_type") == 0 || strcmp(code, "invalid_article") == 0;
}

/* Report a case that does not hold; returns 1 to be summed. */
static int bad(const char *name, const char *how, int rc, const struct tally_error *err)
{
    printf("FAIL %s: %s (rc %d, %s '%s')\n", name, how, rc, rc != 0 ? err->code : "-",
           rc != 0 ? err->message : "");
    return 1;
}

static int check_y(const char *name, size_t len, size_t wlen)
{
    struct tally_error err;
    int listed = find_refusal(name), fails = 0;
    int rc = parse(wrapped, wlen, &err);

    if (listed < 0 && (rc != 0 || batch.n != 1))
        fails += bad(name, "refused as a member's value", rc, &err);
    if (listed >= 0 && (rc != TALLY_EINVAL || strcmp(err.code, y_refused[listed].code) != 0 ||
                        strcmp(err.message, y_refused[listed].message) != 0))
        fails += bad(name, "not refused by the rule listed", rc, &err);
    rc = parse(text, len, &err);
    if (listed < 0 && rc != 0 && !event_reason(err.code))
        fails += bad(name, "refused as a body for no event reason", rc, &err);
    if (listed >= 0 && rc == 0)
        fails += bad(name, "accepted as a body", rc, &err);
    return fails;
}

static int check_n(const char *name, size_t len, size_t wlen)
{
    struct tally_error err;
    int fails = 0, rc = parse(text, len, &err);
    const char *want = len > TALLY_BODY_MAX ? "body_too_large" : "malformed_json";

    if (rc != TALLY_EINVAL || strcmp(err.code, want) != 0)
        fails += bad(name, "not refused as a body", rc, &err);
    rc = parse(wrapped, wlen, &err);
    want = wlen > TALLY_BODY_MAX ? "body_too_large" : "malformed_json";
    if (listed_valid_wrapped(name) ? rc != 0 : rc != TALLY_EINVAL || strcmp(err.code, want) != 0)
        fails += bad(name, "wrongly judged as a member's value", rc, &err);
    return fails;
}

static size_t read_case(const char *dir, const char *name)
{
    char path[4096];
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((f = fopen(path, "rb")) == NULL) {
        perror(path);
        exit(2);
    }
    n = fread(text, 1, sizeof(text), f);
    if (n == sizeof(text) || ferror(f)) {
        fprintf(stderr, "%s: too long or unreadable\n", path);
        exit(2);
    }
    fclose(f);
    return n;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    struct dirent **names;
    struct tally_count y = {0}, n = {0}, i_body = {0}, i_member = {0};
    int count, fails = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    if ((count = scandir(argv[1], &names, NULL, by_name)) < 0) {
        perror(argv[1]);
        return 2;
    }
    for (int k = 0; k < count; k++) {
        const char *name = names[k]->d_name;
        size_t len, wlen;
        struct tally_error err;

        if (name[0] == '.' || name[1] != '_')
            goto next;
        len = read_case(argv[1], name);
        wlen = (size_t)snprintf(wrapped, sizeof(wrapped), "%s", WRAP_HEAD);
        memcpy(wrapped + wlen, text, len);
        wlen += len;
        memcpy(wrapped + wlen, WRAP_TAIL, strlen(WRAP_TAIL));
        wlen += strlen(WRAP_TAIL);
        if (name[0] == 'y') {
            y.cases++;
            fails += check_y(name, len, wlen);
        } else if (name[0] == 'n') {
            n.cases++;
            fails += check_n(name, len, wlen);
        } else if (name[0] == 'i') {
            i_body.cases++;
            i_member.cases++;
            if (parse(text, len, &err) == 0 || event_reason(err.code))
                i_body.accepted++;
            if (parse(wrapped, wlen, &err) == 0)
                i_member.accepted++;
            else
                printf("i_ refused as a member's value: %s (%s '%s')\n", name, err.code,
                       err.message);
        }
    next:
        free(names[k]);
    }
    free(names);
    for (size_t i = 0; i < N_REFUSED; i++)
        if (!y_refused_seen[i])
            fails += printf("FAIL %s: listed, but not in the suite\n", y_refused[i].name) > 0;
    printf("y_: %u cases, %zu refused by tally's rules as listed\n", y.cases, N_REFUSED);
    printf("n_: %u cases, refused as bodies and as members' values\n", n.cases);
    printf("i_: %u cases, %u valid JSON as bodies, %u accepted as members' values\n", i_body.cases,
           i_body.accepted, i_member.accepted);
    if (y.cases == 0 || n.cases == 0 || i_body.cases == 0) {
        printf("no cases of some kind found in %s\n", argv[1]);
        return 1;
    }
    printf("%lu parses, %lu of them allocating\n", parses, parses_allocating);
    fails += parses_allocating > 0;
    printf("%d failing\n", fails);
    return fails == 0 ? 0 : 1;
}
