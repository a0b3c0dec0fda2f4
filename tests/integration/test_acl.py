"""Least privilege in Redis: the whole daemon runs as deploy/redis.conf's "tally" user, which
may call tally's functions and the few commands tallyd sends, and nothing else (no EVAL, no
other database, no FLUSHALL, CONFIG or KEYS, no loading functions); the functions are loaded
by an admin step, and without them tallyd is not ready and says why, once."""

import os
import re
import time
import unittest
from urllib.parse import quote

import harness
from harness import TOKEN

AUTH = {"Authorization": "Bearer " + TOKEN}
PASSWORD = "acl-test-password-0123"
# The model as tallyd tells the scripts (include/tally/model.h, tally_model_arg()).
MODEL = "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+"
REDIS_CONF = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "redis.conf")


def tally_user_rules():
    """The rules of redis.conf's tally user, its password replaced by PASSWORD."""
    with open(REDIS_CONF) as f:
        line = next(l for l in f if l.startswith("user tally "))
    rules = line.split()[2:]
    return [">" + PASSWORD if r.startswith(">") else r for r in rules]


class AclTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()  # its default user is the admin: it loaded them
        cls.redis.command("ACL", "SETUSER", "tally", "reset", *tally_user_rules())
        cls.url = "redis://tally:%s@127.0.0.1:%d/0" % (PASSWORD, cls.redis.port)
        # The journal path: its acks, folds and reclaims use every command the direct path
        # uses and the stream commands besides.
        cls.tallyd = harness.Tallyd(cls.redis, ["--redis", cls.url, "--token", TOKEN,
                                                "--view-window", "0", "--fold-interval", "200"])
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
        self.redis.flushall()
        self.redis.command("ACL", "LOG", "RESET")
        harness.wait_until(lambda: self.tallyd.get("/readyz").status == 200, 10.0,
                           message="tallyd ready as the tally user")

    def as_tally(self):
        c = harness.RespClient(self.redis.port)
        self.assertEqual(c.command("AUTH", "tally", PASSWORD), "OK")
        return c

    def test_the_whole_daemon_runs_as_the_tally_user(self):
        t = self.tallyd
        a, q = "acl/one", quote("acl/one", safe="")
        events = [{"type": "view", "article": a}, {"type": "view", "article": a},
                  {"type": "share", "article": a, "network": "twitter"}]
        self.assertEqual(t.post_events(events).body, {"accepted": 3, "ignored": 0})
        self.assertEqual(t.post_events({"type": "comment", "article": a, "delta": 2}, AUTH).status,
                         200)
        self.assertEqual(t.get("/v1/pixel.gif?type=view&article=" + q).headers["Tally-Outcome"],
                         "counted")
        st = t.stats(a)
        self.assertEqual((st["views"], st["shares"], st["comments"]), (3, 1, 2))
        self.assertEqual(t.get("/v1/stats?article=%s&article=b" % q).status, 200)
        for period in ("day", "week", "month", "all"):
            r = t.get("/v1/top?period=" + period)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body["articles"], [{"article": a, "count": 3}], period)
        for period in ("day", "week", "month"):
            self.assertEqual(t.get("/v1/totals?period=" + period).body["views"], 3, period)
        for interval in ("hour", "day"):
            r = t.get("/v1/series/%s?interval=%s" % (q, interval))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(sum(p["value"] for p in r.body["points"]), 3)
        self.assertEqual(t.get("/v1/badge/%s.svg" % q).status, 200)
        self.assertEqual(t.request("DELETE", "/v1/articles/" + q, headers=AUTH).status, 204)
        self.assertEqual(t.stats(a)["views"], 0)
        r = t.request("POST", "/v1/import", b'{"article":"acl/one","views":4,"date":"2025-01-02"}\n',
                      {"Idempotency-Key": "acl", "Content-Type": "application/x-ndjson", **AUTH})
        self.assertEqual((r.status, r.body), (200, {"imported": 1}), r)
        self.assertEqual(t.stats(a)["views"], 4)
        # The week's and month's parts kept before are computed again after both.
        self.assertEqual(t.get("/v1/top?period=month").body["articles"], [])
        self.assertEqual(t.get("/v1/totals?period=month").body["views"], 0)
        self.assertEqual([x["key"] for x in t.get("/v1/imports", AUTH).body["imports"]], ["acl"])
        self.assertEqual(t.get("/readyz").status, 200)
        # Nothing of it was refused, and every key is under the prefix.
        self.assertEqual(self.redis.command("ACL", "LOG"), [])
        self.assertEqual([k for k in self.redis.keys() if not k.startswith(b"tally:")], [])
        # The writes went through the journals, and no fold or write counted at once skipped
        # a command (both skip what Redis refuses rather than stop half-way: the ACL log and
        # these must all be clean).
        m = t.metrics()
        self.assertGreater(harness.metric(m, "tally_fold_entries_total"), 0)
        self.assertEqual(harness.metric(m, "tally_fold_skipped_commands_total"), 0)
        self.assertEqual(harness.metric(m, "tally_write_skipped_commands_total"), 0)
        self.assertEqual(harness.metric(m, "tally_fold_errors_total"), 0)

    def test_a_journal_of_a_collector_killed_is_folded_as_the_tally_user(self):
        """The folding of a journal whose writer is gone (reclaim.lua), as the tally user: a
        collector killed before it folds leaves its journal, and the class's collector counts
        it within 5 s of its last entry and a second."""
        a = "acl/reclaimed"
        gone = self.track(harness.Tallyd(self.redis, ["--redis", self.url, "--token", TOKEN,
                                                      "--view-window", "0",
                                                      "--fold-interval", "10000"], threads=1))
        self.addCleanup(gone.close)
        gone.start()
        self.assertEqual(gone.post_events([{"type": "view", "article": a},
                                           {"type": "view", "article": a},
                                           {"type": "share", "article": a,
                                            "network": "email"}]).body,
                         {"accepted": 3, "ignored": 0})
        gone.kill()
        self.assertEqual(len(self.redis.keys("tally:{00}q:*")), 1)
        before = harness.metric(self.tallyd.metrics(), "tally_journal_reclaimed_entries_total")

        def counts():
            st = self.tallyd.stats(a)
            return st["views"], st["shares"]

        self.assertEqual(harness.eventually(counts, (2, 1), timeout=10.0), (2, 1))
        self.assertEqual(self.redis.keys("tally:{00}[qr]:*"), [])
        m = self.tallyd.metrics()
        self.assertEqual(harness.metric(m, "tally_journal_reclaimed_entries_total") - before, 1)
        self.assertEqual(harness.metric(m, "tally_fold_skipped_commands_total"), 0)
        self.assertEqual(self.redis.command("ACL", "LOG"), [])

    def test_a_user_from_before_staging_folds_everything_itself(self):
        """The tally user as deploy/redis.conf had it before folds staged chunks (no RPUSH,
        LPOP or LLEN): folds of more than one step count everything in one call, as they did,
        and a killed collector's journal is reclaimed, with nothing refused."""
        old = [r for r in tally_user_rules() if r not in ("+rpush", "+lpop", "+llen")]
        self.assertEqual(len(old), len(tally_user_rules()) - 3)
        self.redis.command("ACL", "SETUSER", "tally_old", "reset", *old)
        self.addCleanup(self.redis.command, "ACL", "DELUSER", "tally_old")
        url = "redis://tally_old:%s@127.0.0.1:%d/0" % (PASSWORD, self.redis.port)
        args = ["--redis", url, "--token", TOKEN, "--view-window", "0"]
        t = self.track(harness.Tallyd(self.redis, args + ["--fold-interval", "10000"],
                                      threads=1))
        self.addCleanup(t.close)
        t.start()
        # 300 articles in one fold: more than one step of records.
        events = [{"type": "view", "article": "old/%d" % i} for i in range(300)]

        def post(d):
            for i in range(0, 300, 100):
                self.assertEqual(d.post_events(events[i:i + 100]).body,
                                 {"accepted": 100, "ignored": 0})

        post(t)
        self.assertEqual(t.post_events(events[:10]).body, {"accepted": 10, "ignored": 0})
        self.assertEqual(t.stats("old/0")["views"], 2)
        self.assertEqual(t.stats("old/299")["views"], 1)
        self.assertEqual(t.get("/v1/totals?period=day").body["views"], 310)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_fold_errors_total"), 0)
        self.assertEqual(harness.metric(m, "tally_fold_chunks_total"), 0)
        self.assertEqual(self.redis.keys("tally:{00}c:*"), [])
        # Killed with entries waiting: another collector of the same user reclaims them.
        gone = self.track(harness.Tallyd(self.redis, args + ["--fold-interval", "10000"],
                                         threads=1))
        self.addCleanup(gone.close)
        gone.start()
        post(gone)
        gone.kill()
        self.assertEqual(harness.eventually(lambda: t.get("/v1/totals?period=day").body["views"],
                                            610, timeout=10.0), 610)
        self.assertEqual(t.stats("old/299")["views"], 2)
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_errors_total"), 0)
        self.assertEqual(self.redis.keys("tally:{00}[qrc]:*"), [])
        self.assertEqual(self.redis.command("ACL", "LOG"), [])

    def test_a_user_from_before_staging_leaves_chunks_it_may_not_pop(self):
        """A writer gone left chunks staged (by a collector whose user may stage): a reclaim
        by a user from before staging (no LPOP) leaves that journal to another collector,
        refused nothing, and takes nothing."""
        old = [r for r in tally_user_rules() if r not in ("+rpush", "+lpop", "+llen")]
        self.redis.command("ACL", "SETUSER", "tally_old", "reset", *old)
        self.addCleanup(self.redis.command, "ACL", "DELUSER", "tally_old")
        journal, staged = "tally:{00}q:gone-writer", "tally:{00}c:gone-writer"
        self.redis.command("XADD", journal, "*", "n", "0", "a", "")
        self.redis.command("RPUSH", staged, "a staged chunk")
        # A registry of its own: the class's collector looks at the real one every second.
        registry = "tally:{00}r:test-journals"
        self.redis.command("ZADD", registry, "1", journal)
        c = harness.RespClient(self.redis.port)
        try:
            self.assertEqual(c.command("AUTH", "tally_old", PASSWORD), "OK")
            v = harness.functions_library()[len("tally_"):]
            r = c.command("FCALL", "tally_reclaim_" + v, "1", registry, "tally:", MODEL, "16",
                          "5000", "128")
        finally:
            c.close()
        self.assertEqual(r, [0, b"", 0, b"", 0, 0])
        self.assertEqual(self.redis.command("LLEN", staged), 1)
        self.assertEqual(self.redis.command("XLEN", journal), 1)
        self.assertEqual(self.redis.command("ZSCORE", registry, journal), b"1")
        self.assertEqual(self.redis.command("ACL", "LOG"), [])

    def test_a_user_that_may_not_append_writes_nothing(self):
        """A Redis user without XADD (an ACL from before the journal): the ack refuses the
        unit before it writes anything -- no attempt marker, no repeat-view marker -- so the
        503's retry counts the view once the ACL allows the append."""
        t = self.track(harness.Tallyd(self.redis, ["--redis", self.url, "--token", TOKEN,
                                                   "--view-window", "1800",
                                                   "--fold-interval", "200"]).start())
        self.addCleanup(t.close)
        self.addCleanup(self.redis.command, "ACL", "SETUSER", "tally", "+xadd")
        self.redis.command("ACL", "SETUSER", "tally", "-xadd")
        r = t.post_events({"type": "view", "article": "acl/no-append"})
        self.assertEqual((r.status, r.body), (503, {"error": "unavailable",
                                                    "message": "redis error"}))
        self.assertEqual([k for k in self.redis.keys() if not k.startswith(b"tally:salt:")], [])
        self.assertEqual(len(re.findall(r"redis refused a write unit: NOPERM the Redis user may "
                                        r"not append to the journal", t.log())), 1)
        self.redis.command("ACL", "SETUSER", "tally", "+xadd")
        r = t.post_events({"type": "view", "article": "acl/no-append"})
        self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}))
        self.assertEqual(t.stats("acl/no-append")["views"], 1)

    def test_the_tally_user_may_do_nothing_else(self):
        c = self.as_tally()
        try:
            for cmd in (["EVAL", "return 1", "0"], ["EVALSHA", "0" * 40, "0"],
                        ["SCRIPT", "LOAD", "return 1"], ["SELECT", "1"], ["FLUSHALL"],
                        ["FLUSHDB"], ["CONFIG", "GET", "maxmemory"], ["KEYS", "*"],
                        ["FUNCTION", "FLUSH"], ["FUNCTION", "DELETE", harness.functions_library()],
                        ["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', "
                                             "function() return 1 end)"],
                        ["SET", "other:key", "1"], ["DEBUG", "SLEEP", "0"]):
                with self.subTest(cmd=cmd[0]):
                    with self.assertRaises(harness.RespError) as e:
                        c.command(*cmd)
                    self.assertTrue(str(e.exception).startswith("NOPERM"), e.exception)
        finally:
            c.close()
        # Nor may it run the admin step.
        with self.assertRaises(RuntimeError):
            harness.load_functions(["--redis", self.url])

    def test_functions_are_called_read_only_where_they_only_read(self):
        """A read-only function called with FCALL_RO, a writing one refused there."""
        c = self.as_tally()
        try:
            v = harness.functions_library()[len("tally_"):]
            self.assertEqual(c.command("FCALL_RO", "tally_version_" + v, "0"), v.encode())
            with self.assertRaises(harness.RespError):
                c.command("FCALL_RO", "tally_forget_" + v, "1", "tally:{00}a:x",
                          "tally:", "00", "x", "0")
        finally:
            c.close()


class MissingFunctionsTest(harness.TallyTestCase):
    """A Redis without this version's functions: not ready, one log line, ready once loaded."""

    def test_without_the_functions_tallyd_is_not_ready_and_says_so_once(self):
        self.redis = self.track(harness.Redis(functions=False).start())
        # One worker: the log lines are counted below, and any connection getting ready lets
        # the line be said again; with several workers, a reply from before the functions came
        # back could arrive after another worker's connection got ready and say it twice.
        t = self.track(harness.Tallyd(self.redis, ["--token", TOKEN], threads=1).start())
        self.addCleanup(t.close)
        self.addCleanup(self.redis.close)
        time.sleep(1.5)  # several reconnects of each worker
        self.assertEqual(t.get("/readyz").status, 503)
        r = t.post_events({"type": "view", "article": "m"})
        self.assertEqual(r.status, 503, r)
        said = re.findall(r"does not have the functions (tally_[0-9a-f]+): load them with "
                          r"'tallyd --load-functions'", t.log())
        self.assertEqual(said, [harness.functions_library()])

        harness.load_functions(["--redis", "redis://127.0.0.1:%d/0" % self.redis.port])
        harness.wait_until(lambda: t.get("/readyz").status == 200, 10.0,
                           message="ready once the functions are loaded")
        self.assertEqual(t.post_events({"type": "view", "article": "m"}).status, 200)

        # Functions deleted under a running tallyd: the next call finds them missing, nothing
        # is counted, and tallyd is not ready until they are back.
        self.redis.command("FUNCTION", "FLUSH")
        r = t.post_events({"type": "view", "article": "m"})
        self.assertEqual(r.status, 503, r)
        harness.wait_until(lambda: t.get("/readyz").status == 503, 5.0,
                           message="not ready without the functions")
        self.assertEqual(len(re.findall("does not have the functions", t.log())), 2)
        harness.load_functions(["--redis", "redis://127.0.0.1:%d/0" % self.redis.port])
        harness.wait_until(lambda: t.get("/readyz").status == 200, 10.0,
                           message="ready again")
        self.assertEqual(t.stats("m")["views"], 1)


if __name__ == "__main__":
    unittest.main()
