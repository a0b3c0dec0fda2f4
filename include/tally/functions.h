/* functions.h -- tally's Redis function library (built from src/scripts/ by
 * cmake/functions.cmake): its version, the names the daemon calls, and `tallyd
 * --load-functions`, the admin step that loads it. */
#ifndef TALLY_FUNCTIONS_H
#define TALLY_FUNCTIONS_H

#include <stddef.h>

#include "tally/config.h"
#include "tally/store.h"

#define TALLY_FUNCTION_NAME_MAX 48

/* The library's text and length: "#!lua name=tally_<v>\n...". */
const char *tally_functions_code(size_t *len);

/* The library's name, "tally_<v>" (static storage). */
const char *tally_functions_library(void);

/* The function that runs SCRIPT, "tally_<name>_<v>", or with SCRIPT == TALLY_SCRIPTS the
 * version probe "tally_version_<v>" (static storage). */
const char *tally_functions_name(enum tally_script script);

/* Does SCRIPT only read (called with FCALL_RO)? */
bool tally_functions_read_only(enum tally_script script);

/* The read-only function that answers what SCRIPT answers without keeping anything, for when
 * Redis takes no writes (kept.lua's, which keeps a week's or month's parts), or TALLY_SCRIPTS
 * when SCRIPT has none. */
enum tally_script tally_functions_read_only_twin(enum tally_script script);

/* `tallyd --load-functions`: FUNCTION LOAD REPLACE the library into CFG's --redis (with the
 * URL's user and password, which must be allowed FUNCTION LOAD), or into every master of
 * --redis-cluster (found with CLUSTER NODES from the first seed that answers; replicas get it
 * by replication). Blocking: it runs instead of the daemon. Prints one line per node on
 * stdout, errors on stderr. Returns the exit status: 0 when every node has it, else 1. */
int tally_functions_load(const struct tally_config *cfg);

#endif
