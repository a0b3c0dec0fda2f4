#!/usr/bin/env node
// check-kubernetes.js [--flags TALLY_A,TALLY_B,...] [--env-out FILE] FILE.yaml...
//   -- offline checks of tally's Kubernetes manifests.
//
// Every YAML document must be a Secret, ConfigMap, Deployment, Service, PodDisruptionBudget or
// Job that passes kubernetes-models' JSON-schema validation (the API's OpenAPI schemas, no
// cluster needed); then tally's own rules: probes on /readyz and /healthz, a non-root
// read-only container, a grace period above tallyd's 35 s drain, a PodDisruptionBudget, a Job
// that loads the Redis functions with the admin's Secret, which the Deployment never reads,
// and X-Forwarded-For trusted from no range wider than an ingress controller's addresses.
// --flags: the TALLY_* variables tallyd knows; every ConfigMap/Secret key must be one.
// --env-out: write the ConfigMap and Secret data as shell assignments (KEY='value') to FILE,
// so that check-deploy.sh can start tallyd with exactly these values.
// Prints one line per problem and exits 1 if there is any.
'use strict';

const fs = require('fs');
const yaml = require('js-yaml');
const { Deployment } = require('kubernetes-models/apps/v1');
const { ConfigMap, Secret, Service } = require('kubernetes-models/v1');
const { PodDisruptionBudget } = require('kubernetes-models/policy/v1');
const { Job } = require('kubernetes-models/batch/v1');

const MODELS = {
  'apps/v1 Deployment': Deployment,
  'v1 ConfigMap': ConfigMap,
  'v1 Secret': Secret,
  'v1 Service': Service,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
  'batch/v1 Job': Job,
};
const ADMIN_SECRET = 'tally-redis-admin'; // the Redis admin's URL: the load-functions Job's only
const DRAIN_SECONDS = 35; // WORKER_DRAIN_MAX_MS in src/worker.c

const problems = [];
const seen = {};
const present = {};
const env = {};
let flags = null;
let envOut = null;
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--flags') flags = new Set(args[++i].split(',').filter(Boolean));
  else if (args[i] === '--env-out') envOut = args[++i];
  else files.push(args[i]);
}

function fail(where, message) {
  problems.push(`${where}: ${message}`);
}

const secretRefs = (pod) => (pod.containers || []).concat(pod.initContainers || [])
  .flatMap((c) => (c.envFrom || []).map((e) => (e.secretRef || {}).name)
    .concat((c.env || []).map((e) => (((e.valueFrom || {}).secretKeyRef) || {}).name)))
  .filter(Boolean);

function checkJob(where, j) {
  const pod = ((j.spec || {}).template || {}).spec || {};
  const c = (pod.containers || [])[0] || {};
  if (!(c.args || []).includes('--load-functions')) fail(where, 'the Job must run tallyd --load-functions');
  if (!secretRefs(pod).includes(ADMIN_SECRET)) fail(where, `the Job must read the Redis admin's Secret ${ADMIN_SECRET}`);
  if (!['OnFailure', 'Never'].includes(pod.restartPolicy)) fail(where, 'restartPolicy must be OnFailure or Never');
  if (((pod.securityContext || {}).runAsNonRoot) !== true) fail(where, 'pod securityContext.runAsNonRoot must be true');
  if (((c.securityContext || {}).readOnlyRootFilesystem) !== true) fail(where, 'securityContext.readOnlyRootFilesystem must be true');
}

function checkDeployment(where, d) {
  const spec = d.spec || {};
  const pod = (spec.template || {}).spec || {};
  const psc = pod.securityContext || {};
  if (!(spec.replicas >= 2)) fail(where, 'spec.replicas should be at least 2');
  if (psc.runAsNonRoot !== true) fail(where, 'pod securityContext.runAsNonRoot must be true');
  if (!Number.isInteger(psc.runAsUser) || psc.runAsUser === 0)
    fail(where, 'pod securityContext.runAsUser must be a numeric non-root uid');
  if (((psc.seccompProfile || {}).type) !== 'RuntimeDefault')
    fail(where, 'pod securityContext.seccompProfile.type must be RuntimeDefault');
  if (!(pod.terminationGracePeriodSeconds > DRAIN_SECONDS))
    fail(where, `terminationGracePeriodSeconds must exceed tallyd's ${DRAIN_SECONDS} s drain`);
  const containers = pod.containers || [];
  if (secretRefs(pod).includes(ADMIN_SECRET))
    fail(where, `the Deployment must not read ${ADMIN_SECRET}: tallyd runs as its own Redis user`);
  const tallyd = containers.find((c) => c.name === 'tallyd');
  if (!tallyd) {
    fail(where, 'no container named tallyd');
    return;
  }
  const w = `${where} container tallyd`;
  const ready = tallyd.readinessProbe || {};
  const live = tallyd.livenessProbe || {};
  if ((ready.httpGet || {}).path !== '/readyz') fail(w, 'readinessProbe must be httpGet /readyz');
  if ((live.httpGet || {}).path !== '/healthz') fail(w, 'livenessProbe must be httpGet /healthz');
  if (!((live.failureThreshold || 3) > (ready.failureThreshold || 3)))
    fail(w, 'livenessProbe.failureThreshold must be higher than the readinessProbe one');
  const sc = tallyd.securityContext || {};
  if (sc.readOnlyRootFilesystem !== true) fail(w, 'securityContext.readOnlyRootFilesystem must be true');
  if (sc.allowPrivilegeEscalation !== false) fail(w, 'securityContext.allowPrivilegeEscalation must be false');
  if (!((sc.capabilities || {}).drop || []).includes('ALL')) fail(w, 'securityContext.capabilities.drop must include ALL');
  const res = tallyd.resources || {};
  for (const k of ['requests', 'limits'])
    if (!res[k] || !res[k].cpu || !res[k].memory) fail(w, `resources.${k} needs cpu and memory`);
  if (!(((tallyd.lifecycle || {}).preStop) || null)) fail(w, 'lifecycle.preStop (a sleep) is missing');
  if ((tallyd.image || '').endsWith(':latest') || !/:[^/]+$/.test(tallyd.image || ''))
    fail(w, 'image must carry a tag other than latest');
}

for (const file of files) {
  let docs;
  try {
    docs = yaml.loadAll(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(file, `YAML: ${e.message.split('\n')[0]}`);
    continue;
  }
  docs.forEach((doc, i) => {
    if (doc === null || doc === undefined) return; // an empty document between ---
    const where = `${file} document ${i + 1} (${doc.kind || '?'} ${(doc.metadata || {}).name || '?'})`;
    present[doc.kind] = true;
    const Model = MODELS[`${doc.apiVersion} ${doc.kind}`];
    if (!Model) {
      fail(where, `unexpected apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
      return;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
      return;
    }
    seen[doc.kind] = (seen[doc.kind] || 0) + 1;
    if (doc.kind === 'Deployment') checkDeployment(where, doc);
    if (doc.kind === 'Job') checkJob(where, doc);
    if (doc.kind === 'PodDisruptionBudget' && doc.spec.minAvailable !== 1)
      fail(where, 'spec.minAvailable should be 1');
    if (doc.kind === 'ConfigMap' || doc.kind === 'Secret') {
      const data = doc.kind === 'Secret' ? doc.stringData || {} : doc.data || {};
      for (const [k, v] of Object.entries(data)) {
        if (flags && !flags.has(k)) fail(where, `${k} is not a tallyd variable`);
        if ((doc.metadata || {}).name !== ADMIN_SECRET) env[k] = String(v);
      }
    }
  });
}
for (const kind of ['Deployment', 'Service', 'PodDisruptionBudget', 'Job'])
  if (!present[kind]) fail('manifests', `no ${kind}`);

if (env.TALLY_LISTEN !== '0.0.0.0:8080') fail('manifests', 'TALLY_LISTEN must be 0.0.0.0:8080');
// Only the ingress controller's addresses are trusted with X-Forwarded-For: a range as wide as
// a pod CIDR (a /16 or /24) would let every pod forge client addresses.
for (const r of (env.TALLY_TRUST_PROXY || '').split(',').filter(Boolean)) {
  const m = /^([0-9.]+|[0-9a-fA-F:]+)(?:\/(\d+))?$/.exec(r.trim());
  const v6 = m && m[1].includes(':');
  const bits = m ? Number(m[2] ?? (v6 ? 128 : 32)) : -1;
  if (!m || bits < (v6 ? 120 : 26))
    fail('manifests', `TALLY_TRUST_PROXY: ${r} is wider than an ingress controller's addresses (at most a /26, or /120 for IPv6)`);
}
if (!env.TALLY_TRUST_PROXY) fail('manifests', 'TALLY_TRUST_PROXY must list the ingress controller\'s addresses');
if (envOut)
  fs.writeFileSync(envOut, Object.entries(env)
    .map(([k, v]) => `${k}='${v.replace(/'/g, "'\\''")}'\n`).join(''));

for (const p of problems) console.error(p);
if (problems.length) process.exit(1);
console.log(`  kubernetes: ${Object.entries(seen).map(([k, n]) => `${n} ${k}`).join(', ')} valid`);
