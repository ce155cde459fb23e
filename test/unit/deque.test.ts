import { describe, expect, it } from 'vitest';
import { createPreciseClock } from '../../lib/shared/clock';
import { Deque } from '../../lib/shared/deque';

describe('Deque', () => {
  it('keeps FIFO order across growth and wrap-around, and unshift puts in front', () => {
    const d = new Deque<number>();
    const model: number[] = [];
    let n = 0;
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < (round % 7) + 3; i++) {
        d.push(n);
        model.push(n++);
      }
      for (let i = 0; i < (round % 5) + 1; i++) expect(d.shift()).toBe(model.shift());
      if (round % 11 === 0) {
        d.unshift(-round);
        model.unshift(-round);
      }
      expect(d.size).toBe(model.length);
      expect(d.peek()).toBe(model[0]);
    }
    while (model.length) expect(d.shift()).toBe(model.shift());
    expect(d.shift()).toBeUndefined();
  });
});

describe('createPreciseClock', () => {
  // Date.now() is a whole millisecond; allow a little for a preempted read on a busy machine.
  it('agrees with Date.now() to within a couple of milliseconds', () => {
    const clock = createPreciseClock(50);
    let last = -Infinity;
    for (let i = 0; i < 2000; i++) {
      const before = Date.now();
      const t = clock();
      const after = Date.now();
      expect(t).toBeGreaterThan(before - 2);
      expect(t).toBeLessThan(after + 3);
      last = t;
    }
    expect(last).toBeGreaterThan(0);
  });
});
