#!/usr/bin/env node
'use strict';
/**
 * `npm run stress`: every delivery scenario, N times each, on a machine kept busy on purpose.
 *
 * One CPU-bound process per core runs beside the scenarios (as a user's busy server would). Each
 * scenario gets its own private PM2 (PM2_HOME in a temp dir, killed at the end) with the module
 * installed from a fresh tarball; each run starts a new log4js cluster app (4 instances, 300
 * lines/s each), does the scenario's action mid-stream, waits for every sender, and judges the
 * app's file by what each sender says it sent. One row per run:
 *   sent, missing, duplicated, foreign, daemon restarts, module restarts.
 *
 * Usage: node scripts/stress.js [--runs 10] [--scenarios restart-writer,kill9,...] [--shutdown graceful|immediate|none]
 *                               [--burn <processes>] [--lines 2400] [--rate 300]
 * Exits 1 when a run breaks its target (0 missing and 0 duplicated; kill -9 and apps without a
 * SIGINT handler: 0 duplicated and missing within the documented bound; the daemon never restarts).
 */
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Pm2Sandbox, packTarball, waitFor } = require('../test/support/pm2-sandbox');
const { logApp, logFile } = require('../test/support/apps');
const { appProcs, linesIn, restartWhileBehind, settleAndJudge, writerProc } = require('../test/support/scenario');

function args() {
  const a = process.argv.slice(2);
  const get = (name, def) => {
    const i = a.indexOf(`--${name}`);
    return i >= 0 && a[i + 1] !== undefined ? a[i + 1] : def;
  };
  return {
    runs: Number(get('runs', process.env.RUNS || 10)),
    scenarios: get('scenarios', ''),
    shutdown: get('shutdown', 'graceful'),
    burn: Number(get('burn', os.cpus().length)),
    lines: Number(get('lines', 2400)),
    rate: Number(get('rate', 300)),
  };
}

/**
 * Each scenario: its action, given the sandbox and the app; `abrupt` when a process dies without
 * a chance to finish (its own unread pipe dies with it: missing is bounded, not zero).
 */
const SCENARIOS = {
  'restart-writer': {
    what: 'pm2 restart <writer id>',
    async act(sb, name) {
      const w = await writerProc(sb, name);
      await sb.pm2(['restart', String(w.pm_id)]);
      return { victims: [w.pid] };
    },
  },
  'restart-behind': {
    what: 'pm2 restart <writer id> of a writer held back 1 s, woken while PM2 cannot run',
    async act(sb, name) {
      const w = await writerProc(sb, name);
      await restartWhileBehind(sb, [w]);
      return { victims: [w.pid] };
    },
  },
  'stop-start': {
    what: 'pm2 stop <writer id>, 1 s, pm2 start <writer id>',
    async act(sb, name) {
      const w = await writerProc(sb, name);
      await sb.pm2(['stop', String(w.pm_id)]);
      await new Promise((r) => setTimeout(r, 1000));
      await sb.pm2(['start', String(w.pm_id)]);
      return { victims: [w.pid] };
    },
  },
  'restart-app': {
    what: 'pm2 restart <app>',
    async act(sb, name) {
      const before = (await appProcs(sb, name)).map((p) => p.pid);
      await sb.pm2(['restart', name]);
      return { victims: before };
    },
  },
  kill9: {
    what: 'kill -9 <writer pid>',
    abrupt: true,
    async act(sb, name) {
      const w = await writerProc(sb, name);
      process.kill(w.pid, 'SIGKILL');
      return { victims: [w.pid] };
    },
  },
  reload: {
    what: 'pm2 reload <app>',
    async act(sb, name) {
      const before = (await appProcs(sb, name)).map((p) => p.pid);
      await sb.pm2(['reload', name]);
      return { victims: before };
    },
  },
  scale: {
    what: 'pm2 scale <app> 2, then 4',
    async act(sb, name) {
      const before = (await appProcs(sb, name)).map((p) => p.pid);
      await sb.pm2(['scale', name, '2']);
      await waitFor(async () => (await appProcs(sb, name)).length === 2, { timeoutMs: 30000, what: 'scale down' });
      await sb.pm2(['scale', name, '4']);
      return { victims: before.slice(0, 2) };
    },
  },
  'module-restart': {
    what: 'pm2 set (module restart)',
    async act(sb, name, run) {
      await sb.pm2(['set', 'pm2-scoped-intercom:buffer_mb', String(24 + run)]);
      return { victims: [] };
    },
  },
  'restart-all': {
    what: 'pm2 restart all',
    async act(sb, name) {
      const before = (await appProcs(sb, name)).map((p) => p.pid);
      await sb.pm2(['restart', 'all']);
      return { victims: before };
    },
  },
};

function startBurners(n) {
  const code = 'const end = Date.now() + 6 * 3600e3; for (;;) { if (Date.now() > end) process.exit(0); }';
  return Array.from({ length: n }, () => spawn(process.execPath, ['-e', code], { stdio: 'ignore' }));
}

function daemonPid(sb) {
  try {
    return fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim();
  } catch {
    return '';
  }
}

function pad(v, n) {
  return String(v).padStart(n);
}

async function runScenario(key, opt, tarball, out) {
  const sc = SCENARIOS[key];
  const sb = Pm2Sandbox.create(`pm2si-stress-${key}-`);
  try {
    await sb.install(tarball);
    const daemon = daemonPid(sb);
    for (let run = 1; run <= opt.runs; run++) {
      const name = `${key}-${run}`;
      const restartsBefore = (await sb.moduleProc()).pm2_env.restart_time;
      const row = { scenario: key, run, shutdown: opt.shutdown, sent: 0, missing: 0, duplicated: 0, foreign: 0, daemonRestarts: 0, moduleRestarts: 0, bound: 0, error: '' };
      try {
        await sb.start([logApp(sb.work, { name, instances: 4, lines: opt.lines, rate: opt.rate, env: { SHUTDOWN: opt.shutdown } })]);
        await waitFor(() => linesIn(logFile(sb.work, name)) >= opt.lines, { timeoutMs: 90000, what: `${name} to be mid-stream` });
        const writer = await writerProc(sb, name);
        await sc.act(sb, name, run);
        // A writer that dies without a handler (or of kill -9) takes its own unflushed lines and
        // what sat unread in its pipe with it: its own lines are not judged, the others' are.
        const abrupt = sc.abrupt || opt.shutdown === 'none';
        const r = await settleAndJudge(sb, name, { excludePids: abrupt ? [writer.pid] : [], timeoutMs: 180000 });
        Object.assign(row, { sent: r.sent, missing: r.missing, duplicated: r.duplicated, foreign: r.foreign });
        row.bound = abrupt ? r.missing : 0;
        row.ranges = r.missingRanges.slice(0, 6).map((m) => `${m.pid}#${m.first}-${m.last}`).join(' ');
        // What the module said of this app, to tell why (printed for runs that lost or repeated lines).
        if (r.missing || r.duplicated) row.moduleSaid = sb.moduleLog().split('\n').filter((l) => l.includes(name) || /sent again|stopped before|refused|SIGINT|bridge| relaying |restored|could not|internal error/.test(l)).slice(-40);
      } catch (err) {
        row.error = String(err.message).split('\n')[0].slice(0, 300);
      }
      const now = daemonPid(sb);
      row.daemonRestarts = now === daemon ? 0 : 1;
      try {
        const mod = await sb.moduleProc();
        row.moduleRestarts = mod ? mod.pm2_env.restart_time - restartsBefore - (key === 'module-restart' ? 1 : 0) : -1;
      } catch {
        row.moduleRestarts = -1;
      }
      out(row);
      await sb.pm2(['delete', name]).catch(() => {});
      if (row.daemonRestarts) break; // the rest of this scenario would run on a new daemon
    }
  } finally {
    if (process.env.KEEP_SANDBOX) console.log(`kept ${sb.dir}`);
    await sb.destroy();
  }
}

function verdict(row, scenario) {
  if (row.error) return 'FAIL';
  if (row.duplicated || row.foreign || row.daemonRestarts || row.moduleRestarts) return 'FAIL';
  const abrupt = SCENARIOS[scenario].abrupt || row.shutdown === 'none';
  if (!abrupt && row.missing) return 'FAIL';
  return 'ok';
}

async function main() {
  const opt = args();
  const keys = opt.scenarios ? opt.scenarios.split(',') : Object.keys(SCENARIOS);
  for (const k of keys) if (!SCENARIOS[k]) throw new Error(`unknown scenario ${k}; known: ${Object.keys(SCENARIOS).join(', ')}`);
  const tarball = process.env.PM2SI_TARBALL || packTarball();
  console.log(`stress: ${opt.runs} runs of ${keys.join(', ')}; apps SHUTDOWN=${opt.shutdown}; 4 instances x ${opt.lines} lines at ${opt.rate}/s; ${opt.burn} CPU burners; node ${process.version}`);
  const burners = startBurners(opt.burn);
  const cleanup = () => burners.forEach((b) => b.kill('SIGKILL'));
  process.on('exit', cleanup);
  process.on('SIGINT', () => process.exit(130));
  const head = `${'scenario'.padEnd(15)} ${'run'.padStart(3)} ${pad('sent', 6)} ${pad('missing', 7)} ${pad('dup', 4)} ${pad('foreign', 7)} ${pad('daemon', 6)} ${pad('module', 6)}  verdict`;
  console.log(head);
  const rows = [];
  let failed = 0;
  for (const key of keys) {
    await runScenario(key, opt, tarball, (row) => {
      const v = verdict(row, key);
      if (v !== 'ok') failed++;
      rows.push({ ...row, verdict: v });
      console.log(
        `${key.padEnd(15)} ${pad(row.run, 3)} ${pad(row.sent, 6)} ${pad(row.missing, 7)} ${pad(row.duplicated, 4)} ${pad(row.foreign, 7)} ${pad(row.daemonRestarts, 6)} ${pad(row.moduleRestarts, 6)}  ${v}` +
          `${row.error ? ` ${row.error}` : ''}${row.ranges ? `  missing: ${row.ranges}` : ''}`,
      );
      if (row.moduleSaid) console.log(row.moduleSaid.map((l) => `    module: ${l}`).join('\n'));
    });
  }
  console.log('\nsummary (per scenario: runs, runs with 0 missing and 0 duplicated, max missing, daemon restarts)');
  for (const key of keys) {
    const rs = rows.filter((r) => r.scenario === key);
    const clean = rs.filter((r) => !r.missing && !r.duplicated && !r.error).length;
    console.log(`${key.padEnd(15)} ${rs.length} runs, ${clean} clean, max missing ${Math.max(0, ...rs.map((r) => r.missing))}, daemon restarts ${rs.reduce((s, r) => s + r.daemonRestarts, 0)}`);
  }
  if (!process.env.PM2SI_TARBALL) fs.rmSync(path.dirname(tarball), { recursive: true, force: true });
  cleanup();
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
