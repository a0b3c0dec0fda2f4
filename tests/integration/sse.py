"""sse.py -- what the live tests share: a raw /v1/live client (the head, then the body
de-chunked or close-delimited and cut into Server-Sent Events blocks), and a test case with two
collectors on one Redis."""

import select
import socket
import time

import harness
from harness import quote

UA = harness.BROWSER_UA


class Stream:
    """A raw /v1/live client: the head, then the body de-chunked (or close-delimited) and cut
    into SSE blocks: ("event", name, data) for events, ("comment", text) for comment lines,
    ("field", line) for anything else (retry:). PIPELINED: bytes sent right after the request,
    in the same write."""

    def __init__(self, port, articles, http10=False, headers=None, pipelined=b""):
        q = "&".join("article=" + quote(a) for a in articles)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET /v1/live?%s HTTP/1.%d\r\nHost: t\r\nUser-Agent: %s\r\n%s\r\n"
                           % (q, 0 if http10 else 1, UA, extra)).encode() + pipelined)
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


class LiveCase(harness.TallyTestCase):
    """Two collectors on one Redis, and what the tests of test_live*.py share."""


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
