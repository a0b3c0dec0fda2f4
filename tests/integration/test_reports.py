"""GET /v1/top, /v1/series/{article} and /v1/totals against a brute force, and DELETE
/v1/articles/{article}.

A randomized workload (fixed seed, printed; TALLY_TEST_SEED overrides it) is posted to a real
tallyd for today, and past days and hours are seeded straight into Redis with the key schema of
README.md ("Key schema"), since tallyd files every event under its own clock. A model kept in
plain Python (per article, metric and UTC day or hour; all-time totals) then predicts every
answer exactly: the top lists of every metric and period at limits 100, 10 and 1 (count
descending, then article id ascending bytewise, counts <= 0 left out), daily and hourly series,
and site totals -- before and after an article is forgotten.

Two groups of articles get identical counts on purpose, so that the cut-off of limit 1 and of
limit 10 falls inside a tie in every metric and period and only the article ids decide.

The model is keyed by absolute days and hours, and each check reads the clock around its
request (and asks again if the day or hour turned meanwhile), so a run across midnight stays
exact; the workload itself is posted within one hour.
"""

import os
import random
import sys
import time
import unittest
from collections import defaultdict

import harness
from harness import quote

TOKEN = "reports-token-0123ab"  # 20 characters
UA_BASE = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SEED = int(os.environ.get("TALLY_TEST_SEED", "20261127"))

METRICS = ("views", "visitors", "shares", "comments")
SUMMED = ("views", "shares", "comments")  # the metrics kept in the site totals
# The members of /v1/totals and the metric each sums (reads and engaged are kept in the site
# totals too; tests/integration/test_engage.py counts them).
TOTALS = (("views", "views"), ("shares", "shares"), ("comments", "comments"),
          ("reads", "reads"), ("engaged_seconds", "engaged"))
PERIODS = {"day": 1, "week": 7, "month": 30, "all": 0}
LIMITS = (100, 10, 1)
NETWORKS = ("facebook", "twitter", "linkedin", "reddit", "whatsapp", "telegram", "email",
            "copy", "native", "other")

DAY = 86400
HOUR = 3600

# Identical counts in every metric and period: ranks 1-4 (the cut of limit 1 falls inside),
# and ranks 5-13 (the cut of limit 10 falls inside). Bytewise order: 'B' < 'b' < '{' < 0xC3.
TOP_TIE = ["tie/top/b", "tie/top/B", "tie/top/\u00e9", "tie/top/{a}"]
TEN_TIE = ["tie/ten/a", "tie/ten/A", "tie/ten/a/b", "tie/ten/\u00e4", "tie/ten/\u6587",
           "tie/ten/{x}", "tie/ten/}x{", "tie/ten/%41", "tie/ten/a+b"]


# ---- The bucket of an article (include/tally/keys.h) ----

def bucket(article):
    return "%02x" % (harness.siphash24(b"tally buckets v1", article.encode("utf-8")) % 256)


def day_stamp(day):
    return time.strftime("%Y%m%d", time.gmtime(day * DAY))


def hour_stamp(hour):
    return time.strftime("%Y%m%d%H", time.gmtime(hour * HOUR))


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def id_key(article):
    """The order of the contract: article ids ascending, bytewise in UTF-8."""
    return article.encode("utf-8")


# ---- The brute force ----

class Model:
    """What every report must say. day/hour: (metric, article, day or hour number) -> value;
    alltime: (metric, article) -> the all-time list's value."""

    def __init__(self):
        self.day = defaultdict(int)
        self.hour = defaultdict(int)
        self.alltime = defaultdict(int)

    def articles(self):
        return {k[1] for k in self.alltime} | {k[1] for k in self.day}

    def scores(self, metric, period, today):
        days = PERIODS[period]
        out = defaultdict(int)
        if days == 0:
            for (m, a), v in self.alltime.items():
                if m == metric:
                    out[a] += v
        else:
            first = today - days + 1
            for (m, a, d), v in self.day.items():
                if m == metric and first <= d <= today:
                    out[a] += v
        return out

    def ranked(self, metric, period, today):
        s = self.scores(metric, period, today)
        return sorted(((a, c) for a, c in s.items() if c > 0),
                      key=lambda e: (-e[1], id_key(e[0])))

    def top(self, metric, period, limit, today):
        return [{"article": a, "count": c} for a, c in self.ranked(metric, period, today)[:limit]]

    def series_day(self, article, metric, first_day, n):
        return [self.day.get((metric, article, first_day + i), 0) for i in range(n)]

    def series_hour(self, article, metric, first_hour, n):
        return [self.hour.get((metric, article, first_hour + i), 0) for i in range(n)]

    def totals(self, period, today):
        out = {"period": period}
        for field, m in TOTALS:
            out[field] = sum(self.scores(m, period, today).values())
        return out

    def forget(self, article):
        for store in (self.day, self.hour):
            for k in [k for k in store if k[1] == article]:
                del store[k]
        for k in [k for k in self.alltime if k[1] == article]:
            del self.alltime[k]


class ReportsTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.started = time.monotonic()
        sys.stderr.write("\ntest_reports: random seed %d (TALLY_TEST_SEED=%d reproduces it)\n"
                         % (SEED, SEED))
        cls.rng = random.Random(SEED)
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--token", TOKEN])
        try:
            cls.tallyd.start()
            cls.model = Model()
            cls.post_workload()
            cls.seed_past()
        except Exception:
            sys.stderr.write("---- tallyd log ----\n%s\n" % harness._tail(cls.tallyd.logfile))
            cls.tallyd.close()
            cls.redis.close()
            raise
        sys.stderr.write("test_reports: workload and seeding took %.1f s\n"
                         % (time.monotonic() - cls.started))

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()
        sys.stderr.write("test_reports: %.1f s in all\n" % (time.monotonic() - cls.started))

    # ---- Today: events through the API ----

    @classmethod
    def random_articles(cls, n):
        rng = cls.rng
        shapes = ["news/2026/story-%d", "caf\u00e9/\u6587\u7ae0-%d", "{x}-%d", "}%d{",
                  "a/b/c/%d", "\U0001f389/%d", "q\"uote\\%d", "p%%25c+t&=?#%d", "Case-%d",
                  "case-%d", "*glob?[%d]"]
        out = []
        for i in range(n - 1):
            out.append(shapes[i % len(shapes)] % i)
        out.append("\u00e9" * 128)  # 256 bytes, the longest id
        rng.shuffle(out)
        return out

    @classmethod
    def crowd_articles(cls, n):
        """N articles that all fall into one bucket, none of the tie groups' buckets: that
        bucket's own list then holds more than the limit, with ties across its edge."""
        avoid = {bucket(a) for a in TOP_TIE + TEN_TIE}
        target = next("%02x" % b for b in range(256) if "%02x" % b not in avoid)
        shapes = ["crowd/%d", "Crowd/%d", "crowd/{%d}", "crowd/\u00e9/%d", "crowd/%d}"]
        out, i = [], 0
        while len(out) < n:
            a = shapes[i % len(shapes)] % i
            if bucket(a) == target:
                out.append(a)
            i += 1
        cls.rng.shuffle(out)
        return target, out

    @classmethod
    def post_workload(cls):
        rng = cls.rng
        cls.randoms = cls.random_articles(287)
        # One bucket holds 110 articles: 12 tied with the limit-10 group, 68 spread above and
        # 30 tied below them, so that the cut of limit 100 falls inside a tie both in that
        # bucket's own list and in the merged one.
        cls.crowd_bucket, crowd = cls.crowd_articles(110)
        cls.ten_tie = TEN_TIE + crowd[:12]
        cls.crowd_mid, cls.crowd_tie = crowd[12:80], crowd[80:]
        cls.api_articles = TOP_TIE + cls.ten_tie + cls.crowd_mid + cls.crowd_tie + cls.randoms
        nbatches = 60
        batches = [[] for _ in range(nbatches)]  # units: lists of events kept in order

        def put(unit, where=None):
            batches[rng.randrange(nbatches) if where is None else where].append(unit)

        def group(members, make):
            return [make(m) for m in members]

        # The tie groups: each unit gives every member the same event, in the same batch.
        for members, views, shares, deltas in (
                (TOP_TIE, 50, 30, [1] * 40 + [-1] * 2),
                (cls.ten_tie, 35, 20, [1] * 28 + [-1] * 2),
                (cls.crowd_tie, 17, 8, [])):
            for b in rng.sample(range(nbatches), views):  # one view per visitor
                put(group(members, lambda m: {"type": "view", "article": m}), b)
            for _ in range(shares):
                net = rng.choice(NETWORKS)
                put(group(members, lambda m: {"type": "share", "article": m, "network": net}))
            rng.shuffle(deltas)
            for d in deltas:
                put(group(members, lambda m: {"type": "comment", "article": m, "delta": d}))
        for a in cls.crowd_mid:
            for b in rng.sample(range(nbatches), rng.randint(18, 34)):
                put([{"type": "view", "article": a}], b)
            for _ in range(rng.randint(9, 19)):
                put([{"type": "share", "article": a, "network": rng.choice(NETWORKS)}])
        # Everyone else: a few of each, many of them equal; comments on 40 of them only, so
        # that the comments' lists are shorter than 100.
        commented = set(rng.sample(cls.randoms, 40))
        for a in cls.randoms:
            for _ in range(rng.randint(0, 12)):
                put([{"type": "view", "article": a}])
            for _ in range(rng.randint(0, 5)):
                e = {"type": "share", "article": a}
                net = rng.choice(NETWORKS + ("myspace", None))
                if net is not None:
                    e["network"] = net
                put([e])
            for _ in range(rng.randint(1, 5) if a in commented else 0):
                e = {"type": "comment", "article": a}
                d = rng.choice([1, 1, -1, 2, -2, None])
                if d is not None:
                    e["delta"] = d
                put([e])

        # Post, batch by batch; each batch is one visitor (its own User-Agent).
        views = defaultdict(int)
        shares = defaultdict(lambda: defaultdict(int))
        comments = defaultdict(int)
        visitors = defaultdict(set)
        requests = []
        nevents = 0
        for i, units in enumerate(batches):
            rng.shuffle(units)
            events = [e for u in units for e in u]
            for k in range(0, len(events), 100):
                requests.append((i, events[k:k + 100]))
            for e in events:
                a = e["article"]
                nevents += 1
                if e["type"] == "view":
                    views[a] += 1
                    visitors[a].add(i)
                elif e["type"] == "share":
                    net = e.get("network", "other")
                    shares[a][net if net in NETWORKS else "other"] += 1
                else:
                    comments[a] = max(0, comments[a] + e.get("delta", 1))

        # Post within one hour: wait out the end of this one if it is close.
        left = HOUR - time.time() % HOUR
        if left < 15:
            sys.stderr.write("test_reports: waiting %.0f s for the next hour\n" % (left + 1))
            time.sleep(left + 1)
        t0 = time.time()
        for i, events in requests:
            r = cls.tallyd.post_events(events, {"User-Agent": "%s visitor/%d" % (UA_BASE, i),
                                                "Authorization": "Bearer " + TOKEN})
            if r.status != 200 or r.body != {"accepted": len(events), "ignored": 0}:
                raise AssertionError("batch %d: %r" % (i, r))
        t1 = time.time()
        if int(t0) // HOUR != int(t1) // HOUR:
            raise AssertionError("the workload crossed an hour (%s..%s)"
                                 % (rfc3339(t0), rfc3339(t1)))
        sys.stderr.write("test_reports: %d events in %d requests, %.1f s\n"
                         % (nevents, len(requests), t1 - t0))
        cls.work_hour = int(t0) // HOUR
        cls.work_day = int(t0) // DAY

        # Every counter of every article, as /v1/stats shows it. Visitors are a HyperLogLog
        # estimate: exact for these small sets unless two visitors share a register. Each
        # article's must be exactly the estimate of its visitors' ids (from the address and
        # User-Agent, as a collector derives them, under the day's salt); the model takes it.
        got = {}
        for k in range(0, len(cls.api_articles), 100):
            chunk = cls.api_articles[k:k + 100]
            r = cls.tallyd.get("/v1/stats?" + "&".join("article=" + quote(a) for a in chunk))
            if r.status != 200:
                raise AssertionError("stats: %r" % (r,))
            for s in r.body["articles"]:
                got[s["article"]] = s
        off = []
        for a in cls.api_articles:
            want = {"article": a, "views": views[a], "shares": sum(shares[a].values()),
                    "shares_by_network": dict(shares[a]), "comments": comments[a],
                    "engaged_seconds": 0, "reads": 0, "words": 0}
            s = got[a]
            if {k: v for k, v in s.items() if k != "visitors"} != want:
                raise AssertionError("stats of %r: got %r, want %r" % (a, s, want))
            estimate = harness.distinct_estimate(cls.redis, harness.reader_ids(
                cls.redis, a, [("127.0.0.1", "%s visitor/%d" % (UA_BASE, i)) for i in visitors[a]],
                now=t0)) if visitors[a] else 0
            if s["visitors"] != estimate:
                raise AssertionError("visitors of %r: %d, but the estimate of its %d visitors' "
                                     "ids is %d" % (a, s["visitors"], len(visitors[a]), estimate))
            if estimate != len(visitors[a]):
                off.append((a, estimate, len(visitors[a])))
        if off:
            sys.stderr.write("test_reports: the HLL estimate differs from the distinct "
                             "User-Agents for %d articles (%r...); the model uses the "
                             "estimate\n"
                             % (len(off), off[:3]))
        m = cls.model
        for a in cls.api_articles:
            for metric, v in (("views", views[a]), ("visitors", got[a]["visitors"]),
                              ("shares", sum(shares[a].values())), ("comments", comments[a])):
                # (Comments that went up and back to 0 may leave a 0 in the day's list, or
                # nothing: the same in every report, and the top lists must leave it out.)
                if v != 0:
                    m.day[(metric, a, cls.work_day)] += v
                    m.hour[(metric, a, cls.work_hour)] += v
                    m.alltime[(metric, a)] += v
        cls.hll_off = off
        cls.comments_back_to_zero = [a for a in cls.api_articles if comments[a] == 0 and any(
            e["article"] == a and e["type"] == "comment" for _, ev in requests for e in ev)]

        # The buckets computed here are the ones tallyd wrote its keys under.
        c = cls.redis
        replies = cls.pipeline([("EXISTS", "tally:{%s}a:%s" % (bucket(a), a))
                                for a in cls.api_articles if views[a] or shares[a] or comments[a]])
        if set(replies) != {1}:
            raise AssertionError("SipHash buckets disagree with tallyd's keys")
        if c.command("EXISTS", "tally:{%s}d:views:%s" % (bucket(TOP_TIE[0]),
                                                          day_stamp(cls.work_day))) != 1:
            raise AssertionError("no day list where the key schema puts it")

    @classmethod
    def pipeline(cls, commands):
        """Send COMMANDS on one connection at once; their replies, in order."""
        client = harness.RespClient(cls.redis.port, timeout=30.0)
        try:
            out = []
            for k in range(0, len(commands), 2000):
                chunk = commands[k:k + 2000]
                client.sock.sendall(b"".join(client.encode(cmd) for cmd in chunk))
                for cmd in chunk:
                    r = client._reply()
                    if isinstance(r, harness.RespError):
                        raise AssertionError("%r: %s" % (cmd, r))
                    out.append(r)
            return out
        finally:
            client.close()

    # ---- The past: seeded straight into Redis ----

    @classmethod
    def seed_past(cls):
        """Days 1..35 back and hours 1..30 back, written as tallyd writes them: the day lists,
        the hour hashes, the all-time lists, the totals hashes and the site totals."""
        rng = cls.rng
        m = cls.model
        now = int(time.time())
        today, this_hour = now // DAY, now // HOUR
        cmds = []

        def add(article, metric, amount, day, hour=None):
            if amount == 0:
                return
            b = bucket(article)
            kp = "tally:{%s}" % b
            cmds.append(("ZINCRBY", "%sd:%s:%s" % (kp, metric, day_stamp(day)), amount, article))
            cmds.append(("ZINCRBY", "%st:%s" % (kp, metric), amount, article))
            cmds.append(("HINCRBY", "%sa:%s" % (kp, article), metric, amount))
            if hour is not None:
                cmds.append(("HINCRBY", "%sh:%s:%s" % (kp, metric, hour_stamp(hour)), article,
                             amount))
                m.hour[(metric, article, hour)] += amount
            if metric in SUMMED:
                cmds.append(("HINCRBY", "%ss:%s" % (kp, day_stamp(day)), metric, amount))
                cmds.append(("HINCRBY", "%ss:all" % kp, metric, amount))
            m.day[(metric, article, day)] += amount
            m.alltime[(metric, article)] += amount

        # The groups: identical within each, in the same order in every period (the
        # boundary days 6/7 and 29/30 of week and month among their days).
        for members, days, v, s, c in ((TOP_TIE, (1, 6, 7, 29, 30, 35), 60, 20, 20),
                                       (cls.ten_tie, (2, 6, 7, 29, 30, 33), 40, 12, 12),
                                       (cls.crowd_tie, (2, 6, 7, 29, 30, 33), 25, 8, 0)):
            for a in members:
                for back in days:
                    for metric, amount in (("views", v), ("visitors", v), ("shares", s),
                                           ("comments", c)):
                        add(a, metric, amount, today - back)
        for a in cls.crowd_mid:
            v, s = rng.randint(26, 39), rng.randint(9, 11)
            for back in (2, 6, 7, 29, 30, 33):
                for metric, amount in (("views", v), ("visitors", v), ("shares", s)):
                    add(a, metric, amount, today - back)
        # Half the others, and articles seen only in the past; comments on 20 of them.
        cls.past_only = ["old/%d" % i for i in range(90)] + [
            "old/caf\u00e9/%d" % i for i in range(5)] + ["old/{%d}" % i for i in range(5)]
        seeded = [a for a in cls.randoms if rng.random() < 0.5] + cls.past_only
        commented = set(rng.sample(seeded, 20))
        for a in seeded:
            running = 0  # comments of all time so far: never below 0
            for back in sorted(rng.sample(range(1, 36), rng.randint(1, 4)), reverse=True):
                v = rng.randint(1, 8)
                c = max(rng.randint(-2, 3), -running) if a in commented else 0
                running += c
                add(a, "views", v, today - back)
                add(a, "visitors", rng.randint(1, v), today - back)
                add(a, "shares", rng.randint(0, 3), today - back)
                add(a, "comments", c, today - back)
        # Hourly points of articles seen only in the past, some outside the last 24 hours.
        cls.hourly = ["hourly/%d" % i for i in range(3)] + ["hourly/{\u00e9}", "hourly/a/b"]
        for a in cls.hourly:
            for back in rng.sample(range(1, 31), 3):
                h = this_hour - back
                for metric in METRICS:
                    add(a, metric, rng.randint(1, 2), h * HOUR // DAY, h)
        # Comments deleted days after they were written: negative days, so negative and zero
        # sums over a period, which its lists must leave out.
        cls.past_only += ["old/deleted-comments", "old/zero-sum"]
        add("old/deleted-comments", "comments", 5, today - 10)
        add("old/deleted-comments", "comments", -4, today - 1)
        add("old/zero-sum", "comments", 3, today - 12)
        add("old/zero-sum", "comments", -3, today - 3)
        cls.pipeline(cmds)
        cls.seeded_day = today

    # ---- Helpers ----

    def designed(self):
        """The model as the workload meant it: today's visitors are the distinct User-Agents
        where the HyperLogLog estimate (its registers depend on the day's random salt) is off
        by one or two, which can split a tie the workload built."""
        d = Model()
        d.day.update(self.model.day)
        d.hour.update(self.model.hour)
        d.alltime.update(self.model.alltime)
        for a, estimate, exact in self.hll_off:
            d.day[("visitors", a, self.work_day)] += exact - estimate
            d.alltime[("visitors", a)] += exact - estimate
        return d

    def stable(self, fn, unit):
        """FN() and the day or hour (per UNIT seconds) it was answered in, asking again if the
        clock crossed one meanwhile."""
        for _ in range(3):
            t0 = time.time()
            r = fn()
            t1 = time.time()
            if int(t0) // unit == int(t1) // unit:
                return r, int(t0) // unit
        raise AssertionError("the clock kept crossing a boundary")

    def assertError(self, path, code, field):
        r = self.tallyd.get(path)
        self.assertEqual(r.status, 400, (path, r))
        self.assertTrue((r.headers.get("Content-Type") or "").startswith("application/json"),
                        (path, r))
        self.assertEqual(set(r.body), {"error", "message"}, (path, r))
        self.assertEqual(r.body["error"], code, (path, r))
        self.assertTrue(r.body["message"].startswith(field + ": "), (path, r))

    def check_tops(self):
        """Every metric, period and limit against the model; returns how many cut-offs fell
        inside a tie."""
        ties = 0
        for metric in METRICS:
            for period in PERIODS:
                for limit in LIMITS:
                    path = "/v1/top?metric=%s&period=%s&limit=%d" % (metric, period, limit)
                    r, today = self.stable(lambda: self.tallyd.get(path), DAY)
                    self.assertEqual(r.status, 200, (path, r))
                    want = {"metric": metric, "period": period,
                            "articles": self.model.top(metric, period, limit, today)}
                    if r.body != want:
                        self.fail_top(path, r.body, want)
                    ranked = self.model.ranked(metric, period, today)
                    if len(ranked) > limit and ranked[limit - 1][1] == ranked[limit][1]:
                        ties += 1
        return ties

    def fail_top(self, path, got, want):
        g, w = got.get("articles", []), want["articles"]
        for i in range(max(len(g), len(w))):
            if i >= len(g) or i >= len(w) or g[i] != w[i]:
                self.fail("GET %s: first difference at rank %d: got %r, want %r "
                          "(got %d entries, want %d)"
                          % (path, i + 1, g[i] if i < len(g) else None,
                             w[i] if i < len(w) else None, len(g), len(w)))
        self.fail("GET %s: got %r, want %r" % (path, got, want))

    def check_series(self, article, metric):
        q = quote(article)
        # Daily, 40 days given by from and to (in three spellings).
        for spell in ("from=%(first)s&to=%(last)s",
                      "from=%(first)sT00:00:00Z&to=%(last)sT23:59:59Z",
                      "from=%(first)sT02:00:00%%2B02:00&to=%(last)sT12:00:00-05:00"):
            def fetch():
                today = int(time.time()) // DAY
                args = {"first": time.strftime("%Y-%m-%d", time.gmtime((today - 39) * DAY)),
                        "last": time.strftime("%Y-%m-%d", time.gmtime(today * DAY))}
                path = "/v1/series/%s?metric=%s&interval=day&%s" % (q, metric, spell % args)
                return path, self.tallyd.get(path)
            (path, r), today = self.stable(fetch, DAY)
            first = today - 39
            values = self.model.series_day(article, metric, first, 40)
            want = {"article": article, "metric": metric, "interval": "day",
                    "points": [{"t": rfc3339((first + i) * DAY), "value": values[i]}
                               for i in range(40)]}
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(r.body, want, path)
        # Hourly, the default: the last 24 hours, ending with this one.
        path = "/v1/series/%s?interval=hour&metric=%s" % (q, metric)
        r, hour = self.stable(lambda: self.tallyd.get(path), HOUR)
        first = hour - 23
        values = self.model.series_hour(article, metric, first, 24)
        want = {"article": article, "metric": metric, "interval": "hour",
                "points": [{"t": rfc3339((first + i) * HOUR), "value": values[i]}
                           for i in range(24)]}
        self.assertEqual(r.status, 200, (path, r))
        self.assertEqual(r.body, want, path)

    def check_totals(self):
        got = {}
        for period in PERIODS:
            path = "/v1/totals?period=%s" % period
            r, today = self.stable(lambda: self.tallyd.get(path), DAY)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(r.body, self.model.totals(period, today), path)
            got[period] = r.body
        return got

    def series_articles(self):
        return [TOP_TIE[1], TOP_TIE[3], TEN_TIE[4], TEN_TIE[6], self.randoms[0],
                self.randoms[1], "old/deleted-comments"] + self.hourly[3:] + ["never/seen"]

    # ---- Tests ----

    def test_model_exercises_what_it_should(self):
        """The workload is what the checks need: ties at every cut of limits 1 and 10 and, but
        for comments, of 100, also at the edge of one bucket's own list; the comments' lists
        shorter than 100 with zeros and negatives to leave out; hourly points inside and
        outside the window."""
        today = int(time.time()) // DAY
        design = self.designed()
        for metric in METRICS:
            for period in PERIODS:
                ranked = design.ranked(metric, period, today)
                with self.subTest(metric=metric, period=period):
                    for limit in (1, 10):
                        self.assertEqual(ranked[limit - 1][1], ranked[limit][1])
                    if metric == "comments":
                        self.assertLess(len(ranked), 100)
                        continue
                    self.assertEqual(ranked[99][1], ranked[100][1])
                    # The crowded bucket's list ties across its 100th entry, and the first of
                    # that tie (the one a bucket answering exactly 100 by ZREVRANGE would
                    # drop) belongs in the merged top 100.
                    crowd = [e for e in ranked if bucket(e[0]) == self.crowd_bucket]
                    edge = crowd[99][1]
                    self.assertEqual(crowd[100][1], edge)
                    self.assertIn(next(e for e in crowd if e[1] == edge), ranked[:100])
        # A merge of buckets that each answered exactly their first 100 (ZREVRANGE puts equal
        # scores in descending id order) would get the views of today wrong.
        short = defaultdict(list)
        for a, c in self.model.scores("views", "day", today).items():
            short[bucket(a)].append((a, c))
        merged = []
        for entries in short.values():
            merged += sorted(entries, key=lambda e: (e[1], id_key(e[0])), reverse=True)[:100]
        merged = sorted(((a, c) for a, c in merged if c > 0),
                        key=lambda e: (-e[1], id_key(e[0])))[:100]
        self.assertNotEqual(merged, self.model.ranked("views", "day", today)[:100])
        # Comments that went back to 0 today, in the day's lists with a score of 0.
        self.assertGreater(len(self.comments_back_to_zero), 0)
        zeros = self.pipeline([("ZCOUNT", "tally:{%02x}d:comments:%s" % (b, day_stamp(today)),
                                "-inf", 0) for b in range(256)])
        self.assertGreater(sum(zeros), 0)
        week = self.model.scores("comments", "week", today)
        self.assertTrue(any(v < 0 for v in week.values()))
        self.assertIn(0, self.model.scores("comments", "month", today).values())
        hours = {h - self.work_hour for (m, a, h) in self.model.hour if a in self.hourly}
        self.assertTrue(any(-23 <= h < 0 for h in hours) and any(h < -23 for h in hours), hours)

    def test_top_matches_the_brute_force(self):
        ties = self.check_tops()
        sys.stderr.write("test_reports: %d of %d top lists cut inside a tie\n"
                         % (ties, len(METRICS) * len(PERIODS) * len(LIMITS)))
        self.assertGreaterEqual(ties, 2 * len(METRICS) * len(PERIODS))
        # The defaults and percent-encoded values.
        r, today = self.stable(lambda: self.tallyd.get("/v1/top"), DAY)
        self.assertEqual(r.body, {"metric": "views", "period": "day",
                                  "articles": self.model.top("views", "day", 10, today)})
        r, today = self.stable(
            lambda: self.tallyd.get("/v1/top?metric=%73hares&period=w%65ek&limit=%37&x=1"), DAY)
        self.assertEqual(r.body, {"metric": "shares", "period": "week",
                                  "articles": self.model.top("shares", "week", 7, today)})

    def test_series_match_the_brute_force(self):
        for article in self.series_articles():
            for metric in METRICS:
                with self.subTest(article=article, metric=metric):
                    self.check_series(article, metric)

    def test_series_defaults_and_edges(self):
        a = TOP_TIE[0]
        # The default: 30 days, daily, ending today.
        r, today = self.stable(lambda: self.tallyd.get("/v1/series/" + quote(a)), DAY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {
            "article": a, "metric": "views", "interval": "day",
            "points": [{"t": rfc3339((today - 29 + i) * DAY), "value": v}
                       for i, v in enumerate(self.model.series_day(a, "views", today - 29, 30))]})
        # Only from: 30 days from it; only to: 30 days up to it.
        first = self.seeded_day - 35
        path = "/v1/series/%s?metric=shares&from=%s" % (
            quote(a), time.strftime("%Y-%m-%d", time.gmtime(first * DAY)))
        r = self.tallyd.get(path)
        self.assertEqual([p["value"] for p in r.body["points"]],
                         self.model.series_day(a, "shares", first, 30), path)
        self.assertEqual(r.body["points"][0]["t"], rfc3339(first * DAY), path)
        last = self.seeded_day - 1
        path = "/v1/series/%s?metric=comments&to=%s" % (quote(a), rfc3339(last * DAY + 5000))
        r = self.tallyd.get(path)
        self.assertEqual([p["value"] for p in r.body["points"]],
                         self.model.series_day(a, "comments", last - 29, 30), path)
        self.assertEqual(r.body["points"][-1]["t"], rfc3339(last * DAY), path)
        # Hourly over given hours, one point per hour.
        h = self.work_hour
        path = "/v1/series/%s?metric=visitors&interval=hour&from=%s&to=%s" % (
            quote(self.hourly[0]), rfc3339((h - 40) * HOUR + 59), rfc3339(h * HOUR + 3599))
        r = self.tallyd.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["points"],
                         [{"t": rfc3339((h - 40 + i) * HOUR), "value": v} for i, v in
                          enumerate(self.model.series_hour(self.hourly[0], "visitors",
                                                           h - 40, 41))], path)

    def test_totals_match_the_brute_force(self):
        self.check_totals()

    def test_bad_parameters_answer_400(self):
        cases = [
            ("/v1/top?metric=likes", "metric"),
            ("/v1/top?metric=", "metric"),
            ("/v1/top?period=year", "period"),
            ("/v1/top?period=Week", "period"),
            ("/v1/top?limit=0", "limit"),
            ("/v1/top?limit=101", "limit"),
            ("/v1/top?limit=abc", "limit"),
            ("/v1/top?limit=-1", "limit"),
            ("/v1/top?limit=1.5", "limit"),
            ("/v1/top?limit=", "limit"),
            ("/v1/top?limit=5&limit=5", "limit"),
            ("/v1/top?metric=views&metric=shares", "metric"),
            ("/v1/top?period=%zz", "period"),
            ("/v1/series/a?metric=likes", "metric"),
            ("/v1/series/a?interval=week", "interval"),
            ("/v1/series/a?interval=", "interval"),
            ("/v1/series/a?interval=day&interval=hour", "interval"),
            ("/v1/series/a?from=garbage", "from"),
            ("/v1/series/a?from=2026-02-30", "from"),
            ("/v1/series/a?from=1969-12-31", "from"),
            ("/v1/series/a?to=2026-13-01", "to"),
            ("/v1/series/a?to=2026-11-27T24:00:00Z", "to"),
            ("/v1/series/a?to=2026-11-27T13:00:00", "to"),
            ("/v1/series/a?from=2026-11-27T13:00:00+02:00", "from"),  # '+' is a space
            ("/v1/series/a?from=2026-12-02&to=2026-12-01", "from"),
            ("/v1/series/a?interval=hour&from=2026-01-01&to=2026-03-01", "from"),
            ("/v1/series/a?from=2020-01-01&to=2026-01-01", "from"),
            # Past 9999 or before 1970 once the offset is applied: nothing to write back.
            ("/v1/series/a?interval=hour&from=9999-12-31T23:00:00-23:00", "from"),
            ("/v1/series/a?interval=hour&from=1970-01-01T00:30:00%2B01:00", "from"),
            ("/v1/series/a?interval=hour&to=9999-12-31T23:59:59-00:01", "to"),
            ("/v1/totals?period=year", "period"),
            ("/v1/totals?period=", "period"),
            ("/v1/totals?period=day&period=day", "period"),
        ]
        for path, field in cases:
            with self.subTest(path=path):
                self.assertError(path, "invalid_parameter", field)
        self.assertError("/v1/series/a%20b", "invalid_article", "article")
        self.assertError("/v1/series/a%00b?metric=views", "invalid_article", "article")
        for path in ("/v1/top?limit=1", "/v1/top?limit=100"):
            r = self.tallyd.get(path)
            self.assertEqual(r.status, 200, (path, r))

    def test_series_refuse_what_retention_deleted(self):
        """Hourly points reach back 8 days from this hour, daily ones 400 days from today; the
        most points (744 hourly, 731 daily) fit from there on."""
        cases = [
            (HOUR, lambda h, d: "/v1/series/a?interval=hour&from=%s" % rfc3339(h - 3600),
             lambda h, d: "from: hourly points are kept 8 days; the earliest is %s" % rfc3339(h)),
            (DAY, lambda h, d: "/v1/series/a?from=%s" % rfc3339(d - DAY),
             lambda h, d: "from: daily points are kept 400 days; the earliest is %s" % rfc3339(d)),
        ]
        for unit, path, message in cases:
            edge = lambda: (int(time.time()) // HOUR * HOUR - 192 * HOUR,
                            int(time.time()) // DAY * DAY - 400 * DAY)
            r, _ = self.stable(lambda: (edge(), self.tallyd.get(path(*edge()))), unit)
            (h, d), r = r
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.body, {"error": "invalid_parameter", "message": message(h, d)})
        for unit, step, n, back in ((HOUR, HOUR, 744, 192), (DAY, DAY, 731, 400)):
            def fetch():
                first = int(time.time()) // step * step - back * step
                return first, self.tallyd.get("/v1/series/a?interval=%s&from=%s&to=%s" % (
                    "hour" if step == HOUR else "day", rfc3339(first),
                    rfc3339(first + (n - 1) * step)))
            (first, r), _ = self.stable(fetch, unit)
            self.assertEqual(r.status, 200, r)
            self.assertEqual([p["t"] for p in r.body["points"]],
                             [rfc3339(first + i * step) for i in range(n)])

    def test_delete_forgets_an_article_everywhere(self):
        victim = TOP_TIE[1]  # "tie/top/B": first of every list
        today = int(time.time()) // DAY
        for metric in METRICS:
            for period in PERIODS:
                first = [e["article"] for e in self.model.top(metric, period, len(TOP_TIE), today)]
                if metric == "visitors":
                    # Visitors are HyperLogLog estimates under a random salt: one member of
                    # the tie may come out one lower now and then, and lose the tie.
                    self.assertIn(victim, first, (metric, period))
                else:
                    self.assertEqual(first[0], victim, (metric, period))
        before = self.check_totals()
        contribution = {p: {m: self.model.scores(m, p, today).get(victim, 0) for m in SUMMED}
                        for p in PERIODS}

        r = self.tallyd.request("DELETE", "/v1/articles/" + quote(victim))
        self.assertEqual(r.status, 401, r)
        r = self.tallyd.request("DELETE", "/v1/articles/" + quote(victim),
                                headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(r.status, 204, r)
        self.model.forget(victim)

        self.assertEqual(self.tallyd.stats(victim), harness.zero_stats(victim))
        after = self.check_totals()
        for period in PERIODS:
            for m in SUMMED:
                self.assertEqual(before[period][m] - after[period][m], contribution[period][m],
                                 (period, m))
                self.assertGreater(contribution[period][m], 0, (period, m))
        self.check_tops()
        for metric in METRICS:
            self.check_series(victim, metric)
            for period in PERIODS:
                r = self.tallyd.get("/v1/top?metric=%s&period=%s&limit=100" % (metric, period))
                self.assertNotIn(victim, [e["article"] for e in r.body["articles"]])
        # The other members of its tie are untouched.
        self.check_series(TOP_TIE[0], "views")
        self.assertEqual(self.redis.keys("tally:{%s}*%s" % (bucket(victim),
                                                           harness.glob_escape(victim))), [])


class SipHashTest(unittest.TestCase):
    """The bucket function above against values pinned in tests/unit/test_keys.c."""

    def test_pinned_buckets(self):
        cases = [("", 212), ("a", 140), ("news/2025/kim-missiles", 122), ("}x", 161),
                 ("{a}b}", 146), ("{", 169), ("}", 5), ("caf\u00e9/\u6587\u7ae0", 38),
                 ("{" * 256, 1), ("x" * 256, 181)]
        for article, want in cases:
            self.assertEqual(bucket(article), "%02x" % want, article)


if __name__ == "__main__":
    unittest.main()
