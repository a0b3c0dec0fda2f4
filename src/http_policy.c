/* http_policy.c -- the security headers each kind of answer carries, chosen by its media type
 * from one table, so that every way of answering (assets, JSON, badges, errors) gets the same
 * set and a new kind is one row. */
#include <stddef.h>
#include <string.h>

#include "http.h"

/* Pages tallyd serves itself (/dashboard, /demo/): scripts, styles and requests only from
 * tallyd, no inline script or style, never framed, and no Referer to anyone (the dashboard's
 * address may name articles). */
#define HTTP_PAGE_CSP                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "             \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const char *const http_page_headers[][2] = {
    {"Content-Security-Policy", HTTP_PAGE_CSP},
    {"Referrer-Policy", "no-referrer"},
    {"X-Content-Type-Options", "nosniff"},
    {NULL, NULL},
};

/* Badges: an SVG opened on its own is a document; it may run nothing and load nothing. */
static const char *const http_svg_headers[][2] = {
    {"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"},
    {"X-Content-Type-Options", "nosniff"},
    {NULL, NULL},
};

/* Everything else with a body (JSON, tally.js, CSS, SVG badges, the GIF, metrics): read only
 * as the type it says it is. */
static const char *const http_body_headers[][2] = {
    {"X-Content-Type-Options", "nosniff"},
    {NULL, NULL},
};

static const struct {
    const char *type; /* the media type's start; "" matches any */
    const char *const (*headers)[2];
} http_policies[] = {
    {"text/html", http_page_headers},
    {"image/svg+xml", http_svg_headers},
    {"", http_body_headers},
};

void tally_http_policy(struct tally_http_req *h, const char *ctype)
{
    for (size_t i = 0; i < sizeof(http_policies) / sizeof(http_policies[0]); i++) {
        const char *t = http_policies[i].type;

        if (strncmp(ctype, t, strlen(t)) != 0)
            continue;
        for (const char *const(*kv)[2] = http_policies[i].headers; (*kv)[0] != NULL; kv++)
            tally_http_header(h, (*kv)[0], (*kv)[1]);
        return;
    }
}
