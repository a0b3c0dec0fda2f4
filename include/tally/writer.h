/* writer.h -- group commit: held requests become write units, one in flight at a time.
 *
 * While one unit is in flight, everything that arrives waits; when it returns, everything
 * waiting goes out as the next unit at once. At low load a request costs one round trip;
 * under load units grow by themselves. A request is answered only when Redis confirmed its
 * unit, or when it surely was not and will not be written. */
#ifndef TALLY_WRITER_H
#define TALLY_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "tally/agg.h"
#include "tally/config.h"

struct tally_writer;
struct tally_salts;
struct tally_store;
struct tally_metrics;
struct tally_write;

/* Runs exactly once per accepted write. STATUS 0: written, W->req holds the answer.
 * TALLY_EUNAVAIL / TALLY_EREDIS: not written (Redis unreachable until the deadline, or it
 * refused the unit). TALLY_EUNKNOWN: the outcome could not be learnt in time (the unit may
 * still apply): the caller must not claim either way. */
typedef void tally_write_done_cb(int status, struct tally_write *w, void *arg);

/* One request's write, embedded in the caller's request context. */
struct tally_write {
    struct tally_agg_req req;
    tally_write_done_cb *done;
    void *arg;
    bool has_digest;              /* views carry visitor ids, from DIGEST at write time */
    uint64_t digest;              /* the client's unsalted digest: memory only */
    uint64_t *visitor;            /* room for req.n visitor ids, when HAS_DIGEST */
    uint64_t deadline;            /* ms: answer 503 if still not sent by then */
    TAILQ_ENTRY(tally_write) link; /* the writer's */
};

/* A writer for STORE on BASE, taking visitor salts from SALTS. Everything is borrowed for its
 * life. */
struct tally_writer *tally_writer_new(struct event_base *base, struct tally_store *store,
                                      struct tally_salts *salts, const struct tally_config *cfg,
                                      struct tally_metrics *metrics);

/* Answers every held write (not written: TALLY_EUNAVAIL; in flight: TALLY_EUNKNOWN), then
 * frees. */
void tally_writer_free(struct tally_writer *w);

/* Hold W (filled by the caller: req, done, arg) until it is written. Returns 0 and later
 * calls W->done, or returns TALLY_EFULL (too much held) or TALLY_EUNAVAIL (Redis down and
 * no hold configured) without calling it. */
int tally_writer_submit(struct tally_writer *w, struct tally_write *wr);

/* The store became ready: send what waits. */
void tally_writer_kick(struct tally_writer *w);

/* Events held now (waiting or in flight). */
size_t tally_writer_held(const struct tally_writer *w);

#endif
