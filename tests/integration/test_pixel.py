"""GET /v1/pixel.gif: always the same 1x1 GIF, counting only valid events; the outcome is in
the Tally-Outcome header."""

import unittest

import harness
from harness import TOKEN, counts

GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
       b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


class PixelTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0"])
        cls.withtoken = harness.Tallyd(cls.redis, ["--view-window", "0", "--token", TOKEN])
        cls.daemons = (cls.withtoken,)
        try:
            cls.tallyd.start()
            cls.withtoken.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.withtoken.close()
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()

    def pixel(self, query, headers=None, tallyd=None):
        r = (tallyd or self.tallyd).get("/v1/pixel.gif?" + query, headers)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("Content-Type"), "image/gif")
        self.assertEqual(len(GIF), 43)
        self.assertEqual(r.raw, GIF)
        self.assertEqual(r.headers.get("Content-Length"), "43")
        self.assertEqual(r.headers.get("Cache-Control"), "no-store")
        return r

    def assertCounts(self, article, views=0, shares=None, comments=0):
        shares = shares or {}
        self.assertEqual(counts(self.tallyd.stats(article)),
                         {"article": article, "views": views, "shares": sum(shares.values()),
                          "shares_by_network": shares, "comments": comments})

    def assertNothingCounted(self):
        self.assertEqual(self.redis.keys("tally:{??}a:*"), [])

    def test_view_pixel_is_a_gif_and_counted_once(self):
        r = self.pixel("type=view&article=a%2Fb")
        self.assertEqual(r.headers.get("Tally-Outcome"), "counted")
        self.assertCounts("a/b", views=1)

    def test_share_pixel_with_network(self):
        self.assertEqual(self.pixel("type=share&article=p%2Fshare&network=twitter")
                         .headers.get("Tally-Outcome"), "counted")
        self.assertEqual(self.pixel("type=share&article=p%2Fshare&network=myspace")
                         .headers.get("Tally-Outcome"), "counted")
        self.assertEqual(self.pixel("type=share&article=p%2Fshare")
                         .headers.get("Tally-Outcome"), "counted")
        self.assertCounts("p/share", shares={"twitter": 1, "other": 2})

    def test_unknown_parameters_are_ignored(self):
        r = self.pixel("utm_source=newsletter&type=view&article=p%2Futm&ref=x&&=")
        self.assertEqual(r.headers.get("Tally-Outcome"), "counted")
        self.assertCounts("p/utm", views=1)

    def test_utf8_article_is_decoded(self):
        article = "Статья/記事"
        r = self.pixel("type=view&article=" + harness.quote(article))
        self.assertEqual(r.headers.get("Tally-Outcome"), "counted")
        self.assertCounts(article, views=1)

    def test_invalid_pixels_are_a_gif_but_not_counted(self):
        cases = [
            ("type=view", "invalid_article"),
            ("type=view&article=", "invalid_article"),
            ("type=view&article=a%00b", "invalid_article"),
            ("type=view&article=a%zzb", "invalid_article"),
            ("type=view&article=a%2", "invalid_article"),
            ("type=view&article=a+b", "invalid_article"),
            ("type=view&article=a%20b", "invalid_article"),
            ("type=view&article=%C0%AF", "invalid_article"),
            ("type=view&article=" + "x" * 257, "invalid_article"),
            ("article=p%2Fnotype", "invalid_type"),
            ("type=like&article=p%2Flike", "invalid_type"),
            ("type=view&type=view&article=p%2Frepeated", "invalid_parameter"),
            ("type=view&article=p%2Ftwice&article=p%2Ftwice", "invalid_parameter"),
            ("type=comment&article=p%2Fcomment", "token_not_configured"),
        ]
        for query, outcome in cases:
            with self.subTest(query=query):
                r = self.pixel(query)
                self.assertEqual(r.headers.get("Tally-Outcome"), outcome)
        self.assertNothingCounted()

    def test_comment_pixel_needs_the_token(self):
        r = self.pixel("type=comment&article=p%2Fc", tallyd=self.withtoken)
        self.assertEqual(r.headers.get("Tally-Outcome"), "unauthorized")
        r = self.pixel("type=comment&article=p%2Fc&delta=0", {"Authorization": "Bearer " + TOKEN},
                       tallyd=self.withtoken)
        self.assertEqual(r.headers.get("Tally-Outcome"), "invalid_delta")
        self.assertNothingCounted()
        r = self.pixel("type=comment&article=p%2Fc&delta=3", {"Authorization": "Bearer " + TOKEN},
                       tallyd=self.withtoken)
        self.assertEqual(r.headers.get("Tally-Outcome"), "counted")
        self.assertCounts("p/c", comments=3)

    def test_prefetched_pixel_is_not_counted(self):
        r = self.pixel("type=view&article=p%2Fprefetch", {"Sec-Purpose": "prefetch"})
        self.assertEqual(r.headers.get("Tally-Outcome"), "ignored")
        self.assertNothingCounted()


if __name__ == "__main__":
    unittest.main()
