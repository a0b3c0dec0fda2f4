#!/usr/bin/env python3
"""check-grafana.py DASHBOARD.json PROMTOOL METRICS.txt -- offline checks of a Grafana dashboard.

1. The classic JSON model: the stable uid, schemaVersion 39..41, "id": null, a title.
2. Data sources: a templating variable `datasource` (type datasource, query prometheus), and
   every data source reference in the file -- each panel, each target, each query variable --
   is {"type": "prometheus", "uid": "${datasource}"}. No hard-coded data source names or uids,
   no `${DS_...}` import placeholders and no `__inputs` (those only work through the Import
   UI; file provisioning leaves them unresolved). The one exception is Grafana's built-in
   annotation ("-- Grafana --").
3. Layout: every panel has a gridPos inside the 24-column grid, and no two panels overlap
   (top-level panels among themselves, and the panels of each collapsed row among themselves).
   Panel ids are unique.
4. Metric names: every metric an expr (or a label_values() variable) selects is a family of
   the scraped /metrics text (METRICS.txt, `# TYPE` lines; a histogram as its _bucket, _sum
   and _count series, a summary as its _sum and _count, plus the quantile series). When the
   dashboard has an `instance` variable, every panel selector filters on instance=~"$instance".
5. PromQL syntax: every expr, with Grafana variables substituted ($__rate_interval and
   $__interval -> 1m, dashboard variables -> .*), becomes a recording rule tally:check:N in a
   temporary rules file that `promtool check rules` must accept.

Python 3 standard library only. Exit 0 when everything passes, 1 with every problem listed on
stderr, 2 on bad usage or unreadable input.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

EXPECTED_UID = "tally-collector"
SCHEMA_VERSIONS = range(39, 42)  # Grafana 10.4 .. 11.x
GRID_COLUMNS = 24
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_ANNOTATION_DS = {"type": "grafana", "uid": "-- Grafana --"}
NO_QUERY_PANELS = {"row", "text", "news", "dashlist", "annolist", "welcome"}

# Grafana's built-in variables, with values that keep the PromQL valid.
BUILTIN_VARS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2", "inf", "nan", "start", "end",
}
AGGREGATORS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}

errors = []


def fail(msg):
    errors.append(msg)


def usage():
    print("usage: %s <dashboard.json> <promtool> <scraped-metrics.txt>" % sys.argv[0],
          file=sys.stderr)
    sys.exit(2)


# ---- Panels ----

def walk_panels(panels, where="panels"):
    """Yield (panel, path, parent_row) for every panel, including those in collapsed rows."""
    for i, p in enumerate(panels):
        if not isinstance(p, dict):
            fail("%s[%d]: not an object" % (where, i))
            continue
        path = "%s[%d] %r" % (where, i, p.get("title", ""))
        yield p, path, None
        if p.get("type") == "row":
            for j, c in enumerate(p.get("panels") or []):
                if not isinstance(c, dict):
                    fail("%s.panels[%d]: not an object" % (path, j))
                    continue
                yield c, "%s.panels[%d] %r" % (path, j, c.get("title", "")), p


def check_grid(group, label):
    """Every gridPos in GROUP [(panel, path)] valid, and no two overlapping."""
    boxes = []
    for p, path in group:
        g = p.get("gridPos")
        if not isinstance(g, dict):
            fail("%s: no gridPos" % path)
            continue
        vals = {}
        for k in ("x", "y", "w", "h"):
            v = g.get(k)
            if not isinstance(v, int) or isinstance(v, bool):
                fail("%s: gridPos.%s is %r, not an integer" % (path, k, v))
                break
            vals[k] = v
        else:
            x, y, w, h = vals["x"], vals["y"], vals["w"], vals["h"]
            if x < 0 or y < 0 or w < 1 or h < 1:
                fail("%s: gridPos %r has a negative origin or an empty size" % (path, g))
            elif x + w > GRID_COLUMNS:
                fail("%s: gridPos x=%d + w=%d exceeds %d columns" % (path, x, w, GRID_COLUMNS))
            else:
                boxes.append((x, y, w, h, path))
    for i in range(len(boxes)):
        ax, ay, aw, ah, apath = boxes[i]
        for j in range(i + 1, len(boxes)):
            bx, by, bw, bh, bpath = boxes[j]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                fail("%s: %s overlaps %s" % (label, apath, bpath))


# ---- Data sources ----

def check_datasources(node, path, in_annotation=False):
    """Every "datasource" value anywhere in the document is the ${datasource} variable."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = "%s.%s" % (path, k)
            if k == "datasource":
                if v == DS_REF:
                    pass
                elif in_annotation and v == BUILTIN_ANNOTATION_DS and node.get("builtIn") == 1:
                    pass
                else:
                    fail("%s: hard-coded or wrong data source %s (want %s)"
                         % (sub, json.dumps(v), json.dumps(DS_REF)))
            else:
                check_datasources(v, sub, in_annotation or k == "annotations")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_datasources(v, "%s[%d]" % (path, i), in_annotation)


# ---- PromQL ----

def substitute(expr, variables, where):
    """Replace Grafana variables by values that keep the PromQL valid."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTIN_VARS:
            return BUILTIN_VARS[name]
        if name in variables:
            return variables[name]
        fail("%s: unknown variable $%s in %r" % (where, name, expr))
        return ".*"

    out = re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]", repl, expr)
    if "$" in out:
        fail("%s: stray '$' left after substitution: %r" % (where, out))
    return out


STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
INSTANCE_RE = re.compile(r'\binstance\s*=~\s*"\$(?:instance|\{instance(?::\w+)?\})"')


def selectors(expr, where):
    """(metric name, label matchers) of every vector selector in EXPR (raw, with Grafana
    variables still in it)."""
    strings = []

    def keep(m):
        strings.append(m.group(0))
        return '"%d"' % (len(strings) - 1)

    def restore(text):
        return re.sub(r'"(\d+)"', lambda m: strings[int(m.group(1))], text)

    s = STRING_RE.sub(keep, expr)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)         # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r" \1 ", s)
    found = []
    pos = 0
    pat = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)?\s*(\{[^{}]*\})?")
    while pos < len(s):
        m = pat.match(s, pos)
        if m is None or m.end() == pos:
            pos += 1
            continue
        pos = m.end()
        word, braces = m.group(1), m.group(2)
        if word is None:
            if braces is not None:
                fail("%s: a selector without a metric name: %r" % (where, restore(braces)))
            continue
        rest = s[m.end():].lstrip()
        if braces is None:
            if rest.startswith("("):            # a function or aggregation call
                continue
            if word.lower() in PROMQL_KEYWORDS:
                continue
            if word in AGGREGATORS and re.match(r"(by|without)\b", rest):
                continue
        matchers = restore(braces or "")
        if "__name__" in matchers:
            fail("%s: selects by __name__, so its metric cannot be checked: %r" % (where, expr))
        found.append((word, matchers))
    return found


def scraped_series_names(path):
    """Series names a scrape can produce: families from # TYPE lines, histograms and
    summaries expanded to their suffixed series."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"#\s*TYPE\s+([A-Za-z_:][A-Za-z0-9_:]*)\s+(\w+)\s*$", line)
            if not m:
                continue
            name, kind = m.group(1), m.group(2)
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_sum", "_count"))
            elif kind == "summary":
                names.update((name, name + "_sum", name + "_count"))
            else:
                names.add(name)
    return names


def run_promtool(promtool, exprs):
    """Check every expr's syntax with `promtool check rules`."""
    rules = [{"record": "tally:check:%d" % (i + 1), "expr": e} for i, (_, e) in enumerate(exprs)]
    doc = {"groups": [{"name": "grafana-dashboard-exprs", "rules": rules}]}
    fd, path = tempfile.mkstemp(prefix="check-grafana-", suffix=".rules.yml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)         # JSON is YAML: no quoting to get wrong
            f.write("\n")
        try:
            r = subprocess.run([promtool, "check", "rules", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        except OSError as e:
            fail("cannot run %s: %s" % (promtool, e))
            return
        out = r.stdout.strip()
        if r.returncode != 0 or "FAILED" in out:
            bad = {int(n) for n in re.findall(r"tally:check:(\d+)", out)}
            detail = "\n".join("    tally:check:%d = %s: %s" % (i + 1, w, e)
                               for i, (w, e) in enumerate(exprs) if not bad or i + 1 in bad)
            fail("promtool check rules exited %d:\n%s\n  rules:\n%s"
                 % (r.returncode, "\n".join("    " + l for l in out.splitlines()), detail))
        return out
    finally:
        os.unlink(path)


def main():
    if len(sys.argv) != 4:
        usage()
    dash_path, promtool, scrape_path = sys.argv[1:]
    try:
        with open(dash_path, encoding="utf-8") as f:
            text = f.read()
        dash = json.loads(text)
    except (OSError, ValueError) as e:
        print("check-grafana: %s: %s" % (dash_path, e), file=sys.stderr)
        return 2
    try:
        known = scraped_series_names(scrape_path)
    except OSError as e:
        print("check-grafana: %s: %s" % (scrape_path, e), file=sys.stderr)
        return 2
    if not known:
        print("check-grafana: %s has no '# TYPE' lines" % scrape_path, file=sys.stderr)
        return 2
    if not isinstance(dash, dict):
        print("check-grafana: %s: not a JSON object" % dash_path, file=sys.stderr)
        return 2

    # 1. Top level.
    if dash.get("uid") != EXPECTED_UID:
        fail("uid is %r, want %r" % (dash.get("uid"), EXPECTED_UID))
    sv = dash.get("schemaVersion")
    if not isinstance(sv, int) or isinstance(sv, bool) or sv not in SCHEMA_VERSIONS:
        fail("schemaVersion is %r, want %d..%d" % (sv, SCHEMA_VERSIONS[0], SCHEMA_VERSIONS[-1]))
    if "id" not in dash or dash["id"] is not None:
        fail('"id" must be present and null (got %r)' % dash.get("id", "<missing>"))
    if not isinstance(dash.get("title"), str) or not dash["title"].strip():
        fail("no title")

    # 2. Data sources.
    if "__inputs" in dash or "__requires" in dash:
        fail("__inputs/__requires found: import placeholders break file provisioning")
    if re.search(r"\$\{?DS_", text):
        fail("a ${DS_...} import placeholder is used; reference ${datasource} instead")
    tlist = (dash.get("templating") or {}).get("list") or []
    variables = {}
    ds_vars = []
    for v in tlist:
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            fail("templating.list: a variable without a name")
            continue
        if v.get("type") == "datasource":
            ds_vars.append(v)
        else:
            variables[v["name"]] = ".*"
    # With an instance variable, every panel selector must honour it.
    require_instance = "instance" in variables
    dsv = [v for v in ds_vars if v.get("name") == "datasource"]
    if not dsv:
        fail("no templating variable named 'datasource' of type datasource")
    elif dsv[0].get("query") != "prometheus":
        fail("variable 'datasource' has query %r, want 'prometheus'" % dsv[0].get("query"))
    elif dsv[0].get("multi") or dsv[0].get("includeAll"):
        fail("variable 'datasource' must be single-valued")
    check_datasources(dash, "$")

    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        fail("no panels")
        panels = []
    exprs = []          # (where, substituted expr)
    used = {}           # metric name -> first place it is used
    ids = {}
    top, nested = [], {}
    for p, path, parent in walk_panels(panels):
        if parent is None:
            top.append((p, path))
        else:
            nested.setdefault(id(parent), []).append((p, path))
        pid = p.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            fail("%s: id %r is not an integer" % (path, pid))
        elif pid in ids:
            fail("%s: id %d already used by %s" % (path, pid, ids[pid]))
        else:
            ids[pid] = path
        ptype = p.get("type")
        targets = p.get("targets") or []
        if ptype in NO_QUERY_PANELS:
            if ptype == "row" and targets:
                fail("%s: a row has targets" % path)
            continue
        if "datasource" not in p:               # wrong values: check_datasources()
            fail("%s: no panel data source (want %s)" % (path, json.dumps(DS_REF)))
        if not targets:
            fail("%s: no targets" % path)
        refids = set()
        for t in targets:
            ref = t.get("refId")
            where = "%s target %s" % (path, ref)
            if ref in refids:
                fail("%s: duplicate refId" % where)
            refids.add(ref)
            if "datasource" not in t:
                fail("%s: no target data source (want %s)" % (where, json.dumps(DS_REF)))
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                fail("%s: no expr" % where)
                continue
            exprs.append((where, substitute(expr, variables, where)))
            for name, matchers in selectors(expr, where):
                used.setdefault(name, where)
                if require_instance and not INSTANCE_RE.search(matchers):
                    fail('%s: selector %s%s lacks instance=~"$instance"'
                         % (where, name, matchers))

    # Query variables: label_values(metric{...}, label) and query_result(expr).
    for v in tlist:
        if not isinstance(v, dict) or v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        where = "variable %s" % v.get("name")
        if not isinstance(q, str) or not q.strip():
            fail("%s: no query" % where)
            continue
        m = re.match(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", q)
        m1 = re.match(r"^\s*query_result\((.*)\)\s*$", q)
        if m or m1:
            e = (m or m1).group(1)
            exprs.append((where, substitute(e, variables, where)))
            for name, _ in selectors(e, where):
                used.setdefault(name, where)
        elif not re.match(r"^\s*(label_values\(\s*\w+\s*\)|label_names\(\)|metrics\(.*\))\s*$", q):
            fail("%s: unsupported query %r" % (where, q))

    # 3. Layout.
    check_grid(top, "layout")
    for group in nested.values():
        check_grid(group, "collapsed row")

    # 4. Metric names.
    for name in sorted(used):
        if name not in known:
            fail("%s: metric %r is not in the scraped /metrics (%s)"
                 % (used[name], name, scrape_path))

    # 5. PromQL syntax.
    out = run_promtool(promtool, exprs) if exprs else None
    if not exprs:
        fail("no expressions to check")

    if errors:
        for e in errors:
            print("check-grafana: " + e, file=sys.stderr)
        print("check-grafana: %s: %d problem(s)" % (dash_path, len(errors)), file=sys.stderr)
        return 1
    print("check-grafana: %s: OK: %d panels, %d exprs, %d metric names checked against %d "
          "scraped series names; promtool: %s"
          % (dash_path, len(ids), len(exprs), len(used), len(known),
             (out or "").splitlines()[-1].strip() if out else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
