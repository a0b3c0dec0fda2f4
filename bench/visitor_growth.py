#!/usr/bin/env python3
"""visitor_growth.py -- what a view by a new visitor costs Redis, in commands and time: the
path where an article's distinct-visitor estimate grows (PFADD, PFCOUNT, ZSCORE, ZADD, the
hour's and the totals' HINCRBY, the top list's ZINCRBY; see visitors() in
src/scripts/count.lua), which the bench scenarios other than dedupe barely take (their views
come from one visitor).

  visitor_growth.py [--tallyd BIN]... [--articles 20] [--visitors 50] [--rounds 3]
                    [--fold-interval 0]

For each round and each BIN in turn: a fresh private redis-server and BIN (--view-window 0,
--trust-proxy 127.0.0.1, one thread), then VISITORS x ARTICLES views, one per POST, one at a
time, visitor after visitor (each an X-Forwarded-For address) over every article; a read of
the totals (which waits for the folds) checks the count. Prints per BIN and per view, the
median over the rounds: the commands Redis ran (those the functions ran included, from INFO
commandstats), the EXPIREs among them, the FCALLs' time and Redis's main-thread CPU.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from capacity import Redis, start_redis, start_tally, stop  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def cpu_main_us(r):
    info = r.info("cpu")
    return (float(info["used_cpu_user_main_thread"]) +
            float(info["used_cpu_sys_main_thread"])) * 1e6


def one_run(tallyd, a):
    work = tempfile.mkdtemp(prefix="visitor-growth.")
    procs = []
    try:
        port, rp = start_redis(work, "redis")
        procs.append(rp)
        tport, tp = start_tally(tallyd, work, ["--redis", "redis://127.0.0.1:%d/0" % port],
                                ["--threads", "1", "--rate-limit", "0", "--view-window", "0",
                                 "--trust-proxy", "127.0.0.1",
                                 "--fold-interval", str(a.fold_interval)])
        procs.append(tp)
        r = Redis(port)
        r.command("CONFIG", "RESETSTAT")
        c0 = cpu_main_us(r)
        conn = http.client.HTTPConnection("127.0.0.1", tport, timeout=10)
        n = 0
        for v in range(a.visitors):
            for i in range(a.articles):
                body = json.dumps({"type": "view", "article": "growth/article-%d" % i})
                conn.request("POST", "/v1/events", body,
                             {"Content-Type": "application/json", "User-Agent": UA,
                              "X-Forwarded-For": "11.%d.%d.1" % (v // 256, v % 256)})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    sys.exit("visitor_growth.py: POST answered %d" % resp.status)
                n += 1
        conn.request("GET", "/v1/totals?period=all")
        resp = conn.getresponse()
        totals = json.loads(resp.read())
        if totals.get("views") != n:
            sys.exit("visitor_growth.py: %d views counted of %d" % (totals.get("views"), n))
        c1 = cpu_main_us(r)
        stats = {}
        for k, v in r.info("commandstats").items():
            m = dict(x.split("=") for x in v.split(","))
            stats[k[len("cmdstat_"):]] = (int(m["calls"]), int(m["usec"]))
        r.close()
        conn.close()
        setup = ("config", "info")
        cmds = sum(c for k, (c, _) in stats.items() if k.split("|")[0] not in setup)
        return {"cmds": cmds / n, "expire": stats.get("expire", (0, 0))[0] / n,
                "fcall_us": stats.get("fcall", (0, 0))[1] / n, "cpu_us": (c1 - c0) / n}
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tallyd", action="append")
    p.add_argument("--articles", type=int, default=20)
    p.add_argument("--visitors", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fold-interval", type=int, default=0)
    a = p.parse_args()
    bins = a.tallyd or [os.path.join(HERE, "..", "build-bench", "tallyd")]
    runs = {b: [] for b in bins}
    for _ in range(a.rounds):
        for b in bins:
            runs[b].append(one_run(b, a))
    print("%d views (%d visitors x %d articles), --fold-interval %d, medians of %d rounds, "
          "per view:" % (a.visitors * a.articles, a.visitors, a.articles, a.fold_interval,
                         a.rounds))
    print("| tallyd | commands | EXPIRE | FCALL us | Redis main-thread CPU us |")
    print("|---|---:|---:|---:|---:|")
    for b in bins:
        med = {k: statistics.median(x[k] for x in runs[b]) for k in runs[b][0]}
        print("| %s | %.3f | %.3f | %.2f | %.2f |" % (b, med["cmds"], med["expire"],
                                                     med["fcall_us"], med["cpu_us"]))


if __name__ == "__main__":
    main()
