"""DELETE /v1/articles/{article} against collectors whose clocks differ from Redis's, and the
lifetimes of what is left.

Writes file buckets by the collector's clock. Collector A runs two minutes past the coming
UTC midnight, collector B two minutes before it (tests/tools/clockshift.c, preloaded, shifts
their time()); Redis keeps the real time, hours away from both. An article written through A
and forgotten through B must be gone from every report A answers.

A DELETE may forget the last article of a bucket key whose expiry a writer remembers as set
-- the writer of this collector or of another; a later write must leave it with an expiry. The
article's share of the site totals comes out of its own bucket, which may hold no site totals
of that day yet: that key must expire too."""

import os
import time
import unittest

import harness
from harness import quote
from test_expiry import KEPT, LIFETIMES, SLACK, WHILE_WAITING, kind_of
from test_reports import bucket

DAY = 86400
HOUR = 3600
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/%d.0"
AUTH = {"Authorization": "Bearer " + harness.TOKEN}


def shifted(redis, shift):
    """A tallyd on REDIS whose clock runs SHIFT seconds ahead (one worker thread: one writer,
    so what it remembers of expiries is what the next write uses)."""
    lib = os.environ.get("TALLY_CLOCKSHIFT", "")
    if not os.path.isfile(lib):
        raise RuntimeError("TALLY_CLOCKSHIFT=%r is not the clock-shift library: run the "
                           "integration tests with ctest" % lib)
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": lib, "TALLY_CLOCK_SHIFT": str(shift),
           # The sanitizer runtime comes after the preloaded library here; that is fine.
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    return harness.Tallyd(redis, ["--token", harness.TOKEN], env=env, threads=1)


class ForgetTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()

    def start(self, tallyd):
        self.track(tallyd)
        self.addCleanup(tallyd.close)
        return tallyd.start()

    def post(self, tallyd, body, ua=UA % 128):
        r = tallyd.post_events(body, {"User-Agent": ua, **AUTH})
        self.assertEqual(r.status, 200, r)

    def delete(self, tallyd, article):
        r = tallyd.request("DELETE", "/v1/articles/" + quote(article), headers=AUTH)
        self.assertEqual(r.status, 204, r)

    def test_delete_finds_what_a_clock_ahead_wrote(self):
        now = int(time.time())
        midnight = (now // DAY + 1) * DAY
        a = self.start(shifted(self.redis, midnight + 120 - now))
        b = self.start(shifted(self.redis, midnight - 120 - now))
        article = "forget/skewed"
        self.post(a, [{"type": "view", "article": article, "words": 800},
                      {"type": "share", "article": article, "network": "email"},
                      {"type": "comment", "article": article},
                      {"type": "engage", "article": article, "seconds": 45, "read": True}])
        self.post(a, {"type": "view", "article": article}, ua=UA % 127)
        self.post(a, {"type": "view", "article": article}, ua=UA % 126)
        # A files under tomorrow, 00h: its reports show the 3 views.
        series = "/v1/series/%s?interval=hour&from=%s" % (
            quote(article), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(midnight - 22 * HOUR)))
        self.assertEqual(a.get("/v1/top?period=day").body["articles"],
                         [{"article": article, "count": 3}])
        self.assertEqual(a.get("/v1/totals?period=day").body,
                         {"period": "day", "views": 3, "shares": 1, "comments": 1, "reads": 1,
                          "engaged_seconds": 45})
        self.assertEqual(a.get("/v1/top?period=day&metric=engaged").body["articles"],
                         [{"article": article, "count": 45}])
        # (Read through B, which forgets it: A's cache would keep it for a moment.)
        self.assertEqual(harness.counts(b.stats(article)),
                         {"article": article, "views": 3, "shares": 1,
                          "shares_by_network": {"email": 1}, "comments": 1,
                          "engaged_seconds": 45, "reads": 1, "words": 800})
        points = a.get(series).body["points"]
        self.assertEqual([p["value"] for p in points], [0] * 22 + [3, 0], points)
        self.assertEqual(points[22]["t"],
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(midnight)))

        self.delete(b, article)

        self.assertEqual(a.stats(article), harness.zero_stats(article))
        for period in ("day", "week", "month", "all"):
            for metric in ("views", "reads", "engaged"):
                self.assertEqual(a.get("/v1/top?period=%s&metric=%s" % (period, metric))
                                 .body["articles"], [], (period, metric))
            self.assertEqual(a.get("/v1/totals?period=" + period).body,
                             {"period": period, "views": 0, "shares": 0, "comments": 0,
                              "reads": 0, "engaged_seconds": 0}, period)
        for metric in ("views", "visitors", "shares", "comments", "reads", "engaged"):
            r = a.get(series + "&metric=" + metric)
            self.assertEqual([p["value"] for p in r.body["points"]], [0] * 24, (metric, r))
        self.assertEqual(self.redis.keys("*" + harness.glob_escape(article) + "*"), [])
        # A writes it again: A's writer knows nothing of B's DELETE, and remembers the expiry
        # of the buckets' keys it wrote before.
        self.post(a, [{"type": "view", "article": article},
                      {"type": "share", "article": article, "network": "email"},
                      {"type": "comment", "article": article}], ua=UA % 120)
        self.assertEqual(a.get("/v1/totals?period=day").body,
                         {"period": "day", "views": 1, "shares": 1, "comments": 1, "reads": 0,
                          "engaged_seconds": 0})
        self.check_lifetimes()

    def check_lifetimes(self):
        """Every key has the lifetime of its kind (test_expiry.LIFETIMES); a forgotten share of
        a day's site totals, and a day or hour key a DELETE emptied, expire with their day or
        hour (counted from its start, not from the first write); no journal is left (call it
        after a read of counts). Returns the kinds seen."""
        c = harness.RespClient(self.redis.port)
        try:
            ttls = {k.decode(): c.command("TTL", k) for k in self.redis.keys("*")}
        finally:
            c.close()
        kinds = set()
        for key, ttl in sorted(ttls.items()):
            kind = kind_of(key)
            kinds.add(kind)
            with self.subTest(key=key):
                self.assertNotIn(kind, WHILE_WAITING,
                                 "%s is left after a read folded everything" % key)
            want = LIFETIMES.get(kind, KEPT.get(kind))
            with self.subTest(key=key):
                if want is None:
                    self.assertEqual(ttl, -1, "%s should be kept" % key)
                else:
                    low = want[1] - {"s:day": DAY, "d": DAY, "h": HOUR}.get(kind, 0) - SLACK
                    self.assertTrue(low <= ttl <= want[1],
                                    "%s: %d s left, want %d..%d" % (key, ttl, low, want[1]))
        return kinds

    def test_keys_left_after_a_delete_and_a_write_expire(self):
        tallyd = self.start(shifted(self.redis, 0))
        other, victim = "forget/other", "forget/victim"
        for i in range(100):
            if bucket("forget/other/%d" % i) != bucket(victim):
                other = "forget/other/%d" % i
                break
        # One unit: its site totals go into the bucket of the article it touches first -- the
        # comment deltas', counted when the unit is acknowledged, as the rest's, counted by the
        # fold --, so the victim's own bucket has no site totals of today.
        self.post(tallyd, [{"type": "view", "article": other},
                           {"type": "comment", "article": other},
                           {"type": "view", "article": victim},
                           {"type": "share", "article": victim, "network": "copy"},
                           {"type": "comment", "article": victim},
                           {"type": "engage", "article": victim, "seconds": 9, "read": True}])
        # (The read waits for the fold of what the unit's acknowledgement left to count.)
        self.assertEqual(tallyd.get("/v1/totals?period=day").body,
                         {"period": "day", "views": 2, "shares": 1, "comments": 2, "reads": 1,
                          "engaged_seconds": 9})
        site = self.redis.keys("tally:{%s}s:2*" % bucket(victim))
        self.assertEqual(site, [], "the victim's bucket already holds site totals")
        self.delete(tallyd, victim)
        self.assertNotEqual(self.redis.keys("tally:{%s}s:2*" % bucket(victim)), [])
        # The writer learnt of the expiry of the victim's bucket keys before; a new write of
        # every metric writes them again.
        self.post(tallyd, [{"type": "view", "article": victim},
                           {"type": "share", "article": victim, "network": "copy"},
                           {"type": "comment", "article": victim},
                           {"type": "engage", "article": victim, "seconds": 30, "read": True}],
                  ua=UA % 125)
        self.assertEqual(tallyd.get("/v1/totals?period=day").body,
                         {"period": "day", "views": 2, "shares": 1, "comments": 2, "reads": 1,
                          "engaged_seconds": 30})
        kinds = self.check_lifetimes()
        self.assertTrue({"a", "t", "s:all", "s:day", "d", "h", "v"} <= kinds, kinds)


if __name__ == "__main__":
    unittest.main()
