#!/usr/bin/env python3
"""tally-import.py -- turn another counter's export into the NDJSON that POST /v1/import takes.

Usage: tally-import.py FORMAT FILE [--paths FILE]     (FILE "-" reads standard input)

FORMAT is one of:
  wp-postviews        WP-PostViews: wp_postmeta rows as CSV with a header naming meta_key,
                      meta_value and path (the post's path or URL); rows whose meta_key is not
                      "views" are skipped
  post-views-counter  Post Views Counter: its post_views table as CSV with the header
                      id,type,period,count; type 4 rows (period "total") are the totals, the
                      others (day, week, month, year) are left out, since the total holds them;
                      --paths names a CSV with the header id,path that gives each post's path
  csv                 a plain CSV: article,views[,comments[,shares]] (a header line
                      "article,..." is optional); shares count under the network "other"
  disqus              Disqus's XML export: each thread's posts, without deleted and spam ones
                      (nor those of deleted threads), as the comments of the thread link's path

An article is the path of the page (as tally.js takes it by default: the canonical URL's path),
so a URL is cut to its path. Lines for the same article are summed; they come out sorted by
article, one JSON object a line (more for an article whose sum passes 10^12, the most a line
carries), without a date: imported counts go to the all-time totals.
POST /v1/import takes up to 10,000 lines: split a longer output (split -l 10000).

Errors name the row and exit with status 1; bad usage exits with 2. Python 3 standard library
only.
"""

import argparse
import csv
import io
import json
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET

COUNT_MAX = 10 ** 12
DISQUS = "{http://disqus.com}"
DISQUS_INTERNALS = "{http://disqus.com/disqus-internals}"


class ConvertError(Exception):
    pass


def article_of(value, where):
    """The article id of a path or URL VALUE: the URL's path, percent-encoding kept."""
    value = value.strip()
    if "://" in value or value.startswith("//"):
        value = urllib.parse.urlsplit(value).path or "/"
    if not value:
        raise ConvertError("%s: no path" % where)
    if len(value.encode("utf-8")) > 256:
        raise ConvertError("%s: path over 256 bytes: %r" % (where, value))
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ConvertError("%s: path with whitespace or control characters: %r" % (where, value))
    return value


def count_of(value, where, what):
    value = (value or "").strip()
    if value == "":
        return 0
    # ASCII digits only: str.isdigit() also takes '²' and '٣'.
    if re.fullmatch(r"[0-9]+", value) is None or int(value) > COUNT_MAX:
        raise ConvertError("%s: %s: an integer from 0 to %d, not %r" % (where, what, COUNT_MAX,
                                                                        value))
    return int(value)


class Totals:
    """Counts per article, summed."""

    def __init__(self):
        self.by_article = {}

    def add(self, article, views=0, comments=0, shares=0):
        t = self.by_article.setdefault(article, [0, 0, 0])
        t[0] += views
        t[1] += comments
        t[2] += shares

    def lines(self):
        """One line per article; more for an article whose sums pass COUNT_MAX, the most a
        line carries (the import adds its lines up)."""
        for article in sorted(self.by_article):
            views, comments, shares = self.by_article[article]
            while True:
                line = {"article": article}
                if views:
                    line["views"] = min(views, COUNT_MAX)
                if comments:
                    line["comments"] = min(comments, COUNT_MAX)
                if shares:
                    line["shares"] = {"other": min(shares, COUNT_MAX)}
                yield json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                views, comments, shares = (max(n - COUNT_MAX, 0) for n in (views, comments, shares))
                if not (views or comments or shares):
                    break


def read_csv(text):
    """Rows of TEXT as lists, with their line numbers."""
    reader = csv.reader(io.StringIO(text, newline=""))
    for row in reader:
        if row and any(cell.strip() for cell in row):
            yield reader.line_num, row


def header_of(rows, needed, name):
    """The column index of each of NEEDED in the first row of ROWS (a header)."""
    try:
        _, header = next(rows)
    except StopIteration:
        raise ConvertError("%s: empty" % name)
    columns = {c.strip().lower(): i for i, c in enumerate(header)}
    missing = [n for n in needed if n not in columns]
    if missing:
        raise ConvertError("%s: header lacks %s" % (name, ", ".join(missing)))
    return {n: columns[n] for n in needed}


def cell(row, i):
    return row[i] if i < len(row) else ""


def convert_wp_postviews(text, args):
    rows = read_csv(text)
    col = header_of(rows, ("meta_key", "meta_value", "path"), "wp-postviews export")
    totals = Totals()
    for n, row in rows:
        if cell(row, col["meta_key"]).strip() != "views":
            continue
        where = "row %d" % n
        totals.add(article_of(cell(row, col["path"]), where),
                   views=count_of(cell(row, col["meta_value"]), where, "meta_value"))
    return totals


def read_paths(name):
    if name is None:
        raise ConvertError("post-views-counter: --paths FILE (id,path) is needed: the table "
                           "names posts by id")
    with open(name, encoding="utf-8", newline="") as f:
        rows = read_csv(f.read())
    col = header_of(rows, ("id", "path"), name)
    paths = {}
    for n, row in rows:
        paths[cell(row, col["id"]).strip()] = article_of(cell(row, col["path"]),
                                                         "%s: row %d" % (name, n))
    return paths


def convert_post_views_counter(text, args):
    paths = read_paths(args.paths)
    rows = read_csv(text)
    col = header_of(rows, ("id", "type", "period", "count"), "post_views export")
    totals = Totals()
    for n, row in rows:
        where = "row %d" % n
        if cell(row, col["type"]).strip() != "4":
            continue
        post = cell(row, col["id"]).strip()
        if post not in paths:
            raise ConvertError("%s: post %s has no path in %s" % (where, post, args.paths))
        totals.add(paths[post], views=count_of(cell(row, col["count"]), where, "count"))
    return totals


def convert_csv(text, args):
    totals = Totals()
    for i, (n, row) in enumerate(read_csv(text)):
        where = "row %d" % n
        if len(row) < 2 or len(row) > 4:
            raise ConvertError("%s: article,views[,comments[,shares]]" % where)
        if i == 0 and row[0].strip().lower() == "article":
            continue  # the header
        counts = [count_of(row[k] if k < len(row) else "", where, name)
                  for k, name in ((1, "views"), (2, "comments"), (3, "shares"))]
        totals.add(article_of(row[0], where), *counts)
    return totals


def convert_disqus(text, args):
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ConvertError("disqus export: %s" % e)

    def flag(el, name):
        return (el.findtext(DISQUS + name) or "").strip() == "true"

    links = {}
    for t in root.iter(DISQUS + "thread"):
        tid = t.get(DISQUS_INTERNALS + "id")
        link = t.findtext(DISQUS + "link")
        if tid is not None and link is not None and not flag(t, "isDeleted"):
            links[tid] = article_of(link, "thread %s" % tid)
    totals = Totals()
    for p in root.iter(DISQUS + "post"):
        if flag(p, "isDeleted") or flag(p, "isSpam"):
            continue
        ref = p.find(DISQUS + "thread")
        tid = ref.get(DISQUS_INTERNALS + "id") if ref is not None else None
        if tid in links:
            totals.add(links[tid], comments=1)
    return totals


FORMATS = {
    "wp-postviews": convert_wp_postviews,
    "post-views-counter": convert_post_views_counter,
    "csv": convert_csv,
    "disqus": convert_disqus,
}


def convert(fmt, text, paths=None):
    """The NDJSON of TEXT, an export in FORMAT, as a string."""
    args = argparse.Namespace(paths=paths)
    return "".join(FORMATS[fmt](text, args).lines())


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="tally-import.py",
        description="Turn another counter's export into NDJSON for POST /v1/import.")
    ap.add_argument("format", choices=sorted(FORMATS))
    ap.add_argument("file", help="the export; - reads standard input")
    ap.add_argument("--paths", help="post-views-counter: CSV id,path of the posts")
    args = ap.parse_args(argv)
    try:
        if args.file == "-":
            text = sys.stdin.buffer.read().decode("utf-8-sig")
        else:
            with open(args.file, "rb") as f:
                text = f.read().decode("utf-8-sig")
        out = convert(args.format, text, args.paths)
    except (ConvertError, OSError, UnicodeDecodeError) as e:
        sys.stderr.write("tally-import.py: %s\n" % e)
        return 1
    sys.stdout.buffer.write(out.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
