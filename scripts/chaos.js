#!/usr/bin/env node
'use strict';
/**
 * `npm run chaos -- --seed N --minutes M [--burn 2]`: random operations on a real PM2 while several
 * log4js cluster apps log numbered lines at a steady rate, then every line of every process judged
 * by what its sender says it sent (docs/chaos.md).
 *
 * A private PM2 (PM2_HOME in a temp dir, `pm2 kill` at the end, also on failure or Ctrl-C) with the
 * module installed from a tarball (`npm pack`, or PM2SI_TARBALL). Apps (test/support/chaos-app.js,
 * RATE lines/s per process): alpha x2, beta x3, gamma x4, the same name `shop` in two namespaces
 * (blue x2; green x2 with its own instance_var SHOP_ID, which is what gives it an instance 0).
 *
 * A seeded PRNG (mulberry32) plans every operation, its moment and its parameters before the run:
 * the same seed and minutes give the same sequence (the moments follow the machine). Operations
 * overlap (each starts at its moment, whatever is still running), except `pm2 update`, which runs
 * alone, and the module operations, one at a time.
 *
 * Exit code 0 when clean; 1 with the report (per app and sender: sent, found, missing ranges,
 * duplicated, misplaced) and the seed; 2 when the harness itself failed.
 */
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Pm2Sandbox, packTarball, waitFor, ROOT, MODULE } = require('../test/support/pm2-sandbox');
const { judge, readReports } = require('../test/support/judge');
const { waitQuiet } = require('../test/support/apps');
const { instanceOf } = require('../test/support/scenario');

const CHAOS_APP = path.join(ROOT, 'test', 'support', 'chaos-app.js');
/** README "Stop window": what a writer killed outright takes with it, about 150 log4js lines. */
const KILL_BOUND_LINES = 150;
/** A line may have left its sender this long after a kill and still count as before it (timers, marks). */
const KILL_SLACK_MS = 50;
/** The apps' kill_timeout (see startApps). */
const KILL_TIMEOUT_MS = 10000;

function args() {
  const a = process.argv.slice(2);
  const get = (name, def) => {
    const i = a.indexOf(`--${name}`);
    return i >= 0 && a[i + 1] !== undefined ? a[i + 1] : def;
  };
  return {
    seed: Number(get('seed', Math.floor(Math.random() * 2 ** 31))) >>> 0,
    minutes: Number(get('minutes', 3)),
    burn: Number(get('burn', 0)),
    rate: Number(get('rate', 100)),
    mean: Number(get('mean-gap', 4000)),
  };
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const APPS = [
  { tag: 'alpha', name: 'alpha', instances: 2, scalable: true },
  { tag: 'beta', name: 'beta', instances: 3, scalable: true },
  { tag: 'gamma', name: 'gamma', instances: 4, scalable: true },
  // PM2 numbers instances per name across namespaces, among processes that have the same
  // instance_var key: green's own key gives it an instance 0 beside blue's. `pm2 scale` and
  // `pm2 reload <name>` act on the name in every namespace, so the pair is reloaded by namespace
  // and not scaled.
  { tag: 'shop-green', name: 'shop', namespace: 'green', instances: 2, instanceVar: 'SHOP_ID' },
  { tag: 'shop-blue', name: 'shop', namespace: 'blue', instances: 2, cli: true },
];

/** Operation kinds and their weights. */
const KINDS = [
  ['restart-writer', 3],
  ['restart-sender', 2],
  ['stop-start', 3],
  ['reload', 2],
  ['scale', 2],
  ['kill9-writer', 2],
  ['kill9-sender', 1],
  ['module-restart', 1],
  ['set', 1],
  ['update', 0.6],
  ['reinstall', 0.6],
  ['burst', 2],
];
const SETTINGS = { report_interval: [2, 3, 5, 7, 10], buffer_mb: [8, 12, 16, 32], ready_delay: [1000, 1500, 2000] };

/** The whole run's operations, drawn from the seed alone. */
function plan(seed, minutes, mean) {
  const rand = mulberry32(seed);
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const total = KINDS.reduce((s, [, w]) => s + w, 0);
  const end = minutes * 60000 - 5000;
  const caps = { update: Math.max(1, Math.floor(minutes / 5)), reinstall: Math.max(1, Math.floor(minutes / 4)) };
  const used = {};
  const ops = [];
  let at = 2000;
  for (;;) {
    at += Math.round(-Math.log(1 - rand()) * mean);
    if (at > end) break;
    let x = rand() * total;
    let kind = KINDS[KINDS.length - 1][0];
    for (const [k, w] of KINDS) {
      if ((x -= w) < 0) {
        kind = k;
        break;
      }
    }
    // Always draw the same parameters, so a cap does not shift the rest of the sequence.
    const app = pick(APPS);
    const r = rand();
    const r2 = rand();
    const r3 = rand();
    const key = pick(Object.keys(SETTINGS));
    const value = pick(SETTINGS[key]);
    if (caps[kind] !== undefined && (used[kind] = (used[kind] || 0) + 1) > caps[kind]) kind = 'burst';
    const op = { n: ops.length + 1, at, kind };
    if (!['module-restart', 'set', 'update', 'reinstall'].includes(kind)) op.app = app.tag;
    if (kind === 'restart-sender' || kind === 'kill9-sender') op.pick = r;
    if (kind === 'stop-start') Object.assign(op, { role: r < 0.5 ? 'writer' : 'sender', pick: r2, pauseMs: 300 + Math.round(r3 * 2700) });
    if (kind === 'scale') {
      const a = APPS.find((x) => x.tag === op.app);
      if (!a.scalable) op.app = pick(APPS.filter((x) => x.scalable).map((x) => x.tag));
      const n = APPS.find((x) => x.tag === op.app).instances;
      Object.assign(op, { down: 1 + Math.floor(r * (n - 1)), pauseMs: 500 + Math.round(r2 * 3500) });
    }
    if (kind === 'set') Object.assign(op, { key, value });
    if (kind === 'burst') op.lines = 200 + Math.round(r * 1800);
    ops.push(op);
  }
  return ops;
}

function describe(op) {
  const extra = Object.entries(op)
    .filter(([k]) => !['n', 'at', 'kind'].includes(k))
    .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v}`)
    .join(' ');
  return `#${op.n} ${op.kind}${extra ? ` ${extra}` : ''}`;
}

function startBurners(n) {
  const code = 'const end = Date.now() + 6 * 3600e3; for (;;) { if (Date.now() > end) process.exit(0); }';
  return Array.from({ length: n }, () => spawn(process.execPath, ['-e', code], { stdio: 'ignore' }));
}

function readPid(file) {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

function alive(pid) {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function rssKb(pid) {
  try {
    const m = /VmRSS:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Chaos {
  constructor(opt, sb) {
    this.opt = opt;
    this.sb = sb;
    this.t0 = Date.now();
    this.logDir = path.join(sb.work, 'logs');
    this.reportDir = path.join(sb.work, 'reports');
    this.stopFile = path.join(sb.work, 'stop');
    fs.mkdirSync(this.logDir, { recursive: true });
    fs.mkdirSync(this.reportDir, { recursive: true });
    this.timeline = fs.openSync(path.join(sb.dir, 'chaos-timeline.log'), 'a');
    this.kills = []; // { app, pid, role, at }
    this.daemonEvents = []; // problems with PM2's daemon
    this.rss = []; // { t, pid, kb, bytes }
    this.moduleStarts = 0;
    this.moduleOps = 0;
    this.opFailures = [];
    this.losses = [];
    this.updating = false;
    this.inflight = new Set();
    this.moduleLock = Promise.resolve();
  }

  off(t = Date.now()) {
    return `+${((t - this.t0) / 1000).toFixed(3)}s`;
  }

  note(line, { print = true } = {}) {
    const text = `${this.off()} ${line}`;
    fs.writeSync(this.timeline, `${text}\n`);
    if (print) console.log(text);
  }

  logFile(app) {
    return path.join(this.logDir, `${app.tag}.log`);
  }

  burstFile(app) {
    return path.join(this.sb.work, `burst-${app.tag}`);
  }

  appEnv(app) {
    return {
      APP_TAG: app.tag,
      LOG_FILE: this.logFile(app),
      REPORT_DIR: this.reportDir,
      RATE: String(this.opt.rate),
      STOP_FILE: this.stopFile,
      BURST_FILE: this.burstFile(app),
      ...(app.instanceVar ? { LOG4JS_PM2_VAR: app.instanceVar } : {}),
    };
  }

  async startApps() {
    const eco = APPS.filter((a) => !a.cli).map((a) => ({
      name: a.name,
      script: CHAOS_APP,
      cwd: ROOT,
      exec_mode: 'cluster',
      instances: a.instances,
      autorestart: true,
      // PM2's default (1.6 s) ends a graceful stop with SIGKILL on a loaded machine: a kill -9 the
      // run did not choose. The apps stop in well under 10 s.
      kill_timeout: KILL_TIMEOUT_MS,
      env: this.appEnv(a),
      ...(a.namespace ? { namespace: a.namespace } : {}),
      ...(a.instanceVar ? { instance_var: a.instanceVar } : {}),
    }));
    await this.sb.start(eco, 'chaos');
    // An ecosystem entry named like a running app would take that app over (PM2 matches by name):
    // the second namespace is started from the command line, as users do.
    for (const a of APPS.filter((x) => x.cli)) {
      await this.sb.pm2(['start', CHAOS_APP, '--name', a.name, '--namespace', a.namespace, '-i', String(a.instances), '--kill-timeout', String(KILL_TIMEOUT_MS), '-f'], { env: this.appEnv(a) });
    }
    await this.waitAppsUp(60000);
  }

  async procs(app, list) {
    list = list || (await this.sb.jlist());
    return list.filter((p) => p.name === app.name && (p.pm2_env.namespace || 'default') === (app.namespace || 'default'));
  }

  /** Every app with its instances online, one of them its writer (instance 0). */
  async waitAppsUp(timeoutMs) {
    let why = '';
    await waitFor(
      async () => {
        const list = await this.sb.jlist();
        const bad = [];
        for (const a of APPS) {
          const ps = await this.procs(a, list);
          const online = ps.filter((p) => p.pm2_env.status === 'online');
          if (online.length !== a.instances || !online.some((p) => instanceOf(p, a.instanceVar) === 0)) {
            bad.push(`${a.tag}: ${ps.map((p) => `${p.pm_id}/${p.pm2_env.status}/i${instanceOf(p, a.instanceVar)}`).join(',')}`);
          }
        }
        why = bad.join('; ');
        return bad.length === 0;
      },
      { timeoutMs, every: 500, what: () => `every app online with a writer (${why})` },
    );
  }

  appOf(tag) {
    return APPS.find((a) => a.tag === tag);
  }

  async writerOf(app) {
    return (await this.procs(app)).find((p) => p.pm2_env.status === 'online' && instanceOf(p, app.instanceVar) === 0);
  }

  async senderOf(app, r) {
    const s = (await this.procs(app)).filter((p) => p.pm2_env.status === 'online' && instanceOf(p, app.instanceVar) !== 0);
    return s.length ? s[Math.floor(r * s.length)] : undefined;
  }

  /** Run one operation; its result line goes to the timeline. */
  async runOp(op) {
    const sb = this.sb;
    const app = op.app ? this.appOf(op.app) : undefined;
    const started = Date.now();
    this.note(`start ${describe(op)} (planned ${(op.at / 1000).toFixed(3)}s)`);
    let what = '';
    try {
      switch (op.kind) {
        case 'restart-writer': {
          const w = await this.writerOf(app);
          if (!w) throw new Error('no online writer');
          what = `pm2 restart ${w.pm_id} (pid ${w.pid})`;
          await sb.pm2(['restart', String(w.pm_id)]);
          break;
        }
        case 'restart-sender': {
          const s = await this.senderOf(app, op.pick);
          if (!s) throw new Error('no online sender');
          what = `pm2 restart ${s.pm_id} (pid ${s.pid})`;
          await sb.pm2(['restart', String(s.pm_id)]);
          break;
        }
        case 'stop-start': {
          const p = op.role === 'writer' ? await this.writerOf(app) : await this.senderOf(app, op.pick);
          if (!p) throw new Error(`no online ${op.role}`);
          what = `pm2 stop ${p.pm_id} (pid ${p.pid}), ${op.pauseMs} ms, pm2 start ${p.pm_id}`;
          await sb.pm2(['stop', String(p.pm_id)]);
          await sleep(op.pauseMs);
          await sb.pm2(['start', String(p.pm_id)]);
          break;
        }
        case 'reload': {
          const target = app.namespace || app.name;
          what = `pm2 reload ${target}`;
          await sb.pm2(['reload', target]);
          break;
        }
        case 'scale': {
          what = `pm2 scale ${app.name} ${op.down}, ${op.pauseMs} ms, pm2 scale ${app.name} ${app.instances}`;
          await sb.pm2(['scale', app.name, String(op.down)]);
          await sleep(op.pauseMs);
          await sb.pm2(['scale', app.name, String(app.instances)]);
          break;
        }
        case 'kill9-writer':
        case 'kill9-sender': {
          const role = op.kind === 'kill9-writer' ? 'writer' : 'sender';
          const p = role === 'writer' ? await this.writerOf(app) : await this.senderOf(app, op.pick);
          if (!p) throw new Error(`no online ${role}`);
          what = `kill -9 ${p.pid} (pm_id ${p.pm_id})`;
          // Where the app's file ends at the kill: what the writer wrote lies before, what the
          // next writers write after (the judgement places a missing run against it).
          const size = () => (fs.existsSync(this.logFile(app)) ? fs.statSync(this.logFile(app)).size : 0);
          const sizeBefore = size();
          const at = Date.now();
          process.kill(p.pid, 'SIGKILL');
          this.kills.push({ app: app.tag, pid: p.pid, pmId: p.pm_id, role, at, sizeBefore, sizeAfter: size() });
          break;
        }
        case 'burst': {
          const f = this.burstFile(app);
          let n = 0;
          try {
            n = Number(fs.readFileSync(f, 'utf8').split(' ')[0]) || 0;
          } catch {
            /* first burst */
          }
          what = `every ${app.tag} process logs ${op.lines} lines at once`;
          fs.writeFileSync(`${f}.tmp`, `${n + 1} ${op.lines}`);
          fs.renameSync(`${f}.tmp`, f);
          break;
        }
        case 'module-restart':
          what = `pm2 restart ${MODULE}`;
          await this.withModuleLock(() => sb.pm2(['restart', MODULE]));
          break;
        case 'set':
          what = `pm2 set ${MODULE}:${op.key} ${op.value}`;
          await this.withModuleLock(() => sb.pm2(['set', `${MODULE}:${op.key}`, String(op.value)]));
          break;
        case 'reinstall':
          what = `pm2 install ${path.basename(this.tarball)} (over itself)`;
          await this.withModuleLock(() => sb.pm2(['install', this.tarball], { timeoutMs: 180000 }));
          break;
        case 'update': {
          what = 'pm2 update';
          this.updating = true;
          try {
            await this.withModuleLock(() => sb.pm2(['update'], { timeoutMs: 180000 }));
            const pid = readPid(path.join(sb.home, 'pm2.pid'));
            if (!alive(pid)) throw new Error(`the daemon did not come back (pm2.pid ${pid})`);
            this.note(`daemon after pm2 update: pid ${pid} (was ${this.daemonPid})`);
            this.daemonPid = pid;
            await sb.waitModuleOnline(60000);
          } finally {
            this.updating = false;
          }
          break;
        }
        default:
          throw new Error(`unknown operation ${op.kind}`);
      }
      this.note(`done  #${op.n} ${op.kind}: ${what} (${Date.now() - started} ms)`);
    } catch (err) {
      const msg = String(err.message).split('\n').filter(Boolean).slice(0, 3).join(' | ').slice(0, 300);
      this.opFailures.push({ op, msg });
      this.note(`FAILED #${op.n} ${op.kind}: ${what} (${Date.now() - started} ms): ${msg}`);
    }
  }

  withModuleLock(fn) {
    this.moduleOps++;
    const run = this.moduleLock.then(fn, fn);
    this.moduleLock = run.catch(() => {});
    return run;
  }

  /** Daemon pid, the module's RSS and its log lines, sampled beside the run. */
  startWatch() {
    this.daemonPid = readPid(path.join(this.sb.home, 'pm2.pid'));
    const logs = [`${MODULE}-out.log`, `${MODULE}-error.log`].map((f) => ({ file: path.join(this.sb.home, 'logs', f), at: 0, rest: '', tag: 'module' }));
    logs.push({ file: path.join(this.sb.home, 'pm2.log'), at: 0, rest: '', tag: 'pm2' });
    let tick = 0;
    this.watch = setInterval(() => {
      tick++;
      if (!this.updating) {
        const pid = readPid(path.join(this.sb.home, 'pm2.pid'));
        const known = this.daemonEvents.some((e) => e.pid === pid);
        if ((pid !== this.daemonPid || !alive(pid)) && !known) {
          this.daemonEvents.push({ pid, at: Date.now(), what: `PM2 daemon pid ${this.daemonPid} -> ${pid}${alive(pid) ? '' : ' (not running)'} outside pm2 update` });
          this.note(`DAEMON: pid ${this.daemonPid} -> ${pid}${alive(pid) ? '' : ' (not running)'}`);
        }
      }
      for (const l of logs) {
        let size = 0;
        try {
          size = fs.statSync(l.file).size;
        } catch {
          continue;
        }
        if (size < l.at) l.at = 0;
        if (size === l.at) continue;
        const fd = fs.openSync(l.file, 'r');
        const buf = Buffer.alloc(size - l.at);
        fs.readSync(fd, buf, 0, buf.length, l.at);
        fs.closeSync(fd);
        l.at = size;
        const lines = (l.rest + buf.toString('utf8')).split('\n');
        l.rest = lines.pop();
        for (const line of lines) {
          if (l.tag === 'module' && / relaying \(pm2 /.test(line)) this.moduleStarts++;
          this.note(`${l.tag}: ${line}`, { print: false });
        }
      }
      if (tick % 4 === 0) {
        const mod = this.modulePid();
        if (mod) {
          const bytes = APPS.reduce((s, a) => s + (fs.existsSync(this.logFile(a)) ? fs.statSync(this.logFile(a)).size : 0), 0);
          this.rss.push({ t: Date.now(), pid: Number(mod), kb: rssKb(mod), bytes });
        }
      }
    }, 500);
  }

  /** The running module's pid, from PM2's pid files (no CLI call: this runs every 2 s). */
  modulePid() {
    const dir = path.join(this.sb.home, 'pids');
    let best = { pid: 0, mtime: 0 };
    try {
      for (const f of fs.readdirSync(dir)) {
        if (!f.startsWith(`${MODULE}-`)) continue;
        const pid = readPid(path.join(dir, f));
        const mtime = fs.statSync(path.join(dir, f)).mtimeMs;
        if (alive(pid) && mtime > best.mtime) best = { pid, mtime };
      }
    } catch {
      /* no pids yet */
    }
    return best.pid;
  }

  async run(ops) {
    this.t0 = Date.now();
    this.note(`chaos: ${ops.length} operations planned over ${this.opt.minutes} min; +0 is ${new Date(this.t0).toISOString()}`);
    let shift = 0;
    for (const op of ops) {
      const wait = this.t0 + op.at + shift - Date.now();
      if (wait > 0) await sleep(wait);
      if (op.kind === 'update') {
        // PM2's CLI started during `pm2 update` would launch a daemon of its own: alone.
        const before = Date.now();
        await Promise.allSettled([...this.inflight]);
        await this.runOp(op);
        shift += Date.now() - before;
        continue;
      }
      const p = this.runOp(op).finally(() => this.inflight.delete(p));
      this.inflight.add(p);
    }
    const left = this.t0 + this.opt.minutes * 60000 + shift - Date.now();
    if (left > 0) await sleep(left);
    await Promise.allSettled([...this.inflight]);
    await this.moduleLock;
  }

  /** Every app back to its instances, every stopped process started. */
  async restore() {
    this.note('restore: every app back to its instances');
    const list = await this.sb.jlist();
    for (const a of APPS) {
      const ps = await this.procs(a, list);
      for (const p of ps.filter((x) => x.pm2_env.status !== 'online')) {
        await this.sb.pm2(['restart', String(p.pm_id)]).catch((err) => this.note(`restore: pm2 restart ${p.pm_id}: ${err.message.split('\n')[0]}`));
      }
      if (a.scalable && ps.length !== a.instances) await this.sb.pm2(['scale', a.name, String(a.instances)]);
    }
    await this.waitAppsUp(90000);
  }

  /** Tell the apps to stop logging; wait for every sender and for the module to hold nothing. */
  async settle() {
    fs.writeFileSync(this.stopFile, '1');
    this.note('stop file written: the apps stop logging');
    let waiting = [];
    await waitFor(
      async () => {
        const list = await this.sb.jlist();
        const online = list.filter((p) => p.name !== MODULE && p.pm2_env.status === 'online').map((p) => p.pid);
        const reports = readReports(this.reportDir);
        const done = new Set(reports.filter((r) => r.done).map((r) => r.pid));
        waiting = [...online.filter((pid) => !done.has(pid)).map((pid) => `online pid ${pid} not done`), ...reports.filter((r) => !r.done && alive(r.pid)).map((r) => `${r.tag} pid ${r.pid} not done`)];
        return waiting.length === 0;
      },
      { timeoutMs: 180000, every: 500, what: () => `every sender to finish (${waiting.slice(0, 6).join('; ')})` },
    );
    // On a loaded machine the module may still be working through a backlog of tens of thousands
    // of packets: wait while it makes progress; a minute without progress is a stall.
    let held = '';
    let forwarded = -1;
    let progressAt = Date.now();
    await waitFor(
      async () => {
        const s = await this.sb.trigger('status');
        const apps = s.apps || [];
        const busy = apps.filter((a) => a.held > 0 || a.in_flight > 0);
        held = busy.map((a) => `${a.name}@${a.namespace}: held ${a.held}, in flight ${a.in_flight}`).join('; ');
        const f = apps.reduce((n, a) => n + (a.forwarded || 0), 0);
        if (f !== forwarded) {
          forwarded = f;
          progressAt = Date.now();
        }
        if (busy.length === 0) return true;
        if (Date.now() - progressAt <= 60000) return false;
        this.holdProblem = `no progress for 60 s (${held})`;
        return true;
      },
      { timeoutMs: 900000, every: 2000, what: () => `the module to hold nothing (${held})` },
    ).catch((err) => {
      this.holdProblem = err.message;
    });
    this.note(`module holds nothing${this.holdProblem ? ` -- NOT: ${this.holdProblem}` : ''}`);
    await waitQuiet(APPS.map((a) => this.logFile(a)), 3000, 120000);
    this.note('settled');
  }

  /** When line `seq` of a sender had surely not left it yet (from its marks): a lower bound. */
  marksOf(pid, tag) {
    const f = path.join(this.reportDir, `${tag}-${pid}.marks`);
    if (!fs.existsSync(f)) return [];
    return fs
      .readFileSync(f, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ').map(Number));
  }

  judgeAll() {
    const problems = [];
    const rows = [];
    const details = [];
    const killedWriters = new Set(this.kills.filter((k) => k.role === 'writer').map((k) => k.pid));
    // Lines of one app in another's file.
    const tags = new Set(APPS.map((a) => a.tag));
    for (const a of APPS) {
      const r = judge({ apps: [{ tag: a.tag, file: this.logFile(a) }], reportDir: this.reportDir, excludePids: [...killedWriters] })[a.tag];
      const misplaced = {};
      const text = fs.existsSync(this.logFile(a)) ? fs.readFileSync(this.logFile(a), 'utf8') : '';
      for (const line of text.split('\n')) {
        const t = line.split(' ')[0];
        if (line && t !== a.tag) misplaced[tags.has(t) ? t : 'unreadable'] = (misplaced[tags.has(t) ? t : 'unreadable'] || 0) + 1;
      }
      // A run of a sender's lines lost in a killed writer's pipe sits, in the file, where the file
      // ended at the kill: the line before it lies before that point, the line after it beyond.
      // And its last line may have left its sender before the kill (the sender's marks). Any
      // other run is a loss.
      const kills = this.kills.filter((k) => k.app === a.tag && k.role === 'writer').sort((x, y) => x.at - y.at);
      const file = this.filePositions(a);
      const perKill = new Map();
      let excused = 0;
      const lost = [];
      for (const m of r.missingRanges) {
        const marks = this.marksOf(m.pid, a.tag);
        let notBefore = 0; // the last moment line m.last had surely not left yet
        for (const [left, t] of marks) if (left <= m.last) notBefore = t;
        const byMark = marks.find(([left]) => left > m.last); // line m.last had left by then
        const before = m.first > 0 ? file.pos.get(`${m.pid} ${m.first - 1}`) : -1;
        const after = file.pos.get(`${m.pid} ${m.last + 1}`) ?? Infinity;
        const kill = kills.find((k) => notBefore <= k.at + KILL_SLACK_MS && before !== undefined && before < k.sizeAfter && after >= k.sizeBefore);
        const desc = `pid ${m.pid} (instance ${m.instance}) #${m.first}-${m.last} (${m.last - m.first + 1} lines; the last left between ${this.off(notBefore)} and ${byMark ? this.off(byMark[1]) : 'its end'}; in the file between bytes ${before ?? '?'} and ${after === Infinity ? 'its end' : after}, written ${before >= 0 ? file.writtenAt(before) : '?'} and ${after === Infinity ? 'its end' : file.writtenAt(after)})`;
        if (kill) {
          const e = perKill.get(kill) || { lines: 0, runs: new Map(), ranges: [] };
          e.lines += m.last - m.first + 1;
          e.runs.set(m.pid, (e.runs.get(m.pid) || 0) + 1);
          e.ranges.push(desc);
          perKill.set(kill, e);
          excused += m.last - m.first + 1;
        } else lost.push({ ...m, desc, notBefore, leftBy: byMark ? byMark[1] : undefined });
      }
      for (const [k, e] of perKill) {
        const runs = Math.max(...e.runs.values());
        const line = `${a.tag}: kill -9 of writer pid ${k.pid} at ${this.off(k.at)} (file at ${k.sizeBefore}..${k.sizeAfter} bytes): ${e.lines} lines of ${e.runs.size} senders missing (${e.ranges.join(', ')})`;
        details.push(line);
        if (e.lines > KILL_BOUND_LINES) problems.push(`${line}: more than the documented ${KILL_BOUND_LINES}`);
        if (runs > 1) problems.push(`${line}: more than one run of lines per sender`);
      }
      const lostLines = lost.reduce((s, m) => s + m.last - m.first + 1, 0);
      for (const m of lost) {
        problems.push(`${a.tag}: missing ${m.desc}, not in a kill -9's window`);
        this.losses.push({ app: a, ...m });
      }
      if (r.duplicated) problems.push(`${a.tag}: ${r.duplicated} lines written twice`);
      if (r.foreign) problems.push(`${a.tag}: ${r.foreign} lines not its own in its file (${JSON.stringify(misplaced)})`);
      if (r.outOfOrder) problems.push(`${a.tag}: ${r.outOfOrder} lines out of order: ${this.outOfOrder(a, file).join('; ')}`);
      rows.push({ tag: a.tag, senders: r.senders, sent: r.sent, found: r.written, lost: lostLines, excused, dup: r.duplicated, misplaced: r.foreign, order: r.outOfOrder, dups: r.duplicated ? this.duplicatesOf(a) : [] });
    }
    return { rows, problems, details };
  }

  /**
   * Where (byte offset) each line of an app is first in its file; and `writtenAt(byte)`: about when
   * the file reached that byte (from the last line a writer logged itself before it, and its marks).
   */
  filePositions(a) {
    const pos = new Map();
    const writers = new Set(readReports(this.reportDir).filter((r) => r.tag === a.tag && String(r.instance) === '0').map((r) => String(r.pid)));
    const own = []; // [byte, pid, seq] of lines writers logged themselves
    const text = fs.existsSync(this.logFile(a)) ? fs.readFileSync(this.logFile(a), 'latin1') : '';
    let at = 0;
    for (const line of text.split('\n')) {
      const [tag, pid, seq] = line.split(' ');
      if (tag === a.tag && !pos.has(`${pid} ${seq}`)) {
        pos.set(`${pid} ${seq}`, at);
        if (writers.has(pid)) own.push([at, pid, Number(seq)]);
      }
      at += line.length + 1;
    }
    const writtenAt = (byte) => {
      let lo = 0;
      let hi = own.length - 1;
      let best = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (own[mid][0] <= byte) {
          best = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (best < 0) return '?';
      const [, pid, seq] = own[best];
      const mark = this.marksOf(pid, a.tag).find(([left]) => left > seq);
      return mark ? `~${this.off(mark[1])} (after writer ${pid}'s own #${seq})` : `after writer ${pid}'s own #${seq}`;
    };
    return { pos, writtenAt };
  }

  /** Lines written after a later line of their sender: when each left it, where it was written. */
  outOfOrder(a, { pos, writtenAt }) {
    const out = [];
    const last = new Map();
    const seen = new Set();
    const text = fs.existsSync(this.logFile(a)) ? fs.readFileSync(this.logFile(a), 'latin1') : '';
    for (const line of text.split('\n')) {
      const [tag, pid, seq] = line.split(' ');
      if (tag !== a.tag || seen.has(`${pid} ${seq}`)) continue;
      seen.add(`${pid} ${seq}`);
      const n = Number(seq);
      const prev = last.get(pid) ?? -1;
      if (n >= prev) {
        last.set(pid, n);
        continue;
      }
      let notBefore = 0;
      let leftBy;
      for (const [left, t] of this.marksOf(pid, a.tag)) {
        if (left <= n) notBefore = t;
        else if (leftBy === undefined) leftBy = t;
      }
      out.push(`pid ${pid} #${n} (left ${this.off(notBefore)}..${leftBy ? this.off(leftBy) : '?'}) written ${writtenAt(pos.get(`${pid} ${n}`))} at byte ${pos.get(`${pid} ${n}`)}, after #${prev}; #${n - 1} at byte ${pos.get(`${pid} ${n - 1}`)}, #${n + 1} at byte ${pos.get(`${pid} ${n + 1}`)}`);
      this.losses.push({ app: a, pid, first: n, last: n, notBefore, leftBy, what: 'out of order' });
    }
    return out;
  }

  /** The timeline (operations, module and daemon log lines) around a moment. */
  around(t, spanMs = 3000, max = 40) {
    const file = path.join(this.sb.dir, 'chaos-timeline.log');
    const out = [];
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const m = /^\+(\d+\.\d+)s /.exec(line);
      if (/^\S+ pm2: .*(failed to kill|process tree killed|PM2 error: Process with ID)/.test(line)) continue;
      if (m && Math.abs(this.t0 + Number(m[1]) * 1000 - t) <= spanMs) out.push(line);
    }
    return out.length > max ? [...out.slice(0, max / 2), `... ${out.length - max} more ...`, ...out.slice(-max / 2)] : out;
  }

  duplicatesOf(a) {
    const seen = new Map();
    const out = [];
    for (const line of fs.readFileSync(this.logFile(a), 'utf8').split('\n')) {
      if (!line) continue;
      const n = (seen.get(line) || 0) + 1;
      seen.set(line, n);
      if (n === 2) out.push(line);
    }
    return out.slice(0, 20);
  }

  /** The module's RSS per incarnation: must not grow with the work done. */
  judgeRss() {
    const problems = [];
    const lines = [];
    const byPid = new Map();
    for (const s of this.rss) {
      if (!byPid.has(s.pid)) byPid.set(s.pid, []);
      byPid.get(s.pid).push(s);
    }
    for (const [pid, ss] of byPid) {
      if (ss.length < 2) continue;
      const mb = (kb) => (kb / 1024).toFixed(0);
      const q = Math.max(1, Math.floor(ss.length / 4));
      const avg = (xs) => xs.reduce((s, x) => s + x.kb, 0) / xs.length;
      const early = avg(ss.slice(q, 2 * q));
      const late = avg(ss.slice(-q));
      const max = Math.max(...ss.map((s) => s.kb));
      const work = ss[ss.length - 1].bytes - ss[0].bytes;
      const secs = (ss[ss.length - 1].t - ss[0].t) / 1000;
      lines.push(`module pid ${pid}: ${secs.toFixed(0)} s, ${(work / 1e6).toFixed(1)} MB of lines written meanwhile, RSS 2nd quarter ${mb(early)} MB, last quarter ${mb(late)} MB, max ${mb(max)} MB`);
      if (max > 250 * 1024) problems.push(`module pid ${pid}: RSS reached ${mb(max)} MB`);
      if (secs >= 60 && late > early * 1.3 + 20 * 1024) problems.push(`module pid ${pid}: RSS grew from ${mb(early)} to ${mb(late)} MB over ${secs.toFixed(0)} s`);
    }
    return { problems, lines };
  }
}

async function main() {
  const opt = args();
  const ops = plan(opt.seed, opt.minutes, opt.mean);
  const replay = `npm run chaos -- --seed ${opt.seed} --minutes ${opt.minutes}${opt.burn ? ` --burn ${opt.burn}` : ''}${opt.rate !== 100 ? ` --rate ${opt.rate}` : ''}`;
  console.log(`chaos: seed ${opt.seed}, ${opt.minutes} min, ${ops.length} operations, ${opt.burn} CPU burners, ${opt.rate} lines/s per process, node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`apps: ${APPS.map((a) => `${a.tag} x${a.instances}${a.instanceVar ? ` (instance_var ${a.instanceVar})` : ''}`).join(', ')}`);
  console.log(`plan: ${ops.map((o) => `${(o.at / 1000).toFixed(1)}s ${o.kind}${o.app ? ` ${o.app}` : ''}`).join(', ')}`);
  const ownTarball = !process.env.PM2SI_TARBALL;
  const tarball = process.env.PM2SI_TARBALL ? path.resolve(process.env.PM2SI_TARBALL) : packTarball();
  const sb = Pm2Sandbox.create(`pm2si-chaos-${opt.seed}-`);
  console.log(`sandbox ${sb.dir}`);
  const burners = startBurners(opt.burn);
  let chaos;
  let failed = true;
  const cleanup = async () => {
    if (chaos?.watch) clearInterval(chaos.watch);
    burners.forEach((b) => b.kill('SIGKILL'));
    await sb.kill();
    if (!failed && !process.env.KEEP_SANDBOX) fs.rmSync(sb.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    else console.log(`kept ${sb.dir} (PM2 logs in pm2/logs, app files in work/logs, timeline in chaos-timeline.log)`);
    if (ownTarball) fs.rmSync(path.dirname(tarball), { recursive: true, force: true });
  };
  let interrupted = false;
  process.on('SIGINT', () => {
    if (interrupted) return;
    interrupted = true;
    console.log(`\ninterrupted; replay with: ${replay}`);
    cleanup().finally(() => process.exit(130));
  });
  let code = 2;
  try {
    await sb.install(tarball);
    chaos = new Chaos(opt, sb);
    chaos.tarball = tarball;
    await chaos.startApps();
    chaos.startWatch();
    await chaos.run(ops);
    await chaos.restore();
    await chaos.settle();
    const { rows, problems, details } = chaos.judgeAll();
    const rss = chaos.judgeRss();
    problems.push(...rss.problems);
    for (const e of chaos.daemonEvents) problems.push(e.what);
    if (chaos.holdProblem) problems.push(`module still holding at the end: ${chaos.holdProblem.split('\n')[0]}`);
    const errLog = sb.moduleLog().split('\n').filter((l) => /internal error|uncaught|unhandled|FATAL|ERR_IPC/i.test(l));
    if (errLog.length) problems.push(`module log: ${errLog.slice(0, 5).join(' | ')}`);
    const maxStarts = 1 + chaos.moduleOps;
    console.log(`\nmodule starts ${chaos.moduleStarts} (1 + ${chaos.moduleOps} operations that restart it); failed operations ${chaos.opFailures.length}; daemon pid ${chaos.daemonPid}`);
    let sigkills = 0;
    try {
      sigkills = (fs.readFileSync(path.join(sb.home, 'pm2.log'), 'utf8').match(/exited with code \[\d+\] via signal \[SIGKILL\]/g) || []).length;
    } catch {
      /* no pm2.log */
    }
    console.log(`PM2 log: ${sigkills} processes ended by SIGKILL (${chaos.kills.length} kill -9 by the run; any more: PM2 after kill_timeout)`);
    if (chaos.moduleStarts > maxStarts) problems.push(`the module started ${chaos.moduleStarts} times; its operations explain at most ${maxStarts}`);
    console.log(`\n${'app'.padEnd(11)} ${'senders'.padStart(7)} ${'sent'.padStart(7)} ${'found'.padStart(7)} ${'missing'.padStart(7)} ${'excused'.padStart(7)} ${'dup'.padStart(4)} ${'misplaced'.padStart(9)} ${'order'.padStart(5)}`);
    for (const r of rows) {
      console.log(`${r.tag.padEnd(11)} ${String(r.senders).padStart(7)} ${String(r.sent).padStart(7)} ${String(r.found).padStart(7)} ${String(r.lost).padStart(7)} ${String(r.excused).padStart(7)} ${String(r.dup).padStart(4)} ${String(r.misplaced).padStart(9)} ${String(r.order).padStart(5)}`);
      if (r.dups.length) console.log(`  twice: ${r.dups.join(', ')}`);
    }
    console.log('(missing: not explained by a kill -9 of the app\'s writer; excused: within a kill -9\'s window, README "Stop window")');
    for (const d of details) console.log(d);
    for (const l of rss.lines) console.log(l);
    if (problems.length) {
      console.log(`\nFAIL seed ${opt.seed}: ${problems.length} problems`);
      for (const p of problems) console.log(`  - ${p}`);
      for (const m of chaos.losses.slice(0, 4)) {
        console.log(`\naround ${m.app.tag} pid ${m.pid} #${m.first}-${m.last}${m.what ? ` (${m.what})` : ''} (timeline: operations, module and daemon log lines, as seen every 0.5 s):`);
        for (const l of chaos.around(m.leftBy ?? m.notBefore)) console.log(`  ${l}`);
      }
      console.log(`replay: ${replay}`);
      code = 1;
    } else {
      console.log(`\nclean: seed ${opt.seed}`);
      failed = false;
      code = 0;
    }
  } catch (err) {
    console.error(`chaos harness error (seed ${opt.seed}): ${err.stack || err}`);
    console.log(`replay: ${replay}`);
    code = 2;
  } finally {
    if (!interrupted) await cleanup();
  }
  process.exit(code);
}

if (require.main === module) main();
module.exports = { plan, mulberry32, Chaos };
