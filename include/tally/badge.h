/* badge.h -- shields-style SVG badges ("views | 1.2k") for places where scripts cannot run.
 * Pure: text in, SVG out. */
#ifndef TALLY_BADGE_H
#define TALLY_BADGE_H

#include <stddef.h>
#include <stdint.h>

#include "tally/buf.h"

#define TALLY_BADGE_LABEL_MAX 64 /* bytes of a label */

/* The width in pixels of TEXT (LEN bytes of UTF-8) in 11 px Verdana, as shields.io measures
 * it (ASCII from a per-character table; other characters by a conservative estimate). */
double tally_badge_text_width(const char *text, size_t len);

/* Format N as a badge shows it: exact below 1000, then 1.2k, 12k, 123k, 1.2M, ... */
void tally_badge_format(char out[32], int64_t n);

/* Append a complete SVG document for LABEL | VALUE (UTF-8; both XML-escaped here) to OUT:
 * height 20, label on #555, value on #4c1, text widths from tally_badge_text_width() so that
 * long values never overflow, role="img" with aria-label and <title> "LABEL: VALUE". */
void tally_badge_render(struct tally_buf *out, const char *label, size_t label_len,
                        const char *value, size_t value_len);

#endif
