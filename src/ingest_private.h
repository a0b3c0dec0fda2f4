/* ingest_private.h -- what ingest.c and the event scanner (ingest_json.c) share, private to
 * src/: the messages of refusals and a few helpers. */
#ifndef TALLY_INGEST_PRIVATE_H
#define TALLY_INGEST_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "tally/ingest.h"

#define INGEST_STR_(x) #x
#define INGEST_STR(x) INGEST_STR_(x)

#define MSG_ARTICLE                                                                                \
    "1-" INGEST_STR(TALLY_ARTICLE_MAX) " bytes of UTF-8, no whitespace or control characters"
#define MSG_TYPE "must be view, share, comment or engage"
#define MSG_DELTA                                                                                  \
    "must be an integer from -" INGEST_STR(TALLY_COMMENT_DELTA_MAX) " to " INGEST_STR(             \
        TALLY_COMMENT_DELTA_MAX) ", not 0"
#define MSG_SECONDS "must be an integer from 1 to " INGEST_STR(TALLY_ENGAGE_SECONDS_MAX)
#define MSG_WORDS "must be an integer from 1 to " INGEST_STR(TALLY_WORDS_MAX)
#define MSG_READ "must be true or false"
#define MSG_BATCH "more than " INGEST_STR(TALLY_BATCH_MAX) " events"
#define MSG_MEMBERS "an object with more than " INGEST_STR(TALLY_EVENT_FIELDS_MAX) " members"
#define MSG_SHAPE "must be an event object or an array of 1-" INGEST_STR(TALLY_BATCH_MAX) " of them"
#define MSG_NUL "NUL byte not allowed"

/* Fill ERR and return TALLY_EINVAL. The message starts with where the problem is:
 * "events[IDX].FIELD", "events[IDX]", "FIELD" or "body" (IDX < 0: the body is one event). */
int tally_ingest_fail(struct tally_error *err, const char *code, long idx, const char *field,
                      const char *what);

/* Length of the well-formed UTF-8 sequence at S (AVAIL > 0 bytes left), its code point in
 * *CP; 0 if the bytes there are not well-formed (Unicode table 3-7). */
size_t tally_utf8_seq(const unsigned char *s, size_t avail, uint32_t *cp);

/* The event type named by S (LEN bytes), exactly; -1 for none. */
int tally_ingest_type_from(const char *s, size_t len);

#endif
