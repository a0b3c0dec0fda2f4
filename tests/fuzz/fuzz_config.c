/* fuzz_config.c -- the flag and environment parser: the input is NUL-separated argv words,
 * then (after an empty word) NAME=VALUE environment entries. It must never crash, and any
 * configuration it accepts must hold the bounds the daemon relies on. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tally/config.h"
#include "tally/error.h"


#define WORDS_MAX 32

struct env {
    char *name[WORDS_MAX], *value[WORDS_MAX];
    size_t n;
};

static const char *fuzz_getenv(const char *name, void *arg)
{
    const struct env *e = arg;

    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->name[i], name) == 0)
            return e->value[i];
    return NULL;
}

static void check(const struct tally_config *c)
{
    CHECK(c->threads >= 1 && c->threads <= TALLY_THREADS_MAX);
    CHECK(strlen(c->prefix) >= 1 && strchr(c->prefix, '{') == NULL && strchr(c->prefix, '}') == NULL);
    CHECK(c->n_origins <= TALLY_ORIGINS_MAX && c->n_trust <= TALLY_TRUST_MAX);
    CHECK(c->n_cluster <= TALLY_CLUSTER_SEEDS_MAX);
    CHECK(c->view_window <= 86400 && c->redis_timeout_ms >= 100);
    CHECK(strlen(c->token) <= TALLY_TOKEN_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tally_config cfg;
    static char name[] = "tallyd";
    char *buf = malloc(size + 1), *argv[WORDS_MAX + 2], err[256];
    struct env env = {.n = 0};
    int argc = 1, rc;
    size_t i = 0;

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    argv[0] = name;
    /* Words up to the first empty one are flags; the rest are NAME=VALUE variables. */
    while (i < size && buf[i] != '\0' && argc <= WORDS_MAX) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    for (i++; i < size && env.n < WORDS_MAX;) {
        char *word = buf + i, *eq = strchr(word, '=');

        i += strlen(word) + 1;
        if (eq == NULL)
            continue;
        *eq = '\0';
        env.name[env.n] = word;
        env.value[env.n++] = eq + 1;
    }
    rc = tally_config_parse(&cfg, argc, argv, fuzz_getenv, &env, 2, err, sizeof(err));
    if (rc == TALLY_CONFIG_RUN)
        check(&cfg);
    else if (rc < 0)
        CHECK(rc == TALLY_EINVAL && err[0] != '\0' && strchr(err, '\n') == NULL);
    free(buf);
    return 0;
}
