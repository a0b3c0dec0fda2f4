/* clock.c -- the wall clock (see clock.h). */
#include <time.h>

#include "tally/clock.h"

time_t tally_clock_now(void)
{
    return time(NULL);
}
