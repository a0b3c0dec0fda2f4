/* log.h -- one line per record on stderr, with a level, checked before formatting. */
#ifndef TALLY_LOG_H
#define TALLY_LOG_H

#include "tally/config.h"

extern enum tally_log_level tally_log_level;

/* "error", "warn", "info" or "debug". */
const char *tally_log_level_name(enum tally_log_level level);

/* Write one record: "2026-11-27T18:38:17.123Z level=warn src=store_redis.c:88 msg". The
 * message is written as one write(2), so records from threads do not interleave. */
void tally_log_write(enum tally_log_level level, const char *file, int line, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

#define TALLY_LOG_AT(level, ...)                                                                   \
    do {                                                                                           \
        if ((level) <= tally_log_level)                                                            \
            tally_log_write((level), __FILE__, __LINE__, __VA_ARGS__);                             \
    } while (0)

#define log_error(...) TALLY_LOG_AT(TALLY_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) TALLY_LOG_AT(TALLY_LOG_WARN, __VA_ARGS__)
#define log_info(...) TALLY_LOG_AT(TALLY_LOG_INFO, __VA_ARGS__)
#define log_debug(...) TALLY_LOG_AT(TALLY_LOG_DEBUG, __VA_ARGS__)

#endif
