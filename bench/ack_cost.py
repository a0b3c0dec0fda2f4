#!/usr/bin/env python3
"""ack_cost.py -- what one ack (src/scripts/ack.lua) costs Redis, per call and per event,
measured apart from everything else.

  ack_cost.py --tallyd BIN [--tallyd BIN]... [--library LIB]... [--window S] [--seconds 3]
              [--calls 2000] [--rounds 3] [--dist zipf] [--perf]

For each BIN in turn: a private redis-server and BIN (--fold-interval 200, --view-window S,
--threads 2, --rate-limit 0) take one view per POST from wrk for SECONDS (10,000 articles,
64 connections; with S > 0 each request from one of 50,000 visitors, as bench/run.sh's
dedupe scenario), and MONITOR catches the acks of the run's second half. Then on one quiet
private redis-server holding every BIN's function library, the caught acks are sent again
(a new attempt marker each time, the fence far ahead, nothing to set an expiry for; with
S > 0 every visitor replaced by a new one, so each view is checked as a new visitor's in the
repeat-view hashes of its article, which exist after the first round),
pipelined 100 deep, CALLS per round and BIN, the BINs in turn for ROUNDS rounds. Per BIN,
per call and per event (the events an answer says were applied): Redis's main-thread CPU
(INFO cpu), the commands the ack ran (INFO commandstats) and the FCALL's time less theirs
(Lua, and Redis turning arguments and replies into Lua values and back). Best round and
median. Prints Markdown. --library LIB (a function library as cmake/functions.cmake writes
it, BUILD/tally_functions.lua) replays the first BIN's acks with LIB's scripts too: a variant
of the scripts needs no build of tallyd, as long as it reads the same arguments.
"""

import argparse
import os
import re
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import capacity  # noqa: E402
import unit_cost  # noqa: E402
from capacity import Redis, spawn, start_redis, stop  # noqa: E402
from fold_replay import calls_under_load, fcalls_of, tally_library  # noqa: E402


def catch(a, tallyd, work):
    rport, rp = start_redis(work, "catch-%d" % len(os.listdir(work)))
    try:
        extra = ["--threads", "2", "--rate-limit", "0", "--fold-interval", "200",
                 "--view-window", str(a.window)]
        if a.window > 0:
            extra += ["--trust-proxy", "127.0.0.1"]
        url = "redis://127.0.0.1:%d/0" % rport
        tport, tp = capacity.start_tally(tallyd, work, ["--redis", url], extra)
        lines = calls_under_load(rport, tport,
                                 "dedupe.lua" if a.window > 0 else "view_uniform.lua",
                                 a.seconds, ["articles=10000", "dist=" + a.dist,
                                             "visitors=50000"])
        stop(tp)
        code = tally_library(rport)
    finally:
        stop(rp)
    acks = fcalls_of(lines, b"_ack_")
    if not acks:
        sys.exit("ack_cost.py: no ack caught from %s" % tallyd)
    return acks, code


class Ack:
    def __init__(self, args):
        self.name = args[0]
        n = int(args[1])
        self.keys = list(args[2:2 + n])
        self.argv = list(args[2 + n:])
        self.argv[5] = b"999999999999999"  # the fence: far ahead
        self.argv[6] = b""                 # fresh: no expiry to set (the steady state)


SEQ = [0]
VISITOR = re.compile(rb"^[0-9a-f]{16}$")


def replay_round(port, acks, calls):
    r = Redis(port)
    r.command("CONFIG", "RESETSTAT")
    i0 = r.info("cpu")
    cpu0 = float(i0["used_cpu_sys_main_thread"]) + float(i0["used_cpu_user_main_thread"])
    events, done = 0, 0
    while done < calls:
        k = min(100, calls - done)
        for j in range(done, done + k):
            u = acks[j % len(acks)]
            SEQ[0] += 1
            keys = [u.keys[0] + b"-r%d" % SEQ[0]] + u.keys[1:]
            argv = u.argv
            if int(argv[1]) > 0:  # every visitor new (the articles' hashes are not)
                argv = [b"%016x" % random.getrandbits(64) if VISITOR.match(x) else x
                        for x in argv]
            r.send("FCALL", u.name, len(keys), *keys, *argv)
        for _ in range(k):
            ans = r.read()
            for seg in ans[2:-2]:
                events += seg[1] + seg[4]  # accepted after repeats + repeats
        done += k
    i1 = r.info("cpu")
    cpu = float(i1["used_cpu_sys_main_thread"]) + float(i1["used_cpu_user_main_thread"]) - cpu0
    _, st = bench.parse_info_stats(r.command("INFO", "commandstats").decode())
    for key in r.command("KEYS", "*{00}q:*") or []:
        r.command("DEL", key)
    r.close()
    st = {k: v for k, v in st.items() if k not in ("info", "config", "keys", "del")}
    fcall = st.pop("fcall", [0, 0])
    cmd_us = sum(v[1] for v in st.values())
    return {"cpu_call": cpu * 1e6 / calls, "cpu_event": cpu * 1e6 / max(events, 1),
            "events": events / calls, "cmds": sum(v[0] for v in st.values()) / calls,
            "own_call": (fcall[1] - cmd_us) / calls, "fcall_call": fcall[1] / calls,
            "stats": {k: v[0] / calls for k, v in st.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tallyd", action="append", required=True)
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dist", default="zipf")
    ap.add_argument("--library", action="append", default=[],
                    help="a function library file (BUILD/tally_functions.lua) to replay the "
                         "first BIN's acks with")
    ap.add_argument("--perf", action="store_true",
                    help="perf profiles of Redis replaying each version's acks (last round)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ack_cost.")
    try:
        caught = [catch(a, t, work) for t in a.tallyd]
        for lib in a.library:
            with open(lib, "rb") as f:
                code = f.read()
            v = re.search(rb"function_name = 'tally_ack_([0-9a-f]+)'", code).group(1)
            acks = [[b"tally_ack_" + v] + x[1:] for x in caught[0][0]]
            caught.append((acks, code))
        names = a.tallyd + a.library
        port, rp = start_redis(work, "replay")
        r = Redis(port)
        for _, code in caught:
            r.command("FUNCTION", "LOAD", "REPLACE", code)
        r.close()
        rows = [[] for _ in names]
        tops = []
        for k in range(a.rounds):
            for i, (acks, _) in enumerate(caught):
                prof = None
                if a.perf and k == a.rounds - 1:
                    path = os.path.join(work, "perf-%d.data" % i)
                    prof = subprocess.Popen(["perf", "record", "-q", "-F", "4000", "-o", path,
                                             "-p", str(rp.pid)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    time.sleep(0.3)
                rows[i].append(replay_round(port, [Ack(x) for x in acks], a.calls))
                if prof is not None:
                    prof.send_signal(2)
                    prof.wait()
                    tops.append(unit_cost.perf_top(path, 40))
        stop(rp)
    finally:
        for p in capacity.PROCS:
            stop(p)
    print("| tallyd | acks caught | events per ack | Redis CPU µs per ack (best, median) | "
          "per event | commands per ack | FCALL µs per ack | its own (Lua) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t, (acks, _), rs in zip(names, caught, rows):
        best = min(rs, key=lambda x: x["cpu_call"])
        med = statistics.median(x["cpu_call"] for x in rs)
        print("| %s | %d | %.1f | %.1f, %.1f | %.2f, %.2f | %.1f | %.1f | %.1f |"
              % (t, len(acks), best["events"], best["cpu_call"], med, best["cpu_event"],
                 statistics.median(x["cpu_event"] for x in rs), best["cmds"],
                 best["fcall_call"], best["own_call"]))
    print()
    for t, rs in zip(names, rows):
        print("%s: %s" % (t, ", ".join("%s %.2f" % kv for kv in
                                         sorted(rs[0]["stats"].items(), key=lambda kv: -kv[1]))))
    for t, top in zip(names, tops):
        print("\n`perf` of Redis, %s:\n\n```\n%s\n```" % (t, "\n".join(top)))


if __name__ == "__main__":
    main()
