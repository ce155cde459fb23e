/**
 * How much a writer may have unread in its IPC pipe.
 *
 * Why: a writer stopped with SIGINT writes what it has already read and nothing after its handler
 * runs (log4js drops everything once `shutdown()` begins). Node reads what waits in the pipe before
 * it runs a signal handler (libuv runs signal watchers last in a loop turn), so what sits in the
 * pipe's kernel buffer is written. What does not fit there waits in PM2's daemon, in user space,
 * and reaches the writer only after its handler has run: lost, although PM2 acknowledged it.
 * Reproduced: a writer held back 1.5 s, then restarted while the daemon was busy: 1,135 and 1,675
 * lines lost, everything past what the pipe held.
 *
 * So the module never lets a writer's unread backlog outgrow half of what the pipe's kernel buffer
 * holds: past that, it waits until the writer is seen idle in its event loop (liveness.ts), which
 * means it has read everything handed to it before. The same bound caps what a writer killed with
 * `kill -9` (or an app without a SIGINT handler) can take with it.
 */
import fs from 'node:fs';
import type { Timers } from '../shared/clock';
import type { Counters } from '../shared/counters';
import type { OutPacket } from '../shared/packet';

/** Linux's default socket send buffer (net.core.wmem_default), where it cannot be read. */
const WMEM_DEFAULT = 212992;
/**
 * What one message costs in the socket's buffer beyond its bytes: each write is its own buffer
 * with its own header. Measured on Linux 6.18: 137-byte messages take 768 bytes each, 437-byte
 * ones 1,283, 3,037-byte ones 4,346.
 */
const PER_MESSAGE = 1024;

/** Half the daemon's socket send buffer (the pipe to each worker): the unread bound, in bytes. */
export function unreadBudget(procRoot = '/proc'): number {
  let wmem = WMEM_DEFAULT;
  try {
    const v = Number(fs.readFileSync(`${procRoot}/sys/net/core/wmem_default`, 'utf8').trim());
    if (v > 0) wmem = v;
  } catch {
    /* not Linux: the default */
  }
  return Math.floor(wmem / 2);
}

/** What PM2 writes around a packet's data: `{"id":N,"topic":"...","data":` ... `}` and a newline. */
const ENVELOPE = 128;

/**
 * What a packet takes in the pipe, over-estimated: PM2 writes it as JSON, so a string `data` (a
 * log4js event is a JSON string) grows by its escapes, about one character in five. Other data
 * (a client batch) was measured as JSON when it was held (`wire`, UTF-8 bytes): that, plus the
 * envelope. Not its memory estimate (`bytes`, two bytes a character): that counted a batch 2.5
 * times over, so a writer's pipe was taken as full at 40% of the bound, and sends paused for it.
 */
export function pipeCost(packet: OutPacket): number {
  const d = packet.data;
  if (typeof d !== 'string' && packet.wire !== undefined) return wireCost(packet.wire);
  const len = typeof d === 'string' ? d.length : (packet.bytes ?? 1024);
  return Math.ceil(len * 1.25) + PER_MESSAGE;
}

/** pipeCost of non-string data that is `wire` bytes as JSON. */
export function wireCost(wire: number): number {
  return wire + ENVELOPE + PER_MESSAGE;
}

/** One writer process's unread backlog: what was handed to PM2 for it since it was last seen idle. */
export class Backlog {
  /** Cost of what it may not have read yet. */
  unread = 0;
  /** Of that, sends PM2 has not answered yet (perhaps not written yet: still counted). */
  #unanswered = 0;

  /** May a packet of this cost go now? Always when nothing is unread (a big batch goes alone). */
  hasRoom(cost: number, budget: number): boolean {
    return this.unread === 0 || this.unread + cost <= budget;
  }

  sent(cost: number): void {
    this.unread += cost;
    this.#unanswered += cost;
  }

  /** PM2 answered a send; a refused one was never written. */
  answered(cost: number, written: boolean): void {
    this.#unanswered -= cost;
    if (!written) this.unread -= cost;
  }

  /** The writer was seen idle: it has read everything PM2 had written for it. */
  caughtUp(): void {
    this.unread = this.#unanswered;
  }
}

/**
 * One writer's pacing: its unread backlog, and the short wait (a millisecond, then try again)
 * while it is at the bound and has not been seen idle since.
 */
export class Pacer {
  readonly #backlog = new Backlog();
  readonly #budget: number;
  readonly #timers: Timers;
  readonly #counters: Pick<Counters, 'paced'>;
  #timer: unknown = undefined;

  /** `budget`: the unread bound in bytes as `pipeCost` counts them (0: unbounded, no pacing). */
  constructor(budget: number, timers: Timers, counters: Pick<Counters, 'paced'>) {
    this.#budget = budget;
    this.#timers = timers;
    this.#counters = counters;
  }

  /** What a packet costs against the bound (0 when unbounded: nothing is counted). */
  costOf(packet: OutPacket): number {
    return this.#budget > 0 ? pipeCost(packet) : 0;
  }

  /**
   * May a packet of this cost go now? If not, and the writer is not idle now (`caughtUp`), `retry`
   * runs a millisecond later (once, however many ask meanwhile).
   */
  roomFor(cost: number, caughtUp: () => boolean, retry: () => void): boolean {
    if (cost === 0 || this.#backlog.hasRoom(cost, this.#budget)) return true;
    if (caughtUp()) {
      this.#backlog.caughtUp();
      if (this.#backlog.hasRoom(cost, this.#budget)) return true;
    }
    if (this.#timer === undefined) {
      this.#counters.paced++;
      this.#timer = this.#timers.setTimeout(() => {
        this.#timer = undefined;
        retry();
      }, 1);
    }
    return false;
  }

  sent(cost: number): void {
    if (cost > 0) this.#backlog.sent(cost);
  }

  answered(cost: number, written: boolean): void {
    if (cost > 0) this.#backlog.answered(cost, written);
  }

  stop(): void {
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
