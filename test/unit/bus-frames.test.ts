/**
 * The bus read without PM2's parser (issue 29): frames PM2's own codec writes are read back the
 * same, split anywhere, and a real pm2-axon sub socket is taken over, also after it reconnects.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BusFrames, frameEnd } from '../../lib/pm2/bus-frames';
import { readBusFrames } from '../../lib/pm2/pm2-client';

// PM2's own message codec and sockets (what its daemon publishes with), to check ours against.
const requireHere = createRequire(__filename);
const pm2Dir = path.dirname(requireHere.resolve('pm2/package.json'));
const Message = requireHere(requireHere.resolve('amp-message', { paths: [pm2Dir] })) as new (args: unknown) => { toBuffer(): Buffer };
const axonDir = fs.existsSync(path.join(pm2Dir, 'modules', 'pm2-axon')) ? path.join(pm2Dir, 'modules', 'pm2-axon') : requireHere.resolve('pm2-axon', { paths: [pm2Dir] });
const axon = requireHere(axonDir) as { socket(type: string): AxonSocket };
interface AxonSocket {
  bind(file: string): AxonSocket;
  connect(file: string): AxonSocket;
  close(cb?: () => void): void;
  emit(event: string, ...args: unknown[]): void;
  on(event: string, fn: (...a: unknown[]) => void): void;
  once(event: string, fn: (...a: unknown[]) => void): void;
  set(name: string, value: unknown): void;
  sock: AxonSocket & { socks: unknown[] };
}

const frame = (...args: unknown[]): Buffer => new Message(args).toBuffer();
const LINE = JSON.stringify({ categoryName: 'default', data: ['a "quoted" line, \\ and é ✓\nsecond'], level: { levelStr: 'INFO' } });
const msg = (i: number) => ({ at: 1000 + i, raw: { topic: 'log4js:message', data: `${LINE} ${i}` }, process: { pm_id: 1, name: 'web', namespace: 'default' } });

function reader() {
  const got: [string, unknown][] = [];
  const frames = new BusFrames(
    new Map([
      ['process:msg', (p: unknown) => got.push(['msg', p])],
      ['process:event', (p: unknown) => got.push(['event', p])],
    ]),
  );
  return { frames, got };
}

describe('BusFrames: the bus as PM2 publishes it', () => {
  it('reads what PM2\'s codec writes, in order, and skips the events nobody listens to', () => {
    const { frames, got } = reader();
    const ev = { event: 'online', process: { pm_id: 2, name: 'web', status: 'online' } };
    frames.push(Buffer.concat([frame('process:msg', msg(0)), frame('log:out', { data: 'x' }), frame('process:event', ev), frame('process:msg', msg(1))]));
    expect(got).toEqual([
      ['msg', msg(0)],
      ['event', ev],
      ['msg', msg(1)],
    ]);
  });

  it('reads frames cut at any byte across chunks', () => {
    const all = Buffer.concat([frame('process:msg', msg(0)), frame('log:err', 'skipped'), frame('process:msg', msg(1)), frame('process:msg', 'ready')]);
    for (let cut = 0; cut <= all.length; cut++) {
      const { frames, got } = reader();
      frames.push(all.subarray(0, cut));
      frames.push(all.subarray(cut));
      expect(got).toEqual([
        ['msg', msg(0)],
        ['msg', msg(1)],
        ['msg', 'ready'],
      ]);
    }
    // One byte at a time.
    const { frames, got } = reader();
    for (let i = 0; i < all.length; i++) frames.push(all.subarray(i, i + 1));
    expect(got.length).toBe(3);
  });

  it('passes null for a packet PM2 published as undefined, and skips an unreadable one (counted), reading on', () => {
    const { frames, got } = reader();
    const bad = Buffer.from(frame('process:msg', 'x'));
    bad.write('j:', 1 + 4 + 's:process:msg'.length + 4); // "s:x" becomes "j:x": not JSON
    frames.push(Buffer.concat([frame('process:msg', undefined), bad, frame('process:msg', msg(2))]));
    expect(got).toEqual([
      ['msg', null],
      ['msg', msg(2)],
    ]);
    expect(frames.unreadable).toBe(1);
  });

  it('frameEnd: undefined until the whole frame is there', () => {
    const f = frame('process:msg', msg(0));
    for (let n = 0; n < f.length; n++) expect(frameEnd(f.subarray(0, n), 0)).toBeUndefined();
    expect(frameEnd(f, 0)).toBe(f.length);
  });
});

describe('readBusFrames: a real pm2-axon bus, taken over', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-unit-bus-'));
  const pubs: AxonSocket[] = [];
  const subs: AxonSocket[] = [];
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  afterEach(async () => {
    // A client socket's close() never calls back (pm2-axon); a server's does.
    for (const s of subs.splice(0)) s.close();
    for (const s of pubs.splice(0)) await new Promise<void>((r) => s.close(() => r()));
  });

  const until = async (cond: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!cond()) throw new Error(`timed out waiting for ${what}`);
  };

  it('reads every packet, also on the connection axon makes after the daemon\'s socket came back', async () => {
    const file = path.join(dir, 'pub.sock');
    let pub = axon.socket('pub-emitter');
    pubs.push(pub);
    pub.bind(file);
    await new Promise((r) => pub.sock.once('bind', r));
    const sub = axon.socket('sub-emitter');
    subs.push(sub);
    const subSock = sub.connect(file);
    subSock.set('retry timeout', 20);
    subSock.set('retry max timeout', 20);
    await new Promise((r) => subSock.once('connect', r));
    const got: unknown[] = [];
    const viaPm2: unknown[] = [];
    sub.on('process:msg', (p: unknown) => viaPm2.push(p));
    expect(readBusFrames(subSock as never, new Map([['process:msg', (p: unknown) => got.push(p)]]))).toBe(true);
    const n = 2000; // several chunks
    for (let i = 0; i < n; i++) pub.emit('process:msg', msg(i));
    await until(() => got.length === n, `${n} packets`);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => msg(i)));
    expect(viaPm2).toEqual([]); // PM2's parser reads no more

    // The daemon goes and comes back (pm2 update, a crash): axon reconnects.
    pubs.splice(pubs.indexOf(pub), 1);
    await new Promise<void>((r) => pub.close(() => r()));
    pub = axon.socket('pub-emitter');
    pubs.push(pub);
    pub.bind(file);
    await new Promise((r) => pub.sock.once('bind', r));
    // A pub socket drops what it publishes before it has taken the connection: publish until read.
    await until(() => {
      if (got.length === n) pub.emit('process:msg', msg(n));
      return got.length > n;
    }, 'a packet after the reconnect');
    expect(got[n]).toEqual(msg(n));
    expect(viaPm2).toEqual([]);
  });

  it('changes nothing on a socket not shaped as pm2-axon\'s', () => {
    expect(readBusFrames(undefined, new Map())).toBe(false);
    expect(readBusFrames({ socks: [] }, new Map())).toBe(false);
    expect(readBusFrames({ socks: [{}], addSocket: () => {} }, new Map())).toBe(false);
  });
});
