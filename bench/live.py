#!/usr/bin/env python3
"""live.py -- what open /v1/live streams cost one collector: memory, and Redis commands.

    TALLYD=build-bench/tallyd bench/live.py [--streams 5000] [--articles 50] [--threads 2]

Starts a private redis-server and tallyd (tests/integration/harness.py, free loopback ports),
opens STREAMS streams (stream i watches article i % ARTICLES), and reports:
  - the daemon's VmRSS before and with every stream open, and the growth per stream;
  - Redis commands per second over 5 s with every stream open and nothing changing (CONFIG
    RESETSTAT, then INFO commandstats): one HGETALL per watched article and worker thread a
    second, whatever the number of streams;
  - a view posted with every stream open: how many of the streams watching it saw it, and
    how long the last one took.
Needs `ulimit -n` above STREAMS + 100. Prints one JSON object.
"""
import argparse
import json
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402


def commandstats(redis):
    text = redis.command("INFO", "commandstats")
    text = text.decode() if isinstance(text, bytes) else text
    out = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[8:].split(":", 1)
            out[name] = int(rest.split("calls=")[1].split(",")[0])
    return out


def open_streams(port, n, articles):
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(("GET /v1/live?article=live-%d HTTP/1.1\r\nHost: b\r\nUser-Agent: %s\r\n\r\n"
                   % (i % articles, harness.BROWSER_UA)).encode())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    return sel, socks


def read_all(sel, bufs, until, deadline):
    """Read what the streams send until UNTIL(bufs) or DEADLINE."""
    while time.monotonic() < deadline and not until(bufs):
        for key, _ in sel.select(timeout=0.1):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            bufs[key.data] += data


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--articles", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with harness.Redis() as redis, \
            harness.Tallyd(redis, ["--live-max", str(args.streams), "--log-level", "info"],
                           threads=args.threads) as t:
        time.sleep(1.0)
        rss0 = t.rss_bytes()
        t0 = time.monotonic()
        sel, socks = open_streams(t.port, args.streams, args.articles)
        bufs = [b""] * args.streams
        read_all(sel, bufs, lambda b: all(b"data: " in x for x in b), time.monotonic() + 60)
        opened = sum(1 for x in bufs if b"data: " in x and x.startswith(b"HTTP/1.1 200"))
        open_s = time.monotonic() - t0
        time.sleep(2.0)
        rss1 = t.rss_bytes()
        redis.command("CONFIG", "RESETSTAT")
        t1 = time.monotonic()
        time.sleep(5.0)
        stats = commandstats(redis)
        secs = time.monotonic() - t1
        bufs = [b""] * args.streams
        r = t.post_events({"type": "view", "article": "live-0"})
        assert r.status == 200, r
        t2 = time.monotonic()
        watchers = [i for i in range(args.streams) if i % args.articles == 0]
        read_all(sel, bufs, lambda b: all(b"\"views\":1," in b[i] for i in watchers),
                 time.monotonic() + 10)
        took = time.monotonic() - t2
        seen = sum(1 for i in watchers if b"\"views\":1," in bufs[i])
        others = sum(1 for i in range(args.streams) if i not in set(watchers) and b"data:" in bufs[i])
        metrics = t.metrics()
        for s in socks:
            s.close()
        print(json.dumps({
            "streams": args.streams, "opened": opened, "open_seconds": round(open_s, 2),
            "articles": args.articles, "threads": args.threads,
            "rss_before_mib": round(rss0 / 2**20, 1), "rss_open_mib": round(rss1 / 2**20, 1),
            "rss_per_stream_kib": round((rss1 - rss0) / args.streams / 1024, 2),
            "redis_commands_per_s": {k: round(v / secs, 2) for k, v in sorted(stats.items())},
            "live_reads_total": harness.metric(metrics, "tally_live_reads_total"),
            "change_seen_by": "%d/%d" % (seen, len(watchers)),
            "change_seconds": round(took, 2), "events_to_other_streams": others,
        }, indent=1))


if __name__ == "__main__":
    main()
