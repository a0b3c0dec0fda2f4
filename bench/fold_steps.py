#!/usr/bin/env python3
"""fold_steps.py -- Redis's work per merged record of a fold, and how long each fold call holds
Redis, for one or more tallyd binaries in turn.

Each binary gets a fresh redis-server and one tallyd (1 worker thread, --fold-interval 10000,
so that nothing folds by the clock). Each round POSTs 9 x 100 views of distinct articles (one
batch of 900 merged records), then one read folds it; around that read Redis's main-thread CPU
(INFO cpu) and its slow log (every command) are sampled. Printed per binary: Redis CPU µs per
merged record (median of the rounds), and per fold function (merged, staged) the median and
longest call in µs and the calls. Run the binaries alternately (A B A B) on a shared machine.

    bench/fold_steps.py ROUNDS TALLYD...
e.g. bench/fold_steps.py 10 old/tallyd build-bench/tallyd old/tallyd build-bench/tallyd

FOLD_STEPS_POSTS=N makes the batch N x 100 records (default 9); keep it below the binaries'
batch size (FOLD_BATCH_RECORDS in src/fold.c), or the batch closes by itself before the read.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402

# Below the records that close a batch by themselves (FOLD_BATCH_RECORDS).
POSTS, VIEWS = int(os.environ.get("FOLD_STEPS_POSTS", "9")), 100


def redis_cpu(r):
    info = r.command("INFO", "cpu").decode()
    f = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
    return float(f["used_cpu_user_main_thread"]) + float(f["used_cpu_sys_main_thread"])


def run(binary, rounds):
    os.environ["TALLYD"] = binary
    r = harness.Redis().start()
    t = harness.Tallyd(r, ["--view-window", "0", "--token", harness.TOKEN,
                           "--fold-interval", "10000"], threads=1)
    t.start()
    harness.wait_until(lambda: t.get("/readyz", timeout=5).status == 200, timeout=10)
    per_record, calls = [], {}
    try:
        r.command("CONFIG", "SET", "slowlog-max-len", "100000")
        with harness.KeepAliveClient(t.port) as c:
            for k in range(rounds):
                for p in range(POSTS):
                    ex = c.post_events([{"type": "view", "article": "f%d/%d" % (k, p * VIEWS + i)}
                                        for i in range(VIEWS)])
                    if ex.status != 200:
                        raise RuntimeError("POST: %r" % ex)
                r.command("SLOWLOG", "RESET")
                r.command("CONFIG", "SET", "slowlog-log-slower-than", "0")
                before = redis_cpu(r)
                if t.get("/v1/stats/f%d%%2F0" % k).status != 200:
                    raise RuntimeError("the read failed")
                per_record.append((redis_cpu(r) - before) * 1e6 / (POSTS * VIEWS))
                r.command("CONFIG", "SET", "slowlog-log-slower-than", "10000")
                for e in r.command("SLOWLOG", "GET", "-1"):
                    a = e[3]
                    if a[0].lower() == b"fcall" and a[1].startswith((b"tally_merged_",
                                                                       b"tally_staged_")):
                        calls.setdefault(a[1].decode().split("_")[1], []).append(e[2])
    finally:
        t.close()
        r.close()
    return statistics.median(per_record), calls


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for binary in sys.argv[2:]:
        us, calls = run(os.path.abspath(binary), int(sys.argv[1]))
        print("%s: Redis CPU %.2f µs per merged record; %s" % (binary, us, "; ".join(
            "%s median %d µs, longest %d µs, %d calls" % (k, statistics.median(v), max(v), len(v))
            for k, v in sorted(calls.items()))))


if __name__ == "__main__":
    main()
