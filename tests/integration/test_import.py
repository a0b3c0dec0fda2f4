"""POST /v1/import and GET /v1/imports against a real tallyd and Redis.

An import adds carried-over counts to the totals and, with a date, to that day's bucket: the
stats, daily series, top lists and site totals must show exactly what was imported, visitors
nothing. A bad line refuses the whole import; a retry under the same Idempotency-Key is
answered as the first time and counted once; another body under the key is 422. The
converter's output (scripts/tally-import) is posted end to end.
"""

import datetime
import json
import os
import socket
import subprocess
import sys
import time
import unittest

import harness
from harness import quote
from test_reports import bucket

AUTH = {"Authorization": "Bearer " + harness.TOKEN}
NDJSON = "application/x-ndjson"
HERE = os.path.dirname(os.path.abspath(__file__))
CONVERTER = os.path.join(HERE, "..", "..", "scripts", "tally-import.py")
FIXTURES = os.path.join(HERE, "..", "import", "fixtures")


def ndjson(lines):
    return "".join(json.dumps(l, separators=(",", ":")) + "\n" for l in lines).encode()


def utc_day(offset=0):
    return datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)


class ImportTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        # An import of 10,000 lines is one script that holds Redis for a few tenths of a second,
        # seconds on a loaded machine: --redis-timeout above it, as the README advises.
        cls.tallyd = harness.Tallyd(cls.redis, ["--token", harness.TOKEN,
                                                "--redis-timeout", "15000"]).start()
        cls.tallyd.wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.track(self.tallyd)
        self.redis.flushall()

    def post(self, body, key="import-1", headers=None, ctype=NDJSON):
        h = dict(AUTH)
        if key is not None:
            h["Idempotency-Key"] = key
        if ctype is not None:
            h["Content-Type"] = ctype
        h.update(headers or {})
        return self.tallyd.request("POST", "/v1/import", body, h, timeout=30)

    def stats(self, article):
        r = self.tallyd.get("/v1/stats/" + quote(article))
        self.assertEqual(r.status, 200, r)
        return r.body

    def imports(self):
        r = self.tallyd.get("/v1/imports", AUTH)
        self.assertEqual(r.status, 200, r)
        return r.body["imports"]

    def assert_untouched(self, *articles):
        for a in articles:
            s = self.stats(a)
            self.assertEqual((s["views"], s["shares"], s["comments"]), (0, 0, 0), s)
        self.assertEqual(self.imports(), [])
        self.assertEqual(self.redis.keys("tally:{*}[adtsv]:*"), [])

    def test_counts_land_in_totals_series_and_top(self):
        today, yesterday, old = utc_day(0), utc_day(-1), utc_day(-500)
        body = ndjson([
            {"article": "news/a", "views": 1000, "shares": {"twitter": 3, "mastodon": 2},
             "comments": 7},
            {"article": "news/a", "views": 40, "date": yesterday.isoformat()},
            {"article": "news/a", "views": 5, "comments": 1, "date": today.isoformat()},
            {"article": "news/b", "views": 30, "shares": {"email": 4},
             "date": today.isoformat(), "ignored": True},
            {"article": "news/c", "views": 2000000, "date": old.isoformat()},
            {"article": "news/d"},
        ])
        r = self.post(body)
        self.assertEqual((r.status, r.body), (200, {"imported": 6}), r)

        a = self.stats("news/a")
        self.assertEqual((a["views"], a["visitors"], a["shares"], a["comments"]),
                         (1045, 0, 5, 8), a)
        self.assertEqual(a["shares_by_network"], {"twitter": 3, "other": 2})
        b = self.stats("news/b")
        self.assertEqual((b["views"], b["shares"], b["shares_by_network"]),
                         (30, 4, {"email": 4}), b)
        self.assertEqual(self.stats("news/c")["views"], 2000000)
        self.assertEqual(self.stats("news/d")["views"], 0)

        # The daily series: the dated lines on their days, undated ones on none.
        r = self.tallyd.get("/v1/series/news%%2Fa?metric=views&interval=day&from=%s&to=%s"
                            % (utc_day(-2).isoformat(), today.isoformat()))
        self.assertEqual(r.status, 200, r)
        self.assertEqual([p["value"] for p in r.body["points"]], [0, 40, 5])
        r = self.tallyd.get("/v1/series/news%%2Fa?metric=comments&interval=day&from=%s&to=%s"
                            % (yesterday.isoformat(), today.isoformat()))
        self.assertEqual([p["value"] for p in r.body["points"]], [0, 1])
        # No hour holds an import: the hourly series stays empty.
        r = self.tallyd.get("/v1/series/news%2Fa?metric=views&interval=hour")
        self.assertEqual(sum(p["value"] for p in r.body["points"]), 0)

        def top(metric, period):
            r = self.tallyd.get("/v1/top?metric=%s&period=%s&limit=10" % (metric, period))
            self.assertEqual(r.status, 200, r)
            return [(x["article"], x["count"]) for x in r.body["articles"]]

        self.assertEqual(top("views", "day"), [("news/b", 30), ("news/a", 5)])
        self.assertEqual(top("views", "week"), [("news/a", 45), ("news/b", 30)])
        self.assertEqual(top("views", "all"),
                         [("news/c", 2000000), ("news/a", 1045), ("news/b", 30)])
        self.assertEqual(top("shares", "all"), [("news/a", 5), ("news/b", 4)])
        self.assertEqual(top("shares", "day"), [("news/b", 4)])
        self.assertEqual(top("visitors", "all"), [])

        r = self.tallyd.get("/v1/totals?period=all")
        self.assertEqual((r.body["views"], r.body["shares"], r.body["comments"]),
                         (2001075, 9, 8), r)
        r = self.tallyd.get("/v1/totals?period=day")
        self.assertEqual((r.body["views"], r.body["shares"], r.body["comments"]),
                         (35, 4, 1), r)

        # An imported day bucket lives 405 days from the start of its day, as the write path's
        # live 405 days from their first write.
        key = "tally:{%s}d:views:%s" % (bucket("news/a"), yesterday.strftime("%Y%m%d"))
        start = datetime.datetime.combine(yesterday, datetime.time(),
                                          tzinfo=datetime.timezone.utc).timestamp()
        expected = start + 405 * 86400 - time.time()
        ttl = self.redis.command("TTL", key)
        self.assertLess(abs(ttl - expected), 60, (ttl, expected))

        [rec] = self.imports()
        self.assertEqual({k: rec[k] for k in ("key", "lines", "views", "shares", "comments")},
                         {"key": "import-1", "lines": 6, "views": 2001075, "shares": 9,
                          "comments": 8})
        at = datetime.datetime.strptime(rec["at"], "%Y-%m-%dT%H:%M:%SZ")
        self.assertLess(abs(at.replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()),
                        120)

    def test_week_and_month_are_computed_afresh_after_an_import(self):
        # One worker thread: the week's and month's lists and totals it computed before the
        # import are the ones it would answer from for a minute.
        with harness.Tallyd(self.redis, ["--token", harness.TOKEN], threads=1) as t:
            self.track(t)
            # Its first requests are reads: answered 503 until its Redis connection is up.
            t.wait_ready()
            for period in ("week", "month"):
                self.assertEqual(t.get("/v1/top?metric=views&period=" + period).body["articles"],
                                 [])
                self.assertEqual(t.get("/v1/totals?period=" + period).body["views"], 0)
            r = t.request("POST", "/v1/import",
                          ndjson([{"article": "w", "views": 9, "date": utc_day(-2).isoformat()}]),
                          {"Idempotency-Key": "week", "Content-Type": NDJSON, **AUTH})
            self.assertEqual(r.status, 200, r)
            for period in ("week", "month"):
                r = t.get("/v1/top?metric=views&period=" + period)
                self.assertEqual(r.body["articles"], [{"article": "w", "count": 9}], period)
                self.assertEqual(t.get("/v1/totals?period=" + period).body["views"], 9)

    def test_events_after_an_import_add_up(self):
        self.assertEqual(self.post(ndjson([{"article": "x", "views": 10, "comments": 2}])).status,
                         200)
        r = self.tallyd.post_events([{"type": "view", "article": "x"},
                                     {"type": "comment", "article": "x", "delta": -1}], AUTH)
        self.assertEqual(r.status, 200, r)
        s = self.stats("x")
        self.assertEqual((s["views"], s["visitors"], s["comments"]), (11, 1, 1), s)

    def test_a_bad_line_imports_nothing(self):
        cases = [
            ('{"article":"ok","views":-1}', "line 3: views:"),
            ('{"article":"ok","views":1.5}', "line 3: views:"),
            ('{"article":"ok","views":1000000000001}', "line 3: views:"),
            ('{"article":"ok","views":"7"}', "line 3: views:"),
            ('{"article":"ok","shares":{"twitter":-2}}', "line 3: shares:"),
            ('{"article":"ok","shares":[1]}', "line 3: shares:"),
            ('{"article":"ok","shares":{"x":600000000000,"y":400000000001}}',
             "line 3: shares: the counts add up to at most 1000000000000"),
            ('{"article":"ok","comments":null}', "line 3: comments:"),
            ('{"article":"has space","views":1}', "line 3: article:"),
            ('{"views":1}', "line 3: article:"),
            ('{"article":"ok","date":"2025-02-29"}', "line 3: date:"),
            ('{"article":"ok","date":"20250101"}', "line 3: date:"),
            ('{"article":"ok"} x', "line 3: one JSON object"),
            ('["ok"]', "line 3: one JSON object"),
        ]
        for i, (line, message) in enumerate(cases):
            with self.subTest(line=line):
                body = ('{"article":"first","views":5}\n\n%s\n{"article":"last","views":1}\n'
                        % line).encode()
                r = self.post(body, key="bad-%d" % i)
                self.assertEqual(r.status, 400, r)
                self.assertEqual(r.body["error"], "invalid_line")
                self.assertTrue(r.body["message"].startswith(message), r.body)
                self.assert_untouched("first", "ok", "last")

    def test_site_totals_are_added_exactly(self):
        # 9,999 lines of 999,999,999,999 and one of 1: a site total past 2^53, where Lua
        # numbers are no longer exact.
        lines = [{"article": "big-%d" % i, "views": 999999999999} for i in range(9999)]
        lines.append({"article": "one", "views": 1, "date": utc_day(0).isoformat()})
        r = self.post(ndjson(lines))
        self.assertEqual((r.status, r.body), (200, {"imported": 10000}), r)
        r = self.tallyd.get("/v1/totals?period=all")
        self.assertEqual(r.body["views"], 9999 * 999999999999 + 1, r)
        self.assertEqual(self.tallyd.get("/v1/totals?period=day").body["views"], 1)

    def test_a_count_near_the_int64_limit_imports_nothing(self):
        big = "tally:{%s}a:full" % bucket("full")
        self.redis.command("HSET", big, "views", str(2 ** 63 - 2 ** 20 - 1000))
        body = ndjson([{"article": "first", "views": 5, "date": utc_day(0).isoformat()},
                       {"article": "full", "views": 999},
                       {"article": "full", "views": 1},
                       {"article": "last", "comments": 1}])
        r = self.post(body)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.body["error"], "count_limit")
        self.assertEqual(r.body["message"],
                         "line 2: would take a count of its article or of the site to about "
                         "9223372036853727232 (2^63 - 2^20) or more; nothing imported")
        self.assertEqual(self.redis.article_totals("full"), {"views": 2 ** 63 - 2 ** 20 - 1000})
        self.assertEqual(self.imports(), [])
        self.assertEqual(self.redis.keys("tally:{*}[dtsv]:*"), [])
        self.assertEqual(self.redis.keys("tally:{import}m:*"), [])
        # Less fits, and the same key is free for it.
        r = self.post(ndjson([{"article": "full", "views": 1}]))
        self.assertEqual((r.status, r.body), (200, {"imported": 1}), r)
        self.assertEqual(self.redis.article_totals("full"), {"views": 2 ** 63 - 2 ** 20 - 999})

    def test_a_redis_error_is_not_answered_as_retryable(self):
        # The second article's totals key holds a string: the script stops with an error.
        self.redis.command("SET", "tally:{%s}a:wrong" % bucket("wrong"), "x")
        r = self.post(ndjson([{"article": "a", "views": 1}, {"article": "wrong", "views": 1}]))
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.body["error"], "import_failed")
        self.assertIn("may have been applied", r.body["message"])

    def test_forget_takes_large_counts_out_exactly(self):
        # Counts past 2^53 (an import of many lines, or years of views): a DELETE takes them
        # out of the site totals to the unit, as Redis holds them.
        tag, day = bucket("huge"), time.strftime("%Y%m%d", time.gmtime())
        n = 466000000000000001
        self.redis.command("HSET", "tally:{%s}a:huge" % tag, "views", str(n))
        self.redis.command("HSET", "tally:{%s}s:all" % tag, "views", str(n + 7))
        self.redis.command("ZADD", "tally:{%s}d:views:%s" % (tag, day), "466000000000000000",
                           "huge")
        self.redis.command("HSET", "tally:{%s}s:%s" % (tag, day), "views", "466000000000000009")
        r = self.tallyd.request("DELETE", "/v1/articles/huge", None, AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.redis.command("HGET", "tally:{%s}s:all" % tag, "views"), b"7")
        self.assertEqual(self.redis.command("HGET", "tally:{%s}s:%s" % (tag, day), "views"),
                         b"9")

    def test_future_date_is_refused(self):
        tomorrow = utc_day(1).isoformat()
        r = self.post(ndjson([{"article": "a", "views": 1},
                              {"article": "a", "views": 1, "date": tomorrow}]))
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.body["message"], "line 2: date: not after today (UTC)")
        self.assert_untouched("a")

    def test_retry_is_counted_once(self):
        body = ndjson([{"article": "r", "views": 3, "date": utc_day(0).isoformat()},
                       {"article": "s", "comments": 2}])
        for _ in range(3):
            r = self.post(body, key="retry-me")
            self.assertEqual((r.status, r.body), (200, {"imported": 2}), r)
        self.assertEqual(self.stats("r")["views"], 3)
        self.assertEqual(self.stats("s")["comments"], 2)
        self.assertEqual(len(self.imports()), 1)

        other = ndjson([{"article": "r", "views": 4}])
        r = self.post(other, key="retry-me")
        self.assertEqual(r.status, 422, r)
        self.assertEqual(r.body["error"], "idempotency_key_reused")
        self.assertEqual(self.stats("r")["views"], 3)
        self.assertEqual(len(self.imports()), 1)
        # Under another key the same body is another import.
        self.assertEqual(self.post(body, key="retry-me-2").status, 200)
        self.assertEqual(self.stats("r")["views"], 6)

    def test_headers_are_checked(self):
        body = ndjson([{"article": "h", "views": 1}])
        r = self.post(body, key=None)
        self.assertEqual((r.status, r.body["error"]), (400, "missing_idempotency_key"), r)
        r = self.post(body, key="x" * 129)
        self.assertEqual((r.status, r.body["error"]), (400, "invalid_idempotency_key"), r)
        r = self.post(body, ctype="application/json")
        self.assertEqual((r.status, r.body["error"]), (415, "unsupported_media_type"), r)
        r = self.post(body, headers={"Authorization": "Bearer wrong-token-0123456789"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.headers["WWW-Authenticate"], "Bearer")
        r = self.tallyd.request("POST", "/v1/import", body,
                                {"Idempotency-Key": "k", "Content-Type": NDJSON})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.tallyd.get("/v1/imports").status, 401)
        r = self.tallyd.request("GET", "/v1/import")
        self.assertEqual((r.status, r.headers["Allow"]), (405, "POST, OPTIONS"))
        self.assertEqual(self.post(b"", key="empty").status, 400)
        self.assertEqual(self.post(b"\n\n", key="blank").status, 400)
        # text/plain and no Content-Type at all are taken.
        self.assertEqual(self.post(body, key="plain", ctype="text/plain; charset=utf-8").status,
                         200)
        self.assertEqual(self.post(body, key="none", ctype=None).status, 200)
        self.assertEqual(self.stats("h")["views"], 2)

    def test_no_token_configured_is_403(self):
        with harness.Tallyd(self.redis) as t:
            self.track(t)
            r = t.request("POST", "/v1/import", ndjson([{"article": "a", "views": 1}]),
                          {"Idempotency-Key": "k", "Content-Type": NDJSON, **AUTH})
            self.assertEqual((r.status, r.body["error"]), (403, "token_not_configured"), r)
            self.assertEqual(t.get("/v1/imports", AUTH).status, 403)

    def test_limits(self):
        # 10,000 lines in a body past the 64 KiB of events: taken whole.
        lines = [{"article": "big/%d" % (i % 500), "views": 1, "shares": {"copy": 1},
                  "date": utc_day(-(i % 3)).isoformat()} for i in range(10000)]
        body = ndjson(lines)
        self.assertGreater(len(body), 65536)
        r = self.post(body, key="ten-thousand")
        self.assertEqual((r.status, r.body), (200, {"imported": 10000}), r)
        self.assertEqual(self.stats("big/7")["views"], 20)
        r = self.tallyd.get("/v1/totals?period=all")
        self.assertEqual((r.body["views"], r.body["shares"]), (10000, 10000))
        # One line more is refused, naming it.
        r = self.post(body + ndjson([{"article": "big/0", "views": 1}]), key="ten-thousand-1")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.body["message"], "line 10001: an import holds at most 10000 lines")
        # Over 8 MiB: 413, nothing read further.
        pad = b" " * (8 * 1024 * 1024)
        r = self.post(ndjson([{"article": "p", "views": 1}]) + pad, key="too-large")
        self.assertEqual(r.status, 413, r)
        self.assertEqual(r.body["message"], "body: at most 8388608 bytes")
        # Just under it (blank padding is skipped): taken.
        body = ndjson([{"article": "p", "views": 1}])
        r = self.post(body + b" " * (8 * 1024 * 1024 - len(body)), key="just-fits")
        self.assertEqual((r.status, r.body), (200, {"imported": 1}), r)
        # Without the token, a body past 64 KiB is refused before it is read.
        r = self.tallyd.request("POST", "/v1/import", b" " * 70000,
                                {"Idempotency-Key": "k", "Content-Type": NDJSON})
        self.assertEqual(r.status, 413, r)
        # Events keep their 64 KiB.
        r = self.tallyd.post_events(b" " * 65537, AUTH)
        self.assertEqual(r.status, 413, r)

    def test_a_slow_import_has_two_minutes(self):
        # An import may take longer to arrive than the 10 s any other request has, as long as
        # bytes keep coming (no 10 s without one).
        body = ndjson([{"article": "slow/%d" % i, "views": 1} for i in range(2000)])
        head = ("POST /v1/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Idempotency-Key: slow\r\nContent-Type: application/x-ndjson\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n"
                % (harness.TOKEN, len(body))).encode()
        with socket.create_connection(("127.0.0.1", self.tallyd.port), timeout=30) as s:
            s.sendall(head + body[:1000])
            for part in (body[1000:2000], body[2000:]):
                time.sleep(6)
                s.sendall(part)
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith(b'{"imported":2000}\n'), answer)

    def test_imports_are_listed_newest_first(self):
        for i in range(3):
            r = self.post(ndjson([{"article": "l", "views": i + 1, "comments": 1}] * (i + 1)),
                          key="list-%d" % i)
            self.assertEqual(r.status, 200, r)
        got = [(x["key"], x["lines"], x["views"], x["shares"], x["comments"])
               for x in self.imports()]
        self.assertEqual(got, [("list-2", 3, 9, 0, 3), ("list-1", 2, 4, 0, 2),
                               ("list-0", 1, 1, 0, 1)])
        self.assertEqual(self.redis.command("LLEN", "tally:{import}l"), 3)

    def test_imports_list_keeps_the_last_thousand(self):
        self.redis.command("RPUSH", "tally:{import}l",
                           *['{"at":"2026-01-01T00:00:00Z","key":"old-%d","lines":1,"views":0,'
                             '"shares":0,"comments":0}' % i for i in range(1000)])
        self.assertEqual(self.post(ndjson([{"article": "k"}]), key="newest").status, 200)
        listed = self.imports()
        self.assertEqual(len(listed), 1000)
        self.assertEqual((listed[0]["key"], listed[-1]["key"]), ("newest", "old-998"))

    def test_converter_output_end_to_end(self):
        out = subprocess.run([sys.executable, CONVERTER, "csv",
                              os.path.join(FIXTURES, "plain.csv")],
                             check=True, capture_output=True).stdout
        r = self.post(out, key="from-csv")
        self.assertEqual((r.status, r.body["imported"]), (200, out.count(b"\n")), r)
        s = self.stats("/2024/05/hello-world/")
        self.assertEqual((s["views"], s["comments"], s["shares"]), (1234, 5, 6), s)
        out = subprocess.run([sys.executable, CONVERTER, "disqus",
                              os.path.join(FIXTURES, "disqus.xml")],
                             check=True, capture_output=True).stdout
        r = self.post(out, key="from-disqus")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.stats("/2024/05/hello-world/")["comments"], 5 + 2)


if __name__ == "__main__":
    unittest.main()
