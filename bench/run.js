'use strict';
/**
 * `npm run bench`: end-to-end log throughput, CPU, memory and latency of N cluster instances
 * logging with log4js, side by side:
 *   (a)  native node cluster, no PM2: log4js primary writes (the reference)
 *   (b)  PM2 + this module, installed from a fresh tarball (default settings, max_inflight=1)
 *   (b') the same with `pm2 set pm2-scoped-intercom:max_inflight 16` (the pipelining trade-off)
 *   (bg) the same with `proc_checks=off`: the send guard, as on a machine without /proc
 *   (bn) the same with `reload_probe=off`: what the reload probe costs, read in one run
 *   (m)  PM2 + bench/fixtures/minimal-relay.js instead of the module: the least a relay through
 *        PM2 can do with one send in flight (the floor for the module's CPU per relayed line)
 *   (c)  PM2 without the module: log4js disableClustering + stdout appender, merge_logs out_file
 *   (p), (w), (l)  PM2 + this module, the client's batched path: pino through
 *        pm2-scoped-intercom/pino, winston through /winston, log4js through the /log4js appender
 *   (storm) an error storm: N instances x 250,000 lines as fast as they can (bench/storm.js), three
 *        times in one run, each in a fresh PM2: nobody on PM2's bus, a bare bus listener that only
 *        counts, the module at its defaults. Lines lost, peak RSS of module and daemon, the
 *        daemon's heap, external memory and bus backlog, its RSS a while after, spool bytes, drain
 *        time, and the daemon's peak growth with the module against the bare listener
 *
 * Options (or env): --lines K (BENCH_LINES, default 20000 per instance), --instances N
 * (BENCH_INSTANCES, 4), --reps R (BENCH_REPS, 3), --rate L (BENCH_RATE, total lines/s of the
 * latency test, 5000), --latency-seconds S (BENCH_LATENCY_SECONDS, 3), --rows a,b,b2,bg,bn,m,c,p,w,l
 * (BENCH_ROWS; b2 is b'), --inflight M (BENCH_INFLIGHT, 16: max_inflight of b'), --storm-lines K
 * (BENCH_STORM_LINES, 250000 per instance), --storm-after S (BENCH_STORM_AFTER, 60: how long the
 * daemon is watched after the storm), --storm-readers none,bare,module (BENCH_STORM_READERS: which
 * storm rows; the ratio needs bare and module).
 * See docs/performance.md for the columns.
 *
 * Only public tools: /proc/<pid>/stat and /proc/<pid>/status reads (what pidusage does), the pm2
 * CLI, and timestamps written into the log lines. Every PM2 daemon started here has its own
 * PM2_HOME in a temp dir and is killed at the end (also on Ctrl-C); ~/.pm2 is never touched.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const { Pm2Sandbox, packTarball, waitFor, ROOT, MODULE } = require('../test/support/pm2-sandbox');
const { machineCpu, cpuMicros, cpuMicrosAll, cpuDelta, rssBytes, alive, RssSampler, CLK_TCK } = require('./lib/proc');
const { Tail, now } = require('./lib/tail');
const { readReports, judgeRun } = require('./lib/judge');
const { runStorm, formatStorm, READERS } = require('./storm');

const APP = path.join(__dirname, 'fixtures', 'bench-app.js');
const NATIVE = path.join(__dirname, 'fixtures', 'native-primary.js');
const APP_NAME = 'bench';

// ---------------------------------------------------------------------------------------------
// Options

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  if (process.env[envName] !== undefined && process.env[envName] !== '') return process.env[envName];
  return fallback;
}

function positiveInt(value, what) {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`bench: ${what} must be a positive integer, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return n;
}

const OPTS = {
  lines: positiveInt(option('lines', 'BENCH_LINES', '20000'), '--lines'),
  instances: positiveInt(option('instances', 'BENCH_INSTANCES', '4'), '--instances'),
  reps: positiveInt(option('reps', 'BENCH_REPS', '3'), '--reps'),
  rate: positiveInt(option('rate', 'BENCH_RATE', '5000'), '--rate'),
  latencySeconds: positiveInt(option('latency-seconds', 'BENCH_LATENCY_SECONDS', '3'), '--latency-seconds'),
  rows: String(option('rows', 'BENCH_ROWS', 'a,b,b2,bg,m,c,p,w,l,storm'))
    .split(',')
    .map((r) => r.trim().replace("b'", 'b2'))
    .filter(Boolean),
  inflight: positiveInt(option('inflight', 'BENCH_INFLIGHT', '16'), '--inflight'),
  stormLines: positiveInt(option('storm-lines', 'BENCH_STORM_LINES', '250000'), '--storm-lines'),
  stormAfter: positiveInt(option('storm-after', 'BENCH_STORM_AFTER', '60'), '--storm-after'),
  stormReaders: String(option('storm-readers', 'BENCH_STORM_READERS', READERS.join(',')))
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean),
};
for (const r of OPTS.stormReaders) {
  if (!READERS.includes(r)) {
    console.error(`bench: unknown storm reader ${r} (${READERS.join(', ')})`);
    process.exit(2);
  }
}
const WARMUP_LINES = Math.min(OPTS.lines, 5000);
/** The rows that run the module in its private PM2 (the throughput rows b.., the client rows p, w, l). */
const MODULE_ROWS = ['b', 'b2', 'bg', 'bn', 'p', 'w', 'l'];
const ROWS = ['a', ...MODULE_ROWS, 'm', 'c', 'storm'];
for (const r of OPTS.rows) {
  if (!ROWS.includes(r)) {
    console.error(`bench: unknown row ${r} (rows: ${ROWS.join(', ')}; b2 is b')`);
    process.exit(2);
  }
}

const say = (line) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup: every daemon and process we start is stopped here, by its PM2_HOME or its pid.

const cleanups = [];
let cleaning;
let aborted = false;
/** Between steps: stop starting anything once a signal came. */
function checkAborted() {
  if (aborted) throw new Error('interrupted');
}
async function runCleanup(fn) {
  let timer;
  try {
    await Promise.race([fn(), new Promise((r) => (timer = setTimeout(r, 40000)))]);
  } catch (err) {
    say(`cleanup: ${err.message}`);
  } finally {
    clearTimeout(timer);
  }
}
/**
 * Register a cleanup; returns it wrapped to run at most once (call it early to free things). One
 * registered while the cleanup is already running (something started as a signal came) is
 * chained onto it.
 */
function register(fn) {
  let done;
  const once = () => (done ??= Promise.resolve().then(fn));
  if (cleaning) cleaning = cleaning.then(() => runCleanup(once));
  else cleanups.push(once);
  return once;
}
function cleanup() {
  if (!cleaning) {
    cleaning = (async () => {
      while (cleanups.length > 0) await runCleanup(cleanups.pop());
    })();
  }
  // Wait for cleanups chained on meanwhile too.
  const settle = (p) => p.then(() => (p === cleaning ? undefined : settle(cleaning)));
  return settle(cleaning);
}
/** Pids of our descendants (a pm2 CLI call in progress and the npm it runs), from /proc. */
function descendants(root) {
  const children = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(d));
    } catch {
      /* gone */
    }
  }
  const out = [];
  const walk = (pid) => {
    for (const c of children.get(pid) || []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (aborted) {
      say(`${sig} again: exiting now (the sandbox's exit hook still runs pm2 kill)`);
      process.exit(130);
    }
    aborted = true;
    say(`${sig}: stopping everything the bench started (again to exit at once)`);
    // A pm2 CLI call in progress (e.g. pm2 install running npm) would go on writing into the
    // sandbox while it is removed: stop our own child processes first.
    for (const pid of descendants(process.pid)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    cleanup().finally(() => process.exit(130));
  });
}

/** Remove a temp dir we made (kept with KEEP_SANDBOX=1); a process still exiting may write into it. */
function removeDir(dir) {
  if (process.env.KEEP_SANDBOX) return;
  try {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  } catch (err) {
    say(`could not remove ${dir}: ${err.message}`);
  }
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
}

/** SIGKILL a pid we started, if it is still alive and still the process we think it is. */
function killIfOurs(pid, cmdlineHas) {
  if (!pid || !alive(pid)) return;
  const cmd = cmdline(pid);
  if (cmd === undefined || !cmd.includes(cmdlineHas)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

// ---------------------------------------------------------------------------------------------
// Rows

function rowDirs(sandboxWork, key) {
  const dir = path.join(sandboxWork, key);
  const reports = path.join(dir, 'reports');
  fs.mkdirSync(reports, { recursive: true });
  return { dir, reports, control: path.join(dir, 'control.json'), logFile: path.join(dir, 'app.log') };
}

function appEnv(dirs, mode) {
  const batch = {};
  // The client's batch bounds for rows p, w, l (default: the client's own defaults).
  for (const k of ['BENCH_BATCH_MS', 'BENCH_BATCH_BYTES']) if (process.env[k]) batch[k] = process.env[k];
  return { BENCH_MODE: mode, BENCH_CONTROL: dirs.control, BENCH_REPORTS: dirs.reports, BENCH_LOG_FILE: dirs.logFile, ...batch };
}

/** Row (a): node cluster primary + workers, no PM2. */
function nativeRow() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-bench-native-'));
  const dirs = rowDirs(base, 'a');
  let child;
  let pids;
  let stop = async () => {};
  return {
    key: 'a',
    label: '(a) native node cluster + log4js',
    dirs,
    hop: () => true,
    async setup() {
      child = spawn(process.execPath, [NATIVE, String(OPTS.instances)], {
        cwd: ROOT,
        env: { ...process.env, ...appEnv(dirs, 'native') },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      stop = register(async () => {
        const all = pids ? [pids.primary, ...pids.workers] : [child.pid];
        try {
          child.kill('SIGTERM');
        } catch {
          /* gone */
        }
        await waitFor(() => all.every((p) => !alive(p)), { timeoutMs: 3000, every: 100 }).catch(() => {});
        for (const p of all) killIfOurs(p, 'node');
        removeDir(base);
      });
      pids = await new Promise((resolve, reject) => {
        let out = '';
        const t = setTimeout(() => reject(new Error('native cluster did not start in 20 s')), 20000);
        child.stdout.on('data', (d) => {
          out += d;
          const nl = out.indexOf('\n');
          if (nl >= 0) {
            clearTimeout(t);
            resolve(JSON.parse(out.slice(0, nl)));
          }
        });
        child.on('exit', (code) => reject(new Error(`native cluster exited (${code})`)));
      });
      const roles = { [pids.primary]: 'writer (primary)' };
      for (const w of pids.workers) roles[w] = 'senders';
      return { all: [pids.primary, ...pids.workers], relay: undefined, daemon: undefined, writer: pids.primary, roles };
    },
    async teardown() {
      await stop();
    },
  };
}

/** The PM2 sandbox with the module installed, shared by rows b and b'. */
let moduleSandbox;
let tarball;
async function getModuleSandbox() {
  if (moduleSandbox) return moduleSandbox;
  say('packing the module (npm pack) ...');
  tarball = packTarball();
  checkAborted();
  const packDir = path.dirname(tarball);
  register(async () => removeDir(packDir));
  const sb = Pm2Sandbox.create('pm2si-bench-');
  sb.benchDestroy = pushSandboxCleanup(sb);
  say(`installing ${path.basename(tarball)} into a private PM2 (PM2_HOME=${sb.home}) ...`);
  await sb.install(tarball);
  checkAborted();
  moduleSandbox = sb;
  return sb;
}

/** Kill the sandbox's daemon at the end (or when the returned function is called). */
function pushSandboxCleanup(sb) {
  const seen = new Map();
  sb.benchPids = seen; // pid -> cmdline of processes seen in this sandbox, killed by pid if `pm2 kill` leaves any
  return register(async () => {
    await killDaemon(sb, { forget: true });
    await waitFor(() => [...seen.keys()].every((p) => !alive(p)), { timeoutMs: 10000, every: 100 }).catch(() => {});
    for (const [p, cmd] of seen) if (cmdline(p) === cmd) killIfOurs(p, '');
    removeDir(sb.dir);
  });
}

/**
 * `pm2 kill`, then wait until the daemon process is really gone (the CLI returns while it still
 * exits, and a new daemon started meanwhile would lose its sockets to the old one's cleanup).
 */
async function killDaemon(sb, { forget = false } = {}) {
  let pid;
  try {
    pid = daemonPid(sb);
  } catch {
    /* no daemon */
  }
  const cmd = pid ? cmdline(pid) : undefined;
  // sb.kill() also takes the home off the sandbox's exit hook (which would `pm2 kill` it again,
  // and `pm2 kill` without a daemon spawns one first).
  if (forget) await sb.kill();
  else await sb.pm2(['kill'], { timeoutMs: 30000 }).catch((err) => say(`pm2 kill: ${err.message.split('\n')[0]}`));
  if (!pid) {
    await sleep(1000); // `pm2 kill` without a daemon spawns one to kill: let it go before the dir does
    return;
  }
  const gone = await waitFor(() => !alive(pid), { timeoutMs: 15000, every: 100 }).catch(() => false);
  if (!gone && cmd !== undefined && cmdline(pid) === cmd) {
    say(`the PM2 daemon (pid ${pid}) outlived pm2 kill by 15 s: SIGKILL`);
    killIfOurs(pid, 'PM2');
  }
}

function daemonPid(sb) {
  return Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim());
}

async function pm2Pids(sb) {
  const list = await sb.jlist();
  const apps = list.filter((p) => p.name === APP_NAME).map((p) => p.pid);
  const mod = list.find((p) => p.name === MODULE || p.name === MINIMAL_RELAY);
  const daemon = daemonPid(sb);
  for (const p of [...apps, daemon, mod && mod.pid]) {
    const cmd = p ? cmdline(p) : undefined;
    if (cmd !== undefined) sb.benchPids.set(p, cmd);
  }
  const roles = { [daemon]: 'pm2 daemon' };
  if (mod) roles[mod.pid] = 'relay';
  const withModule = Boolean(mod);
  for (const p of list.filter((x) => x.name === APP_NAME)) {
    roles[p.pid] = !withModule ? 'apps' : String(p.pm2_env.NODE_APP_INSTANCE) === '0' ? 'instance 0 (writer)' : 'senders';
  }
  return { apps, relay: mod ? mod.pid : undefined, daemon, list, roles };
}

async function startApps(sb, apps) {
  checkAborted();
  await sb.start(apps, `bench-${Date.now()}`);
  await waitFor(
    async () => {
      const list = await sb.jlist();
      const mine = list.filter((p) => p.name === APP_NAME);
      return mine.length === OPTS.instances && mine.every((p) => p.pm2_env.status === 'online' && p.pid > 0);
    },
    { timeoutMs: 30000, every: 300, what: `${OPTS.instances} instances of ${APP_NAME} online` },
  );
}

async function waitWriterReady(sb) {
  return waitFor(
    async () => {
      const st = await sb.trigger('status');
      const row = (st.apps || []).find((a) => a.name === APP_NAME);
      return row && row.writer_ready ? st : undefined;
    },
    { timeoutMs: 30000, every: 500, what: `the module to see a ready writer for ${APP_NAME}` },
  );
}

/** The bench app in cluster mode; `mode` 'pm2': log4js with `pm2: true` (its instance 0 writes). */
function log4jsClusterApp(dirs, mode = 'pm2') {
  return { name: APP_NAME, script: APP, cwd: ROOT, exec_mode: 'cluster', instances: OPTS.instances, autorestart: false, env: appEnv(dirs, mode) };
}

/** Rows (b) and (b'): PM2 cluster app with log4js pm2: true, this module relaying; (p), (w), (l): the client's path (`mode`). */
function moduleRow(key, label, settings, mode = 'pm2') {
  let sb;
  let dirs;
  let startPid;
  const wanted = Object.entries(settings);
  const has = (line, k, v) => new RegExp(`(^| )${k}=${v}( |$)`).test(line || '');
  return {
    key,
    label,
    settings,
    get dirs() {
      return dirs;
    },
    hop: (r) => String(r.instance) !== '0',
    async setup() {
      sb = await getModuleSandbox();
      const current = (await sb.trigger('status')).settings || '';
      for (const [k, v] of wanted) {
        if (has(current, k, v)) continue;
        say(`pm2 set ${MODULE}:${k} ${v}`);
        await sb.pm2(['set', `${MODULE}:${k}`, String(v)]);
      }
      if (sb.usedOnce) {
        // A fresh daemon for each row, so its memory figures start from idle.
        say('restarting the PM2 daemon (pm2 kill, pm2 ping) for a clean memory baseline ...');
        await killDaemon(sb);
        await sb.pm2(['ping']);
      }
      sb.usedOnce = true;
      await waitFor(
        async () => {
          const m = await sb.moduleProc();
          if (!m || m.pm2_env.status !== 'online') return false;
          const st = await sb.trigger('status');
          return wanted.every(([k, v]) => has(st.settings, k, v));
        },
        { timeoutMs: 30000, every: 500, what: `the module to run with ${wanted.map(([k, v]) => `${k}=${v}`).join(' ')}` },
      );
      dirs = rowDirs(sb.work, key);
      await startApps(sb, [log4jsClusterApp(dirs, mode)]);
      await waitWriterReady(sb);
      const p = await pm2Pids(sb);
      startPid = p.relay;
      return { all: [...p.apps, p.relay, p.daemon], relay: p.relay, daemon: p.daemon, writer: undefined, roles: p.roles };
    },
    async extra() {
      const st = await sb.trigger('status').catch((err) => ({ error: err.message }));
      const p = await pm2Pids(sb);
      const mod = p.list.find((x) => x.name === MODULE);
      return {
        // A different pid than at the start: the module restarted during the measurement.
        moduleRestartedDuringRuns: !mod || mod.pid !== startPid,
        moduleCounters: st.counters,
        moduleSettings: st.settings,
        moduleRestarts: (p.list.find((x) => x.name === MODULE) || { pm2_env: {} }).pm2_env.restart_time,
        appRestarts: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.restart_time),
        appStatus: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.status),
      };
    },
    async teardown() {
      await sb.pm2(['delete', APP_NAME]).catch(() => {});
    },
  };
}

const MINIMAL_RELAY = 'minimal-relay';

/** Row (m): PM2 with bench/fixtures/minimal-relay.js as the relay (no module installed). */
function minimalRelayRow() {
  let sb;
  let dirs;
  return {
    key: 'm',
    label: '(m) PM2 + the minimal relay (bench/fixtures/minimal-relay.js, 1 in flight, no guarantees)',
    get dirs() {
      return dirs;
    },
    hop: (r) => String(r.instance) !== '0',
    async setup() {
      sb = Pm2Sandbox.create('pm2si-bench-minimal-');
      sb.benchDestroy = pushSandboxCleanup(sb);
      dirs = rowDirs(sb.work, 'm');
      const out = path.join(sb.dir, 'minimal-relay.out.log');
      await sb.pm2(['start', path.join(ROOT, 'bench', 'fixtures', 'minimal-relay.js'), '--name', MINIMAL_RELAY, '--output', out, '--error', path.join(sb.dir, 'minimal-relay.err.log')]);
      await startApps(sb, [log4jsClusterApp(dirs)]);
      await waitFor(() => fs.existsSync(out) && fs.readFileSync(out, 'utf8').includes(`writer of ${APP_NAME} is`), {
        timeoutMs: 30000,
        every: 200,
        what: 'the minimal relay to know the writer',
      });
      const p = await pm2Pids(sb);
      return { all: [...p.apps, p.relay, p.daemon], relay: p.relay, daemon: p.daemon, writer: undefined, roles: p.roles };
    },
    async extra() {
      const p = await pm2Pids(sb);
      return {
        appRestarts: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.restart_time),
        appStatus: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.status),
      };
    },
    async teardown() {
      await sb.benchDestroy();
    },
  };
}

/** Row (c): PM2 without the module, every instance logs to stdout, PM2 merges into one file. */
function stdoutRow() {
  let sb;
  let dirs;
  return {
    key: 'c',
    label: '(c) PM2, log4js disableClustering + stdout, merge_logs',
    get dirs() {
      return dirs;
    },
    hop: () => true,
    async setup() {
      sb = Pm2Sandbox.create('pm2si-bench-stdout-');
      sb.benchDestroy = pushSandboxCleanup(sb);
      dirs = rowDirs(sb.work, 'c');
      dirs.logFile = path.join(dirs.dir, 'out.log');
      await startApps(sb, [
        {
          name: APP_NAME,
          script: APP,
          cwd: ROOT,
          exec_mode: 'cluster',
          instances: OPTS.instances,
          autorestart: false,
          merge_logs: true,
          out_file: dirs.logFile,
          error_file: path.join(dirs.dir, 'err.log'),
          env: appEnv(dirs, 'stdout'),
        },
      ]);
      const p = await pm2Pids(sb);
      return { all: [...p.apps, p.daemon], relay: undefined, daemon: p.daemon, writer: undefined, roles: p.roles };
    },
    async extra() {
      const p = await pm2Pids(sb);
      const errLog = path.join(dirs.dir, 'err.log');
      return {
        appRestarts: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.restart_time),
        appStatus: p.list.filter((x) => x.name === APP_NAME).map((x) => x.pm2_env.status),
        errLogBytes: fs.existsSync(errLog) ? fs.statSync(errLog).size : 0,
      };
    },
    async teardown() {
      await sb.benchDestroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One run: tell every instance to log `lines` lines (at `rate` lines/s each, 0 = flat out), wait
// until every line landed (or the file stopped growing), judge.

let runId = 0;

async function runOnce(row, procs, { lines, rate, watch, what }) {
  checkAborted();
  const id = ++runId;
  const dirs = row.dirs;
  const tail = new Tail(dirs.logFile, { watch, every: watch ? 20 : 100 });
  const cpu0 = cpuMicrosAll(procs.all);
  const relay0 = procs.relay ? cpuMicros(procs.relay) : undefined;
  const self0 = process.cpuUsage();
  const m0 = machineCpu();
  const at = Date.now() + 300;
  fs.writeFileSync(`${dirs.control}.tmp`, JSON.stringify({ id, lines, rate, at }));
  fs.renameSync(`${dirs.control}.tmp`, dirs.control);

  const expected = lines * OPTS.instances;
  const senderBudget = rate > 0 ? (lines / rate) * 1000 : (expected / 1000) * 1000; // flat out: >= 1,000 lines/s
  const deadline = Date.now() + 300 + senderBudget + 30000;
  let reports = [];
  let timedOut = false;
  let allReportedAt = 0;
  for (;;) {
    await sleep(50);
    if (aborted) {
      tail.stop();
      checkAborted();
    }
    if (reports.length < OPTS.instances) reports = readReports(dirs.reports, id);
    if (reports.length >= OPTS.instances) {
      if (!allReportedAt) {
        allReportedAt = Date.now();
        reports = readReports(dirs.reports, id);
      }
      const sent = reports.reduce((s, r) => s + r.sent, 0);
      tail.read();
      if (tail.lines >= sent) break;
      if (now() - tail.lastGrowth > 2000 && Date.now() - allReportedAt > 2000) break; // stopped growing: the rest is lost
    }
    if (Date.now() > deadline) {
      timedOut = true;
      break;
    }
  }
  const mtime = tail.stop();
  // Work a line causes can go on after it is in the file (row c: PM2 still takes every line's
  // IPC copy; b: the relay's last acks): CPU is read once every process has gone quiet.
  const quietFor = await waitCpuQuiet(procs.all);
  const cpu1 = cpuMicrosAll(procs.all);
  const relay1 = procs.relay ? cpuMicros(procs.relay) : undefined;
  const m1 = machineCpu();
  const self1 = process.cpuUsage(self0);
  const j = judgeRun({ id, chunks: tail.chunks, reports, hop: row.hop });
  const seconds = (mtime - j.first) / 1000;
  const result = {
    id,
    what,
    lines,
    rate,
    senders: reports.length,
    timedOut,
    ...j,
    lastWriteMtime: mtime,
    seconds,
    linesPerSec: seconds > 0 ? j.written / seconds : null,
    cpuAllMicros: cpuDelta(cpu0, cpu1),
    cpuByRole: cpuByRole(procs, cpu0, cpu1),
    cpuQuietAfterMs: quietFor,
    benchSelfMicros: self1.user + self1.system,
    // CPU the rest of the machine used meanwhile (other users), as a share of all cores.
    otherLoad: Math.max(0, m1.busy - m0.busy - cpuDelta(cpu0, cpu1) - (self1.user + self1.system)) / Math.max(1, m1.total - m0.total),
    steal: (m1.steal - m0.steal) / Math.max(1, m1.total - m0.total),
    cpuRelayMicros: relay0 !== undefined && relay1 !== undefined ? relay1 - relay0 : null,
  };
  result.cpuAllPerLine = j.written > 0 ? result.cpuAllMicros / j.written : null;
  // Per line written, the basis of the "all CPU" column (the writer's own lines cost the relay
  // nothing); also per line that went through it (sent by instances 1..N-1) and, with lines lost,
  // per line it delivered (the work on dropped ones then counts on the delivered ones).
  result.cpuRelayPerLine = result.cpuRelayMicros !== null && j.written > 0 ? result.cpuRelayMicros / j.written : null;
  result.cpuRelayPerRelayedLine = result.cpuRelayMicros !== null && j.hopSent > 0 ? result.cpuRelayMicros / j.hopSent : null;
  result.cpuRelayPerDeliveredLine = result.cpuRelayMicros !== null && j.hopWritten > 0 ? result.cpuRelayMicros / j.hopWritten : null;
  return result;
}

/** Wait (at most 20 s) until the pids together use under 5% of one core over 250 ms. */
async function waitCpuQuiet(pids) {
  const t0 = Date.now();
  let last = cpuMicrosAll(pids);
  for (;;) {
    await sleep(250);
    const next = cpuMicrosAll(pids);
    if (cpuDelta(last, next) < 12500 || Date.now() - t0 > 20000) return Date.now() - t0;
    last = next;
  }
}

function cpuByRole(procs, cpu0, cpu1) {
  const out = {};
  for (const [pid, role] of Object.entries(procs.roles || {})) {
    if (cpu1[pid] === undefined) continue;
    out[role] = Math.round((out[role] || 0) + Math.max(0, cpu1[pid] - (cpu0[pid] ?? 0)));
  }
  return out;
}

function fmtRun(r) {
  const lat = r.latencyWrite || r.latencySeen;
  return (
    `${r.what}: ${r.written}/${r.sent} lines in ${r.seconds.toFixed(3)} s = ${Math.round(r.linesPerSec)} lines/s` +
    `${r.lost ? `, LOST ${r.lost}` : ''}${r.duplicated ? `, dup ${r.duplicated}` : ''}${r.foreign ? `, foreign ${r.foreign}` : ''}${r.timedOut ? ', TIMED OUT' : ''}` +
    `, cpu ${r.cpuAllPerLine ? r.cpuAllPerLine.toFixed(1) : '-'} us/line` +
    (r.cpuRelayPerRelayedLine !== null ? ` (relay ${r.cpuRelayPerRelayedLine.toFixed(1)} us per line through it)` : '') +
    ` [${Object.entries(r.cpuByRole).map(([k, v]) => `${k} ${(v / r.written).toFixed(1)}`).join(', ')}]` +
    (r.rate > 0 && lat ? `, latency p50 ${lat.p50.toFixed(2)} ms p99 ${lat.p99.toFixed(2)} ms` : '') +
    `; other load ${(100 * r.otherLoad).toFixed(0)}% of the machine`
  );
}

function median(values) {
  const s = values.filter((v) => v !== null && !Number.isNaN(v)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function benchRow(row, sampler) {
  checkAborted();
  say(`${row.label}: starting ...`);
  const procs = await row.setup();
  checkAborted();
  sampler.unwatch('relay');
  sampler.unwatch('daemon');
  if (procs.relay) sampler.watch('relay', procs.relay);
  if (procs.daemon) sampler.watch('daemon', procs.daemon);
  if (procs.writer) sampler.watch('writer', procs.writer);
  // Idle figures: what the processes hold before any line, with everything started.
  await sleep(500);
  const idle = { relay: [], daemon: [] };
  for (let i = 0; i < 10; i++) {
    if (procs.relay) idle.relay.push(rssBytes(procs.relay));
    if (procs.daemon) idle.daemon.push(rssBytes(procs.daemon));
    await sleep(50);
  }
  sampler.reset();
  const out = {
    key: row.key,
    label: row.label,
    pids: procs,
    idleRss: { relay: median(idle.relay), daemon: median(idle.daemon) },
    runs: [],
  };
  const warm = await runOnce(row, procs, { lines: WARMUP_LINES, rate: 0, watch: false, what: 'warm-up' });
  say(`  ${fmtRun(warm)}`);
  out.runs.push(warm);
  for (let i = 0; i < OPTS.reps; i++) {
    await sleep(500);
    const r = await runOnce(row, procs, { lines: OPTS.lines, rate: 0, watch: false, what: `throughput ${i + 1}/${OPTS.reps}` });
    say(`  ${fmtRun(r)}`);
    out.runs.push(r);
  }
  await sleep(500);
  const perInstance = OPTS.rate / OPTS.instances;
  const lat = await runOnce(row, procs, {
    lines: Math.round(perInstance * OPTS.latencySeconds),
    rate: perInstance,
    watch: true,
    what: `latency at ${OPTS.rate} lines/s`,
  });
  say(`  ${fmtRun(lat)}`);
  out.runs.push(lat);
  const peaks = sampler.peaks();
  out.peakRss = { relay: peaks.relay ?? null, daemon: peaks.daemon ?? null, writer: peaks.writer ?? null };
  out.extra = row.extra ? await row.extra() : {};
  out.alive = Object.fromEntries(procs.all.filter(Boolean).map((p) => [p, alive(p)]));
  sampler.unwatch('writer');
  await row.teardown();

  const tput = out.runs.filter((r) => r.what.startsWith('throughput'));
  const sumHop = tput.reduce((s, r) => s + r.hopSent, 0);
  const sumHopWritten = tput.reduce((s, r) => s + r.hopWritten, 0);
  const sumWritten = tput.reduce((s, r) => s + r.written, 0);
  out.summary = {
    linesPerSec: median(tput.map((r) => r.linesPerSec)),
    linesPerSecRuns: tput.map((r) => r.linesPerSec),
    lost: out.runs.reduce((s, r) => s + Math.max(0, r.lost), 0),
    lostThroughputRuns: tput.reduce((s, r) => s + Math.max(0, r.lost), 0),
    duplicated: out.runs.reduce((s, r) => s + r.duplicated, 0),
    cpuAllPerLine: sumWritten > 0 ? tput.reduce((s, r) => s + r.cpuAllMicros, 0) / sumWritten : null,
    cpuRelayPerLine: procs.relay && sumWritten > 0 ? tput.reduce((s, r) => s + (r.cpuRelayMicros || 0), 0) / sumWritten : null,
    cpuRelayPerRelayedLine: procs.relay && sumHop > 0 ? tput.reduce((s, r) => s + (r.cpuRelayMicros || 0), 0) / sumHop : null,
    cpuRelayPerDeliveredLine: procs.relay && sumHopWritten > 0 ? tput.reduce((s, r) => s + (r.cpuRelayMicros || 0), 0) / sumHopWritten : null,
    // PM2's daemon, per line written (every row that runs under PM2: a, b.., m, c).
    cpuDaemonPerLine: sumWritten > 0 && tput.some((r) => r.cpuByRole['pm2 daemon'] !== undefined) ? tput.reduce((s, r) => s + (r.cpuByRole['pm2 daemon'] || 0), 0) / sumWritten : null,
    relayPeakRss: out.peakRss.relay,
    daemonIdleRss: out.idleRss.daemon,
    daemonPeakRss: out.peakRss.daemon,
    latency: row.key === 'c' ? lat.latencySeen : lat.latencyWrite,
    cpuAllPerLineSteady: lat.cpuAllPerLine,
    latencyMethod: row.key === 'c' ? 'seen' : 'write',
    otherLoad: out.runs.reduce((acc, r) => acc + r.otherLoad, 0) / out.runs.length,
  };
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report

const MB = 1024 * 1024;
const fmtInt = (n) => (n === null || n === undefined ? '-' : Math.round(n).toLocaleString('en-US'));
const fmtMB = (b) => (b === null || b === undefined ? '-' : (b / MB).toFixed(0));
const fmt1 = (n) => (n === null || n === undefined ? '-' : n.toFixed(1));
const fmtMs = (n) => (n === null || n === undefined ? '-' : n < 10 ? n.toFixed(2) : n.toFixed(1));

function table(rows) {
  const base = rows.find((r) => r.key === 'a');
  const head = ['row', 'lines/s', 'x (a)', 'lost', 'relay CPU us/line', 'daemon CPU us/line', 'all CPU us/line', `all CPU us/line at ${OPTS.rate}/s`, 'relay peak MB', 'daemon idle/peak MB', 'p50 ms', 'p99 ms'];
  const body = rows.map((r) => {
    const s = r.summary;
    const ratio = base && base.summary.linesPerSec && s.linesPerSec ? (s.linesPerSec / base.summary.linesPerSec).toFixed(2) : '-';
    const daemon = s.daemonPeakRss ? `${fmtMB(s.daemonIdleRss)} / ${fmtMB(s.daemonPeakRss)} (+${fmtMB(s.daemonPeakRss - s.daemonIdleRss)})` : '-';
    const star = s.latencyMethod === 'seen' ? '*' : '';
    return [r.label, fmtInt(s.linesPerSec), ratio, fmtInt(s.lost), fmt1(s.cpuRelayPerLine), fmt1(s.cpuDaemonPerLine), fmt1(s.cpuAllPerLine), fmt1(s.cpuAllPerLineSteady), fmtMB(s.relayPeakRss), daemon, s.latency ? fmtMs(s.latency.p50) + star : '-', s.latency ? fmtMs(s.latency.p99) + star : '-'];
  });
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cols) => `| ${cols.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')} |`;
  return [line(head), `|${w.map((x, i) => (i === 0 ? '-'.repeat(x + 2) : `${'-'.repeat(x + 1)}:`)).join('|')}|`, ...body.map(line)].join('\n');
}

function targets(rows) {
  const a = rows.find((r) => r.key === 'a');
  const out = [];
  for (const key of ['b', 'b2', 'bg', 'bn']) {
    const b = rows.find((r) => r.key === key);
    if (!b) continue;
    const s = b.summary;
    const checks = [];
    const ratio = a && a.summary.linesPerSec && s.linesPerSec ? s.linesPerSec / a.summary.linesPerSec : null;
    checks.push(['throughput >= 0.80 x (a)', ratio === null ? null : ratio >= 0.8, ratio === null ? 'no (a) row' : `${ratio.toFixed(2)} x`]);
    checks.push(['0 lines lost', s.lost === 0 && s.duplicated === 0, `${s.lost} lost, ${s.duplicated} duplicated`]);
    checks.push(['relay CPU <= 7 us/line', s.cpuRelayPerLine === null ? null : s.cpuRelayPerLine <= 7, `${fmt1(s.cpuRelayPerLine)} us per line written${a && a.summary.cpuAllPerLine && s.cpuRelayPerLine ? ` (${(s.cpuRelayPerLine / a.summary.cpuAllPerLine).toFixed(2)} x (a)'s all-process CPU; the issue's 7 of 32 us is 0.22 x)` : ''}, ${fmt1(s.cpuRelayPerRelayedLine)} per line sent through it${s.lostThroughputRuns > 0 ? `, ${fmt1(s.cpuRelayPerDeliveredLine)} per line it delivered` : ''}`]);
    checks.push(...againstMinimalRelay(s, rows.find((r) => r.key === 'm')));
    checks.push(['relay RSS <= 80 MB', s.relayPeakRss === null ? null : s.relayPeakRss <= 80 * MB, `${fmtMB(s.relayPeakRss)} MB`]);
    const dd = s.daemonPeakRss !== null && s.daemonIdleRss !== null ? s.daemonPeakRss - s.daemonIdleRss : null;
    checks.push(['daemon peak <= idle + 20 MB', dd === null ? null : dd <= 20 * MB, dd === null ? '-' : `+${fmtMB(dd)} MB`]);
    const ap99 = a && a.summary.latency ? a.summary.latency.p99 : null;
    const bp99 = s.latency ? s.latency.p99 : null;
    checks.push(['p99 latency <= 3 x (a)', ap99 === null || bp99 === null ? null : bp99 <= 3 * ap99, ap99 === null || bp99 === null ? '-' : `${fmtMs(bp99)} ms vs ${fmtMs(ap99)} ms (${(bp99 / ap99).toFixed(1)} x)`]);
    out.push({ key, label: b.label, checks: checks.map(([what, ok, figure]) => ({ what, ok, figure })) });
  }
  // Issue 12: the client's batched path against native cluster logging.
  // The client's time bound (BENCH_BATCH_MS, else its default, from the build this bench packed).
  const batchMs = Number(process.env.BENCH_BATCH_MS) || require(path.join(ROOT, 'dist', 'client', 'index.js')).DEFAULT_BATCH_MAX_MS;
  for (const key of ['p', 'w', 'l']) {
    const b = rows.find((r) => r.key === key);
    if (!b) continue;
    const s = b.summary;
    const as = a ? a.summary : undefined;
    const checks = [];
    const ratio = as && as.linesPerSec && s.linesPerSec ? s.linesPerSec / as.linesPerSec : null;
    checks.push(['throughput >= 2 x (a)', ratio === null ? null : ratio >= 2, ratio === null ? 'no (a) row' : `${ratio.toFixed(2)} x`]);
    checks.push(['0 lines lost', s.lost === 0 && s.duplicated === 0, `${s.lost} lost, ${s.duplicated} duplicated`]);
    const cpu = as && as.cpuAllPerLine && s.cpuAllPerLine ? s.cpuAllPerLine / as.cpuAllPerLine : null;
    checks.push(['all CPU/line <= 0.5 x (a)', cpu === null ? null : cpu <= 0.5, cpu === null ? '-' : `${fmt1(s.cpuAllPerLine)} vs ${fmt1(as.cpuAllPerLine)} us (${cpu.toFixed(2)} x)`]);
    const cpuS = as && as.cpuAllPerLineSteady && s.cpuAllPerLineSteady ? s.cpuAllPerLineSteady / as.cpuAllPerLineSteady : null;
    checks.push([`same at ${OPTS.rate}/s`, cpuS === null ? null : cpuS <= 0.5, cpuS === null ? '-' : `${fmt1(s.cpuAllPerLineSteady)} vs ${fmt1(as.cpuAllPerLineSteady)} us (${cpuS.toFixed(2)} x)`]);
    const p99 = s.latency ? s.latency.p99 : null;
    checks.push([`p99 <= ${batchMs} + 5 ms`, p99 === null ? null : p99 <= batchMs + 5, p99 === null ? '-' : `${fmtMs(p99)} ms`]);
    out.push({ key, label: b.label, checks: checks.map(([what, ok, figure]) => ({ what, ok, figure })) });
  }
  return out;
}

/**
 * Issue 24: the module at defaults against the least a relay through PM2 can do, row (m):
 * throughput, its own CPU and PM2's daemon's per line, and the latency at the steady rate.
 */
function againstMinimalRelay(s, m) {
  if (!m) return [];
  const ms = m.summary;
  const checks = [];
  const tput = ms.linesPerSec && s.linesPerSec ? s.linesPerSec / ms.linesPerSec : null;
  checks.push(['lines/s >= 0.8 x (m)', tput === null ? null : tput >= 0.8, tput === null ? '-' : `${fmtInt(s.linesPerSec)} vs ${fmtInt(ms.linesPerSec)} (${tput.toFixed(2)} x)`]);
  const relay = ms.cpuRelayPerRelayedLine && s.cpuRelayPerRelayedLine !== null ? s.cpuRelayPerRelayedLine / ms.cpuRelayPerRelayedLine : null;
  checks.push(['relay CPU/relayed line <= 1.3 x (m)', relay === null ? null : relay <= 1.3, relay === null ? '-' : `${fmt1(s.cpuRelayPerRelayedLine)} vs ${fmt1(ms.cpuRelayPerRelayedLine)} us (${relay.toFixed(2)} x)`]);
  const daemon = ms.cpuDaemonPerLine && s.cpuDaemonPerLine !== null ? s.cpuDaemonPerLine / ms.cpuDaemonPerLine : null;
  checks.push(['daemon CPU/line <= 1.3 x (m)', daemon === null ? null : daemon <= 1.3, daemon === null ? '-' : `${fmt1(s.cpuDaemonPerLine)} vs ${fmt1(ms.cpuDaemonPerLine)} us (${daemon.toFixed(2)} x)`]);
  const mp99 = ms.latency ? ms.latency.p99 : null;
  const p99 = s.latency ? s.latency.p99 : null;
  // Where (m) holds the steady rate (its p99 under 100 ms), the module must too.
  const holds = mp99 === null || p99 === null ? null : mp99 >= 100 ? true : p99 < 100;
  checks.push([`p99 < 100 ms at ${OPTS.rate}/s where (m) holds it`, holds, p99 === null ? '-' : `${fmtMs(p99)} ms vs ${mp99 === null ? '-' : fmtMs(mp99)} ms`]);
  return checks;
}

function formatTargets(t) {
  const lines = [];
  for (const row of t) {
    lines.push(`Targets for ${row.label}:`);
    for (const c of row.checks) lines.push(`  ${c.ok === null ? 'n/a ' : c.ok ? 'MET ' : 'MISS'}  ${c.what.padEnd(44)} ${c.figure}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

/** Which code was measured: the commit, and the source files that differ from it. */
function sourceState() {
  const git = (args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const commit = git(['rev-parse', '--short', 'HEAD']);
    const changed = git(['status', '--porcelain', '--', 'lib', 'app.ts', 'client', 'package.json'])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    return { commit, changed, text: changed.length ? `${commit} + uncommitted changes in ${changed.join(', ')}` : commit };
  } catch {
    return { commit: null, changed: [], text: 'unknown (not a git checkout)' };
  }
}

async function main() {
  const started = Date.now();
  const source = sourceState();
  const load0 = os.loadavg();
  say(
    `N=${OPTS.instances} instances x K=${OPTS.lines} lines, ${OPTS.reps} runs per row (+1 warm-up of ${WARMUP_LINES}), ` +
      `latency at ${OPTS.rate} lines/s for ${OPTS.latencySeconds} s; rows ${OPTS.rows.join(', ')}; ${os.cpus().length} cores, load ${load0.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const sampler = new RssSampler(50);
  register(async () => sampler.stop());
  const rows = [];
  // Row b runs the package's defaults (package.json `config`), b' changes max_inflight only.
  const defaults = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).config || {};
  // Every module row names proc_checks and reload_probe too: (bg) and (bn) turn one off, the rows
  // after them must not inherit that.
  const dflt = { max_inflight: defaults.max_inflight ?? 1, proc_checks: defaults.proc_checks ?? 'auto', reload_probe: defaults.reload_probe ?? 'on' };
  const factories = {
    a: nativeRow,
    b: () => moduleRow('b', `(b) PM2 + ${MODULE}, defaults (max_inflight=${dflt.max_inflight})`, dflt),
    b2: () => moduleRow('b2', `(b') PM2 + ${MODULE}, max_inflight=${OPTS.inflight}`, { ...dflt, max_inflight: OPTS.inflight }),
    bg: () => moduleRow('bg', `(bg) PM2 + ${MODULE}, proc_checks=off (the send guard, as without /proc)`, { ...dflt, proc_checks: 'off' }),
    bn: () => moduleRow('bn', `(bn) PM2 + ${MODULE}, reload_probe=off (what the reload probe costs)`, { ...dflt, reload_probe: 'off' }),
    m: minimalRelayRow,
    c: stdoutRow,
    p: () => moduleRow('p', `(p) PM2 + ${MODULE}, pino through /pino (batches)`, dflt, 'client-pino'),
    w: () => moduleRow('w', `(w) PM2 + ${MODULE}, winston through /winston (batches)`, dflt, 'client-winston'),
    l: () => moduleRow('l', `(l) PM2 + ${MODULE}, log4js through the /log4js appender (batches)`, dflt, 'client-log4js'),
  };
  const throughputRows = OPTS.rows.filter((k) => k !== 'storm');
  for (let i = 0; i < throughputRows.length; i++) {
    const key = throughputRows[i];
    const row = factories[key]();
    rows.push(await benchRow(row, sampler));
    // Stop the module's PM2 once no later row needs it: idle daemons are noise for the next row.
    if (moduleSandbox && !throughputRows.slice(i + 1).some((k) => MODULE_ROWS.includes(k))) await moduleSandbox.benchDestroy();
  }
  let storm;
  if (OPTS.rows.includes('storm')) {
    if (!tarball) {
      tarball = packTarball();
      const packDir = path.dirname(tarball);
      register(async () => removeDir(packDir));
    }
    storm = await runStorm({ tarball, instances: OPTS.instances, lines: OPTS.stormLines, afterSeconds: OPTS.stormAfter, readers: OPTS.stormReaders, say, register });
  }
  const load1 = os.loadavg();
  const t = targets(rows);
  const result = {
    when: new Date(started).toISOString(),
    seconds: (Date.now() - started) / 1000,
    machine: { cores: os.cpus().length, cpu: os.cpus()[0] && os.cpus()[0].model, node: process.version, platform: `${os.type()} ${os.release()}`, clkTck: CLK_TCK, loadBefore: load0, loadAfter: load1 },
    options: { ...OPTS, warmupLines: WARMUP_LINES },
    source,
    tarball: tarball ? path.basename(tarball) : null,
    rows,
    targets: t,
    storm,
  };
  const resultsDir = path.join(__dirname, 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${new Date(started).toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);

  const out = [];
  out.push(
    `pm2-scoped-intercom bench: ${OPTS.instances} cluster instances x ${OPTS.lines} log4js lines, median of ${OPTS.reps}; ` +
      `latency at a steady ${OPTS.rate} lines/s (${os.cpus().length} cores, node ${process.version}, load ${load0[0].toFixed(2)} -> ${load1[0].toFixed(2)})`,
  );
  out.push(`module source: ${source.text}`);
  out.push('');
  out.push(table(rows));
  out.push('');
  out.push('lines/s: end to end, first line sent to last line written (file mtime); lost: sent - unique lines written, all runs.');
  out.push('relay CPU: the module\'s utime+stime, all CPU: every process of the row (apps, PM2 daemon, module), both per line written (N x K a run).');
  out.push('latency: send time in the line -> write time added by the writer\'s log4js layout, lines that cross a process (b: instances 1..N-1).');
  if (rows.some((r) => r.summary.latencyMethod === 'seen')) out.push('*: (c) has no writer to instrument: time the line became visible in the file to the bench (inotify).');
  for (const r of rows) {
    const c = r.extra && r.extra.moduleCounters;
    if (c) {
      out.push(
        `${r.label}: module counters in=${c.in} out=${c.out} dropped=${c.dropped} sendErrors=${c.sendErrors} (the bench counted ${r.summary.lost} lost)` +
          (r.extra.moduleRestartedDuringRuns ? '; WARNING: the module restarted during the runs' : ''),
      );
    }
  }
  out.push(`other load on the machine during each row (CPU not used by the bench's processes, share of all cores): ${rows.map((r) => `${r.key.replace('b2', "b'")} ${(100 * r.summary.otherLoad).toFixed(0)}%`).join(', ')}`);
  if (storm) {
    out.push('');
    out.push(formatStorm(storm, OPTS.instances, OPTS.stormLines, OPTS.stormAfter));
  }
  out.push('');
  out.push(formatTargets(t));
  out.push('');
  out.push(`results: ${path.relative(process.cwd(), file)} (${result.seconds.toFixed(0)} s)`);
  process.stdout.write(`${out.join('\n')}\n`);
}

main()
  .catch((err) => {
    process.exitCode = aborted ? 130 : 1;
    if (!aborted) say(`failed: ${err && err.stack ? err.stack : err}`);
  })
  .finally(() => cleanup());
