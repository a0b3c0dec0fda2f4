// The demo pages tallyd serves with --demo (same origin as the collector): /demo/ and /demo/list.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ARTIFACTS, UA, decodePNG, inkPixels, launchBrowser, metric, newContext, postEvents,
  settledStats, sleep, startRedis, startTally, stats, textWhen, waitFor,
  TEST_TIMEOUT_MS,
} from './harness.mjs';

let redis, browser;

before(async () => {
  redis = await startRedis();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await redis?.stop();
});

test('9a. /demo/: Views 1 and its reading time after load, the share menu counts shares, a screenshot of 1200x900', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  const A = 'demo/harbour-birds';
  const ctx = await newContext(browser, { ua: UA(900), viewport: { width: 1200, height: 900 } });
  t.after(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${tally.origin}/demo/`);

  const views = page.locator('.meta [data-tally=views]');
  await textWhen(page, '.meta [data-tally=views]', /^[1-9]/);
  assert.equal(await views.textContent(), '1');
  assert.equal(await page.textContent('.meta [data-tally=comments]'), '0');
  assert.equal(await page.textContent('.meta [data-tally=shares]'), '0');
  assert.equal((await settledStats(tally.origin, A, (s) => s.views >= 1)).views, 1);
  // The reading time of the article's text: 237 words and one image (12 s, 46 words at 230 a
  // minute): 283 words, 2 minutes. The view carries the 283.
  assert.equal(await page.textContent('.meta [data-tally=read-time]'), '2 minutes read');
  const view = ctx.rec.requests.find((r) => r.method === 'POST' && new URL(r.url).pathname === '/v1/events');
  assert.deepEqual(JSON.parse(view.request.postData()), { type: 'view', article: A, words: 283 });

  // The screenshot, once the counts have settled and the fonts are in.
  await page.evaluate(() => document.fonts.ready);
  const file = path.join(ARTIFACTS, 'demo-article.png');
  await page.screenshot({ path: file });
  const png = decodePNG(fs.readFileSync(file));
  assert.deepEqual([png.width, png.height], [1200, 900]);
  // The meta line is drawn, and the view count in it is drawn where the element is.
  const meta = decodePNG(await page.locator('.meta').screenshot());
  assert.ok(meta.width > 100 && meta.height > 10, `meta line screenshot ${meta.width}x${meta.height}`);
  assert.ok(inkPixels(meta, { x: 0, y: 0, width: meta.width, height: meta.height }) > 50, 'the meta line is blank');
  const box = await views.boundingBox();
  assert.ok(box && box.width > 0 && box.y + box.height <= 900, `views count not on screen: ${JSON.stringify(box)}`);
  assert.ok(inkPixels(png, box) > 5, 'no digit drawn where the view count is');
  console.log(`# screenshot: ${file}`);

  // The share menu: it opens, and a click on X shows 1 share at once and counts it.
  await page.click('.meta details.share summary');
  assert.equal(await page.evaluate(() => document.querySelector('.meta details.share').open), true);
  await page.locator('.share-menu button[data-tally-share=twitter]').waitFor({ state: 'visible' });
  await page.evaluate(() => {
    window.addEventListener('click', () => {
      window.__atClick = document.querySelector('.meta [data-tally=shares]').textContent;
    });
  });
  await page.click('.share-menu button[data-tally-share=twitter]');
  assert.equal(await page.evaluate(() => window.__atClick), '1');
  let st = await settledStats(tally.origin, A, (s) => s.shares >= 1);
  assert.equal(st.shares, 1);
  assert.deepEqual(st.shares_by_network, { twitter: 1 });

  // "Copy link" is a share too (network "copy"); the clipboard may refuse in a headless browser,
  // which the page must swallow quietly.
  await page.click('#copy');
  assert.equal(await page.evaluate(() => window.__atClick), '2');
  st = await settledStats(tally.origin, A, (s) => s.shares >= 2);
  assert.equal(st.shares, 2);
  assert.deepEqual(st.shares_by_network, { twitter: 1, copy: 1 });
  assert.equal(st.views, 1);

  // The article is data-live: another reader's view shows without a reload.
  const t0 = Date.now();
  await postEvents(tally.origin, [{ type: 'view', article: A }], { ua: UA(950) });
  await waitFor(async () => (await views.textContent()) === '2', { timeout: 2000, interval: 20, what: 'the live view count to show 2' });
  console.log(`# another reader's view shown after ${Date.now() - t0} ms`);

  const others = ctx.rec.requests.filter((r) => new URL(r.url).origin !== tally.origin).map((r) => r.url);
  assert.deepEqual(others, [], 'requests to other origins');
  assert.deepEqual(ctx.rec.errors, []);
});

test('9b. /demo/list: every counter filled by one stats request, no view counted', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis, { viewWindow: 0 });
  t.after(() => tally.stop());
  const ids = ['demo/harbour-birds', 'demo/night-bus-library', 'demo/sourdough-fifty', 'demo/clock-tower'];
  const events = [];
  ids.forEach((id, i) => {
    for (let k = 0; k < 2 * i + 3; k++) events.push({ type: 'view', article: id });
    for (let k = 0; k < i; k++) events.push({ type: 'share', article: id, network: 'reddit' });
    events.push({ type: 'comment', article: id, delta: 10 * i + 1 });
  });
  await postEvents(tally.origin, events);
  const want = [];
  for (const id of ids) {
    const s = await stats(tally.origin, id);
    want.push([s.views, s.comments, s.shares].map(String));
  }
  assert.deepEqual(want, [['3', '1', '0'], ['5', '11', '1'], ['7', '21', '2'], ['9', '31', '3']]);
  const viewsBefore = await metric(tally.origin, 'tally_events_total', 'type="view",outcome="counted"');

  const ctx = await newContext(browser, { ua: UA(901), viewport: { width: 1200, height: 900 } });
  t.after(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${tally.origin}/demo/list`);
  await waitFor(() => page.evaluate(() => ![...document.querySelectorAll('[data-tally]')].some((e) => e.textContent === '–')),
    { what: 'every counter to be filled' });
  await sleep(1200);
  const shown = await page.evaluate(() => [...document.querySelectorAll('.teaser .counts')].map((c) =>
    ['views', 'comments', 'shares'].map((k) => c.querySelector(`[data-tally=${k}]`).textContent)));
  assert.deepEqual(shown, want);

  const api = ctx.requestsTo(tally.origin).filter(([, u]) => u.startsWith('/v1/'));
  assert.deepEqual(api.map(([m, u]) => [m, u.split('?')[0]]), [['GET', '/v1/stats']], 'one stats request and nothing else');
  assert.equal(await metric(tally.origin, 'tally_events_total', 'type="view",outcome="counted"'), viewsBefore);
  assert.equal((await stats(tally.origin, 'demo/latest')).views, 0);
  assert.equal((await stats(tally.origin, '/demo/list')).views, 0);
  const others = ctx.rec.requests.filter((r) => new URL(r.url).origin !== tally.origin).map((r) => r.url);
  assert.deepEqual(others, []);
  assert.deepEqual(ctx.rec.errors, []);
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-list.png') });
});
