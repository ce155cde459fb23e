/**
 * `pm2-scoped-intercom/client`: the app side of the module, for any logger.
 *
 * In PM2 cluster mode one process of each app is its *writer* (the one whose instance number,
 * `process.env[instance_var]`, equals `writerInstance`, default 0). A channel opened here writes
 * records itself on the writer and sends them to the writer everywhere else:
 *
 *   sender  process.send({ topic: 'pm2-scoped-intercom:log', data: { ch, r } })
 *             -> the pm2-scoped-intercom module -> the writer of the sender's own app
 *   writer  process.on('message') -> the channel's `write(record)`
 *
 * Outside PM2, in fork mode, or when the instance number cannot be told, every process writes
 * its own records (`role: 'local'`, or `'writer'` when it cannot tell): nothing is ever sent to a
 * writer that may not exist. The writer announces that it listens
 * (`{ topic: 'pm2-scoped-intercom:ready' }`) once its first channel is open, so the module never
 * delivers to a (re)started writer before it can take records.
 *
 * This file needs neither winston nor pino; `pm2-scoped-intercom/winston` and
 * `pm2-scoped-intercom/pino` are built on it.
 */

import fs from 'node:fs';
import path from 'node:path';

/** The topic the module routes to the writer of the sender's app (lib/router.ts CLIENT_LOG_TOPIC). */
export const LOG_TOPIC = 'pm2-scoped-intercom:log';
/** The writer's "I listen" announcement (lib/router.ts CLIENT_READY_TOPIC). */
export const READY_TOPIC = 'pm2-scoped-intercom:ready';
/** PM2's default name for the instance number variable. */
export const DEFAULT_INSTANCE_VAR = 'NODE_APP_INSTANCE';
/** Channel used when none is named. */
export const DEFAULT_CHANNEL = 'default';

/**
 * What this process does with records:
 * - `writer`: it is its app's writer in PM2 cluster mode: writes its own records and those the
 *   module delivers;
 * - `sender`: another instance of a cluster app: sends its records to the writer;
 * - `local`: outside PM2 or in fork mode: writes its own records, receives none.
 */
export type Role = 'writer' | 'sender' | 'local';

/** The parts of `process` the client uses (tests pass a fake). */
export interface ProcessLike {
  readonly pid: number;
  readonly env: Record<string, string | undefined>;
  send?: (message: unknown, ...rest: unknown[]) => boolean;
  connected?: boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  removeListener(event: 'message', listener: (message: unknown) => void): unknown;
}

export interface ClientOptions {
  /**
   * The environment variable holding this process's instance number: the app's PM2
   * `instance_var`. Defaults to `process.env.instance_var` (which PM2 sets from the app's
   * settings), else `NODE_APP_INSTANCE`. **Set it when the app uses a custom `instance_var`**:
   * after `pm2 restart`/`pm2 reload` PM2 7 resets `process.env.instance_var` to
   * `NODE_APP_INSTANCE` while the number stays under the original name.
   */
  instanceVar?: string;
  /** The instance number of the writer: the module's `writer_instance` setting. @default 0 */
  writerInstance?: number;
  /** Called with a one-line explanation when something is off. @default a line on stderr */
  onWarning?: (message: string) => void;
  /**
   * In cluster mode, look for the module in `$PM2_HOME/modules/pm2-scoped-intercom` and write
   * locally when it is not installed (sent records would reach nobody). @default true
   */
  checkModule?: boolean;
  /** For tests: the process to use instead of the global `process`. */
  process?: ProcessLike;
}

/** The module's name, as `pm2 install` names its folder under `$PM2_HOME/modules`. */
export const MODULE_NAME = 'pm2-scoped-intercom';

export interface Placement {
  role: Role;
  /** The process runs as a worker of a PM2 cluster app. */
  clustered: boolean;
  /** The variable read for the instance number. */
  instanceVar: string;
  /** Its value, if it is a number. */
  instance: number | undefined;
  writerInstance: number;
  /** Why this role, in words. */
  reason: string;
}

function toNumber(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

function proc(opts?: ClientOptions): ProcessLike {
  return opts?.process ?? (process as unknown as ProcessLike);
}

function moduleInstalled(pm2Home: string): boolean {
  try {
    return fs.existsSync(path.join(pm2Home, 'modules', MODULE_NAME));
  } catch {
    return true;
  }
}

/** Where this process stands: writer, sender or local. Reads the env (and checks the module is installed). */
export function detect(opts: ClientOptions = {}): Placement {
  const p = proc(opts);
  const env = p.env;
  const writerInstance = opts.writerInstance ?? 0;
  const instanceVar = opts.instanceVar || env.PM2_PROCESS_INSTANCE_VAR || env.instance_var || DEFAULT_INSTANCE_VAR;
  const instance = toNumber(env[instanceVar]);
  const base = { instanceVar, instance, writerInstance };
  if (typeof p.send !== 'function') {
    return { ...base, role: 'local', clustered: false, reason: 'not started by PM2 (no IPC channel): writing locally' };
  }
  if (env.exec_mode !== 'cluster_mode') {
    return {
      ...base,
      role: 'local',
      clustered: false,
      reason: env.exec_mode ? `PM2 ${env.exec_mode}: every process writes its own records` : 'not started by PM2: writing locally',
    };
  }
  if (opts.checkModule !== false && env.PM2_HOME && !moduleInstalled(env.PM2_HOME)) {
    return {
      ...base,
      role: 'local',
      clustered: true,
      reason:
        `the ${MODULE_NAME} module is not installed in this PM2 (no ${path.join(env.PM2_HOME, 'modules', MODULE_NAME)}): ` +
        `every instance writes its own records. Run \`pm2 install ${MODULE_NAME}\`, then \`pm2 reload\` the app.`,
    };
  }
  if (instance === undefined) {
    return {
      ...base,
      role: 'writer',
      clustered: true,
      reason:
        `cannot tell this process's instance number: ${instanceVar} is ${env[instanceVar] === undefined ? 'not set' : `"${env[instanceVar]}"`}. ` +
        `It writes its own records (and takes any delivered to it) so none is lost, but the app may now have several writers. ` +
        `If the app sets instance_var in PM2, pass the same name as the instanceVar option (PM2 resets process.env.instance_var to NODE_APP_INSTANCE after a restart).`,
    };
  }
  if (instance === writerInstance) {
    return { ...base, role: 'writer', clustered: true, reason: `${instanceVar}=${instance}: this process is its app's writer` };
  }
  return { ...base, role: 'sender', clustered: true, reason: `${instanceVar}=${instance}: sending records to the writer (${instanceVar}=${writerInstance})` };
}

/** True when this process writes records itself (its app's writer, or outside PM2 cluster mode). */
export function isWriter(opts?: ClientOptions): boolean {
  return detect(opts).role !== 'sender';
}

/** A receiver of records on the writer (and of this process's own records where it writes). */
export type WriteFn<T> = (record: T) => void;

export interface ChannelOptions extends ClientOptions {
  /**
   * The channel's name: records reach only the writer's channel of the same name, so one app can
   * feed several destinations (e.g. `access` and `app` logs). @default 'default'
   */
  channel?: string;
  /**
   * Announce readiness when this channel opens on the writer. Set `false` when the writer opens
   * more channels after this one, and call `announceReady()` once all are open (records for a
   * channel that is not open yet are kept, up to `maxPending`, meanwhile). @default true
   */
  announceReady?: boolean;
  /** Records kept on the writer for channels not open yet, before the oldest are dropped. @default 10000 */
  maxPending?: number;
}

export interface ChannelStats {
  /** Records handed to the module (sender). */
  sent: number;
  /** Records taken from the module (writer). */
  received: number;
  /** Records given to `write` (own and received). */
  written: number;
  /** Sends that failed (the record was written locally instead). */
  sendErrors: number;
}

export interface DrainOptions {
  /** The writer waits until no record has come for this long (counted from the call at the earliest). @default 300 */
  quietMs?: number;
  /** ...but no longer than this. @default 1200 (under PM2's default kill_timeout of 1600 ms) */
  timeoutMs?: number;
}

export interface Channel<T = unknown> {
  readonly name: string;
  readonly role: Role;
  /** True when this process writes records itself (role writer or local). */
  readonly isWriter: boolean;
  readonly placement: Placement;
  readonly stats: Readonly<ChannelStats>;
  /**
   * Log one record: written here on the writer (and outside cluster mode), sent to the writer
   * otherwise. It must survive JSON (PM2 carries messages as JSON); what does not (functions,
   * symbols, cycles, BigInt, Error fields) is converted or left out. `undefined` is sent as null.
   */
  send(record: T): void;
  /** Resolves when every record sent so far has been handed to PM2 (sender), at once elsewhere. */
  flush(): Promise<void>;
  /**
   * Before exiting: a sender flushes; a writer also waits until records stop coming (PM2 stops
   * delivering to a process it is stopping, but what it queued just before still arrives).
   */
  drain(opts?: DrainOptions): Promise<void>;
  /** Stop receiving on this channel (records sent after this are written locally). */
  close(): void;
}

interface Envelope {
  ch: string;
  r: unknown;
}

/** Per-process state shared by every channel: one 'message' listener, one ready announcement. */
interface Hub {
  readonly p: ProcessLike;
  readonly handlers: Map<string, (record: unknown) => void>;
  /** Records for channels not open yet, in arrival order. */
  readonly pending: Envelope[];
  maxPending: number;
  droppedPending: number;
  listener: ((message: unknown) => void) | undefined;
  ready: boolean;
  lastReceived: number;
  warned: Set<string>;
  warn: (message: string) => void;
}

const hubs = new WeakMap<ProcessLike, Hub>();

function defaultWarn(message: string): void {
  try {
    process.stderr.write(`[pm2-scoped-intercom/client] ${message}\n`);
  } catch {
    /* nowhere to say it */
  }
}

function hubOf(opts: ClientOptions): Hub {
  const p = proc(opts);
  let h = hubs.get(p);
  if (!h) {
    h = {
      p,
      handlers: new Map(),
      pending: [],
      maxPending: 10000,
      droppedPending: 0,
      listener: undefined,
      ready: false,
      lastReceived: 0,
      warned: new Set(),
      warn: opts.onWarning ?? defaultWarn,
    };
    hubs.set(p, h);
  } else if (opts.onWarning) {
    h.warn = opts.onWarning;
  }
  return h;
}

function warnOnce(h: Hub, key: string, message: string): void {
  if (h.warned.has(key)) return;
  h.warned.add(key);
  h.warn(message);
}

function isEnvelope(data: unknown): data is Envelope {
  return data !== null && typeof data === 'object' && typeof (data as Envelope).ch === 'string';
}

function listen(h: Hub): void {
  if (h.listener) return;
  h.listener = (message: unknown) => {
    if (message === null || typeof message !== 'object') return;
    const { topic, data } = message as { topic?: unknown; data?: unknown };
    if (topic !== LOG_TOPIC || !isEnvelope(data)) return;
    h.lastReceived = Date.now();
    const handler = h.handlers.get(data.ch);
    if (handler) {
      handler(data.r);
      return;
    }
    h.pending.push(data);
    if (h.pending.length > h.maxPending) {
      h.pending.shift();
      h.droppedPending++;
      warnOnce(h, 'pending-full', `more than ${h.maxPending} records arrived for channels this writer has not opened (${[...new Set(h.pending.map((e) => e.ch))].join(', ')}); dropping the oldest. Open every channel the app's senders use.`);
    }
  };
  h.p.on('message', h.listener);
}

function unlisten(h: Hub): void {
  if (h.listener && h.handlers.size === 0) {
    h.p.removeListener('message', h.listener);
    h.listener = undefined;
  }
}

/**
 * Tell the module this process listens (it delivers to a writer only once it did, or after its
 * `ready_delay` setting). Channels do it when they open on the writer unless told not to. Only
 * the writer of a PM2 cluster app announces anything; elsewhere this does nothing.
 */
export function announceReady(opts: ClientOptions = {}): boolean {
  const placement = detect(opts);
  if (placement.role !== 'writer') return false;
  const h = hubOf(opts);
  if (h.ready) return true;
  h.ready = true;
  return trySend(h, { topic: READY_TOPIC, data: { pid: h.p.pid } }, () => {});
}

function trySend(h: Hub, packet: { topic: string; data: unknown }, done: (err: Error | null) => void): boolean {
  const send = h.p.send;
  if (typeof send !== 'function' || h.p.connected === false) {
    done(new Error('the IPC channel to PM2 is closed'));
    return false;
  }
  try {
    send.call(h.p, packet, (err: Error | null) => done(err ?? null));
    return true;
  } catch (err) {
    // Most likely a value JSON cannot carry (a cycle, a BigInt): send a cleaned copy.
    if (err instanceof TypeError && packet.topic === LOG_TOPIC) {
      try {
        send.call(h.p, { topic: packet.topic, data: jsonSafe(packet.data) }, (e: Error | null) => done(e ?? null));
        return true;
      } catch (again) {
        done(again as Error);
        return false;
      }
    }
    done(err as Error);
    return false;
  }
}

/** A copy of `value` that survives JSON: cycles cut, BigInt as strings, Errors as plain objects. */
export function jsonSafe(value: unknown): unknown {
  const stack: unknown[] = [];
  const text = JSON.stringify(value, function (this: unknown, _key: string, v: unknown) {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Error) {
      const out: Record<string, unknown> = { name: v.name, message: v.message, stack: v.stack };
      for (const k of Object.keys(v)) out[k] = (v as unknown as Record<string, unknown>)[k];
      v = out;
    }
    if (v !== null && typeof v === 'object') {
      // `this` is the object holding v: trim the ancestor stack down to it.
      while (stack.length > 0 && stack[stack.length - 1] !== this) stack.pop();
      if (stack.includes(v)) return '[Circular]';
      stack.push(v);
    }
    return v;
  });
  return text === undefined ? null : JSON.parse(text);
}

/**
 * Open a channel: `write` gets records on the writer (its own and those the module delivers)
 * and, outside PM2 cluster mode, this process's own records. On a sender `write` is only used
 * when a record cannot be sent (the IPC channel is closed), so nothing is lost.
 */
export function openChannel<T = unknown>(write: WriteFn<T>, opts: ChannelOptions = {}): Channel<T> {
  const name = opts.channel ?? DEFAULT_CHANNEL;
  const placement = detect(opts);
  const h = hubOf(opts);
  if (opts.maxPending !== undefined) h.maxPending = opts.maxPending;
  const stats: ChannelStats = { sent: 0, received: 0, written: 0, sendErrors: 0 };
  let pendingSends = 0;
  let flushWaiters: (() => void)[] = [];
  let closed = false;

  const writeHere = (record: T): void => {
    stats.written++;
    try {
      write(record);
    } catch (err) {
      warnOnce(h, `write-error:${name}`, `channel "${name}": write() threw: ${(err as Error)?.stack ?? String(err)} (further errors are not reported)`);
    }
  };

  if (placement.role === 'local' && placement.clustered) warnOnce(h, 'no-module', placement.reason);
  if (placement.role === 'writer') {
    if (h.handlers.has(name)) throw new Error(`pm2-scoped-intercom/client: channel "${name}" is already open in this process; give each one its own name (the channel option)`);
    if (placement.instance === undefined) warnOnce(h, 'no-instance', placement.reason);
    h.handlers.set(name, (r) => {
      stats.received++;
      writeHere(r as T);
    });
    listen(h);
    // Records that came before this channel opened, in order.
    if (h.pending.length > 0) {
      const mine = h.pending.filter((e) => e.ch === name);
      if (mine.length > 0) {
        const rest = h.pending.filter((e) => e.ch !== name);
        h.pending.length = 0;
        h.pending.push(...rest);
        for (const e of mine) {
          stats.received++;
          writeHere(e.r as T);
        }
      }
    }
    if (opts.announceReady !== false) announceReady(opts);
  }

  const settle = (): void => {
    if (pendingSends === 0 && flushWaiters.length > 0) {
      const w = flushWaiters;
      flushWaiters = [];
      for (const f of w) f();
    }
  };

  const channel: Channel<T> = {
    name,
    role: placement.role,
    isWriter: placement.role !== 'sender',
    placement,
    stats,
    send(record: T): void {
      if (placement.role !== 'sender' || closed) {
        writeHere(record);
        return;
      }
      pendingSends++;
      stats.sent++;
      trySend(h, { topic: LOG_TOPIC, data: { ch: name, r: record === undefined ? null : record } }, (err) => {
        pendingSends--;
        if (err) {
          stats.sent--;
          stats.sendErrors++;
          warnOnce(h, `send-error:${name}`, `channel "${name}": cannot send to the writer (${err.message}); writing such records locally`);
          writeHere(record);
        }
        settle();
      });
    },
    flush(): Promise<void> {
      if (pendingSends === 0) return Promise.resolve();
      return new Promise((resolve) => flushWaiters.push(resolve));
    },
    async drain(d: DrainOptions = {}): Promise<void> {
      const quietMs = d.quietMs ?? 300;
      const start = Date.now();
      const deadline = start + (d.timeoutMs ?? 1200);
      await Promise.race([channel.flush(), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref?.())]);
      if (placement.role !== 'writer') return;
      for (;;) {
        const now = Date.now();
        // At least quietMs from now: what PM2 queued just before it stopped this process may be on its way.
        const quietFor = now - Math.max(h.lastReceived, start);
        if (quietFor >= quietMs || now >= deadline) return;
        await new Promise((r) => setTimeout(r, Math.min(quietMs - quietFor, deadline - now) + 1));
      }
    },
    close(): void {
      if (closed) return;
      closed = true;
      if (placement.role === 'writer' && h.handlers.has(name)) {
        h.handlers.delete(name);
        unlisten(h);
      }
    },
  };
  return channel;
}
