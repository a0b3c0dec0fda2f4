// Reading time, engaged time and read-through of tally.js in a real browser (API.md,
// "Embedding": data-tally="read-time", the view's words, engage events). The page's clock is
// Playwright's fake clock, paused: engaged seconds move only when the test moves the clock, so
// every count below is exact. Visibility is the page's own document.visibilityState, switched
// by the test with a visibilitychange event, as a browser does when a tab is hidden.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  UA, launchBrowser, newContext, postEvents, settledStats, startPages, startProxy, startRedis,
  startTally, stats, textWhen, waitFor,
  TEST_TIMEOUT_MS,
} from './harness.mjs';

let redis, browser, pages;

before(async () => {
  redis = await startRedis();
  pages = await startPages();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await pages?.stop();
  await redis?.stop();
});

const T0 = new Date('2026-03-02T09:00:00Z');

// n distinct words ("w0 w1 ..."), and n hiragana characters.
const words = (n, tag = 'w') => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(' ');
const kana = (n) => 'あ'.repeat(n);
const IMG = 'data:image/gif;base64,R0lGODlhAQABAAAAACw=';

function page({ src, attrs = {}, body }) {
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${v}"`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tally read test</title><link rel="icon" href="data:,">
</head><body>${body}
<script async src="${src}"${a}></script>
</body></html>`;
}

// The page's visibility under the test's control: window.__visibility('hidden' | 'visible').
function controlVisibility(initial) {
  let state = initial;
  Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => state });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => state === 'hidden' });
  window.__visibility = (v) => {
    state = v;
    document.dispatchEvent(new Event('visibilitychange'));
  };
}

// A context and page with the paused fake clock and the visibility switch installed.
async function openPage(t, { ua, visibility = 'visible' } = {}) {
  const ctx = await newContext(browser, { ua, viewport: { width: 800, height: 600 } });
  t.after(() => ctx.close());
  await ctx.addInitScript(controlVisibility, visibility);
  const p = await ctx.newPage();
  await p.clock.install({ time: T0 });
  await p.clock.pauseAt(new Date(T0.getTime() + 1000));
  return { ctx, page: p };
}

// The POST bodies that reached the proxy, parsed, in order.
const posted = (proxy) => proxy.requests.filter((r) => r.method === 'POST').map((r) => JSON.parse(r.body));
const engages = (proxy) => posted(proxy).filter((e) => e.type === 'engage');

// Scrolls the end of the <article> into view and waits for the scroll event.
const scrollToEnd = (p) => p.evaluate(() => new Promise((res) => {
  addEventListener('scroll', res, { once: true });
  scrollTo(0, document.querySelector('article').getBoundingClientRect().bottom + scrollY - innerHeight + 10);
}));

// Distinct pointer positions: a move to where the pointer already is sends no event.
let pointer = 0;
async function input(p) {
  pointer = (pointer + 1) % 400;
  await p.mouse.move(10 + pointer, 10 + (pointer % 7));
}

// The pages of R1: each a known text with its exact length in words and reading time.
function readPages(tally) {
  const src = `${tally.origin}/tally.js`;
  // <article>: 214 words (a heading of 5, "Views" of the meta line, 200 in two paragraphs,
  // "The untold story.", a caption of 2, an article footer of 3), 499 CJK characters (ruby
  // annotations left out) and 3 images (a 16x16 icon is none): 214 + 499 * 230/500 +
  // (12 + 11 + 10) s * 230/60 = 214 + 229.54 + 126.5 = 570.04 -> 570 words, 3 minutes.
  pages.pages.set('/r1/article.html', () => page({
    src, attrs: { 'data-article': 'r1/article' },
    body: `<header><nav>Home News Sport Weather</nav><p>The Daily Tally banner</p></header>
<main><article>
  <header><h1>Harbour town counts its birds</h1>
    <p class="meta"><span data-tally="read-time" id="rt">…</span> · <span data-tally="views">0</span> Views</p></header>
  <p>${words(100, 'a')}</p><p>${words(100, 'b')}</p>
  <p>The <b>un</b>told <i>story</i>.</p>
  <img src="${IMG}" width="640" height="360" alt="cliffs">
  <figure><img src="${IMG}" alt=""><figcaption>Razorbill ledge</figcaption></figure>
  <img src="${IMG}" width="16" height="16" alt="">
  <div role="img" aria-label="a chart">chart labels are not read</div>
  <script>var notRead = "words in a script are not read at all";</script>
  <style>p { margin: 0 0 1em }</style>
  <nav>Previous Next</nav>
  <aside>Related: more words in an aside that nobody counts</aside>
  <p hidden>${words(30, 'h')}</p>
  <span aria-hidden="true">decoration words</span>
  <button data-tally-share="twitter">Share on X</button>
  <form><label>Your email</label><input name="e"><textarea>typed words</textarea></form>
  <p lang="ja"><ruby>漢<rt>かん</rt>字<rt>じ</rt></ruby>と${kana(496)}</p>
  <noscript>enable scripts</noscript><template><p>template words</p></template>
  <footer>Filed under birds</footer>
</article></main>
<footer>Copyright 2026 The Daily Tally, all rights reserved</footer>`,
  }));
  // data-text names the text: the <article> beside it is not it. 250 words, 2 minutes.
  pages.pages.set('/r1/selector.html', () => page({
    src, attrs: { 'data-article': 'r1/selector', 'data-text': '#story' },
    body: `<article>${words(1000)}</article><div id="story"><p>${words(250)}</p></div>
<span data-tally="read-time" id="rt"></span>`,
  }));
  // A selector that matches nothing, no <article>: <main>. 100 words, 1 minute.
  pages.pages.set('/r1/main.html', () => page({
    src, attrs: { 'data-article': 'r1/main', 'data-text': '#nothing' },
    body: `<div>${words(500, 'x')}</div><main><p>${words(100)}</p></main><span data-tally="read-time" id="rt"></span>`,
  }));
  // Neither: <body>, without the page's header and footer. 461 words, 3 minutes.
  pages.pages.set('/r1/body.html', () => page({
    src, attrs: { 'data-article': 'r1/body' },
    body: `<header><a href="/">Home</a> <nav>One Two</nav></header><span data-tally="read-time" id="rt"></span>
<div><p>${words(400)}</p><div>${words(61, 'z')}</div></div><footer>Imprint and privacy</footer>`,
  }));
  // No text at all: no words sent, and the element keeps what it had (stats say 0 words).
  pages.pages.set('/r1/empty.html', () => page({
    src, attrs: { 'data-article': 'r1/empty' }, body: '<span data-tally="read-time" id="rt">–</span>',
  }));
}

// Loads each page as a new reader: the view carries the words, the element shows the time.
async function checkReadTimes(tally, cases, ua) {
  let n = 0;
  for (const [path, A, want, text, statsRequest] of cases) {
    const ctx = await newContext(browser, { ua: UA(ua + n++) });
    try {
      const p = await ctx.newPage();
      const view = p.waitForRequest((r) => r.method() === 'POST');
      await p.goto(`${pages.origin}${path}`);
      assert.deepEqual(JSON.parse((await view).postData()),
        want ? { type: 'view', article: A, words: want } : { type: 'view', article: A }, path);
      if (text !== '–') assert.equal(await textWhen(p, '#rt', /read$/), text, path);
      assert.equal((await settledStats(tally.origin, A, (s) => s.views >= 1)).views, 1, path);
      assert.equal(await p.textContent('#rt'), text, path);
      // This page's own reading time needs no stats: only a page with other counts asks, and
      // its view's answer brings them.
      assert.deepEqual(ctx.requestsTo(tally.origin).filter(([, u]) => u.startsWith('/v1/')),
        [['POST', statsRequest ? '/v1/events?stats=1' : '/v1/events']], `${path}: requests`);
      assert.deepEqual(ctx.rec.errors, [], path);
    } finally {
      await ctx.close();
    }
  }
}

test('R1. reading time: exact minutes and words from the article text, its noise left out; data-text', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  readPages(tally);
  await checkReadTimes(tally, [
    ['/r1/article.html', 'r1/article', 570, '3 minutes read', true],
    ['/r1/selector.html', 'r1/selector', 250, '2 minutes read', false],
  ], 1300);
  // The collector keeps the words a page sent.
  assert.equal((await stats(tally.origin, 'r1/article')).words, 570);
  assert.equal((await stats(tally.origin, 'r1/selector')).words, 250);
});

test('R1b. reading time: else <main>, else <body> without the page\'s header and footer; no text, no words', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  readPages(tally);
  await checkReadTimes(tally, [
    ['/r1/main.html', 'r1/main', 100, '1 minute read', false],
    ['/r1/body.html', 'r1/body', 461, '3 minutes read', false],
    ['/r1/empty.html', 'r1/empty', 0, '–', true],
  ], 1310);
  assert.equal((await stats(tally.origin, 'r1/body')).words, 461);
  assert.equal((await stats(tally.origin, 'r1/empty')).words, 0);
});

test('R2. list page: the reading time of other articles comes from the stats\' words, in the one stats request', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis, { viewWindow: 0 });
  t.after(() => tally.stop());
  await postEvents(tally.origin, [
    { type: 'view', article: 'r2/a', words: 5000 },
    { type: 'view', article: 'r2/a', words: 230 }, // the latest count wins
    { type: 'view', article: 'r2/b', words: 231 },
    { type: 'view', article: 'r2/c', words: 1000000 },
    { type: 'view', article: 'r2/d' }, // no words known
  ]);
  const teaser = (id) => `<p><span data-tally="views" data-tally-article="${id}" id="${id.slice(3)}-views">–</span> Views ·
<span data-tally="read-time" data-tally-article="${id}" id="${id.slice(3)}-rt">–</span></p>`;
  pages.pages.set('/r2/list.html', () => page({
    src: `${tally.origin}/tally.js`, attrs: { 'data-article': 'r2/list', 'data-count': 'false' },
    body: `<main><h1>Latest</h1>${['r2/a', 'r2/b', 'r2/c', 'r2/d'].map(teaser).join('\n')}</main>`,
  }));
  const ctx = await newContext(browser, { ua: UA(1400) });
  t.after(() => ctx.close());
  const p = await ctx.newPage();
  await p.goto(`${pages.origin}/r2/list.html`);
  await textWhen(p, '#d-views', /^[0-9]/);
  const shown = await p.evaluate(() => ['a', 'b', 'c', 'd'].map((k) =>
    [document.getElementById(`${k}-views`).textContent, document.getElementById(`${k}-rt`).textContent]));
  assert.deepEqual(shown, [['2', '1 minute read'], ['1', '2 minutes read'], ['1', '4348 minutes read'], ['1', '–']]);
  assert.deepEqual(ctx.requestsTo(tally.origin).filter(([, u]) => u.startsWith('/v1/')).map(([m, u]) => [m, u]),
    [['GET', '/v1/stats?article=r2%2Fa&article=r2%2Fb&article=r2%2Fc&article=r2%2Fd']]);
  assert.deepEqual(ctx.rec.errors, []);
});

// The article: 1150 words, 300 s of reading: read through needs the end in view and 100 s.
const LONG = `<article><h1>${words(10, 'h')}</h1>${Array.from({ length: 20 }, (_, i) => `<p>${words(57, `p${i}-`)}</p>`).join('')}</article>
<div style="height: 2000px"></div><span data-tally="read-time" id="rt"></span>`;

test('R3. engaged time: visible and active seconds only, each sent once, on hide, once a minute and on leaving; read once', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  const proxy = await startProxy(tally.origin); // every request on the wire, preflights too
  t.after(() => proxy.stop());
  const A = 'r3/long-read';
  pages.pages.set('/r3/article.html', () => page({ src: `${proxy.origin}/tally.js`, attrs: { 'data-article': A }, body: LONG }));
  const { ctx, page: p } = await openPage(t, { ua: UA(1500) });
  const sec = (s) => p.clock.runFor(s * 1000);
  const hide = () => p.evaluate(() => window.__visibility('hidden'));
  const show = () => p.evaluate(() => window.__visibility('visible'));
  const sent = (n) => waitFor(() => engages(proxy).length >= n, { what: `${n} engage events` });

  await p.goto(`${pages.origin}/r3/article.html`);
  assert.equal(await textWhen(p, '#rt', /read$/), '5 minutes read');
  assert.deepEqual(posted(proxy), [{ type: 'view', article: A, words: 1150 }]);

  // Arriving counts as activity: 3 s, then the page is hidden.
  await sec(3);
  await hide();
  await sent(1);
  // Hidden: neither time nor input counts, and no minute's event comes.
  for (let i = 0; i < 10; i++) { await input(p); await sec(10); }
  // Shown again: 2 s, input, 10 s of which 5 count (idle after that): 7 s.
  await show();
  await sec(2);
  await input(p);
  await sec(10);
  // Reading on, input every 4 s: 48 s more; the minute since the page was shown is up at the
  // last step and its event carries 7 + 48 = 55 s.
  for (let i = 0; i < 12; i++) { await input(p); await sec(4); }
  await sent(2);
  // The end of the text comes into view (a scroll is input too), 5 s; then 36 s more reading:
  // 41 s, sent when the page is hidden. 3 + 55 + 41 = 99 s: one short of a third of 300 s.
  await scrollToEnd(p);
  await sec(5);
  for (let i = 0; i < 9; i++) { await input(p); await sec(4); }
  await hide();
  await sent(3);
  // 1 s more: 100 s, the article is read; the event says so, and only this one.
  await show();
  await sec(1);
  await hide();
  await sent(4);
  await show();
  await sec(3);
  await p.close(); // left: pagehide sends the last 3 s
  await sent(5);

  assert.deepEqual(engages(proxy), [
    { type: 'engage', article: A, seconds: 3, read: false },
    { type: 'engage', article: A, seconds: 55, read: false },
    { type: 'engage', article: A, seconds: 41, read: false },
    { type: 'engage', article: A, seconds: 1, read: true },
    { type: 'engage', article: A, seconds: 3, read: false },
  ]);
  // Each a keepalive POST as text/plain: no preflight, no cookie, no Referer, counted.
  const posts = proxy.requests.filter((r) => r.url.startsWith('/v1/events'));
  await waitFor(() => posts.every((r) => r.status), { what: 'the answers to the events' });
  assert.equal(proxy.requests.filter((r) => r.method === 'OPTIONS').length, 0, 'a CORS preflight was sent');
  for (const r of posts) {
    assert.equal(r.method, 'POST');
    assert.equal(r.headers['content-type'], 'text/plain;charset=UTF-8');
    assert.equal(r.headers.cookie, undefined);
    assert.equal(r.headers.referer, undefined);
    assert.equal(r.status, 200, r.body);
  }
  const st = await settledStats(tally.origin, A, (s) => s.engaged_seconds >= 103);
  assert.deepEqual([st.views, st.words, st.engaged_seconds, st.reads], [1, 1150, 103, 1]);
  assert.deepEqual(ctx.rec.errors, []);
});

test('R4. a page opened in the background counts from when it is shown; data-engage="false" and data-count="false" send no engage', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  const proxy = await startProxy(tally.origin);
  t.after(() => proxy.stop());
  const src = `${proxy.origin}/tally.js`;
  const cases = [
    ['r4/background', {}],
    ['r4/off', { 'data-engage': 'false' }],
    ['r4/list', { 'data-count': 'false' }],
  ];
  let n = 0;
  for (const [A, attrs] of cases) {
    pages.pages.set(`/${A}.html`, () => page({ src, attrs: { 'data-article': A, ...attrs }, body: LONG }));
    const { ctx, page: p } = await openPage(t, { ua: UA(1600 + n++), visibility: 'hidden' });
    await p.goto(`${pages.origin}/${A}.html`);
    assert.equal(await textWhen(p, '#rt', /read$/), '5 minutes read');
    // Hidden from the start: input and time count nothing.
    for (let i = 0; i < 8; i++) { await input(p); await p.clock.runFor(4000); }
    await p.evaluate(() => window.__visibility('hidden'));
    // Shown: 2 s and input, then 5 s idle: 7 s. The scroll to the end makes no read: 7 s is
    // not a third of 300 s.
    await p.evaluate(() => window.__visibility('visible'));
    await p.clock.runFor(2000);
    await scrollToEnd(p);
    await input(p);
    await p.clock.runFor(30000);
    await p.evaluate(() => window.__visibility('hidden'));
    await p.clock.runFor(120000);
    await p.close();
    await ctx.close();
  }
  await waitFor(() => proxy.requests.filter((r) => r.url === '/v1/events').length >= 3, { what: 'the events' });
  await settledStats(tally.origin, 'r4/off', (s) => s.views >= 1);
  const byArticle = (A) => posted(proxy).filter((e) => e.article === A);
  assert.deepEqual(byArticle('r4/background'), [
    { type: 'view', article: 'r4/background', words: 1150 },
    { type: 'engage', article: 'r4/background', seconds: 7, read: false },
  ]);
  assert.deepEqual(byArticle('r4/off'), [{ type: 'view', article: 'r4/off', words: 1150 }]);
  assert.deepEqual(byArticle('r4/list'), []);
  const st = await settledStats(tally.origin, 'r4/background', (s) => s.engaged_seconds >= 7);
  assert.deepEqual([st.views, st.engaged_seconds, st.reads], [1, 7, 0]);
  assert.deepEqual([(await stats(tally.origin, 'r4/off')).engaged_seconds, (await stats(tally.origin, 'r4/list')).views], [0, 0]);
});
