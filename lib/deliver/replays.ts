/**
 * Sends PM2 accepted that reached a process not running the app yet (a new generation a reload or a
 * crash restart put under the pm_id: generation.ts judges which) go back into the hold buffer and
 * count as not delivered, to be sent again once that generation's writer is ready.
 */
import type { HoldBuffer } from '../hold/hold-buffer';
import type { Counters } from '../shared/counters';
import type { OutPacket } from '../shared/packet';
import { recordsOf } from '../shared/protocol';
import { reachedNewGeneration, type Recent } from './generation';
import type { Target } from './targets';

/** What the outbox counts per app as delivered. */
export interface Forwarded {
  readonly key: string;
  forwarded: number;
}

export class Replays<A extends Forwarded> {
  readonly #hold: HoldBuffer;
  readonly #counters: Counters;
  readonly #replayed: ((pmId: number, count: number) => void) | undefined;

  constructor(hold: HoldBuffer, counters: Counters, replayed?: (pmId: number, count: number) => void) {
    this.#hold = hold;
    this.#counters = counters;
    this.#replayed = replayed;
  }

  /**
   * A target was detached by a new generation started at `startedAt`: what it was handed from then
   * on went to that generation. A dead target (kill -9, a crash) is judged by the probe's word only:
   * judged by timing, a line was sent twice when an answer was read late; not judged, at most that
   * one send is lost, within the kill -9 bound (docs/how-it-works.md).
   */
  replaced(t: Target<A>, startedAt: number, dead: boolean): void {
    t.replacedAt = startedAt;
    t.probeOnly = dead;
    this.#requeue(t.pmId, t.recent.reachedBy(startedAt, dead));
  }

  /**
   * An accepted send's answer: did it reach the generation that replaced its target? Then it goes
   * back after what was sent before it and came back the same way (answers arrive in send order),
   * and true is returned; else the caller counts it delivered.
   */
  answered(t: Target<A>, r: Recent<A>): boolean {
    if (!reachedNewGeneration(r.sentAt, r.answeredAt, t.replacedAt, r.beforeAnyFork, r.swapped)) return false;
    if (t.probeOnly && r.swapped !== true) return false;
    this.#hold.putBack(r.app.key, [r.packet]);
    this.#replayed?.(t.pmId, 1);
    return true;
  }

  /**
   * At shutdown: what reached a new process under the target's pm_id, whose `online` this run will
   * not see, goes back into the hold buffer, to be saved with it. `generationNow`: the pm_uptime
   * `pm2 list` shows under the pm_id now; a newer one than the target's judges its sends as that
   * `online` would have (`replaced`): a send the probe says swapped may have reached the target
   * itself, while an earlier reload's old worker was still parked. Without a list, the probe's word
   * is taken where the daemon's children show a process forked since the target's (`forked`).
   */
  unjudged(t: Target<A>, generationNow: number | undefined, forked: () => boolean): void {
    if (generationNow !== undefined) {
      if (generationNow > t.startedAt) this.replaced(t, generationNow, t.state === 'dead');
    } else if (forked()) this.#requeue(t.pmId, t.recent.takeSwapped());
  }

  #requeue(pmId: number, byApp: Map<A, OutPacket[]>): void {
    let n = 0;
    for (const [app, list] of byApp) {
      n += list.length;
      for (const p of list) this.#counters.recordsOut -= recordsOf(p);
      app.forwarded -= list.length;
      this.#hold.putBack(app.key, list);
    }
    this.#counters.out -= n;
    if (n > 0) this.#replayed?.(pmId, n);
  }
}
