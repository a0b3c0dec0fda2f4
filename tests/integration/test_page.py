"""What pages and readers send besides the event, and what tallyd's answers tell browsers:
ids with bidirectional controls are refused wherever an id arrives; Cookie and Referer change
nothing and never reach the log; every answer carries the security headers of its kind."""

import re
import time
import unittest

import harness
from harness import TOKEN, quote

AUTH = {"Authorization": "Bearer " + TOKEN}

# U+202A..U+202E and U+2066..U+2069, each inside an otherwise valid id.
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class PageTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--token", TOKEN, "--demo"])
        try:
            cls.tallyd.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.redis.flush_counts()
        self.t = self.tallyd

    # ---- Bidirectional controls ----

    def test_bidi_controls_are_refused_wherever_an_id_arrives(self):
        for c in BIDI:
            article = "bidi/" + c + "gnp.exe"
            q = quote(article)
            ways = [
                ("POST /v1/events", lambda: self.t.post_events(
                    {"type": "view", "article": article})),
                ("GET /v1/stats?article=", lambda: self.t.get("/v1/stats?article=a&article=" + q)),
                ("GET /v1/stats/", lambda: self.t.get("/v1/stats/" + q)),
                ("GET /v1/series/", lambda: self.t.get("/v1/series/" + q)),
                ("GET /v1/badge/", lambda: self.t.get("/v1/badge/" + q + ".svg")),
                ("DELETE /v1/articles/", lambda: self.t.request(
                    "DELETE", "/v1/articles/" + q, headers=AUTH)),
            ]
            for what, call in ways:
                with self.subTest(char="U+%04X" % ord(c), way=what):
                    r = call()
                    self.assertEqual(r.status, 400, r)
                    if isinstance(r.body, dict):
                        self.assertEqual(r.body["error"], "invalid_article", r)
            with self.subTest(char="U+%04X" % ord(c), way="GET /v1/pixel.gif"):
                # A pixel always answers its GIF; the outcome is in a header.
                r = self.t.get("/v1/pixel.gif?type=view&article=" + q)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers["Tally-Outcome"], "invalid_article", r)
        self.assertEqual(self.redis.keys("tally:{??}a:*"), [])
        self.assertEqual(harness.metric(self.t.metrics(), "tally_events_total", type="view",
                                        outcome="counted"), 0)

    def test_right_to_left_text_and_marks_are_ids_like_any_other(self):
        for article in ["\u05e9\u05dc\u05d5\u05dd/1", "a\u200eb", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629"]:
            with self.subTest(article=article):
                r = self.t.post_events({"type": "view", "article": article})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.t.stats(article)["views"], 1)

    # ---- Cookie and Referer ----

    def answers(self, extra):
        """One view, a repeat of it, a pixel view, a stats read and a badge, each sent with the
        headers EXTRA: [(status, body, header names but Date)]."""
        out = []
        calls = [
            lambda h: self.t.post_events({"type": "view", "article": "cookie/a"}, h),
            lambda h: self.t.post_events({"type": "view", "article": "cookie/a"}, h),
            lambda h: self.t.get("/v1/pixel.gif?type=view&article=cookie%2Fb", h),
            lambda h: self.t.get("/v1/stats?article=cookie%2Fa&article=cookie%2Fb", h),
            lambda h: self.t.get("/v1/badge/cookie%2Fa.svg", h),
            lambda h: self.t.request("DELETE", "/v1/articles/cookie%2Fb", headers=dict(h, **AUTH)),
        ]
        for call in calls:
            r = call(dict(extra))
            headers = sorted((k.lower(), v) for k, v in r.headers.items()
                             if k.lower() not in ("date", "etag", "retry-after"))
            out.append((r.status, r.raw, headers))
        return out

    def test_cookie_and_referer_change_nothing_and_are_never_logged(self):
        secret = "s3cr3t-session-7f1c"
        leak = "reader%40example.org"
        plain = self.answers({})
        self.redis.flush_counts()
        with_them = self.answers({
            "Cookie": "session=%s; visitor=someone-else" % secret,
            "Referer": "https://news.example/a?email=%s&token=%s" % (leak, secret),
        })
        self.assertEqual(with_them, plain)
        # The cookie did not make the reader someone else: the repeat was still a repeat.
        self.assertEqual(plain[0][0], 200)
        self.assertIn(b"repeat", plain[1][1])
        log = self.t.log()
        self.assertIn("debug", self.t.argv())  # the log does run at debug level
        for s in (secret, leak, "someone-else", "news.example", "Cookie", "Referer"):
            self.assertNotIn(s, log)

    # ---- Security headers ----

    def test_pages_carry_csp_referrer_policy_and_nosniff(self):
        for path in ("/dashboard", "/demo/", "/demo/list"):
            with self.subTest(path=path):
                r = self.t.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers.get_all("Content-Security-Policy"), [PAGE_CSP])
                self.assertEqual(r.headers.get_all("Referrer-Policy"), ["no-referrer"])
                self.assertEqual(r.headers.get_all("X-Content-Type-Options"), ["nosniff"])
                html = r.raw.decode("utf-8")
                # The CSP allows no inline script or style: every script is a file.
                self.assertEqual(re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html), [])
                self.assertNotIn("<style", html)
                self.assertNotIn(" style=", html)
                self.assertNotRegex(html, r"\son[a-z]+=")
                for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', html):
                    s = self.t.get(src)
                    self.assertEqual(s.status, 200, (src, s))
                    self.assertTrue(s.headers["Content-Type"].startswith("text/javascript"), src)

    def test_every_body_is_nosniff(self):
        self.assertEqual(self.t.post_events({"type": "view", "article": "n"}).status, 200)
        for method, path, ctype in [
                ("GET", "/v1/stats/n", "application/json"),
                ("GET", "/v1/stats/%20", "application/json"),  # an error
                ("GET", "/v1/top", "application/json"),
                ("GET", "/v1/totals", "application/json"),
                ("GET", "/v1/series/n", "application/json"),
                ("GET", "/v1/badge/n.svg", "image/svg+xml"),
                ("GET", "/v1/pixel.gif?type=view&article=n", "image/gif"),
                ("GET", "/tally.js", "text/javascript"),
                ("GET", "/dashboard.js", "text/javascript"),
                ("GET", "/dashboard.css", "text/css"),
                ("GET", "/demo/demo.css", "text/css"),
                ("GET", "/demo/demo.js", "text/javascript"),
                ("GET", "/metrics", "text/plain"),
                ("GET", "/readyz", "application/json"),
                ("GET", "/nowhere", "application/json")]:
            with self.subTest(path=path):
                r = self.t.request(method, path)
                self.assertTrue(r.headers["Content-Type"].startswith(ctype), r)
                self.assertEqual(r.headers.get_all("X-Content-Type-Options"), ["nosniff"], r)
                # Pages and badges (documents when opened alone) get a CSP; data does not.
                self.assertEqual(r.headers.get_all("Content-Security-Policy"),
                                 ["default-src 'none'; style-src 'unsafe-inline'"]
                                 if ctype == "image/svg+xml" else None, r)


if __name__ == "__main__":
    unittest.main()
