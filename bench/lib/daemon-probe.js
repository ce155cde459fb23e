'use strict';
/**
 * Preloaded (`NODE_OPTIONS=--require <this file>`) into every process of a storm row's private PM2;
 * it does something only in PM2's daemon (argv[1] is PM2's lib/Daemon.js) and only when
 * PM2SI_DAEMON_PROBE names a file. Every PM2SI_DAEMON_PROBE_MS (default 100) ms it appends one JSON
 * line with what /proc cannot tell from outside:
 *   t          Date.now()
 *   rss, heapUsed, heapTotal, external, arrayBuffers   process.memoryUsage()
 *   anon       anonymous memory, bytes (/proc/self/smaps_rollup), the rest of rss being file pages
 *   busPeers   connections to the bus (pub.sock)
 *   busQueued  bytes PM2 has published that wait in the daemon for a slow bus reader (the sum of
 *              the bus connections' writableLength: Node's own queue, not the kernel's)
 *   busBytes   bytes published on the bus so far (bytesWritten, queued bytes included)
 *   ipcQueued  bytes the daemon has written to its processes' IPC pipes that the kernel has not
 *              taken yet (libuv's write queue of each channel's pipe)
 *   published  `process:msg` packets put on PM2's bus so far (read, parsed and published)
 * Nothing here changes what the daemon does, but a listener on its bus and a timer.
 */
const fs = require('fs');
const net = require('net');

const out = process.env.PM2SI_DAEMON_PROBE;
const isDaemon = /[\\/]lib[\\/]Daemon\.js$/.test(process.argv[1] || '');

if (out && isDaemon) {
  const every = Number(process.env.PM2SI_DAEMON_PROBE_MS || 100);
  let god;
  let published = 0;
  const findGod = () => {
    if (god) return god;
    const key = Object.keys(require.cache).find((k) => /[\\/]pm2[\\/]lib[\\/]God\.js$/.test(k));
    const g = key && require.cache[key].exports;
    if (g && g.bus && typeof g.bus.on === 'function') {
      god = g;
      god.bus.on('process:msg', () => published++);
    }
    return god;
  };
  const anon = () => {
    try {
      const m = /^Anonymous:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'));
      return m ? Number(m[1]) * 1024 : undefined;
    } catch {
      return undefined;
    }
  };
  const sample = () => {
    findGod();
    let busPeers = 0;
    let busQueued = 0;
    let busBytes = 0;
    let ipcQueued = 0;
    for (const h of process._getActiveHandles()) {
      // An IPC channel to a process is listed as its bare libuv pipe (no net.Socket owns it).
      if (h && h.constructor && h.constructor.name === 'Pipe' && typeof h.writeQueueSize === 'number') {
        ipcQueued += h.writeQueueSize;
        continue;
      }
      if (!(h instanceof net.Socket) || !h.server) continue;
      let addr;
      try {
        addr = h.server.address();
      } catch {
        continue;
      }
      if (typeof addr !== 'string' || !addr.endsWith('pub.sock')) continue;
      busPeers++;
      busQueued += h.writableLength;
      busBytes += h.bytesWritten;
    }
    const m = process.memoryUsage();
    const row = { t: Date.now(), rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, anon: anon(), busPeers, busQueued, busBytes, ipcQueued, published };
    try {
      fs.appendFileSync(out, `${JSON.stringify(row)}\n`);
    } catch {
      /* the bench is gone */
    }
  };
  setInterval(sample, every).unref();
}
