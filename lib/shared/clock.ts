/**
 * A sub-millisecond wall clock, comparable with PM2's `Date.now()` stamps (pm_uptime).
 *
 * `performance.now()` is monotonic and drifts from the wall clock as NTP slews it, so the offset
 * between the two is measured again every few seconds: at the instant `Date.now()` ticks to a new
 * millisecond, bracketed by two `performance.now()` reads. A few ticks are sampled and the
 * tightest bracket kept, so a preemption in the middle of one does not skew the offset.
 */
export function createPreciseClock(resyncEveryMs = 5000, samples = 3): () => number {
  let offset = Date.now() - performance.now();
  let syncedAt = -Infinity;
  const sync = (): void => {
    let best = Infinity;
    for (let i = 0; i < samples; i++) {
      const start = Date.now();
      const giveUp = performance.now() + 3;
      let before = performance.now();
      let ms = Date.now();
      while (ms === start && before < giveUp) {
        before = performance.now();
        ms = Date.now();
      }
      const after = performance.now();
      if (ms === start) continue;
      // The tick happened between `before` (last read still on the old ms, or just before) and `after`.
      const width = after - before;
      if (width < best) {
        best = width;
        offset = ms - (before + after) / 2;
      }
    }
    syncedAt = performance.now();
  };
  return () => {
    if (performance.now() - syncedAt > resyncEveryMs) sync();
    return performance.now() + offset;
  };
}

/** Timers the relay and the writer table schedule with (tests drive them by hand). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Node's timers, unref'd: a pending timer never keeps the module alive. */
export const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Resolves true once `done()` holds (looked at every `everyMs`), false if `timeoutMs` passes first. */
export async function pollUntil(done: () => boolean, timeoutMs: number, everyMs: number, now: () => number = Date.now): Promise<boolean> {
  const deadline = now() + timeoutMs;
  while (!done()) {
    if (now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return true;
}
