/**
 * pm2-scoped-intercom/pino end to end: the module installed from its tarball into a real PM2,
 * real pino apps in cluster mode logging to intercomDestination (on the writer: a
 * pino.destination SonicBoom of the app's file). Each app's file must hold every line its
 * senders sent, once, and nothing of another app; the same when the writer is restarted while
 * the others log. The restart runs with instance_var INSTANCE_ID, which PM2 7 resets in
 * process.env.instance_var on restart: the client's instanceVar option keeps the writer a writer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { judge, formatJudgement, readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox, waitFor, ROOT } from '../support/pm2-sandbox.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'pino-app.js');

type Sandbox = InstanceType<typeof Pm2Sandbox>;

function app(sb: Sandbox, name: string, o: { lines: number; rate?: number; instanceVar?: string }) {
  return logApp(sb.work, {
    name,
    instances: 4,
    lines: o.lines,
    rate: o.rate ?? 0,
    instance_var: o.instanceVar,
    env: o.instanceVar ? { INSTANCE_VAR: o.instanceVar } : {},
    // Room for the writer's graceful shutdown (take what is on its way, close the file) on a busy machine.
    extra: { script: FIXTURE, kill_timeout: 5000 },
  });
}

/** The online process of `name` numbered 0 (its writer). */
async function writerOf(sb: Sandbox, name: string, instanceVar = 'NODE_APP_INSTANCE'): Promise<{ pmId: number; pid: number }> {
  const list = await sb.jlist();
  const p = list.find((x: any) => x.name === name && x.pm2_env.status === 'online' && Number(x.pm2_env[instanceVar]) === 0);
  if (!p) throw new Error(`no online writer of ${name}`);
  return { pmId: p.pm_id, pid: p.pid };
}

describe('pino through pm2-scoped-intercom/pino: one writer per app', () => {
  let sb: Sandbox;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-client-pino-');
    await sb.install(tarball);
  });

  afterAll(async () => {
    // A dying module may still write into the sandbox while it is removed (ENOTEMPTY): the daemon
    // is gone by then, so only the removal is retried.
    await sb?.destroy().catch((err: Error) =>
      waitFor(() => {
        fs.rmSync(sb.dir, { recursive: true, force: true });
        return true;
      }, { timeoutMs: 10000, every: 200, what: `removing ${sb.dir} (${err.message})` }),
    );
  });

  it('two cluster apps x 4 instances, 2000 lines each: every line once, in its own file', async () => {
    await sb.start([app(sb, 'p-orders', { lines: 2000 }), app(sb, 'p-billing', { lines: 2000 })]);
    await waitSendersDone(sb.work, 'p-orders', 4, 120000);
    await waitSendersDone(sb.work, 'p-billing', 4, 120000);
    await waitQuiet([logFile(sb.work, 'p-orders'), logFile(sb.work, 'p-billing')], 2000, 120000);
    const r = judge({
      apps: [
        { tag: 'p-orders', file: logFile(sb.work, 'p-orders') },
        { tag: 'p-billing', file: logFile(sb.work, 'p-billing') },
      ],
      reportDir: reportDirOf(sb.work),
    });
    console.log(`pino, 2 apps x 4 instances:\n${formatJudgement(r)}`);
    for (const tag of ['p-orders', 'p-billing']) {
      expect(r[tag], JSON.stringify(r[tag].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    }
    // One writer per app, three senders.
    const roles = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === 'p-orders').map((x: any) => x.role).sort();
    expect(roles).toEqual(['sender', 'sender', 'sender', 'writer']);
  });

  it('instance_var INSTANCE_ID, the writer restarted while the other instances log 300 lines/s: nothing missing, nothing twice', async () => {
    const iv = 'INSTANCE_ID';
    await sb.start([app(sb, 'p-cart', { lines: 3000, rate: 300, instanceVar: iv }), app(sb, 'p-users', { lines: 3000, rate: 300, instanceVar: iv })]);
    // Restart once every instance is well into its run.
    await waitFor(() => readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === 'p-cart' && x.sent >= 600).length >= 4, {
      timeoutMs: 60000,
      every: 100,
      what: 'p-cart instances to log 600 lines each',
    });
    const old = await writerOf(sb, 'p-cart', iv);
    await sb.pm2(['restart', String(old.pmId)]);
    const fresh = await waitFor(async () => {
      const w = await writerOf(sb, 'p-cart', iv).catch(() => undefined);
      return w && w.pid !== old.pid ? w : undefined;
    }, { timeoutMs: 60000, every: 200, what: 'the restarted writer of p-cart' });
    expect(fresh.pmId).toBe(old.pmId);
    // The three others and the new writer finish; the old writer reported what it sent when stopped.
    await waitSendersDone(sb.work, 'p-cart', 4, 120000);
    await waitSendersDone(sb.work, 'p-users', 4, 120000);
    await waitQuiet([logFile(sb.work, 'p-cart'), logFile(sb.work, 'p-users')], 2000, 120000);
    const apps = [
      { tag: 'p-cart', file: logFile(sb.work, 'p-cart') },
      { tag: 'p-users', file: logFile(sb.work, 'p-users') },
    ];
    const r = judge({ apps, reportDir: reportDirOf(sb.work) });
    console.log(`pino, writer of p-cart restarted (old pid ${old.pid}, new pid ${fresh.pid}):\n${formatJudgement(r)}`);
    const oldReport = readReports(reportDirOf(sb.work)).find((x: any) => x.pid === old.pid);
    expect(oldReport, 'the stopped writer reported what it had logged').toMatchObject({ role: 'writer', instance: 0, done: false });
    // The new process knows it is the writer again (its instance number read from the right variable).
    expect(readReports(reportDirOf(sb.work)).find((x: any) => x.pid === fresh.pid)).toMatchObject({ role: 'writer', instance: 0, done: true });
    expect(r['p-cart'].senders).toBe(5);
    expect(r['p-cart'].sent).toBe(4 * 3000 + oldReport.sent);
    // Zero missing, the stopped writer's own lines included (it closes its file on SIGINT).
    expect(r['p-cart'], JSON.stringify(r['p-cart'].missingBySender)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    expect(r['p-cart'].written).toBe(r['p-cart'].sent);
    expect(r['p-users'], JSON.stringify(r['p-users'].missingBySender)).toMatchObject({ senders: 4, sent: 12000, written: 12000, missing: 0, duplicated: 0, foreign: 0 });
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.restart_time).toBe(0);
  });
});
