#!/usr/bin/env node
// check-compose.js ENV-OUT < rendered.yaml -- tally's rules for deploy/docker-compose.yml,
// applied to `docker-compose config` output (interpolated and normalised), then the tallyd
// service's environment written to ENV-OUT as shell assignments (KEY='value'), so that
// check-deploy.sh can start tallyd with exactly these values.
// Prints one line per problem and exits 1 if there is any.
'use strict';

const fs = require('fs');
const yaml = require('js-yaml');

const DRAIN_SECONDS = 35; // WORKER_DRAIN_MAX_MS in src/worker.c
const problems = [];
const fail = (m) => problems.push(`compose: ${m}`);

const doc = yaml.load(fs.readFileSync(0, 'utf8')) || {};
const services = doc.services || {};
const tallyd = services.tallyd || {};
const redis = services.redis || {};
if (!services.tallyd) fail('no service tallyd');
if (!services.redis) fail('no service redis');

// tallyd
const env = Array.isArray(tallyd.environment)
  ? Object.fromEntries(tallyd.environment.map((e) => [e.split('=')[0], e.slice(e.indexOf('=') + 1)]))
  : tallyd.environment || {};
if (tallyd.read_only !== true) fail('tallyd: read_only: true is missing');
if (!(tallyd.cap_drop || []).includes('ALL')) fail('tallyd: cap_drop: [ALL] is missing');
if (!(tallyd.security_opt || []).some((o) => /^no-new-privileges(:true)?$/.test(o)))
  fail('tallyd: security_opt no-new-privileges:true is missing');
if (((tallyd.build || {}).dockerfile) !== 'deploy/Dockerfile') fail('tallyd: build.dockerfile must be deploy/Dockerfile');
const ports = (tallyd.ports || []).map((p) =>
  typeof p === 'string' ? p.replace(/\/tcp$/, '') : `${p.host_ip || ''}:${p.published}:${p.target}`);
if (ports.length !== 1 || ports[0] !== '127.0.0.1:8080:8080')
  fail(`tallyd: ports must be only 127.0.0.1:8080:8080 (got ${JSON.stringify(ports)})`);
const dep = (tallyd.depends_on || {}).redis;
if (!dep || dep.condition !== 'service_healthy') fail('tallyd: depends_on redis condition service_healthy is missing');
if (env.TALLY_REDIS !== 'redis://redis:6379/0') fail('tallyd: TALLY_REDIS must be redis://redis:6379/0');
// The Redis functions are loaded by a one-shot service before tallyd starts.
const loader = Object.entries(services).find(([, sv]) => {
  const c = Array.isArray(sv.command) ? sv.command : String(sv.command || '').split(/\s+/);
  return c.includes('--load-functions');
});
if (!loader) fail('no one-shot service runs tallyd --load-functions');
else if (((tallyd.depends_on || {})[loader[0]] || {}).condition !== 'service_completed_successfully')
  fail(`tallyd: depends_on ${loader[0]} condition service_completed_successfully is missing`);
else if (loader[1].image !== tallyd.image) fail(`${loader[0]}: must run tallyd's image (${tallyd.image})`);
const grace = /^(\d+)s$/.exec(String(tallyd.stop_grace_period || ''));
if (!grace || Number(grace[1]) <= DRAIN_SECONDS)
  fail(`tallyd: stop_grace_period must exceed tallyd's ${DRAIN_SECONDS} s drain`);

// redis
if (!/^redis:7(\.\d+)*$/.test(redis.image || '')) fail(`redis: image must be redis:7.x (got ${redis.image})`);
const cmd = Array.isArray(redis.command) ? redis.command : String(redis.command || '').split(/\s+/);
const arg = (name) => { const i = cmd.indexOf(name); return i < 0 ? undefined : String(cmd[i + 1]); };
if (arg('--appendonly') !== 'yes') fail('redis: command needs --appendonly yes');
if (arg('--appendfsync') !== 'always') fail('redis: command needs --appendfsync always');
// noeviction without a limit only takes effect when the machine runs out of memory: the kernel
// kills Redis first.
if (arg('--maxmemory-policy') !== 'noeviction') fail('redis: command needs --maxmemory-policy noeviction');
if (!/^[1-9][0-9]*(b|kb|mb|gb)?$/i.test(arg('--maxmemory') || ''))
  fail(`redis: command needs --maxmemory with a size above 0 (got ${arg('--maxmemory')})`);
const hc = ((redis.healthcheck || {}).test || []).join(' ');
if (!/redis-cli.*ping/.test(hc)) fail('redis: healthcheck must run redis-cli ping');
const vol = (redis.volumes || []).map((v) => (typeof v === 'string' ? v.split(':') : [v.source, v.target]));
if (!vol.some(([src, dst]) => (doc.volumes || {})[src] !== undefined && dst === '/data'))
  fail('redis: /data must be a named volume');

for (const p of problems) console.error(p);
if (problems.length) process.exit(1);
fs.writeFileSync(process.argv[2], Object.entries(env)
  .map(([k, v]) => `${k}='${String(v === null || v === undefined ? '' : v).replace(/'/g, "'\\''")}'\n`).join(''));
