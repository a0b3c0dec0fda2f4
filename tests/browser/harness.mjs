// Shared fixtures of the real-browser tests: a private redis-server, tallyd instances (one per
// test, each on its own Redis database so counts never leak between tests), a static page server
// on another origin, a recording proxy, Debian's Chromium through playwright-core, and helpers
// that read the store from Node. Everything started here is stopped by PID, also on failure.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

export const TALLYD = process.env.TALLYD;
if (!TALLYD) throw new Error('TALLYD (path of the tallyd binary) is not set; run tests/browser/run.sh');
export const CHROMIUM = process.env.TALLY_CHROMIUM || '/usr/bin/chromium';
export const TOKEN = 'tally-browser-tok-20'; // 20 characters
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage'];

// A normal desktop Chrome UA: headless Chromium's own contains "HeadlessChrome", a bot that
// tallyd rightly does not count. n varies the build number, so each n is a distinct visitor.
export const UA = (n = 0) =>
  `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.${n}.0 Safari/537.36`;

export const ARTIFACTS = process.env.TALLY_BROWSER_ARTIFACTS ||
  fs.mkdtempSync(path.join(os.tmpdir(), 'tally-browser-'));
fs.mkdirSync(ARTIFACTS, { recursive: true });

// Each test's time limit (the per-test option of node:test: Node.js 18 has no --test-timeout).
export const TEST_TIMEOUT_MS = 60000;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- processes

const children = new Set();
function killAll(sig) {
  for (const c of children) { try { process.kill(c.pid, sig); } catch { /* gone */ } }
}
process.on('exit', () => killAll('SIGKILL'));
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killAll('SIGKILL'); process.exit(128 + os.constants.signals[sig]); });
}

function track(child, name) {
  const log = [];
  children.add(child);
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  for (const s of [child.stdout, child.stderr]) {
    if (!s) continue;
    s.setEncoding('utf8');
    s.on('data', (d) => { log.push(d); if (log.length > 2000) log.shift(); });
  }
  child.logText = () => log.join('');
  child.stopGracefully = async (ms = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exited;
    try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
    const t = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, ms);
    const r = await child.exited;
    clearTimeout(t);
    return r;
  };
  child.name = name;
  return child;
}

// Starts a process that is killed with the others if this test process ends or is signalled.
export function spawnTracked(cmd, args, name) {
  return track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }), name);
}

async function freePort() {
  const s = net.createServer();
  await new Promise((res, rej) => { s.once('error', rej); s.listen(0, '127.0.0.1', res); });
  const { port } = s.address();
  await new Promise((res) => s.close(res));
  return port;
}

async function waitForLine(child, re, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = child.logText().match(re);
    if (m) return m;
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${child.name} exited early:\n${child.logText()}`);
    }
    if (Date.now() > deadline) throw new Error(`${child.name} not ready in ${ms} ms:\n${child.logText()}`);
    await sleep(20);
  }
}

export async function startRedis() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-browser-redis-'));
  let lastErr;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--databases', '64', '--dir', dir, '--logfile', ''],
    { stdio: ['ignore', 'pipe', 'pipe'] }), 'redis-server');
    try {
      await waitForLine(child, /Ready to accept connections/, 10000);
      // The admin step of every deploy: tallyd calls the functions it does not load itself.
      execFileSync(TALLYD, ['--load-functions', '--redis', `redis://127.0.0.1:${port}/0`], { stdio: 'pipe' });
      return {
        port,
        stop: async () => { await child.stopGracefully(); fs.rmSync(dir, { recursive: true, force: true }); },
      };
    } catch (e) {
      lastErr = e;
      await child.stopGracefully(1000);
    }
  }
  throw lastErr;
}

let nextDb = 0;
// One tallyd on its own Redis database. The rate limit is off by default: every request of the
// suite comes from 127.0.0.1, and the seeding posts thousands of events.
// DB: share the database of a collector started before (another collector on the same Redis).
export async function startTally(redis, { viewWindow, args = [], db: shared } = {}) {
  const db = shared ?? nextDb++;
  if (db > 63) throw new Error('out of Redis databases');
  const argv = ['--listen', '127.0.0.1:0', '--redis', `redis://127.0.0.1:${redis.port}/${db}`,
    '--token', TOKEN, '--demo', '--threads', '2', '--rate-limit', '0', '--log-level', 'info'];
  if (viewWindow !== undefined) argv.push('--view-window', String(viewWindow));
  argv.push(...args);
  const child = track(spawn(TALLYD, argv, { stdio: ['ignore', 'ignore', 'pipe'] }), 'tallyd');
  const m = await waitForLine(child, /listening on 127\.0\.0\.1:(\d+)/, 10000);
  const origin = `http://127.0.0.1:${m[1]}`;
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      if ((await fetch(`${origin}/readyz`)).status === 200) break;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`tallyd not ready:\n${child.logText()}`);
    await sleep(30);
  }
  return {
    origin,
    port: Number(m[1]),
    db,
    log: () => child.logText(),
    stop: async () => {
      const r = await child.stopGracefully();
      if (r.code !== 0) throw new Error(`tallyd exited with ${JSON.stringify(r)}:\n${child.logText()}`);
    },
  };
}

// ---------------------------------------------------------------- HTTP helpers (Node side)

export async function stats(origin, article) {
  const r = await fetch(`${origin}/v1/stats/${encodeURIComponent(article)}`, { headers: { 'user-agent': UA(9999) } });
  if (r.status !== 200) throw new Error(`stats ${article}: ${r.status} ${await r.text()}`);
  return r.json();
}

export async function getJSON(url) {
  const r = await fetch(url, { headers: { 'user-agent': UA(9999) } });
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

// POST events from Node in batches of up to 100; with the token, so comments count too.
export async function postEvents(origin, events, { ua = UA(9000), token = TOKEN } = {}) {
  const out = { accepted: 0, ignored: 0 };
  for (let i = 0; i < events.length; i += 100) {
    const headers = { 'content-type': 'application/json', 'user-agent': ua };
    if (token) headers.authorization = `Bearer ${token}`;
    const r = await fetch(`${origin}/v1/events`, {
      method: 'POST', headers, body: JSON.stringify(events.slice(i, i + 100)),
    });
    const body = await r.text();
    if (r.status !== 200) throw new Error(`POST /v1/events: ${r.status} ${body}`);
    const j = JSON.parse(body);
    out.accepted += j.accepted;
    out.ignored += j.ignored;
  }
  return out;
}

// ---------------------------------------------------------------- the store, read from Node

// One command to the Redis database DB of REDIS (startRedis()), by redis-cli; its answer's lines.
export function redisCommand(redis, db, ...args) {
  const out = execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), '-n', String(db),
    '--raw', ...args.map(String)], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

// The visitor ids the collector remembered for ARTICLE's repeat-view check (the fields of its
// window-long slots' hashes), sorted: one per distinct reader whose view counted.
export function readerIds(redis, db, article) {
  const ids = new Set();
  for (const key of redisCommand(redis, db, 'KEYS', `tally:{??}w:${article}:*`)) {
    for (const f of redisCommand(redis, db, 'HKEYS', key)) if (f !== '_') ids.add(f);
  }
  return [...ids].sort();
}

// What a HyperLogLog estimates for IDS (a scratch key of DB): the exact count of visitors those
// readers must show (two distinct ids share a register for about 1 salt in 16,000).
export function distinctEstimate(redis, db, ids) {
  const key = 'test:scratch:hll';
  redisCommand(redis, db, 'DEL', key);
  redisCommand(redis, db, 'PFADD', key, ...ids);
  const [n] = redisCommand(redis, db, 'PFCOUNT', key);
  redisCommand(redis, db, 'DEL', key);
  return Number(n);
}

export async function metric(origin, name, labels) {
  const text = await (await fetch(`${origin}/metrics`)).text();
  const want = `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(want));
  if (!line) throw new Error(`metric ${want} not found`);
  return Number(line.slice(want.length));
}

// Poll until fn() returns a truthy value; throws with the last value after ms.
export async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

// The store's counts of one article once pred(stats) holds, re-read after a quiet period so that
// "exactly N" also catches a late second event.
export async function settledStats(origin, article, pred, { timeout = 5000, quiet = 600 } = {}) {
  await waitFor(async () => pred(await stats(origin, article)), { timeout, what: `stats of ${article}` });
  await sleep(quiet);
  return stats(origin, article);
}

// ---------------------------------------------------------------- servers on other origins

// A static page server: pages is a Map path -> () => html (built when requested, so it can name
// ports known later). It listens on 127.0.0.1 and is reached as http://localhost:PORT, so its
// origin differs from the collector's (http://127.0.0.1:PORT) in host as well as in port.
export async function startPages() {
  const pages = new Map();
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const url = new URL(req.url, 'http://localhost');
      requests.push({ at: Date.now(), method: req.method, path: url.pathname, headers: req.headers, body });
      const page = pages.get(url.pathname);
      if (typeof page === 'function') {
        const out = page(url, body);
        if (out === null) { res.writeHead(204); res.end(); return; }
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(out);
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const { port } = server.address();
  return {
    origin: `http://localhost:${port}`,
    pages,
    requests,
    stop: () => new Promise((res) => { server.closeAllConnections(); server.close(res); }),
  };
}

// A recording reverse proxy in front of a collector: the browser sees the proxy as the collector
// (tally.js derives the API base from its own src), and the test sees every request on the wire,
// CORS preflights included (Playwright does not report those). pages (a Map path -> {headers,
// body}) are answered by the proxy itself: pages on the collector's own origin.
export async function startProxy(target, { pages = new Map() } = {}) {
  const requests = [];
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const rec = { at: Date.now(), method: req.method, url: req.url, headers: req.headers, body: body.toString('utf8') };
      requests.push(rec);
      const own = pages.get(new URL(req.url, 'http://x').pathname);
      if (own) {
        rec.status = 200;
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...own.headers });
        res.end(own.body);
        return;
      }
      const up = http.request({
        host: t.hostname, port: t.port, method: req.method, path: req.url,
        headers: { ...req.headers, host: t.host },
      }, (ur) => {
        rec.status = ur.statusCode;
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      });
      up.on('error', (e) => { rec.error = String(e); res.writeHead(502); res.end(); });
      up.end(body);
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    pages,
    stop: () => new Promise((res) => { server.closeAllConnections(); server.close(res); }),
  };
}

// ---------------------------------------------------------------- the browser

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

// A context with a normal UA that records every request the pages make, console errors and page
// errors. Storage of all kinds starts empty in a new context.
export async function newContext(browser, { ua = UA(1), ...opts } = {}) {
  const context = await browser.newContext({ userAgent: ua, ...opts });
  const rec = { requests: [], finished: [], errors: [] };
  context.on('request', (r) => rec.requests.push({
    at: Date.now(), method: r.method(), url: r.url(), type: r.resourceType(), request: r,
  }));
  context.on('requestfinished', (r) => rec.finished.push({ method: r.method(), url: r.url() }));
  context.on('response', (r) => {
    if (r.status() >= 400) rec.errors.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  context.on('requestfailed', (r) => {
    // A /v1/live stream never ends by itself: the page closing its EventSource (the dashboard
    // when the articles on screen change) or leaving aborts it, and that is no error.
    if (r.failure()?.errorText === 'net::ERR_ABORTED' && new URL(r.url()).pathname === '/v1/live') return;
    rec.errors.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  context.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') rec.errors.push(`console.${m.type()}: ${m.text()} (${m.location().url})`);
  });
  context.on('weberror', (e) => rec.errors.push(`page error: ${e.error()}`));
  context.rec = rec;
  // Requests to one origin, as [method, path+query] pairs.
  context.requestsTo = (origin) => rec.requests
    .filter((r) => new URL(r.url).origin === origin)
    .map((r) => [r.method, new URL(r.url).pathname + new URL(r.url).search]);
  return context;
}

// Text of an element once it matches re (waits; the element may start empty or "0").
export async function textWhen(page, selector, re, timeout = 5000) {
  const loc = page.locator(selector);
  await waitFor(async () => re.test((await loc.textContent()) ?? ''), { timeout, what: `${selector} to match ${re}`, interval: 30 });
  return loc.textContent();
}

// ---------------------------------------------------------------- PNG

// CRC-32 (ISO-HDLC, as PNG chunks use) of a buffer; zlib.crc32 is not in Node.js 18.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
export function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Parses and checks a PNG fully (signature, chunk CRCs, IHDR, IDAT inflating to exactly the
// expected size, IEND) and returns {width, height, pixel(x, y) -> [r, g, b, a]}.
export function decodePNG(buf) {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(sig)) throw new Error('not a PNG: bad signature');
  let off = 8, ihdr = null, sawEnd = false;
  const idat = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    const crc = buf.readUInt32BE(off + 8 + len);
    if (crc32(buf.subarray(off + 4, off + 8 + len)) !== crc) throw new Error(`PNG chunk ${type}: bad CRC`);
    if (type === 'IHDR') {
      ihdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], color: data[9], interlace: data[12] };
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') { sawEnd = true; off += 12 + len; break; }
    off += 12 + len;
  }
  if (!ihdr || !sawEnd || off !== buf.length) throw new Error('PNG: missing IHDR/IEND or trailing bytes');
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[ihdr.color];
  if (ihdr.depth !== 8 || !channels || ihdr.interlace !== 0) throw new Error(`PNG: unsupported format ${JSON.stringify(ihdr)}`);
  const bpp = channels, stride = ihdr.width * bpp;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  if (raw.length !== ihdr.height * (stride + 1)) throw new Error('PNG: image data has the wrong size');
  const px = Buffer.alloc(ihdr.height * stride);
  for (let y = 0; y < ihdr.height; y++) {
    const f = raw[y * (stride + 1)];
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x];
      const a = x >= bpp ? px[y * stride + x - bpp] : 0;
      const b = y > 0 ? px[(y - 1) * stride + x] : 0;
      const c = x >= bpp && y > 0 ? px[(y - 1) * stride + x - bpp] : 0;
      let p;
      switch (f) {
        case 0: p = 0; break;
        case 1: p = a; break;
        case 2: p = b; break;
        case 3: p = (a + b) >> 1; break;
        case 4: {
          const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
          p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new Error(`PNG: bad filter ${f}`);
      }
      px[y * stride + x] = (v + p) & 0xff;
    }
  }
  return {
    width: ihdr.width,
    height: ihdr.height,
    pixel(x, y) {
      const o = y * stride + x * bpp;
      if (channels >= 3) return [px[o], px[o + 1], px[o + 2], channels === 4 ? px[o + 3] : 255];
      return [px[o], px[o], px[o], channels === 2 ? px[o + 1] : 255];
    },
  };
}

// How many pixels of a box differ clearly from the box's top-left pixel (the background): text
// drawn there makes this well above zero.
export function inkPixels(png, box) {
  const x0 = Math.max(0, Math.floor(box.x)), y0 = Math.max(0, Math.floor(box.y));
  const x1 = Math.min(png.width, Math.ceil(box.x + box.width)), y1 = Math.min(png.height, Math.ceil(box.y + box.height));
  const bg = png.pixel(x0, y0);
  let n = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const p = png.pixel(x, y);
      if (Math.abs(p[0] - bg[0]) + Math.abs(p[1] - bg[1]) + Math.abs(p[2] - bg[2]) > 96) n++;
    }
  }
  return n;
}
