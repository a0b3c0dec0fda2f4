"""Bounded answers while Redis stalls: every request is answered within --redis-timeout +
--hold of its sending, whatever Redis does, and the counts stay exact.

Each test starts a Redis of its own (append-only file, appendfsync always) and a tallyd
(--redis-timeout 500, --hold 1000: answers within 1.5 s), runs a mixed load of keep-alive
clients -- ingest with and without Idempotency-Key, the pixel, stats and the other reads,
/healthz and /readyz -- and stalls Redis for STALL_SECONDS (well past both) in the middle:
DEBUG SLEEP, SIGSTOP, CLIENT PAUSE ALL, and CLIENT PAUSE WRITE (reads answered, writes held).

Judged by:
  - every request answered (no reset, no missing answer), each within the bound plus
    MARGIN seconds of scheduling slack on a shared machine;
  - answers only of the contract: ingest 200 (counted), 503 + Retry-After "unavailable" (not
    counted), 504 + Retry-After "outcome_unknown" (may be counted); the pixel always a GIF;
    reads 200 or 503; /healthz 200 all along, also while Redis stalls;
  - the counter checker of test_faults (Jepsen-style): per article, sum of 200s <= final
    views <= sum of 200s + sum of 504s, 503s never counted; keyed clients retry each key
    (also after a 504) until a 200, and each key is counted exactly once.
"""

import os
import sys
import threading
import time
import unittest

import harness
from harness import quote, wait_until
from test_faults import CounterChecker, view_batch

REDIS_TIMEOUT_MS = 500
HOLD_MS = 1000
BOUND = (REDIS_TIMEOUT_MS + HOLD_MS) / 1000.0
MARGIN = 0.3                # scheduling slack on top of the bound (shared 2-core machines)
STALL_SECONDS = 2.5         # past --redis-timeout and past the whole bound
BEFORE = 1.5                # load before the stall ...
AFTER = 1.5                 # ... and after it
REQUEST_TIMEOUT = 10.0      # the clients wait this long: far past the bound, to measure it
RETRY_SECONDS = 15.0        # a keyed client retries its last key this long after the load
MAX_OPS = 20000             # per client: a bound besides time


class Record:
    """Every exchange of the load: (sent, seconds, what, status, kind) and the late ones."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []
        self.stall = None   # (start, end) of the stall, monotonic

    def add(self, sent, took, what, status, kind):
        with self.lock:
            self.rows.append((sent, took, what, status, kind))

    def snapshot(self):
        with self.lock:
            return list(self.rows)


class StallLoad:
    """The clients: each loops until STOP_AT (keyed ones then retry their last key), timing
    every exchange into RECORD and ingest outcomes into CHECKER."""

    def __init__(self, name, tallyd):
        self.name = name
        self.t = tallyd
        self.checker = CounterChecker()
        self.record = Record()
        self.stop_at = None
        self.unexpected = []
        self.lock = threading.Lock()

    def odd(self, what):
        with self.lock:
            self.unexpected.append(what)

    def timed(self, cl, what, fn):
        sent = time.monotonic()
        ex = fn(cl)
        self.record.add(sent, time.monotonic() - sent, what, ex.status, ex.kind)
        return ex

    def classify(self, ex, events):
        return self.checker.classify(ex, events)

    def unkeyed(self, i):
        article = "%s/u%d" % (self.name, i)
        with harness.KeepAliveClient(self.t.port, timeout=REQUEST_TIMEOUT) as cl:
            for n in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                events = 1 + n % 3
                ex = self.timed(cl, "events", lambda c: c.post_events(view_batch(article, events)))
                self.checker.record(article, events, self.classify(ex, events), kind=ex.kind)
                time.sleep(0.01)

    def keyed(self, i):
        article = "%s/k%d" % (self.name, i)
        with harness.KeepAliveClient(self.t.port, timeout=REQUEST_TIMEOUT) as cl:
            for seq in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                key = "%s-k%d-%d" % (self.name, i, seq)
                events = 1 + seq % 3
                body = view_batch(article, events)
                for _ in range(MAX_OPS):
                    ex = self.timed(cl, "events-keyed", lambda c: c.post_events(
                        body, {"Idempotency-Key": key}))
                    outcome = self.classify(ex, events)
                    self.checker.record(article, events, outcome, key=key, kind=ex.kind)
                    if outcome == "ok" or time.monotonic() > self.stop_at + RETRY_SECONDS:
                        break
                    time.sleep(0.05)

    def pixel(self, i):
        article = "%s/p%d" % (self.name, i)
        path = "/v1/pixel.gif?type=view&article=" + quote(article)
        outcomes = {"counted": "ok", "unavailable": "fail", "unknown": "info"}
        with harness.KeepAliveClient(self.t.port, timeout=REQUEST_TIMEOUT) as cl:
            for _ in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                ex = self.timed(cl, "pixel", lambda c: c.get(path))
                tag = ex.response.headers.get("Tally-Outcome") if ex.kind == "answered" else None
                if (ex.kind != "answered" or ex.status != 200 or
                        ex.response.headers.get("Content-Type") != "image/gif" or
                        tag not in outcomes):
                    self.odd(ex)
                    self.checker.record(article, 1, "info", kind=ex.kind)
                else:
                    self.checker.record(article, 1, outcomes[tag], kind=ex.kind)
                time.sleep(0.01)

    def reads(self, i):
        a = quote("%s/u0" % self.name)
        paths = [("stats", "/v1/stats/" + a), ("stats", "/v1/stats?article=" + a),
                 ("series", "/v1/series/" + a), ("top", "/v1/top?period=day"),
                 ("totals", "/v1/totals"), ("badge", "/v1/badge/" + a + ".svg")]
        with harness.KeepAliveClient(self.t.port, timeout=REQUEST_TIMEOUT) as cl:
            for n in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                what, path = paths[(n + i) % len(paths)]
                ex = self.timed(cl, what, lambda c: c.get(path))
                if ex.kind != "answered" or ex.status not in (200, 503):
                    self.odd(ex)
                elif ex.status == 503 and ex.response.headers.get("Retry-After") is None:
                    self.odd(ex)
                time.sleep(0.02)

    def health(self, i):
        with harness.KeepAliveClient(self.t.port, timeout=REQUEST_TIMEOUT) as cl:
            for n in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                path = "/healthz" if n % 2 == 0 else "/readyz"
                ex = self.timed(cl, path[1:], lambda c: c.get(path))
                want = (200,) if path == "/healthz" else (200, 503)
                if ex.kind != "answered" or ex.status not in want:
                    self.odd(ex)
                time.sleep(0.05)

    def run(self, nemesis):
        clients = [(self.unkeyed, 0), (self.unkeyed, 1), (self.keyed, 0), (self.keyed, 1),
                   (self.pixel, 0), (self.reads, 0), (self.reads, 1), (self.health, 0)]
        self.stop_at = time.monotonic() + 3600.0  # until the stall is over (it is bounded)
        threads = [threading.Thread(target=fn, args=(i,), daemon=True) for fn, i in clients]
        for th in threads:
            th.start()
        try:
            time.sleep(BEFORE)
            self.checker.phase = "fault"
            t0 = time.monotonic()
            nemesis()
            self.record.stall = (t0, time.monotonic())
        finally:
            self.checker.phase = "after"
            self.stop_at = time.monotonic() + AFTER
        bound = self.stop_at + RETRY_SECONDS + 2 * REQUEST_TIMEOUT
        for th in threads:
            th.join(max(0.0, bound - time.monotonic()))
            if th.is_alive():
                raise AssertionError("a load client did not finish")


class StallTest(harness.TallyTestCase):

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.t = self.track(harness.Tallyd(self.redis, [
            "--view-window", "0", "--redis-timeout", str(REDIS_TIMEOUT_MS),
            "--hold", str(HOLD_MS)]))
        self.addCleanup(self.t.close)
        self.t.start()

    def ready(self):
        return self.t.get("/readyz", timeout=5).status == 200

    def report(self, name, load, views, rows):
        """One line per stall with the figures the bound and the checker rest on."""
        ingest = [r for r in rows if r[2] in ("events", "events-keyed")]
        by = {}
        for article, events, outcome, _key, _kind, _phase in load.checker.ops:
            by[outcome] = by.get(outcome, 0) + events
        statuses = {}
        for r in ingest:
            statuses[r[3]] = statuses.get(r[3], 0) + 1
        worst = max(rows, key=lambda r: r[1])
        m = self.t.metrics()
        sys.stderr.write(
            "\n%s: %d requests (%d ingest: %r), events 200 %d / 503 %d / 504 %d, final views "
            "%d; slowest answer %.3f s (%s), bound %.1f s + %.1f s margin; tallyd: 504s %s, "
            "units fenced %s, redis timeouts %s\n"
            % (name, len(rows), len(ingest), dict(sorted(statuses.items())), by.get("ok", 0),
               by.get("fail", 0), by.get("info", 0), sum(views.values()), worst[1], worst[2],
               BOUND, MARGIN, harness.metric(m, "tally_requests_indeterminate_total"),
               harness.metric(m, "tally_redis_write_units_fenced_total"),
               harness.metric(m, "tally_redis_timeouts_total")))
        slow = {}
        for r in rows:
            slow[r[2]] = max(slow.get(r[2], 0.0), r[1])
        sys.stderr.write("  slowest per route: %s\n" % ", ".join(
            "%s %.3f" % kv for kv in sorted(slow.items())))
        sys.stderr.flush()

    def run_stall(self, name, nemesis):
        load = StallLoad("stall/" + name.replace(" ", "-"), self.t)
        load.run(nemesis)
        rows = load.record.snapshot()
        wait_until(self.ready, 15.0, message="tallyd not ready after the stall")
        time.sleep(1.1)  # stats reflect an acknowledged event within 1 second
        articles = load.checker.articles()
        views = {a: self.t.stats(a)["views"] for a in articles}
        in_redis = {a: self.redis.article_totals(a).get("views", 0) for a in articles}
        self.report(name, load, views, rows)
        self.assertEqual(views, in_redis)
        self.assertEqual(load.unexpected, [], "answers outside the contract: %r"
                         % load.unexpected[:5])
        self.assertEqual(load.checker.unexpected, [], "answers outside the contract: %r"
                         % load.checker.unexpected[:5])
        unanswered = [r for r in rows if r[4] != "answered"]
        self.assertEqual(unanswered, [], "requests without an answer")
        late = [r for r in rows if r[1] > BOUND + MARGIN]
        self.assertEqual(late, [], "answers later than --redis-timeout + --hold (%.1f s) + "
                                   "%.1f s: %r" % (BOUND, MARGIN, late[:10]))
        load.checker.check(views)
        # The stall was felt, and /healthz answered while it lasted.
        t0, t1 = load.record.stall
        during = [r for r in rows if t0 <= r[0] and r[0] + r[1] <= t1]
        self.assertTrue(any(r[2] == "healthz" and r[3] == 200 for r in during),
                        "no /healthz answered during the stall")
        self.assertTrue(any(r[2] in ("events", "events-keyed") and r[3] != 200 for r in rows),
                        "no write was refused or left unknown: the stall was not felt")
        tot = load.checker.totals()
        self.assertGreater(tot["ok_by_phase"]["before"], 0, "nothing acknowledged before")
        self.assertGreater(tot["ok_by_phase"]["after"], 0, "nothing acknowledged after")
        return load

    def test_debug_sleep(self):
        replies = []

        def nemesis():
            c = harness.RespClient(self.redis.port, timeout=STALL_SECONDS + 10)
            try:
                replies.append(c.command("DEBUG", "SLEEP", str(STALL_SECONDS)))
            finally:
                c.close()

        self.run_stall("DEBUG SLEEP", nemesis)
        self.assertEqual(replies, ["OK"])

    def test_sigstop(self):
        def nemesis():
            self.redis.pause()
            try:
                time.sleep(STALL_SECONDS)
            finally:
                self.redis.resume()

        self.run_stall("SIGSTOP", nemesis)

    def test_client_pause_all(self):
        def nemesis():
            ms = str(int(STALL_SECONDS * 1000))
            self.assertEqual(self.redis.command("CLIENT", "PAUSE", ms, "ALL"), "OK")
            time.sleep(STALL_SECONDS)

        self.run_stall("CLIENT PAUSE ALL", nemesis)

    def test_client_pause_write(self):
        # Reads go on, writes (the apply script) wait: tallyd reconnects and keeps reading
        # while its writes are fenced or refused.
        def nemesis():
            ms = str(int(STALL_SECONDS * 1000))
            self.assertEqual(self.redis.command("CLIENT", "PAUSE", ms, "WRITE"), "OK")
            time.sleep(STALL_SECONDS)

        self.run_stall("CLIENT PAUSE WRITE", nemesis)


class ProbeTest(harness.TallyTestCase):
    """A Redis that serves reads but holds writes for long (CLIENT PAUSE WRITE, 6 s): once a
    unit's reply is lost, tallyd sends no new unit until a probe write goes through, so only
    the requests in flight when the pause began can end as 504; the rest are 503 (never sent),
    each within the bound."""

    CLIENTS = 32
    PAUSE_MS = 6000

    def test_writes_held_for_long_give_503_not_a_stream_of_504(self):
        redis = self.track(harness.Redis().start())
        self.addCleanup(redis.close)
        t = self.track(harness.Tallyd(redis, [
            "--view-window", "0", "--redis-timeout", str(REDIS_TIMEOUT_MS),
            "--hold", str(HOLD_MS)]))
        self.addCleanup(t.close)
        t.start()
        lock = threading.Lock()
        statuses, slowest = {}, [0.0]
        stop_at = time.monotonic() + BEFORE + self.PAUSE_MS / 1000.0 + AFTER

        def client(i):
            with harness.KeepAliveClient(t.port, timeout=REQUEST_TIMEOUT) as cl:
                for _ in range(MAX_OPS):
                    if time.monotonic() >= stop_at:
                        break
                    sent = time.monotonic()
                    ex = cl.post_events(view_batch("probe/%d" % i, 1))
                    with lock:
                        statuses[ex.status] = statuses.get(ex.status, 0) + 1
                        slowest[0] = max(slowest[0], time.monotonic() - sent)
                    time.sleep(0.01)

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(self.CLIENTS)]
        for th in threads:
            th.start()
        time.sleep(BEFORE)
        self.assertEqual(redis.command("CLIENT", "PAUSE", str(self.PAUSE_MS), "WRITE"), "OK")
        for th in threads:
            th.join(stop_at - time.monotonic() + 2 * REQUEST_TIMEOUT)
            self.assertFalse(th.is_alive(), "a load client did not finish")
        sys.stderr.write("\nCLIENT PAUSE WRITE %d ms, %d clients: %r, slowest %.3f s\n"
                         % (self.PAUSE_MS, self.CLIENTS, dict(sorted(statuses.items())),
                            slowest[0]))
        self.assertEqual(set(statuses) - {200, 503, 504}, set(), statuses)
        self.assertGreater(statuses.get(503, 0), 0, statuses)
        self.assertLessEqual(statuses.get(504, 0), self.CLIENTS, statuses)
        self.assertLessEqual(slowest[0], BOUND + MARGIN)


class FenceTest(harness.TallyTestCase):
    """A write answered 504 does not run after its answer: Redis finds its unit past the
    unit's fence when it gets to it, refuses it and marks it so; a retry under the same
    Idempotency-Key is then counted, once."""

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        # One worker thread: the warm-up below reaches the worker that then writes.
        self.t = self.track(harness.Tallyd(self.redis, [
            "--view-window", "0", "--redis-timeout", str(REDIS_TIMEOUT_MS),
            "--hold", str(HOLD_MS)], threads=1))
        self.addCleanup(self.t.close)
        self.t.start()

    def markers(self, value):
        return [k for k in self.redis.keys("tally:{??}x:*")
                if self.redis.command("GET", k) == value]

    def test_a_write_sent_into_a_stopped_redis_is_fenced_and_its_retry_counts_once(self):
        body = view_batch("fence/a", 3)
        key = {"Idempotency-Key": "fence-1"}
        # Scripts, the day's visitor salt and Redis's clock in hand first: the request below
        # is about its write only (it is sent into the stopped Redis).
        self.assertEqual(self.t.post_events(view_batch("fence/warm", 1)).status, 200)
        self.redis.pause()
        try:
            sent = time.monotonic()
            r = self.t.post_events(body, key, timeout=REQUEST_TIMEOUT)
            took = time.monotonic() - sent
            health = self.t.get("/healthz", timeout=1)
        finally:
            self.redis.resume()
        self.assertEqual(r.status, 504, r)
        self.assertEqual(r.body["error"], "outcome_unknown")
        self.assertRegex(r.headers.get("Retry-After", ""), r"^[1-9][0-9]*$")
        self.assertLessEqual(took, BOUND + MARGIN)
        self.assertEqual(health.status, 200)
        wait_until(lambda: self.t.get("/readyz").status == 200, 15.0)
        # The unit waited in Redis's input on the connection tallyd had dropped; Redis ran it
        # when it woke, past its fence: refused, and its marker says so.
        wait_until(lambda: len(self.markers(b'["fenced"]')) == 1, 5.0,
                   message="no unit marked fenced")
        time.sleep(1.1)
        self.assertEqual(harness.counts(self.t.stats("fence/a"))["views"], 0)
        for _ in range(2):
            r = self.t.post_events(body, key)
            self.assertEqual((r.status, r.body), (200, {"accepted": 3, "ignored": 0}))
        time.sleep(1.1)
        self.assertEqual(harness.counts(self.t.stats("fence/a"))["views"], 3)
        self.assertEqual(self.redis.article_totals("fence/a").get("views"), 3)


# The model as tallyd tells the write script (include/tally/model.h, tally_model_arg()).
MODEL = "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+"


class ScriptFenceTest(harness.TallyTestCase):
    """The write script's side of the fence, against a real Redis: a unit reached past its
    fence is refused and marked so; a unit already applied answers as the first time whatever
    its fence (a resend of it is counted once); a refusal binds every later copy.

    Called as tallyd calls it: FCALL of the function library harness.Redis loaded. This class
    takes the direct path (apply: counted at once, a cluster or --fold-interval 0); the
    subclass below the journal path (ack: appended, counted by a fold). The checks
    (unit.lua) are the same code in both."""

    FUNCTION = "apply"
    JOURNAL = "tally:{00}q:fence-test"
    REGISTRY = "tally:{00}r:journals"

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.version = harness.functions_library()[len("tally_"):]

    def keys(self, attempt):
        return ["tally:{03}x:" + attempt]

    def unit(self, attempt, fence, idem="", digest=""):
        """One unit: one view of article "a" in bucket 03, fenced at FENCE (Unix ms); its
        segment keyed by the marker IDEM with the body's DIGEST, or by nothing."""
        keys = self.keys(attempt)
        return self.redis.command(
            "FCALL", "tally_%s_%s" % (self.FUNCTION, self.version), str(len(keys)), *keys,
            "tally:", "0", "600", "86400", str(int(time.time())), "%015d" % fence, "", MODEL,
            idem, digest, "1", "0", "0", *self.RECORDS)

    # One segment of 1 event: 1 article, 1 view (window 0: no repeat check).
    RECORDS = ("1", "03", "a", "1", "0", "0", "0", "0", "0")

    def views(self):
        return self.redis.article_totals("a").get("views", 0)

    def redis_ms(self):
        s, us = self.redis.command("TIME")
        return int(s) * 1000 + int(us) // 1000

    def test_a_unit_past_its_fence_is_refused_and_stays_refused(self):
        r = self.unit("late-1", self.redis_ms() - 1)
        self.assertEqual(r, [b"fenced"])
        self.assertEqual(self.redis.command("GET", "tally:{03}x:late-1"), b'["fenced"]')
        self.assertEqual(self.views(), 0)
        # A copy sent earlier, with a fence still ahead, reaches Redis later: refused too.
        self.assertEqual(self.unit("late-1", self.redis_ms() + 60000), [b"fenced"])
        self.assertEqual(self.views(), 0)

    def test_a_unit_within_its_fence_applies_once(self):
        r = self.unit("ok-1", self.redis_ms() + 60000)
        self.assertEqual(r[0], b"ok")
        self.assertEqual(r[2], [1, 1, 0, 0, 0])
        self.assertEqual(self.views(), 1)
        # A resend of the applied unit answers as the first time, past its fence or not.
        self.assertEqual(self.unit("ok-1", self.redis_ms() - 60000), r)
        self.assertEqual(self.unit("ok-1", self.redis_ms() + 60000), r)
        self.assertEqual(self.views(), 1)

    def test_a_fenced_keyed_unit_leaves_its_key_to_the_retry(self):
        home, body = "tally:{03}i:a:k1", "0123456789abcdef"
        # Fenced: nothing ran, the key's marker is not written (only the unit's own is).
        self.assertEqual(self.unit("k-1", self.redis_ms() - 1, home, body), [b"fenced"])
        self.assertIsNone(self.redis.command("GET", home))
        self.assertEqual(self.views(), 0)
        # The retry (another unit) counts it: a fenced try never answers 200 for nothing.
        r = self.unit("k-2", self.redis_ms() + 60000, home, body)
        self.assertEqual(r[2], [1, 1, 0, 0, 0])
        self.assertEqual(self.redis.command("GET", home), body.encode() + b" 1,0,0,0")
        self.assertEqual(self.views(), 1)
        # Its answer lost (a 504), a further retry is answered from the marker: counted once.
        self.assertEqual(self.unit("k-3", self.redis_ms() + 60000, home, body)[2],
                         [0, 1, 0, 0, 0])
        # Another body under the key counts nothing, whatever its fence.
        self.assertEqual(self.unit("k-4", self.redis_ms() + 60000, home, "fedcba9876543210")[2],
                         [2, 0, 0, 0, 0])
        self.assertEqual(self.views(), 1)


class AckScriptFenceTest(ScriptFenceTest):
    """The same units through ack, with the writer's journal and the registry as tallyd passes
    them; the views are read after folding the journal (fold, as tallyd's folder calls it), so
    that a unit acknowledged twice would show as two views, and a fenced one appends nothing."""

    FUNCTION = "ack"
    # No view to check, no comment delta, the journal entry's text (see ack.lua).
    RECORDS = ("0", "0", "03\na\n1\n0\n0\n0\n0\n0")

    def keys(self, attempt):
        return ["tally:{03}x:" + attempt, self.JOURNAL, self.REGISTRY]

    def views(self):
        folded = self.redis.command("FCALL", "tally_fold_" + self.version, "3", self.JOURNAL,
                                    self.REGISTRY, self.JOURNAL.replace("}q:", "}c:"), "tally:",
                                    MODEL, "1000", "", "", "1000")
        self.assertEqual(folded[1:4:2], [0, 0], folded)  # nothing left, nothing skipped
        self.assertEqual(self.redis.command("EXISTS", self.JOURNAL), 0)
        self.assertEqual(self.redis.command("ZCARD", self.REGISTRY), 0)
        return super().views()


if __name__ == "__main__":
    unittest.main()
