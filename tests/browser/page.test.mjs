// What tally.js and tallyd's own pages may do to the page around them and to the reader:
// ids named like Object.prototype's members, the cookies and address of the page, ids with
// bidirectional controls, and the pages' Content-Security-Policy.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  UA, launchBrowser, newContext, postEvents, settledStats, sleep, startPages, startProxy,
  startRedis, startTally, stats, textWhen, waitFor,
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

// Every securitypolicyviolation of the page, from its first script on.
const recordViolations = () => {
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
};

test('11. ids named like Object.prototype members are counted and shown, and nothing reaches Object.prototype', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis, { viewWindow: 0 });
  t.after(() => tally.stop());
  // Counts the page will read back; __proto__ itself gets its view from the page.
  await postEvents(tally.origin, [
    ...Array(3).fill({ type: 'view', article: 'constructor' }),
    ...Array(4).fill({ type: 'view', article: 'toString' }),
    ...Array(5).fill({ type: 'view', article: 'hasOwnProperty' }),
  ]);
  const span = (id, what = 'views') => `<span data-tally="${what}" data-tally-article="${id}" id="${id}-${what}">-</span>`;
  pages.pages.set('/t11/article.html', () => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>t11</title></head><body>
${span('__proto__')} ${span('__proto__', 'shares')} ${span('constructor')} ${span('toString')} ${span('hasOwnProperty')}
<button data-tally-share="twitter" data-tally-article="__proto__" id="share">share</button>
<script async src="${tally.origin}/tally.js" data-article="__proto__"></script></body></html>`);

  const ctx = await newContext(browser, { ua: UA(1100) });
  t.after(() => ctx.close());
  const page = await ctx.newPage();
  await page.goto(`${pages.origin}/t11/article.html`);
  assert.equal(await textWhen(page, '#__proto__-views', /^[0-9]/), '1');
  assert.equal(await textWhen(page, '#constructor-views', /^[0-9]/), '3');
  assert.equal(await textWhen(page, '#toString-views', /^[0-9]/), '4');
  assert.equal(await textWhen(page, '#hasOwnProperty-views', /^[0-9]/), '5');
  assert.equal(await page.textContent('#__proto__-shares'), '0');

  await page.click('#share');
  assert.equal(await page.textContent('#__proto__-shares'), '1');
  const proto = await page.evaluate(() => ({
    shares: ({}).shares, views: ({}).views, own: Object.getOwnPropertyNames(Object.prototype).filter(
      (k) => !['constructor', '__defineGetter__', '__defineSetter__', 'hasOwnProperty', '__lookupGetter__',
        '__lookupSetter__', 'isPrototypeOf', 'propertyIsEnumerable', 'toString', 'valueOf', '__proto__',
        'toLocaleString'].includes(k)),
  }));
  assert.deepEqual(proto, { shares: undefined, views: undefined, own: [] });
  const st = await settledStats(tally.origin, '__proto__', (s) => s.shares >= 1);
  assert.deepEqual([st.views, st.shares, st.shares_by_network], [1, 1, { twitter: 1 }]);
  assert.deepEqual(ctx.rec.errors, []);
});

// The page and the collector share an origin (the proxy serves both), the page's cookie is set
// for that origin and its referrer policy would send its full address: exactly what a beacon
// carries. The page sends a beacon of its own to show that the browser does send them here.
test('12. the view and the stats request carry neither the cookies nor the address of the page', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis);
  t.after(() => tally.stop());
  const proxy = await startProxy(tally.origin);
  t.after(() => proxy.stop());
  const A = 't12/private';
  proxy.pages.set('/t12/article.html', {
    headers: { 'referrer-policy': 'unsafe-url' },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>t12</title></head><body><span id="v" data-tally="views">0</span>
<span data-tally="views" data-tally-article="${A}-related">0</span>
<script async src="/tally.js" data-article="${A}"></script>
<script>navigator.sendBeacon('/t12/control', 'x');</script></body></html>`,
  });
  proxy.pages.set('/t12/control', { body: '' });
  const ctx = await newContext(browser, { ua: UA(1200) });
  t.after(() => ctx.close());
  await ctx.addCookies([{ name: 'session', value: 's3cr3t-1200', url: proxy.origin }]);
  const page = await ctx.newPage();
  const address = `${proxy.origin}/t12/article.html?email=reader%40example.org&token=s3cr3t`;
  await page.goto(address);
  assert.equal(await textWhen(page, '#v', /^[1-9]/), '1');
  await waitFor(() => proxy.requests.some((r) => r.url === '/t12/control'), { what: 'the control beacon' });

  const control = proxy.requests.find((r) => r.url === '/t12/control');
  assert.equal(control.headers.cookie, 'session=s3cr3t-1200', 'the control beacon should carry the cookie');
  assert.equal(control.headers.referer, address, 'the control beacon should carry the address');
  // The view carries this article's stats back; the other article's are asked for.
  const post = proxy.requests.find((r) => r.method === 'POST' && r.url === '/v1/events?stats=1');
  const read = proxy.requests.find((r) => r.url.startsWith('/v1/stats'));
  for (const [what, r] of [['view', post], ['stats', read]]) {
    assert.ok(r, `no ${what} request`);
    assert.equal(r.headers.cookie, undefined, `${what} request sent the cookie`);
    assert.equal(r.headers.referer, undefined, `${what} request sent the Referer`);
    assert.equal(r.status, 200);
  }
  assert.equal((await stats(tally.origin, A)).views, 1);
  assert.deepEqual(ctx.rec.errors, []);
});

test('13. an id with a bidi override is refused; the dashboard lays every id out isolated', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis, { viewWindow: 0 });
  t.after(() => tally.stop());
  const evil = 'evil.com/\u202Egnp.exe';
  pages.pages.set('/t13/article.html', () => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>t13</title></head><body>
<script async src="${tally.origin}/tally.js" data-article="${evil}"></script></body></html>`);
  const ctx = await newContext(browser, { ua: UA(1300) });
  t.after(() => ctx.close());
  const page = await ctx.newPage();
  const answer = page.waitForResponse((r) => r.url() === `${tally.origin}/v1/events`);
  await page.goto(`${pages.origin}/t13/article.html`);
  const r = await answer;
  assert.equal(r.status(), 400); // the body of a keepalive request's answer is not kept
  await sleep(300);
  assert.equal((await fetch(`${tally.origin}/v1/top?period=all`).then((x) => x.json())).articles.length, 0);

  // Right-to-left ids are ids like any other: the dashboard isolates each.
  const rtl = '\u05E9\u05DC\u05D5\u05DD/news.png', arabic = '\u0645\u0642\u0627\u0644/1';
  await postEvents(tally.origin, [
    ...Array(3).fill({ type: 'view', article: rtl }), ...Array(2).fill({ type: 'view', article: arabic }),
    { type: 'view', article: 'plain/one' },
  ]);
  const dash = await ctx.newPage();
  await dash.goto(`${tally.origin}/dashboard`);
  await waitFor(async () => (await dash.locator('#top td.name').count()) === 3, { what: 'three top rows' });
  // Queried and read in one evaluation: the dashboard rebuilds its table as answers come (twice
  // at first), and a cell read after it was replaced has no computed style ($$eval queries and
  // reads in two steps).
  const names = await dash.evaluate(() => [...document.querySelectorAll('#top td.name')].map((td) => {
    const s = td.querySelector('span.id');
    return { text: s && s.textContent, dir: s && s.dir, bidi: s && getComputedStyle(s).unicodeBidi, title: td.title };
  }));
  assert.deepEqual(names, [
    { text: rtl, dir: 'auto', bidi: 'isolate', title: `\u2068${rtl}\u2069` },
    { text: arabic, dir: 'auto', bidi: 'isolate', title: `\u2068${arabic}\u2069` },
    { text: 'plain/one', dir: 'auto', bidi: 'isolate', title: '\u2068plain/one\u2069' },
  ]);
  // The rank stays left of the id and the count right of it.
  const row = await dash.evaluate(() => [...document.querySelector('#top tr').cells]
    .map((c) => c.getBoundingClientRect().x));
  assert.ok(row[0] < row[1] && row[1] < row[2], `cells out of order: ${row}`);
  await textWhen(dash, '#chart-title', new RegExp(`^${rtl.replace('.', '\\.')} · views$`));
  const title = await dash.evaluate(() => {
    const s = document.querySelector('#chart-title span.id');
    return [s.dir, getComputedStyle(s).unicodeBidi];
  });
  assert.deepEqual(title, ['auto', 'isolate']);
  // Only the refused view shows up as an error.
  assert.deepEqual(ctx.rec.errors, [`HTTP 400: POST ${tally.origin}/v1/events`,
    `console.error: Failed to load resource: the server responded with a status of 400 (Bad Request) (${tally.origin}/v1/events)`]);
});

test('14. /dashboard and /demo/ pages: CSP and Referrer-Policy sent, everything works, no violation', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const tally = await startTally(redis, { viewWindow: 0 });
  t.after(() => tally.stop());
  await postEvents(tally.origin, [{ type: 'view', article: 'csp/a' }, { type: 'share', article: 'csp/a', network: 'email' }]);
  const ctx = await newContext(browser, { ua: UA(1400) });
  t.after(() => ctx.close());
  await ctx.addInitScript(recordViolations);

  const check = async (path, works) => {
    const page = await ctx.newPage();
    const resp = await page.goto(`${tally.origin}${path}`);
    const h = resp.headers();
    assert.match(h['content-security-policy'], /script-src 'self';.*frame-ancestors 'none'/, path);
    assert.equal(h['referrer-policy'], 'no-referrer', path);
    assert.equal(h['x-content-type-options'], 'nosniff', path);
    await works(page);
    await sleep(300);
    assert.deepEqual(await page.evaluate(() => window.__violations), [], `${path}: CSP violations`);
    return page;
  };
  const dash = await check('/dashboard', async (page) => {
    await textWhen(page, '#live-views', /^[1-9]/);
    await waitFor(async () => (await page.locator('#top td.name').count()) === 1, { what: 'a top row' });
    await waitFor(async () => (await page.locator('#chart rect').count()) > 0, { what: 'the chart' });
    // The stylesheet applied: the live counter is large.
    assert.ok(parseFloat(await page.$eval('#live-views', (e) => getComputedStyle(e).fontSize)) >= 38);
  });
  const article = await check('/demo/', async (page) => {
    assert.equal(await textWhen(page, '.meta [data-tally=views]', /^[1-9]/), '1');
    await page.click('.meta details.share summary');
    await page.click('#copy'); // demo.js and tally.js both run: a share is counted
    await settledStats(tally.origin, 'demo/harbour-birds', (s) => s.shares === 1);
    assert.equal(await page.$eval('h1', (e) => getComputedStyle(e).fontSize), '40px');
  });
  await check('/demo/list', async (page) => {
    await textWhen(page, '[data-tally=views][data-tally-article="demo/harbour-birds"]', /^[1-9]/);
  });
  assert.deepEqual(ctx.rec.errors, []);

  // The policy is enforced, and the listener would have seen a violation: an inline script is
  // refused on both kinds of page.
  for (const page of [dash, article]) {
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__ran = 1';
      document.body.appendChild(s);
    });
    await waitFor(() => page.evaluate(() => window.__violations.length === 1), { what: 'a violation' });
    assert.equal(await page.evaluate(() => window.__ran), undefined);
    assert.match((await page.evaluate(() => window.__violations))[0], /^script-src-elem inline$/);
  }
});
