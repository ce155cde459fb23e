/**
 * Issue 12, version skew: this client against the released 0.1.0 module, which takes one record
 * per packet (its package.json says nothing of batches). The client sends single records; every
 * record arrives once, in order.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logApp, reportDirOf } from '../support/apps.js';
import { readReports } from '../support/judge.js';
import { Pm2Sandbox, ROOT } from '../support/pm2-sandbox.js';
import { settleAndJudge } from '../support/scenario.js';

const RELEASED = path.join(ROOT, 'test', 'fixtures', 'released', 'pm2-scoped-intercom-0.1.0.tgz');
const FIX = path.join(ROOT, 'test', 'fixtures');

describe('version skew: a batching client against the released 0.1.0 module', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-skew-');
    await sb.install(RELEASED);
  });
  afterAll(async () => {
    await sb?.destroy();
  });

  it('pino and the log4js appender send single records to 0.1.0: every record once, in order', async () => {
    const app = (name: string, fixture: string) =>
      logApp(sb.work, { name, instances: 4, lines: 1500, rate: 0, extra: { script: path.join(FIX, fixture), kill_timeout: 5000 } });
    await sb.start([app('s-pino', 'pino-app.js'), app('s-log4js', 'log4js-appender-app.js')]);
    for (const name of ['s-pino', 's-log4js']) {
      const r = await settleAndJudge(sb, name);
      expect(r, JSON.stringify(r.missingBySender)).toMatchObject({ senders: 4, sent: 6000, written: 6000, missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    }
    const senders = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === 's-pino' && x.role === 'sender');
    expect(senders).toHaveLength(3);
    for (const s of senders) expect(s.packets).toBe(s.records);
    expect(sb.moduleLog()).toMatch(/0\.1\.0/);
  });
});
