/* healthcheck.h -- `tallyd --healthcheck`. */
#ifndef TALLY_HEALTHCHECK_H
#define TALLY_HEALTHCHECK_H

#include "tally/config.h"

/* Ask the tallyd at CFG's --listen for /healthz (2 s at most). Returns the exit status: 0 for
 * a 200, 1 otherwise (with one line on stderr). */
int tally_healthcheck(const struct tally_config *cfg);

#endif
