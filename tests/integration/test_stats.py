"""GET /v1/stats, the operating endpoints (/healthz, /readyz, /metrics), and how unknown paths
and wrong methods are answered."""

import re
import unittest

import harness
from harness import counts, zero_stats


def one(article, views=0, shares=None, comments=0):
    shares = shares or {}
    return {"article": article, "views": views, "shares": sum(shares.values()),
            "shares_by_network": shares, "comments": comments}


class StatsTest(harness.OneCollectorTestCase):

    tallyd_args = ("--view-window", "0")

    def view(self, article, n=1):
        r = self.t.post_events([{"type": "view", "article": article}] * n)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"accepted": n, "ignored": 0})

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("application/json"), r)
        self.assertEqual(set(r.body), {"error", "message"}, r)
        self.assertEqual(r.body["error"], code, r)

    # ---- one article ----

    def test_unknown_article_is_200_with_zeros(self):
        r = self.t.get("/v1/stats/never%2Fseen")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, zero_stats("never/seen"))
        self.assertEqual(r.body["shares_by_network"], {})

    def test_an_id_is_one_path_segment(self):
        self.view("news/2025/kim", 3)
        for path in ("/v1/stats/news%2F2025%2Fkim", "/v1/stats/news%2f2025%2Fkim",
                     "/v1/stats/%6Eews%2F2025%2Fkim"):
            with self.subTest(path=path):
                r = self.t.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(counts(r.body), one("news/2025/kim", views=3))
        # A plain slash makes a second segment: no such endpoint (API: an id in a path is
        # exactly one path segment).
        for path in ("/v1/stats/news/2025/kim", "/v1/stats/news%2f2025/kim",
                     "/v1/series/news/2025/kim", "/v1/badge/news/kim.svg"):
            with self.subTest(path=path):
                r = self.t.get(path)
                self.assertError(r, 404, "not_found")

    def test_ids_are_case_sensitive_and_stored_as_given(self):
        self.view("Case", 2)
        self.view("case", 1)
        self.assertEqual(counts(self.t.stats("Case")), one("Case", views=2))
        self.assertEqual(counts(self.t.stats("case")), one("case", views=1))
        self.assertEqual(counts(self.t.stats("CASE")), one("CASE"))

    def test_stats_with_every_counter(self):
        a = "full/article"
        r = self.t.post_events([{"type": "view", "article": a}, {"type": "view", "article": a},
                                {"type": "share", "article": a, "network": "reddit"},
                                {"type": "share", "article": a, "network": "email"},
                                {"type": "share", "article": a, "network": "reddit"}])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(counts(self.t.stats(a)),
                         one(a, views=2, shares={"reddit": 2, "email": 1}))

    def test_invalid_article_in_the_path_is_400(self):
        for path in ("/v1/stats/a%00b", "/v1/stats/a%20b", "/v1/stats/a%zz",
                     "/v1/stats/" + "x" * 257, "/v1/stats/%C0%AF"):
            with self.subTest(path=path):
                self.assertError(self.t.get(path), 400, "invalid_article")
        r = self.t.get("/v1/stats/" + "x" * 256)
        self.assertEqual(r.status, 200, r)

    # ---- many articles ----

    def test_batch_answers_in_request_order_with_repeats(self):
        self.view("A", 2)
        self.view("B", 1)
        r = self.t.get("/v1/stats?article=A&article=B&article=A&article=C")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(r.body), {"articles"})
        self.assertEqual([counts(s) for s in r.body["articles"]],
                         [one("A", views=2), one("B", views=1), one("A", views=2), one("C")])

    def test_batch_decodes_articles(self):
        self.view("x/y+z", 1)
        r = self.t.get("/v1/stats?article=x%2Fy%2Bz&utm=1&article=x/y%2bz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual([counts(s) for s in r.body["articles"]],
                         [one("x/y+z", views=1), one("x/y+z", views=1)])
        # In a query string '+' is a space, and ids hold no spaces.
        self.assertError(self.t.get("/v1/stats?article=x/y+z"), 400, "invalid_article")

    def test_batch_of_0_or_101_articles_is_400(self):
        self.assertError(self.t.get("/v1/stats"), 400, "missing_article")
        self.assertError(self.t.get("/v1/stats?foo=bar"), 400, "missing_article")
        q = "&".join("article=a%d" % i for i in range(101))
        self.assertError(self.t.get("/v1/stats?" + q), 400, "too_many_articles")
        q = "&".join("article=a%d" % i for i in range(100))
        r = self.t.get("/v1/stats?" + q)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([s["article"] for s in r.body["articles"]],
                         ["a%d" % i for i in range(100)])
        self.assertError(self.t.get("/v1/stats?article=ok&article=a%00b"), 400,
                         "invalid_article")

    def test_batch_of_100_longest_ids_fully_encoded(self):
        # 100 ids of 256 bytes (64 four-byte characters), every byte percent-encoded: a
        # request line of about 77 KB, which the contract allows.
        ids = ["%02d" % i + "\U0001F600" * 63 + "ab" for i in range(100)]
        self.assertTrue(all(len(a.encode()) == 256 for a in ids))
        self.view(ids[7], 3)
        q = "&".join("article=" + "".join("%%%02X" % b for b in a.encode()) for a in ids)
        self.assertGreater(len(q), 76000)
        r = self.t.get("/v1/stats?" + q)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([s["article"] for s in r.body["articles"]], ids)
        self.assertEqual(counts(r.body["articles"][7]), one(ids[7], views=3))

    # ---- caching ----

    def test_headers_etag_and_304(self):
        self.view("etag", 1)
        r = self.t.get("/v1/stats/etag")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("Content-Type"), "application/json")
        etag = r.headers.get("ETag")
        self.assertTrue(etag, r)
        self.assertRegex(etag, r'^(W/)?"[^"]+"$')
        cc = r.headers.get("Cache-Control", "")
        m = re.search(r"max-age=(\d+)", cc)
        self.assertIsNotNone(m, cc)
        self.assertLessEqual(int(m.group(1)), 60, cc)

        again = self.t.get("/v1/stats/etag", {"If-None-Match": etag})
        self.assertEqual(again.status, 304, again)
        self.assertEqual(again.raw, b"")
        self.assertEqual(again.headers.get("ETag"), etag)

        self.view("etag", 1)
        changed = self.t.get("/v1/stats/etag", {"If-None-Match": etag})
        self.assertEqual(changed.status, 200, changed)
        self.assertNotEqual(changed.headers.get("ETag"), etag)
        self.assertEqual(counts(changed.body), one("etag", views=2))

    def test_batch_has_an_etag_too(self):
        r = self.t.get("/v1/stats?article=e1&article=e2")
        etag = r.headers.get("ETag")
        self.assertTrue(etag, r)
        again = self.t.get("/v1/stats?article=e1&article=e2", {"If-None-Match": etag})
        self.assertEqual(again.status, 304, again)
        self.assertEqual(again.raw, b"")

    # ---- paths and methods ----

    def test_unknown_path_is_404_json(self):
        for path in ("/nope", "/v1/nope", "/v1/stats/", "/v1/eventsx", "/V1/events"):
            with self.subTest(path=path):
                self.assertError(self.t.get(path), 404, "not_found")

    def test_wrong_method_is_405(self):
        for method, path in (("POST", "/v1/stats/a"), ("GET", "/v1/events"),
                             ("DELETE", "/healthz"), ("PUT", "/v1/events"),
                             ("POST", "/metrics")):
            with self.subTest(method=method, path=path):
                r = self.t.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
                self.assertIn(r.status, (405, 501) if method == "PUT" else (405,), r)
                if r.status == 405:
                    self.assertError(r, 405, "method_not_allowed")
                    self.assertTrue(r.headers.get("Allow"), r)
        r = self.t.request("GET", "/v1/events")
        self.assertIn("POST", r.headers.get("Allow", ""))
        self.assertEqual(self.redis.keys("tally:{??}a:*"), [])

    # ---- operating ----

    def test_healthz_and_readyz(self):
        r = self.t.get("/healthz")
        self.assertEqual(r.status, 200, r)
        r = self.t.get("/readyz")
        self.assertEqual(r.status, 200, r)

    def test_metrics_count_what_was_sent(self):
        # A collector of its own, so that the counters hold only what this test sends.
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"]).start())
        self.addCleanup(t.close)
        views, shares = 23, 4
        for i in range(views):
            self.assertEqual(t.post_events({"type": "view", "article": "m/%d" % (i % 3)}).status,
                             200)
        self.assertEqual(t.post_events([{"type": "share", "article": "m/s"}] * shares).status, 200)
        self.assertEqual(t.post_events({"type": "view", "article": "m/p"},
                                       {"Sec-Purpose": "prefetch"}).status, 200)
        for body in (b"{", b"[]", b'{"type":"like","article":"x"}'):
            self.assertEqual(t.post_events(body).status, 400)
        self.assertEqual(t.post_events({"type": "comment", "article": "m/c"}).status, 403)
        self.assertEqual(t.get("/v1/pixel.gif?type=view&article=m%2Fpx").status, 200)

        r = t.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("text/plain"), r)
        text = r.raw.decode("utf-8")
        self.assertIn("# TYPE tally_events_total counter", text)
        self.assertRegex(text, r'(?m)^tally_events_total\{type="view",outcome="counted"\} ')
        m = harness.parse_metrics(text)
        ev = lambda t_, o: harness.metric(m, "tally_events_total", type=t_, outcome=o)  # noqa
        self.assertEqual(ev("view", "counted"), views + 1)  # the pixel's view too
        self.assertEqual(ev("share", "counted"), shares)
        self.assertEqual(ev("comment", "counted"), 0)
        self.assertEqual(ev("view", "ignored"), 1)
        self.assertEqual(ev("comment", "rejected"), 1)
        self.assertEqual(harness.metric(m, "tally_events_ignored_total", reason="prefetch"), 1)
        self.assertEqual(harness.metric(m, "tally_requests_rejected_total", reason="invalid"), 3)
        self.assertEqual(harness.metric(m, "tally_requests_rejected_total", reason="forbidden"), 1)
        total_views = sum(counts(t.stats("m/%d" % i))["views"] for i in range(3))
        self.assertEqual(total_views, views)

    def test_metrics_do_not_count_an_idempotent_replay_again(self):
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"]).start())
        self.addCleanup(t.close)
        for _ in range(3):
            r = t.post_events({"type": "view", "article": "m/idem"}, {"Idempotency-Key": "k-1"})
            self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        self.assertEqual(counts(t.stats("m/idem"))["views"], 1)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_events_total", type="view", outcome="counted"),
                         1, "the exposition counts replays of one Idempotency-Key as counted "
                            "events, but Redis counted the view once")


if __name__ == "__main__":
    unittest.main()
