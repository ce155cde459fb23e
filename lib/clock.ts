/**
 * A sub-millisecond wall clock, comparable with PM2's `Date.now()` stamps (pm_uptime).
 *
 * `performance.now()` is monotonic and drifts from the wall clock as NTP slews it, so the offset
 * between the two is measured again every few seconds, at the instant `Date.now()` ticks to a new
 * millisecond (a spin of at most ~1 ms).
 */
export function createPreciseClock(resyncEveryMs = 5000): () => number {
  let offset = 0;
  let syncedAt = -Infinity;
  const sync = (): void => {
    const start = Date.now();
    const spinUntil = performance.now() + 2;
    let ms = Date.now();
    while (ms === start && performance.now() < spinUntil) ms = Date.now();
    offset = ms - performance.now();
    syncedAt = performance.now();
  };
  return () => {
    const p = performance.now();
    if (p - syncedAt > resyncEveryMs) sync();
    return performance.now() + offset;
  };
}
