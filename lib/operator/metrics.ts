/**
 * What `pm2 show` / `pm2 monit` display (pmx probes) and what `pm2 trigger` can ask (pmx actions).
 * Counters are plain numbers bumped on the hot path; rates are derived here once a second.
 */
import v8 from 'node:v8';
import type { Counters } from '../shared/counters';
import type { ProbeStats } from '../pm2/rpc-channel';
import type { Relay } from '../relay';
import { formatStatusTable } from './status';
import type { Timers } from '../shared/clock';

export interface PmxLike {
  probe(): { metric(opts: { name: string; value: () => number | string; unit?: string }): unknown };
  action(name: string, fn: (...args: any[]) => void): void;
}

export interface Rates {
  inPerSec: number;
  outPerSec: number;
  /** log records (a batch counts its records). */
  recordsInPerSec: number;
  recordsOutPerSec: number;
}

/** Per-second rates from counter samples. */
export class RateMeter {
  #lastIn = 0;
  #lastOut = 0;
  #lastAt = 0;
  #lastRecIn = 0;
  #lastRecOut = 0;
  rates: Rates = { inPerSec: 0, outPerSec: 0, recordsInPerSec: 0, recordsOutPerSec: 0 };

  sample(c: Counters, now: number): void {
    const out = c.out + c.relayed;
    if (this.#lastAt !== 0 && now > this.#lastAt) {
      const s = (now - this.#lastAt) / 1000;
      this.rates = {
        inPerSec: Math.round((c.in - this.#lastIn) / s),
        outPerSec: Math.round((out - this.#lastOut) / s),
        recordsInPerSec: Math.round((c.recordsIn - this.#lastRecIn) / s),
        recordsOutPerSec: Math.round((c.recordsOut - this.#lastRecOut) / s),
      };
    }
    this.#lastRecIn = c.recordsIn;
    this.#lastRecOut = c.recordsOut;
    this.#lastIn = c.in;
    this.#lastOut = out;
    this.#lastAt = now;
  }
}

/** pmx 1.x's probe registry (its lib/Probe.js), as far as its metrics interval uses it. */
interface PmxProbeRegistry {
  _started: boolean;
  _var: Record<string, { value?: unknown; agg_type?: string; historic?: unknown; type?: unknown; unit?: unknown; alert?: { serialize(): unknown; tick(value: unknown): void } }>;
}

/**
 * pmx sends every probe's value to PM2's daemon each 990 ms from the first `probe()` on, busy or
 * idle (an IPC message that wakes the module and the daemon). Called before `registerProbes`: where
 * pmx is the 1.x this was read from, its interval is not started and the returned function sends
 * the same message (and ticks the same alerts), for the module's ticker to call: every second
 * while packets move, every few seconds while idle (docs/performance.md, Idle). Elsewhere
 * undefined, and pmx keeps its own interval.
 */
export function takeOverPmxInterval(
  load: () => unknown = () => require('pmx/lib/Probe.js'),
  send: (msg: object) => void = (msg) => process.send?.(msg),
): (() => void) | undefined {
  let reg: PmxProbeRegistry;
  try {
    reg = load() as PmxProbeRegistry;
  } catch {
    return undefined;
  }
  if (!reg || reg._started !== false || typeof reg._var !== 'object' || reg._var === null) return undefined;
  reg._started = true;
  const valueOf = (v: unknown): unknown => (typeof v === 'function' ? (v as () => unknown)() : v);
  return () => {
    const data: Record<string, object> = {};
    for (const [name, p] of Object.entries(reg._var)) {
      if (p.value === undefined) continue;
      const value = valueOf(p.value);
      data[name] = {
        value,
        ...(p.agg_type && p.agg_type !== 'none' ? { agg_type: p.agg_type } : {}),
        historic: p.historic,
        type: p.type,
        unit: p.unit,
        alert: p.alert ? p.alert.serialize() : {},
      };
      p.alert?.tick(value);
    }
    send({ type: 'axm:monitor', data });
  };
}

/** The ticker's period while packets move, are held or in flight, or a report waits. */
export const BUSY_TICK_MS = 1000;
/** ...and otherwise: what an idle module's wake-ups are (docs/performance.md, Idle). */
export const IDLE_TICK_MS = 5000;
/** A full read of PM2's process list, the safety net for bus events the module missed. */
export const RECONCILE_EVERY_MS = 30_000;

export interface TickerDeps {
  relay: Pick<Relay, 'counters' | 'tick' | 'reconcile'> & { outbox: { idle(): boolean } };
  reporter: { flush(): void; readonly waiting: boolean };
  meter: RateMeter;
  /** pmx's metrics message (takeOverPmxInterval), if the module sends it. */
  sendMetrics: (() => void) | undefined;
  reportEveryMs: number;
  reconcileFailed(err: Error): void;
  /** Node's timers by default (kept referenced: the ticker keeps the module alive, as before). */
  timers?: Timers;
  now?: () => number;
}

/**
 * Rates, pmx's metrics, held-too-long checks, the report every `reportEveryMs`, a reconcile every
 * RECONCILE_EVERY_MS: each BUSY_TICK_MS while anything moves or waits, each IDLE_TICK_MS otherwise.
 */
export function startTicker(d: TickerDeps): { stop(): void } {
  const timers = d.timers ?? { setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms), clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout) };
  const now = d.now ?? Date.now;
  const c = d.relay.counters;
  // Due within half a busy tick counts as due: a 5 s report on 1 s ticks stays 5 s, not 6.
  const due = (since: number, every: number, at: number) => at - since >= every - BUSY_TICK_MS / 2;
  let lastReport = now();
  let lastReconcile = lastReport;
  const activity = () => c.in + c.out + c.relayed + c.dropped + c.malformed + c.sendErrors;
  let moved = activity();
  let timer: unknown;
  const tick = (): void => {
    const at = now();
    d.meter.sample(c, at);
    d.relay.tick();
    d.sendMetrics?.();
    if (due(lastReport, d.reportEveryMs, at)) {
      lastReport = at;
      d.reporter.flush();
    }
    if (due(lastReconcile, RECONCILE_EVERY_MS, at)) {
      lastReconcile = at;
      d.relay.reconcile().catch(d.reconcileFailed);
    }
    const seen = activity();
    const busy = seen !== moved || c.held > 0 || !d.relay.outbox.idle() || d.reporter.waiting;
    moved = seen;
    timer = timers.setTimeout(tick, busy ? BUSY_TICK_MS : IDLE_TICK_MS);
  };
  timer = timers.setTimeout(tick, BUSY_TICK_MS);
  return { stop: () => timers.clearTimeout(timer) };
}

export function registerProbes(pmx: PmxLike, relay: Relay, meter: RateMeter, probeStats: () => ProbeStats | undefined = () => undefined): void {
  const probe = pmx.probe();
  const c = relay.counters;
  probe.metric({ name: 'packets in/s', value: () => meter.rates.inPerSec });
  probe.metric({ name: 'packets out/s', value: () => meter.rates.outPerSec });
  probe.metric({ name: 'records in/s', value: () => meter.rates.recordsInPerSec });
  probe.metric({ name: 'records out/s', value: () => meter.rates.recordsOutPerSec });
  probe.metric({ name: 'held now', value: () => c.held });
  probe.metric({ name: 'spooled now', value: () => c.spooled });
  probe.metric({ name: 'held in memory', value: () => Math.round(relay.hold.bytes / 104857.6) / 10, unit: 'MB' });
  probe.metric({ name: 'dropped total', value: () => c.dropped });
  probe.metric({ name: 'malformed total', value: () => c.malformed });
  // Sending paused until a writer had read what it was handed (pacing.ts).
  probe.metric({ name: 'waits for writers', value: () => c.paced });
  probe.metric({ name: 'apps tracked', value: () => relay.status().length });
  probe.metric({ name: 'apps without writer', value: () => relay.appsWithoutWriter() });
  // Sends that carried the reload probe (reload_probe; proc/reload-window.ts), and those left to timing.
  probe.metric({ name: 'reload probes', value: () => probeStats()?.probed ?? 0 });
  probe.metric({ name: 'reload in doubt', value: () => probeStats()?.inDoubt ?? 0 });
}

export interface ActionDeps {
  relay: Relay;
  log(line: string): void;
  settingsLine(): string;
  version: string;
  /** The reload probe's counts on the module's own RPC connection (undefined without one). */
  probeStats?: () => ProbeStats | undefined;
}

/** `pm2 trigger pm2-scoped-intercom <action> [param]`. Every action replies, even on error. */
/**
 * The module's memory. `process.memoryUsage()` reads the RSS from /proc and throws where it cannot
 * (an empty or hidden /proc): then the heap figures alone, rss null.
 */
export function memoryNow(): { rss: number | null; heapUsed: number; heapTotal: number; external: number } {
  try {
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external };
  } catch {
    const h = v8.getHeapStatistics();
    return { rss: null, heapUsed: h.used_heap_size, heapTotal: h.total_heap_size, external: h.external_memory };
  }
}

export function registerActions(pmx: PmxLike, deps: ActionDeps): void {
  const safe = (fn: (param: unknown) => unknown | Promise<unknown>) => (param: unknown, reply: (data: unknown) => void) => {
    Promise.resolve()
      .then(() => fn(param))
      .then(
        (data) => reply(data),
        (err: Error) => reply({ error: err && err.message ? err.message : String(err) }),
      );
  };
  pmx.action(
    'status',
    safe(() => {
      const apps = deps.relay.status();
      deps.log(`status:\n${formatStatusTable(apps)}`);
      const memory = { ...memoryNow(), heldInMemory: deps.relay.hold.bytes };
      const reloadProbe = deps.probeStats?.() ?? null;
      return { version: deps.version, settings: deps.settingsLine(), counters: { ...deps.relay.counters }, reloadProbe, memory, apps };
    }),
  );
  pmx.action(
    'reconcile',
    safe(async () => {
      await deps.relay.reconcile();
      return { ok: true, apps: deps.relay.status().length };
    }),
  );
  pmx.action(
    'drop-held',
    safe((param) => {
      const name = typeof param === 'string' ? param : '';
      if (!name) return { error: 'usage: pm2 trigger pm2-scoped-intercom drop-held <app name>' };
      const n = deps.relay.dropHeld(name);
      if (n === undefined) return { error: `no held packets for an app named ${name}` };
      deps.log(`operator dropped ${n} held log packets of app ${name}`);
      return { ok: true, dropped: n };
    }),
  );
}
