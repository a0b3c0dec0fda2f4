/* cpus.h -- how many CPUs this process may use: the default of --threads.
 *
 * The fewest of: the online cores, the affinity mask (sched_getaffinity: taskset, cpusets,
 * Kubernetes' static CPU manager) and the CPU quota of the cgroup (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us: docker --cpus, Kubernetes limits, systemd CPUQuota=),
 * a quota rounded up to whole CPUs. The parsers are pure; tally_cpus_available() reads the
 * files. */
#ifndef TALLY_CPUS_H
#define TALLY_CPUS_H

#include <stddef.h>

/* The CPUs allowed by a cgroup v2 cpu.max, TEXT of LEN bytes ("$MAX $PERIOD", a newline
 * allowed at the end; $MAX is "max" for no limit): $MAX / $PERIOD rounded up, at least 1, in
 * *CPUS, or 0 there when there is no limit. Returns 0, or TALLY_EINVAL (*CPUS untouched) when
 * TEXT is not that. */
int tally_cpus_parse_max(const char *text, size_t len, unsigned *cpus);

/* The same from cgroup v1: QUOTA is cpu.cfs_quota_us ("-1": no limit), PERIOD is
 * cpu.cfs_period_us; both NUL-terminated, a newline allowed at the end. */
int tally_cpus_parse_cfs(const char *quota, const char *period, unsigned *cpus);

/* The cgroup path of this process in TEXT, LEN bytes of /proc/self/cgroup: the cgroup v2 one
 * ("0::/PATH") when CONTROLLER is NULL, else the v1 hierarchy whose controller list holds
 * CONTROLLER ("4:cpu,cpuacct:/PATH"). Written to OUT (OUTLEN bytes) with its leading '/'.
 * Returns 0, or TALLY_EINVAL when there is no such line or it does not fit. */
int tally_cpus_cgroup_path(const char *text, size_t len, const char *controller, char *out,
                           size_t outlen);

/* The fewest of ONLINE, AFFINITY and QUOTA, 0 meaning unknown or unlimited; at least 1. */
unsigned tally_cpus_fewest(unsigned online, unsigned affinity, unsigned quota);

/* The CPU quota of this process's cgroup: the tightest cpu.max (v2, under CGROUP_ROOT) or
 * cpu.cfs_quota_us (v1, under CGROUP_ROOT/cpu) from its cgroup up to the root, as whole
 * CPUs; 0 when none is set or nothing can be read. PROC_CGROUP is the file naming the
 * process's cgroups. Normally "/sys/fs/cgroup" and "/proc/self/cgroup". */
unsigned tally_cpus_quota(const char *cgroup_root, const char *proc_cgroup);

/* The CPUs this process may use: tally_cpus_fewest() of the online cores, the affinity mask
 * and tally_cpus_quota("/sys/fs/cgroup", "/proc/self/cgroup"). */
unsigned tally_cpus_available(void);

#endif
