'use strict';
/**
 * Where the relay spends its CPU: runs dist/app.js (the module's entry) under `node --cpu-prof`
 * as a plain process connected to a private PM2 (PM2 cannot pass node flags to a module), has a
 * 4-instance log4js app burst K lines per instance, and prints the top functions by self time.
 *
 *   npm run build && node bench/profile-relay.js [--lines 20000] [--inflight 1] [--instances 4]
 *     [--buffer-mb MB] [--build DIR (a copy with dist/ and package.json)] [--no-prof] [--runs R]
 *     [--entry bench/fixtures/minimal-relay.js (the floor: bus in, sendDataToProcessId out)]
 *     [--relay-node-options "--max-semi-space-size=2"] [--conf '{"reload_probe":"off"}' (module settings)]
 *
 * The profile is written to bench/results/relay-<timestamp>.cpuprofile (open it in Chrome
 * DevTools > Performance). A development aid; `npm run bench` is the benchmark.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const { Pm2Sandbox, waitFor, ROOT, MODULE } = require('../test/support/pm2-sandbox');
const { cpuMicros, cpuSplit, syscallCounts, alive, RssSampler } = require('./lib/proc');
const { Tail } = require('./lib/tail');
const { readReports, judgeRun } = require('./lib/judge');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const LINES = Number(option('lines', '20000'));
const INFLIGHT = Number(option('inflight', '1'));
const N = Number(option('instances', '4'));
const BUFFER_MB = option('buffer-mb', undefined);
// Another build of the module to profile (a directory holding dist/ and package.json), e.g. to
// measure a candidate change before making it; its node_modules come from this checkout.
const BUILD = path.resolve(option('build', ROOT));
// Or another relay script altogether (bench/fixtures/minimal-relay.js: the floor PM2 allows).
const ENTRY = option('entry', undefined);
const say = (l) => process.stderr.write(`[profile] ${l}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const sb = Pm2Sandbox.create('pm2si-bench-prof-');
  const profDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-bench-cpuprof-'));
  let relay;
  let stopped;
  const stop = () =>
    (stopped ??= (async () => {
      if (relay && alive(relay.pid)) relay.kill('SIGKILL');
      let daemon;
      try {
        daemon = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
      } catch {
        /* none */
      }
      await sb.kill().catch(() => {});
      // `pm2 kill` returns before the daemon has exited: wait, so the directory can go.
      if (daemon) await waitFor(() => !alive(daemon), { timeoutMs: 15000 }).catch(() => say(`daemon ${daemon} still alive`));
      for (const dir of [sb.dir, profDir]) {
        try {
          fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
        } catch (err) {
          say(`could not remove ${dir}: ${err.message}`);
        }
      }
    })());
  process.on('SIGINT', () => stop().finally(() => process.exit(130)));
  try {
    await sb.pm2(['ping']);
    const work = path.join(sb.work, 'p');
    const reports = path.join(work, 'reports');
    fs.mkdirSync(reports, { recursive: true });
    const control = path.join(work, 'control.json');
    const logFile = path.join(work, 'app.log');
    const conf = { max_inflight: INFLIGHT };
    if (BUFFER_MB) conf.buffer_mb = Number(BUFFER_MB);
    Object.assign(conf, JSON.parse(option('conf', '{}')));
    // Run as a plain process, the module has no process.send: the send guard (proc_checks=off)
    // would have no channel for its fences and relay almost nothing. `npm run bench -- --rows bg`.
    if (conf.proc_checks === 'off') throw new Error('proc_checks=off needs the module under PM2: use node bench/run.js --rows bg');
    const env = { ...sb.env, WINDOW: String(INFLIGHT), name: MODULE, [MODULE]: JSON.stringify(conf), PM2_SCOPED_INTERCOM_STATE_DIR: path.join(sb.dir, 'state'), PM2_SCOPED_INTERCOM_DAEMON_PID: fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim(), NODE_PATH: path.join(ROOT, 'node_modules') };
    const nodeOptions = option('relay-node-options', undefined);
    if (nodeOptions) env.NODE_OPTIONS = nodeOptions;
    const args = process.argv.includes('--no-prof') ? [] : ['--cpu-prof', `--cpu-prof-dir=${profDir}`];
    relay = spawn(process.execPath, [...args, ENTRY ? path.resolve(ENTRY) : path.join(BUILD, 'dist', 'app.js')], { cwd: BUILD, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    relay.stdout.on('data', (d) => (out += d));
    relay.stderr.on('data', (d) => (out += d));
    await waitFor(() => out.includes('relaying'), { timeoutMs: 20000, what: 'the relay to start' });
    say(out.trim().split('\n').pop());
    const rss = new RssSampler(50);
    rss.watch('relay', relay.pid);
    const daemonPid = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
    rss.watch('daemon', daemonPid);
    await sb.start([
      { name: 'bench', script: path.join(__dirname, 'fixtures', 'bench-app.js'), cwd: ROOT, exec_mode: 'cluster', instances: N, autorestart: false, env: { BENCH_MODE: 'pm2', BENCH_CONTROL: control, BENCH_REPORTS: reports, BENCH_LOG_FILE: logFile } },
    ]);
    await sleep(3000); // ready_delay
    const idle = rss.peaks();
    rss.reset();
    const runs = [[1, Math.min(LINES, 5000)]];
    for (let i = 0; i < Number(option('runs', '1')); i++) runs.push([runs.length + 1, LINES]);
    for (const [id, lines] of runs) {
      const tail = new Tail(logFile);
      const c0 = cpuMicros(relay.pid);
      const s0 = cpuSplit(relay.pid);
      const k0 = syscallCounts(relay.pid);
      fs.writeFileSync(control, JSON.stringify({ id, lines, rate: 0, at: Date.now() + 300 }));
      let rep = [];
      await waitFor(
        () => {
          rep = readReports(reports, id);
          if (rep.length < N) return false;
          tail.read();
          return tail.lines >= rep.reduce((s, r) => s + r.sent, 0) || Date.now() - tail.lastGrowth > 3000;
        },
        { timeoutMs: 120000, every: 100, what: 'the run to land' },
      ).catch((e) => say(e.message));
      const mtime = tail.stop();
      await sleep(300);
      const c1 = cpuMicros(relay.pid);
      const s1 = cpuSplit(relay.pid);
      const k1 = syscallCounts(relay.pid);
      const j = judgeRun({ id, chunks: tail.chunks, reports: rep, hop: (r) => String(r.instance) !== '0' });
      say(`run ${id}: ${j.written}/${j.sent} written (lost ${j.lost}) in ${((mtime - j.first) / 1000).toFixed(2)} s; relay ${((c1 - c0) / j.hopSent).toFixed(1)} us CPU per relayed line (user ${((s1.user - s0.user) / j.hopSent).toFixed(1)}, system ${((s1.system - s0.system) / j.hopSent).toFixed(1)})`);
      if (k0 && k1) {
        const per = (k) => ((k1[k] - k0[k]) / j.hopSent).toFixed(2);
        say(`run ${id}: per relayed line ${per('reads')} read and ${per('writes')} write syscalls, ${per('voluntary')} waits and ${per('preempted')} preemptions`);
      }
    }
    const peak = rss.peaks();
    say(`RSS idle -> peak: relay ${(idle.relay / 1048576).toFixed(0)} -> ${(peak.relay / 1048576).toFixed(0)} MB, PM2 daemon ${(idle.daemon / 1048576).toFixed(0)} -> ${(peak.daemon / 1048576).toFixed(0)} MB`);
    rss.stop();
    relay.kill('SIGINT');
    await waitFor(() => !alive(relay.pid), { timeoutMs: 10000, what: 'the relay to exit' });
    // What the relay said last (the module's shutdown line: delivered, held).
    for (const l of out.trim().split('\n').slice(-2)) say(`relay: ${l}`);
    const file = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (!file && args.length === 0) return;
    if (!file) throw new Error('no profile written');
    const resultsDir = path.join(__dirname, 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const dest = path.join(resultsDir, `relay-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
    fs.copyFileSync(path.join(profDir, file), dest);
    summarise(JSON.parse(fs.readFileSync(dest, 'utf8')));
    say(`profile: ${path.relative(process.cwd(), dest)}`);
  } finally {
    await stop();
  }
}

/** Self time per function and per source area, from a .cpuprofile. */
function summarise(prof) {
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) || 0) + (dt[i] || 0));
  const fn = new Map();
  const area = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    if (cf.functionName === '(idle)' || cf.functionName === '(program)') {
      idle += us;
      continue;
    }
    total += us;
    const url = cf.url.replace(/^file:\/\//, '');
    const where = url.includes('/dist/') ? `module ${url.slice(url.indexOf('/dist/') + 1)}` : url.includes('node_modules/') ? url.slice(url.lastIndexOf('node_modules/') + 13).split('/').slice(0, 2).join('/') : url ? `node ${path.basename(url)}` : cf.functionName;
    const key = `${cf.functionName || '(anonymous)'} ${where}:${cf.lineNumber + 1}`;
    fn.set(key, (fn.get(key) || 0) + us);
    const a = url.includes('/dist/') ? 'module (dist/)' : url.includes('pm2-axon') || url.includes('amp') ? 'pm2-axon / amp (bus + RPC sockets)' : url.includes('node_modules/') ? `node_modules/${url.slice(url.lastIndexOf('node_modules/') + 13).split('/')[0]}` : url.startsWith('node:') ? `node core ${url.slice(5).split('/')[0]}` : cf.functionName;
    area.set(a, (area.get(a) || 0) + us);
  }
  const top = (m, k) => [...m].sort((x, y) => y[1] - x[1]).slice(0, k);
  say(`busy ${(total / 1e6).toFixed(2)} s sampled (idle/program ${(idle / 1e6).toFixed(2)} s)`);
  say('by area:');
  for (const [k, v] of top(area, 15)) say(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
  say('top functions by self time:');
  for (const [k, v] of top(fn, 30)) say(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
}

main().catch((err) => {
  say(`failed: ${err.stack || err}`);
  process.exitCode = 1;
});
