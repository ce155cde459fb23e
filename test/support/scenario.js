'use strict';
/** Scenario helpers over a Pm2Sandbox: who is the writer, wait for senders, judge an app. */
const { judge, formatJudgement, readReports } = require('./judge');
const { logFile, reportDirOf, waitQuiet } = require('./apps');
const { waitFor } = require('./pm2-sandbox');

function instanceOf(p, instanceVar = 'NODE_APP_INSTANCE') {
  const e = p.pm2_env;
  const v = e[instanceVar] ?? e.NODE_APP_INSTANCE;
  return v === undefined ? undefined : Number(v);
}

async function appProcs(sb, name) {
  return (await sb.jlist()).filter((p) => p.name === name);
}

/** The online instance-0 process of an app (waits for it). */
async function writerProc(sb, name, instanceVar) {
  return waitFor(
    async () => (await appProcs(sb, name)).find((p) => p.pm2_env.status === 'online' && instanceOf(p, instanceVar) === 0),
    { timeoutMs: 30000, every: 200, what: `an online writer of ${name}` },
  );
}

/** Wait until at least `n` lines are in the app's file. */
function linesIn(file) {
  const fs = require('fs');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
}

/**
 * Wait until every process of the app now in `pm2 jlist` has reported done, and every sender that
 * ever reported (graceful exits report too) is done, except `excludePids`; then until the file
 * is quiet. Returns the judgement of the app.
 */
async function settleAndJudge(sb, tag, { name = tag, excludePids = [], timeoutMs = 120000 } = {}) {
  const excluded = new Set(excludePids.map(Number));
  await waitFor(
    async () => {
      const live = (await appProcs(sb, name)).filter((p) => p.pm2_env.status === 'online').map((p) => p.pid);
      const reports = readReports(reportDirOf(sb.work)).filter((r) => r.tag === tag);
      const done = new Set(reports.filter((r) => r.done).map((r) => r.pid));
      return live.every((pid) => done.has(pid)) && reports.every((r) => r.done || excluded.has(r.pid));
    },
    { timeoutMs, every: 250, what: `every sender of ${tag} to finish` },
  );
  await waitQuiet([logFile(sb.work, tag)], 2000);
  const r = judge({ apps: [{ tag, file: logFile(sb.work, tag) }], reportDir: reportDirOf(sb.work), excludePids });
  console.log(`${tag}:\n${formatJudgement(r)}${Object.keys(r[tag].missingBySender).length ? `\nmissing by sender: ${JSON.stringify(r[tag].missingBySender)}` : ''}`);
  return r[tag];
}

module.exports = { instanceOf, appProcs, writerProc, linesIn, settleAndJudge };
