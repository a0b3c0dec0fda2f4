"""What one anonymous top list may cost Redis does not grow with what anyone wrote.

- Top lists hold exactly `limit` articles, ties at the edge ordered by article id: 30
  articles of one bucket at one view each, limit 10, give the first 10 by id in every period.
- A day's or all time's top list costs the same Redis commands (INFO commandstats) when 1,000
  more articles tie at the edge in that bucket: each bucket sends at most `limit`.
- A week's or month's top list or totals is computed once a minute for every collector: each
  bucket's part is kept by Redis (src/scripts/kept.lua), so a second collector asking the same
  computes nothing (exact commands) and answers the same; the collector that asked answers from
  its own memory (no command). A DELETE or an import is seen by the next read (only the buckets
  it touched are computed again); every part expires at the same whole minute of Redis's
  clock, however far apart they were computed, and each collector's memory with them: then
  every part is computed again, once.
"""

import datetime
import json
import time
import unittest
from urllib.parse import quote

import harness
from test_reports import bucket, day_stamp

DAY = 86400
AUTH = {"Authorization": "Bearer " + harness.TOKEN}
MONTH_TOP = "/v1/top?period=month&limit=100"
MONTH_TOTALS = "/v1/totals?period=month"
# A bucket's part computed (kept.lua): per bucket one FCALL, two GETs (the kept answer, the
# bucket's epoch), then the days summed and the answer SET; found kept: the FCALL and GETs.
KEPT_READ = {"fcall": 256, "get": 512}


def computed(buckets, top=True, days=30):
    """The commands of a read of a week's or month's top list (TOP) or totals that computes
    BUCKETS of the 256 parts again and finds the others kept."""
    out = dict(KEPT_READ, set=buckets)
    if top:
        out["zunion"] = buckets
    else:
        out["hgetall"] = buckets * days
    return {k: v for k, v in out.items() if v != 0}


def ids_in_bucket(prefix, b, n):
    """N article ids starting with PREFIX whose bucket is B (two hex digits)."""
    out, i = [], 0
    while len(out) < n:
        a = "%s%d" % (prefix, i)
        if bucket(a) == b:
            out.append(a)
        i += 1
    return out


class ReadCostTest(harness.TallyTestCase):

    def setUp(self):
        self.redis = self.track(harness.Redis().start())
        self.addCleanup(self.redis.close)
        self.tallyds = []

    def tallyd(self, journal=True):
        """A fresh one-worker tallyd: its week and month caches are empty. Without a JOURNAL
        (--fold-interval 0) it sends Redis nothing of its own accord: no folds, and no look
        for journals of collectors gone, which would count among a read's commands."""
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0", "--token", harness.TOKEN]
                                      + ([] if journal else ["--fold-interval", "0"]),
                                      threads=1))
        self.addCleanup(t.close)
        t.start()
        harness.wait_until(lambda: t.get("/readyz").status == 200, 10.0)
        return t

    def calls(self):
        """{command: calls} of INFO commandstats, without INFO itself and TIME (every tallyd's
        write connection samples Redis's clock each second)."""
        text = self.redis.command("INFO", "commandstats").decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[len("cmdstat_"):].split(":", 1)
                if name not in ("info", "time"):
                    out[name] = int(rest.split("calls=", 1)[1].split(",", 1)[0])
        return out

    def cost(self, t, path):
        """The answer to GET PATH and the Redis commands it cost, by name."""
        before = self.calls()
        r = t.get(path)
        after = self.calls()
        self.assertEqual(r.status, 200, r)
        diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        return r.body, diff

    def post_views(self, t, articles, views=1):
        for i in range(0, len(articles), 100):
            batch = [{"type": "view", "article": a} for a in articles[i:i + 100]] * views
            r = t.post_events(batch)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body["accepted"], len(batch), r)

    def test_top_lists_hold_limit_articles_and_cost_the_same_however_many_tie(self):
        t = self.tallyd()
        b = bucket("tie-cost/anchor")
        tied = ids_in_bucket("tie-cost/", b, 30)
        self.post_views(t, tied)
        first10 = sorted(tied, key=lambda a: a.encode())[:10]
        want = [{"article": a, "count": 1} for a in first10]
        day = day_stamp(int(time.time()) // DAY)
        for period in ("day", "week", "month", "all"):
            body, _ = self.cost(t, "/v1/top?period=%s&limit=10" % period)
            self.assertEqual(body["articles"], want, period)

        costs = {}
        for period in ("day", "all"):
            body, costs[period] = self.cost(t, "/v1/top?period=%s&limit=10" % period)
            self.assertEqual(body["articles"], want)
        # 1,000 more articles tie at one view in that bucket's lists (ids after the others').
        args = []
        for i in range(1000):
            args += [1, "zz-tie/%04d" % i]
        self.assertEqual(self.redis.command("ZADD", "tally:{%s}d:views:%s" % (b, day), *args),
                         1000)
        self.assertEqual(self.redis.command("ZADD", "tally:{%s}t:views" % b, *args), 1000)
        for period in ("day", "all"):
            if day_stamp(int(time.time()) // DAY) != day:
                self.skipTest("the UTC day turned during the test")
            body, cost = self.cost(t, "/v1/top?period=%s&limit=10" % period)
            self.assertEqual(body["articles"], want, period)
            self.assertEqual(cost, costs[period], period)
            self.assertEqual(cost["fcall_ro"], 256, cost)

    # ---- Week and month: kept by Redis for every collector ----

    def day_of(self, days_ago):
        return str(datetime.date.fromordinal(719163 + int(time.time()) // DAY - days_ago))

    def month_data(self, t):
        """Views today on T in a few buckets, and an import of views and shares on earlier
        days; returns the month's top list, the week's, and the month's totals."""
        views = {"kept/a": 3, "kept/b": 2, "kept/c": 1, "kept/d": 1}
        for a, n in views.items():
            self.post_views(t, [a], n)
        self.import_lines(t, [
            {"article": "kept/e", "views": 7, "shares": {"email": 2}, "date": self.day_of(3)},
            {"article": "kept/a", "views": 5, "date": self.day_of(20)},
            {"article": "kept/old", "views": 50, "date": self.day_of(40)}], "kept-month")
        # Counted at once (no journal).
        self.assertEqual(t.get("/v1/totals?period=day").body["views"], 7)

        def ranked(counts):
            return [{"article": a, "count": n}
                    for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))]

        week = ranked(dict(views, **{"kept/e": 7}))
        month = ranked(dict(views, **{"kept/e": 7, "kept/a": 8}))
        totals = {"period": "month", "views": 19, "shares": 2, "comments": 0, "reads": 0,
                  "engaged_seconds": 0}
        return month, week, totals

    def import_lines(self, t, lines, key):
        body = "".join(json.dumps(l) + "\n" for l in lines).encode()
        r = t.request("POST", "/v1/import", body, dict(AUTH, **{
            "Idempotency-Key": key, "Content-Type": "application/x-ndjson"}))
        self.assertEqual((r.status, r.body), (200, {"imported": len(lines)}), r)

    def skip_near_midnight(self, seconds):
        now = time.time()
        if int(now) // DAY != int(now + seconds) // DAY:
            self.skipTest("the UTC day turns during the test")

    def kept_lifetimes(self):
        """{key: seconds left} of every kept part and epoch."""
        c = harness.RespClient(self.redis.port)
        try:
            return {k.decode(): c.command("TTL", k) for k in self.redis.keys("tally:{*}k:*")}
        finally:
            c.close()

    def kept_expiries(self):
        """{"top" or "site": the set of PEXPIRETIMEs (Unix ms)} of the month's kept parts."""
        c = harness.RespClient(self.redis.port)
        try:
            out = {}
            for k in self.redis.keys("tally:{*}k:*:month:*"):
                kind = "site" if b"}k:site:" in k else "top"
                out.setdefault(kind, set()).add(c.command("PEXPIRETIME", k))
            return out
        finally:
            c.close()

    def test_a_second_collector_computes_nothing_of_a_month_and_answers_the_same(self):
        self.skip_near_midnight(60)
        a, b = self.tallyd(journal=False), self.tallyd(journal=False)
        month, week, totals = self.month_data(a)
        # What the second reads finds kept must not expire between the reads: a whole minute
        # of Redis's clock near is waited out first.
        harness.wait_out_kept_boundary(self.redis.command, 20)
        cost = {}
        for name, t in (("a", a), ("b", b), ("a again", a), ("b again", b)):
            cost[name] = [self.cost(t, MONTH_TOP), self.cost(t, MONTH_TOTALS)]
        # The first computes every bucket's part (an empty bucket's too: its answer is empty).
        self.assertEqual(cost["a"][0][1], computed(256))
        self.assertEqual(cost["a"][0][0]["articles"], month)
        self.assertEqual(cost["a"][1], (totals, computed(256, top=False)))
        # The other collector finds each part kept: no ZUNION, no HGETALL, no SET.
        self.assertEqual(cost["b"], [(cost["a"][0][0], KEPT_READ), (totals, KEPT_READ)])
        # Each answers from its own memory meanwhile: no command at all.
        self.assertEqual(cost["a again"], [(cost["a"][0][0], {}), (totals, {})])
        self.assertEqual(cost["b again"], [(cost["a"][0][0], {}), (totals, {})])
        # A shorter list comes from the same 100; the week is its own part, kept as well.
        body, c = self.cost(b, "/v1/top?period=month&limit=2")
        self.assertEqual((body["articles"], c), (month[:2], {}))
        body, c = self.cost(b, "/v1/top?period=week&limit=100")
        self.assertEqual((body["articles"], c), (week, computed(256, days=7)))
        body, c = self.cost(a, "/v1/top?period=week&limit=5")
        self.assertEqual((body["articles"], c), (week[:5], KEPT_READ))
        # Every kept key expires: a part within the minute, an epoch within a day (the import
        # set one in the bucket of each dated line).
        lives = self.kept_lifetimes()
        parts = [k for k in lives if not k.endswith("}k:epoch")]
        self.assertEqual(len(parts), 256 * 3, sorted(lives)[:5])
        self.assertTrue(all(0 <= lives[k] <= 60 for k in parts), lives)
        self.assertEqual(sorted(k for k in lives if k.endswith("}k:epoch")),
                         sorted({"tally:{%s}k:epoch" % bucket(x)
                                 for x in ("kept/e", "kept/a", "kept/old")}))
        self.assertTrue(all(DAY - 120 <= lives[k] <= DAY for k in lives if k not in parts))

    def test_a_delete_or_an_import_is_seen_at_once_and_every_part_expires_at_the_minute(self):
        self.skip_near_midnight(120)
        a, b = self.tallyd(journal=False), self.tallyd(journal=False)
        month, _, totals = self.month_data(a)
        # Room for what follows before the kept parts expire (next whole minute of Redis's
        # clock): a boundary near is waited out first.
        boundary = harness.wait_out_kept_boundary(self.redis.command, 30)
        for t in (a, b):
            self.assertEqual(t.get(MONTH_TOP).body["articles"], month)
            self.assertEqual(t.get(MONTH_TOTALS).body, totals)
        # Two seconds on, DELETE the first (kept/a, 8 views) on B: B's next reads compute its
        # bucket's part again, and only it.
        time.sleep(2)
        self.assertEqual(month[0], {"article": "kept/a", "count": 8})
        r = b.request("DELETE", "/v1/articles/kept%2Fa", headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.redis.command("GET", "tally:{%s}k:epoch" % bucket("kept/a")),
                         b"2")  # the import's, then the DELETE's
        body, c = self.cost(b, MONTH_TOP)
        self.assertEqual((body["articles"], c), (month[1:], computed(1)))
        want = dict(totals, views=totals["views"] - 8)
        self.assertEqual(self.cost(b, MONTH_TOTALS), (want, computed(1, top=False)))
        # An import on B of yesterday's views: seen at once, its bucket's part computed again.
        self.import_lines(b, [{"article": "kept/new", "views": 40, "shares": {"reddit": 1},
                               "date": self.day_of(1)}], "kept-again")
        fresh = [{"article": "kept/new", "count": 40}] + month[1:]
        body, c = self.cost(b, MONTH_TOP)
        self.assertEqual((body["articles"], c), (fresh, computed(1)))
        want = dict(want, views=want["views"] + 40, shares=want["shares"] + 1)
        self.assertEqual(self.cost(b, MONTH_TOTALS), (want, computed(1, top=False)))
        # The parts computed again expire with the others, at the same whole minute.
        self.assertEqual(self.kept_expiries(), {"top": {boundary}, "site": {boundary}})
        self.assertLess(harness.redis_ms(self.redis.command), boundary)
        # A answers from its memory until that minute; then every bucket's part is computed
        # again -- the two B computed since as well -- and A answers as B does, while B's
        # memory expired at the same minute and finds every part kept.
        self.assertEqual(self.cost(a, MONTH_TOP),
                         ({"metric": "views", "period": "month", "articles": month}, {}))
        self.assertEqual(self.cost(a, MONTH_TOTALS), (totals, {}))
        harness.wait_until(lambda: harness.redis_ms(self.redis.command) >= boundary + 500, 70.0,
                           interval=0.1)
        body, c = self.cost(a, MONTH_TOP)
        self.assertEqual((body["articles"], c), (fresh, computed(256)))
        self.assertEqual(self.cost(a, MONTH_TOTALS), (want, computed(256, top=False)))
        body, c = self.cost(b, MONTH_TOP)
        self.assertEqual((body["articles"], c), (fresh, KEPT_READ))
        self.assertEqual(self.cost(b, MONTH_TOTALS), (want, KEPT_READ))
        self.assertEqual(self.kept_expiries(),
                         {"top": {boundary + harness.KEPT_MS},
                          "site": {boundary + harness.KEPT_MS}})

    def test_month_totals_are_exact_past_what_a_lua_number_holds(self):
        """A bucket's sums are added in Redis as two parts (kept.lua): 9,100 imported lines of
        10^12 views and one of 7, yesterday, make 9,100,000,000,000,007 -- past 2^53, where a
        Lua number would round it -- and the month's totals say exactly that."""
        self.skip_near_midnight(30)
        t = self.tallyd(journal=False)
        day = self.day_of(1)
        self.import_lines(t, [{"article": "big/a", "views": 10 ** 12, "date": day}] * 9100 +
                          [{"article": "big/b", "views": 7, "date": day}], "kept-big")
        for period in ("week", "month"):
            self.assertEqual(t.get("/v1/totals?period=" + period).body["views"],
                             9100 * 10 ** 12 + 7, period)


if __name__ == "__main__":
    unittest.main()
