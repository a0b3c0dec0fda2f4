#!/usr/bin/env python3
"""fold_replay.py -- what one merged fold (src/scripts/merged.lua) costs Redis, per record,
measured apart from everything else.

  fold_replay.py capture --tallyd BIN --out FILE [--seconds 4] [--dist zipf] [--articles N]
                         [--script view_uniform.lua]
      Starts a private redis-server and BIN (as bench/run.sh starts the tally target), sends
      one view per POST (or what --script sends, e.g. batch20.lua) with wrk for SECONDS, and
      watches Redis with MONITOR. Picks the merged fold with the most records from the second
      half of the run (the hour's first folds are over), and writes to FILE its arguments, the
      keys it touched (DUMPed, with their time to live, as they are once every fold ran: the
      steady state of a busy article) and the function library.
  fold_replay.py replay FILE [--reps 200] [--tallyd BIN]... [--library LIB]... [--unfresh BIN]...
                                 [--unnumbered BIN]...
      Starts a quiet private redis-server and loads the captured library, or each BIN's (the
      same fold counted by other versions of the scripts: give the binaries, or the function
      libraries (--library BUILD/tally_functions.lua), before and after a
      change; --unfresh for a version from before folds took "hour fresh": it gets the fold
      without them; --unnumbered for one from before they took the numbers of the first and
      the last entry: it gets the fold without those). REPS times, for each version in turn:
      restores the keys (FLUSHALL, RESTORE), writes a journal holding the entries the fold
      names (their count, the ids, units and numbers of the first and the last, numbered
      1..count as ack.lua numbers them) and runs the FCALL. Prints per version and per record:
      the FCALL's time (median, least and mean, from INFO commandstats), the CPU time of
      Redis's main thread over the call (INFO cpu), the commands it ran and their time (INFO
      commandstats), and the script's own time (the FCALL's less its commands': Lua, and Redis
      turning arguments and replies into Lua values and back).

Times are as Redis measures them: on a shared machine compare versions within one replay
(they alternate, call by call), not across runs.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
from capacity import Redis, load_functions, spawn, start_redis, stop  # noqa: E402

PREFIX = "replay:"
TOKEN = "replay-token"
QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(rb'\\(x[0-9a-fA-F]{2}|.)', re.S)
SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}


def unquote(s):
    """A MONITOR argument's bytes (sdscatrepr's escapes undone)."""
    def one(m):
        e = m.group(1)
        if e[:1] == b"x" and len(e) == 3:
            return bytes([int(e[1:], 16)])
        return SIMPLE.get(e, e)
    return ESCAPE.sub(one, s)


def monitor_lines(port, out, stop_ev):
    """Append MONITOR's lines (bytes) to OUT until STOP_EV is set."""
    r = Redis(port)
    r.sock.settimeout(0.5)
    r.send("MONITOR")
    while not stop_ev.is_set():
        try:
            line = r.f.readline()
        except (OSError, ValueError):
            continue
        if line:
            out.append(line.rstrip(b"\r\n"))
    r.close()


def calls_under_load(port, tport, script, seconds, wrk_args):
    """wrk (bench/lua/SCRIPT, 2 threads, 64 connections, WRK_ARGS) against the tallyd at TPORT
    for SECONDS; the MONITOR lines of the Redis at PORT over up to a second of the run's
    second half."""
    lines, ev = [], threading.Event()
    wrk = subprocess.Popen(
        ["wrk", "-t", "2", "-c", "64", "-d", "%ds" % seconds, "--timeout", "5s", "-s",
         os.path.join(HERE, "lua", script), "http://127.0.0.1:%d" % tport, "--",
         "target=tally", "duration=%d" % seconds, "drain=0.5"] + list(wrk_args),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds / 2)
    th = threading.Thread(target=monitor_lines, args=(port, lines, ev))
    th.start()
    time.sleep(min(1.0, seconds / 3))
    ev.set()
    th.join()
    wrk.wait()
    return lines


def fcalls_of(lines, part):
    """The FCALLs among MONITOR's LINES of a function whose name holds PART: each its
    arguments after FCALL (the function's name, numkeys, the keys, the arguments)."""
    calls = []
    for line in lines:
        args = [unquote(x) for x in QUOTED.findall(line)]
        if len(args) > 3 and args[0].upper() == b"FCALL" and part in args[1]:
            calls.append(args[1:])
    return calls


def tally_library(port):
    """The code of the tally function library the Redis at PORT holds (None: none)."""
    for entry in Redis(port).command("FUNCTION", "LIST", "WITHCODE"):
        d = dict(zip(entry[::2], entry[1::2]))
        if d[b"library_name"].startswith(b"tally_"):
            return d[b"library_code"]
    return None


def capture(a):
    work = tempfile.mkdtemp(prefix="fold-replay.")
    procs = []
    try:
        port, rp = start_redis(work, "redis")
        procs.append(rp)
        tport = bench.free_ports(1)[0]
        log = open(os.path.join(work, "tallyd.log"), "wb")
        load_functions(a.tallyd, ["--redis", "redis://127.0.0.1:%d/0" % port])
        tp = spawn([a.tallyd, "--listen", "127.0.0.1:%d" % tport,
                    "--redis", "redis://127.0.0.1:%d/0" % port, "--threads", "2",
                    "--rate-limit", "0", "--view-window", "0", "--token", TOKEN,
                    "--prefix", PREFIX, "--log-level", "warn", "--fold-interval", "200"], log)
        procs.append(tp)
        r = Redis(port)
        for _ in range(400):
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % tport, timeout=1):
                    break
            except OSError:
                pass
            time.sleep(0.025)
        lines, stop_ev = [], threading.Event()
        th = threading.Thread(target=monitor_lines, args=(port, lines, stop_ev), daemon=True)
        th.start()
        t0 = time.monotonic()
        subprocess.run(["wrk", "-t", "2", "-c", "64", "-d", "%ds" % a.seconds, "--timeout", "5s",
                        "-s", os.path.join(HERE, "lua", a.script),
                        "http://127.0.0.1:%d" % tport, "--", "target=tally",
                        "articles=%d" % a.articles, "duration=%d" % a.seconds, "drain=0.5",
                        "dist=%s" % a.dist], stdout=subprocess.DEVNULL, check=True)
        while r.command("EXISTS", PREFIX + "{00}r:journals") and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        time.sleep(0.2)
        stop_ev.set()
        th.join(5)
        stop(tp)
        # The merged folds, each with the commands it ran (MONITOR lists them after it).
        folds, cur = [], None
        for i, line in enumerate(lines):
            args = [unquote(x) for x in QUOTED.findall(line)]
            if not args:
                continue
            if b" lua]" in line:
                if cur is not None:
                    cur["inner"].append(args)
                continue
            cur = None
            if args[0].upper() == b"FCALL" and args[1].startswith(b"tally_merged_"):
                cur = {"at": i, "args": args, "inner": []}
                folds.append(cur)
        late = [f for f in folds if f["at"] >= len(lines) // 2] or folds
        if not late:
            sys.exit("fold_replay.py: no merged fold seen")
        f = max(late, key=lambda f: len(f["inner"]))
        journal, registry = f["args"][3], f["args"][4]
        keys = []
        for cmd in f["inner"]:
            k = cmd[1] if len(cmd) > 1 else None
            if k and k not in (journal, registry) and k not in keys:
                keys.append(k)
        dumps = []
        for k in keys:
            d = r.command("DUMP", k)
            if d is not None:
                dumps.append([k.hex(), max(r.command("PTTL", k), 0), d.hex()])
        lib = r.command("FUNCTION", "DUMP")
        out = {"args": [x.hex() for x in f["args"]], "keys": dumps, "library": lib.hex(),
               "folds_seen": len(folds),
               "inner": [[x.decode("latin-1") for x in c[:2]] for c in f["inner"]]}
        with open(a.out, "w") as fh:
            json.dump(out, fh)
        n = int(f["args"][3 + int(f["args"][2]) + 2])  # after the keys: P model n
        print("captured a merged fold of %d entries, %d commands, %d keys (of %d merged folds)"
              % (n, len(f["inner"]), len(dumps), len(folds)))
        r.close()
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def records_of(args, start):
    """The number of records in a merged fold's arguments from START on (each: time, then tag
    id views nvis vis... nshares (net n)... ncomments d... nsums (m n)... nprops (f v)...),
    or None if they are not records up to the end."""
    n, pos = 0, start
    try:
        while pos < len(args):
            pos += 1 + 3
            pos += 1 + int(args[pos])
            pos += 1 + 2 * int(args[pos])
            pos += 1 + int(args[pos])
            pos += 1 + 2 * int(args[pos])
            pos += 1 + 2 * int(args[pos])
            n += 1
    except (ValueError, IndexError):
        return None
    return n if pos == len(args) else None


def cpu_main_us(r):
    """The CPU time (user + system) of Redis's main thread so far, in microseconds."""
    info = r.info("cpu")
    return (float(info["used_cpu_user_main_thread"]) +
            float(info["used_cpu_sys_main_thread"])) * 1e6


def replay(a):
    with open(a.file) as fh:
        cap = json.load(fh)
    args = [bytes.fromhex(x) for x in cap["args"]]
    keys = [(bytes.fromhex(k), ttl, bytes.fromhex(d)) for k, ttl, d in cap["keys"]]
    journal, registry = args[3], args[4]
    base = 3 + int(args[2])  # P: after the keys (journal registry, and the staging list)
    n, first, last = int(args[base + 2]), args[base + 3], args[base + 4]
    first_u, last_u = args[base + 5], args[base + 6]
    # The records start after the fixed arguments (P model n first last first_unit last_unit,
    # then "first_number last_number" where the fold takes them: numbers n - 1 apart; then
    # "hour fresh" where it takes them: a fresh list is never 2 bytes, a tag is; then, with a
    # staging list, the chunks staged: counted by later calls, not replayed).
    numbered = (args[base + 7].isdigit() and args[base + 8].isdigit() and
                int(args[base + 8]) - int(args[base + 7]) == n - 1)
    if numbered:
        # The journal written below numbers its entries 1..n.
        args[base + 7], args[base + 8] = b"1", b"%d" % n
        plain = args[:base + 7] + args[base + 9:]  # the fold without them
    else:
        plain = args
    fresh = len(plain[base + 8]) != 2
    start = base + (9 if fresh else 7) + (2 if numbered else 0)
    if int(args[2]) == 3:
        start += 1 + int(args[start])
    records = records_of(args, start)
    if records is None:
        sys.exit("fold_replay.py: cannot read the fold's records")
    work = tempfile.mkdtemp(prefix="fold-replay.")
    versions = []  # the merged functions' names
    unfresh = set()  # those that take no "hour fresh" arguments
    unnumbered = set()  # those that take no numbers
    results = {}
    try:
        port, rp = start_redis(work, "redis")
        try:
            r = Redis(port)
            def merged_names():
                out = []
                for lib in r.command("FUNCTION", "LIST"):
                    for f in lib[lib.index(b"functions") + 1]:
                        name = f[f.index(b"name") + 1]
                        if name.startswith(b"tally_merged_"):
                            out.append(name)
                return out

            if not a.tallyd and not a.unfresh and not a.library:
                r.command("FUNCTION", "RESTORE", bytes.fromhex(cap["library"]), "REPLACE")
                versions = merged_names()
            for lib in a.library or []:
                with open(lib, "rb") as fh:
                    r.command("FUNCTION", "LOAD", fh.read())
                versions += [x for x in merged_names() if x not in versions]
            for t in (a.tallyd or []) + (a.unfresh or []) + (a.unnumbered or []):
                load_functions(t, ["--redis", "redis://127.0.0.1:%d/0" % port])
                new = [x for x in merged_names() if x not in versions]
                versions += new
                if t in (a.unfresh or []):
                    if not fresh:
                        sys.exit("fold_replay.py: --unfresh needs a fold captured with them")
                    unfresh.update(new)
                    unnumbered.update(new)
                if t in (a.unnumbered or []):
                    if not numbered:
                        sys.exit("fold_replay.py: --unnumbered needs a fold captured with them")
                    unnumbered.update(new)
            # No slow log: Redis 7.0 logs the commands a script runs too, which costs more
            # than some of them (a copy of each one's arguments); the FCALL's time comes from
            # INFO commandstats instead, reset before each call.
            r.command("CONFIG", "SET", "slowlog-log-slower-than", "-1")
            fms, fseq = (int(x) for x in first.split(b"-"))
            # Not the fold's: what the measurement sends (the restores and the journal are
            # written before the counts are reset).
            setup = {"config", "slowlog", "info"}
            for v in versions:
                results[v] = {"wall": [], "cpu": [], "stats": {}}

            def prepare():
                r.command("FLUSHALL")
                for k, ttl, d in keys:
                    r.send("RESTORE", k, ttl, d)
                for _ in keys:
                    r.read()
                # The journal: N entries numbered 1..N, the first and the last as named.
                r.command("XADD", journal, first, "u", first_u, "s", "1", "n", "0", "a", "")
                for i in range(1, n - 1):
                    r.command("XADD", journal, b"%d-%d" % (fms, fseq + i), "u", b"x",
                              "s", b"%d" % (i + 1), "n", "0", "a", "")
                if n > 1:
                    r.command("XADD", journal, last, "u", last_u, "s", b"%d" % n, "n", "0",
                              "a", "")
                r.command("ZADD", registry, 1, journal)

            def stats():
                out = {}
                for k, v in r.info("commandstats").items():
                    m = dict(x.split("=") for x in v.split(","))
                    out[k[len("cmdstat_"):]] = (int(m["calls"]), int(m["usec"]))
                return out

            for rep in range(a.reps + 1):
                # Each version in turn, on a fresh copy, alternating which goes first.
                order = versions if rep % 2 == 0 else versions[::-1]
                for v in order:
                    prepare()
                    args[1] = v
                    call = plain if v in unnumbered else args
                    if v in unfresh:
                        call = call[:base + 7] + call[base + 9:]
                    if rep == 0:  # a first call warms Redis up
                        got = r.command(*call)
                        if not isinstance(got, list) or got[0] != n:
                            sys.exit("fold_replay.py: the fold answered %r" % (got,))
                        continue
                    r.command("CONFIG", "RESETSTAT")
                    c0 = cpu_main_us(r)
                    r.command(*call)
                    c1 = cpu_main_us(r)
                    res = results[v]
                    got = stats()
                    assert got["fcall"][0] == 1, got
                    res["wall"].append(got["fcall"][1])
                    res["cpu"].append(c1 - c0)
                    for k, (calls, us) in got.items():
                        if k.split("|")[0] in setup and k != "fcall":
                            continue
                        old = res["stats"].get(k, (0, 0))
                        res["stats"][k] = (old[0] + calls, old[1] + us)
            r.close()
        finally:
            stop(rp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("records per fold: %d; calls per version: %d (alternated)" % (records, a.reps))
    for v in versions:
        res = results[v]
        st = res["stats"]
        calls = st["fcall"][0]
        inner = {k: x for k, x in st.items() if k != "fcall"}
        inner_calls = sum(c for c, _ in inner.values())
        inner_us = sum(u for _, u in inner.values())
        wall, cpu = res["wall"], res["cpu"]
        per = float(calls * records)
        print("== %s" % v.decode())
        print("  FCALL wall us per record: median %.3f, min %.3f, mean %.3f"
              % (statistics.median(wall) / records, min(wall) / records,
                 sum(wall) / per))
        print("  Redis main-thread CPU us per record (FCALL + one INFO): median %.3f, min %.3f"
              % (statistics.median(cpu) / records, min(cpu) / records))
        print("  commands per record: %.3f (their us per record: %.3f)"
              % (inner_calls / per, inner_us / per))
        print("  script's own us per record: mean %.3f; median FCALL less its commands' mean "
              "%.3f; min less mean %.3f"
              % ((st["fcall"][1] - inner_us) / per,
                 (statistics.median(wall) - inner_us / calls) / records,
                 (min(wall) - inner_us / calls) / records))
        print("  by command, per record: " + ", ".join(
            "%s %.3f (%.3f us)" % (k, c / per, u / per)
            for k, (c, u) in sorted(inner.items(), key=lambda kv: -kv[1][1])))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--tallyd", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--seconds", type=int, default=4)
    c.add_argument("--articles", type=int, default=10000)
    c.add_argument("--dist", default="zipf")
    c.add_argument("--script", default="view_uniform.lua",
                   help="the wrk script under bench/lua/ (batch20.lua: 20 events per POST)")
    r = sub.add_parser("replay")
    r.add_argument("file")
    r.add_argument("--reps", type=int, default=200)
    r.add_argument("--tallyd", action="append",
                   help="count with this tallyd's scripts instead (repeat: each in turn)")
    r.add_argument("--library", action="append",
                   help="count with this function library (a file as cmake/functions.cmake "
                        "writes it, e.g. BUILD/tally_functions.lua) instead (repeat: each in "
                        "turn)")
    r.add_argument("--unnumbered", action="append",
                   help="also with this tallyd's, whose merged fold takes no numbers of the "
                        "first and the last entry")
    r.add_argument("--unfresh", action="append",
                   help="also with this tallyd's, whose merged fold takes no hour and fresh "
                        "arguments (it sets the expiry of every key it touches)")
    a = p.parse_args()
    (capture if a.cmd == "capture" else replay)(a)


if __name__ == "__main__":
    main()
