"""POST /v1/events against a real tallyd and redis-server: what is counted, what is refused
with which status and error code, and that a refused batch counts nothing at all."""

import concurrent.futures
import random
import unittest

import harness
from harness import TOKEN, counts

AUTH = {"Authorization": "Bearer " + TOKEN}
POST_HEAD = ("POST /v1/events HTTP/1.1\r\nHost: t\r\nUser-Agent: %s\r\n"
             % harness.BROWSER_UA).encode()
NETWORKS = ["facebook", "twitter", "linkedin", "reddit", "whatsapp", "telegram", "email",
            "copy", "native", "other"]


def ok(accepted, ignored=0, reasons=None):
    body = {"accepted": accepted, "ignored": ignored}
    if reasons:
        body["ignored_reasons"] = reasons
    return body


def expected(article, views=0, shares=None, comments=0):
    shares = shares or {}
    return {"article": article, "views": views, "shares": sum(shares.values()),
            "shares_by_network": shares, "comments": comments}


class IngestTest(harness.TallyTestCase):
    """Three collectors on one Redis: the main one with a token, one without a token, one with
    a list of allowed origins. Every view is counted (--view-window 0) so that counts are
    exact whatever the visitor."""

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        common = ["--view-window", "0"]
        cls.tallyd = harness.Tallyd(cls.redis, common + ["--token", TOKEN])
        cls.notoken = harness.Tallyd(cls.redis, common)
        cls.origins = harness.Tallyd(cls.redis, common +
                                     ["--allowed-origins", "https://news.example"])
        cls.daemons = (cls.notoken, cls.origins)
        try:
            for d in (cls.tallyd, cls.notoken, cls.origins):
                d.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for d in (cls.tallyd, cls.notoken, cls.origins):
            d.close()
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.t = self.tallyd

    # ---- helpers ----

    def post(self, body, headers=None, content_type="application/json", tallyd=None):
        return (tallyd or self.t).post_events(body, headers, content_type)

    def assertAccepted(self, r, accepted, ignored=0, reasons=None):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, ok(accepted, ignored, reasons), r)

    def assertRejected(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertIsInstance(r.body, dict, r)
        self.assertEqual(set(r.body), {"error", "message"}, r)
        self.assertEqual(r.body["error"], code, r)
        self.assertIsInstance(r.body["message"], str)
        self.assertTrue(r.body["message"], r)

    def assertCounts(self, article, views=0, shares=None, comments=0, tallyd=None):
        self.assertEqual(counts((tallyd or self.t).stats(article)),
                         expected(article, views, shares, comments))

    def assertNothingCounted(self):
        """No totals hash exists at all, and no journal (where acknowledged events wait to be
        counted): nothing since the last FLUSHALL was counted, nor will be."""
        self.assertEqual(self.redis.keys("tally:{??}a:*"), [])
        self.assertEqual(self.redis.keys("tally:{00}q:*"), [])

    # ---- what is counted ----

    def test_one_view_is_counted(self):
        r = self.post({"type": "view", "article": "news/2025/one"})
        self.assertAccepted(r, 1)
        self.assertEqual(r.headers.get("Content-Type"), "application/json")
        self.assertCounts("news/2025/one", views=1)

    def test_batch_of_100_mixed_events_counts_each_article_exactly(self):
        rng = random.Random(2025)
        articles = ["mix/%d" % i for i in range(7)]
        events, want = [], {a: {"views": 0, "shares": {}, "comments": 0} for a in articles}
        for i in range(100):
            a = articles[rng.randrange(len(articles))]
            kind = ("view", "share", "comment")[i % 3]
            if kind == "view":
                events.append({"type": "view", "article": a})
                want[a]["views"] += 1
            elif kind == "share":
                choice = rng.randrange(len(NETWORKS) + 2)
                ev = {"type": "share", "article": a}
                if choice < len(NETWORKS):
                    ev["network"] = net = NETWORKS[choice]
                elif choice == len(NETWORKS):
                    ev["network"], net = "myspace", "other"  # unknown: other
                else:
                    net = "other"  # missing: other
                events.append(ev)
                want[a]["shares"][net] = want[a]["shares"].get(net, 0) + 1
            else:
                delta = rng.choice([1, 1, 2, 5, -1, -3])
                events.append({"type": "comment", "article": a, "delta": delta})
                want[a]["comments"] = max(0, want[a]["comments"] + delta)  # floor, in order
        r = self.post(events, AUTH)
        self.assertAccepted(r, 100)
        for a in articles:
            self.assertCounts(a, want[a]["views"], want[a]["shares"], want[a]["comments"])

    def test_readme_walk_through(self):
        article = "news/2025/kim-missiles"
        for _ in range(7):
            self.assertAccepted(self.post({"type": "view", "article": article}), 1)
        self.assertCounts(article, views=7)
        r = self.post({"type": "comment", "article": article}, AUTH)
        self.assertAccepted(r, 1)
        self.assertCounts(article, views=7, comments=1)
        r = self.post({"type": "share", "article": article, "network": "twitter"})
        self.assertAccepted(r, 1)
        self.assertCounts(article, views=7, shares={"twitter": 1}, comments=1)

    def test_content_types_json_text_plain_and_none_are_accepted(self):
        for ctype in ("application/json", "application/json; charset=utf-8",
                      "text/plain;charset=UTF-8", "text/plain", None):
            with self.subTest(content_type=ctype):
                r = self.post({"type": "view", "article": "ctype"}, content_type=ctype)
                self.assertAccepted(r, 1)
        self.assertCounts("ctype", views=5)

    def test_multipart_form_data_is_415(self):
        r = self.post({"type": "view", "article": "multipart"},
                      content_type="multipart/form-data; boundary=xyz")
        self.assertRejected(r, 415, "unsupported_media_type")
        self.assertNothingCounted()

    def test_unknown_fields_are_ignored(self):
        r = self.post({"type": "view", "article": "unknown-fields",
                       "referrer": "https://x.example/",
                       "extra": {"nested": [1, 2, {"k": None}]}, "n": 1.5, "ok": True})
        self.assertAccepted(r, 1)
        self.assertCounts("unknown-fields", views=1)

    def test_article_id_limits_and_unicode(self):
        ids = ["a" * 256, "\U0001F600" * 64, "Ünïcödé/Статья/記事", "CaSe", "case",
               "}x{", "a%2Fb", "q?x=1&y=2#f"]
        r = self.post([{"type": "view", "article": a} for a in ids])
        self.assertAccepted(r, len(ids))
        for a in ids:
            with self.subTest(article=a):
                self.assertCounts(a, views=1)

    # ---- all or nothing ----

    def test_batch_with_one_invalid_event_counts_nothing(self):
        articles = ["aon/%d" % (i % 33) for i in range(99)]
        events = [{"type": "view", "article": a} for a in articles]
        events.insert(57, {"type": "like", "article": "aon/bad"})
        r = self.post(events)
        self.assertRejected(r, 400, "invalid_type")
        self.assertIn("events[57]", r.body["message"])
        for a in sorted(set(articles)):
            self.assertCounts(a)
        self.assertNothingCounted()

    def test_101_events_is_batch_too_large(self):
        r = self.post([{"type": "view", "article": "big/%d" % i} for i in range(101)])
        self.assertRejected(r, 400, "batch_too_large")
        self.assertNothingCounted()
        r = self.post([{"type": "view", "article": "big/%d" % i} for i in range(100)])
        self.assertAccepted(r, 100)

    def test_empty_array_is_empty_batch(self):
        self.assertRejected(self.post(b"[]"), 400, "empty_batch")
        self.assertRejected(self.post(b" [ ] "), 400, "empty_batch")

    def test_bad_payloads_are_400_with_their_code_and_count_nothing(self):
        long_id = "b" * 257
        cases = [
            (b'{"type":"view","article":"m1"', "malformed_json"),
            (b'{"type":"view","article":"m2"} x', "malformed_json"),
            (b'{"type":"view","article":"m3"}{"type":"view","article":"m3"}', "malformed_json"),
            (b'[{"type":"view","article":"m4"},]', "malformed_json"),
            (b"", "malformed_json"),
            (b"   ", "malformed_json"),
            (b"\xef\xbb\xbf" + b'{"type":"view","article":"m5"}', "malformed_json"),
            (b'{"type":"view","article":"m6\\u0000x"}', "malformed_json"),
            (b'{"type":"view","article":"m7\x00x"}', "malformed_json"),
            (b'{"type":"view","article":"m8\xc0\xafx"}', "malformed_json"),  # overlong '/'
            (b'{"type":"view","article":"m9\xed\xa0\x80x"}', "malformed_json"),  # surrogate
            (b'{"type":"view","article":"m10\x01x"}', "malformed_json"),
            (b'{"type":"view","article":"m11\\ud800x"}', "malformed_json"),
            (b'{"type":"comment","article":"m12","delta":01}', "malformed_json"),
            (b'{"type":"view","type":"view","article":"d1"}', "duplicate_key"),
            (b'{"type":"view","article":"d2","article":"d3"}', "duplicate_key"),
            (b'{"type":"view","article":"d4","x":1,"x":2}', "duplicate_key"),
            (b'[{"type":"view","article":"d5"},{"type":"view","article":"d6","extra":'
             b'{"a":1,"a":2}}]', "duplicate_key"),
            (('{"type":"view","article":"%s"}' % long_id).encode(), "invalid_article"),
            (b'{"type":"view","article":""}', "invalid_article"),
            (b'{"type":"view","article":"a b"}', "invalid_article"),
            (b'{"type":"view","article":"a\\tb"}', "invalid_article"),
            (b'{"type":"view","article":"a\\u0001b"}', "invalid_article"),
            (b'{"type":"view","article":"a\\u0085b"}', "invalid_article"),
            (b'{"type":"view","article":"a\\u00a0b"}', "invalid_article"),
            (b'{"type":"view","article":"a\\u3000b"}', "invalid_article"),
            (b'{"type":"view","article":5}', "invalid_article"),
            (b'{"type":"view"}', "invalid_article"),
            (b'{"article":"t1"}', "invalid_type"),
            (b'{"type":"like","article":"t2"}', "invalid_type"),
            (b'{"type":"VIEW","article":"t3"}', "invalid_type"),
            (b'{"type":1,"article":"t4"}', "invalid_type"),
            (b'{"type":"comment","article":"c1","delta":0}', "invalid_delta"),
            (b'{"type":"comment","article":"c2","delta":1001}', "invalid_delta"),
            (b'{"type":"comment","article":"c3","delta":-1001}', "invalid_delta"),
            (b'{"type":"comment","article":"c4","delta":1.5}', "invalid_delta"),
            (b'{"type":"comment","article":"c5","delta":"1"}', "invalid_delta"),
            (b'{"type":"comment","article":"c6","delta":1e400}', "invalid_delta"),
            (b'{"type":"comment","article":"c7","delta":null}', "invalid_delta"),
            (b'5', "invalid_event"),
            (b'"view"', "invalid_event"),
            (b'[1]', "invalid_event"),
            (b'[{"type":"view","article":"e1"},[]]', "invalid_event"),
        ]
        for body, code in cases:
            with self.subTest(body=body):
                self.assertRejected(self.post(body, AUTH), 400, code)
        self.assertNothingCounted()

    def test_body_of_64_kib_is_read_and_one_byte_more_is_413(self):
        event = b'{"type":"view","article":"size"}'
        r = self.post(event + b" " * (65536 - len(event)))
        self.assertAccepted(r, 1)
        body = event + b" " * (65537 - len(event))
        head = (POST_HEAD + b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        data, _ = self.t.raw(head + body)
        resp = harness.split_responses(data)
        self.assertEqual(len(resp), 1, data)
        self.assertEqual(resp[0][0], 413, data)
        self.assertCounts("size", views=1)

    def test_chunked_body_over_64_kib_is_413(self):
        event = b'{"type":"view","article":"chunked"}'
        body = event + b" " * (70000 - len(event))
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192])
                          for i in range(0, len(body), 8192))
        head = (POST_HEAD + b"Content-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        data, _ = self.t.raw(head + chunks + b"0\r\n\r\n")
        resp = harness.split_responses(data)
        self.assertTrue(resp, data)
        self.assertEqual(resp[0][0], 413, data)
        self.assertNothingCounted()

    def test_small_chunked_body_is_counted(self):
        body = b'{"type":"view","article":"chunked-ok"}'
        head = (POST_HEAD + b"Content-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        data, _ = self.t.raw(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        resp = harness.split_responses(data)
        self.assertEqual([s for s, _, _ in resp], [200], data)
        self.assertCounts("chunked-ok", views=1)

    # ---- comments and the token ----

    def test_comment_without_a_configured_token_is_403(self):
        ev = {"type": "comment", "article": "c/notoken"}
        for headers in ({}, AUTH):
            with self.subTest(headers=headers):
                r = self.post(ev, headers, tallyd=self.notoken)
                self.assertRejected(r, 403, "token_not_configured")
        r = self.post([{"type": "view", "article": "c/notoken"}, ev], tallyd=self.notoken)
        self.assertRejected(r, 403, "token_not_configured")
        self.assertNothingCounted()
        # Views and shares need no token.
        r = self.post({"type": "view", "article": "c/notoken"}, tallyd=self.notoken)
        self.assertAccepted(r, 1)

    def test_comment_with_a_missing_or_wrong_token_is_401(self):
        ev = {"type": "comment", "article": "c/wrong"}
        for auth in (None, "", "Bearer", "Bearer ", "Bearer wrong-token-0123456789",
                     "Bearer " + TOKEN.upper(), "Bearer " + TOKEN[:-1],
                     "Bearer " + TOKEN + "x", "Basic " + TOKEN, TOKEN,
                     "Token " + TOKEN):
            with self.subTest(authorization=auth):
                headers = {} if auth is None else {"Authorization": auth}
                r = self.post(ev, headers)
                self.assertRejected(r, 401, "unauthorized")
                self.assertEqual(r.headers.get("WWW-Authenticate"), "Bearer")
        # A batch with one unauthorized comment counts nothing, its views included.
        r = self.post([{"type": "view", "article": "c/wrong"}, ev])
        self.assertRejected(r, 401, "unauthorized")
        self.assertNothingCounted()

    def test_comment_with_the_right_token_is_counted(self):
        r = self.post({"type": "comment", "article": "c/right"}, AUTH)
        self.assertAccepted(r, 1)
        # The scheme is case-insensitive (RFC 9110 11.1); the token is not.
        r = self.post({"type": "comment", "article": "c/right", "delta": 2},
                      {"Authorization": "bearer " + TOKEN})
        self.assertAccepted(r, 1)
        self.assertCounts("c/right", comments=3)

    def test_comment_count_never_goes_below_zero(self):
        a = "c/floor"
        self.assertAccepted(self.post({"type": "comment", "article": a, "delta": -1}, AUTH), 1)
        self.assertCounts(a, comments=0)
        r = self.post([{"type": "comment", "article": a, "delta": -1},
                       {"type": "comment", "article": a, "delta": 1}], AUTH)
        self.assertAccepted(r, 2)
        self.assertCounts(a, comments=1)
        self.assertAccepted(self.post({"type": "comment", "article": a, "delta": -5}, AUTH), 1)
        self.assertCounts(a, comments=0)
        r = self.post([{"type": "comment", "article": a, "delta": 1000},
                       {"type": "comment", "article": a, "delta": -1000},
                       {"type": "comment", "article": a, "delta": -1},
                       {"type": "comment", "article": a, "delta": 2}], AUTH)
        self.assertAccepted(r, 4)
        self.assertCounts(a, comments=2)

    # ---- shares ----

    def test_share_networks_map_unknown_and_missing_to_other(self):
        a = "s/networks"
        events = [{"type": "share", "article": a, "network": n} for n in NETWORKS]
        events += [{"type": "share", "article": a, "network": "myspace"},
                   {"type": "share", "article": a},
                   {"type": "share", "article": a, "network": ""},
                   {"type": "share", "article": a, "network": 7},
                   {"type": "share", "article": a, "network": "twitter"}]
        self.assertAccepted(self.post(events), len(events))
        want = {n: 1 for n in NETWORKS}
        want["other"] += 4
        want["twitter"] += 1
        self.assertCounts(a, shares=want)

    def test_network_on_a_view_and_delta_on_a_share_are_ignored(self):
        a = "s/fields"
        r = self.post([{"type": "view", "article": a, "network": "twitter", "delta": 5},
                       {"type": "share", "article": a, "network": "reddit", "delta": 0}])
        self.assertAccepted(r, 2)
        self.assertCounts(a, views=1, shares={"reddit": 1})

    # ---- Idempotency-Key ----

    def test_same_idempotency_key_is_answered_the_same_and_counted_once(self):
        body = [{"type": "view", "article": "idem/a"}, {"type": "share", "article": "idem/b"}]
        h = {"Idempotency-Key": "order-7f3a-2025-11-27"}
        first = self.post(body, h)
        self.assertAccepted(first, 2)
        second = self.post(body, h)
        self.assertEqual(second.status, 200, second)
        self.assertEqual(second.raw, first.raw)
        self.assertCounts("idem/a", views=1)
        self.assertCounts("idem/b", shares={"other": 1})
        # Another key counts again.
        self.assertAccepted(self.post(body, {"Idempotency-Key": "order-7f3a-2025-11-28"}), 2)
        self.assertCounts("idem/a", views=2)

    def test_same_idempotency_key_sent_concurrently_is_counted_once(self):
        body = {"type": "view", "article": "idem/concurrent"}
        h = {"Idempotency-Key": "concurrent-key"}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(lambda _: self.post(body, h), range(8)))
        for r in answers:
            self.assertAccepted(r, 1)
        self.assertCounts("idem/concurrent", views=1)

    def test_reordered_batch_under_one_key_counts_once_and_is_422(self):
        a = {"type": "view", "article": "idem/order-a"}
        b = {"type": "share", "article": "idem/order-b", "network": "email"}
        h = {"Idempotency-Key": "reorder-1"}
        self.assertAccepted(self.post([a, b], h), 2)
        self.assertRejected(self.post([b, a], h), 422, "idempotency_key_reused")
        self.assertCounts("idem/order-a", views=1)
        self.assertCounts("idem/order-b", shares={"email": 1})
        # The first body under its key is still answered as the first time.
        self.assertAccepted(self.post([a, b], h), 2)
        self.assertCounts("idem/order-a", views=1)

    def test_same_idempotency_key_with_another_body_counts_nothing_and_is_422(self):
        h = {"Idempotency-Key": "reuse-1"}
        self.assertAccepted(self.post({"type": "view", "article": "idem/reuse-1"}, h), 1)
        for body in ({"type": "view", "article": "idem/reuse-2"},
                     [{"type": "view", "article": "idem/reuse-1"}] * 2,
                     {"type": "share", "article": "idem/reuse-1"}):
            with self.subTest(body=body):
                self.assertRejected(self.post(body, h), 422, "idempotency_key_reused")
        self.assertCounts("idem/reuse-1", views=1)
        self.assertCounts("idem/reuse-2")
        # Whitespace, member order and unknown members are not the body's events.
        raw = b'{ "article" : "idem/reuse-1", "type": "view", "x": [1] }'
        r = self.post(raw, h)
        self.assertAccepted(r, 1)
        self.assertCounts("idem/reuse-1", views=1)

    def test_anonymous_and_token_holder_have_separate_key_spaces(self):
        h = {"Idempotency-Key": "shared-name"}
        comment = {"type": "comment", "article": "idem/space"}
        view = {"type": "view", "article": "idem/space"}
        # An anonymous request with the key first: the token holder's request is its own.
        self.assertAccepted(self.post(view, h), 1)
        self.assertAccepted(self.post(comment, dict(h, **AUTH)), 1)
        self.assertCounts("idem/space", views=1, comments=1)
        # Each replays within its own space, and another body is refused in each.
        self.assertAccepted(self.post(view, h), 1)
        self.assertAccepted(self.post(comment, dict(h, **AUTH)), 1)
        self.assertRejected(self.post(view, dict(h, **AUTH)), 422, "idempotency_key_reused")
        self.assertRejected(self.post({"type": "view", "article": "idem/other"}, h), 422,
                            "idempotency_key_reused")
        self.assertCounts("idem/space", views=1, comments=1)
        self.assertCounts("idem/other")
        # The token holder first: an anonymous request with the key does not take its place.
        h2 = {"Idempotency-Key": "shared-name-2"}
        self.assertAccepted(self.post(dict(comment, article="idem/space2"), dict(h2, **AUTH)), 1)
        self.assertAccepted(self.post({"type": "view", "article": "idem/space2"}, h2), 1)
        self.assertCounts("idem/space2", views=1, comments=1)

    def test_idempotency_key_of_128_printable_characters_is_accepted(self):
        key = "".join(chr(0x21 + i % 94) for i in range(128))
        body = {"type": "view", "article": "idem/long"}
        self.assertAccepted(self.post(body, {"Idempotency-Key": key}), 1)
        self.assertAccepted(self.post(body, {"Idempotency-Key": key}), 1)
        self.assertCounts("idem/long", views=1)

    def test_invalid_idempotency_key_is_400(self):
        body = {"type": "view", "article": "idem/bad"}
        for key in ("k" * 129, "a b", "tab\tkey", "caf\u00e9"):
            with self.subTest(key=key):
                r = self.post(body, {"Idempotency-Key": key})
                self.assertRejected(r, 400, "invalid_idempotency_key")
        self.assertNothingCounted()

    # ---- requests answered but not counted ----

    def test_prefetch_is_answered_but_not_counted(self):
        for name in ("Sec-Purpose", "Purpose"):
            with self.subTest(header=name):
                r = self.post({"type": "view", "article": "prefetch"}, {name: "prefetch"})
                self.assertAccepted(r, 0, 1, {"prefetch": 1})
        r = self.post([{"type": "view", "article": "prefetch"}] * 3,
                      {"Sec-Purpose": "prefetch;prerender"})
        self.assertAccepted(r, 0, 3, {"prefetch": 3})
        self.assertNothingCounted()

    # ---- browsers: Origin and CORS ----

    def test_origin_not_allowed_is_403_and_not_counted(self):
        for origin in ("https://evil.example", "http://news.example", "null",
                       "https://news.example.evil.example", "https://news.example:8443"):
            with self.subTest(origin=origin):
                r = self.post({"type": "view", "article": "o/evil"}, {"Origin": origin},
                              tallyd=self.origins)
                self.assertRejected(r, 403, "origin_forbidden")
                self.assertNotEqual(r.headers.get("Access-Control-Allow-Origin"), origin)
                self.assertIsNone(r.headers.get("Access-Control-Allow-Origin"))
        self.assertNothingCounted()

    def test_allowed_origin_is_counted_and_echoed(self):
        r = self.post({"type": "view", "article": "o/good"}, {"Origin": "https://news.example"},
                      tallyd=self.origins)
        self.assertAccepted(r, 1)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), "https://news.example")
        vary = [v.strip().lower() for h in r.headers.get_all("Vary", []) for v in h.split(",")]
        self.assertIn("origin", vary)
        # A server-side sender has no Origin at all.
        self.assertAccepted(self.post({"type": "view", "article": "o/good"},
                                      tallyd=self.origins), 1)
        # Read through the collector that acknowledged both: its reads wait for its own folds.
        self.assertCounts("o/good", views=2, tallyd=self.origins)

    def test_any_origin_by_default(self):
        r = self.post({"type": "view", "article": "o/any"}, {"Origin": "https://whoever.example"})
        self.assertAccepted(r, 1)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), "*")
        self.assertCounts("o/any", views=1)

    def test_preflight_is_204_with_allowed_methods_and_headers(self):
        for t, origin in ((self.t, "https://whoever.example"),
                          (self.origins, "https://news.example")):
            with self.subTest(port=t.port):
                r = t.request("OPTIONS", "/v1/events", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, idempotency-key"})
                self.assertEqual(r.status, 204, r)
                self.assertEqual(r.raw, b"")
                methods = {m.strip().upper() for m in
                           r.headers.get("Access-Control-Allow-Methods", "").split(",")}
                self.assertLessEqual({"POST", "GET"}, methods)
                allowed = {h.strip().lower() for h in
                           r.headers.get("Access-Control-Allow-Headers", "").split(",")}
                self.assertLessEqual({"content-type", "authorization", "idempotency-key"},
                                     allowed)
                self.assertIn(r.headers.get("Access-Control-Allow-Origin"), ("*", origin))
        self.assertNothingCounted()

    # ---- framing ----

    def test_two_content_lengths_are_400_and_close_the_connection(self):
        body = b'{"type":"view","article":"smuggle"}'
        smuggled = (POST_HEAD + b"Content-Length: %d\r\n\r\n%s"
                    % (len(body), body))
        for cls in ((len(body), len(body) + len(smuggled)), (len(body), len(body))):
            with self.subTest(content_lengths=cls):
                req = (POST_HEAD + b"Content-Type: application/json\r\n"
                       b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % cls) + body + smuggled
                data, closed = self.t.raw(req)
                resp = harness.split_responses(data)
                self.assertEqual(len(resp), 1, data)
                status, hdrs, rbody = resp[0]
                self.assertEqual(status, 400, data)
                self.assertEqual(harness.json.loads(rbody)["error"], "ambiguous_framing")
                self.assertTrue(closed, "the connection stayed open after ambiguous framing")
        self.assertNothingCounted()

    def test_content_length_with_transfer_encoding_is_400(self):
        body = b'{"type":"view","article":"smuggle-te"}'
        req = (POST_HEAD + b"Content-Type: application/json\r\n"
               b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), len(body), body))
        data, closed = self.t.raw(req)
        resp = harness.split_responses(data)
        self.assertEqual(len(resp), 1, data)
        # libevent refuses this one itself (with its own HTML page) before tallyd sees it.
        self.assertEqual(resp[0][0], 400, data)
        self.assertTrue(closed)
        self.assertNothingCounted()

    # ---- POST /v1/events?stats=1 ----

    def post_stats(self, body, query="stats=1", headers=None, tallyd=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return (tallyd or self.t).request("POST", "/v1/events?" + query,
                                          harness.encode_body(body), h)

    def full(self, article, views=0, visitors=0, shares=None, comments=0, words=0):
        shares = shares or {}
        return {"article": article, "views": views, "visitors": visitors,
                "shares": sum(shares.values()), "shares_by_network": shares,
                "comments": comments, "engaged_seconds": 0, "reads": 0, "words": words}

    def test_stats_1_answers_with_the_stats_of_the_batch_articles_counted(self):
        # Each article once, in the order it first appears, as GET /v1/stats would answer
        # them right after: the batch's own events included.
        self.assertAccepted(self.post([{"type": "view", "article": "q/b"}] * 2), 2)
        r = self.post_stats([{"type": "view", "article": "q/a", "words": 420},
                             {"type": "share", "article": "q/b", "network": "email"},
                             {"type": "comment", "article": "q/a", "delta": 4},
                             {"type": "view", "article": "q/a"}], headers=AUTH)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("Cache-Control"), "no-store")
        self.assertEqual(r.body, {"accepted": 4, "ignored": 0, "articles": [
            self.full("q/a", views=2, visitors=1, comments=4, words=420),
            self.full("q/b", views=2, visitors=1, shares={"email": 1})]}, r)
        many = self.t.get("/v1/stats?article=q/a&article=q/b")
        self.assertEqual(many.body["articles"], r.body["articles"])
        # 0, false, or no parameter: the answer of the contract alone.
        for query in ("stats=0", "stats=false", "utm_source=x"):
            self.assertAccepted(self.post_stats({"type": "view", "article": "q/c"}, query), 1)
        r = self.post_stats({"type": "view", "article": "q/c"}, "stats=true")
        self.assertEqual(r.body, {"accepted": 1, "ignored": 0,
                                  "articles": [self.full("q/c", views=4, visitors=1)]}, r)

    def test_stats_1_answers_ignored_and_replayed_writes_too(self):
        r = self.post_stats({"type": "view", "article": "q/bot"},
                            headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})
        self.assertEqual(r.body, {"accepted": 0, "ignored": 1, "ignored_reasons": {"bot": 1},
                                  "articles": [self.full("q/bot")]}, r)
        key = {"Idempotency-Key": "q-replay-1"}
        body = [{"type": "view", "article": "q/key"}] * 3
        r = self.post_stats(body, headers=key)
        self.assertEqual(r.body, {"accepted": 3, "ignored": 0,
                                  "articles": [self.full("q/key", views=3, visitors=1)]}, r)
        self.assertAccepted(self.post({"type": "view", "article": "q/key"}), 1)
        # Sent again: answered as the first time, counted once; the stats are today's.
        r = self.post_stats(body, headers=key)
        self.assertEqual(r.body, {"accepted": 3, "ignored": 0,
                                  "articles": [self.full("q/key", views=4, visitors=1)]}, r)

    def test_stats_of_another_value_is_refused_and_counts_nothing(self):
        for query in ("stats=yes", "stats=", "stats", "stats=1&stats=1", "stats=2"):
            r = self.post_stats({"type": "view", "article": "q/bad"}, query)
            self.assertRejected(r, 400, "invalid_parameter")
            self.assertEqual(r.body["message"], "stats: 1 or 0, given once")
        # A refused batch is answered as ever, without stats.
        r = self.post_stats([{"type": "view", "article": "q/bad"}, {"type": "nope"}])
        self.assertRejected(r, 400, "invalid_type")
        self.assertNothingCounted()
        # The pixel answers a GIF whatever its query holds.
        r = self.t.get("/v1/pixel.gif?type=view&article=q/px&stats=1")
        self.assertEqual((r.status, r.headers.get("Content-Type")), (200, "image/gif"), r)
        self.assertCounts("q/px", views=1)

    # ---- a key of another type; a write script that fails part-way ----

    def test_a_write_counted_at_once_skips_commands_on_a_key_of_another_type(self):
        # The article's totals hash replaced by a string (written by someone else): each
        # command Redis refuses on it is skipped, logged and counted, the rest of the write
        # counted, and the answer is 200 -- what a fold of the journal does with the same key,
        # so that a request is answered alike on either path. A 504 would have the client
        # send it again, and what the write counted before the refusal would count twice.
        # This is the direct write path (--fold-interval 0, the one a cluster's keyed writes
        # take), where a unit is counted when it is acknowledged.
        direct = self.track(harness.Tallyd(self.redis, ["--view-window", "0",
                                                        "--fold-interval", "0",
                                                        "--token", TOKEN]))
        with direct:
            self.assertAccepted(self.post({"type": "view", "article": "i/broken"},
                                          tallyd=direct), 1)
            [key] = self.redis.keys("tally:{??}a:i/broken")
            self.redis.command("DEL", key)
            self.redis.command("SET", key, "not a hash")
            names = ("tally_write_skipped_commands_total", "tally_requests_indeterminate_total")
            before = [harness.metric(direct.metrics(), n) for n in names]
            # i/broken's view: the HINCRBY of its totals' views (its visitor is not new: no
            # HINCRBY of its visitors); its comment: the HGET and the HSET of its comments.
            r = self.post([{"type": "view", "article": "i/fine"},
                           {"type": "view", "article": "i/broken"},
                           {"type": "comment", "article": "i/broken", "delta": 2},
                           {"type": "view", "article": "i/fine"}], headers=AUTH, tallyd=direct)
            self.assertAccepted(r, 4)
            self.assertEqual([harness.metric(direct.metrics(), n) for n in names],
                             [before[0] + 3, before[1]])
            self.assertRegex(direct.log(), r"a write skipped 3 commands redis refused, the "
                                           r"last with: WRONGTYPE")
            self.assertNotIn("failed part-way", direct.log())
            self.assertEqual(counts(direct.stats("i/fine")), expected("i/fine", views=2))
            self.assertEqual(self.redis.command("GET", key), b"not a hash")
            # Its keys of other kinds counted it: the hour's series.
            r = direct.get("/v1/series/i%2Fbroken?metric=views&interval=hour")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(sum(p["value"] for p in r.body["points"]), 2)

    def test_a_write_script_that_fails_part_way_is_answered_as_of_unknown_outcome(self):
        # A check's key of another type -- here the hashes of an article's repeat-view window
        # -- stops the write script where it meets it, and what it wrote before stays
        # written, so neither a 200 nor "not counted" (503) would be true: 504
        # outcome_unknown. i/first's view comes first in the unit and is counted.
        direct = self.track(harness.Tallyd(self.redis, ["--view-window", "1800",
                                                        "--fold-interval", "0"]))
        with direct:
            self.assertAccepted(self.post({"type": "view", "article": "i/checked"},
                                          tallyd=direct), 1)
            windows = self.redis.keys("tally:{??}w:i/checked:*")
            self.assertGreater(len(windows), 0)
            for key in windows:
                self.redis.command("DEL", key)
                self.redis.command("SET", key, "not a hash")
            name = "tally_requests_indeterminate_total"
            before = harness.metric(direct.metrics(), name)
            r = self.post([{"type": "view", "article": "i/first"},
                           {"type": "view", "article": "i/checked"}], tallyd=direct)
            self.assertEqual(r.status, 504, r)
            self.assertRegex(r.headers.get("Retry-After", ""), r"^[1-9][0-9]*$")
            self.assertEqual(set(r.body), {"error", "message"}, r)
            self.assertEqual(r.body["error"], "outcome_unknown")
            self.assertEqual(harness.metric(direct.metrics(), name), before + 1)
            self.assertIn("the write script failed part-way", direct.log())
            self.assertEqual(counts(direct.stats("i/first"))["views"], 1)
            self.assertEqual(counts(direct.stats("i/checked"))["views"], 1)


class RateLimitTest(harness.TallyTestCase):
    """--rate-limit N: N events a second per client address, a burst of 4 x N; over it, 429
    with Retry-After and nothing of the request counted."""

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--rate-limit", "1"])
        try:
            cls.tallyd.start()
        except Exception:
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def test_over_the_limit_is_429_and_not_counted(self):
        t = self.tallyd
        r = t.post_events([{"type": "view", "article": "rl"}] * 4)  # the whole burst
        self.assertEqual((r.status, r.body), (200, {"accepted": 4, "ignored": 0}))
        r = t.post_events([{"type": "view", "article": "rl"}] * 2)
        self.assertEqual(r.status, 429, r)
        self.assertRegex(r.headers.get("Retry-After", ""), r"^[1-9][0-9]*$")
        self.assertEqual(set(r.body), {"error", "message"}, r)
        self.assertEqual(counts(t.stats("rl"))["views"], 4)
        # The bucket refills at one event a second.
        harness.wait_until(lambda: t.post_events({"type": "view", "article": "rl"}).status == 200,
                           4.0, 0.25)
        self.assertEqual(counts(t.stats("rl"))["views"], 5)


class BatchBurstTest(harness.TallyTestCase):
    """--rate-limit 2: a burst of 8 events. A batch of more events than the burst could never
    pass: it is refused whole (429 batch_over_burst) and charges nothing. A batch within the
    burst is charged per event, so 100-event batches cannot pass for the price of the burst."""

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--rate-limit", "2",
                                                "--token", TOKEN])
        try:
            cls.tallyd.start()
        except Exception:
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def sample(self, name, **labels):
        return harness.metric(self.tallyd.metrics(), name, **labels) or 0

    def test_a_batch_above_the_burst_is_refused_whole_and_costs_nothing(self):
        t = self.tallyd

        def views(n):
            return [{"type": "view", "article": "burst"}] * n

        rejected = self.sample("tally_events_total", type="view", outcome="rejected")
        limited = self.sample("tally_requests_rejected_total", reason="rate_limited")
        for n in (100, 9):
            r = t.post_events(views(n))
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.body, {
                "error": "batch_over_burst",
                "message": "body: %d events are more than the burst of 8 (4 x --rate-limit); "
                           "send at most 8 in one request" % n}, r)
            self.assertRegex(r.headers.get("Retry-After", ""), r"^[1-9][0-9]*$")
        # Nothing was charged: the whole burst passes, and then it is spent (a second batch of
        # 8 would need 4 s of refill).
        r = t.post_events(views(8))
        self.assertEqual((r.status, r.body), (200, ok(8)))
        r = t.post_events(views(8))
        self.assertEqual((r.status, r.body["error"]), (429, "rate_limited"), r)
        # A sender with the token is not rate-limited.
        r = t.post_events(views(100), headers=AUTH)
        self.assertEqual((r.status, r.body), (200, ok(100)))
        self.assertEqual(counts(t.stats("burst"))["views"], 108)
        self.assertEqual(self.sample("tally_events_total", type="view", outcome="rejected"),
                         rejected + 100 + 9 + 8)
        self.assertEqual(self.sample("tally_requests_rejected_total", reason="rate_limited"),
                         limited + 3)


if __name__ == "__main__":
    unittest.main()
