/**
 * Issue 3 (overload): a burst of 200,000 lines from 4 instances as fast as log4js sends them.
 * The module's memory stays bounded by buffer_max, every line is either written once or counted
 * as dropped, the module never restarts, and it relays normally afterwards.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { judge, formatJudgement } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const BUFFER_MAX = 5000;

describe('overload', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-overload-');
    await sb.install(tarball);
    await sb.pm2(['set', 'pm2-scoped-intercom:buffer_max', String(BUFFER_MAX)]);
    await waitFor(() => new RegExp(`relaying .*buffer_max=${BUFFER_MAX}`).test(sb.moduleLog()), { timeoutMs: 30000, what: 'the new buffer_max' });
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it('200,000 lines in a burst: bounded memory, drops counted exactly, no restart, then back to normal', async () => {
    const mod0 = await sb.moduleProc();
    const restarts0 = mod0.pm2_env.restart_time;
    await sb.start([logApp(sb.work, { name: 'burst', instances: 4, lines: 50000, rate: 0 })]);
    let peakRss = 0;
    let peakHeld = 0;
    await waitFor(
      async () => {
        const m = await sb.moduleProc();
        peakRss = Math.max(peakRss, m.monit?.memory ?? 0);
        const st = await sb.trigger('status');
        peakHeld = Math.max(peakHeld, st.counters.held);
        return (await waitSendersDone(sb.work, 'burst', 4, 1).catch(() => false)) && st.counters.held === 0;
      },
      { timeoutMs: 240000, every: 500, what: 'the burst to be sent and the backlog to drain' },
    );
    await waitQuiet([logFile(sb.work, 'burst')], 2000);
    const r = judge({ apps: [{ tag: 'burst', file: logFile(sb.work, 'burst') }], reportDir: reportDirOf(sb.work) })['burst'];
    const row = (await sb.trigger('status')).apps.find((a: { name: string }) => a.name === 'burst');
    console.log(`${formatJudgement({ burst: r })}\nmodule: dropped ${row.dropped}, forwarded ${row.forwarded}, peak held ${peakHeld}, peak RSS ${(peakRss / 1048576).toFixed(1)} MB`);
    expect(r.sent).toBe(200000);
    expect(r.duplicated).toBe(0);
    expect(r.foreign).toBe(0);
    // Every line is accounted for: written, or dropped by the bound and counted.
    expect(r.missing).toBe(row.dropped);
    expect(peakHeld).toBeLessThanOrEqual(BUFFER_MAX);
    // Bounded memory: far below what 200,000 held packets would take.
    expect(peakRss).toBeLessThan(200 * 1048576);
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.restart_time).toBe(restarts0);
    expect(mod.pm2_env.status).toBe('online');
    if (row.dropped > 0) await waitFor(() => /log packets dropped: hold buffer full/.test(sb.moduleLog()), { timeoutMs: 15000, what: 'the drop summary' });

    // Recovers: the next app's lines all arrive.
    await sb.start([logApp(sb.work, { name: 'after', instances: 3, lines: 1000, rate: 500 })]);
    await waitSendersDone(sb.work, 'after', 3);
    await waitQuiet([logFile(sb.work, 'after')]);
    const a = judge({ apps: [{ tag: 'after', file: logFile(sb.work, 'after') }], reportDir: reportDirOf(sb.work) })['after'];
    expect(a).toMatchObject({ sent: 3000, written: 3000, missing: 0, duplicated: 0, foreign: 0 });
  });
});
