"""A slow read has no power over writes: every worker sends its reads on a Redis connection of
its own, beside the one its writes use, so a read that outlives --redis-timeout drops that read
connection (and the reads in flight on it) and never a write.

The slow read: tallyd reaches Redis through a TCP relay that, on a connection where it sees a
command naming the article SLOW, holds back every reply of that connection for HOLD_S
seconds -- as a read whose reply takes that long to arrive (a huge value behind a busy link,
a deep queue of reads) looks to tallyd, while Redis itself keeps answering everyone else. A
one-worker tallyd (--redis-timeout 500) then takes writes from WRITERS keep-alive clients
while READERS clients keep asking for SLOW's stats (and for an ordinary article's, which
shares the read connection).

Judged by:
  - the reads were slow: tallyd timed out on Redis (tally_redis_timeouts_total grew) and
    answered reads with 503 + Retry-After (never anything outside 200 and 503);
  - every write was answered 200, its events acknowledged, none left unknown (504) or
    refused (503); every write unit went to Redis once and none was fenced; each article's
    views equal exactly the events acknowledged for it, in tallyd's stats and in Redis.
"Went to Redis once": tallyd takes the default write path (a journal: each unit is one FCALL
of ack -- or of apply, for the writes of articles read lately, which the reads here are --
and the folds and reclaims of the journals are FCALLs too, on the same connection), so
Redis's own count of FCALLs (INFO commandstats) is split by function with MONITOR: the acks
and applies equal the units tallyd saw applied, each under an attempt marker of its own -- a
unit sent again keeps its marker -- and MONITOR saw every FCALL that commandstats counted.
With reads and writes on one connection the held reply made the write units behind it late:
the connection was dropped, and they were sent again.
"""

import re
import socket
import sys
import threading
import time
import unittest

import harness
from harness import quote, wait_until

REDIS_TIMEOUT_MS = 500
HOLD_S = 1.5          # past --redis-timeout: the held read times out
LOAD_S = 4.0          # a few held reads in a row
WRITERS = 3
READERS = 2
SLOW = "slow-read/huge"
MARKER = SLOW.encode()
# A MONITOR line of a top-level FCALL: the function's name and its first key (for ack, the
# unit's attempt marker). Commands a function runs show as "[0 lua]" and are not FCALLs.
FCALL_LINE = re.compile(r'^[0-9.]+ \[[0-9]+ [^\]]+\] "(?i:fcall)" "tally_([a-z]+)_[0-9a-f]+" '
                        r'"[0-9]+" "([^"]*)"')


class HoldingRelay:
    """127.0.0.1:PORT -> Redis. A connection whose commands name MARKER gets every reply that
    follows held back HOLD seconds (from the moment the marker passed), in order."""

    def __init__(self, redis_port, hold):
        self.redis_port = redis_port
        self.hold = hold
        self.held = 0  # replies held back, over all connections
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.socks = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.redis_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            state = {"until": 0.0}
            with self.lock:
                self.socks += [client, server]
            threading.Thread(target=self.up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self.down, args=(server, client, state),
                             daemon=True).start()

    def up(self, src, dst, state):
        """tallyd -> Redis, looking for the marker (a command may span two reads)."""
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if MARKER in tail + data:
                    state["until"] = time.monotonic() + self.hold
                    with self.lock:
                        self.held += 1
                tail = data[-len(MARKER):]
                dst.sendall(data)
        except OSError:
            pass
        self.close_pair(src, dst)

    def down(self, src, dst, state):
        """Redis -> tallyd, held back while the connection's hold lasts."""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                wait = state["until"] - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        self.close_pair(src, dst)

    @staticmethod
    def close_pair(a, b):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass


class SlowReadTest(harness.TallyTestCase):

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.relay = HoldingRelay(self.redis.port, HOLD_S)
        self.addCleanup(self.relay.close)
        # The journal path (acks, then folds; the writes of articles read lately counted at
        # once): the one with more kinds of writes to keep apart from slow reads.
        self.t = self.track(harness.Tallyd(self.redis, [
            "--view-window", "0", "--redis-timeout", str(REDIS_TIMEOUT_MS), "--hold", "1000",
            "--fold-interval", "200"],
            threads=1, redis_port=self.relay.port))
        self.addCleanup(self.t.close)
        self.t.start()
        wait_until(lambda: self.t.get("/readyz").status == 200, 10.0,
                   message="tallyd not ready through the relay")

    def fcalls(self, mark):
        """FCALLs Redis has run (reads call FCALL_RO), read atomically after ECHO MARK, so
        that MARK in MONITOR's stream is the same point in time."""
        self.redis.command("MULTI")
        self.redis.command("ECHO", mark)
        self.redis.command("INFO", "commandstats")
        _, text = self.redis.command("EXEC")
        for line in text.decode().splitlines():
            if line.startswith("cmdstat_fcall:"):
                return int(line.split("calls=", 1)[1].split(",", 1)[0])
        return 0

    def monitored(self, mon, begin, end):
        """The top-level FCALLs MONITOR client MON saw between ECHO BEGIN and ECHO END, as
        (function, first key)."""
        seen, inside = [], False
        while True:
            line = mon._reply()
            if isinstance(line, harness.RespError):
                raise line
            if line.endswith('"ECHO" "%s"' % begin) or line.endswith('"echo" "%s"' % begin):
                inside = True
            elif line.endswith('"ECHO" "%s"' % end) or line.endswith('"echo" "%s"' % end):
                return seen
            elif inside:
                m = FCALL_LINE.match(line)
                if m:
                    seen.append((m.group(1), m.group(2)))

    def test_a_read_that_times_out_drops_no_write(self):
        stop_at = time.monotonic() + LOAD_S
        acked = {}
        writes = {}
        reads = {}
        odd = []
        lock = threading.Lock()

        def writer(i):
            article = "slow-read/w%d" % i
            n = 0
            with harness.KeepAliveClient(self.t.port, timeout=10.0) as cl:
                while time.monotonic() < stop_at:
                    events = 1 + n % 3
                    n += 1
                    ex = cl.post_events([{"type": "view", "article": article}] * events)
                    with lock:
                        key = ex.status if ex.kind == "answered" else ex.kind
                        writes[key] = writes.get(key, 0) + 1
                        if ex.kind == "answered" and ex.status == 200:
                            body = ex.body
                            if body != {"accepted": events, "ignored": 0}:
                                odd.append(("write", body))
                            acked[article] = acked.get(article, 0) + body.get("accepted", 0)
                    time.sleep(0.01)

        def reader(i):
            paths = ["/v1/stats/" + quote(SLOW),
                     "/v1/stats?article=%s&article=%s" % (quote(SLOW), quote("slow-read/w0"))]
            n = 0
            with harness.KeepAliveClient(self.t.port, timeout=10.0) as cl:
                while time.monotonic() < stop_at:
                    ex = cl.get(paths[(n + i) % len(paths)])
                    n += 1
                    with lock:
                        key = ex.status if ex.kind == "answered" else ex.kind
                        reads[key] = reads.get(key, 0) + 1
                        if ex.kind != "answered" or ex.status not in (200, 503) or (
                                ex.status == 503 and
                                ex.response.headers.get("Retry-After") is None):
                            odd.append(("read", ex))
                    time.sleep(0.02)

        before = harness.metric(self.t.metrics(), "tally_redis_timeouts_total")
        mon = harness.RespClient(self.redis.port, timeout=30.0)
        self.addCleanup(mon.close)
        self.assertEqual(mon.command("MONITOR"), "OK")
        fcalls_before = self.fcalls("load-begins")
        units_before = harness.metric(self.t.metrics(), "tally_redis_write_units_total")
        threads = ([threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)] +
                   [threading.Thread(target=reader, args=(i,)) for i in range(READERS)])
        for th in threads:
            th.start()
        for th in threads:
            th.join(LOAD_S + 30)
            self.assertFalse(th.is_alive(), "a load client did not finish")

        m = self.t.metrics()
        timeouts = harness.metric(m, "tally_redis_timeouts_total") - before
        self.assertEqual(odd, [], "answers outside the contract")
        # The reads were slow: held past --redis-timeout, timed out, answered 503.
        self.assertGreater(self.relay.held, 0, "no read of %r reached Redis" % SLOW)
        self.assertGreaterEqual(timeouts, 1, "no Redis command timed out: reads %r" % reads)
        self.assertGreater(reads.get(503, 0), 0, "no read was answered 503: %r" % reads)
        # Not one write paid for them.
        self.assertEqual(set(writes), {200}, "writes answered otherwise than 200: %r" % writes)
        self.assertGreater(writes[200], 20, "too few writes to judge: %r" % writes)
        self.assertEqual(harness.metric(m, "tally_requests_indeterminate_total"), 0)
        self.assertEqual(harness.metric(m, "tally_redis_write_units_fenced_total"), 0)
        units = harness.metric(m, "tally_redis_write_units_total") - units_before
        self.assertGreater(units, 0)
        fcalls = self.fcalls("load-ends") - fcalls_before
        calls = self.monitored(mon, "load-begins", "load-ends")
        self.assertEqual(len(calls), fcalls, "MONITOR missed FCALLs that Redis counted")
        by_function = {}
        for function, _ in calls:
            by_function[function] = by_function.get(function, 0) + 1
        sys.stderr.write("\nFCALLs during the load: %r; write units applied: %d\n"
                         % (by_function, units))
        # Both write paths ran: acks of the writes journaled, applies of those of articles
        # read lately (--follow-reads), which are the ones the slow reads read.
        self.assertGreater(by_function.get("ack", 0), 0, "nothing journaled")
        self.assertGreater(by_function.get("apply", 0), 0, "nothing counted at once")
        self.assertGreater(by_function.get("merged", 0), 0, "nothing was folded")
        sent = [key for function, key in calls if function in ("ack", "apply")]
        self.assertEqual(len(sent), units,
                         "write units sent more than once (Redis ran more acks and applies "
                         "than tallyd saw applied)")
        self.assertEqual(len(set(sent)), len(sent), "a write unit was sent again")
        # Exact counts, in tallyd's answers and in Redis (a read of counts waits for the
        # folds of what was acknowledged before it, so Redis holds them all after it).
        time.sleep(0.6)  # past the stats cache's freshness
        for article, n in sorted(acked.items()):
            wait_until(lambda: self.t.get("/v1/stats/" + quote(article)).status == 200, 5.0)
            self.assertEqual(self.t.stats(article)["views"], n, article)
            self.assertEqual(self.redis.article_totals(article).get("views", 0), n, article)


if __name__ == "__main__":
    unittest.main()
