// The pure parts of tally.js under Node, without a browser: word counts (CJK included), the
// reading time, read-through and the engaged-time clock. The script itself is loaded in a vm
// context without a document, where it hands its helpers to `exports` and stops.
//
//   node --test tests/js/tally.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import vm from 'node:vm';

const file = new URL('../../src/assets/tally.js', import.meta.url);
const sandbox = { exports: {} };
vm.runInNewContext(fs.readFileSync(file, 'utf8'), sandbox, { filename: 'tally.js' });
const h = sandbox.exports.helpers;
// Objects made in the vm have that context's Object.prototype: copy them for deepEqual.
const count = (text) => ({ ...h.countText(text) });

test('the helpers are exported under Node only, and nothing else is touched', () => {
  assert.deepEqual(Object.keys(h).sort(), ['EVERY', 'IDLE', 'countText', 'engagement', 'imageSeconds',
    'readThrough', 'readTime', 'readingWords']);
  assert.deepEqual(Object.keys(sandbox).sort(), ['exports']);
  assert.equal(h.IDLE, 5000);
  assert.equal(h.EVERY, 60000);
});

test('countText: words between spaces and dashes; CJK characters one by one', () => {
  const cases = [
    ['', 0, 0],
    ['   \n\t ', 0, 0],
    ['The quick brown fox jumps over the lazy dog.', 9, 0],
    ['Every spring, before the ferries start running again, the people of the harbour town walk\n' +
     '    the cliffs with clipboards.', 19, 0],
    // Punctuation and symbols alone are no words; numbers are.
    ['Share · 0 Comments · 3 minutes read · 7 Views', 8, 0],
    ['🎉 & © — … ·', 0, 0],
    // Em and en dashes part words; hyphens, apostrophes, dots and commas do not.
    ['this—that and 1990–2000', 5, 0],
    ["well-known don't e.g. 1,234 https://example.com/a-b", 5, 0],
    ['a\u00a0b\u2003c', 3, 0], // no-break and em spaces are spaces
    ['Привет, мир! Καλημέρα κόσμε. مرحبا بالعالم', 6, 0],
    ['<b>un</b>told', 1, 0], // the text is given as is: no markup is parsed here
    // Japanese, Chinese, Korean: characters, punctuation left out.
    ['吾輩は猫である。名前はまだ無い。', 0, 14],
    ['学而时习之，不亦说乎？', 0, 9],
    ['나는 고양이로소이다', 0, 9],
    ['コーヒー ｺｰﾋｰ', 0, 8], // the long-vowel mark counts; half-width katakana too
    ['𠮷野家', 0, 3], // a character outside the BMP is one
    ['iPhone 15を買った', 2, 4], // mixed: the Latin words and the kana apart
    ['東京Tower大阪', 1, 4],
  ];
  for (const [text, words, cjk] of cases) {
    assert.deepEqual(count(text), { words, cjk }, JSON.stringify(text));
  }
  assert.deepEqual(count('word '.repeat(100000)), { words: 100000, cjk: 0 });
  assert.deepEqual(count('字'.repeat(5000)), { words: 0, cjk: 5000 });
});

test('imageSeconds: 12 s for the first image, one less for each next, 3 s from the tenth on', () => {
  const want = [[0, 0], [1, 12], [2, 23], [3, 33], [9, 72], [10, 75], [11, 78], [13, 84], [100, 345]];
  for (const [n, s] of want) assert.equal(h.imageSeconds(n), s, `${n} images`);
});

test('readingWords and readTime: 230 words or 500 CJK characters a minute, images in seconds, at least 1 minute, rounded up', () => {
  const cases = [
    // [words, cjk, images] -> length in words at 230 a minute, reading time
    [[0, 0, 0], 0, '1 minute read'],
    [[1, 0, 0], 1, '1 minute read'],
    [[230, 0, 0], 230, '1 minute read'],
    [[231, 0, 0], 231, '2 minutes read'],
    [[460, 0, 0], 460, '2 minutes read'],
    [[461, 0, 0], 461, '3 minutes read'],
    [[0, 500, 0], 230, '1 minute read'],    // 500 characters: one minute
    [[0, 1000, 0], 460, '2 minutes read'],
    [[0, 501, 0], 230, '1 minute read'],    // 230.46 words: the length is rounded before the minutes
    [[0, 0, 1], 46, '1 minute read'],       // 12 s = 46 words
    [[0, 0, 3], 127, '1 minute read'],      // 33 s = 126.5 words, rounded half up
    [[1000, 0, 2], 1088, '5 minutes read'], // 1000 + 23 s (88.17 words)
    [[1150, 0, 0], 1150, '5 minutes read'],
    [[100, 250, 1], 261, '2 minutes read'], // 100 + 115 + 46
  ];
  for (const [[words, cjk, images], len, text] of cases) {
    const got = h.readingWords({ words, cjk }, images);
    assert.equal(got, len, `length of ${words} words, ${cjk} CJK, ${images} images`);
    assert.equal(h.readTime(got), text, `reading time of ${got}`);
  }
  assert.equal(h.readTime(1000000), '4348 minutes read');
});

test('readThrough: the end seen and at least a third of the reading time engaged', () => {
  const cases = [
    // [words, engaged seconds, end seen, read]
    [230, 20, true, true], // 60 s of reading: 20 s is a third
    [230, 19, true, false],
    [230, 3600, false, false], // never at the end: never read
    [1150, 99, true, false], // 300 s of reading: 100 s needed
    [1150, 100, true, true],
    [1088, 95, true, true], // 283.8 s of reading: 94.6 s needed
    [1088, 94, true, false],
    [0, 1, true, true], // no words: seeing the end is enough
    [0, 0, false, false],
  ];
  for (const [words, seconds, end, want] of cases) {
    assert.equal(h.readThrough(words, seconds, end), want, `${words} words, ${seconds} s, end ${end}`);
  }
});

// A timeline of the engaged-time clock: [ms, what] with what one of 'active', 'show', 'hide', or
// a number (take at most that many seconds: the answer is recorded). Answers the takes.
function run(visible, steps, t0 = 0) {
  const e = h.engagement(t0, visible);
  const out = [];
  for (const [t, what] of steps) {
    if (what === 'active') e.active(t);
    else if (what === 'show') e.visible(t, true);
    else if (what === 'hide') e.visible(t, false);
    else out.push(e.take(t, what));
  }
  return { takes: out, sent: e.sent() };
}

test('engagement: visible and active within the last 5 s, each second sent once', () => {
  const cases = [
    // Arriving counts as activity: 5 s, then idle.
    ['arrival', true, [[4000, 60], [10000, 60], [20000, 60]], [4, 1, 0]],
    // Each input extends it to 5 s after the input.
    ['input extends', true, [[3000, 'active'], [8000, 60], [20000, 'active'], [22500, 60], [30000, 60]], [8, 2, 3]],
    // Hidden time never counts, nor input while hidden; showing the page counts as activity.
    ['hidden', true, [[2000, 'hide'], [3000, 'active'], [10000, 60], [60000, 'show'], [70000, 60]], [2, 5]],
    ['opened in the background', false, [[1000, 'active'], [9000, 60], [10000, 'show'], [12000, 60]], [0, 2]],
    // Hidden before the idle time ran out, and shown again: only the visible parts.
    ['hide and show', true, [[1000, 'hide'], [1500, 'show'], [2000, 'hide'], [2500, 'show'], [4000, 60],
      [30000, 60]], [3, 3]],
    // Fractions of a second wait for the rest of their second.
    ['fractions', true, [[1500, 60], [2500, 60], [2999, 60], [3000, 60], [3999.9, 60], [4000, 60]], [1, 1, 0, 1, 0, 1]],
    // A clock that steps back counts nothing for the step.
    ['clock back', true, [[500, 60], [800, 'active'], [7000, 60]], [0, 5], 1000],
    // Continuous input: every second counts, and a take answers at most its maximum.
    ['continuous', true, [[1000, 'active'], [2000, 'active'], [3000, 'active'], [4000, 'active'],
      [4000, 2], [4000, 2], [4000, 2], [9000, 60], [9000, 60]], [2, 2, 0, 5, 0]],
  ];
  for (const [name, visible, steps, want, t0] of cases) {
    const got = run(visible, steps, t0);
    assert.deepEqual(got.takes, want, name);
    assert.equal(got.sent, want.reduce((a, b) => a + b, 0), `${name}: sent`);
  }
});

test('engagement: two hours of reading with input every 4 s, taken at most 3600 s at a time', () => {
  const steps = [];
  for (let t = 4000; t <= 7200000; t += 4000) steps.push([t, 'active']);
  steps.push([7300000, 3600], [7300000, 3600], [7300000, 3600], [7300000, 3600]);
  // 7,200 s of input plus the last 5 s.
  assert.deepEqual(run(true, steps).takes, [3600, 3600, 5, 0]);
});

test('engagement: input more than 5 s apart leaves the gaps out', () => {
  // Input at 0 (arrival), 8 s, 20 s, 21 s: counted 0-5, 8-13, 20-26 = 16 s.
  const r = run(true, [[8000, 'active'], [20000, 'active'], [21000, 'active'], [60000, 3600]]);
  assert.deepEqual(r.takes, [16]);
});
