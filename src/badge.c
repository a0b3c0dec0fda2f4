/* badge.c -- shields-style "flat" SVG badges: text measured with Verdana's advance widths,
 * counts shortened to 1.2k, label and value escaped so neither can leave its text node or
 * attribute. Widths are kept in hundredths of a pixel so that every sum is exact. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>

#include "tally/badge.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define BADGE_PAD 5 /* pixels on either side of a text */
#define BADGE_REPLACEMENT 0xfffd

/* Estimates for characters outside the ASCII table, in hundredths of a pixel. They err wide:
 * textLength fits the text to its box either way, and extra letter spacing reads better than
 * glyphs squeezed over each other. */
#define BADGE_W_OTHER 1100 /* 1 em: wider than any common Latin, Greek or Cyrillic letter */
#define BADGE_W_WIDE 1200  /* CJK and Hangul are drawn 1 em wide by the fallback fonts */
#define BADGE_W_EMOJI 1400 /* colour emoji fonts advance about 1.25 em */

/* ---- Measuring ---- */

/* Advance widths of 11 px Verdana for ASCII 32..126, in hundredths of a pixel. The numbers are
 * the measurements of the anafanafo project (github.com/metabolize/anafanafo,
 * packages/anafanafo/data/verdana-11px-normal.json), which shields.io's badge-maker sizes its
 * badges with. */
static const uint16_t badge_ascii_width[95] = {
    387, 433, 505, 900, 699, 1184, 799,  295,                            /* space ! " # $ % & ' */
    500, 500, 699, 900, 400, 500,  400,  500,                            /* ( ) * + , - . / */
    699, 699, 699, 699, 699, 699,  699,  699, 699, 699,                  /* 0-9 */
    500, 500, 900, 900, 900, 600,  1100,                                 /* : ; < = > ? @ */
    752, 754, 768, 848, 696, 632,  853,  827, 463, 500,  762, 612, 927,  /* A-M */
    823, 866, 663, 866, 765, 752,  678,  805, 752, 1088, 754, 677, 754,  /* N-Z */
    500, 500, 500, 900, 699, 699,                                        /* [ \ ] ^ _ ` */
    661, 685, 573, 685, 655, 387,  685,  696, 302, 379,  651, 302, 1070, /* a-m */
    696, 668, 685, 685, 469, 573,  433,  696, 651, 900,  651, 651, 578,  /* n-z */
    698, 500, 698, 900                                                   /* { | } ~ */
};

/* Non-ASCII ranges measured other than BADGE_W_OTHER, sorted: marks that draw over the previous
 * character, East Asian wide characters (after Unicode's EastAsianWidth.txt) and emoji. */
static const struct {
    uint32_t lo, hi;
    uint16_t width;
} badge_ranges[] = {
    {0x0300, 0x036f, 0},               /* combining diacritical marks */
    {0x1100, 0x115f, BADGE_W_WIDE},    /* Hangul jamo */
    {0x1ab0, 0x1aff, 0},               /* combining marks */
    {0x1dc0, 0x1dff, 0},               /* combining marks */
    {0x200b, 0x200f, 0},               /* zero-width space, joiners, direction marks */
    {0x2060, 0x2064, 0},               /* word joiner, invisible operators */
    {0x20d0, 0x20ff, 0},               /* combining marks for symbols */
    {0x2600, 0x27bf, BADGE_W_EMOJI},   /* miscellaneous symbols, dingbats */
    {0x2e80, 0x303e, BADGE_W_WIDE},    /* CJK radicals, symbols and punctuation */
    {0x3040, 0xa4cf, BADGE_W_WIDE},    /* kana, CJK ideographs, Yi */
    {0xa960, 0xa97f, BADGE_W_WIDE},    /* Hangul jamo extended */
    {0xac00, 0xd7a3, BADGE_W_WIDE},    /* Hangul syllables */
    {0xf900, 0xfaff, BADGE_W_WIDE},    /* CJK compatibility ideographs */
    {0xfe00, 0xfe0f, 0},               /* variation selectors */
    {0xfe20, 0xfe2f, 0},               /* combining half marks */
    {0xfe30, 0xfe4f, BADGE_W_WIDE},    /* CJK compatibility forms */
    {0xfeff, 0xfeff, 0},               /* zero-width no-break space */
    {0xff00, 0xff60, BADGE_W_WIDE},    /* fullwidth forms */
    {0xffe0, 0xffe6, BADGE_W_WIDE},    /* fullwidth signs */
    {0x1f000, 0x1faff, BADGE_W_EMOJI}, /* emoji and pictographs */
    {0x20000, 0x3fffd, BADGE_W_WIDE},  /* CJK ideographs, planes 2 and 3 */
    {0xe0000, 0xe007f, 0},             /* tags, as in flag sequences */
    {0xe0100, 0xe01ef, 0},             /* variation selectors supplement */
};

/* Decodes the character at P (N > 0 bytes) into *CP and returns its length. What is not a
 * complete, shortest-form sequence decodes as U+FFFD, one for each maximal subpart (a lead byte
 * and the continuation bytes that fit it, or a stray byte), as browsers decode; so do U+FFFE
 * and U+FFFF. XML cannot carry any of them, and each is measured as the replacement drawn. */
static size_t badge_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char lo = 0x80, hi = 0xbf; /* the next byte's range */
    uint32_t c = p[0];
    size_t len;

    *cp = BADGE_REPLACEMENT;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 1;
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* UTF-16 surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* past U+10FFFF */
    c &= 0x7fu >> len;
    for (size_t i = 1; i < len; i++) {
        if (i == n || p[i] < lo || p[i] > hi)
            return i;
        c = c << 6 | (p[i] & 0x3fu);
        lo = 0x80;
        hi = 0xbf;
    }
    if (c != 0xfffe && c != 0xffff)
        *cp = c;
    return len;
}

/* Characters the badge leaves out: C0 and C1 controls and DEL (XML 1.0 forbids most and
 * discourages the rest), and the bidi embeddings, overrides and isolates, with which a label
 * could reorder the ": value" that follows it in the accessible text. */
static bool badge_dropped(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

static unsigned badge_char_width(uint32_t cp)
{
    if (cp >= 0x20 && cp <= 0x7e)
        return badge_ascii_width[cp - 0x20];
    if (badge_dropped(cp))
        return 0;
    for (size_t i = 0; i < N_ELEMS(badge_ranges) && cp >= badge_ranges[i].lo; i++) {
        if (cp <= badge_ranges[i].hi)
            return badge_ranges[i].width;
    }
    return BADGE_W_OTHER;
}

/* The width of S (N bytes) in hundredths of a pixel. */
static uint64_t badge_measure(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t width = 0;
    uint32_t cp;
    size_t i = 0;

    while (i < n) {
        i += badge_decode(p + i, n - i, &cp);
        width += badge_char_width(cp);
    }
    return width;
}

double tally_badge_text_width(const char *text, size_t len)
{
    return (double)badge_measure(text, len) / 100;
}

/* ---- Numbers ---- */

/* Counts shorten by truncation, never rounding up: "1.2k" is 1,200 to 1,299 and "1M" is reached
 * at 1,000,000 exactly, so a badge never claims a milestone early, never shows "1000k", and
 * never goes down as the count goes up. One decimal while the whole part is a single digit, a
 * zero decimal left out ("1k"); above 999T the count of T grows ("9223372T"). Negative counts
 * mirror positive ones. */
void tally_badge_format(char out[32], int64_t n)
{
    static const char units[] = "kMGT";
    const char *sign = n < 0 ? "-" : "";
    uint64_t m = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t scale = 1000, whole, tenth;
    size_t u = 0;

    if (m < 1000) {
        snprintf(out, 32, "%s%" PRIu64, sign, m);
        return;
    }
    while (u + 1 < N_ELEMS(units) - 1 && m / scale >= 1000) {
        scale *= 1000;
        u++;
    }
    whole = m / scale;
    tenth = whole < 10 ? m % scale / (scale / 10) : 0;
    if (tenth != 0)
        snprintf(out, 32, "%s%u.%u%c", sign, (unsigned)whole, (unsigned)tenth, units[u]);
    else
        snprintf(out, 32, "%s%" PRIu64 "%c", sign, whole, units[u]);
}

/* ---- Rendering ---- */

/* One half of the badge: its text and its box. */
struct badge_side {
    const char *text;
    size_t len;
    uint64_t text_w; /* hundredths of a pixel */
    uint64_t x, w;   /* pixels; W is 0 for a missing label */
};

static void badge_layout(struct badge_side *s, const char *text, size_t len, uint64_t x)
{
    s->text = text;
    s->len = len;
    s->text_w = badge_measure(text, len);
    s->x = x;
    s->w = (s->text_w + 99) / 100 + 2 * BADGE_PAD;
}

/* Whether nothing of S (N bytes) would be drawn. */
static bool badge_blank(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t cp;
    size_t i = 0;

    while (i < n) {
        i += badge_decode(p + i, n - i, &cp);
        if (!badge_dropped(cp))
            return false;
    }
    return true;
}

/* S (N bytes) as XML character data that is also safe inside a double- or single-quoted
 * attribute: markup characters as references, dropped characters gone, bad UTF-8 replaced. */
static void badge_add_escaped(struct tally_buf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len;
    uint32_t cp;

    for (size_t i = 0; i < n; i += len) {
        len = badge_decode(p + i, n - i, &cp);
        switch (cp) {
        case '&':
            tally_buf_adds(out, "&amp;");
            break;
        case '<':
            tally_buf_adds(out, "&lt;");
            break;
        case '>':
            tally_buf_adds(out, "&gt;");
            break;
        case '"':
            tally_buf_adds(out, "&quot;");
            break;
        case '\'':
            tally_buf_adds(out, "&#39;");
            break;
        case BADGE_REPLACEMENT:
            tally_buf_adds(out, "\xef\xbf\xbd");
            break;
        default:
            if (!badge_dropped(cp))
                tally_buf_add(out, p + i, len);
        }
    }
}

/* TENTHS as a decimal number: 3081 is "308.1", 700 is "70". */
static void badge_add_tenths(struct tally_buf *out, uint64_t tenths)
{
    char frac[2] = {'.', (char)('0' + tenths % 10)};

    tally_buf_add_u64(out, tenths / 10);
    if (tenths % 10 != 0)
        tally_buf_add(out, frac, sizeof(frac));
}

/* "LABEL: VALUE", or "VALUE" alone without a label, escaped. */
static void badge_add_accessible(struct tally_buf *out, const struct badge_side *l,
                                 const struct badge_side *v)
{
    if (l->w != 0) {
        badge_add_escaped(out, l->text, l->len);
        tally_buf_adds(out, ": ");
    }
    badge_add_escaped(out, v->text, v->len);
}

static void badge_add_head(struct tally_buf *out, const struct badge_side *l,
                           const struct badge_side *v)
{
    tally_buf_adds(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"");
    tally_buf_add_u64(out, l->w + v->w);
    tally_buf_adds(out, "\" height=\"20\" role=\"img\" aria-label=\"");
    badge_add_accessible(out, l, v);
    tally_buf_adds(out, "\"><title>");
    badge_add_accessible(out, l, v);
    tally_buf_adds(out, "</title><linearGradient id=\"s\" x2=\"0\" y2=\"100%\">"
                        "<stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/>"
                        "<stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>");
}

static void badge_add_rect(struct tally_buf *out, const struct badge_side *s, const char *fill)
{
    tally_buf_adds(out, "<rect");
    if (s->x != 0) {
        tally_buf_adds(out, " x=\"");
        tally_buf_add_u64(out, s->x);
        tally_buf_adds(out, "\"");
    }
    tally_buf_adds(out, " width=\"");
    tally_buf_add_u64(out, s->w);
    tally_buf_adds(out, "\" height=\"20\" fill=\"");
    tally_buf_adds(out, fill);
    tally_buf_adds(out, "\"/>");
}

/* The rounded clip, the two boxes and the gradient over both. */
static void badge_add_boxes(struct tally_buf *out, const struct badge_side *l,
                            const struct badge_side *v)
{
    struct badge_side all = {.w = l->w + v->w};

    tally_buf_adds(out, "<clipPath id=\"r\"><rect width=\"");
    tally_buf_add_u64(out, all.w);
    tally_buf_adds(out, "\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>");
    tally_buf_adds(out, "<g clip-path=\"url(#r)\">");
    if (l->w != 0)
        badge_add_rect(out, l, "#555");
    badge_add_rect(out, v, "#4c1");
    badge_add_rect(out, &all, "url(#s)");
    tally_buf_adds(out, "</g>");
}

/* One <text>, drawn at 10x and scaled down for sub-pixel placement, centred in its box. */
static void badge_add_text(struct tally_buf *out, const struct badge_side *s, bool shadow)
{
    tally_buf_adds(out, shadow ? "<text aria-hidden=\"true\" x=\"" : "<text x=\"");
    tally_buf_add_u64(out, 10 * s->x + 5 * s->w);
    if (shadow)
        tally_buf_adds(out, "\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\"");
    else
        tally_buf_adds(out, "\" y=\"140\"");
    tally_buf_adds(out, " transform=\"scale(.1)\" textLength=\"");
    badge_add_tenths(out, s->text_w); /* 10 times the width in hundredths of a pixel */
    tally_buf_adds(out, "\">");
    badge_add_escaped(out, s->text, s->len);
    tally_buf_adds(out, "</text>");
}

void tally_badge_render(struct tally_buf *out, const char *label, size_t label_len,
                        const char *value, size_t value_len)
{
    struct badge_side l = {.text = label, .len = label_len, .w = 0}, v;

    /* Like shields, an empty label leaves the value alone rather than an empty grey box. */
    if (!badge_blank(label, label_len))
        badge_layout(&l, label, label_len, 0);
    badge_layout(&v, value, value_len, l.w);
    badge_add_head(out, &l, &v);
    badge_add_boxes(out, &l, &v);
    tally_buf_adds(out, "<g fill=\"#fff\" text-anchor=\"middle\" "
                        "font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" "
                        "text-rendering=\"geometricPrecision\" font-size=\"110\">");
    if (l.w != 0) {
        badge_add_text(out, &l, true);
        badge_add_text(out, &l, false);
    }
    badge_add_text(out, &v, true);
    badge_add_text(out, &v, false);
    tally_buf_adds(out, "</g></svg>");
}
