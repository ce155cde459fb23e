/**
 * The relay: bus packets in, routed sends out. Wires the registry (who is where), the router
 * (where a packet goes), the outbox (ordered, bounded delivery) and the reporter (what the
 * operator reads). Talks to PM2 only through the `Pm2Client` interface.
 */
import type { Settings } from './config';
import { electWriter, type Election } from './election';
import { EXITED, newCounters, Outbox, type Counters, type OutPacket } from './outbox';
import type { Pm2Client } from './pm2-client';
import { procLiveness, type Liveness } from './liveness';
import { daemonChildren, type Newcomers } from './newcomers';
import * as say from './messages';
import { Registry, splitAppKey, type Pm2Env, type TableChange } from './registry';
import type { Reporter } from './reporter';
import { logTopicSet, route, type DropReason } from './router';
import type { Spool } from './spool';
import { byApp, statusRow, type AppStatus } from './status';

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
  /** Sub-millisecond epoch clock for send times (compared with PM2's pm_uptime). */
  preciseNow?: () => number;
  /** Whether a pid is still alive (not exited). @default procLiveness() */
  liveness?: Liveness;
  /** Which process PM2 started last for a pm_id. @default daemonChildren() */
  newcomers?: Newcomers;
  /** Where held packets go past `buffer_mb` (loaded already). None: they are dropped. */
  spool?: Spool;
}

/** How long an app may hold packets before the module says why (ms). */
const HELD_WARN_AFTER_MS = 5000;

const MALFORMED: ReadonlySet<DropReason> = new Set(['malformed', 'no-topic', 'no-data']);

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
  readonly #liveness: Liveness;
  readonly #newcomers: Newcomers;
  /** The ready writer of each app, recomputed on every table change (the hot path reads it). */
  readonly #writer = new Map<string, number | undefined>();
  readonly #readyTimers = new Map<string, unknown>();
  /** The configured log topics, so a held packet shares one topic string. */
  readonly #topicOf = new Map<string, string>();
  readonly #spool: Spool | undefined;
  #reconcileTimer: unknown = undefined;
  #reconciling: Promise<void> | undefined;
  #started = false;
  #stopped = false;
  /** Bus packets that came before the table was built, in order: handled once it is. */
  readonly #beforeTable: { isMessage: boolean; packet: unknown }[] = [];

  constructor(opts: RelayOptions) {
    this.#client = opts.client;
    this.#settings = opts.settings;
    this.#reporter = opts.reporter;
    this.#now = opts.now ?? Date.now;
    this.#timers = opts.timers ?? realTimers;
    this.#topics = logTopicSet(opts.settings);
    this.#liveness = opts.liveness ?? procLiveness();
    this.#newcomers = opts.newcomers ?? daemonChildren();
    this.#spool = opts.spool;
    for (const t of this.#topics) this.#topicOf.set(t, t);
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
        const bound = say.overflowBound(why, this.#settings, this.#spool?.failure);
        this.#reporter.count(say.droppedBufferFull(app.key, bound), n);
        this.#reporter.diagnose(app.key, 'buffer-full', () => say.bufferFull(bound, this.#whyNoWriter(app.key)));
      },
      onSpool: (app) => this.#reporter.info(say.spooling(app.key, this.#settings, this.#spool?.dir)),
      onFlush: (app, n, writer) => this.#reporter.info(say.deliveringHeld(app.key, n, writer)),
      onReplay: (pmId, n) => this.#reporter.count(say.sentAgain(pmId), n),
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
    const onMessage = (packet: unknown): void => {
      if (this.#started) this.handleMessage(packet);
      else this.#beforeTable.push({ isMessage: true, packet });
    };
    await this.#client.subscribe({
      message: opts.wrap ? opts.wrap(onMessage) : onMessage,
      event: (packet) => (this.#started ? this.handleEvent(packet) : this.#beforeTable.push({ isMessage: false, packet })),
    });
    const envs = await this.#client.list();
    this.#applyChanges(this.registry.applySnapshot(envs, this.#now()));
    if (opts.spool) this.#restore(opts.spool);
    this.outbox.adoptSpool(
      (key) => this.registry.app(key) !== undefined,
      (key, n) => this.#reporter.warn(say.goneSpooled(key, n)),
    );
    this.#started = true;
    for (const { isMessage, packet } of this.#beforeTable.splice(0)) {
      if (isMessage) this.handleMessage(packet);
      else this.handleEvent(packet);
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
            this.#reporter.diagnose(r.appKey, 'fork-mode', () => say.forkModeSender(sender.pmId));
          }
        }
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
        this.#reporter.count(say.DROP_PHRASE[r.reason]);
        if (r.reason === 'unknown-sender') this.scheduleReconcile(200);
        if (r.reason === 'writer-sends' && r.appKey) {
          const instanceVar = this.registry.app(r.appKey)?.instanceVar;
          this.#reporter.diagnose(r.appKey, 'writer-sends', () => say.writerSends(instanceVar, this.#settings.writer_instance));
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
      void this.reconcile().catch((err: Error) => this.#reporter.warn(say.listFailed(err)));
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
      if (a.heldSince !== 0 && now - a.heldSince >= HELD_WARN_AFTER_MS && this.outbox.held(a.key) > 0) {
        this.#reporter.diagnose(a.key, 'held', say.heldTooLong(this.outbox.held(a.key), now - a.heldSince, this.#whyNoWriter(a.key)));
      }
    }
  }

  /** Drop one app's held packets (operator action). Returns how many, or undefined if unknown. */
  dropHeld(appName: string): number | undefined {
    let n: number | undefined;
    for (const a of [...this.outbox.apps()]) {
      if (a.key === appName || splitAppKey(a.key).name === appName) n = (n ?? 0) + this.outbox.dropApp(a.key);
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
      const delivery = { held: this.outbox.held(key), inflight: q ? q.inflight : 0, forwarded: q ? q.forwarded : 0, dropped: q ? q.dropped : 0 };
      rows.push(statusRow(key, app, procs, e, delivery, this.#reporter.lastProblem(key)));
    }
    return rows.sort(byApp);
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
        this.#reporter.warn(say.goneHeldAtShutdown(key, packets.length));
        continue;
      }
      const good = packets.filter((p) => p && typeof p.topic === 'string' && p.data !== undefined);
      this.outbox.restore(key, good);
      n += good.length;
    }
    if (n > 0) this.#reporter.info(say.restoredHeld(n));
  }

  #applyChanges(changes: TableChange[]): void {
    if (changes.length === 0) return;
    const touched = new Set<string>();
    for (const ch of changes) {
      if (ch.kind === 'app-removed') {
        const n = this.outbox.dropApp(ch.app.key);
        if (n > 0) this.#reporter.warn(say.appDeleted(ch.app.key, n));
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
    const writer = e.writer?.pmId;
    const had = this.#writer.has(key);
    this.#writer.set(key, writer);
    const t = this.#readyTimers.get(key);
    if (t !== undefined) {
      this.#timers.clearTimeout(t);
      this.#readyTimers.delete(key);
    }
    if (e.readyAt !== undefined && writer === undefined) {
      this.#readyTimers.set(
        key,
        this.#timers.setTimeout(() => {
          this.#readyTimers.delete(key);
          this.#electAndPump(key);
        }, Math.max(0, e.readyAt - this.#now())),
      );
    }
    const uses = this.outbox.app(key) !== undefined;
    if (before !== writer && (had || writer !== undefined)) {
      if (e.writer !== undefined) this.#reporter.info(say.writerIs(key, e.writer));
      else if (uses) this.#reporter.info(say.holdingNoWriter(key, this.#settings));
    }
    if (e.claimants.length > 1 && uses) {
      this.#reporter.diagnose(key, 'duplicate-writer', () => say.duplicateWriter(e.claimants, this.#settings.writer_instance));
    }
    this.outbox.pump(key);
  }

  #whyNoWriter(key: string): string {
    const app = this.registry.app(key);
    return say.whyNoWriter(app, app ? this.registry.processesOf(app) : [], this.#elect(key), this.#settings.writer_instance);
  }

  /** Found before a send: the process behind pm_id exited or was replaced. Held until it is back. */
  #onVacated(pmId: number, why: string): void {
    // A replacement says `online` soon, and the list tells its pid meanwhile; an exit is read
    // after PM2 has handled it.
    this.#outOfService(pmId, say.sendsStopped(pmId, why), why.startsWith(EXITED) ? 1000 : 200);
  }

  #onSendError(pmId: number, err: Error): void {
    const msg = err && err.message ? err.message : String(err);
    this.#outOfService(pmId, say.sendsRefused(msg), /unknown/.test(msg) ? 0 : 1000);
  }

  /** Nothing more goes to this process until PM2 says it is online again; its app's packets wait. */
  #outOfService(pmId: number, countLine: string, reconcileInMs: number): void {
    const proc = this.registry.markUnreachable(pmId);
    this.#reporter.count(countLine);
    this.scheduleReconcile(reconcileInMs);
    if (proc) this.#electAndPump(proc.appKey);
  }
}
