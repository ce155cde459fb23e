/**
 * Idle costs nothing (issue 24): the module sends pmx's metrics message from its own ticker
 * instead of pmx's 990 ms interval (lib/operator/metrics.ts takeOverPmxInterval), and what it
 * sends is what pmx sent.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BUSY_TICK_MS, IDLE_TICK_MS, RateMeter, startTicker, takeOverPmxInterval } from '../../lib/operator/metrics';
import { newCounters } from '../../lib/shared/counters';

const ROOT = path.resolve(__dirname, '..', '..');
const METRICS_JS = path.join(ROOT, 'dist', 'lib', 'operator', 'metrics.js');
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill();
});

/** A child running the fixture; `next(ms)`: its next message, or a rejection after `ms`. */
function start(takeOver: boolean): { child: ChildProcess; next: (ms: number) => Promise<any> } {
  const child = fork(path.join(ROOT, 'test', 'fixtures', 'pmx-probe-child.js'), [], { env: { ...process.env, METRICS_JS, TAKE_OVER: takeOver ? '1' : '' }, stdio: 'ignore' });
  children.push(child);
  const queue: unknown[] = [];
  const waiters: ((m: unknown) => void)[] = [];
  child.on('message', (m) => (waiters.length > 0 ? waiters.shift()!(m) : queue.push(m)));
  const next = (ms: number) =>
    new Promise<any>((resolve, reject) => {
      if (queue.length > 0) return resolve(queue.shift());
      const waiter = (m: unknown) => {
        clearTimeout(timer);
        resolve(m);
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(waiter), 1);
        reject(new Error(`no message from the child in ${ms} ms`));
      }, ms);
      waiters.push(waiter);
    });
  return { child, next };
}

it.skipIf(!fs.existsSync(METRICS_JS))("sends what pmx's own interval sends, and only when asked", async () => {
  const own = start(false);
  expect(await own.next(10000)).toEqual({ ready: true, tookOver: false });
  const fromPmx = await own.next(10000); // pmx's interval, within 990 ms
  own.child.send('exit');

  const taken = start(true);
  expect(await taken.next(10000)).toEqual({ ready: true, tookOver: true });
  // pmx's interval would have sent by now: nothing comes until the module asks.
  await expect(taken.next(2500)).rejects.toThrow(/no message/);
  taken.child.send('send');
  const fromModule = await taken.next(10000);
  taken.child.send('exit');

  expect(fromPmx.type).toBe('axm:monitor');
  expect(fromModule).toEqual(fromPmx);
  expect(fromModule.data['held in memory']).toMatchObject({ value: 1.5, unit: 'MB' });
});

it('leaves pmx alone when its registry is not the one it knows, or already started', () => {
  expect(takeOverPmxInterval(() => ({ _started: true, _var: {} }))).toBeUndefined();
  expect(takeOverPmxInterval(() => ({}))).toBeUndefined();
  expect(
    takeOverPmxInterval(() => {
      throw new Error('Cannot find module');
    }),
  ).toBeUndefined();
  const reg = { _started: false, _var: { a: { value: () => 1, agg_type: 'none', historic: true, type: 'a' } } };
  const sent: object[] = [];
  const send = takeOverPmxInterval(() => reg, (m) => sent.push(m));
  expect(reg._started).toBe(true);
  send!();
  expect(sent).toEqual([{ type: 'axm:monitor', data: { a: { value: 1, historic: true, type: 'a', unit: undefined, alert: {} } } }]);
});

describe('the ticker', () => {
  /** A module's parts as the ticker sees them, on a hand-driven clock. */
  function rig(reportEveryMs = 5000) {
    let t = 0;
    let due: { at: number; fn: () => void } | undefined;
    const timers = {
      setTimeout: (fn: () => void, ms: number) => (due = { at: t + ms, fn }),
      clearTimeout: () => (due = undefined),
    };
    const counters = newCounters();
    let inflight = false;
    const calls = { metrics: [] as number[], reports: [] as number[], reconciles: [] as number[] };
    const ticker = startTicker({
      relay: { counters, tick: () => {}, reconcile: async () => void calls.reconciles.push(t), outbox: { idle: () => !inflight } },
      reporter: { flush: () => calls.reports.push(t), waiting: false },
      meter: new RateMeter(),
      sendMetrics: () => calls.metrics.push(t),
      reportEveryMs,
      reconcileFailed: () => {},
      timers,
      now: () => t,
    });
    /** Run the clock to `until`, firing what falls due; `during(t)` may change things before each tick. */
    const run = (until: number, during: (now: number) => void = () => {}) => {
      while (due && due.at <= until) {
        t = due.at;
        during(t);
        const fn = due.fn;
        due = undefined;
        fn();
      }
      t = until;
    };
    return { counters, calls, run, ticker, setInflight: (v: boolean) => (inflight = v) };
  }

  it(`wakes every ${IDLE_TICK_MS} ms while nothing moves, every ${BUSY_TICK_MS} ms while packets move, are held or in flight`, () => {
    const r = rig();
    r.run(60_000);
    // The first tick, then idle ones.
    expect(r.calls.metrics).toEqual([1000, ...Array.from({ length: 11 }, (_, i) => 6000 + i * IDLE_TICK_MS)]);
    r.calls.metrics.length = 0;
    // Packets arrive for 10 s: a tick each second until one finds nothing new, then idle again.
    r.run(80_000, (now) => {
      if (now > 60_000 && now <= 70_000) r.counters.in++;
    });
    expect(r.calls.metrics).toEqual([...Array.from({ length: 11 }, (_, i) => 61_000 + i * BUSY_TICK_MS), 76_000]);
    r.calls.metrics.length = 0;
    // Held packets, then a send in flight, keep it at one a second.
    r.counters.held = 3;
    r.run(84_000);
    expect(r.calls.metrics).toEqual([81_000, 82_000, 83_000, 84_000]);
    r.counters.held = 0;
    r.setInflight(true);
    r.run(87_000);
    expect(r.calls.metrics.slice(4)).toEqual([85_000, 86_000, 87_000]);
    r.setInflight(false);
    r.run(100_000);
    expect(r.calls.metrics.slice(7)).toEqual([88_000, 93_000, 98_000]);
    r.ticker.stop();
  });

  it('reports every report_interval and reconciles every 30 s, busy or idle', () => {
    const busy = rig(5000);
    busy.run(61_000, () => busy.counters.out++);
    expect(busy.calls.reports).toEqual([5000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 50_000, 55_000, 60_000]);
    expect(busy.calls.reconciles).toEqual([30_000, 60_000]);
    const idle = rig(5000);
    idle.run(61_000);
    expect(idle.calls.reports).toEqual([6000, 11_000, 16_000, 21_000, 26_000, 31_000, 36_000, 41_000, 46_000, 51_000, 56_000, 61_000]);
    expect(idle.calls.reconciles).toEqual([31_000, 61_000]);
  });
});
