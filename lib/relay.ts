/**
 * The relay: bus packets in, routed sends out. The pipeline: a bus packet is routed (router.ts)
 * against the table (registry.ts) and queued in the outbox (outbox.ts), which sends it to the
 * app's writer once the writer table (writers.ts) has one ready. Table changes (events, a fresh
 * `pm2 list`) go to the outbox (targets gone or back) and the writer table (elect again, send what
 * waits). Talks to PM2 only through the `Pm2Client` interface; what it says is worded in messages.ts.
 */
import { realTimers, type Timers } from './clock';
import { BatchWatch } from './batch';
import type { Settings } from './config';
import { procLiveness, type Liveness } from './liveness';
import * as say from './messages';
import { daemonChildren, type Newcomers } from './newcomers';
import { newCounters, Outbox, type Counters, type OutPacket } from './outbox';
import type { Pm2Client } from './pm2-client';
import { Registry, splitAppKey, type Pm2Env, type TableChange } from './registry';
import type { Reporter } from './reporter';
import { logTopicSet, route, type DropReason } from './router';
import type { Spool } from './spool';
import { byApp, statusRow, type AppStatus } from './status';
import type { WriterFiles } from './writer-files';
import { Writers } from './writers';

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
  /** Bound on a writer's unread backlog (backlog.ts), bytes. @default 0 (unbounded) */
  unreadBudget?: number;
  /** Each app's writer-only files (writer-files.ts). @default none learnt */
  writerFiles?: WriterFiles;
}

/** How long an app may hold packets before the module says why (ms). */
const HELD_WARN_AFTER_MS = 5000;
/** How soon a list is read again after one that was asked for too early (see `reconcile`). */
const RECONCILE_AGAIN_MS = 50;

const MALFORMED: ReadonlySet<DropReason> = new Set(['malformed', 'no-topic', 'no-data']);

export class Relay {
  readonly counters: Counters = newCounters();
  readonly registry: Registry;
  readonly writers: Writers;
  readonly outbox: Outbox;
  readonly #client: Pm2Client;
  readonly #settings: Settings;
  readonly #reporter: Reporter;
  readonly #now: () => number;
  readonly #timers: Timers;
  readonly #topics: ReadonlySet<string>;
  /** The configured log topics, so a held packet shares one topic string. */
  readonly #topicOf = new Map<string, string>();
  readonly #spool: Spool | undefined;
  readonly #batches: BatchWatch;
  #reconcileTimer: unknown = undefined;
  /** A list was asked for while one was on its way, or came back older than events: read again. */
  #reconcileAgain = false;
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
    this.#spool = opts.spool;
    for (const t of this.#topics) this.#topicOf.set(t, t);
    this.#batches = new BatchWatch({ counters: this.counters, warn: (l) => this.#reporter.warn(l), count: (w, n) => this.#reporter.count(w, n) });
    this.registry = new Registry({
      readyDelay: opts.settings.ready_delay,
      globalInstanceVar: opts.globalInstanceVar,
      knownInstanceVars: opts.knownInstanceVars,
    });
    this.writers = new Writers({
      registry: this.registry,
      settings: opts.settings,
      reporter: opts.reporter,
      timers: this.#timers,
      now: this.#now,
      liveness: opts.liveness ?? procLiveness(),
      newcomers: opts.newcomers ?? daemonChildren(),
      reconcileSoon: (ms) => this.scheduleReconcile(ms),
      files: opts.writerFiles,
    });
    this.outbox = new Outbox({
      send: opts.client.send,
      writers: this.writers,
      events: {
        overflow: (appKey, n, why) => {
          const bound = say.overflowBound(why, this.#settings, this.#spool?.failure);
          this.#reporter.count(say.droppedBufferFull(appKey, bound), n);
          this.#reporter.diagnose(appKey, 'buffer-full', () => say.bufferFull(bound, this.writers.whyNoWriter(appKey)));
        },
        spooling: (appKey) => this.#reporter.info(say.spooling(appKey, this.#settings, this.#spool?.dir)),
        flushing: (appKey, n, writer) => this.#reporter.info(say.deliveringHeld(appKey, n, writer)),
        replayed: (pmId, n) => this.#reporter.count(say.sentAgain(pmId), n),
      },
      now: this.#now,
      preciseNow: opts.preciseNow,
      counters: this.counters,
      bufferBytes: opts.settings.buffer_mb * 1048576,
      spool: opts.spool,
      maxInflight: opts.settings.max_inflight,
      unreadBudget: opts.unreadBudget,
      timers: this.#timers,
    });
    this.writers.deliverTo(this.outbox);
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
    for (const app of this.registry.apps()) this.writers.update(app.key);
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
        this.#batches.seen(raw.topic, raw.data);
        if (!this.outbox.pushLog(r.appKey, { topic: this.#topicOf.get(raw.topic) ?? raw.topic, data: raw.data })) {
          this.counters.malformed++;
          this.#reporter.count(say.UNSERIALISABLE);
        }
        return;
      }
      case 'relay': {
        const raw = (packet as { raw: OutPacket }).raw;
        const dropped = this.outbox.pushRelay(r.targets, raw.topic, raw.data);
        if (dropped < 0) {
          this.counters.malformed++;
          this.#reporter.count(say.UNSERIALISABLE_RELAY);
        } else if (dropped > 0) this.#reporter.count(say.relayOverflow(this.#settings.buffer_mb), dropped);
        return;
      }
      case 'ready': {
        const proc = this.registry.markReady(r.pmId, this.#now());
        if (proc) this.writers.update(proc.appKey);
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

  /**
   * Re-read `pm2 list` now and apply the differences. Asked for while a list is on its way, or
   * answered with a list older than events since (registry.ts `applySnapshot`), it reads again
   * once that one is in: a list asked for before an app started must not be the last word on it.
   */
  reconcile(): Promise<void> {
    if (this.#reconciling) {
      this.#reconcileAgain = true;
      return this.#reconciling;
    }
    const askedAt = this.registry.eventSeq;
    this.#reconciling = this.#client
      .list()
      .then((envs) => {
        if (this.#stopped) return;
        this.#applyChanges(this.registry.applySnapshot(envs, this.#now(), askedAt));
        if (this.registry.snapshotWasStale) this.#reconcileAgain = true;
      })
      .finally(() => {
        this.#reconciling = undefined;
        if (this.#reconcileAgain) {
          this.#reconcileAgain = false;
          this.scheduleReconcile(RECONCILE_AGAIN_MS);
        }
      });
    return this.#reconciling;
  }

  /** Periodic checks (call about once a second): say why an app has held packets for long. */
  tick(): void {
    const now = this.#now();
    this.#spool?.flush();
    for (const key of this.outbox.appKeys()) {
      this.writers.learnFiles(key);
      const { heldSince, held } = this.outbox.stats(key)!;
      if (heldSince !== 0 && now - heldSince >= HELD_WARN_AFTER_MS && held > 0) {
        this.#reporter.diagnose(key, 'held', say.heldTooLong(held, now - heldSince, this.writers.whyNoWriter(key)));
      }
    }
  }

  /** Drop one app's held packets (operator action). Returns how many, or undefined if unknown. */
  dropHeld(appName: string): number | undefined {
    let n: number | undefined;
    for (const key of [...this.outbox.appKeys()]) {
      if (key === appName || splitAppKey(key).name === appName) n = (n ?? 0) + this.outbox.dropApp(key);
    }
    return n;
  }

  /** Wait until nothing deliverable is left (for a clean shutdown), at most `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = this.#now() + timeoutMs;
    for (;;) {
      if (this.outbox.idle()) return true;
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
    const keys = new Set<string>([...[...this.registry.apps()].map((a) => a.key), ...this.outbox.appKeys()]);
    for (const key of keys) {
      const app = this.registry.app(key);
      const procs = app ? this.registry.processesOf(app) : [];
      if (procs.length > 0 && procs.every((p) => p.isModule)) continue;
      const e = this.writers.elect(key) ?? { claimants: [] };
      const delivery = this.outbox.stats(key) ?? { held: this.outbox.held(key), inflight: 0, forwarded: 0, dropped: 0 };
      rows.push(statusRow(key, app, procs, e, delivery, this.#reporter.lastProblem(key)));
    }
    return rows.sort(byApp);
  }

  appsWithoutWriter(): number {
    let n = 0;
    for (const a of this.registry.apps()) {
      if (this.writers.writerOf(a.key) === undefined && this.registry.processesOf(a).some((p) => !p.isModule)) n++;
    }
    return n;
  }

  stop(): void {
    this.#stopped = true;
    if (this.#reconcileTimer !== undefined) this.#timers.clearTimeout(this.#reconcileTimer);
    this.writers.stop();
    this.outbox.stop();
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
        this.writers.forget(ch.app.key);
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
        if (ch.kind === 'removed') this.writers.removed(ch.proc);
      }
      if (this.registry.app(ch.proc.appKey)) touched.add(ch.proc.appKey);
    }
    for (const key of touched) this.writers.update(key);
  }
}
