'use strict';
/**
 * Preloaded (`NODE_OPTIONS=--require <this file>`) beside daemon-probe.js; it does something only in
 * the module's process (PM2 names it pm2-scoped-intercom) and only when PM2SI_MODULE_PROBE names a
 * file. Once a second it appends one JSON line: how long the event loop was held at most (so how
 * long the bus went unread), the garbage collections' pauses, CPU used, and memory.
 *   t, loopMaxMs (the longest event loop delay of the second), gcMs (time in GC pauses),
 *   gcMaxMs (the longest pause), gcMajor (full GCs), cpuMs (user + system), rss, heapUsed, heapTotal
 */
const fs = require('fs');

const out = process.env.PM2SI_MODULE_PROBE;
if (out && process.env.name === 'pm2-scoped-intercom') {
  const { monitorEventLoopDelay, PerformanceObserver, constants } = require('perf_hooks');
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let gcMs = 0;
  let gcMaxMs = 0;
  let gcMajor = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcMs += e.duration;
      if (e.duration > gcMaxMs) gcMaxMs = e.duration;
      if (e.detail && e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcMajor++;
    }
  }).observe({ entryTypes: ['gc'] });
  let cpu = process.cpuUsage();
  setInterval(() => {
    const c = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    const m = process.memoryUsage();
    const row = { t: Date.now(), loopMaxMs: loop.max / 1e6, gcMs, gcMaxMs, gcMajor, cpuMs: (c.user + c.system) / 1000, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal };
    loop.reset();
    gcMs = 0;
    gcMaxMs = 0;
    gcMajor = 0;
    try {
      fs.appendFileSync(out, `${JSON.stringify(row)}\n`);
    } catch {
      /* the bench is gone */
    }
  }, 1000).unref();
}
