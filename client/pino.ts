/**
 * `pm2-scoped-intercom/pino`: a pino destination that gives each PM2 cluster app one writer.
 *
 *   const dest = intercomDestination({ destination: () => pino.destination({ dest: file, sync: false }) });
 *   const logger = pino({}, dest);
 *
 * On the app's writer (and outside PM2 cluster mode) lines go to your destination (a file, a
 * `pino.transport(...)`, any stream); on the other instances each serialized line is sent to the
 * writer through the pm2-scoped-intercom module. Does not load pino itself.
 */
import { openChannel, type Channel, type ChannelOptions, type DrainOptions, type Role } from './index';
import { drainThenEnd, endStream } from './streams';

/** Anything pino can write to: `pino.destination()`, `pino.transport()`, a Writable, process.stdout. */
export interface DestinationLike {
  write(line: string): unknown;
  flush?(cb?: (err?: Error | null) => void): unknown;
  flushSync?(): unknown;
  end?(...args: unknown[]): unknown;
  once?(event: string, listener: (...args: unknown[]) => void): unknown;
  on?(event: string, listener: (...args: unknown[]) => void): unknown;
}

export interface IntercomDestinationOptions extends ChannelOptions {
  /**
   * Where the writer writes: a destination, or (better) a function returning one, called only in
   * a process that writes, so the other instances never open the file. @default process.stdout
   */
  destination?: DestinationLike | (() => DestinationLike);
  /** Channel name; give each intercom destination of an app its own. @default 'pino' */
  channel?: string;
}

/** The destination to give pino. */
export class IntercomDestination {
  readonly channel: Channel<string>;
  readonly #factory: () => DestinationLike;
  #dest: DestinationLike | undefined;
  #shutdown: Promise<void> | undefined;
  /** Set once the inner destination is being ended: records after that are dropped. */
  #ended = false;

  constructor(opts: IntercomDestinationOptions = {}) {
    const d = opts.destination;
    this.#factory = typeof d === 'function' ? d : () => d ?? (process.stdout as unknown as DestinationLike);
    this.channel = openChannel<string>((line) => this.#write(line), { ...opts, channel: opts.channel ?? 'pino' });
    if (this.channel.isWriter) this.destination();
  }

  get role(): Role {
    return this.channel.role;
  }

  get isWriter(): boolean {
    return this.channel.isWriter;
  }

  /** The real destination (created on first use; in a sender only if a line cannot be sent). */
  destination(): DestinationLike {
    if (!this.#dest) {
      const dest = this.#factory();
      if (!dest || typeof dest.write !== 'function') throw new TypeError('intercomDestination: destination must be a stream with write() (or a function returning one)');
      this.#dest = dest;
    }
    return this.#dest;
  }

  /** pino calls this with one serialized record (a JSON line ending in a newline). */
  write(line: string): boolean {
    if (this.#ended) return true;
    if (typeof line !== 'string') line = String(line);
    this.channel.send(line);
    return true;
  }

  #write(line: string): void {
    if (this.#ended || typeof line !== 'string') return;
    this.destination().write(line);
  }

  /** Flush: what this process sends is handed to PM2, the writer's destination flushed. */
  flush(cb?: (err?: Error | null) => void): void {
    const dest = this.#dest;
    void this.channel.flush().then(() => {
      if (dest && typeof dest.flush === 'function') {
        try {
          dest.flush((err?: Error | null) => cb?.(err ?? null));
          return;
        } catch (err) {
          cb?.(err as Error);
          return;
        }
      }
      cb?.(null);
    });
  }

  /** pino calls this on `fatal` and in its exit handlers: the writer's destination is flushed. */
  flushSync(): void {
    const dest = this.#dest;
    if (dest && typeof dest.flushSync === 'function') {
      try {
        dest.flushSync();
      } catch {
        /* SonicBoom throws while it is not open yet: nothing to flush then */
      }
    }
  }

  /**
   * Before exiting: deliver what is on its way (a sender's sends, a writer's incoming lines),
   * then end the destination and wait until it has written everything. Call it in your SIGINT
   * handler and exit when it resolves.
   */
  shutdown(opts: DrainOptions & { endTimeoutMs?: number } = {}): Promise<void> {
    this.#shutdown ??= drainThenEnd(
      this.channel,
      opts,
      () => (this.#ended = true),
      async () => {
        if (this.#dest) await endDestination(this.#dest, opts.endTimeoutMs ?? 2000);
      },
    );
    return this.#shutdown;
  }

  /** Same as shutdown(), for code that ends streams. */
  end(cb?: () => void): void {
    void this.shutdown().then(() => cb?.());
  }
}

/** process.stdout, process.stderr and what cannot be ended are flushed instead (at most `timeoutMs`). */
function endDestination(dest: DestinationLike, timeoutMs: number): Promise<void> {
  const std = dest === (process.stdout as unknown) || dest === (process.stderr as unknown);
  if (!std && typeof dest.end === 'function') return endStream(dest, timeoutMs);
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      resolve();
    }
    if (typeof dest.flush === 'function') {
      try {
        dest.flush(() => done());
        return;
      } catch {
        /* fall through */
      }
    }
    done();
  });
}

/** A pino destination routed through the app's writer (see IntercomDestination). */
export function intercomDestination(opts: IntercomDestinationOptions = {}): IntercomDestination {
  return new IntercomDestination(opts);
}

export { LOG_TOPIC, READY_TOPIC, detect, isWriter, announceReady } from './index';
export type { Role, Placement, ClientOptions, DrainOptions } from './index';
