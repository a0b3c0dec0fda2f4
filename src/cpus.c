/* cpus.c -- how many CPUs this process may use (see cpus.h): pure parsers of the cgroup
 * files, then the reading of them, the affinity mask and the online cores. */
#define _GNU_SOURCE /* sched_getaffinity() and CPU_COUNT() */
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tally/cpus.h"
#include "tally/error.h"

#define CPUS_FILE_MAX 4096 /* bytes read of a cgroup or proc file */

/* ---- Parsing ---- */

/* A decimal number of 1..19 digits at *P (advanced past it), below END. */
static bool cpus_number(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    size_t digits = 0;

    while (*p < end && **p >= '0' && **p <= '9' && digits < 19) {
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
        digits++;
    }
    if (digits == 0 || (*p < end && **p >= '0' && **p <= '9'))
        return false;
    *out = v;
    return true;
}

/* The length of TEXT without one trailing newline. */
static size_t cpus_chomp(const char *text, size_t len)
{
    return len > 0 && text[len - 1] == '\n' ? len - 1 : len;
}

/* QUOTA / PERIOD rounded up, at least 1, at most UINT_MAX. */
static unsigned cpus_ceil(uint64_t quota, uint64_t period)
{
    uint64_t n = quota / period + (quota % period != 0);

    return n < 1 ? 1 : n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

int tally_cpus_parse_max(const char *text, size_t len, unsigned *cpus)
{
    const char *p = text, *end = text + cpus_chomp(text, len);
    uint64_t quota = 0, period;
    bool unlimited = false;

    if (end - p >= 3 && memcmp(p, "max", 3) == 0) {
        unlimited = true;
        p += 3;
    } else if (!cpus_number(&p, end, &quota)) {
        return TALLY_EINVAL;
    }
    if (p == end || *p++ != ' ' || !cpus_number(&p, end, &period) || p != end || period == 0)
        return TALLY_EINVAL;
    *cpus = unlimited ? 0 : cpus_ceil(quota, period);
    return 0;
}

int tally_cpus_parse_cfs(const char *quota, const char *period, unsigned *cpus)
{
    const char *q = quota, *q_end = quota + cpus_chomp(quota, strlen(quota));
    const char *p = period, *p_end = period + cpus_chomp(period, strlen(period));
    uint64_t qv = 0, pv;
    bool unlimited = q_end - q == 2 && memcmp(q, "-1", 2) == 0;

    if (!unlimited && (!cpus_number(&q, q_end, &qv) || q != q_end))
        return TALLY_EINVAL;
    if (!cpus_number(&p, p_end, &pv) || p != p_end || pv == 0)
        return TALLY_EINVAL;
    *cpus = unlimited ? 0 : cpus_ceil(qv, pv);
    return 0;
}

/* Does the comma-separated LIST (LEN bytes) hold NAME? */
static bool cpus_list_has(const char *list, size_t len, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = list, *end = list + len; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t item = comma != NULL ? (size_t)(comma - p) : (size_t)(end - p);

        if (item == n && memcmp(p, name, n) == 0)
            return true;
        p += item + 1;
    }
    return false;
}

int tally_cpus_cgroup_path(const char *text, size_t len, const char *controller, char *out,
                           size_t outlen)
{
    for (const char *line = text, *end = text + len; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *eol = nl != NULL ? nl : end;
        const char *c1 = memchr(line, ':', (size_t)(eol - line));
        const char *c2 = c1 != NULL ? memchr(c1 + 1, ':', (size_t)(eol - c1 - 1)) : NULL;

        if (c2 != NULL) {
            const char *list = c1 + 1, *path = c2 + 1;
            size_t list_len = (size_t)(c2 - list), path_len = (size_t)(eol - path);
            bool v2 = c1 - line == 1 && line[0] == '0' && list_len == 0;
            bool hit = controller == NULL ? v2 : cpus_list_has(list, list_len, controller);

            if (hit) {
                if (path_len == 0 || path[0] != '/' || path_len >= outlen)
                    return TALLY_EINVAL;
                memcpy(out, path, path_len);
                out[path_len] = '\0';
                return 0;
            }
        }
        line = eol + 1;
    }
    return TALLY_EINVAL;
}

unsigned tally_cpus_fewest(unsigned online, unsigned affinity, unsigned quota)
{
    unsigned n = 0;
    const unsigned counts[] = {online, affinity, quota};

    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        if (counts[i] > 0 && (n == 0 || counts[i] < n))
            n = counts[i];
    return n > 0 ? n : 1;
}

/* ---- Reading ---- */

/* The first bytes of file PATH into BUF (NUL-terminated); the length, or -1. */
static ssize_t cpus_read(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The quota set in directory DIR of a cgroup hierarchy (V2 or v1); 0 for none. */
static unsigned cpus_quota_in(const char *dir, bool v2)
{
    char path[PATH_MAX + 32], a[64], b[64];
    unsigned cpus = 0;
    ssize_t n;

    if (v2) {
        snprintf(path, sizeof(path), "%s/cpu.max", dir);
        n = cpus_read(path, a, sizeof(a));
        if (n < 0 || tally_cpus_parse_max(a, (size_t)n, &cpus) < 0)
            return 0;
        return cpus;
    }
    snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
    if (cpus_read(path, a, sizeof(a)) < 0)
        return 0;
    snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir);
    if (cpus_read(path, b, sizeof(b)) < 0 || tally_cpus_parse_cfs(a, b, &cpus) < 0)
        return 0;
    return cpus;
}

/* The tightest quota from MOUNT + CGROUP up to MOUNT. A container often sees its own cgroup
 * at the root of the mount while /proc/self/cgroup names a path outside it: a directory
 * that does not exist holds no quota, and the walk goes on up. */
static unsigned cpus_quota_walk(const char *mount, const char *cgroup, bool v2)
{
    char dir[PATH_MAX];
    unsigned fewest = 0;
    size_t root_len = strlen(mount);
    int n = snprintf(dir, sizeof(dir), "%s%s", mount, strcmp(cgroup, "/") == 0 ? "" : cgroup);

    if (n < 0 || (size_t)n >= sizeof(dir))
        return 0;
    for (;;) {
        unsigned q = cpus_quota_in(dir, v2);
        char *slash;

        if (q > 0 && (fewest == 0 || q < fewest))
            fewest = q;
        if (strlen(dir) <= root_len)
            break;
        slash = strrchr(dir, '/');
        if (slash == NULL || (size_t)(slash - dir) < root_len)
            break;
        *slash = '\0';
    }
    return fewest;
}

unsigned tally_cpus_quota(const char *cgroup_root, const char *proc_cgroup)
{
    char text[CPUS_FILE_MAX], cgroup[PATH_MAX], mount[PATH_MAX];
    ssize_t n = cpus_read(proc_cgroup, text, sizeof(text));
    unsigned v2 = 0, v1 = 0;

    if (n < 0)
        return 0;
    if (tally_cpus_cgroup_path(text, (size_t)n, NULL, cgroup, sizeof(cgroup)) == 0)
        v2 = cpus_quota_walk(cgroup_root, cgroup, true);
    if (tally_cpus_cgroup_path(text, (size_t)n, "cpu", cgroup, sizeof(cgroup)) == 0) {
        snprintf(mount, sizeof(mount), "%s/cpu", cgroup_root);
        v1 = cpus_quota_walk(mount, cgroup, false);
    }
    return v1 == 0 ? v2 : v2 == 0 ? v1 : v1 < v2 ? v1 : v2;
}

unsigned tally_cpus_available(void)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    int affinity = 0;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        affinity = CPU_COUNT(&set);
    return tally_cpus_fewest(online > 0 ? (unsigned)online : 0,
                             affinity > 0 ? (unsigned)affinity : 0,
                             tally_cpus_quota("/sys/fs/cgroup", "/proc/self/cgroup"));
}
