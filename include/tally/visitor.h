/* visitor.h -- who a view comes from, without keeping who it was; and the client address
 * behind trusted proxies.
 *
 * A visitor id is SipHash under the day's random salt of an unsalted digest of the client
 * address and User-Agent, and of the article: ids of one reader differ between articles and
 * between days, and without the salt (kept in Redis for two days, then gone) they cannot be
 * traced back. The digest only lives in memory until the write. Pure functions. */
#ifndef TALLY_VISITOR_H
#define TALLY_VISITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tally/config.h"

#define TALLY_SALT_LEN 16

/* The unsalted digest of a client: ADDR (16 bytes, IPv4-mapped for IPv4) and its User-Agent
 * UA (LEN bytes). Never stored or logged. */
uint64_t tally_visitor_digest(const uint8_t addr[16], const char *ua, size_t len);

/* The visitor id of DIGEST for ARTICLE (LEN bytes) under SALT. */
uint64_t tally_visitor_id(const uint8_t salt[TALLY_SALT_LEN], uint64_t digest,
                          const char *article, size_t len);

/* The UTC day of T as "YYYYMMDD". */
void tally_visitor_day(time_t t, char out[9]);

/* Decode a salt as stored in Redis: 32 hex digits. Returns 0 or TALLY_EINVAL. */
int tally_salt_decode(const char *hex, size_t len, uint8_t out[TALLY_SALT_LEN]);

/* Encode a salt as 32 hex digits plus a NUL. */
void tally_salt_encode(const uint8_t salt[TALLY_SALT_LEN], char out[2 * TALLY_SALT_LEN + 1]);

/* Parse one address as proxies write it: "1.2.3.4", "1.2.3.4:80", "::1", "[::1]", "[::1]:80",
 * with spaces around it. IPv4 (also IPv4-mapped IPv6) is stored IPv4-mapped. Returns 0 or
 * TALLY_EINVAL. */
int tally_addr_parse(const char *s, size_t len, uint8_t out[16]);

/* The client of a request from PEER (16 bytes): PEER itself unless it is a trusted proxy of
 * CFG; then X-Forwarded-For (XFF, LEN bytes, every header instance joined by commas; may be
 * NULL) is walked from the right, skipping trusted hops, and the first untrusted hop is the
 * client; a malformed hop ends the walk at the last good one; if every hop is trusted, the
 * leftmost is the client. */
void tally_client_addr(const struct tally_config *cfg, const uint8_t peer[16], const char *xff,
                       size_t len, uint8_t out[16]);

#endif
