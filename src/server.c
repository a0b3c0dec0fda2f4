/* server.c -- the process: binds the listening sockets (one per worker, sharing the port
 * with SO_REUSEPORT), creates and starts the workers, stops and frees them. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tally/fold.h"
#include "tally/log.h"
#include "tally/writer.h"
#include "worker.h"

#define SERVER_BACKLOG 1024

/* A bound, listening, non-blocking socket on HP's host and PORT. */
static evutil_socket_t server_listen(const struct tally_hostport *hp, uint16_t port, char *err,
                                     size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[8];
    int one = 1, rc;
    evutil_socket_t fd = -1;

    snprintf(service, sizeof(service), "%u", port);
    rc = getaddrinfo(hp->host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hp->host, gai_strerror(rc));
        return -1;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SERVER_BACKLOG) < 0) {
        snprintf(err, errlen, "cannot listen on '%s:%u': %s", hp->host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The port a socket is bound to: the kernel's choice when the flag said 0. */
static uint16_t server_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int tally_server_start(struct tally_server *s, const struct tally_config *cfg, char *err,
                       size_t errlen)
{
    uint16_t port = cfg->listen.port;
    struct timeval now;

    gettimeofday(&now, NULL);
    s->cfg = cfg;
    s->start_time = (double)now.tv_sec + (double)now.tv_usec / 1e6;
    s->workers = calloc(cfg->threads, sizeof(*s->workers));
    if (s->workers == NULL || tally_ratelimit_init(&s->ratelimit, cfg->rate_limit) < 0 ||
        (cfg->fold_interval_ms > 0 && cfg->follow_reads_ms > 0 &&
         tally_lately_init(&s->lately) < 0)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < cfg->threads; i++) {
        evutil_socket_t fd = server_listen(&cfg->listen, port, err, errlen);

        if (fd < 0)
            return -1;
        port = server_port(fd);
        s->workers[i] = tally_worker_new(i, s, fd, err, errlen);
        if (s->workers[i] == NULL)
            return -1;
        s->folders[i] = tally_writer_folder(s->workers[i]->writer);
        if (s->folders[i] != NULL)
            tally_folder_on_ended(s->folders[i], tally_http_folded, s->workers[i]);
        s->n_workers++;
    }
    snprintf(s->listen_desc, sizeof(s->listen_desc), strchr(cfg->listen.host, ':') ? "[%s]:%u"
                                                                                   : "%s:%u",
             cfg->listen.host, port);
    for (size_t i = 0; i < s->n_workers; i++) {
        if (tally_worker_start(s->workers[i]) < 0) {
            snprintf(err, errlen, "cannot start worker thread %zu", i);
            return -1;
        }
        s->n_started++;
    }
    log_info("tallyd %s listening on %s with %u threads", TALLY_VERSION, s->listen_desc,
             cfg->threads);
    if (cfg->token[0] != '\0' && strlen(cfg->token) < TALLY_TOKEN_ADVISED)
        log_warn("the token has fewer than %d characters: easy to guess", TALLY_TOKEN_ADVISED);
    if (cfg->redis_replaced[0] != '\0')
        log_warn("%s is ignored: --redis-cluster replaces it", cfg->redis_replaced);
    return 0;
}

void tally_server_stop(struct tally_server *s)
{
    for (size_t i = 0; i < s->n_started; i++)
        tally_worker_stop(s->workers[i]);
    for (size_t i = 0; i < s->n_started; i++)
        tally_worker_join(s->workers[i]);
    s->n_started = 0;
}

void tally_server_free(struct tally_server *s)
{
    for (size_t i = 0; i < s->n_workers; i++)
        tally_worker_free(s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
    tally_ratelimit_release(&s->ratelimit);
    tally_lately_release(&s->lately);
}
