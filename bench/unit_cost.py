#!/usr/bin/env python3
"""unit_cost.py -- where Redis's CPU goes per event: one node against a Redis Cluster master,
per write unit and per command (standard library only; needs redis-server, redis-cli and wrk,
which bench/run.sh installs).

  bench/unit_cost.py [--tallyd PATH] [--duration S] [--calls N] [--perf]

1. Load. For each target -- one node on the direct path (--fold-interval 0), one node with the
   journal (the default), a cluster of 3 masters -- a fresh tallyd takes one view per POST from
   wrk for S seconds (10,000 articles, 64 connections, --view-window 0, as bench/capacity.py's
   CPU runs). Per event: tallyd's CPU and read/write system calls (/proc), Redis's CPU summed
   over the masters (INFO cpu), the write units (FCALL), and every command Redis ran, those the
   functions ran included (INFO commandstats after CONFIG RESETSTAT), with its µs per call.
2. Units. A few write units the collector sent during the cluster run (one view each) are
   caught with MONITOR, then sent again N times each (with a new attempt marker, the fence in
   the future and no expiry to set), pipelined, to a standalone Redis and to the cluster master
   that owns their slot, in variants that split the cost: the unit as sent; with only the keys a
   view touches declared; with only its attempt marker declared; a function that does nothing,
   with the same keys and arguments, with one key, with nothing; PING. Then what a lane-wide
   journal append would cost: XADD of a unit's text (1, 16 and 64 events) to one stream, and a
   function that appends it and sets the unit's attempt marker. Figures are Redis's main-thread
   CPU (INFO cpu) per call, and per event where a call carries several.
   With --perf, `perf record` samples the master (and the standalone Redis) while the unit as
   sent runs, and the top symbols are printed.

Every process is started on free loopback ports and stopped by its PID. Prints Markdown.
"""
import argparse
import itertools
import os
import re
import shutil
import socket
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


def print_load(rows):
    print("## Per event under load (one view per POST, 10,000 articles, 64 connections)\n")
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
          "includes the commands it ran):\n")
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


def unit_rows(a, unit, single, master, pids):
    u = unit
    view_keys = [k for k in u.keys if not OTHER_METRIC.search(k)]
    one = u.keys[:1]
    text1 = b"%s %s 1 1 0123456789abcdef 0 0 0 0" % (u.argv[14] if len(u.argv) > 14 else b"00",
                                                     b"news/2026/article-1234")
    marker = u.keys[0]
    journal = marker.split(b"}")[0] + b"}j:lane"
    variants = [
        ("apply, every key declared (as sent: %d keys)" % len(u.keys), lambda i: u.call(i), 1),
        ("apply, the keys a view touches declared (%d)" % len(view_keys),
         lambda i: u.call(i, view_keys), 1),
        ("apply, only the attempt marker declared", lambda i: u.call(i, one), 1),
        ("no-op function, the unit's keys and arguments",
         lambda i: u.call(i, name="cost_noop"), 1),
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
    rows = []
    for what, make, events in variants:
        cells = []
        for port, pid, tag in ((single, pids[0], "single"), (master, pids[1], "master")):
            perf = None
            if a.perf and what.startswith("apply, every"):
                perf = os.path.join(a.work, "perf-%s.data" % tag)
            us = [run_calls(port, make, a.calls, events, pid, perf if k == 0 else None)
                  for k in range(a.repeat)]
            cells.append((min(x[0] for x in us), min(x[1] for x in us)))
            if perf:
                cells[-1] = cells[-1] + (perf_top(perf),)
        rows.append((what, events, cells))
    return rows


def inner_stats(port, unit, n):
    reset([port])
    run_calls(port, lambda i: unit.call(i), n)
    r = Redis(port)
    _, s = bench.parse_info_stats(r.command("INFO", "commandstats").decode())
    r.close()
    return {k: v for k, v in s.items() if k not in HARNESS}


def print_units(rows, unit, inner):
    print("## One write unit of one view, sent again %s times (best of %d)\n" % ("{:,}".format(
        ARGS.calls), ARGS.repeat))
    print("Redis main-thread CPU per call (and per event where a call carries several):\n")
    print("| call | standalone Redis µs | cluster master µs | master − standalone |")
    print("|---|---:|---:|---:|")
    for what, events, cells in rows:
        s, m = cells[0], cells[1]
        if events == 1:
            print("| %s | %.2f | %.2f | %+.2f |" % (what, s[0], m[0], m[0] - s[0]))
        else:
            print("| %s | %.2f (%.2f per event) | %.2f (%.2f per event) | %+.2f per event |"
                  % (what, s[0], s[1], m[0], m[1], m[1] - s[1]))
    print("\nThe commands one unit ran (commandstats of %d calls; µs per call):\n" % ARGS.calls)
    print("| command | standalone: calls per unit × µs | master: calls per unit × µs |")
    print("|---|---:|---:|")
    for k in sorted(set(inner[0]) | set(inner[1]), key=lambda k: -inner[1].get(k, (0, 0))[1]):
        cells = []
        for s in inner:
            c = s.get(k)
            cells.append("%.2f × %.2f" % (c[0] / ARGS.calls, c[1] / c[0]) if c else "")
        print("| %s | %s |" % (k, " | ".join(cells)))
    for what, events, cells in rows:
        for tag, c in zip(("standalone Redis", "cluster master"), cells):
            if len(c) > 2:
                print("\n`perf` of the %s while units as sent ran (self time, symbols over 1.5 %%):"
                      "\n\n```\n%s\n```" % (tag, "\n".join(c[2])))
    print("\nA unit as captured: its keys, then its arguments (fence and fresh as replayed):"
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
    p.add_argument("--calls", type=int, default=20000, help="calls of each unit variant")
    p.add_argument("--repeat", type=int, default=3, help="runs of each variant (the best kept)")
    p.add_argument("--perf", action="store_true", help="perf record the Redis servers")
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
        rows = []
        if not a.skip_load:
            single = ["--redis", "redis://127.0.0.1:%d/0" % sport]
            rows.append(("one node, direct", load_run(a, a.tallyd, a.work, single + [
                "--fold-interval", "0"], [sport])))
            Redis(sport).command("FLUSHALL")
            rows.append(("one node, journal", load_run(a, a.tallyd, a.work, single, [sport])))
            Redis(sport).command("FLUSHALL")
        cl = load_run(a, a.tallyd, a.work,
                      ["--redis-cluster", ",".join("127.0.0.1:%d" % q for q in cports)],
                      cports, catch=cports[0])
        rows.append(("cluster, 3 masters", cl))
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
        urows = unit_rows(a, unit, sport, master, (sproc.pid, mpid))
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
    print_units(urows, unit, inner)


if __name__ == "__main__":
    main()
