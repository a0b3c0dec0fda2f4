/* keys.h -- the Redis key schema, built in one place.
 *
 * Every key starts with the configured prefix P, then a hash tag {bb} derived from the
 * article id (never the raw id: a hostile id such as "}x" must not split one article's keys
 * over several cluster slots), then a one-letter kind:
 *
 *   P{bb}a:<id>                 HASH   totals: views, visitors, shares, comments, reads, engaged,
 *                                      share:<network>, words (the latest a view carried)
 *                                      (visitors: the days' distinct visitors added up, so a
 *                                      visitor on two days counts twice)
 *   P{bb}v:<YYYYMMDD>:<id>      HLL    distinct visitors of a day (2 days)
 *   P{bb}h:<metric>:<YYYYMMDDHH> HASH  per article: the metric in that hour (9 days)
 *   P{bb}d:<metric>:<YYYYMMDD>  ZSET   per article: the metric that day (405 days); the
 *                                      bucket's top list of the day
 *   P{bb}t:<metric>             ZSET   per article: the metric of all time; top list
 *   P{bb}s:<YYYYMMDD>, P{bb}s:all HASH the bucket's share of the site totals (405 days / kept)
 *   P{bb}k:<metric>:<period>:<YYYYMMDD>, P{bb}k:site:<period>:<YYYYMMDD>
 *                               STRING the bucket's part of a week's or month's top list (its
 *                                      first 100) or site totals, kept for every collector
 *                                      (60 s; src/scripts/kept.lua)
 *   P{bb}k:epoch                STRING the bucket's epoch, changed by a DELETE or an import
 *                                      that touched it (1 day)
 *   P{bb}w:<id>:<slot>          HASH   visitor -> time of a counted view, per window-long
 *                                      slot (2 windows); marked on a Redis Cluster, the time
 *                                      followed by six digits naming its unit (see
 *                                      src/scripts/unit.lua)
 *   P{bb}i:<Idempotency-Key>    STRING the key's first answer (24 h)
 *   P{bb}x:<attempt>            STRING a write unit's outcome (10 min)
 *   P{00}q:<writer>             STREAM one Redis only: a worker's journal, one entry per unit
 *                                      acknowledged and not folded yet; no expiry, deleted
 *                                      by the fold that empties it (tally/fold.h)
 *   P{00}n:<writer>             HASH   one Redis only: n, the entries folds trimmed from the
 *                                      journal, which numbers its entries with its length
 *                                      (src/scripts/ack.lua); deleted with the journal
 *   P{00}r:journals             ZSET   one Redis: journal -> Redis time (ms) of its last
 *                                      entry, while it has entries; a Redis Cluster: journal ->
 *                                      Redis time (ms) of its writer's last heartbeat
 *                                      (src/scripts/cheartbeat.lua)
 *   P{jj}q:<writer>, P{jj}n:<writer> STREAM, HASH a Redis Cluster: a worker's journal and its
 *                                      trimmed count, as the two above, in a bucket jj of a
 *                                      master of the journal's own; deleted only once emptied,
 *                                      by src/scripts/cdrop.lua, which keeps the trimmed
 *                                      count's h (the journal's high-water mark, the last id
 *                                      trimmed) 2 days (see journal_next())
 *   P{jj}p:<writer>             STRING a Redis Cluster: the journal's fold plan in progress,
 *                                      "<first id> <last id> <entries>" (src/scripts/cplan.lua)
 *   P{bb}f:<writer>             STRING a Redis Cluster: the journal's cursor in bucket bb, the
 *                                      last id of its last plan counted there (2 days;
 *                                      src/scripts/cpart.lua)
 *   Psalt:<YYYYMMDD>            STRING the day's visitor salt, shared by every collector
 *                                      (2 days)
 *   P{import}m:<Idempotency-Key> STRING an import's marker: "<digest> <lines>" (30 days)
 *   P{import}l                  LIST   the records of the last 1,000 imports, newest first
 *                                      (src/http_import.c builds both)
 *
 * metric is views, visitors, shares, comments, reads or engaged; an hour's visitors are the
 * day's new distinct visitors in that hour. An h: or d: key may hold the member '' at 0, left by forgetting its
 * last article so that the key keeps expiring; readers skip it. Days and hours are UTC, from the collector's clock.
 * bb is SipHash(article) mod TALLY_BUCKETS in two hex digits, so all keys of one article
 * share a slot, and buckets spread articles evenly over cluster masters. */
#ifndef TALLY_KEYS_H
#define TALLY_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define TALLY_BUCKETS 256
#define TALLY_KEY_MAX 512 /* prefix (64) + tag + kind + visitor + id (256) fits */

/* The bucket of the article ID (LEN bytes): 0..TALLY_BUCKETS-1, the same on every collector. */
unsigned tally_key_bucket(const char *id, size_t len);

/* The tag of BUCKET: the two lower-case hex digits between the braces of "{bb}". */
void tally_key_tag(unsigned bucket, char out[2]);

/* Write "P{bb}K:" for bucket BUCKET and kind letter KIND into OUT (room for CAP bytes, NUL
 * written). Returns its length, or 0 if it does not fit. */
size_t tally_key_base(char *out, size_t cap, const char *prefix, unsigned bucket, char kind);

/* Write "P{bb}K:<tail>" (TAIL, LEN bytes: an article id, an attempt id, an Idempotency-Key)
 * into OUT (room for CAP bytes, NUL written). Returns its length, or 0 if it does not fit. */
size_t tally_key_make(char *out, size_t cap, const char *prefix, unsigned bucket, char kind,
                      const char *tail, size_t len);

/* Write the key of kind KIND for article ID (LEN bytes), in the article's own bucket:
 * "P{bb}K:<id>". Returns its length, or 0 if it does not fit in CAP. */
size_t tally_key_article(char *out, size_t cap, const char *prefix, char kind, const char *id,
                         size_t len);

/* The UTC hour of T (Unix seconds) as keys file it, "YYYYMMDDHH"; its first 8 characters are
 * the day. */
void tally_key_hour(int64_t t, char out[11]);

/* Redis Cluster's slot of KEY (LEN bytes): CRC16-XMODEM of the hash tag, mod 16384. */
unsigned tally_key_slot(const char *key, size_t len);

/* The slot of every key of BUCKET. */
unsigned tally_key_bucket_slot(unsigned bucket);

#endif
