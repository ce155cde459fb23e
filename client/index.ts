/**
 * `pm2-scoped-intercom/client`: the app side of the module, for any logger.
 *
 * In PM2 cluster mode one process of each app is its *writer* (the one whose instance number,
 * `process.env[instance_var]`, equals `writerInstance`, default 0). A channel opened here writes
 * records itself on the writer and sends them to the writer everywhere else:
 *
 *   sender  process.send({ topic: 'pm2-scoped-intercom:log', data: { ch, b: [r1, r2, ...] } })
 *             -> the pm2-scoped-intercom module -> the writer of the sender's own app
 *   writer  process.on('message') -> the channel's `write(record)`, once per record, in order
 *
 * A sender gathers its records into one packet (a batch) and sends it when it reaches
 * `batchMaxBytes` or `batchMaxMs` after its first record: each hop through PM2 costs per message,
 * not per byte. To a module that does not say it takes batches (`pm2ScopedIntercom.batch` in its
 * installed package.json; 0.1.0 and 0.2.0 do not) it sends one record per packet,
 * `{ ch, r }`, as those versions expect.
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
import os from 'node:os';
import path from 'node:path';
import { BATCH_FORMAT, CLIENT_LOG_TOPIC, CLIENT_READY_TOPIC, MODULE_NAME } from '../lib/shared/protocol';
import { toNumber } from '../lib/shared/system';

/** The topic the module routes to the writer of the sender's app. */
export const LOG_TOPIC = CLIENT_LOG_TOPIC;
/** The writer's "I listen" announcement. */
export const READY_TOPIC = CLIENT_READY_TOPIC;
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

/** Batch defaults (measured on the 2-core machine; see the README, "Batches"). */
export const DEFAULT_BATCH_MAX_BYTES = 32 * 1024;
export const DEFAULT_BATCH_MAX_MS = 20;
/** The batch format this client sends (the least a module must accept for it), and the module's package name. */
export { BATCH_FORMAT, MODULE_NAME };
/** How often (ms) a sender reads again what the installed module accepts (an upgrade or downgrade). */
const CAPS_TTL_MS = 5000;

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

/**
 * The batch format the module installed in this PM2 accepts (its package.json's
 * `pm2ScopedIntercom.batch`), or 0 when it takes single records only, is not installed, or
 * cannot be read (then single records are always safe).
 */
export function moduleBatchFormat(pm2Home: string | undefined): number {
  if (!pm2Home) return 0;
  try {
    const file = path.join(pm2Home, 'modules', MODULE_NAME, 'node_modules', MODULE_NAME, 'package.json');
    const caps = (JSON.parse(fs.readFileSync(file, 'utf8')) as { pm2ScopedIntercom?: { batch?: unknown } }).pm2ScopedIntercom;
    return typeof caps?.batch === 'number' && Number.isInteger(caps.batch) ? caps.batch : 0;
  } catch {
    return 0;
  }
}

/**
 * Rough size in bytes of `value` as JSON, without serialising it: exact for strings (the pino
 * case), an estimate for objects (nested 4 deep at most, so a cycle ends).
 */
export function approxSize(value: unknown, depth = 0): number {
  switch (typeof value) {
    case 'string':
      return value.length + 2;
    case 'number':
    case 'bigint':
      return 8;
    case 'boolean':
      return 5;
    case 'object': {
      if (value === null) return 4;
      if (depth >= 4) return 64;
      let n = 2;
      if (Array.isArray(value)) {
        for (const v of value) n += approxSize(v, depth + 1) + 1;
        return n;
      }
      for (const k in value) n += k.length + 4 + approxSize((value as Record<string, unknown>)[k], depth + 1);
      return n;
    }
    default:
      return 0;
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
  /**
   * A sender's records go out together once they reach this many bytes (roughly, as JSON). A
   * single record bigger than this goes alone. `0`: one packet per record. @default 32768
   */
  batchMaxBytes?: number;
  /**
   * ...or this many ms after the first record of a batch, whichever comes first: at most this much
   * latency is added. `0`: at the end of the current event-loop turn. @default 20
   */
  batchMaxMs?: number;
  /**
   * Send batches whatever the installed module says (`true`), never (`false`), or when the
   * installed module accepts them (`'auto'`). @default 'auto'
   */
  batch?: boolean | 'auto';
}

export interface ChannelStats {
  /** Records handed to the module (sender). */
  sent: number;
  /** Packets those records went in (one per batch, or per record when the module takes no batches). */
  packets: number;
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
   * In a batch it is serialised when the batch goes (up to `batchMaxMs` later): do not change it
   * after this call.
   */
  send(record: T): void;
  /** Sends what is gathered now; resolves when every record sent so far has been handed to PM2 (sender), at once elsewhere. */
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

/** A batch as it travels: the records of one channel, in the order they were logged. */
interface BatchEnvelope {
  ch: string;
  b: unknown[];
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
  /** What the installed module accepts (moduleBatchFormat) and when it was read. */
  batchFormat: number;
  batchFormatAt: number;
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
      batchFormat: 0,
      batchFormatAt: -Infinity,
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

function isEnvelope(data: unknown): data is Envelope | BatchEnvelope {
  return data !== null && typeof data === 'object' && typeof (data as Envelope).ch === 'string';
}

/** Does the installed module take batches? Read again at most every CAPS_TTL_MS. */
function moduleTakesBatches(h: Hub): boolean {
  const now = Date.now();
  if (now - h.batchFormatAt >= CAPS_TTL_MS) {
    h.batchFormatAt = now;
    const env = h.p.env;
    const home = env.PM2_HOME || (h.p === (process as unknown as ProcessLike) ? path.join(os.homedir(), '.pm2') : undefined);
    h.batchFormat = moduleBatchFormat(home);
  }
  return h.batchFormat >= BATCH_FORMAT;
}

function listen(h: Hub): void {
  if (h.listener) return;
  h.listener = (message: unknown) => {
    if (message === null || typeof message !== 'object') return;
    const { topic, data } = message as { topic?: unknown; data?: unknown };
    if (topic !== LOG_TOPIC || !isEnvelope(data)) return;
    h.lastReceived = Date.now();
    const handler = h.handlers.get(data.ch);
    const batch = (data as BatchEnvelope).b;
    if (Array.isArray(batch)) {
      if (handler) for (const r of batch) handler(r);
      else for (const r of batch) keepPending(h, { ch: data.ch, r });
      return;
    }
    if (handler) handler((data as Envelope).r);
    else keepPending(h, data as Envelope);
  };
  h.p.on('message', h.listener);
}

function keepPending(h: Hub, e: Envelope): void {
  h.pending.push(e);
  if (h.pending.length > h.maxPending) {
    h.pending.shift();
    h.droppedPending++;
    warnOnce(h, 'pending-full', `more than ${h.maxPending} records arrived for channels this writer has not opened (${[...new Set(h.pending.map((x) => x.ch))].join(', ')}); dropping the oldest. Open every channel the app's senders use.`);
  }
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
  const c = new ChannelCore<T>(h, name, placement, write, opts);
  if (placement.role === 'local' && placement.clustered) warnOnce(h, 'no-module', placement.reason);
  if (placement.role === 'writer') receiveOnWriter(h, name, placement, opts, (r) => c.receive(r as T));
  return {
    name,
    role: placement.role,
    isWriter: placement.role !== 'sender',
    placement,
    stats: c.stats,
    send: (record) => c.send(record),
    flush: () => c.flush(),
    drain: (d) => c.drain(d),
    close: () => c.close(),
  };
}

/** The writer's side of a channel: records delivered for `name` (and those that came before it opened) go to `receive`. */
function receiveOnWriter(h: Hub, name: string, placement: Placement, opts: ChannelOptions, receive: (record: unknown) => void): void {
  if (h.handlers.has(name)) throw new Error(`pm2-scoped-intercom/client: channel "${name}" is already open in this process; give each one its own name (the channel option)`);
  if (placement.instance === undefined) warnOnce(h, 'no-instance', placement.reason);
  h.handlers.set(name, receive);
  listen(h);
  // Records that came before this channel opened, in order.
  const mine = h.pending.filter((e) => e.ch === name);
  if (mine.length > 0) {
    const rest = h.pending.filter((e) => e.ch !== name);
    h.pending.length = 0;
    h.pending.push(...rest);
    for (const e of mine) receive(e.r);
  }
  if (opts.announceReady !== false) announceReady(opts);
}

function batchBound(option: string, value: number): number {
  if (!(Number.isFinite(value) && value >= 0)) throw new TypeError(`Expected \`${option}\` to be a finite number >= 0, got \`${value}\` (${typeof value})`);
  return value;
}

/** One channel's records: written here, or gathered into batches and sent to the writer. */
class ChannelCore<T> {
  readonly stats: ChannelStats = { sent: 0, packets: 0, received: 0, written: 0, sendErrors: 0 };
  readonly #h: Hub;
  readonly #name: string;
  readonly #placement: Placement;
  readonly #write: WriteFn<T>;
  readonly #maxBytes: number;
  readonly #maxMs: number;
  readonly #batchMode: boolean | 'auto';
  #pendingSends = 0;
  #flushWaiters: (() => void)[] = [];
  #closed = false;
  /** Records gathered for the next batch (a sender's), and their estimated size. */
  #gathered: unknown[] = [];
  #gatheredBytes = 0;
  #timer: ReturnType<typeof setTimeout> | ReturnType<typeof setImmediate> | undefined;

  constructor(h: Hub, name: string, placement: Placement, write: WriteFn<T>, opts: ChannelOptions) {
    this.#h = h;
    this.#name = name;
    this.#placement = placement;
    this.#write = write;
    this.#maxBytes = batchBound('batchMaxBytes', opts.batchMaxBytes ?? DEFAULT_BATCH_MAX_BYTES);
    this.#maxMs = batchBound('batchMaxMs', opts.batchMaxMs ?? DEFAULT_BATCH_MAX_MS);
    this.#batchMode = opts.batch ?? 'auto';
  }

  /** A record the module delivered (writer). */
  receive(record: T): void {
    this.stats.received++;
    this.#writeHere(record);
  }

  send(record: T): void {
    if (this.#placement.role !== 'sender' || this.#closed) {
      this.#writeHere(record);
      return;
    }
    const r = record === undefined ? null : record;
    this.stats.sent++;
    if (!this.#batching()) {
      // What 0.1.0 and 0.2.0 take: one record per packet (after any batch gathered before).
      this.#sendGathered();
      this.#sendPacket({ ch: this.#name, r }, [r]);
      return;
    }
    const size = approxSize(r);
    // A record that would take the batch past the bound starts the next one (one bigger than
    // the bound goes alone).
    if (this.#gathered.length > 0 && this.#gatheredBytes + size > this.#maxBytes) this.#sendGathered();
    this.#gathered.push(r);
    this.#gatheredBytes += size;
    if (this.#gatheredBytes >= this.#maxBytes) this.#sendGathered();
    else if (this.#timer === undefined) this.#timer = this.#maxMs === 0 ? setImmediate(() => this.#sendGathered()) : setTimeout(() => this.#sendGathered(), this.#maxMs);
  }

  flush(): Promise<void> {
    this.#sendGathered();
    if (this.#pendingSends === 0) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  async drain(d: DrainOptions = {}): Promise<void> {
    const quietMs = d.quietMs ?? 300;
    const start = Date.now();
    const deadline = start + (d.timeoutMs ?? 1200);
    await Promise.race([this.flush(), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref?.())]);
    if (this.#placement.role !== 'writer') return;
    for (;;) {
      const now = Date.now();
      // At least quietMs from now: what PM2 queued just before it stopped this process may be on its way.
      const quietFor = now - Math.max(this.#h.lastReceived, start);
      if (quietFor >= quietMs || now >= deadline) return;
      await new Promise((r) => setTimeout(r, Math.min(quietMs - quietFor, deadline - now) + 1));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#sendGathered();
    this.#closed = true;
    if (this.#placement.role === 'writer' && this.#h.handlers.has(this.#name)) {
      this.#h.handlers.delete(this.#name);
      unlisten(this.#h);
    }
  }

  #batching(): boolean {
    return !(this.#maxBytes === 0 || this.#batchMode === false || (this.#batchMode === 'auto' && !moduleTakesBatches(this.#h)));
  }

  #writeHere(record: T): void {
    this.stats.written++;
    try {
      this.#write(record);
    } catch (err) {
      warnOnce(this.#h, `write-error:${this.#name}`, `channel "${this.#name}": write() threw: ${(err as Error)?.stack ?? String(err)} (further errors are not reported)`);
    }
  }

  #sendGathered(): void {
    if (this.#timer !== undefined) {
      if (this.#maxMs === 0) clearImmediate(this.#timer as ReturnType<typeof setImmediate>);
      else clearTimeout(this.#timer as ReturnType<typeof setTimeout>);
      this.#timer = undefined;
    }
    if (this.#gathered.length === 0) return;
    const b = this.#gathered;
    this.#gathered = [];
    this.#gatheredBytes = 0;
    this.#sendPacket({ ch: this.#name, b }, b);
  }

  /** One packet to the module; on failure its records are written here, in order. */
  #sendPacket(data: Envelope | BatchEnvelope, records: unknown[]): void {
    this.#pendingSends++;
    this.stats.packets++;
    trySend(this.#h, { topic: LOG_TOPIC, data }, (err) => {
      this.#pendingSends--;
      if (err) {
        this.stats.sent -= records.length;
        this.stats.packets--;
        this.stats.sendErrors++;
        warnOnce(this.#h, `send-error:${this.#name}`, `channel "${this.#name}": cannot send to the writer (${err.message}); writing such records locally`);
        for (const r of records) this.#writeHere(r as T);
      }
      this.#settle();
    });
  }

  #settle(): void {
    if (this.#pendingSends === 0 && this.#flushWaiters.length > 0) {
      const w = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const f of w) f();
    }
  }
}
