/**
 * The send guard: keeps PM2's daemon alive where the module cannot read `/proc` (macOS, Windows,
 * locked-down containers, or `proc_checks=off`).
 *
 * Why: PM2 writes a send into the worker's IPC channel and answers "success" at once. When the
 * channel has just closed (the worker died, PM2 has not handled its exit yet), the write fails
 * later, as an `'error'` event on the worker. PM2 listens for the first such error only
 * (`clu.once('error')` in lib/God.js, which logs it); a second one is an uncaught exception that
 * takes the daemon and every app down. With /proc the module sees a dying worker before it sends
 * (liveness.ts); without it, it cannot, so it must learn whether each send failed before it makes
 * the next.
 *
 * How: PM2 logs that first error (`console.error(err.stack)`) and its console is published on the
 * bus as a `log:PM2` event in the same step. After each accepted send the guard posts a fence
 * (`process.send` of its own, which PM2 puts on the same bus as a `process:msg`) and sends nothing
 * more until the fence comes back. The daemon handled our send, and the error it raised, before
 * the fence (the fence was posted after PM2's answer), and the bus keeps order: an error line that
 * came before the fence is this send's. Then the send counts as failed (not delivered: the packet
 * is held again), and nothing more goes to that pm_id until PM2 reports its exit (or a new
 * generation). One send at a time for the whole module: so an error is never in doubt between
 * two targets.
 *
 * The same order tells a reload's swap, which the module otherwise sees in the daemon's /proc
 * children: PM2 logs "App [name:id] starting in -cluster mode-" in the step that forks the new
 * process. Every send whose fence came back before that line went to the old process; the one in
 * flight when it comes is in doubt (the outbox judges it from PM2's pm_uptime, as with /proc); and
 * nothing more goes to that pm_id until PM2 says the new process is online.
 *
 * The cost is a round trip through the bus per send; the figures are in the README.
 */
import crypto from 'node:crypto';
import type { BusHandlers, Pm2Client } from './pm2-client';
import type { SendDone, SendFn } from './outbox';

/** The topic of the guard's own fence packets; never relayed. */
export const FENCE_TOPIC = 'pm2-scoped-intercom:fence';

/** What a failed IPC write to a worker looks like in PM2's log (Node's error stacks). */
const CHANNEL_ERROR = /ERR_IPC_CHANNEL_CLOSED|Channel closed|EPIPE|ECONNRESET|ENOTCONN|ERR_IPC_DISCONNECTED/;

/**
 * PM2 logs this in the same synchronous step as it puts a new process under a pm_id (a start,
 * a restart, or a reload's swap: lib/God/ClusterMode.js and ForkMode.js, before the fork).
 */
const STARTING = /App \[(.*):(\d+)\] starting in -(?:cluster|fork) mode-/;

/** A fence not back by then is posted again (the bus may have reconnected and lost it). */
export const FENCE_RETRY_MS = 2000;

export interface GuardTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface SendGuardOptions {
  /** Posts a packet through this process's own IPC channel (`process.send`). */
  post(packet: { topic: string; data: { nonce: string } }): void;
  timers?: GuardTimers;
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
  const timers: GuardTimers = opts.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
  const runId = opts.runId ?? crypto.randomBytes(12).toString('hex');
  const queue: Pending[] = [];
  /** pm_ids whose channel closed: sent nothing until PM2 says it handled the exit. */
  const blocked = new Set<number>();
  let current: Pending | undefined;
  /** The fence we wait for, undefined while PM2's answer is awaited (or when idle). */
  let fence: string | undefined;
  let fenceTimer: unknown;
  let errorSeen = false;
  let seq = 0;
  let caught = 0;
  let fenceRetries = 0;
  let swaps = 0;

  const postFence = (): void => {
    fence = `${runId}:${++seq}`;
    fenceTimer = timers.setTimeout(() => {
      fenceRetries++;
      postFence();
    }, FENCE_RETRY_MS);
    opts.post({ topic: FENCE_TOPIC, data: { nonce: fence } });
  };

  const finish = (err: Error | null): void => {
    const p = current as Pending;
    current = undefined;
    fence = undefined;
    p.done(err, p.swapped);
    next();
  };

  const next = (): void => {
    while (current === undefined && queue.length > 0) {
      const p = queue.shift() as Pending;
      if (blocked.has(p.pmId)) {
        // Answered later, like PM2's own answers: the caller may still be in its send loop.
        const err = new Error(`Process with ID <${p.pmId}> offline: its IPC channel closed or PM2 started a new process under it; waiting for PM2 to report it`);
        queueMicrotask(() => p.done(err));
        continue;
      }
      current = p;
      errorSeen = false;
      client.send(p.pmId, p.topic, p.data, (err, swapped) => {
        if (current !== p) return;
        if (err) return finish(err);
        p.swapped = swapped;
        postFence();
      });
    }
  };

  const onFence = (nonce: unknown): void => {
    if (current === undefined || fence === undefined || nonce !== fence) return; // an older one
    timers.clearTimeout(fenceTimer);
    if (!errorSeen) return finish(null);
    caught++;
    blocked.add(current.pmId);
    finish(new Error(`Channel closed: PM2 could not write to pm_id ${current.pmId} (its IPC channel had closed)`));
  };

  const send: SendFn = (pmId, topic, data, done) => {
    queue.push({ pmId, topic, data, done });
    next();
  };

  const isFence = (packet: unknown): unknown => {
    const raw = (packet as { raw?: { topic?: unknown; data?: { nonce?: unknown } } } | null)?.raw;
    return raw !== null && typeof raw === 'object' && raw.topic === FENCE_TOPIC ? (raw.data?.nonce ?? null) : undefined;
  };

  return {
    ...client,
    send,
    subscribe: (handlers: BusHandlers) =>
      client.subscribe({
        message(packet) {
          const nonce = isFence(packet);
          if (nonce === undefined) return handlers.message(packet);
          onFence(nonce);
        },
        event(packet) {
          const p = packet as { event?: unknown; process?: { pm_id?: unknown } } | null;
          const id = p?.process?.pm_id;
          // PM2 handled the exit (or started anew): its table no longer sends to the dead channel.
          if (typeof id === 'number' && blocked.has(id) && (p?.event === 'exit' || p?.event === 'online' || p?.event === 'delete' || p?.event === 'stop')) blocked.delete(id);
          handlers.event(packet);
        },
        pm2Log(packet) {
          const p = packet as { data?: unknown; process?: { pm_id?: unknown } } | null;
          const text = p?.data;
          // Only the daemon's own lines: an app's process.send({ type: 'log:PM2', data }) reaches the
          // bus as `log:PM2` too, naming the app as its process (lib/God/ClusterMode.js, ForkMode.js).
          if (typeof text === 'string' && p?.process?.pm_id === 'PM2') {
            if (current !== undefined && CHANNEL_ERROR.test(text)) errorSeen = true;
            const started = STARTING.exec(text);
            if (started) {
              // A new process under this pm_id from now on; it may not listen yet.
              const id = Number(started[2]);
              if (!blocked.has(id)) swaps++;
              blocked.add(id);
            }
          }
          handlers.pm2Log?.(packet);
        },
      }),
    guard: () => ({ caught, fenceRetries, blocked: [...blocked], swaps }),
  };
}
