/**
 * Issue 28: one app's storm must not cost another app its lines. The hold buffer's bounds are the
 * module's (`buffer_mb`, `spool_mb`); an app that holds less than its share of memory is kept in
 * memory past the bound (lib/hold/hold-buffer.ts `#pastBound`), so a steady app whose writer keeps up never
 * goes to a spool the storm has filled. Here the storm passes both bounds (its writer is stopped)
 * while the steady app logs beside it: the storm loses what is reported, the steady app nothing.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { logApp, logFile, reportDirOf, waitSendersDone } from '../support/apps.js';
import { readReports } from '../support/judge.js';
import { MODULE, Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';
import { settleAndJudge, writerProc } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

type Row = { name: string; held: number; dropped: number; forwarded: number };

describe('one app storming beside one logging steadily', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-storm-');
    await sb.install(tarball);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  const row = async (name: string): Promise<Row | undefined> => (await sb.trigger('status')).apps.find((a: Row) => a.name === name);
  const restartWith = async (key: string, value: string) => {
    const starts = () => sb.moduleLog().split('\n').filter((l) => / relaying \(pm2/.test(l));
    const before = starts().length;
    await sb.pm2(['set', `${MODULE}:${key}`, value]);
    await waitFor(() => starts().length > before && starts().pop()!.includes(` ${key}=${value} `), { timeoutMs: 60000, what: `the module to restart with ${key}=${value}` });
  };

  it('the storm passes both bounds; the steady app loses and repeats nothing', async () => {
    await restartWith('spool_mb', '2');
    await restartWith('buffer_mb', '1');
    const go = `${sb.work}/storm.go`;
    await sb.start([
      logApp(sb.work, { name: 'storm', instances: 3, lines: 40000, rate: 0, env: { WAIT_FOR_FILE: go } }),
      logApp(sb.work, { name: 'steady', instances: 2, lines: 3000, rate: 200, env: { WAIT_FOR_FILE: go } }),
    ]);
    const w = await writerProc(sb, 'storm');
    await sb.pm2(['stop', String(w.pm_id)]);
    // How far the steady app's file is behind what its sender has handed to PM2 (printed, not
    // asserted: it is the daemon's and the machine's pace as much as the module's).
    let maxBehind = 0;
    const behind = () => {
      const sender = readReports(reportDirOf(sb.work)).find((r: { tag: string; instance: string }) => r.tag === 'steady' && String(r.instance) !== '0');
      if (!sender) return;
      let written = 0;
      try {
        const mark = ` ${sender.pid} `;
        for (const l of fs.readFileSync(logFile(sb.work, 'steady'), 'utf8').split('\n')) if (l.includes(mark)) written++;
      } catch {
        return;
      }
      maxBehind = Math.max(maxBehind, sender.sent - written);
    };
    const sampler = setInterval(behind, 200);
    fs.writeFileSync(go, '');
    await waitSendersDone(sb.work, 'storm', 2, 180000);
    await waitFor(async () => ((await row('storm'))?.dropped ?? 0) > 0, { timeoutMs: 60000, every: 500, what: 'the storm to pass both bounds' });
    const steady = await settleAndJudge(sb, 'steady', { timeoutMs: 180000 }).finally(() => clearInterval(sampler));
    expect(steady).toMatchObject({ sent: 6000, missing: 0, duplicated: 0, foreign: 0 });
    expect((await row('steady'))?.dropped).toBe(0);
    // The storm lost exactly what was reported, once its writer is back.
    await sb.pm2(['start', String(w.pm_id)]);
    const storm = await settleAndJudge(sb, 'storm', { timeoutMs: 180000 });
    const st = await row('storm');
    console.log(`storm: ${storm.missing} missing, ${st?.dropped} reported dropped; steady: ${steady.written} written, 0 dropped, at most ${maxBehind} lines (${(maxBehind / 200).toFixed(1)} s at 200/s) behind its sender`);
    expect(storm).toMatchObject({ duplicated: 0, foreign: 0 });
    expect(storm.missing).toBeGreaterThan(0);
    expect(storm.missing).toBe(st?.dropped);
  });
});
