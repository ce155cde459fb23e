/**
 * A process the outbox sends to, under its pm_id, for one generation (PM2's pm_uptime): its sends
 * in flight, its recent accepted sends (generation.ts), its relayed packets waiting, its pacing,
 * and one state.
 */
import type { Timers } from '../shared/clock';
import type { Counters } from '../shared/counters';
import { Deque } from '../shared/deque';
import type { OutPacket, SendDone } from '../shared/packet';
import { RecentSends } from './generation';
import { Pacer } from './pacing';

/**
 * - `open`: may be sent to.
 * - `closed`: PM2 refused a send to it, or PM2 put a new process under its pm_id: nothing more goes to it.
 * - `dead`: found dying or dead before a send (kill -9, a crash): nothing more goes to it, and what
 *   PM2 handed it is not judged against the next generation (it may have been written by it).
 * - `detached`: forgotten by the outbox; a newer target may stand for the pm_id.
 */
export type TargetState = 'open' | 'closed' | 'dead' | 'detached';

/** A send in flight: the packet, its app (null: a relayed topic), when it was written to PM2. */
export interface Sent<A> {
  readonly packet: OutPacket;
  readonly app: A | null;
  readonly sentAt: number;
  /** What it takes in the target's pipe (pacing.ts); 0 when not counted. */
  readonly cost: number;
}

/** What a target's own callbacks call, given the target (made once per target, not per send). */
export interface TargetHooks<A> {
  /** PM2 answered a send to it. */
  done(t: Target<A>, err: Error | null, swapped?: boolean): void;
  /** Is its process idle now, having read its pipe (pacing.ts)? */
  caughtUp(t: Target<A>): boolean;
  /** Its pacing wait is over: send what waited for it. */
  retry(t: Target<A>): void;
}

export class Target<A> {
  readonly pmId: number;
  /** The generation (PM2's pm_uptime) this target stands for. */
  readonly startedAt: number;
  state: TargetState = 'open';
  inflight = 0;
  /** What is in flight, in send order. */
  readonly sent = new Deque<Sent<A>>();
  readonly recent = new RecentSends<A>();
  readonly relays = new Deque<OutPacket>();
  /** Bytes of `relays`, bounded (`queueRelay`). */
  #relayBytes = 0;
  readonly pacer: Pacer;
  readonly done: SendDone;
  /** The pacer's questions (Pacer.roomFor), bound to this target once. */
  readonly caughtUp: () => boolean;
  readonly retry: () => void;
  /** Once detached by a new generation: its pm_uptime (what PM2 handled after it went to the new one). */
  replacedAt = Infinity;
  /** Detached while `dead`: a send counts as reaching the new generation on the probe's word only. */
  probeOnly = false;

  constructor(pmId: number, startedAt: number, pacing: { budget: number; timers: Timers; counters: Counters }, hooks: TargetHooks<A>) {
    this.pmId = pmId;
    this.startedAt = startedAt;
    this.pacer = new Pacer(pacing.budget, pacing.timers, pacing.counters);
    this.done = (err, swapped) => hooks.done(this, err, swapped);
    this.caughtUp = () => hooks.caughtUp(this);
    this.retry = () => hooks.retry(this);
  }

  get open(): boolean {
    return this.state === 'open';
  }

  /** Queue a relayed packet unless `bound` bytes already wait (one always may); false: not queued. */
  queueRelay(packet: OutPacket, bound: number): boolean {
    const bytes = packet.bytes ?? 0;
    if (this.relays.size > 0 && this.#relayBytes + bytes > bound) return false;
    this.relays.push(packet);
    this.#relayBytes += bytes;
    return true;
  }

  nextRelay(): OutPacket | undefined {
    const p = this.relays.shift();
    if (p !== undefined) this.#relayBytes -= p.bytes ?? 0;
    return p;
  }

  /** Drop the relayed packets still waiting; returns how many. */
  dropRelays(): number {
    const n = this.relays.size;
    this.relays.clear();
    this.#relayBytes = 0;
    return n;
  }
}

/** The targets in service, one per pm_id: a new one stands for the process PM2 has under it now. */
export class TargetTable<A> {
  readonly #targets = new Map<number, Target<A>>();
  readonly #generationOf: (pmId: number) => number;
  readonly #pacing: { budget: number; timers: Timers; counters: Counters };
  readonly #hooks: TargetHooks<A>;

  constructor(generationOf: (pmId: number) => number, pacing: { budget: number; timers: Timers; counters: Counters }, hooks: TargetHooks<A>) {
    this.#generationOf = generationOf;
    this.#pacing = pacing;
    this.#hooks = hooks;
  }

  get(pmId: number): Target<A> | undefined {
    return this.#targets.get(pmId);
  }

  /** The target for a pm_id, made for the generation PM2 has under it now if there is none. */
  of(pmId: number): Target<A> {
    let t = this.#targets.get(pmId);
    if (!t) this.#targets.set(pmId, (t = new Target<A>(pmId, this.#generationOf(pmId), this.#pacing, this.#hooks)));
    return t;
  }

  /** Take a target out of the table: it is `detached` (sends still out finish on it). */
  detach(t: Target<A>): void {
    this.#targets.delete(t.pmId);
    t.state = 'detached';
  }

  all(): IterableIterator<Target<A>> {
    return this.#targets.values();
  }

  /** Sends in flight, across all targets. */
  get inflight(): number {
    let n = 0;
    for (const t of this.#targets.values()) n += t.inflight;
    return n;
  }

  /** At shutdown: no pacing wait fires any more. */
  stop(): void {
    for (const t of this.#targets.values()) t.pacer.stop();
  }
}
