"""Expiry: every key tally writes has the lifetime the key schema gives it. Only the totals
(a:), the all-time top lists (t:) and the all-time site totals (s:all) are kept; hourly
buckets live 9 days, daily ones 405, visitor estimates 2 days, repeat-view markers two
windows, write outcomes 10 minutes, Idempotency-Keys a day, salts 2 days. A worker's journal
and the journals' registry have no expiry: they exist only while acknowledged entries wait to be
counted, and the fold that counts the last entry deletes them.

The collector remembers which bucket keys of this hour and day already have their expiry, per
metric: a key of another metric in a known bucket (a share after a view, a comment, a
visitor estimate that grows later) must still get its own. Its writes and its folds share that
knowledge: a key a fold creates gets its expiry, and what a fold set is known to the next."""

import time
import unittest

import harness
from harness import quote
from test_reports import bucket

DAY = 86400
BROWSERS = ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/%d.0" % v
            for v in range(120, 126)]

# The lifetime each kind of key has: (least, most) seconds left; None: kept for good. Each
# expiry is set when its key is created, during this test: at most SLACK seconds ago.
SLACK = 120
LIFETIMES = {
    "a": None,
    "t": None,
    "s:all": None,
    "s:day": (405 * DAY - SLACK, 405 * DAY),
    "d": (405 * DAY - SLACK, 405 * DAY),
    "h": (9 * DAY - SLACK, 9 * DAY),
    "v": (2 * DAY - SLACK, 2 * DAY),
    "w": (2 * 1800 - SLACK, 2 * 1800),
    "x": (600 - SLACK, 600),
    "i": (DAY - SLACK, DAY),
    "salt": (2 * DAY - SLACK, 2 * DAY),
}
# Kinds a read writes: a bucket's part of a week's or month's top list or totals, kept a
# minute for every collector, and the bucket's epoch, set by a DELETE or an import that
# touched it (src/scripts/kept.lua).
KEPT = {
    "k": (0, 60),
    "k:epoch": (DAY - SLACK, DAY),
}

# Kinds that exist only while entries wait to be counted (one Redis, --fold-interval above 0):
# a worker's journal P{00}q:<writer> (a stream) and the journals' registry P{00}r:journals (a
# sorted set). Neither expires; the fold that empties a journal deletes it and takes it out of
# the registry, and the registry goes with its last journal. After a read of counts on the
# collector that acknowledged everything (the read waits for its folds), none is left.
WHILE_WAITING = {"q", "r"}


def kind_of(key):
    """The kind of a key under the prefix "tally:" (see include/tally/keys.h)."""
    rest = key[len("tally:"):]
    if rest.startswith("salt:"):
        return "salt"
    assert rest.startswith("{") and rest[3] == "}", key
    kind = rest[4]
    if kind == "s":
        return "s:all" if rest[5:] == ":all" else "s:day"
    if kind == "k":
        return "k:epoch" if rest[5:] == ":epoch" else "k"
    return kind


class ExpiryTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.tallyd = self.track(harness.Tallyd(self.redis, ["--token", harness.TOKEN]))
        self.addCleanup(self.tallyd.close)
        self.tallyd.start()

    def post(self, body, ua=BROWSERS[0], headers=None):
        h = {"User-Agent": ua, **(headers or {})}
        r = self.tallyd.post_events(body, h)
        self.assertEqual(r.status, 200, r)
        return r

    def lifetimes(self):
        """{key: seconds left, or -1 when kept for good} of every key."""
        c = harness.RespClient(self.redis.port)
        try:
            return {k.decode(): c.command("TTL", k) for k in self.redis.keys("*")}
        finally:
            c.close()

    def check_lifetimes(self):
        """Every key has its kind's lifetime, and no journal is left: call it after a read of
        counts on the collector that wrote them."""
        seen = set()
        for key, ttl in sorted(self.lifetimes().items()):
            kind = kind_of(key)
            seen.add(kind)
            with self.subTest(key=key):
                self.assertNotIn(kind, WHILE_WAITING,
                                 "%s is left after a read folded everything" % key)
            want = LIFETIMES.get(kind, KEPT.get(kind))
            with self.subTest(key=key):
                if want is None:
                    self.assertEqual(ttl, -1, "%s should be kept" % key)
                else:
                    self.assertTrue(want[0] <= ttl <= want[1],
                                    "%s: %d s left, want %d..%d" % (key, ttl, want[0], want[1]))
        return seen

    def test_every_key_written_one_request_at_a_time_expires_as_its_kind(self):
        article = "expiry/one"
        auth = {"Authorization": "Bearer " + harness.TOKEN}
        # One request at a time, so each is its own write: the first makes the bucket's views
        # keys known; every later metric's keys are new in a known bucket.
        self.post({"type": "view", "article": article})
        self.post({"type": "share", "article": article, "network": "twitter"})
        self.post({"type": "comment", "article": article}, headers=auth)
        self.post({"type": "comment", "article": article, "delta": -1}, headers=auth)
        self.post({"type": "comment", "article": article}, headers=auth)
        self.post({"type": "engage", "article": article, "seconds": 40})
        self.post({"type": "engage", "article": article, "seconds": 20, "read": True})
        for ua in BROWSERS[1:]:
            self.post({"type": "view", "article": article}, ua=ua)
        self.post({"type": "view", "article": "expiry/keyed"},
                  headers={"Idempotency-Key": "expiry-key-1"})
        stats = self.tallyd.stats(article)
        self.assertEqual({k: stats[k] for k in ("views", "visitors", "shares", "comments",
                                                "engaged_seconds", "reads")},
                         {"views": 6, "visitors": 6, "shares": 1, "comments": 1,
                          "engaged_seconds": 60, "reads": 1})
        seen = self.check_lifetimes()
        self.assertEqual(seen, set(LIFETIMES), "every kind of key was written")
        # The bucket keys of every metric are there, each with its own expiry.
        keys = {k for k in self.lifetimes() if kind_of(k) in ("d", "h")}
        for metric in ("views", "visitors", "shares", "comments", "reads", "engaged"):
            for kind in ("d", "h"):
                self.assertTrue(any(("}%s:%s:" % (kind, metric)) in k for k in keys),
                                "no %s key of %s in %s" % (kind, metric, sorted(keys)))

    def test_keys_written_in_one_batch_expire_too(self):
        auth = {"Authorization": "Bearer " + harness.TOKEN}
        events = []
        for i in range(25):
            a = "expiry/batch-%d" % i
            events += [{"type": "view", "article": a},
                       {"type": "share", "article": a, "network": "email"},
                       {"type": "comment", "article": a},
                       {"type": "engage", "article": a, "seconds": 5, "read": i % 2 == 0}]
        self.post(events, headers=auth)
        self.post({"type": "view", "article": "expiry/batch-0"}, ua=BROWSERS[1])
        # The read counts what was acknowledged: every journal entry is folded.
        self.assertEqual(self.tallyd.get("/v1/totals?period=day").body,
                         {"period": "day", "views": 26, "shares": 25, "comments": 25,
                          "reads": 13, "engaged_seconds": 125})
        seen = self.check_lifetimes()
        self.assertEqual(seen, set(LIFETIMES) - {"i"}, "every kind of key but keys was written")

    def test_a_journal_exists_only_while_its_entries_wait(self):
        """Between the 200 and the fold, the worker's journal and the registry are there, kept
        for good (no expiry): they are the record of what was acknowledged. The fold that counts
        the last entry deletes both."""
        # Folds only when a reader asks (the interval is longer than the test), one worker.
        self.tallyd.close()
        self.tallyd = self.track(harness.Tallyd(self.redis, ["--token", harness.TOKEN,
                                                             "--fold-interval", "10000"],
                                                threads=1))
        self.addCleanup(self.tallyd.close)
        self.tallyd.start()
        c = harness.RespClient(self.redis.port)
        self.addCleanup(c.close)
        self.post([{"type": "view", "article": "expiry/wait"},
                   {"type": "share", "article": "expiry/wait", "network": "email"}])
        self.post({"type": "view", "article": "expiry/wait"}, ua=BROWSERS[1])
        journals = self.redis.keys("tally:{00}q:*")
        self.assertEqual(len(journals), 1, journals)
        journal = journals[0]
        self.assertEqual(self.redis.keys("tally:{00}r:*"), [b"tally:{00}r:journals"])
        self.assertEqual((c.command("TYPE", journal), c.command("TTL", journal),
                          c.command("XLEN", journal)), ("stream", -1, 2))
        self.assertEqual((c.command("TYPE", "tally:{00}r:journals"),
                          c.command("TTL", "tally:{00}r:journals")), ("zset", -1))
        registry = c.command("ZRANGE", "tally:{00}r:journals", 0, -1, "WITHSCORES")
        self.assertEqual(registry[0::2], [journal])
        # Scored with Redis's time of the last entry, in ms.
        now = c.command("TIME")
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        self.assertTrue(0 <= now_ms - int(registry[1]) < 5000, (now_ms, registry))
        # Not counted yet.
        self.assertEqual(self.redis.keys("tally:{*}a:*"), [])
        stats = self.tallyd.stats("expiry/wait")
        self.assertEqual((stats["views"], stats["visitors"], stats["shares"]), (2, 2, 1))
        self.assertEqual(self.redis.keys("tally:{00}[qr]:*"), [])
        self.check_lifetimes()


    def test_a_key_a_fold_creates_expires_and_the_next_folds_know_it(self):
        """The folds of a worker share its writer's knowledge of which bucket keys of this hour
        and day have their expiry, and learn what they set. A key a fold creates gets its
        expiry -- a fold of the writer's own merge or one from the journal (an entry the
        collector did not append). A later fold sets no expiry on a key known to have one: a key
        whose expiry was taken away behind the collector's back stays without (the proof that
        the fold asked for none). A DELETE makes the collector forget; the next fold sets them
        again."""
        # Not across an hour's end: the collector forgets its hour's keys there.
        if time.time() % 3600 > 3570:
            time.sleep(3600 - time.time() % 3600 + 1)
        # Folds only when a reader asks (the interval is longer than the test), one worker.
        self.tallyd.close()
        self.tallyd = self.track(harness.Tallyd(self.redis, ["--token", harness.TOKEN,
                                                             "--fold-interval", "10000",
                                                             "--follow-reads", "0"],
                                                threads=1))
        self.addCleanup(self.tallyd.close)
        self.tallyd.start()
        c = harness.RespClient(self.redis.port)
        self.addCleanup(c.close)
        a, other, y = "expiry/fold", None, None
        for i in range(1000):
            name = "expiry/fold-%d" % i
            if other is None and bucket(name) == bucket(a):
                other = name
            elif y is None and bucket(name) != bucket(a):
                y = name
        hour = time.strftime("%Y%m%d%H", time.gmtime())

        def views_keys(article):
            return ["tally:{%s}d:views:%s" % (bucket(article), hour[:8]),
                    "tally:{%s}h:views:%s" % (bucket(article), hour)]

        def ttls(article):
            return [c.command("TTL", k) for k in views_keys(article)]

        def expiring(article):
            """Both views keys of ARTICLE's bucket expire as their kinds."""
            d, h = ttls(article)
            return LIFETIMES["d"][0] <= d <= LIFETIMES["d"][1] and \
                LIFETIMES["h"][0] <= h <= LIFETIMES["h"][1]

        def views(article):
            return self.tallyd.stats(article)["views"]

        # The merged fold of the first entry creates the bucket's keys, with their expiry.
        self.post({"type": "view", "article": a}, ua=BROWSERS[0])
        self.assertEqual(ttls(a), [-2, -2])
        self.assertEqual(views(a), 1)
        self.assertTrue(expiring(a), ttls(a))
        # An entry the collector did not append (written as ack.lua writes it), after one it
        # did: folded from the journal, which creates the keys of y's bucket.
        self.post({"type": "view", "article": a}, ua=BROWSERS[1])
        [journal] = self.redis.keys("tally:{00}q:*")
        c.command("XADD", journal, "*", "n", str(int(time.time())), "c", "0", "r", "",
                  "a", "\n".join([bucket(y), y, "2", "0", "0", "0", "0", "0"]))
        self.assertEqual(ttls(y), [-2, -2])
        self.assertEqual((views(a), views(y)), (2, 2))
        self.assertTrue(expiring(y), ttls(y))
        # Expiries taken away behind the collector's back: its folds, which know they were
        # set, set none.
        for k in views_keys(a) + views_keys(y):
            self.assertEqual(c.command("PERSIST", k), 1, k)
        self.post({"type": "view", "article": a}, ua=BROWSERS[2])
        self.post({"type": "view", "article": y}, ua=BROWSERS[2])
        self.post({"type": "view", "article": other}, ua=BROWSERS[2])
        self.assertEqual((views(a), views(y), views(other)), (3, 3, 1))
        self.assertEqual((ttls(a), ttls(y)), ([-1, -1], [-1, -1]))
        # A DELETE (of another article of a's bucket: a's keys stay) makes it forget.
        r = self.tallyd.request("DELETE", "/v1/articles/" + quote(other),
                                headers={"Authorization": "Bearer " + harness.TOKEN})
        self.assertEqual(r.status, 204, r)
        self.assertEqual((ttls(a), ttls(y)), ([-1, -1], [-1, -1]))
        self.post({"type": "view", "article": a}, ua=BROWSERS[3])
        self.post({"type": "view", "article": y}, ua=BROWSERS[3])
        self.assertEqual((views(a), views(y)), (4, 4))
        self.assertTrue(expiring(a), ttls(a))
        self.assertTrue(expiring(y), ttls(y))
        self.assertEqual(hour, time.strftime("%Y%m%d%H", time.gmtime()), "an hour ended")
        self.check_lifetimes()
    def test_a_visitor_estimate_gets_its_expiry_when_it_is_made(self):
        """An article's estimate of a day's distinct visitors gets its expiry from the write
        that makes it, not at each new visitor that makes it grow: an estimate whose expiry was
        taken away behind the collector's back stays without while it grows (the proof that
        growing asks for none). One lost and made again gets its expiry again, though the
        article had visitors that day already. Folded (the default) and counted at once."""
        # Not across a day's end: the estimate is the day's.
        if time.time() % DAY > DAY - 30:
            time.sleep(DAY - time.time() % DAY + 1)
        article = "expiry/visitors"
        key = "tally:{%s}v:%s:%s" % (bucket(article), time.strftime("%Y%m%d", time.gmtime()),
                                     article)
        c = harness.RespClient(self.redis.port)
        self.addCleanup(c.close)

        def expiring():
            return LIFETIMES["v"][0] <= c.command("TTL", key) <= LIFETIMES["v"][1]

        for args in ([], ["--fold-interval", "0"]):
            with self.subTest(args=args):
                self.tallyd.close()
                self.redis.flushall()
                self.tallyd = self.track(harness.Tallyd(self.redis, ["--token", harness.TOKEN]
                                                        + args))
                self.addCleanup(self.tallyd.close)
                self.tallyd.start()

                def estimate(n):
                    # What the estimate counts for the first N readers: N, or fewer where two
                    # share a register (the day's salt decides).
                    return harness.distinct_estimate(self.redis, harness.reader_ids(
                        self.redis, article, [("127.0.0.1", ua) for ua in BROWSERS[:n]]))

                for i, ua in enumerate(BROWSERS[:3]):
                    self.post({"type": "view", "article": article}, ua=ua)
                    self.assertEqual(self.tallyd.stats(article)["visitors"], estimate(i + 1))
                    self.assertTrue(expiring(), c.command("TTL", key))
                self.assertEqual(c.command("PERSIST", key), 1)
                self.post({"type": "view", "article": article}, ua=BROWSERS[3])
                four = estimate(4)
                self.assertEqual(self.tallyd.stats(article)["visitors"], four)
                self.assertEqual(c.command("TTL", key), -1)
                # Lost, and made again by the next visitor: the day's count stays (the new
                # estimate counts fewer), the new estimate expires.
                self.assertEqual(c.command("DEL", key), 1)
                self.post({"type": "view", "article": article}, ua=BROWSERS[4])
                self.assertEqual(self.tallyd.stats(article)["visitors"], four)
                self.assertTrue(expiring(), c.command("TTL", key))
                self.assertEqual(c.command("PFCOUNT", key), 1)


if __name__ == "__main__":
    unittest.main()
