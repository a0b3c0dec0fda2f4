#!/usr/bin/env python3
"""fold_count.py -- what counting a fold's records costs Redis, per record, apart from the
rest of the fold (its check of the journal, the trim, the staging): versions of the scripts
side by side, calls alternating.

  fold_count.py FILE LIB [LIB...] [--calls 20] [--rounds 20] [--chunk] [--stub] [--hold S]

FILE is a merged fold captured by `fold_replay.py capture`; each LIB a function library as
cmake/functions.cmake writes it (BUILD/tally_functions.lua). On a quiet private redis-server,
each LIB is loaded with one more function that counts what the fold carries with that
library's own code -- counter_new(), count_merged() (or, with --chunk, count_chunk() of its
first staged chunk, the list of keys that may be new passed as a staged chunk's call passes
it), counter_finish() -- and the fold's keys are restored once (the counts then grow from call
to call: the steady state of busy articles). For ROUNDS rounds, the LIBs in turn (the order
reversed every other round) run CALLS calls each, pipelined. Prints per LIB, per record (of
the fold's own records, or of the chunk's): the FCALL's time (least and median of the rounds,
from INFO commandstats), the script's own time (the FCALL's less its commands') and the
commands per record. --stub answers every command with a Lua function instead (0): Lua
alone (what a version does with an answer outside c.call is counted, inside it is not:
compare versions alike there). --hold S prints Redis's pid and waits S seconds before
measuring (for `perf record -p`).

Times are as Redis measures them: on a shared machine compare versions within one run.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from capacity import Redis, start_redis, stop  # noqa: E402
from fold_replay import records_of  # noqa: E402

COUNT = ("local c = counter_new(ARGV[1], model_of(ARGV[2]), ARGV[11], ARGV[10], KEEP) STUB "
         "WHAT local e, t = counter_finish(c) return c.errors")


def records_in(argv, pos):
    """The records in the merged fold's ARGV from POS (0-based) on (see records_of)."""
    n = records_of(argv, pos)
    if n is None:
        sys.exit("fold_count.py: cannot read the fold's records")
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("libs", nargs="+")
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--chunk", action="store_true",
                   help="count the fold's first staged chunk instead of its records")
    p.add_argument("--stub", action="store_true",
                   help="answer every command with a Lua function: Lua alone")
    p.add_argument("--hold", type=float, default=0)
    a = p.parse_args()
    with open(a.file) as fh:
        cap = json.load(fh)
    args = [bytes.fromhex(x) for x in cap["args"]]
    keys = [(bytes.fromhex(k), ttl, bytes.fromhex(d)) for k, ttl, d in cap["keys"]]
    argv = args[3 + int(args[2]):]
    if len(argv) < 12 or len(argv[9]) != 10:
        sys.exit("fold_count.py: a merged fold with its hour and fresh list is needed")
    chunks = int(argv[11])
    if a.chunk:
        if chunks == 0:
            sys.exit("fold_count.py: the fold staged no chunk")
        n = records_in(argv[12].split(b"\n"), 0)
        what = "count_chunk(c, ARGV[13])"
    else:
        n = records_in(argv, 12 + chunks)
        what = "count_merged(c, ARGV, %d)" % (13 + chunks)
    body = (COUNT.replace("KEEP", "true" if a.chunk else "nil")
            .replace("STUB", "c.call = function() return 0 end" if a.stub else "")
            .replace("WHAT", what))
    work = tempfile.mkdtemp(prefix="fold-count.")
    res, names = {}, []
    try:
        port, rp = start_redis(work, "redis")
        try:
            r = Redis(port)
            for i, lib in enumerate(a.libs):
                with open(lib) as fh:
                    first, rest = fh.read().split("\n", 1)
                name = "count_%d" % i
                # A library of its own name, so that one LIB may be given twice.
                r.command("FUNCTION", "LOAD", "%sc%d\n%s\nredis.register_function{"
                          "function_name = '%s', callback = function(KEYS, ARGV) %s end, "
                          "flags = {'allow-cross-slot-keys'}}\n"
                          % (first.strip(), i, rest, name, body))
                names.append(name)
                res[name] = []
            r.command("CONFIG", "SET", "slowlog-log-slower-than", "-1")
            for k, ttl, d in keys:
                r.command("RESTORE", k, ttl, d, "REPLACE")
            for name in names:  # a first call warms Redis up
                r.command("FCALL", name, 0, *argv)
            if a.hold:
                print("redis-server pid %d" % rp.pid, flush=True)
                time.sleep(a.hold)
            for rnd in range(a.rounds):
                for name in names if rnd % 2 == 0 else names[::-1]:
                    r.command("CONFIG", "RESETSTAT")
                    for _ in range(a.calls):
                        r.send("FCALL", name, 0, *argv)
                    for _ in range(a.calls):
                        r.read()
                    fcall = inner = cmds = 0
                    for k, v in r.info("commandstats").items():
                        m = dict(x.split("=") for x in v.split(","))
                        k = k[len("cmdstat_"):]
                        if k == "fcall":
                            fcall = int(m["usec"])
                        elif k not in ("config|resetstat", "info"):
                            inner += int(m["usec"])
                            cmds += int(m["calls"])
                    per = float(a.calls * n)
                    res[name].append((fcall / per, (fcall - inner) / per, cmds / per))
            r.close()
        finally:
            stop(rp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("%d records (%s), %d calls x %d rounds per library%s"
          % (n, "its first staged chunk" if a.chunk else "the fold's own", a.calls, a.rounds,
             ", commands stubbed" if a.stub else ""))
    for name, lib in zip(names, a.libs):
        fc = [x[0] for x in res[name]]
        own = [x[1] for x in res[name]]
        print("%s: FCALL us per record least %.3f median %.3f; own least %.3f median %.3f; "
              "commands per record %.3f"
              % (lib, min(fc), statistics.median(fc), min(own), statistics.median(own),
                 res[name][0][2]))


if __name__ == "__main__":
    main()
