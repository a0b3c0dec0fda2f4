/* known.h -- which bucket keys of the current day and hour are known to have their expiry.
 *
 * The scripts that count set the expiry of a bucket's day and hour keys (EXPIRE ... NX) only
 * where the collector says a key may be new: a "fresh" list of "<tag><kind><mask>" entries
 * (kind d or h, mask two hex digits of the TALLY_EXPIRY_* bits of the metrics whose key may be
 * new; see src/scripts/count.lua). Each script answers, in the same form, the keys whose
 * expiry it set; the collector then knows them until the hour changes (the day's keys until
 * the day changes), 10 minutes have passed (in case Redis lost keys: a flush, a restart
 * without persistence), or an article was forgotten (a DELETE may have removed any of them).
 *
 * One struct tally_known per worker, shared by its writer (units) and its folder (folds), on
 * the worker's thread. Pure: no I/O. */
#ifndef TALLY_KNOWN_H
#define TALLY_KNOWN_H

#include <stddef.h>
#include <stdint.h>

#include "tally/keys.h"

#define TALLY_KNOWN_MS 600000 /* knowledge is forgotten at least this often */
#define TALLY_FRESH_MAX (TALLY_BUCKETS * 10) /* the longest fresh list */

struct tally_known {
    /* Per bucket, the metrics whose key of the day or hour of STAMP has its expiry. */
    uint8_t day[TALLY_BUCKETS], hour[TALLY_BUCKETS];
    char stamp[11];   /* "YYYYMMDDHH" (its first 8: the day); "" before the first update */
    uint64_t since;   /* monotonic ms when the hour's were last forgotten */
    uint32_t forgets; /* the epochs' forgets (tally/cache.h) when last forgotten */
};

/* Bring K to NOW (Unix seconds) at monotonic NOW_MS with the epochs' FORGETS: at a new hour
 * the hour's keys are forgotten; at a new day, past TALLY_KNOWN_MS since the last time, or
 * when FORGETS changed, the day's too. */
void tally_known_update(struct tally_known *k, int64_t now, uint64_t now_ms, uint32_t forgets);

/* Write into OUT (room for TALLY_FRESH_MAX) the fresh list of the buckets in TOUCHED (a bit
 * per bucket): for each, its day and hour keys not known in DAY and HOUR (NULL: none known).
 * Returns its length. */
size_t tally_known_fresh(const uint8_t *day, const uint8_t *hour,
                         const uint64_t touched[TALLY_BUCKETS / 64], char *out);

/* Read a script's list of the keys whose expiry it set (LEN bytes at S, the form of a fresh
 * list) into DAY and HOUR (cleared first). Returns 0, or TALLY_EREDIS if it is malformed. */
int tally_known_read(const char *s, size_t len, uint8_t day[TALLY_BUCKETS],
                     uint8_t hour[TALLY_BUCKETS]);

/* A script set the expiry of the keys in DAY and HOUR, having been told of K's knowledge as
 * of hour STAMP and forgets FORGETS: K learns them if it still speaks of that hour and nothing
 * was forgotten since (the epochs' forgets now: FORGETS_NOW), as a DELETE that ended since
 * may have removed keys the script saw. */
void tally_known_learn(struct tally_known *k, const char *stamp, uint32_t forgets,
                       uint32_t forgets_now, const uint8_t day[TALLY_BUCKETS],
                       const uint8_t hour[TALLY_BUCKETS]);

#endif
