import { describe, expect, it } from 'vitest';
import { DEFAULTS, type Settings } from '../../lib/operator/settings';
import { NO_LIVENESS } from '../../lib/proc/liveness';
import { Relay, type RelayOptions } from '../../lib/relay';
import { Reporter } from '../../lib/operator/reporter';
import { cluster, env, FakeClient, FakeTimers, flush } from './fakes';

async function setup(
  over: Partial<Settings> = {},
  procs = [...cluster('web', 4, 0, { pm_uptime: 0 }), ...cluster('api', 2, 4, { pm_uptime: 0 })],
  opts: Partial<RelayOptions> = {},
) {
  const settings = { ...DEFAULTS, ready_delay: 1000, ...over } as Settings;
  const client = new FakeClient();
  client.procs = procs;
  const timers = new FakeTimers();
  const lines: string[] = [];
  const reporter = new Reporter((l) => lines.push(l), (l) => lines.push(l));
  const relay = new Relay({ client, settings, reporter, timers, now: () => timers.now, preciseNow: () => timers.now, newcomers: { after: () => undefined, forked: () => undefined, settled: () => true }, liveness: { isAlive: () => true, forget: () => {} }, ...opts });
  await relay.start();
  lines.length = 0; // the start-up lines (each app's writer)
  return { relay, client, timers, lines, reporter, settings };
}

const logs = (client: FakeClient, pmId: number, name: string, from: number, to: number) => {
  for (let i = from; i < to; i++) client.msg(pmId, name, { topic: 'log4js:message', data: `${name}-${pmId}-${i}` });
};

describe('Relay', () => {
  it('delivers each app\'s log packets, in order, only to that app\'s writer', async () => {
    const { client } = await setup();
    logs(client, 1, 'web', 0, 50);
    logs(client, 5, 'api', 0, 50);
    logs(client, 2, 'web', 0, 50);
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent.filter((s) => s.pmId === 0).map((s) => s.data)).toEqual([...Array.from({ length: 50 }, (_, i) => `web-1-${i}`), ...Array.from({ length: 50 }, (_, i) => `web-2-${i}`)]);
    expect(client.sent.filter((s) => s.pmId === 4)).toHaveLength(50);
    expect(client.sent.every((s) => s.pmId === 0 || s.pmId === 4)).toBe(true);
  });

  it('keeps at most max_inflight sends out per target', async () => {
    const { client, relay } = await setup({ max_inflight: 3 });
    client.autoAnswer = false;
    logs(client, 1, 'web', 0, 10);
    expect(client.pending).toHaveLength(3);
    expect(relay.counters.held).toBe(7);
    client.answer(1);
    expect(client.pending).toHaveLength(3);
    client.answer();
    client.answer();
    client.answer();
    client.answer();
    expect(client.sent).toHaveLength(10);
    expect(relay.counters).toMatchObject({ in: 10, out: 10, held: 0 });
  });

  it('holds while the writer restarts and delivers in order, exactly once, when it is ready', async () => {
    const { client, timers, relay, lines } = await setup();
    client.event('exit', env({ pm_id: 0, name: 'web', status: 'stopping', NODE_APP_INSTANCE: 0 }));
    logs(client, 1, 'web', 0, 30);
    await flush();
    expect(client.sent).toHaveLength(0);
    expect(relay.counters.held).toBe(30);
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: timers.now }));
    logs(client, 1, 'web', 30, 40);
    timers.advance(999);
    for (let i = 0; i < 5; i++) await flush();
    expect(client.sent).toHaveLength(0); // not before ready_delay: log4js may not listen yet
    timers.advance(1);
    for (let i = 0; i < 60; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(Array.from({ length: 40 }, (_, i) => `web-1-${i}`));
    expect(lines.some((l) => l.includes('delivering 40 held log packets to writer pm_id=0'))).toBe(true);
  });

  it('an "offline" refusal re-holds the packet in order and stops sending to that process', async () => {
    const { client, timers, relay } = await setup({ max_inflight: 4 });
    client.autoAnswer = false;
    logs(client, 1, 'web', 0, 10);
    client.answer(2); // 0,1 delivered
    client.answer(2, new Error('Process with ID <0> offline.')); // 2,3 refused
    expect(client.pending).toHaveLength(2); // 4,5 already out: answered later
    client.answer(2, new Error('Process with ID <0> offline.'));
    expect(client.pending).toHaveLength(0);
    expect(relay.counters.held).toBe(8);
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: timers.now }));
    timers.advance(1000);
    while (client.pending.length > 0) client.answer(1);
    expect(client.sent.map((s) => s.data)).toEqual(Array.from({ length: 10 }, (_, i) => `web-1-${i}`));
    expect(relay.counters).toMatchObject({ out: 10, held: 0, dropped: 0 });
  });

  it('re-sends what PM2 handed to a new generation before it listened (reload/crash: no event first)', async () => {
    const { client, timers, relay } = await setup();
    logs(client, 1, 'web', 0, 5);
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent).toHaveLength(5);
    // A reload parks the old writer and starts a new pm_id 0 at `restartAt`; we learn it only at
    // its online event, after 3 more packets went to pm_id 0.
    timers.advance(10);
    const restartAt = timers.now;
    timers.advance(1);
    logs(client, 1, 'web', 5, 8);
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent).toHaveLength(8);
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: restartAt }));
    expect(relay.counters.held).toBeGreaterThan(0);
    timers.advance(1000);
    for (let i = 0; i < 40; i++) await flush();
    const delivered = client.sent.map((s) => s.data);
    // 5,6,7 went into the new generation too early: sent again after the ready delay.
    expect(delivered.slice(8)).toEqual(['web-1-5', 'web-1-6', 'web-1-7']);
    expect(relay.counters.out).toBe(8);
  });

  it('a list PM2 built before a new app started does not make its packets unknown; a list asked for meanwhile is read again', async () => {
    // (pids below are made up: every process counts as alive)
    const { client, timers, relay } = await setup({}, undefined, { liveness: NO_LIVENESS });
    // A list on its way (PM2 is slow to answer it), built before the app 'jobs' started.
    let answerList!: (envs: ReturnType<FakeClient['list']> extends Promise<infer T> ? T : never) => void;
    const before = client.procs.map((p) => ({ ...p }));
    client.list = () => new Promise((resolve) => (answerList = resolve));
    const first = relay.reconcile();
    // Meanwhile 'jobs' starts: its online events, then its senders log.
    const jobs = cluster('jobs', 2, 6, { pm_uptime: timers.now, status: 'launching' });
    for (const e of jobs) client.event('online', e);
    void relay.reconcile(); // asked for while the first is on its way
    answerList(before);
    await first;
    logs(client, 7, 'jobs', 0, 5);
    expect(relay.counters.dropped).toBe(0);
    expect(relay.counters.held).toBe(5);
    // It reads again: this time with the new app (and its pids).
    client.list = async () => [...before, ...jobs.map((e, i) => ({ ...e, status: 'online', pid: 900 + i }))];
    timers.advance(100);
    for (let i = 0; i < 20; i++) await flush();
    expect(relay.registry.process(6)!.pid).toBe(900);
    timers.advance(1000); // the new writer's ready delay
    for (let i = 0; i < 40; i++) await flush();
    expect(client.sent.filter((s) => s.pmId === 6).map((s) => s.data)).toEqual(Array.from({ length: 5 }, (_, i) => `jobs-7-${i}`));
    expect(relay.counters).toMatchObject({ dropped: 0, held: 0 });
  });

  it('a process list that shows the reloaded writer still launching (before its online event) loses nothing', async () => {
    const { client, timers, relay } = await setup();
    logs(client, 1, 'web', 0, 5);
    for (let i = 0; i < 20; i++) await flush();
    timers.advance(10);
    const restartAt = timers.now;
    timers.advance(1);
    logs(client, 1, 'web', 5, 8); // into the new, not yet listening, pm_id 0
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent).toHaveLength(8);
    client.procs[0] = { ...client.procs[0], status: 'launching', pm_uptime: restartAt };
    await relay.reconcile();
    expect(relay.counters.held).toBe(3);
    client.procs[0] = { ...client.procs[0], status: 'online' };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: restartAt }));
    timers.advance(1000);
    for (let i = 0; i < 40; i++) await flush();
    expect(client.sent.map((s) => s.data).slice(8)).toEqual(['web-1-5', 'web-1-6', 'web-1-7']);
    expect(relay.counters).toMatchObject({ out: 8, held: 0, dropped: 0 });
  });

  it('stops sending the moment PM2 forks a new process under the writer\'s pm_id (reload), before any event', async () => {
    let forked = false;
    const newcomers = {
      after: (pmId: number, known: number) => (forked && pmId === 0 && known > 0 && known !== 2000 ? 2000 : undefined),
      forked: (pmId: number, known: number) => (known > 0 ? forked && pmId === 0 && known !== 2000 : undefined),
    };
    const procs = cluster('web', 2, 0, { pm_uptime: 0 }).map((e, i) => ({ ...e, pid: 1000 + i }));
    const { client, timers, relay, lines, reporter } = await setup({}, procs, { newcomers, liveness: { isAlive: () => true, forget: () => {} } });
    logs(client, 1, 'web', 0, 5);
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent).toHaveLength(5);
    timers.advance(10);
    const restartAt = timers.now;
    forked = true;
    client.procs[0] = { ...client.procs[0], status: 'launching', pm_uptime: restartAt, pid: 2000 };
    timers.advance(1);
    logs(client, 1, 'web', 5, 8);
    for (let i = 0; i < 20; i++) await flush();
    expect(client.sent).toHaveLength(5); // nothing went to the process that does not listen yet
    expect(relay.counters.held).toBe(3);
    reporter.flush();
    expect(lines.some((l) => /sends stopped before they went out: pm_id 0 is a new process \(pid 2000, was 1000\)/.test(l))).toBe(true);
    timers.advance(200); // the list read the vacated writer asks for
    for (let i = 0; i < 10; i++) await flush();
    client.procs[0] = { ...client.procs[0], status: 'online' };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: restartAt }));
    timers.advance(1000);
    for (let i = 0; i < 40; i++) await flush();
    timers.advance(1000);
    for (let i = 0; i < 40; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(Array.from({ length: 8 }, (_, i) => `web-1-${i}`));
    expect(relay.counters).toMatchObject({ out: 8, held: 0, dropped: 0 });
  });

  it('a send answered late (this process busy) before the fork reached the old writer: not sent again; one answered after the fork is', async () => {
    let forked = false;
    const newcomers = {
      after: (pmId: number, known: number) => (forked && pmId === 0 && known > 0 && known !== 2000 ? 2000 : undefined),
      forked: (pmId: number, known: number) => (known > 0 ? forked && pmId === 0 && known !== 2000 : undefined),
    };
    const procs = cluster('web', 2, 0, { pm_uptime: 0 }).map((e, i) => ({ ...e, pid: 1000 + i }));
    const { client, timers, relay } = await setup({}, procs, { newcomers, liveness: { isAlive: () => true, forget: () => {} } });
    client.autoAnswer = false;
    logs(client, 1, 'web', 0, 1);
    const restartAt = timers.now + 1;
    timers.advance(3); // PM2 stamps the new generation at restartAt; we read the answer only now
    client.answer(1); // no new process yet: PM2 handled it before the swap
    logs(client, 1, 'web', 1, 2);
    timers.advance(3);
    forked = true;
    client.answer(1); // answered after the fork, midpoint past the stamp: the new process got it
    client.procs[0] = { ...client.procs[0], status: 'online', pm_uptime: restartAt, pid: 2000 };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: restartAt }));
    for (const ms of [1000, 1000]) {
      timers.advance(ms);
      for (let i = 0; i < 20; i++) {
        client.answer();
        await flush();
      }
    }
    expect(client.sent.map((s) => s.data)).toEqual(['web-1-0', 'web-1-1', 'web-1-1']);
    expect(relay.counters).toMatchObject({ out: 2, held: 0, dropped: 0 });
  });

  it('a writer found dying (kill -9): what PM2 already had is never sent again to its restarted process', async () => {
    const newcomers = { after: () => undefined, forked: () => true };
    let alive = true;
    const procs = cluster('web', 2, 0, { pm_uptime: 0 }).map((e, i) => ({ ...e, pid: 1000 + i }));
    const { client, timers, relay } = await setup({}, procs, { newcomers, liveness: { isAlive: (pid) => pid !== 1000 || alive, forget: () => {} } });
    client.autoAnswer = false;
    logs(client, 1, 'web', 0, 1); // in flight when the writer is killed
    alive = false;
    const restartAt = timers.now + 1;
    timers.advance(4); // the answer is read after PM2 restarted it: the old process had it, or the new one
    client.answer(1);
    logs(client, 1, 'web', 1, 2); // found dying before this send: held
    expect(client.sent.map((s) => s.data)).toEqual(['web-1-0']);
    client.procs[0] = { ...client.procs[0], status: 'online', pm_uptime: restartAt, pid: 2000 };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: restartAt }));
    alive = true;
    for (const ms of [1000, 1000]) {
      timers.advance(ms);
      for (let i = 0; i < 20; i++) {
        client.answer();
        await flush();
      }
    }
    expect(client.sent.map((s) => s.data)).toEqual(['web-1-0', 'web-1-1']);
    expect(relay.counters).toMatchObject({ out: 2, held: 0, dropped: 0 });
  });

  it('without a spool, drops the oldest past buffer_mb, counts them and says so once', async () => {
    const { client, relay, lines, reporter } = await setup({ buffer_mb: 1 });
    client.event('exit', env({ pm_id: 0, name: 'web', status: 'stopped', NODE_APP_INSTANCE: 0 }));
    // ~256 KB each: four fit in 1 MB.
    for (let i = 0; i < 12; i++) client.msg(1, 'web', { topic: 'log4js:message', data: `${i} ${'x'.repeat(256 * 1024 - 200)}` });
    expect(relay.counters).toMatchObject({ held: 4, dropped: 8 });
    expect(relay.hold.bytes).toBeLessThanOrEqual(1048576);
    reporter.flush();
    expect(lines.filter((l) => l.includes('hold buffer full (buffer_mb=1 full, the oldest dropped)'))).toHaveLength(1);
    expect(lines.filter((l) => l.includes('DIAGNOSIS buffer-full'))).toHaveLength(1);
    const kept = relay.heldPackets()['default\u0000web'].map((p) => String(p.data).split(' ')[0]);
    expect(kept).toEqual(['8', '9', '10', '11']);
  });

  it('at shutdown, PM2\'s generation under each pm_id (for the sends still to judge): read only when something went out, given up after the timeout', async () => {
    const { client, relay, timers } = await setup({}, cluster('web', 2, 0, { pm_uptime: 500 }));
    let lists = 0;
    const list = client.list.bind(client);
    client.list = () => (lists++, list());
    expect(await relay.generationsNow(500)).toBeUndefined();
    expect(lists).toBe(0);
    logs(client, 1, 'web', 0, 1);
    await flush();
    relay.stop();
    client.procs[0] = { ...client.procs[0], pm_uptime: 900 };
    expect(await relay.generationsNow(500)).toEqual(new Map([[0, 900], [1, 500]]));
    client.list = () => (lists++, new Promise(() => {}));
    const late = relay.generationsNow(500);
    timers.advance(500);
    expect(await late).toBeUndefined();
    expect(lists).toBe(2);
  });

  it('drops what a deleted app held, with one line', async () => {
    const { client, relay, lines, timers } = await setup();
    client.event('exit', env({ pm_id: 0, name: 'web', status: 'stopped', NODE_APP_INSTANCE: 0 }));
    logs(client, 1, 'web', 0, 7);
    client.procs = client.procs.filter((p) => p.name !== 'web');
    timers.advance(1000); // the reconcile scheduled after an exit
    for (let i = 0; i < 10; i++) await flush();
    // Kept a while: pm2 kill and pm2 update delete the apps before the module, which saves them.
    expect(relay.counters).toMatchObject({ held: 7, dropped: 0 });
    expect(relay.hold.held('default\u0000web')).toBe(7);
    timers.advance(30_000);
    expect(relay.counters).toMatchObject({ held: 0, dropped: 7 });
    expect(lines.filter((l) => l.includes('was deleted: dropped 7 log packets'))).toHaveLength(1);
  });

  it('counts malformed packets without a line per packet', async () => {
    const { client, relay, lines, reporter } = await setup();
    for (const raw of ['s', 1, null, [1], { a: 1 }, { topic: 'x' }]) client.msg(1, 'web', raw);
    expect(relay.counters.malformed).toBe(6);
    expect(lines).toHaveLength(0);
    reporter.flush();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/malformed packets skipped/);
  });

  it('diagnoses a writer that sends log packets itself, once', async () => {
    const { client, lines } = await setup({}, cluster('web', 2, 0, { pm_uptime: 0, instance_var: 'INSTANCE_ID', INSTANCE_ID: undefined }).map((e, i) => ({ ...e, INSTANCE_ID: i })));
    logs(client, 0, 'web', 0, 3);
    const d = lines.filter((l) => l.includes('DIAGNOSIS writer-sends'));
    expect(d).toHaveLength(1);
    expect(d[0]).toContain("pm2InstanceVar: 'INSTANCE_ID'");
  });

  it('diagnoses two processes claiming the writer number, once; the lowest pm_id writes', async () => {
    const procs = [env({ pm_id: 3, name: 'web', NODE_APP_INSTANCE: 0, pm_uptime: 0 }), env({ pm_id: 5, name: 'web', NODE_APP_INSTANCE: 0, pm_uptime: 0 }), env({ pm_id: 6, name: 'web', NODE_APP_INSTANCE: 1, pm_uptime: 0 })];
    const { client, lines } = await setup({}, procs);
    logs(client, 6, 'web', 0, 3);
    for (let i = 0; i < 10; i++) await flush();
    client.event('online', env({ pm_id: 6, name: 'web', NODE_APP_INSTANCE: 1 })); // a table change: elected again
    expect(client.sent.every((s) => s.pmId === 3)).toBe(true);
    const d = lines.filter((l) => l.includes('DIAGNOSIS duplicate-writer'));
    expect(d).toHaveLength(1);
    expect(d[0]).toContain('pm_ids 3, 5');
  });

  it('start-up: packets that arrive while the table is built wait for it', async () => {
    const settings = { ...DEFAULTS, ready_delay: 0 } as Settings;
    const client = new FakeClient();
    client.procs = cluster('web', 2, 0, { pm_uptime: 0 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const list = client.list.bind(client);
    client.list = async () => {
      await gate;
      return list();
    };
    const relay = new Relay({ client, settings, reporter: new Reporter(() => {}, () => {}) });
    const started = relay.start();
    await flush();
    logs(client, 1, 'web', 0, 3);
    release();
    await started;
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['web-1-0', 'web-1-1', 'web-1-2']);
  });

  it('the status rows name the writer, held and forwarded counts', async () => {
    const { client, relay } = await setup();
    logs(client, 1, 'web', 0, 4);
    for (let i = 0; i < 10; i++) await flush();
    const web = relay.status().find((r) => r.name === 'web')!;
    expect(web).toMatchObject({ namespace: 'default', instances: 4, online: 4, writer_pm_id: 0, writer_instance: 0, writer_ready: true, forwarded: 4, held: 0 });
  });
});

describe('Relay start-up with a spool', () => {
  it('delivers spooled packets of known apps first and drops those of apps that are gone, with one line', async () => {
    const settings = { ...DEFAULTS, ready_delay: 0 } as Settings;
    const client = new FakeClient();
    client.procs = cluster('web', 2, 0, { pm_uptime: 0 });
    const lines: string[] = [];
    const relay = new Relay({ client, settings, reporter: new Reporter((l) => lines.push(l), (l) => lines.push(l)) });
    await relay.start({
      spool: {
        'default\u0000web': [{ topic: 'log4js:message', data: 'old-1' }, { topic: 'log4js:message', data: 'old-2' }],
        'default\u0000gone': [{ topic: 'log4js:message', data: 'x' }],
      },
    });
    logs(client, 1, 'web', 0, 1);
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['old-1', 'old-2', 'web-1-0']);
    expect(relay.counters.dropped).toBe(1);
    expect(lines.filter((l) => l.includes('app=gone (namespace default) is gone: dropped 1'))).toHaveLength(1);
  });
});
