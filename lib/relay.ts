/**
 * The relay wires the stages (docs/architecture.md): a bus packet is routed (intake/router.ts)
 * against the table (table/registry.ts), held (hold/hold-buffer.ts) and sent by the outbox
 * (deliver/outbox.ts) to the app's writer once the writer table (table/writer-table.ts) has one
 * ready. Table changes (events, a fresh `pm2 list`) go to the outbox (targets gone or back) and the
 * writer table (elect again); what the units announce comes back here and is said
 * (operator/announcements.ts). Talks to PM2 only through the `Pm2Client` interface.
 */
import { pollUntil, realTimers, type Timers } from './shared/clock';
import { BatchWatch } from './intake/client-batches';
import type { Settings } from './operator/settings';
import { procLiveness, type Liveness } from './proc/liveness';
import * as say from './operator/wording';
import { daemonChildren, type Newcomers } from './proc/forks';
import { Outbox } from './deliver/outbox';
import { HoldBuffer } from './hold/hold-buffer';
import { sayHoldEvents, sayOutboxEvents, sayWriterEvents, type Listener } from './operator/announcements';
import { newCounters, type Counters } from './shared/counters';
import type { OutPacket } from './shared/packet';
import type { Pm2Client } from './pm2/pm2-client';
import { Registry, splitAppKey, type Pm2Env, type TableChange } from './table/registry';
import type { Reporter } from './operator/reporter';
import { logTopicSet, route, type DropReason } from './intake/router';
import type { Spool } from './hold/spool';
import { appsWithoutWriter, statusRows, type AppStatus } from './operator/status';
import type { WriterFiles } from './table/writer-files';
import { ListReader } from './table/list-reader';
import { Writers, type WriterEvents } from './table/writer-table';

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
  /** Bound on a writer's unread backlog (pacing.ts), bytes. @default 0 (unbounded) */
  unreadBudget?: number;
  /** Each app's writer-only files (writer-files.ts). @default none learnt */
  writerFiles?: WriterFiles;
  /** How long a deleted app's held lines are kept in case it comes back (ms): see `#removed`. @default 30000 */
  deletedGraceMs?: number;
}

const DELETED_GRACE_MS = 30_000;
/** How long an app may hold packets before the module says why (ms). */
const HELD_WARN_AFTER_MS = 5000;

const MALFORMED: ReadonlySet<DropReason> = new Set(['malformed', 'no-topic', 'no-data']);

export class Relay {
  readonly counters: Counters = newCounters();
  readonly registry: Registry;
  readonly writers: Writers;
  readonly hold: HoldBuffer;
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
  readonly #lists: ListReader;
  readonly #graceTimers = new Set<unknown>();
  readonly #deletedGraceMs: number;
  #started = false;
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
    this.#deletedGraceMs = opts.deletedGraceMs ?? DELETED_GRACE_MS;
    for (const t of this.#topics) this.#topicOf.set(t, t);
    this.#batches = new BatchWatch({ counters: this.counters, warn: (l) => this.#reporter.warn(l), count: (w, n) => this.#reporter.count(w, n) });
    this.registry = new Registry({
      readyDelay: opts.settings.ready_delay,
      globalInstanceVar: opts.globalInstanceVar,
      knownInstanceVars: opts.knownInstanceVars,
    });
    this.#lists = new ListReader({
      list: () => this.#client.list(),
      registry: this.registry,
      apply: (changes) => this.#applyChanges(changes),
      now: this.#now,
      timers: this.#timers,
      failed: (err) => this.#reporter.warn(say.listFailed(err)),
    });
    const parts = deliveryParts(opts, this.counters, this.registry, this.#timers, this.#now, {
      reconcileSoon: (ms) => this.scheduleReconcile(ms),
      changed: (key) => this.outbox.pump(key),
    });
    this.hold = parts.hold;
    this.writers = parts.writers;
    this.outbox = parts.outbox;
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
    const exists = (key: string): boolean => this.registry.app(key) !== undefined;
    const restored = opts.spool ? this.hold.restoreSaved(opts.spool, exists, (key, n) => this.#reporter.warn(say.goneHeldAtShutdown(key, n))) : 0;
    if (restored > 0) this.#reporter.info(say.restoredHeld(restored));
    this.hold.adoptSpool(
      exists,
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
    this.#lists.schedule(ms);
  }

  /** Re-read `pm2 list` now and apply the differences (list-reader.ts). */
  reconcile(): Promise<void> {
    return this.#lists.read();
  }

  /** Periodic checks (call about once a second): say why an app has held packets for long. */
  tick(): void {
    const now = this.#now();
    this.#spool?.flush();
    for (const key of this.hold.appKeys()) {
      this.writers.learnFiles(key);
      const { heldSince, held } = this.outbox.stats(key)!;
      if (heldSince !== 0 && now - heldSince >= HELD_WARN_AFTER_MS && held > 0) {
        this.#reporter.diagnose(key, 'held', say.heldTooLong(held, now - heldSince, say.whyHeld(this.writers.waitOf(key))));
      }
    }
  }

  /** Drop one app's held packets (operator action). Returns how many, or undefined if unknown. */
  dropHeld(appName: string): number | undefined {
    let n: number | undefined;
    for (const key of [...this.hold.appKeys()]) {
      if (key === appName || splitAppKey(key).name === appName) n = (n ?? 0) + this.outbox.dropApp(key);
    }
    return n;
  }

  /** Wait until nothing deliverable is left (for a clean shutdown), at most `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean> {
    return pollUntil(() => this.outbox.idle(), timeoutMs, 10, this.#now);
  }


  /** At shutdown, once every send is answered: PM2's generation under each pm_id now, for `heldPackets` (none if nothing went out). */
  async generationsNow(timeoutMs: number): Promise<ReadonlyMap<number, number> | undefined> {
    return this.counters.out > 0 ? this.#lists.generations(timeoutMs) : undefined;
  }

  /** Log packets held in memory per app, taken out for the state written at shutdown (the spool stays on disk); `generations`: see `generationsNow`. */
  heldPackets(generations?: ReadonlyMap<number, number>): Record<string, OutPacket[]> {
    this.#spool?.close();
    this.outbox.keepUnjudged(generations && ((pmId) => generations.get(pmId)));
    return this.hold.takeMemoryHeld();
  }

  status(): AppStatus[] {
    return statusRows(this.registry, this.writers, this.hold, this.outbox, this.#reporter);
  }

  appsWithoutWriter(): number {
    return appsWithoutWriter(this.registry, this.writers);
  }

  /**
   * An app left the table. Its held lines are dropped only if it is not back within
   * `deletedGraceMs`: `pm2 kill` and `pm2 update` delete the apps before the module, which then
   * saves what it holds for the next start (the chaos run lost 88,397 lines to an early drop).
   */
  #removed(key: string): void {
    this.writers.forget(key);
    this.#reporter.forget(key);
    const timer = this.#timers.setTimeout(() => {
      this.#graceTimers.delete(timer);
      if (this.registry.app(key) !== undefined) return;
      const n = this.outbox.dropApp(key);
      if (n > 0) this.#reporter.warn(say.appDeleted(key, n));
    }, this.#deletedGraceMs);
    this.#graceTimers.add(timer);
  }

  stop(): void {
    for (const t of this.#graceTimers) this.#timers.clearTimeout(t);
    this.#lists.stop();
    this.writers.stop();
    this.outbox.stop();
  }

  #applyChanges(changes: TableChange[]): void {
    if (changes.length === 0) return;
    const touched = new Set<string>();
    for (const ch of changes) {
      if (ch.kind === 'app-removed') {
        this.#removed(ch.app.key);
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

/**
 * The hold buffer, the writer table and the outbox, wired to each other's announcements: the
 * outbox's refusals go to the writer table, whose changes come back to the relay (`hooks`); what
 * they announce is said in `pm2 logs` (operator/announcements.ts).
 */
function deliveryParts(
  opts: RelayOptions,
  counters: Counters,
  registry: Registry,
  timers: Timers,
  now: () => number,
  hooks: Pick<WriterEvents, 'reconcileSoon' | 'changed'>,
): { hold: HoldBuffer; writers: Writers; outbox: Outbox } {
  const bufferBytes = opts.settings.buffer_mb * 1048576;
  const listener: Listener = {
    reporter: opts.reporter,
    settings: opts.settings,
    spool: opts.spool,
    whyNoWriter: (key) => say.whyHeld(writers.waitOf(key)),
    holds: (key) => hold.has(key),
  };
  const hold = new HoldBuffer({ bufferBytes, spool: opts.spool, counters, events: sayHoldEvents(listener) });
  const writers = new Writers({
    registry,
    settings: opts.settings,
    events: { ...sayWriterEvents(listener), ...hooks },
    timers,
    now,
    liveness: opts.liveness ?? procLiveness(),
    newcomers: opts.newcomers ?? daemonChildren(),
    files: opts.writerFiles,
  });
  const outbox = new Outbox({
    send: opts.client.send,
    writers,
    hold,
    bufferBytes,
    events: { ...sayOutboxEvents(listener), vacated: (pmId, v) => writers.vacated(pmId, v), refused: (pmId, err) => writers.refused(pmId, err) },
    now,
    preciseNow: opts.preciseNow,
    counters,
    maxInflight: opts.settings.max_inflight,
    unreadBudget: opts.unreadBudget,
    timers,
  });
  return { hold, writers, outbox };
}
