'use strict';
// The log4js cluster app of `npm run chaos` (scripts/chaos.js): like test/fixtures/log-app.js
// (same lines "<tag> <pid> <seq>", same report file, same graceful SIGINT), but it logs at a
// steady rate until told to stop, logs bursts on demand, and keeps a trail of when its lines left
// it, so a line missing after a kill -9 can be placed before or after the kill. Environment:
//   LOG_FILE        the app's log file (the writer appends to it)
//   REPORT_DIR      "<tag>-<pid>.json" ({ tag, pid, instance, sent, done, startedAt, rate }), rewritten
//                   every 100 ms; "<tag>-<pid>.marks": one "<left> <epoch ms>" line per 100 ms (lines
//                   0..left-1 had left this process at that moment)
//   APP_TAG         the tag in every line
//   RATE            lines per second (steady)
//   LOG4JS_PM2_VAR  log4js pm2InstanceVar (default: not set, i.e. NODE_APP_INSTANCE)
//   STOP_FILE       once it exists, stop logging, report done when every line has left
//   BURST_FILE      holds "<n> <lines>": each time n grows, log <lines> lines at once
const fs = require('fs');
const path = require('path');
const log4js = require('log4js');

const env = process.env;
const tag = env.APP_TAG || env.name || 'app';
const pm2Var = env.LOG4JS_PM2_VAR;
const rate = Number(env.RATE || 100);
const reportDir = env.REPORT_DIR;
const instance = pm2Var ? env[pm2Var] : env.NODE_APP_INSTANCE;
const file = reportDir ? path.join(reportDir, `${tag}-${process.pid}`) : '';

const conf = {
  appenders: { file: { type: 'file', filename: env.LOG_FILE, layout: { type: 'pattern', pattern: '%m' } } },
  categories: { default: { appenders: ['file'], level: 'info' } },
  pm2: true,
};
if (pm2Var) conf.pm2InstanceVar = pm2Var;
log4js.configure(conf);
const logger = log4js.getLogger();

let sent = 0;
let stopped = false;
let done = false;
// What left this process: a sender's IPC writes completed (in order), a writer's own calls.
let ipcQueued = 0;
let ipcWritten = 0;
let logSends = 0;
let logWritten = 0;
if (process.send) {
  const send = process.send.bind(process);
  process.send = (msg, ...rest) => {
    ipcQueued++;
    const isLog = msg && typeof msg === 'object' && msg.topic === 'log4js:message';
    if (isLog) logSends++;
    return send(msg, () => {
      ipcWritten++;
      if (isLog) logWritten++;
    });
  };
}
const startedAt = Date.now();
const left = () => (logSends > 0 ? logWritten : sent);

function report() {
  if (!file) return;
  fs.writeFileSync(`${file}.json.tmp`, JSON.stringify({ tag, pid: process.pid, instance, sent: left(), done, startedAt, rate }));
  fs.renameSync(`${file}.json.tmp`, `${file}.json`);
  fs.appendFileSync(`${file}.marks`, `${left()} ${Date.now()}\n`);
}

function logLines(n) {
  for (let i = 0; i < n; i++) logger.info(`${tag} ${process.pid} ${sent++}`);
}

let due = 0;
let last = Date.now();
const stopFile = env.STOP_FILE;
const burstFile = env.BURST_FILE;
let burstSeen = -1;
const tick = setInterval(() => {
  if (stopped) return;
  if (stopFile && fs.existsSync(stopFile)) return finish();
  const now = Date.now();
  due += ((now - last) / 1000) * rate;
  last = now;
  const n = Math.floor(due);
  due -= n;
  logLines(n);
  if (burstFile) {
    let parts = [];
    try {
      parts = fs.readFileSync(burstFile, 'utf8').trim().split(' ').map(Number);
    } catch {
      /* no burst yet */
    }
    // A process started after a burst does not replay it.
    if (burstSeen < 0) burstSeen = parts[0] || 0;
    else if (parts[0] > burstSeen) {
      burstSeen = parts[0];
      logLines(parts[1] || 0);
    }
  }
}, 10);
report();
const reporter = setInterval(report, 100);

/** Told to stop: done once every line has left (bounded). */
function finish(deadline = Date.now() + 120000) {
  stopped = true;
  clearInterval(tick);
  if (logWritten < logSends && Date.now() < deadline) return setTimeout(() => finish(deadline), 10);
  done = true;
  report();
  clearInterval(reporter);
}

// Graceful exit (SIGINT from pm2 stop/restart/reload, or PM2's 'shutdown' message): stop logging,
// let the IPC channel drain, report, flush the file appender, exit.
let exiting = false;
function gracefulExit() {
  if (exiting) return;
  exiting = true;
  stopped = true;
  clearInterval(tick);
  clearInterval(reporter);
  const deadline = Date.now() + 1500;
  const wait = () => {
    if (ipcWritten < ipcQueued && Date.now() < deadline) return setTimeout(wait, 5);
    done = true;
    report();
    log4js.shutdown(() => process.exit(0));
  };
  wait();
}
process.on('SIGINT', gracefulExit);
process.on('message', (m) => {
  if (m === 'shutdown') gracefulExit();
});
// Stay alive when done, so PM2 does not restart the app.
setInterval(() => {}, 1 << 30);
