"""The functions of a journal on a Redis Cluster, called directly (FCALL) on a redis-server of
our own with tally's functions loaded (`tallyd --load-functions`, as every deploy does). A
cluster journal is folded in two steps, each in one slot: cplan (the journal's slot) plans a
range of its oldest entries and answers each bucket's merged records, cpart (a bucket's slot)
counts one bucket's part unless the journal's cursor there is already at or past the plan's
last id; the next cplan, told the plan is done, trims it and plans the next. What must hold,
with exact counts and exact answers:

  cpart     the same part sent twice counts once; a part of an older plan counts nothing;
            stream ids are compared as numbers ("9-0" before "10-0", seq after ms, past the
            precision of a double); the cursor lives 2 days; "fresh" says which keys get an
            expiry, as a fold's does
  cplan     a stored plan is answered again, whatever count is asked; a done range that is
            not the stored plan trims nothing; the stored plan as done trims exactly its
            entries (counted in the journal's trimmed count) and plans the next; entries of
            several buckets come back as each bucket's merged records (views of checked
            entries resolved, visitors, shares, sums, properties), in order of first
            appearance; cplan + cpart count exactly what fold.lua counts from the same entries
  registry  cheartbeat scores a journal with Redis's clock; cstale finds the stalest journal
            not the caller's own; cgone removes it only while still stale; cdrop deletes an
            emptied journal with its trimmed count and plan, and nothing with entries left
  ack       with no registry (two KEYS, or the journal's trimmed count as the third) it
            appends without the ZADD, and numbers entries across trims of a {jj} journal;
            past its fence (a late unit) it writes nothing, not even a journal dropped since
  mark      each view checked against the window and remembered with its unit's stamp,
            no attempt marker; a copy of the unit sent again finds its own stamps and answers
            the same repeats, another unit (of the same second) finds them repeats, as do the
            other scripts' checks; past its fence it writes nothing; unmark forgets a view
            only while it holds that unit's stamp
"""

import os
import re
import socket
import time
import unittest

import harness

# The model as tallyd tells the scripts (include/tally/model.h, tally_model_arg()).
MODEL = "777600 34992000 172800 views+ visitors shares+ comments+ site engaged+ reads+"
T1 = 1800001800           # 2027-01-15 08:30 UTC
DAY, HOUR = "20270115", "2027011508"
REGISTRY = "tally:{00}r:journals"
J, PLAN, TRIMMED = "tally:{3a}q:w1", "tally:{3a}p:w1", "tally:{3a}n:w1"
CURSOR = "tally:{3a}f:w1"
A, B = "00000000000000a1", "00000000000000a2"
PASSWORD = "cluster-functions-password-0123"
REDIS_CONF = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "redis.conf")


def record(tag, article, views=0, vis=(), shares=(), comments=(), sums=(), props=()):
    """A record's tokens as count.lua reads them, joined by "\\n"."""
    t = [tag, article, str(views), str(len(vis))] + list(vis)
    t += [str(len(shares))] + [str(x) for p in shares for x in p]
    t += [str(len(comments))] + [str(d) for d in comments]
    t += [str(len(sums))] + [str(x) for p in sums for x in p]
    t += [str(len(props))] + [str(x) for p in props for x in p]
    return "\n".join(t)


class JournalClusterFunctionsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()
        cls.v = harness.functions_library()[len("tally_"):]

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.conn = self.redis  # who calls the functions

    def fcall(self, name, keys, *args):
        return self.conn.command("FCALL", "tally_%s_%s" % (name, self.v), len(keys), *keys,
                                 *args)

    def cpart(self, last, chunk, fresh="", cursor=CURSOR, prefix="tally:", first=None):
        """A part of the plan FIRST..LAST (a plan of one entry, FIRST None)."""
        return self.fcall("cpart", [cursor], prefix, MODEL, first or last, last, HOUR, fresh,
                          chunk)

    def cplan(self, count, done_first="", done_last="", journal=J, plan=PLAN,
              trimmed=TRIMMED, prefix="tally:", upto=""):
        return self.fcall("cplan", [journal, plan, trimmed], prefix, MODEL, count, done_first,
                          done_last, upto)

    def add(self, entry_id, now, records, checked="0", repeats="", journal=J, number="0"):
        return self.redis.command("XADD", journal, entry_id, "n", now, "c", checked,
                                  "r", repeats, "u", "tally:{3a}x:u" + entry_id, "s", number,
                                  "a", "\n".join(records))

    def redis_ms(self):
        s, us = self.redis.command("TIME")
        return int(s) * 1000 + int(us) // 1000

    def totals(self, article, tag="3a", prefix="tally:"):
        h = self.redis.command("HGETALL", "%s{%s}a:%s" % (prefix, tag, article))
        return {h[i].decode(): int(h[i + 1]) for i in range(0, len(h), 2)}

    # ---- cpart ----

    def test_a_part_sent_twice_counts_once(self):
        chunk = "%d\n%s" % (T1, record("3a", "x", views=3, vis=[A], shares=[("email", 2)]))
        self.assertEqual(self.cpart("5-0", chunk), [b"3a", 0, b"", b""])
        want = {"views": 3, "visitors": 1, "share:email": 2, "shares": 2}
        self.assertEqual(self.totals("x"), want)
        self.assertEqual(self.redis.command("GET", CURSOR), b"5-0")
        ttl = self.redis.command("TTL", CURSOR)
        self.assertTrue(172790 <= ttl <= 172800, ttl)
        self.assertEqual(self.cpart("5-0", chunk), [b"done"])
        self.assertEqual(self.totals("x"), want)
        for key, field, n in (("d:views:" + DAY, "x", 3), ("t:views", "x", 3),
                              ("d:shares:" + DAY, "x", 2), ("d:visitors:" + DAY, "x", 1)):
            self.assertEqual(self.redis.command("ZSCORE", "tally:{3a}" + key, field),
                             str(n).encode(), key)
        self.assertEqual(self.redis.command("HGET", "tally:{3a}h:views:" + HOUR, "x"), b"3")
        self.assertEqual(self.redis.command("HMGET", "tally:{3a}s:" + DAY, "views", "shares"),
                         [b"3", b"2"])
        self.assertEqual(self.redis.command("HMGET", "tally:{3a}s:all", "views", "shares"),
                         [b"3", b"2"])
        self.assertEqual(self.redis.command("PFCOUNT", "tally:{3a}v:%s:x" % DAY), 1)

    def test_a_part_of_an_older_plan_counts_nothing(self):
        chunk = "%d\n%s" % (T1, record("3a", "x", views=1))
        self.assertEqual(self.cpart("7-3", chunk), [b"3a", 0, b"", b""])
        for older in ("7-2", "6-9", "1-0", "0-1"):
            self.assertEqual(self.cpart(older, chunk), [b"done"], older)
        self.assertEqual(self.totals("x"), {"views": 1})
        self.assertEqual(self.redis.command("GET", CURSOR), b"7-3")
        self.assertEqual(self.cpart("7-4", chunk), [b"3a", 0, b"", b""])
        self.assertEqual(self.totals("x"), {"views": 2})
        self.assertEqual(self.redis.command("GET", CURSOR), b"7-4")

    def test_stream_ids_are_compared_as_numbers(self):
        chunk = "%d\n%s" % (T1, record("3a", "x", views=1))
        views = 0
        # (cursor, last id, counted?): as text "10-0" < "9-0" and "5-10" < "5-9".
        cases = [("9-0", "10-0", True), ("10-0", "9-0", False), ("10-0", "10-0", False),
                 ("5-9", "5-10", True), ("5-10", "5-9", False), ("9-5", "10-0", True),
                 ("10-0", "9-99", False),
                 # Past a double's precision: 2^53 + 1 after 2^53.
                 ("9007199254740992-0", "9007199254740993-0", True),
                 ("9007199254740993-0", "9007199254740992-0", False),
                 ("1-9007199254740992", "1-9007199254740993", True),
                 ("1-9007199254740993", "1-9007199254740992", False)]
        for cursor, last, counted in cases:
            self.redis.command("SET", CURSOR, cursor)
            reply = self.cpart(last, chunk)
            views += counted
            self.assertEqual(reply, [b"3a", 0, b"", b""] if counted else [b"done"],
                             (cursor, last))
            self.assertEqual(self.totals("x"), {"views": views}, (cursor, last))
            self.assertEqual(self.redis.command("GET", CURSOR),
                             (last if counted else cursor).encode())

    def test_a_cursor_inside_the_plan_counts_nothing_and_is_answered(self):
        """After the journal's master failed over without a plan's trim, a new plan can
        straddle a bucket's cursor: its part counts nothing and names the cursor."""
        chunk = "%d\n%s" % (T1, record("3a", "x", views=5))
        self.redis.command("SET", CURSOR, "7-3")
        for first, last in (("7-3", "9-0"), ("7-0", "7-4"), ("1-0", "10-0"), ("6-99", "8-0")):
            self.assertEqual(self.cpart(last, chunk, first=first), [b"overlap", b"7-3"],
                             (first, last))
        self.assertEqual(self.totals("x"), {})
        self.assertEqual(self.redis.command("GET", CURSOR), b"7-3")
        # Past the cursor it counts; up to it, it is done.
        self.assertEqual(self.cpart("7-3", chunk, first="1-0"), [b"done"])
        self.assertEqual(self.cpart("9-0", chunk, first="7-4"), [b"3a", 0, b"", b""])
        self.assertEqual(self.totals("x"), {"views": 5})
        self.assertEqual(self.redis.command("GET", CURSOR), b"9-0")

    def test_a_part_sets_the_expiry_fresh_asks_for(self):
        """fresh as a fold's: the keys of HOUR and its day that may be new ("" none: all
        known); the keys of the records' other hours and days get theirs, once per call."""
        chunk = "%d\n%s" % (T1, record("3a", "x", views=2, shares=[("copy", 1)]))
        ttl = lambda k: self.redis.command("TTL", "tally:{3a}" + k)
        # Views' day and hour keys and the site totals may be new; shares' are known.
        self.assertEqual(self.cpart("1-0", chunk, fresh="3ad113ah01"),
                         [b"3a", 0, b"", b"3ad113ah01"])
        self.assertGreater(ttl("d:views:" + DAY), 0)
        self.assertGreater(ttl("h:views:" + HOUR), 0)
        self.assertGreater(ttl("s:" + DAY), 0)
        self.assertEqual(ttl("d:shares:" + DAY), -1)
        self.assertEqual(ttl("h:shares:" + HOUR), -1)
        # All known: none set.
        self.redis.flushall()
        self.assertEqual(self.cpart("1-0", chunk), [b"3a", 0, b"", b""])
        for k in ("d:views:" + DAY, "h:views:" + HOUR, "s:" + DAY, "d:shares:" + DAY,
                  "h:shares:" + HOUR):
            self.assertEqual(ttl(k), -1, k)
        # A record of the next day: fresh does not speak of its keys, which get their expiry.
        self.redis.flushall()
        chunk = "%d\n%s" % (T1 + 86400, record("3a", "x", views=2, shares=[("copy", 1)]))
        self.assertEqual(self.cpart("1-0", chunk), [b"3a", 0, b"", b""])
        for k in ("d:views:20270116", "h:views:2027011608", "s:20270116", "d:shares:20270116",
                  "h:shares:2027011608"):
            self.assertGreater(ttl(k), 0, k)
        self.assertEqual(ttl("t:views"), -1)

    def touched(self, call):
        """The keys the commands of function call CALL (a function of no arguments) ran on,
        in order, as MONITOR shows them (each command's first argument is its key)."""
        sock = socket.create_connection(("127.0.0.1", self.redis.port), timeout=5.0)
        try:
            sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
            f = sock.makefile("rb")
            self.assertEqual(f.readline(), b"+OK\r\n")
            call()
            self.redis.command("ECHO", "monitor-end")
            keys = []
            for line in f:
                if b'"ECHO" "monitor-end"' in line:
                    return keys
                m = re.match(rb'^\+[\d.]+ \[\d+ lua\] "[A-Za-z]+" "([^"\\]*)"', line)
                if m:
                    keys.append(m.group(1).decode())
        finally:
            sock.close()
        raise AssertionError("MONITOR ended early")

    def test_a_part_touches_the_keys_the_collector_declares(self):
        """The keys count_record() touches for a chunk, exactly: the cursor, then what
        tally_agg_part_keys() lists for the same chunk (tests/unit/test_agg.c, "two
        articles, three hours over two days": this list is that one's, as a set)."""
        chunk = "\n".join([
            "1800001800", record("3a", "x", views=1),
            "1800001800", record("3a", "y", shares=[("email", 1)]),
            "1800005400", record("3a", "x", views=1, vis=[A]),
            "1800059400", record("3a", "y", views=2)])
        declared = ["a{b}x", "a{b}y", "a{b}x", "v{b}20270115:x", "a{b}y", "d{b}views:20270115",
                    "h{b}views:2027011508", "t{b}views", "d{b}shares:20270115",
                    "h{b}shares:2027011508", "t{b}shares", "s{b}20270115", "s{b}all",
                    "d{b}views:20270115", "h{b}views:2027011509", "t{b}views",
                    "d{b}visitors:20270115", "h{b}visitors:2027011509", "t{b}visitors",
                    "s{b}20270115", "s{b}all", "d{b}views:20270116", "h{b}views:2027011600",
                    "t{b}views", "s{b}20270116", "s{b}all"]
        declared = {"tally:{3a}%s:%s" % (k[0], k[4:]) for k in declared}
        touched = self.touched(lambda: self.cpart("1-0", chunk))
        self.assertEqual(touched[0], CURSOR)  # GET, first
        self.assertEqual(touched[-1], CURSOR)  # SET, last
        self.assertEqual(set(touched[1:-1]), declared)

    # ---- cplan ----

    def five_entries(self):
        for i in range(1, 6):
            self.add("%d-0" % i, T1, [record("3a", "a%d" % i, views=i)])

    def test_a_stored_plan_is_answered_again(self):
        self.five_entries()
        first = self.cplan(2)
        self.assertEqual(first, [b"1-0", b"2-0", 2, 5, 1, b"3a",
                                 ("%d\n%s\n%d\n%s" % (T1, record("3a", "a1", views=1),
                                                      T1, record("3a", "a2", views=2))).encode()])
        self.assertEqual(self.redis.command("GET", PLAN), b"1-0 2-0 2")
        self.assertEqual(self.cplan(3), first)
        self.assertEqual(self.cplan(1), first)
        self.assertEqual(self.redis.command("XLEN", J), 5)
        self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0)

    def test_a_done_range_that_is_not_the_stored_plan_trims_nothing(self):
        self.five_entries()
        first = self.cplan(2)
        for done in (("1-0", "3-0"), ("2-0", "2-0"), ("1-0", "1-0"), ("0-1", "2-0"),
                     ("3-0", "4-0")):
            self.assertEqual(self.cplan(3, *done), first, done)
            self.assertEqual(self.redis.command("XLEN", J), 5, done)
            self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0, done)
            self.assertEqual(self.redis.command("GET", PLAN), b"1-0 2-0 2")

    def test_the_done_plan_is_trimmed_and_the_next_planned(self):
        self.five_entries()
        self.cplan(2)
        chunk = "\n".join("%d\n%s" % (T1, record("3a", "a%d" % i, views=i)) for i in (3, 4, 5))
        nxt = [b"3-0", b"5-0", 3, 3, 1, b"3a", chunk.encode()]
        self.assertEqual(self.cplan(3, "1-0", "2-0"), nxt)
        self.assertEqual(self.redis.command("XLEN", J), 3)
        self.assertEqual([e[0] for e in self.redis.command("XRANGE", J, "-", "+")],
                         [b"3-0", b"4-0", b"5-0"])
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"2")
        self.assertEqual(self.redis.command("GET", PLAN), b"3-0 5-0 3")
        # The same done range again (a reply lost): the new plan stands, nothing trimmed.
        self.assertEqual(self.cplan(3, "1-0", "2-0"), nxt)
        self.assertEqual(self.redis.command("XLEN", J), 3)
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"2")
        # The last plan done: nothing left to plan.
        self.assertEqual(self.cplan(3, "3-0", "5-0"), [b"empty", 0])
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"5")
        self.assertEqual(self.redis.command("EXISTS", PLAN), 0)
        self.assertEqual(self.cplan(3), [b"empty", 0])
        self.assertEqual(self.cplan(3, "3-0", "5-0"), [b"empty", 0])
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"5")

    def test_a_plan_bounded_by_a_cursor_ends_at_it(self):
        """cplan with upto: a new plan takes only entries at or before it; a stored plan that
        goes past it is made again to end there; nothing is trimmed by it."""
        self.five_entries()
        part = lambda *ids: "\n".join("%d\n%s" % (T1, record("3a", "a%d" % i, views=i))
                                       for i in ids).encode()
        self.assertEqual(self.cplan(2, upto="1-0"), [b"1-0", b"1-0", 1, 5, 1, b"3a", part(1)])
        self.assertEqual(self.redis.command("GET", PLAN), b"1-0 1-0 1")
        # A stored plan within upto stands.
        self.assertEqual(self.cplan(4, upto="3-0"), [b"1-0", b"1-0", 1, 5, 1, b"3a", part(1)])
        self.redis.command("DEL", PLAN)
        self.assertEqual(self.cplan(4), [b"1-0", b"4-0", 4, 5, 1, b"3a", part(1, 2, 3, 4)])
        # A stored plan past upto is made again, to end at the last entry before it.
        self.assertEqual(self.cplan(4, upto="3-5"), [b"1-0", b"3-0", 3, 5, 1, b"3a",
                                                     part(1, 2, 3)])
        self.assertEqual(self.redis.command("GET", PLAN), b"1-0 3-0 3")
        self.assertEqual(self.redis.command("XLEN", J), 5)
        self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0)
        # Done, then the next plan as usual.
        self.assertEqual(self.cplan(4, "1-0", "3-0"), [b"4-0", b"5-0", 2, 2, 1, b"3a",
                                                       part(4, 5)])

    def offer(self, count, n, first, last, first_u=None, last_u=None, first_s="", last_s="",
              done_first="", done_last="", upto=""):
        """cplan offered the writer's own merge of the entries FIRST..LAST (N of them)."""
        return self.fcall("cplan", [J, PLAN, TRIMMED], "tally:", MODEL, count, done_first,
                          done_last, upto, n, first, last,
                          first_u or "tally:{3a}x:u" + first, last_u or "tally:{3a}x:u" + last,
                          first_s, last_s)

    def test_the_writers_own_merge_is_planned_when_the_journal_starts_with_it(self):
        """Offered the entries the journal starts with, cplan stores them as the plan and
        answers -1 for the parts (the writer counts them from its merge); with the numbers it
        reads two entries, without them the first n."""
        for i in range(1, 6):
            self.add("%d-0" % i, T1, [record("3a", "a%d" % i, views=i)], number=str(i))
        self.assertEqual(self.offer(1, 2, "1-0", "2-0"), [b"1-0", b"2-0", 2, 5, -1])
        self.assertEqual(self.redis.command("GET", PLAN), b"1-0 2-0 2")
        self.assertEqual(self.redis.command("XLEN", J), 5)
        # Done, trimmed, and the next offer planned in the same call.
        self.assertEqual(self.offer(1, 3, "3-0", "5-0", first_s="3", last_s="5",
                                    done_first="1-0", done_last="2-0"),
                         [b"3-0", b"5-0", 3, 3, -1])
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"2")
        self.assertEqual(self.redis.command("GET", PLAN), b"3-0 5-0 3")
        self.assertEqual(self.offer(1, 3, "3-0", "5-0", done_first="3-0", done_last="5-0"),
                         [b"empty", 0])

    def test_an_offer_the_journal_does_not_start_with_is_planned_from_the_journal(self):
        """Any mismatch -- another first entry or unit, a last entry that is not the n-th, its
        unit, numbers not n - 1 apart --, a plan stored, or an upto: planned from the journal
        as without the offer (count entries, each bucket's records)."""
        for i in range(1, 6):
            self.add("%d-0" % i, T1, [record("3a", "a%d" % i, views=i)], number=str(i))
        part = lambda *ids: "\n".join("%d\n%s" % (T1, record("3a", "a%d" % i, views=i))
                                       for i in ids).encode()
        journal_plan = [b"1-0", b"2-0", 2, 5, 1, b"3a", part(1, 2)]
        for offer in ((2, "2-0", "3-0"), (2, "1-0", "3-0"), (3, "1-0", "2-0"),
                      (2, "1-0", "2-0", "tally:{3a}x:other"),
                      (2, "1-0", "2-0", None, "tally:{3a}x:other"),
                      (2, "1-0", "2-0", None, None, "1", "3"),
                      (3, "1-0", "3-0", None, None, "1", "2")):
            self.assertEqual(self.offer(2, *offer), journal_plan, offer)
            self.assertEqual(self.redis.command("GET", PLAN), b"1-0 2-0 2", offer)
            self.redis.command("DEL", PLAN)
        self.assertEqual(self.offer(2, 2, "1-0", "2-0", upto="1-0"),
                         [b"1-0", b"1-0", 1, 5, 1, b"3a", part(1)])
        # The stored plan stands, offer or not.
        self.assertEqual(self.offer(2, 2, "1-0", "2-0"), [b"1-0", b"1-0", 1, 5, 1, b"3a",
                                                          part(1)])
        self.assertEqual(self.redis.command("XLEN", J), 5)
        self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0)

    def test_an_empty_journal_has_nothing_to_plan(self):
        self.assertEqual(self.cplan(10), [b"empty", 0])
        self.assertEqual(self.redis.command("EXISTS", PLAN), 0)

    def several_buckets(self, journal=J):
        """Entries over three buckets and two hours; the third entry's views are checked
        ("c 1"): of its two visitors the second is a repeat."""
        self.add("1-0", T1, [record("0f", "x", views=1, vis=[A]),
                             record("3a", "y", views=2, shares=[("email", 1)])],
                 journal=journal)
        self.add("2-0", T1 + 60, [record("0f", "x", views=2, vis=[B], shares=[("copy", 1)],
                                         sums=[("engaged", 30)], props=[("words", 900)])],
                 journal=journal)
        self.add("3-0", T1 + 3600, [record("0f", "x", vis=[A, "00000000000000a3"])],
                 checked="1", repeats="2", journal=journal)
        self.add("4-0", T1 + 120, [record("c1", "z", views=1), record("3a", "y", views=1)],
                 journal=journal)

    def test_a_plan_over_several_buckets_answers_each_buckets_merged_records(self):
        self.several_buckets()
        part_0f = "\n".join([
            str(T1), record("0f", "x", views=3, vis=[A, B], shares=[("copy", 1)],
                            sums=[("engaged", 30)], props=[("words", 900)]),
            str(T1 + 3600), record("0f", "x", views=1, vis=[A, "00000000000000a3"])])
        part_3a = "\n".join([str(T1), record("3a", "y", views=3, shares=[("email", 1)])])
        part_c1 = "\n".join([str(T1 + 120), record("c1", "z", views=1)])
        want = [b"1-0", b"4-0", 4, 4, 3, b"0f", part_0f.encode(), b"3a", part_3a.encode(),
                b"c1", part_c1.encode()]
        self.assertEqual(self.cplan(10), want)
        self.assertEqual(self.cplan(10), want)  # whoever reads the plan gets the same parts
        self.assertEqual(self.redis.command("GET", PLAN), b"1-0 4-0 4")

    def dump(self, prefix):
        """The counts under PREFIX: each key's content by its name after the prefix, and the
        site totals added up over the buckets (a fold of one call files them in the first
        bucket it meets, a part in its own)."""
        counts, site = {}, {}
        for k in self.redis.keys(prefix + "*"):
            rest = k[len(prefix):].decode()
            kind = rest[4]
            if kind in "qcnrpf":  # the journal's side, the cursors
                continue
            t = self.redis.command("TYPE", k)
            if t == "hash":
                h = self.redis.command("HGETALL", k)
                h = {h[i]: h[i + 1] for i in range(0, len(h), 2)}
                if kind == "s":
                    for f, n in h.items():
                        site[(rest[6:], f)] = site.get((rest[6:], f), 0) + int(n)
                    continue
                counts[rest] = h
            elif t == "zset":
                counts[rest] = self.redis.command("ZRANGE", k, 0, -1, "WITHSCORES")
            else:
                counts[rest] = self.redis.command("PFCOUNT", k)
        return counts, site

    def test_plan_and_parts_count_what_a_fold_counts(self):
        self.several_buckets("fold:{00}q:w")
        self.several_buckets("part:{3a}q:w")
        self.assertEqual(self.fcall("fold", ["fold:{00}q:w", "fold:{00}r:journals",
                                             "fold:{00}c:w"],
                                    "fold:", MODEL, 100, HOUR, "", "")[:2], [4, 0])
        keys = ["part:{3a}q:w", "part:{3a}p:w", "part:{3a}n:w"]
        plan = self.fcall("cplan", keys, "part:", MODEL, 100, "", "")
        self.assertEqual(plan[:5], [b"1-0", b"4-0", 4, 4, 3])
        for i in range(plan[4]):
            tag, chunk = plan[5 + 2 * i].decode(), plan[6 + 2 * i]
            reply = self.cpart(plan[1], chunk, cursor="part:{%s}f:w" % tag, prefix="part:")
            self.assertEqual(reply, [tag.encode(), 0, b"", b""])
        self.assertEqual(self.fcall("cplan", keys, "part:", MODEL, 100, "1-0", "4-0"),
                         [b"empty", 0])
        folded, parted = self.dump("fold:"), self.dump("part:")
        self.assertEqual(parted, folded)
        self.assertEqual(self.totals("x", "0f", "part:"),
                         {"views": 4, "visitors": 3, "shares": 1, "share:copy": 1,
                          "engaged": 30, "words": 900})
        self.assertEqual(self.totals("y", "3a", "part:"),
                         {"views": 3, "shares": 1, "share:email": 1})
        self.assertEqual(folded[1][(DAY, b"views")], 8)

    # ---- The registry ----

    def test_a_heartbeat_scores_the_journal_with_redis_clock(self):
        before = self.redis_ms()
        ms = self.fcall("cheartbeat", [REGISTRY], J)
        after = self.redis_ms()
        self.assertTrue(before <= ms <= after, (before, ms, after))
        self.assertEqual(int(self.redis.command("ZSCORE", REGISTRY, J)), ms)
        time.sleep(0.01)
        self.assertGreater(self.fcall("cheartbeat", [REGISTRY], J), ms)
        self.assertEqual(self.redis.command("ZCARD", REGISTRY), 1)

    def test_stale_journals_are_found_skipping_the_callers_own(self):
        j1, j2, j3 = "tally:{11}q:live", "tally:{22}q:gone", "tally:{33}q:long-gone"
        self.fcall("cheartbeat", [REGISTRY], j1)
        now = self.redis_ms()
        self.redis.command("ZADD", REGISTRY, now - 10000, j2, now - 20000, j3)
        stale = lambda ms, pick, *own: self.fcall("cstale", [REGISTRY], ms, pick, *own)
        # The PICK-th of the stale ones, stalest first, modulo their number.
        self.assertEqual(stale(5000, 0), j3.encode())
        self.assertEqual(stale(5000, 1), j2.encode())
        self.assertEqual(stale(5000, 2), j3.encode())
        self.assertEqual(stale(5000, 0, j3), j2.encode())
        self.assertEqual(stale(5000, 1, j3), j2.encode())
        self.assertEqual(stale(5000, 1, j1, j3), j2.encode())
        self.assertEqual(stale(5000, 0, j3, j2), b"")
        self.assertEqual(stale(15000, 1), j3.encode())
        self.assertEqual(stale(15000, 0, j3), b"")
        self.assertEqual(stale(60000, 0), b"")
        self.assertEqual(self.redis.command("FCALL_RO", "tally_cstale_" + self.v, 1, REGISTRY,
                                            5000, 1), j2.encode())
        self.assertEqual(self.fcall("cstale", ["tally:{00}r:none"], 0, 0), b"")

    def test_lookers_spread_over_at_most_sixteen_stale_journals(self):
        now = self.redis_ms()
        gone = ["tally:{%02x}q:gone%02d" % (i, i) for i in range(20)]
        for i, j in enumerate(gone):
            self.redis.command("ZADD", REGISTRY, now - 60000 + i, j)
        got = [self.fcall("cstale", [REGISTRY], 5000, pick).decode() for pick in range(40)]
        self.assertEqual(got, [gone[p % 16] for p in range(40)])
        # Its own skipped, the next stalest come in.
        got = [self.fcall("cstale", [REGISTRY], 5000, pick, gone[0], gone[1]).decode()
               for pick in range(16)]
        self.assertEqual(got, gone[2:18])

    def test_a_journal_leaves_the_registry_only_while_stale(self):
        j1, j2 = "tally:{11}q:live", "tally:{22}q:gone"
        self.fcall("cheartbeat", [REGISTRY], j1)
        self.redis.command("ZADD", REGISTRY, self.redis_ms() - 10000, j2)
        self.assertEqual(self.fcall("cgone", [REGISTRY], j1, 5000), 0)  # came back
        self.assertEqual(self.fcall("cgone", [REGISTRY], j2, 30000), 0)  # not stale that long
        self.assertEqual(self.fcall("cgone", [REGISTRY], "tally:{44}q:none", 0), 0)
        self.assertEqual(self.redis.command("ZCARD", REGISTRY), 2)
        self.assertEqual(self.fcall("cgone", [REGISTRY], j2, 5000), 1)
        self.assertEqual(self.redis.command("ZRANGE", REGISTRY, 0, -1), [j1.encode()])

    def test_only_an_emptied_journal_is_dropped(self):
        self.five_entries()
        self.cplan(2)
        self.cplan(2, "1-0", "2-0")
        keys = [J, TRIMMED, PLAN]
        self.assertEqual(self.fcall("cdrop", keys), 0)
        self.assertEqual(self.redis.command("EXISTS", *keys), 3)
        self.assertEqual(self.cplan(2, "3-0", "4-0"), [b"5-0", b"5-0", 1, 1, 1, b"3a",
                                                      ("%d\n%s" % (T1, record("3a", "a5",
                                                                              views=5))).encode()])
        self.assertEqual(self.cplan(2, "5-0", "5-0"), [b"empty", 0])
        self.assertEqual(self.redis.command("EXISTS", *keys), 2)  # the plan went with the trim
        self.assertEqual(self.redis.command("HGETALL", TRIMMED), [b"n", b"5", b"h", b"5-0"])
        self.assertEqual(self.fcall("cdrop", keys), 1)
        # The journal goes, and its trimmed count but for the high-water mark, kept 2 days.
        self.assertEqual(self.redis.command("EXISTS", J, PLAN), 0)
        self.assertEqual(self.redis.command("HGETALL", TRIMMED), [b"h", b"5-0"])
        self.assertIn(self.redis.command("TTL", TRIMMED), (172799, 172800))
        self.assertEqual(self.fcall("cdrop", keys), 1)  # none there: the mark kept
        self.assertEqual(self.redis.command("HGETALL", TRIMMED), [b"h", b"5-0"])

    def test_a_journal_made_anew_numbers_its_entries_past_its_high_water_mark(self):
        """Cursors compare ids: a journal dropped and made anew by its writer must number its
        entries past the last id trimmed from it, even where the master's clock is behind
        that id (a failover to a replica with a slower clock, a clock step)."""
        ahead = self.redis_ms() + 3600 * 1000
        self.redis.command("HSET", TRIMMED, "h", "%d-7" % ahead)  # as cdrop.lua leaves it
        reply = self.ack([J, TRIMMED], "a1", "x1")
        self.assertEqual((reply[-2], reply[-1]), (b"%d-8" % ahead, 1))
        # The mark went with the making; the new journal's trims write it again, no expiry.
        self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0)
        self.assertEqual(self.ack([J, TRIMMED], "a2", "x2")[-2:], [b"%d-9" % ahead, 2])
        plan = self.cplan(10)
        self.assertEqual(self.cplan(10, plan[0], plan[1]), [b"empty", 0])
        self.assertEqual(self.redis.command("HGETALL", TRIMMED),
                         [b"n", b"2", b"h", b"%d-9" % ahead])
        self.assertEqual(self.redis.command("TTL", TRIMMED), -1)
        # A mark behind the clock: the journal made anew takes Redis's clock, numbered from 1.
        self.assertEqual(self.fcall("cdrop", [J, TRIMMED, PLAN]), 1)
        self.redis.command("HSET", TRIMMED, "h", "1-0")
        before = self.redis_ms()
        reply = self.ack([J, TRIMMED], "a3", "x3")
        self.assertGreaterEqual(int(reply[-2].split(b"-")[0]), before)
        self.assertEqual(reply[-1], 1)
        self.assertEqual(self.redis.command("EXISTS", TRIMMED), 0)

    # ---- ack without a registry ----

    def ack(self, keys, attempt, article, fence=None):
        fence = self.redis_ms() + 60000 if fence is None else fence
        args = ["tally:", 0, 600, 86400, T1, fence, "", MODEL,
                "", "", 1, 0, 0, 0, 0, record("3a", article, views=1)]
        return self.fcall("ack", ["tally:{3a}x:" + attempt] + keys, *args)

    def test_ack_without_a_registry_appends_without_the_zadd(self):
        for n, keys in enumerate(([J, TRIMMED], [J]), 1):
            reply = self.ack(keys, "a%d" % n, "x%d" % n)
            self.assertEqual(reply[0], b"ok")
            self.assertEqual(reply[-1], n)  # the entry's number
            self.assertEqual(self.redis.command("XRANGE", J, "-", "+")[-1][0], reply[-2])
        self.assertEqual(self.redis.command("EXISTS", REGISTRY), 0)
        self.assertEqual(self.redis.command("XLEN", J), 2)
        # Numbered across trims of the {3a} journal: its trimmed count is P{3a}n:<writer>.
        self.ack([J, TRIMMED], "a3", "x3")
        self.cplan(2)
        plan = self.redis.command("GET", PLAN).decode().split()
        self.cplan(2, plan[0], plan[1])
        self.assertEqual(self.redis.command("HGET", TRIMMED, "n"), b"2")
        self.assertEqual(self.ack([J, TRIMMED], "a4", "x4")[-1], 4)
        # One Redis: the registry as the third key, scored at the append.
        one = "tally:{00}q:w2"
        reply = self.ack([one, REGISTRY], "a5", "x5")
        self.assertEqual(reply[-1], 1)
        self.assertIsNotNone(self.redis.command("ZSCORE", REGISTRY, one))
        self.assertIsNone(self.redis.command("ZSCORE", REGISTRY, J))

    def test_a_late_ack_is_fenced_out_of_a_journal_taken_for_gone(self):
        """A reclaimer takes a journal whose heartbeat is 5 s old for gone: folds it, drops it,
        unregisters it. A unit sent to it while it was registered and arriving after that
        would make the journal anew out of the registry, where no reclaimer finds it; the
        writer fences such a unit by the heartbeat's time (tally_fence_journal_by()), so the
        ack refuses it and writes nothing, a copy arriving later included."""
        beat = self.fcall("cheartbeat", [REGISTRY], J)
        self.assertEqual(self.ack([J, TRIMMED], "a1", "x1")[-1], 1)
        plan = self.cplan(10)
        self.assertEqual(self.cplan(10, plan[0], plan[1]), [b"empty", 0])
        # The heartbeats fail: 5 s later (the score moved back) it is anyone's.
        beat -= 6000
        self.redis.command("ZADD", REGISTRY, beat, J)
        self.assertEqual(self.fcall("cstale", [REGISTRY], 5000, 0), J.encode())
        self.assertEqual(self.fcall("cdrop", [J, TRIMMED, PLAN]), 1)
        self.assertEqual(self.fcall("cgone", [REGISTRY], J, 5000), 1)
        # Fenced a second before the heartbeat goes stale: refused, nothing made.
        fence = beat + 5000 - 1000
        self.assertLess(fence, self.redis_ms())
        self.assertEqual(self.ack([J, TRIMMED], "a2", "x2", fence), [b"fenced"])
        self.assertEqual(self.redis.command("EXISTS", J, PLAN, REGISTRY), 0)
        self.assertEqual(self.redis.command("HKEYS", TRIMMED), [b"h"])  # the mark kept
        self.assertEqual(self.ack([J, TRIMMED], "a2", "x2"), [b"fenced"])  # its marker says so
        self.assertEqual(self.redis.command("EXISTS", J), 0)
        # Fenced by its answer's time alone, it would have been appended where nobody looks.
        self.assertEqual(self.ack([J, TRIMMED], "a3", "x3")[-1], 1)
        self.assertEqual(self.redis.command("XLEN", J), 1)
        self.assertEqual(self.fcall("cstale", [REGISTRY], 0, 0), b"")

    # ---- mark and unmark ----

    V1, V2, V3 = "00000000000000b1", "00000000000000b2", "00000000000000b3"
    WINDOW_KEY = "tally:{3a}w:%s:%d" % (A, T1 // 1800)

    def mark(self, attempt, vis, fence=None, now=T1):
        """A mark of views of A by the visitors VIS under the attempt id ATTEMPT: its keys the
        attempt marker and A's repeat-view hashes, its arguments window now fence and one
        segment of one record."""
        fence = self.redis_ms() + 60000 if fence is None else fence
        keys = ["tally:{3a}x:" + attempt, self.WINDOW_KEY,
                "tally:{3a}w:%s:%d" % (A, now // 1800 - 1)]
        return self.fcall("mark", keys, 1800, now, "%015d" % fence, len(vis), 0, 0, 1, len(vis),
                          *vis)

    def window(self):
        h = self.redis.command("HGETALL", self.WINDOW_KEY)
        return {h[i].decode(): h[i + 1].decode() for i in range(0, len(h), 2)}

    def test_a_mark_remembers_views_with_its_stamp_and_knows_its_own_copy(self):
        first = "0123456789abcdef-7"
        stamp = "%d%06d" % (T1, (0xbcdef + 7) % 1000000)
        # V1 twice in one unit: its second view repeats the first.
        want = [b"ok", b"", [1, 2, 0, 0, 1, 3]]
        self.assertEqual(self.mark(first, [self.V1, self.V2, self.V1]), want)
        self.assertEqual(self.window(), {self.V1: stamp, self.V2: stamp, "_": "1"})
        self.assertEqual(self.redis.command("EXISTS", "tally:{3a}x:" + first), 0)
        self.assertGreater(self.redis.command("TTL", self.WINDOW_KEY), 3500)
        # The same unit sent again (its reply lost): the same answer, nothing changed.
        self.assertEqual(self.mark(first, [self.V1, self.V2, self.V1]), want)
        self.assertEqual(self.window(), {self.V1: stamp, self.V2: stamp, "_": "1"})
        # Another unit of the same second -- the writer's next, or another writer's of the
        # same number -- repeats them; a new visitor is remembered with its stamp.
        self.assertEqual(self.mark("0123456789abcdef-8", [self.V1]),
                         [b"ok", b"", [1, 0, 0, 0, 1, 1]])
        self.assertEqual(self.mark("fedcba9876543210-7", [self.V2, self.V3]),
                         [b"ok", b"", [1, 1, 0, 0, 1, 1]])
        self.assertEqual(self.window()[self.V3], "%d%06d" % (T1, (0x43210 + 7) % 1000000))
        # The tag: the nonce's last five hex digits plus the number, modulo 1,000,000.
        self.assertEqual(self.mark("00000000000fffff-5", ["00000000000000b4"]),
                         [b"ok", b"", [1, 1, 0, 0, 0]])
        self.assertEqual(self.window()["00000000000000b4"], "%d048580" % T1)
        # Past its fence a mark writes nothing.
        self.redis.command("HDEL", self.WINDOW_KEY, self.V3, "00000000000000b4")
        self.assertEqual(self.mark("0123456789abcdef-9", [self.V3], fence=self.redis_ms() - 1),
                         [b"fenced"])
        self.assertEqual(set(self.window()), {self.V1, self.V2, "_"})
        self.assertEqual(self.redis.command("EXISTS", "tally:{3a}x:0123456789abcdef-9"), 0)

    def test_a_mark_of_two_articles_checks_each_in_its_own_hashes(self):
        kb = "tally:{3a}w:%s:%d" % (B, T1 // 1800)
        keys = [self.WINDOW_KEY, "tally:{3a}w:%s:%d" % (A, T1 // 1800 - 1),
                kb, "tally:{3a}w:%s:%d" % (B, T1 // 1800 - 1)]
        fence = "%015d" % (self.redis_ms() + 60000)

        def mark(attempt, *segment):
            return self.fcall("mark", ["tally:{3a}x:" + attempt] + keys, 1800, T1, fence,
                              *segment)
        # A: V1, V2; B: V1.
        self.assertEqual(mark("0123456789abcdef-1", 3, 0, 0, 2, 2, self.V1, self.V2, 1, self.V1),
                         [b"ok", b"", [1, 3, 0, 0, 0]])
        self.assertEqual(self.redis.command("HKEYS", kb), [self.V1.encode(), b"_"])
        # A's V3, B's V1 (the segment's second visitor: a repeat), with a bot and a prefetch.
        self.assertEqual(mark("0123456789abcdef-2", 2, 1, 1, 2, 1, self.V3, 1, self.V1),
                         [b"ok", b"", [1, 1, 1, 1, 1, 2]])
        self.assertEqual(set(self.window()), {self.V1, self.V2, self.V3, "_"})
        self.assertEqual(self.redis.command("HKEYS", kb), [self.V1.encode(), b"_"])

    def test_a_marked_view_is_a_repeat_to_the_other_checks(self):
        """A write counted at once on a cluster (an Idempotency-Key) or acknowledged on one
        Redis reads the time of a mark's stamp."""
        self.mark("0123456789abcdef-7", [self.V1])
        cur, prev = self.WINDOW_KEY, "tally:{3a}w:%s:%d" % (A, T1 // 1800 - 1)
        args = ["tally:", 1800, 600, 86400, T1 + 5, self.redis_ms() + 60000, "", MODEL,
                "", "", 2, 0, 0, 1, cur, prev, 2, self.V1, self.V2, 0, ""]
        reply = self.fcall("ack", ["tally:{3a}x:a1", J, TRIMMED], *args)
        self.assertEqual(reply[2], [1, 1, 0, 0, 1, 1])  # V1 repeats; V2 counts
        self.assertEqual(self.window()[self.V2], str(T1 + 5))
        # A window later, the mark's view is no repeat.
        nxt = "tally:{3a}w:%s:%d" % (A, T1 // 1800 + 1)
        args = ["tally:", 1800, 600, 86400, T1 + 1800, self.redis_ms() + 60000, "", MODEL,
                "", "", 1, 0, 0, 1, nxt, cur, 1, self.V1, 0, ""]
        reply = self.fcall("ack", ["tally:{3a}x:a2", J, TRIMMED], *args)
        self.assertEqual(reply[2], [1, 1, 0, 0, 0])

    def test_unmark_forgets_only_its_own_stamp(self):
        self.mark("0123456789abcdef-7", [self.V1, self.V2])
        self.assertEqual(self.fcall("unmark", [self.WINDOW_KEY, self.WINDOW_KEY], T1,
                                    "0123456789abcdef-8", self.V1, self.V2), 0)
        self.assertEqual(self.fcall("unmark", [self.WINDOW_KEY], T1 + 1,
                                    "0123456789abcdef-7", self.V1), 0)
        self.assertEqual(self.fcall("unmark", [self.WINDOW_KEY, self.WINDOW_KEY], T1,
                                    "0123456789abcdef-7", self.V1, self.V2), 2)
        self.assertEqual(self.window(), {"_": "1"})
        # Sent again, the views are no repeats.
        self.assertEqual(self.mark("0123456789abcdef-9", [self.V1, self.V2]),
                         [b"ok", b"", [1, 2, 0, 0, 0]])

    # ---- Least privilege ----

    def test_the_tally_user_may_run_a_whole_fold(self):
        """deploy/redis.conf's tally user (the daemon's) may call every step: append, beat,
        plan, count the parts, trim, find a stale journal, drop it, take it out."""
        with open(REDIS_CONF) as f:
            line = next(l for l in f if l.startswith("user tally "))
        rules = [">" + PASSWORD if r.startswith(">") else r for r in line.split()[2:]]
        self.redis.command("ACL", "SETUSER", "tally", "reset", *rules)
        self.addCleanup(self.redis.command, "ACL", "DELUSER", "tally")
        self.redis.command("ACL", "LOG", "RESET")
        self.conn = harness.RespClient(self.redis.port)
        self.addCleanup(self.conn.close)
        self.assertEqual(self.conn.command("AUTH", "tally", PASSWORD), "OK")
        self.assertEqual(self.ack([J, TRIMMED], "a1", "x")[-1], 1)
        self.assertIsInstance(self.fcall("cheartbeat", [REGISTRY], J), int)
        time.sleep(0.01)  # stale past 0 ms
        plan = self.cplan(10)
        self.assertEqual(plan[2:6], [1, 1, 1, b"3a"])
        self.assertEqual(self.cpart(plan[1], plan[6], fresh="3ad113ah11"),
                         [b"3a", 0, b"", b"3ad113ah01"])
        self.assertEqual(self.cpart(plan[1], plan[6]), [b"done"])
        self.assertEqual(self.cplan(10, plan[0], plan[1]), [b"empty", 0])
        self.assertEqual(self.conn.command("FCALL_RO", "tally_cstale_" + self.v, 1, REGISTRY,
                                           0, "tally:{00}q:own"), J.encode())
        self.assertEqual(self.fcall("cdrop", [J, TRIMMED, PLAN]), 1)
        self.assertEqual(self.fcall("cgone", [REGISTRY], J, 0), 1)
        self.assertEqual(self.totals("x"), {"views": 1})
        # The journal made anew over its kept high-water mark.
        self.assertEqual(self.ack([J, TRIMMED], "a2", "x")[-1], 1)
        self.assertEqual(self.redis.command("ACL", "LOG"), [])


if __name__ == "__main__":
    unittest.main()
