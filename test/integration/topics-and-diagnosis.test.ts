/**
 * Issue 2 (c, d) and issue 5: other topics stay inside the scope `broadcast` names, malformed
 * packets are counted and skipped, bad settings are reported and survived, and the usual log4js /
 * PM2 misconfigurations are diagnosed in `pm2 logs` and in `pm2 trigger ... status`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { judge } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox, ROOT, waitFor } from '../support/pm2-sandbox.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const TOPIC_APP = path.join(ROOT, 'test', 'fixtures', 'topic-app.js');

interface Received {
  app: string;
  pid: number;
  instance: string;
  sent: number;
  received: { topic: string; app: string; pid: number; seq: number }[];
}

describe('topics, bad input and diagnoses', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let outDir: string;

  const topicApp = (name: string, o: { instances?: number; fork?: boolean; env?: Record<string, string>; namespace?: string } = {}) => ({
    name,
    script: TOPIC_APP,
    exec_mode: o.fork ? 'fork' : 'cluster',
    instances: o.instances ?? 1,
    ...(o.namespace ? { namespace: o.namespace } : {}),
    env: { OUT_DIR: outDir, COUNT: '20', GO_FILE: path.join(sb.work, `go-${name}`), ...(o.env ?? {}) },
  });

  /**
   * Start topic apps and let them send only once every instance listens (its record file is
   * there) and the module knows every instance online: relayed topics are never held, so a packet
   * for a peer the module does not know yet goes nowhere, by design.
   */
  async function startTopicApps(apps: ReturnType<typeof topicApp>[]) {
    await sb.start(apps);
    const want = apps.map((a) => ({ name: a.name, n: a.instances, namespace: a.namespace ?? 'default' }));
    await waitFor(
      async () => {
        if (!want.every((w) => received().filter((r) => r.app === w.name).length === w.n)) return false;
        const rows = (await status()).apps as { name: string; namespace: string; online: number }[];
        return want.every((w) => rows.some((r) => r.name === w.name && r.namespace === w.namespace && r.online === w.n));
      },
      { timeoutMs: 60000, what: `${want.map((w) => w.name).join(', ')} to listen and be known online` },
    );
    for (const a of apps) fs.writeFileSync(a.env.GO_FILE, '1');
  }

  const received = (): Received[] =>
    fs
      .readdirSync(outDir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => JSON.parse(fs.readFileSync(path.join(outDir, f), 'utf8')) as Received);

  const status = async () => (await sb.trigger('status')) as { counters: Record<string, number>; apps: Record<string, unknown>[] };

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-topics-');
    outDir = path.join(sb.work, 'received');
    fs.mkdirSync(outDir, { recursive: true });
    // A log4js app that is already running when the module is installed.
    await sb.start([logApp(sb.work, { name: 'early', instances: 3, lines: 500, env: { WAIT_FOR_FILE: path.join(sb.work, 'go-early') } })]);
    await sb.install(tarball);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it('an app started before the module, a fork app and a cluster app: topics stay in their app (broadcast=app); malformed packets are counted', async () => {
    fs.writeFileSync(path.join(sb.work, 'go-early'), '1');
    await startTopicApps([topicApp('chat', { instances: 3 }), topicApp('cron', { fork: true, env: { MALFORMED: '1' } })]);
    await waitSendersDone(sb.work, 'early', 3);
    await waitFor(() => received().filter((r) => r.app === 'chat' && r.received.length >= 40).length === 3, { timeoutMs: 60000, what: 'chat peers to receive' });
    await waitQuiet([logFile(sb.work, 'early')]);

    const r = judge({ apps: [{ tag: 'early', file: logFile(sb.work, 'early') }], reportDir: reportDirOf(sb.work) });
    expect(r.early).toMatchObject({ senders: 3, sent: 1500, written: 1500, missing: 0, duplicated: 0, foreign: 0 });

    const chat = received().filter((x) => x.app === 'chat');
    const chatPids = new Set(chat.map((x) => x.pid));
    for (const c of chat) {
      // Every packet of its two peers, once, and nothing of its own or of another app.
      expect(c.received.every((m) => m.app === 'chat' && m.pid !== c.pid && chatPids.has(m.pid))).toBe(true);
      const keys = c.received.map((m) => `${m.pid}:${m.seq}`);
      expect(new Set(keys).size).toBe(keys.length);
      expect(keys).toHaveLength(40);
    }
    // The fork app has no peer in its app: its packets (including the 1 MB one) go nowhere.
    const cron = received().find((x) => x.app === 'cron')!;
    expect(cron.received).toEqual([]);
    // Nothing reached the log4js app's file from the topic apps.
    expect(fs.readFileSync(logFile(sb.work, 'early'), 'utf8')).not.toMatch(/chat|cron/);

    const s = await status();
    expect(s.counters.malformed).toBe(7);
    // The same counters as metrics in `pm2 show` (and `pm2 monit`), and the actions.
    await waitFor(async () => /malformed total\s*│\s*7\b/.test(await sb.pm2(['show', 'pm2-scoped-intercom'])), { timeoutMs: 15000, what: 'the metrics in pm2 show' });
    const show = await sb.pm2(['show', 'pm2-scoped-intercom']);
    for (const m of ['packets in/s', 'packets out/s', 'held now', 'dropped total', 'apps tracked', 'apps without writer', 'drop-held', 'reconcile']) expect(show).toContain(m);
    const mod = await sb.moduleProc();
    expect(mod.pm2_env.restart_time).toBe(0);
    // One summary line for the malformed packets, never one per packet.
    await waitFor(() => /since the last report: .*7 malformed packets|malformed packets skipped/.test(sb.moduleLog()), { timeoutMs: 15000, what: 'the summary line' });
    expect(sb.moduleLog().match(/malformed/g)!.length).toBeLessThanOrEqual(4);
  });

  it('diagnoses a writer that sends (log4js without pm2: true) and a pm2InstanceVar that does not match instance_var', async () => {
    await sb.start([
      logApp(sb.work, { name: 'nopm2', instances: 2, lines: 50, env: { LOG4JS_PM2: 'false' } }),
      { ...logApp(sb.work, { name: 'wrongvar', instances: 2, lines: 50 }), instance_var: 'INSTANCE_ID' },
    ]);
    await waitFor(() => /DIAGNOSIS writer-sends app=nopm2 .*pm2: true/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the nopm2 diagnosis' });
    await waitFor(() => /DIAGNOSIS writer-sends app=wrongvar .*pm2InstanceVar: 'INSTANCE_ID'/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the wrongvar diagnosis' });
    // Once per app, however many packets.
    expect(sb.moduleLog().match(/DIAGNOSIS writer-sends app=nopm2/g)).toHaveLength(1);
    const s = await status();
    const row = s.apps.find((a) => a.name === 'wrongvar')!;
    expect(row.last_problem).toMatch(/writer-sends/);
    expect(row.instance_var).toBe('INSTANCE_ID');
  });

  it('diagnoses an app name reused in a second namespace (PM2 numbers it 2, 3: no writer) and a fork-mode app', async () => {
    await sb.start([logApp(sb.work, { name: 'shop', tag: 'shop-green', instances: 2, lines: 20, namespace: 'green' })]);
    await waitSendersDone(sb.work, 'shop-green', 2);
    // An ecosystem entry named like a running app would take that app over (PM2 matches by
    // name), so the second namespace is started from the command line, as users do.
    const blueApp = logApp(sb.work, { name: 'shop', tag: 'shop-blue', instances: 2, lines: 20 });
    await sb.pm2(['start', blueApp.script, '--name', 'shop', '--namespace', 'blue', '-i', '2', '-f'], { env: blueApp.env });
    // log4js in fork mode writes in every instance (each is a cluster master), so a fork app
    // sends log packets only from custom code: a fork app sending on the log topic itself.
    await sb.start([topicApp('forked', { fork: true, instances: 2, env: { TOPIC: 'log4js:message', COUNT: '5', START_DELAY_MS: '500', GO_FILE: '' } })]);
    await waitFor(() => /DIAGNOSIS held app=shop \(namespace blue\).*numbered 2, 3/.test(sb.moduleLog()), { timeoutMs: 40000, what: 'the namespace diagnosis' });
    await waitFor(() => /DIAGNOSIS fork-mode app=forked /.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the fork-mode diagnosis' });
    const s = await status();
    const blue = s.apps.find((a) => a.name === 'shop' && a.namespace === 'blue')!;
    expect(blue).toMatchObject({ writer_pm_id: null, held: 40 }); // instances 2 and 3 both send
    expect(blue.last_problem).toMatch(/held/);
    const green = s.apps.find((a) => a.name === 'shop' && a.namespace === 'green')!;
    expect(green).toMatchObject({ writer_instance: 0, held: 0 });
    // The green app's file holds its own lines only.
    const r = judge({ apps: [{ tag: 'shop-green', file: logFile(sb.work, 'shop-green') }], reportDir: reportDirOf(sb.work) });
    expect(r['shop-green']).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    // Still delivered: the fork app's instance 1 reaches its instance 0, and nothing else.
    await waitFor(() => received().some((r) => r.app === 'forked' && r.instance === '0' && r.received.length === 5), { timeoutMs: 30000, what: 'forked instance 0 to receive' });
    const forked = received().filter((r) => r.app === 'forked');
    const zero = forked.find((r) => r.instance === '0')!;
    const one = forked.find((r) => r.instance === '1')!;
    expect(zero.received.every((m) => m.pid === one.pid)).toBe(true);
    expect(one.received).toEqual([]);
  });

  it('a bad pm2 set value is reported (key, value, what is accepted) and the module runs on the previous value', async () => {
    await sb.pm2(['set', 'pm2-scoped-intercom:buffer_mb', '40']);
    await waitFor(() => /relaying .*buffer_mb=40/.test(sb.moduleLog()), { timeoutMs: 30000, what: "buffer_mb=40" });
    await sb.pm2(['set', 'pm2-scoped-intercom:buffer_mb', 'lots']);
    await waitFor(() => /invalid setting buffer_mb="lots" \(string\): expected an integer from 1 to \d+; using the previous value 40/.test(sb.moduleLog()), {
      timeoutMs: 30000,
      what: 'the invalid-setting line',
    });
    await sb.pm2(['set', 'pm2-scoped-intercom:broadcast', 'everyone']);
    await waitFor(() => /invalid setting broadcast="everyone" \(string\): expected one of app, namespace, all, off; using the (previous value|default) app/.test(sb.moduleLog()), {
      timeoutMs: 30000,
      what: 'the broadcast line',
    });
    const starts = () => sb.moduleLog().split('\n').filter((l) => l.includes(' relaying ('));
    await waitFor(async () => (await sb.moduleProc())?.pm2_env.status === 'online' && starts().length >= 4 && /broadcast=app .*buffer_mb=40/.test(starts().pop()!), {
      timeoutMs: 30000,
      what: 'the module online on good values',
    });
    const s = await status();
    expect(s.apps.length).toBeGreaterThan(0);
  });

  it('broadcast=namespace reaches the other apps of the sender\'s namespace, never another namespace', async () => {
    await sb.pm2(['set', 'pm2-scoped-intercom:broadcast', 'namespace']);
    await waitFor(() => /relaying .*broadcast=namespace/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'broadcast=namespace' });
    for (const f of fs.readdirSync(outDir)) fs.rmSync(path.join(outDir, f));
    await startTopicApps([topicApp('ns-a', { namespace: 'team1', instances: 2 }), topicApp('ns-b', { namespace: 'team1' }), topicApp('ns-c', { namespace: 'team2' })]);
    await waitFor(() => received().filter((r) => r.app.startsWith('ns-')).length === 4 && received().filter((r) => r.app === 'ns-b')[0]?.received.length >= 40, {
      timeoutMs: 60000,
      what: 'team1 to receive',
    });
    await waitQuiet([], 1500);
    const byApp = (n: string) => received().filter((r) => r.app === n);
    // ns-b gets both ns-a instances' packets; ns-a instances get the other ns-a and ns-b; ns-c nothing.
    expect(byApp('ns-b')[0].received).toHaveLength(40);
    for (const a of byApp('ns-a')) expect(a.received).toHaveLength(40);
    expect(byApp('ns-c')[0].received).toEqual([]);
    for (const r of received()) expect(r.received.every((m) => m.app.startsWith('ns-') && m.app !== 'ns-c')).toBe(true);
  });
});
