#!/usr/bin/env node
'use strict';
/**
 * The main job, end to end, in a private PM2 (its own PM2_HOME in .demo/, never ~/.pm2):
 *   1. pack this module and `pm2 install` the tarball, as a user would;
 *   2. start ecosystem.config.js (two log4js cluster apps: api x4, worker x3);
 *   3. while they log, restart api's writer (instance 0) to show nothing is lost meanwhile;
 *   4. print, per app: lines sent, written, missing, duplicated, foreign; and the module's status;
 *   5. stop everything (pm2 kill of the private daemon), even on failure or Ctrl-C.
 */
const fs = require('fs');
const path = require('path');
const { Pm2Sandbox, packTarball, waitFor, ROOT } = require('../test/support/pm2-sandbox');
const { judge, formatJudgement, readReports } = require('../test/support/judge');

const DEMO = path.join(ROOT, '.demo');
const LINES = Number(process.env.LINES || 3000);
const RATE = Number(process.env.RATE || 500);

function step(text) {
  process.stdout.write(`\n== ${text}\n`);
}

async function main() {
  fs.rmSync(DEMO, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  fs.mkdirSync(DEMO, { recursive: true });
  const sb = new Pm2Sandbox(DEMO);
  const logDir = path.join(DEMO, 'logs');
  const reportDir = path.join(DEMO, 'reports');
  fs.mkdirSync(logDir, { recursive: true });
  fs.mkdirSync(reportDir, { recursive: true });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    step('stopping the private PM2');
    await sb.kill();
  };
  process.on('SIGINT', () => stop().then(() => process.exit(130)));

  try {
    step(`packing the module and installing it into a private PM2 (PM2_HOME=${path.relative(ROOT, sb.home)})`);
    const tarball = packTarball(DEMO);
    await sb.install(tarball);
    const started = sb.moduleLog().split('\n').find((l) => l.includes('relaying'));
    console.log(started ? started.replace(/^\S+ /, '') : 'module online');

    step(`starting ecosystem.config.js: api x4 and worker x3, ${LINES} lines each at ${RATE} lines/s`);
    await sb.pm2(['start', path.join(ROOT, 'ecosystem.config.js')], { env: { LOG_DIR: logDir, REPORT_DIR: reportDir, LINES: String(LINES), RATE: String(RATE) } });

    const list = await sb.jlist();
    const writer = list.find((p) => p.name === 'api' && Number(p.pm2_env.NODE_APP_INSTANCE) === 0);
    await waitFor(() => readReports(reportDir).filter((r) => r.sent > LINES / 3).length >= 7, { timeoutMs: 60000, what: 'the apps to be mid-stream' });
    step(`restarting api's writer (pm_id ${writer.pm_id}) while everyone logs`);
    await sb.pm2(['restart', String(writer.pm_id)]);

    step('waiting for every instance to finish and for the files to settle');
    await waitFor(
      async () => {
        const live = (await sb.jlist()).filter((p) => p.name !== 'pm2-scoped-intercom' && p.pm2_env.status === 'online').map((p) => p.pid);
        const reports = readReports(reportDir);
        return reports.length >= 8 && reports.every((r) => r.done) && live.every((pid) => reports.some((r) => r.pid === pid && r.done));
      },
      { timeoutMs: 180000, every: 250, what: 'all instances to finish' },
    );
    let last = '';
    let since = Date.now();
    await waitFor(
      () => {
        const sig = ['api', 'worker'].map((a) => (fs.existsSync(path.join(logDir, `${a}.log`)) ? fs.statSync(path.join(logDir, `${a}.log`)).size : 0)).join();
        if (sig !== last) [last, since] = [sig, Date.now()];
        return Date.now() - since > 2000;
      },
      { timeoutMs: 60000, what: 'the files to settle' },
    );

    const result = judge({ apps: ['api', 'worker'].map((tag) => ({ tag, file: path.join(logDir, `${tag}.log`) })), reportDir });
    step('result (judged by what each instance says it sent)');
    console.log(formatJudgement(result));
    const status = await sb.trigger('status');
    step("the module's view (pm2 trigger pm2-scoped-intercom status)");
    for (const a of status.apps) {
      console.log(`${a.namespace}/${a.name}: ${a.instances} instances, writer pm_id ${a.writer_pm_id} (instance ${a.writer_instance}), forwarded ${a.forwarded}, held ${a.held}, dropped ${a.dropped}`);
    }
    const bad = Object.values(result).some((r) => r.missing || r.duplicated || r.foreign);
    console.log(bad ? '\nFAIL: some lines were missing, duplicated or in the wrong file.' : '\nOK: every line is in its own app\'s file exactly once.');
    console.log(`Log files: ${path.relative(ROOT, logDir)}/api.log, ${path.relative(ROOT, logDir)}/worker.log`);
    process.exitCode = bad ? 1 : 0;
  } catch (err) {
    console.error(`demo failed: ${err && err.stack ? err.stack : err}`);
    console.error(`module log:\n${sb.moduleLog().slice(-3000)}`);
    process.exitCode = 1;
  } finally {
    await stop();
  }
}

main();
