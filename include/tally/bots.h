/* bots.h -- is a User-Agent a bot, crawler or link-preview fetcher?
 *
 * The patterns are generated from the crawler-user-agents list (MIT; see THIRD_PARTY_NOTICES
 * and scripts/update-bots.py) and compiled into the daemon. Pure and read-only: safe from any
 * thread. */
#ifndef TALLY_BOTS_H
#define TALLY_BOTS_H

#include <stdbool.h>
#include <stddef.h>

#define TALLY_UA_MAX 1024 /* longer User-Agents are treated as bots */

/* Does the User-Agent UA (LEN bytes, not necessarily NUL-terminated) belong to a bot? A
 * missing (NULL) or empty User-Agent counts as one; so does one over TALLY_UA_MAX bytes. */
bool tally_bot_match(const char *ua, size_t len);

/* The version of the list compiled in, e.g. "crawler-user-agents 1.60.0". */
const char *tally_bots_source(void);

#endif
