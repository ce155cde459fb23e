/**
 * PM2's daemon itself restarted mid-stream: `pm2 update` (what users run after upgrading PM2) and
 * `pm2 kill` + `pm2 resurrect` (a reboot, with `pm2 startup`). The module is resurrected with the
 * apps; what it held is kept across (state.json, the handover bridge), and every line a sender
 * says it sent (before and after) is written once, in its own app's file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { formatJudgement, readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitLines } from '../support/apps.js';
import { Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';
import { endStream, stopEnv, waitDelivered } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

describe('the PM2 daemon restarted mid-stream (apps and module resurrected)', () => {
  let sb: InstanceType<typeof Pm2Sandbox> | undefined;

  afterEach(async () => {
    await sb?.destroy();
    sb = undefined;
  });

  // `module last`: installed after the apps, so PM2 deletes the apps before it when the daemon goes
  // (pm_id order): it must keep what it holds for them until its own stop (the chaos run lost
  // every held line that way).
  const cases = [
    { how: 'pm2 update', moduleLast: false },
    { how: 'pm2 kill + pm2 resurrect', moduleLast: false },
    { how: 'pm2 update', moduleLast: true },
  ] as const;
  for (const { how, moduleLast } of cases) {
    it(`${how}${moduleLast ? ' (module installed after the apps)' : ''}: every line of the senders before and after, once, in its own file`, async () => {
      sb = Pm2Sandbox.create('pm2si-daemon-');
      const s = sb;
      if (!moduleLast) await s.install(tarball);
      // 3 and 2 instances (one app in a namespace) at 300 lines/s each, 10 s of lines per process.
      // With the module installed after them, the apps wait for it before they log.
      const go = path.join(s.work, 'go');
      const env = moduleLast ? { WAIT_FOR_FILE: go } : {};
      await s.start([
        logApp(s.work, { name: 'alpha', instances: 3, lines: 3000, rate: 300, env: { ...env, ...stopEnv(s, 'alpha') } }),
        logApp(s.work, { name: 'beta', instances: 2, lines: 3000, rate: 300, namespace: 'ns1', env: { ...env, ...stopEnv(s, 'beta') } }),
      ]);
      if (moduleLast) {
        await s.install(tarball);
        await s.waitModuleOnline(60000);
        fs.writeFileSync(go, '');
      }
      await waitFor(async () => (await s.jlist()).filter((p: { pm2_env: { status: string } }) => p.pm2_env.status === 'online').length === 6, { timeoutMs: 30000, what: 'the apps to be online' });
      // Mid-stream: 1,500 of alpha's lines written (about 2 s).
      await waitLines(logFile(s.work, 'alpha'), 1500);
      await s.pm2(['save']);
      const before = new Set((await s.jlist()).map((p: { pid: number }) => p.pid));
      if (how === 'pm2 update') await s.pm2(['update'], { timeoutMs: 120000 });
      else {
        await s.pm2(['kill'], { timeoutMs: 60000 });
        await s.pm2(['resurrect'], { timeoutMs: 120000 });
      }
      await s.waitModuleOnline(60000);
      // The logging goes on 900 lines past the restart (3,000 a process at most).
      await Promise.all(['alpha', 'beta'].map((tag) => endStream(s, tag, 900)));
      const after = (await s.jlist()).filter((p: { pid: number; name: string }) => !before.has(p.pid) && p.name !== 'pm2-scoped-intercom');
      expect(after).toHaveLength(5);
      // Every sender, the stopped ones and the resurrected ones, done.
      await waitFor(
        () => {
          const rs = readReports(reportDirOf(s.work));
          return after.every((p: { pid: number }) => rs.some((r: { pid: number; done: boolean }) => r.pid === p.pid && r.done)) && rs.every((r: { done: boolean }) => r.done);
        },
        { timeoutMs: 90000, every: 250, what: 'every sender to finish' },
      );
      const r = await waitDelivered(s, [{ tag: 'alpha' }, { tag: 'beta' }]);
      console.log(`${how}:\n${formatJudgement(r)}`);
      if (r.alpha.missing + r.beta.missing > 0) {
        const oldPids = new Set([...before]);
        for (const tag of ['alpha', 'beta']) {
          const ranges = r[tag].missingRanges.slice(0, 12).map((m: { pid: number; first: number; last: number }) => `pid ${m.pid}${oldPids.has(m.pid) ? ' (before)' : ''} #${m.first}-${m.last}`);
          console.log(`${tag} missing: ${ranges.join(', ')}`);
        }
        console.log(`module log:\n${s.moduleLog().split('\n').slice(-40).join('\n')}`);
      }
      expect(r.alpha).toMatchObject({ senders: 6, missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
      expect(r.beta).toMatchObject({ senders: 4, missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
      // Lines of the senders before and of those after: each side logged.
      const reports = readReports(reportDirOf(s.work)) as { tag: string; pid: number; sent: number }[];
      for (const tag of ['alpha', 'beta']) {
        const sent = (old: boolean) => reports.filter((x) => x.tag === tag && before.has(x.pid) === old).reduce((n, x) => n + x.sent, 0);
        expect(sent(true), `${tag}: lines of the senders before`).toBeGreaterThan(0);
        expect(sent(false), `${tag}: lines of the senders after`).toBeGreaterThan(0);
      }
    });
  }
});
