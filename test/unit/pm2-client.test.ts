/**
 * The PM2 adapter: which pm2 it loads, and the one PM2 version difference it absorbs (event order
 * on start/restart/reload). Event sequences below are as recorded from real daemons with
 * test/compat/probe.js (pm2 5.4.3, 6.0.14 and 7.0.4; docs/compat.md), trimmed to what matters.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createPm2Client, daemonPm2Root, loadPm2, normalizeEvents, type LoadedPm2 } from '../../lib/pm2/pm2-client';
import { Registry } from '../../lib/table/registry';
import { env } from './fakes';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-unit-client-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A pm2 installation as `npm install pm2@version` lays it out, with the containers that version ships. */
function fakePm2(dir: string, version: string, containers: string[]): string {
  const root = path.join(tmp, dir, 'node_modules', 'pm2');
  fs.mkdirSync(path.join(root, 'lib'), { recursive: true });
  fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'pm2', version }));
  fs.writeFileSync(path.join(root, 'index.js'), `module.exports = { fake: ${JSON.stringify(version)} };\n`);
  for (const c of containers) fs.writeFileSync(path.join(root, 'lib', c), '');
  return root;
}

const pm2v5 = fakePm2('v5', '5.4.3', ['ProcessContainer.js', 'ProcessContainerFork.js']);
const pm2v6 = fakePm2('v6', '6.0.14', ['ProcessContainer.js', 'ProcessContainerFork.js', 'ProcessContainerBun.js', 'ProcessContainerForkBun.js']);
const pm2v7 = fakePm2('v7', '7.0.4', ['ProcessContainer.js', 'ProcessContainerFork.js', 'ProcessContainerBun.js', 'ProcessContainerForkBun.js']);

describe('daemonPm2Root: the daemon\'s own pm2, whatever its version', () => {
  it('finds 5.4, 6.0 and 7.0 installations from the fork container a module runs in', () => {
    expect(daemonPm2Root(path.join(pm2v5, 'lib', 'ProcessContainerFork.js'))).toBe(pm2v5);
    expect(daemonPm2Root(path.join(pm2v6, 'lib', 'ProcessContainerFork.js'))).toBe(pm2v6);
    expect(daemonPm2Root(path.join(pm2v7, 'lib', 'ProcessContainerFork.js'))).toBe(pm2v7);
  });

  it('also from the Bun containers that 6.0 and 7.0 ship', () => {
    expect(daemonPm2Root(path.join(pm2v6, 'lib', 'ProcessContainerForkBun.js'))).toBe(pm2v6);
    expect(daemonPm2Root(path.join(pm2v7, 'lib', 'ProcessContainerForkBun.js'))).toBe(pm2v7);
  });

  it('not from a script PM2 did not start, nor from a folder whose package is not pm2', () => {
    expect(daemonPm2Root(undefined)).toBeUndefined();
    expect(daemonPm2Root('/srv/app/dist/app.js')).toBeUndefined();
    const other = path.join(tmp, 'other', 'lib');
    fs.mkdirSync(other, { recursive: true });
    fs.writeFileSync(path.join(tmp, 'other', 'package.json'), JSON.stringify({ name: 'not-pm2' }));
    expect(daemonPm2Root(path.join(other, 'ProcessContainerFork.js'))).toBeUndefined();
  });
});

describe('loadPm2: pm2 is an optional peer dependency', () => {
  let saved: NodeJS.ProcessEnv;
  beforeEach(() => {
    saved = { ...process.env };
  });
  afterEach(() => {
    process.env = saved;
  });

  it.each([
    ['5.4.3', pm2v5],
    ['6.0.14', pm2v6],
    ['7.0.4', pm2v7],
  ])('under a %s daemon it uses that daemon\'s pm2, never a copy of its own', (version, root) => {
    const required: string[] = [];
    const loaded = loadPm2(path.join(root, 'lib', 'ProcessContainerFork.js'), (id) => {
      required.push(id);
      return require(id);
    });
    expect(loaded).toMatchObject({ source: 'daemon', version, api: { fake: version } });
    expect(required).toEqual([root]);
  });

  it('silences the API (PM2_PROGRAMMATIC) and drops the PM2_USAGE=CLI a module inherits', () => {
    process.env.PM2_USAGE = 'CLI';
    delete process.env.PM2_PROGRAMMATIC;
    loadPm2(path.join(pm2v5, 'lib', 'ProcessContainerFork.js'));
    expect(process.env.PM2_PROGRAMMATIC).toBe('true');
    expect(process.env.PM2_USAGE).toBeUndefined();
  });

  it('outside PM2 it uses a pm2 it can require (here the devDependency)', () => {
    const loaded = loadPm2('/srv/app/dist/app.js');
    expect(loaded.source).toBe('bundled');
    expect(loaded.version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('outside PM2 and without any pm2 it says what to do', () => {
    const noPm2 = (id: string): unknown => {
      throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
    };
    expect(() => loadPm2('/srv/app/dist/app.js', noPm2)).toThrow(/optional peer dependency.*pm2 install pm2-scoped-intercom/s);
  });
});

/** A pm2 API double: records RPC calls and hands out a bus we can emit on. */
function fakeApi() {
  const listeners = new Map<string, ((p: unknown) => void)[]>();
  const calls: unknown[][] = [];
  const api = {
    connect: (cb: (err: Error | null) => void) => cb(null),
    disconnect: (cb?: () => void) => cb?.(),
    list: (cb: (err: Error | null, l: { pm2_env?: Record<string, unknown> }[]) => void) => cb(null, [{ pm2_env: { pm_id: 0, name: 'a' } }, {}]),
    launchBus: (cb: (err: Error | null, bus: { on(e: string, fn: (p: unknown) => void): void }) => void) =>
      cb(null, { on: (e, fn) => listeners.set(e, [...(listeners.get(e) ?? []), fn]) }),
    Client: {
      executeRemote: (method: string, packet: unknown, cb: (err: Error | null) => void) => {
        calls.push([method, packet]);
        cb(null);
      },
    },
  };
  const emit = (e: string, p: unknown) => (listeners.get(e) ?? []).forEach((fn) => fn(p));
  return { loaded: { api, version: '5.4.3', source: 'daemon' } as unknown as LoadedPm2, calls, emit };
}

describe('createPm2Client', () => {
  it('lists pm2_envs, sends through sendDataToProcessId and hands on bus packets', async () => {
    const f = fakeApi();
    const c = createPm2Client(f.loaded);
    expect(c).toMatchObject({ version: '5.4.3', source: 'daemon' });
    await c.connect();
    expect(await c.list()).toEqual([{ pm_id: 0, name: 'a' }, {}]);
    const done: (Error | null)[] = [];
    c.send(3, 'log4js:message', { x: 1 }, (err) => done.push(err));
    expect(f.calls).toEqual([['sendDataToProcessId', { id: 3, topic: 'log4js:message', data: { x: 1 } }]]);
    expect(done).toEqual([null]);
    const msgs: unknown[] = [];
    const events: unknown[] = [];
    await c.subscribe({ message: (p) => msgs.push(p), event: (p) => events.push(p) });
    const msg = { at: 1, raw: { topic: 't', data: 1 }, process: { pm_id: 1, name: 'a', namespace: 'default' } };
    f.emit('process:msg', msg);
    expect(msgs).toEqual([msg]);
    // A PM2 5 restart: the client passes `online` first (see below).
    f.emit('process:event', { event: 'restart', process: env({ pm_id: 1, name: 'a', pm_uptime: 5 }) });
    expect(events.map((e) => (e as { event: string }).event)).toEqual(['online', 'restart']);
    await c.close();
  });
});

// ---- Event order: recorded sequences ------------------------------------------------------------

type Ev = [event: string, pm_id: number | string, status: string, pm_uptime: number];
const packet = ([event, pm_id, status, pm_uptime]: Ev) => ({ event, at: pm_uptime, manually: false, process: env({ pm_id, name: 'probe', status, pm_uptime, NODE_APP_INSTANCE: 0 }) });

function run(seq: Ev[]): [string, number | string][] {
  const out: [string, number | string][] = [];
  const fn = normalizeEvents((p) => {
    const q = p as ReturnType<typeof packet>;
    out.push([q.event, q.process.pm_id as number | string]);
  });
  for (const e of seq) fn(packet(e));
  return out;
}

// pm2 5.4.3 (vizion git parsing on by default): start/restart/reload say `online` status first,
// the `online` event comes after a git scan of the app folder (20-240 ms here, unbounded in general).
const V5 = {
  start: [['start', 0, 'online', 881], ['start', 1, 'online', 887], ['online', 0, 'online', 881], ['online', 1, 'online', 887]] as Ev[],
  restart: [['exit', 0, 'stopping', 881], ['exit', 0, 'stopped', 881], ['restart', 0, 'online', 4483], ['online', 0, 'online', 4483]] as Ev[],
  reload: [['online', 0, 'online', 5977], ['exit', '_old_0', 'stopping', 4483], ['exit', '_old_0', 'stopped', 4483], ['reload', 0, 'online', 5977]] as Ev[],
  stop: [['exit', 4, 'stopping', 3259], ['exit', 4, 'stopped', 3259], ['stop', 4, 'stopped', 3259]] as Ev[],
  // A crash restart (autorestart) gives no `restart` event at all: only the late `online`.
  crash: [['exit', 0, 'stopped', 5977], ['online', 0, 'online', 9001]] as Ev[],
};
// pm2 6.0.14 and 7.0.4: `online` (status launching) first, then start/restart/reload.
const V7 = {
  start: [['online', 0, 'launching', 6115], ['start', 0, 'online', 6115], ['online', 1, 'launching', 6125], ['start', 1, 'online', 6125]] as Ev[],
  restart: [['exit', 0, 'stopping', 6115], ['exit', 0, 'stopped', 6115], ['online', 0, 'launching', 7484], ['restart', 0, 'online', 7484]] as Ev[],
  reload: [['online', 0, 'launching', 8800], ['exit', '_old_0', 'stopping', 7484], ['exit', '_old_0', 'stopped', 7484], ['reload', 0, 'online', 8800]] as Ev[],
  stop: [['exit', 4, 'stopping', 6382], ['exit', 4, 'stopped', 6382], ['stop', 4, 'stopped', 6382]] as Ev[],
};

describe('normalizeEvents: one `online` per generation, before start/restart/reload, on every PM2', () => {
  it('PM2 6/7 order passes unchanged', () => {
    for (const seq of Object.values(V7)) expect(run(seq)).toEqual(seq.map(([e, id]) => [e, id]));
  });

  it('PM2 5 start: online is passed at `start`, the late online is not passed again', () => {
    expect(run(V5.start)).toEqual([
      ['online', 0],
      ['start', 0],
      ['online', 1],
      ['start', 1],
    ]);
  });

  it('PM2 5 restart: online before restart, as on PM2 6/7', () => {
    expect(run([...V5.start, ...V5.restart])).toEqual([...run(V5.start), ['exit', 0], ['exit', 0], ['online', 0], ['restart', 0]]);
    expect(run(V5.restart)).toEqual(run(V7.restart));
  });

  it('PM2 5 reload: already online first (new worker), parked _old_ exits pass through', () => {
    expect(run(V5.reload)).toEqual(run(V7.reload));
  });

  it('PM2 5 stop and crash restart: nothing to change (the crash restart\'s only online passes)', () => {
    expect(run(V5.stop)).toEqual(V5.stop.map(([e, id]) => [e, id]));
    expect(run(V5.crash)).toEqual([
      ['exit', 0],
      ['online', 0],
    ]);
  });

  it('a start that is not online (errored) announces nothing; packets it cannot read pass as they are', () => {
    expect(run([['start', 2, 'errored', 10]])).toEqual([['start', 2]]);
    const out: unknown[] = [];
    const fn = normalizeEvents((p) => out.push(p));
    const odd = [null, 'x', { event: 'online' }, { event: 'online', process: { pm_id: 1 } }, { event: 'online', process: { pm_id: 1 } }];
    odd.forEach(fn);
    expect(out).toEqual(odd);
  });

  it('a new generation of the same pm_id is announced again; delete forgets the pm_id', () => {
    expect(run([['online', 0, 'launching', 1], ['start', 0, 'online', 1], ['online', 0, 'launching', 2], ['restart', 0, 'online', 2], ['delete', 0, 'stopped', 2], ['online', 0, 'launching', 2]])).toEqual([
      ['online', 0],
      ['start', 0],
      ['online', 0],
      ['restart', 0],
      ['delete', 0],
      ['online', 0],
    ]);
  });

  it('so a PM2 5 writer restarted with `pm2 restart` is ready ready_delay after the restart, not after the git scan', () => {
    const ready = (seq: Ev[], times: number[]) => {
      const r = new Registry({ readyDelay: 1000 });
      r.applySnapshot([env({ pm_id: 0, name: 'probe', NODE_APP_INSTANCE: 0, pm_uptime: 0 })], 100);
      let i = 0;
      const fn = normalizeEvents((p) => {
        const q = p as ReturnType<typeof packet>;
        r.applyEvent(q.event, q.process, times[i]);
      });
      for (; i < seq.length; i++) fn(packet(seq[i]));
      return r.process(0)!.readyAt;
    };
    // exit, exit at 5000; restart at 5100; PM2 5's online after a 3 s git scan at 8100.
    expect(ready(V5.restart, [5000, 5000, 5100, 8100])).toBe(6100);
    expect(ready(V7.restart, [5000, 5000, 5095, 5100])).toBe(6095);
  });
});
