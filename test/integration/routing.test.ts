/**
 * Issue 2 (a, b): the module installed from its tarball into a real PM2, real log4js cluster apps.
 * Each app's file must hold every line its senders sent, once, and nothing of another app.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatJudgement } from '../support/judge.js';
import { logApp, logFile, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox } from '../support/pm2-sandbox.js';
import { waitDelivered } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

describe('log packets reach only their own app\'s writer', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-routing-');
    await sb.install(tarball);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it('two cluster apps x 4 instances, 2000 lines each: every line once, in its own file', async () => {
    await sb.start([
      logApp(sb.work, { name: 'orders', instances: 4, lines: 2000 }),
      logApp(sb.work, { name: 'billing', instances: 4, lines: 2000 }),
    ]);
    await waitSendersDone(sb.work, 'orders', 4);
    await waitSendersDone(sb.work, 'billing', 4);
    const r = await waitDelivered(sb, [{ tag: 'orders' }, { tag: 'billing' }], { quietMs: 1500 });
    console.log(formatJudgement(r));
    for (const tag of ['orders', 'billing']) {
      expect(r[tag].senders).toBe(4);
      expect(r[tag].sent).toBe(8000);
      expect(r[tag]).toMatchObject({ written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    }
  });

  it("apps with instance_var INSTANCE_ID and log4js pm2InstanceVar 'INSTANCE_ID'", async () => {
    await sb.start([
      logApp(sb.work, { name: 'search', instances: 4, lines: 2000, instance_var: 'INSTANCE_ID' }),
      logApp(sb.work, { name: 'mailer', instances: 3, lines: 2000, instance_var: 'INSTANCE_ID' }),
    ]);
    await waitSendersDone(sb.work, 'search', 4);
    await waitSendersDone(sb.work, 'mailer', 3);
    const r = await waitDelivered(sb, [{ tag: 'search' }, { tag: 'mailer' }], { quietMs: 1500 });
    console.log(formatJudgement(r));
    expect(r.search).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    expect(r.mailer).toMatchObject({ senders: 3, sent: 6000, written: 6000, missing: 0, duplicated: 0, foreign: 0 });
    // The earlier apps' files got nothing new.
    const orders = fs.readFileSync(logFile(sb.work, 'orders'), 'utf8').split('\n').filter(Boolean).length;
    expect(orders).toBe(8000);
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.restart_time).toBe(0);
    expect(fs.existsSync(path.join(sb.work, 'logs'))).toBe(true);
  });
});
