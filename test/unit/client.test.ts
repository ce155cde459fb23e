/**
 * The app-side client (`pm2-scoped-intercom/client`, `/winston`, `/pino`) against a fake
 * `process`: who writes, what goes over IPC (through JSON, as PM2 carries it), what the writer
 * hands to the user's transports / destination, readiness, shutdown.
 */
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import winston from 'winston';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CLIENT_LOG_TOPIC, CLIENT_READY_TOPIC } from '../../lib/shared/protocol';
import { announceReady, detect, isWriter, jsonSafe, LOG_TOPIC, openChannel, READY_TOPIC, type ProcessLike } from '../../client/index';
import { fromWire, IntercomTransport, toWire } from '../../client/winston';
import { IntercomDestination, intercomDestination } from '../../client/pino';

const ROOT = path.resolve(__dirname, '..', '..');

interface Packet {
  topic: string;
  data: any;
}

class FakeProcess extends EventEmitter {
  readonly pid: number;
  readonly env: Record<string, string | undefined>;
  /** What was sent, as the other end receives it (through JSON, like PM2's IPC). */
  readonly sent: Packet[] = [];
  connected = true;
  /** Complete sends at once (sync) or on the next turn (async, like a real IPC channel). */
  async = true;

  constructor(env: Record<string, string | undefined>, pid = 4242) {
    super();
    this.env = env;
    this.pid = pid;
  }

  send = (message: unknown, ...rest: unknown[]): boolean => {
    const cb = rest.find((x) => typeof x === 'function') as ((err: Error | null) => void) | undefined;
    // Node serialises synchronously: a cycle or a BigInt throws a TypeError here.
    const text = JSON.stringify(message);
    this.sent.push(JSON.parse(text));
    if (cb) {
      if (this.async) setImmediate(() => cb(null));
      else cb(null);
    }
    return true;
  };

  /** Deliver a packet as PM2 would (through JSON). */
  deliver(packet: unknown): void {
    this.emit('message', JSON.parse(JSON.stringify(packet)));
  }

  logPackets(): Packet[] {
    return this.sent.filter((p) => p.topic === 'pm2-scoped-intercom:log');
  }

  readyPackets(): Packet[] {
    return this.sent.filter((p) => p.topic === 'pm2-scoped-intercom:ready');
  }
}

/** A PM2 cluster worker numbered `instance` (under `instanceVar`). */
function clusterProcess(instance: number | undefined, opts: { instanceVar?: string; envInstanceVar?: string; pid?: number } = {}): FakeProcess {
  const iv = opts.instanceVar ?? 'NODE_APP_INSTANCE';
  const env: Record<string, string | undefined> = {
    exec_mode: 'cluster_mode',
    instance_var: opts.envInstanceVar ?? iv,
    pm_id: '3',
    name: 'web',
  };
  if (instance !== undefined) env[iv] = String(instance);
  return new FakeProcess(env, opts.pid);
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

const asProc = (p: FakeProcess): ProcessLike => p as unknown as ProcessLike;
const MESSAGE = Symbol.for('message');
const LEVEL = Symbol.for('level');

const tmpDirs: string[] = [];
function tmpFile(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-client-unit-'));
  tmpDirs.push(dir);
  return path.join(dir, name);
}
afterEach(() => {
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('client: who writes', () => {
  it('uses the topics the module routes', () => {
    expect(LOG_TOPIC).toBe(CLIENT_LOG_TOPIC);
    expect(READY_TOPIC).toBe(CLIENT_READY_TOPIC);
  });

  it('writes locally outside PM2 (no IPC channel) and in fork mode', () => {
    const outside = new FakeProcess({});
    (outside as { send?: unknown }).send = undefined;
    expect(detect({ process: asProc(outside) })).toMatchObject({ role: 'local', clustered: false });
    const ipcButNoPm2 = new FakeProcess({});
    expect(detect({ process: asProc(ipcButNoPm2) }).role).toBe('local');
    const fork = new FakeProcess({ exec_mode: 'fork_mode', NODE_APP_INSTANCE: '0', instance_var: 'NODE_APP_INSTANCE' });
    expect(detect({ process: asProc(fork) })).toMatchObject({ role: 'local', clustered: false, instance: 0 });
    const forkOne = new FakeProcess({ exec_mode: 'fork_mode', NODE_APP_INSTANCE: '1' });
    expect(isWriter({ process: asProc(forkOne) })).toBe(true);
  });

  it('in cluster mode: the process numbered writerInstance writes, the others send', () => {
    expect(detect({ process: asProc(clusterProcess(0)) })).toMatchObject({ role: 'writer', clustered: true, instance: 0, instanceVar: 'NODE_APP_INSTANCE' });
    expect(detect({ process: asProc(clusterProcess(2)) })).toMatchObject({ role: 'sender', instance: 2 });
    expect(detect({ process: asProc(clusterProcess(2)), writerInstance: 2 }).role).toBe('writer');
    expect(detect({ process: asProc(clusterProcess(0)), writerInstance: 2 }).role).toBe('sender');
    expect(isWriter({ process: asProc(clusterProcess(3)) })).toBe(false);
  });

  it("reads the app's instance_var, and the instanceVar option after a restart reset it", () => {
    expect(detect({ process: asProc(clusterProcess(1, { instanceVar: 'INSTANCE_ID' })) })).toMatchObject({ role: 'sender', instanceVar: 'INSTANCE_ID', instance: 1 });
    // After `pm2 restart`, PM2 7 says instance_var=NODE_APP_INSTANCE but keeps the number under INSTANCE_ID.
    const restarted = clusterProcess(1, { instanceVar: 'INSTANCE_ID', envInstanceVar: 'NODE_APP_INSTANCE' });
    expect(detect({ process: asProc(restarted), instanceVar: 'INSTANCE_ID' })).toMatchObject({ role: 'sender', instance: 1 });
    // Without the option it cannot tell: it writes itself (and listens) rather than lose records.
    const unsure = detect({ process: asProc(restarted) });
    expect(unsure).toMatchObject({ role: 'writer', instance: undefined, instanceVar: 'NODE_APP_INSTANCE' });
    expect(unsure.reason).toMatch(/instanceVar option/);
  });

  it('writes locally, and says why, when the module is not installed in this PM2', () => {
    const home = path.dirname(tmpFile('x'));
    const p = clusterProcess(2);
    p.env.PM2_HOME = home;
    const warnings: string[] = [];
    const w: unknown[] = [];
    const ch = openChannel((r) => w.push(r), { process: asProc(p), onWarning: (m) => warnings.push(m) });
    expect(ch.placement).toMatchObject({ role: 'local', clustered: true });
    ch.send('kept');
    expect(w).toEqual(['kept']);
    expect(p.sent).toEqual([]);
    expect(warnings.join('\n')).toMatch(/pm2 install pm2-scoped-intercom/);
    expect(detect({ process: asProc(p), checkModule: false }).role).toBe('sender');
    fs.mkdirSync(path.join(home, 'modules', 'pm2-scoped-intercom'), { recursive: true });
    expect(detect({ process: asProc(p) }).role).toBe('sender');
  });

  it('PM2_PROCESS_INSTANCE_VAR (the daemon-wide override) wins over instance_var', () => {
    const p = clusterProcess(1, { instanceVar: 'WORKER' });
    p.env.PM2_PROCESS_INSTANCE_VAR = 'WORKER';
    p.env.instance_var = 'NODE_APP_INSTANCE';
    expect(detect({ process: asProc(p) })).toMatchObject({ role: 'sender', instanceVar: 'WORKER', instance: 1 });
  });
});

describe('client: channels', () => {
  it('a sender sends each record to the writer, in order, and flush() waits for PM2 to take them', async () => {
    const p = clusterProcess(1);
    const written: unknown[] = [];
    const ch = openChannel((r) => written.push(r), { process: asProc(p), channel: 'app' });
    expect(ch.role).toBe('sender');
    expect(ch.isWriter).toBe(false);
    for (let i = 0; i < 5; i++) ch.send({ seq: i });
    ch.send(undefined as never);
    expect(p.readyPackets()).toEqual([]);
    expect(p.logPackets()).toEqual([
      ...[0, 1, 2, 3, 4].map((i) => ({ topic: LOG_TOPIC, data: { ch: 'app', r: { seq: i } } })),
      { topic: LOG_TOPIC, data: { ch: 'app', r: null } },
    ]);
    expect(written).toEqual([]);
    let flushed = false;
    const f = ch.flush().then(() => (flushed = true));
    expect(flushed).toBe(false);
    await f;
    expect(ch.stats).toMatchObject({ sent: 6, sendErrors: 0, written: 0 });
    expect(p.listenerCount('message')).toBe(0);
  });

  it('a record JSON cannot carry is cleaned rather than thrown', () => {
    const p = clusterProcess(1);
    const ch = openChannel(() => {}, { process: asProc(p) });
    const rec: Record<string, unknown> = { big: 10n, err: new Error('boom'), same: { a: 1 } };
    rec.self = rec;
    rec.twice = rec.same;
    ch.send(rec);
    const r = p.logPackets()[0].data.r;
    expect(r.big).toBe('10');
    expect(r.self).toBe('[Circular]');
    expect(r.err).toMatchObject({ name: 'Error', message: 'boom' });
    expect(r.same).toEqual({ a: 1 });
    expect(r.twice).toEqual({ a: 1 });
    expect(jsonSafe(undefined)).toBe(null);
  });

  it('a record that cannot be sent (IPC closed) is written locally, with one warning', () => {
    const p = clusterProcess(1);
    p.connected = false;
    const warnings: string[] = [];
    const written: unknown[] = [];
    const ch = openChannel((r) => written.push(r), { process: asProc(p), onWarning: (m) => warnings.push(m) });
    ch.send('a');
    ch.send('b');
    expect(written).toEqual(['a', 'b']);
    expect(ch.stats).toMatchObject({ sent: 0, sendErrors: 2, written: 2 });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/cannot send/);
  });

  it('the writer writes its own records, takes delivered ones for its channel, and announces readiness once', () => {
    const p = clusterProcess(0);
    const a: unknown[] = [];
    const b: unknown[] = [];
    const chA = openChannel((r) => a.push(r), { process: asProc(p), channel: 'a' });
    expect(chA.role).toBe('writer');
    expect(p.readyPackets()).toEqual([{ topic: READY_TOPIC, data: { pid: p.pid } }]);
    const chB = openChannel((r) => b.push(r), { process: asProc(p), channel: 'b' });
    expect(p.readyPackets()).toHaveLength(1);
    expect(p.listenerCount('message')).toBe(1);

    chA.send('own');
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'a', r: { line: 1 } } });
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'b', r: 'for b' } });
    p.deliver({ topic: 'app:ping', data: { ch: 'a', r: 'other topic' } });
    p.deliver({ topic: LOG_TOPIC, data: 'not an envelope' });
    p.emit('message', 'shutdown');
    p.emit('message', null);
    expect(a).toEqual(['own', { line: 1 }]);
    expect(b).toEqual(['for b']);
    expect(p.logPackets()).toEqual([]); // a writer never sends log records
    expect(chA.stats).toMatchObject({ received: 1, written: 2, sent: 0 });

    chA.close();
    expect(p.listenerCount('message')).toBe(1);
    chB.close();
    expect(p.listenerCount('message')).toBe(0);
    expect(() => openChannel(() => {}, { process: asProc(p), channel: 'a' })).not.toThrow();
  });

  it('two channels of one name on the writer are refused', () => {
    const p = clusterProcess(0);
    openChannel(() => {}, { process: asProc(p) });
    expect(() => openChannel(() => {}, { process: asProc(p) })).toThrow(/already open/);
  });

  it('a bad batch bound is refused with the option, the value and its type, before the channel listens', () => {
    const p = clusterProcess(0);
    expect(() => openChannel(() => {}, { process: asProc(p), batchMaxBytes: -1 })).toThrow(/^Expected `batchMaxBytes` to be a finite number >= 0, got `-1` \(number\)$/);
    expect(() => openChannel(() => {}, { process: asProc(p), batchMaxMs: NaN })).toThrow(/^Expected `batchMaxMs` to be a finite number >= 0, got `NaN` \(number\)$/);
    expect(p.listenerCount('message')).toBe(0);
    openChannel(() => {}, { process: asProc(p) }); // the name was not taken by the refused ones
  });

  it("a channel's methods work detached from it (const { send, flush } = channel)", async () => {
    const p = clusterProcess(1);
    const { send, flush, stats } = openChannel(() => {}, { process: asProc(p), batch: true });
    send('a');
    send('b');
    await flush();
    expect(p.logPackets()).toEqual([{ topic: LOG_TOPIC, data: { ch: 'default', b: ['a', 'b'] } }]);
    expect(stats).toMatchObject({ sent: 2, packets: 1 });
  });

  it('records for a channel the writer has not opened yet wait for it (bounded), in order', () => {
    const p = clusterProcess(0);
    const warnings: string[] = [];
    openChannel(() => {}, { process: asProc(p), channel: 'first', maxPending: 3, onWarning: (m) => warnings.push(m) });
    for (let i = 0; i < 5; i++) p.deliver({ topic: LOG_TOPIC, data: { ch: 'late', r: i } });
    expect(warnings.join('\n')).toMatch(/more than 3 records/);
    const late: unknown[] = [];
    openChannel((r) => late.push(r), { process: asProc(p), channel: 'late' });
    expect(late).toEqual([2, 3, 4]);
  });

  it('announceReady: false defers the announcement to announceReady()', () => {
    const p = clusterProcess(0);
    openChannel(() => {}, { process: asProc(p), announceReady: false });
    expect(p.readyPackets()).toEqual([]);
    expect(announceReady({ process: asProc(p) })).toBe(true);
    announceReady({ process: asProc(p) });
    expect(p.readyPackets()).toHaveLength(1);
    // Only a cluster writer announces.
    const s = clusterProcess(1);
    expect(announceReady({ process: asProc(s) })).toBe(false);
    expect(s.sent).toEqual([]);
  });

  it('outside cluster mode: writes locally, never listens, never announces', () => {
    const p = new FakeProcess({ exec_mode: 'fork_mode', NODE_APP_INSTANCE: '0' });
    const w: unknown[] = [];
    const ch = openChannel((r) => w.push(r), { process: asProc(p) });
    ch.send(1);
    expect(ch.role).toBe('local');
    expect(w).toEqual([1]);
    expect(p.sent).toEqual([]);
    expect(p.listenerCount('message')).toBe(0);
  });

  it('a write() that throws is reported once and does not stop the channel', () => {
    const p = clusterProcess(0);
    const warnings: string[] = [];
    let n = 0;
    openChannel(
      () => {
        n++;
        throw new Error('disk full');
      },
      { process: asProc(p), onWarning: (m) => warnings.push(m) },
    );
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'default', r: 1 } });
    p.deliver({ topic: LOG_TOPIC, data: { ch: 'default', r: 2 } });
    expect(n).toBe(2);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/disk full/);
  });

  it("drain(): the writer waits until records stop coming for quietMs, bounded by timeoutMs", async () => {
    // Fake clock (setTimeout and Date.now, which drain uses): the bounds are asserted exactly,
    // whatever the machine's load.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    try {
      const p = clusterProcess(0);
      const got: unknown[] = [];
      const ch = openChannel((r) => got.push(r), { process: asProc(p) });
      let drained = false;
      const first = ch.drain({ quietMs: 150, timeoutMs: 5000 }).then(() => (drained = true));
      // A record every 20 ms for 300 ms: no gap of quietMs, so drain waits.
      for (let i = 0; i < 15; i++) {
        await vi.advanceTimersByTimeAsync(20);
        expect(drained).toBe(false);
        p.deliver({ topic: LOG_TOPIC, data: { ch: 'default', r: i } });
      }
      expect(got).toEqual(Array.from({ length: 15 }, (_, i) => i));
      // The records stopped: still waiting just before quietMs of quiet, returned just after.
      await vi.advanceTimersByTimeAsync(149);
      expect(drained).toBe(false);
      await vi.advanceTimersByTimeAsync(10);
      expect(drained).toBe(true);
      await first;

      // Bounded: records that never stop (every 10 ms) cannot hold it past timeoutMs.
      let bounded = false;
      const endless = setInterval(() => p.deliver({ topic: LOG_TOPIC, data: { ch: 'default', r: -1 } }), 10);
      const second = ch.drain({ quietMs: 200, timeoutMs: 400 }).then(() => (bounded = true));
      await vi.advanceTimersByTimeAsync(390);
      expect(bounded).toBe(false); // past quietMs: the records kept it waiting
      await vi.advanceTimersByTimeAsync(20);
      expect(bounded).toBe(true);
      await second;
      clearInterval(endless);
      expect(got.length).toBeGreaterThanOrEqual(15 + 39);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('pm2-scoped-intercom/winston', () => {
  class Capture extends winston.Transport {
    lines: string[] = [];
    infos: any[] = [];
    override log(info: any, cb: () => void): void {
      this.infos.push(info);
      this.lines.push(info[MESSAGE]);
      cb();
    }
  }

  function logger(t: IntercomTransport, level = 'info') {
    return winston.createLogger({ level, format: winston.format.combine(winston.format.splat(), winston.format.printf((i) => `${i.level}: ${i.message}`)), transports: [t] });
  }

  it('a sender sends the formatted line with level and fields, and never creates the inner transports', async () => {
    const p = clusterProcess(2);
    let created = 0;
    const t = new IntercomTransport({ process: asProc(p), transports: () => (created++, [new Capture()]) });
    expect(t.role).toBe('sender');
    const log = logger(t);
    log.info('hello %s', 'world', { user: 'ann' });
    log.debug('filtered by the logger level');
    await t.channel.flush();
    expect(created).toBe(0);
    const packets = p.logPackets();
    expect(packets).toHaveLength(1);
    expect(packets[0].data.ch).toBe('winston');
    expect(packets[0].data.r).toMatchObject({ l: 'info', m: 'info: hello world', i: { level: 'info', message: 'hello world', user: 'ann' } });
  });

  it("the writer hands its own and the senders' records to the inner transports, their formats and levels applied", () => {
    const sender = clusterProcess(1);
    const writer = clusterProcess(0);
    const plain = new Capture();
    const json = new Capture({ format: winston.format.json() });
    const warnOnly = new Capture({ level: 'warn' });
    const tw = new IntercomTransport({ process: asProc(writer), transports: [plain, json, warnOnly] });
    expect(tw.role).toBe('writer');
    expect(writer.readyPackets()).toHaveLength(1);
    const ts = new IntercomTransport({ process: asProc(sender), transports: () => [] });
    const lw = logger(tw);
    const ls = logger(ts);
    lw.info('own line');
    ls.info('from %d', 1, { req: 7 });
    ls.error('bad');
    for (const packet of sender.logPackets()) writer.deliver(packet);
    expect(plain.lines).toEqual(['info: own line', 'info: from 1', 'error: bad']);
    expect(json.lines.map((l) => JSON.parse(l))).toEqual([
      { level: 'info', message: 'own line' },
      { level: 'info', message: 'from 1', req: 7 },
      { level: 'error', message: 'bad' },
    ]);
    expect(warnOnly.lines).toEqual(['error: bad']);
    expect(plain.infos[1][LEVEL]).toBe('info');
  });

  it('wire format keeps the fields, the level and the formatted line', () => {
    const info = { level: '\u001b[32minfo\u001b[39m', message: 'm', a: 1, [LEVEL]: 'info', [MESSAGE]: 'formatted', [Symbol.for('splat')]: [1] };
    const wire = JSON.parse(JSON.stringify(toWire(info)));
    const back = fromWire(wire);
    expect(back).toMatchObject({ level: info.level, message: 'm', a: 1 });
    expect(back[LEVEL]).toBe('info');
    expect(back[MESSAGE]).toBe('formatted');
  });

  it('outside PM2 it is a plain pass-through to the inner transports', () => {
    const p = new FakeProcess({});
    const c = new Capture();
    const t = new IntercomTransport({ process: asProc(p), transports: [c] });
    logger(t).warn('local');
    expect(t.role).toBe('local');
    expect(c.lines).toEqual(['warn: local']);
    expect(p.sent).toEqual([]);
  });

  it('shutdown() on the writer takes what is still coming, then closes a real File transport with every line in it', async () => {
    const file = tmpFile('app.log');
    const writer = clusterProcess(0);
    const t = new IntercomTransport({ process: asProc(writer), transports: () => [new winston.transports.File({ filename: file })] });
    const log = winston.createLogger({ format: winston.format.printf((i) => String(i.message)), transports: [t] });
    for (let i = 0; i < 500; i++) log.info(`own ${i}`);
    const late = setTimeout(() => {
      for (let i = 0; i < 500; i++) writer.deliver({ topic: LOG_TOPIC, data: { ch: 'winston', r: toWire({ level: 'info', message: `late ${i}`, [LEVEL]: 'info', [MESSAGE]: `late ${i}` }) } });
    }, 50);
    await t.shutdown({ quietMs: 200, timeoutMs: 3000 });
    clearTimeout(late);
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(lines).toHaveLength(1000);
    expect(lines[0]).toBe('own 0');
    expect(lines[999]).toBe('late 499');
    expect(writer.listenerCount('message')).toBe(0);
  });

  it("logger.end(): the transport's 'finish' comes after the inner File transport has written everything", async () => {
    const file = tmpFile('end.log');
    const t = new IntercomTransport({ process: asProc(new FakeProcess({})), transports: () => [new winston.transports.File({ filename: file })] });
    const log = winston.createLogger({ format: winston.format.printf((i) => String(i.message)), transports: [t] });
    for (let i = 0; i < 300; i++) log.info(`line ${i}`);
    const finished = new Promise((r) => t.once('finish', r));
    log.end();
    await finished;
    expect(fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(300);
  });

  it('requires a transports option', () => {
    expect(() => new IntercomTransport({} as never)).toThrow(/transports/);
  });
});

describe('pm2-scoped-intercom/pino', () => {
  function memory() {
    const lines: string[] = [];
    return { lines, write: (l: string) => void lines.push(l), flushSync: () => lines.push('<flushSync>') };
  }

  it("a sender sends pino's serialized lines and never creates the destination", async () => {
    const p = clusterProcess(3);
    let created = 0;
    const dest = intercomDestination({ process: asProc(p), destination: () => (created++, memory()) });
    expect(dest).toBeInstanceOf(IntercomDestination);
    expect(dest.role).toBe('sender');
    const log = pino({ base: undefined, timestamp: false }, dest);
    log.info({ user: 'ann' }, 'hello');
    log.debug('below the level');
    await new Promise<void>((r) => dest.flush(() => r()));
    expect(created).toBe(0);
    const packets = p.logPackets();
    expect(packets).toHaveLength(1);
    expect(packets[0].data.ch).toBe('pino');
    expect(packets[0].data.r).toBe('{"level":30,"user":"ann","msg":"hello"}\n');
  });

  it("the writer writes its own and the senders' lines to the user's destination", () => {
    const sender = clusterProcess(1, { instanceVar: 'INSTANCE_ID' });
    const writer = clusterProcess(0, { instanceVar: 'INSTANCE_ID', envInstanceVar: 'NODE_APP_INSTANCE' });
    const mem = memory();
    const dw = intercomDestination({ process: asProc(writer), instanceVar: 'INSTANCE_ID', destination: mem });
    const ds = intercomDestination({ process: asProc(sender), instanceVar: 'INSTANCE_ID', destination: () => memory() });
    expect([dw.role, ds.role]).toEqual(['writer', 'sender']);
    const lw = pino({ base: undefined, timestamp: false }, dw);
    const ls = pino({ base: undefined, timestamp: false }, ds);
    lw.info('own');
    ls.warn('from a sender');
    for (const packet of sender.logPackets()) writer.deliver(packet);
    expect(mem.lines.map((l) => JSON.parse(l))).toEqual([
      { level: 30, msg: 'own' },
      { level: 40, msg: 'from a sender' },
    ]);
    dw.flushSync();
    expect(mem.lines[2]).toBe('<flushSync>');
  });

  it('shutdown() ends a real pino.destination (SonicBoom, async) with every line written', async () => {
    const file = tmpFile('pino.log');
    const writer = clusterProcess(0);
    const dest = intercomDestination({ process: asProc(writer), destination: () => pino.destination({ dest: file, sync: false, mkdir: true }) });
    const log = pino({ base: undefined, timestamp: false }, dest);
    for (let i = 0; i < 2000; i++) log.info(`own ${i}`);
    writer.deliver({ topic: LOG_TOPIC, data: { ch: 'pino', r: '{"level":30,"msg":"delivered"}\n' } });
    await dest.shutdown({ quietMs: 50, timeoutMs: 1000 });
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(lines).toHaveLength(2001);
    expect(JSON.parse(lines[2000]).msg).toBe('delivered');
  });

  it('defaults to stdout outside PM2', () => {
    const p = new FakeProcess({});
    const dest = intercomDestination({ process: asProc(p) });
    expect(dest.role).toBe('local');
    expect(dest.destination()).toBe(process.stdout);
  });
});

describe('package entry points', () => {
  const dist = path.join(ROOT, 'dist', 'client', 'index.js');

  it('client/index.ts imports neither winston nor pino', () => {
    const src = fs.readFileSync(path.join(ROOT, 'client', 'index.ts'), 'utf8');
    expect(src).not.toMatch(/(require\(|from\s+)['"](winston|pino|winston-transport)['"]/);
    const pinoSrc = fs.readFileSync(path.join(ROOT, 'client', 'pino.ts'), 'utf8');
    expect(pinoSrc).not.toMatch(/(require\(|from\s+)['"]pino['"]/);
  });

  it.skipIf(!fs.existsSync(dist))('the built package resolves /client, /winston, /pino by name, and /client loads no logger', () => {
    const script = `
      const before = new Set(Object.keys(require.cache));
      const c = require('pm2-scoped-intercom/client');
      const loaded = Object.keys(require.cache).filter((k) => !before.has(k) && /node_modules[\\\\/](winston|pino|winston-transport)[\\\\/]/.test(k));
      const out = { loaded, role: c.detect().role, fns: typeof c.openChannel + typeof c.isWriter };
      out.winston = typeof require('pm2-scoped-intercom/winston').IntercomTransport;
      out.pino = typeof require('pm2-scoped-intercom/pino').intercomDestination;
      out.pkg = require('pm2-scoped-intercom/package.json').name;
      out.main = require.resolve('pm2-scoped-intercom');
      console.log(JSON.stringify(out));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8' }));
    expect(out).toEqual({
      loaded: [],
      role: 'local',
      fns: 'functionfunction',
      winston: 'function',
      pino: 'function',
      pkg: 'pm2-scoped-intercom',
      main: path.join(ROOT, 'dist', 'app.js'),
    });
  });
});

