"""GET /v1/live, what is bound by time (it holds the timing lock: see tests/CMakeLists.txt):
  - an event acknowledged by another collector on the same Redis shows on a stream within
    2 s, with exact counts, and an article nobody changed sends nothing;
  - the collector reads the watched articles once a second per worker thread, however many
    streams watch them: one HGETALL per distinct article and worker, never one per stream;
  - SIGTERM ends every stream at once (the last chunk, then the connection closes) and the
    collector exits promptly;
  - a reader that falls behind is sent nothing more until it catches up, and is dropped when
    what waits for it does not drain within 10 s, even while it takes a byte now and then:
    counted as slow, never as an overflow.
"""

import signal
import socket
import time
import unittest

import harness
from sse import LiveCase, events


class LiveTimingTest(LiveCase):

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

    def test_reads_once_a_second_per_worker_whatever_the_streams(self):
        threads = self.tallyd.threads
        articles = ["r%d" % i for i in range(5)]
        streams = [self.open(articles) for _ in range(60)]
        for s in streams:
            got, deadline = [], time.monotonic() + 3
            while len(events(got)) < 5 and time.monotonic() < deadline:
                got += s.read(0.05)
            self.assertEqual(len(events(got)), 5, got)
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

    def test_a_reader_that_falls_behind_is_dropped_as_slow(self):
        m = self.tallyd.metrics()
        before = {r: harness.metric(m, "tally_live_dropped_total", reason=r)
                  for r in ("slow", "overflow")}
        articles = ["slow-%03d-" % i + "x" * 180 for i in range(100)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.tallyd.port))
        q = "&".join("article=" + a for a in articles)
        sock.sendall(("GET /v1/live?%s HTTP/1.1\r\nHost: t\r\n\r\n" % q).encode())
        sock.settimeout(5)
        self.assertTrue(sock.recv(1).startswith(b"H"))
        harness.wait_until(lambda: self.open_streams() >= 1, timeout=3)
        # Every article changes every second; the reader takes one byte every 2 s.
        t0, dropped = time.monotonic(), None
        while time.monotonic() - t0 < 40:
            self.post(self.other, [{"type": "view", "article": a} for a in articles])
            if int(time.monotonic() - t0) % 2 == 0:
                sock.recv(1)
            m = self.tallyd.metrics()
            if harness.metric(m, "tally_live_dropped_total", reason="slow") > before["slow"]:
                dropped = time.monotonic() - t0
                break
            time.sleep(1)
        self.assertIsNotNone(dropped, "a stalled stream was not dropped")
        self.assertEqual(harness.metric(m, "tally_live_dropped_total", reason="slow"),
                         before["slow"] + 1)
        self.assertEqual(harness.metric(m, "tally_live_dropped_total", reason="overflow"),
                         before["overflow"])
        self.assertGreater(dropped, 10.0)
        harness.wait_until(lambda: self.open_streams() == 0, timeout=3,
                           message="the dropped stream is still counted open")

if __name__ == "__main__":
    unittest.main()
