#!/usr/bin/env node
// check-openapi.mjs OPENAPI TALLYD -- keep docs/openapi.yaml true against the real daemon.
//
// Starts its own redis-server and two tallyd instances on free loopback ports:
//   A: --token, --allowed-origins https://news.example.com, --demo, --rate-limit 0
//   B: no token, default origins (*), --rate-limit 1, no --demo
// then sends the document's example requests and the documented error cases, and checks each
// answer against the document: status documented for the operation, Content-Type one of the
// documented media types, body valid against the response schema (Ajv, JSON Schema 2020-12),
// required headers present, every header documented and valid, CORS as the document's
// conventions say, and the answer equal to the named example where the case says so.
//
// It also fails when
//   - a served path is not documented (the route table in src/http_server.c and src/assets.c
//     is probed);
//   - a documented operation has no case;
//   - a --flag of `tallyd --help` is missing from info.description's Configuration list, or
//     the two disagree on which flags are "not yet active";
//   - the metric families of /metrics and of the document's /metrics description differ;
//   - tallyd does not exit 0 on SIGTERM.
// Both processes it starts are stopped by PID whatever happens. Exit status 0: all true.

import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import YAML from 'yaml';

const STANDARD_HEADERS = new Set(['date', 'content-length', 'content-type', 'connection',
                                  'transfer-encoding']);
const ALLOWED_ORIGIN = 'https://news.example.com';
const OTHER_ORIGIN = 'https://evil.example';
const GIF_LEN = 43;
const T0 = Date.now();

// ---- Arguments, document, schemas ----

if (process.argv.length !== 4) {
    console.error('usage: check-openapi.mjs <openapi.yaml> <tallyd>');
    process.exit(2);
}
const specPath = path.resolve(process.argv[2]);
const tallyd = path.resolve(process.argv[3]);
const srcDir = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../src');
const doc = YAML.parse(fs.readFileSync(specPath, 'utf8'));

const ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false,
                          allErrors: true });
addFormats(ajv);
ajv.addKeyword('discriminator'); // an annotation for tools; oneOf + const does the validating
const refRe = /#\/components\/schemas\//g;
const rewrite = (s) => JSON.parse(JSON.stringify(s).replace(refRe, 'oas#/$defs/'));
ajv.addSchema({ $id: 'oas', $defs: rewrite(doc.components.schemas) });
const compiled = new Map();
function validator(schema) {
    const key = JSON.stringify(schema);
    if (!compiled.has(key))
        compiled.set(key, ajv.compile(rewrite(schema)));
    return compiled.get(key);
}

function deref(obj) {
    for (let i = 0; obj && obj.$ref && i < 8; i++) {
        const parts = obj.$ref.replace(/^#\//, '').split('/')
            .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
        obj = parts.reduce((o, k) => o?.[k], doc);
        if (obj === undefined)
            throw new Error(`unresolved $ref in the document`);
    }
    return obj;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const operations = [];
for (const [p, item] of Object.entries(doc.paths))
    for (const m of METHODS)
        if (item[m])
            operations.push({ path: p, method: m.toUpperCase(), op: item[m], item });
const opOf = (method, p) => operations.find((o) => o.method === method && o.path === p);

function templateRe(t) {
    const esc = t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\\\{[a-z]+\\\}/g, '[^/]+');
    return new RegExp(`^${esc}$`);
}
const documentedPath = (p) => Object.keys(doc.paths).find((t) => templateRe(t).test(p));

// ---- Results ----

const failures = [];
let passed = 0;
let contract = null; // the API.md rule of the case being checked, for messages
function fail(name, what) {
    if (contract)
        what += `\n(API.md: ${contract})`;
    failures.push(`${name}: ${what}`);
    console.log(`FAIL ${name}\n     ${what.replaceAll('\n', '\n     ')}`);
}
function pass(name) {
    passed++;
    if (process.env.CHECK_VERBOSE)
        console.log(`ok   ${name}`);
}

// ---- Processes ----

const children = [];
function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

function start(name, cmd, args) {
    const env = Object.fromEntries(Object.entries(process.env)
                                       .filter(([k]) => !k.startsWith('TALLY_')));
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const rec = { name, child, out: '', exited: null };
    child.stdout.on('data', (d) => { rec.out = (rec.out + d).slice(-4000); });
    child.stderr.on('data', (d) => { rec.out = (rec.out + d).slice(-4000); });
    rec.exit = new Promise((resolve) => child.on('exit', (code, sig) => {
        rec.exited = { code, sig };
        resolve(rec.exited);
    }));
    child.on('error', (e) => { rec.out += `\nspawn error: ${e.message}`; });
    children.push(rec);
    return rec;
}

async function stop(rec, timeoutMs = 5000) {
    if (rec.exited || rec.child.pid === undefined)
        return rec.exited;
    try { process.kill(rec.child.pid, 'SIGTERM'); } catch { /* gone already */ }
    const t = setTimeout(() => {
        try { process.kill(rec.child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, timeoutMs);
    const r = await rec.exit;
    clearTimeout(t);
    return r;
}

function killAllNow() {
    for (const rec of children)
        if (!rec.exited && rec.child.pid !== undefined)
            try { process.kill(rec.child.pid, 'SIGKILL'); } catch { /* gone */ }
}
process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(sig, () => { killAllNow(); process.exit(1); });

// ---- HTTP over raw sockets (exact control of headers, framing and HEAD) ----

function request(port, { method = 'GET', target, headers = [], body = null, localAddress,
                         rawHead = null, bodyDelayMs = 0, timeoutMs = 5000, streamMs = 0 }) {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ host: '127.0.0.1', port, localAddress });
        let buf = Buffer.alloc(0);
        let settled = false;
        let graceTimer = null;
        const done = (err, res) => {
            if (settled)
                return;
            settled = true;
            clearTimeout(timer);
            clearTimeout(graceTimer);
            sock.destroy();
            err ? reject(err) : resolve(res);
        };
        const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)),
                                 timeoutMs);
        const parse = (atEnd) => {
            const h = buf.indexOf('\r\n\r\n');
            if (h < 0)
                return atEnd ? done(new Error('connection closed without an answer')) : null;
            const lines = buf.subarray(0, h).toString('latin1').split('\r\n');
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
            if (!m)
                return done(new Error(`bad status line: ${lines[0]}`));
            const status = Number(m[1]);
            const hdrs = {};
            for (const l of lines.slice(1)) {
                const i = l.indexOf(':');
                const k = l.slice(0, i).trim().toLowerCase();
                const v = l.slice(i + 1).trim();
                hdrs[k] = k in hdrs ? `${hdrs[k]}, ${v}` : v;
            }
            const rest = buf.subarray(h + 4);
            // An answer without content (HEAD, 204, 304) ends at its header; whatever follows
            // before the connection closes (we asked for close) is content it must not have.
            const noBody = method === 'HEAD' || status === 204 || status === 304;
            const len = noBody ? null : hdrs['content-length'] !== undefined
                ? Number(hdrs['content-length']) : null;
            if (len !== null && rest.length >= len)
                return done(null, { status, headers: hdrs, body: rest.subarray(0, len) });
            if (atEnd && !noBody && /chunked/i.test(hdrs['transfer-encoding'] ?? ''))
                return done(null, { status, headers: hdrs, body: dechunk(rest) });
            if (atEnd)
                return done(null, { status, headers: hdrs, body: rest, truncated: len !== null });
            if (noBody && !graceTimer)
                graceTimer = setTimeout(() => parse(true), 200);
            // A stream (/v1/live) does not end: what came within STREAMMS is its body.
            if (streamMs > 0 && status === 200 && !noBody && len === null && !graceTimer)
                graceTimer = setTimeout(() => done(null, { status, headers: hdrs,
                                                           body: dechunk(buf.subarray(h + 4), true) }),
                                        streamMs);
            return null;
        };
        sock.on('connect', () => {
            let head = rawHead;
            if (head === null) {
                head = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
                       'Connection: close\r\n';
                for (const [k, v] of headers)
                    head += `${k}: ${v}\r\n`;
                if (body !== null || method === 'POST' || method === 'DELETE')
                    head += `Content-Length: ${body === null ? 0 : Buffer.byteLength(body)}\r\n`;
                head += '\r\n';
            }
            sock.write(head);
            if (body !== null) {
                if (bodyDelayMs > 0)
                    setTimeout(() => { if (!settled) sock.write(body, () => {}); }, bodyDelayMs);
                else
                    sock.write(body, () => {});
            }
        });
        sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(false); });
        sock.on('end', () => parse(true));
        sock.on('error', (e) => (buf.length > 0 ? parse(true) : done(e)));
    });
}

// PARTIAL: B is what came so far of a body that goes on; stop at its end.
function dechunk(b, partial = false) {
    const parts = [];
    for (let i = 0; ;) {
        const eol = b.indexOf('\r\n', i);
        const n = eol < 0 ? NaN : parseInt(b.subarray(i, eol).toString('latin1'), 16);
        if (partial && (i >= b.length || eol + 2 + n + 2 > b.length))
            return Buffer.concat(parts);
        if (!(n >= 0))
            throw new Error('malformed chunked body');
        if (n === 0)
            return Buffer.concat(parts);
        parts.push(b.subarray(eol + 2, eol + 2 + n));
        i = eol + 2 + n + 2;
    }
}

// ---- Checking one answer against the document ----

function mediaKey(ct) {
    return ct.toLowerCase().split(';').map((s) => s.trim()).filter(Boolean).join('; ');
}

function headerValue(schema, raw) {
    const s = deref(schema);
    const v = validator(s);
    if (v(raw))
        return null;
    if (/^-?\d+$/.test(raw) && v(Number(raw)))
        return null;
    return ajv.errorsText(v.errors);
}

// Expected CORS headers of an answer, from the document's conventions.
function checkCors(name, c, res) {
    const acao = res.headers['access-control-allow-origin'];
    const vary = res.headers.vary;
    const v1 = c.target.startsWith('/v1/');
    const origin = c.headers?.find(([k]) => k.toLowerCase() === 'origin')?.[1];
    if (!v1) {
        // /tally.js is loaded by any site: readable with crossorigin, the same for every origin.
        if (c.target.split('?')[0] === '/tally.js') {
            if (acao !== '*' || vary !== undefined)
                fail(name, `tally.js wants Access-Control-Allow-Origin: * and no Vary (got ${acao}, ${vary})`);
            return;
        }
        if (acao !== undefined || vary !== undefined)
            fail(name, `CORS headers on a path outside /v1/ (Access-Control-Allow-Origin: ${acao}, Vary: ${vary})`);
        return;
    }
    const expectAcao = c.d.anyOrigin ? '*' : origin === ALLOWED_ORIGIN ? origin : undefined;
    if (acao !== expectAcao)
        fail(name, `Access-Control-Allow-Origin is ${acao === undefined ? 'absent' : `"${acao}"`}, the document says ${expectAcao === undefined ? 'absent' : `"${expectAcao}"`} (Origin: ${origin ?? 'none'}; every answer under /v1/ carries CORS headers)`);
    const expectVary = c.d.anyOrigin ? undefined : 'Origin';
    if (vary !== expectVary)
        fail(name, `Vary is ${vary === undefined ? 'absent' : `"${vary}"`}, the document says ${expectVary ?? 'absent'}`);
}

// Check RES against response object RESP (already chosen for the status); returns the body
// (parsed when JSON) or undefined when the check failed.
function checkResponse(name, c, res, resp) {
    let ok = true;
    const bad = (what) => { ok = false; fail(name, what); };
    resp = deref(resp);
    const documented = new Map(Object.entries(resp.headers ?? {})
                                   .map(([k, h]) => [k.toLowerCase(), deref(h)]));
    for (const [k, h] of documented) {
        const val = res.headers[k];
        if (val === undefined) {
            if (h.required)
                bad(`required header ${k} is missing`);
            continue;
        }
        const err = h.schema ? headerValue(h.schema, val) : null;
        if (err)
            bad(`header ${k}: "${val}" does not match the document: ${err}`);
    }
    for (const k of Object.keys(res.headers))
        if (!STANDARD_HEADERS.has(k) && !documented.has(k))
            bad(`header ${k}: "${res.headers[k]}" is not documented for ${res.status}`);
    checkCors(name, c, res);

    let body;
    if (!resp.content) {
        if (res.body.length > 0)
            bad(`${res.status} has a body (${res.body.length} bytes); the document gives none`);
        return ok ? null : undefined;
    }
    const ct = res.headers['content-type'];
    const key = ct && Object.keys(resp.content).find((m) => mediaKey(m) === mediaKey(ct));
    if (!key) {
        bad(`Content-Type "${ct}" is not one of the documented ${Object.keys(resp.content).join(' | ')}\n` +
            `body: ${res.body.toString('utf8').slice(0, 200)}`);
        return undefined;
    }
    if (c.method === 'HEAD') {
        if (res.body.length > 0)
            bad(`the answer to HEAD carries ${res.body.length} bytes of content (${JSON.stringify(res.body.subarray(0, 12).toString('latin1'))}...); ` +
                'a HEAD answer has none (RFC 9110 9.3.2), else the next answer on the connection is corrupt');
        return ok ? null : undefined;
    }
    const media = resp.content[key];
    if (/json/.test(key)) {
        try {
            body = JSON.parse(res.body.toString('utf8'));
        } catch (e) {
            bad(`body is not JSON: ${e.message}: ${res.body.toString('utf8').slice(0, 200)}`);
            return undefined;
        }
    } else if (key.startsWith('image/gif')) {
        body = res.body;
    } else {
        body = res.body.toString('utf8');
    }
    if (media.schema && !key.startsWith('image/gif')) {
        const v = validator(deref(media.schema));
        if (!v(body))
            bad(`body does not match the schema: ${ajv.errorsText(v.errors)}\nbody: ${JSON.stringify(body).slice(0, 300)}`);
    }
    if (c.example) {
        const ex = media.examples?.[c.example];
        if (!ex)
            bad(`the document has no example "${c.example}" for ${res.status} ${key}`);
        else if (body && typeof body === 'object' && 'error' in ex.value) {
            if (body.error !== ex.value.error)
                bad(`error "${body.error}", the document's example "${c.example}" says "${ex.value.error}"`);
        } else if (!isDeepStrictEqual(body, ex.value)) {
            bad(`body ${JSON.stringify(body)} differs from the document's example "${c.example}": ${JSON.stringify(ex.value)}`);
        }
    }
    return ok ? body : undefined;
}

// Send case C and check it. C: {name, d (daemon), method, target, headers, body, status,
// op: [METHOD, path] | null, generic: components response name, or a response object (for
// answers that belong to no operation), example, expect(res, body) -> error text or null, contract: API.md rule}.
async function run(c) {
    contract = c.contract ?? null;
    try {
        return await runCase(c);
    } finally {
        contract = null;
    }
}

async function runCase(c) {
    const name = c.name;
    let res;
    try {
        res = await request(c.d.port, c);
    } catch (e) {
        fail(name, `${c.method} ${c.target.slice(0, 80)}: ${e.message}`);
        return null;
    }
    const label = `${c.method} ${c.target.length > 80 ? `${c.target.slice(0, 80)}...` : c.target}`;
    const failsBefore = failures.length;
    if (c.status !== undefined && res.status !== c.status) {
        fail(name, `${label} answered ${res.status}, expected ${c.status}` +
             `\n${res.headers['content-type'] ?? ''} ${res.body.toString('utf8').slice(0, 200)}`);
        return { res };
    }
    let resp;
    if (c.generic) {
        resp = typeof c.generic === 'string' ? doc.components.responses[c.generic] : c.generic;
    } else {
        const o = opOf(c.op[0], c.op[1]);
        resp = o.op.responses[String(res.status)] ?? o.op.responses.default;
        if (!resp) {
            fail(name, `${label} answered ${res.status}, which ${c.op.join(' ')} does not document`);
            return { res };
        }
    }
    const body = checkResponse(name, c, res, resp);
    if (body !== undefined && c.expect) {
        const err = c.expect(res, body);
        if (err)
            fail(name, `${label}: ${err}`);
    }
    if (failures.length === failsBefore)
        pass(name);
    return { res, body };
}

// ---- Helpers for cases ----

const enc = encodeURIComponent;
const reqExample = (p, mt, name) => {
    const v = doc.paths[p].post.requestBody.content[mt].examples[name].value;
    return JSON.stringify(v);
};
const paramExample = (p) => deref(doc.components.parameters[p]).example;
const ARTICLE = paramExample('ArticlePath');
const runId = crypto.randomBytes(4).toString('hex');
let uaSeq = 0;
// A distinct, ordinary browser per call: each case is its own visitor.
const ua = () => `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.${++uaSeq}.${process.pid % 1000} Safari/537.36`;
const uniq = (what) => `check/${runId}/${what}`;
const json = ['Content-Type', 'application/json'];

async function statsOf(d, article, want, timeoutMs = 1000) {
    const until = Date.now() + timeoutMs;
    let last;
    for (;;) {
        const r = await request(d.port, { target: `/v1/stats/${enc(article)}`,
                                          headers: [['User-Agent', ua()]] });
        last = r.status === 200 ? JSON.parse(r.body.toString('utf8')) : { status: r.status };
        if (!want || want(last) || Date.now() >= until)
            return last;
        await new Promise((ok) => setTimeout(ok, 50));
    }
}

// The default the document gives a query parameter of GET P.
function probeDefaults(p, name) {
    const prm = deref(doc.paths[p].get.parameters.find((x) => deref(x).name === name));
    return prm.schema.default ?? deref(prm.schema).default;
}

// ---- Main ----

async function main() {
    const token = crypto.randomBytes(10).toString('hex'); // 20 characters
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-openapi-'));
    const [pr, pa, pb] = [await freePort(), await freePort(), await freePort()];

    // --help first: it needs nothing running.
    const help = execFileSync(tallyd, ['--help'], { encoding: 'utf8', env: {} });
    checkHelp(help);

    const redis = start('redis-server', 'redis-server',
                        ['--port', String(pr), '--bind', '127.0.0.1', '--save', '',
                         '--appendonly', 'no', '--dir', tmp, '--daemonize', 'no']);
    const redisUrl = `redis://127.0.0.1:${pr}/0`;
    await loadFunctions(redisUrl);
    const A = { name: 'A', port: pa, anyOrigin: false, token,
                rec: start('tallyd A', tallyd,
                           ['--listen', `127.0.0.1:${pa}`, '--redis', redisUrl, '--token', token,
                            '--demo', '--allowed-origins', ALLOWED_ORIGIN, '--rate-limit', '0',
                            '--threads', '2', '--hold', '300', '--log-level', 'warn']) };
    const B = { name: 'B', port: pb, anyOrigin: true, token: null,
                rec: start('tallyd B', tallyd,
                           ['--listen', `127.0.0.1:${pb}`, '--redis', redisUrl, '--threads', '1',
                            '--rate-limit', '1',
                            '--hold', '300', '--log-level', 'warn']) };
    try {
        for (const d of [A, B])
            await waitReady(d);
        await checkCases(A, B, redis);
        for (const d of [A, B]) {
            const r = await stop(d.rec);
            if (!r || r.code !== 0)
                fail(`tallyd ${d.name} SIGTERM`, `exited with ${JSON.stringify(r)}, the contract says 0\n${d.rec.out}`);
            else
                pass(`tallyd ${d.name} SIGTERM`);
        }
    } finally {
        for (const rec of children)
            await stop(rec, 2000);
        fs.rmSync(tmp, { recursive: true, force: true });
    }
}

// The admin step of every deploy: tallyd calls functions it does not load itself.
async function loadFunctions(redisUrl) {
    const until = Date.now() + 10000;
    for (;;) {
        try {
            execFileSync(tallyd, ['--load-functions', '--redis', redisUrl], { stdio: 'pipe', env: {} });
            return;
        } catch (e) {
            if (Date.now() > until) throw new Error(`tallyd --load-functions failed: ${e.stderr}`);
            await new Promise((r) => setTimeout(r, 50)); // redis-server is still starting
        }
    }
}

async function waitReady(d) {
    const until = Date.now() + 10000;
    for (;;) {
        const rs = children.find((r) => r.name === 'redis-server');
        if (rs?.exited)
            throw new Error(`redis-server exited (${JSON.stringify(rs.exited)}):\n${rs.out}`);
        if (d.rec.exited)
            throw new Error(`tallyd ${d.name} exited (${JSON.stringify(d.rec.exited)}):\n${d.rec.out}`);
        try {
            const r = await request(d.port, { target: '/readyz', timeoutMs: 1000 });
            if (r.status === 200)
                return;
        } catch { /* not listening yet */ }
        if (Date.now() > until)
            throw new Error(`tallyd ${d.name}: /readyz not 200 within 10 s:\n${d.rec.out}`);
        await new Promise((ok) => setTimeout(ok, 50));
    }
}

// `tallyd --help` against info.description's Configuration list.
function checkHelp(help) {
    const flags = new Map(); // --flag -> help text of its entry
    let cur = null;
    for (const line of help.split('\n')) {
        const m = /^\s{1,4}(?:-[A-Za-z], )?(--[a-z][a-z0-9-]*)/.exec(line);
        if (m) {
            cur = m[1];
            flags.set(cur, line);
        } else if (cur && /^\s{6,}/.test(line)) {
            flags.set(cur, `${flags.get(cur)} ${line.trim()}`);
        } else {
            cur = null;
        }
    }
    if (flags.size < 5) {
        fail('--help', `found only ${flags.size} flags in tallyd --help:\n${help}`);
        return;
    }
    const desc = doc.info.description;
    const conf = desc.split(/^## Configuration$/m)[1]?.split(/^## /m)[0] ?? '';
    const bullets = new Map();
    for (const b of conf.split(/^- /m).slice(1)) {
        const m = /^`(--[a-z][a-z0-9-]*)/.exec(b);
        if (m)
            bullets.set(m[1], b);
        for (const f of b.matchAll(/`(--[a-z][a-z0-9-]*)`/g))
            if (!bullets.has(f[1]))
                bullets.set(f[1], b);
    }
    let ok = true;
    for (const [f, text] of flags) {
        if (!desc.includes(f)) {
            ok = false;
            fail('--help', `tallyd --help lists ${f}, info.description does not`);
            continue;
        }
        const b = bullets.get(f);
        if (!b) {
            ok = false;
            fail('--help', `${f} is not an entry of the Configuration list in info.description`);
            continue;
        }
        const helpLater = text.includes('(not yet active)');
        const docLater = /not yet active/.test(b);
        if (helpLater !== docLater) {
            ok = false;
            fail('--help', `${f}: tallyd --help ${helpLater ? 'marks' : 'does not mark'} it "(not yet active)", the document ${docLater ? 'does' : 'does not'}`);
        }
    }
    for (const f of bullets.keys())
        if (!flags.has(f)) {
            ok = false;
            fail('--help', `the Configuration list documents ${f}, tallyd --help has no such flag`);
        }
    if (ok)
        pass('--help flags documented');
    checkHelp.flags = flags;
}

async function checkCases(A, B, redis) {
    const h = (...extra) => [['User-Agent', ua()], ...extra];
    const EV = '/v1/events';
    const POST_EV = ['POST', EV];
    const PIX = '/v1/pixel.gif';
    const GET_PIX = ['GET', PIX];
    const ST1 = '/v1/stats/{article}';
    const STN = '/v1/stats';
    const ingestCoherent = (res, b) => {
        const sum = Object.values(b.ignored_reasons ?? {}).reduce((x, y) => x + y, 0);
        return sum === b.ignored ? null
            : `ignored is ${b.ignored} but ignored_reasons add up to ${sum}`;
    };
    const outcome = (want) => (res, b) => {
        if (res.body.length !== GIF_LEN || res.body.subarray(0, 6).toString() !== 'GIF89a')
            return `not the ${GIF_LEN}-byte GIF89a (${res.body.length} bytes)`;
        const o = res.headers['tally-outcome'];
        return o === want ? null : `Tally-Outcome is "${o}", expected "${want}"`;
    };
    const covered = new Set();
    const served = async (c) => {
        covered.add(`${c.op?.[0] ?? ''} ${c.op?.[1] ?? ''}`);
        return run(c);
    };

    // ---- POST /v1/events ----
    const post = (name, d, body, extra = {}) => served({
        name, d, method: 'POST', target: EV, op: POST_EV, body,
        headers: extra.headers ?? h(json), ...extra });
    await post('events: view example', A, reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'counted' });
    await post('events: share example', A, reqExample(EV, 'application/json', 'share'),
               { status: 200, example: 'counted' });
    await post('events: view with words example', A, reqExample(EV, 'application/json', 'view_with_words'),
               { status: 200, example: 'counted' });
    await post('events: engage example', A, reqExample(EV, 'application/json', 'engage'),
               { status: 200, example: 'counted' });
    await post('events: batch example', A, reqExample(EV, 'application/json', 'batch'),
               { status: 200, example: 'batch' });
    await post('events: comment example with the token', A,
               reqExample(EV, 'application/json', 'comment'),
               { status: 200, example: 'counted',
                 headers: h(json, ['Authorization', `Bearer ${A.token}`]) });
    await post('events: text/plain (sendBeacon)', A, reqExample(EV, 'text/plain', 'beacon'),
               { status: 200, example: 'counted', headers: h(['Content-Type', 'text/plain;charset=UTF-8']) });
    await post('events: x-www-form-urlencoded holding JSON', A,
               reqExample(EV, 'application/x-www-form-urlencoded', 'form'),
               { status: 200, example: 'counted',
                 headers: h(['Content-Type', 'application/x-www-form-urlencoded']) });
    await post('events: no Content-Type', A, reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'counted', headers: h() });
    {
        const art = uniq('with-stats');
        const body = JSON.stringify([{ type: 'view', article: art }, { type: 'share', article: art, network: 'email' }]);
        await post('events: ?stats=1 answers with the articles\' stats, the events counted', A, body,
                   { target: `${EV}?stats=1`, status: 200,
                     expect: (res, b) => b.accepted === 2 && b.articles?.length === 1 &&
                         b.articles[0].article === art && b.articles[0].views === 1 &&
                         b.articles[0].shares_by_network.email === 1 ? null
                         : `expected both events counted in the answer's stats: ${JSON.stringify(b)}` });
        await post('events: 400 stats=yes', A, body,
                   { target: `${EV}?stats=yes`, status: 400, example: 'invalid_stats' });
    }
    await post('events: comment without a token', A,
               reqExample(EV, 'application/json', 'comment'),
               { status: 401, example: 'unauthorized', contract: '401 for a comment event without the right Authorization: Bearer <token>' });
    await post('events: comment with a wrong token', A,
               reqExample(EV, 'application/json', 'comment'),
               { status: 401, example: 'unauthorized',
                 headers: h(json, ['Authorization', 'Bearer not-the-token-0000000']) });
    await post('events: comment, no token configured', B,
               reqExample(EV, 'application/json', 'comment'),
               { status: 403, example: 'token_not_configured', contract: '403 when no token is configured' });
    await post('events: allowed Origin', A, reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'counted', headers: h(json, ['Origin', ALLOWED_ORIGIN]) });
    await post('events: Origin not allowed', A, reqExample(EV, 'application/json', 'view'),
               { status: 403, example: 'origin_forbidden', headers: h(json, ['Origin', OTHER_ORIGIN]),
                 contract: 'a browser Origin not in --allowed-origins: 403, nothing counted' });
    await post('events: any Origin with --allowed-origins *', B,
               reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'counted', headers: h(json, ['Origin', OTHER_ORIGIN]) });
    await post('events: 415 application/xml', A, reqExample(EV, 'application/json', 'view'),
               { status: 415, example: 'unsupported_media_type', headers: h(['Content-Type', 'application/xml']) });
    const bad400 = [
        ['malformed_json', '{"type":"view"'],
        ['invalid_article', '{"type":"view","article":"a b"}'],
        ['invalid_type', '{"type":"like","article":"a"}'],
        ['invalid_delta', '{"type":"comment","article":"a","delta":0}'],
        ['invalid_event', '42'],
        ['duplicate_key', '{"type":"view","article":"a","type":"view"}'],
        ['empty_batch', '[]'],
        ['batch_too_large', JSON.stringify(Array(101).fill(JSON.parse(reqExample(EV, 'application/json', 'view'))))],
    ];
    for (const [code, body] of bad400)
        await post(`events: 400 ${code}`, A, body,
                   { status: 400, example: code, contract: '400 {"error","message"}: malformed JSON, a bad field, a bad article id, an empty or oversized array' });
    await post('events: 400 invalid_idempotency_key', A, reqExample(EV, 'application/json', 'view'),
               { status: 400, example: 'invalid_idempotency_key', headers: h(json, ['Idempotency-Key', 'a b']) });
    {
        const key = ['Idempotency-Key', uniq('key')];
        await post('events: a key and its body', A, reqExample(EV, 'application/json', 'view'),
                   { status: 200, example: 'counted', headers: h(json, key) });
        await post('events: 422 idempotency_key_reused', A, reqExample(EV, 'application/json', 'share'),
                   { status: 422, example: 'idempotency_key_reused', headers: h(json, key),
                     contract: 'the same key with a different body counts nothing and answers 422 {"error":"idempotency_key_reused"}' });
    }
    await post('events: 413 over 64 KiB', A, `[${' '.repeat(70000)}]`,
               { status: 413, example: 'payload_too_large', bodyDelayMs: 300,
                 contract: '413: body over 64 KiB; responses to /v1/* carry CORS headers for allowed origins',
                 headers: h(json, ['Origin', ALLOWED_ORIGIN]) });
    await post('events: prefetch is ignored', A, reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'prefetch', headers: h(json, ['Sec-Purpose', 'prefetch;prerender']),
                 expect: ingestCoherent });
    await post('events: a crawler is answered and not counted', A,
               reqExample(EV, 'application/json', 'view'),
               { status: 200, example: 'bot',
                 headers: [json, ['User-Agent', 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)']],
                 contract: 'a request whose User-Agent is a known bot or crawler is answered like any other and not counted' });

    await post('events: a server with the token is not taken for a crawler', A,
               JSON.stringify({ type: 'view', article: uniq('server') }),
               { status: 200, example: 'counted',
                 headers: [json, ['User-Agent', 'Googlebot/2.1 (+http://www.google.com/bot.html)'],
                           ['Authorization', `Bearer ${A.token}`]] });

    // Idempotency-Key: answered as the first time, counted once.
    {
        const art = uniq('idem');
        const key = `idem-${runId}`;
        const body = JSON.stringify({ type: 'view', article: art });
        for (const n of [1, 2])
            await post(`events: Idempotency-Key, request ${n}`, A, body,
                       { status: 200, example: 'counted', headers: h(json, ['Idempotency-Key', key]) });
        const s = await statsOf(A, art, (x) => x.views >= 1);
        await new Promise((ok) => setTimeout(ok, 100));
        const s2 = await statsOf(A, art);
        if (s2.views !== 1)
            fail('events: Idempotency-Key counted once', `views ${s2.views} after two requests with one key (first read ${JSON.stringify(s)})\n(API.md: the same key within 24 hours is answered as the first time and counted once)`);
        else
            pass('events: Idempotency-Key counted once');
    }

    // What was counted shows in the stats within 1 s; a comment count never goes below 0.
    const U = uniq('counted');
    {
        const who = ua();
        const hdr = (...x) => [['User-Agent', who], json, ...x];
        await post('stats setup: view', A, JSON.stringify({ type: 'view', article: U, words: 1200 }),
                   { status: 200, example: 'counted', headers: hdr() });
        await post('stats setup: share', A, JSON.stringify({ type: 'share', article: U, network: 'twitter' }),
                   { status: 200, example: 'counted', headers: hdr() });
        await post('stats setup: share, unknown network', A, JSON.stringify({ type: 'share', article: U, network: 'myspace' }),
                   { status: 200, example: 'counted', headers: hdr() });
        await post('stats setup: comment +2', A, JSON.stringify({ type: 'comment', article: U, delta: 2 }),
                   { status: 200, example: 'counted', headers: hdr(['Authorization', `Bearer ${A.token}`]) });
        await post('stats setup: engage', A, JSON.stringify({ type: 'engage', article: U, seconds: 95, read: true }),
                   { status: 200, example: 'counted', headers: hdr() });
        const want = { article: U, views: 1, shares: 2, shares_by_network: { twitter: 1, other: 1 }, comments: 2,
                       engaged_seconds: 95, reads: 1, words: 1200 };
        const s = await statsOf(A, U, (x) => x.views === 1 && x.shares === 2 && x.comments === 2 && x.reads === 1);
        const { visitors, ...rest } = s;
        if (!isDeepStrictEqual(rest, want))
            fail('stats: counts within 1 s', `got ${JSON.stringify(s)}, expected ${JSON.stringify(want)} (+visitors)\n(API.md: stats reflect an acknowledged event within 1 second; an unknown network counts as other)`);
        else
            pass('stats: counts within 1 s');
        if (visitors !== 1)
            fail('stats: visitors', `one visitor viewed "${U}" (1 view counted), stats say visitors ${visitors}\n(API.md: visitors is the approximate number of distinct visitors)`);
        else
            pass('stats: visitors');

        const V = uniq('negative');
        await post('stats setup: comment -1 on a new article', A, JSON.stringify({ type: 'comment', article: V, delta: -1 }),
                   { status: 200, example: 'counted', headers: hdr(['Authorization', `Bearer ${A.token}`]) });
        await new Promise((ok) => setTimeout(ok, 150));
        const sv = await statsOf(A, V);
        if (sv.comments !== 0)
            fail('stats: comments never below 0', `comments ${sv.comments} after delta -1 on a new article`);
        else
            pass('stats: comments never below 0');
    }

    await served({ name: 'events: GET is 405', d: A, method: 'GET', target: EV, headers: h(),
                   status: 405, generic: 'MethodNotAllowed', example: 'method_not_allowed',
                   expect: (r) => (r.headers.allow === 'POST, OPTIONS' ? null : `Allow "${r.headers.allow}"`) });

    // ---- Preflights on every /v1/ path ----
    for (const p of Object.keys(doc.paths).filter((x) => x.startsWith('/v1/'))) {
        const target = p.replace('{article}', enc(ARTICLE));
        await served({ name: `preflight ${p}, allowed Origin`, d: A, method: 'OPTIONS', target,
                       op: ['OPTIONS', p], status: 204,
                       headers: [['Origin', ALLOWED_ORIGIN], ['Access-Control-Request-Method', 'POST'],
                                 ['Access-Control-Request-Headers', 'content-type,idempotency-key']] });
        await served({ name: `preflight ${p}, other Origin`, d: A, method: 'OPTIONS', target,
                       op: ['OPTIONS', p], status: 204,
                       headers: [['Origin', OTHER_ORIGIN], ['Access-Control-Request-Method', 'POST']] });
        await served({ name: `preflight ${p}, --allowed-origins *`, d: B, method: 'OPTIONS', target,
                       op: ['OPTIONS', p], status: 204,
                       headers: [['Origin', OTHER_ORIGIN], ['Access-Control-Request-Method', 'GET']] });
    }

    // ---- GET /v1/pixel.gif ----
    const pix = (q) => `${PIX}?${q}`;
    const pixParam = (n) => doc.paths[PIX].get.parameters.find((x) => deref(x).name === n).example;
    const pixq = `type=${pixParam('type')}&article=${enc(pixParam('article'))}`;
    const pixel = (name, d, q, want, extra = {}) => served({
        name, d, method: 'GET', target: pix(q), op: GET_PIX, status: 200, headers: h(),
        expect: outcome(want), ...extra });
    await pixel('pixel: view', A, pixq, 'counted');
    await pixel('pixel: view with utm_source', A, `${pixq}&utm_source=news`, 'counted');
    await pixel('pixel: share', A, `type=share&article=${enc(ARTICLE)}&network=twitter`, 'counted');
    await pixel('pixel: HEAD', A, pixq, 'ignored', { method: 'HEAD', expect: (r) => (r.headers['tally-outcome'] === 'ignored' ? null : `Tally-Outcome ${r.headers['tally-outcome']}`) });
    await pixel('pixel: comment with the token', A, `type=comment&article=${enc(ARTICLE)}&delta=1`, 'counted',
                { headers: h(['Authorization', `Bearer ${A.token}`]) });
    await pixel('pixel: comment without a token', A, `type=comment&article=${enc(ARTICLE)}`, 'unauthorized');
    await pixel('pixel: comment, no token configured', B, `type=comment&article=${enc(ARTICLE)}`, 'token_not_configured');
    await pixel('pixel: bad type', A, `type=like&article=${enc(ARTICLE)}`, 'invalid_type');
    await pixel('pixel: missing type', A, `article=${enc(ARTICLE)}`, 'invalid_type');
    await pixel('pixel: bad article', A, 'type=view&article=a+b', 'invalid_article');
    await pixel('pixel: bad delta', A, `type=comment&article=${enc(ARTICLE)}&delta=0`, 'invalid_delta',
                { headers: h(['Authorization', `Bearer ${A.token}`]) });
    await pixel('pixel: a parameter twice', A, `${pixq}&type=view`, 'invalid_parameter');
    await pixel('pixel: Origin not allowed', A, pixq, 'origin_forbidden', { headers: h(['Origin', OTHER_ORIGIN]) });
    await pixel('pixel: prefetch', A, pixq, 'ignored', { headers: h(['Sec-Purpose', 'prefetch']) });
    await pixel('pixel: a crawler', A, pixq, 'ignored',
                { headers: [['User-Agent', 'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)']],
                  contract: 'a request whose User-Agent is a known bot or crawler is answered like any other and not counted' });
    await served({ name: 'pixel: POST is 405', d: A, method: 'POST', target: pix(pixq), headers: h(),
                   status: 405, generic: 'MethodNotAllowed', example: 'method_not_allowed',
                   expect: (r) => (r.headers.allow === 'GET, HEAD' ? null : `Allow "${r.headers.allow}"`) });

    // ---- GET /v1/stats/{article} and /v1/stats ----
    const stat1 = (name, d, article, extra = {}) => served({
        name, d, method: 'GET', target: `/v1/stats/${article}`, op: ['GET', ST1], headers: h(), ...extra });
    const NEVER = uniq('never-seen');
    const one = await stat1('stats: the example article', A, enc(ARTICLE), { status: 200 });
    await stat1('stats: never seen is zeros', B, enc(NEVER), { status: 200,
        expect: (r, b) => (isDeepStrictEqual(b, { ...deref(doc.components.responses.Stats).content['application/json'].examples.unseen.value, article: NEVER }) ? null : `not zeros: ${JSON.stringify(b)}`) });
    await stat1('stats: HEAD', A, enc(ARTICLE), { method: 'HEAD', status: 200 });
    await stat1('stats: allowed Origin', A, enc(ARTICLE), { status: 200, headers: h(['Origin', ALLOWED_ORIGIN]) });
    if (one?.res?.status === 200)
        await stat1('stats: If-None-Match is 304', A, enc(NEVER), { status: 304,
            headers: h(['If-None-Match', (await request(A.port, { target: `/v1/stats/${enc(NEVER)}` })).headers.etag]) });
    await stat1('stats: bad article', A, 'a%20b', { status: 400, example: 'invalid_article' });
    await stat1('stats: article of 257 bytes', A, 'x'.repeat(257), { status: 400, example: 'invalid_article' });
    await stat1('stats: malformed escape', A, 'a%2', { status: 400, example: 'invalid_article' });
    await stat1('stats: id of 256 bytes', A, enc('é'.repeat(128)), { status: 200 });
    await served({ name: 'stats: empty id is 404', d: A, method: 'GET', target: '/v1/stats/', headers: h(),
                   status: 404, generic: 'NotFound', example: 'not_found' });
    await served({ name: 'stats: DELETE is 405', d: A, method: 'DELETE', target: `/v1/stats/${enc(ARTICLE)}`, headers: h(),
                   status: 405, generic: 'MethodNotAllowed', example: 'method_not_allowed',
                   expect: (r) => (r.headers.allow === 'GET, HEAD' ? null : `Allow "${r.headers.allow}"`) });

    const statN = (name, d, q, extra = {}) => served({
        name, d, method: 'GET', target: `${STN}${q}`, op: ['GET', STN], headers: h(), ...extra });
    await statN('stats: many, in request order', A, `?article=${enc(U)}&article=${enc(NEVER)}&other=1`, { status: 200,
        expect: (r, b) => (b.articles.map((x) => x.article).join('|') === `${U}|${NEVER}` && b.articles[0].views === 1 ? null
            : `articles ${JSON.stringify(b.articles)}`) });
    await statN('stats: many, the example ids', B, `?${deref(doc.paths[STN].get.parameters[0]).example.map((a) => `article=${enc(a)}`).join('&')}`, { status: 200 });
    {
        const t = `${STN}?article=${enc(NEVER)}`;
        const e = (await request(A.port, { target: t })).headers.etag;
        await statN('stats: many, If-None-Match is 304', A, `?article=${enc(NEVER)}`, { status: 304, headers: h(['If-None-Match', e]) });
    }
    await statN('stats: no article', A, '', { status: 400, example: 'missing_article' });
    await statN('stats: 101 articles', A, `?${Array(101).fill('article=a').join('&')}`, { status: 400, example: 'too_many_articles' });
    await statN('stats: 100 articles', B, `?${Array(100).fill('article=a').join('&')}`, { status: 200,
        expect: (r, b) => (b.articles.length === 100 ? null : `${b.articles.length} entries`) });
    await statN('stats: bad article', A, '?article=a+b', { status: 400, example: 'invalid_article' });

    // ---- GET /v1/top ----
    const TOP = '/v1/top';
    const top = (name, d, q, extra = {}) => served({
        name, d, method: 'GET', target: `${TOP}${q}`, op: ['GET', TOP], headers: h(), ...extra });
    const dMetric = probeDefaults(TOP, 'metric');
    const dPeriod = probeDefaults(TOP, 'period');
    const dLimit = probeDefaults(TOP, 'limit');
    const sortedDesc = (a) => a.every((x, i) => i === 0 || a[i - 1].count >= x.count);
    await top('top: defaults', A, '', { status: 200, expect: (r, b) => (
        b.metric === dMetric && b.period === dPeriod && b.articles.length <= dLimit && sortedDesc(b.articles)
            ? null : `expected metric ${dMetric}, period ${dPeriod}, at most ${dLimit} articles highest first: ${JSON.stringify(b).slice(0, 300)}`) });
    await top('top: shares this week, limit 1', A, '?metric=shares&period=week&limit=1', { status: 200,
        expect: (r, b) => (b.metric === 'shares' && b.period === 'week' && b.articles.length <= 1 ? null : JSON.stringify(b)) });
    await top('top: views of all time include a counted article', A, '?metric=views&period=all&limit=100', { status: 200,
        expect: (r, b) => (b.articles.some((x) => x.article === U && x.count === 1) ? null : `"${U}" (1 view) missing`) });
    for (const q of ['?metric=likes', '?period=year', '?limit=0', '?limit=101', '?limit=x'])
        await top(`top: 400 for ${q}`, A, q, { status: 400, example: 'invalid_parameter' });
    await top('top: a parameter twice', A, '?limit=5&limit=5', { status: 400, example: 'given_twice' });
    await top('top: unknown parameters are ignored', A, '?utm_source=x', { status: 200 });

    // ---- GET /v1/live ----
    const LIVE = '/v1/live';
    const live = (name, d, q, extra = {}) => served({
        name, d, method: 'GET', target: `${LIVE}${q}`, op: ['GET', LIVE], headers: h(), ...extra });
    {
        const L = uniq('live');
        await post('live setup: one view', A, JSON.stringify({ type: 'view', article: L }),
                   { status: 200, example: 'counted' });
        const want = [await statsOf(A, L), await statsOf(A, 'never/seen')];
        const sse = (r, body) => {
            const blocks = body.split('\n\n');
            if (blocks[0] !== 'retry: 2000')
                return `the stream opens with ${JSON.stringify(blocks[0])}, not "retry: 2000"`;
            const events = blocks.slice(1).filter((x) => x.startsWith('event: '));
            const v = validator(deref(doc.components.schemas.Stats));
            for (let i = 0; i < want.length; i++) {
                const m = /^event: stats\ndata: (.*)$/.exec(events[i] ?? '');
                if (!m)
                    return `event ${i} is ${JSON.stringify(events[i])}, not "event: stats" and one data line`;
                const st = JSON.parse(m[1]);
                if (!v(st))
                    return `event ${i}: ${ajv.errorsText(v.errors)}`;
                if (!isDeepStrictEqual(st, want[i]))
                    return `event ${i}: ${m[1]}, /v1/stats says ${JSON.stringify(want[i])}`;
            }
            return events.length === want.length ? null : `${events.length} events, expected ${want.length}`;
        };
        await live('live: one stats event per article at once', A,
                   `?article=${enc(L)}&article=never%2Fseen&article=${enc(L)}`,
                   { status: 200, streamMs: 600, expect: sse,
                     contract: 'GET /v1/live: one event: stats with the current stats object of each article at once' });
        await live('live: allowed Origin', A, `?article=${enc(L)}`,
                   { status: 200, streamMs: 300, headers: h(['Origin', ALLOWED_ORIGIN]) });
        await live('live: HEAD', A, `?article=${enc(L)}`, { method: 'HEAD', status: 200 });
    }
    await live('live: no article', A, '', { status: 400, example: 'missing_article' });
    await live('live: bad article', A, '?article=a%20b', { status: 400, example: 'invalid_article' });
    await live('live: 101 articles', A, `?${Array.from({ length: 101 }, (_, i) => `article=a${i}`).join('&')}`,
               { status: 400, example: 'too_many_articles' });

    const TOT = '/v1/totals';
    const totals = (name, d, q, extra = {}) => served({
        name, d, method: 'GET', target: `${TOT}${q}`, op: ['GET', TOT], headers: h(), ...extra });
    const dTotPeriod = probeDefaults(TOT, 'period');
    const before = await totals('totals: defaults', A, '', { status: 200,
        expect: (r, b) => (b.period === dTotPeriod ? null : `period ${b.period}, the document's default is ${dTotPeriod}`) });
    if (before?.body) {
        await post('totals setup: one view', A, JSON.stringify({ type: 'view', article: uniq('totals') }),
                   { status: 200, example: 'counted' });
        const until = Date.now() + 1000;
        let after;
        do {
            after = JSON.parse((await request(A.port, { target: TOT })).body.toString('utf8'));
        } while (after.views !== before.body.views + 1 && Date.now() < until);
        if (after.views !== before.body.views + 1)
            fail('totals: a view shows within 1 s', `views ${before.body.views} before one view, ${after.views} after`);
        else
            pass('totals: a view shows within 1 s');
    }
    for (const period of ['day', 'week', 'month', 'all'])
        await totals(`totals: ${period}`, A, `?period=${period}`, { status: 200,
            expect: (r, b) => (b.period === period && b.views >= 1 ? null : JSON.stringify(b)) });
    await totals('totals: bad period', A, '?period=year', { status: 400, example: 'invalid_parameter' });
    await totals('totals: period twice', A, '?period=day&period=day', { status: 400, example: 'given_twice' });

    const SER = '/v1/series/{article}';
    const series = (name, d, art, q, extra = {}) => served({
        name, d, method: 'GET', target: `/v1/series/${art}${q}`, op: ['GET', SER], headers: h(), ...extra });
    const dInterval = probeDefaults(SER, 'interval');
    const sumIs = (n) => (r, b) => {
        const s = b.points.reduce((x, p) => x + p.value, 0);
        return s === n ? null : `points add up to ${s}, expected ${n}`;
    };
    await series('series: defaults', A, enc(U), '', { status: 200, expect: (r, b) => (
        b.article === U && b.metric === dMetric && b.interval === dInterval ? sumIs(1)(r, b)
            : `expected ${dMetric} by ${dInterval}: ${JSON.stringify(b).slice(0, 300)}`) });
    await series('series: hourly views', A, enc(U), '?metric=views&interval=hour', { status: 200, expect: sumIs(1) });
    await series('series: daily comments', A, enc(U), '?metric=comments&interval=day', { status: 200, expect: sumIs(2) });
    const today = new Date().toISOString().slice(0, 10);
    await series('series: from/to dates', A, enc(U), `?interval=day&from=${today}&to=${today}`, { status: 200,
        expect: (r, b) => (b.points.length === 1 && b.points[0].t === `${today}T00:00:00Z` ? null : JSON.stringify(b.points)) });
    for (const q of ['?interval=week', '?metric=likes', '?from=yesterday'])
        await series(`series: 400 for ${q}`, A, enc(U), q, { status: 400 });
    await series('series: bad article', A, 'a%20b', '', { status: 400, example: 'invalid_article' });
    await series('series: from after to', A, enc(U), `?from=${today}&to=2020-01-01`, { status: 400, example: 'invalid_parameter' });
    await series('series: too many points', A, enc(U), '?interval=hour&from=2020-01-01&to=2020-03-01', { status: 400, example: 'invalid_parameter' });
    const monthAgo = new Date(Date.now() - 30 * 86400e3).toISOString().slice(0, 10);
    await series('series: from only spans 30 days', A, enc(U), `?from=${monthAgo}`, { status: 200,
        expect: (r, b) => (b.points.length === 30 && b.points[0].t === `${monthAgo}T00:00:00Z` ? null : `${b.points.length} points from ${b.points[0]?.t}`) });
    await series('series: past retention', A, enc(U), '?from=2020-01-01', { status: 400, example: 'invalid_parameter',
        expect: (r, b) => (/^from: daily points are kept 400 days; the earliest is \d{4}-\d\d-\d\dT00:00:00Z$/.test(b.message) ? null : `message ${b.message}`) });

    const BADGE = '/v1/badge/{article}.svg';
    const badge = (name, d, art, q, extra = {}) => served({
        name, d, method: 'GET', target: `/v1/badge/${art}.svg${q}`, op: ['GET', BADGE], headers: h(), ...extra });
    await badge('badge: views', A, enc(U), '?metric=views&label=views', { status: 200,
        expect: (r, b) => (/<svg[\s>]/.test(b) && />\s*1\s*</.test(b) && /views/.test(b) ? null : `not an SVG showing "views | 1": ${b.slice(0, 200)}`) });
    await badge('badge: label is escaped', A, enc(U), `?label=${enc('<b>&')}`, { status: 200,
        expect: (r, b) => (!b.includes('<b>') ? null : 'the label is not XML-escaped') });
    await badge('badge: bad metric', A, enc(U), '?metric=likes', { status: 400, example: 'invalid_parameter' });
    await badge('badge: label over 64 bytes', A, enc(U), `?label=${'x'.repeat(65)}`, { status: 400, example: 'invalid_parameter' });
    await served({ name: 'badge: no .svg', d: A, method: 'GET', target: `/v1/badge/${enc(U)}`, op: ['GET', BADGE],
                   headers: h(), status: 400, example: 'not_svg' });
    await badge('badge: bad article', A, 'a%20b', '', { status: 400, example: 'invalid_article' });

    const ART = '/v1/articles/{article}';
    const auth = ['Authorization', `Bearer ${A.token}`];
    const del = (name, d, art, extra = {}) => served({
        name, d, method: 'DELETE', target: `/v1/articles/${art}`, op: ['DELETE', ART], headers: h(), ...extra });
    await del('delete: without a token', A, enc(U), { status: 401, example: 'unauthorized_admin' });
    await del('delete: wrong token', A, enc(U), { status: 401, example: 'unauthorized',
                                                  headers: h(['Authorization', 'Bearer not-the-token-0000000']) });
    await del('delete: no token configured', B, enc(U), { status: 403, example: 'token_not_configured',
                                                          headers: h(['Authorization', 'Bearer not-the-token-0000000']) });
    await del('delete: bad article', A, 'a%20b', { status: 400, example: 'invalid_article', headers: h(auth) });
    await del('delete: an article never seen', A, enc(uniq('never-deleted')), { status: 204, headers: h(auth) });
    const gone = await del('delete: an article', A, enc(U), { status: 204, headers: h(auth) });
    if (gone?.res?.status === 204) {
        const s = await statsOf(A, U, (x) => x.views === 0);
        if (!(s.views === 0 && s.visitors === 0 && s.shares === 0 && s.comments === 0))
            fail('delete: stats are zeros afterwards', JSON.stringify(s));
        else
            pass('delete: stats are zeros afterwards');
    }


    const IMP = '/v1/import';
    const IMPS = '/v1/imports';
    const ndjson = ['Content-Type', 'application/x-ndjson'];
    const impBody = doc.paths[IMP].post.requestBody.content['application/x-ndjson'].examples.lines.value;
    const imp = (name, d, body, extra = {}) => served({
        name, d, method: 'POST', target: IMP, op: ['POST', IMP], body, ...extra });
    const impKey = (k) => ['Idempotency-Key', `check-${runId}-${k}`];
    await imp('import: example', A, impBody, { status: 200, example: 'imported',
                                                headers: h(auth, ndjson, impKey('example')) });
    await imp('import: the same key and body again', A, impBody, { status: 200, example: 'imported',
                                                                    headers: h(auth, ndjson, impKey('example')) });
    await imp('import: another body under the key', A, '{"article":"a"}\n', { status: 422, example: 'idempotency_key_reused',
                                                                               headers: h(auth, ndjson, impKey('example')) });
    await imp('import: a bad line', A, '{"article":"a"}\n{"article":"a","views":-1}\n', {
        status: 400, example: 'invalid_line', headers: h(auth, ndjson, impKey('bad')),
        expect: (r, b) => (b.message.startsWith('line 2: views:') ? null : b.message) });
    const tomorrow = new Date(Date.now() + 86400e3).toISOString().slice(0, 10);
    await imp('import: a date after today', A, `{"article":"a","date":"${tomorrow}"}\n`, {
        status: 400, example: 'future_date', headers: h(auth, ndjson, impKey('future')) });
    await imp('import: no lines', A, '\n', { status: 400, example: 'invalid_body', headers: h(auth, ndjson, impKey('empty')) });
    await imp('import: no Idempotency-Key', A, impBody, { status: 400, example: 'missing_idempotency_key', headers: h(auth, ndjson) });
    await imp('import: bad Idempotency-Key', A, impBody, { status: 400, example: 'invalid_idempotency_key',
                                                          headers: h(auth, ndjson, ['Idempotency-Key', 'a b']) });
    await imp('import: another media type', A, impBody, { status: 415, example: 'unsupported_media_type',
                                                         headers: h(auth, json, impKey('json')) });
    await imp('import: over 8 MiB', A, ' '.repeat(8 * 1024 * 1024 + 1), { status: 413, example: 'payload_too_large',
                                                                         headers: h(auth, ndjson, impKey('large')) });
    await imp('import: without a token', A, impBody, { status: 401, example: 'unauthorized_admin', headers: h(ndjson, impKey('anon')) });
    await imp('import: no token configured', B, impBody, { status: 403, example: 'token_not_configured',
                                                          headers: h(auth, ndjson, impKey('b')) });
    await served({ name: 'import: GET is 405', d: A, method: 'GET', target: IMP, headers: h(), op: ['POST', IMP],
                   status: 405, example: 'method_not_allowed',
                   expect: (r) => (r.headers.allow === 'POST, OPTIONS' ? null : `Allow "${r.headers.allow}"`) });
    const imps = (name, d, extra) => served({ name, d, method: 'GET', target: IMPS, op: ['GET', IMPS], ...extra });
    await imps('imports: listed', A, { status: 200, headers: h(auth),
        expect: (r, b) => (b.imports.filter((x) => x.key === `check-${runId}-example`).length === 1 &&
                           b.imports[0].key === `check-${runId}-example` && b.imports[0].lines === 2
            ? null : `the example import is not listed once, first: ${JSON.stringify(b).slice(0, 300)}`) });
    await imps('imports: without a token', A, { status: 401, example: 'unauthorized_admin', headers: h() });
    await imps('imports: no token configured', B, { status: 403, example: 'token_not_configured', headers: h(auth) });

    // ---- Operating ----
    await served({ name: 'healthz', d: A, method: 'GET', target: '/healthz', op: ['GET', '/healthz'],
                   headers: h(), status: 200, example: 'ok' });
    await served({ name: 'healthz: POST is 405', d: A, method: 'POST', target: '/healthz', headers: h(),
                   status: 405, generic: 'MethodNotAllowed', example: 'method_not_allowed',
                   expect: (r) => (r.headers.allow === 'GET, HEAD' ? null : `Allow "${r.headers.allow}"`) });
    await served({ name: 'readyz', d: B, method: 'GET', target: '/readyz', op: ['GET', '/readyz'],
                   headers: h(), status: 200, example: 'ready' });
    const met = await served({ name: 'metrics', d: A, method: 'GET', target: '/metrics', op: ['GET', '/metrics'],
                               headers: h(), status: 200 });
    if (met?.body !== undefined) {
        const exposed = new Set([...met.body.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
        const described = new Set([...doc.paths['/metrics'].get.description.matchAll(/`((?:tally|process)_[a-z0-9_]+)`/g)].map((m) => m[1]));
        const missing = [...exposed].filter((x) => !described.has(x));
        const extra = [...described].filter((x) => !exposed.has(x));
        if (missing.length || extra.length)
            fail('metrics: families', `not in the document: ${missing.join(' ') || '-'}; documented, not exposed: ${extra.join(' ') || '-'}`);
        else
            pass('metrics: families');
    }

    // ---- Files ----
    const file = async (name, d, p, extra = {}) => {
        const r = await served({ name, d, method: 'GET', target: p, op: ['GET', p], headers: h(), status: 200, ...extra });
        if (r?.res?.status === 200 && r.res.headers.etag)
            await served({ name: `${name}: If-None-Match is 304`, d, method: 'GET', target: p, op: ['GET', p],
                           headers: h(['If-None-Match', r.res.headers.etag]), status: 304 });
        await served({ name: `${name}: HEAD`, d, method: 'HEAD', target: p, op: ['GET', p], headers: h(), status: 200 });
    };
    await file('tally.js', A, '/tally.js');
    await file('tally.js without --demo', B, '/tally.js');
    for (const p of ['/demo/', '/demo/list', '/demo/demo.css', '/demo/demo.js']) {
        await file(`demo ${p}`, A, p);
        await served({ name: `demo ${p} without --demo`, d: B, method: 'GET', target: p, op: ['GET', p],
                       headers: h(), status: 404, example: 'not_found' });
    }

    // The dashboard needs nothing but the collector: no third-party requests.
    for (const p of ['/dashboard', '/dashboard.js', '/dashboard.css']) {
        await file(p.slice(1), A, p, { expect: (r, b) => {
            const ext = /\b(?:src|href|action)\s*=\s*["']?(?:https?:)?\/\//i.exec(b) ?? /\b(?:fetch|import)\s*\(\s*["'`](?:https?:)?\/\//.exec(b) ?? /url\(\s*["']?(?:https?:)?\/\//.exec(b);
            return ext ? `loads from another origin: ${ext[0]}` : null;
        } });
    }

    // ---- Every path: transport errors, 404 ----
    await served({ name: 'invalid_uri outside /v1/', d: A, method: 'GET', target: `/${'a'.repeat(4100)}`, headers: h(),
                   op: ['GET', '/healthz'], status: 400, example: 'invalid_uri' });
    await served({ name: 'invalid_uri under /v1/', d: B, method: 'GET', target: `/v1/stats/${'a'.repeat(4100)}`, headers: h(),
                   generic: 'TransportBadRequest', status: 400, example: 'invalid_uri',
                   contract: 'responses to /v1/* carry CORS headers for allowed origins' });
    await served({ name: 'too_many_headers', d: B, method: 'GET', target: '/v1/stats/a', generic: 'HeadersTooLarge',
                   status: 431, example: 'too_many_headers',
                   headers: Array.from({ length: 101 }, (_, i) => [`X-Filler-${i}`, 'x']) });
    await served({ name: 'headers_too_large', d: B, method: 'GET', target: '/v1/stats/a', generic: 'HeadersTooLarge',
                   status: 431, example: 'headers_too_large', headers: [['X-Big', 'x'.repeat(100000)]] });
    await served({ name: 'ambiguous_framing', d: B, method: 'POST', target: EV, generic: 'TransportBadRequest', status: 400,
                   example: 'ambiguous_framing', rawHead: `POST ${EV} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
                   'Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}' });
    await served({ name: 'bad_request', d: B, method: 'GET', target: '/v1/stats/a', generic: 'TransportBadRequest', status: 400,
                   example: 'bad_request', rawHead: 'GET /v1/stats/a HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n' });
    for (const [m, p, allow] of [['PUT', '/healthz', 'GET, HEAD'], ['PATCH', EV, 'POST, OPTIONS']])
        await served({ name: `${m} on a served path is 405`, d: A, method: m, target: p, headers: h(),
                       status: 405, generic: 'MethodNotAllowed', example: 'method_not_allowed',
                       expect: (r) => (r.headers.allow === allow ? null : `Allow "${r.headers.allow}"`) });
    await served({ name: 'unknown method is 501', d: B, method: 'BREW', target: '/v1/stats/a', headers: h(),
                   status: 501, generic: doc['x-unknown-method']['501'], example: 'not_implemented' });
    await served({ name: 'unknown path is 404', d: A, method: 'GET', target: '/nope', headers: h(),
                   status: 404, generic: 'NotFound', example: 'not_found' });
    await served({ name: 'unknown /v1/ path is 404', d: B, method: 'GET', target: '/v1/nope', headers: h(),
                   status: 404, generic: 'NotFound', example: 'not_found' });

    // ---- Served paths must be documented ----
    await probeRoutes(A);

    // ---- Coverage: every operation has a case ----
    for (const o of operations)
        if (!covered.has(`${o.method} ${o.path}`))
            fail('coverage', `${o.method} ${o.path} is documented but check-openapi.mjs has no case for it`);

    // ---- Behaviours behind flags ----
    await behaviour('view-window: a repeat view is not counted', async () => {
        const who = ua();
        const body = JSON.stringify({ type: 'view', article: uniq('repeat') });
        const hd = [['User-Agent', who], json];
        const r1 = await request(A.port, { method: 'POST', target: EV, headers: hd, body });
        const r2 = await request(A.port, { method: 'POST', target: EV, headers: hd, body });
        const b1 = JSON.parse(r1.body.toString('utf8'));
        const b2 = JSON.parse(r2.body.toString('utf8'));
        const ex = doc.paths[EV].post.responses['200'].content['application/json'].examples;
        if (!isDeepStrictEqual(b1, ex.counted.value))
            return { err: `first view answered ${JSON.stringify(b1)}` };
        if (isDeepStrictEqual(b2, ex.repeat.value))
            return { present: true };
        if (isDeepStrictEqual(b2, ex.counted.value))
            return { present: false };
        return { err: `second view answered ${r2.status} ${JSON.stringify(b2)}` };
    });
    await behaviour('rate-limit: burst 4×N, then 429 with Retry-After', async () => {
        // B runs with --rate-limit 1 (burst 4, one more event a second). From another loopback
        // address, so that no other case is limited.
        const from = { headers: h(json), localAddress: '127.0.0.3' };
        const four = JSON.stringify(Array.from({ length: 4 }, (_, k) => ({ type: 'view', article: uniq(`rate-${k}`) })));
        const r1 = await run({ name: 'rate-limit: a burst of 4', d: B, method: 'POST', target: EV, op: POST_EV,
                               body: four, status: 200, ...from,
                               expect: (r, b) => (b.accepted === 4 ? null : JSON.stringify(b)) });
        if (r1?.res?.status !== 200)
            return { err: `a burst of 4 events answered ${r1?.res?.status}` };
        const r2 = await run({ name: 'rate-limit: event 5 of the same second', d: B, method: 'POST', target: EV,
                               op: POST_EV, body: reqExample(EV, 'application/json', 'view'), ...from,
                               example: 'rate_limited' });
        if (r2?.res?.status === 200)
            return { present: false };
        if (r2?.res?.status !== 429)
            return { err: `event 5 of the same second answered ${r2?.res?.status}` };
        const five = JSON.stringify(Array.from({ length: 5 }, (_, k) => ({ type: 'view', article: uniq(`burst-${k}`) })));
        const r3 = await run({ name: 'rate-limit: a batch of 5, over the burst of 4', d: B, method: 'POST',
                               target: EV, op: POST_EV, body: five, status: 429,
                               headers: h(json), localAddress: '127.0.0.4', example: 'batch_over_burst' });
        if (r3?.res?.status !== 429)
            return { err: `a batch of 5 events answered ${r3?.res?.status}` };
        await served({ name: 'pixel: rate-limited', d: B, method: 'GET', target: pix(pixq), op: GET_PIX,
                       headers: h(), localAddress: '127.0.0.3', status: 200,
                       expect: (r, b) => outcome('rate_limited')(r, b) ??
                           (/^\d+$/.test(r.headers['retry-after'] ?? '') ? null : 'no Retry-After beside Tally-Outcome: rate_limited') });
        return { present: true };
    });

    // ---- Redis stopped past --hold + --redis-timeout: a write sent and not confirmed is 504 ----
    // (A share: it needs no visitor salt, so its write is sent into the stopped Redis.)
    process.kill(redis.child.pid, 'SIGSTOP');
    try {
        await post('events: Redis stalled is 504', A, reqExample(EV, 'application/json', 'share'),
                   { status: 504, example: 'outcome_unknown',
                     contract: '504 + Retry-After {"error":"outcome_unknown"}: the write was sent but Redis did not confirm it in time' });
    } finally {
        process.kill(redis.child.pid, 'SIGCONT');
    }

    // ---- Redis down: 503 + Retry-After, /readyz 503, the pixel still a GIF ----
    await stop(redis);
    {
        const until = Date.now() + 5000;
        let r;
        do {
            r = await request(A.port, { target: '/readyz' });
            if (r.status === 503)
                break;
            await new Promise((ok) => setTimeout(ok, 50));
        } while (Date.now() < until);
    }
    await served({ name: 'readyz: Redis down', d: A, method: 'GET', target: '/readyz', op: ['GET', '/readyz'],
                  headers: h(), status: 503, example: 'redis' });
    await served({ name: 'healthz: Redis down', d: A, method: 'GET', target: '/healthz', op: ['GET', '/healthz'],
                  headers: h(), status: 200, example: 'ok' });
    await post('events: Redis down is 503', A, reqExample(EV, 'application/json', 'view'),
               { status: 503, example: 'unavailable', contract: '503 + Retry-After: Redis is unreachable and the collector can hold no more' });
    await stat1('stats: Redis down is 503', A, enc(ARTICLE), { status: 503, example: 'unavailable' });
    await statN('stats: many, Redis down is 503', A, `?article=${enc(ARTICLE)}`, { status: 503, example: 'unavailable' });
    await pixel('pixel: Redis down', A, pixq, 'unavailable');
}

// Run PROBE, which tells whether a behaviour of the contract is there: it must be.
async function behaviour(name, probe) {
    let r;
    try {
        r = await probe();
    } catch (e) {
        r = { err: e.message };
    }
    if (r.err)
        fail(name, r.err);
    else if (r.present)
        pass(name);
    else
        fail(name, 'missing');
}

// Probe every path of the route table (src/http_server.c) and of the asset table
// (src/assets.c): each one tallyd serves must be in the document.
async function probeRoutes(d) {
    let routes;
    let assets;
    try {
        routes = fs.readFileSync(path.join(srcDir, 'http_server.c'), 'utf8');
        assets = fs.readFileSync(path.join(srcDir, 'assets.c'), 'utf8');
    } catch (e) {
        fail('routes', `cannot read the route table: ${e.message}`);
        return;
    }
    const table = routes.split(/http_routes\[\]\s*=\s*\{/)[1]?.split(/\n\};/)[0] ?? '';
    const probes = [];
    for (const m of table.matchAll(/\{\s*"([^"]+)",\s*(true|false),\s*([A-Z_| ]+),/g)) {
        const method = /GET/.test(m[3]) ? 'GET' : /POST/.test(m[3]) ? 'POST' : /DELETE/.test(m[3]) ? 'DELETE' : 'GET';
        probes.push([method, m[2] === 'true' ? `${m[1]}x` : m[1], m[2] === 'true' ? m[1] : null]);
    }
    for (const m of assets.matchAll(/\{\s*"(\/[^"]*)",\s*"[a-z]+\/[^"]*",/g))
        probes.push(['GET', m[1], null]);
    if (probes.length < 5) {
        fail('routes', `found only ${probes.length} routes in src/http_server.c and src/assets.c`);
        return;
    }
    // And a few paths people try.
    for (const p of ['/', '/v1', '/v1/', '/v1/events/', '/health', '/status', '/version', '/favicon.ico',
                     '/robots.txt', '/v1/metrics', '/v1/health', '/api', '/demo', '/dashboard/'])
        probes.push(['GET', p, null]);
    for (const [method, p, prefix] of probes) {
        const r = await request(d.port, { method, target: p, body: method === 'POST' ? '{}' : null,
                                          headers: [['Content-Type', 'application/json']] });
        let notFound = false;
        try {
            notFound = r.status === 404 && JSON.parse(r.body.toString('utf8')).error === 'not_found';
        } catch { /* not JSON */ }
        // A prefix route serves every path under it: a documented path must start there.
        const t = prefix ? Object.keys(doc.paths).find((x) => x.startsWith(prefix)) : documentedPath(p);
        if (!notFound && !t)
            fail('routes', `${method} ${p} answers ${r.status} but no path of the document matches it`);
        else
            pass(`route ${method} ${p}`);
    }
}

main()
    .catch((e) => {
        fail('check', e.stack ?? String(e));
    })
    .finally(() => {
        const secs = ((Date.now() - T0) / 1000).toFixed(1);
        if (failures.length) {
            console.log(`\ncheck-openapi: ${failures.length} mismatch(es), ${passed} checks passed, ${secs} s`);
            process.exitCode = 1;
        } else {
            console.log(`check-openapi: ${passed} checks passed, ${secs} s`);
        }
        killAllNow();
        process.exit(); // with process.exitCode; nothing left to wait for
    });
