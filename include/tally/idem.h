/* idem.h -- Idempotency-Key: which request a key names, where its marker lives, and how a
 * marker read back is judged. Pure: builds keys and reads values, no I/O.
 *
 * A key names one request of one sender. Senders fall into two key spaces: anonymous (any
 * browser or server without the token) and the token holder; the same key in both names two
 * requests. A request is identified by the digest of its events in order: the same key with
 * another body is refused (422 idempotency_key_reused) and counts nothing.
 *
 * Anonymous keys are not scoped further (per client address, say): a retry may come from
 * another address (a phone changing networks, another proxy hop), and an address-derived part
 * of a key kept 24 h in Redis would be a stable trace of the address, against "no address is
 * stored" (the daily salt would hide it, but would also break retries across midnight). Keys
 * are the client's secret (a random UUID as a rule): another anonymous sender can only collide
 * by guessing one, and then gets a 422 or the first answer, never a second count.
 *
 * The home marker "P{hh}i:<space>:<key>" is the one place a key is claimed; hh is a bucket
 * tag derived from "<space>:<key>" alone, so every collector finds it in the same slot. Its
 * value is "<digest> <answer>" ("<digest>" and no answer while a cluster write is under way),
 * where answer is "accepted,bot,prefetch,repeat". On a Redis Cluster each bucket's part of a
 * keyed request also leaves a part marker "P{bb}j:<space>:<digest>:<key>" in its own bucket,
 * written by the apply script together with the part's counts (see writer.h). */
#ifndef TALLY_IDEM_H
#define TALLY_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/ingest.h"

#define TALLY_IDEM_ANON 'a'      /* key space of anonymous senders */
#define TALLY_IDEM_TOKEN 't'     /* key space of the token holder */
#define TALLY_IDEM_DIGEST_LEN 16 /* hex digits of a body digest */

/* The digest of a request's N events EV, in order: type, article, network and delta of each
 * (what is counted; whitespace, member order and unknown members of the body do not
 * matter, the events' order does). Written as 16 lower-case hex digits and a NUL into OUT. */
void tally_idem_digest(const struct tally_event *ev, size_t n, char out[17]);

/* The bucket of the home marker of KEY (LEN bytes) in key space SPACE. */
unsigned tally_idem_bucket(char space, const char *key, size_t len);

/* Write the home marker "P{hh}i:<space>:<key>" into OUT (room for CAP bytes, NUL written).
 * Returns its length, or 0 if it does not fit. */
size_t tally_idem_home_key(char *out, size_t cap, const char *prefix, char space, const char *key,
                           size_t len);

/* Write the part marker "P{bb}j:<space>:<digest>:<key>" of BUCKET into OUT (room for CAP
 * bytes, NUL written). Returns its length, or 0 if it does not fit. */
size_t tally_idem_part_key(char *out, size_t cap, const char *prefix, unsigned bucket, char space,
                           const char *digest, const char *key, size_t len);

/* What a home marker read back at a claim says. */
enum tally_idem_claim {
    TALLY_IDEM_PROCEED, /* no marker (claimed now), or this body's write is under way: write */
    TALLY_IDEM_REPLAY,  /* this body was written: answer as then, from ANSWER */
    TALLY_IDEM_REUSED,  /* another body holds the key: refuse, count nothing */
};

/* The first answer of a request, as its marker keeps it. */
struct tally_idem_answer {
    uint32_t accepted, bot, prefetch, repeat;
};

/* Judge VALUE (LEN bytes; NULL: no marker) of a home marker for a request of DIGEST. A
 * marker without a digest (written before digests were kept) is taken for this body.
 * Returns a TALLY_IDEM_* value, or TALLY_EINVAL when VALUE is not a marker. */
int tally_idem_judge(const char *value, size_t len, const char *digest,
                     struct tally_idem_answer *answer);

/* Write the settled home marker value "<digest> accepted,bot,prefetch,repeat" into OUT (room
 * for CAP bytes, NUL written). Returns its length, or 0 if it does not fit. */
size_t tally_idem_settled(char *out, size_t cap, const char *digest,
                          const struct tally_idem_answer *answer);

#endif
