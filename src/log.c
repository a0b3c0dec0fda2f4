/* log.c -- the stderr log writer behind log_error() .. log_debug(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tally/log.h"

enum tally_log_level tally_log_level = TALLY_LOG_INFO;

static const char *const log_names[] = {"error", "warn", "info", "debug"};

const char *tally_log_level_name(enum tally_log_level level)
{
    return (unsigned)level <= TALLY_LOG_DEBUG ? log_names[level] : "unknown";
}

void tally_log_write(enum tally_log_level level, const char *file, int line, const char *fmt,
                     ...)
{
    char buf[1024];
    struct timeval tv;
    struct tm tm;
    const char *base = strrchr(file, '/');
    size_t n;
    int k;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    k = snprintf(buf + n, sizeof(buf) - n, ".%03dZ level=%s src=%s:%d ", (int)(tv.tv_usec / 1000),
                 log_names[level], base != NULL ? base + 1 : file, line);
    if (k > 0)
        n += (size_t)k;
    if (n >= sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    va_start(ap, fmt);
    k = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    if (k > 0)
        n += (size_t)k < sizeof(buf) - n - 1 ? (size_t)k : sizeof(buf) - n - 2;
    /* One record, one line: control characters from a message must not start another. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20)
            buf[i] = ' ';
    buf[n++] = '\n';
    (void)!write(STDERR_FILENO, buf, n);
}
