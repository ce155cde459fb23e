/**
 * Ordered delivery: each app's held log packets (the hold buffer, passed in) go to its ready writer in
 * order, with at most `max_inflight` sends in flight per target process (targets.ts); relayed
 * topics go out per target in order and are never held. Before every send it asks the writer
 * table (`SendGate`) whether the target is still the process it knows. A failed send is never
 * retried blindly: the target is taken out of service (PM2's daemon dies if a relay keeps writing
 * to a worker whose IPC channel just closed, see DESIGN), announced (`vacated`, `refused`), and a
 * log packet goes back to the front of its app's queue.
 *
 * Calls: the hold buffer, the targets, the send function, the writer table's questions. It never
 * calls up: what happens is announced through `OutboxEvents`.
 */
import { REFILL_BELOW, type HoldBuffer } from '../hold/hold-buffer';
import type { Vacancy } from '../proc/vacancy';
import { createPreciseClock, realTimers, type Timers } from '../shared/clock';
import type { Counters } from '../shared/counters';
import { sizeUp, type OutPacket, type SendFn } from '../shared/packet';
import { recordsOf } from '../shared/protocol';
import type { SendGate } from '../table/writer-table';
import { SWAP_MIN_MS } from './generation';
import { Replays } from './replays';
import { TargetTable, type Target } from './targets';

/** What the operator is told of the outbox's doings (the relay words them: operator/wording.ts). */
export interface OutboxEvents {
  /** A held backlog started going out (count packets). */
  flushing?(appKey: string, count: number, writer: number): void;
  /** Packets re-queued because they reached a process generation that was not listening yet. */
  replayed?(pmId: number, count: number): void;
  /** A target was found vacated before a send: nothing more goes to it; its app's packets wait. */
  vacated(pmId: number, v: Vacancy): void;
  /** PM2 refused a send to this process: nothing more goes to it; its app's packets wait. */
  refused(pmId: number, err: Error): void;
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
  /** Who may be sent to: the writer table, asked before every send. */
  writers: SendGate;
  events: OutboxEvents;
  now(): number;
  /** Sub-millisecond epoch time, compared with PM2's pm_uptime. @default createPreciseClock() */
  preciseNow?(): number;
  counters: Counters;
  /** Each app's log packets until they are sent (and again if a send fails). */
  hold: HoldBuffer;
  /** Bytes of relayed packets that may wait for one target (`buffer_mb`). */
  bufferBytes: number;
  maxInflight: number;
  /** Bound on what a writer may have unread in its pipe, in bytes as `pipeCost` counts them (pacing.ts). @default 0 (unbounded) */
  unreadBudget?: number;
  /** For the short waits while a writer reads its backlog. @default realTimers */
  timers?: Timers;
}

/** One app's sends: how many are out and to whom, how many were delivered, since when it waits. */
interface AppSends {
  readonly key: string;
  inflight: number;
  inflightTarget: number | undefined;
  forwarded: number;
  /** Epoch ms since which the app has had packets and no writer to take them, 0 when none. */
  heldSince: number;
}

export class Outbox {
  readonly #apps = new Map<string, AppSends>();
  readonly #targets: TargetTable<AppSends>;
  readonly #hold: HoldBuffer;
  readonly #replays: Replays<AppSends>;
  readonly #opts: OutboxOptions;
  readonly #writers: SendGate;
  readonly #events: OutboxEvents;
  readonly #counters: Counters;
  readonly #clock: () => number;
  /** Set at shutdown (`stop`): nothing more is sent or taken out of the spool. */
  #stopped = false;
  constructor(opts: OutboxOptions) {
    this.#opts = opts;
    this.#writers = opts.writers;
    this.#events = opts.events;
    this.#counters = opts.counters;
    this.#clock = opts.preciseNow ?? createPreciseClock();
    const pacing = { budget: opts.unreadBudget ?? 0, timers: opts.timers ?? realTimers, counters: opts.counters };
    this.#targets = new TargetTable<AppSends>((pmId) => this.#writers.generationOf(pmId), pacing, { done: (t, err, swapped) => this.#onDone(t, err, swapped), caughtUp: (t) => this.#writers.caughtUp(t.pmId), retry: (t) => t.open && this.#pumpAppsOf(t) });
    this.#hold = opts.hold;
    this.#replays = new Replays<AppSends>(opts.hold, opts.counters, opts.events.replayed);
  }

  /** An app's delivery, if the outbox has had log packets of it. */
  stats(appKey: string): AppStats | undefined {
    if (!this.#hold.has(appKey)) return undefined;
    const a = this.#app(appKey);
    return { held: this.#hold.held(appKey), inflight: a.inflight, forwarded: a.forwarded, dropped: this.#hold.droppedOf(appKey), heldSince: a.heldSince };
  }

  /** At shutdown: send nothing more; answers to sends still out are judged (held again or counted). */
  stop(): void {
    this.#stopped = true;
    this.#targets.stop();
  }

  get inflight(): number {
    return this.#targets.inflight;
  }

  /** Nothing in flight, and nothing held that has a writer to go to (a clean shutdown may go on). */
  idle(): boolean {
    if (this.inflight > 0) return false;
    for (const key of this.#hold.appKeys()) {
      if (this.#hold.held(key) > 0 && this.#writers.writerOf(key) !== undefined) return false;
    }
    return true;
  }

  /**
   * Queue a log packet for its app's writer and send what can be sent. false: its data cannot be
   * serialised (nested deeper than the stack allows), so it could never be sent: not taken.
   */
  pushLog(appKey: string, packet: OutPacket): boolean {
    if (!this.#hold.push(appKey, packet)) return false;
    this.#pump(this.#app(appKey));
    return true;
  }

  /**
   * Queue a relayed packet for each target (a fresh object each: PM2 writes `id` into it). What
   * waits for one target is bounded by `buffer_mb`: an app flooding its peers must not grow the
   * module without end (docs/security.md); past it the newest is dropped for that target. Returns
   * how many were dropped (counted), or -1 when the data cannot be serialised (nothing queued).
   */
  pushRelay(targets: readonly number[], topic: string, data: unknown): number {
    let bytes = 0;
    let dropped = 0;
    for (const id of targets) {
      const t = this.#targets.of(id);
      if (!t.open) continue;
      if (bytes === 0) {
        const sized: OutPacket = { topic, data };
        bytes = sizeUp(sized);
        if (typeof data !== 'string' && sized.wire === undefined) return -1;
      }
      if (!t.queueRelay({ topic, data, bytes }, this.#opts.bufferBytes)) dropped++;
      else this.#pumpRelays(t);
    }
    this.#counters.dropped += dropped;
    return dropped;
  }

  /** Something changed for this app (a writer came, went, or became ready): send what can go. */
  pump(appKey: string): void {
    if (this.#hold.has(appKey)) this.#pump(this.#app(appKey));
  }

  /**
   * PM2 says this process is online (again). If it is a new generation (`startedAt`, PM2's
   * pm_uptime, is newer), the old target is detached (see `#detach`); sends still out finish on it.
   */
  revive(pmId: number, startedAt: number): void {
    const t = this.#targets.get(pmId);
    if (!t || (!(startedAt > t.startedAt) && t.open)) return;
    this.#detach(t, startedAt);
  }

  /**
   * Take a process out of service (exit, stop, delete, or seen launching again). `startedAt`: the
   * generation PM2 now reports for the pm_id (a `pm2 list` can show a reloaded process still launching).
   */
  retire(pmId: number, startedAt = 0): void {
    const t = this.#targets.get(pmId);
    if (!t) return;
    this.#counters.dropped += t.dropRelays();
    this.#detach(t, startedAt);
  }

  /** Drop an app's held packets (app deleted, or an operator asked). Returns how many. */
  dropApp(appKey: string): number {
    if (!this.#hold.has(appKey)) return 0;
    const a = this.#app(appKey);
    const n = this.#hold.drop(appKey);
    a.heldSince = 0;
    if (a.inflight === 0) {
      this.#apps.delete(appKey);
      this.#hold.forget(appKey);
    }
    return n;
  }

  #app(appKey: string): AppSends {
    let app = this.#apps.get(appKey);
    if (!app) this.#apps.set(appKey, (app = { key: appKey, inflight: 0, inflightTarget: undefined, forwarded: 0, heldSince: 0 }));
    return app;
  }

  #pump(a: AppSends): void {
    if (this.#stopped) return;
    const hold = this.#hold;
    if (hold.inMemory(a.key) < REFILL_BELOW) hold.refill(a.key);
    if (hold.inMemory(a.key) === 0) return;
    const writer = this.#writers.writerOf(a.key);
    if (writer === undefined) {
      if (a.heldSince === 0) a.heldSince = this.#opts.now();
      return;
    }
    // Old sends to a previous writer still out: wait for them, so order is kept.
    if (a.inflight > 0 && a.inflightTarget !== writer) return;
    const t = this.#targets.of(writer);
    if (!t.open) return;
    if (a.heldSince !== 0) {
      this.#events.flushing?.(a.key, hold.held(a.key), writer);
      a.heldSince = 0;
    }
    while (t.open && t.inflight < this.#opts.maxInflight && hold.inMemory(a.key) > 0) {
      if (!this.#alive(t)) return;
      const cost = t.pacer.costOf(hold.peek(a.key) as OutPacket);
      if (!t.pacer.roomFor(cost, t.caughtUp, t.retry)) return;
      const packet = hold.take(a.key) as OutPacket;
      a.inflight++;
      a.inflightTarget = writer;
      this.#sendOne(t, packet, a, cost);
    }
  }

  #pumpRelays(t: Target<AppSends>): void {
    if (this.#stopped) return;
    while (t.open && t.inflight < this.#opts.maxInflight && t.relays.size > 0) {
      if (!this.#alive(t)) return;
      this.#sendOne(t, t.nextRelay() as OutPacket, null);
    }
  }

  /**
   * Never write to a process that has exited, nor to a new process PM2 put under the same pm_id
   * (it may not listen yet): take the target out of service instead.
   */
  #alive(t: Target<AppSends>): boolean {
    const vacancy = this.#writers.vacancy(t.pmId);
    if (vacancy === undefined) return true;
    t.state = vacancy.kind === 'exited' ? 'dead' : 'closed';
    this.#counters.dropped += t.dropRelays();
    this.#events.vacated(t.pmId, vacancy);
    return false;
  }

  /**
   * Forget a target. If PM2 has put a new generation under its pm_id, sends PM2 accepted from
   * that generation's start on went into a process that did not run the app yet (a `pm2 reload`
   * or crash restart gives no event before `online`): they go back to the front of their app's queue.
   */
  #detach(t: Target<AppSends>, startedAt: number): void {
    const dead = t.state === 'dead';
    this.#targets.detach(t);
    if (startedAt > t.startedAt) this.#replays.replaced(t, startedAt, dead);
  }

  /** At shutdown: what reached a process whose `online` this run will not see is kept (Replays.unjudged). */
  keepUnjudged(generationNow?: (pmId: number) => number | undefined): void {
    for (const t of this.#targets.all()) this.#replays.unjudged(t, generationNow?.(t.pmId), () => this.#writers.forkedSince(t.pmId) === true);
  }

  #sendOne(t: Target<AppSends>, packet: OutPacket, app: AppSends | null, cost = 0): void {
    t.inflight++;
    t.pacer.sent(cost);
    t.sent.push({ packet, app, sentAt: this.#clock(), cost });
    this.#opts.send(t.pmId, packet.topic, packet.data, t.done);
  }

  #onDone(t: Target<AppSends>, err: Error | null, swapped?: boolean): void {
    t.inflight--;
    const { packet, app, sentAt, cost } = t.sent.shift()!;
    const answeredAt = this.#clock();
    t.pacer.answered(cost, !err);
    if (app) app.inflight--;
    if (err) this.#failed(t, err, packet, app);
    else if (app) this.#accepted(t, packet, app, sentAt, answeredAt, swapped);
    else this.#counters.relayed++;
    if (app) this.#pump(app);
    if (!t.open) return;
    if (t.relays.size > 0) this.#pumpRelays(t);
    else if (t.inflight < this.#opts.maxInflight && this.#hold.appCount > 1) this.#pumpAppsOf(t);
  }

  /** Back to the front, before anything not yet sent: never lost, never reordered. */
  #failed(t: Target<AppSends>, err: Error, packet: OutPacket, app: AppSends | null): void {
    this.#counters.sendErrors++;
    if (app) this.#hold.putBack(app.key, [packet]);
    else this.#counters.dropped++;
    if (t.inflight === 0) this.#counters.dropped += t.dropRelays();
    if (t.open) {
      // Announced last: what it sets off (a new election, a pump) finds the packet back in place.
      t.state = 'closed';
      this.#events.refused(t.pmId, err);
    }
  }

  #accepted(t: Target<AppSends>, packet: OutPacket, app: AppSends, sentAt: number, answeredAt: number, swapped: boolean | undefined): void {
    // Known to have gone to the process we meant if PM2 has started no new process for the pm_id by now (swap
    // and fork: one step of the daemon). A /proc read: asked only for a slow answer the probe said nothing of.
    const beforeAnyFork = swapped === undefined && answeredAt - sentAt > SWAP_MIN_MS && this.#writers.forkedSince(t.pmId) === false;
    const r = { packet, app, sentAt, answeredAt, beforeAnyFork, swapped };
    if (this.#replays.answered(t, r)) return;
    this.#counters.out++;
    this.#counters.recordsOut += recordsOf(packet);
    app.forwarded++;
    // Kept until the target is detached: a vacated target may yet turn out replaced.
    if (t.state !== 'detached') t.recent.remember(r);
  }

  /** Apps whose writer is this target may have waited for a free slot or for room in its pipe. */
  #pumpAppsOf(t: Target<AppSends>): void {
    for (const key of this.#hold.appKeys()) {
      if (this.#hold.held(key) > 0 && this.#writers.writerOf(key) === t.pmId) this.#pump(this.#app(key));
    }
  }
}
