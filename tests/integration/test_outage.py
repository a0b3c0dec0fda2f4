"""Redis going away and coming back: readiness, 503 + Retry-After while it is gone, and under
load that no acknowledged event is lost and (with Idempotency-Key retries) none is counted
twice. Each test has a Redis of its own, with an append-only file that survives restarts."""

import concurrent.futures
import hashlib
import http.client
import re
import socketserver
import sys
import threading
import time
import unittest

import harness
from harness import counts, wait_until

LOAD_SECONDS = 6.0
OUTAGE_AT = 2.0
OUTAGE_SECONDS = 2.0
CLIENTS = 8


class OldRedis(socketserver.ThreadingTCPServer):
    """A server that speaks RESP like Redis 6.2 would to tallyd's handshake: INFO server says
    redis_version:6.2.0, SCRIPT LOAD answers a SHA1, anything else +OK (PING: +PONG). It counts
    the connections it took."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.connections = 0
        super().__init__(("127.0.0.1", 0), OldRedisHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def close(self):
        self.shutdown()
        self.server_close()


class OldRedisHandler(socketserver.StreamRequestHandler):
    def read_command(self):
        line = self.rfile.readline()
        if not line.startswith(b"*"):
            return None
        args = []
        for _ in range(int(line[1:])):
            n = int(self.rfile.readline()[1:])
            args.append(self.rfile.read(n + 2)[:n])
        return args

    def handle(self):
        self.server.connections += 1
        while True:
            try:
                args = self.read_command()
            except (OSError, ValueError):
                return
            if not args:
                return
            name = args[0].upper()
            if name == b"INFO":
                text = b"# Server\r\nredis_version:6.2.0\r\nredis_mode:standalone\r\n"
                out = b"$%d\r\n%s\r\n" % (len(text), text)
            elif name == b"SCRIPT":
                out = b"$40\r\n%s\r\n" % hashlib.sha1(args[-1]).hexdigest().encode()
            elif name == b"PING":
                out = b"+PONG\r\n"
            else:
                out = b"+OK\r\n"
            try:
                self.wfile.write(out)
            except OSError:
                return


class OutageTest(harness.TallyTestCase):

    def setUp(self):
        self.redis = self.track(harness.Redis())
        self.addCleanup(self.redis.close)

    def start_tallyd(self, *args):
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"] + list(args)))
        self.addCleanup(t.close)
        return t.start()

    def assertUnavailable(self, r):
        self.assertEqual(r.status, 503, r)
        retry = r.headers.get("Retry-After")
        self.assertIsNotNone(retry, r)
        self.assertRegex(retry, r"^[1-9][0-9]*$")
        self.assertIsInstance(r.body, dict, r)
        self.assertEqual(set(r.body), {"error", "message"}, r)
        self.assertEqual(r.body["error"], "unavailable")

    def assertOutageNoticed(self, t):
        """Every worker lost Redis and connected again (whether or not a client saw a 503
        depends on the reconnect backoff's jitter)."""
        m = t.metrics()
        self.assertGreaterEqual(harness.metric(m, "tally_redis_reconnects_total"), t.threads)

    def ready(self, t):
        """/readyz is 200: every worker (not only the one that answered) has Redis."""
        return t.get("/readyz", timeout=5).status == 200

    def not_ready(self, t):
        return (t.get("/readyz", timeout=5).status == 503 and
                harness.metric(t.metrics(), "tally_redis_up") == 0)

    def test_redis_stopped_and_started_again(self):
        self.redis.start()
        t = self.start_tallyd()
        self.assertEqual(t.post_events({"type": "view", "article": "o/1"}).status, 200)

        self.redis.stop()
        wait_until(lambda: self.not_ready(t), 3.0, message="/readyz did not turn 503")
        self.assertEqual(t.get("/healthz").status, 200)
        r = t.post_events({"type": "view", "article": "o/1"})
        self.assertUnavailable(r)
        self.assertUnavailable(t.get("/v1/stats/o%2F1"))
        self.assertUnavailable(t.get("/v1/stats?article=o%2F1"))

        self.redis.start()
        wait_until(lambda: self.ready(t), 10.0, message="/readyz did not turn 200 again")
        r = t.post_events({"type": "view", "article": "o/1"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"accepted": 1, "ignored": 0})
        # The view before the outage came back from the append-only file; the one refused
        # during it was not counted.
        self.assertEqual(counts(t.stats("o/1"))["views"], 2)

    def test_starts_while_redis_is_down_and_becomes_ready(self):
        self.redis.port = harness.free_port()  # nobody listens there yet
        t = self.start_tallyd()
        self.assertEqual(t.get("/healthz").status, 200)
        r = t.get("/readyz")
        self.assertEqual(r.status, 503, r)
        self.assertUnavailable(t.post_events({"type": "view", "article": "o/late"}))
        self.assertEqual(t.get("/readyz").status, 503)

        self.redis.start()
        wait_until(lambda: self.ready(t), 10.0, message="/readyz did not turn 200")
        r = t.post_events({"type": "view", "article": "o/late"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(counts(t.stats("o/late"))["views"], 1)

    def connected_clients(self):
        info = self.redis.command("INFO", "clients").decode()
        return int(re.search(r"^connected_clients:(\d+)", info, re.M).group(1))

    def test_readyz_is_503_while_any_worker_has_no_redis(self):
        """A collector whose first worker thread has Redis and whose second has not is not
        ready, whichever worker answers /readyz: Redis takes only two connections beside this
        test's own (maxclients), and the workers connect one after the other as they are made,
        each its write then its read connection, so the second worker's are refused until
        maxclients is raised."""
        self.redis.start()
        wait_until(lambda: self.connected_clients() == 1, 5.0,
                   message="Redis still counts the connection that loaded the functions")
        limit = self.redis.command("CONFIG", "GET", "maxclients")[1]
        self.redis.command("CONFIG", "SET", "maxclients", "3")
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"], threads=2))
        self.addCleanup(t.close)
        t.start()
        wait_until(lambda: harness.metric(t.metrics(), "tally_redis_up") == 1, 10.0,
                   message="the first worker did not get its Redis connections")
        self.assertEqual(self.connected_clients(), 3)
        want = {"status": "unavailable", "reason": "redis", "threads": 2,
                "threads_not_ready": [1]}
        # Each request on a new connection: the kernel spreads them over both workers.
        for _ in range(32):
            r = t.get("/readyz")
            self.assertEqual((r.status, r.body), (503, want), r)
            self.assertEqual(r.headers.get("Cache-Control"), "no-store", r)
        self.assertEqual(harness.metric(t.metrics(), "tally_redis_up"), 1)

        self.redis.command("CONFIG", "SET", "maxclients", limit)
        wait_until(lambda: t.get("/readyz").status == 200, 10.0,
                   message="/readyz did not turn 200 once the second worker could connect")
        self.assertEqual(harness.metric(t.metrics(), "tally_redis_up"), 2)
        for _ in range(32):
            r = t.get("/readyz")
            self.assertEqual((r.status, r.body), (200, {"status": "ready"}), r)

    def test_collector_that_can_hold_no_more_answers_503_at_once(self):
        self.redis.start()
        threads = harness.tallyd_threads()
        t = self.start_tallyd("--max-held", "2")
        n = 4 * threads + 8  # more than the THREADS x 2 events all workers may hold
        body = harness.encode_body({"type": "view", "article": "o/full"})
        self.redis.pause()
        try:
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                futures = [ex.submit(t.post_events, body, None, "application/json", 30)
                           for _ in range(n)]
                # The ones that do not fit are answered while Redis is still held.
                wait_until(lambda: sum(f.done() for f in futures) >= n - 2 * threads, 5.0,
                           message="requests beyond --max-held were not answered at once")
                self.redis.resume()
                answers = [f.result(timeout=30) for f in futures]
        finally:
            if self.redis.paused:
                self.redis.resume()
        statuses = sorted(r.status for r in answers)
        self.assertEqual(set(statuses) - {200, 503}, set(), statuses)
        for r in answers:
            if r.status == 503:
                self.assertUnavailable(r)
        self.assertGreaterEqual(statuses.count(503), n - 2 * threads, statuses)
        self.assertGreaterEqual(statuses.count(200), 1, statuses)
        self.assertEqual(counts(t.stats("o/full"))["views"], statuses.count(200))

    def test_redis_stalled_past_its_timeout_counts_each_answered_event_once(self):
        # Redis stops answering for longer than --redis-timeout (2 s) + --hold (1 s): tallyd
        # drops the connection with a write in flight, and answers every request within 3 s:
        # 503 for those never sent, 504 for the one in flight, whose fence keeps Redis from
        # running it when it wakes up. No 503 may hide a counted event.
        self.redis.start()
        t = self.start_tallyd()
        n = 12
        # Every worker has the day's visitor salt (connections are spread over the workers),
        # so that the writes below are sent into the stopped Redis, not held for the salt.
        for _ in range(8 * t.threads):
            self.assertEqual(t.post_events({"type": "view", "article": "o/warm"}).status, 200)
        self.redis.pause()
        try:
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                def timed():
                    sent = time.monotonic()
                    r = t.post_events({"type": "view", "article": "o/stall"}, None,
                                      "application/json", 60)
                    return r, time.monotonic() - sent

                futures = [ex.submit(timed) for _ in range(n)]
                wait_until(lambda: all(f.done() for f in futures), 10.0,
                           message="requests not answered while Redis was stopped")
                time.sleep(1.0)
                self.redis.resume()
                answers = [f.result(timeout=60) for f in futures]
        finally:
            if self.redis.paused:
                self.redis.resume()
        statuses = [r.status for r, _ in answers]
        self.assertEqual(set(statuses) - {503, 504}, set(), statuses)
        self.assertLessEqual(max(took for _, took in answers), 3.0 + 0.3, answers)
        for r, _ in answers:
            self.assertRegex(r.headers.get("Retry-After", ""), r"^[1-9][0-9]*$")
            self.assertEqual(r.body["error"], "unavailable" if r.status == 503
                             else "outcome_unknown")
        wait_until(lambda: self.ready(t), 10.0)
        time.sleep(1.1)  # what Redis ran from its input when it woke is in the stats now
        self.assertEqual(counts(t.stats("o/stall"))["views"], 0, statuses)

    def test_redis_refusing_writes_is_not_hammered(self):
        # OOM (like LOADING or BUSY) refuses a write without running it; tallyd retries
        # until the request's deadline and then answers 503. It must retry at a bounded
        # pace, not in a tight loop against a Redis that is already in trouble.
        self.redis.start()
        t = self.start_tallyd()
        # One write first, so that the collector has everything it fetches once (scripts,
        # the visitor salt) and the refused request is only about the write itself.
        self.assertEqual(t.post_events({"type": "view", "article": "o/oom"}).status, 200)
        self.redis.command("CONFIG", "SET", "maxmemory", "1")
        try:
            self.redis.command("CONFIG", "RESETSTAT")
            started = time.monotonic()
            r = t.post_events({"type": "view", "article": "o/oom"}, timeout=30)
            elapsed = time.monotonic() - started
            stats = self.redis.command("INFO", "commandstats").decode()
        finally:
            self.redis.command("CONFIG", "SET", "maxmemory", "0")
        self.assertUnavailable(r)
        # A function that may write is refused whole while Redis is out of memory: counted
        # as rejected, not as run.
        calls = sum(int(a) + int(b) for a, b in re.findall(
            r"cmdstat_fcall:calls=(\d+),.*?rejected_calls=(\d+)", stats))
        self.assertGreaterEqual(calls, 1)
        self.assertLessEqual(calls, 200, "one request was tried %d times in %.1f s against a "
                                         "Redis that refused it (OOM)" % (calls, elapsed))
        r = t.post_events({"type": "view", "article": "o/oom"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(counts(t.stats("o/oom"))["views"], 2)

    def test_a_script_refused_at_its_first_write_is_503_not_part_way(self):
        # Redis 7.0 checks min-replicas-to-write (NOREPLICAS) and maxmemory (OOM) of a script
        # without shebang flags at its first write, inside the script: nothing ran, so it is
        # retried until the deadline and answered 503 + Retry-After, not left unanswered.
        self.redis.start()
        t = self.start_tallyd()
        self.assertEqual(t.post_events({"type": "view", "article": "o/first"}).status, 200)
        for setting in (("min-replicas-to-write", "1", "0"), ("maxmemory", "1", "0")):
            with self.subTest(setting=setting[0]):
                self.redis.command("CONFIG", "SET", setting[0], setting[1])
                try:
                    r = t.post_events({"type": "view", "article": "o/first"}, timeout=30)
                finally:
                    self.redis.command("CONFIG", "SET", setting[0], setting[2])
                self.assertUnavailable(r)
                self.assertEqual(counts(t.stats("o/first"))["views"], 1)
        self.assertNotIn("failed part-way", t.log())
        r = t.post_events({"type": "view", "article": "o/first"})
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        self.assertEqual(counts(t.stats("o/first"))["views"], 2)

    def test_a_week_and_a_month_answer_while_redis_takes_no_writes(self):
        # A week's or month's list and totals keep each bucket's part a minute (kept.lua, a
        # function that writes). While Redis takes no writes -- min-replicas-to-write unmet,
        # as after a failed background save (MISCONF) -- that function is refused before it
        # runs; its read-only twin answers the same without keeping anything.
        self.redis.start()
        t = self.start_tallyd()
        body = [{"type": "view", "article": a} for a, n in (("ro/a", 3), ("ro/b", 2), ("ro/c", 1))
                for _ in range(n)] + [{"type": "share", "article": "ro/b", "network": "x"}]
        self.assertEqual(t.post_events(body).status, 200)
        self.assertEqual(counts(t.stats("ro/a"))["views"], 3)  # folded
        want = [{"article": "ro/a", "count": 3}, {"article": "ro/b", "count": 2},
                {"article": "ro/c", "count": 1}]
        self.redis.command("CONFIG", "SET", "min-replicas-to-write", "1")
        try:
            for period in ("week", "month"):
                r = t.get("/v1/top?metric=views&period=%s&limit=5" % period)
                self.assertEqual((r.status, r.body),
                                 (200, {"metric": "views", "period": period, "articles": want}))
                r = t.get("/v1/totals?period=%s" % period)
                self.assertEqual(r.status, 200, r)
                self.assertEqual((r.body["views"], r.body["shares"]), (6, 1), r.body)
            r = t.get("/v1/top?metric=views&period=day&limit=5")
            self.assertEqual((r.status, r.body["articles"]), (200, want))
            kept = self.redis.command("KEYS", "tally:{??}k:*")
            refused = self.redis.command("INFO", "errorstats").decode()
        finally:
            self.redis.command("CONFIG", "SET", "min-replicas-to-write", "0")
        self.assertEqual(kept, [])  # nothing kept while Redis took no writes
        self.assertIn("errorstat_NOREPLICAS", refused)
        self.assertNotIn("level=error", t.log())

    def test_a_redis_older_than_7_0_is_refused_with_one_log_line(self):
        old = OldRedis()
        self.addCleanup(old.close)
        t = self.track(harness.Tallyd(None, ["--view-window", "0"], redis_port=old.port))
        self.addCleanup(t.close)
        t.start()
        # Every worker connects, is refused, and tries again later: still one line.
        wait_until(lambda: old.connections >= 2 * t.threads, 15.0)
        self.assertTrue(self.not_ready(t))
        r = t.post_events({"type": "view", "article": "o/old"})
        self.assertUnavailable(r)
        lines = [l for l in t.log().splitlines() if "version 6.2.0" in l]
        self.assertEqual(len(lines), 1, t.log())
        self.assertIn("level=error", lines[0])
        self.assertIn("tallyd needs 7.0 or later", lines[0])
        self.assertIn("127.0.0.1:%d" % old.port, lines[0])

        self.redis.start()
        t = self.start_tallyd()
        self.assertEqual(t.post_events({"type": "view", "article": "o/noscript"}).status, 200)
        self.redis.command("SCRIPT", "FLUSH")
        r = t.post_events({"type": "view", "article": "o/noscript"})
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        self.assertEqual(counts(t.stats("o/noscript"))["views"], 2)

    # ---- under load ----

    def run_load(self, t, client, outage):
        """Run CLIENT(index, stop_at, result) in CLIENTS threads for LOAD_SECONDS while
        OUTAGE() takes Redis away for OUTAGE_SECONDS; return the per-client results."""
        results = [dict(ok=0, unavailable=0, other=0, errors=0, unknown=0, attempts=0,
                        keys={}, error_list=[]) for _ in range(CLIENTS)]
        stop_at = time.monotonic() + LOAD_SECONDS
        threads = [threading.Thread(target=client, args=(i, stop_at, results[i]), daemon=True)
                   for i in range(CLIENTS)]
        for th in threads:
            th.start()
        try:
            time.sleep(OUTAGE_AT)
            outage()
            time.sleep(OUTAGE_SECONDS)
        finally:
            if not self.redis.running():
                self.redis.start()
        for th in threads:
            th.join(LOAD_SECONDS + 60)
            self.assertFalse(th.is_alive(), "a load client did not finish")
        wait_until(lambda: self.ready(t), 10.0, message="/readyz did not turn 200 after load")
        return results

    def test_no_acknowledged_write_is_lost_when_redis_stops_under_load(self):
        self.redis.start()
        t = self.start_tallyd()

        def client(i, stop_at, res):
            body = harness.encode_body({"type": "view", "article": "load/%d" % i})
            n = 0
            while time.monotonic() < stop_at and n < 50000:
                n += 1
                res["attempts"] += 1
                # What each attempt may have counted: a 200 one view, a 4xx or a 503 none, a
                # refused connection none; a 504 (outcome_unknown: the write went out and was
                # not confirmed in time), a reset, a missing answer or another answer may or may
                # not have counted ("unknown").
                try:
                    r = t.post_events(body, timeout=15)
                except (OSError, http.client.HTTPException) as e:
                    res["errors"] += 1
                    res["error_list"].append(repr(e))
                    if not isinstance(e, ConnectionRefusedError):
                        res["unknown"] += 1
                    continue
                if r.status == 200 and r.body == {"accepted": 1, "ignored": 0}:
                    res["ok"] += 1
                elif r.status == 503:
                    res["unavailable"] += 1
                elif r.status == 504 and isinstance(r.body, dict) and \
                        r.body.get("error") == "outcome_unknown":
                    res["unknown"] += 1
                else:
                    res["other"] += 1
                    res["error_list"].append(repr(r))
                    if not 400 <= r.status < 500:
                        res["unknown"] += 1

        results = self.run_load(t, client, self.redis.stop)
        summary = [(r["attempts"], r["ok"], r["unavailable"], r["errors"], r["unknown"])
                   for r in results]
        sys.stderr.write("\nload (attempts, 200, 503, errors, unknown) per client: %r\n"
                         % (summary,))
        for i, res in enumerate(results):
            views = counts(t.stats("load/%d" % i))["views"]
            with self.subTest(client=i, attempts=res["attempts"], ok=res["ok"],
                              unknown=res["unknown"], views=views):
                self.assertGreaterEqual(views, res["ok"], "acknowledged views were lost")
                self.assertLessEqual(views, res["ok"] + res["unknown"],
                                     "views counted beyond the 200s and the attempts of "
                                     "unknown outcome (a 503 or a 4xx was counted)")
                self.assertEqual(res["other"], 0, res["error_list"][:5])
                self.assertEqual(res["errors"], 0, res["error_list"][:5])
        self.assertGreater(sum(r["ok"] for r in results), 0, summary)
        self.assertOutageNoticed(t)

    def test_idempotent_retries_count_each_key_exactly_once_across_a_redis_crash(self):
        self.redis.start()
        t = self.start_tallyd()
        retry_bound = LOAD_SECONDS + 40

        def send_until_ok(article, key, res, give_up_at):
            body = harness.encode_body({"type": "view", "article": article})
            while time.monotonic() < give_up_at:
                res["attempts"] += 1
                try:
                    r = t.post_events(body, {"Idempotency-Key": key}, timeout=15)
                except (OSError, http.client.HTTPException) as e:
                    res["errors"] += 1
                    res["error_list"].append(repr(e))
                    time.sleep(0.05)
                    continue
                if r.status == 200:
                    if r.body != {"accepted": 1, "ignored": 0}:
                        res["other"] += 1
                        res["error_list"].append(repr(r))
                    res["ok"] += 1
                    res["keys"][key] = True
                    return True
                if r.status == 503:
                    res["unavailable"] += 1
                elif r.status == 504 and isinstance(r.body, dict) and \
                        r.body.get("error") == "outcome_unknown":
                    res["unknown"] += 1  # retried under the same key: counted at most once
                else:
                    res["other"] += 1
                    res["error_list"].append(repr(r))
                time.sleep(0.05)
            res["keys"][key] = False
            return False

        def client(i, stop_at, res):
            give_up_at = time.monotonic() + retry_bound
            n = 0
            while time.monotonic() < stop_at and n < 50000:
                send_until_ok("idem-load/%d" % i, "idem-load-%d-%d" % (i, n), res, give_up_at)
                n += 1

        # SIGKILL: whatever Redis acknowledged is in the append-only file (appendfsync always).
        results = self.run_load(t, client, self.redis.kill)
        for i, res in enumerate(results):
            # Anything left unacknowledged is retried now that Redis is back.
            for key, acked in list(res["keys"].items()):
                if not acked:
                    send_until_ok("idem-load/%d" % i, key, res, time.monotonic() + 20)
        summary = [(r["attempts"], r["ok"], r["unavailable"], r["unknown"], r["errors"])
                   for r in results]
        sys.stderr.write("\nidempotent load (attempts, 200, 503, 504, errors) per client: %r\n"
                         % (summary,))
        for i, res in enumerate(results):
            acked = sum(1 for v in res["keys"].values() if v)
            views = counts(t.stats("idem-load/%d" % i))["views"]
            with self.subTest(client=i, keys=len(res["keys"]), acked=acked, views=views):
                self.assertEqual(acked, len(res["keys"]), "keys never acknowledged")
                self.assertEqual(views, acked)
                self.assertEqual(res["other"], 0, res["error_list"][:5])
        self.assertGreater(sum(r["ok"] for r in results), 0, summary)
        self.assertOutageNoticed(t)


if __name__ == "__main__":
    unittest.main()
