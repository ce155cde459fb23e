/**
 * Issue 12: batches end to end. The module from the tarball (its package.json says it takes
 * batches), real pino, winston and log4js (the pm2-scoped-intercom/log4js appender) cluster apps
 * whose senders batch: every record once, in its own app's file, in order per sender, while the
 * writer is restarted, killed and reloaded and while the module restarts; records bigger than the
 * batch bound, and records JSON cannot carry.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { logApp, logFile, reportDirOf } from '../support/apps.js';
import { readReports } from '../support/judge.js';
import { Pm2Sandbox, ROOT, waitFor } from '../support/pm2-sandbox.js';
import { appProcs, endStream, linesIn, lossAtOneMoment, settleAndJudge, stopEnv, writerProc } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const FIX = path.join(ROOT, 'test', 'fixtures');
const LINES = 2400; // at most, per instance: the restart tests end the logging MORE lines after their action (endStream)
const RATE = 300;
const MORE = LINES / 2;

describe('batches through the module: every record once, in order', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let restartsBefore = 0;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-batches-');
    await sb.install(tarball);
  });
  afterAll(async () => {
    await sb?.destroy();
  });
  beforeEach(async () => {
    restartsBefore = (await sb.moduleProc()).pm2_env.restart_time;
  });

  const app = (name: string, fixture: string, o: { lines?: number; rate?: number; env?: Record<string, string> } = {}) =>
    logApp(sb.work, { name, instances: 4, lines: o.lines ?? LINES, rate: o.rate ?? RATE, env: o.env, extra: { script: path.join(FIX, fixture), kill_timeout: 5000 } });

  async function startMidStream(name: string, fixture = 'log4js-appender-app.js', env?: Record<string, string>) {
    await sb.start([app(name, fixture, { env: { ...env, ...stopEnv(sb, name) } })]);
    await waitFor(() => linesIn(logFile(sb.work, name)) >= LINES, { timeoutMs: 60000, what: `${name} to be mid-stream` });
    return writerProc(sb, name);
  }

  async function expectModuleUnharmed() {
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.status).toBe('online');
    expect(mod.pm2_env.restart_time).toBe(restartsBefore);
  }

  it('pino, winston and the log4js appender flat out (records past the byte bound, records JSON cannot carry): once, in order, batched', async () => {
    const names = { p: 'b-pino', w: 'b-winston', l: 'b-log4js' };
    await sb.start([
      app(names.p, 'pino-app.js', { lines: 3000, rate: 0, env: { BIG_EVERY: '97' } }),
      app(names.w, 'winston-app.js', { lines: 3000, rate: 0, env: { BATCH: 'auto' } }),
      app(names.l, 'log4js-appender-app.js', { lines: 3000, rate: 0, env: { NONJSON_EVERY: '50' } }),
    ]);
    for (const name of Object.values(names)) {
      const r = await settleAndJudge(sb, name);
      expect(r, JSON.stringify(r.missingBySender)).toMatchObject({ senders: 4, sent: 12000, written: 12000, missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    }
    // The senders batched: far fewer packets than records (pino and winston report both).
    for (const name of [names.p, names.w]) {
      const senders = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === name && x.role === 'sender');
      expect(senders).toHaveLength(3);
      const records = senders.reduce((n: number, x: any) => n + x.records, 0);
      const packets = senders.reduce((n: number, x: any) => n + x.packets, 0);
      console.log(`${name}: ${records} records in ${packets} packets`);
      expect(records).toBe(9000);
      expect(packets).toBeLessThan(records / 5);
    }
    // The module counted records as well as packets.
    const st = await sb.trigger('status');
    expect(st.counters.recordsIn).toBeGreaterThan(st.counters.in);
    expect(st.counters.recordsOut).toBe(st.counters.recordsIn);
    expect(st.counters.unknownFormat).toBe(0);
    await expectModuleUnharmed();
  });

  it('pm2 restart <writer id> mid-stream (log4js appender)', async () => {
    const w = await startMidStream('b-restarted');
    await sb.pm2(['restart', String(w.pm_id)]);
    await endStream(sb, 'b-restarted', MORE);
    const r = await settleAndJudge(sb, 'b-restarted');
    expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    expect(r.senders).toBe(5);
    await expectModuleUnharmed();
  });

  it('kill -9 of the writer mid-stream (pino): nothing sent after the kill missing, nothing twice', async () => {
    const w = await startMidStream('b-crashed', 'pino-app.js');
    const killedAt = Date.now();
    process.kill(w.pid, 'SIGKILL');
    await waitFor(async () => (await appProcs(sb, 'b-crashed')).some((p: any) => p.pm2_env.status === 'online' && p.pid !== w.pid && p.pm_id === w.pm_id), {
      timeoutMs: 30000,
      what: 'PM2 to restart the killed writer',
    });
    // As writer-restarts.test.ts: what sat unread in the dead writer's pipe dies with it (one run
    // per sender, all due before the kill); nothing due after the kill may be missing.
    await endStream(sb, 'b-crashed', MORE);
    const r = await settleAndJudge(sb, 'b-crashed', { excludePids: [w.pid] });
    expect(r).toMatchObject({ duplicated: 0, foreign: 0, outOfOrder: 0 });
    const loss = lossAtOneMoment(r, killedAt);
    expect(loss.runsPerSender).toBeLessThanOrEqual(1);
    expect(loss.runsDueAfter).toBe(0);
    await expectModuleUnharmed();
  });

  it('pm2 reload <app> mid-stream (winston): at most the one batch in flight at the swap in doubt', async () => {
    await startMidStream('b-reloaded', 'winston-app.js', { BATCH: 'auto' });
    await sb.pm2(['reload', 'b-reloaded']);
    await endStream(sb, 'b-reloaded', MORE);
    const r = await settleAndJudge(sb, 'b-reloaded');
    expect(r).toMatchObject({ foreign: 0, outOfOrder: 0 });
    // README "Writers that go away": one send in flight per swapped writer is in doubt; a send
    // is now a batch (at 300 lines/s per instance, a 10 ms batch holds a few lines).
    expect(r.missingRanges.length).toBeLessThanOrEqual(1);
    expect(r.missing + r.duplicated).toBeLessThanOrEqual(20);
    await expectModuleUnharmed();
  });

  it('a packet on the client topic in a shape this module does not know: delivered as it is, counted, said once', async () => {
    const out = path.join(sb.work, 'unknown-shape');
    fs.mkdirSync(out, { recursive: true });
    const before = (await sb.trigger('status')).counters.unknownFormat;
    await sb.start([
      { name: 'b-newer', script: path.join(FIX, 'topic-app.js'), cwd: ROOT, exec_mode: 'cluster', instances: 2, env: { TOPIC: 'pm2-scoped-intercom:log', COUNT: '20', OUT_DIR: out, START_DELAY_MS: '2500' } },
    ]);
    // Instance 1's 20 packets reach the writer (instance 0) unchanged; instance 0's own are the
    // writer sending (skipped, as any writer's).
    const writerGot = await waitFor(
      () => {
        const files = fs.readdirSync(out).map((f) => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')));
        const w = files.find((x: any) => String(x.instance) === '0');
        return w && w.received.length >= 20 ? w.received : undefined;
      },
      { timeoutMs: 30000, what: 'the writer of b-newer to get 20 packets' },
    );
    expect(writerGot.map((x: any) => x.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    const st = await sb.trigger('status');
    expect(st.counters.unknownFormat - before).toBe(20);
    expect(sb.moduleLog().match(/has a shape this module version does not know/g) ?? []).toHaveLength(1);
    await sb.pm2(['delete', 'b-newer']);
    await expectModuleUnharmed();
  });

  it('pm2 set (the module restarts) mid-stream (log4js appender): the bridge carries batches, nothing lost', async () => {
    await startMidStream('b-settings');
    await sb.pm2(['set', 'pm2-scoped-intercom:buffer_mb', '48']);
    await waitFor(() => /buffer_mb=48/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the module to restart with the new setting' });
    await endStream(sb, 'b-settings', MORE);
    const r = await settleAndJudge(sb, 'b-settings');
    expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    expect(sb.moduleLog()).toMatch(/relayed \d+ packets the handover bridge received while the module restarted \(handed over\)/);
  });
});
