/**
 * pm2-scoped-intercom/winston end to end: the module installed from its tarball into a real PM2,
 * real winston 3 apps in cluster mode whose File transport sits inside IntercomTransport. Each
 * app's file must hold every line its senders sent, once, and nothing of another app; the same
 * when the writer is restarted while the others log.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { judge, formatJudgement, readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox, waitFor, ROOT } from '../support/pm2-sandbox.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'winston-app.js');

type Sandbox = InstanceType<typeof Pm2Sandbox>;

function app(sb: Sandbox, name: string, o: { lines: number; rate?: number; instanceVar?: string; env?: Record<string, string> }) {
  return logApp(sb.work, {
    name,
    instances: 4,
    lines: o.lines,
    rate: o.rate ?? 0,
    instance_var: o.instanceVar,
    env: { ...(o.instanceVar ? { INSTANCE_VAR: o.instanceVar } : {}), ...(o.env ?? {}) },
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

describe('winston through pm2-scoped-intercom/winston: one writer per app', () => {
  let sb: Sandbox;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-client-winston-');
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
    await sb.start([app(sb, 'w-orders', { lines: 2000 }), app(sb, 'w-billing', { lines: 2000 })]);
    await waitSendersDone(sb.work, 'w-orders', 4, 120000);
    await waitSendersDone(sb.work, 'w-billing', 4, 120000);
    await waitQuiet([logFile(sb.work, 'w-orders'), logFile(sb.work, 'w-billing')], 2000, 120000);
    const r = judge({
      apps: [
        { tag: 'w-orders', file: logFile(sb.work, 'w-orders') },
        { tag: 'w-billing', file: logFile(sb.work, 'w-billing') },
      ],
      reportDir: reportDirOf(sb.work),
    });
    console.log(`winston, 2 apps x 4 instances:\n${formatJudgement(r)}`);
    for (const tag of ['w-orders', 'w-billing']) {
      expect(r[tag], JSON.stringify(r[tag].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    }
    // One writer per app, three senders.
    const roles = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === 'w-orders').map((x: any) => x.role).sort();
    expect(roles).toEqual(['sender', 'sender', 'sender', 'writer']);
  });

  it('the writer restarted while the other instances log 300 lines/s: nothing missing, nothing twice', async () => {
    await sb.start([app(sb, 'w-cart', { lines: 3000, rate: 300 }), app(sb, 'w-users', { lines: 3000, rate: 300 })]);
    // Restart once every instance is well into its run.
    await waitFor(() => readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === 'w-cart' && x.sent >= 600).length >= 4, {
      timeoutMs: 60000,
      every: 100,
      what: 'w-cart instances to log 600 lines each',
    });
    const old = await writerOf(sb, 'w-cart');
    await sb.pm2(['restart', String(old.pmId)]);
    const fresh = await waitFor(async () => {
      const w = await writerOf(sb, 'w-cart').catch(() => undefined);
      return w && w.pid !== old.pid ? w : undefined;
    }, { timeoutMs: 60000, every: 200, what: 'the restarted writer of w-cart' });
    expect(fresh.pmId).toBe(old.pmId);
    // The three others and the new writer finish; the old writer reported what it sent when stopped.
    await waitSendersDone(sb.work, 'w-cart', 4, 120000);
    await waitSendersDone(sb.work, 'w-users', 4, 120000);
    await waitQuiet([logFile(sb.work, 'w-cart'), logFile(sb.work, 'w-users')], 2000, 120000);
    const apps = [
      { tag: 'w-cart', file: logFile(sb.work, 'w-cart') },
      { tag: 'w-users', file: logFile(sb.work, 'w-users') },
    ];
    const r = judge({ apps, reportDir: reportDirOf(sb.work) });
    console.log(`winston, writer of w-cart restarted (old pid ${old.pid}, new pid ${fresh.pid}):\n${formatJudgement(r)}`);
    const oldReport = readReports(reportDirOf(sb.work)).find((x: any) => x.pid === old.pid);
    expect(oldReport, 'the stopped writer reported what it had logged').toMatchObject({ role: 'writer', instance: 0, done: false });
    // The new process knows it is the writer again (its instance number read from the right variable).
    expect(readReports(reportDirOf(sb.work)).find((x: any) => x.pid === fresh.pid)).toMatchObject({ role: 'writer', instance: 0, done: true });
    expect(r['w-cart'].senders).toBe(5);
    expect(r['w-cart'].sent).toBe(4 * 3000 + oldReport.sent);
    // Zero missing, the stopped writer's own lines included (it closes its file on SIGINT).
    expect(r['w-cart'], JSON.stringify(r['w-cart'].missingBySender)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    expect(r['w-cart'].written).toBe(r['w-cart'].sent);
    expect(r['w-users'], JSON.stringify(r['w-users'].missingBySender)).toMatchObject({ senders: 4, sent: 12000, written: 12000, missing: 0, duplicated: 0, foreign: 0 });
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.restart_time).toBe(0);
  });

  it('File rotation by size (maxsize) on the one writer: every line once across the rotated files', async () => {
    await sb.start([app(sb, 'w-rot', { lines: 2000, env: { MAX_SIZE: '40000' } })]);
    await waitSendersDone(sb.work, 'w-rot', 4, 120000);
    const dir = path.dirname(logFile(sb.work, 'w-rot'));
    const files = () => fs.readdirSync(dir).filter((f) => /^w-rot\d*\.log$/.test(f)).map((f) => path.join(dir, f));
    const lineCount = () => files().reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length, 0);
    await waitFor(() => lineCount() >= 8000, { timeoutMs: 120000, every: 200, what: '8000 lines across the w-rot files' });
    await waitQuiet(files(), 2000, 120000);
    // winston names them w-rot.log, w-rot1.log, w-rot2.log, ...: judge them as one file.
    const all = path.join(sb.work, 'w-rot.all');
    const parts = files();
    fs.writeFileSync(all, parts.map((f) => fs.readFileSync(f, 'utf8')).join(''));
    const r = judge({ apps: [{ tag: 'w-rot', file: all }], reportDir: reportDirOf(sb.work) });
    console.log(`winston with File maxsize rotation (${parts.length} files):\n${formatJudgement(r)}`);
    expect(parts.length).toBeGreaterThan(2);
    expect(r['w-rot'], JSON.stringify(r['w-rot'].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
  });
});
