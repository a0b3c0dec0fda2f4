"""Engaged time, read-through and words: engage events and a view's words, counted by a real
tallyd in a real Redis and read back exactly from /v1/stats, /v1/series, /v1/top, /v1/totals,
badges and /metrics; refused as the contract says, and forgotten by DELETE."""

import time
import unittest

import harness
from harness import counts, quote

DAY = 86400
HOUR = 3600
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/%d.0"
AUTH = {"Authorization": "Bearer " + harness.TOKEN}


def engage(article, seconds, read=None):
    e = {"type": "engage", "article": article, "seconds": seconds}
    if read is not None:
        e["read"] = read
    return e


class EngageTest(harness.OneCollectorTestCase):

    tallyd_args = ("--token", harness.TOKEN)

    def post(self, body, ua=UA % 128, headers=None, accepted=None):
        r = self.t.post_events(body, {"User-Agent": ua, **(headers or {})})
        self.assertEqual(r.status, 200, r)
        n = len(body) if isinstance(body, list) else 1
        self.assertEqual(r.body["accepted"], n if accepted is None else accepted, r)
        return r

    def get(self, path):
        r = self.t.get(path)
        self.assertEqual(r.status, 200, r)
        return r.body

    def assertNothingCounted(self):
        self.assertEqual(self.redis.keys("tally:{??}*"), [])

    def within_one_hour(self):
        """Wait out the end of this hour if it is close: the checks below read this hour."""
        left = HOUR - time.time() % HOUR
        if left < 20:
            time.sleep(left + 1)

    # ---- Counting ----

    def test_engage_events_count_in_stats_series_top_and_totals(self):
        # A collector of its own: the week's and month's lists of the shared one are cached.
        self.t = self.track(harness.Tallyd(self.redis, ["--token", harness.TOKEN]))
        self.addCleanup(self.t.close)
        self.t.start()
        self.within_one_hour()
        # a: 95 + 30 + 200 s, read twice; b: 60 s, read once; c: 3600 + 1 s, never read;
        # d: a view only. Spread over requests and batches, one unit coalescing some.
        self.post([engage("e/a", 95, True), engage("e/b", 60, True), {"type": "view",
                                                                       "article": "e/d"}])
        self.post(engage("e/a", 30))
        self.post([engage("e/c", 3600, False), engage("e/a", 200, True), engage("e/c", 1)])
        now = time.time()
        want = {"e/a": (325, 2), "e/b": (60, 1), "e/c": (3601, 0), "e/d": (0, 0)}
        for a, (seconds, reads) in want.items():
            with self.subTest(article=a):
                s = self.t.stats(a)
                self.assertEqual((s["engaged_seconds"], s["reads"], s["words"]),
                                 (seconds, reads, 0), s)
                self.assertEqual(s["views"], 1 if a == "e/d" else 0, s)
        many = self.get("/v1/stats?" + "&".join("article=" + quote(a) for a in want))
        self.assertEqual([(s["article"], s["engaged_seconds"], s["reads"])
                          for s in many["articles"]],
                         [(a, v[0], v[1]) for a, v in want.items()])

        for period in ("day", "week", "month", "all"):
            with self.subTest(period=period):
                top = self.get("/v1/top?metric=engaged&period=" + period)
                self.assertEqual(top, {"metric": "engaged", "period": period, "articles": [
                    {"article": "e/c", "count": 3601}, {"article": "e/a", "count": 325},
                    {"article": "e/b", "count": 60}]})
                top = self.get("/v1/top?metric=reads&limit=1&period=" + period)
                self.assertEqual(top, {"metric": "reads", "period": period, "articles": [
                    {"article": "e/a", "count": 2}]})
                top = self.get("/v1/top?metric=reads&period=" + period)
                self.assertEqual(top["articles"], [{"article": "e/a", "count": 2},
                                                   {"article": "e/b", "count": 1}])
                totals = self.get("/v1/totals?period=" + period)
                self.assertEqual(totals, {"period": period, "views": 1, "shares": 0,
                                          "comments": 0, "reads": 3, "engaged_seconds": 3986})

        hour = int(now) // HOUR * HOUR
        day = int(now) // DAY * DAY
        for metric, value in (("engaged", 325), ("reads", 2)):
            with self.subTest(metric=metric):
                s = self.get("/v1/series/e%%2Fa?metric=%s&interval=hour" % metric)
                self.assertEqual(s["metric"], metric)
                self.assertEqual(len(s["points"]), 24)
                self.assertEqual([p["value"] for p in s["points"]], [0] * 23 + [value])
                self.assertEqual(s["points"][-1]["t"],
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(hour)))
                s = self.get("/v1/series/e%%2Fa?metric=%s&interval=day" % metric)
                self.assertEqual([p["value"] for p in s["points"]], [0] * 29 + [value])
                self.assertEqual(s["points"][-1]["t"],
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day)))
        s = self.get("/v1/series/e%2Fd?metric=engaged&interval=day")
        self.assertEqual([p["value"] for p in s["points"]], [0] * 30)

    def test_a_view_keeps_the_latest_words(self):
        self.post({"type": "view", "article": "w/a", "words": 1200})
        self.assertEqual(self.t.stats("w/a")["words"], 1200)
        # A later count replaces it; a view without words leaves it; a repeat view (not
        # counted) still brings the page's count.
        self.post({"type": "view", "article": "w/a", "words": 900}, ua=UA % 127)
        self.assertEqual(self.t.stats("w/a")["words"], 900)
        self.post({"type": "view", "article": "w/a"}, ua=UA % 126)
        self.assertEqual(self.t.stats("w/a")["words"], 900)
        r = self.post({"type": "view", "article": "w/a", "words": 1000000}, ua=UA % 126,
                      accepted=0)
        self.assertEqual(r.body["ignored_reasons"], {"repeat": 1})
        self.assertEqual(counts(self.t.stats("w/a")),
                         {"article": "w/a", "views": 3, "shares": 0, "shares_by_network": {},
                          "comments": 0, "words": 1000000})
        # The last of one batch wins; words on other types are ignored.
        self.post([{"type": "view", "article": "w/b", "words": 5},
                   {"type": "share", "article": "w/b", "words": 7},
                   engage("w/b", 10, False) | {"words": 8},
                   {"type": "view", "article": "w/b", "words": 6}], ua=UA % 125, accepted=3)
        s = self.t.stats("w/b")
        self.assertEqual((s["views"], s["words"], s["engaged_seconds"], s["reads"]),
                         (1, 6, 10, 0), s)
        # Words are no metric of lists or series.
        r = self.t.get("/v1/top?metric=words")
        self.assertEqual(r.status, 400, r)

    def test_bad_engage_and_words_are_400_and_count_nothing(self):
        good = {"type": "view", "article": "bad/good", "words": 10}
        cases = [
            (engage("bad/x", 0), "invalid_seconds", "events[1].seconds: must be an integer "
                                                     "from 1 to 3600"),
            (engage("bad/x", 3601), "invalid_seconds", "events[1].seconds:"),
            (engage("bad/x", 2.5), "invalid_seconds", "events[1].seconds:"),
            (engage("bad/x", "30"), "invalid_seconds", "events[1].seconds:"),
            ({"type": "engage", "article": "bad/x"}, "invalid_seconds",
             "events[1].seconds: missing"),
            ({"type": "engage", "article": "bad/x", "read": True}, "invalid_seconds",
             "events[1].seconds: missing"),
            (engage("bad/x", 30, "yes"), "invalid_read", "events[1].read: must be true or false"),
            (engage("bad/x", 30, 1), "invalid_read", "events[1].read:"),
            ({"type": "view", "article": "bad/x", "words": 0}, "invalid_words",
             "events[1].words: must be an integer from 1 to 1000000"),
            ({"type": "view", "article": "bad/x", "words": 1000001}, "invalid_words",
             "events[1].words:"),
            ({"type": "view", "article": "bad/x", "words": "many"}, "invalid_words",
             "events[1].words:"),
        ]
        for event, code, message in cases:
            with self.subTest(event=event):
                r = self.t.post_events([good, event, engage("bad/good", 5, True)])
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.body["error"], code, r)
                self.assertTrue(r.body["message"].startswith(message), r)
        self.assertNothingCounted()

    def test_pixel_counts_engage_and_words(self):
        def pixel(query, outcome):
            r = self.t.get("/v1/pixel.gif?" + query, {"User-Agent": UA % 128})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("Content-Type"), "image/gif")
            self.assertEqual(r.headers.get("Tally-Outcome"), outcome, query)

        for query, outcome in (("type=engage&article=p%2Fa", "invalid_seconds"),
                               ("type=engage&article=p%2Fa&seconds=0", "invalid_seconds"),
                               ("type=engage&article=p%2Fa&seconds=9&read=yes", "invalid_read"),
                               ("type=view&article=p%2Fa&words=0", "invalid_words")):
            pixel(query, outcome)
        self.assertNothingCounted()
        pixel("type=engage&article=p%2Fa&seconds=40&read=true", "counted")
        pixel("type=engage&article=p%2Fa&seconds=2&read=0", "counted")
        pixel("type=view&article=p%2Fa&words=640", "counted")
        self.assertEqual(counts(self.t.stats("p/a")),
                         {"article": "p/a", "views": 1, "shares": 0, "shares_by_network": {},
                          "comments": 0, "engaged_seconds": 42, "reads": 1, "words": 640})

    def test_bots_prefetch_and_origins_count_no_engaged_time(self):
        r = self.t.post_events(engage("o/a", 30, True),
                               {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; "
                                              "+http://www.google.com/bot.html)"})
        self.assertEqual((r.status, r.body),
                         (200, {"accepted": 0, "ignored": 1, "ignored_reasons": {"bot": 1}}))
        r = self.t.post_events(engage("o/a", 30, True),
                               {"User-Agent": UA % 128, "Sec-Purpose": "prefetch"})
        self.assertEqual((r.status, r.body["ignored_reasons"]), (200, {"prefetch": 1}))
        self.assertNothingCounted()

    def test_metrics_count_engage_events_by_outcome(self):
        def sample(outcome):
            return harness.metric(self.t.metrics(), "tally_events_total", type="engage",
                                  outcome=outcome) or 0

        counted, ignored = sample("counted"), sample("ignored")
        self.post([engage("m/a", 3), engage("m/b", 4, True)])
        r = self.t.post_events(engage("m/a", 5), {"User-Agent": "curl/8.5.0 Googlebot/2.1"})
        self.assertEqual(r.body, {"accepted": 0, "ignored": 1, "ignored_reasons": {"bot": 1}})
        self.assertEqual(sample("counted"), counted + 2)
        self.assertEqual(sample("ignored"), ignored + 1)

    def test_badges_show_reads_and_engaged_time(self):
        self.post([engage("b/a", 75, True), engage("b/a", 20, True)])
        r = self.t.get("/v1/badge/b%2Fa.svg?metric=reads")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b">reads<", r.raw)
        self.assertIn(b">2<", r.raw)
        r = self.t.get("/v1/badge/b%2Fa.svg?metric=engaged&label=seconds")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b">95<", r.raw)

    def test_delete_forgets_engaged_time_reads_and_words(self):
        self.post([engage("f/a", 50, True), {"type": "view", "article": "f/a", "words": 300},
                   engage("f/b", 7, True)])
        r = self.t.request("DELETE", "/v1/articles/f%2Fa", headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.t.stats("f/a"), harness.zero_stats("f/a"))
        for metric in ("reads", "engaged"):
            for period in ("day", "week", "month", "all"):
                self.assertEqual(
                    self.get("/v1/top?metric=%s&period=%s" % (metric, period))["articles"],
                    [{"article": "f/b", "count": 7 if metric == "engaged" else 1}])
            s = self.get("/v1/series/f%%2Fa?metric=%s&interval=hour" % metric)
            self.assertEqual([p["value"] for p in s["points"]], [0] * 24)
        self.assertEqual(self.get("/v1/totals?period=all"),
                         {"period": "all", "views": 0, "shares": 0, "comments": 0, "reads": 1,
                          "engaged_seconds": 7})
        self.assertEqual(self.redis.keys("*f/a*"), [])


if __name__ == "__main__":
    unittest.main()
