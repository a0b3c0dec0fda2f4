/* assets.c -- the files tallyd serves from memory: tally.js, the dashboard and the demo
 * pages. Their security headers come with their media type (http_policy.c). */
#include <stdio.h>
#include <string.h>

#include "http.h"

#define ASSET(name)                                                                                \
    extern const unsigned char tally_asset_##name[];                                               \
    extern const size_t tally_asset_##name##_len;
ASSET(tally_js)
ASSET(demo_article)
ASSET(demo_list)
ASSET(demo_css)
ASSET(demo_js)
ASSET(dashboard)
ASSET(dashboard_js)
ASSET(dashboard_css)
#undef ASSET

struct asset {
    const char *path;
    const char *ctype;
    const unsigned char *data;
    const size_t *len;
    const char *cache;
    bool demo;     /* served only with --demo */
    bool embedded; /* loaded by other sites' pages: readable cross-origin */
};

#define A(name) tally_asset_##name, &tally_asset_##name##_len
static const struct asset assets[] = {
    {"/tally.js", "text/javascript; charset=utf-8", A(tally_js), "public, max-age=86400", false,
     true},
    {"/dashboard", "text/html; charset=utf-8", A(dashboard), "no-cache", false, false},
    {"/dashboard.js", "text/javascript; charset=utf-8", A(dashboard_js), "no-cache", false, false},
    {"/dashboard.css", "text/css; charset=utf-8", A(dashboard_css), "no-cache", false, false},
    {"/demo/", "text/html; charset=utf-8", A(demo_article), "no-cache", true, false},
    {"/demo/list", "text/html; charset=utf-8", A(demo_list), "no-cache", true, false},
    {"/demo/demo.css", "text/css; charset=utf-8", A(demo_css), "no-cache", true, false},
    {"/demo/demo.js", "text/javascript; charset=utf-8", A(demo_js), "no-cache", true, false},
};
#undef A

/* An asset's ETag: a hash of its bytes, which never change while the process runs. */
static void asset_etag(const struct asset *a, char out[32])
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < *a->len; i++)
        h = (h ^ a->data[i]) * 1099511628211ULL;
    snprintf(out, 32, "\"%016llx\"", (unsigned long long)h);
}

void tally_route_asset(struct tally_http_req *h)
{
    const char *inm = h->hdr.if_none_match;
    char etag[32];

    for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++) {
        const struct asset *a = &assets[i];

        if (strcmp(h->path, a->path) != 0 || (a->demo && !h->w->cfg->demo))
            continue;
        asset_etag(a, etag);
        tally_http_header(h, "ETag", etag);
        tally_http_header(h, "Cache-Control", a->cache);
        if (a->embedded) {
            /* For <script crossorigin> (SRI, error reporting) and pages that require
             * Cross-Origin-Resource-Policy of what they embed (COEP). */
            tally_http_header(h, "Access-Control-Allow-Origin", "*");
            tally_http_header(h, "Cross-Origin-Resource-Policy", "cross-origin");
        }
        if (tally_http_etag_match(inm, etag)) {
            /* No body, so no media type to choose the policy by (http_policy.c). */
            tally_http_header(h, "X-Content-Type-Options", "nosniff");
            tally_http_send(h, 304, NULL, NULL, 0);
        }
        else
            tally_http_send(h, 200, a->ctype, a->data, *a->len);
        return;
    }
    tally_http_send_error(h, 404, "not_found", "path: no such file");
}
