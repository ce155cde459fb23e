/**
 * The module as on a machine without /proc (macOS, Windows, locked-down containers): PM2, the apps
 * and the module run with an empty /proc (a tmpfs over it in a private mount namespace) where this
 * machine allows it, else with `proc_checks=off`. Either way the module cannot see a writer dying
 * nor a reload's fork before it sends. The send guard (lib/deliver/send-guard.ts) must keep PM2's daemon alive: a busy
 * writer killed with `kill -9`, several times, never takes the daemon down, and nothing is written
 * twice or into another app's file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { logApp, logFile } from '../support/apps.js';
import { emptyProcWorks, Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';
import { appProcs, endStream, linesIn, lossAtOneMoment, settleAndJudge, stopEnv, withinReloadDoubt, writerProc } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const LINES = 2400;
const RATE = 300;

const emptyProc = emptyProcWorks();

describe(`without /proc (${emptyProc ? 'an empty /proc' : 'proc_checks=off'}): the send guard keeps PM2 up`, () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let daemonPid = '';
  const pm2Log = () => fs.readFileSync(path.join(sb.home, 'pm2.log'), 'utf8');
  const channelErrors = () => (pm2Log().match(/ERR_IPC_CHANNEL_CLOSED|EPIPE/g) ?? []).length;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-noproc-', { emptyProc });
    if (!emptyProc) await sb.pm2(['set', 'pm2-scoped-intercom:proc_checks', 'off']);
    await sb.install(tarball);
    daemonPid = fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim();
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it('says at start that /proc is off and the send guard is on; pm2 trigger status answers', async () => {
    expect(sb.moduleLog()).toMatch(emptyProc ? /safety checks: \/proc not readable.*send guard on/ : /safety checks: \/proc turned off \(proc_checks=off\).*send guard on/);
    // process.memoryUsage() reads /proc: the status must not depend on it.
    const st = await sb.trigger('status');
    expect(st.counters).toMatchObject({ dropped: 0 });
    expect(st.memory.heapUsed).toBeGreaterThan(0);
  });

  it('kill -9 of a busy writer, three times: the daemon stays up; nothing twice, nothing foreign', async () => {
    const name = 'noproc-crash';
    await sb.start([logApp(sb.work, { name, instances: 4, lines: LINES * 2, rate: RATE, env: stopEnv(sb, name) })]);
    const killed: { pid: number; at: number }[] = [];
    for (let k = 1; k <= 3; k++) {
      await waitFor(() => linesIn(logFile(sb.work, name)) >= (LINES * k) / 2, { timeoutMs: 60000, what: `${name} to be mid-stream (${k})` });
      const w = await writerProc(sb, name);
      const errorsBefore = channelErrors();
      const at = Date.now();
      process.kill(w.pid, 'SIGKILL');
      killed.push({ pid: w.pid, at });
      await waitFor(async () => (await appProcs(sb, name)).some((p) => p.pm2_env.status === 'online' && p.pm_id === w.pm_id && p.pid !== w.pid), {
        timeoutMs: 30000,
        what: 'PM2 to restart the killed writer',
      });
      // PM2 survives one failed write to a closed channel, not two: at most one per kill.
      expect(channelErrors() - errorsBefore).toBeLessThanOrEqual(1);
      expect(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim()).toBe(daemonPid);
    }
    await endStream(sb, name, LINES / 2);
    const r = await settleAndJudge(sb, name, { excludePids: killed.map((k) => k.pid) });
    expect(r).toMatchObject({ duplicated: 0, foreign: 0 });
    // What the dead writers had not read dies with them: one run of lines per sender per kill.
    expect(lossAtOneMoment(r).runsPerSender).toBeLessThanOrEqual(killed.length);
    expect(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim()).toBe(daemonPid);
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.status).toBe('online');
    expect(mod.pm2_env.restart_time).toBe(0);
  });

  it('pm2 reload mid-stream: the daemon stays up; every line once but the one in doubt per swapped writer', async () => {
    const name = 'noproc-reload';
    await sb.start([logApp(sb.work, { name, instances: 4, lines: LINES, rate: RATE, env: stopEnv(sb, name) })]);
    await waitFor(() => linesIn(logFile(sb.work, name)) >= LINES, { timeoutMs: 60000, what: `${name} to be mid-stream` });
    await sb.pm2(['reload', name]);
    await endStream(sb, name, LINES / 2);
    const r = await settleAndJudge(sb, name);
    expect(withinReloadDoubt(r), JSON.stringify(r.missingRanges)).toBe(true);
    expect(fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim()).toBe(daemonPid);
  });
});
