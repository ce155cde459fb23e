/**
 * Issue 13: containers. The module installed into a PM2_HOME at "build time" (`pm2 install
 * <tarball>` with a daemon, then `pm2 kill`), then `pm2-runtime start <ecosystem file>` in the
 * foreground, as a container's command: PM2 runs inside the pm2-runtime process and launches the
 * installed module before the apps. Two log4js cluster apps log; a writer is restarted mid-stream
 * through the ordinary CLI (same PM2_HOME, it talks to the runtime's daemon). Every line once, in
 * its own app's file. SIGINT (what `docker stop` sends as SIGTERM; pm2-runtime handles both the
 * same way) ends pm2-runtime, and with it every process it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf } from '../support/apps.js';
import { MODULE, PM2_BIN, Pm2Sandbox, processesUnder, waitFor } from '../support/pm2-sandbox.js';
import { endStream, linesIn, settleAndJudge, stopEnv, writerProc } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const PM2_RUNTIME = path.join(path.dirname(PM2_BIN), 'pm2-runtime');
const LINES = 4000;
const RATE = 150; // lines per second per instance: up to 27 s of logging, room for a slow CLI (15 s seen at load 17); ended 600 lines after the restart (endStream)

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const EMPTY_PROC = process.env.PM2SI_EMPTY_PROC === '1';

describe(`pm2-runtime (containers)${EMPTY_PROC ? ', with an empty /proc' : ''}`, () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let runtime: ChildProcess | undefined;
  let runtimeExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let stdoutFile = '';
  /** Every pid seen under the runtime: it, the module, the apps (and the module's bridge). */
  const seen = new Set<number>();

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-runtime-', { emptyProc: EMPTY_PROC });
    // Build time: install the module with an ordinary daemon, then stop that daemon.
    await sb.install(tarball);
    await sb.kill();
    expect(fs.existsSync(path.join(sb.home, 'modules', MODULE))).toBe(true);
  });

  afterAll(async () => {
    // Only if the test did not end it already: SIGINT, then by pid whatever is left.
    if (runtime && runtime.exitCode === null && runtime.signalCode === null) {
      runtime.kill('SIGINT');
      await Promise.race([runtimeExit, waitFor(() => false, { timeoutMs: 20000, what: 'pm2-runtime to exit' }).catch(() => {})]);
    }
    for (const pid of [...seen, ...processesUnder(sb.home).map(Number)]) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await sb?.destroy();
  });

  it('runs the installed module; a writer restarted mid-stream loses nothing; SIGINT ends it and every child', async () => {
    // The apps start logging when the test says so (pm2-runtime starts them before its CLI is usable).
    const go = path.join(sb.work, 'go');
    const apps = [
      logApp(sb.work, { name: 'api', instances: 4, lines: LINES, rate: RATE, env: { WAIT_FOR_FILE: go, ...stopEnv(sb, 'api') } }),
      logApp(sb.work, { name: 'worker', instances: 4, lines: LINES, rate: RATE, namespace: 'jobs', env: { WAIT_FOR_FILE: go, ...stopEnv(sb, 'worker') } }),
    ];
    const eco = path.join(sb.work, 'ecosystem.config.js');
    fs.writeFileSync(eco, `module.exports = ${JSON.stringify({ apps }, null, 2)};\n`);
    stdoutFile = path.join(sb.dir, 'pm2-runtime.out');
    const out = fs.openSync(stdoutFile, 'w');
    // PM2SI_EMPTY_PROC=1: the container as macOS or a locked-down sandbox looks to the module (an
    // empty /proc; unshare execs into pm2-runtime, so the pid is pm2-runtime's).
    runtime = EMPTY_PROC
      ? spawn('unshare', ['--mount', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" "$@"', process.execPath, PM2_RUNTIME, 'start', eco], { cwd: sb.work, env: sb.env, stdio: ['ignore', out, out] })
      : spawn(process.execPath, [PM2_RUNTIME, 'start', eco], { cwd: sb.work, env: sb.env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    runtimeExit = new Promise((resolve) => runtime!.once('exit', (code, signal) => resolve({ code, signal })));
    seen.add(runtime.pid!);

    // Its daemon listens on PM2_HOME's sockets; only then may the CLI talk to it (a CLI that finds
    // no daemon would start its own).
    await waitFor(() => fs.existsSync(path.join(sb.home, 'rpc.sock')) && fs.existsSync(path.join(sb.home, 'pub.sock')), {
      timeoutMs: 30000,
      what: "pm2-runtime's sockets",
    });
    await sb.waitModuleOnline(60000);
    expect(sb.moduleLog()).toMatch(/relaying \(pm2 [\d.]+ from the daemon/);
    if (EMPTY_PROC) expect(sb.moduleLog()).toMatch(/send guard on/);
    // The module runs inside the runtime's daemon, which is the pm2-runtime process itself.
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.pmx_module).toBe(true);
    expect(Number(fs.readFileSync(`/proc/${mod.pid}/stat`, 'utf8').split(') ')[1].split(' ')[1])).toBe(runtime.pid);

    const w = await writerProc(sb, 'api');
    fs.writeFileSync(go, '1');
    // Mid-stream by what the senders say (on a loaded machine the file can lag behind them).
    await waitFor(() => readReports(reportDirOf(sb.work)).filter((x: { tag: string; sent: number }) => x.tag === 'api' && x.sent >= LINES / 10).length === 4 && linesIn(logFile(sb.work, 'api')) > 0, {
      timeoutMs: 60000,
      what: 'api to be mid-stream',
    });
    const t0 = Date.now();
    await sb.pm2(['restart', String(w.pm_id)]);
    const restartMs = Date.now() - t0;
    await Promise.all(['api', 'worker'].map((tag) => endStream(sb, tag, 600)));
    for (const tag of ['api', 'worker']) {
      const r = await settleAndJudge(sb, tag);
      expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
      expect(r.senders).toBe(tag === 'api' ? 5 : 4);
    }
    // How far the old writer had got (on a very busy machine `pm2 restart` itself can take seconds).
    const old = readReports(reportDirOf(sb.work)).find((x: { pid: number }) => x.pid === w.pid);
    console.log(`pm2 restart took ${restartMs} ms; the old writer had logged ${old.sent} of ${LINES} lines`);
    const list = (await sb.jlist()) as { pid: number; name: string; pm2_env: { restart_time: number } }[];
    for (const p of list) if (p.pid > 0) seen.add(p.pid);
    expect(list.find((p) => p.name === MODULE)!.pm2_env.restart_time).toBe(0);
    for (const pid of processesUnder(sb.home)) seen.add(Number(pid));
    expect(seen.size).toBeGreaterThanOrEqual(10); // runtime + module + 8 apps

    // The container stops: SIGINT to pm2-runtime. It stops the apps and the module, then exits.
    const logBefore = sb.moduleLogMark();
    const t = Date.now();
    runtime.kill('SIGINT');
    const exit = await Promise.race([runtimeExit, waitFor(() => false, { timeoutMs: 30000, what: 'pm2-runtime to exit after SIGINT' })]);
    console.log(`pm2-runtime exited ${Date.now() - t} ms after SIGINT; the module's last words:\n${sb.moduleLog(logBefore).trim()}`);
    expect(exit).toMatchObject({ code: 0 });
    await waitFor(() => [...seen].every((pid) => !alive(pid)) && processesUnder(sb.home).length === 0, {
      timeoutMs: 15000,
      every: 50,
      what: `every process of the runtime to exit (${[...seen].filter(alive).join(', ')})`,
    });
  });
});
