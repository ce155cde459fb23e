/**
 * The relay: bus packets in, routed sends out. Wires the registry (who is where), the router
 * (where a packet goes), the outbox (ordered, bounded delivery) and the reporter (what the
 * operator reads). Talks to PM2 only through the `Pm2Client` interface.
 */
import { BatchWatch } from './batch'; // issue 12
import type { Settings } from './config';
import { electWriter, type Election } from './election';
import { EXITED, newCounters, Outbox, type AppQueue, type Counters, type OutPacket } from './outbox';
import type { Pm2Client } from './pm2-client';
import { procLiveness, type Liveness } from './liveness';
import { daemonChildren, type Newcomers } from './newcomers';
import { formatAppKey, Registry, type Pm2Env, type TableChange } from './registry';
import type { Reporter } from './reporter';
import { logTopicSet, route, type DropReason } from './router';
import type { Spool } from './spool';

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface RelayOptions {
  client: Pm2Client;
  settings: Settings;
  reporter: Reporter;
  now?: () => number;
  timers?: Timers;
  /** instance_var per app remembered from an earlier run of the module. */
  knownInstanceVars?: Record<string, string>;
  /** The daemon's PM2_PROCESS_INSTANCE_VAR, if set. */
  globalInstanceVar?: string;
  /** How long an app may hold packets before the module says why (ms). @default 5000 */
  heldWarnAfter?: number;
  /** Sub-millisecond epoch clock for send times (compared with PM2's pm_uptime). */
  preciseNow?: () => number;
  /** Whether a pid is still alive (not exited). @default procLiveness() */
  liveness?: Liveness;
  /** Which process PM2 started last for a pm_id. @default daemonChildren() */
  newcomers?: Newcomers;
  /** Where held packets go past `buffer_mb` (loaded already). None: they are dropped. */
  spool?: Spool;
}

export interface AppStatus {
  namespace: string;
  name: string;
  instances: number;
  online: number;
  instance_var: string;
  writer_pm_id: number | null;
  writer_instance: number | null;
  writer_ready: boolean;
  held: number;
  in_flight: number;
  forwarded: number;
  dropped: number;
  last_problem: string | null;
}


const MALFORMED: ReadonlySet<DropReason> = new Set(['malformed', 'no-topic', 'no-data']);

const DROP_PHRASE: Record<DropReason, string> = {
  malformed: 'malformed packets skipped (not an object with topic and data)',
  'no-topic': 'malformed packets skipped (no topic)',
  'no-data': 'malformed packets skipped (no data)',
  'from-module': 'packets from PM2 modules ignored',
  'unknown-sender': 'packets from unknown processes skipped',
  'writer-sends': 'log packets sent by a writer itself skipped',
  'broadcast-off': 'non-log packets not relayed (broadcast=off)',
  'no-peers': 'non-log packets with no peer to relay to',
};

export class Relay {
  readonly counters: Counters = newCounters();
  readonly registry: Registry;
  readonly outbox: Outbox;
  readonly #client: Pm2Client;
  readonly #settings: Settings;
  readonly #reporter: Reporter;
  readonly #now: () => number;
  readonly #timers: Timers;
  readonly #topics: ReadonlySet<string>;
  readonly #heldWarnAfter: number;
  readonly #liveness: Liveness;
  readonly #newcomers: Newcomers;
  /** The ready writer of each app, recomputed on every table change (the hot path reads it). */
  readonly #writer = new Map<string, number | undefined>();
  readonly #readyTimers = new Map<string, unknown>();
  /** The configured log topics, so a held packet shares one topic string. */
  readonly #topicOf = new Map<string, string>();
  readonly #spool: Spool | undefined;
  readonly #batches: BatchWatch; // issue 12
  #reconcileTimer: unknown = undefined;
  #reconciling: Promise<void> | undefined;
  #started = false;
  #stopped = false;
  readonly #early: [boolean, unknown][] = [];

  constructor(opts: RelayOptions) {
    this.#client = opts.client;
    this.#settings = opts.settings;
    this.#reporter = opts.reporter;
    this.#now = opts.now ?? Date.now;
    this.#timers = opts.timers ?? realTimers;
    this.#topics = logTopicSet(opts.settings);
    this.#heldWarnAfter = opts.heldWarnAfter ?? 5000;
    this.#liveness = opts.liveness ?? procLiveness();
    this.#newcomers = opts.newcomers ?? daemonChildren();
    this.#spool = opts.spool;
    for (const t of this.#topics) this.#topicOf.set(t, t);
    this.#batches = new BatchWatch({ counters: this.counters, warn: (l) => this.#reporter.warn(l), count: (w, n) => this.#reporter.count(w, n) }); // issue 12
    this.registry = new Registry({
      readyDelay: opts.settings.ready_delay,
      globalInstanceVar: opts.globalInstanceVar,
      knownInstanceVars: opts.knownInstanceVars,
    });
    this.outbox = new Outbox({
      send: opts.client.send,
      writerOf: (key) => this.#writer.get(key),
      onSendError: (pmId, err) => this.#onSendError(pmId, err),
      onOverflow: (app, n, why) => {
        const bound = why === 'spool' ? `buffer_mb=${this.#settings.buffer_mb} and spool_mb=${this.#settings.spool_mb} full, the newest dropped` : `buffer_mb=${this.#settings.buffer_mb} full, the oldest dropped${this.#spool?.failure ? ` (no spool: ${this.#spool.failure})` : ''}`;
        this.#reporter.count(`log packets dropped: hold buffer full (${bound}) for ${formatAppKey(app.key)}`, n);
        this.#reporter.diagnose(app.key, 'buffer-full', () => `more log packets waited than the hold buffer takes (${bound}). ${this.#whyNoWriter(app.key)}`);
      },
      onSpool: (app) => {
        this.#reporter.info(`app=${formatAppKey(app.key)} held log packets pass buffer_mb=${this.#settings.buffer_mb}: the newer ones go to the spool on disk (${this.#spool?.dir}, up to spool_mb=${this.#settings.spool_mb})`);
      },
      onFlush: (app, n, writer) => {
        this.#reporter.info(`app=${formatAppKey(app.key)} delivering ${n} held log packets to writer pm_id=${writer}`);
      },
      onReplay: (pmId, n) => {
        this.#reporter.count(`log packets sent again: PM2 had handed them to a restarted process (pm_id ${pmId}) before it listened`, n);
      },
      generationOf: (pmId) => this.registry.process(pmId)?.startedAt ?? 0,
      vacated: (pmId) => {
        const p = this.registry.process(pmId);
        if (p === undefined) return undefined;
        if (!this.#liveness.isAlive(p.pid)) return `${EXITED} (pid ${p.pid})`;
        const other = this.#newcomers.after(pmId, p.pid);
        return other === undefined ? undefined : `is a new process (pid ${other}, was ${p.pid}): a reload`;
      },
      onVacated: (pmId, why) => this.#onVacated(pmId, why),
      forkedSince: (pmId) => {
        const p = this.registry.process(pmId);
        return p === undefined ? undefined : this.#newcomers.forked(pmId, p.pid);
      },
      now: this.#now,
      preciseNow: opts.preciseNow,
      counters: this.counters,
      bufferBytes: opts.settings.buffer_mb * 1048576,
      spool: opts.spool,
      maxInflight: opts.settings.max_inflight,
    });
  }

  /**
   * Listen first, then list: a process that starts in between is seen by its event, and packets
   * that arrive before the table is built wait for it. `spool`: packets held at the last shutdown
   * (older than anything new). `wrap`: a gate in front of the message handler (see handover.ts).
   */
  async start(opts: { spool?: Record<string, OutPacket[]>; wrap?: (handle: (p: unknown) => void) => (p: unknown) => void } = {}): Promise<void> {
    const onMessage = (p: unknown): void => {
      if (this.#started) this.handleMessage(p);
      else this.#early.push([true, p]);
    };
    await this.#client.subscribe({
      message: opts.wrap ? opts.wrap(onMessage) : onMessage,
      event: (p) => (this.#started ? this.handleEvent(p) : this.#early.push([false, p])),
    });
    const envs = await this.#client.list();
    this.#applyChanges(this.registry.applySnapshot(envs, this.#now()));
    if (opts.spool) this.#restore(opts.spool);
    this.outbox.adoptSpool(
      (key) => this.registry.app(key) !== undefined,
      (key, n) => this.#reporter.warn(`app=${formatAppKey(key)} is gone: dropped ${n} log packets it had spooled`),
    );
    this.#started = true;
    for (const [isMsg, p] of this.#early.splice(0)) {
      if (isMsg) this.handleMessage(p);
      else this.handleEvent(p);
    }
    for (const app of this.registry.apps()) this.#electAndPump(app.key);
  }

  handleMessage(packet: unknown): void {
    this.counters.in++;
    const r = route(packet as never, this.registry, this.#settings, this.#topics);
    switch (r.kind) {
      case 'log': {
        const raw = (packet as { raw: OutPacket }).raw;
        if (r.senderId !== undefined) {
          const sender = r.sender;
          if (!sender) this.scheduleReconcile(200);
          else if (!sender.clusterMode) {
            this.#reporter.diagnose(r.appKey, 'fork-mode', () => `log packets come from pm_id=${sender.pmId}, a fork-mode process. log4js's pm2 mode is meant for cluster mode: start the app with exec_mode: 'cluster', or use disableClustering: true in log4js for a single fork instance.`);
          }
        }
        this.#batches.seen(raw.topic, raw.data); // issue 12: count records, notice unknown shapes
        this.outbox.pushLog(r.appKey, { topic: this.#topicOf.get(raw.topic) ?? raw.topic, data: raw.data });
        return;
      }
      case 'relay': {
        const raw = (packet as { raw: OutPacket }).raw;
        this.outbox.pushRelay(r.targets, raw.topic, raw.data);
        return;
      }
      case 'ready': {
        const p = this.registry.markReady(r.pmId, this.#now());
        if (p) this.#electAndPump(p.appKey);
        return;
      }
      case 'drop': {
        if (MALFORMED.has(r.reason)) this.counters.malformed++;
        else this.counters.dropped++;
        this.#reporter.count(DROP_PHRASE[r.reason]);
        if (r.reason === 'unknown-sender') this.scheduleReconcile(200);
        if (r.reason === 'writer-sends' && r.appKey) {
          const app = this.registry.app(r.appKey);
          const writerVar = app?.instanceVar ?? 'NODE_APP_INSTANCE';
          this.#reporter.diagnose(
            r.appKey,
            'writer-sends',
            () =>
              `its writer (the process with ${writerVar}=${this.#settings.writer_instance}) sends log packets instead of writing them, so nobody writes this app's files. ` +
              `Fix: in log4js.configure use pm2: true` +
              (writerVar !== 'NODE_APP_INSTANCE' ? ` and pm2InstanceVar: '${writerVar}' (the app's instance_var).` : ` (and no pm2InstanceVar, or pm2InstanceVar equal to the app's instance_var).`) +
              ` With pm2-scoped-intercom/client (winston, pino): pass instanceVar: '${writerVar}' and writerInstance: ${this.#settings.writer_instance}.`,
          );
        }
        return;
      }
    }
  }

  handleEvent(packet: unknown): void {
    if (packet === null || typeof packet !== 'object') return;
    const { event, process: env } = packet as { event?: unknown; process?: unknown };
    if (typeof event !== 'string' || env === null || typeof env !== 'object') return;
    this.#applyChanges(this.registry.applyEvent(event, env as Pm2Env, this.#now()));
    // PM2 sends no event when a process is deleted: look again shortly after it stops.
    if (event === 'exit' || event === 'stop') this.scheduleReconcile(1000);
  }

  /** Re-read `pm2 list` soon (coalesced). */
  scheduleReconcile(ms: number): void {
    if (this.#reconcileTimer !== undefined || this.#stopped) return;
    this.#reconcileTimer = this.#timers.setTimeout(() => {
      this.#reconcileTimer = undefined;
      void this.reconcile().catch((err: Error) => this.#reporter.warn(`could not re-read the process list: ${err.message}`));
    }, ms);
  }

  /** Re-read `pm2 list` now and apply the differences. */
  reconcile(): Promise<void> {
    if (!this.#reconciling) {
      this.#reconciling = this.#client
        .list()
        .then((envs) => {
          if (!this.#stopped) this.#applyChanges(this.registry.applySnapshot(envs, this.#now()));
        })
        .finally(() => {
          this.#reconciling = undefined;
        });
    }
    return this.#reconciling;
  }

  /** Periodic checks (call about once a second): say why an app has held packets for long. */
  tick(): void {
    const now = this.#now();
    this.#spool?.flush();
    for (const a of this.outbox.apps()) {
      if (a.heldSince !== 0 && now - a.heldSince >= this.#heldWarnAfter && this.outbox.held(a.key) > 0) {
        this.#reporter.diagnose(a.key, 'held', `${this.outbox.held(a.key)} log packets have waited ${Math.round((now - a.heldSince) / 1000)} s for a writer. ${this.#whyNoWriter(a.key)}`);
      }
    }
  }

  /** Drop one app's held packets (operator action). Returns how many, or undefined if unknown. */
  dropHeld(appName: string): number | undefined {
    let n: number | undefined;
    for (const a of [...this.outbox.apps()]) {
      if (a.key === appName || a.key.endsWith(`\u0000${appName}`)) n = (n ?? 0) + this.outbox.dropApp(a.key);
    }
    return n;
  }

  /** Wait until nothing deliverable is left (for a clean shutdown), at most `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = this.#now() + timeoutMs;
    for (;;) {
      if (this.#idle()) return true;
      if (this.#now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Log packets held in memory per app, taken out for the state written at shutdown (the spool stays on disk). */
  heldPackets(): Record<string, OutPacket[]> {
    this.#spool?.close();
    return this.outbox.takeMemoryHeld();
  }

  status(): AppStatus[] {
    const rows: AppStatus[] = [];
    const keys = new Set<string>([...[...this.registry.apps()].map((a) => a.key), ...[...this.outbox.apps()].map((a) => a.key)]);
    for (const key of keys) {
      const app = this.registry.app(key);
      const procs = app ? this.registry.processesOf(app) : [];
      if (procs.length > 0 && procs.every((p) => p.isModule)) continue;
      const q = this.outbox.app(key);
      const e = electWriter(procs, this.#settings.writer_instance, this.#now());
      const w = e.writer ?? e.claimants[0];
      const i = key.indexOf('\u0000');
      rows.push({
        namespace: key.slice(0, i),
        name: key.slice(i + 1),
        instances: procs.length,
        online: procs.filter((p) => p.status === 'online').length,
        instance_var: app?.instanceVar ?? 'NODE_APP_INSTANCE',
        writer_pm_id: w ? w.pmId : null,
        writer_instance: w?.instance ?? null,
        writer_ready: e.writer !== undefined,
        held: this.outbox.held(key),
        in_flight: q ? q.inflight : 0,
        forwarded: q ? q.forwarded : 0,
        dropped: q ? q.dropped : 0,
        last_problem: this.#reporter.lastProblem(key)?.text ?? null,
      });
    }
    rows.sort((a, b) => (a.namespace + a.name < b.namespace + b.name ? -1 : 1));
    return rows;
  }

  appsWithoutWriter(): number {
    let n = 0;
    for (const a of this.registry.apps()) {
      if (this.#writer.get(a.key) === undefined && this.registry.processesOf(a).some((p) => !p.isModule)) n++;
    }
    return n;
  }

  stop(): void {
    this.#stopped = true;
    if (this.#reconcileTimer !== undefined) this.#timers.clearTimeout(this.#reconcileTimer);
    for (const t of this.#readyTimers.values()) this.#timers.clearTimeout(t);
    this.#readyTimers.clear();
  }

  #idle(): boolean {
    if (this.outbox.inflight > 0) return false;
    for (const a of this.outbox.apps()) {
      if (this.outbox.held(a.key) > 0 && this.#writer.get(a.key) !== undefined) return false;
    }
    return true;
  }

  #restore(held: Record<string, OutPacket[]>): void {
    let n = 0;
    for (const [key, packets] of Object.entries(held)) {
      if (!Array.isArray(packets)) continue;
      if (!this.registry.app(key)) {
        this.counters.dropped += packets.length;
        this.#reporter.warn(`app=${formatAppKey(key)} is gone: dropped ${packets.length} log packets held at the last shutdown`);
        continue;
      }
      const good = packets.filter((p) => p && typeof p.topic === 'string' && p.data !== undefined);
      this.outbox.restore(key, good);
      n += good.length;
    }
    if (n > 0) this.#reporter.info(`restored ${n} log packets held at the last shutdown`);
  }

  #applyChanges(changes: TableChange[]): void {
    if (changes.length === 0) return;
    const touched = new Set<string>();
    for (const ch of changes) {
      if (ch.kind === 'app-removed') {
        const n = this.outbox.dropApp(ch.app.key);
        if (n > 0) this.#reporter.warn(`app=${formatAppKey(ch.app.key)} was deleted: dropped ${n} log packets it held`);
        this.#writer.delete(ch.app.key);
        const t = this.#readyTimers.get(ch.app.key);
        if (t !== undefined) this.#timers.clearTimeout(t);
        this.#readyTimers.delete(ch.app.key);
        this.#reporter.forget(ch.app.key);
        touched.delete(ch.app.key);
        continue;
      }
      if (ch.kind === 'online') {
        this.outbox.revive(ch.proc.pmId, ch.proc.startedAt);
        // Learn the new generation's pid soon (PM2's events do not carry it).
        if (ch.proc.pid === 0) this.scheduleReconcile(100);
      } else {
        this.outbox.retire(ch.proc.pmId, ch.proc.startedAt);
        if (ch.kind === 'removed') this.#liveness.forget(ch.proc.pid);
      }
      if (this.registry.app(ch.proc.appKey)) touched.add(ch.proc.appKey);
    }
    for (const key of touched) this.#electAndPump(key);
  }

  #elect(key: string): Election | undefined {
    const app = this.registry.app(key);
    if (!app) return undefined;
    return electWriter(this.registry.processesOf(app), this.#settings.writer_instance, this.#now());
  }

  /** Recompute an app's writer, say so if it changed, and send what waits. */
  #electAndPump(key: string): void {
    const e = this.#elect(key);
    if (!e) return;
    const before = this.#writer.get(key);
    const now = e.writer?.pmId;
    const had = this.#writer.has(key);
    this.#writer.set(key, now);
    const t = this.#readyTimers.get(key);
    if (t !== undefined) {
      this.#timers.clearTimeout(t);
      this.#readyTimers.delete(key);
    }
    if (e.readyAt !== undefined && now === undefined) {
      this.#readyTimers.set(
        key,
        this.#timers.setTimeout(() => {
          this.#readyTimers.delete(key);
          this.#electAndPump(key);
        }, Math.max(0, e.readyAt - this.#now())),
      );
    }
    const uses = this.outbox.app(key) !== undefined;
    if (before !== now && (had || now !== undefined)) {
      const name = formatAppKey(key);
      if (now !== undefined) this.#reporter.info(`app=${name} writer is pm_id=${now} (instance ${e.writer?.instance})`);
      else if (uses) this.#reporter.info(`app=${name} has no ready writer: holding its log packets (up to buffer_mb=${this.#settings.buffer_mb} in memory, then spool_mb=${this.#settings.spool_mb} on disk)`);
    }
    if (e.claimants.length > 1 && uses) {
      this.#reporter.diagnose(key, 'duplicate-writer', () => `${e.claimants.length} online processes claim instance ${this.#settings.writer_instance} (pm_ids ${e.claimants.map((p) => p.pmId).join(', ')}); only pm_id ${e.claimants[0].pmId} receives log packets, the others write their own lines too. Fix: give each instance its own number (do not set the app's instance_var to a variable that your env fixes), then pm2 reload the app.`);
    }
    this.outbox.pump(key);
  }

  #whyNoWriter(key: string): string {
    const app = this.registry.app(key);
    if (!app) return 'No process of this app is known to PM2 (deleted?).';
    const procs = this.registry.processesOf(app).filter((p) => !p.isModule);
    const e = this.#elect(key);
    if (e?.writer) return `Its writer is pm_id ${e.writer.pmId}.`;
    if (e && e.claimants.length > 0) return `Its writer pm_id ${e.claimants[0].pmId} is online but not ready yet.`;
    const numbers = procs.filter((p) => p.status === 'online').map((p) => p.instance);
    const wanted = this.#settings.writer_instance;
    if (numbers.length === 0) return `No process of the app is online: start it (pm2 start ${app.name}).`;
    return (
      `No online process has ${app.instanceVar}=${wanted} (online instances are numbered ${numbers.map((n) => (n === undefined ? '?' : n)).join(', ')}). ` +
      `PM2 numbers instances per app name across namespaces, so an app name reused in a second namespace gets no instance ${wanted}. ` +
      `Fix: give the app a name of its own in each namespace, or pm2 set pm2-scoped-intercom:writer_instance <n> if your log4js writer is another number.`
    );
  }

  /** Found before a send: the process behind pm_id exited or was replaced. Held until it is back. */
  #onVacated(pmId: number, why: string): void {
    // A replacement says `online` soon, and the list tells its pid meanwhile; an exit is read
    // after PM2 has handled it.
    this.#outOfService(pmId, `sends stopped before they went out: pm_id ${pmId} ${why}; packets kept`, why.startsWith(EXITED) ? 1000 : 200);
  }

  #onSendError(pmId: number, err: Error): void {
    const msg = err && err.message ? err.message : String(err);
    this.#outOfService(pmId, `sends refused by PM2 (${/offline/.test(msg) ? 'target offline' : msg.slice(0, 80)}), packets kept`, /unknown/.test(msg) ? 0 : 1000);
  }

  /** Nothing more goes to this process until PM2 says it is online again; its app's packets wait. */
  #outOfService(pmId: number, countLine: string, reconcileInMs: number): void {
    const p = this.registry.markUnreachable(pmId);
    this.#reporter.count(countLine);
    this.scheduleReconcile(reconcileInMs);
    if (p) this.#electAndPump(p.appKey);
  }
}

export type { AppQueue };
