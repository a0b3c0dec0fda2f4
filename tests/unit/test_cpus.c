/* test_cpus.c -- the default of --threads: cgroup CPU quotas (v2 cpu.max, v1 CFS), the
 * process's cgroup path, the fewest of the counts, and the walk over a cgroup tree made in a
 * temporary directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally/cpus.h"
#include "tally/error.h"
#include "unit.h"

#define BAD UINT_MAX - 7 /* what *cpus holds before a call that must fail */

static void test_cpus_parse_max(void **state)
{
    static const struct {
        const char *text;
        int rc;
        unsigned cpus;
    } cases[] = {
        {"max 100000\n", 0, 0},
        {"max 100000", 0, 0},
        {"100000 100000\n", 0, 1},
        {"150000 100000\n", 0, 2}, /* 1.5 CPUs: rounded up */
        {"200000 100000\n", 0, 2},
        {"200001 100000\n", 0, 3},
        {"50000 100000\n", 0, 1}, /* half a CPU: still one thread */
        {"1000 100000\n", 0, 1},
        {"0 100000\n", 0, 1},
        {"6400000 100000\n", 0, 64},
        {"400000 50000\n", 0, 8},
        {"18446744073709551 1\n", 0, UINT_MAX}, /* more than an unsigned: capped */
        {"", TALLY_EINVAL, BAD},
        {"\n", TALLY_EINVAL, BAD},
        {"max\n", TALLY_EINVAL, BAD},
        {"150000\n", TALLY_EINVAL, BAD},
        {"150000 0\n", TALLY_EINVAL, BAD},
        {"-1 100000\n", TALLY_EINVAL, BAD},
        {"150000  100000\n", TALLY_EINVAL, BAD},
        {"150000 100000 1\n", TALLY_EINVAL, BAD},
        {"150000 100000\n\n", TALLY_EINVAL, BAD},
        {"maxi 100000\n", TALLY_EINVAL, BAD},
        {"1.5 1\n", TALLY_EINVAL, BAD},
        {"99999999999999999999 100000\n", TALLY_EINVAL, BAD}, /* 20 digits */
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned cpus = BAD;
        int rc = tally_cpus_parse_max(cases[i].text, strlen(cases[i].text), &cpus);

        if (rc != cases[i].rc || cpus != cases[i].cpus)
            fail_msg("'%s': rc %d cpus %u, want rc %d cpus %u", cases[i].text, rc, cpus,
                     cases[i].rc, cases[i].cpus);
    }
}

static void test_cpus_parse_max_reads_only_len_bytes(void **state)
{
    const char text[] = "150000 100000\n7";
    char *copy = malloc(sizeof(text) - 3); /* "150000 100000\n", no NUL */
    unsigned cpus = BAD;

    (void)state;
    assert_non_null(copy);
    memcpy(copy, text, sizeof(text) - 3);
    assert_int_equal(tally_cpus_parse_max(copy, sizeof(text) - 3, &cpus), 0);
    assert_int_equal(cpus, 2);
    free(copy);
}

static void test_cpus_parse_cfs(void **state)
{
    static const struct {
        const char *quota, *period;
        int rc;
        unsigned cpus;
    } cases[] = {
        {"-1\n", "100000\n", 0, 0},
        {"150000\n", "100000\n", 0, 2},
        {"100000", "100000", 0, 1},
        {"50000\n", "100000\n", 0, 1},
        {"800000\n", "100000\n", 0, 8},
        {"", "100000\n", TALLY_EINVAL, BAD},
        {"-2\n", "100000\n", TALLY_EINVAL, BAD},
        {"150000\n", "0\n", TALLY_EINVAL, BAD},
        {"150000\n", "\n", TALLY_EINVAL, BAD},
        {"max\n", "100000\n", TALLY_EINVAL, BAD},
        {"150000 \n", "100000\n", TALLY_EINVAL, BAD},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        unsigned cpus = BAD;
        int rc = tally_cpus_parse_cfs(cases[i].quota, cases[i].period, &cpus);

        if (rc != cases[i].rc || cpus != cases[i].cpus)
            fail_msg("'%s' '%s': rc %d cpus %u, want rc %d cpus %u", cases[i].quota,
                     cases[i].period, rc, cpus, cases[i].rc, cases[i].cpus);
    }
}

static void test_cpus_cgroup_path(void **state)
{
    static const char hybrid[] = "12:cpuset:/\n"
                                 "4:cpu,cpuacct:/system.slice/tallyd.service\n"
                                 "1:name=systemd:/system.slice/tallyd.service\n"
                                 "0::/system.slice/tallyd.service\n";
    static const struct {
        const char *text, *controller;
        int rc;
        const char *path;
    } cases[] = {
        {"0::/\n", NULL, 0, "/"},
        {"0::/system.slice/tallyd.service\n", NULL, 0, "/system.slice/tallyd.service"},
        {"0::/kubepods.slice/pod1/cri-x.scope", NULL, 0, "/kubepods.slice/pod1/cri-x.scope"},
        {hybrid, NULL, 0, "/system.slice/tallyd.service"},
        {hybrid, "cpu", 0, "/system.slice/tallyd.service"},
        {hybrid, "cpuacct", 0, "/system.slice/tallyd.service"},
        {hybrid, "cpuset", 0, "/"},
        {"3:cpu:/docker/abc\n", "cpu", 0, "/docker/abc"},
        {"3:cpuset:/docker/abc\n", "cpu", TALLY_EINVAL, ""}, /* cpuset is not cpu */
        {"3:cpu:/docker/abc\n", NULL, TALLY_EINVAL, ""},     /* v1 only: no v2 path */
        {"1:name=systemd:/x\n", NULL, TALLY_EINVAL, ""},
        {"0::\n", NULL, TALLY_EINVAL, ""},
        {"0::relative\n", NULL, TALLY_EINVAL, ""},
        {"", NULL, TALLY_EINVAL, ""},
        {"garbage\n", NULL, TALLY_EINVAL, ""},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char out[64] = "";
        int rc = tally_cpus_cgroup_path(cases[i].text, strlen(cases[i].text), cases[i].controller,
                                        out, sizeof(out));

        if (rc != cases[i].rc || strcmp(out, cases[i].path) != 0)
            fail_msg("case %zu: rc %d '%s', want rc %d '%s'", i, rc, out, cases[i].rc,
                     cases[i].path);
    }
}

static void test_cpus_cgroup_path_too_long(void **state)
{
    static const char text[] = "0::/system.slice/tallyd.service\n";
    char out[29]; /* the path's 28 bytes and a NUL */

    (void)state;
    assert_int_equal(tally_cpus_cgroup_path(S(text), NULL, out, sizeof(out) - 1), TALLY_EINVAL);
    assert_int_equal(tally_cpus_cgroup_path(S(text), NULL, out, sizeof(out)), 0);
    assert_string_equal(out, "/system.slice/tallyd.service");
}

static void test_cpus_fewest(void **state)
{
    static const struct {
        unsigned online, affinity, quota, want;
    } cases[] = {
        {8, 8, 0, 8}, {8, 2, 0, 2}, {8, 8, 3, 3}, {8, 2, 3, 2}, {8, 4, 1, 1},
        {0, 0, 0, 1}, {0, 0, 5, 5}, {4, 0, 0, 4}, {0, 3, 0, 3}, {2, 8, 16, 2},
    };

    (void)state;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        if (tally_cpus_fewest(cases[i].online, cases[i].affinity, cases[i].quota) != cases[i].want)
            fail_msg("fewest(%u, %u, %u) is %u, want %u", cases[i].online, cases[i].affinity,
                     cases[i].quota,
                     tally_cpus_fewest(cases[i].online, cases[i].affinity, cases[i].quota),
                     cases[i].want);
}

/* ---- The walk, over a cgroup tree in a temporary directory ---- */

static char tree[PATH_MAX];

static void put(const char *rel, const char *text)
{
    char path[PATH_MAX + 64];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tree, rel);
    for (char *p = path + strlen(tree) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static unsigned quota(void)
{
    char root[PATH_MAX + 8], proc[PATH_MAX + 8];

    snprintf(root, sizeof(root), "%s/fs", tree);
    snprintf(proc, sizeof(proc), "%s/cgroup", tree);
    return tally_cpus_quota(root, proc);
}

static int make_tree(void **state)
{
    const char *tmp = getenv("TMPDIR");

    (void)state;
    snprintf(tree, sizeof(tree), "%s/tally-cpus.XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    return mkdtemp(tree) != NULL ? 0 : -1;
}

static int remove_tree(void **state)
{
    char cmd[PATH_MAX + 16];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tree);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_cpus_quota_v2_tightest_on_the_path(void **state)
{
    (void)state;
    put("cgroup", "0::/system.slice/tallyd.service\n");
    assert_int_equal(quota(), 0); /* no files at all: no quota */
    put("fs/cpu.max", "max 100000\n");
    put("fs/system.slice/cpu.max", "max 100000\n");
    put("fs/system.slice/tallyd.service/cpu.max", "max 100000\n");
    assert_int_equal(quota(), 0);
    put("fs/system.slice/tallyd.service/cpu.max", "250000 100000\n");
    assert_int_equal(quota(), 3);
    put("fs/system.slice/cpu.max", "150000 100000\n"); /* a parent's tighter quota wins */
    assert_int_equal(quota(), 2);
    put("fs/system.slice/cpu.max", "garbage\n"); /* an unreadable one is skipped */
    assert_int_equal(quota(), 3);
    put("fs/other.slice/cpu.max", "100000 100000\n"); /* not on the path */
    assert_int_equal(quota(), 3);
}

static void test_cpus_quota_v2_container_sees_its_own_root(void **state)
{
    (void)state;
    /* With a cgroup namespace the path is "/"; without one, a path that is not mounted. */
    put("fs/cpu.max", "200000 100000\n");
    put("cgroup", "0::/\n");
    assert_int_equal(quota(), 2);
    put("cgroup", "0::/kubepods.slice/pod-1/cri-containerd-2.scope\n");
    assert_int_equal(quota(), 2);
}

static void test_cpus_quota_v1(void **state)
{
    (void)state;
    put("cgroup", "4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n");
    put("fs/cpu/cpu.cfs_quota_us", "-1\n");
    put("fs/cpu/cpu.cfs_period_us", "100000\n");
    assert_int_equal(quota(), 0);
    put("fs/cpu/cpu.cfs_quota_us", "350000\n"); /* docker --cpus 3.5, seen at the root */
    assert_int_equal(quota(), 4);
    put("fs/cpu/docker/abc/cpu.cfs_quota_us", "100000\n");
    put("fs/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
    assert_int_equal(quota(), 1);
}

static void test_cpus_quota_without_proc_file(void **state)
{
    (void)state;
    put("fs/cpu.max", "100000 100000\n");
    assert_int_equal(quota(), 0); /* no "cgroup" file: nothing known */
}

static void test_cpus_available_is_at_least_one(void **state)
{
    (void)state;
    assert_true(tally_cpus_available() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpus_parse_max),
        cmocka_unit_test(test_cpus_parse_max_reads_only_len_bytes),
        cmocka_unit_test(test_cpus_parse_cfs),
        cmocka_unit_test(test_cpus_cgroup_path),
        cmocka_unit_test(test_cpus_cgroup_path_too_long),
        cmocka_unit_test(test_cpus_fewest),
        cmocka_unit_test_setup_teardown(test_cpus_quota_v2_tightest_on_the_path, make_tree,
                                        remove_tree),
        cmocka_unit_test_setup_teardown(test_cpus_quota_v2_container_sees_its_own_root, make_tree,
                                        remove_tree),
        cmocka_unit_test_setup_teardown(test_cpus_quota_v1, make_tree, remove_tree),
        cmocka_unit_test_setup_teardown(test_cpus_quota_without_proc_file, make_tree, remove_tree),
        cmocka_unit_test(test_cpus_available_is_at_least_one),
    };

    return cmocka_run_group_tests_name("cpus", tests, NULL, NULL);
}
