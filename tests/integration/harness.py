"""harness.py -- shared helpers of the integration tests (Python 3 standard library only).

Redis     a redis-server of our own on a free loopback port, in a scratch directory, with
          an append-only file so that data survives stop()/start() on the same port and dir
RespClient a tiny binary-safe RESP client (bulk, array, integer, status, error)
Tallyd    a tallyd of our own, pointed at a Redis, with its stderr in a log file
http      post_events() / get() / request() over http.client, raw() over a plain socket
KeepAliveClient one keep-alive connection that tells an answer from a refused connection, a
          reset before the request was read, and an indeterminate end (fault tests)
TallyTestCase  prints the daemons' logs when a test fails or errs
wait_until     a bounded poller

Environment: TALLYD (the binary, required), REDIS_SERVER (redis-server), TALLY_TEST_THREADS
(tallyd's --threads, default 2), TALLY_TEST_KEEP=1 keeps the scratch directories.

Every process is started with subprocess.Popen and only ever signalled through its own PID.
"""

import atexit
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

# A token that passes --token's rules (16..256 printable ASCII characters).
TOKEN = "s3cret-token-0123456789"


# ---- Configuration ----

def tallyd_path():
    """TALLYD, which must name an executable tallyd: ctest sets it to the build's own. No
    fallback, so that a test never runs some other build than the one it was meant for."""
    p = os.environ.get("TALLYD", "")
    if not p:
        raise RuntimeError("TALLYD is not set: run the integration tests with ctest, or set "
                           "TALLYD to the tallyd binary to test (e.g. TALLYD=build/tallyd)")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise RuntimeError("TALLYD=%r is not an executable file" % p)
    return p


def redis_server_path():
    p = os.environ.get("REDIS_SERVER", "")
    if p and not p.endswith("NOTFOUND") and os.path.exists(p):
        return p
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("REDIS_SERVER is not set and redis-server is not on PATH")


def tallyd_threads():
    v = os.environ.get("TALLY_TEST_THREADS", "").strip()
    if not v:
        return 2
    if not v.isdigit() or int(v) < 1:
        raise RuntimeError("TALLY_TEST_THREADS must be a positive integer, not %r" % v)
    return int(v)


_announced = []


def _announce(binary):
    """One line per test process saying which tallyd runs and on how many worker threads by
    default (the log shows what a sanitizer stage really ran)."""
    if not _announced:
        _announced.append(True)
        sys.stderr.write("harness: tallyd %s, --threads %d by default (TALLY_TEST_THREADS=%r)\n"
                         % (binary, tallyd_threads(), os.environ.get("TALLY_TEST_THREADS", "")))


def keep_tmp():
    return os.environ.get("TALLY_TEST_KEEP", "") == "1"


def free_port():
    """A loopback port nobody listens on right now (bind 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout=5.0, interval=0.02, message=None):
    """Call PREDICATE until it returns something truthy (returned) or TIMEOUT seconds pass
    (AssertionError). Exceptions from PREDICATE count as false until the last try."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
            last_exc = None
        except Exception as e:  # noqa: BLE001 -- polled conditions may fail for a while
            last_exc = e
        if time.monotonic() >= deadline:
            msg = message or "condition not met within %.1f s" % timeout
            if last_exc is not None:
                msg += " (last error: %r)" % (last_exc,)
            raise AssertionError(msg)
        time.sleep(interval)


def journal_entry_records(text):
    """The records of one journal entry's "a" field (see src/scripts/ack.lua):
    [(bucket, article, views)]."""
    t = text.split("\n")
    out, pos = [], 0
    while pos < len(t):
        out.append((t[pos], t[pos + 1], int(t[pos + 2])))
        pos += 3
        pos += int(t[pos]) + 1              # visitors
        pos += 2 * int(t[pos]) + 1          # shares
        pos += int(t[pos]) + 1              # comment deltas (none in a journal)
        pos += 2 * int(t[pos]) + 1          # sums
        pos += 2 * int(t[pos]) + 1          # properties
    if pos != len(t):
        raise AssertionError("a journal entry that does not parse: %r" % text)
    return out


# A week's or month's kept parts all expire at the next whole minute of Redis's clock
# (src/scripts/kept.lua), and a worker keeps its merged answer until then.
KEPT_MS = 60000


def redis_ms(command):
    """Redis's clock in Unix milliseconds, by COMMAND("TIME")."""
    sec, usec = command("TIME")
    return int(sec) * 1000 + int(usec) // 1000


def wait_out_kept_boundary(command, seconds):
    """When the kept parts expire within SECONDS by Redis's clock (COMMAND runs a command
    there), sleep until just past that moment, so a test that expects a second read to find
    what the first kept sees no expiry between them. Returns the next boundary then."""
    now = redis_ms(command)
    boundary = (now // KEPT_MS + 1) * KEPT_MS
    if boundary - now < seconds * 1000:
        time.sleep((boundary - now) / 1000 + 0.2)
        boundary += KEPT_MS
    return boundary


# Counts acknowledged by one collector reach another's reads once folded: within
# --fold-interval (on the journal path) and a round trip; the README promises 1 second.
FOLD_SECONDS = 1.0


def salts_of_the_day(prefix="tally:", now=None):
    """The salt keys a collector may hold at NOW (default: the time of the call): the UTC day's,
    and in the day's last hour tomorrow's too (salt.c fetches it ahead, so that midnight waits
    for nothing). Returns the lists of keys that may stand, sorted: today's alone, or both."""
    now = time.time() if now is None else now
    today = [prefix + "salt:" + time.strftime("%Y%m%d", time.gmtime(now))]
    if now % 86400 < 82800:
        return [today]
    return [today, today + [prefix + "salt:" + time.strftime("%Y%m%d", time.gmtime(now + 3600))]]


# ---- SipHash-2-4, and the visitor ids a collector derives (src/visitor.c) ----

def _rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & 0xFFFFFFFFFFFFFFFF


def siphash24(key, data):
    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D,
         k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
    mask = 0xFFFFFFFFFFFFFFFF

    def rounds(n):
        for _ in range(n):
            v[0] = (v[0] + v[1]) & mask
            v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & mask
            v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & mask
            v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & mask
            v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = struct.unpack_from("<Q", data, i)[0]
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    last = (n & 0xFF) << 56
    for i, b in enumerate(data[end:]):
        last |= b << (8 * i)
    v[3] ^= last
    rounds(2)
    v[0] ^= last
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def visitor_id(salt_hex, ipv4, ua, article):
    """The visitor id (16 hex digits, as counted) a collector derives for a view of ARTICLE from
    the IPv4 address IPV4 with User-Agent UA under the day's salt SALT_HEX (its value in Redis):
    a digest of the address (IPv4-mapped) and the User-Agent, salted with the article."""
    addr = bytes(10) + b"\xff\xff" + bytes(int(x) for x in ipv4.split("."))
    digest = siphash24(b"tally visitor v1", addr + ua.encode("utf-8"))
    return "%016x" % siphash24(bytes.fromhex(salt_hex),
                               struct.pack("<Q", digest) + article.encode("utf-8"))


def reader_ids(redis, article, readers, now=None):
    """The visitor ids of READERS ((IPv4 address, User-Agent) pairs) viewing ARTICLE at NOW
    (default: the time of the call), under the day's salt the collectors keep in REDIS."""
    key = salts_of_the_day(now=now)[0][0]
    salt = redis.command("GET", key)
    if salt is None:
        raise AssertionError("no salt %s in redis: %r" % (key, redis.keys("tally:salt:*")))
    return [visitor_id(salt.decode(), addr, ua, article) for addr, ua in readers]


def distinct_estimate(redis, ids):
    """What a HyperLogLog estimates for IDS, from REDIS on a scratch key: the exact number a
    count of these visitors must show (the estimate of 40 distinct ids may be 39 or 38)."""
    key = "test:scratch:hll"
    redis.command("DEL", key)
    redis.command("PFADD", key, *ids)
    n = redis.command("PFCOUNT", key)
    redis.command("DEL", key)
    return n


def eventually(read, want, timeout=FOLD_SECONDS):
    """READ() until it equals WANT or TIMEOUT seconds pass; returns the last value read, for
    the caller's exact assertEqual. For reads through another collector than the one that
    acknowledged the events (the one that did shows them at once)."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.02)


def _signal_pid(proc, sig):
    """Signal our own child PROC, unless it has already been reaped."""
    if proc is not None and proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _tail(path, lines=200):
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    rows = data.splitlines()
    if len(rows) > lines:
        rows = ["... (%d earlier lines)" % (len(rows) - lines)] + rows[-lines:]
    return "\n".join(rows)


_scratch_dirs = []
_children = []  # every Popen this process started


def _at_exit():
    """Whatever a crashed test left running is ours to stop (by PID), then the scratch
    directories go."""
    for proc in _children:
        if proc.poll() is None:
            _signal_pid(proc, signal.SIGCONT)
            _signal_pid(proc, signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
    for d in _scratch_dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_at_exit)


def _spawn(args, **kw):
    proc = subprocess.Popen(args, **kw)
    _children.append(proc)
    return proc


def _scratch_dir(what):
    """A new scratch directory. It goes when the test process exits, not when its daemon
    stops: a failing test prints its daemons' logs after its cleanups have run."""
    path = tempfile.mkdtemp(prefix="tally-%s-" % what)
    if not keep_tmp():
        _scratch_dirs.append(path)
    return path


def _report_kept(path, what):
    if keep_tmp():
        sys.stderr.write("kept %s dir %s\n" % (what, path))


# ---- RESP ----

class RespError(Exception):
    """An error reply from Redis (-ERR ...)."""


class RespClient:
    """A blocking, binary-safe RESP2 client over one TCP connection."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode("utf-8")
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n" % len(a))
            out.append(a)
            out.append(b"\r\n")
        return b"".join(out)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("bad RESP reply line %r" % line)

    def command(self, *args):
        """Send one command; return its reply (str status, bytes bulk, int, list, None), or
        raise RespError for an error reply."""
        self.sock.sendall(self.encode(args))
        r = self._reply()
        if isinstance(r, RespError):
            raise r
        return r


# ---- Redis ----

def load_functions(redis_args, timeout=30.0):
    """Run the admin step every deploy runs before tallyd: `tallyd --load-functions` with
    REDIS_ARGS (["--redis", URL] or ["--redis-cluster", SEEDS])."""
    r = subprocess.run([tallyd_path(), "--load-functions"] + list(redis_args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                       env={k: v for k, v in os.environ.items() if not k.startswith("TALLY_")})
    if r.returncode != 0:
        raise RuntimeError("tallyd --load-functions %s failed (%d):\n%s%s"
                           % (" ".join(redis_args), r.returncode, r.stdout, r.stderr))


def functions_library():
    """The name of the function library the tallyd under test calls, "tally_<v>", from its
    --version."""
    out = subprocess.run([tallyd_path(), "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.search(r"Redis functions (tally_[0-9a-f]+)", out)
    if m is None:
        raise AssertionError("no function library in tallyd --version: %r" % out)
    return m.group(1)


class Redis:
    """A redis-server of our own. start() again after stop()/kill() reuses the port and the
    directory, so the append-only file brings the data back. start() loads tally's functions
    too (an admin step: tallyd's own user may only call them), unless FUNCTIONS is False."""

    def __init__(self, functions=True):
        self.functions = functions
        self.binary = redis_server_path()
        self.dir = _scratch_dir("redis")
        self.port = None
        self.proc = None
        self.paused = False
        self._client = None

    @property
    def logfile(self):
        return os.path.join(self.dir, "redis.log")

    def log(self):
        return _tail(self.logfile, 10 ** 6)

    def _spawn(self):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", self.dir, "--enable-debug-command", "local",
                "--daemonize", "no", "--logfile", self.logfile]
        self.proc = _spawn(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, cwd=self.dir)
        self.paused = False

    def _ping(self):
        c = RespClient(self.port, timeout=1.0)
        try:
            return c.command("PING") == "PONG"
        except RespError:  # LOADING while it reads the AOF
            return False
        finally:
            c.close()

    def start(self, timeout=10.0):
        fresh = self.port is None
        for attempt in range(5 if fresh else 1):
            if fresh:
                self.port = free_port()
            self._spawn()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if self._ping():
                        if self.functions:
                            load_functions(["--redis", "redis://127.0.0.1:%d/0" % self.port])
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.kill()
            log = self.log()
            if fresh and "Address already in use" in log and attempt < 4:
                self.port = None
                fresh = True
                continue
            sys.stderr.write("---- redis log (%s) ----\n%s\n----\n" % (self.logfile, log))
            raise RuntimeError("redis-server did not answer PING on port %s" % self.port)
        raise RuntimeError("redis-server could not find a free port")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=5.0):
        if not self.running():
            return
        self.drop_client()
        if self.paused:
            self.resume()
        _signal_pid(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_pid(self.proc, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self):
        self.drop_client()
        if self.running():
            _signal_pid(self.proc, signal.SIGKILL)
            self.proc.wait(5)
        self.paused = False

    def pause(self):
        _signal_pid(self.proc, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        _signal_pid(self.proc, signal.SIGCONT)
        self.paused = False

    # Commands, on one connection kept open (and reopened after a restart).
    def drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def command(self, *args):
        for attempt in range(2):
            if self._client is None:
                self._client = RespClient(self.port)
            try:
                return self._client.command(*args)
            except (OSError, ConnectionError):
                self.drop_client()
                if attempt == 1:
                    raise
        return None

    def flushall(self):
        return self.command("FLUSHALL")

    def flush_counts(self):
        """Every key but the daily visitor salts. Each collector caches the salts it has read;
        after a FLUSHALL a collector that had none makes a new one while another keeps the old,
        and the same reader is then two visitors until they read it again."""
        keys = [k for k in self.keys("*") if b"salt:" not in k]
        for i in range(0, len(keys), 500):
            self.command("DEL", *keys[i:i + 500])

    def keys(self, pattern="*"):
        """Every key matching PATTERN, through SCAN (bounded by the keyspace)."""
        out, cursor = [], b"0"
        for _ in range(100000):
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out.extend(batch)
            if cursor == b"0":
                return out
        raise AssertionError("SCAN did not finish")

    def article_totals(self, article, prefix="tally:"):
        """The totals hash of ARTICLE read straight from Redis: {field: int}."""
        pattern = glob_escape(prefix) + "{??}a:" + glob_escape(article)
        keys = self.keys(pattern)
        if not keys:
            return {}
        if len(keys) != 1:
            raise AssertionError("article %r has %d totals keys: %r" % (article, len(keys), keys))
        flat = self.command("HGETALL", keys[0])
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def close(self):
        self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        _report_kept(self.dir, "redis")

    def __enter__(self):
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def glob_escape(s):
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


# ---- HTTP ----

class Response:
    """status, headers (an http.client.HTTPMessage: case-insensitive), body (parsed JSON for
    JSON answers, else bytes), raw (bytes). Unpacks as (status, headers, body)."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        ctype = headers.get("Content-Type", "") or ""
        self.body = raw
        if ctype.startswith("application/json") and raw:
            try:
                self.body = json.loads(raw.decode("utf-8"))
            except ValueError:
                self.body = raw

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, dict(self.headers), self.raw[:300])


# What a browser sends. http.client sends no User-Agent at all, which tallyd may take for a
# bot; tests of bots and visitors pass their own.
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def request(port, method, path, body=None, headers=None, timeout=10.0, host="127.0.0.1"):
    headers = dict(headers or {})
    if not any(k.lower() == "user-agent" for k in headers):
        headers["User-Agent"] = BROWSER_UA
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return Response(resp.status, resp.headers, raw)
    finally:
        conn.close()


def encode_body(body):
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def post_events(port, body, headers=None, content_type="application/json", timeout=10.0):
    """POST BODY (bytes, str, or an object sent as JSON) to /v1/events. CONTENT_TYPE None sends
    no Content-Type header."""
    h = {}
    if content_type is not None:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return request(port, "POST", "/v1/events", encode_body(body), h, timeout)


def get(port, path, headers=None, timeout=10.0):
    return request(port, "GET", path, None, headers, timeout)


def raw(port, data, timeout=3.0, host="127.0.0.1", shut_write=False):
    """Write DATA on a new connection and read until the server closes it or TIMEOUT passes
    without a byte. SHUT_WRITE: then close our side for writing (the server sees the end of
    the stream after DATA). Returns (bytes read, closed by the server?)."""
    out = b""
    closed = False
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before it read everything: read what it said
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
    return out, closed


def split_responses(data):
    """Split raw bytes holding HTTP/1.x responses into [(status, headers{lower: value}, body)],
    using Content-Length (tallyd always sends it)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            out.append((None, {}, data))
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs.setdefault(k.strip().lower(), v.strip())
        n = int(hdrs.get("content-length", "0"))
        out.append((status, hdrs, rest[:n]))
        data = rest[n:]
    return out


def parse_metrics(text):
    """Prometheus text into {(name, frozenset(labels.items())): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$', line)
        if m is None:
            raise AssertionError("not a Prometheus sample line: %r" % line)
        labels = {}
        if m.group(3):
            for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3)):
                labels[lm.group(1)] = lm.group(2)
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class Exchange:
    """How one request on a KeepAliveClient ended.

    kind      "answered": a whole answer came back (status, headers, raw, body as in Response);
              "refused": no connection could be made, so nothing was sent;
              "reset": the server reset the connection before a byte of an answer. Linux
                  resets a connection closed while received bytes are still unread, or when
                  bytes arrive after it was closed: either way the server had not read the
                  whole request, so it was never handled. (The end of stream of a keep-alive
                  connection closed just as the request went out is followed by such a reset,
                  and counts as one.);
              "no_answer": the request went out and was not refused unread, then the stream
                  ended, broke off in the middle of an answer, or nothing whole came back
                  within the timeout: indeterminate.
    error     the exception behind refused/reset/no_answer, else None.
    fresh     the request went out on a new connection."""

    def __init__(self, kind, response=None, error=None, fresh=False):
        self.kind = kind
        self.response = response
        self.error = error
        self.fresh = fresh

    @property
    def status(self):
        return self.response.status if self.response is not None else None

    @property
    def body(self):
        return self.response.body if self.response is not None else None

    def __repr__(self):
        if self.kind == "answered":
            return "<Exchange answered %r>" % (self.response,)
        return "<Exchange %s %r fresh=%s>" % (self.kind, self.error, self.fresh)


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection, opened again whenever the server closed it, on a
    plain socket so that the end of every request is known exactly (see Exchange). PORT is a
    port or a callable that returns one, read at each connect: a client can follow a daemon
    started again on another port. Answers must carry Content-Length (tallyd's and libevent's
    do); HEAD is not supported. Not thread-safe: one client per thread."""

    def __init__(self, port, timeout=10.0, connect_timeout=2.0, host="127.0.0.1",
                 user_agent=BROWSER_UA):
        self.port = port
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.host = host
        self.user_agent = user_agent
        self.sock = None
        self.sock_port = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _port(self):
        return self.port() if callable(self.port) else self.port

    def _peer_closed(self):
        """The server closed (or reset) this idle connection, or sent something unasked."""
        p = select.poll()
        p.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(p.poll(0))

    def _reset_after_eof(self, wait=0.2):
        """After an end of stream with nothing read: did a reset follow? The peer's kernel
        answers bytes that reach a closed socket with one, at once on loopback; a server that
        read the whole request and then closed sends none."""
        deadline = time.monotonic() + wait
        while True:
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def request(self, method, path, body=None, headers=None):
        body = encode_body(body) if body is not None else b""
        fresh = False
        if self.sock is not None and self._peer_closed():
            self.close()
        if self.sock is None:
            self.sock_port = self._port()
            try:
                self.sock = socket.create_connection((self.host, self.sock_port),
                                                     timeout=self.connect_timeout)
            except OSError as e:
                self.sock = None
                return Exchange("refused", error=e, fresh=True)
            fresh = True
        h = {"Host": "%s:%d" % (self.host, self.sock_port), "User-Agent": self.user_agent}
        h.update(headers or {})
        if body or method in ("POST", "PUT"):
            h["Content-Length"] = str(len(body))
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        head += "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(head.encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.close()
            return Exchange("reset", error=e, fresh=fresh)
        except OSError as e:
            self.close()
            return Exchange("no_answer", error=e, fresh=fresh)
        return self._read(fresh)

    def post_events(self, body, headers=None, content_type="application/json"):
        h = {"Content-Type": content_type}
        h.update(headers or {})
        return self.request("POST", "/v1/events", body, h)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def _read(self, fresh):
        buf = b""
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    status_line, _, fields = buf[:end].partition(b"\r\n")
                    version, status = status_line.decode("latin-1").split(" ", 2)[:2]
                    hdrs = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
                    n = int(hdrs.get("Content-Length", "0"))
                    if len(buf) >= end + 4 + n:
                        resp = Response(int(status), hdrs, buf[end + 4:end + 4 + n])
                        if (len(buf) > end + 4 + n or version != "HTTP/1.1" or
                                (hdrs.get("Connection", "") or "").lower() == "close"):
                            self.close()
                        return Exchange("answered", resp, fresh=fresh)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no whole answer within %.1f s" % self.timeout)
                self.sock.settimeout(left)
                chunk = self.sock.recv(65536)
                if not chunk:
                    if not buf and self._reset_after_eof():
                        self.close()
                        return Exchange("reset", error=ConnectionResetError(
                            "end of stream, then a reset in answer to the request"), fresh=fresh)
                    raise EOFError("the server closed the connection after %d bytes of an answer"
                                   % len(buf))
                buf += chunk
        except ConnectionResetError as e:
            self.close()
            return Exchange("reset" if not buf else "no_answer", error=e, fresh=fresh)
        except (OSError, EOFError, ValueError) as e:
            self.close()
            return Exchange("no_answer", error=e, fresh=fresh)


# ---- tallyd ----

class Tallyd:
    """A tallyd of our own, pointed at REDIS (or at REDIS_PORT), listening on a free port."""

    def __init__(self, redis=None, args=(), env=None, threads=None, redis_port=None):
        self.binary = tallyd_path()
        self.redis = redis
        self.redis_port = redis_port if redis_port is not None else redis.port
        self.args = list(args)
        self.env = dict(env or {})
        self.threads = threads if threads is not None else tallyd_threads()
        _announce(self.binary)
        self.dir = _scratch_dir("tallyd")
        self.logfile = os.path.join(self.dir, "tallyd.log")
        self.port = None
        self.proc = None
        self.returncode = None

    def environ(self):
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("TALLY_") and not k.startswith("TALLY_TEST_"))}
        env.update(self.env)
        return env

    def argv(self):
        # --rate-limit 0: every test client is 127.0.0.1, and most send far more than 50
        # events a second. A test of the limit passes its own --rate-limit, which comes later
        # and wins.
        return [self.binary, "--listen", "127.0.0.1:%d" % self.port,
                "--redis", "redis://127.0.0.1:%d/0" % self.redis_port,
                "--threads", str(self.threads), "--log-level", "debug",
                "--rate-limit", "0"] + self.args

    def start(self, timeout=10.0):
        for attempt in range(5):
            self.port = free_port()
            log = open(self.logfile, "ab")
            try:
                self.proc = _spawn(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, env=self.environ())
            finally:
                log.close()
            self.returncode = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if get(self.port, "/healthz", timeout=1.0).status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
            if self.proc.poll() is None:
                self.kill()
            text = self.log()
            if "cannot listen" in text and attempt < 4:
                continue
            raise RuntimeError("tallyd did not answer /healthz (exit %r); argv %r\n"
                               "---- log ----\n%s" % (self.proc.returncode, self.argv(), text))
        raise RuntimeError("tallyd could not find a free port")

    def wait_ready(self, timeout=10.0):
        """Wait until every worker thread has its Redis connections (/readyz answers 200 only
        then, whichever worker answers it), and return self. /healthz (what start() waits for)
        answers before: the connections' handshakes come after the listener, and a read that
        arrives before its worker's is answered 503, as whenever Redis is unavailable (writes
        are held instead). A test whose first request is a read waits for this, as a load
        balancer waits for /readyz."""
        wait_until(lambda: self.get("/readyz", timeout=5).status == 200,
                   timeout=timeout, message="tallyd did not get ready: not every worker "
                                            "has its Redis connection")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        _signal_pid(self.proc, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send SIG and wait up to TIMEOUT seconds: the exit code, or None after a SIGKILL."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode
        _signal_pid(self.proc, sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = None
        return self.returncode

    def wait(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def kill(self):
        if self.running():
            _signal_pid(self.proc, signal.SIGKILL)
            self.proc.wait(5)

    def rss_bytes(self):
        """The resident set size of the running daemon (VmRSS of /proc/<pid>/status)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc/%d/status" % self.proc.pid)

    def log(self):
        return _tail(self.logfile, 10 ** 6)

    # What a sanitizer writes when it finds something (the test builds run under ASan+UBSan
    # or TSan); any of it in a log fails the test that ran the daemon.
    SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                         "WARNING: ThreadSanitizer")

    def close(self):
        self.kill()
        _report_kept(self.dir, "tallyd")
        found = [s for s in self.SANITIZER_REPORTS if s in self.log()]
        if found:
            raise AssertionError("sanitizer reports (%s) in %s:\n%s"
                                 % (", ".join(found), self.logfile, _tail(self.logfile, 60)))

    def __enter__(self):
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # HTTP against this daemon.
    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return request(self.port, method, path, body, headers, timeout)

    def post_events(self, body, headers=None, content_type="application/json", timeout=10.0):
        return post_events(self.port, body, headers, content_type, timeout)

    def get(self, path, headers=None, timeout=10.0):
        return get(self.port, path, headers, timeout)

    def raw(self, data, timeout=3.0, shut_write=False):
        return raw(self.port, data, timeout, shut_write=shut_write)

    def stats(self, article):
        r = self.get("/v1/stats/" + quote(article))
        if r.status != 200:
            raise AssertionError("stats of %r: %r" % (article, r))
        return r.body

    def metrics(self):
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError("metrics: %r" % (r,))
        return parse_metrics(r.raw.decode("utf-8"))


def quote(s):
    """Percent-encode S for a path segment or query value: everything but unreserved bytes."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c.isalnum() and b < 0x80 or c in "-._~":
            out.append(c)
        else:
            out.append("%%%02X" % b)
    return "".join(out)


ENGAGE_KEYS = ("engaged_seconds", "reads", "words")
STATS_KEYS = {"article", "views", "visitors", "shares", "shares_by_network", "comments",
              *ENGAGE_KEYS}


def counts(stats):
    """The counters of a stats object without "visitors" (an estimate the ingest tests do not
    pin down), after checking that it has exactly the contract's members. The engagement
    members (engaged_seconds, reads, words) are left out where they are 0, so that tests of
    views, shares and comments compare as they always did: a non-zero one still fails them."""
    if set(stats) != STATS_KEYS:
        raise AssertionError("stats members %r, want %r" % (sorted(stats), sorted(STATS_KEYS)))
    return {k: v for k, v in stats.items()
            if k != "visitors" and not (k in ENGAGE_KEYS and v == 0)}


def zero_stats(article):
    return {"article": article, "views": 0, "visitors": 0, "shares": 0,
            "shares_by_network": {}, "comments": 0, "engaged_seconds": 0, "reads": 0,
            "words": 0}


# ---- Test cases ----

class TallyTestCase(unittest.TestCase):
    """Prints the logs of the daemons a test used when it fails: the class's REDIS and TALLYD
    (set by setUpClass) and any registered with self.track()."""

    redis = None
    tallyd = None
    daemons = ()  # more daemons of the class, whose logs are printed too

    def track(self, *daemons):
        self.__dict__.setdefault("_tracked", []).extend(daemons)
        return daemons[0] if len(daemons) == 1 else daemons

    def run(self, result=None):
        before = None
        if result is not None:
            before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            self.dump_logs()
        return out

    def dump_logs(self):
        seen = []
        cls = type(self)
        for d in ([cls.tallyd] + list(cls.daemons) + self.__dict__.get("_tracked", [])
                  + [cls.redis]):
            if d is None or any(d is s for s in seen):
                continue
            seen.append(d)
            if isinstance(d, Tallyd):
                sys.stderr.write("\n---- tallyd log of %s (%s) ----\n%s\n----\n"
                                 % (self.id(), d.logfile, _tail(d.logfile)))
            elif isinstance(d, Redis):
                sys.stderr.write("\n---- redis log of %s (%s) ----\n%s\n----\n"
                                 % (self.id(), d.logfile, _tail(d.logfile, 60)))
        sys.stderr.flush()


class OneCollectorTestCase(TallyTestCase):
    """One redis-server and one tallyd (started with TALLYD_ARGS) for the whole class; each
    test starts from an empty Redis, with the collector as self.t, every worker of it with
    its Redis connections."""

    tallyd_args = ()

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis().start()
        cls.tallyd = Tallyd(cls.redis, list(cls.tallyd_args))
        try:
            cls.tallyd.start().wait_ready()
        except Exception:
            cls.tallyd.close()
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def setUp(self):
        self.redis.flushall()
        self.t = self.tallyd
