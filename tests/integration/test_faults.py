"""Faults injected into real processes under load, each judged by one counter checker.

Every test starts a Redis of its own (append-only file, appendfsync always) and a tallyd
(--view-window 0 --rate-limit 0), runs CLIENTS keep-alive clients for a bounded time with one
fault in the middle, then reads every article's views through GET /v1/stats and checks them
Jepsen-style (notes/reliability-and-security.md §1.7), with tally's stricter semantics:

  ok    200: the events are in Redis;
  fail  4xx/429/503, or no connection at all: definitely not counted;
  info  504 outcome_unknown, or a reset, an end of stream or a timeout after the request
        went out: indeterminate.

  views >= sum of ok events            nothing acknowledged was lost
  views <= sum of ok + info events     nothing refused was counted
  keyed clients (each batch retried with one Idempotency-Key until a 200):
  views == sum of events of the acknowledged keys, and every key is acknowledged: exactly once.

Half of the clients send unkeyed batches, half keyed ones; each client has its own article.
Faults: Redis SIGKILL + restart (AOF replay), Redis SIGSTOP/SIGCONT, CLIENT PAUSE ALL, DEBUG
SLEEP (all three past --redis-timeout), tallyd SIGTERM, tallyd SIGKILL; tallyd is started again
on the same Redis after the last two.
"""

import random
import signal
import sys
import threading
import time
import unittest

import harness
from harness import wait_until

CLIENTS = 8                 # half unkeyed, half keyed-with-retry
LOAD_SECONDS = 6.0          # the clients send for this long ...
FAULT_AT = 2.0              # ... with the fault starting this far in
AFTER_FAULT = 1.5           # and for at least this long after it is over
REQUEST_TIMEOUT = 12.0      # far past every answer a 2 s fault may delay
RETRY_SECONDS = 20.0        # a keyed client retries its last key this long after the load
MAX_OPS = 100000            # per client: a bound besides time
REDIS_TIMEOUT_MS = 500      # --redis-timeout of the stall tests
STALL_SECONDS = 2.0         # SIGSTOP, CLIENT PAUSE and DEBUG SLEEP: 4x --redis-timeout
REDIS_DOWN_SECONDS = 1.5    # between the SIGKILL of Redis and its restart
TALLYD_DOWN_SECONDS = 0.5   # between the SIGKILL of tallyd and the new one
DRAIN_BOUND = 15.0          # seconds from SIGTERM to tallyd's exit
STATS_LAG = 1.1             # "stats reflect an acknowledged event within 1 second"
# Acknowledged events wait in their collector's journal until folded. A live collector folds
# its own; the journal of one that is gone (SIGKILL) is folded by any other once it has been
# idle 5 s, in a reclaim run once a second. After the load every journal is folded and
# deleted, and taken out of the registry: the registry empty, the counts are final.
REGISTRY = "tally:{00}r:journals"
RECLAIM_BOUND = 10.0        # seconds after the load for the registry to empty


class CounterChecker:
    """The record of every client operation, as (article, events, outcome[, key]), and the
    check of the final counts against it. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []          # (article, events, outcome, key, kind, phase)
        self.unexpected = []   # answers a correct tallyd never gives to these requests
        self.unanswered = []   # (phase, Exchange) of every request that got no answer
        self.phase = "before"  # "before", "fault" or "after" the fault: set by the test

    def record(self, article, events, outcome, key=None, kind=None):
        assert outcome in ("ok", "fail", "info"), outcome
        with self.lock:
            self.ops.append((article, events, outcome, key, kind, self.phase))

    def note_unexpected(self, what):
        with self.lock:
            self.unexpected.append(what)

    def classify(self, ex, events):
        """The outcome ("ok", "fail" or "info") of one exchange that carried EVENTS unkeyed or
        under one key: a 200 must acknowledge them all, a 503 must say "unavailable" with a
        Retry-After, a 504 "outcome_unknown" with a Retry-After (may or may not have counted);
        a refused connection sent nothing; a reset or a missing answer may or may not have
        counted. Anything else is noted as unexpected."""
        if ex.kind == "answered":
            if ex.status == 200:
                if ex.body != {"accepted": events, "ignored": 0}:
                    self.note_unexpected(ex)
                return "ok"
            if ex.status == 503:
                if (ex.response.headers.get("Retry-After") is None or
                        not isinstance(ex.body, dict) or ex.body.get("error") != "unavailable"):
                    self.note_unexpected(ex)
                return "fail"
            if ex.status == 504:
                if (ex.response.headers.get("Retry-After") is None or
                        not isinstance(ex.body, dict) or
                        ex.body.get("error") != "outcome_unknown"):
                    self.note_unexpected(ex)
                return "info"
            self.note_unexpected(ex)
            return "fail" if 400 <= ex.status < 500 else "info"
        with self.lock:
            self.unanswered.append((self.phase, ex))
        return "fail" if ex.kind == "refused" else "info"

    def articles(self):
        with self.lock:
            return sorted({op[0] for op in self.ops})

    def bounds(self):
        """{article: {"keyed", "lower", "upper", "keys", "unacked"}}: the least and the most
        views each article may have; for keyed articles "keys" acknowledged and the keys
        never acknowledged."""
        per = {}
        with self.lock:
            ops = list(self.ops)
        for article, events, outcome, key, _kind, _phase in ops:
            a = per.setdefault(article, {"keyed": key is not None, "ok": 0, "info": 0,
                                         "keys": {}})
            if a["keyed"] != (key is not None):
                raise AssertionError("article %r has keyed and unkeyed operations" % article)
            if key is None:
                a[outcome] = a.get(outcome, 0) + events
                continue
            k = a["keys"].setdefault(key, {"events": events, "ok": False, "info": False})
            if k["events"] != events:
                raise AssertionError("key %r was sent with %d and %d events"
                                     % (key, k["events"], events))
            k[outcome] = True
        out = {}
        for article, a in per.items():
            if not a["keyed"]:
                out[article] = {"keyed": False, "lower": a["ok"], "upper": a["ok"] + a["info"],
                                "keys": 0, "unacked": []}
                continue
            acked = sum(k["events"] for k in a["keys"].values() if k["ok"])
            maybe = sum(k["events"] for k in a["keys"].values() if not k["ok"] and k["info"])
            out[article] = {"keyed": True, "lower": acked, "upper": acked + maybe,
                            "keys": sum(1 for k in a["keys"].values() if k["ok"]),
                            "unacked": sorted(key for key, k in a["keys"].items() if not k["ok"])}
        return out

    def totals(self):
        """Operation counts for the report."""
        t = {"attempts": 0, "ok": 0, "ok_events": 0, "fail": 0, "answered_fail": 0,
             "info": 0, "kinds": {}, "ok_by_phase": {"before": 0, "fault": 0, "after": 0}}
        with self.lock:
            ops = list(self.ops)
        for _article, events, outcome, _key, kind, phase in ops:
            t["attempts"] += 1
            t[outcome] += 1
            t["kinds"][kind] = t["kinds"].get(kind, 0) + 1
            if outcome == "fail" and kind == "answered":
                t["answered_fail"] += 1
            if outcome == "ok":
                t["ok_events"] += events
                t["ok_by_phase"][phase] += 1
        return t

    def check(self, views):
        """VIEWS: {article: final views}. Returns the report rows; raises AssertionError naming
        every property that does not hold."""
        rows, problems = [], []
        for article, b in sorted(self.bounds().items()):
            v = views[article]
            lost = max(0, b["lower"] - v)
            rows.append((article, b, v, lost))
            if v < b["lower"]:
                problems.append("%s: %d views, but %d were acknowledged: %d acknowledged views "
                                "lost" % (article, v, b["lower"], lost))
            if v > b["upper"]:
                problems.append("%s: %d views, but at most %d may be counted (200s + "
                                "indeterminate): %d refused views counted"
                                % (article, v, b["upper"], v - b["upper"]))
            if b["keyed"]:
                if b["unacked"]:
                    problems.append("%s: %d keys never acknowledged: %r"
                                    % (article, len(b["unacked"]), b["unacked"][:5]))
                if v != b["lower"]:
                    problems.append("%s: %d views, but the acknowledged keys carry %d: not "
                                    "exactly once" % (article, v, b["lower"]))
        if problems:
            raise AssertionError("counter checker:\n  " + "\n  ".join(problems))
        return rows


def view_batch(article, n):
    return [{"type": "view", "article": article}] * n


class Load:
    """CLIENTS client threads against the tallyd that CURRENT() returns (it may change when a
    fault restarts tallyd), recording into one CounterChecker."""

    def __init__(self, name, current):
        self.name = name
        self.current = current
        self.checker = CounterChecker()
        self.stop_at = None

    def port(self):
        return self.current().port

    def classify(self, ex, events):
        return self.checker.classify(ex, events)

    def unkeyed(self, i):
        article = "%s/u%d" % (self.name, i)
        rnd = random.Random(i)
        with harness.KeepAliveClient(self.port, timeout=REQUEST_TIMEOUT) as cl:
            for _ in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                n = rnd.randint(1, 3)
                ex = cl.post_events(view_batch(article, n))
                outcome = self.classify(ex, n)
                self.checker.record(article, n, outcome, kind=ex.kind)
                if outcome != "ok":
                    time.sleep(0.02)

    def keyed(self, i):
        article = "%s/k%d" % (self.name, i)
        rnd = random.Random(1000 + i)
        with harness.KeepAliveClient(self.port, timeout=REQUEST_TIMEOUT) as cl:
            for seq in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                key = "%s-k%d-%d" % (self.name, i, seq)
                n = rnd.randint(1, 3)
                body = view_batch(article, n)
                for _ in range(MAX_OPS):
                    ex = cl.post_events(body, {"Idempotency-Key": key})
                    outcome = self.classify(ex, n)
                    self.checker.record(article, n, outcome, key=key, kind=ex.kind)
                    if outcome == "ok" or time.monotonic() > self.stop_at + RETRY_SECONDS:
                        break
                    time.sleep(0.02)

    def run(self, nemesis):
        """Run the clients; call NEMESIS() FAULT_AT seconds in (it returns once the fault is
        over); keep the load for at least AFTER_FAULT more seconds; wait for every client."""
        self.stop_at = time.monotonic() + LOAD_SECONDS
        threads = [threading.Thread(target=self.keyed if i % 2 else self.unkeyed, args=(i,),
                                    daemon=True) for i in range(CLIENTS)]
        for th in threads:
            th.start()
        try:
            time.sleep(FAULT_AT)
            self.checker.phase = "fault"
            nemesis()
        finally:
            self.checker.phase = "after"
            self.stop_at = max(self.stop_at, time.monotonic() + AFTER_FAULT)
        bound = self.stop_at + RETRY_SECONDS + 2 * REQUEST_TIMEOUT
        for th in threads:
            th.join(max(0.0, bound - time.monotonic()))
            if th.is_alive():
                raise AssertionError("a load client did not finish")


class CheckerTest(unittest.TestCase):
    """The checker itself: it must catch what it is there to catch."""

    def checker(self):
        c = CounterChecker()
        c.record("u", 2, "ok")
        c.record("u", 1, "info")
        c.record("u", 3, "fail")
        c.record("k", 1, "info", key="a")
        c.record("k", 1, "ok", key="a")
        c.record("k", 2, "fail", key="b")
        c.record("k", 2, "ok", key="b")
        return c

    def test_bounds(self):
        b = self.checker().bounds()
        self.assertEqual((b["u"]["lower"], b["u"]["upper"]), (2, 3))
        self.assertEqual((b["k"]["lower"], b["k"]["upper"], b["k"]["keys"]), (3, 3, 2))

    def test_holds(self):
        self.assertEqual(len(self.checker().check({"u": 2, "k": 3})), 2)
        self.assertEqual(len(self.checker().check({"u": 3, "k": 3})), 2)

    def test_catches_a_lost_acknowledged_event(self):
        with self.assertRaisesRegex(AssertionError, "u: 1 views, but 2 were acknowledged"):
            self.checker().check({"u": 1, "k": 3})

    def test_catches_a_refused_event_counted(self):
        with self.assertRaisesRegex(AssertionError, "refused views counted"):
            self.checker().check({"u": 4, "k": 3})

    def test_catches_a_keyed_batch_counted_twice(self):
        with self.assertRaisesRegex(AssertionError, "k: 4 views.*not exactly once"):
            self.checker().check({"u": 2, "k": 4})

    def test_catches_a_key_never_acknowledged(self):
        c = self.checker()
        c.record("k", 1, "fail", key="c")
        with self.assertRaisesRegex(AssertionError, "1 keys never acknowledged"):
            c.check({"u": 2, "k": 3})


class FaultTest(harness.TallyTestCase):

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.started = time.monotonic()

    def start_tallyd(self, *args):
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"]
                                      + list(args)))
        self.addCleanup(t.close)
        return t.start()

    def ready(self, t):
        return t.get("/readyz", timeout=5).status == 200

    def finish(self, fault, load, t, answered_only=False):
        """Read the final counts through T, run the checker, print the report."""
        wait_until(lambda: self.ready(t), 15.0, message="tallyd not ready after the fault")
        try:
            wait_until(lambda: self.redis.command("ZCARD", REGISTRY) == 0, RECLAIM_BOUND,
                       interval=0.1)
        except AssertionError:
            self.fail("journals left unfolded %.0f s after the load: %r" % (
                RECLAIM_BOUND, self.redis.command("ZRANGE", REGISTRY, "0", "-1", "WITHSCORES")))
        c = load.checker
        time.sleep(STATS_LAG)
        views = {a: t.stats(a)["views"] for a in c.articles()}
        in_redis = {a: self.redis.article_totals(a).get("views", 0) for a in c.articles()}
        self.assertEqual(views, in_redis, "GET /v1/stats differs from Redis %.1f s after the "
                                          "last write" % STATS_LAG)
        tot = c.totals()
        rows = None
        try:
            rows = c.check(views)
        finally:
            bounds = c.bounds()
            acked_keys = sum(b["keys"] for b in bounds.values())
            lost = sum(max(0, b["lower"] - views[a]) for a, b in bounds.items())
            sys.stderr.write(
                "\n%s: attempts %d, 200s %d (%d events; %d before, %d during, %d after the "
                "fault), 503s %d, refused %d, indeterminate %d, kinds %r; keyed: %d keys "
                "acknowledged; %.1f s\n"
                % (fault, tot["attempts"], tot["ok"], tot["ok_events"],
                   tot["ok_by_phase"]["before"], tot["ok_by_phase"]["fault"],
                   tot["ok_by_phase"]["after"], tot["answered_fail"],
                   tot["kinds"].get("refused", 0), tot["info"], tot["kinds"], acked_keys,
                   time.monotonic() - self.started))
            for a, b in sorted(bounds.items()):
                sys.stderr.write("  %-28s views %6d  acknowledged %6d  at most %6d%s\n"
                                 % (a, views[a], b["lower"], b["upper"],
                                    "  (%d keys)" % b["keys"] if b["keyed"] else ""))
            odd = [(p, ex) for p, ex in c.unanswered if ex.kind != "refused"]
            for p, ex in odd[:10]:
                sys.stderr.write("  unanswered (%s the fault): %r\n"
                                 % ({"fault": "during"}.get(p, p), ex))
            sys.stderr.write("  lost: %d\n" % lost)
            sys.stderr.flush()
        self.assertEqual(c.unexpected, [], "answers no correct tallyd gives: %r"
                         % c.unexpected[:5])
        self.assertGreater(tot["ok_by_phase"]["before"], 0, "nothing acknowledged before the "
                                                            "fault")
        self.assertGreater(tot["ok_by_phase"]["after"], 0, "nothing acknowledged after the "
                                                           "fault: tallyd did not recover")
        if answered_only:
            # tallyd stayed up: every request was answered (200, 503 or 504), none was left
            # without an answer.
            self.assertEqual(set(tot["kinds"]), {"answered"}, tot["kinds"])
        return rows

    # ---- Redis faults ----

    def run_redis_fault(self, fault, nemesis, felt_metric, *args):
        t = self.start_tallyd(*args)
        load = Load("faults/" + fault.replace(" ", "-"), lambda: t)
        load.run(nemesis)
        self.finish(fault, load, t, answered_only=True)
        # The fault reached tallyd (else this test proved nothing).
        self.assertGreaterEqual(harness.metric(t.metrics(), felt_metric), 1, felt_metric)

    def test_redis_sigkill_and_restart_with_aof_replay(self):
        def nemesis():
            self.redis.kill()
            time.sleep(REDIS_DOWN_SECONDS)
            self.redis.start()

        # --redis-timeout 500: requests held for the dead Redis reach their deadline
        # (--hold 1 s + 0.5 s) before it is back, so some are answered 503 -- which the
        # checker's upper bound then holds to "not counted".
        self.run_redis_fault("redis SIGKILL", nemesis, "tally_redis_reconnects_total",
                             "--redis-timeout", str(REDIS_TIMEOUT_MS))

    def test_redis_stopped_with_sigstop_past_the_redis_timeout(self):
        def nemesis():
            self.redis.pause()
            try:
                time.sleep(STALL_SECONDS)
            finally:
                self.redis.resume()

        self.run_redis_fault("redis SIGSTOP", nemesis, "tally_redis_timeouts_total",
                             "--redis-timeout", str(REDIS_TIMEOUT_MS))

    def test_redis_client_pause_all_past_the_redis_timeout(self):
        def nemesis():
            reply = self.redis.command("CLIENT", "PAUSE", str(int(STALL_SECONDS * 1000)), "ALL")
            self.assertEqual(reply, "OK")
            time.sleep(STALL_SECONDS)

        self.run_redis_fault("redis CLIENT PAUSE", nemesis, "tally_redis_timeouts_total",
                             "--redis-timeout", str(REDIS_TIMEOUT_MS))

    def test_redis_debug_sleep_past_the_redis_timeout(self):
        replies = []

        def sleeper():
            c = harness.RespClient(self.redis.port, timeout=STALL_SECONDS + 10)
            try:
                replies.append(c.command("DEBUG", "SLEEP", str(STALL_SECONDS)))
            except Exception as e:  # noqa: BLE001 -- reported below
                replies.append(e)
            finally:
                c.close()

        def nemesis():
            th = threading.Thread(target=sleeper, daemon=True)
            th.start()
            th.join(STALL_SECONDS + 15)

        self.run_redis_fault("redis DEBUG SLEEP", nemesis, "tally_redis_timeouts_total",
                             "--redis-timeout", str(REDIS_TIMEOUT_MS))
        self.assertEqual(replies, ["OK"])

    # ---- tallyd faults ----

    def test_tallyd_sigterm_under_load_then_a_new_tallyd(self):
        current = [self.start_tallyd()]
        exit_codes = []

        def nemesis():
            old = current[0]
            old.send_signal(signal.SIGTERM)
            exit_codes.append(old.wait(DRAIN_BOUND))
            current[0] = self.start_tallyd()

        load = Load("faults/tallyd-SIGTERM", lambda: current[0])
        load.run(nemesis)
        self.finish("tallyd SIGTERM", load, current[0])
        self.assertEqual(exit_codes, [0], "tallyd did not exit 0 within %.0f s of SIGTERM"
                         % DRAIN_BOUND)
        # Every request was answered, or refused: at connect, or reset unread (a connection
        # still in the kernel's backlog when the listener closed, or a keep-alive request that
        # crossed the close of its idle connection). None went unanswered after it was read.
        kinds = load.checker.totals()["kinds"]
        self.assertEqual(kinds.get("no_answer", 0), 0, "requests left without an answer by a "
                                                       "SIGTERM: %r" % kinds)

    def test_tallyd_sigkill_under_load_then_a_new_tallyd(self):
        current = [self.start_tallyd()]

        def nemesis():
            current[0].kill()
            time.sleep(TALLYD_DOWN_SECONDS)
            current[0] = self.start_tallyd()

        load = Load("faults/tallyd-SIGKILL", lambda: current[0])
        load.run(nemesis)
        self.finish("tallyd SIGKILL", load, current[0])


if __name__ == "__main__":
    unittest.main()
