import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Outbox } from '../../lib/deliver/outbox';
import { HoldBuffer } from '../../lib/hold/hold-buffer';
import { newCounters } from '../../lib/shared/counters';
import type { OutPacket } from '../../lib/shared/packet';
import { Spool, type SpoolFs } from '../../lib/hold/spool';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-spool-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const pkt = (i: number, app = 'a'): OutPacket => ({ topic: 'log4js:message', data: `${app}-${i} ${'x'.repeat(100)}` });
const ids = (ps: OutPacket[]) => ps.map((p) => String(p.data).split(' ')[0]);

function takeAll(spool: Spool, key: string): OutPacket[] {
  const out: OutPacket[] = [];
  for (let guard = 0; spool.has(key) && guard < 10_000; guard++) out.push(...spool.take(key));
  return out;
}

describe('Spool', () => {
  it('gives back what was appended, in order, across segment files, and removes the files it read', () => {
    const warn: string[] = [];
    const spool = new Spool({ dir: tmp(), maxBytes: 1 << 20, segmentBytes: 1000, chunkBytes: 300, warn: (l) => warn.push(l) });
    spool.load();
    for (let i = 0; i < 100; i++) expect(spool.append('a', pkt(i))).toBe(true);
    for (let i = 0; i < 10; i++) spool.append('b', pkt(i, 'b'));
    expect(spool.count).toBe(110);
    expect(spool.countOf('a')).toBe(100);
    expect(fs.readdirSync(spool.dir).length).toBeGreaterThan(3);
    const a = takeAll(spool, 'a');
    expect(ids(a)).toEqual(Array.from({ length: 100 }, (_, i) => `a-${i}`));
    expect(spool.has('a')).toBe(false);
    expect(ids(takeAll(spool, 'b'))).toEqual(Array.from({ length: 10 }, (_, i) => `b-${i}`));
    expect(spool.count).toBe(0);
    expect(spool.bytes).toBe(0);
    expect(fs.readdirSync(spool.dir)).toEqual([]);
    expect(warn).toEqual([]);
  });

  it('keeps any topic and data: strings with newlines, objects, and a topic with a tab', () => {
    const spool = new Spool({ dir: tmp(), maxBytes: 1 << 20, chunkBytes: 10, warn: () => {} });
    const odd: OutPacket[] = [
      { topic: 'pm2-scoped-intercom:log', data: { ch: 'default', r: { msg: 'a\nb', n: 1 } } },
      { topic: 'log4js:message', data: 'two\nlines' },
      { topic: 'a\tb', data: 'x' },
      { topic: 'log4js:message', data: '{"startTime":"2026","data":["\\t tab"]}' },
    ];
    for (const p of odd) spool.append('a', p);
    spool.flush();
    expect(takeAll(spool, 'a')).toEqual(odd);
  });

  it('takes packets and appends more in between, keeping order', () => {
    const spool = new Spool({ dir: tmp(), maxBytes: 1 << 20, segmentBytes: 700, chunkBytes: 200, warn: () => {} });
    const got: OutPacket[] = [];
    let next = 0;
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 7; i++) spool.append('a', pkt(next++));
      got.push(...spool.take('a'));
    }
    got.push(...takeAll(spool, 'a'));
    expect(ids(got)).toEqual(Array.from({ length: next }, (_, i) => `a-${i}`));
  });

  it('survives a restart: a new spool on the same folder goes on from the oldest', () => {
    const dir = tmp();
    const first = new Spool({ dir, maxBytes: 1 << 20, segmentBytes: 500, chunkBytes: 100, warn: () => {} });
    first.load();
    for (let i = 0; i < 30; i++) first.append('default\u0000api', pkt(i));
    first.take('default\u0000api'); // one segment delivered before the restart
    first.close();
    const second = new Spool({ dir, maxBytes: 1 << 20, warn: () => {} });
    second.load();
    expect(second.appKeys()).toEqual(['default\u0000api']);
    const rest = takeAll(second, 'default\u0000api');
    expect(second.count).toBe(0);
    const n = ids(rest).map((s) => Number(s.slice(2)));
    expect(n).toEqual(Array.from({ length: n.length }, (_, i) => 30 - n.length + i));
    expect(n.length).toBeGreaterThan(0);
  });

  it('drops one app: its files on disk and its buffered lines, counted, and nothing of another app', () => {
    const spool = new Spool({ dir: tmp(), maxBytes: 1 << 20, segmentBytes: 500, chunkBytes: 300, warn: () => {} });
    for (let i = 0; i < 12; i++) spool.append('a', pkt(i));
    for (let i = 0; i < 3; i++) spool.append('b', pkt(i, 'b'));
    const bBytes = 3 * Buffer.byteLength(`slog4js:message\t${pkt(0, 'b').data}\n`);
    expect(spool.countOf('a')).toBe(12);
    expect(fs.readdirSync(spool.dir).length).toBeGreaterThan(1); // some of 'a' written, some still buffered
    expect(spool.drop('a')).toBe(12);
    expect(spool.has('a')).toBe(false);
    expect(spool.drop('a')).toBe(0);
    expect(spool.count).toBe(3);
    expect(spool.bytes).toBe(bBytes);
    const hexA = Buffer.from('a').toString('hex');
    expect(fs.readdirSync(spool.dir).filter((f) => f.startsWith(`${hexA}-`))).toEqual([]);
    expect(ids(takeAll(spool, 'b'))).toEqual(['b-0', 'b-1', 'b-2']);
  });

  it('skips the unreadable lines of a segment, says so, and gives back the rest', () => {
    const dir = tmp();
    const name = `${Buffer.from('default\u0000a').toString('hex')}-5.v1.jsonl`;
    fs.writeFileSync(path.join(dir, name), 'st\tone\nnonsense\nj{broken\nst\ttwo\n');
    const warn: string[] = [];
    const spool = new Spool({ dir, maxBytes: 1 << 20, warn: (l) => warn.push(l) });
    spool.load();
    expect(spool.countOf('default\u0000a')).toBe(4); // counted by lines until read
    expect(spool.take('default\u0000a')).toEqual([
      { topic: 't', data: 'one' },
      { topic: 't', data: 'two' },
    ]);
    expect(warn).toEqual(['skipped 2 unreadable lines in the spool']);
    expect(spool.count).toBe(0);
    expect(spool.bytes).toBe(0);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('refuses past maxBytes (the caller drops and counts)', () => {
    const spool = new Spool({ dir: tmp(), maxBytes: 1000, warn: () => {} });
    let accepted = 0;
    for (let i = 0; i < 20; i++) if (spool.append('a', pkt(i))) accepted++;
    expect(accepted).toBe(Math.floor(1000 / Buffer.byteLength(`slog4js:message\t${pkt(0).data}\n`)));
    expect(spool.bytes).toBeLessThanOrEqual(1000);
  });

  it('a disk that fails is said once, turns the spool off, and loses nothing it had accepted', () => {
    const warn: string[] = [];
    let full = false;
    const failing: SpoolFs = {
      ...fs,
      writeSync: ((fd: number, text: string) => {
        if (full) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        return fs.writeSync(fd, text);
      }) as SpoolFs['writeSync'],
    };
    const spool = new Spool({ dir: tmp(), maxBytes: 1 << 20, segmentBytes: 400, chunkBytes: 150, warn: (l) => warn.push(l), fs: failing });
    let accepted = 0;
    for (let i = 0; i < 10; i++) if (spool.append('a', pkt(i))) accepted++;
    full = true;
    for (let i = 10; i < 20; i++) if (spool.append('a', pkt(i))) accepted++;
    expect(accepted).toBeGreaterThan(10); // some were taken after the failure's first write
    expect(spool.failure).toMatch(/ENOSPC/);
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatch(/cannot write to the spool folder .*ENOSPC.*dropped \(counted\) instead of spooled/);
    expect(spool.append('a', pkt(99))).toBe(false);
    const got = ids(takeAll(spool, 'a'));
    expect(got).toEqual(got.slice().sort((x, y) => Number(x.slice(2)) - Number(y.slice(2))));
    expect(got.length).toBe(accepted); // everything accepted came back
    expect(got[0]).toBe('a-0');
  });

  it('an unusable folder is said once and the spool is off', () => {
    const file = path.join(tmp(), 'not-a-dir');
    fs.writeFileSync(file, '');
    const warn: string[] = [];
    const spool = new Spool({ dir: path.join(file, 'spool'), maxBytes: 1 << 20, warn: (l) => warn.push(l) });
    spool.load();
    expect(spool.failure).toMatch(/cannot use the spool folder/);
    expect(spool.append('a', pkt(1))).toBe(false);
    expect(warn).toHaveLength(1);
  });

  it('sets aside a segment of an unknown format (renamed, not deleted) and says so', () => {
    const dir = tmp();
    const name = `${Buffer.from('default\u0000a').toString('hex')}-5.v9.jsonl`;
    fs.writeFileSync(path.join(dir, name), 'whatever\n');
    const warn: string[] = [];
    const spool = new Spool({ dir, maxBytes: 1 << 20, warn: (l) => warn.push(l) });
    spool.load();
    expect(spool.count).toBe(0);
    expect(warn[0]).toMatch(/format v9, which this version \(v1\) cannot read: set aside/);
    expect(fs.readdirSync(dir).some((f) => f.startsWith(`${name}.unknown-`))).toBe(true);
  });
});

describe('Outbox with a spool', () => {
  function setup(bufferBytes: number, spoolBytes: number) {
    const sent: OutPacket[] = [];
    let writer: number | undefined;
    const pending: (() => void)[] = [];
    const counters = newCounters();
    const drops: [number, string][] = [];
    const spool = new Spool({ dir: tmp(), maxBytes: spoolBytes, segmentBytes: 2000, chunkBytes: 500, warn: () => {} });
    const hold = new HoldBuffer({ bufferBytes, spool, counters, events: { overflow: (_a, n, why) => drops.push([n, why]) } });
    const outbox = new Outbox({
      send: (_id, topic, data, done) => {
        sent.push({ topic, data });
        pending.push(() => done(null));
      },
      writers: { writerOf: () => writer, generationOf: () => 1, vacancy: () => undefined, forkedSince: () => undefined },
      events: { vacated: () => {}, refused: () => {} },
      now: () => 0,
      preciseNow: () => 0,
      counters,
      hold,
      maxInflight: 1,
    });
    const answerAll = () => {
      for (let guard = 0; pending.length > 0 && guard < 100_000; guard++) (pending.shift() as () => void)();
    };
    return { outbox, hold, sent, counters, spool, drops, answerAll, setWriter: (w: number | undefined) => (writer = w) };
  }

  it('holds past memory on disk, then delivers everything once, in order', () => {
    const { outbox, hold, sent, counters, spool, answerAll, setWriter } = setup(2000, 1 << 20);
    for (let i = 0; i < 300; i++) outbox.pushLog('k', pkt(i));
    expect(counters.held).toBe(300);
    expect(counters.spooled).toBeGreaterThan(250);
    expect(hold.bytes).toBeLessThanOrEqual(2000 + 200);
    setWriter(7);
    outbox.pump('k');
    answerAll();
    expect(ids(sent)).toEqual(Array.from({ length: 300 }, (_, i) => `a-${i}`));
    expect(counters).toMatchObject({ held: 0, spooled: 0, out: 300, dropped: 0 });
    expect(spool.count).toBe(0);
  });

  it('past both bounds drops the newest, counted, and keeps the order of the rest', () => {
    const { outbox, sent, counters, drops, answerAll, setWriter } = setup(1000, 3000);
    for (let i = 0; i < 100; i++) outbox.pushLog('k', pkt(i));
    const dropped = counters.dropped;
    expect(dropped).toBeGreaterThan(0);
    expect(drops.every(([, why]) => why === 'spool')).toBe(true);
    setWriter(7);
    outbox.pump('k');
    answerAll();
    const got = ids(sent).map((s) => Number(s.slice(2)));
    expect(got.length + dropped).toBe(100);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i)); // the oldest kept, in order
  });

  it('new packets wait behind the spool even when memory has room again', () => {
    const { outbox, sent, answerAll, setWriter } = setup(1500, 1 << 20);
    for (let i = 0; i < 50; i++) outbox.pushLog('k', pkt(i));
    setWriter(7);
    outbox.pump('k');
    for (let i = 50; i < 80; i++) {
      outbox.pushLog('k', pkt(i));
      answerAll();
    }
    answerAll();
    expect(ids(sent)).toEqual(Array.from({ length: 80 }, (_, i) => `a-${i}`));
  });
});
