"""Hostile clients on raw sockets: malformed, truncated, oversized, mis-encoded and smuggled
requests, slow and silent clients, a flood of idle connections and a rate-limit flood.

Each request must get the right 4xx (or, for the pixel, its GIF with the refusal in
Tally-Outcome) or a close, and the daemon must keep serving: /healthz is asked after each.
Nothing hostile may be counted: a control article gets one view before the suite and one after
and must end at exactly 2, and /v1/totals?period=all and the set of articles in Redis must hold
exactly what the control and the legitimate cases sent (tracked in COUNTED).
"""

import collections
import json
import resource
import select
import socket
import sys
import threading
import time
import unittest

import harness
from harness import wait_until

CONTROL = "hostile/control"
UA = harness.BROWSER_UA.encode()
CLOSE = b"Connection: close\r\n"
# A last request that makes the server close the connection once everything before it was
# answered: raw() then returns at once, and an answer to anything hidden in between shows.
SENTINEL = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
REQUEST_DEADLINE = 10.0   # tallyd cuts a request not whole this long after its first byte ...
IDLE_TIMEOUT = 10.0       # ... and closes a connection idle this long
CUT_SLACK = 1.5           # scheduling slack on top of either
FLOOD = 2000              # idle connections opened at once ...
MAX_CONNECTIONS = 500     # ... against --max-connections 500 --threads 2
SERVER_BACKLOG = 1024     # tallyd's listen() backlog per worker (src/server.c)
RSS_LIMIT = 64 << 20
RATE = 10                 # --rate-limit of the flood test: burst 4 x RATE
RATE_SENT = 100           # requests sent at once: well over the burst and what refills


def post(body, headers=b"", content_length=True):
    """A POST /v1/events with BODY; HEADERS are extra header lines (each ending in CRLF)."""
    head = (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nUser-Agent: " + UA +
            b"\r\nContent-Type: application/json\r\n" + headers)
    if content_length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def event(article):
    return json.dumps({"type": "view", "article": article}).encode()


def pixel_request(article, close=True):
    """A whole GET of the view pixel of ARTICLE (already URL-safe): what a smuggler hides."""
    return (b"GET /v1/pixel.gif?type=view&article=" + article.encode() +
            b" HTTP/1.1\r\nHost: t\r\nUser-Agent: " + UA + b"\r\n" + (CLOSE if close else b"") +
            b"\r\n")


def chunked(body, size=None):
    """BODY as one chunk whose size line is SIZE (default: the right one), then the end."""
    size = b"%x" % len(body) if size is None else size
    return size + b"\r\n" + body + b"\r\n0\r\n\r\n"


def listen_queue(port):
    """Connections waiting in the accept queues of the listening sockets on PORT (the
    rx_queue of LISTEN rows of /proc/net/tcp is the queue's current length)."""
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


class HostileTest(harness.TallyTestCase):
    """One tallyd (--view-window 0) for the raw cases; the flood tests start their own on the
    same Redis. Test names order the suite: test_zz_* checks the totals last."""

    counted = collections.Counter()  # article -> views a legitimate case had counted

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0"])
        try:
            cls.tallyd.start()
            r = cls.tallyd.post_events({"type": "view", "article": CONTROL})
            if (r.status, r.body) != (200, {"accepted": 1, "ignored": 0}):
                raise AssertionError("the control view: %r" % (r,))
        except Exception:
            cls.tallyd.close()
            cls.redis.close()
            raise
        cls.counted = collections.Counter({CONTROL: 1})

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.t = self.tallyd

    # ---- helpers ----

    def assertServing(self, t=None):
        t = t or self.t
        self.assertTrue(t.running(), "tallyd is gone (exit %r)" % t.proc.poll())
        r = t.get("/healthz", timeout=5)
        self.assertEqual((r.status, r.body), (200, {"status": "ok"}))

    def views(self, article, t=None):
        return (t or self.t).stats(article)["views"]

    def expect(self, data, statuses, closed=None, error=None, not_counted=(), timeout=3.0,
               shut_write=False):
        """Send DATA on a new connection: the answers' statuses must be STATUSES exactly
        (and the first one's JSON error code ERROR), the connection closed by the server or
        not (CLOSED, unless None), the articles NOT_COUNTED still at 0; then /healthz."""
        out, was_closed = self.t.raw(data, timeout, shut_write=shut_write)
        resp = harness.split_responses(out)
        what = "answers %r to %r" % (out[:400], data[:300])
        self.assertEqual([s for s, _, _ in resp], statuses, what)
        if closed is not None:
            self.assertEqual(was_closed, closed, "connection %s; %s"
                             % ("closed" if was_closed else "left open", what))
        if error is not None:
            self.assertEqual(json.loads(resp[0][2])["error"], error, what)
        for a in not_counted:
            self.assertEqual(self.views(a), 0, "%r was counted; %s" % (a, what))
        self.assertServing()
        return resp

    def expect_counted(self, article, views=1):
        self.assertEqual(self.views(article), views)
        type(self).counted[article] += views

    # ---- bodies ----

    def test_malformed_and_truncated_json(self):
        # A body shorter than its Content-Length, then the client's end of stream: nothing
        # to answer, the connection closes.
        self.expect(post(event("h/truncated")[:20], b"Content-Length: 100\r\n",
                         content_length=False), [], closed=True, shut_write=True,
                    not_counted=["h/truncated"])
        cases = [
            event("h/half")[:16],                            # an object cut in half
            b'{"type":"view","article":"h/m1"',
            b'{"type":"view" "article":"h/m2"}',
            b'{"type":"view","article":"h/m3"}}',
            b'[{"type":"view","article":"h/m4"}',
            b'{"type":"view","article":"h/m5",}',
            b"{'type':'view','article':'h/m6'}",
            b'{"type":"view","article":h/m7}',
            b"\xff\xfe" + event("h/m8"),
            b"",
            b"\x00" * 64,
        ]
        for body in cases:
            with self.subTest(body=body[:40]):
                self.expect(post(body, CLOSE), [400], error="malformed_json")

    def test_huge_bodies(self):
        padded = lambda n: event("h/huge") + b" " * (n - len(event("h/huge")))  # noqa: E731
        with self.subTest(size="70 KB"):
            self.expect(post(padded(70000), CLOSE), [413], error="payload_too_large",
                        not_counted=["h/huge"])
        with self.subTest(size="200 KB"):
            self.expect(post(padded(200000)), [413], closed=True, not_counted=["h/huge"])
        with self.subTest(size="200 KB chunked"):
            body = padded(200000)
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                              for i in range(0, len(body), 8192))
            self.expect(post(chunks + b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
                             content_length=False), [413], closed=True, not_counted=["h/huge"])

    def test_deep_nesting_and_too_many_events(self):
        for body in (b"[" * 10000, b'{"a":' * 10000, b"[" * 5000 + b"]" * 5000,
                     b'[{"type":"view","article":"h/deep","x":' + b"[" * 20 + b"]" * 20 +
                     b"}]"):
            with self.subTest(body=body[:20]):
                self.expect(post(body, CLOSE), [400], error="malformed_json")
        many = json.dumps([{"type": "view", "article": "h/many"}] * 101).encode()
        self.expect(post(many, CLOSE), [400], error="batch_too_large", not_counted=["h/many"])

    def test_bad_utf8_surrogates_and_nul_in_the_article(self):
        cases = [
            b"h/u8-\xff",
            b"h/u8-\xc0\xaf",               # overlong '/'
            b"h/u8-\xe0\x80\xaf",           # overlong, 3 bytes
            b"h/u8-\xed\xa0\x80",           # a UTF-16 surrogate, encoded
            b"h/u8-\xf4\x90\x80\x80",       # past U+10FFFF
            b"h/u8-\xe2\x82",               # cut short
            b"h/u8-\\ud800",                # a lone surrogate, escaped
            b"h/u8-\\udc00x",
            b"h/u8-\\u0000x",               # an escaped NUL
            b"h/u8-\x00x",                  # a raw NUL
        ]
        for article in cases:
            with self.subTest(article=article):
                body = b'{"type":"view","article":"' + article + b'"}'
                self.expect(post(body, CLOSE), [400], error="malformed_json",
                            not_counted=["h/u8-", "h/u8-x"])
        # A raw NUL outside any string.
        self.expect(post(event("h/nul") + b"\x00", CLOSE), [400], error="malformed_json",
                    not_counted=["h/nul"])

    # ---- percent-encoding ----

    def test_broken_percent_encoding_in_the_pixel_and_in_stats_paths(self):
        bad = ["h%00x", "h%zzx", "h%2", "h%", "%C0%AF", "%ED%A0%80", "%FF", "h%0Ax", "h%%41"]
        for enc in bad:
            with self.subTest(pixel=enc):
                r = self.t.get("/v1/pixel.gif?type=view&article=" + enc)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get("Content-Type"), "image/gif", r)
                self.assertEqual(r.headers.get("Tally-Outcome"), "invalid_article", r)
                self.assertServing()
            with self.subTest(stats=enc):
                r = self.t.get("/v1/stats/" + enc)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.body["error"], "invalid_article", r)
                r = self.t.get("/v1/stats?article=" + enc)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.body["error"], "invalid_article", r)
                self.assertServing()
        # %00 must not truncate the id to a valid one ("h"), in either place.
        self.assertEqual(self.views("h"), 0)
        # A raw NUL in the request line is refused by the parser.
        self.expect(b"GET /v1/stats/h\x00x HTTP/1.1\r\nHost: t\r\n\r\n", [400], closed=True)

    # ---- sizes of the head ----

    def test_oversized_request_line_and_headers(self):
        # The head may hold 96 KiB: a stats query for 100 ids of 256 bytes, percent-encoded.
        with self.subTest("a 100 KB header"):
            self.expect(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100000 +
                        b"\r\n\r\n", [431], closed=True, error="headers_too_large")
        with self.subTest("a 20 KB header"):
            self.expect(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 +
                        b"\r\n" + CLOSE + b"\r\n", [200])
        with self.subTest("200 small headers"):
            many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
            self.expect(post(event("h/headers"), many), [431], closed=True,
                        error="too_many_headers", not_counted=["h/headers"])
        with self.subTest("a 10 KB request line (path)"):
            self.expect(b"GET /v1/stats/" + b"a" * 10000 + b" HTTP/1.1\r\nHost: t\r\n" + CLOSE +
                        b"\r\n", [400], error="invalid_uri")
        with self.subTest("a 10 KB request line (query)"):
            out, _ = self.t.raw(pixel_request("h" * 10000))
            resp = harness.split_responses(out)
            self.assertEqual([(s, h.get("tally-outcome")) for s, h, _ in resp],
                             [(200, "invalid_article")], out[:300])
            self.assertServing()
        with self.subTest("a 100 KB request line"):
            self.expect(b"GET /healthz?" + b"a" * 100000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                        [431], closed=True, error="headers_too_large")

    # ---- framing ----

    def test_smuggling_attempts(self):
        body = event("h/smuggle")

        def hidden(n):
            """A whole pixel request of its own article: counted only if it was served."""
            return pixel_request("h/hidden-%d" % n), "h/hidden-%d" % n

        h, ha = hidden(1)
        with self.subTest("two equal Content-Lengths"):
            self.expect(post(body, b"Content-Length: %d\r\n" % len(body)) + h, [400],
                        closed=True, error="ambiguous_framing", not_counted=["h/smuggle", ha])
        h, ha = hidden(2)
        with self.subTest("two Content-Lengths, the second covering a hidden request"):
            self.expect(post(body + h, b"Content-Length: %d\r\n" % len(body)), [400],
                        closed=True, error="ambiguous_framing", not_counted=["h/smuggle", ha])
        h, ha = hidden(3)
        with self.subTest("Content-Length and Transfer-Encoding"):
            self.expect(post(chunked(body) + h, b"Transfer-Encoding: chunked\r\n"),
                        [400], closed=True, not_counted=["h/smuggle", ha])
        h, ha = hidden(4)
        with self.subTest("Transfer-Encoding: chunked, identity"):
            self.expect(post(chunked(body) + h, b"Transfer-Encoding: chunked, identity\r\n",
                             content_length=False), [400], closed=True,
                        not_counted=["h/smuggle", ha])
        h, ha = hidden(5)
        with self.subTest("a folded Transfer-Encoding beside a Content-Length"):
            self.expect(post(chunked(body) + h, b"Transfer-Encoding:\r\n chunked\r\n"),
                        [400], closed=True, not_counted=["h/smuggle", ha])
        h, ha = hidden(6)
        with self.subTest("Transfer-Encoding that does not end in chunked"):
            # RFC 9112 6.3: the length cannot be determined: 400 and close. Read as having
            # no body, the hidden request would be served as the next one.
            self.expect(post(h, b"Transfer-Encoding: gzip\r\n", content_length=False),
                        [400], closed=True, not_counted=[ha])
        h, ha = hidden(7)
        with self.subTest("whitespace between Content-Length and its colon"):
            # RFC 9112 5.1: MUST be rejected with 400. Read as an unknown header, the body
            # would be served as the next request.
            self.expect(post(h, b"Content-Length : %d\r\n" % len(h), content_length=False),
                        [400], closed=True, not_counted=[ha])
        h, ha = hidden(8)
        with self.subTest("a request hidden in a declared-length body"):
            resp = self.expect(post(body + h) + SENTINEL, [400, 200], closed=True,
                               error="malformed_json", not_counted=["h/smuggle", ha])
            self.assertEqual(resp[1][2], b'{"status":"ok"}\n')
        h, ha = hidden(9)
        with self.subTest("a request hidden in the body of a GET"):
            self.expect(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                        % len(h) + h + SENTINEL, [200, 200], closed=True, not_counted=[ha])
        with self.subTest("a request after a declared-length body is the next request"):
            self.expect(post(event("h/pipe-1")) + post(event("h/pipe-2"), CLOSE), [200, 200],
                        closed=True)
            self.expect_counted("h/pipe-1")
            self.expect_counted("h/pipe-2")
        with self.subTest("obs-fold in an ordinary header"):
            # RFC 9112 5.2: reject with 400 (or replace by a space); refused, so that no
            # reader downstream can see a folded line as a header of its own.
            self.expect(post(event("h/fold"), b"X-Fold: a\r\n b\r\n" + CLOSE), [400],
                        closed=True, error="bad_request", not_counted=["h/fold"])
        with self.subTest("obs-fold hiding a Transfer-Encoding in another header"):
            self.expect(post(event("h/fold-te"), b"X-Fold: a\r\n Transfer-Encoding: chunked\r\n"
                             + CLOSE), [400], closed=True, not_counted=["h/fold-te"])
        with self.subTest("a NUL in a header value"):
            # RFC 9110 5.5: reject the message or replace the NUL with SP -- which makes the
            # key invalid. Cut at the NUL, two different keys would be taken for one.
            for key in (b"h-nul-key\x00one", b"h-nul-key\x00two"):
                self.expect(post(event("h/nul-key"), b"Idempotency-Key: " + key + b"\r\n" +
                                 CLOSE), [400], not_counted=["h/nul-key"])

    def test_invalid_chunk_sizes(self):
        head = b"Transfer-Encoding: chunked\r\n" + CLOSE
        # RFC 9112 7.1: chunk-size = 1*HEXDIG. Anything else -- no digits, a sign, a "0x", a
        # space before them -- is a 400 and a close: nothing counted, nothing smuggled.
        n = len(event("h/chunk-0"))
        for i, size in enumerate((b"zz", b"", b"-%x" % n, b"0x%x" % n, b"+%x" % n, b" %x" % n,
                                  b"%x\n" % n)):
            article = "h/chunk-%d" % i
            with self.subTest(size=size):
                self.expect(post(chunked(event(article), size) + SENTINEL, head,
                                 content_length=False), [400], closed=True,
                            not_counted=[article])
        # A size past the body limit is refused before its data arrives.
        self.expect(post(chunked(event("h/chunk-huge"), b"1e1e1e1e1e1e1e1e1e1e") + SENTINEL,
                         head, content_length=False), [413], closed=True,
                    error="payload_too_large", not_counted=["h/chunk-huge"])
        # Upper-case digits, an extension and a trailer are all RFC 9112.
        article = "h/chunk-ext"
        body = event(article)
        self.expect(post(b"%X;name=value\r\n" % len(body) + body + b"\r\n0\r\nX-T: 1\r\n\r\n",
                         head, content_length=False), [200], closed=True)
        self.expect_counted(article)

    def test_http09_garbage_and_other_protocols(self):
        cases = [
            ("HTTP/0.9", b"GET /v1/pixel.gif?type=view&article=h/09\r\n\r\n"),
            ("garbage", bytes((i * 37 + 11) % 256 for i in range(600)) + b"\r\n\r\n"),
            ("TLS ClientHello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" +
             bytes(range(32)) + b"\r\n\r\n"),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ]
        for name, data in cases:
            with self.subTest(name):
                self.expect(data, [400], closed=True, not_counted=["h/09"])

    # ---- time ----

    def test_slow_and_silent_clients_are_cut_off(self):
        """A slowloris trickling a byte every 0.5 s is cut REQUEST_DEADLINE after its first
        byte; a half request, and a connection that never sends a byte, are closed after
        IDLE_TIMEOUT of silence. All at once, while tallyd serves others."""
        slow_body = event("h/slowloris")
        slow = post(slow_body) + b"x" * 60  # longer than 10 s at 2 bytes a second
        half = post(event("h/half-silent"))[:-12]
        before = harness.metric(self.t.metrics(), "tally_http_slow_clients_total")
        results = {}

        def client(name, first, trickle):
            out, how, started = b"", "open", None
            try:
                with socket.create_connection(("127.0.0.1", self.t.port), timeout=5) as s:
                    started = time.monotonic()
                    if first:
                        s.sendall(first)
                    i = 0
                    s.settimeout(0.5)
                    while time.monotonic() - started < REQUEST_DEADLINE + 5:
                        if trickle and i < len(trickle):
                            try:
                                s.sendall(trickle[i:i + 1])
                            except OSError as e:
                                how = "send failed: %r" % e
                                break
                            i += 1
                        try:
                            chunk = s.recv(65536)
                        except socket.timeout:
                            continue
                        except ConnectionResetError:
                            how = "reset"
                            break
                        if not chunk:
                            how = "closed"
                            break
                        out += chunk
            finally:
                results[name] = (how, time.monotonic() - started if started else None, out)

        threads = [threading.Thread(target=client, args=a, daemon=True) for a in (
            ("slowloris", slow[:1], slow[1:]),
            ("half request", half, b""),
            ("silent", b"", b""),
        )]
        for th in threads:
            th.start()
        time.sleep(5.0)
        self.assertServing()  # while they hang on
        for th in threads:
            th.join(REQUEST_DEADLINE + 10)
        self.assertEqual(len(results), 3, results)
        for name, (how, elapsed, out) in sorted(results.items()):
            with self.subTest(name):
                limit = (REQUEST_DEADLINE if name == "slowloris" else IDLE_TIMEOUT)
                self.assertIn(how, ("closed", "reset"), "%s still open after %.1f s (%r)"
                              % (name, elapsed, out[:200]))
                self.assertEqual(out, b"", "%s was answered: %r" % (name, out[:200]))
                self.assertGreaterEqual(elapsed, limit - 0.5, name)
                self.assertLessEqual(elapsed, limit + CUT_SLACK, "%s cut after %.1f s"
                                     % (name, elapsed))
        self.assertEqual(harness.metric(self.t.metrics(), "tally_http_slow_clients_total"),
                         before + 1)
        self.assertEqual(self.views("h/slowloris"), 0)
        self.assertEqual(self.views("h/half-silent"), 0)
        self.assertServing()

    # ---- floods ----

    def test_idle_connection_flood_waits_in_the_backlog(self):
        # FLOOD sockets in this process: raise the soft limit (up to the hard one) if needed.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = FLOOD + 256
        if soft != resource.RLIM_INFINITY and soft < need:
            new = need if hard == resource.RLIM_INFINITY else min(need, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.assertTrue(soft == resource.RLIM_INFINITY or soft >= need,
                        "RLIMIT_NOFILE is %d (hard limit %d) but the flood needs %d open files: "
                        "raise the hard limit (ulimit -Hn) for the tests" % (soft, hard, need))
        # The connections beyond --max-connections must fit in the kernel's backlog.
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        self.assertGreaterEqual(somaxconn, SERVER_BACKLOG,
                                "net.core.somaxconn is %d: the kernel caps tallyd's listen "
                                "backlog of %d below what this test needs (sysctl -w "
                                "net.core.somaxconn=%d)" % (somaxconn, SERVER_BACKLOG,
                                                            SERVER_BACKLOG))
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0", "--max-connections",
                                                   str(MAX_CONNECTIONS)], threads=2))
        self.addCleanup(t.close)
        t.start()
        ctl = harness.KeepAliveClient(t.port)  # one of the 500, held before the flood
        self.addCleanup(ctl.close)
        self.assertEqual(ctl.get("/healthz").status, 200)

        socks = []

        def close_all():
            for s in socks:
                s.close()
            socks.clear()

        self.addCleanup(close_all)
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", t.port))
            socks.append(s)
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLOUT)
        waiting = {s.fileno() for s in socks}
        deadline = time.monotonic() + 3.0
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                waiting.discard(fd)
                poller.unregister(fd)

        # tallyd takes up to --max-connections and no more.
        seen, rss = [], []

        def sample():
            ex = ctl.get("/metrics")
            self.assertEqual(ex.kind, "answered", ex)
            seen.append(harness.metric(harness.parse_metrics(ex.response.raw.decode()),
                                       "tally_http_connections"))
            rss.append(t.rss_bytes())
            return seen[-1] == MAX_CONNECTIONS

        wait_until(sample, 5.0, 0.05, message="tallyd did not fill its %d connections: %r"
                   % (MAX_CONNECTIONS, seen[-5:]))
        for _ in range(10):
            sample()
            time.sleep(0.05)
        self.assertLessEqual(max(seen), MAX_CONNECTIONS, seen)
        self.assertLess(max(rss), RSS_LIMIT, "RSS %.1f MiB" % (max(rss) / 2 ** 20))
        # The rest wait in the kernel's backlog (tallyd listens with SERVER_BACKLOG per
        # worker), not dropped: all FLOOD + 1 connections are held or queued.
        held = []

        def all_held():
            sample()
            held.append((seen[-1], listen_queue(t.port)))
            return sum(held[-1]) == FLOOD + 1

        try:
            wait_until(all_held, 2.0, 0.1)
        except AssertionError:
            self.fail("of %d connections opened at once, tallyd holds %d and its listen "
                      "queues %d: the other %d were dropped by the kernel (%d handshakes "
                      "never finished), not left waiting in the backlog"
                      % (FLOOD + 1, held[-1][0], held[-1][1], FLOOD + 1 - sum(held[-1]),
                         len(waiting)))
        # It keeps serving the connections it holds ...
        ex = ctl.post_events({"type": "view", "article": "h/flood"})
        self.assertEqual((ex.kind, ex.status, ex.body),
                         ("answered", 200, {"accepted": 1, "ignored": 0}), ex)
        type(self).counted["h/flood"] += 1
        # ... and new ones once the flood has gone.
        close_all()
        wait_until(lambda: harness.get(t.port, "/healthz", timeout=2).status == 200, 15.0,
                   message="tallyd serves no new connection after the flood")
        self.assertEqual(self.views("h/flood", t), 1)
        wait_until(lambda: harness.metric(t.metrics(), "tally_http_connections") <= 2, 15.0,
                   message="the flood's connections were not all released")

    def test_rate_limit_flood_from_one_client(self):
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0", "--rate-limit",
                                                   str(RATE)]))
        self.addCleanup(t.close)
        t.start()
        article = "h/rate-limited"
        req = post(event(article), CLOSE)
        conns = []
        self.addCleanup(lambda: [c.close() for c in conns])
        for _ in range(RATE_SENT):
            conns.append(socket.create_connection(("127.0.0.1", t.port), timeout=10))
        # Connecting costs nothing; all connections are taken before a byte is sent, so the
        # requests arrive together (a token comes back every 1/RATE s).
        wait_until(lambda: harness.metric(t.metrics(), "tally_http_connections")
                   >= RATE_SENT + 1, 5.0)
        t0 = time.monotonic()
        for c in conns:
            c.sendall(req)
        answers = []
        for c in conns:
            out = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                out += chunk
            answers.extend(harness.split_responses(out))
        elapsed = time.monotonic() - t0
        statuses = collections.Counter(s for s, _, _ in answers)
        # The full burst goes through, then a token comes back every 1/RATE s while the
        # requests are answered: at most burst + RATE x elapsed (+1 for a token under way).
        burst = 4 * RATE
        most = burst + int(RATE * elapsed) + 1
        ok = statuses[200]
        sys.stderr.write("\nrate limit %d/s (burst %d): %d of %d accepted in %.2f s (bound %d)\n"
                         % (RATE, burst, ok, RATE_SENT, elapsed, most))
        self.assertLess(most, RATE_SENT, "the %d requests took %.2f s: too slow to tell a "
                        "working limiter from none" % (RATE_SENT, elapsed))
        self.assertEqual(sum(statuses.values()), RATE_SENT, statuses)
        self.assertEqual(set(statuses) - {200, 429}, set(), statuses)
        self.assertGreaterEqual(ok, burst, statuses)
        self.assertLessEqual(ok, most, statuses)
        for status, hdrs, body in answers:
            if status == 200:
                self.assertEqual(json.loads(body), {"accepted": 1, "ignored": 0})
            else:
                self.assertRegex(hdrs.get("retry-after", ""), r"^[1-9][0-9]*$", hdrs)
                self.assertEqual(json.loads(body)["error"], "rate_limited")
        self.assertEqual(self.views(article, t), ok)
        type(self).counted[article] += ok
        self.assertServing(t)

    # ---- last: nothing hostile was counted ----

    def test_zz_control_article_and_totals(self):
        r = self.t.post_events({"type": "view", "article": CONTROL})
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        type(self).counted[CONTROL] += 1
        with self.subTest("the control article"):
            self.assertEqual(self.views(CONTROL), 2)
        with self.subTest("the legitimate cases"):
            for article, n in sorted(self.counted.items()):
                self.assertEqual(harness.counts(self.t.stats(article)),
                                 {"article": article, "views": n, "shares": 0,
                                  "shares_by_network": {}, "comments": 0})
        with self.subTest("no other article in Redis"):
            stored = {k.decode("utf-8", "replace").split("}a:", 1)[1]
                      for k in self.redis.keys("tally:{??}a:*")}
            self.assertEqual(stored, set(self.counted), "articles counted beyond the "
                             "legitimate ones: %r" % sorted(stored - set(self.counted)))
        with self.subTest("/v1/totals?period=all"):
            r = self.t.get("/v1/totals?period=all")
            self.assertEqual((r.status, r.body),
                             (200, {"period": "all", "views": sum(self.counted.values()),
                                    "shares": 0, "comments": 0, "reads": 0,
                                    "engaged_seconds": 0}))

if __name__ == "__main__":
    unittest.main()
