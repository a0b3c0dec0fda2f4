// The dashboard tallyd serves at /dashboard: totals, top articles, a chart and a live counter.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ARTIFACTS, UA, decodePNG, getJSON, inkPixels, launchBrowser, newContext, postEvents,
  sleep, startRedis, startTally, textWhen, waitFor,
  TEST_TIMEOUT_MS,
} from './harness.mjs';

let redis, browser, tally;

// Seeded: views 8 + 5 + 3 = 16, shares 3, comments 4; engaged time 240 s (2 reads) on gamma,
// 100 s (1 read) on alpha.
const SEED = { 'dash/gamma': 8, 'dash/alpha': 5, 'dash/beta': 3 };

before(async () => {
  redis = await startRedis();
  browser = await launchBrowser();
  tally = await startTally(redis, { viewWindow: 0 });
  const events = [];
  for (const [id, n] of Object.entries(SEED)) for (let k = 0; k < n; k++) events.push({ type: 'view', article: id });
  events.push({ type: 'share', article: 'dash/alpha', network: 'twitter' },
    { type: 'share', article: 'dash/alpha', network: 'facebook' },
    { type: 'share', article: 'dash/gamma', network: 'email' },
    { type: 'comment', article: 'dash/beta', delta: 4 },
    { type: 'engage', article: 'dash/gamma', seconds: 200, read: true },
    { type: 'engage', article: 'dash/gamma', seconds: 40, read: true },
    { type: 'engage', article: 'dash/alpha', seconds: 100, read: true });
  const r = await postEvents(tally.origin, events);
  assert.equal(r.accepted, events.length);
});

after(async () => {
  await browser?.close();
  await tally?.stop();
  await redis?.stop();
});

// Counts the layout shifts of the page from its first paint on (no user input happens).
const observeLayoutShifts = () => {
  window.__shifts = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!e.hadRecentInput) {
        window.__shifts.push({
          value: e.value, at: Math.round(e.startTime),
          sources: (e.sources || []).map((s) => (s.node && s.node.nodeType === 1
            ? `${s.node.tagName.toLowerCase()}#${s.node.id}.${s.node.className}` : String(s.node && s.node.nodeName))),
        });
      }
    }
  }).observe({ type: 'layout-shift', buffered: true });
};
const shiftSum = (page) => page.evaluate(() => window.__shifts.reduce((s, e) => s + e.value, 0));

function assertSameOrigin(ctx) {
  const others = ctx.rec.requests.filter((r) => new URL(r.url).origin !== tally.origin).map((r) => r.url);
  assert.deepEqual(others, [], 'requests to other origins');
  assert.deepEqual(ctx.rec.errors, []);
}

test('10a. dashboard: live totals, top articles in order, a chart per article, live updates', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const ctx = await newContext(browser, { ua: UA(1000), viewport: { width: 1200, height: 900 } });
  t.after(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${tally.origin}/dashboard`);

  assert.equal(await textWhen(page, '[data-testid=live-views]', /^\d/), '16');
  assert.equal(await textWhen(page, '#live-shares', /^\d/), '3');
  assert.equal(await textWhen(page, '#live-comments', /^\d/), '4');
  assert.equal(await textWhen(page, '#t-views', /^\d/), '16');

  // The top list, highest first, with the right counts.
  const rows = async () => page.evaluate(() => [...document.querySelectorAll('#top tr.row')].map((tr) =>
    [tr.querySelector('td.name').textContent, tr.querySelector('td.count').textContent]));
  await waitFor(async () => (await rows()).length === 3, { what: 'three rows in the top list' });
  assert.deepEqual(await rows(), [['dash/gamma', '8'], ['dash/alpha', '5'], ['dash/beta', '3']]);
  // Each article's average engaged time per view and its read ratio (reads ÷ views); the
  // period's together: 340 s over 16 views, 3 reads.
  const engaged = () => page.evaluate(() => [...document.querySelectorAll('#top tr.row td.engaged')].map((td) => td.textContent));
  await waitFor(async () => !(await engaged()).includes('–'), { what: 'the engagement of the listed articles' });
  assert.deepEqual(await engaged(), ['0:30 · 25% read', '0:20 · 20% read', '0:00 · 0% read']);
  assert.equal(await textWhen(page, '#t-engaged', /^\d/), '0:21');
  assert.equal(await textWhen(page, '#t-read-ratio', /^\d/), '19%');
  assert.equal(await textWhen(page, '#t-reads', /^\d/), '3');

  // Clicking an article draws its series: one bar per point, each bar titled with its point.
  await page.locator('#top tr.row', { hasText: 'dash/beta' }).click();
  await textWhen(page, '#chart-title', /^dash\/beta/);
  assert.equal(await page.textContent('#chart-title'), 'dash/beta · views');
  await waitFor(async () => {
    const series = await getJSON(`${tally.origin}/v1/series/${encodeURIComponent('dash/beta')}?metric=views&interval=hour`);
    const bars = await page.evaluate(() => [...document.querySelectorAll('#chart rect')].map((r) =>
      ({ title: r.querySelector('title').textContent, h: Number(r.getAttribute('height')) })));
    return bars.length === series.points.length && series.points.length >= 24 &&
      bars.every((b, i) => b.title === `${series.points[i].t}: ${series.points[i].value}` &&
        (b.h > 0) === (series.points[i].value > 0)) &&
      series.points.reduce((s, p) => s + p.value, 0) === 3;
  }, { what: 'the chart to show the series of dash/beta' });
  assert.ok(await page.evaluate(() => document.querySelector('#top tr.row.sel td.name').textContent === 'dash/beta'));
  // The y axis: one label per grid line, each the value at its line (3 views: 0 1 2 3 4).
  assert.deepEqual(await page.evaluate(() => [...document.querySelectorAll('#chart text[text-anchor=end]')].map((e) => e.textContent)),
    ['0', '1', '2', '3', '4']);

  const file = path.join(ARTIFACTS, 'dashboard.png');
  await page.screenshot({ path: file });
  const png = decodePNG(fs.readFileSync(file));
  assert.deepEqual([png.width, png.height], [1200, 900]);
  assert.ok(inkPixels(png, await page.locator('[data-testid=live-views]').boundingBox()) > 20, 'the live counter is not drawn');
  console.log(`# screenshot: ${file}`);

  // More views arrive: the live counter follows without a reload.
  const t0 = Date.now();
  await postEvents(tally.origin, Array.from({ length: 4 }, () => ({ type: 'view', article: 'dash/alpha' })));
  await waitFor(async () => (await page.textContent('[data-testid=live-views]')) === '20',
    { timeout: 5000, interval: 50, what: 'the live counter to show 20' });
  console.log(`# live counter updated after ${Date.now() - t0} ms`);
  // The selected article's own counts come from its /v1/live stream, not from polling.
  assert.match(await textWhen(page, '[data-testid=article-live]', /^\d/), /^[\d,]+ views? · [\d,]+ visitors? · [\d,]+ shares? · [\d,]+ comments?$/);
  assert.ok(ctx.requestsTo(tally.origin).some(([m, p]) => m === 'GET' && p.startsWith('/v1/live?')), 'no /v1/live stream');
  assertSameOrigin(ctx);
});

test('10b. dashboard on a phone (390x844): no horizontal scroll, no layout shift as numbers update', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const ctx = await newContext(browser, {
    ua: UA(1001), viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1,
  });
  t.after(() => ctx.close());
  await ctx.addInitScript(observeLayoutShifts);
  const page = await ctx.newPage();
  await page.goto(`${tally.origin}/dashboard`);
  const base = Number((await textWhen(page, '[data-testid=live-views]', /^\d/)).replace(/,/g, ''));
  await waitFor(async () => (await page.locator('#top tr.row').count()) === 3, { what: 'the top list' });
  await waitFor(() => page.evaluate(() => document.querySelectorAll('#chart rect').length > 0), { what: 'the chart' });
  await sleep(300);

  const width = () => page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, inner: window.innerWidth, body: document.body.scrollWidth,
  }));
  let w = await width();
  assert.equal(w.inner, 390);
  assert.ok(w.scroll <= w.inner && w.body <= w.inner, `horizontal scroll: ${JSON.stringify(w)}`);

  // The numbers change while we watch; nothing may move.
  const before = await shiftSum(page);
  await postEvents(tally.origin, Array.from({ length: 9990 }, (_, i) => ({ type: i % 10 ? 'view' : 'share', article: 'dash/beta', network: 'whatsapp' })));
  await waitFor(async () => (await page.textContent('[data-testid=live-views]')) === (base + 8991).toLocaleString('en'),
    { timeout: 5000, what: `the live counter to show ${base + 8991}` });
  await sleep(800); // let the bump animation run
  const after = await shiftSum(page);
  const shifts = await page.evaluate(() => window.__shifts);
  console.log(`# layout shift: ${after.toFixed(4)} since load, ${(after - before).toFixed(4)} while the numbers updated`);
  assert.ok(after - before < 0.05, `layout shift while numbers updated: ${after - before} ${JSON.stringify(shifts)}`);
  assert.ok(after < 0.05, `layout shift since load: ${after} ${JSON.stringify(shifts)}`);
  w = await width();
  assert.ok(w.scroll <= w.inner && w.body <= w.inner, `horizontal scroll with bigger numbers: ${JSON.stringify(w)}`);

  const file = path.join(ARTIFACTS, 'dashboard-phone.png');
  await page.screenshot({ path: file });
  const png = decodePNG(fs.readFileSync(file));
  assert.deepEqual([png.width, png.height], [390, 844]);
  console.log(`# screenshot: ${file}`);
  assertSameOrigin(ctx);
});
