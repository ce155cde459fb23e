/**
 * `pm2-scoped-intercom/winston`: a winston 3 transport that gives each PM2 cluster app one
 * writer. Put your real transports (File, DailyRotateFile, ...) inside it:
 *
 *   new IntercomTransport({ transports: () => [new winston.transports.File({ filename })] })
 *
 * On the app's writer (and outside PM2 cluster mode) records go to those transports; on the other
 * instances they are sent to the writer through the pm2-scoped-intercom module. Requires winston
 * (an optional peer dependency) when this file is loaded, not before.
 */
import type TransportStream from 'winston-transport';
import { openChannel, type Channel, type ChannelOptions, type DrainOptions, type Role } from './index';
import { drainThenEnd, endStream } from './streams';

const LEVEL = Symbol.for('level');
const MESSAGE = Symbol.for('message');
const SPLAT = Symbol.for('splat');

type WinstonModule = {
  Transport: typeof TransportStream;
  config: { npm: { levels: Record<string, number> } };
};

function loadWinston(): WinstonModule {
  try {
    // The user's winston (a peer dependency): its Transport base, so `instanceof` and piping work.
    return require('winston') as WinstonModule;
  } catch (err) {
    throw new Error(`pm2-scoped-intercom/winston needs winston 3: npm install winston (${(err as Error).message})`);
  }
}

const winston = loadWinston();

/** What travels from a sender to the writer: the info's plain fields, its level and its formatted line. */
export interface WireInfo {
  /** The info's own enumerable fields (level, message, metadata). */
  i: Record<string, unknown>;
  /** info[Symbol.for('level')]: the level name without colours. */
  l?: string;
  /** info[Symbol.for('message')]: the line as the sender's formats made it, if they did. */
  m?: string;
}

/** An info object as it travels (the symbol-keyed fields become plain ones). */
export function toWire(info: Record<string | symbol, unknown>): WireInfo {
  const i: Record<string, unknown> = {};
  for (const k of Object.keys(info)) i[k] = info[k];
  const wire: WireInfo = { i };
  const level = info[LEVEL];
  if (typeof level === 'string') wire.l = level;
  const message = info[MESSAGE];
  if (typeof message === 'string') wire.m = message;
  return wire;
}

/** The info object again, on the writer. */
export function fromWire(wire: WireInfo): Record<string | symbol, unknown> {
  const info: Record<string | symbol, unknown> = { ...(wire?.i ?? {}) };
  info[LEVEL] = typeof wire?.l === 'string' ? wire.l : info.level;
  if (typeof wire?.m === 'string') info[MESSAGE] = wire.m;
  if (Array.isArray(info[SPLAT as never])) delete info[SPLAT];
  return info;
}

type Emitter = { on(event: string, listener: () => void): unknown; removeListener(event: string, listener: () => void): unknown };

/** winston's File transport, as far as the guards below need it (its own fields, winston 3.x). */
interface WinstonFileLike {
  _endStream?: (callback?: () => void) => void;
  _rotateFile?: unknown;
  _opening?: boolean;
  _rotate?: boolean;
  _dest?: Emitter & { writableFinished?: boolean; destroyed?: boolean };
}

const isWinstonFile = (tr: TransportStream): tr is TransportStream & WinstonFileLike =>
  typeof (tr as WinstonFileLike)._endStream === 'function' && typeof (tr as WinstonFileLike)._rotateFile === 'function';

/**
 * winston's File transport (3.x, 3.19 included) loses up to 16 KB at a size rotation after a
 * burst: it starts the rotation from a write callback of its PassThrough, which runs inside that
 * stream's read() when the file stream pulls records the PassThrough had to hold; the unpipe()
 * then stops the flow mid-read and read() hands all it buffered to a 'data' event nobody listens
 * to any more. Ending the old file a tick later lets that read go into the old file first. A
 * batch is such a burst (docs/loggers.md, winston and size rotation).
 */
function rotateAfterRead(tr: TransportStream): void {
  if (!isWinstonFile(tr) || (tr._endStream as { deferred?: true }).deferred) return;
  const endStream = tr._endStream!;
  const deferred = function (this: unknown, callback?: () => void): void {
    process.nextTick(() => endStream.call(this, callback));
  };
  deferred.deferred = true as const;
  tr._endStream = deferred;
}

/**
 * A File transport still opening its file: records written now count towards `maxsize`, and past
 * it winston swaps its stream when the file opens, ending the old one with its records and leaving
 * the transport waiting forever for a 'drain' of the old stream (everything after lost). Records
 * wait for its 'open' instead.
 */
const isOpening = (tr: TransportStream): boolean => isWinstonFile(tr) && tr._opening === true;

/** The first of `events` on `e` (true), or `ms` (false). */
function firstOf(e: Emitter, events: string[], ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (seen: boolean) => {
      clearTimeout(timer);
      for (const ev of events) e.removeListener(ev, fired);
      // After the transport's own listeners for it (its 'open' re-pipes and resumes its records).
      setImmediate(() => resolve(seen));
    };
    const fired = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    for (const ev of events) e.on(ev, fired);
  });
}

/**
 * End a File transport between rotations. Ended while it rotates, winston's File says 'finish'
 * once the old file is closed, its last records still on their way to the new one (lost at
 * process.exit); and when those last records start a rotation, the new file gets them after
 * 'finish'. Waits for each, at most `timeoutMs` in all.
 */
async function endFile(tr: TransportStream & WinstonFileLike, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(0, deadline - Date.now());
  const rotating = () => tr._rotate === true || tr._opening === true;
  while (rotating() && left() > 0) await firstOf(tr, ['open', 'error'], left());
  await endStream(tr, left());
  while (rotating() && left() > 0) {
    if (!(await firstOf(tr, ['open', 'error'], left()))) return;
    const dest = tr._dest;
    if (dest && !dest.writableFinished && !dest.destroyed) await firstOf(dest, ['finish', 'close', 'error'], left());
  }
}

export interface IntercomTransportOptions extends TransportStream.TransportStreamOptions, ChannelOptions {
  /**
   * The transports that write, on the writer only: an array, or (better) a function returning
   * one, called only in a process that writes, so the other instances never open the files.
   */
  transports: TransportStream[] | (() => TransportStream[]);
  /** Channel name; give each intercom transport of an app its own. @default 'winston' */
  channel?: string;
}

type Callback = () => void;

/**
 * The transport. `role` says what this process does; `shutdown()` before exiting delivers
 * what is on its way and closes the inner transports.
 */
export class IntercomTransport extends winston.Transport {
  readonly channel: Channel<WireInfo>;
  readonly #factory: () => TransportStream[];
  #inner: TransportStream[] | undefined;
  #shutdown: Promise<void> | undefined;
  /** Set once the inner destination is being ended: records after that are dropped. */
  #ended = false;
  /**
   * Records waiting for an inner transport that asked to wait (its write() returned false), in
   * order. A batch hands hundreds of records over in one turn: written regardless, winston's
   * File transport adds a 'drain' listener per record while its stream is full, and each drain
   * then re-runs them all: slow, and lines were lost at shutdown (figures: docs/architecture-notes.md).
   */
  readonly #backlog = new Map<TransportStream, Record<string | symbol, unknown>[]>();
  #backlogEmpty: (() => void)[] = [];

  constructor(opts: IntercomTransportOptions) {
    super(opts);
    if (!opts || (typeof opts.transports !== 'function' && !Array.isArray(opts.transports))) {
      throw new TypeError('IntercomTransport: the transports option (an array of winston transports, or a function returning one) is required');
    }
    const t = opts.transports;
    this.#factory = typeof t === 'function' ? t : () => t;
    // Batches by default, as every client: the File transport's size rotation is made safe for the
    // bursts they bring in inner() (rotateAfterRead, isOpening).
    this.channel = openChannel<WireInfo>((wire) => this.#write(fromWire(wire)), { ...opts, channel: opts.channel ?? 'winston' });
    // A writer opens its files now, not at the first record.
    if (this.channel.isWriter) this.inner();
  }

  get role(): Role {
    return this.channel.role;
  }

  get isWriter(): boolean {
    return this.channel.isWriter;
  }

  /** The inner transports (created on first use; in a sender only if a record cannot be sent). */
  inner(): TransportStream[] {
    if (!this.#inner) {
      const list = this.#factory();
      if (!Array.isArray(list)) throw new TypeError('IntercomTransport: the transports function must return an array of winston transports');
      this.#inner = list;
      for (const tr of list) {
        // Errors of an inner transport are this transport's errors (winston reports them).
        tr.on('error', (err: unknown) => this.emit('error', err));
        rotateAfterRead(tr);
      }
    }
    return this.#inner;
  }

  override log(info: Record<string | symbol, unknown>, callback: Callback): void {
    if (this.#ended) {
      callback();
      return;
    }
    if (this.channel.isWriter) this.#write(info);
    else this.channel.send(toWire(info));
    this.emit('logged', info);
    callback();
  }

  #write(info: Record<string | symbol, unknown>): void {
    if (this.#ended) return;
    const self = this as unknown as { levels?: Record<string, number>; parent?: unknown };
    for (const tr of this.inner()) {
      const t = tr as unknown as { levels?: Record<string, number>; parent?: unknown; writable?: boolean };
      // What winston would have set had the logger been piped into it.
      if (!t.levels) t.levels = self.levels ?? winston.config.npm.levels;
      if (t.parent === undefined && self.parent) t.parent = self.parent;
      if (t.writable === false) continue;
      const waiting = this.#backlog.get(tr);
      if (waiting) waiting.push(info);
      else if (isOpening(tr)) this.#wait(tr, [info], 'open');
      else if (tr.write(info) === false) this.#wait(tr, []);
    }
  }

  #wait(tr: TransportStream, rest: Record<string | symbol, unknown>[], until: 'drain' | 'open' = 'drain'): void {
    this.#backlog.set(tr, rest);
    tr.once(until, () => this.#resume(tr));
  }

  /** An inner transport drained: write what waited for it, until it asks to wait again. */
  #resume(tr: TransportStream): void {
    const q = this.#backlog.get(tr);
    this.#backlog.delete(tr);
    if (q) {
      for (let i = 0; i < q.length; i++) {
        if (tr.write(q[i]) === false) {
          this.#wait(tr, q.slice(i + 1));
          return;
        }
      }
    }
    if (this.#backlog.size === 0) for (const f of this.#backlogEmpty.splice(0)) f();
  }

  /** Resolves once no record waits for an inner transport, or after `ms`. */
  #written(ms: number): Promise<void> {
    if (this.#backlog.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#backlogEmpty.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * Before exiting: flush what this process sends, or on the writer take what is still on its
   * way, then end the inner transports and wait until they have written everything. Call it in
   * your SIGINT handler and exit when it resolves.
   */
  shutdown(opts: DrainOptions & { endTimeoutMs?: number } = {}): Promise<void> {
    if (!this.#shutdown) {
      this.#shutdown = (async () => {
        // Still writing (and sending) while what is on its way comes in.
        await this.channel.drain(opts);
        await this.#written(opts.endTimeoutMs ?? 2000);
        this.#ended = true;
        this.channel.close();
        const inner = this.#inner ?? [];
        const endMs = opts.endTimeoutMs ?? 2000;
        await Promise.all(inner.map((tr) => (isWinstonFile(tr) ? endFile(tr, endMs) : endStream(tr, endMs))));
      })();
    }
    return this.#shutdown;
  }

  /** `logger.end()` ends this stream: its 'finish' comes once the inner transports have finished. */
  override _final(callback: (error?: Error | null) => void): void {
    this.shutdown().then(() => callback(), callback);
  }

  /** Called by winston when the transport is removed or the logger closes. */
  override close(): void {
    void this.shutdown();
  }
}

/** Same as `new IntercomTransport(opts)`. */
export function intercomTransport(opts: IntercomTransportOptions): IntercomTransport {
  return new IntercomTransport(opts);
}

export { LOG_TOPIC, READY_TOPIC, detect, isWriter, announceReady } from './index';
export type { Role, Placement, ClientOptions, DrainOptions } from './index';
