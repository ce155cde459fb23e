'use strict';
/** Scenario helpers over a Pm2Sandbox: who is the writer, wait for senders, judge an app. */
const { judge, formatJudgement, readReports } = require('./judge');
const fs = require('fs');
const path = require('path');
const { logFile, reportDirOf } = require('./apps');
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
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/**
 * Wait until every process of the app now in `pm2 jlist` has reported done, and every sender that
 * ever reported is done or gone (graceful exits report done; a process that died abruptly, such
 * as an app without a SIGINT handler, counts what had left it by its last report), except
 * `excludePids`; then until the file holds what was sent (`waitDelivered`). Returns the judgement of the app.
 */
async function settleAndJudge(sb, tag, { name = tag, excludePids = [], timeoutMs = 120000 } = {}) {
  const excluded = new Set(excludePids.map(Number));
  let waitingFor = [];
  await waitFor(
    async () => {
      const reports = readReports(reportDirOf(sb.work)).filter((r) => r.tag === tag);
      waitingFor = reports.filter((r) => !r.done && !excluded.has(r.pid) && alive(r.pid)).map((r) => `pid ${r.pid} (instance ${r.instance}) sent ${r.sent}, not done`);
      // `pm2 jlist` (a CLI run, 0.5 to 1 s of CPU on a busy machine) only once the reports say done.
      if (waitingFor.length > 0) return false;
      waitingFor = (await onlineNotDone(sb, tag, name)).notDone.map((pid) => `online pid ${pid} not done`);
      return waitingFor.length === 0;
    },
    { timeoutMs, every: 250, what: () => `every sender of ${tag} to finish (still: ${waitingFor.join('; ')})` },
  );
  const r = await waitDelivered(sb, [{ tag, name }], { excludePids });
  const ranges = r[tag].missingRanges.slice(0, 12).map((m) => `pid ${m.pid} #${m.first}-${m.last}${m.dueAt ? ` due ${new Date(m.dueAt).toISOString().slice(11, 23)}` : ''}`);
  console.log(`${tag}:\n${formatJudgement(r)}${ranges.length ? `\nmissing: ${ranges.join(', ')}` : ''}`);
  return r[tag];
}

/** The online processes of app `name` (PM2's list): how many, and those without a report of `tag` saying done. */
async function onlineNotDone(sb, tag, name = tag) {
  const done = new Set(readReports(reportDirOf(sb.work)).filter((r) => r.tag === tag && r.done).map((r) => r.pid));
  const online = (await appProcs(sb, name)).filter((p) => p.pm2_env.status === 'online').map((p) => p.pid);
  return { online: online.length, notDone: online.filter((pid) => !done.has(pid)) };
}

/** The file that ends an app's logging (log-app.js STOP_FILE): `logApp(..., { env: stopEnv(sb, tag) })`. */
function stopEnv(sb, tag) {
  return { STOP_FILE: path.join(sb.work, `${tag}.stop`) };
}

/**
 * End an app's logging phase (its senders started with `stopEnv`) once its file has grown by
 * `more` lines from now, so the stream went on past what the test did, or once every online
 * process of the app has reported done (they ran out of lines first). Bounds the phase by what it
 * is for, not by a line count sized for a slow CLI. `name`: the app's PM2 name (default the tag).
 */
async function endStream(sb, tag, more, name = tag) {
  const file = logFile(sb.work, tag);
  const from = linesIn(file);
  const finished = async () => {
    const { online, notDone } = await onlineNotDone(sb, tag, name);
    return online > 0 && notDone.length === 0;
  };
  await waitFor(async () => linesIn(file) >= from + more || (await finished()), { timeoutMs: 60000, every: 200, what: `${more} more lines of ${tag} (from ${from}), or its senders done` });
  fs.writeFileSync(stopEnv(sb, tag).STOP_FILE, '');
}

/** Whether the module holds nothing and has nothing in flight for any app named `name` (status trigger). */
async function moduleIdleFor(sb, names) {
  try {
    const apps = (await sb.trigger('status')).apps;
    return Array.isArray(apps) && apps.filter((a) => names.includes(a.name)).every((a) => a.held === 0 && a.in_flight === 0);
  } catch {
    return false; // restarting, or no answer: wait for the files to be quiet instead
  }
}

/**
 * Once the senders are done: wait until what the files hold is final, and judge them. Final when
 * every file holds exactly what its senders sent (none missing, twice or foreign) and the module
 * holds nothing and has nothing in flight for those apps: a line added after that could only be a
 * second copy, and the module sends nothing it does not hold or have in flight first. Otherwise
 * (a judgement that expects loss, or a module that says nothing) when the files have not grown
 * for `quietMs`. `apps`: [{ tag, name? }] (name: the app's PM2 name, default the tag).
 */
async function waitDelivered(sb, apps, { excludePids = [], quietMs = 2000, timeoutMs = 120000 } = {}) {
  const files = apps.map((a) => ({ tag: a.tag, file: logFile(sb.work, a.tag) }));
  const names = apps.map((a) => a.name ?? a.tag);
  const sizes = () => files.map((f) => (fs.existsSync(f.file) ? fs.statSync(f.file).size : -1)).join(',');
  const judgeNow = () => judge({ apps: files, reportDir: reportDirOf(sb.work), excludePids });
  let last = '';
  let since = Date.now();
  let checked = '';
  await waitFor(
    async () => {
      const sig = sizes();
      if (sig !== last) {
        last = sig;
        since = Date.now();
        return false;
      }
      if (Date.now() - since >= quietMs) return true;
      if (checked === sig) return false; // judged at this size already: not exact
      checked = sig;
      const r = judgeNow();
      const exact = files.every((f) => r[f.tag].missing === 0 && r[f.tag].duplicated === 0 && r[f.tag].foreign === 0);
      if (exact && (await moduleIdleFor(sb, names)) && sizes() === sig) return true;
      checked = exact ? '' : sig; // exact but the module still busy: ask again next time
      return false;
    },
    { timeoutMs, every: 150, what: 'log files to hold what was sent, or to stop growing' },
  );
  return judgeNow();
}

/**
 * How a judged app's missing lines are spread: runs of consecutive lines per sender, and how many
 * of them were due after `moment` (epoch ms; a line is due at its sender's start + seq / rate, and
 * a sender never sends a line more than one line's interval before it is due). A writer that dies
 * takes what sat unread in its pipe: one run per sender, all sent before it died. The module
 * controls everything sent after that moment: none of it may be missing.
 */
function lossAtOneMoment(r, moment = Infinity, slackMs = 50) {
  const runs = new Map();
  let dueAfter = 0;
  for (const m of r.missingRanges) {
    runs.set(m.pid, (runs.get(m.pid) || 0) + 1);
    if (m.lastDueAt !== undefined && m.lastDueAt > moment + slackMs) dueAfter++;
  }
  return { runsPerSender: Math.max(0, ...runs.values()), senders: runs.size, runsDueAfter: dueAfter };
}

/**
 * A `pm2 reload` swaps each writer with one send in flight. With /proc the probe sent with it says
 * where it went (tests expect 0/0); without /proc (the send guard) the module learns of the new
 * worker only at its `online` event, and a send that reached it once it listened is sent again
 * (README, "Without /proc"): at most one line per swapped writer may be missing or twice; every
 * other line exactly once, none foreign.
 */
function withinReloadDoubt(r, swappedWriters = 1) {
  return r.foreign === 0 && r.missing + r.duplicated <= swappedWriters;
}

/**
 * After a `pm2 reload`: how the module saw the swap, printed. With a send going out while PM2
 * forked the new worker, the module stops sends at the fork (forks.ts: "sends stopped ... is a new
 * process"), or, for a send that went before that child was told apart, the probe that went with it
 * says so (sent again once the new worker listened). With no send in that window there is
 * nothing to catch and the module learns of the new worker at its `online`: seen twice in
 * fresh-clone runs (2026-12-08, Node 24, load 7, every line once), most likely because the test
 * reloaded while the module was still waiting for the writer to be ready (node-versions.ts now
 * waits for deliveries first); a writer whose sends are paced while it catches up can do the
 * same. So this is not asserted; what is asserted is every line once, which a send lost at the swap
 * would break, and writer-restarts' "answer read late" test forces a send at the fork. Waits for the module's next report (report_interval 5 s) at most.
 */
async function sayHowReloadWasSeen(sb, timeoutMs = 7000) {
  const caught = /sends stopped before they went out: pm_id \d+ is a new process|log packets sent again: PM2 had handed them to a restarted process/;
  const seen = await waitFor(() => caught.test(sb.moduleLog()), { timeoutMs, what: 'the reload to be seen at the fork' }).then(
    () => true,
    () => false,
  );
  console.log(seen ? `the reload was seen at the fork: ${caught.exec(sb.moduleLog())[0]}` : 'no send went out while the reload forked: the module saw the new worker at its online');
  return seen;
}

/** Is SIGINT pending for a (stopped) process? /proc/<pid>/status ShdPnd, bit 2. */
function sigintPending(pid) {
  try {
    const m = /ShdPnd:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m !== null && (parseInt(m[1], 16) & 2) !== 0;
  } catch {
    return false;
  }
}

/**
 * `pm2 restart` of writers that have fallen behind, as on a busy machine, made to happen: each
 * writer stops reading for `stallMs` (SIGSTOP), is restarted, and wakes up (SIGCONT) once PM2 has
 * signalled it, while PM2's daemon cannot run for 300 ms: each reads what its pipe holds, then
 * runs its SIGINT handler before the daemon can write any more. Linux only (/proc).
 */
async function restartWhileBehind(sb, writers, stallMs = 1000) {
  const daemon = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
  const cont = (pid) => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  };
  for (const w of writers) process.kill(w.pid, 'SIGSTOP');
  try {
    await new Promise((r) => setTimeout(r, stallMs));
    const restarts = writers.map((w) => sb.pm2(['restart', String(w.pm_id)]));
    await waitFor(() => writers.every((w) => sigintPending(w.pid)), { timeoutMs: 30000, every: 5, what: 'SIGINT to be pending on every writer' });
    process.kill(daemon, 'SIGSTOP');
    for (const w of writers) cont(w.pid);
    await new Promise((r) => setTimeout(r, 300));
    cont(daemon);
    await Promise.all(restarts);
  } finally {
    cont(daemon);
    for (const w of writers) cont(w.pid);
  }
}

/**
 * `pm2 reload <writer id>` while the module reads PM2's answer to its send in flight late: after
 * the reload has forked the new worker, although PM2 handed the packet to the old one before.
 * PM2's daemon is paused so that the module's next send waits in the daemon's socket; the module is
 * paused; the daemon resumes (it answers that send: the old worker has the packet) and the reload
 * runs; once the new worker is forked, the module resumes. Judged from timing alone, that answer
 * looks like the new worker's (written before the swap, read after the fork): sent again, twice.
 */
async function reloadWhileAnswerReadLate(sb, writer) {
  const daemon = Number(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8'));
  const mod = (await sb.moduleProc()).pid;
  const cont = (pid) => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
  };
  const children = () => {
    try {
      return fs.readFileSync(`/proc/${daemon}/task/${daemon}/children`, 'utf8').trim().split(/\s+/).map(Number).filter((n) => n > 0);
    } catch {
      return [];
    }
  };
  const pmIdOf = (pid) => {
    try {
      const env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').find((e) => e.startsWith('pm2_env='));
      return env === undefined ? undefined : JSON.parse(env.slice(8)).pm_id;
    } catch {
      return undefined;
    }
  };
  const before = new Set(children());
  process.kill(daemon, 'SIGSTOP');
  let reload;
  try {
    await new Promise((r) => setTimeout(r, 200));
    process.kill(mod, 'SIGSTOP');
    cont(daemon);
    reload = sb.pm2(['reload', String(writer.pm_id)]);
    await waitFor(() => children().some((pid) => !before.has(pid) && pmIdOf(pid) === writer.pm_id), {
      timeoutMs: 30000,
      every: 5,
      what: `the reload to fork a new worker for pm_id ${writer.pm_id}`,
    });
    cont(mod);
    await reload;
  } finally {
    cont(daemon);
    cont(mod);
  }
}

module.exports = { stopEnv, endStream, waitDelivered, sayHowReloadWasSeen, instanceOf, appProcs, writerProc, linesIn, settleAndJudge, lossAtOneMoment, withinReloadDoubt, restartWhileBehind, reloadWhileAnswerReadLate };
