/* clock.h -- the wall clock, read in one place.
 *
 * Every day and hour the collector files counts under, and every "now" a read is answered
 * as of, comes from here (monotonic time for deadlines does not). One function, so that a test
 * can move the collector's clock against Redis's (tests/tools/clockshift.c shifts time()). */
#ifndef TALLY_CLOCK_H
#define TALLY_CLOCK_H

#include <time.h>

/* Unix seconds, UTC. */
time_t tally_clock_now(void);

#endif
