"""GET /v1/live: stats as Server-Sent Events, on real collectors sharing one Redis.

What must hold (what is bound by time is in test_live_timing.py, which holds the timing lock):
  - a stream opens with one "stats" event per article, its data exactly what
    /v1/stats/{article} answers; the head says text/event-stream, no-store, X-Accel-Buffering
    no, CORS as for every /v1 read; HTTP/1.1 is chunked, HTTP/1.0 ends with the connection;
  - every stream watching a changed article gets the change once; an article that does not
    change sends nothing but keepalive comments (at least every 30 s);
  - past --live-max streams a collector answers 503 with Retry-After, and a stream whose
    client left gives its place back;
  - bad articles answer 400 as /v1/stats does;
  - nothing pipelined behind a stream on its connection is run: not a view, not another stream.
"""

import time
import unittest

import harness
from sse import LiveCase, events


class LiveTest(LiveCase):

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

    def test_requests_pipelined_behind_a_stream_are_not_run(self):
        body = b'{"type":"view","article":"piped"}'
        post = (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nUser-Agent: %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (harness.BROWSER_UA.encode(), len(body), body))
        live = b"GET /v1/live?article=other HTTP/1.1\r\nHost: t\r\n\r\n"
        harness.wait_until(lambda: self.open_streams() == 0, timeout=3,
                           message="streams of earlier tests still open")
        s = self.open(["piped"], pipelined=post + live)
        self.assertEqual(s.status, 200)
        blocks, _ = s.read_until(lambda b: b[0] == "event", 2)
        self.assertEqual(events(blocks), [("event", "stats", self.stats_raw(self.tallyd, "piped"))])
        time.sleep(0.5)
        self.assertEqual(self.tallyd.stats("piped")["views"], 0)
        self.assertEqual(self.open_streams(), 1)
        self.assertEqual(self.tallyd.stats("other")["views"], 0)
        # The stream goes on, and the connection carries nothing else.
        self.post(self.other, [{"type": "view", "article": "piped"}])
        blocks, _ = s.read_until(lambda b: b[0] == "event", 3)
        self.assertEqual(events(blocks), [("event", "stats", self.stats_raw(self.other, "piped"))])
        self.assertIn('"views":1,', events(blocks)[0][2])
        self.assertNotIn(b"HTTP/1.1", s.body + s.buf)

if __name__ == "__main__":
    unittest.main()
