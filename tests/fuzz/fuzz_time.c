/* fuzz_time.c -- the time parameter of /v1/series: whatever tally_time_parse() accepts lies
 * between 1970 and 9999, is written back by tally_time_format() as exactly 20 bytes that parse
 * to the same second, and equals what an independent reading of the same fields gives (H.
 * Hinnant's days_from_civil, the offset subtracted). The series parser built on it keeps its
 * ends inside what can be written. */
#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tally/error.h"
#include "tally/reports.h"

static int fuzz_num(const uint8_t *s, size_t n)
{
    int v = 0;

    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int64_t fuzz_civil(int y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The moment an accepted S (LEN bytes) names, read from its fixed positions. */
static int64_t fuzz_oracle(const uint8_t *s, size_t len)
{
    int64_t t = fuzz_civil(fuzz_num(s, 4), fuzz_num(s + 5, 2), fuzz_num(s + 8, 2)) * 86400;
    size_t i = 19;

    if (len == 10)
        return t;
    t += fuzz_num(s + 11, 2) * 3600 + fuzz_num(s + 14, 2) * 60 + fuzz_num(s + 17, 2);
    if (s[i] == '.')
        for (i++; s[i] >= '0' && s[i] <= '9'; i++)
            ;
    if (s[i] == 'Z' || s[i] == 'z')
        return t;
    CHECK(len - i == 6);
    return t - (s[i] == '-' ? -1 : 1) * (fuzz_num(s + i + 1, 2) * 3600 + fuzz_num(s + i + 4, 2) * 60);
}

static void fuzz_series(const char *in, size_t len)
{
    struct tally_series_params p;
    struct tally_error err;
    char t[TALLY_TIME_LEN + 1];

    if (tally_series_parse(in, len, 1800000000, &p, &err) != 0)
        return;
    CHECK(p.from <= p.to && p.n >= 1);
    CHECK(tally_time_format(p.from, t) == TALLY_TIME_LEN);
    CHECK(tally_time_format(p.to, t) == TALLY_TIME_LEN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[TALLY_TIME_LEN + 1];
    int64_t t, back;

    fuzz_series((const char *)data, size);
    if (tally_time_parse((const char *)data, size, &t) != 0)
        return 0;
    CHECK(t >= 0 && t <= TALLY_TIME_MAX);
    CHECK(t == fuzz_oracle(data, size));
    CHECK(tally_time_format(t, out) == TALLY_TIME_LEN && strlen(out) == TALLY_TIME_LEN);
    CHECK(tally_time_parse(out, TALLY_TIME_LEN, &back) == 0 && back == t);
    return 0;
}
