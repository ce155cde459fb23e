/**
 * The shared end-to-end suite for the client's logger integrations (winston, pino): the module
 * installed from its tarball into a real PM2, real logger apps in cluster mode. Each app's file
 * must hold every line its senders sent, once, and nothing of another app; the same when the
 * writer is restarted while the others log.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatJudgement, readReports } from './judge.js';
import { logApp, reportDirOf, waitSendersDone } from './apps.js';
import { Pm2Sandbox, waitFor } from './pm2-sandbox.js';
import { endStream, stopEnv, waitDelivered } from './scenario.js';

export type Sandbox = InstanceType<typeof Pm2Sandbox>;

export interface ClientSuite {
  sandbox(): Sandbox;
  app(name: string, o: { lines: number; rate?: number; instanceVar?: string; env?: Record<string, string> }): ReturnType<typeof logApp>;
}

export interface ClientSuiteOptions {
  /** 'winston' or 'pino': names the suite and the apps' prefix (w-, p-). */
  logger: string;
  prefix: string;
  fixture: string;
  /** Run the restart scenario with this instance_var (and the client's instanceVar option). */
  restartInstanceVar?: string;
  /** More tests in the same sandbox. */
  more?: (suite: ClientSuite) => void;
}

/** The online process of `name` numbered 0 (its writer). */
async function writerOf(sb: Sandbox, name: string, instanceVar = 'NODE_APP_INSTANCE'): Promise<{ pmId: number; pid: number }> {
  const list = await sb.jlist();
  const p = list.find((x: any) => x.name === name && x.pm2_env.status === 'online' && Number(x.pm2_env[instanceVar]) === 0);
  if (!p) throw new Error(`no online writer of ${name}`);
  return { pmId: p.pm_id, pid: p.pid };
}

export function clientLoggerSuite(o: ClientSuiteOptions): void {
  const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
  const n = (s: string) => `${o.prefix}${s}`;
  let sb: Sandbox;
  const suite: ClientSuite = {
    sandbox: () => sb,
    app: (name, a) =>
      logApp(sb.work, {
        name,
        instances: 4,
        lines: a.lines,
        rate: a.rate ?? 0,
        instance_var: a.instanceVar,
        env: { ...(a.instanceVar ? { INSTANCE_VAR: a.instanceVar } : {}), ...(a.env ?? {}) },
        // Room for the writer's graceful shutdown (take what is on its way, close the file) on a busy machine.
        extra: { script: o.fixture, kill_timeout: 5000 },
      }),
  };

  describe(`${o.logger} through pm2-scoped-intercom/${o.logger}: one writer per app`, () => {
    beforeAll(async () => {
      sb = Pm2Sandbox.create(`pm2si-client-${o.logger}-`);
      await sb.install(tarball);
    });

    afterAll(async () => {
      await sb?.destroy();
    });

    it('two cluster apps x 4 instances, 2000 lines each: every line once, in its own file', async () => {
      const [a, b] = [n('orders'), n('billing')];
      await sb.start([suite.app(a, { lines: 2000 }), suite.app(b, { lines: 2000 })]);
      await waitSendersDone(sb.work, a, 4, 120000);
      await waitSendersDone(sb.work, b, 4, 120000);
      const r = await waitDelivered(sb, [{ tag: a }, { tag: b }]);
      console.log(`${o.logger}, 2 apps x 4 instances:\n${formatJudgement(r)}`);
      for (const tag of [a, b]) {
        expect(r[tag], JSON.stringify(r[tag].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
      }
      // One writer per app, three senders.
      const roles = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === a).map((x: any) => x.role).sort();
      expect(roles).toEqual(['sender', 'sender', 'sender', 'writer']);
    });

    const iv = o.restartInstanceVar;
    it(`${iv ? `instance_var ${iv}, ` : ''}the writer restarted while the other instances log 300 lines/s: nothing missing, nothing twice`, async () => {
      const [cart, users] = [n('cart'), n('users')];
      await sb.start([
        suite.app(cart, { lines: 3000, rate: 300, instanceVar: iv, env: stopEnv(sb, cart) }),
        suite.app(users, { lines: 3000, rate: 300, instanceVar: iv, env: stopEnv(sb, users) }),
      ]);
      // Restart once every instance is well into its run.
      await waitFor(() => readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === cart && x.sent >= 600).length >= 4, {
        timeoutMs: 60000,
        every: 100,
        what: `${cart} instances to log 600 lines each`,
      });
      const old = await writerOf(sb, cart, iv);
      await sb.pm2(['restart', String(old.pmId)]);
      const fresh = await waitFor(
        async () => {
          const w = await writerOf(sb, cart, iv).catch(() => undefined);
          return w && w.pid !== old.pid ? w : undefined;
        },
        { timeoutMs: 60000, every: 200, what: `the restarted writer of ${cart}` },
      );
      expect(fresh.pmId).toBe(old.pmId);
      // The logging goes on 1,200 lines past the restart (3,000 a sender at most).
      await Promise.all([cart, users].map((tag) => endStream(sb, tag, 1200)));
      // The three others and the new writer finish; the old writer reported what it sent when stopped.
      await waitSendersDone(sb.work, cart, 4, 120000);
      await waitSendersDone(sb.work, users, 4, 120000);
      const r = await waitDelivered(sb, [{ tag: cart }, { tag: users }]);
      console.log(`${o.logger}, writer of ${cart} restarted (old pid ${old.pid}, new pid ${fresh.pid}):\n${formatJudgement(r)}`);
      const oldReport = readReports(reportDirOf(sb.work)).find((x: any) => x.pid === old.pid);
      expect(oldReport, 'the stopped writer reported what it had logged').toMatchObject({ role: 'writer', instance: 0, done: false });
      // The new process knows it is the writer again (its instance number read from the right variable).
      const freshReport = readReports(reportDirOf(sb.work)).find((x: any) => x.pid === fresh.pid);
      expect(freshReport).toMatchObject({ role: 'writer', instance: 0, done: true });
      // The stream went on past the restart: the new writer logged lines of its own too.
      expect(freshReport.sent).toBeGreaterThan(0);
      expect(r[cart].senders).toBe(5);
      // Zero missing, the stopped writer's own lines included (it closes its file on SIGINT).
      expect(r[cart], JSON.stringify(r[cart].missingBySender)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
      expect(r[cart].written).toBe(r[cart].sent);
      expect(r[users], JSON.stringify(r[users].missingBySender)).toMatchObject({ senders: 4, missing: 0, duplicated: 0, foreign: 0 });
      expect(r[users].written).toBe(r[users].sent);
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.restart_time).toBe(0);
    });

    o.more?.(suite);
  });
}
