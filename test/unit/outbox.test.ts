/**
 * The outbox on its own, against a fake writer table (its one collaborator: who may be sent to)
 * and a hand-answered send: order, the in-flight bound, holding, refusals, vacated targets,
 * replays after a new generation, relays and the memory bound.
 */
import { describe, expect, it } from 'vitest';
import { pipeCost } from '../../lib/deliver/pacing';
import { Outbox } from '../../lib/deliver/outbox';
import { HoldBuffer } from '../../lib/hold/hold-buffer';
import { newCounters } from '../../lib/shared/counters';
import { sizeUp, type OutPacket } from '../../lib/shared/packet';
import type { Vacancy } from '../../lib/proc/vacancy';
import type { SendGate } from '../../lib/table/writer-table';
import { FakeTimers } from './fakes';

function setup(opts: { maxInflight?: number; bufferBytes?: number; unreadBudget?: number } = {}) {
  let clock = 1_000_000;
  const writer = new Map<string, number | undefined>();
  const generation = new Map<number, number>();
  const vacancy = new Map<number, Vacancy>();
  const calls: string[] = [];
  const idle = { now: true, asked: 0 };
  /** What the daemon's children say of a fork since the target's process (forks.ts). */
  const forks = { asked: 0, forked: undefined as boolean | undefined };
  const timers = new FakeTimers();
  const gate: SendGate = {
    writerOf: (key) => writer.get(key),
    generationOf: (pmId) => generation.get(pmId) ?? 0,
    vacancy: (pmId) => vacancy.get(pmId),
    forkedSince: () => {
      forks.asked++;
      return forks.forked;
    },
    caughtUp: () => {
      idle.asked++;
      return idle.now;
    },
  };
  const pending: { pmId: number; topic: string; data: unknown; done: (err: Error | null, swapped?: boolean) => void }[] = [];
  const delivered: { pmId: number; data: unknown }[] = [];
  const counters = newCounters();
  const hold = new HoldBuffer({ bufferBytes: opts.bufferBytes ?? 1 << 20, counters, events: { overflow: (key, n, why) => calls.push(`overflow ${key} ${n} ${why}`) } });
  const outbox = new Outbox({
    send: (pmId, topic, data, done) => pending.push({ pmId, topic, data, done }),
    writers: gate,
    events: {
      flushing: (key, n, w) => calls.push(`flushing ${key} ${n} to ${w}`),
      replayed: (pmId, n) => calls.push(`replayed ${pmId} ${n}`),
      vacated: (pmId, v) => calls.push(`vacated ${pmId} ${v.kind}`),
      refused: (pmId, err) => calls.push(`refused ${pmId} ${err.message}`),
    },
    now: () => Math.floor(clock),
    preciseNow: () => clock,
    counters,
    hold,
    maxInflight: opts.maxInflight ?? 1,
    unreadBudget: opts.unreadBudget,
    timers,
  });
  /** Answer the oldest `n` sends (PM2 answers in send order). */
  const answer = (n = Infinity, err: Error | null = null) => {
    while (n-- > 0 && pending.length > 0) {
      const s = pending.shift()!;
      if (!err) delivered.push({ pmId: s.pmId, data: s.data });
      s.done(err);
    }
  };
  const answerAll = () => {
    for (let guard = 0; pending.length > 0 && guard < 10_000; guard++) answer(1);
  };
  const log = (key: string, from: number, to: number) => {
    for (let i = from; i < to; i++) outbox.pushLog(key, { topic: 'log4js:message', data: `${key}-${i}` } as OutPacket);
  };
  const tick = (ms: number) => (clock += ms);
  return { outbox, hold, writer, generation, vacancy, calls, pending, delivered, counters, answer, answerAll, log, tick, idle, forks, timers };
}

const seq = (key: string, from: number, to: number) => Array.from({ length: to - from }, (_, i) => `${key}-${from + i}`);

describe('Outbox', () => {
  it("asks whether the daemon forked (a /proc read) only for a slow answer the probe said nothing of", () => {
    const { outbox, writer, pending, counters, log, tick, forks } = setup();
    writer.set('web', 1);
    outbox.pump('web');
    log('web', 0, 3);
    tick(5); // slower than a swap can be
    pending.shift()!.done(null, false); // the probe: no reload swapped the writer
    expect(forks.asked).toBe(0);
    tick(5);
    pending.shift()!.done(null); // no probe word: timing judges, with the daemon's children
    expect(forks.asked).toBe(1);
    pending.shift()!.done(null, false);
    expect(forks.asked).toBe(1);
    expect(counters.out).toBe(3);
  });

  it('holds while an app has no writer, then delivers in order with at most maxInflight out', () => {
    const { outbox, hold, writer, calls, pending, delivered, counters, answer, answerAll, log } = setup({ maxInflight: 2 });
    log('web', 0, 5);
    expect(pending).toHaveLength(0);
    expect(hold.held('web')).toBe(5);
    expect(outbox.stats('web')!.heldSince).toBeGreaterThan(0);
    writer.set('web', 3);
    outbox.pump('web');
    expect(calls).toEqual(['flushing web 5 to 3']);
    expect(pending).toHaveLength(2);
    answer(1);
    expect(pending).toHaveLength(2);
    answerAll();
    expect(delivered.map((d) => d.data)).toEqual(seq('web', 0, 5));
    expect(delivered.every((d) => d.pmId === 3)).toBe(true);
    expect(counters).toMatchObject({ held: 0, out: 5 });
    expect(outbox.stats('web')).toMatchObject({ held: 0, inflight: 0, forwarded: 5, heldSince: 0 });
    expect(outbox.idle()).toBe(true);
  });

  it('a refused send goes back to the front; the target is refused once and gets nothing more', () => {
    const { outbox, hold, writer, calls, pending, delivered, counters, answer, answerAll, log } = setup({ maxInflight: 3 });
    writer.set('web', 0);
    log('web', 0, 6);
    answer(1); // web-0 delivered, web-3 goes out
    answer(3, new Error('offline'));
    expect(calls).toEqual(['refused 0 offline']);
    expect(pending).toHaveLength(0);
    expect(counters).toMatchObject({ held: 5, sendErrors: 3 });
    expect(outbox.idle()).toBe(false); // held, and the table still names a writer
    writer.set('web', 1);
    outbox.pump('web');
    answerAll();
    expect(delivered.map((d) => d.data)).toEqual(seq('web', 0, 6));
    expect(delivered.slice(1).every((d) => d.pmId === 1)).toBe(true);
  });

  it('asks before every send: a vacated target is sent nothing, said once, and its relays dropped', () => {
    const { outbox, hold, writer, vacancy, calls, pending, counters, answerAll, log } = setup();
    writer.set('web', 0);
    log('web', 0, 1);
    outbox.pushRelay([0], 'chat', 'hello'); // waits for the free slot
    vacancy.set(0, { kind: 'exited', pid: 1000 });
    answerAll();
    log('web', 1, 3);
    expect(pending).toHaveLength(0);
    expect(calls).toEqual(['vacated 0 exited']);
    expect(counters).toMatchObject({ held: 2, out: 1, relayed: 0, dropped: 1 });
  });

  it('a new generation under the writer\'s pm_id: what PM2 accepted after its stamp is sent again, first', () => {
    const { outbox, hold, writer, generation, calls, delivered, counters, answerAll, log, tick } = setup();
    writer.set('web', 0);
    log('web', 0, 2);
    answerAll();
    tick(10);
    const stamp = Math.floor(tick(0)) + 1;
    tick(2);
    log('web', 2, 4); // written after the new process was stamped: it had them, before it listened
    answerAll();
    generation.set(0, stamp);
    outbox.revive(0, stamp);
    expect(calls).toEqual(['replayed 0 2']);
    expect(counters).toMatchObject({ out: 2, held: 2 });
    log('web', 4, 5);
    answerAll();
    expect(delivered.map((d) => d.data)).toEqual([...seq('web', 0, 4), ...seq('web', 2, 5)]);
  });

  it('the sends in flight at a reload\'s swap: the probe\'s word decides, not when the answer was read', () => {
    for (const probe of [true, false]) {
      const { outbox, hold, writer, generation, calls, pending, delivered, counters, log, tick } = setup({ maxInflight: 2 });
      writer.set('web', 0);
      log('web', 0, 2); // both written before the stamp
      tick(1);
      const stamp = Math.floor(tick(0)) + 1;
      tick(30); // both answers read long after the fork
      const answer = (swapped: boolean) => {
        const s = pending.shift()!;
        delivered.push({ pmId: s.pmId, data: s.data });
        s.done(null, probe ? swapped : undefined);
      };
      answer(false); // PM2 handled it before the swap: the old worker wrote it
      answer(true); // after the swap: the new worker had it before it listened
      generation.set(0, stamp);
      outbox.revive(0, stamp);
      // Without the probe, timing alone cannot tell the first from the second: both go again.
      expect(calls).toEqual([probe ? 'replayed 0 1' : 'replayed 0 2']);
      expect(counters).toMatchObject({ out: probe ? 1 : 0, held: probe ? 1 : 2 });
      outbox.pump('web');
      expect(pending.map((p) => p.data)).toEqual(probe ? seq('web', 1, 2) : seq('web', 0, 2));
    }
  });

  it('a target found dying is not judged against the next generation (kill -9: never sent twice)', () => {
    const { outbox, hold, writer, vacancy, calls, counters, answerAll, log, tick } = setup();
    writer.set('web', 0);
    log('web', 0, 1);
    tick(5);
    answerAll();
    vacancy.set(0, { kind: 'exited', pid: 1000 });
    log('web', 1, 2);
    vacancy.delete(0);
    outbox.revive(0, Math.floor(tick(0)) - 2);
    expect(calls).toEqual(['vacated 0 exited']);
    expect(counters).toMatchObject({ out: 1, held: 1 });
  });

  it('stopped (shutdown): an answer that comes later sends nothing more, so what is saved is what is held', () => {
    const { outbox, hold, writer, pending, counters, answer, log } = setup();
    writer.set('web', 0);
    log('web', 0, 3); // web-0 in flight, web-1 and web-2 held
    outbox.stop();
    answer(1); // web-0 answered after the stop
    expect(pending).toHaveLength(0);
    expect(counters).toMatchObject({ out: 1 });
    expect(hold.takeMemoryHeld()).toEqual({ web: seq('web', 1, 3).map((data) => ({ topic: 'log4js:message', data })) });
  });

  describe('at shutdown, sends whose judgement waits for an `online` this run will not see (keepUnjudged)', () => {
    /** web-0 sent before a reload's stamp, web-1 after it; both answered after the swap. */
    const around = (swapped: [boolean, boolean], startedAt = 0) => {
      const s = setup();
      s.writer.set('web', 0);
      s.generation.set(0, startedAt);
      s.tick(10);
      s.log('web', 0, 1);
      s.tick(1);
      const stamp = Math.floor(s.tick(0)) + 1;
      s.tick(3);
      s.pending.shift()!.done(null, swapped[0]);
      s.log('web', 1, 2);
      s.tick(1);
      s.pending.shift()!.done(null, swapped[1]);
      s.outbox.stop();
      return { ...s, stamp };
    };
    const kept = (hold: HoldBuffer) => (hold.takeMemoryHeld().web ?? []).map((p) => p.data);

    it('the list shows a newer generation: judged as its `online` would have, though its old worker has gone (forks.ts cannot tell)', () => {
      const { outbox, hold, calls, counters, stamp } = around([true, true]);
      outbox.keepUnjudged((pmId) => (pmId === 0 ? stamp : undefined));
      expect(calls).toEqual(['replayed 0 2']);
      expect(counters).toMatchObject({ out: 0, held: 2 });
      expect(kept(hold)).toEqual(seq('web', 0, 2));
    });

    it('... and by the probe\'s word for a send written before the stamp: one PM2 handled before the swap stays delivered', () => {
      const { outbox, hold, counters, stamp } = around([false, true]);
      outbox.keepUnjudged(() => stamp);
      expect(counters).toMatchObject({ out: 1, held: 1 });
      expect(kept(hold)).toEqual(seq('web', 1, 2));
    });

    it('the target is the generation the list shows: a probe that saw an earlier reload\'s old worker parked is no reason to send again', () => {
      const { outbox, hold, calls, counters, forks } = around([true, true], 500);
      forks.forked = true; // the daemon's children alone would have it kept
      outbox.keepUnjudged(() => 500);
      expect(calls).toEqual([]);
      expect(counters).toMatchObject({ out: 2, held: 0 });
      expect(kept(hold)).toEqual([]);
    });

    it('a generation started after both were answered (a crash restart): the target had them, nothing is kept', () => {
      const { outbox, hold, counters, forks, tick } = around([true, true], 500);
      forks.forked = true;
      tick(5);
      outbox.keepUnjudged(() => Math.floor(tick(0)));
      expect(counters).toMatchObject({ out: 2, held: 0 });
      expect(kept(hold)).toEqual([]);
    });

    it('without a list: the probe\'s word, where the daemon\'s children show a process forked since the target\'s', () => {
      for (const forked of [true, false, undefined]) {
        const { outbox, hold, counters, forks } = around([false, true]);
        forks.forked = forked;
        outbox.keepUnjudged();
        expect(counters).toMatchObject(forked ? { out: 1, held: 1 } : { out: 2, held: 0 });
        expect(kept(hold)).toEqual(forked ? seq('web', 1, 2) : []);
      }
    });
  });

  it('relays go out per target, a fresh object each, and are never held', () => {
    const { outbox, hold, pending, counters, answerAll } = setup();
    const data = { n: 1 };
    outbox.pushRelay([4, 5], 'chat', data);
    expect(pending.map((p) => [p.pmId, p.topic, p.data])).toEqual([
      [4, 'chat', data],
      [5, 'chat', data],
    ]);
    answerAll();
    expect(counters).toMatchObject({ relayed: 2, held: 0 });
    expect(hold.appKeys().next().done).toBe(true);
  });

  it('past the memory bound without a spool, the app\'s oldest go; dropApp and takeMemoryHeld empty it', () => {
    const { outbox, hold, calls, counters, log } = setup({ bufferBytes: 3 * (6 + 80) });
    log('web', 0, 5);
    expect(calls).toEqual(['overflow web 1 memory', 'overflow web 1 memory']);
    expect(counters).toMatchObject({ held: 3, dropped: 2 });
    expect(hold.takeMemoryHeld()).toEqual({ web: seq('web', 2, 5).map((data) => ({ topic: 'log4js:message', data })) });
    expect(hold.bytes).toBe(0);
    log('web', 5, 7);
    expect(outbox.dropApp('web')).toBe(2);
    expect(counters).toMatchObject({ held: 0, dropped: 4 });
    expect(hold.has('web')).toBe(false);
  });

  it('a send refused inside the call itself (the send guard) takes the target out of service after one try; nothing is lost', () => {
    let tries = 0;
    let writer: number | undefined = 1;
    const refused: number[] = [];
    const counters = newCounters();
    const hold = new HoldBuffer({ bufferBytes: 1 << 20, counters, events: { overflow: () => {} } });
    const outbox = new Outbox({
      send: (_pmId, _topic, _data, done) => {
        tries++;
        if (tries > 100) throw new Error('the outbox kept sending to a refused target');
        done(new Error('Process with ID <1> offline'));
      },
      writers: {
        writerOf: () => writer,
        generationOf: () => 1,
        vacancy: () => undefined,
        forkedSince: () => undefined,
        caughtUp: () => true,
      },
      events: {
        vacated: () => {},
        refused: (pmId) => {
          refused.push(pmId);
          writer = undefined; // what the writer table does: out of service
        },
      },
      now: () => 0,
      counters,
      hold,
      maxInflight: 1,
    });
    for (let i = 0; i < 5; i++) outbox.pushLog('app', { topic: 'log4js:message', data: `line ${i}` } as OutPacket);
    expect(tries).toBe(1);
    expect(refused).toEqual([1]);
    expect(hold.held('app')).toBe(5);
    expect(counters.dropped).toBe(0);
  });

  describe('a writer\'s unread backlog (pacing.ts)', () => {
    const cost = pipeCost({ topic: 'log4js:message', data: 'web-0' });

    it('past the budget, nothing more goes until the writer is seen idle; order is kept and nothing is lost', () => {
      const { outbox, hold, writer, delivered, counters, answerAll, log, idle, timers } = setup({ unreadBudget: cost * 3 });
      writer.set('web', 1);
      idle.now = false; // the writer is busy: it has not read what it was handed
      log('web', 0, 10);
      answerAll();
      expect(delivered.map((d) => d.data)).toEqual(seq('web', 0, 3));
      expect(counters.paced).toBe(1);
      timers.advance(5); // still busy: still waiting, and asked again
      answerAll();
      expect(delivered).toHaveLength(3);
      const asked = idle.asked;
      expect(asked).toBeGreaterThan(1);
      idle.now = true; // it read everything: three more
      timers.advance(1);
      answerAll();
      expect(delivered.map((d) => d.data)).toEqual(seq('web', 0, 10));
      expect(counters).toMatchObject({ out: 10, held: 0 });
    });

    it('an idle writer is asked only when the budget is reached, not before every send', () => {
      const { writer, delivered, answerAll, log, idle } = setup({ unreadBudget: cost * 4 });
      writer.set('web', 1);
      log('web', 0, 40);
      answerAll();
      expect(delivered).toHaveLength(40);
      expect(idle.asked).toBeLessThan(20); // one per window of 3 or 4 sends, not one per send
    });

    it('a packet bigger than the budget goes alone once nothing is unread', () => {
      const { outbox, hold, writer, delivered, answerAll, idle, timers } = setup({ unreadBudget: cost });
      writer.set('web', 1);
      idle.now = false;
      outbox.pushLog('web', { topic: 'log4js:message', data: 'x'.repeat(10 * cost) });
      outbox.pushLog('web', { topic: 'log4js:message', data: 'web-1' });
      answerAll();
      expect(delivered).toHaveLength(1);
      idle.now = true;
      timers.advance(1);
      answerAll();
      expect(delivered).toHaveLength(2);
    });

    it('a client batch costs its JSON in the writer\'s pipe (UTF-8 bytes), not its memory estimate', () => {
      const data = { ch: 'pino', b: seq('r', 0, 100) };
      const json = Buffer.byteLength(JSON.stringify(data));
      const packet: OutPacket = { topic: 'pm2-scoped-intercom:log', data };
      sizeUp(packet);
      expect(packet.wire).toBe(json);
      expect(packet.bytes).toBeGreaterThan(2 * json);
      expect(pipeCost(packet)).toBeGreaterThan(json);
      expect(pipeCost(packet)).toBeLessThan(json + 2048);
      const wide: OutPacket = { topic: 'pm2-scoped-intercom:log', data: { ch: 'pino', b: ['日本語のログ'.repeat(50)] } };
      sizeUp(wide);
      expect(pipeCost(wide)).toBeGreaterThan(Buffer.byteLength(JSON.stringify(wide.data)));
    });

    it('a refused send frees its room: it was never written', () => {
      const { outbox, hold, writer, pending, delivered, answer, answerAll, log, idle } = setup({ unreadBudget: cost * 2 });
      writer.set('web', 1);
      idle.now = false;
      log('web', 0, 1);
      answer(1, new Error('Process with ID <1> offline'));
      writer.set('web', 2); // the next writer
      outbox.pump('web');
      log('web', 1, 2);
      answerAll();
      expect(pending).toHaveLength(0);
      expect(delivered.map((d) => d.data)).toEqual(seq('web', 0, 2));
    });
  });
});
