#!/usr/bin/env python3
"""kept_cost.py -- what a week's or month's top list and totals cost Redis, computed and found
kept (src/scripts/kept.lua), what the kept parts weigh, and what rolling week and month sets
kept by the folds would cost on the write path instead (standard library only; needs
redis-server).

  bench/kept_cost.py [--tallyd PATH] [--article-days N] [--articles N] [--rounds N]

1. One Redis holds N article-days of views (default 1,000,000: the last 30 days, each day's
   articles drawn from --articles, 100,000 by default, over the 256 buckets) and each bucket's
   share of the site totals of each day. Two collectors (--fold-interval 0, one worker each)
   read /v1/top?period=month&limit=100 and /v1/totals?period=month: the first computes every
   bucket's part, the second finds them kept. Figures: Redis's main-thread CPU (INFO cpu) per
   read and the commands it ran (INFO commandstats), the best of --rounds (the kept parts are
   deleted between rounds).
2. The kept parts: their number and MEMORY USAGE, each kind summed.
3. Rolling sets: ZINCRBY of one member into a month set of --articles members, inside a
   script as a fold runs it, against HINCRBY into an hour's hash of as many (what a fold does
   per record and metric today): Redis CPU per call, the script's own loop taken off -- what
   every merged record would pay more per metric with a top list, twice (week and month).

Every process is started on free loopback ports and stopped by its PID. Prints Markdown.
"""
import argparse
import http.client
import os
import random
import shutil
import sys
import tempfile
import time

import capacity
from capacity import Redis

PREFIX = "cap:"
DAY = 86400


def main_cpu(r):
    i = r.info("cpu")
    return float(i["used_cpu_sys_main_thread"]) + float(i["used_cpu_user_main_thread"])


def calls(r):
    out = {}
    for k, v in r.info("commandstats").items():
        name = k[len("cmdstat_"):]
        if name not in ("info", "config", "time", "memory", "keys", "del", "ping"):
            out[name] = int(v.split("calls=", 1)[1].split(",", 1)[0])
    return out


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path)
    resp = c.getresponse()
    body = resp.read()
    c.close()
    if resp.status != 200:
        sys.exit("kept_cost.py: GET %s: %d %r" % (path, resp.status, body[:200]))
    return body


def ymd(t):
    return time.strftime("%Y%m%d", time.gmtime(t))


def fill(r, article_days, articles, rng):
    """ARTICLE_DAYS article-days over the last 30 days, in pipelines."""
    per_day = article_days // 30
    now = int(time.time())
    for d in range(30):
        day = ymd(now - d * DAY)
        members = rng.sample(range(articles), per_day)
        by_bucket = {}
        for m in members:
            by_bucket.setdefault(m % 256, []).append(m)
        n = 0
        for b, ms in by_bucket.items():
            args = ["ZADD", "%s{%02x}d:views:%s" % (PREFIX, b, day)]
            for m in ms:
                args += [1 + int(rng.paretovariate(1.2)), "article/%07d" % m]
            r.send(*args)
            r.send("HSET", "%s{%02x}s:%s" % (PREFIX, b, day), "views", len(ms) * 3, "shares",
                   len(ms))
            n += 2
        for _ in range(n):
            r.read()


def measure(r, port, path):
    before_cpu, before = main_cpu(r), calls(r)
    get(port, path)
    after_cpu, after = main_cpu(r), calls(r)
    diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return after_cpu - before_cpu, diff


def kept_memory(r):
    out = {}
    for k in r.command("KEYS", PREFIX + "{*}k:*"):
        kind = k.decode().split("}k:", 1)[1].split(":", 1)[0]
        kind = "epoch" if kind == "epoch" else "site" if kind == "site" else "top"
        n, total = out.get(kind, (0, 0))
        out[kind] = (n + 1, total + r.command("MEMORY", "USAGE", k, "SAMPLES", "0"))
    return out


ROLLING = """
local n, articles, cmd = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 1, n do
    local m = string.format('article/%07d', math.random(0, articles - 1))
    if cmd ~= '' then
        redis.call(cmd, KEYS[1], cmd == 'ZINCRBY' and 1 or m, cmd == 'ZINCRBY' and m or 1)
    end
end
return n
"""


def rolling(r, articles, n=200000):
    """Redis CPU per call inside a script, as a fold would make it: ZINCRBY into a month set of
    ARTICLES members, HINCRBY into an hour's hash of as many, less the loop alone."""
    for key in (PREFIX + "{00}m:views", PREFIX + "{00}h:views"):
        for i in range(0, articles, 1000):
            args = ["ZADD" if "m:" in key else "HSET", key]
            for m in range(i, min(i + 1000, articles)):
                args += [1, "article/%07d" % m] if "m:" in key else ["article/%07d" % m, 1]
            r.command(*args)
    best = {}
    for _ in range(3):
        for name, key, cmd in (("loop", "x", ""), ("ZINCRBY month set", "m:views", "ZINCRBY"),
                               ("HINCRBY hour hash", "h:views", "HINCRBY")):
            cpu = main_cpu(r)
            r.command("EVAL", ROLLING, 1, PREFIX + "{00}" + key, n, articles, cmd)
            per = (main_cpu(r) - cpu) / n * 1e6
            best[name] = min(best.get(name, per), per)
    loop = best.pop("loop")
    return {k: v - loop for k, v in best.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tallyd", default=os.path.join(capacity.ROOT, "build", "tallyd"))
    ap.add_argument("--article-days", type=int, default=1000000)
    ap.add_argument("--articles", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kept-cost.")
    try:
        port, _ = capacity.start_redis(work, "redis")
        redis_args = ["--redis", "redis://127.0.0.1:%d/0" % port]
        extra = ["--fold-interval", "0", "--threads", "1"]
        r = Redis(port)
        fill(r, a.article_days, a.articles, random.Random(1))
        rows = {}
        for _ in range(a.rounds):
            r.command("DEL", *(r.command("KEYS", PREFIX + "{*}k:*") or [b"x"]))
            t1, p1 = capacity.start_tally(a.tallyd, work, redis_args, extra)
            t2, p2 = capacity.start_tally(a.tallyd, work, redis_args, extra)
            for path in ("/v1/top?period=month&limit=100", "/v1/totals?period=month"):
                for who, t in (("computed (first collector)", t1),
                               ("found kept (second collector)", t2),
                               ("from the worker's memory (first again)", t1)):
                    cpu, diff = measure(r, t, path)
                    key = (path, who)
                    if key not in rows or cpu < rows[key][0]:
                        rows[key] = (cpu, diff)
            capacity.stop(p1)
            capacity.stop(p2)
        print("| read | by | Redis CPU | commands |")
        print("|---|---|---:|---|")
        for (path, who), (cpu, diff) in rows.items():
            print("| `%s` | %s | %.1f ms | %s |" % (path, who, cpu * 1e3, ", ".join(
                "%s %d" % kv for kv in sorted(diff.items())) or "none"))
        print()
        print("| kept keys | number | MEMORY USAGE | per key |")
        print("|---|---:|---:|---:|")
        for kind, (n, total) in sorted(kept_memory(r).items()):
            print("| %s | %d | %.1f KiB | %d B |" % (kind, n, total / 1024, total // n))
        print()
        print("| rolling sets: one call inside a script | Redis CPU per call |")
        print("|---|---:|")
        for name, us in rolling(r, a.articles).items():
            print("| %s | %.2f µs |" % (name, us))
        r.close()
    finally:
        for p in capacity.PROCS:
            capacity.stop(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
