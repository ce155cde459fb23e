/**
 * One app's storm must not cost another app its lines (docs/security.md): the hold buffer's bounds
 * are module-wide (`buffer_mb`, `spool_mb`), so without a share of its own, a steady app whose
 * writer keeps up found memory full of the storming app's lines, spilled its next line to a spool
 * that was full too, and lost it; without a spool it lost its own oldest.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Outbox } from '../../lib/deliver/outbox';
import { HoldBuffer } from '../../lib/hold/hold-buffer';
import { Spool } from '../../lib/hold/spool';
import { newCounters } from '../../lib/shared/counters';
import type { OutPacket } from '../../lib/shared/packet';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Two apps: `storm` whose writer (pm_id 1) is slow (answered by hand), `steady` whose writer (2) keeps up. */
function setup(opts: { bufferBytes: number; spoolBytes?: number }) {
  const pending = new Map<number, (() => void)[]>([
    [1, []],
    [2, []],
  ]);
  const sent = new Map<number, string[]>([
    [1, []],
    [2, []],
  ]);
  const counters = newCounters();
  const drops: string[] = [];
  let spool: Spool | undefined;
  if (opts.spoolBytes !== undefined) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-fair-'));
    dirs.push(dir);
    spool = new Spool({ dir, maxBytes: opts.spoolBytes, segmentBytes: 2000, chunkBytes: 500, warn: () => {} });
    spool.load();
  }
  const writers: Record<string, number | undefined> = { storm: 1, steady: 2 };
  const hold = new HoldBuffer({ bufferBytes: opts.bufferBytes, spool, counters, events: { overflow: (app, n, why) => drops.push(`${app} ${n} ${why}`) } });
  const outbox = new Outbox({
    send: (id, _topic, data, done) => {
      sent.get(id)!.push(String(data));
      pending.get(id)!.push(() => done(null));
    },
    writers: { writerOf: (key) => writers[key], generationOf: () => 1, vacancy: () => undefined, forkedSince: () => undefined },
    events: { vacated: () => {}, refused: () => {} },
    now: () => 0,
    preciseNow: () => 0,
    counters,
    hold,
    bufferBytes: opts.bufferBytes,
    maxInflight: 1,
  });
  const answer = (id: number) => pending.get(id)!.shift()?.();
  const line = (app: string, i: number): OutPacket => ({ topic: 'log4js:message', data: `${app}-${i} ${'x'.repeat(100)}` });
  return { outbox, hold, sent, counters, drops, spool, answer, line, writers };
}

describe('hold buffer: one app storming beside one logging steadily', () => {
  it('with a spool: the storm fills memory and the spool, the steady app loses nothing and never goes to disk', () => {
    const s = setup({ bufferBytes: 20_000, spoolBytes: 20_000 });
    let stormed = 0;
    let steadySpooled = 0;
    for (let round = 0; round < 100; round++) {
      // 20 storm lines for every 3 steady ones; the steady writer reads them before the next 3.
      for (let i = 0; i < 20; i++) s.outbox.pushLog('storm', s.line('storm', stormed++));
      for (let i = 0; i < 3; i++) s.outbox.pushLog('steady', s.line('steady', 3 * round + i));
      steadySpooled = Math.max(steadySpooled, s.spool!.countOf('steady'));
      for (let i = 0; i < 3; i++) s.answer(2);
      if (round % 10 === 0) s.answer(1);
    }
    for (let guard = 0; guard < 1000; guard++) s.answer(2);
    expect(s.drops.some((d) => d.startsWith('storm '))).toBe(true); // the storm passed both bounds
    expect(s.drops.filter((d) => d.startsWith('steady '))).toEqual([]);
    expect(steadySpooled).toBe(0);
    expect(s.sent.get(2)!.map((d) => d.split(' ')[0])).toEqual(Array.from({ length: 300 }, (_, i) => `steady-${i}`));
    expect(s.hold.held('steady')).toBe(0);
  });

  it('without a spool: the storm loses its own oldest, the steady app nothing', () => {
    const s = setup({ bufferBytes: 20_000 });
    let stormed = 0;
    for (let round = 0; round < 100; round++) {
      for (let i = 0; i < 20; i++) s.outbox.pushLog('storm', s.line('storm', stormed++));
      for (let i = 0; i < 3; i++) s.outbox.pushLog('steady', s.line('steady', 3 * round + i));
      for (let i = 0; i < 3; i++) s.answer(2);
    }
    for (let guard = 0; guard < 1000; guard++) s.answer(2);
    expect(s.drops.some((d) => d.startsWith('storm '))).toBe(true);
    expect(s.drops.filter((d) => d.startsWith('steady '))).toEqual([]);
    expect(s.sent.get(2)!).toHaveLength(300);
    // Memory stays within twice the bound (the steady app's share comes on top of a full buffer).
    expect(s.hold.bytes).toBeLessThanOrEqual(2 * 20_000);
  });

  it('the steady app past its share of memory (its writer slow or away) goes to its share of the spool, which the storm cannot take', () => {
    const s = setup({ bufferBytes: 20_000, spoolBytes: 20_000 });
    for (let i = 0; i < 400; i++) s.outbox.pushLog('storm', s.line('storm', i));
    expect(s.drops.some((d) => d.startsWith('storm '))).toBe(true);
    s.writers.steady = undefined;
    for (let i = 0; i < 100; i++) {
      s.outbox.pushLog('steady', s.line('steady', i));
      s.outbox.pushLog('storm', s.line('storm', 400 + i));
    }
    expect(s.spool!.countOf('steady')).toBeGreaterThan(0);
    expect(s.drops.filter((d) => d.startsWith('steady '))).toEqual([]);
    expect(s.spool!.bytes).toBeLessThanOrEqual(2 * 20_000);
    s.writers.steady = 2;
    s.outbox.pump('steady');
    for (let guard = 0; guard < 1000; guard++) s.answer(2);
    expect(s.sent.get(2)!.map((d) => d.split(' ')[0])).toEqual(Array.from({ length: 100 }, (_, i) => `steady-${i}`));
  });

  it('an app alone keeps the whole buffer, as before', () => {
    const s = setup({ bufferBytes: 20_000, spoolBytes: 1 << 20 });
    for (let i = 0; i < 1000; i++) s.outbox.pushLog('storm', s.line('storm', i));
    expect(s.hold.bytes).toBeGreaterThan(18_000);
    expect(s.hold.bytes).toBeLessThanOrEqual(20_000 + 200);
    expect(s.spool!.countOf('storm')).toBeGreaterThan(0);
  });
});
