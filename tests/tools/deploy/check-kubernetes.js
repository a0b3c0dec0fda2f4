#!/usr/bin/env node
// check-kubernetes.js [--flags TALLY_A,TALLY_B,...] [--env-out FILE] FILE.yaml...
//   -- offline checks of tally's Kubernetes manifests.
//
// Every YAML document must be a Secret, ConfigMap, Deployment, Service or PodDisruptionBudget
// that passes kubernetes-models' JSON-schema validation (the API's OpenAPI schemas, no
// cluster needed); then tally's own rules: probes on /readyz and /healthz, a non-root
// read-only container, a grace period above tallyd's 35 s drain, a PodDisruptionBudget.
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

const MODELS = {
  'apps/v1 Deployment': Deployment,
  'v1 ConfigMap': ConfigMap,
  'v1 Secret': Secret,
  'v1 Service': Service,
  'policy/v1 PodDisruptionBudget': PodDisruptionBudget,
};
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
    if (doc.kind === 'PodDisruptionBudget' && doc.spec.minAvailable !== 1)
      fail(where, 'spec.minAvailable should be 1');
    if (doc.kind === 'ConfigMap' || doc.kind === 'Secret') {
      const data = doc.kind === 'Secret' ? doc.stringData || {} : doc.data || {};
      for (const [k, v] of Object.entries(data)) {
        if (flags && !flags.has(k)) fail(where, `${k} is not a tallyd variable`);
        env[k] = String(v);
      }
    }
  });
}
for (const kind of ['Deployment', 'Service', 'PodDisruptionBudget'])
  if (!present[kind]) fail('manifests', `no ${kind}`);

if (env.TALLY_LISTEN !== '0.0.0.0:8080') fail('manifests', 'TALLY_LISTEN must be 0.0.0.0:8080');
if (envOut)
  fs.writeFileSync(envOut, Object.entries(env)
    .map(([k, v]) => `${k}='${v.replace(/'/g, "'\\''")}'\n`).join(''));

for (const p of problems) console.error(p);
if (problems.length) process.exit(1);
console.log(`  kubernetes: ${Object.entries(seen).map(([k, n]) => `${n} ${k}`).join(', ')} valid`);
