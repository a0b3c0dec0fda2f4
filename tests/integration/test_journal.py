"""The journal write path (one Redis, --fold-interval > 0): an acknowledged unit is one entry of
its worker's journal (P{00}q:<writer>, listed in the registry P{00}r:journals) until a fold
counts it. What must hold, with exact counts:

  freshness     a read of counts on the collector that acknowledged waits for the folds it
                asks for: POST then GET shows the events at once, whichever worker took
                either; through another collector they show within 1 s (the lag is printed);
  recovery      what a SIGKILLed collector acknowledged stays in its journal and any other
                collector folds it once the journal has been idle for 5 s; under load with
                one of two collectors killed, and with collectors killed again and again
                while folds run, every acknowledged event is counted exactly once;
  exactly once  a fold sent by someone else (FCALL on the journal) beside the collector's
                own folds counts nothing twice, and a fold of an emptied journal counts nothing;
  backpressure  past --journal-max events waiting, writes are refused (503, Retry-After) and
                nothing of them is counted; the refusal starts the fold that makes room, so a
                client waiting Retry-After gets in (the fold timer may be 10 s away);
  wrong type    a fold meeting a key of another type skips those commands only, and says so;
                so does a write counted at once;
  follow reads  a write of an article read on the collector within --follow-reads is counted
                before its 200, not journaled (a read after it waits for nothing), the others
                journaled; so is a POST /v1/events?stats=1, whose 200 carries its articles'
                stats; an Idempotency-Key sent again on the other path counts once;
  DELETE        forgetting an article on one collector while another holds unfolded views
                of it leaves 0, also after that one folds;
  SIGTERM       the collector folds its backlog before it exits.
  steps         a merged fold counts at most a step of merged records (32 while the worker
                keeps up, 128 past a quarter of --journal-max) and stages a larger batch whole
                in chunks (P{00}c:<writer>), each counted by a call of its own: a batch of 500
                records is counted exactly once across 17 calls, and a read on the collector waits
                for its last chunk; a chunk call sent again counts the next chunk or none;
                while chunks wait no other fold of the journal counts anything; the chunks of
                a SIGKILLed collector are counted by another, and a DELETE counts them first;
                a DELETE folds what waits in bounded steps, then the little left with the
                article's removal in one call;
                a batch closes at BATCH_RECORDS merged records and is counted exactly once.
  numbers       each entry carries its journal's count of appends; a merged fold reads only
                its batch's first and last entries and refuses, counting nothing, an entry
                appended behind the writer's back (also when the count of entries between
                them is right), a fold sent again, a journal deleted and made afresh.

Clients that must know each batch's fate send it with an Idempotency-Key and retry it (on the
surviving collector) until a 200: then the count must equal the acknowledged keys' events.
"""

import random
import re
import signal
import sys
import threading
import time
import unittest

import harness
from harness import TOKEN, counts, quote

AUTH = {"Authorization": "Bearer " + TOKEN}
REGISTRY = "tally:{00}r:journals"
JOURNALS = "tally:{00}q:*"
SLOW = ("--fold-interval", "10000")  # no fold by the clock while a test runs
RECLAIM_SECONDS = 6.0    # a journal idle for 5 s is folded by the next look (every second)
DRAIN_SECONDS = 5.0      # SIGTERM to exit, its backlog folded: far below the fold timer
FULL = "too many events waiting for redis; retry later"
BATCH_RECORDS = 10000    # FOLD_BATCH_RECORDS in src/fold_private.h: a batch closes at this many records
STEP_RECORDS = 128       # FOLD_STEP_RECORDS: the most one fold call counts (a worker behind,
                         # a reclaim, a DELETE)
SHORT_STEP_RECORDS = 32  # FOLD_SHORT_STEP_RECORDS: a worker's while it keeps up


def staged_of(journal):
    """The staging list of JOURNAL (see journal.lua): P{00}c:<writer>."""
    return journal.replace("{00}q:", "{00}c:", 1)


def views(article, n):
    return [{"type": "view", "article": article}] * n


def one(article, v):
    return {"article": article, "views": v, "shares": 0, "shares_by_network": {},
            "comments": 0}


def journal_records(text):
    """The records of one journal entry's "a" field (see ack.lua): [(article, views)]."""
    return [(article, v) for _b, article, v in harness.journal_entry_records(text)]


class JournalTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.library = harness.functions_library()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()

    def collector(self, *args, threads=None):
        """A collector on the test's Redis. Every write takes the journal (--follow-reads 0)
        unless ARGS give --follow-reads: a read notes its articles in a table keyed at random,
        and a write of another article sharing a slot with one read lately would be counted
        at once, changing the journal and folds a test counts (about once in a hundred runs
        of a test that writes 700 articles after a read)."""
        if "--follow-reads" not in args:
            args += ("--follow-reads", "0")
        t = harness.Tallyd(self.redis, ["--view-window", "0", "--token", TOKEN,
                                        "--fold-interval", "200"] + list(args),
                           threads=threads)
        self.track(t)
        self.addCleanup(t.close)
        return t.start().wait_ready()

    # ---- what Redis holds ----

    def journals(self):
        return [j.decode() for j in self.redis.command("ZRANGE", REGISTRY, 0, -1)]

    def journal_state(self):
        """(entries, {article: views}) of every journal in Redis, registered or not."""
        entries, held = 0, {}
        for j in self.redis.keys(JOURNALS):
            for _, fields in self.redis.command("XRANGE", j, "-", "+"):
                f = dict(zip(fields[::2], fields[1::2]))
                entries += 1
                for article, v in journal_records(f[b"a"].decode()):
                    held[article] = held.get(article, 0) + v
        return entries, held

    def assertNoJournal(self):
        self.assertEqual(self.redis.keys(JOURNALS), [])
        self.assertEqual(self.redis.command("EXISTS", REGISTRY), 0)
        self.assertEqual(self.redis.keys("tally:{00}n:*"), [])  # trimmed counts go too

    def counted(self, article):
        """The views in the article's totals hash, straight from Redis."""
        return self.redis.article_totals(article).get("views", 0)

    # ---- HTTP ----

    def post(self, client, article, n, headers=None):
        ex = client.post_events(views(article, n), headers)
        self.assertEqual(ex.status, 200, ex)
        self.assertEqual(ex.body, {"accepted": n, "ignored": 0}, ex)

    def stats_views(self, t, article):
        return counts(t.stats(article))["views"]

    def reads(self, model):
        """Every read of counts, as (path, check of its answer against MODEL, article: views,
        read when the check runs)."""
        reads = []
        arts = sorted(model)
        for a in arts:
            reads.append(("/v1/stats/" + quote(a),
                          lambda b, a=a: counts(b) == one(a, model[a])))
        q = "&".join("article=" + quote(a) for a in arts)
        reads.append(("/v1/stats?" + q,
                      lambda b: [counts(x) for x in b["articles"]] ==
                      [one(a, model[a]) for a in arts]))
        reads.append(("/v1/top?metric=views&period=day&limit=100",
                      lambda b: {x["article"]: x["count"] for x in b["articles"]} ==
                      {a: v for a, v in model.items() if v} and
                      [x["count"] for x in b["articles"]] ==
                      sorted((x["count"] for x in b["articles"]), reverse=True)))
        for a in arts:
            reads.append(("/v1/series/%s?metric=views&interval=hour" % quote(a),
                          lambda b, a=a: sum(p["value"] for p in b["points"]) == model[a]))
        reads.append(("/v1/totals?period=day",
                      lambda b: b["views"] == sum(model.values())))
        for a in arts:
            reads.append(("/v1/badge/%s.svg" % quote(a),
                          lambda b, a=a: (b">%d<" % model[a]) in b))
        return reads

    # ---- 1. freshness ----

    def test_reads_on_the_acknowledging_collector_show_it_at_once(self):
        # Every write through the journal, also of the articles just read (see 1b).
        t = self.collector(*SLOW, "--follow-reads", "0", threads=2)
        model = {"f/a": 0, "f/b": 0, "f/c": 0}
        rnd = random.Random(12)
        for path, check in self.reads(model):
            with self.subTest(path=path):
                # Views on new connections until both workers hold unfolded entries.
                before = sum(self.counted(a) for a in model)
                posted = 0
                while posted < 8 or (len(self.journals()) < 2 and posted < 40):
                    a = rnd.choice(sorted(model))
                    with harness.KeepAliveClient(t.port) as c:
                        self.post(c, a, 1)
                    model[a] += 1
                    posted += 1
                self.assertEqual(len(self.journals()), 2,
                                 "both workers hold unfolded entries before the read")
                self.assertEqual(sum(self.counted(a) for a in model), before,
                                 "nothing folded by the clock")
                r = t.get(path)  # on a connection of its own
                self.assertEqual(r.status, 200, r)
                body = r.raw if path.startswith("/v1/badge/") else r.body
                self.assertTrue(check(body), "%s: %r, want %r" % (path, body, model))
                one_article = [a for a in model
                               if path in ("/v1/stats/" + quote(a),
                                           "/v1/badge/%s.svg" % quote(a))]
                if one_article:
                    # A read of one article waits for the entries up to the last holding it:
                    # the journals keep only later ones, of other articles.
                    _, held = self.journal_state()
                    self.assertEqual(held.get(one_article[0], 0), 0, held)
                else:
                    self.assertNoJournal()

    def test_a_read_waits_only_for_its_own_articles(self):
        t = self.collector(*SLOW, threads=2)
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "w/a", 3)
            self.assertEqual(self.stats_views(t, "w/a"), 3)  # folds what waited
            self.assertNoJournal()
            folds = harness.metric(t.metrics(), "tally_folds_total")
            self.post(c, "w/b", 2)
            entries, held = self.journal_state()
            self.assertEqual((entries, held), (1, {"w/b": 2}))
            # Nothing of w/a or w/c waits: their reads fold nothing and answer what is counted.
            for _ in range(5):
                self.assertEqual(self.stats_views(t, "w/a"), 3)
                r = t.get("/v1/stats/w%2Fc")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(counts(r.body)["views"], 0)
                r = t.get("/v1/badge/w%2Fa.svg")
                self.assertEqual(r.status, 200, r)
                self.assertIn(b">3<", r.raw)
            self.assertEqual(harness.metric(t.metrics(), "tally_folds_total"), folds)
            self.assertEqual(self.journal_state(), (1, {"w/b": 2}))
            # A read naming w/b among others waits for it.
            r = t.get("/v1/stats?article=w%2Fa&article=w%2Fb")
            self.assertEqual(r.status, 200, r)
            self.assertEqual([counts(x)["views"] for x in r.body["articles"]], [3, 2])
            self.assertEqual(harness.metric(t.metrics(), "tally_folds_total"), folds + 1)
            self.assertNoJournal()

    def test_a_write_of_unknown_outcome_is_waited_for_by_every_read(self):
        # A unit sent into a stopped Redis is answered 504 (it may have been appended) and
        # fenced when Redis wakes: it made no entry. Until a fold has passed it, the folder
        # cannot tell a fold's trim of the entries before it right, so every read waits for a
        # fold, even of an article nothing was acknowledged for.
        t = self.collector(*SLOW, "--redis-timeout", "300", "--hold", "300", threads=1)
        with harness.KeepAliveClient(t.port, timeout=10) as c:
            self.post(c, "u/a", 1)
            self.redis.pause()
            try:
                ex = c.post_events(views("u/b", 2))
            finally:
                self.redis.resume()
        self.assertEqual((ex.status, ex.body.get("error")), (504, "outcome_unknown"), ex)
        harness.wait_until(lambda: t.get("/readyz").status == 200, 10.0)
        folds = harness.metric(t.metrics(), "tally_folds_total")
        self.assertEqual(counts(t.stats("u/c"))["views"], 0)
        self.assertGreater(harness.metric(t.metrics(), "tally_folds_total"), folds)
        self.assertEqual(self.journal_state(), (0, {}))
        self.assertEqual(counts(t.stats("u/a"))["views"], 1)
        self.assertEqual(counts(t.stats("u/b"))["views"], 0)

    def test_another_collector_shows_it_within_a_second(self):
        a = self.collector(*SLOW, threads=2)
        b = self.collector(threads=2)  # the default --fold-interval
        lags = []
        with harness.KeepAliveClient(b.port) as cb:
            for i in range(1, 8):
                self.post(cb, "g/a", i)
                start = time.monotonic()
                want = i * (i + 1) // 2
                got = harness.eventually(lambda: self.stats_views(a, "g/a"), want)
                lags.append(time.monotonic() - start)
                self.assertEqual(got, want)
        sys.stderr.write("journal: lag of another collector's reads %s s (max %.3f)\n"
                         % (" ".join("%.3f" % x for x in lags), max(lags)))
        self.assertLessEqual(max(lags), harness.FOLD_SECONDS)

    def test_shares_and_comments_are_fresh_too(self):
        """Shares go through the journal, comment deltas are counted at the ack: a read on the
        collector shows both at once, another collector within a second."""
        a = self.collector(*SLOW, "--follow-reads", "0", threads=2)  # all through the journal
        b = self.collector(threads=2)
        body = [{"type": "view", "article": "sc/a"}, {"type": "share", "article": "sc/a",
                                                     "network": "facebook"},
                {"type": "share", "article": "sc/a", "network": "email"},
                {"type": "comment", "article": "sc/a", "delta": 3},
                {"type": "share", "article": "sc/a", "network": "facebook"},
                {"type": "comment", "article": "sc/a", "delta": -1}]
        want = {"article": "sc/a", "views": 0, "shares": 0, "shares_by_network": {},
                "comments": 0}
        for i in range(1, 4):
            with harness.KeepAliveClient(a.port) as c:
                ex = c.post_events(body, AUTH)
            self.assertEqual(ex.status, 200, ex)
            self.assertEqual(ex.body, {"accepted": 6, "ignored": 0}, ex)
            want = {"article": "sc/a", "views": i, "shares": 3 * i,
                    "shares_by_network": {"facebook": 2 * i, "email": i}, "comments": 2 * i}
            self.assertEqual(counts(a.stats("sc/a")), want)
        self.assertEqual(harness.eventually(lambda: counts(b.stats("sc/a")), want), want)

    # ---- 1b. writes that reads follow ----

    def test_a_write_of_an_article_read_lately_is_counted_at_once(self):
        """A read stamps its articles (tally/lately.h): for --follow-reads a write of one of
        them is counted before its 200, not journaled, so a read after it waits for nothing;
        the other writes take the journal. The stamps are the collector's, whichever worker
        thread took the read or takes the write."""
        t = self.collector(*SLOW, "--follow-reads", "400", threads=2)
        at_once = lambda: harness.metric(t.metrics(), "tally_writes_at_once_total")
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "fr/a", 2)
        self.assertEqual(self.journal_state(), (1, {"fr/a": 2}))
        self.assertEqual(self.counted("fr/a"), 0)
        self.assertEqual(self.stats_views(t, "fr/a"), 2)  # folds what waited
        self.assertNoJournal()
        folds = harness.metric(t.metrics(), "tally_folds_total")
        # fr/a was read: its writes are counted at once, on any connection.
        for n in (3, 1):
            with harness.KeepAliveClient(t.port) as c:
                self.post(c, "fr/a", n)
        self.assertEqual(self.counted("fr/a"), 6)
        self.assertEqual(self.journal_state(), (0, {}))
        self.assertEqual(at_once(), 2)
        # An article never read takes the journal; a request with one read article is counted
        # at once whole.
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "fr/b", 1)
            ex = c.post_events(views("fr/c", 2) + views("fr/a", 1))
            self.assertEqual((ex.status, ex.body), (200, {"accepted": 3, "ignored": 0}), ex)
        self.assertEqual(self.journal_state(), (1, {"fr/b": 1}))
        self.assertEqual((self.counted("fr/a"), self.counted("fr/c")), (7, 2))
        self.assertEqual(at_once(), 3)
        # Reads of them wait for no fold; fr/b's does.
        self.assertEqual(self.stats_views(t, "fr/a"), 7)
        self.assertEqual(self.stats_views(t, "fr/c"), 2)
        self.assertEqual(harness.metric(t.metrics(), "tally_folds_total"), folds)
        self.assertEqual(self.stats_views(t, "fr/b"), 1)
        self.assertEqual(harness.metric(t.metrics(), "tally_folds_total"), folds + 1)
        # Past --follow-reads since its last read, fr/a's writes take the journal again.
        time.sleep(0.5)
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "fr/a", 4)
        self.assertEqual(self.journal_state(), (1, {"fr/a": 4}))
        self.assertEqual(self.counted("fr/a"), 7)
        self.assertEqual(at_once(), 3)
        self.assertEqual(self.stats_views(t, "fr/a"), 11)

    def test_a_write_with_stats_1_is_counted_at_once_and_answered_with_them(self):
        """POST /v1/events?stats=1 says a read follows: the write is counted before its 200,
        not journaled, and the 200 carries the stats of its articles, which wait for no fold.
        With --follow-reads 0 it is journaled, and its stats wait for a fold as a read does."""
        t = self.collector(*SLOW, "--follow-reads", "10000", threads=2)
        h = {"Content-Type": "application/json"}
        folds = lambda c: harness.metric(c.metrics(), "tally_folds_total")
        with harness.KeepAliveClient(t.port) as c:
            ex = c.request("POST", "/v1/events?stats=1", views("sq/a", 2) + views("sq/b", 1), h)
        self.assertEqual(ex.status, 200, ex)
        self.assertEqual([(a["article"], a["views"]) for a in ex.body["articles"]],
                         [("sq/a", 2), ("sq/b", 1)])
        self.assertEqual(self.journal_state(), (0, {}))
        self.assertEqual((self.counted("sq/a"), self.counted("sq/b")), (2, 1))
        self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 1)
        self.assertEqual(folds(t), 0)
        # Its articles count as read: the next plain write of one is counted at once too.
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "sq/b", 3)
        self.assertEqual(self.counted("sq/b"), 4)
        self.assertEqual(self.journal_state(), (0, {}))

        f0 = self.collector(*SLOW, "--follow-reads", "0", threads=1)
        with harness.KeepAliveClient(f0.port) as c:
            self.post(c, "sq/c", 1)
            ex = c.request("POST", "/v1/events?stats=1", views("sq/c", 2), h)
        self.assertEqual(ex.status, 200, ex)
        self.assertEqual([(a["article"], a["views"]) for a in ex.body["articles"]],
                         [("sq/c", 3)])
        self.assertEqual(folds(f0), 1)
        self.assertEqual(harness.metric(f0.metrics(), "tally_writes_at_once_total"), 0)
        self.assertNoJournal()

    def test_follow_reads_0_journals_every_write(self):
        t = self.collector(*SLOW, "--follow-reads", "0", threads=1)
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "f0/a", 1)
            self.assertEqual(self.stats_views(t, "f0/a"), 1)
            self.post(c, "f0/a", 2)
        self.assertEqual(self.journal_state(), (1, {"f0/a": 2}))
        self.assertEqual(self.counted("f0/a"), 1)
        self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 0)
        self.assertEqual(self.stats_views(t, "f0/a"), 3)

    def test_a_key_sent_again_on_the_other_path_counts_once(self):
        """Both paths check the same Idempotency-Key markers: a request journaled, then sent
        again when its article was read (counted at once), is answered as the first time and
        counts nothing more; and the other way round."""
        t = self.collector(*SLOW, "--follow-reads", "400", threads=1)
        key = {"Idempotency-Key": "follow-1"}
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "fk/a", 2, key)  # journaled: fk/a was never read
            self.assertEqual(self.journal_state(), (1, {"fk/a": 2}))
            self.assertEqual(self.stats_views(t, "fk/a"), 2)
            self.post(c, "fk/a", 2, key)  # counted at once: replayed
            self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 1)
            self.assertEqual((self.counted("fk/a"), self.journal_state()), (2, (0, {})))
            # Counted at once first, journaled when sent again.
            key2 = {"Idempotency-Key": "follow-2"}
            self.post(c, "fk/a", 3, key2)
            self.assertEqual((self.counted("fk/a"), self.journal_state()), (5, (0, {})))
            time.sleep(0.5)
            self.post(c, "fk/a", 3, key2)
            self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 2)
            self.assertEqual(self.journal_state(), (0, {}))
            self.assertEqual(self.stats_views(t, "fk/a"), 5)
            # Another body under either key is refused on either path.
            for k in (key, key2):
                ex = c.post_events(views("fk/a", 1), k)
                self.assertEqual(ex.status, 422, ex)
            self.assertEqual(self.counted("fk/a"), 5)

    # ---- 2. recovery ----

    def test_a_killed_collectors_journal_is_folded_by_another(self):
        a = self.collector(*SLOW, threads=2)
        model, posts = {}, 0
        rnd = random.Random(2)
        for i in range(24):
            art = "k/%d" % (i % 4)
            n = rnd.randint(1, 30)
            with harness.KeepAliveClient(a.port) as c:
                self.post(c, art, n)
            model[art] = model.get(art, 0) + n
            posts += 1
        acked = time.monotonic()
        a.stop(signal.SIGKILL)
        # Every acknowledged event is in the journals, one entry per POST, none counted yet.
        self.assertEqual(self.journal_state(), (posts, model))
        self.assertEqual(len(self.journals()), 2)
        self.assertEqual(sum(self.redis.command("XLEN", j) for j in self.journals()), posts)
        for art in model:
            self.assertEqual(self.counted(art), 0, art)
        b = self.collector()
        got = harness.eventually(lambda: {x: self.stats_views(b, x) for x in model}, model,
                                 timeout=RECLAIM_SECONDS + 2)
        took = time.monotonic() - acked
        sys.stderr.write("journal: a killed collector's events counted %.2f s after its last "
                         "200\n" % took)
        self.assertEqual(got, model)
        self.assertLessEqual(took, RECLAIM_SECONDS + 1)
        self.assertNoJournal()
        self.assertIn("journal entries of writers gone", b.log())

    def test_a_long_journal_of_a_killed_collector_is_folded_as_fast(self):
        """Thousands of entries left behind are folded by the reclaim that finds them, look
        after look, not a bounded number of entries a second."""
        a = self.collector(*SLOW, threads=1)
        entries = 1600
        model = {}

        def poster(i):
            with harness.KeepAliveClient(a.port) as c:
                for k in range(entries // 4):
                    art = "long/%d" % ((i + k) % 4)
                    ex = c.post_events(views(art, 1))
                    self.assertEqual(ex.status, 200, ex)

        ths = [threading.Thread(target=poster, args=(i,)) for i in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(60)
        model = {"long/%d" % j: entries // 4 for j in range(4)}
        acked = time.monotonic()
        a.stop(signal.SIGKILL)
        left, held = self.journal_state()
        self.assertEqual(held, model)
        b = self.collector(threads=1)
        got = harness.eventually(lambda: {x: self.stats_views(b, x) for x in model}, model,
                                 timeout=RECLAIM_SECONDS + 10)
        took = time.monotonic() - acked
        sys.stderr.write("journal: %d entries of a killed collector counted %.2f s after its "
                         "last 200\n" % (left, took))
        self.assertEqual(got, model)
        self.assertLessEqual(took, RECLAIM_SECONDS + 1)
        self.assertNoJournal()

    def keyed_load(self, name, clients, targets, stop_at, nemesis=None):
        """CLIENTS threads, each on its own article, posting batches of 1..5 views with an
        Idempotency-Key to TARGETS()[i % len] and retrying a batch without a 200 on the
        other targets until one answers 200 (see below for the key). Returns {article: acknowledged views}; fails
        if a key could not be acknowledged or an answer is not one the contract allows."""
        acked, bad, lock = {}, [], threading.Lock()
        tries = {"200": 0, "refused": 0, "indeterminate": 0}

        def client(i):
            article = "%s/%d" % (name, i)
            rnd = random.Random(i)
            seq = 0
            total = 0
            while time.monotonic() < stop_at:
                n = rnd.randint(1, 5)
                deadline = time.monotonic() + 20
                k = i
                key = None
                while True:
                    if key is None:
                        key = "%s-%d-%d" % (name, i, seq)
                        seq += 1
                    ts = targets()
                    port = ts[k % len(ts)].port
                    with harness.KeepAliveClient(port, timeout=10) as c:
                        ex = c.post_events(views(article, n), {"Idempotency-Key": key})
                    if ex.status == 200:
                        with lock:
                            tries["200"] += 1
                            if ex.body != {"accepted": n, "ignored": 0}:
                                bad.append((key, ex))
                        total += n
                        break
                    if ex.kind == "answered" and ex.status not in (503, 504):
                        with lock:
                            bad.append((key, ex))
                        break
                    if time.monotonic() > deadline:
                        with lock:
                            bad.append((key, "never acknowledged", ex))
                        break
                    # Refused (503, no connection, reset unread): not counted, so the retry
                    # is a new request with a key of its own -- a refused batch counted after
                    # all shows as one too many. Indeterminate (504, no answer): same key.
                    refused = ex.kind in ("refused", "reset") or ex.status == 503
                    with lock:
                        tries["refused" if refused else "indeterminate"] += 1
                    if refused:
                        key = None
                    k += 1
                    time.sleep(0.01)
            with lock:
                acked[article] = total

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(clients)]
        for th in threads:
            th.start()
        if nemesis is not None:
            nemesis()
        for th in threads:
            th.join(60)
            self.assertFalse(th.is_alive(), "a load client did not finish")
        self.assertEqual(bad, [])
        sys.stderr.write("journal: %s: %d batches acknowledged; retried %d refused (new key), "
                         "%d indeterminate (same key)\n"
                         % (name, tries["200"], tries["refused"], tries["indeterminate"]))
        return acked

    def test_two_collectors_under_load_one_killed(self):
        a = self.collector(*SLOW, threads=2)
        b = self.collector(threads=2)
        live = [a, b]

        def nemesis():
            time.sleep(1.2)
            self.assertTrue(self.journal_state()[0] > 0, "A holds unfolded entries")
            a.stop(signal.SIGKILL)
            time.sleep(0.3)  # clients still try A: refused connections, new keys
            live.remove(a)

        acked = self.keyed_load("two", 4, lambda: list(live), time.monotonic() + 2.5, nemesis)
        self.assertTrue(all(v > 0 for v in acked.values()), acked)
        # B folds its own entries within its --fold-interval; A's wait for the reclaim.
        time.sleep(0.6)
        self.assertGreater(self.journal_state()[0], 0, "the killed collector left entries")
        got = harness.eventually(lambda: {x: self.stats_views(b, x) for x in acked}, acked,
                                 timeout=RECLAIM_SECONDS + 3)
        self.assertEqual(got, acked)
        self.assertNoJournal()

    def test_collectors_killed_again_and_again_while_folding(self):
        b = self.collector(threads=1)
        current = []
        rounds = 4

        def nemesis():
            rnd = random.Random(7)
            for i in range(rounds):
                a = harness.Tallyd(self.redis, ["--view-window", "0", "--fold-interval", "1"],
                                   threads=2)
                self.track(a)
                self.addCleanup(a.close)
                a.start().wait_ready()
                current[:] = [a, b]
                time.sleep(0.3 + rnd.random() * 0.5)
                a.stop(signal.SIGKILL)
                current[:] = [b]

        current[:] = [b]
        acked = self.keyed_load("again", 4, lambda: list(current),
                                time.monotonic() + 0.5 * rounds + 1.0, nemesis)
        self.assertTrue(all(v > 0 for v in acked.values()), acked)
        got = harness.eventually(lambda: {x: self.stats_views(b, x) for x in acked}, acked,
                                 timeout=RECLAIM_SECONDS + 3)
        self.assertEqual(got, acked)
        self.assertNoJournal()

    # ---- 3. exactly once ----

    def fold_args(self):
        """The arguments the collector passes its folds, read off its reclaim calls (MONITOR):
        (prefix, model)."""
        mon = harness.RespClient(self.redis.port, timeout=5.0)
        try:
            self.assertEqual(mon.command("MONITOR"), "OK")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                line = mon._reply()
                if isinstance(line, str) and '"tally_reclaim_' in line:
                    args = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
                    i = next(k for k, x in enumerate(args) if x.startswith("tally_reclaim_"))
                    return args[i + 3], args[i + 4]
        finally:
            mon.close()
        raise AssertionError("no reclaim call seen within 5 s")

    def test_a_fold_sent_by_someone_else_beside_the_collectors_counts_nothing_twice(self):
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        fold = "tally_fold_" + self.library[len("tally_"):]
        model, rnd = {}, random.Random(3)
        with harness.KeepAliveClient(t.port) as c:
            for i in range(60):
                art = "x/%d" % (i % 5)
                n = rnd.randint(1, 9)
                self.post(c, art, n)
                model[art] = model.get(art, 0) + n
        [journal] = self.journals()

        def fcall(count):
            # No hour and no list of keys that may be new: every key's expiry is set.
            return self.redis.command("FCALL", fold, 3, journal, REGISTRY, staged_of(journal),
                                      prefix, model_arg, count, "", "", 1000)

        # Someone else folds the oldest 10 entries; a resend finds the next ones, not those.
        self.assertEqual(fcall(10)[:2], [10, 50])
        self.assertEqual(fcall(10)[:2], [10, 40])
        partly = sum(self.counted(a) for a in model)
        self.assertGreater(partly, 0)
        self.assertLess(partly, sum(model.values()))
        # Then one entry at a time on a connection of its own, and while it runs the collector's
        # reads make it fold the rest (its own count of what waits is now too high).
        other = harness.RespClient(self.redis.port)
        mine = []

        def race():
            while True:
                r = other.command("FCALL", fold, 3, journal, REGISTRY, staged_of(journal),
                                  prefix, model_arg, 1, "", "", 1000)
                mine.append(r[0])
                if r[1] == 0:
                    return
                time.sleep(0.005)  # leaves the collector's fold something to take

        th = threading.Thread(target=race, daemon=True)
        th.start()
        harness.wait_until(lambda: len(mine) >= 3, message="the racing fold did not start")
        got = {a: self.stats_views(t, a) for a in sorted(model)}
        th.join(10)
        other.close()
        self.assertEqual(got, model)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        # A fold of the emptied journal counts nothing.
        self.assertEqual(fcall(100)[:2], [0, 0])
        self.assertEqual(fcall(100)[:2], [0, 0])
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, model)
        self.assertNoJournal()
        sys.stderr.write("journal: the racing fold took %d of the last 40 entries\n" % sum(mine))
        # The collector knows its entries are folded: its next ones are counted as usual.
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "x/0", 2)
        self.assertEqual(self.stats_views(t, "x/0"), model["x/0"] + 2)

    def journal_entries(self, journal):
        """[(id, {field: value})] of JOURNAL, oldest first."""
        return [(i.decode(), {k.decode(): v.decode() for k, v in zip(f[::2], f[1::2])})
                for i, f in self.redis.command("XRANGE", journal, "-", "+")]

    def test_a_merged_fold_sent_again_counts_nothing(self):
        """merged.lua counts what its caller merged only when the journal starts with exactly
        the entries named: sent again (a lost reply), it counts nothing; the collector whose
        own merge of those entries is then stale folds nothing twice either."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        merged = "tally_merged_" + self.library[len("tally_"):]
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(12):
                art = "m/%d" % (i % 3)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        [journal] = self.journals()
        entries = self.journal_entries(journal)
        self.assertEqual(len(entries), 12)
        # The entries merged by hand as the collector would: per article (one hour here).
        hour = int(entries[0][1]["n"]) // 3600 * 3600
        tags, sums = {}, {}
        for _, f in entries:
            t_ = f["a"].split("\n")
            tags[t_[1]] = t_[0]
            for article, v in journal_records(f["a"]):
                sums[article] = sums.get(article, 0) + v
        self.assertEqual(sums, model)
        args = []
        for article in sorted(sums):
            args += [hour, tags[article], article, sums[article], 0, 0, 0, 0, 0]

        units = {i: f["u"] for i, f in entries}
        numbers = {i: f["s"] for i, f in entries}
        self.assertEqual([numbers[i] for i, _ in entries], [str(k) for k in range(1, 13)])

        def fcall(n, first, last, first_u=None, last_u=None, numbered=True):
            first_s, last_s = (numbers[first], numbers[last]) if numbered else ("", "")
            return self.redis.command("FCALL", merged, 3, journal, REGISTRY, staged_of(journal),
                                      prefix, model_arg, n, first, last, first_u or units[first],
                                      last_u or units[last], first_s, last_s, "", "", 0, *args)

        # Not exactly the oldest entries: nothing counted, nothing trimmed -- told by the
        # numbers of the first and the last entry, and (entries without numbers, as a collector
        # from before numbering appends them) by reading the first n.
        for numbered in (True, False):
            self.assertEqual(fcall(11, entries[0][0], entries[11][0], numbered=numbered),
                             [b"stale"])
            self.assertEqual(fcall(13, entries[0][0], entries[11][0], numbered=numbered),
                             [b"stale"])
            self.assertEqual(fcall(12, entries[1][0], entries[11][0], numbered=numbered),
                             [b"stale"])
            self.assertEqual(fcall(12, entries[0][0], entries[10][0], numbered=numbered),
                             [b"stale"])
            self.assertEqual(fcall(11, entries[1][0], entries[11][0], numbered=numbered),
                             [b"stale"])
            # The right ids, not the right units (an id that came again in a journal deleted
            # and started afresh): nothing either.
            self.assertEqual(len(set(units.values())), 12)
            self.assertEqual(fcall(12, entries[0][0], entries[11][0], first_u=units[entries[1][0]],
                                   numbered=numbered), [b"stale"])
            self.assertEqual(fcall(12, entries[0][0], entries[11][0], last_u="tally:{00}x:other",
                                   numbered=numbered), [b"stale"])
        self.assertEqual({a: self.counted(a) for a in model}, {a: 0 for a in model})
        self.assertEqual(len(self.journal_entries(journal)), 12)
        # Exactly them: counted once, trimmed, the emptied journal gone.
        self.assertEqual(fcall(12, entries[0][0], entries[11][0])[:2], [12, 0])
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        # Sent again: nothing.
        self.assertEqual(fcall(12, entries[0][0], entries[11][0]), [b"stale"])
        self.assertEqual({a: self.counted(a) for a in model}, model)
        # The collector's own fold of the same entries finds them gone and counts nothing.
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, model)
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_stale_total"), 1)
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "m/0", 5)
        self.assertEqual(self.stats_views(t, "m/0"), model["m/0"] + 5)
        self.assertEqual({a: self.counted(a) for a in model},
                         dict(model, **{"m/0": model["m/0"] + 5}))

    def test_an_entry_the_collector_does_not_know_is_folded_from_the_journal(self):
        """An entry the collector has no reply for (an ack whose reply was lost; here one
        written by hand) between entries it merged: the merged fold finds the journal is not
        what it merged and counts nothing; the entries are folded from the journal, each
        once, the unknown one too."""
        t = self.collector(*SLOW, threads=1)
        model = {"u/a": 0, "u/b": 0}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(5):
                self.post(c, "u/a", 2)
            [journal] = self.journals()
            first = self.journal_entries(journal)[0][1]
            self.post(c, "u/b", 1)
            tag_b = self.journal_entries(journal)[-1][1]["a"].split("\n")[0]
            # Written by hand as ack.lua writes: 7 views of u/b.
            self.redis.command("XADD", journal, "*", "n", first["n"], "c", "0", "r", "",
                               "a", "\n".join([tag_b, "u/b", "7", "0", "0", "0", "0", "0"]))
            for i in range(5):
                self.post(c, "u/a", 3)
        model = {"u/a": 25, "u/b": 8}
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, model)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_stale_total"), 1)
        self.assertEqual(harness.metric(m, "tally_fold_entries_total"), 12)
        # Merging goes on for what comes next.
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "u/b", 4)
        self.assertEqual(self.stats_views(t, "u/b"), 12)
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_stale_total"), 1)

    # ---- 4. backpressure ----

    def test_writes_past_journal_max_are_refused_and_not_counted(self):
        t = self.collector(*SLOW, "--journal-max", "1000", "--follow-reads", "0", threads=1)
        with harness.KeepAliveClient(t.port) as c:
            for _ in range(10):
                self.post(c, "bp/a", 100)
            # Full: the journal holds exactly the bound, nothing folded yet.
            self.assertEqual(self.journal_state(), (10, {"bp/a": 1000}))
            self.assertEqual(self.counted("bp/a"), 0)
            ex = c.post_events(views("bp/b", 1))
            self.assertEqual(ex.status, 503, ex)
            self.assertIn(ex.response.headers.get("Retry-After"), ("1", "2"), ex)
            self.assertEqual(ex.body, {"error": "unavailable", "message": FULL}, ex)
            # The refusal started a fold (and a read waits for one): room again.
            self.assertEqual(self.stats_views(t, "bp/a"), 1000)
            self.assertEqual(self.stats_views(t, "bp/b"), 0)
            self.assertNoJournal()
            self.post(c, "bp/b", 100)
            for _ in range(9):
                self.post(c, "bp/a", 100)
            self.assertEqual(self.journal_state(), (10, {"bp/a": 900, "bp/b": 100}))
            ex = c.post_events(views("bp/a", 100))
            self.assertEqual(ex.status, 503, ex)
            self.assertEqual(ex.body, {"error": "unavailable", "message": FULL}, ex)
        self.assertEqual(self.stats_views(t, "bp/a"), 1900)
        self.assertEqual(self.stats_views(t, "bp/b"), 100)
        self.assertNoJournal()

    def test_a_refused_write_gets_in_after_its_retry_after_without_a_read(self):
        """The journal is full: the refusal starts the fold that makes room (the fold timer is
        10 s away), so a client that waits Retry-After gets in without anyone reading."""
        t = self.collector(*SLOW, "--journal-max", "1000", threads=1)
        with harness.KeepAliveClient(t.port) as c:
            for _ in range(10):
                self.post(c, "ra/a", 100)
            ex = c.post_events(views("ra/a", 1))
            self.assertEqual(ex.status, 503, ex)
            retry = int(ex.response.headers.get("Retry-After"))
            time.sleep(retry)
            self.post(c, "ra/a", 1)
        self.assertEqual(self.stats_views(t, "ra/a"), 1001)

    # ---- 5. a key of another type ----

    def test_a_fold_skips_commands_on_a_key_of_another_type_and_counts_the_rest(self):
        t = self.collector(*SLOW, "--follow-reads", "0", threads=1)  # w/x's writes folded
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "w/x", 1)
            self.assertEqual(self.stats_views(t, "w/x"), 1)
            [key] = self.redis.keys("tally:{??}a:w/x")
            self.redis.command("DEL", key)
            self.redis.command("SET", key, "not a hash")
            self.post(c, "w/x", 3)
            ex = c.post_events(views("w/y", 4) + views("w/x", 2) + views("w/z", 1))
            self.assertEqual(ex.status, 200, ex)
            self.post(c, "w/z", 5)
        self.assertEqual(self.stats_views(t, "w/y"), 4)
        self.assertEqual(self.stats_views(t, "w/z"), 6)
        self.assertEqual(self.redis.command("GET", key), b"not a hash")
        self.assertNoJournal()
        log = t.log()
        self.assertRegex(log, r"a fold skipped \d+ commands redis refused, the last with: "
                              r"WRONGTYPE")
        # The hour series of w/x is a key of its own: its commands ran.
        r = t.get("/v1/series/w%2Fx?metric=views&interval=hour")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sum(p["value"] for p in r.body["points"]), 6)

    def test_a_write_counted_at_once_skips_them_too(self):
        """A write counted before its 200 -- of an article read lately, or a comment delta,
        which the ack counts -- skips the commands Redis refuses on such a key too, counts the
        rest and answers 200, as a fold does: a request is answered alike on either path."""
        t = self.collector(*SLOW, "--follow-reads", "400", threads=1)
        skipped = lambda: harness.metric(t.metrics(), "tally_write_skipped_commands_total")
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "wo/x", 1)
            self.assertEqual(self.stats_views(t, "wo/x"), 1)  # folded, and wo/x read
            [key] = self.redis.keys("tally:{??}a:wo/x")
            self.redis.command("DEL", key)
            self.redis.command("SET", key, "not a hash")
            ex = c.post_events(views("wo/x", 2) + views("wo/y", 3))
            self.assertEqual((ex.status, ex.body), (200, {"accepted": 5, "ignored": 0}), ex)
        self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 1)
        self.assertEqual(self.journal_state(), (0, {}))
        self.assertEqual(self.counted("wo/y"), 3)
        self.assertEqual(skipped(), 1)  # wo/x's HINCRBY of its views (its visitor is not new)
        self.assertRegex(t.log(), r"a write skipped 1 commands redis refused, the last with: "
                                  r"WRONGTYPE")
        # Past --follow-reads, wo/x's view is journaled and its comment delta counted by the
        # ack: the HGET and the HSET of its comments skipped.
        time.sleep(0.5)
        with harness.KeepAliveClient(t.port) as c:
            ex = c.post_events([{"type": "comment", "article": "wo/x", "delta": 2}] +
                               views("wo/x", 1), AUTH)
            self.assertEqual((ex.status, ex.body), (200, {"accepted": 2, "ignored": 0}), ex)
        self.assertEqual(self.journal_state(), (1, {"wo/x": 1}))
        self.assertEqual(skipped(), 3)
        self.assertRegex(t.log(), r"a write skipped 2 commands redis refused, the last with: "
                                  r"WRONGTYPE")
        self.assertNotIn("failed part-way", t.log())
        self.assertEqual(self.redis.command("GET", key), b"not a hash")
        self.assertEqual(harness.metric(t.metrics(), "tally_writes_at_once_total"), 1)

    # ---- 6. DELETE ----

    def test_delete_on_one_collector_while_another_holds_unfolded_views(self):
        a = self.collector(*SLOW, threads=2)
        b = self.collector(threads=2)
        with harness.KeepAliveClient(a.port) as c:
            for _ in range(6):
                self.post(c, "d/a", 5)
                self.post(c, "d/b", 2)
        self.assertEqual(self.journal_state(), (12, {"d/a": 30, "d/b": 12}))
        r = b.request("DELETE", "/v1/articles/d%2Fa", headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertNoJournal()
        self.assertEqual(self.stats_views(b, "d/a"), 0)
        self.assertEqual(self.stats_views(b, "d/b"), 12)
        # A folds what it believes waits: nothing is left, nothing comes back.
        self.assertEqual(self.stats_views(a, "d/a"), 0)
        self.assertEqual(self.stats_views(a, "d/b"), 12)
        self.assertEqual(self.redis.article_totals("d/a"), {})
        with harness.KeepAliveClient(a.port) as c:
            self.post(c, "d/a", 1)
        self.assertEqual(self.stats_views(a, "d/a"), 1)
        self.assertEqual(harness.eventually(lambda: self.stats_views(b, "d/a"), 1), 1)

    # ---- 8. a merged fold in steps ----

    def staged_gone(self):
        self.assertEqual(self.redis.keys("tally:{00}c:*"), [])

    def post_distinct(self, client, prefix, first, n, model, views_of):
        """One POST of N events, each a view of its own article PREFIX/<first + i>."""
        events = []
        for i in range(first, first + n):
            art = "%s/%d" % (prefix, i)
            for _ in range(views_of(i)):
                events.append({"type": "view", "article": art})
            model[art] = model.get(art, 0) + views_of(i)
        ex = client.post_events(events)
        self.assertEqual(ex.status, 200, ex)
        self.assertEqual(ex.body, {"accepted": len(events), "ignored": 0}, ex)

    def test_a_batch_larger_than_one_step_is_counted_once_across_steps(self):
        """500 merged records in one batch: staged whole by the merged fold, in 16 chunks
        counted a call each. A read on the collector that acknowledged them sees every
        one (it waits for the last chunk); SIGTERM drains the chunks of the next batch."""
        t = self.collector(*SLOW, threads=1)
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for k in range(5):
                self.post_distinct(c, "st", 100 * k, 50, model, lambda i: 1 + i % 2)
        self.assertEqual(len(model), 250)
        total = sum(model.values())
        self.assertEqual(total, 375)
        self.assertEqual(self.journal_state(), (5, model))
        # Counts on the collector that acknowledged: every staged chunk is counted first.
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["views"], total)
        self.assertEqual(self.stats_views(t, "st/449"), 2)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        m = t.metrics()
        # 250 records, more than a step: all staged, 8 chunks (7 of 32, one of 26).
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), 8)
        self.assertEqual(harness.metric(m, "tally_fold_merged_total"), 1)
        self.assertEqual(harness.metric(m, "tally_folds_total"), 9)
        self.assertEqual(harness.metric(m, "tally_fold_entries_total"), 5)
        self.assertEqual(harness.metric(m, "tally_fold_stale_total"), 0)
        self.assertNoJournal()
        self.staged_gone()
        # 500 distinct records (7 POSTs of 100 views, sb/0..199 viewed twice): 15 chunks of
        # 32 and one of 20 staged.
        with harness.KeepAliveClient(t.port) as c:
            for k in (0, 1, 2, 3, 4, 0, 1):
                self.post_distinct(c, "sb", 100 * k, 100, model, lambda i: 1)
        self.assertEqual(len(model), 750)
        self.assertEqual(model["sb/199"], 2)
        self.assertEqual(model["sb/200"], 1)
        total = sum(model.values())
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.body["views"], total)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), 8 + 16)
        self.assertEqual(harness.metric(m, "tally_fold_merged_total"), 1 + 1)
        self.assertEqual(harness.metric(m, "tally_folds_total"), 9 + 17)
        self.assertEqual(harness.metric(m, "tally_fold_entries_total"), 5 + 7)
        self.assertNoJournal()
        self.staged_gone()
        # The next batch's chunks are drained before the collector exits.
        with harness.KeepAliveClient(t.port) as c:
            for k in (0, 1, 2, 3, 4, 2):
                self.post_distinct(c, "sc", 100 * k, 100, model, lambda i: 1)
        self.assertEqual(t.stop(signal.SIGTERM, timeout=DRAIN_SECONDS), 0)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        self.staged_gone()

    def test_a_worker_behind_counts_in_long_steps(self):
        """A worker whose backlog is past a quarter of --journal-max counts 128 records a call
        (fewer calls: its folds catch up); under it, 32 again. Exactly once either way."""
        t = self.collector(*SLOW, "--journal-max", "1000", threads=1)
        model = {}
        # 300 events waiting (past 250): 300 records staged in 3 chunks of STEP_RECORDS (128,
        # 128, 44).
        with harness.KeepAliveClient(t.port) as c:
            for k in range(3):
                self.post_distinct(c, "lb", 100 * k, 100, model, lambda i: 1)
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.body["views"], 300)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), -(-300 // STEP_RECORDS))
        self.assertEqual(harness.metric(m, "tally_folds_total"), 4)
        # 200 waiting (under 250): 7 chunks of SHORT_STEP_RECORDS (6 of 32, one of 8).
        with harness.KeepAliveClient(t.port) as c:
            for k in range(3, 5):
                self.post_distinct(c, "lb", 100 * k, 100, model, lambda i: 1)
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.body["views"], 500)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), 3 + 7)
        self.assertEqual(harness.metric(m, "tally_folds_total"), 4 + 8)
        self.assertEqual(harness.metric(m, "tally_fold_stale_total"), 0)
        self.assertEqual(self.counted_under("lb/"), model)
        self.assertNoJournal()
        self.staged_gone()

    def counted_under(self, prefix):
        """{article: views} of every article whose id starts with PREFIX, straight from Redis
        (one KEYS, not one per article)."""
        out = {}
        for k in self.redis.keys("tally:{??}a:" + prefix + "*"):
            out[k.decode().split("}a:", 1)[1]] = int(self.redis.command("HGET", k, "views") or 0)
        return out

    def test_a_full_batch_is_folded_at_once_and_counted_exactly_once(self):
        """BATCH_RECORDS distinct articles close a batch: its merged fold starts without a
        read, stages it whole in chunks of SHORT_STEP_RECORDS, counted a call each. What
        comes after is the next batch, folded when a read asks. Every view once, no fold
        stale."""
        t = self.collector(*SLOW, threads=1)
        model = {}
        posts = BATCH_RECORDS // 100

        def chunks(records):
            return -(-records // SHORT_STEP_RECORDS)

        with harness.KeepAliveClient(t.port) as c:
            for k in range(posts):
                self.post_distinct(c, "fb", 100 * k, 100, model, lambda i: 1)
        self.assertEqual(len(model), BATCH_RECORDS)
        # The full batch, folded by itself: all of it counted, every chunk.
        self.assertEqual(harness.eventually(
            lambda: harness.metric(t.metrics(), "tally_fold_chunks_total"),
            chunks(BATCH_RECORDS), timeout=30), chunks(BATCH_RECORDS))
        self.assertEqual(self.counted_under("fb/"), model)
        self.assertNoJournal()
        self.staged_gone()
        # The next batch, twice as many views of 500 of them, folded when a read asks.
        with harness.KeepAliveClient(t.port) as c:
            for k in range(5):
                self.post_distinct(c, "fb", 100 * k, 100, model, lambda i: 1)
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["views"], BATCH_RECORDS + 500)
        self.assertEqual(self.counted_under("fb/"), model)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"),
                         chunks(BATCH_RECORDS) + chunks(500))
        self.assertEqual(harness.metric(m, "tally_folds_total"),
                         2 + chunks(BATCH_RECORDS) + chunks(500))
        self.assertEqual(harness.metric(m, "tally_fold_entries_total"), posts + 5)
        self.assertEqual(harness.metric(m, "tally_fold_stale_total"), 0)
        self.assertNoJournal()
        self.staged_gone()

    def merged_by_hand(self, journal, entries, step):
        """The arguments of a merged fold of ENTRIES (the oldest of JOURNAL) counting at most
        STEP records at once, as the collector builds them (one hour here): the records per
        article, sorted; the first STEP counted by the call, the rest in chunks of STEP."""
        hour = int(entries[0][1]["n"]) // 3600 * 3600
        tags, sums = {}, {}
        for _, f in entries:
            [(article, v)] = journal_records(f["a"])  # one article a POST here
            toks = f["a"].split("\n")
            tags[toks[1]] = toks[0]
            sums[article] = sums.get(article, 0) + v
        records = [[hour, tags[a], a, sums[a], 0, 0, 0, 0, 0] for a in sorted(sums)]
        rest = records[step:]
        chunks = ["\n".join(str(x) for rec in rest[i:i + step] for x in rec)
                  for i in range(0, len(rest), step)]
        return sums, ([len(entries), entries[0][0], entries[-1][0], entries[0][1]["u"],
                       entries[-1][1]["u"], entries[0][1]["s"], entries[-1][1]["s"], "", "",
                       len(chunks)] + chunks +
                      [x for rec in records[:step] for x in rec])

    def fcall(self, name, journal, *args):
        fn = "tally_%s_%s" % (name, self.library[len("tally_"):])
        return self.redis.command("FCALL", fn, 3, journal, REGISTRY, staged_of(journal), *args)

    def test_a_staged_chunk_is_counted_once_whatever_is_sent_again(self):
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(12):
                art = "sg/%d" % (i % 5)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        [journal] = self.journals()
        entries = self.journal_entries(journal)
        sums, args = self.merged_by_hand(journal, entries, 2)
        self.assertEqual(sums, model)
        staged = staged_of(journal)
        # sg/0 and sg/1 counted at once; sg/2 sg/3 and sg/4 staged in two chunks.
        r = self.fcall("merged", journal, prefix, model_arg, *args)
        self.assertEqual([r[0], r[1], r[3], r[4], r[6]], [12, 0, 0, b"", 2])
        counted = {"sg/0": model["sg/0"], "sg/1": model["sg/1"], "sg/2": 0, "sg/3": 0,
                   "sg/4": 0}
        self.assertEqual({a: self.counted(a) for a in model}, counted)
        self.assertEqual(self.redis.command("LLEN", staged), 2)
        # The emptied journal stays registered while its chunks wait.
        self.assertEqual(self.journals(), [journal])
        self.assertEqual(self.redis.command("XLEN", journal), 0)
        # While they wait, no other fold of the journal counts anything.
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args), [b"staged"])
        self.assertEqual(self.fcall("fold", journal, prefix, model_arg, 100, "", "", 1000),
                         [b"staged"])
        self.assertEqual({a: self.counted(a) for a in model}, counted)
        # A chunk a call, removed as it is counted: sent again (a lost reply) it counts the next.
        r = self.fcall("staged", journal, prefix, model_arg, "", "")
        self.assertEqual([r[0], r[1], r[3], r[4], r[6]], [1, 0, 0, b"", 1])
        counted.update({"sg/2": model["sg/2"], "sg/3": model["sg/3"]})
        self.assertEqual({a: self.counted(a) for a in model}, counted)
        self.assertEqual(self.journals(), [journal])
        r = self.fcall("staged", journal, prefix, model_arg, "", "")
        self.assertEqual([r[0], r[1], r[3], r[4], r[6]], [1, 0, 0, b"", 0])
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        self.staged_gone()
        # Again: nothing left to count.
        self.assertEqual(self.fcall("staged", journal, prefix, model_arg, "", ""), [0, 0, b"", 0, b"", b"", 0])
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args), [b"stale"])
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        # The collector's own merged fold of those entries finds them gone: nothing twice.
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, model)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_stale_total"), 1)
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), 0)
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "sg/4", 5)
        self.assertEqual(self.stats_views(t, "sg/4"), model["sg/4"] + 5)

    def test_chunks_a_killed_collector_staged_are_counted_by_another(self):
        """A collector killed between its merged fold and its chunks' calls (the merged fold
        run here by hand over the first 6 of its 12 entries, as it would have): another
        counts the chunks, then the entries left, each exactly once."""
        a = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        model = {}
        with harness.KeepAliveClient(a.port) as c:
            for i in range(12):
                art = "sk/%d" % (i % 6)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        a.stop(signal.SIGKILL)
        [journal] = self.journals()
        entries = self.journal_entries(journal)
        sums, args = self.merged_by_hand(journal, entries[:6], 1)
        r = self.fcall("merged", journal, prefix, model_arg, *args)
        self.assertEqual([r[0], r[1], r[6]], [6, 6, 5])
        self.assertEqual(self.counted("sk/0"), sums["sk/0"])
        self.assertEqual(sum(self.counted(x) for x in model), sums["sk/0"])
        b = self.collector(threads=1)
        got = harness.eventually(lambda: {x: self.counted(x) for x in model}, model,
                                 timeout=RECLAIM_SECONDS + 3)
        self.assertEqual(got, model)
        self.assertEqual({x: self.stats_views(b, x) for x in sorted(model)}, model)
        self.assertNoJournal()
        self.staged_gone()
        m = b.metrics()
        self.assertEqual(harness.metric(m, "tally_journal_reclaimed_chunks_total"), 5)
        self.assertEqual(harness.metric(m, "tally_journal_reclaimed_entries_total"), 6)

    def test_a_fold_from_the_journal_stages_past_its_step(self):
        """fold.lua (what a worker falls back to, and what reclaim runs) counts at most STEP
        merged records too and stages the rest the same way."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(10):
                art = "sf/%d" % (i % 5)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        [journal] = self.journals()
        # Merged in the order of their first entry: sf/0 and sf/1 counted, 3 staged in 2.
        r = self.fcall("fold", journal, prefix, model_arg, 100, "", "", 2)
        self.assertEqual([r[0], r[1], r[3], r[4], r[6]], [10, 0, 0, b"", 2])
        self.assertEqual({a: self.counted(a) for a in model},
                         {"sf/0": model["sf/0"], "sf/1": model["sf/1"], "sf/2": 0, "sf/3": 0,
                          "sf/4": 0})
        self.assertEqual(self.fcall("fold", journal, prefix, model_arg, 100, "", "", 2), [b"staged"])
        self.assertEqual(self.fcall("staged", journal, prefix, model_arg, "", "")[6], 1)
        self.assertEqual(self.fcall("staged", journal, prefix, model_arg, "", "")[6], 0)
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()
        self.staged_gone()
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, model)

    def test_a_killed_collectors_long_batch_is_reclaimed_in_steps(self):
        """300 distinct articles in a killed collector's journal: reclaim counts 128 and stages
        the rest (2 chunks), then counts the chunks a call each; exactly once."""
        a = self.collector(*SLOW, threads=1)
        model = {}
        with harness.KeepAliveClient(a.port) as c:
            for k in range(3):
                self.post_distinct(c, "sr", 100 * k, 100, model, lambda i: 1)
        a.stop(signal.SIGKILL)
        self.assertEqual(self.journal_state(), (3, model))
        b = self.collector(threads=1)
        got = harness.eventually(lambda: {x: self.counted(x) for x in model}, model,
                                 timeout=RECLAIM_SECONDS + 3)
        self.assertEqual(got, model)
        self.assertNoJournal()
        self.staged_gone()
        m = b.metrics()
        self.assertEqual(harness.metric(m, "tally_journal_reclaimed_entries_total"), 3)
        self.assertEqual(harness.metric(m, "tally_journal_reclaimed_chunks_total"), 2)

    def test_delete_counts_the_staged_chunks_first(self):
        """DELETE of an article whose views wait in a staged chunk: they are counted, then
        forgotten: 0, and nothing comes back when the collector folds what it believes waits."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(10):
                art = "sd/%d" % (i % 5)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        [journal] = self.journals()
        _, args = self.merged_by_hand(journal, self.journal_entries(journal), 1)
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args)[6], 4)
        r = t.request("DELETE", "/v1/articles/sd%2F3", headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertNoJournal()
        self.staged_gone()
        want = dict(model, **{"sd/3": 0})
        self.assertEqual({a: self.counted(a) for a in model}, want)
        self.assertEqual({a: self.stats_views(t, a) for a in sorted(model)}, want)
        self.assertEqual(self.redis.article_totals("sd/3"), {})
        with harness.KeepAliveClient(t.port) as c:
            self.post(c, "sd/3", 1)
        self.assertEqual(self.stats_views(t, "sd/3"), 1)

    def write_journal(self, journal, score, units, model):
        """Append UNITS (each a list of (article, views), one entry) to JOURNAL, as ack.lua
        would, registered with SCORE (ms; in the future: no reclaim takes it)."""
        from test_reports import bucket
        now = int(time.time())
        for k, unit in enumerate(units):
            records = []
            for article, v in unit:
                records += [bucket(article), article, str(v), "0", "0", "0", "0", "0"]
                model[article] = model.get(article, 0) + v
            self.redis.command("XADD", journal, "*", "n", str(now), "c", "0", "r", "",
                               "u", "%s:unit:%d" % (journal, k), "a", "\n".join(records))
        self.redis.command("ZADD", REGISTRY, score, journal)

    def test_delete_folds_what_waits_in_bounded_steps(self):
        """Three journals of writers still alive (registered in the future: no reclaim takes
        them) hold 326 entries, 1,000 distinct articles' records in one of them. The DELETE
        folds them in steps -- a call counts one staged chunk, or folds at most 256 entries
        and, past the first, 16 KiB of their records, counting at most 128 merged records and
        staging the rest -- until 16 entries or fewer and no chunk are left; then one call
        folds those and forgets the article. MONITOR shows each call's work; the counts are
        exact."""
        t = self.collector(*SLOW, threads=1)
        victim = "db/victim"
        model = {}
        base = 10 ** 13
        ja, jb, jc = ("tally:{00}q:%016x" % k for k in (0xa, 0xb, 0xc))
        # A: 40 entries of one record each, every 5th the victim's.
        self.write_journal(ja, base + 1, [[(victim if k % 5 == 0 else "db/a%d" % k, 1)]
                                          for k in range(40)], model)
        # B: 20 entries of 50 distinct articles each (and the victim in the first), about
        # 1,150 bytes of records an entry.
        self.write_journal(jb, base + 2, [[("db/b%d" % (50 * k + i), 1 + i % 3)
                                           for i in range(50)] + ([(victim, 2)] if k == 0 else [])
                                          for k in range(20)], model)
        # C: 266 entries of one record, the victim's every 3rd.
        self.write_journal(jc, base + 3, [[(victim if k % 3 == 0 else "db/c%d" % k, 2)]
                                          for k in range(266)], model)
        self.assertEqual(self.journal_state()[0], 326)
        self.assertEqual(model[victim], 8 + 2 + 178)
        drain = "tally_drain_" + self.library[len("tally_"):]
        forget = "tally_forget_" + self.library[len("tally_"):]
        mon = harness.RespClient(self.redis.port, timeout=10.0)
        self.addCleanup(mon.close)
        self.assertEqual(mon.command("MONITOR"), "OK")
        self.redis.command("ECHO", "delete-begins")
        r = t.request("DELETE", "/v1/articles/" + quote(victim), headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.redis.command("ECHO", "delete-ends")
        # Each top-level FCALL with what it ran: the entries it folded (its last XRANGE: the
        # ones before measure, 16 at a time), the records it counted (HINCRBY of an article's
        # views), the chunks it counted (LPOP).
        calls, current, inside = [], None, False
        while True:
            line = mon._reply()
            self.assertIsInstance(line, str)
            if line.endswith('"delete-begins"'):
                inside = True
            elif line.endswith('"delete-ends"'):
                break
            elif inside and " [0 lua] " not in line:
                args = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
                current = None
                if args[0].lower() == "fcall" and args[1] in (drain, forget):
                    current = {"fn": args[1], "xrange": [], "counted": 0, "lpop": 0}
                    calls.append(current)
            elif inside and current is not None:
                args = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
                if args[0] == "XRANGE":
                    current["xrange"].append(int(args[5]) if len(args) > 5 else None)
                elif args[0] == "HINCRBY" and "}a:" in args[1] and args[2] == "views":
                    current["counted"] += 1
                elif args[0] == "LPOP":
                    current["lpop"] += 1
        # A: its 40 entries in one step (the victim's 8 views merged into one record); B: 14
        # entries (16,001 bytes; a 15th would pass 16 KiB), 701 records: 128 counted, 5 chunks
        # staged, counted a call each; then its 6 last, 300 records: 128 and 2 chunks; C:
        # 256 entries, 171 records: 128 and a chunk; 10 entries left: the last call.
        self.assertEqual([c["fn"] for c in calls], [drain] * 12 + [forget], calls)
        steps = calls[:12]
        self.assertEqual([c["xrange"][-1] if c["xrange"] else 0 for c in steps],
                         [40, 14, 0, 0, 0, 0, 0, 6, 0, 0, 256, 0], steps)
        self.assertEqual([c["counted"] for c in steps],
                         [33, 128, 128, 128, 128, 128, 61, 128, 128, 44, 128, 43])
        self.assertEqual([c["lpop"] for c in steps], [0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1])
        for c in steps:  # the entries measured before the fold, 16 at a time
            self.assertTrue(all(n <= 16 for n in c["xrange"][:-1]), c)
        # The last call reads every journal left (XRANGE without COUNT): C's last 10 entries,
        # 7 others' records and the victim's 3 merged.
        self.assertEqual(calls[12]["xrange"], [None], calls[12])
        self.assertEqual(calls[12]["counted"], 8)
        self.assertEqual(harness.metric(t.metrics(), "tally_forget_steps_total"), 12)
        self.assertNoJournal()
        self.staged_gone()
        want = dict(model, **{victim: 0})
        self.assertEqual({a: self.counted(a) for a in model}, want)
        self.assertEqual(self.redis.article_totals(victim), {})
        r = t.get("/v1/totals?period=day")
        self.assertEqual(r.body["views"], sum(model.values()) - model[victim])
        self.assertEqual(self.stats_views(t, victim), 0)

    # ---- 9. the merged fold's check: two entries read, whatever the batch ----

    def xinfo_added(self, journal):
        """Redis's count of the entries JOURNAL has taken since it was made (entries-added)."""
        info = self.redis.command("XINFO", "STREAM", journal)
        return int(dict(zip(info[::2], info[1::2]))[b"entries-added"])

    def test_entries_are_numbered_by_their_journals_count_of_appends(self):
        """ack.lua numbers each entry with the count of the journal's appends (its length and
        the entries folds trimmed, P{00}n:<writer>): 1, 2, ... whoever appended (an entry
        written by hand takes a number too, whatever it claims); trims keep the count; a
        journal deleted and made afresh starts again at 1. The count is Redis's own
        (entries-added)."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        with harness.KeepAliveClient(t.port) as c:
            for i in range(4):
                self.post(c, "n/a", 1)
            [journal] = self.journals()
            self.assertEqual([f["s"] for _, f in self.journal_entries(journal)],
                             ["1", "2", "3", "4"])
            self.assertEqual(self.xinfo_added(journal), 4)
            # One by hand, claiming number 2: Redis counts it as the 5th all the same.
            tag = self.journal_entries(journal)[0][1]["a"].split("\n")[0]
            self.redis.command("XADD", journal, "*", "n", str(int(time.time())), "c", "0",
                               "r", "", "u", "tally:{00}x:by-hand", "s", "2",
                               "a", "\n".join([tag, "n/a", "1", "0", "0", "0", "0", "0"]))
            self.post(c, "n/a", 1)
            self.assertEqual([f["s"] for _, f in self.journal_entries(journal)],
                             ["1", "2", "3", "4", "2", "6"])
            # A fold of the oldest 3 (by hand): the numbers stay as they are.
            self.assertEqual(self.fcall("fold", journal, prefix, model_arg, 3, "", "", 1000)[:2],
                             [3, 3])
            trimmed = journal.replace("{00}q:", "{00}n:", 1)
            self.assertEqual(self.redis.command("HGET", trimmed, "n"), b"3")
            self.post(c, "n/a", 1)
            self.assertEqual([f["s"] for _, f in self.journal_entries(journal)],
                             ["4", "2", "6", "7"])
            self.assertEqual(self.xinfo_added(journal), 7)
            # Emptied, the journal is deleted: the next entry is number 1 of a new one.
            self.assertEqual(self.fcall("fold", journal, prefix, model_arg, 100, "", "", 1000)[:2],
                             [4, 0])
            self.assertNoJournal()
            self.post(c, "n/a", 1)
            self.assertEqual([f["s"] for _, f in self.journal_entries(journal)], ["1"])
        self.assertEqual(self.stats_views(t, "n/a"), 8)  # 7 POSTs, 1 by hand
        self.assertEqual(self.counted("n/a"), 8)
        self.assertNoJournal()

    def test_a_merged_fold_refuses_an_entry_it_does_not_know_whatever_the_count(self):
        """An entry appended behind the writer's back between the first and the last of its
        batch: the merged fold, naming the writer's 12 entries, counts nothing -- the numbers
        of its first and last entry are 13 apart, not 12. With one of the writer's entries
        removed as well (XDEL: nothing in tally does it), so that the journal holds exactly 12
        entries from the first to the last, the numbers still tell (reading the first 12 and
        comparing the last would not). The journal is then folded from its entries: each
        counted once, the unknown one too, the removed one not."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        model = {}
        with harness.KeepAliveClient(t.port) as c:
            for i in range(12):
                if i == 6:
                    [journal] = self.journals()
                    last = self.journal_entries(journal)[-1][1]
                    tag = last["a"].split("\n")[0]
                    # As ack.lua writes, with a unit and a number of its own making.
                    self.redis.command("XADD", journal, "*", "n", last["n"], "c", "0", "r", "",
                                       "u", "tally:{00}x:by-hand", "s", last["s"],
                                       "a", "\n".join([tag, "k/x", "7", "0", "0", "0", "0",
                                                       "0"]))
                art = "k/%d" % (i % 4)
                self.post(c, art, i + 1)
                model[art] = model.get(art, 0) + i + 1
        self.assertEqual(t.stop(signal.SIGKILL), -signal.SIGKILL)
        entries = self.journal_entries(journal)
        self.assertEqual(len(entries), 13)
        known = entries[:6] + entries[7:]
        self.assertEqual([int(f["s"]) for _, f in known], list(range(1, 7)) + list(range(8, 14)))
        _, args = self.merged_by_hand(journal, known, 1000)
        self.assertEqual(args[:3], [12, known[0][0], known[-1][0]])
        self.assertEqual(args[5:7], ["1", "13"])
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args), [b"stale"])
        # Numbers that are not the entries' own: refused before their difference is looked at.
        for first_s, last_s in (("2", "13"), ("1", "12"), ("", "13"), ("1", "")):
            if "" in (first_s, last_s):
                continue  # "" is the check of entries without numbers: see below
            self.assertEqual(self.fcall("merged", journal, prefix, model_arg,
                                        *(args[:5] + [first_s, last_s] + args[7:])),
                             [b"stale"])
        # Without numbers (entries of a collector from before numbering) the first 12 are read:
        # the 12th is not the last named.
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg,
                                    *(args[:5] + ["", ""] + args[7:])), [b"stale"])
        # The right count: one of the writer's entries removed, 12 from the first to the last.
        removed = known[3]
        self.assertEqual(self.redis.command("XDEL", journal, removed[0]), 1)
        self.assertEqual(len(self.redis.command("XRANGE", journal, known[0][0], known[-1][0])),
                         12)
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args), [b"stale"])
        self.assertEqual({a: self.counted(a) for a in list(model) + ["k/x"]},
                         {a: 0 for a in list(model) + ["k/x"]})
        self.assertEqual(len(self.journal_entries(journal)), 12)
        # Folded from the journal: what is in it, once.
        self.assertEqual(self.fcall("fold", journal, prefix, model_arg, 100, "", "", 1000)[:2],
                         [12, 0])
        want = dict(model, **{"k/x": 7})
        [(gone_article, gone_views)] = journal_records(removed[1]["a"])
        want[gone_article] -= gone_views
        self.assertEqual({a: self.counted(a) for a in want}, want)
        self.assertNoJournal()

    def test_a_merged_fold_refuses_a_journal_deleted_and_made_afresh(self):
        """A DELETE folds every journal and deletes it; the writer's next entries make it
        afresh, numbered from 1 again. A merged fold of the entries before the DELETE, sent
        now (a collector that had not heard of it), names numbers 1..3 again, and the count
        is right: their ids and units are not the journal's, and it counts nothing."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        with harness.KeepAliveClient(t.port) as c:
            for i in range(3):
                self.post(c, "dl/a", 1)
            [journal] = self.journals()
            before = self.journal_entries(journal)
            _, args = self.merged_by_hand(journal, before, 1000)
            self.assertEqual(args[5:7], ["1", "3"])
            r = t.request("DELETE", "/v1/articles/dl%2Fa", headers=AUTH)
            self.assertEqual(r.status, 204, r)
            self.assertNoJournal()
            for i in range(3):
                self.post(c, "dl/b", 2)
        after = self.journal_entries(journal)
        self.assertEqual([f["s"] for _, f in after], ["1", "2", "3"])
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *args), [b"stale"])
        # The old ids with the new units (an id that came again): refused on the ids.
        mixed = args[:3] + [after[0][1]["u"], after[-1][1]["u"]] + args[5:]
        self.assertEqual(self.fcall("merged", journal, prefix, model_arg, *mixed), [b"stale"])
        self.assertEqual(self.counted("dl/a"), 0)
        self.assertEqual(self.counted("dl/b"), 0)
        self.assertEqual(len(self.journal_entries(journal)), 3)
        # The collector's own batch took all 6 entries (it does not hear of the DELETE): its
        # first is gone, so it is refused too, and the 3 entries left are folded from the
        # journal, once.
        self.assertEqual(self.stats_views(t, "dl/b"), 6)
        self.assertEqual(self.stats_views(t, "dl/a"), 0)
        self.assertEqual(self.counted("dl/b"), 6)
        self.assertNoJournal()
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_stale_total"), 1)

    # ---- 7. one call, many records of a bucket ----
    # What a fold's call counts for records sharing their bucket's keys, to the last unit: an
    # article in two hours of one call, values past 2^31 and at 2^53, keys of another type.

    def fold_by_hand(self, entries):
        """Append ENTRIES [(unix time, [record...])...], each record a list of count.lua's
        tokens, to a journal of their own and fold it with fold.lua in one call (no hour, no
        list of keys that may be new). Returns the fold's answer."""
        t = self.collector(*SLOW, threads=1)
        prefix, model_arg = self.fold_args()
        t.close()
        journal = "tally:{00}q:by-hand"
        for i, (now, records) in enumerate(entries):
            self.redis.command("XADD", journal, "*", "n", now, "c", "0", "r", "",
                               "u", "by-hand-%d" % i, "s", i + 1,
                               "a", "\n".join("\n".join(str(x) for x in r) for r in records))
        fold = "tally_fold_" + self.library[len("tally_"):]
        return self.redis.command("FCALL", fold, 3, journal, REGISTRY, staged_of(journal),
                                  prefix, model_arg, 100, "", "", 1000)

    @staticmethod
    def record(tag, article, views, visitors=(), shares=()):
        r = [tag, article, views, len(visitors)] + ["%016x" % v for v in visitors]
        r += [len(shares)] + [x for pair in shares for x in pair]
        return r + [0, 0, 0]

    def hget(self, key, field):
        v = self.redis.command("HGET", key, field)
        return v and int(v)

    def zscore(self, key, member):
        v = self.redis.command("ZSCORE", key, member)
        return v and float(v)

    def test_an_article_in_two_hours_of_one_call(self):
        """Article x in two hours of one fold call, beside y and z in the same bucket: each
        hour gets the visitors the day's estimate grew by in it, and values past 2^31 and at
        2^53 come out as Redis's commands leave them (scores are doubles: 1 added twice to 2^53
        is lost both times)."""
        at = 1800000000  # 2027-01-15 08:00 UTC
        kp, day, h8, h9 = "tally:{5e}", "20270115", "2027011508", "2027011509"
        # Before: a score past 2^31 with a fraction, one at 2^53 (1 added twice is lost both
        # times, where 2 added once would not be), hash values past 2^31 and past 2^53, and
        # z's distinct-visitor score above what its estimate will count.
        self.redis.command("ZADD", kp + "d:views:" + day, "3000000000.25", "y")
        self.redis.command("ZADD", kp + "t:views", str(2 ** 53), "x")
        self.redis.command("HSET", kp + "h:views:" + h8, "y", "3000000000",
                           "z", str(2 ** 53 + 10))
        self.redis.command("HSET", kp + "s:all", "views", str(2 ** 62), "shares", "7")
        self.redis.command("ZADD", kp + "d:visitors:" + day, "5", "z")
        r = self.fold_by_hand([
            (at, [self.record("5e", "x", 1, [1, 2]), self.record("5e", "y", 1, [9],
                                                                  [("twitter", 2)]),
                  self.record("5e", "z", 1, [5])]),
            (at + 3600, [self.record("5e", "x", 1, [2, 3]), self.record("5e", "y", 0, [9])]),
        ])
        self.assertEqual([r[0], r[1], r[3], r[4]], [2, 0, 0, b""], r)
        # Visitors: x grew by 2 in 08 (1, 2), by 1 in 09 (3); y by 1 in 08, nothing in 09 (9
        # again); z not at all (its estimate, 1, is below its score, 5).
        self.assertEqual(self.hget(kp + "h:visitors:" + h8, "x"), 2)
        self.assertEqual(self.hget(kp + "h:visitors:" + h9, "x"), 1)
        self.assertEqual(self.hget(kp + "h:visitors:" + h8, "y"), 1)
        self.assertEqual(self.redis.command("HEXISTS", kp + "h:visitors:" + h9, "y"), 0)
        self.assertEqual(self.redis.command("HEXISTS", kp + "h:visitors:" + h8, "z"), 0)
        self.assertEqual([self.zscore(kp + "d:visitors:" + day, a) for a in "xyz"],
                         [3.0, 1.0, 5.0])
        self.assertEqual([self.zscore(kp + "t:visitors", a) for a in "xyz"], [3.0, 1.0, None])
        self.assertEqual([self.hget(kp + "a:" + a, "visitors") for a in "xyz"], [3, 1, None])
        # Views.
        self.assertEqual([self.hget(kp + "h:views:" + h8, a) for a in "xyz"],
                         [1, 3000000001, 2 ** 53 + 11])
        self.assertEqual(self.hget(kp + "h:views:" + h9, "x"), 1)
        self.assertEqual(self.redis.command("ZSCORE", kp + "d:views:" + day, "y"),
                         b"3000000001.25")
        self.assertEqual([self.zscore(kp + "d:views:" + day, a) for a in "xz"], [2.0, 1.0])
        # 2^53 + 1 + 1 in doubles, as ZINCRBY adds them: each 1 is lost.
        self.assertEqual(self.redis.command("ZSCORE", kp + "t:views", "x"), b"9007199254740992")
        self.assertEqual([self.hget(kp + "a:" + a, "views") for a in "xyz"], [2, 1, 1])
        # Shares, and the site totals (views 4, shares 2; distinct visitors are no sum).
        self.assertEqual(self.hget(kp + "a:y", "share:twitter"), 2)
        self.assertEqual(self.redis.command("HGETALL", kp + "s:" + day),
                         [b"views", b"4", b"shares", b"2"])
        self.assertEqual(self.redis.command("HGETALL", kp + "s:all"),
                         [b"views", str(2 ** 62 + 4).encode(), b"shares", b"9"])
        # Every key written got its expiry.
        for k in ("d:views:" + day, "h:views:" + h8, "h:views:" + h9, "d:visitors:" + day,
                  "h:visitors:" + h8, "h:visitors:" + h9, "s:" + day):
            self.assertGreater(self.redis.command("TTL", kp + k), 0, k)
        self.assertNoJournal()

    def test_a_call_skips_two_keys_of_another_type_and_writes_the_rest(self):
        """Four articles of one bucket in one call: the day's sorted set and the hour's hash of
        views are strings, each command on them is refused and skipped (two per record), and
        said; every other key is written."""
        at = 1800000000
        kp, day, h8 = "tally:{5e}", "20270115", "2027011508"
        self.redis.command("SET", kp + "d:views:" + day, "not a sorted set")
        self.redis.command("SET", kp + "h:views:" + h8, "not a hash")
        r = self.fold_by_hand([(at, [self.record("5e", a, n) for a, n in
                                     (("p", 1), ("q", 2), ("r", 3), ("s", 1), ("p", 4))])])
        self.assertEqual(r[0], 1, r)
        self.assertEqual(r[3], 8, r)
        self.assertRegex(r[4].decode(), "^WRONGTYPE")
        self.assertEqual(self.redis.command("GET", kp + "d:views:" + day), b"not a sorted set")
        self.assertEqual(self.redis.command("GET", kp + "h:views:" + h8), b"not a hash")
        self.assertEqual([self.zscore(kp + "t:views", a) for a in "pqrs"], [5.0, 2.0, 3.0, 1.0])
        self.assertEqual([self.hget(kp + "a:" + a, "views") for a in "pqrs"], [5, 2, 3, 1])
        self.assertEqual(self.hget(kp + "s:" + day, "views"), 11)
        self.assertNoJournal()

    # ---- 8. SIGTERM ----

    def test_sigterm_folds_the_backlog_before_exit(self):
        t = self.collector(*SLOW, threads=2)
        model = {}
        for i in range(16):
            art = "s/%d" % (i % 3)
            with harness.KeepAliveClient(t.port) as c:
                self.post(c, art, i + 1)
            model[art] = model.get(art, 0) + i + 1
        self.assertEqual(self.journal_state()[1], model)
        # Its fold timer would fire 10 s after the first view: the drain must not wait for it.
        start = time.monotonic()
        self.assertEqual(t.stop(signal.SIGTERM, timeout=DRAIN_SECONDS), 0)
        sys.stderr.write("journal: SIGTERM to exit %.3f s\n" % (time.monotonic() - start))
        self.assertEqual({a: self.counted(a) for a in model}, model)
        self.assertNoJournal()


if __name__ == "__main__":
    unittest.main()
