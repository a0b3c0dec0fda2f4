#!/usr/bin/env python3
"""bench.py -- the Python half of bench/run.sh (standard library only).

  bench.py ports N                     N free TCP ports on 127.0.0.1, one per line
  bench.py record [options]            turn one wrk run's files into a JSON line (see --help)
  bench.py idle --port P --pid PID --n N
                                       open N idle keep-alive connections to 127.0.0.1:P,
                                       read VmRSS of PID, close them; prints JSON
  bench.py cpu PID...                  CPU seconds used by PIDs and their children (nginx workers)
  bench.py sample BASE SERVER-PID REDIS-PID
                                       CPU seconds so far of the server (and its children), of
                                       Redis and of the whole machine, into BASE.cpu,
                                       BASE.redis-cpu, BASE.machine
  bench.py wrk CPU-FILE COMMAND...     run COMMAND (wrk), then write the CPU seconds it used
                                       (from wait4) to CPU-FILE; exit with its status
  bench.py slowlog PORT                Redis's time per script and command from its slow log
                                       (BENCH_SLOWLOG=1), as JSON
  bench.py report RESULTS.jsonl RSS.json OUT.md
                                       medians per scenario and target, the table, the count
                                       checks and the targets; exit 1 when a count check failed
"""
import argparse
import json
import os
import re
import resource
import socket
import statistics
import sys
import time

import capacity  # its Redis client (bench/capacity.py)

# tally: tallyd on the journal path (--fold-interval 200, its default); tally-direct:
# --fold-interval 0 (every unit counted at once).
TARGETS = ("tally", "tally-direct", "nginx", "node", "webdis")
TALLY_TARGETS = ("tally", "tally-direct")

# Commands the harness itself sends between the two snapshots (INFO for the snapshots, ZCARD
# while it waits for the journals to be folded).
HARNESS_COMMANDS = {"info", "zcard"}


# ---------------------------------------------------------------- ports


def free_ports(n):
    """N distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cmd_ports(args):
    for port in free_ports(args.n):
        print(port)


# ---------------------------------------------------------------- record


def parse_info_text(text):
    """used CPU seconds and {command: calls} from `INFO cpu` + `INFO commandstats` output."""
    cpu, stats = parse_info_stats(text)
    return cpu, {k: v[0] for k, v in stats.items()}


def parse_info_stats(text):
    """used CPU seconds and {command: (calls, usec)} from `INFO cpu` + `INFO commandstats`."""
    cpu = 0.0
    stats = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            cpu += float(line.split(":", 1)[1])
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
        if m:
            stats[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return cpu, stats


def parse_wrk_text(text):
    """The JSON of the "BENCH {...}" line that lua/common.lua prints, or None."""
    for line in text.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    return None


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def parse_info(path):
    return parse_info_text(read_text(path))


def parse_wrk(path):
    return parse_wrk_text(read_text(path))


def read_json(path):
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_int(path):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_float(path):
    try:
        with open(path, encoding="utf-8") as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def proc_cpu(pid):
    """CPU seconds (user + system) PID has used, or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(roots):
    """The CPU seconds of the processes ROOTS and of their children (nginx's workers, the Node
    collector's processes)."""
    pids = set(roots)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in roots:
            pids.add(int(d))
    return sum(proc_cpu(p) for p in pids)


def cmd_cpu(a):
    print(f"{tree_cpu(set(a.pids)):.3f}")


def machine():
    """Busy and total CPU seconds of the whole machine (all cores) so far, from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def cmd_sample(a):
    """BASE.cpu: the server's CPU seconds; BASE.redis-cpu: Redis's; BASE.machine: the machine's
    busy and total seconds."""
    for suffix, text in ((".cpu", f"{tree_cpu({a.server})}"),
                         (".redis-cpu", f"{tree_cpu({a.redis})}"),
                         (".machine", "%.3f %.3f" % machine())):
        with open(a.base + suffix, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def cmd_wrk(a):
    """Run wrk, pass SIGTERM/SIGINT on to it, record its CPU seconds."""
    import signal
    import subprocess
    child = subprocess.Popen(a.command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda n, _f: child.send_signal(n))
    while True:
        try:
            _, status, ru = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    with open(a.cpu_file, "w", encoding="utf-8") as f:
        f.write(f"{ru.ru_utime + ru.ru_stime:.3f}\n")
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


def read_pair(path):
    try:
        with open(path, encoding="utf-8") as f:
            a, b = f.read().split()
        return float(a), float(b)
    except (OSError, ValueError):
        return None


def metrics_counted(path):
    """view + share events counted, from tallyd's /metrics."""
    if not path or not os.path.exists(path):
        return None
    total = 0
    found = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r'tally_events_total\{type="(view|share)",outcome="counted"\}\s+(\d+)', line)
            if m:
                total += int(m.group(2))
                found = True
    return total if found else None


def metrics_value(path, name):
    """The value of the metric NAME (one without labels) in tallyd's /metrics, or None."""
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(re.escape(name) + r"\s+([0-9.e+]+)\s*$", line)
            if m:
                return float(m.group(1))
    return None


def tally_check(w, totals, seeded, counting, dedupe, metrics):
    """PASS, FAIL or UNSURE, and why, for one tally run."""
    if w is None:
        return "FAIL", "no result line from wrk"
    if totals is None:
        return "FAIL", "could not read GET /v1/totals?period=all after the run"
    counted = int(totals.get("views", 0)) + int(totals.get("shares", 0)) - seeded
    if not counting:
        if counted == 0:
            return "PASS", "reads only: nothing counted"
        return "FAIL", f"reads only, yet Redis counted {counted} events"
    epr = w["events_per_request"]
    acked = w["accepted"]
    notes = []
    if not dedupe and w["accepted"] != w["ok"] * epr:
        return "FAIL", (f"200 answers said accepted={w['accepted']} but carried "
                        f"{w['ok']}x{epr}={w['ok'] * epr} events (nothing should be "
                        f"ignored)")
    if metrics is not None and metrics - seeded != counted:
        notes.append(f"/metrics says {metrics - seeded} counted")
    unanswered = w["main_sent"] - w["main_recv"]
    if counted == acked and unanswered == 0:
        detail = f"Redis {counted} = acknowledged {acked}"
        if dedupe:
            detail += f" (+{w['ignored']} repeats ignored)"
        return "PASS", "; ".join([detail] + notes)
    if unanswered > 0 and acked <= counted <= acked + unanswered * epr:
        return "UNSURE", "; ".join([
            f"Redis {counted}, acknowledged {acked}, but {unanswered} counting requests were "
            f"unanswered when wrk stopped (a longer BENCH_DRAIN lets them finish)"] + notes)
    return "FAIL", "; ".join([
        f"Redis counted {counted} events, 200 answers acknowledged {acked} "
        f"(difference {counted - acked:+d}; unanswered requests {unanswered})"] + notes)


def cmd_record(a):
    w = parse_wrk(a.wrk)
    _, stats0 = parse_info_stats(read_text(a.before))
    _, stats1 = parse_info_stats(read_text(a.after))
    calls0 = {k: v[0] for k, v in stats0.items()}
    calls1 = {k: v[0] for k, v in stats1.items()}
    rec = {
        "round": a.round, "scenario": a.scenario, "conns": a.conns, "articles": a.articles,
        "target": a.target, "counting": bool(a.counting), "dedupe": bool(a.dedupe),
    }
    main_s = a.duration - a.drain
    if w is None:
        rec.update(ok=0, rps=0.0, eps=0.0, p50_us=None, p99_us=None, cpu_us_per_event=None,
                   cmds_per_event=None, error="no BENCH line in wrk output")
    else:
        # Events one request of this target carries (webdis: one command, or one script of a
        # batch's HINCRBYs); reads count as one per request.
        epr = w["events_per_request"] if a.counting else 1
        events = w["ok"] * epr
        cmds = sum(v - calls0.get(k, 0) for k, v in calls1.items() if k not in HARNESS_COMMANDS)

        def delta(before, after):
            x0, x1 = read_float(before), read_float(after)
            return x1 - x0 if x0 is not None and x1 is not None else None

        def per(x, n):
            return x * 1e6 / n if x is not None and n else None

        server_cpu = delta(a.cpu_before, a.cpu_after)
        redis_cpu = delta(a.redis_cpu_before, a.redis_cpu_after)
        requests = w["main_recv"]
        m0, m1 = read_pair(a.machine_before), read_pair(a.machine_after)
        wrk_cpu = read_float(a.wrk_cpu) if a.wrk_cpu else None
        if m0 and m1 and m1[1] > m0[1]:
            ncpu = os.cpu_count() or 1
            wall = (m1[1] - m0[1]) / ncpu
            busy = m1[0] - m0[0]
            ours = sum(x for x in (server_cpu, redis_cpu, wrk_cpu) if x is not None)
            # Cores busy over the run, and how many of them went to processes other than the
            # server, Redis and wrk (the machine is shared).
            rec["machine_busy_cores"] = busy / wall
            rec["other_busy_cores"] = max(0.0, busy - ours) / wall
        nothing_in_redis = a.target == "nginx"
        rec.update(
            server_cpu_us_per_req=per(server_cpu, requests),
            server_cpu_us_per_event=per(server_cpu, events),
            redis_cpu_us_per_req=None if nothing_in_redis else per(redis_cpu, requests),
            wrk_cpu_s=wrk_cpu,
            wrk=w, main_s=main_s,
            rps=w["main_recv"] / main_s, eps=events / main_s,
            ok_rps=w["ok"] / main_s,
            p50_us=w["p50_us"], p99_us=w["p99_us"],
            cpu_us_per_event=None if nothing_in_redis else per(redis_cpu, events),
            cmds_per_event=(cmds / events) if events and not nothing_in_redis else None,
        )
        # Group commit: how many events one Redis write carried on average. On the direct path a
        # write is one FCALL of the apply function; on the journal path FCALLs are also folds,
        # and each write is one XADD.
        wcmd = "xadd" if a.target == "tally" else "fcall"
        writes = calls1.get(wcmd, 0) - calls0.get(wcmd, 0)
        # On the journal path the writes of articles read lately, or asking for their stats,
        # are counted at once (--follow-reads, ?stats=1): one FCALL each, no XADD. Those are
        # left out of both sides.
        at_once = (metrics_value(a.metrics, "tally_writes_at_once_total") or 0) * epr \
            if a.target == "tally" and a.counting else 0
        rec["at_once_events"] = at_once
        if a.target in TALLY_TARGETS and a.counting:
            rec["redis_writes"] = writes
            rec["events_per_write"] = ((events - at_once) / writes) if writes else None
        # Where Redis's time went: calls and microseconds per command over the run (commands
        # run inside scripts are counted too, and their time is also inside the FCALL's).
        rec["cmdstats"] = {k: [v[0] - stats0.get(k, (0, 0))[0], v[1] - stats0.get(k, (0, 0))[1]]
                           for k, v in stats1.items()
                           if k not in HARNESS_COMMANDS and v[0] != stats0.get(k, (0, 0))[0]}
        rec["events"] = events
    rec["fold_wait_s"] = read_float(a.fold_wait) if a.fold_wait else None
    if a.slowlog:
        rec["slowlog"] = read_json(a.slowlog)
    if a.target in TALLY_TARGETS:
        totals = read_json(a.totals)
        rec["totals"] = totals
        rec["hwm_kib"] = read_int(a.hwm)
        # Folds of this tallyd's journals over its whole life: a fresh one per run, which folds
        # only while entries wait, so over the run and the wait until every journal was folded.
        if a.target == "tally":
            rec["folds"] = metrics_value(a.metrics, "tally_folds_total")
            wait = rec.get("fold_wait_s")
            if rec["folds"] is not None and wait is not None and wait >= 0:
                rec["folds_per_s"] = rec["folds"] / (a.duration + wait)
        rec["check"], rec["check_detail"] = tally_check(
            w, totals, a.seeded, a.counting, a.dedupe, metrics_counted(a.metrics))
    elif a.target in ("webdis", "node") and w is not None:
        got = read_int(a.counter_sum)
        want = (w["ok"] * w["events_per_request"] if a.counting else 0) + a.seeded
        rec["webdis_check"] = "ok" if got == want else f"Redis {got}, 200s {want}"
    with open(a.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    # One progress line.
    p99 = f"{rec['p99_us'] / 1000:.2f}ms" if rec.get("p99_us") is not None else "-"
    chk = rec.get("check") or rec.get("webdis_check") or ""
    epw = f" {rec['events_per_write']:.1f} ev/write" if rec.get("events_per_write") else ""
    busy = (f" machine {rec['machine_busy_cores']:.2f} cores busy, others {rec['other_busy_cores']:.2f}"
            if rec.get("machine_busy_cores") is not None else "")
    print(f"  round {a.round} {a.scenario:<18} c{a.conns:<4} {a.target:<6} "
          f"{rec['rps']:>8.0f} req/s {rec['eps']:>9.0f} ev/s p99 {p99:>9} {chk}{epw}{busy}"
          + (f"  [{rec['check_detail']}]" if rec.get("check") not in (None, "PASS") else ""),
          flush=True)


# ---------------------------------------------------------------- slowlog


def cmd_slowlog(a):
    """With slowlog-log-slower-than 0 over a run: Redis's time in each script (FCALL of
    tally_<name>_<version>, by name) and in each other command, as JSON {name: [calls, usec,
    the longest call's usec, the median call's usec]}. The slow log holds only commands clients
    sent (not those scripts run) and only slowlog-max-len of them: "complete" says whether it
    held them all."""
    redis = capacity.Redis(a.port)
    entries = redis.command("SLOWLOG", "GET", "-1")
    out, each = {}, {}
    for e in entries:
        args = [x.decode("utf-8", "replace") for x in e[3]]
        name = args[0].lower() if args else "?"
        if name in ("fcall", "fcall_ro") and len(args) > 1:
            m = re.match(r"tally_([a-z_]+?)_[0-9a-f]{12}$", args[1])
            name = m.group(1) if m else args[1]
        if name in ("slowlog", "config", "info", "zcard", "ping"):
            continue
        x = out.setdefault(name, [0, 0])
        x[0] += 1
        x[1] += e[2]
        each.setdefault(name, []).append(e[2])
    for name, calls in each.items():
        calls.sort()
        out[name] += [calls[-1], calls[len(calls) // 2]]
    maxlen = int(redis.command("CONFIG", "GET", "slowlog-max-len")[1])
    print(json.dumps({"functions": out, "complete": len(entries) < maxlen}))


# ---------------------------------------------------------------- idle connections


def vm(pid, field):
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def cmd_idle(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    before = vm(a.pid, "VmRSS")
    socks = []
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 bench\r\n\r\n"
    answered = 0
    try:
        for _ in range(a.n):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            socks.append(s)
        # One request on each, so every connection has been served once and is now an idle
        # keep-alive connection, as a browser leaves it.
        for s in socks:
            s.sendall(req)
        for s in socks:
            try:
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    answered += 1
            except OSError:
                pass
        time.sleep(a.settle)
        rss = vm(a.pid, "VmRSS")
        hwm = vm(a.pid, "VmHWM")
        # Still open? A closed connection reads EOF at once.
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                alive += 0 if s.recv(1) == b"" else 1
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    print(json.dumps({"n": a.n, "answered": answered, "alive": alive, "rss_idle_kib": before,
                      "rss_kib": rss, "hwm_kib": hwm}))


# ---------------------------------------------------------------- report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def fmt_ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def scenario_label(s):
    return f"{s['scenario']} c{s['conns']}"


SCRIPT_COMMANDS = ("fcall", "fcall_ro", "evalsha", "eval")


def redis_profile(groups, order, top=9):
    """(header, rows): for each counting scenario and tally target, Redis µs per event of the
    commands that took most of it (medians over the rounds), or None."""
    rows = []
    for key in order:
        g = groups[key]
        if not g["counting"]:
            continue
        for t in TALLY_TARGETS:
            runs = [r for r in g["runs"].get(t, []) if r.get("cmdstats") and r.get("events")]
            if not runs:
                continue
            per = {}
            for r in runs:
                cs = r["cmdstats"]
                script = sum(cs.get(k, (0, 0))[1] for k in SCRIPT_COMMANDS)
                inner = sum(v[1] for k, v in cs.items() if k not in SCRIPT_COMMANDS)
                vals = {k: v[1] / r["events"] for k, v in cs.items() if k not in SCRIPT_COMMANDS}
                vals["script"] = max(0, script - inner) / r["events"]
                vals["total"] = script / r["events"]
                for k, v in vals.items():
                    per.setdefault(k, []).append(v)
            m = {k: med(v) for k, v in per.items()}
            best = sorted((k for k in m if k not in ("total", "script")), key=lambda k: -m[k])[:top]
            rows.append([scenario_label(g), t, fmt_num(m["total"], 2), fmt_num(m["script"], 2)]
                        + [" ".join(f"{k} {m[k]:.2f}" for k in best)])
    if not rows:
        return None
    return (["scenario", "target", "FCALL µs/event", "script's own", "commands (µs/event)"], rows)


def script_profile(groups, order):
    """(header, rows): Redis µs per event in each of tally's scripts, from the slow log
    (BENCH_SLOWLOG=1), medians over the rounds; or None."""
    rows = []
    names = ("ack", "merged", "staged", "fold", "reclaim", "apply")
    for key in order:
        g = groups[key]
        if not g["counting"]:
            continue
        for t in TALLY_TARGETS:
            runs = [r for r in g["runs"].get(t, []) if r.get("slowlog") and r.get("events")]
            if not runs:
                continue
            cells = []
            for n in names:
                per_ev = med(r["slowlog"]["functions"].get(n, [0, 0])[1] / r["events"] for r in runs)
                calls = med(r["slowlog"]["functions"].get(n, [0, 0])[0] for r in runs)
                per_call = med(r["slowlog"]["functions"][n][1] / r["slowlog"]["functions"][n][0]
                               for r in runs if r["slowlog"]["functions"].get(n, [0])[0])
                # The longest call of the rounds and the median of their median calls: how
                # long one call holds Redis.
                longest = max((r["slowlog"]["functions"][n][2] for r in runs
                               if len(r["slowlog"]["functions"].get(n, [])) > 2), default=None)
                median = med(r["slowlog"]["functions"][n][3] for r in runs
                             if len(r["slowlog"]["functions"].get(n, [])) > 3)
                hold = ("" if longest is None else
                        f", max {longest:,.0f} / median {median:,.0f} µs")
                cells.append("-" if not calls else
                             f"{per_ev:.2f} ({calls:,.0f} calls, {per_call:,.0f} µs each{hold})")
            complete = all(r["slowlog"].get("complete") for r in runs)
            rows.append([scenario_label(g), t] + cells + ["yes" if complete else "NO"])
    if not rows:
        return None
    return (["scenario", "target"] + [f"{n} µs/event" for n in names] + ["slow log complete"],
            rows)


def cmd_report(a):
    recs = []
    with open(a.results, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    rss = read_json(a.rss)

    # Group by (scenario, conns) in first-seen order, then by target.
    order = []
    groups = {}
    for r in recs:
        key = (r["scenario"], r["conns"])
        if key not in groups:
            groups[key] = {"scenario": r["scenario"], "conns": r["conns"],
                           "articles": r["articles"], "counting": r["counting"], "runs": {}}
            order.append(key)
        groups[key]["runs"].setdefault(r["target"], []).append(r)

    rows = []
    for key in order:
        g = groups[key]
        m = {}
        for t in TARGETS:
            runs = g["runs"].get(t)
            if not runs:
                continue
            m[t] = {
                "rps": med(r["rps"] for r in runs),
                "eps": med(r["eps"] for r in runs),
                "p50": med(r.get("p50_us") for r in runs),
                "p99": med(r.get("p99_us") for r in runs),
                "cpu": med(r.get("cpu_us_per_event") for r in runs),
                "scpu": med(r.get("server_cpu_us_per_req") for r in runs),
                "scpu_ev": med(r.get("server_cpu_us_per_event") for r in runs),
                "rcpu": med(r.get("redis_cpu_us_per_req") for r in runs),
                "others": med(r.get("other_busy_cores") for r in runs),
                "cmds": med(r.get("cmds_per_event") for r in runs),
                "fold_wait": med(r.get("fold_wait_s") for r in runs),
                "folds_per_s": med(r.get("folds_per_s") for r in runs),
                "events_per_fold": med((r["events"] - r.get("at_once_events", 0)) / r["folds"]
                                       for r in runs if r.get("folds") and r.get("events")),
                "at_once_share": med(r.get("at_once_events", 0) / r["events"] for r in runs
                                     if r.get("events")),
                "n": len(runs),
            }
            if t in TALLY_TARGETS:
                m[t]["epw"] = med(r.get("events_per_write") for r in runs)
                checks = [r.get("check") for r in runs]
                m[t]["check"] = ("FAIL" if "FAIL" in checks else
                                 "UNSURE" if "UNSURE" in checks else "PASS")
                m[t]["check_details"] = [f"round {r['round']}: {r.get('check')} {r.get('check_detail', '')}"
                                         for r in runs]
            elif t in ("webdis", "node"):
                wc = [r.get("webdis_check") for r in runs if r.get("webdis_check")]
                m[t]["check"] = "ok" if wc and all(c == "ok" for c in wc) else ("; ".join(wc) or "-")
            else:
                m[t]["check"] = "-"
        g["m"] = m
        for t in TARGETS:
            if t not in m:
                continue
            x = m[t]
            rn = x["eps"] / m["nginx"]["eps"] if "nginx" in m and m["nginx"]["eps"] else None
            rw = x["eps"] / m["webdis"]["eps"] if "webdis" in m and m["webdis"]["eps"] else None
            rj = x["eps"] / m["node"]["eps"] if "node" in m and m["node"]["eps"] else None
            rows.append([
                scenario_label(g), t, fmt_num(x["rps"]), fmt_num(x["eps"]), fmt_ms(x["p50"]),
                fmt_ms(x["p99"]), fmt_num(x["scpu"], 2), fmt_num(x["scpu_ev"], 2),
                fmt_num(x["rcpu"], 2), fmt_num(x["cpu"], 2), fmt_num(x["cmds"], 2), fmt_ratio(rn),
                fmt_ratio(rw), fmt_ratio(rj), fmt_num(x["others"], 2), x["check"],
            ])

    header = ["scenario", "target", "requests/s", "events/s", "p50", "p99",
              "server CPU µs/req", "server CPU µs/event", "Redis CPU µs/req", "Redis CPU µs/event",
              "Redis cmds/event", "vs nginx", "vs webdis", "vs node", "others' cores",
              "count check"]

    def text_table(hdr, body):
        widths = [max(len(str(r[i])) for r in [hdr] + body) for i in range(len(hdr))]
        lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in [hdr] + body]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def md_table(hdr, body):
        out = ["| " + " | ".join(hdr) + " |",
               "|" + "|".join("---" if i < 2 else "---:" for i in range(len(hdr))) + "|"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
        return "\n".join(out)

    # ---- targets ----
    def get(scen, conns, target):
        g = groups.get((scen, conns))
        return g["m"].get(target) if g and "m" in g else None

    def conns_of(scen):
        return [k[1] for k in order if k[0] == scen]

    targets = []

    def target(name, ok, detail):
        targets.append([name, "n/a" if ok is None else ("PASS" if ok else "MISS"), detail])

    for scen in ("view-uniform", "view-zipf"):
        for c in conns_of(scen):
            t, n = get(scen, c, "tally"), get(scen, c, "nginx")
            if t and n and n["rps"]:
                r = t["rps"] / n["rps"]
                target(f"one view per POST ≥ 0.8× nginx ({scen} c{c})", r >= 0.8,
                       f"{t['rps']:,.0f} vs {n['rps']:,.0f} req/s = {r:.3f}x")
    for c in conns_of("batch20"):
        t, n, w = get("batch20", c, "tally"), get("batch20", c, "nginx"), get("batch20", c, "webdis")
        if t and w and w["eps"]:
            r = t["eps"] / w["eps"]
            target(f"20-event batches ≥ 2× webdis events/s (c{c})", r >= 2,
                   f"{t['eps']:,.0f} vs {w['eps']:,.0f} events/s = {r:.3f}x")
        if t and n and n["rps"]:
            r = t["eps"] / (n["rps"] * 20)
            target(f"20-event batches ≥ 0.5× nginx req/s × 20 (c{c})", r >= 0.5,
                   f"{t['eps']:,.0f} vs {n['rps'] * 20:,.0f} events/s = {r:.3f}x")
    for c in conns_of("healthz"):
        t, n = get("healthz", c, "tally"), get("healthz", c, "nginx")
        if t and t["scpu"] is not None:
            target(f"HTTP layer ≤ 4 µs CPU per request (healthz c{c})", t["scpu"] <= 4,
                   f"{t['scpu']:.2f} µs/request (nginx {n['scpu']:.2f})" if n and n["scpu"]
                   else f"{t['scpu']:.2f} µs/request")
    for c in conns_of("view-uniform"):
        t = get("view-uniform", c, "tally")
        if t and t["scpu"] is not None:
            target(f"tallyd ≤ 6.5 µs CPU per single-view event (view-uniform c{c})",
                   t["scpu"] <= 6.5, f"{t['scpu']:.2f} µs/event")
    for c in conns_of("pixel"):
        t, n = get("pixel", c, "tally"), get("pixel", c, "nginx")
        if t and n and n["rps"]:
            r = t["rps"] / n["rps"]
            target(f"pixel ≥ 0.8× nginx (c{c})", r >= 0.8,
                   f"{t['rps']:,.0f} vs {n['rps']:,.0f} req/s = {r:.3f}x")
    for c in conns_of("stats-hot"):
        t, n = get("stats-hot", c, "tally"), get("stats-hot", c, "nginx")
        if t and n and n["rps"]:
            r = t["rps"] / n["rps"]
            target(f"hot stats GET ≥ 0.8× nginx (c{c})", r >= 0.8,
                   f"{t['rps']:,.0f} vs {n['rps']:,.0f} req/s = {r:.3f}x")
    for c in conns_of("view-zipf"):
        t, w = get("view-zipf", c, "tally"), get("view-zipf", c, "webdis")
        if t and w and t["cpu"] is not None and w["cpu"] is not None:
            target(f"Redis CPU per event (view-zipf c{c}) ≤ webdis per request", t["cpu"] <= w["cpu"],
                   f"{t['cpu']:.2f} vs {w['cpu']:.2f} µs")
    for c in conns_of("batch20"):
        t = get("batch20", c, "tally")
        if t and t["cpu"] is not None:
            target(f"Redis CPU per event ≤ 1 µs in 20-event batches (batch20 c{c})", t["cpu"] <= 1,
                   f"{t['cpu']:.2f} µs")
    t = get("view-uniform", 64, "tally")
    if t and t["p99"] is not None:
        target("p99 ≤ 5 ms at 64 connections (view-uniform c64)", t["p99"] <= 5000,
               f"p99 {t['p99'] / 1000:.2f} ms (p50 {t['p50'] / 1000:.2f} ms)")
    if rss and rss.get("rss_kib"):
        mib = rss["rss_kib"] / 1024
        ok = mib <= 64 and rss.get("alive") == rss.get("n")
        target(f"RSS ≤ 64 MiB with {rss['n']:,} idle connections", ok,
               f"VmRSS {mib:.1f} MiB (idle before: {rss['rss_idle_kib'] / 1024:.1f} MiB; "
               f"{rss['alive']}/{rss['n']} connections still open, {rss['answered']} answered)")
    else:
        target("RSS ≤ 64 MiB with 10,000 idle connections", None, "not measured")
    small = [k for k in order if k[0] == "view-uniform-100"]
    big = [k for k in order if k[0] == "view-uniform-1M"]
    if small and big:
        for (s, c) in small:
            if (big[0][0], c) in groups:
                t100, t1m = get(s, c, "tally"), get(big[0][0], c, "tally")
                if t100 and t1m and t100["rps"]:
                    r = t1m["rps"] / t100["rps"]
                    target(f"1,000,000 articles within 15 % of 100 articles (c{c})",
                           abs(r - 1) <= 0.15,
                           f"{t1m['rps']:,.0f} vs {t100['rps']:,.0f} req/s = {r:.3f}x")
    else:
        target("1,000,000 articles within 15 % of 100 articles", None, "not run (full mode only)")

    checks = []
    for key in order:
        g = groups[key]
        for t in TALLY_TARGETS:
            x = g["m"].get(t)
            if x:
                checks.append([f"{scenario_label(g)} {t}", x["check"], x["check_details"]])
    failed = [c for c in checks if c[1] == "FAIL"]

    # ---- print ----
    print()
    print(text_table(header, rows))
    print()
    print("Count checks (Redis totals after each tally run vs the events its 200 answers acknowledged):")
    for name, verdict, details in checks:
        print(f"  {verdict:<6} {name}")
        if verdict != "PASS" or a.verbose:
            for d in details:
                print(f"           {d}")
    epw = [f"{scenario_label(groups[k])} {t} {groups[k]['m'][t]['epw']:.1f}" for k in order
           for t in TALLY_TARGETS if groups[k]["m"].get(t, {}).get("epw")]
    waits = [f"{scenario_label(groups[k])} {groups[k]['m']['tally']['fold_wait']:.2f} s" for k in order
             if groups[k]["m"].get("tally", {}).get("fold_wait") is not None
             and groups[k]["counting"]]
    folds = [f"{scenario_label(groups[k])} {x['folds_per_s']:,.0f}/s ({x['events_per_fold']:,.1f} "
             f"events each)" for k in order for x in [groups[k]["m"].get("tally", {})]
             if groups[k]["counting"] and x.get("folds_per_s") is not None
             and x.get("events_per_fold") is not None]
    at_once = [f"{scenario_label(groups[k])} {100 * x['at_once_share']:.0f} %" for k in order
               for x in [groups[k]["m"].get("tally", {})]
               if groups[k]["counting"] and x.get("at_once_share")]
    profile = redis_profile(groups, order)
    scripts = script_profile(groups, order)
    if epw:
        print()
        print("Group commit: events per Redis write (FCALL; on the journal path XADD, of the "
              "events journaled), median: "
              + ", ".join(epw))
    if waits:
        print("Journal path: seconds from the end of the run until every journal was folded, "
              "median: " + ", ".join(waits))
    if folds:
        print("Journal path: folds (tally_folds_total) per second of the run and of the wait "
              "until every journal was folded, and events journaled per fold, median: "
              + ", ".join(folds))
    if at_once:
        print("Journal path: events counted at once, their article read lately or their "
              "stats asked for (tally_writes_at_once_total), of the events acknowledged, median: "
              + ", ".join(at_once))
    if profile:
        print()
        print("Redis time per event by command (µs, from INFO commandstats; \"script\" = the "
              "scripts' own time, FCALL less the commands it ran), median:")
        print(text_table(*profile))
    if scripts:
        print()
        print("Redis time per event in each of tally's scripts (µs, from the slow log), median:")
        print(text_table(*scripts))
    print()
    print("Targets (a MISS does not fail the run):")
    tw = max(len(t[0]) for t in targets) if targets else 10
    for name, verdict, detail in targets:
        print(f"  {verdict:<4} {name.ljust(tw)}  {detail}")

    meta = read_json(a.meta) or {}
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("# tally benchmark\n\n")
        if meta:
            f.write(", ".join(f"{k}: {v}" for k, v in meta.items()) + "\n\n")
        f.write(md_table(header, rows) + "\n\n")
        f.write("Requests/s and events/s are medians over the rounds, measured over each run's "
                "main phase; events/s counts the events in 200 answers (nginx: its requests/s × "
                "the events each request carries). Ratios compare "
                "events/s. Server and Redis CPU come from /proc/PID/stat of each process over the "
                "run (the server's child processes included), per request and per event (for "
                "reads, per request); Redis commands include those run inside scripts. webdis runs "
                "one HINCRBY per request, or in the batch scenario one EVALSHA of a script of 20 "
                "HINCRBYs; the Node collector (bench/node/) one HINCRBY per event, a batch as one "
                "such script. \"Others' cores\": cores busy over the run with processes other "
                "than the server, Redis and wrk (the machine may be shared).\n\n")
        f.write("## Count checks\n\n")
        for name, verdict, details in checks:
            f.write(f"- **{verdict}** {name}" + ("" if verdict == "PASS" else ": " + "; ".join(details)) + "\n")
        if epw:
            f.write("\nGroup commit, events per Redis write (FCALL; on the journal path XADD, of "
                    "the events journaled), median: " + ", ".join(epw) + "\n")
        if waits:
            f.write("\nJournal path, seconds from the end of the run until every journal was "
                    "folded (Redis CPU is measured until then), median: " + ", ".join(waits) + "\n")
        if folds:
            f.write("\nJournal path, folds (tally_folds_total) per second of the run and of the "
                    "wait until every journal was folded, and events journaled per fold, median: "
                    + ", ".join(folds) + "\n")
        if at_once:
            f.write("\nJournal path, events counted at once because their article was read "
                    "lately or their answer carries its stats (`tally_writes_at_once_total`, "
                    "`--follow-reads`, `?stats=1`), of the events acknowledged, median: " + ", ".join(at_once) + "\n")
        if profile:
            f.write("\n## Redis time per event by command\n\nµs per event from `INFO "
                    "commandstats` over the run; commands run by scripts are counted, and "
                    "\"script\" is the scripts' own time (FCALL's time less theirs).\n\n")
            f.write(md_table(*profile) + "\n")
        if scripts:
            f.write("\n## Redis time per event in each script\n\nFrom Redis's slow log "
                    "(BENCH_SLOWLOG=1: every command clients sent, with its time, which for a "
                    "script includes the commands it ran), divided by the events counted.\n\n")
            f.write(md_table(*scripts) + "\n")
        f.write("\n## Targets\n\n")
        f.write(md_table(["target", "result", "measured"], targets) + "\n")
    print()
    print(f"written: {a.out}")
    if failed:
        print(f"FAIL: count mismatch in {len(failed)} scenario(s): " + ", ".join(c[0] for c in failed))
        return 1
    return 0


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("ports")
    sp.add_argument("n", type=int)

    sr = sub.add_parser("record")
    sr.add_argument("--out", required=True)
    sr.add_argument("--round", type=int, required=True)
    sr.add_argument("--scenario", required=True)
    sr.add_argument("--conns", type=int, required=True)
    sr.add_argument("--articles", type=int, required=True)
    sr.add_argument("--target", choices=TARGETS, required=True)
    sr.add_argument("--duration", type=float, required=True)
    sr.add_argument("--drain", type=float, required=True)
    sr.add_argument("--counting", type=int, default=1, help="1 when the requests carry events")
    sr.add_argument("--dedupe", type=int, default=0)
    sr.add_argument("--seeded", type=int, default=0, help="events written before the run")
    sr.add_argument("--wrk", required=True)
    sr.add_argument("--before", required=True)
    sr.add_argument("--after", required=True)
    sr.add_argument("--totals")
    sr.add_argument("--metrics")
    sr.add_argument("--hwm")
    sr.add_argument("--counter-sum", help="webdis, node: the sum of their counters after the run")
    sr.add_argument("--cpu-before")
    sr.add_argument("--cpu-after")
    sr.add_argument("--redis-cpu-before")
    sr.add_argument("--redis-cpu-after")
    sr.add_argument("--machine-before")
    sr.add_argument("--machine-after")
    sr.add_argument("--wrk-cpu")
    sr.add_argument("--slowlog", help="bench.py slowlog's output for the run")
    sr.add_argument("--fold-wait", help="seconds until the journals were folded after the run")

    ss = sub.add_parser("sample")
    ss.add_argument("base")
    ss.add_argument("server", type=int)
    ss.add_argument("redis", type=int)
    sw = sub.add_parser("wrk")
    sw.add_argument("cpu_file")
    sw.add_argument("command", nargs=argparse.REMAINDER)

    sc = sub.add_parser("cpu")
    sc.add_argument("pids", type=int, nargs="+")

    si = sub.add_parser("idle")
    si.add_argument("--port", type=int, required=True)
    si.add_argument("--pid", type=int, required=True)
    si.add_argument("--n", type=int, default=1000)
    si.add_argument("--settle", type=float, default=1.0)

    sl = sub.add_parser("slowlog")
    sl.add_argument("port", type=int)

    so = sub.add_parser("report")
    so.add_argument("results")
    so.add_argument("rss")
    so.add_argument("out")
    so.add_argument("--meta")
    so.add_argument("--verbose", action="store_true")

    a = p.parse_args()
    if a.cmd == "ports":
        cmd_ports(a)
    elif a.cmd == "record":
        cmd_record(a)
    elif a.cmd == "idle":
        cmd_idle(a)
    elif a.cmd == "cpu":
        cmd_cpu(a)
    elif a.cmd == "sample":
        cmd_sample(a)
    elif a.cmd == "wrk":
        cmd_wrk(a)
    elif a.cmd == "slowlog":
        cmd_slowlog(a)
    elif a.cmd == "report":
        sys.exit(cmd_report(a))


if __name__ == "__main__":
    main()
