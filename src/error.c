/* error.c -- text of tally's error codes. */
#include "tally/error.h"

const char *tally_strerror(int err)
{
    switch (err) {
#define X(name, code, text)                                                                        \
    case TALLY_##name:                                                                             \
        return text;
        TALLY_ERRNO_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}
