/**
 * The module against the PM2 its users actually run: for each version in test/compat/versions.js
 * (5.4.3, 6.0.14, 7.0.4), that version's CLI starts a private daemon, `pm2 install`s the module
 * from its tarball and runs real log4js cluster apps. Every version: zero missing, zero
 * duplicated, zero foreign lines. Run with `npm run test:compat` (docs/compat.md).
 *
 * One file per version (pm2-<major>.compat.ts) calls pm2VersionSuite: each version has its own
 * sandbox, so the versions can run in parallel with the rest of the suite.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatJudgement, judge, readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf } from '../support/apps.js';
import { MODULE, Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';
import { endStream, stopEnv, sayHowReloadWasSeen, waitDelivered } from '../support/scenario.js';
import { pm2Paths, versions } from './versions.js';
import fs from 'node:fs';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

type Proc = { pm_id: number; pid: number; name: string; pm2_env: Record<string, unknown> };
type AppSpec = { tag: string; instance_var?: string };

function linesIn(file: string): number {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
}

/** The scenarios for one PM2 version (skipped unless PM2_COMPAT_VERSIONS, if set, names it). */
export function pm2VersionSuite(version: string): void {
  describe.skipIf(!versions().includes(version))(`PM2 ${version} as daemon and CLI`, () => {
    let sb: InstanceType<typeof Pm2Sandbox>;
    let t0 = 0;

    beforeAll(async () => {
      t0 = Date.now();
      sb = Pm2Sandbox.create(`pm2si-compat-${version}-`, { pm2Bin: pm2Paths(version).bin });
      const out = await sb.pm2(['--version']);
      expect(out.trim().split('\n').pop()).toBe(version);
      await sb.install(tarball);
    });

    afterAll(async () => {
      await sb?.destroy();
      console.log(`PM2 ${version}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });

    const procsOf = async (name: string): Promise<Proc[]> => ((await sb.jlist()) as Proc[]).filter((p) => p.name === name);

    /** The online process with instance number 0 (read under the app's own instance_var). */
    const writerOf = (name: string, instanceVar = 'NODE_APP_INSTANCE') =>
      waitFor(async () => (await procsOf(name)).find((p) => p.pm2_env.status === 'online' && Number(p.pm2_env[instanceVar]) === 0), {
        timeoutMs: 30000,
        every: 200,
        what: `an online writer of ${name}`,
      });

    /** Every online process of each app has reported done, then the files are quiet: judge them. */
    async function settle(apps: AppSpec[], excludePids: number[] = []) {
      await waitFor(
        async () => {
          const reports = readReports(reportDirOf(sb.work));
          // `pm2 jlist` (a CLI run) only once no sender still running says it is not done.
          const excluded = new Set(excludePids);
          const running = (pid: number) => {
            try {
              process.kill(pid, 0);
              return true;
            } catch {
              return false;
            }
          };
          const tags = new Set(apps.map((a) => a.tag));
          if (reports.some((r: { tag: string; pid: number; done: boolean }) => tags.has(r.tag) && !r.done && !excluded.has(r.pid) && running(r.pid))) return false;
          for (const a of apps) {
            const live = (await procsOf(a.tag)).filter((p) => p.pm2_env.status === 'online').map((p) => p.pid);
            const done = new Set(reports.filter((r: { tag: string; done: boolean }) => r.tag === a.tag && r.done).map((r: { pid: number }) => r.pid));
            if (live.length === 0 || !live.every((pid) => done.has(pid))) return false;
          }
          return true;
        },
        { timeoutMs: 120000, every: 250, what: `the senders of ${apps.map((a) => a.tag).join(', ')} to finish` },
      );
      // Judged once the module holds nothing of these apps (a restarted writer is waited for until
      // it has opened its files, which can outlast 2 s of quiet), then once the files are final.
      await waitFor(
        async () => {
          const st = (await sb.trigger('status')) as { apps: { name: string; held: number; in_flight: number }[] };
          return apps.every((a) => st.apps.filter((x) => x.name === a.tag).every((x) => x.held === 0 && x.in_flight === 0));
        },
        { timeoutMs: 60000, every: 500, what: `the module to deliver what it holds of ${apps.map((a) => a.tag).join(', ')}` },
      );
      const r = await waitDelivered(sb, apps.map((a) => ({ tag: a.tag })), { excludePids });
      console.log(`PM2 ${version}:\n${formatJudgement(r)}`);
      for (const a of apps) if (Object.keys(r[a.tag].missingBySender).length) console.log(`${a.tag} missing by sender: ${JSON.stringify(r[a.tag].missingBySender)}`);
      return r;
    }

    it('installs from the tarball and talks to PM2 through the daemon\'s own pm2', async () => {
      expect(sb.moduleLog()).toContain(`relaying (pm2 ${version} from the daemon, sends on its own RPC connection`);
      const mod = await sb.moduleProc();
      expect(mod.pm2_env).toMatchObject({ status: 'online', pmx_module: true });
    });

    it('two cluster apps x 4 instances x 2000 lines (one in a namespace): every line once, in its own file', async () => {
      await sb.start([
        logApp(sb.work, { name: 'orders', instances: 4, lines: 2000, namespace: 'shop' }),
        logApp(sb.work, { name: 'billing', instances: 4, lines: 2000 }),
      ]);
      const r = await settle([{ tag: 'orders' }, { tag: 'billing' }]);
      for (const tag of ['orders', 'billing']) {
        expect(r[tag]).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
      }
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.restart_time).toBe(0);
      await sb.pm2(['delete', 'orders']);
      await sb.pm2(['delete', 'billing']);
    });

    it('pm2 restart <writer pm_id> mid-stream (default and INSTANCE_ID instance_var): nothing missing, nothing twice', async () => {
      const apps = [
        { tag: 'mailer' },
        { tag: 'search', instance_var: 'INSTANCE_ID' },
      ];
      await sb.start([
        logApp(sb.work, { name: 'mailer', instances: 4, lines: 3000, rate: 300, env: stopEnv(sb, 'mailer') }),
        logApp(sb.work, { name: 'search', instances: 4, lines: 3000, rate: 300, namespace: 'shop', instance_var: 'INSTANCE_ID', env: stopEnv(sb, 'search') }),
      ]);
      const restarted: number[] = [];
      for (const a of apps) {
        await waitFor(() => linesIn(logFile(sb.work, a.tag)) >= 2400, { timeoutMs: 60000, what: `${a.tag} to be mid-stream` });
        const w = await writerOf(a.tag, a.instance_var);
        restarted.push(w.pid);
        await sb.pm2(['restart', String(w.pm_id)]);
      }
      // The logging goes on 1,200 lines past the restarts (3,000 a sender at most).
      await Promise.all(apps.map((a) => endStream(sb, a.tag, 1200)));
      // PM2 resets instance_var to NODE_APP_INSTANCE on restart; the number stays under INSTANCE_ID.
      const w2 = await writerOf('search', 'INSTANCE_ID');
      expect(w2.pid).not.toBe(restarted[1]);
      const r = await settle(apps, restarted);
      for (const a of apps) {
        expect(r[a.tag]).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
        expect(r[a.tag].senders).toBe(5); // 4 + the restarted writer's new process
      }
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.restart_time).toBe(0);
      await sb.pm2(['delete', 'mailer']);
      await sb.pm2(['delete', 'search']);
    });

    it('pm2 reload <app> mid-stream (new workers forked under the same pm_ids): every line once but the one in doubt at the swap', async () => {
      await sb.start([logApp(sb.work, { name: 'gateway', instances: 3, lines: 2400, rate: 400, env: stopEnv(sb, 'gateway') })]);
      await waitFor(() => linesIn(logFile(sb.work, 'gateway')) >= 1200, { timeoutMs: 60000, what: 'gateway to be mid-stream' });
      await sb.pm2(['reload', 'gateway']);
      await endStream(sb, 'gateway', 1200);
      const r = await settle([{ tag: 'gateway' }]);
      expect(r.gateway.senders).toBe(6);
      expect(r.gateway, JSON.stringify(r.gateway.missingRanges)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 }); // the send in flight at each swap: the probe says where it went
      await sayHowReloadWasSeen(sb);
      await sb.pm2(['delete', 'gateway']);
    });

    it('pm2 set delivers module settings (the module restarts with them)', async () => {
      await sb.pm2(['set', `${MODULE}:buffer_mb`, '33']);
      await waitFor(() => /relaying \(pm2 [^)]*\) settings: .*buffer_mb=33/.test(sb.moduleLog()), { timeoutMs: 60000, what: 'the module to restart with buffer_mb=33' });
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.status).toBe('online');
      expect(JSON.parse(String(mod.pm2_env[MODULE]))).toMatchObject({ buffer_mb: '33' });
    });

    // Last: it replaces the daemon. PM2 resurrects the apps before it starts the modules here.
    it('pm2 update mid-stream (a new daemon, apps resurrected before the module): every line of every sender once', async () => {
      for (const name of new Set(((await sb.jlist()) as Proc[]).map((p) => p.name))) if (name !== MODULE) await sb.pm2(['delete', name]);
      await sb.start([logApp(sb.work, { name: 'updated', instances: 3, lines: 3000, rate: 300, env: stopEnv(sb, 'updated') })]);
      await waitFor(() => linesIn(logFile(sb.work, 'updated')) >= 1500, { timeoutMs: 60000, what: 'updated to be mid-stream' });
      await sb.pm2(['save']);
      await sb.pm2(['update'], { timeoutMs: 120000 });
      await sb.waitModuleOnline(60000);
      await endStream(sb, 'updated', 1200);
      const r = await settle([{ tag: 'updated' }]);
      expect(r.updated.senders).toBe(6);
      expect(r.updated, JSON.stringify(r.updated.missingRanges)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    });
  });
}
