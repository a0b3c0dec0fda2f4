"""Heap allocations per request, counted by the test build's allocation hook (src/alloc_count.c;
built with TALLY_SANITIZE only, and only then is this test registered).

The HTTP layer allocates nothing per request in a steady state: request objects, their arenas
and read buffers are recycled by each worker, and a keep-alive connection costs one allocation
(itself) for any number of requests; the event scanner allocates nothing either. A stats read
takes one allocation of its own, the room for the ids it names (src/query.c), even when every
article is cached. What still allocates is the Redis write of a unit of events (the store's command record, hiredis's callback
entry and the reply objects it builds on the heap): here one request per unit, as the requests
go one after another; under load a unit carries many requests. It is bounded here so that a
regression shows."""

import json
import os
import socket
import struct
import tempfile

import harness

N = 1000        # requests measured, after WARM ones
CACHED_N = 100  # requests measured within the life of cached totals
WARM = 200
PIXEL_MAX = 21  # allocations per pixel view: its unit's Redis write (an append to the journal,
                # whose reply holds two more elements than a direct write's: the entry's id,
                # and its number in the journal, see src/scripts/ack.lua)
POST_MAX = 21   # per POST of one view: the same


class AllocationTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="tally-allocs-")
        cls.count_file = os.path.join(cls.dir, "allocations")
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--rate-limit", "0"],
                                    env={"TALLY_ALLOC_COUNT_FILE": cls.count_file}, threads=1)
        try:
            cls.tallyd.start()
            # Steady state first: Redis connected on every worker, the scripts and the day's
            # salt loaded (one write does it).
            harness.wait_until(lambda: cls.tallyd.get("/readyz").status == 200, 10.0)
            r = cls.tallyd.post_events({"type": "view", "article": "allocs/warm"})
            if r.status != 200:
                raise AssertionError("the warm-up view: %r" % (r,))
        except Exception:
            cls.tallyd.close()
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()
        os.unlink(cls.count_file)
        os.rmdir(cls.dir)

    def count(self):
        with open(self.count_file, "rb") as f:
            data = f.read(8)
        self.assertEqual(len(data), 8, "tallyd counts no allocations: not a TALLY_SANITIZE build?")
        return struct.unpack("<Q", data)[0]

    def run_requests(self, req, n, status):
        """N requests REQ one after another on one new keep-alive connection."""
        with socket.create_connection(("127.0.0.1", self.tallyd.port), timeout=10) as s:
            for _ in range(n):
                s.sendall(req)
                out = b""
                while True:
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "closed")
                    out += chunk
                    resp = harness.split_responses(out)
                    if (resp and resp[-1][0] is not None and
                            len(resp[-1][2]) == int(resp[-1][1].get("content-length", "0"))):
                        break
                self.assertEqual(resp[0][0], status, out[:300])

    def per_request(self, req, status=200):
        """Allocations of N requests on one connection (the connection itself is one). The
        counter is the whole process's, and timers allocate on their own (the Redis clock
        sample every second, for one): their work can only add, so the least of three runs is
        what the requests cost."""
        self.run_requests(req, WARM, status)
        runs = []
        for _ in range(3):
            before = self.count()
            self.run_requests(req, N, status)
            runs.append(self.count() - before)
        return min(runs)

    def get(self, target):
        return (b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nUser-Agent: " +
                harness.BROWSER_UA.encode() + b"\r\n\r\n")

    def test_answers_of_the_http_layer_allocate_nothing(self):
        for name, req, status in [
                ("healthz", self.get(b"/healthz"), 200),
                ("not found", self.get(b"/v1/nope"), 404),
                ("method not allowed", b"PUT /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 405),
                ("unknown method", b"BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 501),
                ("tally.js", self.get(b"/tally.js"), 200)]:
            with self.subTest(name):
                self.assertEqual(self.per_request(req, status), 1)

    def cached(self, req):
        """Allocations of CACHED_N requests REQ answered from the cache alone: a window in which
        tallyd made no Redis round trip (cached totals live 500 ms; a window that outlived
        them is tried again)."""
        for _ in range(5):
            self.run_requests(req, 1, 200)  # loads what expired
            trips = harness.metric(self.tallyd.metrics(), "tally_redis_roundtrips_total")
            before = self.count()
            self.run_requests(req, CACHED_N, 200)
            n = self.count() - before
            after = harness.metric(self.tallyd.metrics(), "tally_redis_roundtrips_total")
            if after == trips:
                return n
        self.fail("no window of %d cached answers without a Redis round trip" % CACHED_N)

    def test_cached_stats_allocate_only_the_room_for_their_ids(self):
        article = "allocs/cached"
        batch = [{"type": "view", "article": "allocs/%d" % i} for i in range(20)]
        self.assertEqual(self.tallyd.post_events({"type": "view", "article": article}).status,
                         200)
        self.assertEqual(self.tallyd.post_events(batch).status, 200)
        one = self.get(b"/v1/stats/" + harness.quote(article).encode())
        many = self.get(b"/v1/stats?" + b"&".join(b"article=allocs%%2F%d" % i
                                                  for i in range(20)))
        self.run_requests(one, WARM, 200)
        self.run_requests(many, WARM, 200)
        self.assertEqual(self.cached(one), 1 + CACHED_N)
        self.assertEqual(self.cached(many), 1 + CACHED_N)

    def test_ingest_allocates_only_in_the_redis_write(self):
        pixel = self.get(b"/v1/pixel.gif?type=view&article=allocs/pixel")
        body = json.dumps({"type": "view", "article": "allocs/post"}).encode()
        post = (b"POST /v1/events HTTP/1.1\r\nHost: t\r\nUser-Agent: " +
                harness.BROWSER_UA.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
        n_pixel, n_post = self.per_request(pixel), self.per_request(post)
        self.assertLessEqual(n_pixel, 1 + PIXEL_MAX * N, "%.2f per pixel" % (n_pixel / N))
        self.assertLessEqual(n_post, 1 + POST_MAX * N, "%.2f per POST" % (n_post / N))
