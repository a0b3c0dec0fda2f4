/* error.h -- tally's error codes: one list gives the code and its text. */
#ifndef TALLY_ERROR_H
#define TALLY_ERROR_H

#define TALLY_ERRNO_MAP(X)                                                                         \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(EREDIS, -3, "redis error")                                                                   \
    X(ECLOSED, -4, "store is closed")                                                              \
    X(EUNAVAIL, -5, "redis is unavailable")                                                        \
    X(ETIMEDOUT, -6, "redis did not answer in time")                                               \
    X(EFULL, -7, "too many events held; retry later")                                              \
    X(EUNKNOWN, -8, "outcome of the write is unknown")                                             \
    X(EREUSED, -9, "idempotency-key: already used for another body within 24 hours")

enum tally_errno {
#define X(name, code, text) TALLY_##name = (code),
    TALLY_ERRNO_MAP(X)
#undef X
};

/* The text of ERR (a negative TALLY_E* code); "unknown error" for anything else.
 * The string is static. */
const char *tally_strerror(int err);

#endif
