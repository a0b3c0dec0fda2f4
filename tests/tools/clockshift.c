/* clockshift.c -- an LD_PRELOAD library for tests: time() answers the real time plus
 * TALLY_CLOCK_SHIFT seconds (an integer, may be negative), so a tallyd can run with its clock
 * ahead of or behind Redis's. tallyd reads the wall clock through time() alone
 * (src/clock.c); monotonic clocks and Redis are left alone. */
#include <stdlib.h>
#include <time.h>

time_t time(time_t *out)
{
    const char *shift = getenv("TALLY_CLOCK_SHIFT");
    struct timespec ts;
    time_t t;

    clock_gettime(CLOCK_REALTIME, &ts);
    t = ts.tv_sec + (shift != NULL ? (time_t)strtoll(shift, NULL, 10) : 0);
    if (out != NULL)
        *out = t;
    return t;
}
