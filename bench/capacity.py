#!/usr/bin/env python3
"""capacity.py -- the figures of docs/scaling.md: Redis memory per article, and the CPU one
event costs the collector and Redis, standalone and on a Redis Cluster (standard library only;
needs redis-server, redis-cli and wrk, which bench/run.sh installs).

  bench/capacity.py [--tallyd PATH] [--articles N] [--views N] [--duration S] [--no-cluster]
                    [--masters N] [--no-memory] [--slowlog] [--view-window S [--visitors N]]

1. Memory. A fresh Redis and a tallyd with the default settings (repeat-view window 1800 s,
   visitors counted). Step "one view": every one of N articles (100,000) gets one view and every
   third one share, from one visitor. Step "readership": V more views (1,000,000) over the same
   articles, the article drawn Zipf-like (s = 1), from 100,000 visitors (trusted
   X-Forwarded-For). After each step: Redis used_memory over the articles, and per key kind
   (MEMORY USAGE of every key).
2. CPU per event. wrk sends one view per POST over 10,000 articles (bench/lua/view_uniform.lua,
   64 connections, --view-window 0 --rate-limit 0) for S seconds; the CPU time tallyd and Redis
   used (from /proc and INFO cpu), divided by the events acknowledged. Once against one Redis,
   once against a cluster of 3 masters (--masters N; no replicas: replication costs the
   replicas, not the masters' main thread), summing the masters. --masters 1 runs the cluster's
   write and fold path on one Redis: the two paths' Redis work side by side. --no-memory skips
   step 1. --view-window S (the default setting is 1800) runs both with repeat detection on
   instead (--trust-proxy 127.0.0.1, bench/lua/dedupe.lua): one view per POST, the article
   drawn Zipf-like, the visitor's address uniformly from --visitors N (100,000), repeats
   answered "ignored"; per event then means per view sent, counted or not.
3. With --slowlog, where Redis's time goes in each CPU run: every command clients sent is
   logged (slowlog-log-slower-than 0) over the run, and the report gives each of tally's
   functions (and commands) its calls, mean time a call, time per event and share, summed over
   the Redis servers. The slow log's times are wall times and logging costs time of its own:
   read the shares, not the CPU figures of a run with it.

Every process is started on free loopback ports and stopped by its PID. Prints Markdown.
"""
import argparse
import bisect
import concurrent.futures
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import http.client

import bench  # bench/bench.py: free ports, and reading wrk's and Redis's figures

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
TICK = os.sysconf("SC_CLK_TCK")
PROCS = []


def free_port():
    return bench.free_ports(1)[0]


def spawn(args, log):
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ---------------------------------------------------------------- a small Redis client


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rb")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def command(self, *args):
        self.send(*args)
        return self.read()

    def info(self, section):
        out = {}
        for line in self.command("INFO", section).decode().splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k] = v
        return out

    def close(self):
        self.sock.close()


def wait_ping(port, proc, what):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit("capacity.py: %s exited at start" % what)
        try:
            r = Redis(port)
            ok = r.command("PING") == "PONG"
            r.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.025)
    sys.exit("capacity.py: %s did not start" % what)


def start_redis(work, name, cluster=False):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d, "--protected-mode", "no", "--daemonize", "no",
            "--logfile", os.path.join(d, "redis.log")]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-port", str(free_port())]
    p = spawn(args, subprocess.DEVNULL)
    wait_ping(port, p, "redis-server :%d" % port)
    return port, p


def load_functions(tallyd, redis_args):
    """The admin step of every deploy: tallyd calls the functions it does not load itself."""
    r = subprocess.run([tallyd, "--load-functions"] + redis_args, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        sys.exit("capacity.py: tallyd --load-functions failed:\n%s" % r.stderr[-2000:])


def start_tally(tallyd, work, redis_args, extra):
    load_functions(tallyd, redis_args)
    port = free_port()
    log = open(os.path.join(work, "tallyd-%d.log" % port), "w")
    p = spawn([tallyd, "--listen", "127.0.0.1:%d" % port, "--prefix", "cap:"] + redis_args
              + extra, log)
    for _ in range(400):
        if p.poll() is not None:
            sys.exit("capacity.py: tallyd exited at start (see %s)" % log.name)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                c.close()
                return port, p
        except OSError:
            pass
        time.sleep(0.025)
    sys.exit("capacity.py: tallyd did not become ready (see %s)" % log.name)


# ---------------------------------------------------------------- memory


def post_batches(port, batches, xff=None, conns=4):
    """POST each list of events as one request over CONNS connections; returns the events
    accepted (the rest were ignored as repeats)."""
    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        parts = [pool.submit(_post_some, port, batches, xff, k, conns) for k in range(conns)]
        return sum(f.result() for f in parts)


def _post_some(port, batches, xff, first, step):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    n = 0
    for i in range(first, len(batches), step):
        batch = batches[i]
        headers = {"Content-Type": "application/json", "User-Agent": UA}
        if xff:
            headers["X-Forwarded-For"] = xff(i)
        c.request("POST", "/v1/events", body=json.dumps(batch), headers=headers)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("loading got %d %s" % (r.status, body[:200]))
        n += json.loads(body)["accepted"]
    c.close()
    return n


def article(i):
    return "news/2026/article-%d" % i


def key_kind(key, prefix):
    k = key[len(prefix):]
    if k.startswith(b"{"):
        k = k[k.index(b"}") + 1:]
        return k[:1].decode() + ":"
    return k.split(b":", 1)[0].decode() + ":"


def memory_by_kind(port, prefix):
    r = Redis(port)
    keys, cursor = [], b"0"
    while True:
        cursor, batch = r.command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 5000)
        keys.extend(batch)
        if cursor == b"0":
            break
    kinds = {}
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        for k in chunk:
            r.send("MEMORY", "USAGE", k, "SAMPLES", "0")
        for k in chunk:
            n = r.read() or 0
            c = kinds.setdefault(key_kind(k, prefix.encode()), [0, 0])
            c[0] += 1
            c[1] += n
    r.close()
    return kinds


def zipf_sampler(n, s, rng):
    weights = [1.0 / (k ** s) for k in range(1, n + 1)]
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    def draw():
        return min(bisect.bisect_left(cum, rng.random()), n - 1)
    return draw


def measure_memory(a, tallyd, work):
    port, redis = start_redis(work, "redis-mem")
    r = Redis(port)
    used0 = int(r.info("memory")["used_memory"])
    tport, tally = start_tally(tallyd, work, ["--redis", "redis://127.0.0.1:%d/0" % port],
                               ["--threads", "2", "--rate-limit", "0", "--trust-proxy",
                                "127.0.0.1"])
    rows = []
    n = a.articles
    events = []
    for i in range(n):
        events.append({"type": "view", "article": article(i)})
        if i % 3 == 0:
            events.append({"type": "share", "article": article(i), "network": "twitter"})
    batches = [events[i:i + 100] for i in range(0, len(events), 100)]
    acc = post_batches(tport, batches)
    used = int(r.info("memory")["used_memory"])
    rows.append(("one view each, a share for every third (%d events)" % acc, used - used0,
                 memory_by_kind(port, "cap:")))

    rng = random.Random(1)
    draw = zipf_sampler(n, 1.0, rng)
    visitors = 100000
    views = [{"type": "view", "article": article(draw())} for _ in range(a.views)]
    # Each request is one visitor's batch of 10 views (of articles drawn independently).
    batches = [views[i:i + 10] for i in range(0, len(views), 10)]
    who = [rng.randrange(visitors) for _ in batches]
    acc2 = post_batches(tport, batches,
                        xff=lambda i: "10.%d.%d.%d" % (who[i] >> 16, (who[i] >> 8) & 255,
                                                        who[i] & 255))
    used = int(r.info("memory")["used_memory"])
    rows.append(("then %d more views, Zipf over the articles, from %d visitors (%d counted, "
                 "the rest repeats)" % (a.views, visitors, acc2), used - used0,
                 memory_by_kind(port, "cap:")))
    r.close()
    stop(tally)
    stop(redis)
    return rows


# ---------------------------------------------------------------- CPU per event


def wrk_run(port, duration, articles, a):
    script, extra = "view_uniform.lua", []
    if a.view_window > 0:
        script, extra = "dedupe.lua", ["visitors=%d" % a.visitors]
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", "64", "-d", "%ds" % duration, "--timeout", "5s", "-s",
         os.path.join(HERE, "lua", script), "http://127.0.0.1:%d" % port, "--",
         "target=tally", "articles=%d" % articles, "duration=%d" % duration, "drain=0.5"] + extra,
        capture_output=True, text=True, timeout=duration + 60)
    w = bench.parse_wrk_text(out.stdout)
    if w is None:
        sys.exit("capacity.py: no result from wrk:\n%s%s" % (out.stdout[-2000:], out.stderr[-2000:]))
    return w


def redis_cpu(ports):
    """CPU seconds used and FCALL calls made, summed over the Redis servers at PORTS."""
    cpu, writes = 0.0, 0
    for p in ports:
        r = Redis(p)
        text = r.command("INFO", "cpu").decode() + r.command("INFO", "commandstats").decode()
        r.close()
        c, calls = bench.parse_info_text(text)
        cpu += c
        writes += calls.get("fcall", 0)
    return cpu, writes


def slowlog_on(ports, on):
    """Log every command at PORTS (ON), or stop logging; the log emptied when it starts."""
    for p in ports:
        r = Redis(p)
        if on:
            r.command("CONFIG", "SET", "slowlog-max-len", "10000000")
            r.command("SLOWLOG", "RESET")
        r.command("CONFIG", "SET", "slowlog-log-slower-than", "0" if on else "-1")
        r.close()


def slowlog_read(ports):
    """{name: [calls, usec]} from the slow logs at PORTS: tally's functions by name
    (tally_<name>_<version>), other commands by theirs."""
    out = {}
    for p in ports:
        r = Redis(p)
        for e in r.command("SLOWLOG", "GET", "-1"):
            args = [x.decode("utf-8", "replace") for x in e[3]]
            name = args[0].lower() if args else "?"
            if name in ("fcall", "fcall_ro") and len(args) > 1:
                name = args[1][len("tally_"):].rsplit("_", 1)[0] if args[1].startswith("tally_") \
                    else args[1]
            if name in ("slowlog", "config", "info"):
                continue
            x = out.setdefault(name, [0, 0])
            x[0] += 1
            x[1] += e[2]
        r.close()
    return out


def measure_cpu(a, tallyd, work, redis_args, redis_ports):
    flags = ["--threads", "2", "--rate-limit", "0", "--view-window", str(a.view_window)]
    if a.view_window > 0:
        flags += ["--trust-proxy", "127.0.0.1"]
    tport, tally = start_tally(tallyd, work, redis_args, flags)
    wrk_run(tport, 2, 10000, a)  # warm-up: connections, scripts, the slot map
    if a.slowlog:
        slowlog_on(redis_ports, True)
    t0, (r0, e0) = cpu_seconds(tally.pid), redis_cpu(redis_ports)
    w = wrk_run(tport, a.duration, 10000, a)
    t1, (r1, e1) = cpu_seconds(tally.pid), redis_cpu(redis_ports)
    slow = None
    if a.slowlog:
        slowlog_on(redis_ports, False)
        slow = slowlog_read(redis_ports)
    stop(tally)
    events = w["accepted"] + w["ignored"]  # every view sent: repeats cost Redis a check
    if w["accepted"] <= 0 or w["main_sent"] != w["main_recv"]:
        sys.exit("capacity.py: the load run did not complete: %r" % w)
    return {"events": events, "counted": w["accepted"], "rate": events / (a.duration - 0.5),
            "tally_us": (t1 - t0) * 1e6 / events, "redis_us": (r1 - r0) * 1e6 / events,
            "per_write": events / max(e1 - e0, 1), "slowlog": slow}


def cluster_ok(port):
    r = Redis(port)
    try:
        return "cluster_state:ok" in r.command("CLUSTER", "INFO").decode()
    finally:
        r.close()


def start_cluster(work, masters):
    nodes = [start_redis(work, "node-%d" % i, cluster=True) for i in range(masters)]
    if masters == 1:  # redis-cli --cluster create wants 3: one node takes every slot itself
        r = Redis(nodes[0][0])
        try:
            r.command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        finally:
            r.close()
    else:
        r = subprocess.run(["redis-cli", "--cluster", "create"]
                           + ["127.0.0.1:%d" % p for p, _ in nodes]
                           + ["--cluster-replicas", "0", "--cluster-yes"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            sys.exit("capacity.py: redis-cli --cluster create failed:\n%s" % r.stdout[-2000:])
    for _ in range(400):
        if all(cluster_ok(p) for p, _ in nodes):
            return nodes
        time.sleep(0.05)
    sys.exit("capacity.py: the cluster did not become ready")


# ---------------------------------------------------------------- main


def kib(n):
    return "%.2f KiB" % (n / 1024.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tallyd", default=os.path.join(ROOT, "build-bench", "tallyd"),
                   help="the tallyd to measure (default: build-bench/tallyd, built by bench/run.sh)")
    p.add_argument("--articles", type=int, default=100000)
    p.add_argument("--views", type=int, default=1000000)
    p.add_argument("--duration", type=int, default=10, help="seconds of each CPU run")
    p.add_argument("--no-cluster", action="store_true")
    p.add_argument("--masters", type=int, default=3,
                   help="masters of the cluster (default 3; 1 compares the cluster's write and "
                        "fold path with one node's on the same Redis work)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory step")
    p.add_argument("--slowlog", action="store_true",
                   help="log every command during the CPU runs and report where Redis's time went")
    p.add_argument("--view-window", type=int, default=0, metavar="S",
                   help="CPU runs with repeat detection on (tallyd --view-window S), Zipf-drawn "
                        "articles, visitors from --visitors (default 0: every view counts)")
    p.add_argument("--visitors", type=int, default=100000,
                   help="with --view-window: the addresses the views come from (default 100000)")
    a = p.parse_args()
    if not os.access(a.tallyd, os.X_OK):
        sys.exit("capacity.py: no tallyd at %s (run bench/run.sh --quick once, or --tallyd)" % a.tallyd)
    for tool in ("redis-server", "redis-cli", "wrk"):
        if not shutil.which(tool):
            sys.exit("capacity.py: %s is missing (bench/run.sh installs it)" % tool)

    work = tempfile.mkdtemp(prefix="tally-capacity.")
    started = time.time()
    try:
        mem = [] if a.no_memory else measure_memory(a, a.tallyd, work)
        port, redis = start_redis(work, "redis-cpu")
        single = measure_cpu(a, a.tallyd, work, ["--redis", "redis://127.0.0.1:%d/0" % port],
                             [port])
        stop(redis)
        clustered = None
        if not a.no_cluster:
            nodes = start_cluster(work, a.masters)
            clustered = measure_cpu(a, a.tallyd, work,
                                    ["--redis-cluster", ",".join("127.0.0.1:%d" % p for p, _ in nodes)],
                                    [p for p, _ in nodes])
            for _, proc in nodes:
                stop(proc)
    finally:
        for proc in PROCS:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    print("# tally capacity\n")
    print("date: %s, tallyd: %s, cores: %d, wall time s: %d\n"
          % (time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), a.tallyd, os.cpu_count(),
             time.time() - started))
    if mem:
        print("## Redis memory per article (%d articles, first day)\n" % a.articles)
        print("| after | used_memory per article | by key kind (keys, bytes per article) |")
        print("|---|---:|---|")
    for what, used, kinds in mem:
        parts = ", ".join("`%s` %d keys %.0f B" % (k, c, b / a.articles)
                          for k, (c, b) in sorted(kinds.items(), key=lambda kv: -kv[1][1]))
        print("| %s | %s | %s |" % (what, kib(used / a.articles), parts))
    runs = (("one node", single),
            ("cluster, %d master%s" % (a.masters, "s" if a.masters > 1 else ""), clustered))
    if a.view_window > 0:
        print("\n## CPU per event (one view per POST, 10,000 Zipf-drawn articles, %d visitors, "
              "--view-window %d, 64 connections, %d s)\n" % (a.visitors, a.view_window, a.duration))
    else:
        print("\n## CPU per event (one view per POST, 10,000 articles, 64 connections, %d s)\n"
              % a.duration)
    print("| Redis | events (counted) | events/s (all on this machine) | events per Redis write | "
          "tallyd CPU µs/event | Redis CPU µs/event (all masters) | one collector core "
          "carries | one Redis core carries |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in runs:
        if m is None:
            continue
        print("| %s | %d (%d) | %.0f | %.1f | %.1f | %.1f | %.0f events/s | %.0f events/s |"
              % (name, m["events"], m["counted"], m["rate"], m["per_write"], m["tally_us"], m["redis_us"],
                 1e6 / m["tally_us"], 1e6 / m["redis_us"]))
    print("\nOne Redis core carries 1e6 / (Redis µs per event) events/s; in a cluster each "
          "master carries that for its share of the articles.")
    for name, m in runs:
        if m is None or m["slowlog"] is None:
            continue
        total = sum(usec for _, usec in m["slowlog"].values()) or 1
        print("\n### Where Redis's time went: %s (slow log, wall time; a function's time "
              "includes the commands it ran, which are listed too)\n" % name)
        print("| function or command | calls | µs a call | µs per event | share |")
        print("|---|---:|---:|---:|---:|")
        for fn, (calls, usec) in sorted(m["slowlog"].items(), key=lambda kv: -kv[1][1]):
            if usec < 0.001 * total:
                continue
            print("| %s | %d | %.1f | %.2f | %.0f %% |"
                  % (fn, calls, usec / calls, usec / m["events"], 100.0 * usec / total))


if __name__ == "__main__":
    main()
