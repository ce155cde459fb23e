'use strict';
/**
 * An ordinary log4js app for PM2 cluster mode, as the README recommends:
 *   - `pm2: true` makes log4js write only in the instance whose NODE_APP_INSTANCE is "0" (the
 *     app's writer); every other instance sends its log events to it through PM2, which
 *     pm2-scoped-intercom delivers.
 *   - `pm2InstanceVar` must name the same variable as the app's `instance_var` (if you set one).
 *
 * The module must be installed in the PM2 that runs it:
 *   pm2 install /absolute/path/pm2-scoped-intercom-0.3.0.tgz   # today: `npm ci && npm pack` in a clone
 *   pm2 install pm2-scoped-intercom                           # once published to the registry
 *
 * For the demo it logs LINES numbered lines ("<app> <pid> <n>") at RATE lines/s, then writes how
 * many it sent to REPORT_DIR, so the demo can check every line arrived exactly once.
 */
const fs = require('fs');
const path = require('path');
const log4js = require('log4js');

const app = process.env.name; // PM2 sets the app name
const logDir = process.env.LOG_DIR || path.join(__dirname, 'logs');

log4js.configure({
  appenders: {
    file: { type: 'file', filename: path.join(logDir, `${app}.log`), layout: { type: 'pattern', pattern: '%m' } },
  },
  categories: { default: { appenders: ['file'], level: 'info' } },
  pm2: true,
  // pm2InstanceVar: 'INSTANCE_ID', // only if the app sets instance_var: 'INSTANCE_ID'
});
const logger = log4js.getLogger();

const lines = Number(process.env.LINES || 2000);
const rate = Number(process.env.RATE || 500);
let sent = 0;

function report(done) {
  if (!process.env.REPORT_DIR) return;
  const file = path.join(process.env.REPORT_DIR, `${app}-${process.pid}.json`);
  fs.writeFileSync(file, JSON.stringify({ tag: app, pid: process.pid, instance: process.env.NODE_APP_INSTANCE, sent, done }));
}

const started = Date.now();
const timer = setInterval(() => {
  const due = Math.min(lines, Math.floor(((Date.now() - started) / 1000) * rate));
  while (sent < due) logger.info(`${app} ${process.pid} ${sent++}`);
  report(sent >= lines);
  if (sent >= lines) clearInterval(timer);
}, 10);

// A clean stop (pm2 stop/restart/reload send SIGINT): report, flush log4js, exit.
process.on('SIGINT', () => {
  clearInterval(timer);
  report(true);
  log4js.shutdown(() => process.exit(0));
});
setInterval(() => {}, 1 << 30); // stay up when done, so PM2 does not restart the app
