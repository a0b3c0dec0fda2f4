#!/usr/bin/env python3
"""mark_cost.py -- what one mark (src/scripts/mark.lua: on a Redis Cluster with a repeat-view
window, a journaled write's views checked in their bucket first) costs Redis per call, measured
apart from everything else.

  mark_cost.py --tallyd BIN [--tallyd BIN]... [--seconds 3] [--calls 4000] [--rounds 5]

For each BIN in turn: a cluster of one master (every slot on it) and BIN (--view-window 1800,
--trust-proxy 127.0.0.1, --threads 2, --rate-limit 0) take one view per POST from wrk for
SECONDS (bench/lua/dedupe.lua: 10,000 Zipf-drawn articles, 64 connections, each request from
one of 50,000 visitors), and MONITOR catches the marks of the run's second half. Then on one
quiet standalone redis-server holding every BIN's function library, the caught marks are sent
again, CALLS a round per BIN, pipelined 200 deep, the BINs in turn for ROUNDS rounds: each
with a new attempt id and new visitors (so each view is a new visitor's, checked against the
article's hashes and remembered), the fence far ahead. Beside each, the same calls to the
library's version function, which returns at once: what any call with those keys and
arguments costs. Per BIN: Redis's main-thread CPU per call (INFO cpu), best round and median,
and per view. Prints Markdown.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import capacity  # noqa: E402
from capacity import Redis, start_redis, stop  # noqa: E402
from fold_replay import calls_under_load, fcalls_of, tally_library  # noqa: E402

VISITOR = re.compile(rb"^[0-9a-f]{16}$")
FENCE = re.compile(rb"^[0-9]{15}$")
ATTEMPT = re.compile(rb"-[0-9]+$")


def catch(a, tallyd, work):
    """BIN's marks (FCALL arguments after FCALL) and its function library's code."""
    nodes = capacity.start_cluster(work + "/c%d" % len(os.listdir(work)), 1)
    port = nodes[0][0]
    try:
        extra = ["--threads", "2", "--rate-limit", "0", "--view-window", "1800",
                 "--trust-proxy", "127.0.0.1"]
        tport, tp = capacity.start_tally(tallyd, work, ["--redis-cluster",
                                                        "127.0.0.1:%d" % port], extra)
        time.sleep(2.0)  # the journals open (their heartbeats): before, writes count at once
        lines = calls_under_load(port, tport, "dedupe.lua", a.seconds,
                                 ["articles=10000", "dist=zipf", "visitors=50000"])
        stop(tp)
        code = tally_library(port)
    finally:
        for _, p in nodes:
            stop(p)
    marks = fcalls_of(lines, b"_mark_")
    if not marks:
        sys.exit("mark_cost.py: no mark caught from %s" % tallyd)
    return marks, code


SEQ = [0]


def replay_round(port, marks, calls, noop):
    """CALLS of MARKS (or, NOOP, of the version function with their keys and arguments):
    Redis's CPU per call and the views a call carried."""
    r = Redis(port)
    i0 = r.info("cpu")
    cpu0 = float(i0["used_cpu_sys_main_thread"]) + float(i0["used_cpu_user_main_thread"])
    views, done = 0, 0
    while done < calls:
        k = min(200, calls - done)
        for j in range(done, done + k):
            name, n, *rest = marks[j % len(marks)]
            SEQ[0] += 1
            keys = [ATTEMPT.sub(b"-%d" % (10**9 + SEQ[0]), rest[0])] + rest[1:int(n)]
            argv = []
            for x in rest[int(n):]:
                if VISITOR.match(x):
                    x = b"%016x" % (0x7000000000000000 + SEQ[0] * 64 + len(argv))
                    views += 1
                elif FENCE.match(x):
                    x = b"999999999999999"
                argv.append(x)
            if noop:
                name = b"tally_version_" + name.rsplit(b"_", 1)[1]
            r.send("FCALL", name, len(keys), *keys, *argv)
        for _ in range(k):
            r.read()
        done += k
    i1 = r.info("cpu")
    cpu = float(i1["used_cpu_sys_main_thread"]) + float(i1["used_cpu_user_main_thread"]) - cpu0
    r.close()
    return cpu * 1e6 / calls, views / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tallyd", action="append", required=True)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mark_cost.")
    try:
        caught = [catch(a, t, work) for t in a.tallyd]
        port, rp = start_redis(work, "replay")
        r = Redis(port)
        for _, code in caught:
            r.command("FUNCTION", "LOAD", "REPLACE", code)
        r.close()
        rows = [([], []) for _ in caught]
        views = [0.0 for _ in caught]
        for _ in range(a.rounds):
            for i, (marks, _) in enumerate(caught):
                for noop in (False, True):
                    cpu, views[i] = replay_round(port, marks, a.calls, noop)
                    rows[i][noop].append(cpu)
        stop(rp)
    finally:
        for p in capacity.PROCS:
            stop(p)
    print("| tallyd | marks caught | views per mark | Redis CPU µs per mark (best, median) | "
          "per view | the same call to a function that returns (best, median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for t, (marks, _), (mark, noop), v in zip(a.tallyd, caught, rows, views):
        print("| %s | %d | %.2f | %.1f, %.1f | %.1f | %.1f, %.1f |"
              % (t, len(marks), v, min(mark), statistics.median(mark), min(mark) / max(v, 1e-9),
                 min(noop), statistics.median(noop)))


if __name__ == "__main__":
    main()
