"""scripts/tally-import.py on small exports: the exact NDJSON each format turns into, and the
rows it refuses (Python 3 standard library only)."""

import importlib.util
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "tally-import.py")
FIXTURES = os.path.join(HERE, "fixtures")

_spec = importlib.util.spec_from_file_location("tally_import", SCRIPT)
tally_import = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tally_import)


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


def run(*args, stdin=None):
    return subprocess.run([sys.executable, SCRIPT, *args], input=stdin, capture_output=True)


class ConvertTest(unittest.TestCase):

    def test_each_format_gives_its_exact_ndjson(self):
        cases = [
            ("csv", "plain.csv", [], "plain.ndjson"),
            # Rows of one article past 10^12 in all: as many lines as it takes.
            ("csv", "large.csv", [], "large.ndjson"),
            ("wp-postviews", "wp-postviews.csv", [], "wp-postviews.ndjson"),
            ("post-views-counter", "post_views.csv",
             ["--paths", os.path.join(FIXTURES, "post_paths.csv")], "post_views.ndjson"),
            ("disqus", "disqus.xml", [], "disqus.ndjson"),
        ]
        for fmt, export, extra, expected in cases:
            with self.subTest(fmt=fmt):
                r = run(fmt, os.path.join(FIXTURES, export), *extra)
                self.assertEqual((r.returncode, r.stderr), (0, b""))
                self.assertEqual(r.stdout.decode("utf-8"), fixture(expected))

    def test_standard_input_and_a_byte_order_mark(self):
        r = run("csv", "-", stdin="\ufeff/a/,5\n/a/,6,1\n".encode("utf-8"))
        self.assertEqual(r.stdout, b'{"article":"/a/","views":11,"comments":1}\n')

    def test_bad_rows_are_named(self):
        cases = [
            ("csv", "/a/,-1\n", "row 1: views: an integer from 0 to 1000000000000, not '-1'"),
            ("csv", "/a/,1,2.5\n", "row 1: comments: an integer"),
            ("csv", "/a/,\u00b2\n", "row 1: views: an integer from 0 to 1000000000000, not '\u00b2'"),
            ("csv", "/a/,1,\u0663\n", "row 1: comments: an integer"),
            ("csv", "/a/,1\n/b/,1000000000001\n", "row 2: views: an integer"),
            ("csv", "/a/\n", "row 1: article,views[,comments[,shares]]"),
            ("csv", "/a b/,1\n", "row 1: path with whitespace"),
            ("csv", "/%s/,1\n" % ("x" * 300), "row 1: path over 256 bytes"),
            ("wp-postviews", "post_id,meta_key,meta_value\n", "wp-postviews export: header "
                                                             "lacks path"),
            ("wp-postviews", "meta_key,meta_value,path\nviews,many,/a/\n",
             "row 2: meta_value: an integer"),
            ("post-views-counter", "id,type,period,count\n4,4,total,1\n", "post-views-counter: "
                                                                         "--paths FILE"),
            ("disqus", "<disqus", "disqus export:"),
        ]
        for fmt, text, message in cases:
            with self.subTest(fmt=fmt, text=text):
                with self.assertRaises(tally_import.ConvertError) as cm:
                    tally_import.convert(fmt, text)
                self.assertTrue(str(cm.exception).startswith(message), str(cm.exception))

    def test_a_post_without_a_path_is_an_error(self):
        with self.assertRaises(tally_import.ConvertError) as cm:
            tally_import.convert("post-views-counter", "id,type,period,count\n8,4,total,3\n",
                                 os.path.join(FIXTURES, "post_paths.csv"))
        self.assertEqual(str(cm.exception), "row 2: post 8 has no path in %s"
                         % os.path.join(FIXTURES, "post_paths.csv"))

    def test_exit_status(self):
        r = run("csv", "-", stdin=b"/a/,x,1\n")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertTrue(r.stderr.startswith(b"tally-import.py: row 1: views:"), r.stderr)
        self.assertEqual(run("jetpack", "-").returncode, 2)
        self.assertEqual(run("csv", os.path.join(FIXTURES, "missing.csv")).returncode, 1)


if __name__ == "__main__":
    unittest.main()
