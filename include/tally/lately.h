/* lately.h -- the articles a collector's readers asked for lately.
 *
 * With a journal (tally/fold.h) a write is acknowledged by an append and counted by a fold
 * later, and a read of its article on the same collector waits for that fold. Where readers
 * follow writers -- the embed reads the counts of the article whose view it has just sent,
 * a badge is read with every page view -- each read asks for a fold of the few events before
 * it: the fold merges almost nothing, and the append, the fold and the wait cost more than
 * counting the write at once. So every read of articles' counts stamps them here, and a write
 * of an article read within --follow-reads is counted before its answer
 * (src/scripts/apply.lua) instead of journaled: the reads after it find nothing to wait for
 * (tally/writer.h).
 *
 * A table of TALLY_LATELY_SLOTS stamps, indexed by a keyed hash of the article's id, shared by
 * every worker thread without locks. Articles that share a slot share its stamp, and a stamp
 * read a moment late is the one before: either only picks the other way of counting a write
 * for a while, both of which count it exactly once. */
#ifndef TALLY_LATELY_H
#define TALLY_LATELY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TALLY_LATELY_SLOTS (1u << 16) /* 256 KiB */

struct tally_lately {
    uint8_t key[16];         /* random: which slot an article takes cannot be aimed at */
    _Atomic uint32_t *slots; /* each slot's last read, in 16 ms ticks of the monotonic
                              * clock (wrapping), 0 for never */
};

/* An empty table. Returns 0 or TALLY_ENOMEM. */
int tally_lately_init(struct tally_lately *l);
void tally_lately_release(struct tally_lately *l);

/* The article ID (LEN bytes) was read at NOW_MS (a monotonic clock, tally_now_ms()). */
void tally_lately_read(struct tally_lately *l, const char *id, size_t len, uint64_t now_ms);

/* Was the article ID -- or one sharing its slot -- read within WITHIN_MS before NOW_MS (a
 * 16 ms tick more at most)? False for a table that was never initialised, or WITHIN_MS 0. */
bool tally_lately_was_read(const struct tally_lately *l, const char *id, size_t len,
                           uint64_t now_ms, uint32_t within_ms);

#endif
