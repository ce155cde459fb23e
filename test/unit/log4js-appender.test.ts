/**
 * `pm2-scoped-intercom/log4js` against a fake `process`: a sender serialises events as log4js does
 * and batches them, never creating the wrapped appenders; the writer deserialises them and hands
 * them to the wrapped appenders, in order; log4js.shutdown() waits for what is on its way.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import log4js from 'log4js';
import { configure, fromWireEvent, toWireEvent, type AppenderFn, type LoggingEventLike } from '../../client/log4js';
import { LOG_TOPIC, type ProcessLike } from '../../client/index';
import { FakeAppProcess } from './fakes';

const LoggingEvent = require('log4js/lib/LoggingEvent');
const levels = require('log4js/lib/levels');

const FakeProcess = FakeAppProcess;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-log4js-unit-'));
  dirs.push(d);
  return d;
}
function home(): string {
  const h = tmp();
  const dir = path.join(h, 'modules', 'pm2-scoped-intercom', 'node_modules', 'pm2-scoped-intercom');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'pm2-scoped-intercom', pm2ScopedIntercom: { batch: 1 } }));
  return h;
}
const proc = (instance: number, h: string) => new FakeProcess({ exec_mode: 'cluster_mode', instance_var: 'NODE_APP_INSTANCE', NODE_APP_INSTANCE: String(instance), PM2_HOME: h });
const event = (...data: unknown[]): LoggingEventLike => new LoggingEvent('api', levels.INFO, data, { user: 'u1' });

describe('pm2-scoped-intercom/log4js', () => {
  it('a sender batches events (plain ones as their fields, others as log4js serialises them) and never creates the wrapped appenders', async () => {
    const p = proc(2, home());
    const asked: string[] = [];
    const app = configure({ appenders: ['file'], process: p as unknown as ProcessLike, channel: 'l1' }, {}, (n) => (asked.push(n), false));
    expect((app as unknown as { role: string }).role).toBe('sender');
    app(event('one'));
    app(event('two', { n: 2 }));
    const err = new Error('boom');
    app(event('three', err));
    await new Promise<void>((r) => app.shutdown!(() => r()));
    expect(asked).toEqual([]);
    const packets = p.sent.filter((x) => x.topic === LOG_TOPIC);
    expect(packets).toHaveLength(1);
    expect(packets[0].data.ch).toBe('l1');
    // 'one' travels as its fields; events with an object or an Error as log4js serialises them.
    expect(packets[0].data.b[0]).toMatchObject({ c: 'api', l: 'INFO', d: ['one'], x: { user: 'u1' } });
    expect(typeof packets[0].data.b[1].s).toBe('string');
    expect(typeof packets[0].data.b[2].s).toBe('string');
    const back = packets[0].data.b.map((w: unknown) => fromWireEvent(w));
    expect(back.map((e: LoggingEventLike) => e.data[0])).toEqual(['one', 'two', 'three']);
    expect(back[1].data[1]).toEqual({ n: 2 });
    expect(back[2].data[1]).toBeInstanceOf(Error);
    expect(back[2].data[1].message).toBe('boom');
    expect(back[0].context).toEqual({ user: 'u1' });
  });

  it('an event log4js cannot serialise (a BigInt) is made safe, not thrown', () => {
    const p = proc(1, home());
    const app = configure({ appenders: ['file'], process: p as unknown as ProcessLike, channel: 'l2', batchMaxBytes: 1 }, {}, () => false);
    const cyc: Record<string, unknown> = { big: 12n };
    cyc.self = cyc;
    app(event('big', cyc));
    const e = fromWireEvent(p.sent.find((x) => x.topic === LOG_TOPIC)!.data.b[0]) as any;
    expect(e.data[0]).toBe('big');
    expect(e.data[1]).toEqual({ big: '12', self: '[Circular]' });
  });

  it('the writer hands its own and delivered events to the wrapped appenders in order; shutdown waits for them', async () => {
    const p = proc(0, home());
    const got: LoggingEventLike[] = [];
    let innerShutdownAt = 0;
    const file: AppenderFn = Object.assign((e: LoggingEventLike) => void got.push(e), {
      shutdown: (done: () => void) => {
        innerShutdownAt = got.length;
        done();
      },
    });
    const app = configure({ appenders: ['file'], process: p as unknown as ProcessLike, channel: 'l3', quietMs: 50, timeoutMs: 2000 }, {}, (n) => (n === 'file' ? file : false));
    expect(p.sent.map((x) => x.topic)).toEqual(['pm2-scoped-intercom:ready']);
    app(event('own'));
    const remote = [event('r1'), event('r2', { obj: true })].map((e) => JSON.parse(JSON.stringify(toWireEvent(e))));
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'l3', b: remote } });
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'l3', r: event('r3').serialise() } }); // a bare serialised string is read too
    // log4js.shutdown calls every appender's shutdown at once: the wrapped one waits for ours.
    const innerDone = new Promise<void>((r) => file.shutdown!(() => r()));
    const ours = new Promise<void>((r) => app.shutdown!(() => r()));
    setTimeout(() => p.deliver({ topic: LOG_TOPIC, data: { ch: 'l3', b: [event('late').serialise()] } }), 10);
    await Promise.all([innerDone, ours]);
    expect(got.map((e) => e.data[0])).toEqual(['own', 'r1', 'r2', 'r3', 'late']);
    expect(innerShutdownAt).toBe(5);
    expect(got[1].startTime).toBeInstanceOf(Date);
    expect(got[1].categoryName).toBe('api');
  });

  it('a second log4js.configure() on the writer takes the channel over (no "already open" error)', async () => {
    const p = proc(0, home());
    const first: unknown[] = [];
    const second: unknown[] = [];
    const a1 = configure({ appenders: ['f'], process: p as unknown as ProcessLike, channel: 'l4' }, {}, () => (e: LoggingEventLike) => void first.push(e.data[0]));
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'l4', b: [event('before').serialise()] } });
    // log4js.configure() shuts the old appenders down, then creates the new ones at once.
    const old = new Promise<void>((r) => a1.shutdown!(() => r()));
    configure({ appenders: ['f'], process: p as unknown as ProcessLike, channel: 'l4' }, {}, () => (e: LoggingEventLike) => void second.push(e.data[0]));
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'l4', b: [event('after').serialise()] } });
    await old;
    expect(first).toEqual(['before']);
    expect(second).toEqual(['after']);
  });

  it('the plain form keeps what a layout reads: time, level, category, data, context, pid, call site', () => {
    const e = event('hello %s', 'world', 42, true, null) as any;
    e.startTime = new Date(1733200000123);
    e.fileName = '/app/x.js';
    e.lineNumber = 12;
    const w = JSON.parse(JSON.stringify(toWireEvent(e)));
    expect(w.s).toBeUndefined();
    const back = fromWireEvent(w) as any;
    expect(back).toBeInstanceOf(LoggingEvent);
    expect(back.startTime.getTime()).toBe(1733200000123);
    expect(back.level).toBe(levels.INFO);
    expect(back.categoryName).toBe('api');
    expect(back.data).toEqual(['hello %s', 'world', 42, true, null]);
    expect(back.context).toEqual({ user: 'u1' });
    expect(back.pid).toBe(e.pid);
    expect([back.fileName, back.lineNumber]).toEqual(['/app/x.js', 12]);
    // undefined, NaN and objects take log4js's own serialisation.
    expect(typeof toWireEvent(event(undefined) as any).s === 'string' && typeof toWireEvent(event(NaN) as any).s === 'string').toBe(true);
    expect(fromWireEvent(JSON.parse(JSON.stringify(toWireEvent(event('n', NaN)))))!.data[1]).toBeNaN();
  });

  it('refuses a config without appenders, naming the option', () => {
    expect(() => configure({} as never, {}, () => false)).toThrow(/appenders/);
    expect(() => configure({ appenders: [] }, {}, () => false)).toThrow(/appenders/);
  });

  it('in a real log4js outside PM2: one config entry, events reach the wrapped file appender', async () => {
    const file = path.join(tmp(), 'app.log');
    log4js.configure({
      appenders: { file: { type: 'file', filename: file, layout: { type: 'pattern', pattern: '%p %m' } }, intercom: { type: { configure }, appenders: ['file'] } as never },
      categories: { default: { appenders: ['intercom'], level: 'info' } },
      disableClustering: true,
    });
    const log = log4js.getLogger();
    log.info('hello');
    log.debug('filtered');
    log.warn('bye');
    await new Promise<void>((r) => log4js.shutdown(() => r()));
    expect(fs.readFileSync(file, 'utf8')).toBe('INFO hello\nWARN bye\n');
  });
});
