/* healthcheck.c -- `tallyd --healthcheck`: asks a running tallyd for /healthz, for container
 * health checks in images that have no curl. Blocking: it runs instead of the daemon. */
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tally/config.h"
#include "tally/healthcheck.h"

#define HEALTHCHECK_TIMEOUT_MS 2000

/* Wait until FD can do EVENTS, up to the timeout. */
static int healthcheck_wait(int fd, short events)
{
    struct pollfd p = {.fd = fd, .events = events};

    return poll(&p, 1, HEALTHCHECK_TIMEOUT_MS) == 1 ? 0 : -1;
}

static int healthcheck_connect(const struct tally_hostport *hp)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    const char *host = hp->host;
    char port[8];
    int fd = -1;

    /* A daemon listening on every address answers on loopback. */
    if (strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    snprintf(port, sizeof(port), "%u", hp->port);
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int tally_healthcheck(const struct tally_config *cfg)
{
    static const char req[] = "GET /healthz HTTP/1.0\r\nUser-Agent: tallyd-healthcheck\r\n\r\n";
    char buf[64] = {0};
    int fd = healthcheck_connect(&cfg->listen);
    ssize_t n = -1;

    if (fd < 0) {
        fprintf(stderr, "tallyd: healthcheck: cannot connect to %s:%u\n", cfg->listen.host,
                cfg->listen.port);
        return 1;
    }
    if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) &&
        healthcheck_wait(fd, POLLIN) == 0)
        n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0)
        return 0;
    fprintf(stderr, "tallyd: healthcheck: no 200 from /healthz\n");
    return 1;
}
