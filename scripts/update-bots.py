#!/usr/bin/env python3
r"""update-bots.py -- compile the crawler-user-agents list into C data for src/bots.c.

Usage: scripts/update-bots.py path/to/crawler-user-agents.json VERSION

Writes, relative to the repository root:
  src/bots_list.inc                     the patterns as literal parts in hash buckets
  tests/unit/data/bot-user-agents.txt   every upstream example User-Agent, one per line

scripts/update-bots.sh fetches the list with npm and runs this script; use that.

Upstream matches each pattern as a case-sensitive regular-expression search. src/bots.c has
no regex engine: it finds literal strings. This script therefore translates the small regex
subset the list uses into literal patterns:

  [xX]                  a class of plain characters: one pattern per character
  (a|b), a|b            alternatives: one pattern per alternative (cartesian product)
  ^  $                  anchor flags: the first part must start the User-Agent, the last
                        part must end it
  [\s\S]*  .*           "anything": splits the pattern into parts that must appear in order
  \d \d+ \s \s+ \s*     split the pattern likewise, so the gap may then hold anything
  [\s\S]+  .+           (broadened: see below)
  ([^-]|$) at the end   dropped (broadened: see below)
  \/ \. \( ...          escaped punctuation: the character itself

Broadening only ever makes a pattern match more User-Agents that contain the bot's own
name, so the result still names only bots; every broadened pattern is listed in the header
of the generated file. Any other construct (quantifiers, ranges, negated classes, \\w, \\b,
look-arounds, ...) stops the script with an error, so that an update which brings one is
reviewed by a person rather than silently mistranslated.

Standard library only.
"""

import itertools
import json
import os
import re
import sys

# Upstream patterns that hit User-Agents of real people's browsers. They are left out of the
# table, and their example User-Agents out of the test fixture; check_translation() makes sure
# those examples no longer match. Each needs a reason.
EXCLUDED = {
    "AP3A\\.240617\\.008": (
        "an Android 15 build id (OPPO/OnePlus/realme ColorOS), not a bot name: its own "
        "upstream example is the Instagram in-app browser on an OPPO phone"
    ),
    "Fluid": (
        "Fluid is a site-specific browser for macOS that a person drives (upstream's own "
        "description); its example is an ordinary WebKit browser User-Agent"
    ),
}

BUCKET_BITS = 12  # bucket_of() below and bots_bucket_of() in src/bots.c use these two
HASH_MUL = 2654435761
MAX_VARIANTS = 64  # a pattern that expands to more literals than this is surely a mistake
SEP = "\x01"  # joins the literal parts of one entry; may not occur in a pattern

AT_START = 1
AT_END = 2

GAP_ANY = "any"  # [\s\S]* and .*: exactly "anything, in order"
GAP_LOOSE = "loose"  # \d, \d+, \s, ...: a narrower gap, widened to "anything"


class PatternError(Exception):
    pass


# ---- Parsing the regex subset ----


class Parser:
    """Recursive descent over one pattern; yields a tree of sequences and alternatives."""

    QUANTIFIERS = "*+?{"
    PUNCT_ESCAPES = set("/.()[]{}!+*?|^$\\-:;,'\"#&%@=<>~ _")

    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.loose = []  # descriptions of broadening gaps met

    def fail(self, why):
        raise PatternError("%s at offset %d" % (why, self.pos))

    def peek(self, n=1):
        return self.text[self.pos : self.pos + n]

    def parse(self):
        alts = self.alternatives()
        if self.pos != len(self.text):
            self.fail("unbalanced ')'")
        return alts

    def alternatives(self):
        alts = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            alts.append(self.sequence())
        return ("alt", alts)

    def sequence(self):
        items = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            items.append(self.atom())
        return ("seq", items)

    def atom(self):
        c = self.peek()
        if c in self.QUANTIFIERS:
            self.fail("quantifier %r on something other than a gap" % c)
        if c == "^":
            self.pos += 1
            return ("bol",)
        if c == "$":
            self.pos += 1
            return ("eol",)
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class()
        if c == "\\":
            return self.escape()
        if c == ".":
            return self.any_gap(".")
        if c in "]}":
            self.fail("unescaped %r" % c)
        self.pos += 1
        return ("lit", c)

    def any_gap(self, atom):
        """ATOM* is exactly "anything"; ATOM+ ("at least one byte") is widened to it."""
        self.pos += len(atom)
        q = self.peek()
        if q == "*":
            self.pos += 1
            return ("gap", GAP_ANY)
        if q == "+":
            self.pos += 1
            self.loose.append(atom + "+")
            return ("gap", GAP_LOOSE)
        self.fail("%s not followed by '*' or '+'" % atom)

    def group(self):
        self.pos += 1
        if self.peek() == "?":
            self.fail("'(?' group (look-around, non-capturing or named)")
        alts = self.alternatives()
        if self.peek() != ")":
            self.fail("unclosed '('")
        self.pos += 1
        if self.peek() and self.peek() in self.QUANTIFIERS:
            self.fail("quantifier on a group")
        return alts

    def char_class(self):
        if self.text.startswith("[\\s\\S]", self.pos):
            return self.any_gap("[\\s\\S]")
        self.pos += 1
        if self.peek() == "^":
            self.fail("negated character class")
        chars = []
        while self.peek() != "]":
            c = self.peek()
            if c == "":
                self.fail("unclosed '['")
            if c == "\\":
                e = self.peek(2)[1:]
                if e not in self.PUNCT_ESCAPES:
                    self.fail("escape \\%s inside a character class" % e)
                chars.append(e)
                self.pos += 2
                continue
            if c == "-" or c == "[":
                self.fail("range or nested '[' in a character class")
            chars.append(c)
            self.pos += 1
        self.pos += 1
        if not chars:
            self.fail("empty character class")
        if self.peek() and self.peek() in self.QUANTIFIERS:
            self.fail("quantifier on a character class")
        return ("alt", [("seq", [("lit", c)]) for c in dict.fromkeys(chars)])

    def escape(self):
        e = self.peek(2)[1:]
        if e in ("d", "s"):
            self.pos += 2
            q = self.peek()
            if q in ("+", "*"):
                self.pos += 1
            elif q in self.QUANTIFIERS:
                self.fail("quantifier %r on \\%s" % (q, e))
            self.loose.append("\\" + e + (q if q in ("+", "*") else ""))
            return ("gap", GAP_LOOSE)
        if e in self.PUNCT_ESCAPES:
            self.pos += 2
            if self.peek() and self.peek() in self.QUANTIFIERS:
                self.fail("quantifier on an escaped character")
            return ("lit", e)
        self.fail("escape \\%s" % e)


def expand(node):
    """All token sequences a parsed node stands for."""
    kind = node[0]
    if kind == "alt":
        out = []
        for sub in node[1]:
            out.extend(expand(sub))
        return out
    if kind == "seq":
        seqs = [[]]
        for item in node[1]:
            seqs = [a + b for a, b in itertools.product(seqs, expand(item))]
            if len(seqs) > MAX_VARIANTS:
                raise PatternError("expands to more than %d literals" % MAX_VARIANTS)
        return seqs
    return [[node]]


# ---- From token sequences to entries ----


def to_entry(tokens):
    """(parts, flags) for one expanded token sequence."""
    flags = 0
    if tokens and tokens[0] == ("bol",):
        flags |= AT_START
        tokens = tokens[1:]
    if tokens and tokens[-1] == ("eol",):
        flags |= AT_END
        tokens = tokens[:-1]
    if ("bol",) in tokens or ("eol",) in tokens:
        raise PatternError("'^' or '$' in the middle of a pattern")
    # A gap next to an anchor swallows it: "^.*x" is "x".
    if tokens and tokens[0][0] == "gap":
        flags &= ~AT_START
    if tokens and tokens[-1][0] == "gap":
        flags &= ~AT_END
    parts, cur = [], []
    for t in tokens:
        if t[0] == "gap":
            if cur:
                parts.append("".join(cur))
            cur = []
        else:
            cur.append(t[1])
    if cur:
        parts.append("".join(cur))
    if not parts:
        raise PatternError("no literal text")
    for p in parts:
        if SEP in p or "\0" in p:
            raise PatternError("contains a NUL or the separator byte \\x01")
    if len(parts[0].encode()) < 2:
        raise PatternError("first literal part %r is shorter than 2 bytes" % parts[0])
    if len(SEP.join(parts).encode()) > 65535:
        raise PatternError("longer than 65535 bytes")
    return (tuple(parts), flags)


def is_literal(pattern, entries):
    """Is PATTERN a plain literal (with escaped punctuation), translated to itself?"""
    return entries == [((re.sub(r"\\(.)", r"\1", pattern),), 0)]


def translate(pattern):
    """Entries for one upstream pattern, and how it was broadened (empty if exactly)."""
    broadened = []
    text = pattern
    if text.endswith("([^-]|$)"):
        text = text[: -len("([^-]|$)")]
        broadened.append("([^-]|$) dropped")
    parser = Parser(text)
    tree = parser.parse()
    if parser.loose:
        broadened.append(" ".join(dict.fromkeys(parser.loose)) + " widened to any gap")
    entries = list(dict.fromkeys(to_entry(t) for t in expand(tree)))
    return entries, broadened


# ---- The same matcher as src/bots.c, to check the translation ----


def entry_matches(entry, ua):
    """Does ENTRY match the bytes UA? Leftmost occurrences suffice: parts only need order."""
    parts, flags = entry
    parts = [p.encode() for p in parts]
    pos = 0
    for k, p in enumerate(parts):
        if k == len(parts) - 1 and flags & AT_END:
            at = len(ua) - len(p)
            if at < pos or not ua.endswith(p):
                return False
            return not (k == 0 and flags & AT_START) or at == 0
        if k == 0 and flags & AT_START:
            if not ua.startswith(p):
                return False
            pos = len(p)
            continue
        i = ua.find(p, pos)
        if i < 0:
            return False
        pos = i + len(p)
    return True


def bucket_of(b0, b1):
    return (((b0 << 8) | b1) * HASH_MUL & 0xFFFFFFFF) >> (32 - BUCKET_BITS)


# ---- Output ----


def c_string(s):
    out = []
    for b in s.encode():
        c = chr(b)
        if c == SEP:
            out.append("\\001")
        elif c in '"\\?':  # '?' too, so that no "??x" trigraph can form
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


def comment_safe(s):
    return s.replace("*/", "*\\/")


def describe(entries):
    """One line for the entries of a pattern: ^"a" "b"$ | ..."""
    out = []
    for parts, flags in entries:
        text = " ".join('"%s"' % comment_safe(p) for p in parts)
        out.append(("^" if flags & AT_START else "") + text + ("$" if flags & AT_END else ""))
    return " | ".join(out)


def write_inc(path, version, entries, regexes, broadened, excluded, n_patterns):
    rows = []
    for parts, flags in entries:
        text = SEP.join(parts)
        raw = text.encode()
        head = parts[0].encode()
        head4 = sum(b << (8 * k) for k, b in enumerate(head[:4]))
        rows.append((bucket_of(raw[0], raw[1]), raw, text, len(head), flags, head4))
    rows.sort(key=lambda r: (r[0], r[1]))
    n_buckets = 1 << BUCKET_BITS
    starts = [0] * (n_buckets + 1)
    for r in rows:
        starts[r[0] + 1] += 1
    for i in range(n_buckets):
        starts[i + 1] += starts[i]
    used = sum(1 for i in range(n_buckets) if starts[i + 1] > starts[i])
    longest = max(starts[i + 1] - starts[i] for i in range(n_buckets))
    flag_names = {0: "0", AT_START: "BOTS_AT_START", AT_END: "BOTS_AT_END",
                  AT_START | AT_END: "BOTS_AT_START | BOTS_AT_END"}

    w = []
    w.append("/* bots_list.inc -- Generated by scripts/update-bots.py from crawler-user-agents "
             "%s (MIT, see\n * THIRD_PARTY_NOTICES); do not edit.\n *" % version)
    w.append(" * %d upstream patterns, %d excluded, give %d literal entries in %d of %d buckets "
             "(at most %d\n * in one). Included by src/bots.c, which defines struct bots_entry "
             "and the BOTS_AT_* flags.\n *" % (n_patterns, len(excluded), len(rows), used,
                                              n_buckets, longest))
    w.append(" * Regular-expression patterns, translated exactly (\"...\" parts in order; ^ $ "
             "anchors):")
    broad = dict(broadened)
    for pat, got in regexes:
        if pat not in broad:
            w.append(" *   %-36s %s" % (comment_safe(pat), describe(got)))
    w.append(" *\n * Broadened patterns. Each still requires the bot's own name, so it can only "
             "match more\n * User-Agents of the same bot, never a browser's:")
    for pat, how in broadened:
        w.append(" *   %-36s %s: %s" % (comment_safe(pat), how,
                                      describe(dict(regexes)[pat])))
    w.append(" *\n * Excluded patterns (they hit real browsers; reasons in "
             "scripts/update-bots.py):")
    for pat in excluded:
        w.append(" *   %s" % comment_safe(pat))
    w.append(" */\n")
    w.append('#define TALLY_BOTS_SOURCE "crawler-user-agents %s"\n' % version)
    w.append("/* Bucket of the first two bytes B0, B1 of an entry: "
             "((B0 << 8 | B1) * BOTS_HASH_MUL) mod 2^32,\n * top BOTS_BUCKET_BITS bits. */")
    w.append("#define BOTS_BUCKET_BITS %d" % BUCKET_BITS)
    w.append("#define BOTS_HASH_MUL %du\n" % HASH_MUL)
    w.append("/* {first 4 bytes of the first part (byte K in bits 8K..8K+7, 0 past its end), text: "
             "the\n * literal parts joined by \\001, length, length of the first part, flags}, "
             "sorted by bucket */")
    w.append("static const struct bots_entry bots_entries[] = {")
    for r in rows:
        w.append("    {0x%08xu, %s, %d, %d, %s}," % (r[5], c_string(r[2]), len(r[1]), r[3],
                                                 flag_names[r[4]]))
    w.append("};\n")
    w.append("/* Bucket B holds bots_entries[bots_bucket_start[B]] up to, not including, "
             "[bots_bucket_start[B + 1]]. */")
    w.append("static const uint16_t bots_bucket_start[(1u << BOTS_BUCKET_BITS) + 1] = {")
    for i in range(0, n_buckets + 1, 12):
        w.append("    " + " ".join("%d," % s for s in starts[i : i + 12]))
    w.append("};")
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(w) + "\n")


def write_fixture(path, instances):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for ua in instances:
            f.write(ua + "\n")


# ---- Main ----


def compile_list(data):
    """{pattern: its entries} for the patterns kept, and how each broadened one was."""
    per_pattern, broadened, failures = {}, [], []
    for item in data:
        pat = item["pattern"]
        if pat in EXCLUDED:
            continue
        try:
            got, how = translate(pat)
        except PatternError as e:
            failures.append("pattern %r: %s" % (pat, e))
            continue
        per_pattern[pat] = got
        if how:
            broadened.append((pat, "; ".join(how)))
    if failures:
        sys.exit("update-bots.py: cannot translate; review these patterns and extend the "
                 "script or EXCLUDED:\n  " + "\n  ".join(failures))
    return per_pattern, broadened


def check_translation(data, per_pattern):
    """Exit unless, over all of upstream's examples, each kept pattern's entries match every
    example its regex matches, and no excluded pattern's example matches the table."""
    examples = [(item["pattern"], ua) for item in data for ua in item.get("instances", [])
                if "\n" not in ua and "\r" not in ua]
    table = [e for got in per_pattern.values() for e in got]
    problems = []
    for pat, got in per_pattern.items():
        regex = re.compile(pat)
        for _, ua in examples:
            if regex.search(ua) and not any(entry_matches(e, ua.encode()) for e in got):
                problems.append("pattern %r: translation misses %r" % (pat, ua))
    for pat, ua in examples:
        if pat in EXCLUDED:
            if any(entry_matches(e, ua.encode()) for e in table):
                problems.append("excluded %r: its example still matches: %r" % (pat, ua))
        elif not re.search(pat, ua):
            problems.append("pattern %r: upstream's own example does not match it: %r"
                            % (pat, ua))
    if problems:
        sys.exit("update-bots.py: the translation disagrees with upstream's examples:\n  "
                 + "\n  ".join(problems))
    return list(dict.fromkeys(ua for pat, ua in examples if pat not in EXCLUDED))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: update-bots.py path/to/crawler-user-agents.json VERSION")
    src, version = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    patterns = {item["pattern"] for item in data}
    for pat in EXCLUDED:
        if pat not in patterns:
            print("update-bots.py: note: excluded pattern %r is gone upstream; drop it from "
                  "EXCLUDED" % pat, file=sys.stderr)
    per_pattern, broadened = compile_list(data)
    entries = list(dict.fromkeys(e for got in per_pattern.values() for e in got))
    if len(entries) > 65535:
        sys.exit("update-bots.py: %d entries do not fit uint16_t offsets" % len(entries))
    instances = check_translation(data, per_pattern)
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    excluded = [p for p in EXCLUDED if p in patterns]
    regexes = [(p, got) for p, got in per_pattern.items() if not is_literal(p, got)]
    write_inc(os.path.join(top, "src", "bots_list.inc"), version, entries, regexes, broadened,
              excluded, len(data))
    write_fixture(os.path.join(top, "tests", "unit", "data", "bot-user-agents.txt"), instances)
    print("update-bots.py: %d patterns -> %d entries (%d broadened, %d excluded); %d examples"
          % (len(data), len(entries), len(broadened), len(excluded), len(instances)))


if __name__ == "__main__":
    main()
