/**
 * Ordered delivery. Log packets wait in their app's queue (the hold buffer: in memory up to
 * `buffer_mb` for the whole module, an app under its share of it kept in memory beyond: see
 * `#pastBound`; then on disk in the spool up to `spool_mb`) until the app has
 * a ready writer, then go out in order with at most
 * `max_inflight` sends in flight per target process. Relayed topics go out per target in order
 * and are never held. A failed send is never retried blindly: the target is taken out of service
 * (PM2's daemon dies if a relay keeps writing to a worker whose IPC channel just closed) and a log
 * packet goes back to the front of its app's queue.
 */
import { Backlog, pipeCost } from './backlog';
import { newRecordCounters, recordsOf, type RecordCounters } from './batch';
import { createPreciseClock, realTimers, type Timers } from './clock';
import { Deque } from './deque';
import type { Spool } from './spool';
import type { SendGate } from './writers';

export interface OutPacket {
  topic: string;
  data: unknown;
  /** What it costs held in memory (estimated when it is held). */
  bytes?: number;
  /** Non-string data: its length as JSON in UTF-8 bytes, what PM2 writes into the writer's pipe (measured when it is held). */
  wire?: number;
}

/**
 * Memory a held packet takes: its data, plus the wrapper object, a queue slot and V8's string
 * header. Measured: 320 B for a log4js line whose serialised data is 245 characters.
 */
export function heldBytes(packet: OutPacket): number {
  return sizeUp({ topic: packet.topic, data: packet.data });
}

/**
 * Sets `bytes` (heldBytes) and, for non-string data, `wire`, from one serialisation; returns `bytes`.
 */
export function sizeUp(packet: OutPacket): number {
  const d = packet.data;
  if (typeof d === 'string') return (packet.bytes = d.length + 80);
  try {
    const json = JSON.stringify(d) ?? '';
    packet.wire = Buffer.byteLength(json);
    return (packet.bytes = json.length * 2 + 80);
  } catch {
    return (packet.bytes = 1024);
  }
}

/** Refill an app's memory from its spool when fewer than this many packets are left in memory. */
const REFILL_BELOW = 512;

/** The one PM2 call the outbox needs. `done` must be called once per send, in send order. */
/**
 * A send's answer. `swapped` (only from the module's own RPC connection, rpc-channel.ts): whether
 * PM2 handed the packet to a worker that a reload in progress had just forked under the pm_id (true)
 * or not (false); undefined when unknown, and the outbox judges from timing.
 */
export type SendDone = (err: Error | null, swapped?: boolean) => void;
export type SendFn = (pmId: number, topic: string, data: unknown, done: SendDone) => void;

export interface Counters extends RecordCounters {
  in: number;
  out: number;
  relayed: number;
  /** Held now, in memory and spooled. */
  held: number;
  /** Of `held`, spooled to disk. */
  spooled: number;
  dropped: number;
  malformed: number;
  sendErrors: number;
  /** Times sending to a writer paused until it had read its backlog (backlog.ts). */
  paced: number;
}

export function newCounters(): Counters {
  return { in: 0, out: 0, relayed: 0, held: 0, spooled: 0, dropped: 0, malformed: 0, sendErrors: 0, paced: 0, ...newRecordCounters() };
}

/** One app's log packets waiting for its writer, and what became of the others. */
interface AppQueue {
  readonly key: string;
  readonly queue: Deque<OutPacket>;
  /** Sent, failed, and due again before anything in `queue`. */
  readonly retry: Deque<OutPacket>;
  inflight: number;
  inflightTarget: number | undefined;
  forwarded: number;
  dropped: number;
  /** Epoch ms since which the app has had packets and no writer to take them, 0 when none. */
  heldSince: number;
  /** Bytes of its packets held in memory (its part of `buffer_mb`). */
  bytes: number;
}

/** An app's packets held in memory (its spooled ones aside). */
function inMemory(a: AppQueue): number {
  return a.queue.size + a.retry.size;
}

/** A send in flight: the packet, its app (null: a relayed topic), when it was written to PM2. */
interface Sent {
  readonly packet: OutPacket;
  readonly app: AppQueue | null;
  readonly sentAt: number;
  /** What it takes in the target's pipe (backlog.ts); 0 when not counted. */
  readonly cost: number;
}

/**
 * A log packet PM2 accepted lately, kept a short while in case it reached a new generation: when
 * we wrote it and read PM2's answer (sub-ms epoch times), and whether it is known to have gone to
 * the process we meant (PM2 had forked nothing new for the pm_id when the answer was read).
 */
interface Recent {
  readonly packet: OutPacket;
  readonly app: AppQueue;
  readonly sentAt: number;
  readonly answeredAt: number;
  readonly beforeAnyFork: boolean;
  /** What PM2 said of the send (SendDone): reached a worker a reload had just forked. */
  readonly swapped: boolean | undefined;
}

interface Target {
  readonly pmId: number;
  /** The generation (PM2's pm_uptime) this target stands for. */
  readonly startedAt: number;
  inflight: number;
  /** What is in flight, in send order. */
  readonly sent: Deque<Sent>;
  readonly recent: Deque<Recent>;
  readonly relays: Deque<OutPacket>;
  /** Bytes of `relays` (bounded by `buffer_mb`, see `pushRelay`). */
  relayBytes: number;
  /** What the process may not have read yet (backlog.ts). */
  readonly backlog: Backlog;
  /** Armed while sends wait for the process to read its backlog. */
  paceTimer: unknown;
  readonly done: SendDone;
  /** Set after a failed send, when found vacated, or when detached: nothing more goes to it. */
  broken: boolean;
  /**
   * Found dying or dead before a send (kill -9, a crash): what PM2 handed it is not judged against
   * the next generation. A send in flight went to the old process (then lost with it, or written
   * by it: sending it again could write it twice) or, handed after the restart, to the new one.
   */
  died: boolean;
  /** Forgotten by the outbox (a newer target may stand for the pm_id): nothing more is kept. */
  detached: boolean;
  /** Once detached by a new generation: its pm_uptime (sends PM2 handled after it reached it). */
  replacedAt: number;
}

/**
 * How long, and how many, accepted sends are kept for replay after a silent replacement: enough to
 * cover the time from a new generation's start to its `online` event reaching us (up to ~0.5 s
 * seen on a loaded 2-core machine; a target found vacated stops sending, so nothing is pruned
 * from then on), small enough not to pin delivered packets in memory during a burst.
 */
const RECENT_MS = 2000;
const RECENT_MAX = 20000;
/**
 * A lower bound of how long PM2's daemon takes to put a new process under a pm_id once it has
 * stamped its pm_uptime: `cluster.fork()` (or `spawn`) alone, which runs in the same synchronous
 * step as the swap, took 6.7 ms at the least on the 2-core machine (median 23 ms under load).
 */
const SWAP_MIN_MS = 1;

/**
 * Did PM2 hand a send to the new generation (stamped `replacedAt`, PM2's pm_uptime, whole ms)
 * rather than to the process it replaced? PM2 swaps the process under a pm_id in one synchronous
 * step that starts before `Date.now()` is stamped and ends after the fork, so it handled the send
 * either before that step (the old process) or after it (the new one):
 *   - answered before the step could have ended: before it, the old process;
 *   - written after the stamp: after the step, the new process;
 *   - otherwise, written before and answered after the step. With the probe's word (`swapped`,
 *     SendDone) it is known: a reload had swapped the workers when PM2 handled the send, or had
 *     not (a `pm2 restart` never swaps: the old process stops before the new one is stamped, and
 *     sends in between are refused, so what PM2 accepted went to the old one). Without it, timing
 *     decides: unless PM2 had forked nothing new when we read the answer, PM2 handled it after the
 *     step (our answer was read late only when this process was busy for longer than the daemon's
 *     fork, which a busy machine does: it repeated one line in about 1 reload in 4 under load).
 */
export function reachedNewGeneration(sentAt: number, answeredAt: number, replacedAt: number, beforeAnyFork = false, swapped?: boolean): boolean {
  if (answeredAt < replacedAt + SWAP_MIN_MS) return false;
  if (sentAt >= replacedAt + 1) return true;
  if (swapped !== undefined) return swapped;
  return !beforeAnyFork;
}

/** What the operator is told of the outbox's own doings (Relay words them: messages.ts). */
export interface OutboxEvents {
  /** Packets dropped because the hold buffer was full (memory, and the spool if there is one). */
  overflow(appKey: string, count: number, why: 'memory' | 'spool'): void;
  /** An app's packets started going to the spool (memory full). */
  spooling?(appKey: string): void;
  /** A held backlog started going out (count packets). */
  flushing?(appKey: string, count: number, writer: number): void;
  /** Packets re-queued because they reached a process generation that was not listening yet. */
  replayed?(pmId: number, count: number): void;
}

/** One app's delivery, for the status rows and the periodic checks. */
export interface AppStats {
  /** Held now, in memory and spooled. */
  held: number;
  inflight: number;
  forwarded: number;
  dropped: number;
  /** Epoch ms since which the app has had packets and no writer to take them, 0 when none. */
  heldSince: number;
}

export interface OutboxOptions {
  send: SendFn;
  /** Who may be sent to: the writer table (writers.ts), asked before every send. */
  writers: SendGate;
  events: OutboxEvents;
  now(): number;
  /** Sub-millisecond epoch time, compared with PM2's pm_uptime. @default createPreciseClock() */
  preciseNow?(): number;
  counters: Counters;
  /** Bytes of held packets in memory, across apps (`buffer_mb`). */
  bufferBytes: number;
  /** Where held packets go past `bufferBytes`; without one (or when it fails) they are dropped. */
  spool?: Spool;
  maxInflight: number;
  /**
   * Bound on what a writer may have unread in its pipe, in bytes as `pipeCost` counts them
   * (backlog.ts). 0: unbounded.
   */
  unreadBudget?: number;
  /** For the short waits while a writer reads its backlog. @default realTimers */
  timers?: Timers;
}

export class Outbox {
  readonly #apps = new Map<string, AppQueue>();
  readonly #targets = new Map<number, Target>();
  readonly #opts: OutboxOptions;
  readonly #writers: SendGate;
  readonly #events: OutboxEvents;
  readonly #counters: Counters;
  readonly #clock: () => number;
  readonly #budget: number;
  readonly #timers: Timers;
  /** Bytes of held packets in memory, across apps. */
  #bytes = 0;
  /** Apps with packets held in memory (the buffer's shares, see `#pastBound`). */
  #holding = 0;
  /** Set at shutdown (`stop`): nothing more is sent or taken out of the spool. */
  #stopped = false;

  constructor(opts: OutboxOptions) {
    this.#opts = opts;
    this.#writers = opts.writers;
    this.#events = opts.events;
    this.#counters = opts.counters;
    this.#clock = opts.preciseNow ?? createPreciseClock();
    this.#budget = opts.unreadBudget ?? 0;
    this.#timers = opts.timers ?? realTimers;
  }

  /** Whether the outbox has packets (held, in flight, or delivered) of this app. */
  has(appKey: string): boolean {
    return this.#apps.has(appKey);
  }

  /** The apps it has packets of. */
  appKeys(): IterableIterator<string> {
    return this.#apps.keys();
  }

  stats(appKey: string): AppStats | undefined {
    const a = this.#apps.get(appKey);
    return a && { held: this.held(appKey), inflight: a.inflight, forwarded: a.forwarded, dropped: a.dropped, heldSince: a.heldSince };
  }

  /** Nothing in flight, and nothing held that has a writer to go to (a clean shutdown may go on). */
  /**
   * Send nothing more (at shutdown, before what is held is saved): an answer that comes later must
   * not take packets out of memory or the spool after they were saved, nor send them. Measured
   * before: answers arriving between the save and the exit took a whole spool segment (its file
   * deleted) and sent part of it: 2,425 and 4,008 lines lost across a module restart.
   */
  stop(): void {
    this.#stopped = true;
    for (const t of this.#targets.values()) {
      if (t.paceTimer !== undefined) this.#timers.clearTimeout(t.paceTimer);
      t.paceTimer = undefined;
    }
  }

  idle(): boolean {
    if (this.inflight > 0) return false;
    for (const key of this.#apps.keys()) {
      if (this.held(key) > 0 && this.#writers.writerOf(key) !== undefined) return false;
    }
    return true;
  }

  /** Sends in flight, across all targets. */
  get inflight(): number {
    let n = 0;
    for (const t of this.#targets.values()) n += t.inflight;
    return n;
  }

  /** Held log packets in memory, bytes (estimated). */
  get heldBytes(): number {
    return this.#bytes;
  }

  /** An app's held log packets, in memory and spooled. */
  held(appKey: string): number {
    const a = this.#apps.get(appKey);
    return (a ? inMemory(a) : 0) + (this.#opts.spool?.countOf(appKey) ?? 0);
  }

  #app(appKey: string): AppQueue {
    let app = this.#apps.get(appKey);
    if (!app) {
      app = { key: appKey, queue: new Deque(), retry: new Deque(), inflight: 0, inflightTarget: undefined, forwarded: 0, dropped: 0, heldSince: 0, bytes: 0 };
      this.#apps.set(appKey, app);
    }
    return app;
  }

  /**
   * Queue a log packet for its app's writer and send what can be sent. false: its data cannot be
   * serialised here (nested deeper than the stack allows), so it could never be sent: not taken.
   */
  pushLog(appKey: string, packet: OutPacket): boolean {
    const bytes = sizeUp(packet); // once: for non-string data it serialises
    if (typeof packet.data !== 'string' && packet.wire === undefined) return false;
    const app = this.#app(appKey);
    const spool = this.#opts.spool;
    // Behind what is spooled (order), or past the memory bound with something already queued.
    if (spool !== undefined && spool.takes(appKey) && (spool.has(appKey) || (inMemory(app) > 0 && this.#pastBound(app, bytes)))) {
      const first = !spool.has(appKey);
      if (spool.append(appKey, packet)) {
        this.#counters.held++;
        this.#counters.spooled++;
        if (first) this.#events.spooling?.(app.key);
      } else if (spool.failure === undefined || spool.has(appKey)) {
        // Both bounds passed, or the disk failed with older packets still in the spool: the newest
        // is dropped (order is kept, and what led to the storm).
        this.#drop(app, 1, 'spool');
      } else {
        this.#hold(app, packet);
      }
    } else {
      this.#hold(app, packet);
    }
    this.#pump(app);
    return true;
  }

  /**
   * Packets held at the last shutdown, older than anything spooled or new: to the front of the
   * app's memory queue, bounds aside.
   */
  restore(appKey: string, packets: readonly OutPacket[]): void {
    const app = this.#app(appKey);
    const list = packets.map((p) => {
      const out: OutPacket = { topic: p.topic, data: p.data };
      sizeUp(out);
      return out;
    });
    this.#requeueFront(app, list);
  }

  /** Take up what the spool kept from an earlier run, for apps that still exist. */
  adoptSpool(exists: (appKey: string) => boolean, gone: (appKey: string, count: number) => void): void {
    const spool = this.#opts.spool;
    if (!spool) return;
    for (const key of spool.appKeys()) {
      const n = spool.countOf(key);
      if (!exists(key)) {
        spool.drop(key);
        this.#counters.dropped += n;
        gone(key, n);
        continue;
      }
      this.#app(key);
      this.#counters.held += n;
      this.#counters.spooled += n;
    }
  }

  /** Memory-held packets of every app, taken out (at shutdown; the spool stays on disk). */
  takeMemoryHeld(): Record<string, OutPacket[]> {
    const out: Record<string, OutPacket[]> = {};
    for (const a of this.#apps.values()) {
      const list: OutPacket[] = [];
      for (const q of [a.retry, a.queue]) {
        for (let p = q.shift(); p !== undefined; p = q.shift()) list.push({ topic: p.topic, data: p.data });
      }
      this.#counters.held -= list.length;
      if (list.length > 0) out[a.key] = list;
      a.bytes = 0;
    }
    this.#bytes = 0;
    this.#holding = 0;
    return out;
  }

  /** Into memory; past the bound with no spool to take it, the oldest of this app go. */
  #hold(app: AppQueue, packet: OutPacket): void {
    const bytes = packet.bytes ?? sizeUp(packet);
    app.queue.push(packet);
    this.#memory(app, bytes);
    this.#counters.held++;
    const spool = this.#opts.spool;
    if (this.#pastBound(app, 0) && (spool === undefined || spool.failure !== undefined || !spool.takes(app.key))) this.#overflow(app);
  }

  /**
   * Is this app past what memory holds for it, with `bytes` more? The bound (`buffer_mb`) is the
   * module's, but an app that holds less than its share of it (the bound split among the apps that
   * hold packets in memory) stays in memory past it: another app's storm must not send a steady
   * app's lines to the spool, where that storm may have left no room either, nor out of memory
   * (docs/security.md). Memory then passes the bound by those shares, never beyond twice the bound.
   */
  #pastBound(app: AppQueue, bytes: number): boolean {
    const bound = this.#opts.bufferBytes;
    const total = this.#bytes + bytes;
    if (total <= bound) return false;
    if (total > 2 * bound) return true;
    const apps = this.#holding + (app.bytes > 0 ? 0 : 1);
    return app.bytes + bytes > bound / apps;
  }

  /** Held bytes in memory change, the app's and the module's. */
  #memory(app: AppQueue, delta: number): void {
    const before = app.bytes;
    app.bytes += delta;
    this.#bytes += delta;
    if (before <= 0 && app.bytes > 0) this.#holding++;
    else if (before > 0 && app.bytes <= 0) this.#holding--;
  }

  /** Move spooled packets back into memory while there is room (and always when none is left). */
  #refill(app: AppQueue): void {
    const spool = this.#opts.spool;
    if (!spool || !spool.has(app.key)) return;
    while (spool.has(app.key) && inMemory(app) < REFILL_BELOW && (this.#bytes < this.#opts.bufferBytes / 2 || inMemory(app) === 0)) {
      const packets = spool.take(app.key);
      this.#counters.spooled -= packets.length;
      for (const p of packets) {
        app.queue.push(p);
        this.#memory(app, sizeUp(p));
      }
      // What could not be read back is gone: held no more.
      const lost = this.#counters.spooled - spool.count;
      if (lost > 0) {
        this.#counters.spooled -= lost;
        this.#counters.held -= lost;
        this.#counters.dropped += lost;
      }
    }
  }

  /**
   * Queue a relayed packet for each target (a fresh object each: PM2 writes `id` into it). What
   * waits for one target is bounded by `buffer_mb`: an app flooding its peers must not grow the
   * module without end (docs/security.md); past it the newest is dropped for that target. Returns
   * how many were dropped (counted), or -1 when the data cannot be serialised here (nothing queued).
   */
  pushRelay(targets: readonly number[], topic: string, data: unknown): number {
    let bytes = 0;
    let dropped = 0;
    for (const id of targets) {
      const t = this.#target(id);
      if (t.broken) continue;
      if (bytes === 0) {
        const sized: OutPacket = { topic, data };
        bytes = sizeUp(sized);
        if (typeof data !== 'string' && sized.wire === undefined) return -1;
      }
      if (t.relays.size > 0 && t.relayBytes + bytes > this.#opts.bufferBytes) {
        dropped++;
        continue;
      }
      t.relays.push({ topic, data, bytes });
      t.relayBytes += bytes;
      this.#pumpTarget(t);
    }
    this.#counters.dropped += dropped;
    return dropped;
  }

  /** Something changed for this app (a writer came, went, or became ready): send what can go. */
  pump(appKey: string): void {
    const a = this.#apps.get(appKey);
    if (a) this.#pump(a);
  }

  #pump(a: AppQueue): void {
    if (this.#stopped) return;
    if (inMemory(a) < REFILL_BELOW) this.#refill(a);
    if (inMemory(a) === 0) return;
    const writer = this.#writers.writerOf(a.key);
    if (writer === undefined) {
      if (a.heldSince === 0) a.heldSince = this.#opts.now();
      return;
    }
    // Old sends to a previous writer still out: wait for them, so order is kept.
    if (a.inflight > 0 && a.inflightTarget !== writer) return;
    const t = this.#target(writer);
    if (t.broken) return;
    if (a.heldSince !== 0) {
      this.#events.flushing?.(a.key, this.held(a.key), writer);
      a.heldSince = 0;
    }
    const max = this.#opts.maxInflight;
    while (!t.broken && t.inflight < max && inMemory(a) > 0) {
      if (!this.#alive(t)) return;
      const cost = this.#budget > 0 ? pipeCost((a.retry.size > 0 ? a.retry.peek() : a.queue.peek()) as OutPacket) : 0;
      if (cost > 0 && !this.#roomFor(t, cost)) return;
      const packet = (a.retry.size > 0 ? a.retry.shift() : a.queue.shift()) as OutPacket;
      this.#counters.held--;
      this.#memory(a, -(packet.bytes ?? 0));
      if (inMemory(a) < REFILL_BELOW) this.#refill(a);
      a.inflight++;
      a.inflightTarget = writer;
      this.#sendOne(t, packet, a, cost);
    }
  }

  /**
   * Is there room in the writer's pipe for this much more? If not, and it is not idle now (so it
   * has not read what it was handed), its apps wait a millisecond and try again.
   */
  #roomFor(t: Target, cost: number): boolean {
    if (t.backlog.hasRoom(cost, this.#budget)) return true;
    if (this.#writers.caughtUp(t.pmId)) {
      t.backlog.caughtUp();
      if (t.backlog.hasRoom(cost, this.#budget)) return true;
    }
    if (t.paceTimer === undefined) {
      this.#counters.paced++;
      t.paceTimer = this.#timers.setTimeout(() => {
        t.paceTimer = undefined;
        if (!t.broken) this.#pumpAppsOf(t);
      }, 1);
    }
    return false;
  }

  /**
   * Never write to a process that has exited, nor to a new process PM2 put under the same pm_id
   * (it may not listen yet): take the target out of service instead.
   */
  #alive(t: Target): boolean {
    const vacancy = this.#writers.vacancy(t.pmId);
    if (vacancy === undefined) return true;
    if (vacancy.kind === 'exited') t.died = true;
    if (!t.broken) {
      t.broken = true;
      this.#counters.dropped += t.relays.size;
      t.relays.clear();
      t.relayBytes = 0;
      this.#writers.vacated(t.pmId, vacancy);
    }
    return false;
  }

  /**
   * PM2 says this process is online (again). If it is a new generation (`startedAt`, PM2's
   * pm_uptime, is newer), the old target is detached (see `#detach`). Sends still out finish on
   * the detached old target.
   */
  revive(pmId: number, startedAt: number): void {
    const t = this.#targets.get(pmId);
    if (!t) return;
    if (!(startedAt > t.startedAt) && !t.broken) return;
    this.#detach(t, startedAt);
  }

  /**
   * Take a process out of service (exit, stop, delete, or seen launching again): nothing more is
   * sent to it. `startedAt`: the generation PM2 now reports for the pm_id (a `pm2 list` can show a
   * reloaded process still launching, before its `online` event).
   */
  retire(pmId: number, startedAt = 0): void {
    const t = this.#targets.get(pmId);
    if (!t) return;
    this.#counters.dropped += t.relays.size;
    t.relays.clear();
    t.relayBytes = 0;
    this.#detach(t, startedAt);
  }

  /**
   * Forget a target. If PM2 has put a new generation under its pm_id, sends PM2 accepted from
   * that generation's start on went into a process that did not run the app yet (a `pm2 reload`
   * or crash restart gives no event before `online`): they go back to the front of their app's
   * queue.
   */
  #detach(t: Target, startedAt: number): void {
    this.#targets.delete(t.pmId);
    t.broken = true;
    t.detached = true;
    if (!(startedAt > t.startedAt)) return;
    if (t.died) {
      // Measured: judging these sent one line twice in 2 of 10 kill -9 runs at load 15 (the
      // module read an answer late); not judging them loses at most that one send, within the
      // kill -9 bound.
      t.recent.clear();
      return;
    }
    t.replacedAt = startedAt;
    const byApp = new Map<AppQueue, OutPacket[]>();
    for (let r = t.recent.shift(); r !== undefined; r = t.recent.shift()) {
      if (!reachedNewGeneration(r.sentAt, r.answeredAt, startedAt, r.beforeAnyFork, r.swapped)) continue;
      let list = byApp.get(r.app);
      if (!list) byApp.set(r.app, (list = []));
      list.push(r.packet);
    }
    let n = 0;
    for (const [app, list] of byApp) {
      n += list.length;
      for (const p of list) this.#counters.recordsOut -= recordsOf(p);
      app.forwarded -= list.length;
      this.#requeueFront(app, list);
    }
    this.#counters.out -= n;
    if (n > 0) this.#events.replayed?.(t.pmId, n);
  }

  /** Drop an app's held packets (app deleted, or an operator asked). Returns how many. */
  dropApp(appKey: string): number {
    const a = this.#apps.get(appKey);
    if (!a) return 0;
    let n = 0;
    for (const q of [a.retry, a.queue]) {
      for (let p = q.shift(); p !== undefined; p = q.shift()) {
        this.#memory(a, -(p.bytes ?? 0));
        n++;
      }
    }
    this.#counters.held -= n;
    const spooled = this.#opts.spool?.drop(appKey) ?? 0;
    this.#counters.held -= spooled;
    this.#counters.spooled -= spooled;
    n += spooled;
    a.heldSince = 0;
    this.#counters.dropped += n;
    a.dropped += n;
    if (a.inflight === 0) this.#apps.delete(appKey);
    return n;
  }

  #target(pmId: number): Target {
    let t = this.#targets.get(pmId);
    if (!t) {
      const created: Target = {
        pmId,
        startedAt: this.#writers.generationOf(pmId),
        inflight: 0,
        sent: new Deque(),
        recent: new Deque(),
        relays: new Deque(),
        relayBytes: 0,
        backlog: new Backlog(),
        paceTimer: undefined,
        done: (err, swapped) => this.#onDone(created, err, swapped),
        broken: false,
        died: false,
        detached: false,
        replacedAt: Infinity,
      };
      t = created;
      this.#targets.set(pmId, t);
    }
    return t;
  }

  #sendOne(t: Target, packet: OutPacket, app: AppQueue | null, cost = 0): void {
    t.inflight++;
    if (cost > 0) t.backlog.sent(cost);
    t.sent.push({ packet, app, sentAt: this.#preciseNow(), cost });
    this.#opts.send(t.pmId, packet.topic, packet.data, t.done);
  }

  #pumpTarget(t: Target): void {
    if (this.#stopped) return;
    const max = this.#opts.maxInflight;
    while (!t.broken && t.inflight < max && t.relays.size > 0) {
      if (!this.#alive(t)) return;
      const p = t.relays.shift() as OutPacket;
      t.relayBytes -= p.bytes ?? 0;
      this.#sendOne(t, p, null);
    }
  }

  #onDone(t: Target, err: Error | null, swapped?: boolean): void {
    t.inflight--;
    const { packet, app, sentAt, cost } = t.sent.shift() as Sent;
    const answeredAt = this.#preciseNow();
    if (cost > 0) t.backlog.answered(cost, !err);
    // Known to have gone to the process we meant if PM2 has started no new process for the pm_id
    // by now (the swap and the fork are one step of the daemon). Asked only when it matters: an
    // answer slow enough for a swap to fit between the send and the answer.
    const beforeAnyFork = !err && app !== null && answeredAt - sentAt > SWAP_MIN_MS && this.#writers.forkedSince(t.pmId) === false;
    if (app) app.inflight--;
    if (err) {
      this.#counters.sendErrors++;
      if (!t.broken) {
        t.broken = true;
        this.#writers.refused(t.pmId, err);
      }
      if (app) {
        // Back to the front, before anything not yet sent: never lost, never reordered.
        app.retry.push(packet);
        this.#memory(app, packet.bytes ?? 0);
        this.#counters.held++;
      } else {
        this.#counters.dropped++;
      }
      if (t.inflight === 0) {
        this.#counters.dropped += t.relays.size;
        t.relays.clear();
        t.relayBytes = 0;
      }
    } else if (app) {
      if (reachedNewGeneration(sentAt, answeredAt, t.replacedAt, beforeAnyFork, swapped)) {
        // Accepted by a generation that was not listening yet: send again when it is.
        this.#requeueFront(app, [packet]);
        this.#events.replayed?.(t.pmId, 1);
      } else {
        this.#counters.out++;
        this.#counters.recordsOut += recordsOf(packet);
        app.forwarded++;
        // Kept until the target is detached: a vacated target may yet turn out replaced.
        if (!t.detached) this.#remember(t, { packet, app, sentAt, answeredAt, beforeAnyFork, swapped });
      }
    } else {
      this.#counters.relayed++;
    }
    if (app) this.#pump(app);
    if (t.broken) return;
    if (t.relays.size > 0) this.#pumpTarget(t);
    else this.#pumpWaiting(t);
  }

  /** Other apps whose writer is this target may have waited for a free slot. */
  #pumpWaiting(t: Target): void {
    if (t.inflight >= this.#opts.maxInflight || this.#apps.size <= 1) return;
    this.#pumpAppsOf(t);
  }

  #pumpAppsOf(t: Target): void {
    for (const a of this.#apps.values()) {
      if (this.held(a.key) > 0 && this.#writers.writerOf(a.key) === t.pmId) this.#pump(a);
    }
  }

  #preciseNow(): number {
    return this.#clock();
  }

  #remember(t: Target, r: Recent): void {
    t.recent.push(r);
    const oldest = r.answeredAt - RECENT_MS;
    while (t.recent.size > RECENT_MAX || (t.recent.peek() as Recent).answeredAt < oldest) t.recent.shift();
  }

  /** Put packets (in their send order) before everything else the app waits to send. */
  #requeueFront(app: AppQueue, packets: OutPacket[]): void {
    for (let i = packets.length - 1; i >= 0; i--) {
      app.retry.unshift(packets[i]);
      this.#memory(app, packets[i].bytes ?? 0);
    }
    this.#counters.held += packets.length;
  }

  /** Memory past the bound and no spool: this app's oldest go first. */
  #overflow(app: AppQueue): void {
    let n = 0;
    while (this.#bytes > this.#opts.bufferBytes && inMemory(app) > 1) {
      const p = (app.retry.size > 0 ? app.retry.shift() : app.queue.shift()) as OutPacket;
      this.#memory(app, -(p.bytes ?? 0));
      n++;
    }
    this.#counters.held -= n;
    if (n > 0) this.#drop(app, n, 'memory');
  }

  #drop(app: AppQueue, n: number, why: 'memory' | 'spool'): void {
    this.#counters.dropped += n;
    app.dropped += n;
    this.#events.overflow(app.key, n, why);
  }
}
