"""tallyd on a real Redis Cluster: 3 masters + 3 replicas on loopback, started once for the
module (each redis-server by PID in its own scratch directory) and stopped at the end, also
when something fails.

Core behaviours (ClusterCoreTest), against tallyd --redis-cluster and, for comparison, the same
workload on a tallyd with one standalone Redis: exact counts of single events and batches,
stats/top/series/totals equal on both (and to brute force), an Idempotency-Key replay of a
batch that spans many buckets, the comment floor, DELETE, the spread of 1,000 articles over
the three masters, and hostile ids whose keys must all stay in one slot.

Faults under load (ClusterFaultTest), judged by test_faults.CounterChecker (§1.7 of the
reliability notes):

  ok    200: the events are in Redis;
  fail  4xx/503, or no connection at all: definitely not counted;
  info  504 outcome_unknown (a request written in part only, or not confirmed in time), or a
        reset, an end of stream or a timeout after the request went out: indeterminate.

  views >= acknowledged, views <= acknowledged + indeterminate; keyed clients (retrying one
  Idempotency-Key until a 200): views == the events of the acknowledged keys.

Each client sends batches over its own four articles, which lie in different buckets, so a
request is usually split into parts on several masters when it is counted at once (keyed
clients); an unkeyed client's batch is one entry of the collector's journal on one master,
counted later by folds per bucket. Faults: CLUSTER FAILOVER of the master holding a journal
(nothing may be lost), SIGKILL of that master (Redis Cluster replicates asynchronously: a loss is
allowed only for events acknowledged within the last second before the kill, and the test
records acknowledgement times to hold it to that), and the migration of bucket slots under
load (manual SETSLOT/MIGRATE of the load's slots and of a journal's, slowly, plus redis-cli
--cluster reshard of 50 more).

The journal on the cluster (ClusterJournalTest): a SIGKILLed collector's unfolded entries
folded by another, two collectors under load with one killed, reads fresh at once on the
collector that acknowledged and within a second on another, DELETE on one collector of what
waits in another's journal -- all with exact counts.
"""

import concurrent.futures
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from datetime import datetime, timezone

import harness
import test_reports
from harness import TOKEN, quote, wait_until
from test_faults import CounterChecker
from test_reports import bucket

AUTH = {"Authorization": "Bearer " + TOKEN}
REDIS_CLI = os.environ.get("REDIS_CLI") or "redis-cli"
NODE_TIMEOUT_MS = 2000

CLIENTS = 8                 # load clients: half unkeyed, half keyed-with-retry
ARTICLES_PER_CLIENT = 4
LOAD_SECONDS = 8.0          # the load runs this long ...
FAULT_AT = 3.0              # ... with the fault starting this far in
AFTER_FAULT = 2.5           # and at least this long after the fault is over
REQUEST_TIMEOUT = 12.0
RETRY_SECONDS = 20.0        # a keyed client retries its last key this long after the load
MAX_OPS = 100000
LOSS_WINDOW = 1.0           # SIGKILL: acknowledged events older than this must survive
RECOVERY_GRACE = 3.0        # s after the cluster is whole again until every write succeeds

CLUSTER = None              # the module's cluster


# ---- The cluster ----

def _parse_slots(fields):
    out = []
    for f in fields:
        if f.startswith("["):
            continue  # "[slot->-node]": a migration in progress, not ownership
        lo, _, hi = f.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


class Node:
    """One redis-server of the cluster: its own scratch directory, port and bus port; start()
    again after kill() brings it back with its nodes.conf and append-only file."""

    def __init__(self):
        self.dir = harness._scratch_dir("cluster-node")
        self.port = None
        self.bus = None
        self.proc = None
        self.id = None

    @property
    def logfile(self):
        return os.path.join(self.dir, "redis.log")

    def start(self, timeout=10.0):
        fresh = self.port is None
        for attempt in range(5 if fresh else 1):
            if fresh:
                self.port, self.bus = harness.free_port(), harness.free_port()
                if self.bus == self.port:
                    continue
            args = [harness.redis_server_path(), "--port", str(self.port),
                    "--cluster-port", str(self.bus), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                    "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0",
                    "--dir", self.dir,
                    "--logfile", self.logfile, "--daemonize", "no"]
            self.proc = harness._spawn(args, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                       cwd=self.dir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.command("PING") == "PONG":
                        self.id = self.command("CLUSTER", "MYID").decode()
                        return self
                except (OSError, ConnectionError, harness.RespError):
                    pass
                time.sleep(0.02)
            self.kill()
            if fresh and "Address already in use" in harness._tail(self.logfile) and attempt < 4:
                continue
            raise RuntimeError("cluster node on port %s did not start:\n%s"
                               % (self.port, harness._tail(self.logfile, 40)))
        raise RuntimeError("no free ports for a cluster node")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running():
            harness._signal_pid(self.proc, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self):
        if self.running():
            harness._signal_pid(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def command(self, *args, timeout=5.0):
        c = harness.RespClient(self.port, timeout=timeout)
        try:
            return c.command(*args)
        finally:
            c.close()

    def info(self, section):
        out = {}
        for line in self.command("INFO", section).decode().splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k] = v
        return out

    def keys(self, pattern="*"):
        """Every key matching PATTERN on this node, through SCAN (bounded)."""
        out, cursor = [], b"0"
        c = harness.RespClient(self.port)
        try:
            for _ in range(100000):
                cursor, batch = c.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                out.extend(batch)
                if cursor == b"0":
                    return out
        finally:
            c.close()
        raise AssertionError("SCAN did not finish")

    def __repr__(self):
        return "<Node %s :%s%s>" % ((self.id or "?")[:8], self.port,
                                    "" if self.running() else " down")


class Cluster:
    """N_MASTERS masters, each with one replica, created with redis-cli --cluster create."""

    def __init__(self, n_masters=3):
        self.nodes = [Node() for _ in range(2 * n_masters)]
        self.n_masters = n_masters
        self.seed_nodes = self.nodes[:n_masters]

    def start(self):
        for n in self.nodes:
            n.start()
        r = subprocess.run([REDIS_CLI, "--cluster", "create"]
                           + ["127.0.0.1:%d" % n.port for n in self.nodes]
                           + ["--cluster-replicas", "1", "--cluster-yes"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed (%d):\n%s\n%s"
                               % (r.returncode, r.stdout[-3000:], r.stderr[-2000:]))
        self.wait_healthy(30.0)
        # Into every master; replicas get the functions by replication, and keep them (with
        # the append-only file) across restarts and failovers.
        harness.load_functions(["--redis-cluster", self.seeds()])
        return self

    def close(self):
        for n in self.nodes:
            n.stop()
            harness._report_kept(n.dir, "cluster node")

    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.seed_nodes)

    def by_id(self, node_id):
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise AssertionError("no node %s" % node_id)

    def view(self, node):
        """NODE's CLUSTER NODES: {id: {"port", "flags", "master", "slots"}}."""
        out = {}
        for line in node.command("CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            addr = f[1].split("@")[0]
            out[f[0]] = {"port": int(addr.rsplit(":", 1)[1]), "flags": set(f[2].split(",")),
                         "master": f[3], "link": f[7], "slots": _parse_slots(f[8:]),
                         "open": any(x.startswith("[") for x in f[8:])}
        return out

    def live(self):
        return [n for n in self.nodes if n.running()]

    def masters(self):
        """The masters owning slots, as the first live node sees them: [Node]."""
        v = self.view(self.live()[0])
        return [self.by_id(i) for i, e in sorted(v.items(), key=lambda kv: kv[1]["slots"])
                if "master" in e["flags"] and e["slots"] and "fail" not in e["flags"]]

    def replica_of(self, master):
        v = self.view(master)
        for i, e in v.items():
            if e["master"] == master.id and "slave" in e["flags"] and "fail" not in e["flags"]:
                return self.by_id(i)
        raise AssertionError("master %r has no replica" % master)

    def owner(self, slot):
        v = self.view(self.live()[0])
        for i, e in v.items():
            if "master" in e["flags"] and any(lo <= slot <= hi for lo, hi in e["slots"]):
                return self.by_id(i)
        raise AssertionError("no owner of slot %d" % slot)

    def keyslot(self, key):
        return self.live()[0].command("CLUSTER", "KEYSLOT", key)

    def healthy(self):
        """Every node runs, sees cluster_state:ok and the same N_MASTERS masters covering all
        16384 slots, no open slot, each master with a replica whose link is up."""
        ref = None
        for n in self.nodes:
            if not n.running():
                return False
            if "cluster_state:ok" not in n.command("CLUSTER", "INFO").decode():
                return False
            v = self.view(n)
            masters = {i: tuple(e["slots"]) for i, e in v.items()
                       if "master" in e["flags"] and e["slots"]}
            if any(e["flags"] & {"fail", "fail?", "handshake", "noaddr"} or e["open"]
                   for e in v.values()):
                return False
            if ref is None:
                ref = masters
            elif masters != ref:
                return False
            if len(masters) != self.n_masters:
                return False
            if sum(hi - lo + 1 for s in masters.values() for lo, hi in s) != 16384:
                return False
            info = n.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
            if info.get("role") == "master" and n.id in masters and \
                    int(info.get("connected_slaves", "0")) < 1:
                return False
        return True

    def wait_healthy(self, timeout):
        wait_until(self.healthy, timeout, interval=0.1,
                   message="the cluster did not become healthy within %.0f s" % timeout)

    def flushall(self):
        for m in self.masters():
            m.command("FLUSHALL")

    def all_keys(self, pattern="tally:*"):
        """{Node: [key]} over every master."""
        return {m: m.keys(pattern) for m in self.masters()}

    def dump_logs(self, lines=40):
        for n in self.nodes:
            sys.stderr.write("\n---- cluster node %r log (%s) ----\n%s\n----\n"
                             % (n, n.logfile, harness._tail(n.logfile, lines)))


def setUpModule():
    global CLUSTER
    CLUSTER = Cluster()
    unittest.addModuleCleanup(CLUSTER.close)
    t0 = time.monotonic()
    CLUSTER.start()
    sys.stderr.write("\ncluster of %d nodes up in %.1f s: masters %r\n"
                     % (len(CLUSTER.nodes), time.monotonic() - t0, CLUSTER.masters()))


class MonitorTap:
    """MONITOR on one Redis, read on a thread: the write units (FCALL of the apply function)
    it saw, each with the commands the function ran (Redis shows them after the FCALL)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.f = self.sock.makefile("rb")
        if self.f.readline() != b"+OK\r\n":
            raise RuntimeError("MONITOR refused on :%d" % port)
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.f:
                self.lines.append(line)
        except (OSError, ValueError):
            pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5.0)

    @staticmethod
    def parse(line):
        """'+<time> [<db> <who>] "arg" ...' -> (who, [arg bytes])."""
        m = re.match(rb'^\+[\d.]+ \[\d+ ([^\]]*)\] (.*)\r\n$', line)
        if not m:
            return None, []
        args, cur, i, s = [], None, 0, m.group(2)
        while i < len(s):
            c = s[i:i + 1]
            if cur is None:
                if c == b'"':
                    cur = bytearray()
                i += 1
            elif c == b"\\":
                n = s[i + 1:i + 2]
                if n == b"x":
                    cur.append(int(s[i + 2:i + 4], 16))
                    i += 4
                    continue
                cur += {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}.get(n, n)
                i += 2
            elif c == b'"':
                args.append(bytes(cur))
                cur = None
                i += 1
            else:
                cur += c
                i += 1
        return m.group(1), args

    def calls(self):
        """[(function, declared keys, [the commands the function ran])] of each FCALL and
        FCALL_RO, FUNCTION the name it was registered under without its "tally_" and version
        ("apply", "ack", "cpart", ...)."""
        n, deadline = -1, time.monotonic() + 5.0
        # Until the last lines are in: none for 0.3 s (the collectors' heartbeats, once a
        # second each, may leave no such pause: 5 s at most).
        while n != len(self.lines) and time.monotonic() < deadline:
            n = len(self.lines)
            time.sleep(0.3)
        out, cur = [], None
        for line in list(self.lines):
            who, args = self.parse(line)
            if not args:
                continue
            if who == b"lua":
                if cur is not None:
                    cur[2].append(args)
                continue
            cur = None
            if args[0].upper() in (b"FCALL", b"FCALL_RO") and len(args) >= 3:
                m = re.match(rb"^tally_(.+)_[0-9a-f]+$", args[1])
                n = int(args[2])
                cur = (m.group(1).decode() if m else args[1].decode(), args[3:3 + n], [])
                out.append(cur)
        return out

    def commands(self):
        """[(who, [args])] of every line seen: who is b"lua" for a command a function ran."""
        return [p for p in map(self.parse, list(self.lines)) if p[1]]

    def units(self):
        """[(declared keys, [the commands the function ran])] of each write unit counted at
        once (the apply function)."""
        return [(keys, inner) for name, keys, inner in self.calls() if name == "apply"]


class ClusterTallyd(harness.Tallyd):
    """A tallyd on the module's cluster: --redis-cluster with the three seeds."""

    def __init__(self, cluster, args=(), threads=2, credentials=""):
        super().__init__(redis=None, args=args, threads=threads, redis_port=0)
        self.cluster = cluster
        self.credentials = credentials  # "[USER]:PASSWORD@", or ""

    def argv(self):
        a = super().argv()
        i = a.index("--redis")
        a[i:i + 2] = ["--redis-cluster", self.credentials + self.cluster.seeds()]
        return a

    def start(self, timeout=10.0):
        super().start(timeout)
        wait_until(lambda: self.get("/readyz", timeout=2).status == 200, 15.0,
                   message="tallyd on the cluster never became ready")
        return self


BUCKET_KEY = re.compile(rb"^tally:\{([0-9a-f]{2})\}([a-z]):(.*)$", re.S)


def article_of_key(key):
    """(bucket, kind, article) for a key that names an article (a, u, v, w), else None."""
    m = BUCKET_KEY.match(key)
    if m is None:
        return None
    bb, kind, rest = m.group(1).decode(), m.group(2).decode(), m.group(3)
    if kind in ("a", "u"):
        return bb, kind, rest
    if kind == "v":
        d = re.match(rb"^\d{8,10}:(.*)$", rest, re.S)
        return (bb, kind, d.group(1)) if d else None
    if kind == "w":
        d = re.match(rb"^(.*):\d+$", rest, re.S)
        return (bb, kind, d.group(1)) if d else None
    return None


def today():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


# ---- The journal on the cluster (see README, "Past one machine") ----

REGISTRY = "tally:{00}r:journals"   # journal -> Redis ms of its writer's last heartbeat
JOURNAL_KEY = re.compile(rb"^tally:\{([0-9a-f]{2})\}q:(.+)$", re.S)
# The functions of the journal, whose every command must name a key they declared.
JOURNAL_FUNCTIONS = ("ack", "cplan", "cpart", "cheartbeat", "cstale", "cgone", "cdrop")
SLOW = ("--fold-interval", "10000")  # no fold by the clock while a test runs
READER_UA = "Mozilla/5.0 (X11; Linux x86_64) tally-cluster-test"


class _OwnerRedis:
    """harness.reader_ids() and distinct_estimate() on the cluster: each command on the
    master of its first key."""

    @staticmethod
    def command(*args):
        return on_owner(args[1], *args)
RECLAIM_SECONDS = 6.0  # a journal whose writer's heartbeat is 5 s old is folded by the next look


def on_owner(key, *args):
    """ARGS run on the master owning KEY's slot."""
    return CLUSTER.owner(CLUSTER.keyslot(key)).command(*args)


def on_owner_node(key):
    """The master owning KEY's slot."""
    return CLUSTER.owner(CLUSTER.keyslot(key))


def registered():
    """The journals in the registry, sorted."""
    return sorted(j.decode() for j in on_owner(REGISTRY, "ZRANGE", REGISTRY, 0, -1))


def journal_keys():
    """{journal: Node} of every journal on the cluster, registered or not."""
    return {k.decode(): m for m, keys in CLUSTER.all_keys("tally:{??}q:*").items()
            for k in keys}


def writer_of(journal):
    m = JOURNAL_KEY.match(journal.encode())
    assert m is not None, journal
    return m.group(2).decode()


def writer_tag(journal):
    """The bucket of JOURNAL's hash tag, "00".."ff"."""
    m = JOURNAL_KEY.match(journal.encode())
    assert m is not None, journal
    return m.group(1).decode()


def writer_keys(writer):
    """Every key on the cluster named after WRITER: its journal, trimmed count, plan and the
    cursors in the buckets."""
    pat = "tally:{??}?:" + harness.glob_escape(writer)
    return sorted(k for keys in CLUSTER.all_keys(pat).values() for k in keys)


def left_behind(writer):
    """WRITER's keys left after its journal was dropped, but for those that stay by design,
    each expiring within two days: its cursors in the buckets, and its trimmed count holding
    only the journal's high-water mark (field h, see cdrop.lua)."""
    left = []
    for k in writer_keys(writer):
        if re.match(rb"^tally:\{..\}f:", k):
            continue
        if (re.match(rb"^tally:\{..\}n:", k) and on_owner(k, "HKEYS", k) == [b"h"] and
                0 < on_owner(k, "TTL", k) <= 172800):
            continue
        left.append(k)
    return left


def journal_state(journals=None):
    """(entries, {article: views}, {bucket}) held by the JOURNALS (default: every journal on
    the cluster), read straight from their masters."""
    entries, held, buckets = 0, {}, set()
    for j, node in sorted(journal_keys().items()):
        if journals is not None and j not in journals:
            continue
        for _id, fields in node.command("XRANGE", j, "-", "+"):
            f = dict(zip(fields[::2], fields[1::2]))
            entries += 1
            for bucket, article, v in harness.journal_entry_records(f[b"a"].decode()):
                held[article] = held.get(article, 0) + v
                buckets.add(bucket)
    return entries, held, buckets


def counted(articles):
    """{article: views} in the articles' totals hashes, straight from the masters."""
    names = {a.encode(): a for a in articles}
    out = {a: 0 for a in articles}
    for m, keys in CLUSTER.all_keys("tally:{??}a:*").items():
        for k in keys:
            p = article_of_key(k)
            if p is not None and p[2] in names:
                out[names[p[2]]] = int(m.command("HGET", k, "views") or 0)
    return out


def read_views(t, articles):
    """{article: views} through T in one stats query, or None if it was not answered 200."""
    r = t.get("/v1/stats?" + "&".join("article=" + quote(a) for a in articles))
    if r.status != 200:
        return None
    return {x["article"]: x["views"] for x in r.body["articles"]}


def wait_registered(t, before=()):
    """Wait until T's workers (T.threads) have each a journal in the registry besides BEFORE
    (the journals registered before T started): its heartbeats are confirmed, so its writes
    go to its journals. Returns T's journals."""
    def mine():
        js = [j for j in registered() if j not in before]
        return js if len(js) == t.threads else None
    js = wait_until(mine, 10.0, message="the collector's journals were not registered")
    time.sleep(0.2)  # the heartbeat's reply back at the collector
    return js


def add_up(into, per):
    for a, n in per.items():
        into[a] = into.get(a, 0) + n
    return into


def drain_steps(journals):
    """The fold calls a DELETE makes first in JOURNALS (of at most 16 entries each, none of a
    plan stored yet): in each that is not empty, a plan of every entry (cplan), a part in each
    bucket they touch (cpart), and the plan that trims them and finds nothing more."""
    steps = 0
    for j in journals:
        entries, _, buckets = journal_state([j])
        assert entries <= 16, (j, entries)
        steps += 2 + len(buckets) if entries else 0
    return steps


def open_move(slot, source, target):
    """Begin moving SLOT from SOURCE to TARGET as redis-cli --cluster reshard does (IMPORTING,
    MIGRATING) and MIGRATE every key of it, but leave it there: half-moved, SOURCE answers ASK
    for its keys. Returns the keys moved."""
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
    moved = 0
    for _ in range(1000):
        keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            return moved
        source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys,
                       timeout=10)
        moved += len(keys)
    raise AssertionError("slot %d not emptied" % slot)


def close_move(slot, source, target):
    """End the move open_move() began: SLOT is TARGET's, told to every master. Others answer
    MOVED for it from now on."""
    for n in [target, source] + [m for m in CLUSTER.masters() if m not in (source, target)]:
        n.command("CLUSTER", "SETSLOT", slot, "NODE", target.id)


def move_slot(slot):
    """SLOT moved, keys and all, from its master to another. Returns (source, target)."""
    source = CLUSTER.owner(slot)
    target = [m for m in CLUSTER.masters() if m is not source][0]
    open_move(slot, source, target)
    close_move(slot, source, target)
    assert CLUSTER.owner(slot) is target
    return source, target


def registry_on(node):
    """{journal: score} of the registry on NODE, asked after ASKING: right while its slot is
    being imported there too."""
    c = harness.RespClient(node.port)
    try:
        c.command("ASKING")
        r = c.command("ZRANGE", REGISTRY, 0, -1, "WITHSCORES")
    finally:
        c.close()
    return {j.decode(): int(float(v)) for j, v in zip(r[::2], r[1::2])}


def clock_ms(node):
    """NODE's clock, in ms: the registry's scores are its master's."""
    sec, usec = node.command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


# ---- Core behaviours ----

class ClusterTestCase(harness.TallyTestCase):

    def dump_logs(self):
        super().dump_logs()
        if CLUSTER is not None:
            CLUSTER.dump_logs()


class ClusterCoreTest(ClusterTestCase):
    """One tallyd on the cluster and, for comparison, one on a standalone Redis; the same
    workload goes to both."""

    @classmethod
    def setUpClass(cls):
        args = ["--view-window", "0", "--token", TOKEN]
        cls.tallyd = ClusterTallyd(CLUSTER, args)
        cls.redis = harness.Redis()
        cls.single = None
        try:
            cls.redis.start()
            cls.single = harness.Tallyd(cls.redis, args)
            cls.daemons = (cls.single,)
            cls.single.start()
            cls.tallyd.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        if cls.single is not None:
            cls.single.close()
        cls.redis.close()

    def setUp(self):
        CLUSTER.flushall()
        self.redis.flushall()
        # A daemon that died in an earlier test (reported there, by tearDown) is started
        # again, so that one crash does not fail every later test.
        for d in (self.tallyd, self.single):
            if not d.running():
                d.start()
        self.t = self.tallyd

    def tearDown(self):
        self.assertTrue(self.tallyd.running(), "tallyd on the cluster exited")
        self.assertTrue(self.single.running(), "tallyd on the standalone Redis exited")

    def both(self, body, headers=None, n=None):
        """POST BODY to both collectors; both must answer 200 with the same answer."""
        out = []
        for d in (self.tallyd, self.single):
            r = d.post_events(body, headers)
            self.assertEqual(r.status, 200, (d, r))
            out.append(r)
        self.assertEqual(out[0].body, out[1].body)
        if n is not None:
            self.assertEqual(out[0].body, {"accepted": n, "ignored": 0})
        return out[0]

    def get_both(self, path):
        a, b = self.tallyd.get(path), self.single.get(path)
        self.assertEqual(a.status, 200, (path, a))
        self.assertEqual(b.status, 200, (path, b))
        self.assertEqual(a.body, b.body, path)
        return a.body

    def folded(self, d=None):
        """What D (the cluster's collector) acknowledged is counted in the buckets' keys: a
        read of the site's totals waits for every fold of its journals (tally/fold.h)."""
        r = (d or self.tallyd).get("/v1/totals?period=day")
        self.assertEqual(r.status, 200, r)

    def articles_on_cluster(self, article):
        """Every key of ARTICLE on the cluster: [(Node, key, bucket, kind)]."""
        raw = article.encode("utf-8")
        out = []
        for node, keys in CLUSTER.all_keys().items():
            for k in keys:
                p = article_of_key(k)
                if p is not None and p[2] == raw:
                    out.append((node, k, p[0], p[1]))
        return out

    # ---- ingest ----

    def test_01_single_event_and_batches_count_exactly(self):
        r = self.t.post_events({"type": "view", "article": "one/view"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"accepted": 1, "ignored": 0})
        self.assertEqual(harness.counts(self.t.stats("one/view")),
                         {"article": "one/view", "views": 1, "shares": 0,
                          "shares_by_network": {}, "comments": 0})

        rng = random.Random(7)
        articles = ["batch/%d" % i for i in range(40)]
        want = {a: {"views": 0, "shares": {}, "comments": 0} for a in articles}
        for _ in range(5):
            events = []
            for i in range(100):
                a = rng.choice(articles)
                kind = ("view", "share", "comment")[i % 3]
                if kind == "view":
                    events.append({"type": "view", "article": a})
                    want[a]["views"] += 1
                elif kind == "share":
                    net = rng.choice(["twitter", "email", "reddit"])
                    events.append({"type": "share", "article": a, "network": net})
                    want[a]["shares"][net] = want[a]["shares"].get(net, 0) + 1
                else:
                    d = rng.choice([1, 2, -1])
                    events.append({"type": "comment", "article": a, "delta": d})
                    want[a]["comments"] = max(0, want[a]["comments"] + d)
            r = self.t.post_events(events, AUTH)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, {"accepted": 100, "ignored": 0})
        buckets = set()
        for a in articles:
            w = want[a]
            self.assertEqual(harness.counts(self.t.stats(a)),
                             {"article": a, "views": w["views"],
                              "shares": sum(w["shares"].values()),
                              "shares_by_network": w["shares"], "comments": w["comments"]}, a)
            buckets.update(k[2] for k in self.articles_on_cluster(a))
        # The batches really were split: their articles lie in many buckets, on every master.
        self.assertGreaterEqual(len(buckets), 20, buckets)
        masters = {n for a in articles for n, *_ in self.articles_on_cluster(a)}
        self.assertEqual(len(masters), 3, masters)

    def test_02_reads_equal_a_standalone_redis_and_brute_force(self):
        day = today()
        articles = ["read/%02d" % i for i in range(30)]
        events = []
        want = {}
        for i, a in enumerate(articles):
            v, s, c = 1 + i, 1 + (i * 7) % 30, 1 + (i * 11) % 30  # each metric distinct
            events += [{"type": "view", "article": a}] * v
            events += [{"type": "share", "article": a, "network": "twitter"}] * s
            events += [{"type": "comment", "article": a}] * c
            want[a] = (v, s, c)
        random.Random(3).shuffle(events)
        for i in range(0, len(events), 100):
            part = events[i:i + 100]
            self.both(part, AUTH, n=len(part))
        # stats, one by one and in one query
        for a in articles:
            st = self.get_both("/v1/stats/" + quote(a))
            v, s, c = want[a]
            self.assertEqual(st, {"article": a, "views": v, "visitors": 1, "shares": s,
                                  "shares_by_network": {"twitter": s}, "comments": c,
                                  "engaged_seconds": 0, "reads": 0, "words": 0})
        q = "/v1/stats?" + "&".join("article=" + quote(a) for a in articles + ["read/none"])
        multi = self.get_both(q)
        self.assertEqual([x["article"] for x in multi["articles"]], articles + ["read/none"])
        # top: every metric and period, against brute force
        for mi, metric in enumerate(("views", "shares", "comments")):
            ranked = sorted(articles, key=lambda a: (-want[a][mi], a))
            for period in ("day", "week", "month", "all"):
                for limit in (3, 10, 100):
                    top = self.get_both("/v1/top?metric=%s&period=%s&limit=%d"
                                        % (metric, period, limit))
                    self.assertEqual(top["articles"],
                                     [{"article": a, "count": want[a][mi]}
                                      for a in ranked[:limit]], (metric, period, limit))
        # totals
        sums = [sum(w[i] for w in want.values()) for i in range(3)]
        for period in ("day", "week", "month", "all"):
            tot = self.get_both("/v1/totals?period=" + period)
            self.assertEqual((tot["views"], tot["shares"], tot["comments"]), tuple(sums), period)
        # series: today's daily point and the hourly points hold every event of today
        for a in articles[::7]:
            for metric, mi in (("views", 0), ("shares", 1), ("comments", 2)):
                s = self.get_both("/v1/series/%s?metric=%s&interval=day&from=%s&to=%s"
                                  % (quote(a), metric, day, day))
                self.assertEqual([p["value"] for p in s["points"]], [want[a][mi]], (a, metric))
                h = self.get_both("/v1/series/%s?metric=%s&interval=hour"
                                  % (quote(a), metric))
                if today() == day:
                    self.assertEqual(sum(p["value"] for p in h["points"]), want[a][mi])

    def test_02b_a_month_is_computed_once_for_every_collector_on_the_cluster(self):
        """Each bucket's part of a month's top list and totals is kept in the bucket's slot, on
        its master (src/scripts/kept.lua): of two fresh collectors on the cluster, the second
        answers what the first computed and computes nothing -- no ZUNION, HGETALL or SET on
        any master, one call of two GETs per bucket -- and both answer as brute force."""
        counts = {"kept/%02d" % i: 1 + i % 5 for i in range(40)}
        events = [{"type": "view", "article": a} for a, n in counts.items() for _ in range(n)]
        for i in range(0, len(events), 100):
            self.both(events[i:i + 100], n=len(events[i:i + 100]))
        # Folded (a read on the collector that acknowledged waits for it), before collectors
        # that did not acknowledge them read them.
        self.assertEqual(self.get_both("/v1/totals?period=day")["views"], sum(counts.values()))
        ranked = sorted(counts, key=lambda a: (-counts[a], a))
        want = {"/v1/top?period=month&limit=100":
                {"metric": "views", "period": "month",
                 "articles": [{"article": a, "count": counts[a]} for a in ranked]},
                "/v1/totals?period=month":
                {"period": "month", "views": sum(counts.values()), "shares": 0, "comments": 0,
                 "reads": 0, "engaged_seconds": 0}}

        def calls(taps):
            """{command: calls} the masters ran while TAPS (MONITOR on each) listened, the
            commands functions ran included, but TIME, the collectors' CLUSTER and PING,
            REPLCONF (each master's replica acknowledges the stream to it once a second,
            REPLCONF ACK, whatever the collectors do), and the journals' upkeep: every
            collector's heartbeat and look for journals gone, once a second, with what they
            ran."""
            time.sleep(0.5)  # the last lines in
            out = {}
            for tap in taps:
                upkeep = False
                for who, args in tap.commands():
                    name = args[0].decode().lower()
                    if who == b"lua":
                        if not upkeep and name != "time":
                            out[name] = out.get(name, 0) + 1
                        continue
                    f = re.match(rb"^tally_(.+)_[0-9a-f]+$", args[1]) \
                        if name in ("fcall", "fcall_ro") and len(args) > 1 else None
                    upkeep = f is not None and f.group(1) in (b"cheartbeat", b"cstale",
                                                              b"cgone", b"cdrop")
                    if not upkeep and name not in ("time", "cluster", "ping", "replconf",
                                                   "monitor"):
                        out[name] = out.get(name, 0) + 1
            return out

        collectors = []
        for _ in range(2):
            d = self.track(ClusterTallyd(CLUSTER, ["--view-window", "0"], threads=1))
            self.addCleanup(d.close)
            d.start()
            collectors.append(d)
        first, second = collectors
        # What the first computes is kept until the next whole minute of Redis's clock: one
        # near is waited out, so the second finds every part still kept.
        harness.wait_out_kept_boundary(CLUSTER.masters()[0].command, 15)
        for path, body in want.items():
            self.assertEqual(first.get(path).body, body, path)
            taps = [MonitorTap(m.port) for m in CLUSTER.masters()]
            try:
                self.assertEqual(second.get(path).body, body, path)
                ran = calls(taps)
            finally:
                for tap in taps:
                    tap.close()
            self.assertEqual(ran, {"fcall": 256, "get": 512}, path)

    def test_03_idempotency_key_replay_of_a_batch_over_many_buckets_counts_once(self):
        articles = ["idem/%03d" % i for i in range(100)]
        body = [{"type": "view", "article": a} for a in articles]
        h = {"Idempotency-Key": "cluster-batch-1"}
        first = self.t.post_events(body, h)
        self.assertEqual(first.status, 200, first)
        self.assertEqual(first.body, {"accepted": 100, "ignored": 0})
        for _ in range(3):
            again = self.t.post_events(body, h)
            self.assertEqual(again.status, 200, again)
            self.assertEqual(again.raw, first.raw)
        # one part marker per bucket the batch touched, each in its own bucket; one home
        # marker, settled with the body's digest and the answer
        parts = [k for keys in CLUSTER.all_keys("tally:*j:a:*:cluster-batch-1").values()
                 for k in keys]
        buckets = {k[2] for a in articles for k in self.articles_on_cluster(a)}
        self.assertEqual(len(parts), len(buckets), (len(parts), len(buckets)))
        self.assertEqual({re.match(rb"tally:\{(..)\}j:", k).group(1) for k in parts},
                         {b.encode() if isinstance(b, str) else b for b in buckets})
        self.assertGreater(len(buckets), 50)
        self.assertHomeMarkers("cluster-batch-1", {"a": "100,0,0,0"})
        q = "/v1/stats?" + "&".join("article=" + quote(a) for a in articles)
        r = self.t.get(q)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["views"] for x in r.body["articles"]], [1] * 100)
        # The same key sent by 8 clients at once: one count, the same answer for all.
        h2 = {"Idempotency-Key": "cluster-batch-2"}
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(lambda _: self.t.post_events(body, h2), range(8)))
        for a in answers:
            self.assertEqual((a.status, a.body), (200, {"accepted": 100, "ignored": 0}), a)
        r = self.t.get(q)
        self.assertEqual([x["views"] for x in r.body["articles"]], [2] * 100)

    def assertHomeMarkers(self, key, want):
        """KEY's home markers, once every one is settled, are WANT: {space: answer}; each
        holds the body's digest and the answer, and lives in the slot of its own name."""
        def settled():
            out = {}
            for node, keys in CLUSTER.all_keys("tally:*i:?:" + key).items():
                for k in keys:
                    self.assertEqual(CLUSTER.owner(CLUSTER.keyslot(k)), node, k)
                    v = node.command("GET", k)
                    if v is None or b" " not in v:
                        return None
                    out[k.split(b":")[-2][-1:].decode()] = v
            return out
        got = harness.wait_until(settled, message="home markers of %r settled" % key)
        self.assertEqual(set(got), set(want), got)
        for space, v in got.items():
            self.assertRegex(v, rb"^[0-9a-f]{16} " + re.escape(want[space].encode()) + rb"$")

    def test_03b_idempotency_key_names_one_body_of_one_sender(self):
        articles = ["idem-order/%02d" % i for i in range(30)]
        body = [{"type": "view", "article": a} for a in articles]
        h = {"Idempotency-Key": "cluster-order-1"}
        first = self.t.post_events(body, h)
        self.assertEqual((first.status, first.body), (200, {"accepted": 30, "ignored": 0}))
        # The same events in another order, or fewer of them: another body, nothing counted.
        for other in (list(reversed(body)), body[:10], body + [body[0]]):
            r = self.t.post_events(other, h)
            self.assertEqual(r.status, 422, r)
            self.assertEqual(r.body["error"], "idempotency_key_reused", r)
        again = self.t.post_events(body, h)
        self.assertEqual((again.status, again.raw), (200, first.raw))
        # The token holder's key of the same name is another request.
        tok = dict(h, **AUTH)
        for _ in range(2):
            r = self.t.post_events(list(reversed(body)), tok)
            self.assertEqual((r.status, r.body), (200, {"accepted": 30, "ignored": 0}), r)
        q = "/v1/stats?" + "&".join("article=" + quote(a) for a in articles)
        r = self.t.get(q)
        self.assertEqual([x["views"] for x in r.body["articles"]], [2] * 30)
        self.assertHomeMarkers("cluster-order-1", {"a": "30,0,0,0", "t": "30,0,0,0"})

    def test_03c_a_keyed_write_cut_short_after_its_claim_is_completed_once_by_a_retry(self):
        articles = ["idem-cut/%02d" % i for i in range(30)]
        body = [{"type": "view", "article": a} for a in articles]
        h = {"Idempotency-Key": "cluster-cut-1"}
        first = self.t.post_events(body, h)
        self.assertEqual((first.status, first.body), (200, {"accepted": 30, "ignored": 0}))
        self.assertHomeMarkers("cluster-cut-1", {"a": "30,0,0,0"})
        # As if the collector had died after the claim and a few parts: the home marker
        # pending (the digest alone), and five buckets' parts never written (every key of
        # those buckets gone, their part markers too).
        for node, keys in CLUSTER.all_keys("tally:*i:a:cluster-cut-1").items():
            for k in keys:
                digest = node.command("GET", k).split(b" ")[0]
                self.assertEqual(node.command("SET", k, digest, "KEEPTTL"), "OK")
        bucket = {a: self.articles_on_cluster(a)[0][2] for a in articles}
        lost = sorted(set(bucket.values()))[:5]
        for bb in lost:
            for node, keys in CLUSTER.all_keys("tally:{%s}*" % bb).items():
                for k in keys:
                    node.command("DEL", k)
        q = "/v1/stats?" + "&".join("article=" + quote(a) for a in articles)
        views = [x["views"] for x in self.t.get(q).body["articles"]]
        self.assertEqual(views, [0 if bucket[a] in lost else 1 for a in articles])
        # The retry writes the missing parts, the others answer from their markers.
        for _ in range(2):
            again = self.t.post_events(body, h)
            self.assertEqual((again.status, again.raw), (200, first.raw))
        self.assertEqual([x["views"] for x in self.t.get(q).body["articles"]], [1] * 30)
        self.assertHomeMarkers("cluster-cut-1", {"a": "30,0,0,0"})

    def test_04_comment_count_never_goes_below_zero(self):
        a, b = "floor/a", "floor/b"
        steps = [([{"type": "comment", "article": a, "delta": 1},
                   {"type": "comment", "article": a, "delta": -3}], 0, 0),
                 ([{"type": "comment", "article": a, "delta": 2}], 2, 0),
                 ([{"type": "comment", "article": b, "delta": -1},
                   {"type": "comment", "article": a, "delta": -5},
                   {"type": "comment", "article": a, "delta": 1},
                   {"type": "comment", "article": b, "delta": 4}], 1, 4),
                 ([{"type": "comment", "article": b, "delta": -1000}], 1, 0)]
        for body, wa, wb in steps:
            self.both(body, AUTH, n=len(body))
            self.assertEqual(self.get_both("/v1/stats/" + quote(a))["comments"], wa, body)
            self.assertEqual(self.get_both("/v1/stats/" + quote(b))["comments"], wb, body)
        r = self.t.post_events({"type": "comment", "article": a})
        self.assertEqual(r.status, 401, r)

    def test_05_delete_forgets_one_article_on_its_master(self):
        keep, gone = "del/keep", "del/gone"
        self.both([{"type": "view", "article": keep}] * 3 +
                  [{"type": "view", "article": gone}] * 5 +
                  [{"type": "share", "article": gone, "network": "email"}], AUTH, n=9)
        self.folded()
        self.assertTrue(self.articles_on_cluster(gone))
        r = self.t.request("DELETE", "/v1/articles/" + quote(gone))
        self.assertEqual(r.status, 401, r)
        for d in (self.tallyd, self.single):
            r = d.request("DELETE", "/v1/articles/" + quote(gone), headers=AUTH)
            self.assertEqual(r.status, 204, (d, r))
        self.assertEqual(self.get_both("/v1/stats/" + quote(gone)), harness.zero_stats(gone))
        self.assertEqual(self.articles_on_cluster(gone), [])
        self.assertEqual(self.get_both("/v1/stats/" + quote(keep))["views"], 3)
        top = self.get_both("/v1/top?metric=views&period=day&limit=100")
        self.assertEqual(top["articles"], [{"article": keep, "count": 3}])
        r = self.t.request("DELETE", "/v1/articles/" + quote("del/never"), headers=AUTH)
        self.assertEqual(r.status, 204, r)

    def test_05b_import_is_refused_on_a_cluster_and_lists_nothing(self):
        # An import's lines span many slots, and it is applied all at once: only on a single
        # Redis. On the cluster it is refused before a line is read, and nothing is written.
        body = b'{"article":"imp/a","views":5}\n{"article":"imp/b","comments":2}\n'
        headers = {"Idempotency-Key": "imp-1", "Content-Type": "application/x-ndjson", **AUTH}
        r = self.t.request("POST", "/v1/import", body, headers)
        self.assertEqual((r.status, r.body["error"]), (501, "not_implemented"), r)
        self.assertIn("Redis Cluster", r.body["message"])
        self.assertEqual(self.t.request("POST", "/v1/import", body,
                                        {"Idempotency-Key": "imp-1"}).status, 401)
        self.assertEqual(self.t.get("/v1/imports", AUTH).body, {"imports": []})
        # (The journals' registry is there: the collector's heartbeat, once a second.)
        self.assertEqual([k for ks in CLUSTER.all_keys("tally:{*").values() for k in ks
                          if k != b"tally:{00}r:journals"], [])
        r = self.single.request("POST", "/v1/import", body, headers)
        self.assertEqual((r.status, r.body), (200, {"imported": 2}), r)
        self.assertEqual(self.single.get("/v1/stats/imp%2Fa").body["views"], 5)

    def test_08_an_empty_top_list_is_200_and_empty(self):
        # Nothing counted yet (setUp flushed both): no bucket has a top list.
        for d in (self.tallyd, self.single):
            for metric in ("views", "shares"):
                r = d.get("/v1/top?metric=%s&period=all&limit=100" % metric)
                self.assertEqual((r.status, r.body),
                                 (200, {"metric": metric, "period": "all", "articles": []}),
                                 (d, r))

    # ---- where keys live ----

    def test_06_a_thousand_articles_spread_over_all_three_masters(self):
        articles = ["spread/%04d" % i for i in range(1000)]
        for i in range(0, 1000, 100):
            r = self.t.post_events([{"type": "view", "article": a} for a in articles[i:i + 100]])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, {"accepted": 100, "ignored": 0})
        self.folded()
        per = {m: len(keys) for m, keys in CLUSTER.all_keys("tally:{??}a:spread/*").items()}
        sys.stderr.write("\nspread of 1000 articles' totals keys: %s\n"
                         % ", ".join("%r %d" % kv for kv in per.items()))
        self.assertEqual(len(per), 3)
        self.assertEqual(sum(per.values()), 1000, per)
        for m, n in per.items():
            self.assertGreaterEqual(n, 200, (m, per))
            self.assertLessEqual(n, 470, (m, per))
        r = self.t.get("/v1/totals?period=day")
        self.assertEqual(r.body["views"], 1000, r)

    def test_06b_every_key_a_write_touches_is_declared(self):
        """A write unit declares the keys it touches -- only those of the metrics it counts --
        so that a slot being migrated refuses it whole: MONITOR on every master shows each
        command the write function ran, and its key must be among the unit's declared keys."""
        # Counted at once (--fold-interval 0): with a journal, writes without a key have their
        # views marked, then appended (test_40 checks the marks' keys).
        t = ClusterTallyd(CLUSTER, ["--view-window", "1800", "--fold-interval", "0",
                                    "--token", TOKEN])
        monitors = []
        try:
            t.start()
            for node in CLUSTER.masters():
                m = MonitorTap(node.port)
                monitors.append(m)
            writes = [
                [{"type": "view", "article": "declared/a"}],
                [{"type": "view", "article": "declared/a"}],  # a repeat within the window
                [{"type": "view", "article": "declared/b", "words": 900}],
                [{"type": "share", "article": "declared/c", "network": "email"}],
                [{"type": "comment", "article": "declared/d", "delta": 2}],
                [{"type": "comment", "article": "declared/e", "delta": -1}],  # floored: no change
                [{"type": "engage", "article": "declared/f", "seconds": 40, "read": True}],
                [{"type": "engage", "article": "declared/g", "seconds": 5, "read": False}],
                [{"type": "view", "article": "declared/h"},
                 {"type": "share", "article": "declared/h", "network": "reddit"},
                 {"type": "comment", "article": "declared/i", "delta": 1},
                 {"type": "engage", "article": "declared/j", "seconds": 9, "read": True}],
            ]
            for i, w in enumerate(writes):
                r = t.post_events(w, AUTH)
                self.assertEqual(r.status, 200, r)
                r = t.post_events(w, dict(AUTH, **{"Idempotency-Key": "declared-%d" % i}))
                self.assertEqual(r.status, 200, r)
            units = []
            for m in monitors:
                units += m.units()
        finally:
            for m in monitors:
                m.close()
            t.close()
        touched = set()
        for keys, inner in units:
            # The unit's own commands: the first reads its attempt marker, KEYS[1].
            self.assertEqual(inner[0][:2], [b"GET", keys[0]], (keys, inner))
            declared = set(keys)
            for cmd in inner:
                if cmd[0].upper() == b"TIME":
                    continue
                key = cmd[1]
                self.assertIn(key, declared, "%s of an undeclared key; declared: %r"
                              % (cmd[0].decode(), sorted(declared)))
                touched.add(re.sub(rb"^tally:\{..\}(.):([a-z]*).*", rb"\1:\2", key))
        # Every kind of key a write can touch was touched (and so checked).
        for kind in (b"x:", b"j:", b"a:", b"v:", b"w:", b"s:", b"d:views", b"h:views",
                     b"t:views", b"d:visitors", b"h:visitors", b"t:visitors", b"d:shares",
                     b"t:shares", b"d:comments", b"t:comments", b"d:engaged", b"t:engaged",
                     b"d:reads", b"h:reads", b"t:reads"):
            self.assertTrue(any(k.startswith(kind) for k in touched), (kind, sorted(touched)))
        # Only those: the units of declared/a's views declare no key of shares, comments or
        # engagement (one request per unit here: each was answered before the next went).
        views_only = [set(d) for d, _ in units if any(k.endswith(b"}a:declared/a") for k in d)]
        self.assertEqual(len(views_only), 4, units)
        for d in views_only:
            self.assertEqual([k for k in d if re.search(
                rb"\}[dht]:(shares|comments|engaged|reads)", k)], [], sorted(d))

        # The journal: with --view-window 0, a write without an Idempotency-Key and without a
        # comment is acknowledged by one entry of its worker's journal, in the journal's slot,
        # and counted later by folds: the ack declares its unit's keys (attempt marker,
        # journal, trimmed count), a fold's plan (cplan) the journal's keys, each bucket's
        # part (cpart) the cursor and every key counting its records may touch.
        self.check_journal_declares_every_key()

    def check_journal_declares_every_key(self):
        j = ClusterTallyd(CLUSTER, ["--view-window", "0", "--token", TOKEN] + list(SLOW))
        monitors = []
        articles = ["jdeclared/%02d" % i for i in range(30)]
        writes = [
            [{"type": "view", "article": "jdeclared/a"}],
            [{"type": "view", "article": "jdeclared/b", "words": 900}],
            [{"type": "share", "article": "jdeclared/c", "network": "email"}],
            [{"type": "engage", "article": "jdeclared/f", "seconds": 40, "read": True}],
            [{"type": "engage", "article": "jdeclared/g", "seconds": 5, "read": False}],
            [{"type": "view", "article": "jdeclared/h"},
             {"type": "share", "article": "jdeclared/h", "network": "reddit"},
             {"type": "engage", "article": "jdeclared/j", "seconds": 9, "read": True}],
            [{"type": "view", "article": a} for a in articles],  # many buckets in one entry
            [{"type": "view", "article": "jdeclared/gone"}] * 3,
        ]
        try:
            before = registered()
            j.start()
            self.track(j)
            wait_registered(j, before)
            for node in CLUSTER.masters():
                monitors.append(MonitorTap(node.port))
            for w in writes:
                r = j.post_events(w)
                self.assertEqual((r.status, r.body), (200, {"accepted": len(w), "ignored": 0}),
                                 r)
            held = journal_state(set(registered()) - set(before))[1]
            self.assertEqual(held.get("jdeclared/gone"), 3, held)
            # A DELETE folds every journal up to its last entry first (parts of the plan of
            # a journal it did not write, by the collector that received it) ...
            r = j.request("DELETE", "/v1/articles/jdeclared%2Fgone", headers=AUTH)
            self.assertEqual(r.status, 204, r)
            for w in writes[:6]:
                r = j.post_events(w)
                self.assertEqual(r.status, 200, r)
            # ... and a read folds what its collector acknowledged before it.
            got = read_views(j, articles + ["jdeclared/a", "jdeclared/h", "jdeclared/gone"])
            self.assertEqual(got, dict({a: 1 for a in articles}, **{
                "jdeclared/a": 2, "jdeclared/h": 2, "jdeclared/gone": 0}))
            calls = []
            for m in monitors:
                calls += m.calls()
        finally:
            for m in monitors:
                m.close()
            j.close()
        by = {}
        for name, keys, inner in calls:
            by.setdefault(name, []).append((keys, inner))
        # Every journaled write was acknowledged by one ack, none counted at once.
        self.assertEqual(len(by.get("ack", [])), len(writes) + 6, sorted(by))
        self.assertEqual(by.get("apply", []), [], "journaled writes counted at once")
        self.assertTrue(by.get("cplan") and by.get("cpart"), sorted(by))
        touched = {}
        for name in JOURNAL_FUNCTIONS:
            for keys, inner in by.get(name, []):
                declared = set(keys)
                # One slot: every declared key carries the same hash tag.
                self.assertEqual(len({re.match(rb"^tally:\{(..)\}", k).group(1)
                                      for k in keys}), 1, (name, keys))
                for cmd in inner:
                    if len(cmd) < 2 or cmd[0].upper() == b"TIME":
                        continue
                    self.assertIn(cmd[1], declared, "%s: %s of an undeclared key; declared: %r"
                                  % (name, cmd[0].decode(), sorted(declared)))
                    touched.setdefault(name, set()).add(
                        re.sub(rb"^tally:\{..\}(.):([a-z]*).*", rb"\1:\2", cmd[1]))
        # The ack declares its journal unit only: attempt marker, journal, trimmed count.
        for keys, _inner in by["ack"]:
            self.assertEqual(sorted(re.sub(rb"^tally:\{..\}(.):.*", rb"\1", k) for k in keys),
                             [b"n", b"q", b"x"], keys)
        for name, kinds in (("ack", (b"x:", b"q:")), ("cplan", (b"q:", b"p:"))):
            for kind in kinds:
                self.assertTrue(any(k.startswith(kind) for k in touched.get(name, ())),
                                (name, kind, sorted(touched.get(name, ()))))
        # Every kind of key a fold counts into was touched (and so checked).
        for kind in (b"f:", b"a:", b"v:", b"s:", b"d:views", b"h:views", b"t:views",
                     b"d:visitors", b"h:visitors", b"t:visitors", b"d:shares", b"t:shares",
                     b"d:engaged", b"t:engaged", b"d:reads", b"h:reads", b"t:reads"):
            self.assertTrue(any(k.startswith(kind) for k in touched.get("cpart", ())),
                            (kind, sorted(touched.get("cpart", ()))))

    def test_07_hostile_ids_keep_all_of_an_article_in_one_slot(self):
        ids = ["}x", "{a}b}", "{", "}", "{}", "{x}y", "x{y}", "{{}}", "a{}b", "}{", "tally:{00}a:",
               "{bb}", "\u00e9" * 128, "{" + "\u00e9" * 127 + "z", "{\u20ac}" * 51 + "{"]
        for i in ids:
            self.assertLessEqual(len(i.encode()), 256, i)
        self.assertEqual([len(i.encode()) for i in ids[-3:]], [256] * 3)
        events = []
        for n, i in enumerate(ids):
            events += [{"type": "view", "article": i}] * (n + 1)
            events.append({"type": "share", "article": i, "network": "reddit"})
        for i in range(0, len(events), 100):
            r = self.t.post_events(events[i:i + 100])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, {"accepted": len(events[i:i + 100]), "ignored": 0})
        self.folded()
        day_keys = {m: [k for k in keys if re.match(rb"^tally:\{..\}[dt]:views", k)]
                    for m, keys in CLUSTER.all_keys().items()}
        for n, i in enumerate(ids):
            with self.subTest(article=i):
                st = self.t.stats(i)
                self.assertEqual((st["views"], st["shares"]), (n + 1, 1), st)
                keys = self.articles_on_cluster(i)
                kinds = {k[3] for k in keys}
                self.assertTrue({"a", "v"} <= kinds, keys)
                nodes = {k[0] for k in keys}
                self.assertEqual(len(nodes), 1, "keys of %r on several masters: %r" % (i, keys))
                slots = {CLUSTER.keyslot(k[1]) for k in keys}
                self.assertEqual(len(slots), 1, "keys of %r in several slots: %r" % (i, keys))
                bucket = {k[2] for k in keys}
                self.assertEqual(len(bucket), 1, keys)
                self.assertEqual(slots, {CLUSTER.keyslot("{%s}" % bucket.pop())})
                # its entry in the top lists lives on the same master, in the same slot
                node = nodes.pop()
                tops = [k for k in day_keys[node] if CLUSTER.keyslot(k) in slots]
                self.assertTrue(tops, "no top list of %r's bucket on %r" % (i, node))
                self.assertTrue(any(node.command("ZSCORE", k, i) == str(n + 1).encode()
                                    for k in tops), (i, tops))
        top = self.t.get("/v1/top?metric=views&period=all&limit=100")
        self.assertEqual(top.body["articles"],
                         [{"article": i, "count": n + 1} for n, i in
                          sorted(enumerate(ids), key=lambda p: (-p[0], p[1]))])


# ---- The journal on the cluster ----

class ClusterJournalTest(ClusterTestCase):
    """The journal on the cluster (--view-window 0, writes without an Idempotency-Key and
    without comments): a write is acknowledged by one entry of its worker's journal,
    P{jj}q:<writer>, on a master the worker chose, and counted later per bucket by folds
    (cplan on the journal's master, cpart on each bucket's), exactly once. Exact counts:

      recovery   what a SIGKILLed collector acknowledged waits in its journals, and another
                 collector folds it within seconds of its heartbeats stopping; the dead
                 journals are then dropped and unregistered; two collectors under load, one
                 SIGKILLed mid-run: every 200 counted exactly once;
      freshness  a read on the collector that acknowledged shows it at once, another
                 collector within a second;
      follow     a write of an article read lately on the collector is counted in its
                 buckets before its 200, not journaled (the other tests turn that off:
                 --follow-reads 0);
      DELETE     on one collector, forgets what waited unfolded in another's journal."""

    def setUp(self):
        CLUSTER.wait_healthy(30.0)
        CLUSTER.flushall()

    def collector(self, *args, threads=2):
        """A collector on the cluster with its journals registered; every write through the
        journal unless ARGS give --follow-reads."""
        before = registered()
        if "--follow-reads" not in args:
            args += ("--follow-reads", "0")
        t = self.track(ClusterTallyd(CLUSTER, ["--view-window", "0", "--token", TOKEN] +
                                     list(args), threads=threads))
        self.addCleanup(t.close)
        t.start()
        t.journals = wait_registered(t, before)
        return t

    def post(self, t, body):
        """BODY posted to T (on a new connection: either worker may take it), answered 200."""
        with harness.KeepAliveClient(t.port) as c:
            ex = c.post_events(body)
        self.assertEqual((ex.status, ex.body), (200, {"accepted": len(body), "ignored": 0}), ex)

    @staticmethod
    def spread(rng, articles, n):
        """N views over ARTICLES at random: (body, {article: views})."""
        per = {}
        for _ in range(n):
            a = rng.choice(articles)
            per[a] = per.get(a, 0) + 1
        return [{"type": "view", "article": a} for a, k in per.items() for _ in range(k)], per

    def assertDropped(self, journals, timeout=5.0):
        """The JOURNALS are gone (their cursors and high-water marks stay: they expire, see
        left_behind()) and unregistered, within TIMEOUT."""
        def gone():
            left = [k for j in journals for k in left_behind(writer_of(j))]
            still = set(registered()) & set(journals)
            return (left, sorted(still)) if left or still else None
        deadline = time.monotonic() + timeout
        while True:
            left = gone()
            if left is None:
                return
            if time.monotonic() >= deadline:
                self.fail("journals of a collector gone not dropped within %.0f s: keys left "
                          "%r, still registered %r" % (timeout, left[0][:10], left[1]))
            time.sleep(0.1)

    # ---- recovery ----

    def test_20_a_killed_collectors_journal_is_folded_by_another(self):
        a = self.collector(*SLOW)
        self.assertEqual(len({on_owner_node(j) for j in a.journals}), 2,
                         "the two workers' journals on two masters: %r" % a.journals)
        rng = random.Random(20)
        articles = ["jkill/%02d" % i for i in range(40)]
        model, posts = {}, 0
        for _ in range(30):
            body, per = self.spread(rng, articles, rng.randint(1, 20))
            self.post(a, body)
            add_up(model, per)
            posts += 1
        a.stop(signal.SIGKILL)
        acked = time.monotonic()
        # Every acknowledged view waits in A's journals, one entry per POST, none counted.
        entries, held, buckets = journal_state(a.journals)
        self.assertEqual((entries, held), (posts, model))
        self.assertEqual(journal_state(), (entries, held, buckets))  # no other journal
        self.assertEqual(sum(on_owner(j, "XLEN", j) for j in a.journals), posts)
        self.assertGreaterEqual(len(buckets), 25, buckets)
        self.assertEqual(counted(model), {x: 0 for x in model})
        self.assertEqual(registered(), a.journals)

        b = self.collector()
        got = harness.eventually(lambda: read_views(b, sorted(model)), model,
                                 timeout=RECLAIM_SECONDS + 3)
        took = time.monotonic() - acked
        sys.stderr.write("\ncluster journal: a killed collector's %d entries counted %.2f s "
                         "after its last 200\n" % (posts, took))
        self.assertEqual(got, model)
        self.assertLessEqual(took, RECLAIM_SECONDS + 2)
        self.assertDropped(a.journals)
        self.assertEqual(registered(), b.journals)
        # The cursors stay, one in each bucket the entries touched, for two days.
        cursors = [k for j in a.journals for k in writer_keys(writer_of(j))
                   if re.match(rb"^tally:\{..\}f:", k)]
        self.assertEqual(sorted({re.match(rb"^tally:\{(..)\}", k).group(1).decode()
                                 for k in cursors}), sorted(buckets))
        for k in cursors:
            self.assertTrue(172000 <= on_owner(k, "TTL", k) <= 172800, k)
        # Counted once: nothing more comes later, through B or in Redis.
        time.sleep(1.5)
        self.assertEqual(read_views(b, sorted(model)), model)
        self.assertEqual(counted(model), model)
        self.assertEqual(journal_state()[:2], (0, {}))

    def test_21_two_collectors_under_load_one_killed(self):
        """Unkeyed clients, half on A (--fold-interval 10000: it folds nothing before it is
        killed, its load -- at most 3 x 400 requests of 6 views, paced -- stays below the 8,000
        events that start a fold at once), half on B; A is SIGKILLed mid-run and its clients
        go on with B. Every view A acknowledged waits in A's journals (with at
        most those of its requests left without an answer), every view B acknowledged is
        counted, and in the end each article counts exactly B's 200s plus what A's journals
        held."""
        a = self.collector(*SLOW)
        b = self.collector()
        clients, per_client, max_requests, max_at_a = 6, 4, 1000, 400
        lock = threading.Lock()
        ok = {"A": {}, "B": {}}
        maybe = {"A": {}, "B": {}}
        other = []  # (collector, exchange) of answers neither 200 nor from A's death
        state = {"killed": False}
        switched = []  # A's clients that met its death, and went on with B
        stop_at = time.monotonic() + 3.0

        def client(i):
            rng = random.Random(i)
            arts = ["jload/c%d/a%d" % (i, k) for k in range(per_client)]
            name, target = ("A", a) if i % 2 == 0 else ("B", b)
            cl = harness.KeepAliveClient(target.port, timeout=REQUEST_TIMEOUT)
            at_a = 0
            try:
                for _ in range(max_requests):
                    if time.monotonic() >= stop_at:
                        break
                    if name == "A":
                        if at_a >= max_at_a:
                            break  # and the test fails: A was to be killed before
                        at_a += 1
                        time.sleep(0.005)
                    body, per = view_events(rng, arts)
                    ex = cl.post_events(body)
                    with lock:
                        if ex.status == 200 and ex.body == {"accepted": len(body),
                                                            "ignored": 0}:
                            add_up(ok[name], per)
                            continue
                        if name == "A" and state["killed"]:
                            if ex.kind != "refused":  # it may have been appended
                                add_up(maybe["A"], per)
                        else:
                            other.append((name, ex))
                            add_up(maybe[name], per)
                    if name == "A" and state["killed"]:
                        cl.close()
                        with lock:
                            switched.append(i)
                        name, target = "B", b
                        cl = harness.KeepAliveClient(b.port, timeout=REQUEST_TIMEOUT)
                    else:
                        time.sleep(0.02)
            finally:
                cl.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(clients)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        with lock:
            state["killed"] = True
        a.stop(signal.SIGKILL)
        time.sleep(0.3)  # what A had sent Redis is in (or not)
        entries, held, _ = journal_state(a.journals)
        cursors = [k for j in a.journals for k in writer_keys(writer_of(j))
                   if re.match(rb"^tally:\{..\}f:", k)]
        for th in threads:
            th.join(max(0.0, stop_at + 2 * REQUEST_TIMEOUT - time.monotonic()))
            self.assertFalse(th.is_alive(), "a load client did not finish")
        sys.stderr.write("\ncluster journal: two collectors, A killed: A acknowledged %d "
                         "views (%d entries in its journals, %d views), B %d; unknown %d\n"
                         % (sum(ok["A"].values()), entries, sum(held.values()),
                            sum(ok["B"].values()), sum(maybe["A"].values())))
        self.assertEqual(other, [], "answers other than 200 but from the killed collector")
        self.assertEqual(sorted(switched), [0, 2, 4], "A was not killed mid-run")
        self.assertGreater(sum(ok["A"].values()), 0)
        self.assertGreater(sum(ok["B"].values()), 0)
        self.assertEqual(cursors, [], "A folded before it was killed: the test's premise")
        arts = sorted(set(ok["A"]) | set(ok["B"]) | set(maybe["A"]))
        # A's 200s all wait in its journals, and nothing else than what it may have taken.
        for x in arts:
            self.assertLessEqual(ok["A"].get(x, 0), held.get(x, 0), x)
            self.assertLessEqual(held.get(x, 0), ok["A"].get(x, 0) + maybe["A"].get(x, 0), x)
        self.assertEqual(set(held) - set(arts), set())
        want = {x: held.get(x, 0) + ok["B"].get(x, 0) for x in arts}
        got = harness.eventually(lambda: read_views(b, arts), want,
                                 timeout=RECLAIM_SECONDS + 4)
        self.assertEqual(got, want)
        self.assertDropped(a.journals)
        time.sleep(1.5)
        self.assertEqual(counted(arts), want)

    def test_24_a_collector_killed_again_and_again_while_folding(self):
        """A collector folding all the time (--fold-interval 5) under unkeyed load is SIGKILLed
        and started again, four times, so that kills fall between a plan's parts and its trim;
        another collector and the restarts fold what each left. Every article counts its 200s,
        plus at most the views of the requests a kill left without an answer: a plan's part
        counted twice would add hundreds."""
        b = self.collector()
        a = self.collector("--fold-interval", "5")
        checker = CounterChecker()
        dead, mid = [], []
        live = {"a": a, "stop_at": time.monotonic() + 3600}

        def client(i):
            rng = random.Random(100 + i)
            arts = ["jagain/c%d/a%d" % (i, k) for k in range(ARTICLES_PER_CLIENT)]
            with harness.KeepAliveClient(lambda: live["a"].port, timeout=REQUEST_TIMEOUT) as cl:
                for _ in range(MAX_OPS):
                    if time.monotonic() >= live["stop_at"]:
                        break
                    body, per = view_events(rng, arts)
                    ex = cl.post_events(body)
                    outcome = checker.classify(ex, len(body))
                    for x, n in per.items():
                        checker.record(x, n, outcome)
                    if outcome != "ok":
                        time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for th in threads:
            th.start()
        try:
            for _ in range(4):
                time.sleep(1.0)
                a.stop(signal.SIGKILL)
                dead += a.journals
                # A plan stored and a cursor already at its last id: killed mid-fold.
                for j in a.journals:
                    plan = on_owner(j, "GET", j.replace("}q:", "}p:", 1))
                    if plan is not None:
                        last = plan.split()[1]
                        if any(on_owner(k, "GET", k) == last
                               for k in writer_keys(writer_of(j))
                               if re.match(rb"^tally:\{..\}f:", k)):
                            mid.append(j)
                a = self.collector("--fold-interval", "5")
                live["a"] = a
            time.sleep(1.0)
        finally:
            live["stop_at"] = time.monotonic()
            for th in threads:
                th.join(2 * REQUEST_TIMEOUT)
        self.assertFalse(any(th.is_alive() for th in threads), "a load client did not finish")
        self.assertEqual(checker.unexpected, [], checker.unexpected[:5])
        bounds = checker.bounds()
        arts = sorted(bounds)
        self.assertGreater(sum(x["lower"] for x in bounds.values()), 0)

        def settled():
            v = read_views(b, arts)
            if v is None or set(journal_keys()) & set(dead):
                return None
            return v if all(bounds[x]["lower"] <= v[x] <= bounds[x]["upper"]
                            for x in arts) else None
        try:
            wait_until(settled, RECLAIM_SECONDS + 8, interval=0.2)
        except AssertionError:
            # The exact check below says what is wrong; what still waits says why.
            sys.stderr.write("\nnot settled: journals left %r\n" % sorted(
                (j, n.command("XLEN", j), n.command("GET", j.replace("}q:", "}p:", 1)))
                for j, n in journal_keys().items() if j in dead))
        # Counted in Redis: a collector's read may come from a worker's cache filled up to
        # TALLY_CACHE_TTL_MS before another collector's last fold (cache.h).
        views = counted(arts)
        sys.stderr.write("\ncluster journal: 4 kills while folding (%d of %d journals killed "
                         "mid-fold): %d views acknowledged, %d counted, %d at most\n"
                         % (len(mid), len(dead), sum(x["lower"] for x in bounds.values()),
                            sum(views.values()), sum(x["upper"] for x in bounds.values())))
        checker.check(views)
        self.assertDropped(dead)
        time.sleep(0.6)  # past TALLY_CACHE_TTL_MS: both collectors read what Redis holds
        self.assertEqual(read_views(a, arts), views)
        self.assertEqual(read_views(b, arts), views)

    # ---- freshness ----

    def test_22b_a_write_of_an_article_read_lately_is_counted_in_its_buckets(self):
        a = self.collector(*SLOW, "--follow-reads", "400")
        arts = ["jfollow/a", "jfollow/b", "jfollow/c"]
        view = lambda x, n: [{"type": "view", "article": x}] * n
        self.post(a, view("jfollow/a", 2))
        self.assertEqual(journal_state(a.journals)[:2], (1, {"jfollow/a": 2}))
        self.assertEqual(read_views(a, ["jfollow/a"]), {"jfollow/a": 2})
        held = journal_state(a.journals)[:2]  # a plan's entries go with the next plan
        # jfollow/a was read: a request with it is counted at once in its buckets, whole.
        self.post(a, view("jfollow/a", 3) + view("jfollow/b", 1))
        self.assertEqual(counted(arts), {"jfollow/a": 5, "jfollow/b": 1, "jfollow/c": 0})
        self.assertEqual(journal_state(a.journals)[:2], held, "nothing appended")
        self.assertEqual(harness.metric(a.metrics(), "tally_writes_at_once_total"), 1)
        # An article never read takes the journal.
        self.post(a, view("jfollow/c", 2))
        entries, now_held, _ = journal_state(a.journals)
        self.assertEqual((entries, now_held.get("jfollow/c")), (held[0] + 1, 2))
        self.assertEqual(counted(arts)["jfollow/c"], 0)
        # Past --follow-reads since its read, jfollow/a's writes take the journal again.
        time.sleep(0.5)
        self.post(a, view("jfollow/a", 1))
        entries2, held2, _ = journal_state(a.journals)
        self.assertEqual((entries2, held2.get("jfollow/a", 0)),
                         (entries + 1, now_held.get("jfollow/a", 0) + 1))
        self.assertEqual(counted(arts)["jfollow/a"], 5)
        self.assertEqual(harness.metric(a.metrics(), "tally_writes_at_once_total"), 1)
        self.assertEqual(read_views(a, arts), {"jfollow/a": 6, "jfollow/b": 1, "jfollow/c": 2})

    def test_22c_a_write_with_stats_1_is_counted_in_its_buckets_and_answered_with_them(self):
        a = self.collector(*SLOW, "--follow-reads", "10000")
        arts = ["jstats/a", "jstats/b"]
        body = [{"type": "view", "article": "jstats/a"}] * 2 + [{"type": "view", "article": "jstats/b"}]
        r = a.request("POST", "/v1/events?stats=1", harness.encode_body(body),
                      {"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(x["article"], x["views"]) for x in r.body["articles"]],
                         [("jstats/a", 2), ("jstats/b", 1)])
        self.assertEqual(counted(arts), {"jstats/a": 2, "jstats/b": 1})
        self.assertEqual(journal_state(a.journals)[:2], (0, {}))
        self.assertEqual(harness.metric(a.metrics(), "tally_writes_at_once_total"), 1)

    def test_22_a_read_on_the_acknowledging_collector_shows_it_at_once(self):
        a = self.collector(*SLOW)
        articles = ["jfresh/%02d" % i for i in range(24)]
        model = {x: 0 for x in articles}
        rng = random.Random(22)
        one = articles[5]
        q = "&".join("article=" + quote(x) for x in articles)
        reads = [
            ("/v1/stats/" + quote(one), lambda r: r.body["views"] == model[one]),
            ("/v1/stats?" + q,
             lambda r: {x["article"]: x["views"] for x in r.body["articles"]} == model),
            ("/v1/top?metric=views&period=day&limit=100",
             lambda r: {x["article"]: x["count"] for x in r.body["articles"]} ==
             {x: v for x, v in model.items() if v}),
            ("/v1/totals?period=day", lambda r: r.body["views"] == sum(model.values())),
            ("/v1/series/%s?metric=views&interval=hour" % quote(one),
             lambda r: sum(p["value"] for p in r.body["points"]) == model[one]),
            ("/v1/badge/%s.svg" % quote(one), lambda r: (b">%d<" % model[one]) in r.raw),
        ]
        for path, check in reads:
            with self.subTest(path=path):
                before = counted(articles)
                for _ in range(4):
                    body, per = self.spread(rng, articles, rng.randint(1, 12))
                    body.append({"type": "view", "article": one})
                    add_up(per, {one: 1})
                    self.post(a, body)
                    add_up(model, per)
                entries, held, _ = journal_state(a.journals)
                self.assertGreaterEqual(entries, 4)
                self.assertGreaterEqual(held.get(one, 0), 4, held)
                self.assertEqual(counted(articles), before, "folded by the clock")
                r = a.get(path)  # once, on a connection of its own
                self.assertEqual(r.status, 200, r)
                self.assertTrue(check(r), "%s: %r, want %r" % (path, r.raw[:400], model))
        # Through another collector: within a second.
        b = self.collector()
        lags = []
        for i in range(1, 6):
            body, per = self.spread(rng, articles, 5)
            body.append({"type": "view", "article": one})
            add_up(per, {one: 1})
            self.post(b, body)
            add_up(model, per)
            start = time.monotonic()
            got = harness.eventually(lambda: read_views(a, articles), model)
            lags.append(time.monotonic() - start)
            self.assertEqual(got, model)
        sys.stderr.write("\ncluster journal: lag of another collector's reads %s s\n"
                         % " ".join("%.3f" % x for x in lags))
        self.assertLessEqual(max(lags), harness.FOLD_SECONDS)

    def test_29_a_late_unit_never_lands_in_a_journal_taken_for_gone(self):
        """A unit put in the journal's lane while the journal was registered, held back (its
        master out of reach) until its heartbeats had failed for 5 s and another collector had
        folded, dropped and unregistered the journal, must not make the journal anew out of
        the registry -- where nobody folds it once its writer dies. A's Redis user is turned
        off on the journal's master, then on the registry's ({00}'s): A's heartbeats fail, the
        unit waits (--hold 20000). Its events go to their buckets instead (on the third
        master), and are counted after A is killed, exactly once."""
        b = self.collector()
        for n in CLUSTER.nodes:
            n.command("ACL", "SETUSER", "late", "reset", "on", ">late-s3cret", "~*", "&*",
                      "+@all")
            self.addCleanup(n.command, "ACL", "DELUSER", "late")
        hub = on_owner_node(REGISTRY)
        for _ in range(12):  # a journal's master is picked at random: not the registry's
            a = self.track(ClusterTallyd(CLUSTER, ["--view-window", "0", "--token", TOKEN,
                                                   "--hold", "20000"] + list(SLOW),
                                         threads=1, credentials="late:late-s3cret@"))
            self.addCleanup(a.close)
            a.start()
            a.journals = wait_registered(a, b.journals)
            if on_owner_node(a.journals[0]) is not hub:
                break
            a.stop(signal.SIGKILL)
            self.assertDropped(a.journals, timeout=RECLAIM_SECONDS + 4)
        journal = a.journals[0]
        home = on_owner_node(journal)
        self.assertIsNot(home, hub)
        third = next(m for m in CLUSTER.masters() if m is not home and m is not hub)
        owners, on_third = {}, []
        for i in range(2000):
            bb = bucket("jlate/%d" % i)
            if bb not in owners:
                owners[bb] = CLUSTER.owner(CLUSTER.keyslot("tally:{%s}a:x" % bb))
            if owners[bb] is third and len(on_third) < 3:
                on_third.append("jlate/%d" % i)
        self.post(a, [{"type": "view", "article": on_third[0]}])
        self.assertEqual(home.command("XLEN", journal), 1)  # it journals

        def off(node):
            node.command("ACL", "SETUSER", "late", "off")
            node.command("CLIENT", "KILL", "USER", "late")
        off(home)
        late = concurrent.futures.ThreadPoolExecutor(1)
        self.addCleanup(late.shutdown)
        body = [{"type": "view", "article": x} for x in on_third for _ in range(2)]
        answer = late.submit(lambda: a.post_events(body, timeout=30))
        time.sleep(0.3)  # taken while the journal is registered: it waits in the journal's lane
        off(hub)
        # B takes the journal for gone: folds the first entry, drops it, unregisters it.
        self.assertDropped([journal], timeout=RECLAIM_SECONDS + 4)
        home.command("ACL", "SETUSER", "late", "on")
        r = answer.result(timeout=30)
        self.assertEqual((r.status, r.body), (200, {"accepted": 6, "ignored": 0}), r)
        a.stop(signal.SIGKILL)
        want = {on_third[0]: 3, on_third[1]: 2, on_third[2]: 2}
        got = harness.eventually(lambda: counted(on_third), want, timeout=RECLAIM_SECONDS + 2)
        self.assertEqual(got, want)
        # No journal outside the registry: none would ever be folded.
        self.assertEqual(set(journal_keys()) - set(registered()), set())
        self.assertEqual(registered(), b.journals)

    # ---- DELETE ----

    def test_25_a_plan_over_entries_a_bucket_counted_counts_them_once(self):
        """The journal's master fails over before a trim reaches its replica (Redis
        replicates asynchronously): the promoted journal holds entries whose parts a bucket
        counted already (its cursor at the last of them), and the next plan takes them with
        new ones. Simulated on the live journal: the folded entries are put back as they were
        before their trim. The part answers "overlap", the collector plans again up to the
        cursor, and the article counts each view once: 5, not 7."""
        t = self.collector("--fold-interval", "10000", threads=1)
        journal = t.journals[0]
        node = on_owner_node(journal)
        art = "overlap/a"
        for _ in range(2):
            self.post(t, [{"type": "view", "article": art}])
        entries = node.command("XRANGE", journal, "-", "+")
        self.assertEqual(len(entries), 2, entries)
        self.assertEqual(read_views(t, [art]), {art: 2})  # the read folds them: one plan
        self.assertEqual(node.command("XLEN", journal), 0)
        cursor = [k for k in writer_keys(writer_of(journal))
                  if re.match(rb"^tally:\{..\}f:", k)]
        self.assertEqual(len(cursor), 1, cursor)
        self.assertEqual(on_owner(cursor[0].decode(), "GET", cursor[0]), entries[1][0])
        # What a replica that missed the trim holds: the entries, in a journal whose ids go
        # on from them.
        node.command("DEL", journal)
        for entry_id, fields in entries:
            node.command("XADD", journal, entry_id, *fields)
        for _ in range(3):
            self.post(t, [{"type": "view", "article": art}])
        self.assertEqual(node.command("XLEN", journal), 5)
        # The collector knows of 3 entries: its plan takes the oldest 3, over the cursor.
        self.assertEqual(read_views(t, [art]), {art: 5})
        self.assertEqual(counted([art]), {art: 5})
        self.assertEqual(node.command("XLEN", journal), 0)
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_stale_total"), 1.0)

    def test_28_a_fold_counts_the_workers_own_merge(self):
        """A worker merges what it acknowledged, per article and hour, as the acks come back:
        when the journal starts with exactly those entries, the fold's plan is that batch
        (cplan reads none of their records) and each bucket's part comes from the merge --
        one plan, counted exactly (tally_fold_merged_total). An entry the worker does not
        know of at the journal's start (another's append) makes the plan come from the
        journal instead: counted exactly too, nothing from the merge."""
        t = self.collector(*SLOW, threads=1)
        journal = t.journals[0]
        node = on_owner_node(journal)
        rng = random.Random(28)
        articles = ["jmerge/%02d" % i for i in range(40)]
        model = {x: 0 for x in articles}
        for _ in range(6):
            body, per = self.spread(rng, articles, rng.randint(5, 20))
            self.post(t, body)
            add_up(model, per)
        entries, held, buckets = journal_state(t.journals)
        self.assertEqual((entries, held), (6, {a: v for a, v in model.items() if v}))
        self.assertGreaterEqual(len(buckets), 10)
        first = node.command("XRANGE", journal, "-", "+", "COUNT", 1)[0][1]
        self.assertEqual(read_views(t, articles), model)  # the read folds them: one plan
        self.assertEqual(counted(articles), model)
        self.assertEqual(node.command("XLEN", journal), 0)
        m = t.metrics()
        self.assertEqual(harness.metric(m, "tally_folds_total"), 1)
        self.assertEqual(harness.metric(m, "tally_fold_entries_total"), 6)
        self.assertEqual(harness.metric(m, "tally_fold_merged_total"), 1)
        # Another's entry first (the first entry's fields, another unit), then two of its own.
        f = dict(zip(first[::2], first[1::2]))
        f[b"u"] = f[b"u"] + b"-other"
        node.command("XADD", journal, "*", *[x for kv in f.items() for x in kv])
        for _, article, v in harness.journal_entry_records(f[b"a"].decode()):
            model[article] += v
        for _ in range(2):
            body, per = self.spread(rng, articles, 7)
            self.post(t, body)
            add_up(model, per)
        self.assertEqual(node.command("XLEN", journal), 3)
        self.assertEqual(read_views(t, articles), model)
        self.assertEqual(counted(articles), model)
        self.assertEqual(node.command("XLEN", journal), 0)
        self.assertEqual(harness.metric(t.metrics(), "tally_fold_merged_total"), 1)

    def post_rounds(self, t, seed, keep, rounds, views, gone, repeat):
        """ROUNDS POSTs to T, each of VIEWS views drawn over KEEP (random.Random(SEED)) and
        REPEAT views of each article of GONE. Returns {article of KEEP: views} (0 for none)."""
        model = {x: 0 for x in keep}
        rng = random.Random(seed)
        for _ in range(rounds):
            body, per = self.spread(rng, keep, views)
            self.post(t, body + [{"type": "view", "article": x} for x in gone
                                 for _ in range(repeat)])
            add_up(model, per)
        return model

    def test_23_delete_forgets_what_waited_in_another_collectors_journal(self):
        a = self.collector(*SLOW)
        b = self.collector()
        gone = "jdel/gone"
        keep = ["jdel/keep%02d" % i for i in range(12)]
        model = self.post_rounds(a, 23, keep, 6, 8, [gone], 5)
        entries, held, _ = journal_state(a.journals)
        self.assertEqual((entries, held), (6, dict({x: v for x, v in model.items() if v},
                                                   **{gone: 30})))
        self.assertEqual(counted(keep + [gone]), {x: 0 for x in keep + [gone]})
        steps = drain_steps(a.journals)
        r = b.request("DELETE", "/v1/articles/" + quote(gone), headers=AUTH)
        self.assertEqual(r.status, 204, r)
        # What A acknowledged before the DELETE was folded first: nothing of it waits.
        self.assertEqual(journal_state(a.journals)[:2], (0, {}))
        self.assertEqual(harness.metric(b.metrics(), "tally_forget_steps_total"), steps)
        self.assertEqual(harness.metric(a.metrics(), "tally_forget_steps_total"), 0)
        self.assertEqual([k for ks in CLUSTER.all_keys().values() for k in ks
                          if (article_of_key(k) or (0, 0, None))[2] == gone.encode()], [])
        self.assertEqual(counted(keep), model)
        self.assertEqual(read_views(b, keep + [gone]), dict(model, **{gone: 0}))
        # A folds what it believes waits: nothing comes back.
        self.assertEqual(read_views(a, keep + [gone]), dict(model, **{gone: 0}))
        self.assertEqual(counted([gone]), {gone: 0})
        # And a view after the DELETE counts.
        self.post(a, [{"type": "view", "article": gone}])
        self.assertEqual(read_views(a, [gone]), {gone: 1})
        self.assertEqual(harness.eventually(lambda: read_views(b, [gone]), {gone: 1}),
                         {gone: 1})
        self.assertEqual(read_views(b, keep), model)

    def delete_and_check(self, t, a, gone, keep, model):
        """DELETE GONE through T answers 204, and forgets exactly: what A acknowledged before
        it was folded first, nothing of GONE is left, the KEEP articles count MODEL."""
        r = t.request("DELETE", "/v1/articles/" + quote(gone), headers=AUTH)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(journal_state(a.journals)[:2], (0, {}))
        self.assertEqual([k for ks in CLUSTER.all_keys().values() for k in ks
                          if (article_of_key(k) or (0, 0, None))[2] == gone.encode()], [])
        self.assertEqual(counted(keep + [gone]), dict(model, **{gone: 0}))

    def test_26_delete_while_the_registrys_slot_is_half_moved(self):
        """The registry's slot {00} half-moved to another master (IMPORTING, MIGRATING, its
        keys MIGRATEd): its old master answers the DELETE's read of the registry with ASK,
        which the collector follows. Nothing else of the test is in that slot: a fold's or a
        forget's call there, of several keys not all moved, would be answered TRYAGAIN."""
        registry_slot = CLUSTER.keyslot(REGISTRY)
        for _ in range(12):
            # A's journal takes the first bucket of a master picked at random: {00} on the
            # registry's master.
            a = self.collector(*SLOW, threads=1)
            if CLUSTER.keyslot(a.journals[0]) != registry_slot:
                break
            a.close()
        else:
            self.fail("a collector's journal was in the registry's slot 12 times in a row")
        b = self.collector()
        # No article in bucket 00, the registry's: their parts and the forget go elsewhere.
        names = [x for x in ("jask/%02d" % i for i in range(20)) if test_reports.bucket(x) != "00"]
        gone, keep = names[0], names[1:7]
        model = self.post_rounds(a, 26, keep, 4, 6, [gone], 3)
        self.assertEqual(journal_state(a.journals)[:2],
                         (4, dict({x: v for x, v in model.items() if v}, **{gone: 12})))
        steps = drain_steps(a.journals)
        source = on_owner_node(REGISTRY)
        target = [m for m in CLUSTER.masters() if m is not source][0]
        self.assertGreaterEqual(open_move(registry_slot, source, target), 1)
        self.addCleanup(close_move, registry_slot, source, target)
        with self.assertRaisesRegex(harness.RespError, "^ASK %d " % registry_slot):
            source.command("ZRANGE", REGISTRY, 0, -1)
        self.delete_and_check(b, a, gone, keep, model)
        close_move(registry_slot, source, target)
        self.assertEqual(harness.metric(b.metrics(), "tally_forget_steps_total"), steps)
        self.assertEqual(read_views(b, keep + [gone]), dict(model, **{gone: 0}))

    def test_27_delete_after_the_slots_of_a_journal_and_the_registry_moved(self):
        """The slot of a journal with entries moved to another master, then the registry's:
        the collector taking each DELETE has not heard of it (nothing it wrote or read went
        there since), so its read of the journal's last entry, then of the registry, is
        answered MOVED, which it follows."""
        a = self.collector(*SLOW, threads=1)
        b = self.collector()
        journal_slot, registry_slot = CLUSTER.keyslot(a.journals[0]), CLUSTER.keyslot(REGISTRY)
        gone = ["jmoved/gone1", "jmoved/gone2"]
        keep = ["jmoved/keep%02d" % i for i in range(6)]
        model = self.post_rounds(a, 27, keep, 4, 6, gone, 1)
        self.assertEqual(journal_state(a.journals)[:2],
                         (4, dict({x: v for x, v in model.items() if v}, **{x: 4 for x in gone})))
        steps = drain_steps(a.journals)
        move_slot(journal_slot)
        self.delete_and_check(b, a, gone[0], keep, model)
        self.assertEqual(harness.metric(b.metrics(), "tally_forget_steps_total"), steps)
        if registry_slot != journal_slot:
            move_slot(registry_slot)
        self.delete_and_check(b, a, gone[1], keep, model)
        # Nothing waited in A's journal then: no fold call.
        self.assertEqual(harness.metric(b.metrics(), "tally_forget_steps_total"), steps)
        self.assertEqual(read_views(b, keep + gone), dict(model, **{x: 0 for x in gone}))

    def test_33_a_stop_drops_its_journal_after_its_slot_moved(self):
        """A collector's journal, folded empty, its slot then moved to another master while
        the collector sent nothing there (its slot map still names the old one): at SIGTERM
        the drop of the emptied journal (cdrop) is answered MOVED, which it follows; the
        journal's keys go, it leaves the registry, and the counts stay."""
        a = self.collector_off_registry()
        keep = ["jdrop/%02d" % i for i in range(6)]
        body, model = self.spread(random.Random(33), keep, 10)
        self.post(a, body)
        model = dict({x: 0 for x in keep}, **model)
        harness.eventually(lambda: counted(keep), model, timeout=3.0)
        wait_until(lambda: journal_state(a.journals)[0] == 0, 3.0, message="not trimmed")
        journal = a.journals[0]
        self.assertIn(journal, journal_keys())  # emptied, not dropped while its writer lives
        source, target = move_slot(CLUSTER.keyslot(journal))
        self.assertIs(on_owner_node(journal), target)

        self.assertEqual(a.stop(), 0)
        self.assertNotIn(journal, journal_keys())
        self.assertNotIn(journal, registered())
        self.assertEqual(left_behind(writer_of(journal)), [])
        self.assertNotIn("refused", a.log())
        self.assertEqual(counted(keep), model)

    def test_34_a_stop_waits_for_its_folds_parts(self):
        """SIGTERM while a fold's parts wait on a master that does not answer (SIGSTOPped
        for 0.8 s, less than the cluster's node timeout): the planned entries are still the
        journal's (backlog) until the plan after the parts trims them, so the collector waits
        for the parts and that plan before it drops its journal -- it exits with its journal
        emptied, dropped and out of the registry, every view counted, rather than leaving it
        for another collector to fold 5 s later."""
        a = self.collector_off_registry(*SLOW)
        journal = a.journals[0]
        busy = {on_owner_node(journal), on_owner_node(REGISTRY)}
        parts = [m for m in CLUSTER.masters() if m not in busy][0]
        keep = [x for x in ("jwait/%02d" % i for i in range(200))
                if on_owner_node("tally:{%s}a:x" % bucket(x)) is parts][:6]
        self.assertEqual(len(keep), 6)
        body, model = self.spread(random.Random(34), keep, 12)
        self.post(a, body)
        model = dict({x: 0 for x in keep}, **model)
        self.assertEqual(counted(keep), {x: 0 for x in keep})

        harness._signal_pid(parts.proc, signal.SIGSTOP)
        try:
            a.send_signal(signal.SIGTERM)
            time.sleep(0.8)
            self.assertIsNone(a.wait(0), "the collector did not wait for its fold's parts")
        finally:
            harness._signal_pid(parts.proc, signal.SIGCONT)
        self.assertEqual(a.wait(10.0), 0)
        self.assertEqual(counted(keep), model)
        self.assertNotIn(journal, registered())
        self.assertNotIn(journal, journal_keys())

    # ---- A repeat-view window: views marked in their buckets, then journaled ----

    def marking(self, *args, threads=2):
        """A collector with the default repeat-view window, its readers told apart by the
        X-Forwarded-For of each request (see view())."""
        return self.collector("--view-window", "1800", "--trust-proxy", "127.0.0.1", *args,
                              threads=threads)

    def view(self, t, body, addr, want, status=200):
        """BODY posted to T as the reader at ADDR, answered STATUS (200: with the body WANT)."""
        r = t.post_events(body, {"X-Forwarded-For": addr, "User-Agent": READER_UA})
        if status == 200:
            self.assertEqual((r.status, r.body), (200, want), r)
        else:
            self.assertEqual(r.status, status, r)

    @staticmethod
    def window_ids(article):
        """The visitor ids ARTICLE's repeat-view hashes hold (every window-long slot's)."""
        ids = set()
        pattern = "tally:{??}w:%s:*" % harness.glob_escape(article)
        for m, keys in CLUSTER.all_keys(pattern).items():
            for k in keys:
                ids |= {f.decode() for f in m.command("HKEYS", k)} - {"_"}
        return ids

    def test_40_views_with_a_window_are_marked_in_their_buckets_then_journaled(self):
        """With --view-window above 0 a write's views are checked in their buckets first (the
        mark function: each view against the window, remembered there when it is no repeat,
        nothing counted), then what is no repeat is appended to the worker's journal and
        counted by its folds: the answers say which views were repeats, the journal holds
        exactly the others, the buckets remember exactly the readers, the counts and the
        visitor estimates come out exact. Every command a mark ran names a key it declared."""
        a = self.marking(*SLOW, threads=1)
        arts = []
        for x in ("jmark/%02d" % i for i in range(40)):
            if bucket(x) not in {bucket(y) for y in arts}:
                arts.append(x)
        arts = arts[:3]
        A, B, C = arts
        readers = ["10.40.0.%d" % i for i in range(1, 7)]
        monitors = [MonitorTap(m.port) for m in CLUSTER.masters()]
        try:
            for addr in readers[:5]:
                self.view(a, [{"type": "view", "article": A}], addr, {"accepted": 1, "ignored": 0})
            self.view(a, [{"type": "view", "article": A}], readers[0],
                      {"accepted": 0, "ignored": 1, "ignored_reasons": {"repeat": 1}})
            self.view(a, [{"type": "view", "article": x} for x in (B, C, A, B)], readers[5],
                      {"accepted": 3, "ignored": 1, "ignored_reasons": {"repeat": 1}})
            entries, held, _ = journal_state(a.journals)
            self.assertEqual((entries, held), (6, {A: 6, B: 1, C: 1}))  # no entry of repeats
            self.assertEqual(counted(arts), {A: 0, B: 0, C: 0})  # not counted at once
            calls = [c for m in monitors for c in m.calls()]
        finally:
            for m in monitors:
                m.close()
        owner = _OwnerRedis()
        ids = {A: harness.reader_ids(owner, A, [(x, READER_UA) for x in readers]),
               B: harness.reader_ids(owner, B, [(readers[5], READER_UA)]),
               C: harness.reader_ids(owner, C, [(readers[5], READER_UA)])}
        for x in arts:
            self.assertEqual(self.window_ids(x), set(ids[x]), x)
        marks = [(keys, inner) for name, keys, inner in calls if name == "mark"]
        # One mark per write and bucket: six writes of A alone, then the batch's three buckets.
        self.assertEqual(len(marks), 6 + 3, [name for name, _, _ in calls])
        for keys, inner in marks:
            for cmd in inner:
                if cmd[0].upper() != b"TIME":
                    self.assertIn(cmd[1], set(keys), (cmd, keys))
        self.assertEqual([name for name, _, _ in calls if name == "apply"], [])
        # A read on the collector waits for its folds: exact at once.
        for x, views in ((A, 6), (B, 1), (C, 1)):
            st = a.stats(x)
            self.assertEqual((st["views"], st["visitors"]),
                             (views, harness.distinct_estimate(owner, ids[x])), x)
        self.assertEqual(counted(arts), {A: 6, B: 1, C: 1})

    def test_41_a_view_whose_append_failed_is_no_repeat_when_sent_again(self):
        """A view marked in its bucket whose append then surely failed (here the journal's
        slot half-moved: TRYAGAIN, nothing ran) is answered 503 and its mark forgotten
        (unmark): sent again, it counts -- it is no repeat of a view never counted."""
        a = self.collector_off_registry("--view-window", "1800", "--trust-proxy", "127.0.0.1",
                                        *SLOW)
        journal = a.journals[0]
        art = [x for x in ("junmark/%02d" % i for i in range(60))
               if CLUSTER.keyslot("tally:{%s}a:x" % bucket(x)) != CLUSTER.keyslot(journal)][0]
        source, slot = on_owner_node(journal), CLUSTER.keyslot(journal)
        self.half_move(slot, source)
        self.view(a, [{"type": "view", "article": art}], "10.41.0.1", None, status=503)
        self.assertEqual(self.window_ids(art), set())
        self.view(a, [{"type": "view", "article": art}], "10.41.0.1",
                  {"accepted": 1, "ignored": 0})
        self.assertEqual(counted([art]), {art: 1})  # the journal moving: counted at once
        self.assertEqual(len(self.window_ids(art)), 1)

    def test_42_a_write_whose_other_mark_failed_forgets_the_marks_that_ran(self):
        """A batch over two buckets whose mark ran in one and was refused in the other (its
        master refusing writes: NOREPLICAS) counted nothing: it is answered 503 and the mark
        that ran is forgotten, so that the batch sent again counts both views."""
        a = self.collector_off_registry("--view-window", "1800", "--trust-proxy", "127.0.0.1",
                                        "--hold", "200", "--redis-timeout", "600", *SLOW)
        busy = {on_owner_node(a.journals[0]).port, on_owner_node(REGISTRY).port}
        refusing = [m for m in CLUSTER.masters() if m.port not in busy][0]
        names = ["jpart/%02d" % i for i in range(80)]
        on_refusing = [x for x in names if on_owner_node("tally:{%s}a:x" % bucket(x)) is refusing]
        elsewhere = [x for x in names if on_owner_node("tally:{%s}a:x" % bucket(x)) is not refusing]
        x, y = on_refusing[0], elsewhere[0]
        body = [{"type": "view", "article": x}, {"type": "view", "article": y}]
        refusing.command("CONFIG", "SET", "min-replicas-to-write", "5")
        self.addCleanup(refusing.command, "CONFIG", "SET", "min-replicas-to-write", "0")
        self.view(a, body, "10.42.0.1", None, status=503)
        self.assertEqual((self.window_ids(x), self.window_ids(y)), (set(), set()))
        refusing.command("CONFIG", "SET", "min-replicas-to-write", "0")
        self.view(a, body, "10.42.0.1", {"accepted": 2, "ignored": 0})
        self.assertEqual(journal_state(a.journals)[1], {x: 1, y: 1})
        self.assertEqual(a.stats(x)["views"] + a.stats(y)["views"], 2)

    # ---- The registry's slot moving ----

    def half_move(self, slot, source):
        """SLOT half-moved from SOURCE to another master (open_move()), and its move ended
        and undone after the test (SLOT is SOURCE's again). Returns (the other master, the keys
        moved)."""
        target = [m for m in CLUSTER.masters() if m is not source][0]

        def restore():
            close_move(slot, source, target)
            open_move(slot, target, source)
            close_move(slot, target, source)
        self.addCleanup(restore)
        return target, open_move(slot, source, target)

    def collector_off_registry(self, *args):
        """A collector of one worker whose journal is not in the registry's slot (its tag is
        the first bucket of a master picked at random: {00} on the registry's master). One
        whose journal is there stops (SIGTERM): its journal leaves the registry, and no journal
        gone is left there for the test's collectors to fold."""
        for _ in range(12):
            t = self.collector(*args, threads=1)
            if CLUSTER.keyslot(t.journals[0]) != CLUSTER.keyslot(REGISTRY):
                return t
            self.assertEqual(t.stop(), 0)
            self.assertNotIn(t.journals[0], registered())
            t.close()
        self.fail("a collector's journal was in the registry's slot 12 times in a row")

    def journals_follow_the_registry(self, half):
        """The registry's slot {00} moved to another master (HALF: half-moved, its old master
        answering ASK; else fully, MOVED, while the collectors' slot maps still name the old
        one). A collector's heartbeats, its reclaim's look (cstale) and unregistering (cgone),
        and its own journal's leaving the registry at stop follow there: its journal stays
        registered, its writes still go to the journal, a SIGKILLed collector's journal is
        folded, dropped and unregistered in the usual time. No article is in bucket 00: nothing
        else goes to that slot."""
        slot = CLUSTER.keyslot(REGISTRY)
        a = self.collector_off_registry(*SLOW)
        b = self.collector_off_registry(*SLOW)
        names = [x for x in ("jfollow/%02d" % i for i in range(40)) if bucket(x) != "00"]
        late, keep = names[0], names[1:9]
        body, model = self.spread(random.Random(30 + half), keep, 12)
        self.post(b, body)
        self.assertEqual(journal_state(b.journals)[:2], (1, model))
        source = on_owner_node(REGISTRY)
        target, keys = self.half_move(slot, source)
        self.assertGreaterEqual(keys, 1)
        if not half:
            close_move(slot, source, target)
        moved = clock_ms(target)
        redirect = "ASK" if half else "MOVED"
        with self.assertRaisesRegex(harness.RespError, "^%s %d " % (redirect, slot)):
            source.command("ZRANGE", REGISTRY, 0, -1)
        self.assertEqual(set(a.journals + b.journals), set(registry_on(target)))

        # A's heartbeats renew its journal's score where the registry is now ...
        wait_until(lambda: registry_on(target)[a.journals[0]] > moved, 2.0,
                   message="A's heartbeat did not reach the registry's new master")
        time.sleep(2.5)  # ... again and again: longer than a journal stays registered unrenewed
        self.assertGreater(registry_on(target)[a.journals[0]], moved + 1500)
        # ... so its writes still go to its journal, counted later.
        xlen = on_owner(a.journals[0], "XLEN", a.journals[0])
        self.post(a, [{"type": "view", "article": late}])
        self.assertEqual(on_owner(a.journals[0], "XLEN", a.journals[0]), xlen + 1)
        self.assertEqual(counted([late]), {late: 0})

        # A finds B's journal stale, folds it, drops it and takes it out of the registry.
        b.stop(signal.SIGKILL)
        killed = time.monotonic()
        got = harness.eventually(lambda: counted(keep), dict({x: 0 for x in keep}, **model),
                                 timeout=RECLAIM_SECONDS + 3)
        took = time.monotonic() - killed
        self.assertEqual(got, dict({x: 0 for x in keep}, **model))
        self.assertLessEqual(took, RECLAIM_SECONDS + 2)
        wait_until(lambda: b.journals[0] not in registry_on(target), 3.0,
                   message="B's journal not unregistered")
        self.assertEqual(left_behind(writer_of(b.journals[0])), [])

        # A stops: its journal folded, dropped, and out of the registry.
        self.assertEqual(a.stop(), 0)
        self.assertEqual(counted([late]), {late: 1})
        self.assertNotIn(a.journals[0], registry_on(target))
        self.assertNotIn(a.journals[0], journal_keys())

    def test_30_journals_follow_the_registrys_slot_moved(self):
        self.journals_follow_the_registry(half=False)

    def test_31_journals_follow_the_registrys_slot_half_moved(self):
        self.journals_follow_the_registry(half=True)

    def test_35_writes_pass_a_journal_whose_slot_is_half_moved(self):
        """A worker's journal whose slot is half-moved (a reshard under way, or stopped
        half-way) cannot take a unit: its keys -- a new attempt marker among them -- are on
        neither master all together, and Redis answers TRYAGAIN until the move ends. A unit so
        refused (it never ran) goes to its buckets and is counted at once, answered 200, and
        so do the writes of the next second; once the slot has moved, writes take the journal
        again."""
        a = self.collector_off_registry(*SLOW)
        journal = a.journals[0]
        names = [x for x in ("jmoving/%02d" % i for i in range(60))
                 if CLUSTER.keyslot("tally:{%s}a:x" % bucket(x)) != CLUSTER.keyslot(journal)]
        first, during, after = names[:6], names[6:12], names[12:18]
        rng = random.Random(35)
        body1, model1 = self.spread(rng, first, 8)
        self.post(a, body1)
        self.assertEqual(journal_state([journal])[:2], (1, model1))
        source, slot = on_owner_node(journal), CLUSTER.keyslot(journal)
        target, keys = self.half_move(slot, source)
        self.assertGreaterEqual(keys, 1)  # the journal and its marker went to the target

        body2, model2 = self.spread(rng, during, 8)
        started = time.monotonic()
        self.post(a, body2)  # 200 (asserted there)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(counted(during), dict({x: 0 for x in during}, **model2))  # at once

        close_move(slot, source, target)
        time.sleep(1.2)
        body3, model3 = self.spread(rng, after, 8)
        self.post(a, body3)
        held = dict(model1)
        add_up(held, model3)
        self.assertEqual(journal_state([journal])[:2], (2, held))
        self.assertEqual(counted(first + after), {x: 0 for x in first + after})
        self.assertEqual(a.stop(), 0)
        total = dict({x: 0 for x in names[:18]}, **model2)
        add_up(total, held)
        self.assertEqual(counted(names[:18]), total)

    def test_32_a_journal_that_cannot_be_folded_holds_up_no_other(self):
        """Journals gone whose slot is half-moved cannot be folded while it is (every plan
        answered TRYAGAIN: its keys are neither all on the old master nor all on the new).
        Sixteen of them, the stalest in the registry -- all that a look considers -- and a
        collector B killed with views in its journal: A passes over each journal whose fold
        failed for a while, so it reaches B's in the usual time; once the slot has moved, the
        sixteen are folded (empty), dropped and unregistered too."""
        a = self.collector(*SLOW, threads=1)
        b = self.collector(*SLOW, threads=1)
        names = [x for x in ("jpass/%02d" % i for i in range(40)) if bucket(x) != "00"]
        keep = names[:8]
        body, model = self.spread(random.Random(32), keep, 12)
        self.post(b, body)
        model = dict({x: 0 for x in keep}, **model)
        held = {x: n for x, n in model.items() if n}
        self.assertEqual(journal_state(b.journals)[:2], (1, held))
        # Sixteen journals in a slot of their own: no article's, no collector's, not {00}.
        used = {bucket(x) for x in keep} | {writer_tag(j) for j in a.journals + b.journals}
        tag = next("%02x" % i for i in range(1, 256) if "%02x" % i not in used)
        fakes = ["tally:{%s}q:%016x" % (tag, 0x5a5a0000 + i) for i in range(16)]
        slot = CLUSTER.keyslot(fakes[0])
        source = on_owner_node(fakes[0])
        target, _ = self.half_move(slot, source)
        on_owner(REGISTRY, "ZADD", REGISTRY, *[x for f in fakes for x in ("1", f)])
        self.addCleanup(lambda: on_owner(REGISTRY, "ZREM", REGISTRY, *fakes))

        b.stop(signal.SIGKILL)
        killed = time.monotonic()
        got = harness.eventually(lambda: counted(keep), model, timeout=RECLAIM_SECONDS + 3)
        took = time.monotonic() - killed
        self.assertEqual(got, model)
        self.assertLessEqual(took, RECLAIM_SECONDS + 2)
        wait_until(lambda: b.journals[0] not in registered(), 3.0,
                   message="B's journal not unregistered")
        self.assertEqual(set(fakes) & set(registered()), set(fakes))  # not foldable yet
        self.assertIn("TRYAGAIN", a.log())

        close_move(slot, source, target)
        wait_until(lambda: not set(fakes) & set(registered()), 10.0,
                   message="the sixteen journals not unregistered once their slot moved")
        self.assertEqual(registered(), a.journals)
        self.assertEqual(counted(keep), model)

    def test_36_a_journal_made_anew_numbers_its_entries_past_its_cursors(self):
        """A collector stalled past its heartbeats (SIGSTOP) has its emptied journal dropped by
        another, and makes it anew at its next write. The old journal's ids were ahead of its
        master's clock -- as after a failover to a replica with a slower clock; made here with
        XSETID -- so the cursors its plans left in the buckets are too. The new journal's
        entries must be numbered past them (past the high-water mark the drop keeps): a bucket
        takes a part at or before its cursor for counted, and its views would never be."""
        b = self.collector(threads=1)
        a = self.collector(threads=1)
        journal = a.journals[0]
        node = on_owner_node(journal)
        trimmed = journal.replace("}q:", "}n:", 1)
        articles = ["jahead/%02d" % i for i in range(12)]
        self.post(a, [{"type": "view", "article": articles[0]}])  # the journal is made
        wait_until(lambda: node.command("XLEN", journal) == 0, 3.0, message="not folded")
        ahead = clock_ms(node) + 3600 * 1000
        node.command("XSETID", journal, "%d-0" % ahead)
        self.post(a, [{"type": "view", "article": x} for x in articles])
        model = dict({x: 1 for x in articles}, **{articles[0]: 2})
        self.assertEqual(harness.eventually(lambda: counted(articles), model, timeout=3.0),
                         model)
        wait_until(lambda: node.command("XLEN", journal) == 0, 3.0, message="not trimmed")
        high = node.command("HGET", trimmed, "h")
        self.assertEqual(high, b"%d-1" % ahead)  # the plan's last id, trimmed
        cursors = [k for k in writer_keys(writer_of(journal))
                   if re.match(rb"^tally:\{..\}f:", k)]
        self.assertEqual(len(cursors), len({bucket(x) for x in articles}))
        self.assertEqual({on_owner(k, "GET", k) for k in cursors}, {high})

        harness._signal_pid(a.proc, signal.SIGSTOP)  # past its heartbeats: B drops the journal
        try:
            self.assertDropped([journal], timeout=RECLAIM_SECONDS + 4)
            self.assertEqual(node.command("HGETALL", trimmed), [b"h", high])
            self.assertTrue(172000 <= node.command("TTL", trimmed) <= 172800)
        finally:
            harness._signal_pid(a.proc, signal.SIGCONT)
        back = clock_ms(CLUSTER.owner(CLUSTER.keyslot(REGISTRY)))
        wait_until(lambda: int(on_owner(REGISTRY, "ZSCORE", REGISTRY, journal) or 0) >= back,
                   5.0, message="A's journal not registered again")
        # A's writes take the journal again once A has seen its heartbeat confirmed (within a
        # second); one before that is counted at once (and is as good for the counts).
        for i in range(20):
            self.post(a, [{"type": "view", "article": x} for x in articles])
            add_up(model, {x: 1 for x in articles})
            if node.command("EXISTS", journal):
                break
            time.sleep(0.1)
        info = node.command("XINFO", "STREAM", journal)
        info = dict(zip(info[::2], info[1::2]))
        self.assertEqual((info[b"entries-added"], info[b"last-generated-id"]),
                         (1, b"%d-2" % ahead))  # made anew past the mark, one entry
        self.assertEqual(harness.eventually(lambda: counted(articles), model, timeout=3.0),
                         model)
        wait_until(lambda: node.command("XLEN", journal) == 0, 3.0, message="not trimmed")
        # The new journal's trimmed count and mark, with no expiry while the journal lives.
        self.assertEqual(node.command("HGETALL", trimmed), [b"n", b"1", b"h", b"%d-2" % ahead])
        self.assertEqual(node.command("TTL", trimmed), -1)
        self.assertEqual(registered(), sorted(b.journals + a.journals))


# ---- Faults under load ----

def view_events(rng, articles):
    n = rng.randint(1, 6)
    per = {}
    for _ in range(n):
        a = rng.choice(articles)
        per[a] = per.get(a, 0) + 1
    body = [{"type": "view", "article": a} for a, k in per.items() for _ in range(k)]
    return body, per


class ClusterLoad:
    """CLIENTS keep-alive clients against one tallyd, each with its own articles; every
    operation is recorded per article into a CounterChecker, and with its send and answer
    times (self.log: (sent, answered, outcome, {article: events}, kind, status, phase,
    error type)): the
    checker's own totals count one operation per article of a request."""

    def __init__(self, name, tallyd, readers=False):
        self.name = name
        self.tallyd = tallyd
        # READERS: each request is a reader of its own (X-Forwarded-For, for a tallyd with a
        # repeat-view window that trusts 127.0.0.1) viewing each of its articles once, so
        # that no view is a repeat.
        self.readers = readers
        self.checker = CounterChecker()
        self.log = []
        self.log_lock = threading.Lock()
        self.stop_at = None
        self.articles = {}

    def client_articles(self, i):
        kind = "k" if i % 2 else "u"
        return ["%s/%s%d/a%d" % (self.name, kind, i, j) for j in range(ARTICLES_PER_CLIENT)]

    def classify(self, ex, n):
        return self.checker.classify(ex, n)

    def one(self, cl, body, per, key=None, reader=None):
        h = {"Idempotency-Key": key} if key else {}
        if reader is not None:
            h["X-Forwarded-For"] = reader
        sent = time.monotonic()
        ex = cl.post_events(body, h)
        done = time.monotonic()
        outcome = self.classify(ex, len(body))
        for a, n in per.items():
            self.checker.record(a, n, outcome, key=key, kind=ex.kind)
        with self.log_lock:
            self.log.append((sent, done, outcome, per, ex.kind, ex.status, self.checker.phase,
                             type(ex.error)))
        return outcome

    def client(self, i):
        keyed = i % 2 == 1
        articles = self.client_articles(i)
        rng = random.Random(i * 7919)
        with harness.KeepAliveClient(self.tallyd.port, timeout=REQUEST_TIMEOUT) as cl:
            for seq in range(MAX_OPS):
                if time.monotonic() >= self.stop_at:
                    break
                body, per = view_events(rng, articles)
                reader = None
                if self.readers:
                    per = {a: 1 for a in per}
                    body = [{"type": "view", "article": a} for a in per]
                    reader = "10.%d.%d.%d" % (100 + i, seq // 256 % 256, seq % 256)
                if not keyed:
                    if self.one(cl, body, per, reader=reader) != "ok":
                        time.sleep(0.02)
                    continue
                key = "%s-k%d-%d" % (self.name, i, seq)
                for _ in range(MAX_OPS):
                    if self.one(cl, body, per, key, reader) == "ok":
                        break
                    if time.monotonic() > self.stop_at + RETRY_SECONDS:
                        break
                    time.sleep(0.02)

    def run(self, nemesis):
        """Run the clients; call NEMESIS() FAULT_AT seconds in (it returns when the fault is
        over); keep the load AFTER_FAULT seconds more; wait for every client. Returns the
        times (start of the fault, end of the fault)."""
        start = time.monotonic()
        self.stop_at = start + 3600.0  # until the fault is over (the nemesis is bounded)
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True)
                   for i in range(CLIENTS)]
        for th in threads:
            th.start()
        try:
            time.sleep(FAULT_AT)
            self.checker.phase = "fault"
            t0 = time.monotonic()
            nemesis()
            t1 = time.monotonic()
        finally:
            self.checker.phase = "after"
            self.stop_at = max(start + LOAD_SECONDS, time.monotonic() + AFTER_FAULT)
        bound = self.stop_at + RETRY_SECONDS + 2 * REQUEST_TIMEOUT
        for th in threads:
            th.join(max(0.0, bound - time.monotonic()))
            if th.is_alive():
                raise AssertionError("a load client did not finish")
        return t0, t1

    def all_articles(self):
        return [a for i in range(CLIENTS) for a in self.client_articles(i)]


class ClusterAuthTest(ClusterTestCase):
    """--redis-cluster with [[USER]:PASSWORD@] before the seeds: a one-node cluster (every slot
    on it) whose default user needs a password and which has an ACL user of its own; every
    node the router learns from the map is authenticated the same way."""

    @classmethod
    def setUpClass(cls):
        cls.node = Node().start()
        try:
            cls.node.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            wait_until(lambda: cls.node.info("cluster").get("cluster_enabled") == "1" and
                       b"cluster_state:ok" in cls.node.command("CLUSTER", "INFO"), 10.0)
            # A node that never met another does not know its own address (CLUSTER NODES
            # says ":port@cport"): the loader takes the seed's for it.
            harness.load_functions(["--redis-cluster", "127.0.0.1:%d" % cls.node.port])
            cls.node.command("ACL", "SETUSER", "tally", "on", ">acl-s3cret", "~*", "&*", "+@all")
            cls.node.command("CONFIG", "SET", "requirepass", "default-s3cret")
        except Exception:
            cls.node.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()

    def tallyd(self, credentials, ready=True):
        t = harness.Tallyd(None, ["--view-window", "0"], redis_port=0)
        argv = t.argv
        seeds = "%s127.0.0.1:%d" % (credentials, self.node.port)

        def cluster_argv():
            a = argv()
            i = a.index("--redis")
            a[i:i + 2] = ["--redis-cluster", seeds]
            return a
        t.argv = cluster_argv
        self.addCleanup(t.close)
        t.start()
        if ready:
            wait_until(lambda: t.get("/readyz", timeout=2).status == 200, 15.0,
                       message="tallyd never became ready with %r" % credentials)
        return t

    def test_password_alone_and_acl_user_are_used_on_every_node(self):
        for i, credentials in enumerate((":default-s3cret@", "tally:acl-s3cret@")):
            with self.subTest(credentials=credentials):
                t = self.tallyd(credentials)
                article = "auth/%d" % i
                r = t.post_events({"type": "view", "article": article})
                self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
                self.assertEqual(t.stats(article)["views"], 1)
                self.assertNotIn("s3cret", t.log())

    def test_a_wrong_password_is_not_ready(self):
        t = self.tallyd("tally:wrong@", ready=False)
        time.sleep(1.0)
        self.assertEqual(t.get("/readyz").status, 503)
        r = t.post_events({"type": "view", "article": "auth/wrong"})
        self.assertEqual(r.status, 503, r)
        self.assertNotIn("wrong", t.log().replace("auth/wrong", ""))


class ClusterFaultTest(ClusterTestCase):
    ARGS = ("--view-window", "0")
    READERS = False

    def setUp(self):
        self.started = time.monotonic()
        CLUSTER.wait_healthy(30.0)
        CLUSTER.flushall()
        self.t = self.track(ClusterTallyd(CLUSTER, list(self.ARGS) + ["--token", TOKEN]))
        self.addCleanup(self.t.close)
        self.t.start()

    def load(self, name):
        return ClusterLoad(name, self.t, readers=self.READERS)

    def views(self, articles):
        """Final views through tallyd, in one stats query (retried while reads fail), once
        every journal is folded: a read waits for its collector's folds, but only up to
        --hold while they fail."""
        wait_until(lambda: journal_state()[0] == 0, 20.0, interval=0.1,
                   message="the journals were not folded within 20 s of the load's end")
        q = "/v1/stats?" + "&".join("article=" + quote(a) for a in articles)
        r = wait_until(lambda: (lambda r: r if r.status == 200 else None)(self.t.get(q)), 15.0,
                       message="stats of the load's articles not readable")
        return {x["article"]: x["views"] for x in r.body["articles"]}

    def report(self, fault, load, views, extra=""):
        """Print what happened, per request (not per article); returns (requests by
        outcome, acknowledged events checked, acknowledged events lost)."""
        c = load.checker
        bounds = c.bounds()
        lost = sum(max(0, b["lower"] - views[a]) for a, b in bounds.items())
        acked = sum(b["lower"] for b in bounds.values())
        tot = {"attempts": len(load.log), "ok": 0, "503": 0, "info": 0, "refused": 0,
               "ok_by_phase": {"before": 0, "fault": 0, "after": 0}}
        for _s, _d, outcome, _per, kind, status, phase, _err in load.log:
            if outcome == "ok":
                tot["ok"] += 1
                tot["ok_by_phase"][phase] += 1
            tot["503"] += status == 503
            tot["info"] += outcome == "info"
            tot["refused"] += kind == "refused"
        m = self.t.metrics()
        sys.stderr.write(
            "\n%s: requests %d, 200s %d (%d before, %d during, %d after the fault), 503s %d, "
            "refused %d, indeterminate %d; acknowledged events checked %d, lost %d; "
            "keyed keys acknowledged %d; tallyd: indeterminate %s, redis errors %s; %s%.1f s\n"
            % (fault, tot["attempts"], tot["ok"], tot["ok_by_phase"]["before"],
               tot["ok_by_phase"]["fault"], tot["ok_by_phase"]["after"], tot["503"],
               tot["refused"], tot["info"], acked, lost,
               sum(b["keys"] for b in bounds.values()),
               harness.metric(m, "tally_requests_indeterminate_total"),
               harness.metric(m, "tally_redis_errors_total"), extra,
               time.monotonic() - self.started))
        waits = [e[1] - e[0] for e in load.log if e[4] == "no_answer"]
        if waits:
            errs = {}
            for e in load.log:
                if e[4] == "no_answer":
                    errs[e[7].__name__] = errs.get(e[7].__name__, 0) + 1
            sys.stderr.write("  unanswered: %d, waited %.2f..%.2f s (%d over %.0f s), errors %r\n"
                             % (len(waits), min(waits), max(waits),
                                sum(1 for w in waits if w >= REQUEST_TIMEOUT - 0.5),
                                REQUEST_TIMEOUT - 0.5, errs))
        for a, b in sorted(bounds.items()):
            if views[a] != b["lower"] or b["upper"] != b["lower"]:
                sys.stderr.write("  %-32s views %6d  acknowledged %6d  at most %6d\n"
                                 % (a, views[a], b["lower"], b["upper"]))
        sys.stderr.flush()
        return tot, acked, lost

    def common_asserts(self, load, tot):
        self.assertEqual(load.checker.unexpected, [], "answers no correct tallyd gives: %r"
                         % load.checker.unexpected[:5])
        self.assertGreater(tot["ok_by_phase"]["before"], 0, "nothing acknowledged before")
        self.assertGreater(tot["ok_by_phase"]["after"], 0, "nothing acknowledged after the "
                                                           "fault: tallyd did not recover")
        self.assertTrue(self.t.running(), "tallyd exited")
        # The journal was on: the unkeyed clients' writes were acknowledged by journal entries
        # (the keyed ones are counted at once), and folded.
        m = self.t.metrics()
        self.assertGreater(harness.metric(m, "tally_fold_entries_total"), 0, "nothing folded")

    def journal_master(self):
        """The master holding the collector's first journal: its unkeyed writes are
        acknowledged there."""
        js = registered()
        self.assertTrue(js, "no journal registered: the journal is not on")
        return on_owner_node(js[0])

    def journal_master_key(self):
        js = registered()
        self.assertTrue(js, "no journal registered: the journal is not on")
        return js[0]

    def test_10_manual_failover_under_load_loses_nothing(self):
        load = self.load("cl-failover")
        info = {}

        def nemesis():
            master = self.journal_master()
            replica = CLUSTER.replica_of(master)
            info["master"], info["replica"] = master, replica
            self.assertEqual(replica.command("CLUSTER", "FAILOVER"), "OK")
            wait_until(lambda: replica.info("replication").get("role") == "master", 15.0,
                       message="the replica did not take over")
            wait_until(lambda: "cluster_state:ok" in
                       master.command("CLUSTER", "INFO").decode(), 10.0)

        t0, t1 = load.run(nemesis)
        views = self.views(load.all_articles())
        tot, acked, lost = self.report("manual failover", load, views,
                                       "%r -> %r; " % (info.get("master"), info.get("replica")))
        self.common_asserts(load, tot)
        self.assertEqual(info["master"].info("replication").get("role"), "slave")
        load.checker.check(views)
        self.assertEqual(lost, 0)
        after = [e for e in load.log if e[0] > t1 + RECOVERY_GRACE and e[2] != "ok"]
        self.assertEqual(after[:5], [], "%d requests failed more than %.0f s after the failover"
                         % (len(after), RECOVERY_GRACE))
        CLUSTER.wait_healthy(30.0)

    def test_11_master_sigkill_under_load(self):
        load = self.load("cl-kill")
        info = {}

        def tallyd_ready():
            return self.t.get("/readyz", timeout=2).status == 200

        def nemesis():
            master = self.journal_master()
            replica = CLUSTER.replica_of(master)
            info["master"], info["replica"] = master, replica
            info["kill"] = time.monotonic()
            master.kill()
            wait_until(lambda: replica.info("replication").get("role") == "master", 20.0,
                       interval=0.05, message="the replica was not promoted")
            info["promoted"] = time.monotonic()
            wait_until(lambda: all("cluster_state:ok" in n.command("CLUSTER", "INFO").decode()
                                   for n in CLUSTER.live()), 15.0, interval=0.05,
                       message="cluster_state not ok after the failover")
            info["cluster_ok"] = time.monotonic()
            try:
                wait_until(tallyd_ready, 40.0, interval=0.05)
                info["ready"] = time.monotonic()
            except AssertionError:
                info["ready"] = None

        try:
            load.run(nemesis)
        finally:
            if "master" in info:
                info["master"].start()  # comes back as a replica of its old replica
        t_kill = info["kill"]
        self.assertIsNotNone(info["ready"], "tallyd's /readyz not 200 within 40 s of the "
                                            "cluster's recovery")
        views = self.views(load.all_articles())
        extra = ("%r killed, %r promoted after %.2f s, cluster ok after %.2f s, tallyd ready "
                 "after %.2f s; " % (info["master"], info["replica"],
                                     info["promoted"] - t_kill, info["cluster_ok"] - t_kill,
                                     info["ready"] - t_kill))
        tot, acked, lost = self.report("master SIGKILL", load, views, extra)
        self.common_asserts(load, tot)

        # A loss is allowed only for events acknowledged within LOSS_WINDOW before the kill
        # (Redis Cluster replicates asynchronously); nothing refused may be counted, and keyed
        # articles are never counted twice.
        late = {}
        for sent, done, outcome, per, *_ in load.log:
            if outcome == "ok" and t_kill - LOSS_WINDOW <= done <= t_kill + 0.5:
                for a, n in per.items():
                    late[a] = late.get(a, 0) + n
        problems = []
        for a, b in sorted(load.checker.bounds().items()):
            v = views[a]
            if v < b["lower"] - late.get(a, 0):
                problems.append("%s: %d views, %d acknowledged, of which only %d within %.1f s "
                                "before the kill: %d acknowledged views lost"
                                % (a, v, b["lower"], late.get(a, 0), LOSS_WINDOW,
                                   b["lower"] - v))
            if v > b["upper"]:
                problems.append("%s: %d views, at most %d may be counted" % (a, v, b["upper"]))
            if b["keyed"] and v > b["lower"]:
                problems.append("%s: %d views, but the acknowledged keys carry %d: counted "
                                "twice" % (a, v, b["lower"]))
            if b["keyed"] and b["unacked"]:
                problems.append("%s: keys never acknowledged: %r" % (a, b["unacked"][:5]))
        sys.stderr.write("  events acknowledged within %.1f s before the kill: %d; lost: %d\n"
                         % (LOSS_WINDOW, sum(late.values()), lost))
        self.assertEqual(problems, [], "counter checker:\n  " + "\n  ".join(problems))

        # Failures only while the cluster was without a master for the killed one's slots.
        recovered = info["cluster_ok"] + RECOVERY_GRACE
        early = [e for e in load.log if e[2] != "ok" and e[1] < t_kill]
        late_fail = [e for e in load.log if e[2] != "ok" and e[0] > recovered]
        self.assertEqual(early, [], "failures before the kill")
        if late_fail:
            self.fail("%d requests failed (%s) more than %.1f s after the cluster was whole "
                      "again (cluster_state:ok %.2f s after the kill); the last was sent %.2f s "
                      "after the kill; tallyd's /readyz was 200 again %.2f s after the kill"
                      % (len(late_fail), sorted({"%s %s" % (e[4], e[5] or "") for e in
                                                 late_fail}),
                         RECOVERY_GRACE, info["cluster_ok"] - t_kill,
                         max(e[0] for e in late_fail) - t_kill, info["ready"] - t_kill))
        self.assertLessEqual(info["ready"] - info["cluster_ok"], RECOVERY_GRACE,
                             "tallyd ready %.2f s after the cluster"
                             % (info["ready"] - info["cluster_ok"]))
        # And tallyd writes at once afterwards.
        r = self.t.post_events([{"type": "view", "article": a} for a in load.all_articles()])
        self.assertEqual((r.status, r.body), (200, {"accepted": len(load.all_articles()),
                                                    "ignored": 0}), r)
        CLUSTER.wait_healthy(40.0)

    def migrate_slot(self, slot, source, target, batch=100, pause=0.1, bound=30.0):
        """Move SLOT from SOURCE to TARGET as redis-cli --cluster reshard does (IMPORTING,
        MIGRATING, MIGRATE in batches, SETSLOT NODE), but PAUSE seconds between batches of
        BATCH keys so that the load meets the slot half-moved. Returns the keys moved."""
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.id)
        moved = 0
        deadline = time.monotonic() + bound
        for _ in range(100000):
            keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.assertLess(time.monotonic(), deadline, "slot %d not emptied within %.0f s"
                            % (slot, bound))
            source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys,
                           timeout=10)
            moved += len(keys)
            time.sleep(pause)
        for n in [target, source] + [m for m in CLUSTER.masters() if m not in (source, target)]:
            n.command("CLUSTER", "SETSLOT", slot, "NODE", target.id)
        return moved

    def test_12_slot_migration_under_load(self):
        load = self.load("cl-migrate")
        info = {}

        def nemesis():
            # The buckets of one keyed client's articles (counted at once) and of one unkeyed
            # client's (counted by folds), from their keys, and the slot of the collector's
            # first journal (its acks and its folds' plans).
            names = {a.encode(): a for a in load.client_articles(1) + load.client_articles(0)}
            folded = {a.encode() for a in load.client_articles(0)}
            wait_until(lambda: any((article_of_key(k) or (0, 0, None))[2] in folded
                                   for ks in CLUSTER.all_keys("tally:{??}a:*").values()
                                   for k in ks), 5.0,
                       message="nothing of the unkeyed client folded 3 s into the load")
            buckets = set()
            for m, keys in CLUSTER.all_keys("tally:{??}a:*").items():
                for k in keys:
                    p = article_of_key(k)
                    if p[2] in names:
                        buckets.add(p[0])
            self.assertTrue(buckets, "the keyed client wrote nothing")
            slots = sorted({CLUSTER.keyslot("{%s}" % b) for b in buckets} |
                           {CLUSTER.keyslot(self.journal_master_key())})
            info["slots"] = slots
            moved = 0
            for s in slots:
                source = CLUSTER.owner(s)
                target = [m for m in CLUSTER.masters() if m is not source][0]
                moved += self.migrate_slot(s, source, target)
            info["keys"] = moved
            # And 50 more slots with redis-cli, from the first master to the last.
            masters = CLUSTER.masters()
            r = subprocess.run([REDIS_CLI, "--cluster", "reshard",
                                "127.0.0.1:%d" % masters[0].port,
                                "--cluster-from", masters[0].id, "--cluster-to", masters[-1].id,
                                "--cluster-slots", "50", "--cluster-yes"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=60)
            info["reshard"] = r.returncode
            if r.returncode != 0:
                sys.stderr.write(r.stdout[-3000:] + r.stderr[-2000:])
            for s in slots:
                info.setdefault("owners", []).append(CLUSTER.owner(s))

        t0, t1 = load.run(nemesis)
        views = self.views(load.all_articles())
        tot, acked, lost = self.report(
            "slot migration", load, views,
            "slots %r moved (%d keys) + 50 by redis-cli (rc %r); "
            % (info.get("slots"), info.get("keys", 0), info.get("reshard")))
        self.common_asserts(load, tot)
        self.assertEqual(info["reshard"], 0)
        # The migration reached tallyd: Redis refused units (TRYAGAIN, ASK or MOVED).
        self.assertGreaterEqual(harness.metric(self.t.metrics(), "tally_redis_errors_total"), 1)
        load.checker.check(views)
        self.assertEqual(lost, 0)
        after = [e for e in load.log if e[0] > t1 and e[2] != "ok"]
        self.assertEqual(after[:5], [], "%d requests failed after the migration finished"
                         % len(after))
        CLUSTER.wait_healthy(30.0)

    def test_13_reads_and_deletes_follow_a_slot_moved_while_no_write_touches_it(self):
        """A slot moved to another master while tallyd only reads it: every read (and a
        DELETE) must follow the MOVED reply, on every worker thread, not answer 5xx until the
        next periodic refresh of the slot map (30 s)."""
        a, b = "quiet/read", "quiet/delete"
        r = self.t.post_events([{"type": "view", "article": a}] * 5 +
                               [{"type": "view", "article": b}] * 2)
        self.assertEqual((r.status, r.body), (200, {"accepted": 7, "ignored": 0}), r)
        self.assertEqual(self.t.stats(a)["views"], 5)  # and so folded: its keys are there
        slots = set()
        for art in (a, b):
            keys = [k for ks in CLUSTER.all_keys().values() for k in ks
                    if (article_of_key(k) or (0, 0, None))[2] == art.encode()]
            slots.add(CLUSTER.keyslot(keys[0]))
        for s in sorted(slots):
            source = CLUSTER.owner(s)
            target = [m for m in CLUSTER.masters() if m is not source][0]
            self.migrate_slot(s, source, target, pause=0)
            self.assertEqual(CLUSTER.owner(s), target)
        moved_at = time.monotonic()
        answers = []
        r = self.t.request("DELETE", "/v1/articles/" + quote(b), headers=AUTH)
        answers.append(("delete", r.status))
        for _ in range(8):  # new connections: both worker threads
            r = self.t.get("/v1/stats/" + quote(a))
            answers.append((r.status, r.body.get("views") if isinstance(r.body, dict) else r.raw))
        r = self.t.get("/v1/top?metric=views&period=day&limit=10")
        answers.append(("top", r.status))
        # No write has touched these slots since they moved: a read is the first to learn it.
        sys.stderr.write("\nreads of articles whose slot moved: %r\n" % answers)
        if answers != [("delete", 204)] + [(200, 5)] * 8 + [("top", 200)]:
            # How long until tallyd finds out by itself (its periodic refresh)?
            healed = None
            for _ in range(400):
                if time.monotonic() - moved_at > 40:
                    break
                if self.t.get("/v1/stats/" + quote(a)).status == 200 and \
                        self.t.get("/v1/stats/" + quote(a)).status == 200:
                    healed = time.monotonic() - moved_at
                    break
                time.sleep(0.1)
            self.fail("after the slots %r moved, with no write to them: %r; reads answered 200 "
                      "again only after %s s" % (sorted(slots), answers,
                                                  "%.1f" % healed if healed else "> 40"))
        self.assertEqual(self.t.stats(b), harness.zero_stats(b))
        CLUSTER.wait_healthy(30.0)


class ClusterWindowFaultTest(ClusterFaultTest):
    """The same faults with the default repeat-view window: an unkeyed client's views are
    checked in their buckets first (marks), then appended to the journal. Every request is a
    reader of its own, so no view is a repeat and every view acknowledged counts once."""
    ARGS = ("--view-window", "1800", "--trust-proxy", "127.0.0.1")
    READERS = True
    # Reads and a DELETE while a slot moves: the window changes nothing there.
    test_13_reads_and_deletes_follow_a_slot_moved_while_no_write_touches_it = None


if __name__ == "__main__":
    unittest.main()
