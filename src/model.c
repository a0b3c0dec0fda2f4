/* model.c -- the rows of the metric and property tables (include/tally/model.h), and the
 * model as the scripts take it. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tally/model.h"

#define MODEL_SUM_OWN false
#define MODEL_SUM_SUM(type, field) true

const struct tally_metric_info tally_metrics[TALLY_METRICS] = {
#define X(id, member, name, site, bit, rule)                                                       \
    {name,                                                                                         \
     #member,                                                                                      \
     offsetof(struct tally_stats, member),                                                         \
     offsetof(struct tally_site, member),                                                          \
     (site) != 0,                                                                                  \
     (bit),                                                                                        \
     MODEL_SUM_##rule},
    TALLY_METRIC_MAP(X)
#undef X
};

const struct tally_property_info tally_properties[TALLY_PROPERTIES] = {
#define X(id, member, name, type) {name, #member, offsetof(struct tally_stats, member)},
    TALLY_PROPERTY_MAP(X)
#undef X
};

/* Every bit a different one, none of them the site totals'. */
#define X(id, member, name, site, bit, rule)                                                       \
    _Static_assert((bit) != 0 && ((bit) & ((bit)-1)) == 0 && (bit) != TALLY_EXPIRY_SITE &&         \
                       (bit) <= 0x80,                                                              \
                   "the expiry bit of " name " is one bit of a byte, not the site totals'");
TALLY_METRIC_MAP(X)
#undef X
_Static_assert(__builtin_popcount(TALLY_EXPIRY_HOUR_ALL) == TALLY_METRICS,
               "every metric has an expiry bit of its own");

const char *tally_metric_name(enum tally_metric m)
{
    return (unsigned)m < TALLY_METRICS ? tally_metrics[m].name : "unknown";
}

int tally_metric_from(const char *s, size_t len)
{
    for (int m = 0; m < TALLY_METRICS; m++)
        if (strlen(tally_metrics[m].name) == len && memcmp(tally_metrics[m].name, s, len) == 0)
            return m;
    return -1;
}

int64_t *tally_stats_metric(struct tally_stats *s, enum tally_metric m)
{
    return (int64_t *)(void *)((char *)s + tally_metrics[m].stats_offset);
}

int64_t tally_stats_get(const struct tally_stats *s, enum tally_metric m)
{
    return *(const int64_t *)(const void *)((const char *)s + tally_metrics[m].stats_offset);
}

void tally_metric_list(char *out, size_t cap)
{
    size_t n = 0;

    out[0] = '\0';
    for (int m = 0; m < TALLY_METRICS && n < cap; m++) {
        int k =
            snprintf(out + n, cap - n, "%s%s", m == 0 ? "one of " : ", ", tally_metrics[m].name);

        if (k < 0)
            break;
        n += (size_t)k;
    }
}

size_t tally_model_arg(char out[TALLY_MODEL_ARG_MAX + 1])
{
    size_t n = (size_t)snprintf(out, TALLY_MODEL_ARG_MAX + 1, "%d %d %d", TALLY_HOUR_TTL,
                                TALLY_DAY_TTL, TALLY_VISITORS_TTL);

    for (unsigned bit = 1; bit <= 0x80 && n < TALLY_MODEL_ARG_MAX; bit <<= 1) {
        const char *name = bit == TALLY_EXPIRY_SITE ? "site" : NULL;
        bool site = false;
        int k;

        for (int m = 0; m < TALLY_METRICS && name == NULL; m++)
            if (tally_metrics[m].bit == bit) {
                name = tally_metrics[m].name;
                site = tally_metrics[m].site;
            }
        if (name == NULL)
            break; /* bits are given from 0 up, without a gap */
        k = snprintf(out + n, TALLY_MODEL_ARG_MAX + 1 - n, " %s%s", name, site ? "+" : "");
        if (k < 0)
            break;
        n += (size_t)k;
    }
    return n < TALLY_MODEL_ARG_MAX ? n : TALLY_MODEL_ARG_MAX;
}
