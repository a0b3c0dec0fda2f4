/* main.c -- tallyd: parse the configuration, start the workers, wait for a signal, drain. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "tally/config.h"
#include "tally/cpus.h"
#include "tally/functions.h"
#include "tally/healthcheck.h"
#include "tally/log.h"
#include "worker.h"

#ifdef TALLY_ALLOC_COUNT
void tally_alloc_count_start(void); /* alloc_count.c, in test builds */
#endif

static const char *main_getenv(const char *name, void *arg)
{
    (void)arg;
    return getenv(name);
}

static void main_version(void)
{
    printf("tallyd %s (libevent %s, hiredis %d.%d.%d, cJSON %s; Redis functions %s)\n",
           TALLY_VERSION, event_get_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
           cJSON_Version(), tally_functions_library());
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("received %s; draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    event_base_loopexit(arg, NULL);
}

/* Wait in the main thread for SIGTERM or SIGINT. */
static int main_wait(void)
{
    struct event_base *base = event_base_new();
    struct event *term, *intr;

    if (base == NULL)
        return -1;
    term = evsignal_new(base, SIGTERM, on_signal, base);
    intr = evsignal_new(base, SIGINT, on_signal, base);
    if (term == NULL || intr == NULL || evsignal_add(term, NULL) < 0 ||
        evsignal_add(intr, NULL) < 0)
        return -1;
    event_base_dispatch(base);
    event_free(term);
    event_free(intr);
    event_base_free(base);
    return 0;
}

int main(int argc, char **argv)
{
    static struct tally_config cfg;
    struct tally_server server = {0};
    char err[512];
    int rc;

    rc = tally_config_parse(&cfg, argc, argv, main_getenv, NULL, tally_cpus_available(), err,
                            sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "tallyd: %s\n", err);
        return 2;
    }
    if (rc == TALLY_CONFIG_HELP) {
        tally_config_usage(stdout);
        return 0;
    }
    if (rc == TALLY_CONFIG_VERSION) {
        main_version();
        return 0;
    }
    if (cfg.healthcheck)
        return tally_healthcheck(&cfg);
    if (cfg.load_functions)
        return tally_functions_load(&cfg);
    tally_log_level = cfg.log_level;
    signal(SIGPIPE, SIG_IGN);
#ifdef TALLY_ALLOC_COUNT
    tally_alloc_count_start();
#endif
    if (tally_server_start(&server, &cfg, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        tally_server_stop(&server);
        tally_server_free(&server);
        return 1;
    }
    rc = main_wait();
    tally_server_stop(&server);
    tally_server_free(&server);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}
