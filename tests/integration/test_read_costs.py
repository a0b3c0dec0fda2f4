"""What one anonymous top list may cost Redis does not grow with what anyone wrote.

- Top lists hold exactly `limit` articles, ties at the edge ordered by article id: 30
  articles of one bucket at one view each, limit 10, give the first 10 by id in every period.
- A day's or all time's top list costs the same Redis commands (INFO commandstats) when 1,000
  more articles tie at the edge in that bucket: each bucket sends at most `limit`.
"""

import time
import unittest

import harness
from test_reports import bucket, day_stamp

DAY = 86400


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

    def tallyd(self):
        """A fresh one-worker tallyd: its week and month caches are empty."""
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"], threads=1))
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


if __name__ == "__main__":
    unittest.main()
