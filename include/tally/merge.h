/* merge.h -- an article record's counts as the scripts read them, and a writer's records added
 * up per article and hour until a fold counts them (tally/fold.h). Pure: builds bytes, no I/O.
 *
 * A record, one token per argument (src/scripts/count.lua):
 *   tag id views nvisitors visitor... nshares (network count)... ncomments delta...
 *   nsums (metric n)... nprops (field value)...
 * A journal's records and a fold's have no comment deltas (ncomments 0): they are counted
 * when acknowledged. */
#ifndef TALLY_MERGE_H
#define TALLY_MERGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally/buf.h"
#include "tally/ingest.h"
#include "tally/keys.h"
#include "tally/model.h"

/* One article's counts. Borrowed pointers. */
struct tally_record {
    unsigned bucket;
    const char *id;
    size_t len;
    uint64_t views;                   /* views to count */
    const uint64_t *vis;              /* visitors, for the distinct-visitor estimate */
    size_t n_vis;
    uint64_t shares[TALLY_NETWORKS];
    const int64_t *deltas;            /* comment deltas, in order */
    size_t n_deltas;
    uint64_t sums[TALLY_METRICS];     /* the metrics of rule SUM (model.h); others 0 */
    uint32_t props[TALLY_PROPERTIES]; /* the latest value of each property; 0: none */
};

/* Hex-encode a visitor id as the 16 characters the scripts store. */
void tally_visitor_hex(uint64_t v, char out[16]);

/* Does R count anything but comment deltas? */
bool tally_record_counts(const struct tally_record *r);

/* Append R to B: as RESP bulk strings (TEXT false), or as text, its tokens each followed by
 * "\n" but the last (TEXT true: the journal's form, see src/scripts/ack.lua; put a "\n"
 * between two records). Returns the number of tokens. */
size_t tally_record_put(struct tally_buf *b, const struct tally_record *r, bool text);

struct tally_merge;

struct tally_merge *tally_merge_new(void);
void tally_merge_free(struct tally_merge *m);

/* Forget every record, keep the memory. */
void tally_merge_clear(struct tally_merge *m);

/* Add record R, filed in hour HOUR (Unix time / 3600), to M: views, shares and sums added
 * up, the latest value of each property kept, visitors pooled (each once per record).
 * Returns 0, or TALLY_ENOMEM -- then M holds part of R: clear it. */
int tally_merge_add(struct tally_merge *m, int64_t hour, const struct tally_record *r);

/* Records in M. */
size_t tally_merge_records(const struct tally_merge *m);

/* The buckets of M's records, a bit per bucket (TALLY_BUCKETS bits). */
const uint64_t *tally_merge_touched(const struct tally_merge *m);

/* Append M's records to B as src/scripts/merged.lua takes them, in the order each was first
 * added: the Unix time of its hour, then the record, as RESP bulk strings. Returns the number
 * of arguments. */
size_t tally_merge_put(struct tally_merge *m, struct tally_buf *b);

/* The chunks a fold of M counting at most STEP records at once stages: every record, STEP at a
 * time, when M holds more than STEP (else 0, and 0 when STEP is 0). */
size_t tally_merge_chunks(const struct tally_merge *m, size_t step);

/* Append M's records to B as src/scripts/merged.lua takes them when one call counts at most
 * STEP records (STEP 0: no bound): the number of chunks (tally_merge_chunks()); each chunk as
 * one argument, text -- per record the Unix time of its hour, then the record, every token
 * followed by "\n" but the last --; then, when there is no chunk, every record as
 * tally_merge_put() puts them. A merge of more than STEP records is staged whole: the call
 * that stages holds Redis the least, and each chunk is counted by a call of its own. Records
 * keep the order each was first added. Returns the number of arguments. */
size_t tally_merge_put_steps(struct tally_merge *m, struct tally_buf *b, size_t step);


/* One bucket's records, put by tally_merge_put_buckets(): their text is AT..AT+LEN of the
 * buffer. */
struct tally_merge_part {
    unsigned bucket;
    size_t at, len;
};

/* Append M's records to B as text, a part per bucket: for each bucket of M's records, in the
 * order of its first, the bucket's records in the order each was first added, each the Unix
 * time of its hour then the record, every token followed by "\n" but the last (the form of
 * tally_merge_put_steps()'s chunks, and of a bucket's part as src/scripts/cplan.lua answers
 * it). PARTS gets each part's bucket and place in B. Returns the number of parts, or -1 when
 * out of memory (B->oom set). */
int tally_merge_put_buckets(struct tally_merge *m, struct tally_buf *b,
                            struct tally_merge_part parts[TALLY_BUCKETS]);
#endif
