"""tally's HTTP/1.1 layer on raw sockets: framing by RFC 9112 (refusals answer tally's JSON error
with CORS headers and close), keep-alive rules of HTTP/1.0 and 1.1, HEAD, Expect: 100-continue,
methods (405 with Allow, 501), pipelining answered in order and bounded, and a drain that
answers pipelined requests held for Redis."""

import json
import signal
import socket
import time
import unittest

import harness
from harness import wait_until

UA = harness.BROWSER_UA.encode()
SENTINEL = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
PIPELINE_MAX = 8  # requests a connection may have waiting for answers (src/http_conn.c)


def post(body, extra=b"", version=b"1.1", length=True):
    head = (b"POST /v1/events HTTP/" + version + b"\r\nHost: t\r\nUser-Agent: " + UA +
            b"\r\nContent-Type: application/json\r\n" + extra)
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def event(article):
    return json.dumps({"type": "view", "article": article}).encode()


def read_answers(sock, n, timeout=5.0):
    """Read until N whole answers (by Content-Length) are in, or the server closes. Returns
    ([(status, headers, body)], closed)."""
    sock.settimeout(timeout)
    out, closed = b"", False
    while True:
        resp = harness.split_responses(out)
        if len(resp) >= n and resp[-1][0] is not None and all(
                len(b) == int(h.get("content-length", "0")) for _, h, b in resp):
            break
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            closed = True
            break
        out += chunk
    return harness.split_responses(out), closed


def closed_after(sock, timeout=3.0):
    """Does the server close SOCK (after what it sent) within TIMEOUT?"""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


class HttpTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0"])
        try:
            cls.tallyd.start()
        except Exception:
            cls.tallyd.close()
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.t = self.tallyd

    def connect(self, port=None):
        s = socket.create_connection(("127.0.0.1", port or self.t.port), timeout=5)
        self.addCleanup(s.close)
        return s

    def views(self, article):
        return self.t.stats(article)["views"]

    # ---- framing ----

    def test_framing_refusals_answer_json_with_cors_and_close(self):
        body = event("http/refused")
        chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        big = b"x" * 70000
        big_chunks = b"".join(b"4000\r\n" + big[i:i + 0x4000] + b"\r\n"
                              for i in range(0, 0x10000, 0x4000)) + b"1\r\nx\r\n0\r\n\r\n"
        cases = [
            ("Content-Length with a sign", post(body, b"Content-Length: +%d\r\n" % len(body),
                                                 length=False), 400, "ambiguous_framing"),
            ("a list of lengths", post(body, b"Content-Length: %d, %d\r\n"
                                       % (len(body), len(body)), length=False),
             400, "ambiguous_framing"),
            ("two equal lengths", post(body, b"Content-Length: %d\r\n" % len(body)), 400,
             "ambiguous_framing"),
            ("Transfer-Encoding: gzip", post(body, b"Transfer-Encoding: gzip\r\n", length=False),
             400, "ambiguous_framing"),
            ("Transfer-Encoding: gzip, chunked", post(chunk, b"Transfer-Encoding: gzip, chunked"
                                                      b"\r\n", length=False),
             400, "ambiguous_framing"),
            ("Transfer-Encoding with Content-Length", post(chunk, b"Transfer-Encoding: chunked"
                                                           b"\r\n"),
             400, "ambiguous_framing"),
            ("Transfer-Encoding in HTTP/1.0", post(chunk, b"Transfer-Encoding: chunked\r\n",
                                                   version=b"1.0", length=False),
             400, "ambiguous_framing"),
            ("no Host", b"GET /v1/stats/a HTTP/1.1\r\n\r\n", 400, "bad_request"),
            ("two Hosts", b"GET /v1/stats/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
             "bad_request"),
            ("whitespace before a colon", b"GET /v1/stats/a HTTP/1.1\r\nHost : a\r\n\r\n", 400,
             "bad_request"),
            ("obs-fold", b"GET /v1/stats/a HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400,
             "bad_request"),
            ("a NUL in a value", b"GET /v1/stats/a HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
             400, "bad_request"),
            ("a control in a value", b"GET /v1/stats/a HTTP/1.1\r\nHost: a\r\nX: \x1b[m\r\n\r\n",
             400, "bad_request"),
            ("a bare LF", b"GET /v1/stats/a HTTP/1.1\nHost: a\n\n", 400, "bad_request"),
            ("chunk size 0x", post(b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                                   b"Transfer-Encoding: chunked\r\n", length=False),
             400, "bad_request"),
            ("chunk size +", post(b"+%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
                                  b"Transfer-Encoding: chunked\r\n", length=False),
             400, "bad_request"),
            ("a chunked body over 64 KiB", post(big_chunks, b"Transfer-Encoding: chunked\r\n",
                                                length=False), 413, "payload_too_large"),
            ("a declared body over 64 KiB", post(big), 413, "payload_too_large"),
            ("a head over 96 KiB", b"GET /v1/stats/a HTTP/1.1\r\nHost: a\r\nX: " +
             b"a" * 100000 + b"\r\n\r\n", 431, "headers_too_large"),
            ("Expect other than 100-continue", post(body, b"Expect: teapot\r\n"), 417,
             "expectation_failed"),
        ]
        for name, data, status, code in cases:
            with self.subTest(name):
                s = self.connect()
                try:
                    s.sendall(data + SENTINEL)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                resp, closed = read_answers(s, 2, timeout=3)
                self.assertEqual([r[0] for r in resp], [status], resp)
                st, hdrs, raw = resp[0]
                self.assertEqual(hdrs.get("connection"), "close", hdrs)
                self.assertEqual(hdrs.get("content-type"), "application/json", hdrs)
                self.assertEqual(hdrs.get("access-control-allow-origin"), "*", hdrs)
                self.assertEqual(json.loads(raw)["error"], code, raw)
                self.assertTrue(closed or closed_after(s), "left open after %s" % name)
        self.assertEqual(self.views("http/refused"), 0)

    def test_a_chunked_body_is_counted_once(self):
        body = event("http/chunked")
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                          for i in range(0, len(body), 7)) + b"0\r\nX-Trailer: 1\r\n\r\n"
        s = self.connect()
        s.sendall(post(chunks, b"Transfer-Encoding: chunked\r\n", length=False) + SENTINEL)
        resp, closed = read_answers(s, 2)
        self.assertEqual([r[0] for r in resp], [200, 200], resp)
        self.assertEqual(json.loads(resp[0][2]), {"accepted": 1, "ignored": 0})
        self.assertTrue(closed or closed_after(s))
        self.assertEqual(self.views("http/chunked"), 1)

    # ---- connections ----

    def test_keep_alive_rules_of_1_0_and_1_1(self):
        get10 = b"GET /healthz HTTP/1.0\r\n\r\n"
        with self.subTest("HTTP/1.0: closed after the answer"):
            s = self.connect()
            s.sendall(get10)
            resp, closed = read_answers(s, 1)
            self.assertEqual([r[0] for r in resp], [200])
            self.assertTrue(closed or closed_after(s))
        with self.subTest("HTTP/1.0 with keep-alive: kept open"):
            s = self.connect()
            ka = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            s.sendall(ka)
            resp, _ = read_answers(s, 1)
            self.assertEqual(resp[0][1].get("connection"), "keep-alive", resp)
            self.assertTrue(resp[0][2].startswith(b"{"))
            s.sendall(ka)
            resp, _ = read_answers(s, 1)
            self.assertEqual([r[0] for r in resp], [200])
        with self.subTest("HTTP/1.1: kept open, closed when asked"):
            s = self.connect()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            resp, closed = read_answers(s, 1)
            self.assertEqual(([r[0] for r in resp], closed), ([200], False))
            self.assertNotIn("connection", resp[0][1])
            s.sendall(SENTINEL)
            resp, closed = read_answers(s, 1)
            self.assertEqual([r[0] for r in resp], [200])
            self.assertEqual(resp[0][1].get("connection"), "close")
            self.assertTrue(closed or closed_after(s))

    def test_head_has_the_length_and_no_body(self):
        s = self.connect()
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + SENTINEL)
        s.settimeout(3)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        first, sep, rest = out.partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertIn(b"\r\nContent-Length: 16", first)
        # The next answer follows the head at once: no body in between.
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 OK\r\n"), out)

    def test_expect_100_continue(self):
        body = event("http/continue")
        s = self.connect()
        head, _, _ = post(body, b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")
        s.sendall(head + b"\r\n\r\n")
        s.settimeout(3)
        self.assertEqual(s.recv(25), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        resp, _ = read_answers(s, 1)
        self.assertEqual([r[0] for r in resp], [200], resp)
        self.assertEqual(self.views("http/continue"), 1)
        # A body refused on its declared length gets its answer at once, and no 100.
        s = self.connect()
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 100000\r\n\r\n")
        resp, closed = read_answers(s, 1)
        self.assertEqual([r[0] for r in resp], [413], resp)

    def test_methods_paths_and_cors_of_the_layer(self):
        cases = [
            (b"PUT /healthz", 405, "method_not_allowed", "GET, HEAD", None),
            (b"DELETE /v1/events", 405, "method_not_allowed", "POST, OPTIONS", "*"),
            (b"PATCH /v1/stats/a", 405, "method_not_allowed", "GET, HEAD", "*"),
            (b"BREW /v1/stats/a", 501, "not_implemented", None, "*"),
            (b"BREW /healthz", 501, "not_implemented", None, None),
            (b"GET /v1/stats/a/b", 404, "not_found", None, "*"),
            (b"GET /v1/nope", 404, "not_found", None, "*"),
        ]
        s = self.connect()
        for line, status, code, allow, cors in cases:
            with self.subTest(line):
                s.sendall(line + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                resp, closed = read_answers(s, 1)
                self.assertFalse(closed, "closed after %r" % line)
                st, hdrs, raw = resp[0]
                self.assertEqual((st, json.loads(raw)["error"]), (status, code), resp)
                self.assertEqual(hdrs.get("allow"), allow, hdrs)
                self.assertEqual(hdrs.get("access-control-allow-origin"), cors, hdrs)
                self.assertEqual(hdrs.get("content-type"), "application/json", hdrs)

    # ---- pipelining ----

    def test_pipelined_answers_keep_their_order(self):
        article = "http/order"
        self.assertEqual(self.t.post_events({"type": "view", "article": article}).status, 200)
        self.t.get("/v1/stats/" + harness.quote(article))  # cached now
        stats = (b"GET /v1/stats/" + harness.quote(article).encode() +
                 b" HTTP/1.1\r\nHost: t\r\n\r\n")
        s = self.connect()
        # The view waits for Redis; the stats and health answers are ready at once, and must
        # still leave after it.
        s.sendall(post(event(article)) + stats + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" +
                  post(event(article)) + stats)
        resp, _ = read_answers(s, 5)
        self.assertEqual([r[0] for r in resp], [200] * 5, resp)
        bodies = [json.loads(r[2]) for r in resp]
        self.assertEqual(bodies[0], {"accepted": 1, "ignored": 0})
        self.assertEqual(bodies[1]["article"], article)
        self.assertEqual(bodies[2], {"status": "ok"})
        self.assertEqual(bodies[3], {"accepted": 1, "ignored": 0})
        self.assertEqual(bodies[4]["article"], article)
        self.assertEqual(self.views(article), 3)

    def test_pipelining_is_bounded(self):
        article = "http/bounded"
        n = 3 * PIPELINE_MAX
        self.redis.pause()
        try:
            s = self.connect()
            s.sendall(b"".join(post(event(article)) for _ in range(n)))
            # Only PIPELINE_MAX are taken in; the rest stay unread until answers go out.
            wait_until(lambda: harness.metric(self.t.metrics(), "tally_pending_requests")
                       == PIPELINE_MAX, 5.0, message="the pipeline did not fill")
            time.sleep(0.3)
            self.assertEqual(harness.metric(self.t.metrics(), "tally_pending_requests"),
                             PIPELINE_MAX)
        finally:
            self.redis.resume()
        resp, _ = read_answers(s, n, timeout=10)
        self.assertEqual([r[0] for r in resp], [200] * n)
        self.assertEqual(self.views(article), n)


class DrainTest(harness.TallyTestCase):

    def test_sigterm_answers_pipelined_requests_held_for_redis(self):
        """Redis unreachable, --hold 3000: a /healthz and a POST in one write, SIGTERM half a
        second later. Both are answered (the POST's 503 when the hold ends), then exit 0."""
        t = self.track(harness.Tallyd(None, ["--hold", "3000"], redis_port=harness.free_port()))
        self.addCleanup(t.close)
        t.start()
        s = socket.create_connection(("127.0.0.1", t.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + post(event("http/drain")))
        time.sleep(0.5)
        t.send_signal(signal.SIGTERM)
        resp, closed = read_answers(s, 2, timeout=10)
        self.assertEqual([r[0] for r in resp], [200, 503], resp)
        self.assertNotIn("connection", resp[0][1])
        self.assertEqual(resp[1][1].get("connection"), "close")
        self.assertTrue(closed or closed_after(s))
        self.assertEqual(t.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
