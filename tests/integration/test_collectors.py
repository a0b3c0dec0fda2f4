"""Two collectors on one Redis behind a reverse proxy: Debian's nginx, round robin over two
tallyd, each started with --trust-proxy 127.0.0.1 so that the client address is the one nginx
appends to X-Forwarded-For.

What must hold with more than one collector:
  - both collectors take traffic through the proxy, and the counts are exact;
  - the client address (rate limit, visitor ids) is the one seen through the proxy;
  - the daily visitor salt lives in Redis and is shared: one reader (address + User-Agent)
    is one visitor whichever collector counts the view, and a repeat view through the other
    collector is a repeat;
  - both collectors answer every read identically;
  - what one collector acknowledged, the other reads once it is folded (within
    --fold-interval and a round trip, and the read caches' half second: harness.eventually,
    then the exact comparison of the read that showed it);
  - the rate limit is per collector (each keeps its own table): through N collectors a
    client gets up to N times the burst (4 x --rate-limit) plus N times the rate, and once
    over it on every collector, 429 from whichever answers.

nginx runs as a single process (master_process off) started by PID, with its whole prefix,
logs and temp directories in a scratch directory.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

import harness
from harness import TOKEN, quote

AUTH = {"Authorization": "Bearer " + TOKEN}
UA = harness.BROWSER_UA
UA2 = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"


def nginx_path():
    p = os.environ.get("NGINX", "") or shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(p):
        raise RuntimeError("nginx is not installed (%s is missing): install nginx-light "
                           "(scripts/deps.sh --test) or point NGINX at an nginx binary" % p)
    return p


class Nginx:
    """A throwaway nginx in front of the collectors at PORTS: round robin, keep-alive to the
    upstreams, X-Forwarded-For extended with the client's address, and an X-Upstream answer
    header naming the collector that answered."""

    def __init__(self, ports):
        self.binary = nginx_path()
        self.ports = list(ports)
        self.dir = harness._scratch_dir("nginx")
        self.port = None
        self.proc = None

    def conf(self):
        d = self.dir
        temp = ["client_body_temp_path %s/body;" % d, "proxy_temp_path %s/proxy;" % d]
        built = subprocess.run([self.binary, "-V"], capture_output=True, text=True).stderr
        for m in ("fastcgi", "uwsgi", "scgi"):
            if "--without-http_%s_module" % m not in built:
                temp.append("%s_temp_path %s/%s;" % (m, d, m))
        return """
master_process off;
worker_processes 1;
error_log %(d)s/error.log info;
events { worker_connections 512; }
http {
    access_log %(d)s/access.log;
    %(temp)s
    upstream tally {
        %(servers)s
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://tally;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream off;
            add_header X-Upstream $upstream_addr always;
        }
    }
}
""" % {"d": d, "temp": "\n    ".join(temp), "port": self.port,
       "servers": "\n        ".join("server 127.0.0.1:%d;" % p for p in self.ports)}

    @property
    def logfile(self):
        return os.path.join(self.dir, "error.log")

    def start(self, timeout=10.0):
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        for attempt in range(5):
            self.port = harness.free_port()
            with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
                f.write(self.conf())
            out = open(os.path.join(self.dir, "stderr.log"), "ab")
            try:
                self.proc = harness._spawn(
                    [self.binary, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf"),
                     "-e", self.logfile,
                     "-g", "daemon off; pid %s;" % os.path.join(self.dir, "nginx.pid")],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            finally:
                out.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if harness.port_open(self.port):
                    return self
                time.sleep(0.02)
            self.stop()
            text = harness._tail(self.logfile, 40)
            if "Address already in use" in text and attempt < 4:
                continue
            raise RuntimeError("nginx did not start:\n%s\n%s" % (
                text, harness._tail(os.path.join(self.dir, "stderr.log"), 40)))
        raise RuntimeError("nginx could not find a free port")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            harness._signal_pid(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                harness._signal_pid(self.proc, signal.SIGKILL)
                self.proc.wait(5)
        harness._report_kept(self.dir, "nginx")

    def request(self, method, path, body=None, headers=None):
        return harness.request(self.port, method, path, body, headers)

    def post_events(self, body, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", "/v1/events", harness.encode_body(body), h)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)


def views_counted(tallyd):
    return harness.metric(tallyd.metrics(), "tally_events_total", type="view",
                          outcome="counted") or 0


def view(article):
    return {"type": "view", "article": article}


def client(addr, ua=UA):
    return {"X-Forwarded-For": addr, "User-Agent": ua}


def read_until(read, key, want):
    """READ() until KEY of it equals WANT (harness.eventually: for counts another collector
    acknowledged), else the last read: the whole answer of the read that showed WANT, to
    compare exactly. Not a read after it: each worker thread caches an article's totals for
    half a second, so the next read may reach another worker's older copy."""
    last = []

    def keyed():
        last[:] = [read()]
        return key(last[0])
    harness.eventually(keyed, want)
    return last[0]


def stats_with(tallyd, article, views):
    """TALLYD's stats of ARTICLE once they show VIEWS views (see read_until)."""
    return read_until(lambda: tallyd.stats(article), lambda st: st["views"], views)


class CollectorsTest(harness.TallyTestCase):
    """A Redis for the class; each test starts its own pair of collectors (flags differ)
    and its own nginx in front of them."""

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.nginx = None

    def visitor_ids(self, article, addrs, ua=UA):
        """The ids of readers at ADDRS with UA viewing ARTICLE today, under the salt of the day
        the collectors share."""
        return harness.reader_ids(self.redis, article, [(x, ua) for x in addrs])

    def dump_logs(self):
        super().dump_logs()
        if self.nginx is not None:
            sys.stderr.write("\n---- nginx error log (%s) ----\n%s\n----\n"
                             % (self.nginx.logfile, harness._tail(self.nginx.logfile, 60)))

    def pair(self, *args):
        """Collectors A and B on the class's Redis with ARGS, and nginx in front of them."""
        common = ["--trust-proxy", "127.0.0.1", "--token", TOKEN] + list(args)
        a = self.track(harness.Tallyd(self.redis, common))
        self.addCleanup(a.close)
        b = self.track(harness.Tallyd(self.redis, common))
        self.addCleanup(b.close)
        a.start()
        b.start()
        self.nginx = Nginx([a.port, b.port])
        self.addCleanup(self.nginx.stop)
        self.nginx.start()
        self.addCleanup(self.check_alive, a, b)
        return a, b

    def check_alive(self, *daemons):
        for d in daemons:
            self.assertTrue(d.running(), "a collector exited")

    def upstream(self, r, a, b):
        u = r.headers.get("X-Upstream", "")
        return {"127.0.0.1:%d" % a.port: "A", "127.0.0.1:%d" % b.port: "B"}.get(u, u)

    # ---- routing ----

    def test_requests_through_nginx_reach_both_collectors_and_count_exactly(self):
        a, b = self.pair("--view-window", "0")
        art = "proxy/both"
        seen = {}
        for i in range(40):
            r = self.nginx.post_events(view(art), client("198.51.100.%d" % (i + 1)))
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
            who = self.upstream(r, a, b)
            seen[who] = seen.get(who, 0) + 1
        self.assertEqual(seen, {"A": 20, "B": 20}, "round robin over both collectors")
        ca, cb = views_counted(a), views_counted(b)
        self.assertEqual((ca, cb), (20, 20), "views counted by each collector's /metrics")
        # visitors is a HyperLogLog estimate: that of these 40 readers' ids (39 or 38 at times)
        want = harness.distinct_estimate(
            self.redis, self.visitor_ids(art, ["198.51.100.%d" % (i + 1) for i in range(40)]))
        for d in (a, b):
            # Each read sees the other collector's 20 views once they are folded.
            st = stats_with(d, art, 40)
            self.assertEqual((st["views"], st["visitors"]), (40, want), st)
        r = read_until(lambda: self.nginx.get("/v1/stats/" + quote(art)),
                       lambda r: (r.status, r.body["views"]), (200, 40))
        self.assertEqual((r.status, r.body["views"]), (200, 40), r)

    def test_views_from_distinct_forwarded_addresses_are_distinct_readers(self):
        # With the repeat-view window on, only distinct readers count: if a collector took
        # nginx's own address for the client, 49 of these 50 would be repeats.
        a, b = self.pair("--view-window", "1800")
        art = "proxy/distinct"
        n = 50
        first = []
        for i in range(n):
            r = self.nginx.post_events(view(art), client("203.0.113.%d" % (i + 1)))
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
            first.append(self.upstream(r, a, b))
        # The same 50 readers again, each through the other collector than before
        # (round robin: 50 requests shift by one): every view is a repeat.
        r = self.nginx.get("/healthz")
        self.assertEqual(r.status, 200)
        for i in range(n):
            r = self.nginx.post_events(view(art), client("203.0.113.%d" % (i + 1)))
            self.assertEqual((r.status, r.body),
                             (200, {"accepted": 0, "ignored": 1,
                                    "ignored_reasons": {"repeat": 1}}), (i, r))
            self.assertNotEqual(self.upstream(r, a, b), first[i], "same collector as before")
        # The readers the collectors told apart are the forwarded addresses: their ids, as the
        # test derives them, are the window's (its hash of each window-long slot the views
        # fell in, "_" aside), and the estimate counts them.
        ids = self.visitor_ids(art, ["203.0.113.%d" % (i + 1) for i in range(n)])
        marked = set()
        for k in self.redis.keys("tally:{??}w:%s:*" % art):
            marked |= set(self.redis.command("HKEYS", k)) - {b"_"}
        self.assertEqual(sorted(marked), sorted(x.encode() for x in ids))
        want = harness.distinct_estimate(self.redis, ids)
        for d in (a, b):
            st = stats_with(d, art, n)
            self.assertEqual((st["views"], st["visitors"]), (n, want), st)
        # The address a collector believes is the rightmost untrusted one: a forged hop left
        # of it changes nothing.
        r = self.nginx.post_events(view(art), client("10.9.9.9, 203.0.113.1"))
        self.assertEqual(r.body, {"accepted": 0, "ignored": 1, "ignored_reasons": {"repeat": 1}})

    # ---- shared visitor salt ----

    def test_one_reader_through_two_collectors_is_one_visitor_and_a_repeat(self):
        a, b = self.pair("--view-window", "1800")
        art = "proxy/salt"
        me = client("192.0.2.77")
        r = a.post_events(view(art), me)
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
        r = b.post_events(view(art), me)
        self.assertEqual((r.status, r.body), (200, {"accepted": 0, "ignored": 1,
                                                    "ignored_reasons": {"repeat": 1}}), r)
        # The view B reads was acknowledged by A.
        st = stats_with(b, art, 1)
        self.assertEqual((st["views"], st["visitors"]), (1, 1), st)
        # Another User-Agent at the same address is another reader, on either collector.
        r = b.post_events(view(art), client("192.0.2.77", UA2))
        self.assertEqual(r.body, {"accepted": 1, "ignored": 0}, r)
        r = a.post_events(view(art), client("192.0.2.77", UA2))
        self.assertEqual(r.body["ignored_reasons"], {"repeat": 1}, r)
        st = stats_with(a, art, 2)
        self.assertEqual((st["views"], st["visitors"]), (2, 2), st)
        # Both collectors use the one salt of the day in Redis. In the last hour of a UTC day
        # a collector fetches tomorrow's salt too (salt.c), so that one may stand beside it.
        salts = sorted(k.decode() for k in self.redis.keys("tally:salt:*"))
        self.assertIn(salts, harness.salts_of_the_day(), self.redis.keys("tally:*"))

    def test_one_reader_through_two_collectors_without_a_window_is_one_visitor(self):
        a, b = self.pair("--view-window", "0")
        art = "proxy/salt0"
        me = client("192.0.2.78")
        for d in (a, b, a, b):
            r = d.post_events(view(art), me)
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
        for d in (a, b):
            st = stats_with(d, art, 4)
            self.assertEqual((st["views"], st["visitors"]), (4, 1), st)

    # ---- reads ----

    def test_both_collectors_answer_every_read_identically(self):
        a, b = self.pair("--view-window", "0")
        arts = ["same/%d" % i for i in range(12)]
        events = []
        for i, art in enumerate(arts):
            events += [view(art)] * (i + 1)
            events += [{"type": "share", "article": art, "network": "email"}] * ((i * 5) % 7 + 1)
            events += [{"type": "comment", "article": art}] * ((i * 3) % 5 + 1)
        for i in range(0, len(events), 100):
            r = self.nginx.post_events(events[i:i + 100], dict(AUTH, **client("192.0.2.9")))
            self.assertEqual(r.status, 200, r)
        paths = ["/v1/stats/" + quote(x) for x in arts] + [
            "/v1/stats?" + "&".join("article=" + quote(x) for x in arts),
            "/v1/totals?period=day", "/v1/totals?period=all",
            "/v1/series/%s?metric=views&interval=day" % quote(arts[5])]
        paths += ["/v1/top?metric=%s&period=%s&limit=%d" % (m, p, n)
                  for m in ("views", "shares", "comments") for p in ("day", "all")
                  for n in (3, 100)]
        want = (sum(range(1, 13)), sum((i * 5) % 7 + 1 for i in range(12)),
                sum((i * 3) % 5 + 1 for i in range(12)))

        def totals(d):
            tot = d.get("/v1/totals?period=day").body
            return (tot["views"], tot["shares"], tot["comments"])
        # Each collector acknowledged part of the events: both read everything once folded.
        for d in (a, b):
            self.assertEqual(harness.eventually(lambda: totals(d), want), want)
        for p in paths:
            ra, rb = a.get(p), b.get(p)
            self.assertEqual((ra.status, rb.status), (200, 200), (p, ra, rb))
            self.assertEqual(ra.body, rb.body, p)
        top = a.get("/v1/top?metric=views&period=day&limit=100").body["articles"]
        self.assertEqual(top, [{"article": x, "count": i + 1}
                               for i, x in reversed(list(enumerate(arts)))])
        self.assertEqual(totals(a), want)

    # ---- rate limit ----

    def test_rate_limit_is_per_client_address_and_per_collector(self):
        rate = 5
        burst = 4 * rate
        a, b = self.pair("--view-window", "0", "--rate-limit", str(rate))
        art = "proxy/limited"
        greedy = client("198.51.100.200")
        answers = []
        t0 = time.monotonic()
        for _ in range(80):
            r = self.nginx.post_events(view(art), greedy)
            answers.append((r.status, self.upstream(r, a, b), r))
        elapsed = time.monotonic() - t0
        ok = [x for x in answers if x[0] == 200]
        limited = [x for x in answers if x[0] == 429]
        self.assertEqual(len(ok) + len(limited), len(answers),
                         [x[2] for x in answers if x[0] not in (200, 429)][:3])
        for _, _, r in limited:
            self.assertEqual(r.body["error"], "rate_limited", r)
            self.assertGreaterEqual(int(r.headers.get("Retry-After", "0")), 1, r)
        # Each collector lets a full burst through, and then its rate: through two
        # collectors a client gets up to twice the burst -- the limit is per collector.
        most = 2 * (burst + int(rate * elapsed) + 1)
        sys.stderr.write("\nrate limit %d/s (burst %d) through 2 collectors: %d of %d "
                         "accepted in %.2f s (bound %d), 429 from %r\n"
                         % (rate, burst, len(ok), len(answers), elapsed, most,
                            sorted({x[1] for x in limited})))
        self.assertGreaterEqual(len(ok), 2 * burst)
        self.assertLessEqual(len(ok), most)
        self.assertEqual({x[1] for x in ok}, {"A", "B"})
        # Over the limit on both, the client gets 429 from whichever collector answers.
        self.assertEqual({x[1] for x in limited}, {"A", "B"})
        self.assertEqual({x[1] for x in answers[-10:] if x[0] == 429}, {"A", "B"})
        # Every 200 was counted, no 429 was (B's once folded).
        self.assertEqual(stats_with(a, art, len(ok))["views"], len(ok))
        # Another client behind the same proxy is not limited.
        for _ in range(4):
            r = self.nginx.post_events(view(art), client("198.51.100.201"))
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
        # A request with the token speaks for a server: no limit.
        r = self.nginx.post_events(view(art), dict(AUTH, **greedy))
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    unittest.main()
