/* test_badge.c -- SVG badges: count formatting, Verdana widths, geometry, escaping, and one
 * badge pinned byte for byte. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tally/badge.h"
#include "unit.h"

/* The width of TEXT in hundredths of a pixel, where the table's numbers are exact. */
static long width_cents(const char *text, size_t len)
{
    return lround(tally_badge_text_width(text, len) * 100);
}

/* Renders LABEL | VALUE into B (emptied first) and NUL-terminates it for strstr(). */
static const char *render(struct tally_buf *b, const char *label, const char *value)
{
    tally_buf_reset(b);
    tally_badge_render(b, label, strlen(label), value, strlen(value));
    tally_buf_add(b, "", 1);
    assert_false(b->oom);
    return b->data;
}

/* The unsigned number right after the first FRAGMENT in SVG. */
static unsigned long number_after(const char *svg, const char *fragment)
{
    const char *p = strstr(svg, fragment);

    if (p == NULL) {
        print_error("'%s' not found in %s\n", fragment, svg);
        fail();
    }
    return strtoul(p + strlen(fragment), NULL, 10);
}

static size_t count_of(const char *s, const char *fragment)
{
    size_t n = 0;

    for (const char *p = strstr(s, fragment); p != NULL; p = strstr(p + 1, fragment))
        n++;
    return n;
}

/* ---- A small well-formedness check ---- */

/* Enough XML for what the renderer writes: elements nest and close with matching names,
 * attribute values are double-quoted and hold no '<', text holds no '<' or '>' outside markup,
 * and every '&' starts one of the references the renderer may write. */
static bool xml_reference_at(const char *p)
{
    static const char *const refs[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};

    for (size_t i = 0; i < N_ELEMS(refs); i++) {
        if (strncmp(p, refs[i], strlen(refs[i])) == 0)
            return true;
    }
    return false;
}

static size_t xml_name_len(const char *p)
{
    return strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-");
}

/* Parses the attributes of the tag whose name ends at *P; leaves *P after the tag. Returns
 * false on a malformed tag; sets *EMPTY for one closed with "/>". */
static bool xml_attributes(const char **p, bool *empty)
{
    const char *s = *p;

    for (;;) {
        size_t n;

        if (s[0] == '>' || (s[0] == '/' && s[1] == '>')) {
            *empty = s[0] == '/';
            *p = s + (*empty ? 2 : 1);
            return true;
        }
        if (*s++ != ' ' || (n = xml_name_len(s)) == 0 || s[n] != '=' || s[n + 1] != '"')
            return false;
        for (s += n + 2; *s != '"'; s++) {
            if (*s == '\0' || *s == '<' || (*s == '&' && !xml_reference_at(s)))
                return false;
        }
        s++;
    }
}

static bool xml_well_formed(const char *doc)
{
    const char *stack[8], *p = doc;
    size_t depth = 0, roots = 0;

    while (*p != '\0') {
        bool closing, empty = false;
        size_t n;

        if (*p == '>' || (*p == '&' && !xml_reference_at(p)))
            return false;
        if (*p != '<') {
            p++;
            continue;
        }
        closing = p[1] == '/';
        p += closing ? 2 : 1;
        if ((n = xml_name_len(p)) == 0)
            return false;
        if (closing) {
            if (depth == 0 || strncmp(stack[depth - 1], p, n) != 0 ||
                xml_name_len(stack[depth - 1]) != n || p[n] != '>')
                return false;
            depth--;
            p += n + 1;
            continue;
        }
        if (depth == 0 && roots++ != 0)
            return false;
        if (depth == N_ELEMS(stack))
            return false;
        stack[depth] = p;
        p += n;
        if (!xml_attributes(&p, &empty))
            return false;
        depth += !empty;
    }
    return depth == 0 && roots == 1;
}

/* ---- Formatting ---- */

static void test_badge_format_shortens_counts(void **state)
{
    static const struct {
        int64_t n;
        const char *want;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {7, "7"},
        {999, "999"},
        {1000, "1k"},
        {1049, "1k"},
        {1099, "1k"},
        {1100, "1.1k"},
        {1234, "1.2k"},
        {1999, "1.9k"},
        {9999, "9.9k"},
        {10000, "10k"},
        {12345, "12k"},
        {999949, "999k"},
        {999950, "999k"},
        {999999, "999k"},
        {1000000, "1M"},
        {1234567, "1.2M"},
        {999999999, "999M"},
        {1000000000, "1G"},
        {1500000000000, "1.5T"},
        {999999999999999, "999T"},
        {1000000000000000, "1000T"},
        {INT64_MAX, "9223372T"},
    };
    char out[32];

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        tally_badge_format(out, cases[i].n);
        assert_string_equal(out, cases[i].want);
    }
}

static void test_badge_format_mirrors_negative_counts(void **state)
{
    char out[32];

    (void)state;
    tally_badge_format(out, -5);
    assert_string_equal(out, "-5");
    tally_badge_format(out, -999);
    assert_string_equal(out, "-999");
    tally_badge_format(out, -1234);
    assert_string_equal(out, "-1.2k");
    tally_badge_format(out, INT64_MIN);
    assert_string_equal(out, "-9223372T");
}

/* The number a formatted count stands for: "1.2k" is 1200. */
static uint64_t format_value(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    switch (*end) {
    case 'k':
        return (uint64_t)llround(v * 1e3);
    case 'M':
        return (uint64_t)llround(v * 1e6);
    case 'G':
        return (uint64_t)llround(v * 1e9);
    case 'T':
        return (uint64_t)llround(v * 1e12);
    default:
        assert_int_equal(*end, '\0');
        return (uint64_t)llround(v);
    }
}

/* Shown values never go down as the count goes up and never exceed the count, across every
 * count below 20,000 and around every power of ten up to 10^15. */
static void test_badge_format_is_monotonic_and_never_overstates(void **state)
{
    uint64_t last = 0;
    char out[32];

    (void)state;
    for (int64_t n = 0; n < 20000; n++) {
        tally_badge_format(out, n);
        assert_true(format_value(out) >= last);
        assert_true(format_value(out) <= (uint64_t)n);
        assert_true(strlen(out) <= 4);
        last = format_value(out);
    }
    for (int64_t p = 100000; p <= 1000000000000000; p *= 10) {
        last = 0;
        for (int64_t n = p - 1500; n < p + 1500; n++) {
            tally_badge_format(out, n);
            assert_true(format_value(out) >= last);
            assert_true(format_value(out) <= (uint64_t)n);
            assert_null(strstr(out, "1000k"));
            last = format_value(out);
        }
    }
}

/* ---- Measuring ---- */

static void test_badge_width_sums_the_verdana_table(void **state)
{
    (void)state;
    assert_int_equal(width_cents(S("")), 0);
    assert_int_equal(width_cents(S(" ")), 387);
    assert_int_equal(width_cents(S("W")), 1088);
    assert_int_equal(width_cents(S("~")), 900);
    assert_int_equal(width_cents(S("views")), 3081);
    assert_int_equal(width_cents(S("1,234,567")), 5693);
    assert_int_equal(width_cents(S("1.2k")), 2449);
}

static void test_badge_width_grows_with_length(void **state)
{
    static const char text[] = "views 1,234,567 \xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xf0\x9f\x91\x8d";
    double last = 0;

    (void)state;
    for (size_t n = 1; n < sizeof(text); n++) {
        double w = tally_badge_text_width(text, n);

        assert_true(w >= last);
        last = w;
    }
    assert_true(tally_badge_text_width(S("12345678901234567890")) >
                tally_badge_text_width(S("12345")));
}

static void test_badge_width_estimates_other_characters_wide(void **state)
{
    long latin = width_cents(S("\xc3\xa9")), cjk = width_cents(S("\xe4\xb8\xad")),
         emoji = width_cents(S("\xf0\x9f\x91\x8d"));

    (void)state;
    assert_true(latin > 0);
    assert_true(latin >= width_cents(S("W"))); /* at least the widest letter Verdana has */
    assert_true(cjk > latin);
    assert_true(emoji > latin);
    assert_int_equal(width_cents(S("e\xcc\x81")), width_cents(S("e"))); /* combining accent */
}

static void test_badge_width_counts_bad_bytes_as_replacements(void **state)
{
    long fffd = width_cents(S("\xef\xbf\xbd"));

    (void)state;
    assert_true(fffd > 0);
    assert_int_equal(width_cents(S("\xff")), fffd);
    assert_int_equal(width_cents(S("\x80")), fffd);
    assert_int_equal(width_cents(S("\xc0\xaf")), 2 * fffd);                    /* overlong '/' */
    assert_int_equal(width_cents(S("\xed\xa0\x80")), 3 * fffd);                /* a surrogate */
    assert_int_equal(width_cents(S("a\xe4\xb8")), width_cents(S("a")) + fffd); /* cut short */
    assert_int_equal(width_cents(S("\xf0\x9f\x91!")), fffd + width_cents(S("!")));
    assert_int_equal(width_cents(S("\xf4\x90\x80\x80")), 4 * fffd); /* past U+10FFFF */
}

static void test_badge_width_ignores_control_characters(void **state)
{
    (void)state;
    assert_int_equal(width_cents(S("a\x01\tb\x7f\n\xc2\x85")), width_cents(S("ab")));
    assert_int_equal(width_cents(S("\x00")), 0);
}

/* ---- Rendering ---- */

/* Pinned: any change to the output shows up here and has to be deliberate. */
static void test_badge_render_matches_golden_svg(void **state)
{
    static const char want[] =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"58\" height=\"20\" role=\"img\" "
        "aria-label=\"views: 7\"><title>views: 7</title>"
        "<linearGradient id=\"s\" x2=\"0\" y2=\"100%\">"
        "<stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/>"
        "<stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>"
        "<clipPath id=\"r\"><rect width=\"58\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>"
        "<g clip-path=\"url(#r)\"><rect width=\"41\" height=\"20\" fill=\"#555\"/>"
        "<rect x=\"41\" width=\"17\" height=\"20\" fill=\"#4c1\"/>"
        "<rect width=\"58\" height=\"20\" fill=\"url(#s)\"/></g>"
        "<g fill=\"#fff\" text-anchor=\"middle\" "
        "font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" "
        "text-rendering=\"geometricPrecision\" font-size=\"110\">"
        "<text aria-hidden=\"true\" x=\"205\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\" "
        "transform=\"scale(.1)\" textLength=\"308.1\">views</text>"
        "<text x=\"205\" y=\"140\" transform=\"scale(.1)\" textLength=\"308.1\">views</text>"
        "<text aria-hidden=\"true\" x=\"495\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\" "
        "transform=\"scale(.1)\" textLength=\"69.9\">7</text>"
        "<text x=\"495\" y=\"140\" transform=\"scale(.1)\" textLength=\"69.9\">7</text>"
        "</g></svg>";
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    assert_string_equal(render(&b, "views", "7"), want);
    assert_true(xml_well_formed(b.data));
    tally_buf_release(&b);
}

static void test_badge_render_is_accessible(void **state)
{
    struct tally_buf b;
    const char *svg;

    (void)state;
    tally_buf_init(&b);
    svg = render(&b, "views", "1.2k");
    assert_ptr_equal(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" "), svg);
    assert_non_null(strstr(svg, " role=\"img\" aria-label=\"views: 1.2k\"><title>views: 1.2k"
                                "</title>"));
    assert_int_equal(count_of(svg, "<text aria-hidden=\"true\" "), 2); /* the shadows */
    assert_int_equal(count_of(svg, "<text "), 4);
    assert_int_equal(count_of(svg, ">1.2k</text>"), 2);
    assert_non_null(strstr(svg, "font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\""));
    assert_non_null(strstr(svg, "<rect width=\"41\" height=\"20\" fill=\"#555\"/>"));
    assert_non_null(strstr(svg, " height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>"));
    assert_true(xml_well_formed(svg));
    tally_buf_release(&b);
}

/* Markup characters: a hostile label leaves as many '<', '"' and '\'' in the document as a
 * harmless one, so it can open no element and close no attribute. */
static void test_badge_render_escapes_hostile_labels(void **state)
{
    struct tally_buf b, plain;
    const char *svg, *ref;

    (void)state;
    tally_buf_init(&b);
    tally_buf_init(&plain);
    ref = render(&plain, "x", "7");
    svg = render(&b, "\"><script>alert(1)</script>&", "7");
    assert_null(strstr(svg, "<script"));
    assert_null(strstr(svg, "\"><script"));
    assert_null(strstr(svg, "</script"));
    assert_int_equal(count_of(svg, "<"), count_of(ref, "<"));
    assert_int_equal(count_of(svg, "\""), count_of(ref, "\""));
    assert_int_equal(count_of(svg, "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;"), 4);
    assert_non_null(strstr(svg, "aria-label=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
                                "&amp;: 7\"><title>&quot;&gt;"));
    assert_true(xml_well_formed(svg));

    svg = render(&b, "it's <b>", "a&b");
    assert_int_equal(count_of(svg, "it&#39;s &lt;b&gt;"), 4);
    assert_int_equal(count_of(svg, "a&amp;b"), 4);
    assert_null(strstr(svg, "'"));
    assert_int_equal(count_of(svg, "<"), count_of(ref, "<"));
    assert_true(xml_well_formed(svg));
    tally_buf_release(&b);
    tally_buf_release(&plain);
}

static void test_badge_render_drops_control_characters(void **state)
{
    /* NUL is past strlen(), so it is passed by length */
    static const char label[] = "a\x01\tb\r\nc\x7f\xc2\x85"
                                "d\xe2\x80\xae"
                                "e\x00";
    struct tally_buf b;

    (void)state;
    tally_buf_init(&b);
    tally_badge_render(&b, label, sizeof(label) - 1, S("7"));
    tally_buf_add(&b, "", 1);
    assert_non_null(strstr(b.data, "<title>abcde: 7</title>"));
    assert_int_equal(count_of(b.data, ">abcde</text>"), 2);
    for (size_t i = 0; i + 1 < b.len; i++)
        assert_true((unsigned char)b.data[i] >= 0x20 && b.data[i] != 0x7f);
    assert_null(strstr(b.data, "\xc2\x85"));
    assert_null(strstr(b.data, "\xe2\x80\xae"));
    tally_buf_release(&b);
}

static void test_badge_render_replaces_bad_utf8(void **state)
{
    struct tally_buf b;
    const char *svg;

    (void)state;
    tally_buf_init(&b);
    svg = render(&b, "a\xff\xc0\xaf\xe4\xb8", "\xef\xbf\xbe");
    assert_non_null(strstr(svg, "<title>a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd: "
                                "\xef\xbf\xbd</title>"));
    assert_null(strstr(svg, "\xff"));
    assert_null(strstr(svg, "\xc0"));
    assert_true(xml_well_formed(svg));
    svg = render(&b, "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x91\x8d", "1");
    assert_non_null(strstr(svg, "<title>\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x91\x8d: 1</title>"));
    tally_buf_release(&b);
}

/* The width attribute is the two boxes, each its text rounded up plus 5 px on either side, and
 * textLength is ten times the measured text. */
static void test_badge_render_sizes_boxes_from_text_widths(void **state)
{
    static const char *const values[] = {"7", "1.2k", "1,234,567,890", "\xe4\xb8\xad"};
    struct tally_buf b;
    char want[64];

    (void)state;
    tally_buf_init(&b);
    for (size_t i = 0; i < N_ELEMS(values); i++) {
        const char *svg = render(&b, "views", values[i]);
        unsigned long total =
            number_after(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"");
        unsigned long lw = number_after(svg, "<g clip-path=\"url(#r)\"><rect width=\"");
        unsigned long vw = number_after(svg, "fill=\"#555\"/><rect x=\"41\" width=\"");
        double w = tally_badge_text_width(values[i], strlen(values[i]));

        assert_int_equal(lw, 41);
        assert_int_equal(vw, (unsigned long)ceil(w) + 10);
        assert_int_equal(total, lw + vw);
        assert_int_equal(number_after(svg, "<clipPath id=\"r\"><rect width=\""), total);
        snprintf(want, sizeof(want), "textLength=\"%g\">", 10 * w);
        assert_int_equal(count_of(svg, want), 2);
        snprintf(want, sizeof(want), "<text x=\"%lu\" y=\"140\"", 10 * lw + 5 * vw);
        assert_non_null(strstr(svg, want)); /* the value centred in its box */
    }
    tally_buf_release(&b);
}

static void test_badge_render_grows_with_the_value(void **state)
{
    struct tally_buf b;
    unsigned long narrow, wide;
    const char *width_attr = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"";

    (void)state;
    tally_buf_init(&b);
    narrow = number_after(render(&b, "views", "12345"), width_attr);
    wide = number_after(render(&b, "views", "12345678901234567890"), width_attr);
    assert_true(wide > narrow);
    assert_int_equal(wide - narrow, (unsigned long)ceil(20 * 6.99) - (unsigned long)ceil(5 * 6.99));
    tally_buf_release(&b);
}

static void test_badge_render_without_label_shows_value_alone(void **state)
{
    struct tally_buf b;
    const char *svg;

    (void)state;
    tally_buf_init(&b);
    svg = render(&b, "\x01", "7");
    assert_non_null(strstr(svg, " width=\"17\" height=\"20\" role=\"img\" aria-label=\"7\">"
                                "<title>7</title>"));
    assert_null(strstr(svg, "#555"));
    assert_non_null(strstr(svg, "<rect width=\"17\" height=\"20\" fill=\"#4c1\"/>"));
    assert_int_equal(count_of(svg, "<text "), 2);
    assert_non_null(strstr(svg, "<text x=\"85\" y=\"140\""));
    assert_true(xml_well_formed(svg));
    tally_buf_release(&b);
}

static void test_badge_well_formedness_check_catches_breakage(void **state)
{
    (void)state;
    assert_true(xml_well_formed("<a x=\"1\"><b/>t&amp;</a>"));
    assert_false(xml_well_formed("<a x=\"\"><script>"));
    assert_false(xml_well_formed("<a x=\"\"\">x</a>"));
    assert_false(xml_well_formed("<a>&</a>"));
    assert_false(xml_well_formed("<a><b></a></b>"));
    assert_false(xml_well_formed("<a></a><a></a>"));
    assert_false(xml_well_formed("<a>x>y</a>"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_badge_format_shortens_counts),
        cmocka_unit_test(test_badge_format_mirrors_negative_counts),
        cmocka_unit_test(test_badge_format_is_monotonic_and_never_overstates),
        cmocka_unit_test(test_badge_width_sums_the_verdana_table),
        cmocka_unit_test(test_badge_width_grows_with_length),
        cmocka_unit_test(test_badge_width_estimates_other_characters_wide),
        cmocka_unit_test(test_badge_width_counts_bad_bytes_as_replacements),
        cmocka_unit_test(test_badge_width_ignores_control_characters),
        cmocka_unit_test(test_badge_render_matches_golden_svg),
        cmocka_unit_test(test_badge_render_is_accessible),
        cmocka_unit_test(test_badge_render_escapes_hostile_labels),
        cmocka_unit_test(test_badge_render_drops_control_characters),
        cmocka_unit_test(test_badge_render_replaces_bad_utf8),
        cmocka_unit_test(test_badge_render_sizes_boxes_from_text_widths),
        cmocka_unit_test(test_badge_render_grows_with_the_value),
        cmocka_unit_test(test_badge_render_without_label_shows_value_alone),
        cmocka_unit_test(test_badge_well_formedness_check_catches_breakage),
    };

    return cmocka_run_group_tests_name("badge", tests, NULL, NULL);
}
