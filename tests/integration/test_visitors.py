"""Visitors, as the contract defines them: a salted hash of client address and User-Agent.
A repeat view by one visitor within --view-window is not counted ("repeat"), a known bot or
crawler is answered but not counted ("bot"), and stats report distinct visitors."""

import re
import time
import unittest

import harness
from harness import counts

BROWSER_A = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
BROWSER_B = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.5 Safari/605.1.15")
BROWSER_C = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
             "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36")
BOTS = ["Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"]


class VisitorsTest(harness.TallyTestCase):
    """Fresh collectors for every test, started after FLUSHALL: each worker caches the day's
    salt from Redis, and a collector that cached it before a FLUSHALL would hash visitors
    differently from one that created a new salt after it."""

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.tallyd = self.track(harness.Tallyd(self.redis))  # the default --view-window
        self.addCleanup(self.tallyd.close)
        self.nowindow = self.track(harness.Tallyd(self.redis, ["--view-window", "0"]))
        self.addCleanup(self.nowindow.close)
        self.tallyd.start()
        self.nowindow.start()

    def view(self, t, article, ua):
        return t.post_events({"type": "view", "article": article}, {"User-Agent": ua})

    def test_repeat_view_within_the_window_is_not_counted(self):
        t = self.tallyd
        r = self.view(t, "v/repeat", BROWSER_A)
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        r = self.view(t, "v/repeat", BROWSER_A)
        self.assertEqual((r.status, r.body),
                         (200, {"accepted": 0, "ignored": 1, "ignored_reasons": {"repeat": 1}}))
        # Another visitor, and the same visitor on another article, are counted.
        self.assertEqual(self.view(t, "v/repeat", BROWSER_B).body,
                         {"accepted": 1, "ignored": 0})
        self.assertEqual(self.view(t, "v/other", BROWSER_A).body, {"accepted": 1, "ignored": 0})
        self.assertEqual(counts(t.stats("v/repeat"))["views"], 2)

    def test_repeat_within_one_batch_is_not_counted(self):
        t = self.tallyd
        r = t.post_events([{"type": "view", "article": "v/batch"}] * 3, {"User-Agent": BROWSER_A})
        self.assertEqual((r.status, r.body),
                         (200, {"accepted": 1, "ignored": 2, "ignored_reasons": {"repeat": 2}}))
        self.assertEqual(counts(t.stats("v/batch"))["views"], 1)

    def test_a_repeat_view_hash_gets_its_expiry_from_the_write_that_makes_it(self):
        """A hash of repeat views (w:) is made with its expiry and the field "_"; a later write
        adds its visitor and sends no EXPIRE. A hash without "_" (as made before it
        was kept) is still read and written, and keeps its expiry. The journal's acks and
        the direct path's writes alike."""
        direct = self.track(harness.Tallyd(self.redis, ["--fold-interval", "0"]))
        self.addCleanup(direct.close)
        direct.start()
        for t, path in ((self.tallyd, "journal"), (direct, "direct")):
            for shape in ("one", "two"):  # one view a POST; a visitor twice in one POST
                with self.subTest(path=path, shape=shape):
                    self.check_repeat_view_hash(t, "v/hash-%s-%s" % (path, shape), shape)

    def expires(self, write, key=None):
        """Run WRITE() and return how many EXPIREs of KEY (None: of any repeat-view hash)
        Redis ran meanwhile, the functions' own included (MONITOR)."""
        mon = harness.RespClient(self.redis.port, timeout=5.0)
        try:
            self.assertEqual(mon.command("MONITOR"), "OK")
            write()
            self.redis.command("ECHO", "writes-end")
            n = 0
            while True:
                line = mon._reply()
                self.assertIsInstance(line, str)
                if line.endswith('"writes-end"'):
                    return n
                args = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
                if args[:1] == ["EXPIRE"] and (args[1] == key if key else "}w:" in args[1]):
                    n += 1
        finally:
            mon.close()

    def check_repeat_view_hash(self, t, article, shape):
        # Every view of a check in one window-long slot (1800 s: its hashes are one).
        left = 1800 - time.time() % 1800
        if left < 30:
            time.sleep(left + 1)
        posts = {"one": lambda ua: self.view(t, article, ua),
                 "two": lambda ua: t.post_events([{"type": "view", "article": article}] * 2,
                                                 {"User-Agent": ua})}[shape]
        answer = {"one": {"accepted": 1, "ignored": 0},
                  "two": {"accepted": 1, "ignored": 1, "ignored_reasons": {"repeat": 1}}}
        first = []
        self.assertEqual(self.expires(lambda: first.append(posts(BROWSER_A))), 1)
        self.assertEqual(first[0].body, answer[shape])
        [key] = self.redis.keys("tally:{??}w:%s:*" % article)
        fields = self.redis.command("HGETALL", key)
        self.assertEqual(len(fields), 4, fields)  # the visitor and "_"
        self.assertEqual(dict(zip(fields[::2], fields[1::2]))[b"_"], b"1")
        self.assertTrue(3590 <= self.redis.command("TTL", key) <= 3600)
        self.redis.command("EXPIRE", key, 500)
        key = key.decode()
        self.assertEqual(self.expires(lambda: self.assertEqual(posts(BROWSER_B).body,
                                                               answer[shape]), key), 0)
        self.assertEqual(self.redis.command("HLEN", key), 3)
        self.assertTrue(490 <= self.redis.command("TTL", key) <= 500)
        # As made before "_": its visitors and an expiry of its own.
        visitors = [f for f in self.redis.command("HKEYS", key) if f != b"_"]
        self.assertEqual(len(visitors), 2, visitors)
        self.assertEqual(self.redis.command("HDEL", key, "_"), 1)
        self.redis.command("EXPIRE", key, 400)
        for ua in (BROWSER_A, BROWSER_B):
            self.assertEqual(self.view(t, article, ua).body,
                             {"accepted": 0, "ignored": 1, "ignored_reasons": {"repeat": 1}})
        # A hash without "_" looks new to the write that adds it: EXPIRE NX, which keeps the
        # expiry it has.
        self.assertEqual(self.expires(lambda: self.assertEqual(posts(BROWSER_C).body,
                                                               answer[shape]), key), 1)
        fields = self.redis.command("HKEYS", key)
        self.assertEqual(len(fields), 4, fields)  # A, B, C and "_" again
        self.assertTrue(set(visitors + [b"_"]) <= set(fields), fields)
        self.assertTrue(390 <= self.redis.command("TTL", key) <= 400)
        self.assertEqual(counts(t.stats(article))["views"], 3)

    def test_stats_count_distinct_visitors(self):
        t = self.nowindow
        for ua in (BROWSER_A, BROWSER_B, BROWSER_A, BROWSER_C, BROWSER_A):
            self.assertEqual(self.view(t, "v/visitors", ua).status, 200)
        s = t.stats("v/visitors")
        # Three readers: 3, or 2 where two share the estimate's register (the day's salt
        # decides): the estimate of their ids.
        want = harness.distinct_estimate(self.redis, harness.reader_ids(
            self.redis, "v/visitors", [("127.0.0.1", ua) for ua in (BROWSER_A, BROWSER_B,
                                                                     BROWSER_C)]))
        self.assertEqual((s["views"], s["visitors"]), (5, want))

    def test_known_bots_are_answered_but_not_counted(self):
        for ua in BOTS:
            with self.subTest(user_agent=ua):
                r = self.view(self.nowindow, "v/bot", ua)
                self.assertEqual((r.status, r.body),
                                 (200, {"accepted": 0, "ignored": 1,
                                        "ignored_reasons": {"bot": 1}}))
        self.assertEqual(self.redis.keys("tally:{??}a:*"), [])


if __name__ == "__main__":
    unittest.main()


class SharedSaltTest(harness.TallyTestCase):
    """The workers of one collector share its cache of the day's salt. One worker reads the salt,
    Redis loses it (FLUSHALL), and the same reader then comes through many connections, which
    the kernel spreads over every worker (SO_REUSEPORT): the workers that had not read the salt
    yet must take the collector's, not create a new one, or the reader is two visitors."""

    CONNECTIONS = 32  # fresh connections after the flush: all on one worker with odds 2^-31

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.tallyd = self.track(harness.Tallyd(self.redis, ["--view-window", "0"],
                                                threads=max(2, harness.tallyd_threads())))
        self.addCleanup(self.tallyd.close)
        self.tallyd.start()

    def test_workers_agree_on_the_salt_after_redis_lost_it(self):
        t = self.tallyd
        view = {"type": "view", "article": "v/salt"}
        ua = {"User-Agent": BROWSER_A}
        keep = harness.KeepAliveClient(t.port)
        self.addCleanup(keep.close)
        # One worker, the one behind this connection, reads (creates) the day's salt.
        r = keep.post_events({"type": "view", "article": "v/salt-first"}, ua)
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        # The day's salt (and in its last hour tomorrow's: salt.c fetches it ahead).
        salts = sorted(k.decode() for k in self.redis.keys("tally:salt:*"))
        self.assertIn(salts, harness.salts_of_the_day())
        self.redis.flushall()
        self.assertEqual(self.redis.keys("tally:salt:*"), [])
        # The same reader: on that worker, then on whichever workers fresh connections reach.
        self.assertEqual(keep.post_events(view, ua).body, {"accepted": 1, "ignored": 0})
        for _ in range(self.CONNECTIONS):
            r = t.post_events(view, ua)
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        self.assertEqual(keep.post_events(view, ua).body, {"accepted": 1, "ignored": 0})
        s = t.stats("v/salt")
        self.assertEqual((s["views"], s["visitors"]), (self.CONNECTIONS + 2, 1))
