#!/usr/bin/env python3
"""unit_cost.py -- where Redis's CPU goes per event: one node against a Redis Cluster master,
per write unit and per command (standard library only; needs redis-server, redis-cli and wrk,
which bench/run.sh installs; perf for --perf).

  bench/unit_cost.py [--tallyd PATH] [--duration S] [--rounds N] [--compare PATH]
                     [--calls N] [--repeat N] [--perf] [--skip-load]

1. Load. For each target -- one node on the direct path (--fold-interval 0), one node with the
   journal (the default), a cluster of 3 masters -- a fresh tallyd takes one view per POST from
   wrk for S seconds (10,000 articles, 64 connections, --view-window 0, as bench/capacity.py's
   CPU runs), N rounds (with --compare, a second tallyd in turn with the first). Per event:
   tallyd's CPU and read/write system calls (/proc), Redis's main-thread CPU summed over the
   masters (INFO cpu), the reads and writes Redis processed (INFO stats), the write units
   (FCALL), and every command Redis ran, those the functions ran included (INFO commandstats
   after CONFIG RESETSTAT), with its µs per call (wall time: inflated when the machine is
   busy; the CPU columns are not).
2. Units. A write unit of one view the collector sent during the cluster run's warm-up is
   caught with MONITOR, then sent again (a new attempt marker each time, the fence in the
   future, no expiry to set), pipelined 200 deep, to a standalone Redis and to the cluster
   master that owns its slot, in variants that split its cost: with every bucket key declared
   (as collectors did before), with the keys a view touches, with its attempt marker alone; a
   function that does nothing, with those keys and the unit's arguments, with one key, with
   nothing; PING; the attempt marker's SET alone; the same unit carrying 2 and 16 views (what
   one more event costs inside a unit). Then what a lane-wide journal append would cost: XADD
   of a unit's text (1, 16 and 64 events) to one stream, and a function that appends it and
   sets the unit's attempt marker. Figures: Redis's main-thread CPU (INFO cpu) per call -- the
   best of --repeat rounds, the median too -- and per event where a call carries several.
   Rounds go over every variant in turn, so a burst of load from elsewhere falls on all.
   With --perf, `perf record` samples tallyd in the load runs and both Redis servers while the
   unit runs, and the top symbols are printed.

Every process is started on free loopback ports and stopped by its PID. Prints Markdown.
"""
import argparse
import itertools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import bench
import capacity
from capacity import Redis

NOOP_LIB = """#!lua name=tally_cost_probe
redis.register_function{function_name = 'cost_noop', callback = function(KEYS, ARGV)
    return 1
end, flags = {'allow-cross-slot-keys'}}
redis.register_function{function_name = 'cost_append', callback = function(KEYS, ARGV)
    local id = redis.call('XADD', KEYS[1], '*', 'u', ARGV[1])
    redis.call('SET', KEYS[2], id, 'EX', 600)
    return id
end}
"""

HARNESS = {"info", "config", "monitor", "cluster", "ping", "function", "client"}


def net_ops(ports):
    """Reads and writes Redis processed (INFO stats), summed over PORTS."""
    n = 0
    for p in ports:
        r = Redis(p)
        i = r.info("stats")
        r.close()
        n += int(i["total_reads_processed"]) + int(i["total_writes_processed"])
    return n


def main_cpu(r):
    i = r.info("cpu")
    return float(i["used_cpu_sys_main_thread"]) + float(i["used_cpu_user_main_thread"])


def proc_io(pid):
    out = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out["syscr"] + out["syscw"]


# ---------------------------------------------------------------- 1. load


def commandstats(ports):
    stats = {}
    for p in ports:
        r = Redis(p)
        _, s = bench.parse_info_stats(r.command("INFO", "commandstats").decode())
        r.close()
        for k, (calls, usec) in s.items():
            c = stats.setdefault(k, [0, 0])
            c[0] += calls
            c[1] += usec
    return stats


def reset(ports):
    for p in ports:
        r = Redis(p)
        r.command("CONFIG", "RESETSTAT")
        r.close()


def monitor_units(port, seconds, want):
    """FCALLs of the write function seen on PORT within SECONDS (at most WANT), as lists of
    bytes."""
    r = Redis(port)
    r.sock.settimeout(seconds + 5)
    r.command("MONITOR")
    out, end = [], time.time() + seconds
    while time.time() < end and len(out) < want:
        line = r.f.readline()
        m = re.match(rb'^\+[\d.]+ \[[^\]]*\] (.*)\r\n$', line)
        if not m:
            continue
        args = parse_monitor(m.group(1))
        if len(args) > 3 and args[0].upper() == b"FCALL" and b"_apply_" in args[1]:
            out.append(args)
    r.close()
    return out


def parse_monitor(s):
    """MONITOR's quoted arguments ("a" "b\\x00") as bytes."""
    args, i = [], 0
    while i < len(s):
        if s[i:i + 1] != b'"':
            i += 1
            continue
        i += 1
        cur = bytearray()
        while s[i:i + 1] != b'"':
            c = s[i:i + 1]
            if c == b"\\":
                n = s[i + 1:i + 2]
                if n == b"x":
                    cur.append(int(s[i + 2:i + 4], 16))
                    i += 4
                    continue
                cur += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a",
                        b"b": b"\b"}.get(n, n)
                i += 2
                continue
            cur += c
            i += 1
        args.append(bytes(cur))
        i += 1
    return args


def load_run(a, tallyd, work, redis_args, ports, catch=None):
    tport, tally = capacity.start_tally(tallyd, work, redis_args,
                                        ["--threads", "2", "--rate-limit", "0",
                                         "--view-window", "0"] + a.extra)
    units = []
    if catch is not None:  # during the warm-up: MONITOR costs the master
        th = threading.Thread(target=lambda: units.extend(monitor_units(catch, 1.0, 50)))
        th.start()
    capacity.wrk_run(tport, 2, 10000)
    if catch is not None:
        th.join()
    reset(ports)
    t0, s0 = capacity.cpu_seconds(tally.pid), proc_io(tally.pid)
    r0, n0 = sum(main_cpu(Redis(p)) for p in ports), net_ops(ports)
    prof = None
    if a.perf:
        path = os.path.join(a.work, "perf-tallyd-%d.data" % tport)
        prof = subprocess.Popen(["perf", "record", "-q", "-F", "1000", "-o", path, "-p",
                                 str(tally.pid)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    w = capacity.wrk_run(tport, a.duration, 10000)
    if prof is not None:
        prof.send_signal(2)
        prof.wait()
    t1, s1 = capacity.cpu_seconds(tally.pid), proc_io(tally.pid)
    r1, n1 = sum(main_cpu(Redis(p)) for p in ports), net_ops(ports)
    stats = commandstats(ports)
    capacity.stop(tally)
    ev = w["accepted"]
    if ev <= 0 or w["main_sent"] != w["main_recv"]:
        sys.exit("unit_cost.py: the load run did not complete: %r" % w)
    return {"events": ev, "tally_us": (t1 - t0) * 1e6 / ev, "redis_us": (r1 - r0) * 1e6 / ev,
            "syscalls": (s1 - s0) / ev, "net": (n1 - n0) / ev, "stats": stats, "units": units,
            "perf": perf_top(path, 25) if prof is not None else None}


def print_medians(rows):
    groups = {}
    for name, m in rows:
        groups.setdefault(name, []).append(m)
    if all(len(g) == 1 for g in groups.values()):
        return
    print("Medians over the rounds (each run's figures below):\n")
    print("| target | runs | tallyd CPU µs per event | Redis CPU µs per event |")
    print("|---|---:|---:|---:|")
    for name, g in groups.items():
        t = sorted(m["tally_us"] for m in g)
        r = sorted(m["redis_us"] for m in g)
        print("| %s | %d | %.1f (%s) | %.1f (%s) |"
              % (name, len(g), statistics.median(t), ", ".join("%.1f" % x for x in t),
                 statistics.median(r), ", ".join("%.1f" % x for x in r)))
    print()


def print_load(rows):
    print("## Per event under load (one view per POST, 10,000 articles, 64 connections)\n")
    print_medians(rows)
    print("| target | events | tallyd CPU µs | tallyd read+write syscalls | Redis CPU µs "
          "(main threads) | Redis reads+writes | FCALLs | commands Redis ran | µs per FCALL (its commands "
          "included) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in rows:
        st = {k: v for k, v in m["stats"].items() if k not in HARNESS}
        fc = sum(v[0] for k, v in st.items() if k.startswith("fcall"))
        fu = sum(v[1] for k, v in st.items() if k.startswith("fcall"))
        cmds = sum(v[0] for v in st.values())
        print("| %s | %d | %.1f | %.2f | %.1f | %.2f | %.3f | %.2f | %.1f |"
              % (name, m["events"], m["tally_us"], m["syscalls"], m["redis_us"], m["net"],
                 fc / m["events"], cmds / m["events"], fu / max(fc, 1)))
    print("\nCommands per event, and µs per call (commandstats; a function's own line "
          "includes the commands it ran; the first round):\n")
    seen = set()
    rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
    names = sorted({k for _, m in rows for k in m["stats"] if k not in HARNESS},
                   key=lambda k: -max(m["stats"].get(k, [0, 0])[0] / m["events"]
                                      for _, m in rows))
    print("| command | " + " | ".join(n for n, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for k in names:
        cells = []
        for _, m in rows:
            c = m["stats"].get(k)
            cells.append("%.3f × %.2f µs" % (c[0] / m["events"], c[1] / c[0]) if c else "")
        print("| %s | %s |" % (k, " | ".join(cells)))
    for name, m in rows:
        if m.get("perf"):
            print("\n`perf` of tallyd, %s (self time, symbols over 1.5 %%):\n\n```\n%s\n```"
                  % (name, "\n".join(m["perf"])))
    print()


# ---------------------------------------------------------------- 2. units


def slot_owner(ports, key):
    r = Redis(ports[0])
    slot = r.command("CLUSTER", "KEYSLOT", key)
    shards = r.command("CLUSTER", "SLOTS")
    r.close()
    for s in shards:
        if s[0] <= slot <= s[1]:
            return s[2][1]
    raise RuntimeError("no owner of slot %d" % slot)


class Unit:
    """A captured FCALL of the write function: name, keys, argv."""

    def __init__(self, args):
        self.name = args[1]
        n = int(args[2])
        self.keys = args[3:3 + n]
        self.argv = list(args[3 + n:])
        self.argv[5] = b"999999999999999"  # the fence: far ahead
        self.argv[6] = b""                 # fresh: no expiry to set (the steady state)
        self.events = 1

    def call(self, i, keys=None, name=None, argv=None):
        keys = list(self.keys if keys is None else keys)
        if keys:
            keys[0] = keys[0] + b"-r%d" % next(SEQ)  # a new attempt marker, same slot
        argv = self.argv if argv is None else argv
        return ["FCALL", name or self.name, len(keys)] + keys + argv


# Keys of metrics a view never touches: shares, comments, engaged, reads.
OTHER_METRIC = re.compile(rb"\}[dht]:(shares|comments|engaged|reads)(:|$)")


def run_calls(port, make, n, events=1, pid=None, perf=None):
    """Server main-thread CPU µs per call and per event of N calls MAKE(i), pipelined."""
    r = Redis(port)
    cpu0 = main_cpu(r)
    prof = None
    if perf is not None and pid is not None:
        prof = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-o", perf, "-p",
                                 str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    done = 0
    while done < n:
        k = min(200, n - done)
        for i in range(done, done + k):
            r.send(*make(i))
        for _ in range(k):
            try:
                r.read()
            except RuntimeError as e:
                sys.exit("unit_cost.py: a replayed call failed: %s" % e)
        done += k
    if prof is not None:
        prof.send_signal(2)
        prof.wait()
    cpu = main_cpu(r) - cpu0
    r.close()
    return cpu * 1e6 / n, cpu * 1e6 / (n * events)


def perf_top(path, n=20):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,symbol",
                          "--stdio", "-g", "none", "--percent-limit", "1.5"],
                         capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.strip() and not l.startswith("#")]
    return lines[:n]


METRICS = ("views", "visitors", "shares", "comments", "engaged", "reads")


def every_key(unit):
    """The unit's keys with every bucket key declared, as collectors before 0.x did: each
    metric's day, hour and all-time keys and the site totals', whatever the unit counts."""
    marker = unit.keys[0]
    kp = marker[:marker.index(b"}") + 1]
    t = time.gmtime(int(unit.argv[4]))
    day, hour = time.strftime("%Y%m%d", t).encode(), time.strftime("%Y%m%d%H", t).encode()
    own = [k for k in unit.keys[1:] if k[len(kp):len(kp) + 2] in (b"a:", b"v:", b"w:", b"i:")]
    keys = [marker] + own
    for m in METRICS:
        m = m.encode()
        keys += [kp + b"d:" + m + b":" + day, kp + b"h:" + m + b":" + hour, kp + b"t:" + m]
    return keys + [kp + b"s:" + day, kp + b"s:all"]


def widened(unit, k, keys):
    """UNIT's call with its one record repeated for K articles of the same bucket, each key of
    theirs declared."""
    marker = unit.keys[0]
    kp = marker[:marker.index(b"}") + 1]
    day = time.strftime("%Y%m%d", time.gmtime(int(unit.argv[4]))).encode()
    head, rec = unit.argv[:14], unit.argv[14:]
    ids = [rec[1] + b"-%d" % j for j in range(k)]
    argv = list(head)
    argv[10] = argv[13] = b"%d" % k  # accepted, narticles
    extra = []
    for j, id_ in enumerate(ids):
        argv += [rec[0], id_] + rec[2:4] + [b"%016x" % (j + 1)] + rec[5:]
        extra += [kp + b"a:" + id_, kp + b"v:" + day + b":" + id_]
    bucket = [x for x in keys[1:] if x[len(kp):len(kp) + 2] not in (b"a:", b"v:", b"w:")]
    return unit.call(next(SEQ), [keys[0]] + extra + bucket, argv=argv)


def unit_rows(a, unit, single, master, pids):
    u = unit
    full = every_key(u)
    view_keys = [k for k in full if not OTHER_METRIC.search(k)]
    one = u.keys[:1]
    text1 = b"%s %s 1 1 0123456789abcdef 0 0 0 0" % (u.argv[14] if len(u.argv) > 14 else b"00",
                                                     b"news/2026/article-1234")
    marker = u.keys[0]
    journal = marker.split(b"}")[0] + b"}j:lane"
    variants = [
        ("apply, every bucket key declared (%d keys)" % len(full), lambda i: u.call(i, full), 1),
        ("apply, the keys a view touches declared (%d)" % len(view_keys),
         lambda i: u.call(i, view_keys), 1),
        ("apply, only the attempt marker declared", lambda i: u.call(i, one), 1),
        ("no-op function, %d keys and the unit's arguments" % len(full),
         lambda i: u.call(i, full, name="cost_noop"), 1),
        ("no-op function, %d keys and the unit's arguments" % len(view_keys),
         lambda i: u.call(i, view_keys, name="cost_noop"), 1),
        ("no-op function, the attempt marker and the unit's arguments",
         lambda i: u.call(i, one, name="cost_noop"), 1),
        ("no-op function, one key, no arguments",
         lambda i: u.call(i, one, name="cost_noop", argv=[]), 1),
        ("PING", lambda i: ["PING"], 1),
        ("SET of an attempt marker with a JSON answer, EX",
         lambda i: ["SET", marker + b"-s%d" % next(SEQ), b'["ok","",[1,1,0,0,0]]', "EX", 600], 1),
    ]
    for n in (1, 16, 64):
        text = b"\n".join([text1] * n)
        variants.append(("lane append: XADD of a %d-event unit" % n,
                         lambda i, t=text: ["XADD", journal, "*", "u", t], n))
        variants.append(("lane append: FCALL of XADD + attempt marker SET, %d events" % n,
                         lambda i, t=text: ["FCALL", "cost_append", 2, journal,
                                            marker + b"-a%d" % next(SEQ), t], n))
    # The same unit carrying K views of K articles of its bucket (one visitor each): what one
    # more event costs inside a unit, and so what a unit's fixed part is.
    for k in (2, 16):
        variants.append(("apply, %d views of %d articles in one unit" % (k, k),
                         lambda i, k=k: widened(u, k, view_keys), k))
    servers = ((single, pids[0], "single"), (master, pids[1], "master"))
    got = {(v, k): [] for v in range(len(variants)) for k in range(2)}
    tops = {}
    # Round-robin: a burst of load from elsewhere on the machine falls on every variant.
    for r in range(a.repeat):
        for v, (what, make, events) in enumerate(variants):
            for k, (port, pid, tag) in enumerate(servers):
                perf = None
                if a.perf and r == 0 and v == 1:
                    perf = os.path.join(a.work, "perf-%s.data" % tag)
                got[(v, k)].append(run_calls(port, make, a.calls, events, pid, perf))
                if perf:
                    tops[k] = perf_top(perf)
    rows = []
    for v, (what, make, events) in enumerate(variants):
        cells = []
        for k in range(2):
            runs = sorted(got[(v, k)])
            cells.append((runs[0][0], runs[0][1], runs[len(runs) // 2][0]))
        rows.append((what, events, cells))
    return rows, tops


def inner_stats(port, unit, n):
    reset([port])
    keys = [k for k in every_key(unit) if not OTHER_METRIC.search(k)]
    run_calls(port, lambda i: unit.call(i, keys), n)
    r = Redis(port)
    _, s = bench.parse_info_stats(r.command("INFO", "commandstats").decode())
    r.close()
    return {k: v for k, v in s.items() if k not in HARNESS}


def print_units(rows, tops, unit, inner):
    print("## One write unit of one view, sent again %s times, %d rounds\n"
          % ("{:,}".format(ARGS.calls), ARGS.repeat))
    print("Redis main-thread CPU per call, the best round (the median in brackets), and per "
          "event where a call carries several:\n")
    print("| call | standalone Redis µs | cluster master µs | master − standalone |")
    print("|---|---:|---:|---:|")
    for what, events, cells in rows:
        s, m = cells[0], cells[1]
        if events == 1:
            print("| %s | %.2f (%.2f) | %.2f (%.2f) | %+.2f |"
                  % (what, s[0], s[2], m[0], m[2], m[0] - s[0]))
        else:
            print("| %s | %.2f (%.2f per event) | %.2f (%.2f per event) | %+.2f per event |"
                  % (what, s[0], s[1], m[0], m[1], m[1] - s[1]))
    print("\nThe commands the unit (the keys a view touches declared) ran, from commandstats of "
          "%d calls, µs per call:\n" % ARGS.calls)
    print("| command | standalone: calls per unit × µs | master: calls per unit × µs |")
    print("|---|---:|---:|")
    for k in sorted(set(inner[0]) | set(inner[1]), key=lambda k: -inner[1].get(k, (0, 0))[1]):
        cells = []
        for s in inner:
            c = s.get(k)
            cells.append("%.2f × %.2f" % (c[0] / ARGS.calls, c[1] / c[0]) if c else "")
        print("| %s | %s |" % (k, " | ".join(cells)))
    for k, tag in enumerate(("standalone Redis", "cluster master")):
        if k in tops:
            print("\n`perf` of the %s while units ran (self time, symbols over 1.5 %%):"
                  "\n\n```\n%s\n```" % (tag, "\n".join(tops[k])))
    print("\nThe unit as captured: its keys, then its arguments (fence and fresh as replayed):"
          "\n\n```\n%s\n%s\n```\n" % (" ".join(x.decode(errors="replace") for x in unit.keys),
                                    " ".join(x.decode(errors="replace") for x in unit.argv)))


ARGS = None
SEQ = itertools.count()


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tallyd", default=os.path.join(capacity.ROOT, "build-bench", "tallyd"))
    p.add_argument("--duration", type=int, default=10, help="seconds of each load run")
    p.add_argument("--calls", type=int, default=10000, help="calls of each unit variant per round")
    p.add_argument("--repeat", type=int, default=5,
                   help="rounds over the unit variants (the best and the median shown)")
    p.add_argument("--perf", action="store_true", help="perf record the Redis servers")
    p.add_argument("--rounds", type=int, default=1, help="load runs of each target")
    p.add_argument("--compare", metavar="PATH",
                   help="a second tallyd, run in turn with the first in each round")
    p.add_argument("--name", default="this", help="the first tallyd's name in the tables")
    p.add_argument("--compare-name", default="other", help="the second tallyd's name")
    p.add_argument("--keep", action="store_true", help="keep the scratch files (perf data)")
    p.add_argument("--skip-load", action="store_true",
                   help="no load table (units are still caught during a cluster run)")
    p.add_argument("--extra", action="append", default=[], help="one more tallyd argument")
    a = ARGS = p.parse_args()
    if not os.access(a.tallyd, os.X_OK):
        sys.exit("unit_cost.py: no tallyd at %s" % a.tallyd)
    for tool in ("redis-server", "redis-cli", "wrk") + (("perf",) if a.perf else ()):
        if not shutil.which(tool):
            sys.exit("unit_cost.py: %s is missing" % tool)
    a.work = tempfile.mkdtemp(prefix="tally-unitcost.")
    started = time.time()
    try:
        sport, sproc = capacity.start_redis(a.work, "single")
        nodes = capacity.start_cluster(a.work, 3)
        cports = [q for q, _ in nodes]
        rows, cl = [], None
        binaries = [("", a.tallyd)] + ([(" [%s]" % a.compare_name, a.compare)] if a.compare else [])
        if a.compare:
            binaries[0] = (" [%s]" % a.name, a.tallyd)
        single = ["--redis", "redis://127.0.0.1:%d/0" % sport]
        cluster = ["--redis-cluster", ",".join("127.0.0.1:%d" % q for q in cports)]
        for rnd in range(a.rounds):
            for label, binary in binaries:
                if not a.skip_load:
                    rows.append(("one node, direct" + label, load_run(
                        a, binary, a.work, single + ["--fold-interval", "0"], [sport])))
                    Redis(sport).command("FLUSHALL")
                    rows.append(("one node, journal" + label,
                                 load_run(a, binary, a.work, single, [sport])))
                    Redis(sport).command("FLUSHALL")
                m = load_run(a, binary, a.work, cluster, cports,
                             catch=cports[0] if cl is None and binary == a.tallyd else None)
                rows.append(("cluster, 3 masters" + label, m))
                if cl is None and binary == a.tallyd:
                    cl = m
        units = [Unit(u) for u in cl["units"] if int(u[2]) > 1]
        if not units:
            sys.exit("unit_cost.py: no write unit caught on the cluster")
        one = [u for u in units if u.argv[13] == b"1"] or units  # one article: the usual
        unit = one[0]
        master = slot_owner(cports, unit.keys[0])
        mpid = dict(nodes)[master].pid
        # The function library on the standalone Redis, and the probe functions on both.
        capacity.load_functions(a.tallyd, ["--redis", "redis://127.0.0.1:%d/0" % sport])
        for port in (sport, master):
            Redis(port).command("FUNCTION", "LOAD", "REPLACE", NOOP_LIB)
        urows, tops = unit_rows(a, unit, sport, master, (sproc.pid, mpid))
        inner = [inner_stats(sport, unit, a.calls), inner_stats(master, unit, a.calls)]
    finally:
        for proc in capacity.PROCS:
            capacity.stop(proc)
        if a.keep:
            print("unit_cost.py: files kept in %s" % a.work, file=sys.stderr)
        else:
            shutil.rmtree(a.work, ignore_errors=True)
    print("# Redis CPU per write unit, one node and a cluster master\n")
    print("date: %s, tallyd: %s, cores: %d, wall time s: %d\n"
          % (time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), a.tallyd, os.cpu_count(),
             time.time() - started))
    if rows:
        print_load(rows)
    print_units(urows, tops, unit, inner)


if __name__ == "__main__":
    main()
