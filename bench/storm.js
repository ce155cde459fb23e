'use strict';
/**
 * The storm rows of `npm run bench` (issues 11 and 29): 4 cluster instances each log 250,000 lines
 * as fast as they can (an error storm: 1,000,000 lines; test/fixtures/log-app.js logs in batches of
 * 200 with RATE=0), in one run, three times, each in a fresh private PM2, differing only in who
 * reads PM2's bus:
 *   none    nobody (no module): what PM2 itself pays to take the senders' messages in
 *   bare    a bare bus listener that only counts (bench/fixtures/bus-counter.js, `pm2.launchBus`):
 *           what any reader of PM2's bus costs the daemon
 *   module  this module at its default settings, installed from the bench's tarball
 * Measured in each: the daemon's RSS every 100 ms from /proc (idle, peak, and `--storm-after`
 * seconds after the storm), and from inside the daemon (bench/lib/daemon-probe.js, preloaded):
 * its heap, external memory, anonymous memory, the bytes its bus holds for a slow reader, the
 * bytes queued on its IPC pipes to the apps, and how many packets it published. The kernel's part
 * of the bus backlog (the reader's unread bytes) comes from `ss -x`. For the module: lines lost
 * (sent minus distinct lines written), its peak RSS, its spool at the peak, the drain time.
 */
const fs = require('fs');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const { Pm2Sandbox, waitFor, MODULE } = require('../test/support/pm2-sandbox');
const { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } = require('../test/support/apps');
const { readReports, judge } = require('../test/support/judge');
const { rssBytes } = require('./lib/proc');

const MB = 1024 * 1024;
const PROBE = path.join(__dirname, 'lib', 'daemon-probe.js');
const MODULE_PROBE = path.join(__dirname, 'lib', 'module-probe.js');
const COUNTER = path.join(__dirname, 'fixtures', 'bus-counter.js');
const READERS = ['none', 'bare', 'module'];

function dirBytes(dir) {
  try {
    return fs.readdirSync(dir).reduce((s, f) => {
      try {
        return s + fs.statSync(path.join(dir, f)).size;
      } catch {
        return s;
      }
    }, 0);
  } catch {
    return 0;
  }
}

/**
 * Unread bytes in the kernel on the reader's end of each bus connection of this PM2 (`ss -x`:
 * Recv-Q of the socket whose peer is an accepted pub.sock connection). undefined: no `ss`.
 */
function busKernelQueued(pubSock) {
  let text;
  try {
    text = execFileSync('ss', ['-xH'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
  } catch {
    return undefined;
  }
  const rows = text.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 8);
  const peersOfPub = new Set(rows.filter((f) => f[4] === pubSock).map((f) => f[7]));
  let q = 0;
  for (const f of rows) if (peersOfPub.has(f[5])) q += Number(f[2]) || 0;
  return q;
}

/** Counts the lines appended to a file since the last call, reading only what is new. */
class LineCounter {
  #file;
  #offset = 0;
  lines = 0;
  constructor(file) {
    this.#file = file;
  }
  update() {
    let fd;
    try {
      fd = fs.openSync(this.#file, 'r');
    } catch {
      return this.lines;
    }
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, this.#offset);
        if (n <= 0) break;
        for (let i = 0; i < n; i++) if (buf[i] === 10) this.lines++;
        this.#offset += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return this.lines;
  }
}

function readProbe(file) {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

const maxOf = (rows, k, from = 0, to = Infinity) => rows.reduce((m, r) => (r.t >= from && r.t <= to && typeof r[k] === 'number' ? Math.max(m, r[k]) : m), 0);
const at = (rows, t) => rows.reduce((best, r) => (r.t <= t ? r : best), rows[0]);

/**
 * The daemon's bus, second by second: packets published, and packets the reader has taken
 * (estimated from bytes: the published bytes minus what waits in the daemon and in the kernel,
 * at the bytes per packet of the whole storm). Returns the peak rates and the largest lag.
 */
function busFigures(probe, kernel, from, to) {
  const rows = probe.filter((r) => r.t >= from && r.t <= to);
  if (rows.length < 2) return undefined;
  const last = rows[rows.length - 1];
  const bytesPerPacket = last.published > 0 && last.busBytes > 0 ? last.busBytes / last.published : 0;
  const kernelAt = (t) => {
    let q = 0;
    for (const k of kernel) if (k.t <= t) q = k.queued;
    return q;
  };
  let behindMax = 0;
  let behindMaxBytes = 0;
  let pubPeak = 0;
  let readPeak = 0;
  const read = (r) => (bytesPerPacket > 0 ? Math.max(0, (r.busBytes - r.busQueued - kernelAt(r.t)) / bytesPerPacket) : 0);
  let prev = rows[0];
  for (const r of rows) {
    const behindBytes = r.busQueued + kernelAt(r.t);
    if (behindBytes > behindMaxBytes) behindMaxBytes = behindBytes;
    if (bytesPerPacket > 0) behindMax = Math.max(behindMax, behindBytes / bytesPerPacket);
    if (r.t - prev.t >= 1000) {
      const s = (r.t - prev.t) / 1000;
      pubPeak = Math.max(pubPeak, (r.published - prev.published) / s);
      readPeak = Math.max(readPeak, (read(r) - read(prev)) / s);
      prev = r;
    }
  }
  const first = rows.find((r) => r.published > rows[0].published) ?? rows[0];
  const published = last.published - rows[0].published;
  const lastPublish = rows.find((r) => r.published === last.published) ?? last;
  const caughtUp = rows.find((r) => r.t >= lastPublish.t && r.busQueued + kernelAt(r.t) === 0);
  return {
    published,
    publishSeconds: (lastPublish.t - first.t) / 1000,
    readSeconds: caughtUp ? (caughtUp.t - first.t) / 1000 : undefined,
    pubPeakPerSec: pubPeak,
    readPeakPerSec: readPeak,
    behindMaxPackets: behindMax,
    behindMaxBytes,
    bytesPerPacket,
  };
}

/** One probe row a second: what the daemon held, from the storm's start on. */
function perSecond(probe, kernel, t0) {
  const out = [];
  let next = t0;
  let k = 0;
  for (const r of probe) {
    if (r.t < next) continue;
    while (k + 1 < kernel.length && kernel[k + 1].t <= r.t) k++;
    const mb = (b) => (typeof b === 'number' ? Math.round(b / 1024) / 1024 : undefined);
    out.push({
      t: Math.round((r.t - t0) / 100) / 10,
      rss: mb(r.rss),
      anon: mb(r.anon),
      heapUsed: mb(r.heapUsed),
      heapTotal: mb(r.heapTotal),
      external: mb(r.external),
      busQueued: mb(r.busQueued),
      kernelQueued: kernel.length > 0 && kernel[k].t <= r.t ? mb(kernel[k].queued) : undefined,
      ipcQueued: mb(r.ipcQueued),
      published: r.published,
    });
    next = r.t + 1000;
  }
  return out;
}

/**
 * One storm in a fresh private PM2, `reader` reading its bus.
 * @param {{ tarball: string, instances: number, lines: number, afterSeconds: number, say: (l: string) => void, register: (fn: () => Promise<void>) => () => Promise<void> }} o
 * @param {'none'|'bare'|'module'} reader
 */
async function runStormRow(o, reader) {
  const sb = Pm2Sandbox.create(`pm2si-bench-storm-${reader}-`);
  const probeFile = path.join(sb.dir, 'daemon-probe.jsonl');
  const moduleProbeFile = path.join(sb.dir, 'module-probe.jsonl');
  sb.extraEnv = {
    ...sb.extraEnv,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${PROBE} --require ${MODULE_PROBE}`.trim(),
    PM2SI_DAEMON_PROBE: probeFile,
    PM2SI_MODULE_PROBE: moduleProbeFile,
  };
  const destroy = o.register(async () => sb.destroy());
  let counter;
  const stopCounter = o.register(async () => {
    if (counter && counter.exitCode === null) {
      const gone = new Promise((r) => counter.once('exit', r));
      counter.kill('SIGTERM');
      await gone;
    }
  });
  try {
    o.say(`storm (${reader}): a fresh PM2${reader === 'module' ? ' with the module (defaults)' : reader === 'bare' ? ' with a bare bus listener' : ', nobody on its bus'}, ${o.instances} x ${o.lines} lines as fast as they can ...`);
    let mod;
    let spoolDir;
    const counterFile = path.join(sb.dir, 'bus-counter.json');
    if (reader === 'module') {
      await sb.install(o.tarball);
      mod = await sb.moduleProc();
      const spoolLine = sb.moduleLog().split('\n').reverse().find((l) => / spool: \//.test(l));
      spoolDir = spoolLine ? spoolLine.replace(/^.* spool: (\/\S+?)(,.*)?$/, '$1') : undefined;
    } else {
      await sb.pm2(['ping']);
      if (reader === 'bare') {
        counter = spawn(process.execPath, [COUNTER], { env: { ...sb.env, OUT_FILE: counterFile, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'inherit'] });
        await new Promise((resolve, reject) => {
          counter.stdout.on('data', (d) => String(d).includes('listening') && resolve());
          counter.once('exit', (code) => reject(new Error(`bus-counter exited (${code})`)));
        });
      }
    }
    const daemon = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
    const pubSock = path.join(sb.home, 'pub.sock');
    // Let the daemon settle after the install before its idle figure.
    await new Promise((r) => setTimeout(r, 2000));
    const readerPid = mod ? mod.pid : counter?.pid;
    const idle = { daemon: rssBytes(daemon), reader: readerPid ? rssBytes(readerPid) : 0 };
    const peak = { daemon: 0, reader: 0, spool: 0 };
    const kernel = [];
    let ticks = 0;
    const sample = () => {
      peak.daemon = Math.max(peak.daemon, rssBytes(daemon) || 0);
      if (readerPid) peak.reader = Math.max(peak.reader, rssBytes(readerPid) || 0);
      if (spoolDir) peak.spool = Math.max(peak.spool, dirBytes(spoolDir));
      if (ticks++ % 5 === 0) {
        const q = busKernelQueued(pubSock);
        if (q !== undefined) kernel.push({ t: Date.now(), queued: q });
      }
    };
    const timer = setInterval(sample, 100);
    const t0 = Date.now();
    const file = logFile(sb.work, 'storm');
    await sb.start([logApp(sb.work, { name: 'storm', instances: o.instances, lines: o.lines, rate: 0 })]);
    const reports = await waitSendersDone(sb.work, 'storm', o.instances, 900000);
    const total = reports.reduce((s, r) => s + r.sent, 0);
    const relayed = reports.filter((r) => String(r.instance) !== '0').reduce((s, r) => s + r.sent, 0);
    // Done: every sender's packet published (and, with a reader, read; with the module, written).
    const published = () => readProbe(probeFile).pop()?.published ?? 0;
    await waitFor(() => published() >= relayed, { timeoutMs: 900000, every: 500, what: 'PM2 to publish every packet' });
    let counted;
    if (reader === 'bare') {
      await waitFor(
        () => {
          try {
            counted = JSON.parse(fs.readFileSync(counterFile, 'utf8'));
          } catch {
            return false;
          }
          return counted.count >= relayed;
        },
        { timeoutMs: 900000, every: 500, what: 'the bare listener to count every packet' },
      );
    }
    let st;
    if (reader === 'module') {
      const lines = new LineCounter(file);
      let lastN = -1;
      let lastChange = Date.now();
      await waitFor(
        () => {
          const n = lines.update();
          if (n !== lastN) [lastN, lastChange] = [n, Date.now()];
          return n >= total || Date.now() - lastChange > 30000;
        },
        { timeoutMs: 1800000, every: 500, what: 'the storm to drain' },
      );
      await waitQuiet([file], 1500);
      st = await sb.trigger('status');
    }
    const endedAt = Date.now();
    sample();
    clearInterval(timer);
    const drainedAt = reader === 'module' ? fs.statSync(file).mtimeMs : endedAt;
    o.say(`storm (${reader}): done after ${((endedAt - t0) / 1000).toFixed(1)} s; the daemon is watched ${o.afterSeconds} s more ...`);
    await new Promise((r) => setTimeout(r, o.afterSeconds * 1000));
    const afterRss = rssBytes(daemon);
    const probe = readProbe(probeFile);
    const after = at(probe, Date.now());
    const r = reader === 'module' ? judge({ apps: [{ tag: 'storm', file }], reportDir: reportDirOf(sb.work) }).storm : undefined;
    const modAfter = reader === 'module' ? await sb.moduleProc() : undefined;
    const bus = busFigures(probe, kernel, t0, endedAt);
    const mp = reader === 'module' ? readProbe(moduleProbeFile).filter((m) => m.t >= t0 && m.t <= endedAt + 1000) : [];
    const moduleLoop = mp.length > 0
      ? {
          loopMaxMs: Math.max(...mp.map((m) => m.loopMaxMs)),
          secondsHeldOver100ms: mp.filter((m) => m.loopMaxMs > 100).length,
          gcMs: mp.reduce((x, m) => x + m.gcMs, 0),
          gcMaxMs: Math.max(...mp.map((m) => m.gcMaxMs)),
          gcMajor: mp.reduce((x, m) => x + m.gcMajor, 0),
          cpuMs: mp.reduce((x, m) => x + m.cpuMs, 0),
        }
      : undefined;
    return {
      reader,
      sent: total,
      relayed,
      published: bus?.published,
      counted: counted?.count,
      counterMaxLagMs: counted?.maxLagMs,
      counterMeanLagMs: counted && counted.count > 0 ? counted.lagSumMs / counted.count : undefined,
      written: r?.written,
      lost: r?.missing,
      duplicated: r?.duplicated,
      dropped: st?.counters.dropped,
      spooledPeakBytes: peak.spool,
      readerIdleRss: idle.reader,
      readerPeakRss: peak.reader,
      daemonIdleRss: idle.daemon,
      daemonPeakRss: Math.max(peak.daemon, maxOf(probe, 'rss', t0, endedAt)),
      daemonAfterRss: afterRss,
      daemon: {
        heapUsedPeak: maxOf(probe, 'heapUsed', t0, endedAt),
        heapTotalPeak: maxOf(probe, 'heapTotal', t0, endedAt),
        externalPeak: maxOf(probe, 'external', t0, endedAt),
        arrayBuffersPeak: maxOf(probe, 'arrayBuffers', t0, endedAt),
        anonIdle: probe.find((p) => p.t >= t0 - 1000)?.anon,
        anonPeak: maxOf(probe, 'anon', t0, endedAt),
        busQueuedPeak: maxOf(probe, 'busQueued', t0, endedAt),
        ipcQueuedPeak: maxOf(probe, 'ipcQueued', t0, endedAt),
        after: after && { heapUsed: after.heapUsed, heapTotal: after.heapTotal, external: after.external, anon: after.anon },
      },
      kernelQueuedPeak: kernel.length > 0 ? Math.max(...kernel.map((k) => k.queued)) : undefined,
      bus,
      moduleLoop,
      seconds: (endedAt - t0) / 1000,
      drainSeconds: (drainedAt - t0) / 1000,
      moduleRestarted: modAfter ? modAfter.pm2_env.restart_time !== mod.pm2_env.restart_time : false,
      probeRows: probe.length,
      moduleSeries: reader === 'module' ? readProbe(moduleProbeFile).map((m) => ({ ...m, t: Math.round((m.t - t0) / 100) / 10 })) : undefined,
      // The daemon second by second (t: seconds from the start of the storm), for docs and plots.
      series: perSecond(probe, kernel, t0),
    };
  } finally {
    await stopCounter();
    await destroy();
  }
}

/**
 * The storm rows, one after the other.
 * @param {{ tarball: string, instances: number, lines: number, afterSeconds: number, readers?: string[], say: (l: string) => void, register: (fn: () => Promise<void>) => () => Promise<void> }} o
 */
async function runStorm(o) {
  const rows = [];
  for (const reader of o.readers ?? READERS) rows.push(await runStormRow(o, reader));
  return { rows, module: MODULE };
}

function formatStorm(s, instances, lines, afterSeconds) {
  const f = (b) => (typeof b === 'number' ? (b / MB).toFixed(0) : '-');
  const n = (x) => (typeof x === 'number' ? Math.round(x).toLocaleString('en-US') : '-');
  const out = [`(storm) ${instances} x ${lines} lines as fast as they can; who reads PM2's bus:`];
  const grow = (r) => r.daemonPeakRss - r.daemonIdleRss;
  for (const r of s.rows) {
    const d = r.daemon;
    const who = r.reader === 'module' ? 'the module, defaults' : r.reader === 'bare' ? 'a bare listener (counts)' : 'nobody';
    out.push(
      `  ${who}: daemon RSS idle ${f(r.daemonIdleRss)} MB, peak ${f(r.daemonPeakRss)} MB (+${f(grow(r))}), ${afterSeconds} s after ${f(r.daemonAfterRss)} MB (${r.daemonAfterRss - r.daemonIdleRss >= 0 ? '+' : ''}${f(r.daemonAfterRss - r.daemonIdleRss)}); ` +
        `heap used/total peak ${f(d.heapUsedPeak)}/${f(d.heapTotalPeak)} MB, external ${f(d.externalPeak)} MB, anonymous ${f(d.anonIdle)} -> ${f(d.anonPeak)} MB, ` +
        `after: heap ${f(d.after?.heapUsed)}/${f(d.after?.heapTotal)}, anonymous ${f(d.after?.anon)} MB`,
    );
    if (r.reader !== 'none') {
      const b = r.bus;
      out.push(
        `    bus: ${n(b?.published)} published in ${b?.publishSeconds?.toFixed(1)} s (peak ${n(b?.pubPeakPerSec)}/s), read by ${b?.readSeconds === undefined ? '-' : `${b.readSeconds.toFixed(1)} s`} (peak ${n(b?.readPeakPerSec)}/s); ` +
          `behind at most ${n(b?.behindMaxPackets)} packets (${f(b?.behindMaxBytes)} MB: in the daemon ${f(d.busQueuedPeak)} MB, kernel ${r.kernelQueuedPeak === undefined ? 'unread (no ss)' : `${(r.kernelQueuedPeak / 1024).toFixed(0)} KB`}); ` +
          `IPC to apps queued peak ${f(d.ipcQueuedPeak)} MB; reader RSS ${f(r.readerIdleRss)} -> ${f(r.readerPeakRss)} MB` +
          (r.reader === 'bare' ? `; counted ${n(r.counted)}, lag mean ${r.counterMeanLagMs?.toFixed(0)} ms, max ${n(r.counterMaxLagMs)} ms` : ''),
      );
    } else {
      out.push(`    ${n(r.published)} packets published to nobody in ${r.bus?.publishSeconds?.toFixed(1)} s; IPC to apps queued peak ${f(d.ipcQueuedPeak)} MB`);
    }
    if (r.reader === 'module') {
      out.push(
        `    sent ${n(r.sent)}, written ${n(r.written)}, lost ${r.lost}, duplicated ${r.duplicated}, dropped (module's count) ${r.dropped}; spool at peak ${f(r.spooledPeakBytes)} MB; drained ${r.drainSeconds.toFixed(1)} s after the start` +
          (r.moduleRestarted ? '; WARNING: the module restarted' : ''),
      );
      const l = r.moduleLoop;
      if (l) {
        out.push(
          `    module's event loop (bench/lib/module-probe.js): held at most ${l.loopMaxMs.toFixed(0)} ms, over 100 ms in ${l.secondsHeldOver100ms} seconds; ` +
            `GC ${(l.gcMs / 1000).toFixed(1)} s in all (longest ${l.gcMaxMs.toFixed(0)} ms, ${l.gcMajor} full); CPU ${(l.cpuMs / 1000).toFixed(1)} s`,
        );
      }
    }
  }
  const mod = s.rows.find((r) => r.reader === 'module');
  const bare = s.rows.find((r) => r.reader === 'bare');
  const targets = [];
  if (mod) {
    targets.push(`0 lost ${mod.lost === 0 && mod.dropped === 0 ? 'MET' : 'MISS'}`);
    targets.push(`module peak RSS <= 100 MB ${mod.readerPeakRss <= 100 * MB ? 'MET' : 'MISS'} (${f(mod.readerPeakRss)} MB)`);
    if (bare) {
      const ratio = grow(mod) / grow(bare);
      targets.push(`daemon peak growth module / bare listener ${ratio.toFixed(2)} x (<= 1.2 ${ratio <= 1.2 ? 'MET' : 'MISS'})`);
    }
    const back = mod.daemonAfterRss - mod.daemonIdleRss;
    targets.push(`daemon ${afterSeconds} s after within 30 MB of idle ${back <= 30 * MB ? 'MET' : 'MISS'} (+${f(back)} MB)`);
  }
  if (targets.length > 0) out.push(`  targets: ${targets.join('; ')}`);
  return out.join('\n');
}

module.exports = { runStorm, formatStorm, busFigures, READERS };
