/* salt.h -- the day's visitor salt, shared by every collector on one Redis.
 *
 * The first collector to need a day's salt creates it (SET NX, random, expiring after two
 * days); every collector then reads the same one, so they agree on visitor ids. A collector
 * keeps one cache of today's and tomorrow's salt for all its workers (each fetches through its
 * own Redis connection and publishes what it read to the others at once), reads a known salt
 * again every 10 minutes, and fetches tomorrow's during the last hour of a day. The workers of
 * one collector therefore never hash a visitor under two salts; two collectors may, for up to
 * 10 minutes after Redis lost a salt, until both have read the new one. */
#ifndef TALLY_SALT_H
#define TALLY_SALT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "tally/visitor.h"

#define TALLY_SALT_TTL 172800 /* seconds a salt is kept in Redis: two days, then ids are unlinkable */

struct tally_salts;
struct tally_redis;

/* Runs when a salt arrived, so that whoever waited for it can go on. */
typedef void tally_salts_cb(void *arg);

/* Call at every connect of the worker's Redis: after a reconnect (every call but the first)
 * the cached salts are read again at the next use, on every worker (Redis may have lost
 * them). */
void tally_salts_stale(struct tally_salts *s);

/* One per worker, used on that worker's thread only; ROUTER and PREFIX are borrowed and must
 * outlive it. The cached salts it reads and publishes are the process's, shared by every
 * tally_salts (thread-safe between them). CB runs on the worker's thread after each fetch this
 * worker made brought a salt. */
struct tally_salts *tally_salts_new(struct tally_redis *router, const char *prefix,
                                    tally_salts_cb *cb, void *arg);
void tally_salts_free(struct tally_salts *s);

/* Which of two slots, holding the days DAY0 and DAY1 ("YYYYMMDD", or "" when empty), takes the
 * salt of DAY: the one holding DAY, else the one holding the older day if DAY is newer than it;
 * -1 when both hold newer days (an answer that came late). Pure. */
int tally_salt_slot(const char *day0, const char *day1, const char *day);

/* The salt of the UTC day of NOW into OUT, when known: returns true. Otherwise asks Redis for
 * it (one request at a time), returns false, and calls the callback when it arrives. */
bool tally_salts_get(struct tally_salts *s, time_t now, uint8_t out[TALLY_SALT_LEN]);

#endif
