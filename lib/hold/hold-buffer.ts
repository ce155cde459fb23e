/**
 * Each app's log packets while they wait for its writer: in memory up to `buffer_mb` for the whole
 * module, then in the app's spool on disk (spool.ts) up to `spool_mb`, read back in order when
 * memory has room again. An app holding less than its share of either bound is taken past it
 * (shares.ts), so one app's storm is not another app's loss (docs/security.md); memory and disk
 * then stay within twice their bound. Past both a packet is dropped, counted and announced (`overflow`).
 * Order per app: packets to send again (`retry`) before anything not yet sent, and the spool holds
 * the newest, so nothing overtakes.
 */
import type { Counters } from '../shared/counters';
import { Deque } from '../shared/deque';
import { sizeUp, type OutPacket } from '../shared/packet';
import { MemoryShares } from './shares';
import type { Spool } from './spool';

/** Refill an app's memory from its spool when fewer than this many packets are left in memory. */
export const REFILL_BELOW = 512;

/** What the hold buffer tells of its own doings. */
export interface HoldEvents {
  /** Packets dropped because the buffer was full (memory, and the spool if there is one). */
  overflow(appKey: string, count: number, why: 'memory' | 'spool'): void;
  /** An app's packets started going to the spool (memory full). */
  spooling?(appKey: string): void;
}

export interface HoldOptions {
  /** Bytes of held packets in memory, across apps (`buffer_mb`). */
  bufferBytes: number;
  /** Where held packets go past `bufferBytes`; without one (or when it fails) they are dropped. */
  spool?: Spool;
  counters: Counters;
  events: HoldEvents;
}

/** One app's packets in memory. */
class AppHold {
  readonly queue = new Deque<OutPacket>();
  /** Sent, then failed or found unread: due again before anything in `queue`, in their order (`seq`). */
  readonly retry = new Deque<OutPacket>();
  /** The `seq` of the newest packet queued, and of the oldest restored one. */
  #newest = 0;
  #oldest = 0;
  /** Dropped so far (overflow, or dropped on purpose). */
  dropped = 0;
  /** Bytes of its packets in memory (its part of `buffer_mb`). */
  bytes = 0;

  get size(): number {
    return this.queue.size + this.retry.size;
  }

  /** The next packet to send, retries first. */
  peek(): OutPacket | undefined {
    return this.retry.size > 0 ? this.retry.peek() : this.queue.peek();
  }

  shift(): OutPacket | undefined {
    return this.retry.size > 0 ? this.retry.shift() : this.queue.shift();
  }

  /** A packet newer than everything held: to the end of the queue. */
  enqueue(p: OutPacket): void {
    p.seq = ++this.#newest;
    this.queue.push(p);
  }

  /** Packets older than everything held (saved at the last shutdown): before all, in their order. */
  restore(packets: readonly OutPacket[]): void {
    for (let i = packets.length - 1; i >= 0; i--) {
      packets[i].seq = --this.#oldest;
      this.retry.unshift(packets[i]);
    }
  }

  /**
   * Packets that were sent come back (in any order): into `retry` where their `seq` puts them,
   * before anything not sent yet. Whatever is in `retry` is older than `queue`.
   */
  putBack(packets: readonly OutPacket[]): void {
    const sorted = [...packets].sort(bySeq);
    const first = this.retry.peek();
    const last = this.retry.peekLast();
    if (last === undefined || bySeq(last, sorted[0]) < 0) {
      for (const p of sorted) this.retry.push(p);
    } else if (bySeq(sorted[sorted.length - 1], first as OutPacket) < 0) {
      for (let i = sorted.length - 1; i >= 0; i--) this.retry.unshift(sorted[i]);
    } else {
      const all = [...sorted];
      for (let p = this.retry.shift(); p !== undefined; p = this.retry.shift()) all.push(p);
      for (const p of all.sort(bySeq)) this.retry.push(p);
    }
  }
}

/** Order of held packets (`seq`, given when they are queued). */
function bySeq(a: OutPacket, b: OutPacket): number {
  return (a.seq ?? 0) - (b.seq ?? 0);
}

export class HoldBuffer {
  readonly #apps = new Map<string, AppHold>();
  readonly #spool: Spool | undefined;
  readonly #counters: Counters;
  readonly #events: HoldEvents;
  readonly #shares: MemoryShares;

  constructor(opts: HoldOptions) {
    this.#shares = new MemoryShares(opts.bufferBytes);
    this.#spool = opts.spool;
    this.#counters = opts.counters;
    this.#events = opts.events;
  }

  /** Held log packets in memory, bytes (estimated). */
  get bytes(): number {
    return this.#shares.bytes;
  }

  /** Whether it holds, or has held, packets of this app (until it is forgotten). */
  has(appKey: string): boolean {
    return this.#apps.has(appKey);
  }

  appKeys(): IterableIterator<string> {
    return this.#apps.keys();
  }

  /** How many apps it has records of. */
  get appCount(): number {
    return this.#apps.size;
  }

  /** An app's held packets, in memory and spooled. */
  held(appKey: string): number {
    return this.inMemory(appKey) + (this.#spool?.countOf(appKey) ?? 0);
  }

  inMemory(appKey: string): number {
    return this.#apps.get(appKey)?.size ?? 0;
  }

  droppedOf(appKey: string): number {
    return this.#apps.get(appKey)?.dropped ?? 0;
  }

  /**
   * Hold a new packet: behind what is spooled (order), or in the spool once memory is full. false:
   * its data cannot be serialised here (nested deeper than the stack allows), so it could never be
   * sent: not taken.
   */
  push(appKey: string, packet: OutPacket): boolean {
    const bytes = sizeUp(packet); // once: for non-string data it serialises
    if (typeof packet.data !== 'string' && packet.wire === undefined) return false;
    const app = this.#app(appKey);
    const spool = this.#spool;
    if (spool === undefined || !spool.takes(appKey) || !(spool.has(appKey) || (app.size > 0 && this.#shares.pastBound(app, bytes)))) {
      this.#hold(appKey, app, packet);
      return true;
    }
    const first = !spool.has(appKey);
    if (spool.append(appKey, packet)) {
      this.#counters.held++;
      this.#counters.spooled++;
      if (first) this.#events.spooling?.(appKey);
    } else if (spool.failure === undefined && this.#backFromSpool(appKey, app, () => !this.#shares.pastBound(app, 0))) {
      // The spool was full while memory had room (it is refilled only below half): its oldest came
      // back, and the new one goes behind them, to the spool or, with none left there, to memory.
      return this.push(appKey, packet);
    } else if (spool.failure === undefined || spool.has(appKey)) {
      // Both bounds passed, or the disk failed with older packets still in the spool: the newest
      // is dropped (order is kept, and what led to the storm).
      this.#drop(appKey, app, 1, 'spool');
    } else {
      this.#hold(appKey, app, packet);
    }
    return true;
  }

  /** The packet that goes next, left in place. */
  peek(appKey: string): OutPacket | undefined {
    return this.#apps.get(appKey)?.peek();
  }

  /** Take the packet that goes next (to send it), refilling memory from the spool. */
  take(appKey: string): OutPacket | undefined {
    const app = this.#apps.get(appKey);
    const packet = app?.shift();
    if (app === undefined || packet === undefined) return undefined;
    this.#counters.held--;
    this.#shares.change(app, -(packet.bytes ?? 0));
    if (app.size < REFILL_BELOW) this.refill(appKey);
    return packet;
  }

  /**
   * Sent packets come back (a send failed, or reached a process not running the app yet): before
   * everything not sent yet, in their order.
   */
  putBack(appKey: string, packets: readonly OutPacket[]): void {
    if (packets.length === 0) return;
    const app = this.#app(appKey);
    app.putBack(packets);
    for (const p of packets) this.#shares.change(app, p.bytes ?? 0);
    this.#counters.held += packets.length;
  }

  /** Move spooled packets back into memory while there is room (and always when none is left). */
  refill(appKey: string): void {
    const app = this.#apps.get(appKey);
    if (app !== undefined) this.#backFromSpool(appKey, app, () => app.size < REFILL_BELOW && (this.#shares.underHalf || app.size === 0));
  }

  /** Spooled packets of an app back into memory, oldest first, while `more` says so; false: none moved. */
  #backFromSpool(appKey: string, app: AppHold, more: () => boolean): boolean {
    return this.#spool !== undefined && backFromSpool(this.#spool, appKey, app, this.#shares, this.#counters, more);
  }

  /** Packets held at the last shutdown, older than anything spooled or new: to the front, bounds aside. */
  restore(appKey: string, packets: readonly OutPacket[]): void {
    const list = packets.map((p) => {
      const out: OutPacket = { topic: p.topic, data: p.data };
      sizeUp(out);
      return out;
    });
    const app = this.#app(appKey);
    app.restore(list);
    for (const p of list) this.#shares.change(app, p.bytes ?? 0);
    this.#counters.held += list.length;
  }

  /**
   * Packets held in memory at the last shutdown (the saved state), for the apps that still exist;
   * the others are dropped and counted (`gone`). Returns how many were restored.
   */
  restoreSaved(saved: Record<string, OutPacket[]>, exists: (appKey: string) => boolean, gone: (appKey: string, count: number) => void): number {
    let n = 0;
    for (const [key, packets] of Object.entries(saved)) {
      if (!Array.isArray(packets)) continue;
      if (!exists(key)) {
        this.#counters.dropped += packets.length;
        gone(key, packets.length);
        continue;
      }
      const good = packets.filter((p) => p && typeof p.topic === 'string' && p.data !== undefined);
      this.restore(key, good);
      n += good.length;
    }
    return n;
  }

  /** Take up what the spool kept from an earlier run; returns the apps it holds packets of. */
  adoptSpool(exists: (appKey: string) => boolean, gone: (appKey: string, count: number) => void): string[] {
    const spool = this.#spool;
    if (!spool) return [];
    const adopted: string[] = [];
    for (const key of spool.appKeys()) {
      const n = spool.countOf(key);
      if (!exists(key)) {
        spool.drop(key);
        this.#counters.dropped += n;
        gone(key, n);
        continue;
      }
      this.#app(key);
      adopted.push(key);
      this.#counters.held += n;
      this.#counters.spooled += n;
    }
    return adopted;
  }

  /** Memory-held packets of every app, taken out (at shutdown; the spool stays on disk). */
  takeMemoryHeld(): Record<string, OutPacket[]> {
    const out: Record<string, OutPacket[]> = {};
    for (const [key, a] of this.#apps) {
      const list: OutPacket[] = [];
      for (let p = a.shift(); p !== undefined; p = a.shift()) list.push({ topic: p.topic, data: p.data });
      this.#counters.held -= list.length;
      if (list.length > 0) out[key] = list;
    }
    this.#shares.reset(this.#apps.values());
    return out;
  }

  /** Drop an app's held packets, in memory and spooled (app deleted, or an operator asked). */
  drop(appKey: string): number {
    const a = this.#apps.get(appKey);
    if (!a) return 0;
    let n = 0;
    for (let p = a.shift(); p !== undefined; p = a.shift()) {
      this.#shares.change(a, -(p.bytes ?? 0));
      n++;
    }
    this.#counters.held -= n;
    const spooled = this.#spool?.drop(appKey) ?? 0;
    this.#counters.held -= spooled;
    this.#counters.spooled -= spooled;
    n += spooled;
    this.#counters.dropped += n;
    a.dropped += n;
    return n;
  }

  /** Forget an app that has nothing held (its record, with its drop count). */
  forget(appKey: string): void {
    this.#apps.delete(appKey);
  }

  #app(appKey: string): AppHold {
    let app = this.#apps.get(appKey);
    if (!app) this.#apps.set(appKey, (app = new AppHold()));
    return app;
  }

  /** Into memory; past the bound with no spool to take it, the oldest of this app go. */
  #hold(appKey: string, app: AppHold, packet: OutPacket): void {
    const bytes = packet.bytes ?? sizeUp(packet);
    app.enqueue(packet);
    this.#shares.change(app, bytes);
    this.#counters.held++;
    const spool = this.#spool;
    if (this.#shares.pastBound(app, 0) && (spool === undefined || spool.failure !== undefined || !spool.takes(appKey))) this.#overflow(appKey, app);
  }

  /** Memory past the bound and no spool: this app's oldest go first. */
  #overflow(appKey: string, app: AppHold): void {
    let n = 0;
    while (this.#shares.full && app.size > 1) {
      const p = app.shift() as OutPacket;
      this.#shares.change(app, -(p.bytes ?? 0));
      n++;
    }
    this.#counters.held -= n;
    if (n > 0) this.#drop(appKey, app, n, 'memory');
  }

  #drop(appKey: string, app: AppHold, n: number, why: 'memory' | 'spool'): void {
    this.#counters.dropped += n;
    app.dropped += n;
    this.#events.overflow(appKey, n, why);
  }
}

/** HoldBuffer#backFromSpool: what it moves is counted held, no longer spooled; what cannot be read back is dropped. */
function backFromSpool(spool: Spool, appKey: string, app: AppHold, shares: MemoryShares, counters: Counters, more: () => boolean): boolean {
  let moved = false;
  while (spool.has(appKey) && more()) {
    moved = true;
    const packets = spool.take(appKey);
    counters.spooled -= packets.length;
    for (const p of packets) {
      app.enqueue(p);
      shares.change(app, sizeUp(p));
    }
    // What could not be read back is gone: held no more.
    const lost = counters.spooled - spool.count;
    if (lost > 0) {
      counters.spooled -= lost;
      counters.held -= lost;
      counters.dropped += lost;
    }
  }
  return moved;
}
