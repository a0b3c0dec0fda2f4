"""GET /v1/live: stats as Server-Sent Events, on real collectors sharing one Redis.

What must hold:
  - a stream opens with one "stats" event per article, its data exactly what
    /v1/stats/{article} answers; the head says text/event-stream, no-store, X-Accel-Buffering
    no, CORS as for every /v1 read; HTTP/1.1 is chunked, HTTP/1.0 ends with the connection;
  - an event acknowledged by another collector on the same Redis shows on the stream within
    2 s, with exact counts; an article that does not change sends nothing but keepalive
    comments (at least every 30 s);
  - the collector reads the watched articles once a second per worker thread, however many
    streams watch them: one HGETALL per distinct article and worker, never one per stream;
  - past --live-max streams a collector answers 503 with Retry-After, and a stream whose
    client left gives its place back;
  - SIGTERM ends every stream at once (the last chunk, then the connection closes) and the
    collector exits promptly;
  - bad articles answer 400 as /v1/stats does.
"""

import select
import signal
import socket
import time
import unittest

import harness
from harness import quote

UA = harness.BROWSER_UA


class Stream:
    """A raw /v1/live client: the head, then the body de-chunked (or close-delimited) and cut
    into SSE blocks: ("event", name, data) for events, ("comment", text) for comment lines,
    ("field", line) for anything else (retry:)."""

    def __init__(self, port, articles, http10=False, headers=None):
        q = "&".join("article=" + quote(a) for a in articles)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET /v1/live?%s HTTP/1.%d\r\nHost: t\r\nUser-Agent: %s\r\n%s\r\n"
                           % (q, 0 if http10 else 1, UA, extra)).encode())
        self.buf = b""
        self.body = b""   # de-chunked, not yet cut into blocks
        self.ended = False  # the last chunk came (chunked), or the connection closed
        self.closed = False
        self.status, self.headers = self._head()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"

    def _recv(self, timeout):
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def _head(self):
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in self.buf:
            if not self._recv(deadline - time.monotonic()):
                raise AssertionError("no head: %r" % self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        self.status_line = lines[0]
        return int(lines[0].split()[1]), headers

    def _dechunk(self):
        if not self.chunked:
            self.body += self.buf
            self.buf = b""
            return
        while True:
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            size = int(self.buf[:i], 16)
            if size == 0:
                if self.buf[i:i + 4] == b"\r\n\r\n":
                    self.ended = True
                    self.buf = self.buf[i + 4:]
                return
            if len(self.buf) < i + 2 + size + 2:
                return
            assert self.buf[i + 2 + size:i + 4 + size] == b"\r\n", self.buf
            self.body += self.buf[i + 2:i + 2 + size]
            self.buf = self.buf[i + 4 + size:]

    def _blocks(self):
        out = []
        while b"\n\n" in self.body:
            block, self.body = self.body.split(b"\n\n", 1)
            lines = block.decode("utf-8").split("\n")
            if lines[0].startswith(":"):
                out.append(("comment", lines[0][1:].strip()))
            elif lines[0].startswith("event: "):
                self.assert_event(lines)
                out.append(("event", lines[0][7:], lines[1][6:]))
            else:
                out.append(("field", block.decode()))
        return out

    @staticmethod
    def assert_event(lines):
        assert len(lines) == 2 and lines[1].startswith("data: "), lines

    def read(self, seconds):
        """Every block that arrives within SECONDS."""
        out = []
        deadline = time.monotonic() + seconds
        while not self.ended and not self.closed:
            self._dechunk()
            out += self._blocks()
            if not self._recv(deadline - time.monotonic()):
                break
        self._dechunk()
        if self.closed and not self.chunked:
            self.ended = True
        return out + self._blocks()

    def read_until(self, predicate, seconds):
        """Blocks until one satisfies PREDICATE or SECONDS pass: (blocks, seconds taken)."""
        out = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            got = self.read(min(0.05, seconds - (time.monotonic() - t0)))
            out += got
            if any(predicate(b) for b in got) or self.ended:
                break
        return out, time.monotonic() - t0

    def close(self):
        self.sock.close()


def events(blocks):
    return [b for b in blocks if b[0] == "event"]


class LiveTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--live-max", "1000"])
        cls.other = harness.Tallyd(cls.redis, ["--view-window", "0"])
        cls.daemons = (cls.other,)
        try:
            cls.tallyd.start()
            cls.other.start()
        except Exception:
            cls.other.close()
            cls.tallyd.close()
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.other.close()
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.streams = []

    def tearDown(self):
        for s in self.streams:
            s.close()

    def open(self, articles, t=None, **kw):
        s = Stream((t or self.tallyd).port, articles, **kw)
        self.streams.append(s)
        return s

    def open_ready(self, articles, t):
        """A stream on a collector just started, whose workers may not all have Redis yet."""
        deadline = time.monotonic() + 5
        while True:
            s = self.open(articles, t)
            if s.status != 503 or time.monotonic() > deadline:
                return s
            s.close()
            time.sleep(0.05)

    def post(self, t, events):
        r = t.post_events(events)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["accepted"], len(events), r)

    def stats_raw(self, t, article):
        r = t.get("/v1/stats/" + quote(article))
        self.assertEqual(r.status, 200, r)
        return r.raw.decode().rstrip("\n")

    def open_streams(self):
        return harness.metric(self.tallyd.metrics(), "tally_live_streams")

    # ---- the first events ----

    def test_opens_with_each_articles_stats_exactly(self):
        self.post(self.tallyd, [{"type": "view", "article": "news/a"}] * 3 +
                  [{"type": "share", "article": "b/é", "network": "twitter"}])
        s = self.open(["news/a", "b/é", "never-seen", "news/a"])
        self.assertEqual(s.status, 200)
        self.assertEqual(s.status_line, "HTTP/1.1 200 OK")
        self.assertEqual(s.headers["content-type"], "text/event-stream")
        self.assertEqual(s.headers["cache-control"], "no-store")
        self.assertEqual(s.headers["x-accel-buffering"], "no")
        self.assertEqual(s.headers["access-control-allow-origin"], "*")
        self.assertEqual(s.headers["transfer-encoding"], "chunked")
        self.assertNotIn("content-length", s.headers)
        blocks, _ = s.read_until(lambda b: False, 0.5)
        want = [("event", "stats", self.stats_raw(self.tallyd, a))
                for a in ("news/a", "b/é", "never-seen")]
        self.assertEqual(blocks, [("field", "retry: 2000")] + want)
        self.assertIn('"views":3', want[0][2])
        self.assertIn('"shares_by_network":{"twitter":1}', want[1][2])

    def test_http10_stream_ends_with_the_connection(self):
        self.post(self.tallyd, [{"type": "view", "article": "old"}])
        s = self.open(["old"], http10=True)
        self.assertEqual(s.status_line, "HTTP/1.0 200 OK")
        self.assertNotIn("transfer-encoding", s.headers)
        self.assertNotIn("content-length", s.headers)
        self.assertEqual(s.headers["connection"], "close")
        blocks, _ = s.read_until(lambda b: b[0] == "event", 2)
        self.assertEqual(events(blocks), [("event", "stats", self.stats_raw(self.tallyd, "old"))])

    def test_head_answers_the_head_alone(self):
        r = self.tallyd.request("HEAD", "/v1/live?article=x")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers["Content-Type"], "text/event-stream")
        self.assertEqual(r.raw, b"")

    def test_bad_articles_are_400(self):
        cases = [("/v1/live", "missing_article"),
                 ("/v1/live?article=", "invalid_article"),
                 ("/v1/live?article=a%20b%0A", "invalid_article"),
                 ("/v1/live?article=%FF", "invalid_article"),
                 ("/v1/live?" + "&".join("article=a%d" % i for i in range(101)),
                  "too_many_articles")]
        for path, code in cases:
            r = self.tallyd.get(path)
            self.assertEqual(r.status, 400, (path, r))
            self.assertEqual(r.body["error"], code, (path, r))
        r = self.tallyd.request("POST", "/v1/live?article=a", b"")
        self.assertEqual(r.status, 405, r)
        self.assertEqual(self.open_streams(), 0)

    # ---- changes ----

    def test_a_view_on_another_collector_shows_within_2s(self):
        s = self.open(["story", "quiet"])
        quiet = ("event", "stats", self.stats_raw(self.tallyd, "quiet"))
        blocks, _ = s.read_until(lambda b: b == quiet, 2)
        self.assertEqual(len(events(blocks)), 2, blocks)
        for n in (1, 3):
            self.post(self.other, [{"type": "view", "article": "story"}] * (1 if n == 1 else 2))
            t0 = time.monotonic()
            blocks, took = s.read_until(lambda b: b[0] == "event", 3)
            took = time.monotonic() - t0
            got = events(blocks)
            self.assertEqual(len(got), 1, blocks)
            self.assertLess(took, 2.0, "the change took %.2f s to arrive" % took)
            self.assertEqual(got[0][2], self.stats_raw(self.other, "story"))
            self.assertIn('"article":"story","views":%d,' % n, got[0][2])
        # The article nobody changed sent nothing more.
        self.assertEqual(events(s.read(1.5)), [])

    def test_streams_watching_one_article_each_get_each_change_once(self):
        streams = [self.open(["shared"]) for _ in range(20)]
        for s in streams:
            self.assertEqual(len(events(s.read_until(lambda b: b[0] == "event", 2)[0])), 1)
        self.post(self.other, [{"type": "share", "article": "shared", "network": "email"}])
        want = self.stats_raw(self.other, "shared")
        for s in streams:
            blocks, _ = s.read_until(lambda b: b[0] == "event", 3)
            self.assertEqual(events(blocks), [("event", "stats", want)])
        time.sleep(1.5)
        for s in streams:
            self.assertEqual(events(s.read(0)), [])

    def test_unchanged_articles_send_only_keepalives(self):
        s = self.open(["still"])
        blocks, _ = s.read_until(lambda b: False, 16.5)
        self.assertEqual([b[0] for b in blocks], ["field", "event", "comment"], blocks)
        self.assertEqual(blocks[2], ("comment", "keepalive"))

    def test_reads_once_a_second_per_worker_whatever_the_streams(self):
        threads = self.tallyd.threads
        articles = ["r%d" % i for i in range(5)]
        streams = [self.open(articles) for _ in range(60)]
        for s in streams:
            self.assertEqual(len(events(s.read_until(lambda b: False, 0.3)[0])), 5)
        before_reads = harness.metric(self.tallyd.metrics(), "tally_live_reads_total")
        self.redis.command("CONFIG", "RESETSTAT")
        time.sleep(3.0)
        stats = self.redis.command("INFO", "commandstats")
        stats = stats.decode() if isinstance(stats, bytes) else stats
        hgetall = 0
        for line in stats.splitlines():
            if line.startswith("cmdstat_hgetall:"):
                hgetall = int(line.split("calls=")[1].split(",")[0])
        reads = harness.metric(self.tallyd.metrics(), "tally_live_reads_total") - before_reads
        # A read a second per worker (a tick may fall either side of the window), each of the
        # 5 articles once: 60 streams would make 300 a second if each read for itself.
        self.assertLessEqual(reads, 4 * threads)
        self.assertGreaterEqual(reads, 2)
        self.assertLessEqual(hgetall, 4 * threads * len(articles))
        self.assertEqual(hgetall % len(articles), 0, hgetall)

    # ---- the cap, leaving, stopping ----

    def test_cap_answers_503_and_a_closed_stream_gives_its_place_back(self):
        with harness.Tallyd(self.redis, ["--live-max", "2"]) as t:
            self.track(t)
            a, b = self.open_ready(["x"], t), self.open_ready(["y"], t)
            for s in (a, b):
                self.assertEqual(s.status, 200)
            r = t.get("/v1/live?article=z")
            self.assertEqual(r.status, 503, r)
            self.assertIn(r.headers["Retry-After"], ("1", "2"))
            self.assertEqual(r.body["error"], "unavailable")
            self.assertEqual(harness.metric(t.metrics(), "tally_live_refused_total"), 1)
            a.close()
            harness.wait_until(lambda: harness.metric(t.metrics(), "tally_live_streams") == 1,
                               timeout=3, message="the closed stream was not let go")
            c = self.open(["z"], t)
            self.assertEqual(c.status, 200)

    def test_sigterm_ends_streams_at_once(self):
        with harness.Tallyd(self.redis) as t:
            self.track(t)
            streams = [self.open_ready(["s%d" % i], t) for i in range(5)]
            for s in streams:
                s.read_until(lambda b: b[0] == "event", 2)
            t0 = time.monotonic()
            t.send_signal(signal.SIGTERM)
            for s in streams:
                s.read_until(lambda b: False, 3)
                self.assertTrue(s.ended, "stream not ended after SIGTERM")
                while not s.closed and s._recv(1):
                    pass
                self.assertTrue(s.closed, "connection not closed after the last chunk")
                s.close()  # as a browser would; else the collector lingers 2 s for it
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertEqual(t.wait(5), 0)
            self.assertLess(time.monotonic() - t0, 2.0)


if __name__ == "__main__":
    unittest.main()
