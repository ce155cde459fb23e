/**
 * The send guard: keeps PM2's daemon alive where the module cannot read `/proc` (macOS, Windows,
 * locked-down containers, or `proc_checks=off`). PM2 survives one failed write into a worker's
 * closed IPC channel and dies of the second; without /proc a dying worker cannot be seen before a
 * send, so each send waits until PM2's bus has shown whether it failed (a fence, below) before the
 * next one goes. The mechanism and its cost: docs/architecture-notes.md and the README.
 */
import crypto from 'node:crypto';
import type { BusHandlers, Pm2Client } from '../pm2/pm2-client';
import type { SendDone } from '../shared/packet';
import { realTimers, type Timers } from '../shared/clock';
import { FENCE_TOPIC } from '../shared/protocol';

/** What a failed IPC write to a worker looks like in PM2's log (Node's error stacks). */
const CHANNEL_ERROR = /ERR_IPC_CHANNEL_CLOSED|Channel closed|EPIPE|ECONNRESET|ENOTCONN|ERR_IPC_DISCONNECTED/;

/**
 * PM2 logs this in the same synchronous step as it puts a new process under a pm_id (a start,
 * a restart, or a reload's swap: lib/God/ClusterMode.js and ForkMode.js, before the fork).
 */
const STARTING = /App \[(.*):(\d+)\] starting in -(?:cluster|fork) mode-/;

/** A fence not back by then is posted again (the bus may have reconnected and lost it). */
export const FENCE_RETRY_MS = 2000;

export interface SendGuardOptions {
  /** Posts a packet through this process's own IPC channel (`process.send`). */
  post(packet: { topic: string; data: { nonce: string } }): void;
  timers?: Timers;
  /**
   * Distinguishes this run's fences from an earlier run's, and from fences an app forges (any app
   * can put a packet with the fence topic on the bus): random, not derived from the pid or time.
   */
  runId?: string;
}

interface Pending {
  pmId: number;
  topic: string;
  data: unknown;
  done: SendDone;
  /** The probe's word on the send (SendDone), passed on. */
  swapped?: boolean;
}

export interface SendGuardStats {
  /** Sends that PM2 accepted and whose channel turned out closed. */
  caught: number;
  /** Fences posted again after FENCE_RETRY_MS. */
  fenceRetries: number;
  /** pm_ids sent nothing until PM2 reports their exit (or the new process online). */
  blocked: number[];
  /** New processes PM2 started under a pm_id that was being sent to. */
  swaps: number;
}

/**
 * A `Pm2Client` whose sends go one at a time, each confirmed by a fence on the bus, and whose
 * subscription keeps the guard informed (fences, PM2's error lines, exits).
 */
export function guardSends(client: Pm2Client, opts: SendGuardOptions): Pm2Client & { guard: () => SendGuardStats } {
  const guard = new SendGuard(client, opts);
  return {
    ...client,
    send: (pmId, topic, data, done) => guard.send(pmId, topic, data, done),
    subscribe: (handlers: BusHandlers) => client.subscribe(guard.watch(handlers)),
    guard: () => guard.stats(),
  };
}

/** The nonce of a fence echoed on the bus (null when it has none), undefined for any other packet. */
function fenceNonce(packet: unknown): unknown {
  const raw = (packet as { raw?: { topic?: unknown; data?: { nonce?: unknown } } } | null)?.raw;
  return raw !== null && typeof raw === 'object' && raw.topic === FENCE_TOPIC ? (raw.data?.nonce ?? null) : undefined;
}

/** Events by which PM2 says it handled an exit (or started anew): its table no longer holds the dead channel. */
const UNBLOCKING_EVENTS = new Set<unknown>(['exit', 'online', 'delete', 'stop']);

/** One send in flight for the whole module: so an error line is never in doubt between two targets. */
class SendGuard {
  readonly #client: Pm2Client;
  readonly #post: SendGuardOptions['post'];
  readonly #timers: Timers;
  /** Distinguishes this run's fences from an earlier run's. */
  readonly #runId: string;
  readonly #queue: Pending[] = [];
  /** pm_ids whose channel closed (or got a new process): sent nothing until PM2 reports it. */
  readonly #blocked = new Set<number>();
  #current: Pending | undefined;
  /** The fence we wait for, undefined while PM2's answer is awaited (or when idle). */
  #fence: string | undefined;
  #fenceTimer: unknown;
  #errorSeen = false;
  #seq = 0;
  #caught = 0;
  #fenceRetries = 0;
  #swaps = 0;

  constructor(client: Pm2Client, opts: SendGuardOptions) {
    this.#client = client;
    this.#post = opts.post;
    this.#timers = opts.timers ?? realTimers;
    this.#runId = opts.runId ?? crypto.randomBytes(12).toString('hex');
  }

  send(pmId: number, topic: string, data: unknown, done: SendDone): void {
    this.#queue.push({ pmId, topic, data, done });
    this.#next();
  }

  /** The handlers to subscribe with: fences are taken out, PM2's lines and events watched, the rest passed on. */
  watch(handlers: BusHandlers): BusHandlers {
    return {
      message: (packet) => {
        const nonce = fenceNonce(packet);
        if (nonce === undefined) return handlers.message(packet);
        this.#onFence(nonce);
      },
      event: (packet) => {
        this.#onEvent(packet);
        handlers.event(packet);
      },
      pm2Log: (packet) => {
        const p = packet as { data?: unknown; process?: { pm_id?: unknown } } | null;
        // Only the daemon's own lines: an app's process.send({ type: 'log:PM2', data }) reaches the
        // bus as `log:PM2` too, naming the app as its process (lib/God/ClusterMode.js, ForkMode.js).
        if (typeof p?.data === 'string' && p.process?.pm_id === 'PM2') this.#onPm2Line(p.data);
        handlers.pm2Log?.(packet);
      },
    };
  }

  stats(): SendGuardStats {
    return { caught: this.#caught, fenceRetries: this.#fenceRetries, blocked: [...this.#blocked], swaps: this.#swaps };
  }

  #next(): void {
    while (this.#current === undefined && this.#queue.length > 0) {
      const p = this.#queue.shift() as Pending;
      if (this.#blocked.has(p.pmId)) {
        // Answered later, like PM2's own answers: the caller may still be in its send loop.
        const err = new Error(`Process with ID <${p.pmId}> offline: its IPC channel closed or PM2 started a new process under it; waiting for PM2 to report it`);
        queueMicrotask(() => p.done(err));
        continue;
      }
      this.#current = p;
      this.#errorSeen = false;
      this.#client.send(p.pmId, p.topic, p.data, (err, swapped) => {
        if (this.#current !== p) return;
        if (err) return this.#finish(err);
        p.swapped = swapped;
        this.#postFence();
      });
    }
  }

  /** Posted after PM2's answer: PM2 handled our send, and logged its error if any, before the fence comes back. */
  #postFence(): void {
    this.#fence = `${this.#runId}:${++this.#seq}`;
    this.#fenceTimer = this.#timers.setTimeout(() => {
      this.#fenceRetries++;
      this.#postFence();
    }, FENCE_RETRY_MS);
    this.#post({ topic: FENCE_TOPIC, data: { nonce: this.#fence } });
  }

  /** The bus keeps order: a channel error seen before the fence is this send's. */
  #onFence(nonce: unknown): void {
    const p = this.#current;
    if (p === undefined || this.#fence === undefined || nonce !== this.#fence) return; // an older one
    this.#timers.clearTimeout(this.#fenceTimer);
    if (!this.#errorSeen) return this.#finish(null);
    this.#caught++;
    this.#blocked.add(p.pmId);
    this.#finish(new Error(`Channel closed: PM2 could not write to pm_id ${p.pmId} (its IPC channel had closed)`));
  }

  #finish(err: Error | null): void {
    const p = this.#current as Pending;
    this.#current = undefined;
    this.#fence = undefined;
    p.done(err, p.swapped);
    this.#next();
  }

  #onEvent(packet: unknown): void {
    const p = packet as { event?: unknown; process?: { pm_id?: unknown } } | null;
    const id = p?.process?.pm_id;
    if (typeof id === 'number' && this.#blocked.has(id) && UNBLOCKING_EVENTS.has(p?.event)) this.#blocked.delete(id);
  }

  /**
   * A line of PM2's own console: a failed write (for the send in flight), or a new process under a
   * pm_id (which may not listen yet: the send in flight is in doubt, nothing more until it is online).
   */
  #onPm2Line(text: string): void {
    if (this.#current !== undefined && CHANNEL_ERROR.test(text)) this.#errorSeen = true;
    const started = STARTING.exec(text);
    if (!started) return;
    const id = Number(started[2]);
    if (!this.#blocked.has(id)) this.#swaps++;
    this.#blocked.add(id);
  }
}
