/** Small fakes behind the module's own interfaces. */
import { EventEmitter } from 'node:events';
import type { Pm2Client, BusHandlers } from '../../lib/pm2/pm2-client';
import type { Pm2Env } from '../../lib/table/registry';
import type { Timers } from '../../lib/shared/clock';

export function env(over: Partial<Record<string, unknown>> & { pm_id: number | string; name: string }): Pm2Env {
  return {
    namespace: 'default',
    status: 'online',
    exec_mode: 'cluster_mode',
    instance_var: 'NODE_APP_INSTANCE',
    pm_uptime: 1000,
    ...over,
  };
}

/** An app's instances, numbered 0..n-1, pm_ids from `firstId`. */
export function cluster(name: string, n: number, firstId: number, over: Record<string, unknown> = {}): Pm2Env[] {
  return Array.from({ length: n }, (_, i) => env({ pm_id: firstId + i, name, NODE_APP_INSTANCE: i, ...over }));
}

export interface SentPacket {
  pmId: number;
  topic: string;
  data: unknown;
}

export class FakeClient implements Pm2Client {
  version = '7.0.4';
  source = 'bundled' as const;
  procs: Pm2Env[] = [];
  handlers?: BusHandlers;
  sent: SentPacket[] = [];
  /** Pending send callbacks, answered by `answer()` (in order, like PM2's RPC). */
  pending: { packet: SentPacket; done: (err: Error | null) => void }[] = [];
  autoAnswer = true;
  /** Decides PM2's answer to a send: null for success or an Error. */
  verdict: (p: SentPacket) => Error | null = () => null;

  async connect(): Promise<void> {}
  async list(): Promise<Pm2Env[]> {
    return this.procs.map((p) => ({ ...p }));
  }
  async subscribe(h: BusHandlers): Promise<void> {
    this.handlers = h;
  }
  async close(): Promise<void> {}
  send = (pmId: number, topic: string, data: unknown, done: (err: Error | null) => void): void => {
    const packet = { pmId, topic, data };
    if (this.autoAnswer) {
      const err = this.verdict(packet);
      if (!err) this.sent.push(packet);
      queueMicrotask(() => done(err));
    } else this.pending.push({ packet, done });
  };
  /** Answer the oldest `n` pending sends. */
  answer(n = Infinity, err: Error | null = null): void {
    while (n-- > 0 && this.pending.length > 0) {
      const { packet, done } = this.pending.shift()!;
      if (!err) this.sent.push(packet);
      done(err);
    }
  }
  msg(pm_id: number | string, name: string, raw: unknown, namespace = 'default'): void {
    this.handlers!.message({ raw, process: { pm_id, name, namespace } });
  }
  event(event: string, e: Pm2Env): void {
    this.handlers!.event({ event, process: e });
  }
}

/** Timers driven by hand. */
export class FakeTimers implements Timers {
  now = 10_000;
  #queue: { at: number; fn: () => void; id: number }[] = [];
  #next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#queue.push({ at: this.now + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#queue = this.#queue.filter((t) => t.id !== handle);
  }
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      this.#queue.sort((a, b) => a.at - b.at);
      const t = this.#queue[0];
      if (!t || t.at > until) break;
      this.#queue.shift();
      this.now = t.at;
      t.fn();
    }
    this.now = until;
  }
}

export const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * An app's `process` for the client: what it sends (copied through JSON, as IPC does, each send
 * answered a turn later) and `deliver()` for what PM2 hands it.
 */
export class FakeAppProcess extends EventEmitter {
  readonly pid = 77;
  readonly sent: { topic: string; data: any }[] = [];
  connected = true;
  constructor(readonly env: Record<string, string | undefined>) {
    super();
  }
  send = (message: unknown, ...rest: unknown[]): boolean => {
    const cb = rest.find((x) => typeof x === 'function') as ((err: Error | null) => void) | undefined;
    this.sent.push(JSON.parse(JSON.stringify(message)));
    if (cb) setImmediate(() => cb(null));
    return true;
  };
  deliver(packet: unknown): void {
    this.emit('message', JSON.parse(JSON.stringify(packet)));
  }
  /** What it sent on `topic`. */
  sentOn(topic: string): { topic: string; data: any }[] {
    return this.sent.filter((p) => p.topic === topic);
  }
}
