'use strict';
/** Ecosystem entries for the fixture log app, and waits on what its senders report. */
const fs = require('fs');
const path = require('path');
const { readReports } = require('./judge');
const { waitFor, ROOT } = require('./pm2-sandbox');

const LOG_APP = path.join(ROOT, 'test', 'fixtures', 'log-app.js');

/**
 * @param {string} work  the sandbox's work dir (log files and reports go there)
 * @param {{ name: string, instances?: number, lines?: number, rate?: number, namespace?: string,
 *   instance_var?: string, exec_mode?: string, env?: Record<string,string>, extra?: object }} o
 */
function logApp(work, o) {
  const reportDir = path.join(work, 'reports');
  fs.mkdirSync(reportDir, { recursive: true });
  const app = {
    name: o.name,
    script: LOG_APP,
    cwd: ROOT,
    exec_mode: o.exec_mode || 'cluster',
    instances: o.instances ?? 4,
    autorestart: true,
    env: {
      APP_TAG: o.tag || o.name,
      LOG_FILE: logFile(work, o.tag || o.name),
      REPORT_DIR: reportDir,
      LINES: String(o.lines ?? 1000),
      RATE: String(o.rate ?? 0),
      ...(o.instance_var ? { LOG4JS_PM2_VAR: o.instance_var } : {}),
      ...(o.env || {}),
    },
    ...(o.extra || {}),
  };
  if (o.namespace) app.namespace = o.namespace;
  if (o.instance_var) app.instance_var = o.instance_var;
  return app;
}

function logFile(work, tag) {
  return path.join(work, 'logs', `${tag}.log`);
}

function reportDirOf(work) {
  return path.join(work, 'reports');
}

/** Wait until `count` senders of `tag` report done. */
function waitSendersDone(work, tag, count, timeoutMs = 60000) {
  return waitFor(
    () => {
      const done = readReports(reportDirOf(work)).filter((r) => r.tag === tag && r.done);
      return done.length >= count ? done : undefined;
    },
    { timeoutMs, every: 200, what: `${count} senders of ${tag} to finish` },
  );
}

/** Wait until the file holds at least `lines` lines (delivery is asynchronous). */
function waitLines(file, lines, timeoutMs = 30000) {
  return waitFor(
    () => {
      if (!fs.existsSync(file)) return false;
      const n = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length;
      return n >= lines ? n : false;
    },
    { timeoutMs, every: 200, what: `${lines} lines in ${path.basename(file)}` },
  );
}

/** Wait until a file stops growing for `quietMs` (everything in flight has landed). */
async function waitQuiet(files, quietMs = 1500, timeoutMs = 60000) {
  let last = '';
  let since = Date.now();
  return waitFor(
    () => {
      const sig = files.map((f) => (fs.existsSync(f) ? fs.statSync(f).size : -1)).join(',');
      if (sig !== last) {
        last = sig;
        since = Date.now();
        return false;
      }
      return Date.now() - since >= quietMs;
    },
    { timeoutMs, every: 100, what: 'log files to stop growing' },
  );
}

module.exports = { logApp, logFile, reportDirOf, waitSendersDone, waitLines, waitQuiet, LOG_APP };
