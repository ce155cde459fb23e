/**
 * What an app, or another local user, can send the module's way (docs/security.md): each test names
 * the input and proves what the module does with it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Outbox } from '../../lib/deliver/outbox';
import { HoldBuffer } from '../../lib/hold/hold-buffer';
import { Spool } from '../../lib/hold/spool';
import { Reporter } from '../../lib/operator/reporter';
import { DEFAULTS, type Settings } from '../../lib/operator/settings';
import { encodeSendCall } from '../../lib/pm2/rpc-frames';
import { Relay } from '../../lib/relay';
import { findBridge, files } from '../../lib/restart/handover';
import { newCounters } from '../../lib/shared/counters';
import { appKeyOf } from '../../lib/table/registry';
import { cluster, FakeClient, flush } from './fakes';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-hostile-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function setup(over: Partial<Settings> = {}, opts: { spool?: Spool; client?: FakeClient } = {}) {
  const settings = { ...DEFAULTS, ready_delay: 0, ...over } as Settings;
  const client = opts.client ?? new FakeClient();
  client.procs = [...cluster('web', 2, 0, { pm_uptime: 0 }), ...cluster('api', 2, 2, { pm_uptime: 0 })];
  const lines: string[] = [];
  const reporter = new Reporter((l) => lines.push(l), (l) => lines.push(l));
  const relay = new Relay({ client, settings, reporter, spool: opts.spool, newcomers: { after: () => undefined, forked: () => undefined, settled: () => true }, liveness: { isAlive: () => true, forget: () => {} } });
  await relay.start();
  const settle = async () => {
    for (let i = 0; i < 20; i++) await flush();
  };
  return { relay, client, reporter, lines, settle };
}

describe('packets an app sends', () => {
  it('forged `process` fields inside raw or data do not move a line to another app: PM2 names the sender, outside raw', async () => {
    const { client, settle } = await setup();
    // process.send({ topic, data, process: ... }): PM2 puts the whole message under `raw`.
    client.msg(1, 'web', { topic: 'log4js:message', data: 'a', process: { pm_id: 3, name: 'api', namespace: 'default' } });
    client.msg(1, 'web', { topic: 'log4js:message', data: { process: { pm_id: 3, name: 'api' }, line: 'b' } });
    // process.send({ type: 'process:msg', data: ... }): PM2 emits it under its type with `data`, no `raw`.
    client.handlers!.message({ at: 1, data: { raw: { topic: 'log4js:message', data: 'c' }, process: { pm_id: 3, name: 'api' } }, process: { pm_id: 1, name: 'web', namespace: 'default' } });
    await settle();
    expect(client.sent.map((s) => s.pmId)).toEqual([0, 0]);
    expect(client.sent.every((s) => s.pmId !== 2)).toBe(true);
  });

  it('data nested deeper than this process can serialise is skipped and counted, and the app goes on', async () => {
    // A client whose send encodes like the module's own RPC connection (amp.ts).
    const client = new FakeClient();
    const send = client.send;
    client.send = (pmId, topic, data, done) => {
      encodeSendCall(pmId, topic, data, 'x');
      send(pmId, topic, data, done);
    };
    const { relay, reporter, lines, settle } = await setup({}, { client });
    let deep: unknown = 'bottom';
    for (let i = 0; i < 200_000; i++) deep = { d: deep };
    client.msg(1, 'web', { topic: 'log4js:message', data: 'before' });
    expect(() => client.msg(1, 'web', { topic: 'log4js:message', data: deep })).not.toThrow();
    client.msg(1, 'web', { topic: 'log4js:message', data: 'after' });
    await settle();
    expect(client.sent.map((s) => s.data)).toEqual(['before', 'after']);
    expect(relay.counters.malformed).toBe(1);
    reporter.flush();
    expect(lines.join('\n')).toMatch(/1 log packets skipped: data nested too deeply to serialise/);
  });

  it('oversize packets: one is held past buffer_mb (it is in memory already), the rest past both bounds dropped and counted', async () => {
    const spool = new Spool({ dir: path.join(dir, 'spool'), maxBytes: 2 << 20, warn: () => {} });
    spool.load();
    const { relay, client, settle } = await setup({ buffer_mb: 1, spool_mb: 2 }, { spool });
    client.autoAnswer = false;
    const big = (tag: string) => `${tag}${'x'.repeat(3 << 20)}`;
    for (const tag of ['a', 'b', 'c']) client.msg(1, 'web', { topic: 'log4js:message', data: big(tag) });
    // One in flight, the others each larger than either bound.
    expect(client.pending).toHaveLength(1);
    expect(relay.counters.dropped).toBe(1);
    expect(relay.hold.bytes).toBeLessThan(4 << 20);
    client.answer();
    client.autoAnswer = true;
    client.answer();
    await settle();
    expect(client.sent.map((s) => String(s.data)[0])).toEqual(['a', 'b']);
    expect(relay.counters).toMatchObject({ held: 0, dropped: 1 });
  });
});

describe('app names that are not safe file names', () => {
  const names = ['a/b', '../../etc/passwd', '..', `long${'x'.repeat(2000)}`, 'spaces and\nnewline', 'ünïcødé'];

  it('spool files are named by the app key in hex, inside the spool folder, and read back under the same key', () => {
    const spoolDir = path.join(dir, 'spool');
    const spool = new Spool({ dir: spoolDir, maxBytes: 1 << 20, chunkBytes: 1, warn: () => {} });
    spool.load();
    // The long one is not spooled (next test); the others are.
    for (const n of names) expect(spool.append(`default\u0000${n}`, { topic: 't', data: n })).toBe(!n.startsWith('long'));
    spool.close();
    // Nothing outside the folder; every name a plain file name.
    expect(fs.readdirSync(dir)).toEqual(['spool']);
    for (const f of fs.readdirSync(spoolDir)) expect(f).toMatch(/^[0-9a-f]+-\d+\.v1\.jsonl$/);
    const again = new Spool({ dir: spoolDir, maxBytes: 1 << 20, warn: () => {} });
    again.load();
    const safe = names.filter((n) => !n.startsWith('long'));
    expect(again.appKeys().sort()).toEqual(safe.map((n) => `default\u0000${n}`).sort());
    for (const n of safe) expect(again.take(`default\u0000${n}`)).toEqual([{ topic: 't', data: n }]);
  });

  it('a name too long for a file name keeps that app off the disk, not every app', () => {
    const warn: string[] = [];
    const spool = new Spool({ dir: path.join(dir, 'spool'), maxBytes: 1 << 20, chunkBytes: 1, warn: (l) => warn.push(l) });
    spool.load();
    expect(spool.append(`default\u0000long${'x'.repeat(2000)}`, { topic: 't', data: 'x' })).toBe(false);
    expect(spool.failure).toBeUndefined();
    expect(spool.append('default\u0000web', { topic: 't', data: 'y' })).toBe(true);
    spool.flush();
    expect(spool.failure).toBeUndefined();
    expect(spool.take('default\u0000web')).toEqual([{ topic: 't', data: 'y' }]);
  });

  it("such an app's held packets stay in memory within the bound (its oldest dropped, counted), beside another app spooling", () => {
    const spool = new Spool({ dir: path.join(dir, 'spool'), maxBytes: 1 << 20, chunkBytes: 1, warn: () => {} });
    spool.load();
    const drops: string[] = [];
    const counters = newCounters();
    const hold = new HoldBuffer({ bufferBytes: 4000, spool, counters, events: { overflow: (app, n, why) => drops.push(`${app.slice(0, 12)} ${why}`) } });
    const outbox = new Outbox({
      send: () => {},
      writers: { writerOf: () => undefined, generationOf: () => 1, vacancy: () => undefined, forkedSince: () => undefined },
      events: { vacated: () => {}, refused: () => {} },
      now: () => 0,
      preciseNow: () => 0,
      counters,
      hold,
      bufferBytes: 4000,
      maxInflight: 1,
    });
    const long = `default\u0000long${'x'.repeat(2000)}`;
    for (let i = 0; i < 100; i++) {
      expect(outbox.pushLog(long, { topic: 't', data: `${i} ${'y'.repeat(100)}` })).toBe(true);
      outbox.pushLog('default\u0000web', { topic: 't', data: `${i} ${'y'.repeat(100)}` });
    }
    expect(spool.failure).toBeUndefined();
    expect(spool.countOf(long)).toBe(0);
    expect(spool.countOf('default\u0000web')).toBeGreaterThan(50);
    expect(drops.length).toBeGreaterThan(0);
    expect(drops.every((d) => d === 'default\u0000long memory')).toBe(true);
    expect(hold.bytes).toBeLessThanOrEqual(2 * 4000);
  });
});

describe('the handover bridge as found at start', () => {
  const bridgeArgv = (d: string, nonce: string) => ['node', '/m/node_modules/pm2-scoped-intercom/dist/lib/bridge.js', d, nonce, '60000'];
  const fakeProc = (pid: string, argv: string[]) => {
    const proc = path.join(dir, 'proc');
    fs.mkdirSync(path.join(proc, pid), { recursive: true });
    fs.writeFileSync(path.join(proc, pid, 'cmdline'), `${argv.join('\0')}\0`);
    return proc;
  };

  it('a nonce that is not a plain word (from a process anyone can start, or a bridge.json) never becomes a path outside the state folder', () => {
    const state = path.join(dir, 'state');
    fs.mkdirSync(state);
    const proc = fakeProc('77', bridgeArgv(state, 'x/../../../../tmp/planted'));
    // What the module would read and then delete: outside its folder.
    expect(path.dirname(files.handover(state, 'x/../../../../tmp/planted'))).not.toBe(state);
    expect(findBridge([state], proc)).toBeUndefined();
    fs.writeFileSync(path.join(state, 'bridge.json'), JSON.stringify({ pid: process.pid, nonce: '../../planted' }));
    expect(findBridge([state], path.join(dir, 'noproc'))).toBeUndefined();
  });

  it.skipIf(process.getuid?.() !== 0)("a bridge process of another user is not taken for the module's", () => {
    const state = path.join(dir, 'state');
    const proc = fakeProc('78', bridgeArgv(state, '0123456789abcdef'));
    expect(findBridge([state], proc)).toEqual({ pid: 78, nonce: '0123456789abcdef', dir: state });
    fs.chownSync(path.join(proc, '78'), 65534, 65534);
    expect(findBridge([state], proc)).toBeUndefined();
  });
});

describe('pm2 trigger drop-held (the operator)', () => {
  it("drops the held lines of the named app only (in every namespace it has), says so, and answers every call", async () => {
    const { relay, client, lines, settle } = await setup();
    client.autoAnswer = false;
    for (let i = 0; i < 5; i++) client.msg(1, 'web', { topic: 'log4js:message', data: `w${i}` });
    for (let i = 0; i < 5; i++) client.msg(3, 'api', { topic: 'log4js:message', data: `a${i}` });
    const actions = new Map<string, (param: unknown, reply: (d: unknown) => void) => void>();
    const { registerActions } = await import('../../lib/operator/metrics');
    registerActions({ action: (name: string, fn: never) => actions.set(name, fn) } as never, { relay, log: (l) => lines.push(l), settingsLine: () => '', version: 'x' });
    const call = (param: unknown) => new Promise((r) => actions.get('drop-held')!(param, r));
    expect(await call(undefined)).toMatchObject({ error: expect.stringMatching(/usage/) });
    expect(await call('nope')).toEqual({ error: 'no held packets for an app named nope' });
    expect(await call('web')).toEqual({ ok: true, dropped: 4 }); // one was in flight already
    expect(lines).toContain('operator dropped 4 held log packets of app web');
    expect(relay.hold.held(appKeyOf('api', 'default'))).toBe(4);
    client.autoAnswer = true;
    client.answer();
    await settle();
    expect(client.sent.map((s) => s.data)).toEqual(['w0', 'a0', 'a1', 'a2', 'a3', 'a4']);
  });
});

describe('a flood of other topics (relayed to peers)', () => {
  it("what waits for one peer is bounded (buffer_mb per target): past it the newest are dropped, counted and said; the peer's backlog is delivered in order", async () => {
    const { relay, client, reporter, lines, settle } = await setup({ buffer_mb: 1 });
    client.autoAnswer = false;
    const chunk = 'x'.repeat(1000);
    for (let i = 0; i < 5000; i++) client.msg(1, 'web', { topic: 'chat', data: `${i} ${chunk}` });
    // 5 MB sent to a peer that reads nothing: about 1 MB of it waits.
    const dropped = relay.counters.dropped;
    expect(dropped).toBeGreaterThan(3500);
    expect(dropped).toBeLessThan(4100);
    reporter.flush();
    expect(lines.join('\n')).toMatch(new RegExp(`${dropped} relayed packets dropped: more than buffer_mb=1 waited for one process`));
    client.autoAnswer = true;
    client.answer();
    await settle();
    const got = client.sent.filter((s) => s.pmId === 0).map((s) => Number(String(s.data).split(' ')[0]));
    expect(got).toEqual(Array.from({ length: 5000 - dropped }, (_, i) => i));
  });
});
