#!/usr/bin/env node
'use strict';
/**
 * What a given PM2 version shows the module: bus packet shapes and event order, pm2_env fields,
 * instance_var after restart/reload, namespaces, module config delivery. Runs a private daemon of
 * that version (its own PM2_HOME, killed at the end) and prints a JSON report.
 *
 *   node test/compat/probe.js <pm2 version> [--tarball /abs/module.tgz] [--out file.json]
 *
 * The version must be installed first: npm install --prefix .compat/pm2-<v> pm2@<v> --no-save
 * (test/compat/versions.js does that). Used to fill docs/compat.md; not part of any test run.
 */
const fs = require('fs');
const path = require('path');
const { Pm2Sandbox, waitFor, MODULE } = require('../support/pm2-sandbox');
const { ensurePm2 } = require('./versions');

const args = process.argv.slice(2);
const version = args[0];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
if (!version) {
  console.error('usage: node test/compat/probe.js <pm2 version> [--tarball file.tgz] [--out file.json]');
  process.exit(2);
}

const APP = path.join(__dirname, 'probe-app.js');

function summarizeEvent(p) {
  const e = p.process || {};
  return {
    event: p.event,
    at: p.at,
    pm_uptime: e.pm_uptime,
    pm_id: e.pm_id,
    name: e.name,
    namespace: e.namespace,
    status: e.status,
    instance_var: e.instance_var,
    INSTANCE_ID: e.INSTANCE_ID,
    NODE_APP_INSTANCE: e.NODE_APP_INSTANCE,
  };
}

function summarizeMsg(p) {
  return {
    raw: typeof p.raw === 'string' ? p.raw : p.raw && p.raw.topic,
    keys: Object.keys(p).sort(),
    processKeys: p.process ? Object.keys(p.process).sort() : null,
    process: p.process,
  };
}

async function main() {
  const { root, bin } = ensurePm2(version);
  const sb = Pm2Sandbox.create(`pm2si-probe-${version}-`, { pm2Bin: bin });
  const report = { version, root, phases: {}, jlist: {}, module: null };
  let api;
  try {
    await sb.pm2(['ping']);
    // The version's own API, against this sandbox's daemon.
    process.env.PM2_HOME = sb.home;
    process.env.PM2_PROGRAMMATIC = 'true';
    api = require(root);
    await new Promise((res, rej) => api.connect((err) => (err ? rej(err) : res())));
    const bus = await new Promise((res, rej) => api.launchBus((err, b) => (err ? rej(err) : res(b))));
    let phase = 'start';
    const record = (kind) => (p) => {
      const ph = (report.phases[phase] ??= { events: [], msgs: [], eventKeys: new Set(), eventProcessKeys: new Set() });
      if (kind === 'event') {
        ph.events.push(summarizeEvent(p));
        Object.keys(p).forEach((k) => ph.eventKeys.add(k));
        Object.keys(p.process || {}).forEach((k) => ph.eventProcessKeys.add(k));
      } else ph.msgs.push(summarizeMsg(p));
    };
    bus.on('process:event', record('event'));
    bus.on('process:msg', record('msg'));
    bus.on('probe:hello', (p) => record('msg')({ ...p, raw: 'typed probe:hello' }));
    const count = (ev) => (report.phases[phase]?.events ?? []).filter((e) => e.event === ev).length;

    const app = (o) => ({
      script: APP,
      cwd: path.dirname(APP),
      autorestart: true,
      kill_timeout: 2000,
      ...o,
      env: { PROBE_INSTANCE_VAR: o.instance_var || 'NODE_APP_INSTANCE', ...(o.env || {}) },
    });
    // A cluster app with its own instance_var in namespace ns1, the same name in ns2, a fork app.
    await sb.start([
      app({ name: 'probe', namespace: 'ns1', exec_mode: 'cluster', instances: 2, instance_var: 'INSTANCE_ID' }),
      app({ name: 'probe', namespace: 'ns2', exec_mode: 'cluster', instances: 2 }),
      app({ name: 'plain', exec_mode: 'fork', instances: 1 }),
    ]);
    await waitFor(() => count('online') >= 5 && (report.phases.start?.msgs.length ?? 0) >= 10, { timeoutMs: 60000, what: 'start events and hellos' });
    const list1 = await sb.jlist();
    report.jlist.afterStart = list1.map((p) => ({
      pm_id: p.pm_id,
      name: p.name,
      namespace: p.pm2_env.namespace,
      instance_var: p.pm2_env.instance_var,
      INSTANCE_ID: p.pm2_env.INSTANCE_ID,
      NODE_APP_INSTANCE: p.pm2_env.NODE_APP_INSTANCE,
      exec_mode: p.pm2_env.exec_mode,
      status: p.pm2_env.status,
      wait_ready: p.pm2_env.wait_ready,
      pmx_module: p.pm2_env.pmx_module,
      pm_uptime: typeof p.pm2_env.pm_uptime,
    }));
    report.jlist.envKeys = [...new Set(list1.flatMap((p) => Object.keys(p.pm2_env)))].sort();
    const writer = list1.find((p) => p.name === 'probe' && p.pm2_env.namespace === 'ns1' && p.pm2_env.INSTANCE_ID === 0);
    const id0 = writer ? writer.pm_id : list1[0].pm_id;

    phase = 'restart';
    await sb.pm2(['restart', String(id0)]);
    await waitFor(() => count('restart') >= 1 && count('online') >= 1, { timeoutMs: 60000, what: 'restart events' });
    await new Promise((r) => setTimeout(r, 800)); // let the hello of the new process arrive (recorded, not awaited)
    const list2 = await sb.jlist();
    const after = list2.find((p) => p.pm_id === id0);
    report.jlist.afterRestart = { pm_id: id0, instance_var: after.pm2_env.instance_var, INSTANCE_ID: after.pm2_env.INSTANCE_ID, NODE_APP_INSTANCE: after.pm2_env.NODE_APP_INSTANCE };

    phase = 'reload';
    await sb.pm2(['reload', 'ns1']);
    await waitFor(() => count('online') >= 2, { timeoutMs: 60000, what: 'reload events' });
    await waitFor(async () => (await sb.jlist()).every((p) => typeof p.pm_id === 'number' && p.pm2_env.status === 'online'), { timeoutMs: 60000, what: 'reload to settle' });
    const list3 = await sb.jlist();
    report.jlist.afterReload = list3
      .filter((p) => p.pm2_env.namespace === 'ns1')
      .map((p) => ({ pm_id: p.pm_id, instance_var: p.pm2_env.instance_var, INSTANCE_ID: p.pm2_env.INSTANCE_ID, NODE_APP_INSTANCE: p.pm2_env.NODE_APP_INSTANCE }));

    phase = 'stop';
    await sb.pm2(['stop', 'plain']);
    await waitFor(() => count('stop') >= 1, { timeoutMs: 60000, what: 'stop event' });

    phase = 'delete';
    await sb.pm2(['delete', 'plain']);
    await waitFor(async () => !(await sb.jlist()).some((p) => p.name === 'plain'), { timeoutMs: 30000, what: 'delete' });
    await new Promise((r) => setTimeout(r, 500));

    const tarball = opt('--tarball');
    if (tarball) {
      phase = 'module-install';
      await sb.install(tarball);
      const modEnv = (await sb.moduleProc()).pm2_env;
      const line = (text) => (text.match(/relaying \(pm2 [^)]*\)[^\n]*/g) || []);
      report.module = {
        relayingLines: line(sb.moduleLog()),
        envJson: modEnv[MODULE],
        envBufferMax: modEnv.buffer_mb,
        envBufferMaxType: typeof modEnv.buffer_mb,
        exec_mode: modEnv.exec_mode,
        pmx_module: modEnv.pmx_module,
      };
      phase = 'module-set';
      await sb.pm2(['set', `${MODULE}:buffer_mb`, '33']);
      await waitFor(() => line(sb.moduleLog()).some((l) => l.includes('buffer_mb=33')), { timeoutMs: 60000, what: 'module restarted with buffer_mb=33' });
      const mod2 = (await sb.moduleProc()).pm2_env;
      report.module.afterSet = { envJson: mod2[MODULE], envBufferMax: mod2.buffer_mb, restart_time: mod2.restart_time, relayingLines: line(sb.moduleLog()) };
      report.module.log = sb.moduleLog().split('\n').filter((l) => /warn|error|ignoring|invalid/i.test(l)).slice(0, 20);
    }
  } finally {
    if (api) await new Promise((r) => api.disconnect(r));
    await sb.destroy();
  }
  for (const ph of Object.values(report.phases)) {
    ph.eventKeys = [...ph.eventKeys].sort();
    ph.eventProcessKeys = [...ph.eventProcessKeys].sort();
  }
  const text = JSON.stringify(report, null, 2);
  const out = opt('--out');
  if (out) fs.writeFileSync(out, text);
  else process.stdout.write(`${text}\n`);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
