"""The command line: --help, --version, refused values (exit 2, one line naming the flag or
variable, nothing started), and the environment with flags winning over it."""

import os
import re
import subprocess
import time
import unittest

import harness
from harness import TOKEN

CONTRACT_FLAGS = ["listen", "redis", "redis-cluster", "prefix", "token", "allowed-origins",
                  "rate-limit", "threads", "trust-proxy", "view-window"]


def env_name(flag):
    return "TALLY_" + flag.upper().replace("-", "_")


def run(args, env=None, timeout=10):
    """Run tallyd with ARGS (and only the TALLY_ variables in ENV): (code, stdout, stderr)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    e.update(env or {})
    p = subprocess.run([harness.tallyd_path()] + list(args), env=e, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class CliTest(harness.TallyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = harness.Redis().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()

    def assertLogged(self, t, line):
        """LINE is in T's log within a second: the main thread logs its warnings after the
        worker threads start, and a worker may answer the harness's /healthz before that."""
        logged = harness.eventually(lambda: line in t.log(), True, timeout=1.0)
        self.assertTrue(logged, "%r not logged:\n%s" % (line, t.log()))

    def test_help(self):
        code, out, err = run(["--help"])
        self.assertEqual(code, 0, err)
        self.assertEqual(err, "")
        for flag in CONTRACT_FLAGS:
            with self.subTest(flag=flag):
                self.assertRegex(out, r"(?m)^\s*--%s\b" % re.escape(flag))
                self.assertIn(env_name(flag), out)
        self.assertIn("--help", out)
        self.assertIn("--version", out)
        # -h too, and --help wins wherever it stands, even beside a bad value.
        self.assertEqual(run(["-h"])[:2], (0, out))
        self.assertEqual(run(["--rate-limit", "fast", "--help"])[:2], (0, out))

    def test_version(self):
        code, out, err = run(["--version"])
        self.assertEqual(code, 0, err)
        self.assertEqual(err, "")
        self.assertEqual(len(out.strip().splitlines()), 1, out)
        self.assertRegex(out, r"^tallyd \d+\.\d+\.\d+")
        self.assertRegex(out, r"libevent[ /]v?\d+\.\d+\.\d+")
        self.assertRegex(out, r"hiredis[ /]v?\d+\.\d+\.\d+")
        self.assertRegex(out, r"cJSON[ /]v?\d+\.\d+\.\d+")
        self.assertRegex(out, r"; Redis functions tally_[0-9a-f]{12}\)$")

    def assertRefused(self, args, env, name, secret=None):
        port = harness.free_port()
        argv = ["--redis", "redis://127.0.0.1:%d/0" % self.redis.port]
        if "--listen" not in args:
            argv += ["--listen", "127.0.0.1:%d" % port]
        argv += list(args)  # last, so that a flag missing its value is the last argument
        started = time.monotonic()
        code, out, err = run(argv, env)
        self.assertEqual(code, 2, (argv, env, out, err))
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(out, "", "stdout should stay empty")
        self.assertTrue(err.endswith("\n"), repr(err))
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, "want exactly one line on stderr, got %r" % err)
        self.assertIn(name, lines[0])
        if secret is not None:
            self.assertNotIn(secret, lines[0], "the error repeats a secret")
        self.assertFalse(harness.port_open(port), "something listens after a refused start")
        self.assertEqual(self.redis.keys("*"), [], "a refused start wrote to Redis")

    def test_bad_values_exit_2_with_one_line_naming_them(self):
        cases = [
            (["--rate-limit", "fast"], {}, "--rate-limit"),
            (["--rate-limit=-1"], {}, "--rate-limit"),
            (["--listen", "nope"], {}, "--listen"),
            (["--listen", "127.0.0.1:99999"], {}, "--listen"),
            (["--prefix", "a{b"], {}, "--prefix"),
            (["--prefix", ""], {}, "--prefix"),
            (["--token", "has space"], {}, "--token"),
            (["--bogus-flag"], {}, "--bogus-flag"),
            (["stray"], {}, "stray"),
            (["--prefix"], {}, "--prefix"),
            (["--threads", "0"], {}, "--threads"),
            (["--view-window", "86401"], {}, "--view-window"),
            (["--allowed-origins", "https://news.example/"], {}, "--allowed-origins"),
            (["--redis-timeout", "5"], {}, "--redis-timeout"),
            ([], {"TALLY_VIEW_WINDOW": "-1"}, "TALLY_VIEW_WINDOW"),
            ([], {"TALLY_RATE_LIMIT": "fast"}, "TALLY_RATE_LIMIT"),
            ([], {"TALLY_PREFIX": "x}"}, "TALLY_PREFIX"),
        ]
        for args, env, name in cases:
            with self.subTest(args=args, env=env):
                self.assertRefused(args, env, name)

    def test_bad_redis_url_is_refused(self):
        # Checked apart: it is --redis itself that is wrong here.
        port = harness.free_port()
        for url in ("http://127.0.0.1:6379", "redis://127.0.0.1:0/0", "redis://h/2147483648"):
            with self.subTest(url=url):
                code, out, err = run(["--listen", "127.0.0.1:%d" % port, "--redis", url])
                self.assertEqual(code, 2, err)
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn("--redis", err)
                self.assertFalse(harness.port_open(port))

    def test_token_errors_do_not_repeat_the_token(self):
        secret = "x" * 15 + " "  # long enough to matter, with a space: refused
        self.assertRefused(["--token", secret], {}, "--token", secret.strip())
        self.assertRefused([], {"TALLY_TOKEN": "tiny\tsecret"}, "TALLY_TOKEN", "tiny")

    # ---- the environment ----

    def start(self, args=(), env=None):
        t = self.track(harness.Tallyd(self.redis, ["--view-window", "0"] + list(args), env=env))
        self.addCleanup(t.close)
        return t.start()

    def keys_after_one_view(self, t, article):
        r = t.post_events({"type": "view", "article": article})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(harness.counts(t.stats(article))["views"], 1)
        keys = [k.decode() for k in self.redis.keys("*")]
        self.assertTrue(keys)
        return keys

    def test_prefix_from_the_environment(self):
        t = self.start(env={"TALLY_PREFIX": "t2:"})
        keys = self.keys_after_one_view(t, "env/prefix")
        self.assertTrue(all(k.startswith("t2:") for k in keys), keys)
        self.assertTrue(any(re.match(r"^t2:\{[0-9a-f]{2}\}a:env/prefix$", k) for k in keys), keys)

    def test_flag_wins_over_the_environment(self):
        t = self.start(["--prefix", "t3:"], env={"TALLY_PREFIX": "t2:"})
        keys = self.keys_after_one_view(t, "flag/prefix")
        self.assertTrue(all(k.startswith("t3:") for k in keys), keys)

    def test_empty_variable_counts_as_unset(self):
        t = self.start(env={"TALLY_PREFIX": ""})
        keys = self.keys_after_one_view(t, "empty/prefix")
        self.assertTrue(all(k.startswith("tally:") for k in keys), keys)

    def test_token_from_the_environment(self):
        t = self.start(env={"TALLY_TOKEN": TOKEN})
        ev = {"type": "comment", "article": "env/token"}
        self.assertEqual(t.post_events(ev).status, 401)
        r = t.post_events(ev, {"Authorization": "Bearer " + TOKEN})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(harness.counts(t.stats("env/token"))["comments"], 1)

    def test_a_short_token_works_with_a_warning(self):
        t = self.start(["--token", "secret"])
        ev = {"type": "comment", "article": "short/token"}
        self.assertEqual(t.post_events(ev, {"Authorization": "Bearer secrex"}).status, 401)
        self.assertEqual(t.post_events(ev, {"Authorization": "Bearer secret"}).status, 200)
        self.assertEqual(harness.counts(t.stats("short/token"))["comments"], 1)
        self.assertLogged(t, "the token has fewer than 16 characters")
        self.assertNotIn("secret", t.log())

    def test_cluster_seeds_replace_redis_with_a_warning(self):
        # The harness gives --redis; --redis-cluster wins. No cluster answers on that port, so
        # tallyd runs unready: it must start, say what it ignored and answer /readyz 503.
        t = self.track(harness.Tallyd(self.redis, ["--redis-cluster",
                                                   "127.0.0.1:%d" % harness.free_port()]))
        self.addCleanup(t.close)
        t.start()
        self.assertLogged(t, "--redis is ignored: --redis-cluster replaces it")
        self.assertEqual(harness.get(t.port, "/readyz").status, 503)

    def test_allowed_origins_from_the_environment(self):
        t = self.start(env={"TALLY_ALLOWED_ORIGINS": "https://a.example, https://b.example"})
        ev = {"type": "view", "article": "env/origins"}
        self.assertEqual(t.post_events(ev, {"Origin": "https://b.example"}).status, 200)
        self.assertEqual(t.post_events(ev, {"Origin": "https://c.example"}).status, 403)

    # ---- the default of --threads ----

    def test_default_threads_follow_the_affinity_mask(self):
        """Without --threads, tallyd runs one worker per CPU it may use: pinned to one CPU
        (taskset, as a cpuset would), one worker, whatever the machine has."""
        cpu = min(os.sched_getaffinity(0))
        for env, want in (({}, 1), ({"TALLY_THREADS": "3"}, 3)):
            with self.subTest(env=env):
                t = self.track(PinnedTallyd(self.redis, cpu, env=env))
                self.addCleanup(t.close)
                t.start()
                samples = t.metrics()
                self.assertEqual(harness.metric(samples, "tally_worker_threads"), want)
                self.assertIn("with %d threads" % want, t.log())


class PinnedTallyd(harness.Tallyd):
    """A tallyd started by taskset on one CPU, without the harness's --threads."""

    def __init__(self, redis, cpu, env=None):
        super().__init__(redis, env=env)
        self.cpu = cpu

    def argv(self):
        argv = super().argv()
        i = argv.index("--threads")
        del argv[i:i + 2]
        return ["taskset", "--cpu-list", str(self.cpu)] + argv


if __name__ == "__main__":
    unittest.main()
