/**
 * Did a send reach the process we meant, or a new one PM2 had just put under the same pm_id (a
 * `pm2 reload`, a crash restart)? A new process does not run the app yet, so what it got is not
 * written: the send must go again, once, when the new writer is ready. Pure, apart from the short
 * memory of recent sends that a late judgement needs (`RecentSends`).
 */
import { Deque } from '../shared/deque';
import type { OutPacket } from '../shared/packet';

/**
 * A lower bound of how long PM2's daemon takes to put a new process under a pm_id once it has
 * stamped its pm_uptime: the fork runs in the same synchronous step as the swap (docs/performance.md).
 */
export const SWAP_MIN_MS = 1;

/**
 * How long, and how many, accepted sends are kept for a judgement after a silent replacement:
 * enough to cover a new generation's `online` event reaching us (up to ~0.5 s seen under load),
 * few enough not to pin delivered packets in memory during a burst.
 */
const RECENT_MS = 2000;
const RECENT_MAX = 20000;

/**
 * Did PM2 hand a send to the new generation (stamped `replacedAt`, PM2's pm_uptime, whole ms)
 * rather than to the process it replaced? PM2 swaps the process in one synchronous step that starts
 * before the stamp and ends after the fork, so:
 *   - answered before the step could have ended: the old process;
 *   - written after the stamp: the new one;
 *   - otherwise the probe's word (`swapped`) decides when there is one (a `pm2 restart` never
 *     swaps), else timing: the old process only if PM2 had forked nothing new when we read the answer.
 */
export function reachedNewGeneration(sentAt: number, answeredAt: number, replacedAt: number, beforeAnyFork = false, swapped?: boolean): boolean {
  if (answeredAt < replacedAt + SWAP_MIN_MS) return false;
  if (sentAt >= replacedAt + 1) return true;
  if (swapped !== undefined) return swapped;
  return !beforeAnyFork;
}

/**
 * A log packet PM2 accepted lately: when we wrote it and read PM2's answer (sub-ms epoch times),
 * whether PM2 had forked nothing new for the pm_id when the answer was read, and the probe's word.
 */
export interface Recent<A> {
  readonly packet: OutPacket;
  readonly app: A;
  readonly sentAt: number;
  readonly answeredAt: number;
  readonly beforeAnyFork: boolean;
  readonly swapped: boolean | undefined;
}

/** One target's recent accepted sends, oldest first, pruned by age and count. */
export class RecentSends<A> {
  readonly #recent = new Deque<Recent<A>>();

  remember(r: Recent<A>): void {
    this.#recent.push(r);
    const oldest = r.answeredAt - RECENT_MS;
    while (this.#recent.size > RECENT_MAX || (this.#recent.peek() as Recent<A>).answeredAt < oldest) this.#recent.shift();
  }

  clear(): void {
    this.#recent.clear();
  }

  /**
   * A new generation started at `startedAt`: take out every remembered send it received, per app
   * in send order (the rest are forgotten: they reached the process we meant). `probeOnly`: only
   * those the probe says went to a worker a reload had forked.
   */
  reachedBy(startedAt: number, probeOnly = false): Map<A, OutPacket[]> {
    return this.#take((r) => (!probeOnly || r.swapped === true) && reachedNewGeneration(r.sentAt, r.answeredAt, startedAt, r.beforeAnyFork, r.swapped));
  }

  /** Take out the sends the probe says went to a worker a reload had forked, per app in send order. */
  takeSwapped(): Map<A, OutPacket[]> {
    const keep: Recent<A>[] = [];
    const byApp = this.#take((r) => {
      if (r.swapped !== true) keep.push(r);
      return r.swapped === true;
    });
    for (const r of keep) this.#recent.push(r);
    return byApp;
  }

  /** Empties the memory; returns, per app in send order, the packets of the sends `reached` picks. */
  #take(reached: (r: Recent<A>) => boolean): Map<A, OutPacket[]> {
    const byApp = new Map<A, OutPacket[]>();
    for (let r = this.#recent.shift(); r !== undefined; r = this.#recent.shift()) {
      if (!reached(r)) continue;
      let list = byApp.get(r.app);
      if (!list) byApp.set(r.app, (list = []));
      list.push(r.packet);
    }
    return byApp;
  }
}
