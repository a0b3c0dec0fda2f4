/* fanout.h -- many Redis commands for one request, answered together.
 *
 * A read that needs N commands (the articles of a batch, the points of a series, the buckets
 * of a top list) sends them all at once through one store and hears back once, when the
 * last reply is in. Replies are handed over one by one, in any order, by index. They go on
 * the nodes' read connections, unless WRITES is set after tally_fanout_init(). */
#ifndef TALLY_FANOUT_H
#define TALLY_FANOUT_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "tally/redis.h"
#include "tally/store.h"

struct tally_fanout;

/* Reply number I of F (0-based in sending order); REPLY dies when this returns. Returns 0,
 * or a negative TALLY_E* code that becomes the fan-out's status. Not called for lost
 * replies: those make the status TALLY_EUNAVAIL. */
typedef int tally_fanout_reply_cb(struct tally_fanout *f, size_t i, const redisReply *reply);

/* Runs exactly once, after the last reply, when tally_fanout_end() returned 0. */
typedef void tally_fanout_done_cb(struct tally_fanout *f, int status);

struct tally_fanout {
    tally_fanout_reply_cb *on_reply;
    tally_fanout_done_cb *done;
    void *arg;
    bool writes; /* the commands change data: on the write connections (false after init) */
    /* Private. */
    struct fanout_slot *slots;
    size_t n, sent, pending;
    int status;
};

/* Prepare F for up to N commands (memory for them is taken with the first). Returns 0. */
int tally_fanout_init(struct tally_fanout *f, size_t n, tally_fanout_reply_cb *on_reply,
                      tally_fanout_done_cb *done, void *arg);

/* Send the next command (argument vectors with explicit lengths) to the node that serves its
 * key, argv[1]. */
int tally_fanout_command(struct tally_fanout *f, struct tally_redis *r, int argc,
                         const char **argv, const size_t *argvlen);

/* Send the next command as a script call with the RESP arguments BODY (copied), to the node
 * that serves KEY (KEY_LEN bytes; its first declared key). */
int tally_fanout_eval(struct tally_fanout *f, struct tally_redis *r, const char *key,
                      size_t key_len, enum tally_script script, const char *body, size_t len,
                      size_t nargs);

/* A command that could not even be made ready to send (no memory for its arguments): STATUS,
 * a negative TALLY_E* code, becomes F's status unless an earlier failure did, so the read
 * fails as a whole instead of answering without that command's part. Returns STATUS. */
int tally_fanout_fail(struct tally_fanout *f, int status);

/* Done sending. Returns 0 and DONE will run (perhaps at once), or, when nothing could be
 * sent, the first send error without DONE running; F is then released. */
int tally_fanout_end(struct tally_fanout *f);

#endif
