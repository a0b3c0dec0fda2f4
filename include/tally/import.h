/* import.h -- POST /v1/import: counts carried over from an earlier system, as NDJSON, turned
 * into the arguments of the import script (src/scripts/import.lua). Pure: bytes in, arguments
 * or an error naming the line out; no I/O, no globals.
 *
 * A line is {"article":ID, "views":N, "shares":{"twitter":N,...}, "comments":N,
 * "date":"YYYY-MM-DD"}: every count optional, an integer from 0 to TALLY_IMPORT_COUNT_MAX; a
 * network outside the contract's list counts as "other"; the date optional, a real calendar
 * day not after today (UTC, the collector's clock). Unknown members are ignored. Blank lines
 * (only spaces, tabs or CR) are skipped but keep their number; a line ends in LF, optionally
 * CR LF. */
#ifndef TALLY_IMPORT_H
#define TALLY_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tally/buf.h"
#include "tally/ingest.h"

#define TALLY_IMPORT_LINES_MAX 10000         /* lines with a record */
#define TALLY_IMPORT_BODY_MAX (8u << 20)     /* bytes of the body; more is a 413 */
#define TALLY_IMPORT_COUNT_MAX 1000000000000 /* 10^12: any one count of a line */
#define TALLY_IMPORT_KEEP 1000               /* imports GET /v1/imports lists */
#define TALLY_IMPORT_MARKER_TTL (30 * 86400) /* seconds an Idempotency-Key of an import holds */

/* An import read from its body. */
struct tally_import {
    struct tally_buf args; /* owned: the script's line arguments in RESP, N_ARGS of them */
    size_t n_args;
    uint32_t lines;                   /* lines with a record */
    uint64_t views, shares, comments; /* summed over the lines */
};

/* Read BODY (LEN bytes) into IMP (which need not be initialised; release it with
 * tally_import_release() whatever this returns). TODAY is the collector's UTC day (days since
 * 1970-01-01). Each line becomes the arguments "tag id day views comments shares nshares
 * (network count)..." (tag: the article's bucket tag; day: a day number or "" without a
 * date; shares: the sum of the networks; nshares: the networks with a non-zero count). Returns 0,
 * TALLY_EINVAL with ERR naming the first faulty line ("line 3: views: ..."), or TALLY_ENOMEM. */
int tally_import_parse(struct tally_import *imp, const char *body, size_t len, int64_t today,
                       struct tally_error *err);

void tally_import_release(struct tally_import *imp);

/* The day number of the date S ("YYYY-MM-DD", LEN bytes), or -1 when S is not one (a day that
 * the calendar has, from 1970-01-01 on). */
int64_t tally_import_day(const char *s, size_t len);

/* Is CTYPE (a Content-Type value, NULL when absent) one an import takes: application/x-ndjson
 * or text/plain, with any parameters, or none at all? */
bool tally_import_type_ok(const char *ctype);

/* The record GET /v1/imports lists, as JSON, into OUT: {"at":RFC 3339 of AT,"key":KEY,
 * "lines":N,"views":N,"shares":N,"comments":N}. */
void tally_import_record(struct tally_buf *out, const struct tally_import *imp, time_t at,
                         const char *key, size_t len);

#endif
