'use strict';
/**
 * The storm row of `npm run bench`: 4 cluster instances each log 50,000 lines in one synchronous
 * loop (an error storm), the module at its default settings, installed from the bench's tarball
 * into a fresh private PM2. Measured: lines lost (sent minus distinct lines written), peak RSS of
 * the module and the daemon (sampled every 100 ms), bytes in the module's spool at peak, and the
 * time from the first line sent to the last line written (the drain).
 */
const fs = require('fs');
const path = require('path');
const { Pm2Sandbox, waitFor, MODULE } = require('../test/support/pm2-sandbox');
const { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } = require('../test/support/apps');
const { judge } = require('../test/support/judge');
const { rssBytes } = require('./lib/proc');

const MB = 1024 * 1024;

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
 * @param {{ tarball: string, instances: number, lines: number, say: (l: string) => void, register: (fn: () => Promise<void>) => () => Promise<void> }} o
 */
async function runStorm(o) {
  const sb = Pm2Sandbox.create('pm2si-bench-storm-');
  const destroy = o.register(async () => sb.destroy());
  try {
    o.say(`storm: installing the module into a fresh PM2 (defaults), ${o.instances} x ${o.lines} lines in one loop each ...`);
    await sb.install(o.tarball);
    const mod = await sb.moduleProc();
    const daemon = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
    const spoolLine = sb.moduleLog().split('\n').reverse().find((l) => / spool: \//.test(l));
    const spoolDir = spoolLine ? spoolLine.replace(/^.* spool: (\/\S+?)(,.*)?$/, '$1') : undefined;
    const idle = { module: rssBytes(mod.pid), daemon: rssBytes(daemon) };
    const peak = { module: 0, daemon: 0, spool: 0 };
    const sample = () => {
      peak.module = Math.max(peak.module, rssBytes(mod.pid) || 0);
      peak.daemon = Math.max(peak.daemon, rssBytes(daemon) || 0);
      if (spoolDir) peak.spool = Math.max(peak.spool, dirBytes(spoolDir));
    };
    const timer = setInterval(sample, 100);
    const t0 = Date.now();
    await sb.start([logApp(sb.work, { name: 'storm', instances: o.instances, lines: o.lines, rate: 0 })]);
    await waitSendersDone(sb.work, 'storm', o.instances, 600000);
    await waitFor(async () => (await sb.trigger('status')).counters.held === 0, { timeoutMs: 600000, every: 500, what: 'the storm to drain' });
    await waitQuiet([logFile(sb.work, 'storm')], 1500);
    clearInterval(timer);
    sample();
    const drainedAt = fs.statSync(logFile(sb.work, 'storm')).mtimeMs;
    const r = judge({ apps: [{ tag: 'storm', file: logFile(sb.work, 'storm') }], reportDir: reportDirOf(sb.work) }).storm;
    const st = await sb.trigger('status');
    const after = await sb.moduleProc();
    return {
      sent: r.sent,
      written: r.written,
      lost: r.missing,
      duplicated: r.duplicated,
      dropped: st.counters.dropped,
      spooledPeakBytes: peak.spool,
      moduleIdleRss: idle.module,
      modulePeakRss: peak.module,
      daemonIdleRss: idle.daemon,
      daemonPeakRss: peak.daemon,
      drainSeconds: (drainedAt - t0) / 1000,
      moduleRestarted: after.pm2_env.restart_time !== mod.pm2_env.restart_time,
      module: MODULE,
    };
  } finally {
    await destroy();
  }
}

function formatStorm(s, instances, lines) {
  const f = (b) => (b / MB).toFixed(0);
  return [
    `(storm) ${instances} x ${lines} lines in one loop, defaults: sent ${s.sent}, written ${s.written}, lost ${s.lost}, duplicated ${s.duplicated}, dropped (module's count) ${s.dropped}`,
    `  module RSS idle ${f(s.moduleIdleRss)} MB, peak ${f(s.modulePeakRss)} MB; daemon RSS idle ${f(s.daemonIdleRss)} MB, peak ${f(s.daemonPeakRss)} MB (+${f(s.daemonPeakRss - s.daemonIdleRss)}); spool at peak ${f(s.spooledPeakBytes)} MB on disk; drained ${s.drainSeconds.toFixed(1)} s after the start${s.moduleRestarted ? '; WARNING: the module restarted' : ''}`,
    `  targets: 0 lost ${s.lost === 0 && s.dropped === 0 ? 'MET' : 'MISS'}; module peak RSS <= 100 MB ${s.modulePeakRss <= 100 * MB ? 'MET' : 'MISS'} (${f(s.modulePeakRss)} MB)`,
  ].join('\n');
}

module.exports = { runStorm, formatStorm };
