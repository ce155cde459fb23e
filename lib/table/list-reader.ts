/**
 * Keeps the table honest against `pm2 list`: PM2 sends no event when a process is deleted, and
 * events can be missed across a reconnect, so the list is read again when something suggests it
 * (coalesced) and every 30 s. A list asked for while one is on its way, or answered older than
 * events since (registry.ts `applySnapshot`), is read again once that one is in: a list asked for
 * before an app started must not be the last word on it.
 */
import type { Timers } from '../shared/clock';
import { generationsOf, type Pm2Env, type Registry, type TableChange } from './registry';

/** How soon a list is read again after one that was asked for too early. */
const AGAIN_MS = 50;

export interface ListReaderOptions {
  list(): Promise<Pm2Env[]>;
  registry: Registry;
  /** What the fresh list changed in the table. */
  apply(changes: TableChange[]): void;
  now(): number;
  timers: Timers;
  /** A list that could not be read. */
  failed(err: Error): void;
}

export class ListReader {
  readonly #opts: ListReaderOptions;
  #timer: unknown = undefined;
  #dueAt = 0;
  #again = false;
  #reading: Promise<void> | undefined;
  #stopped = false;

  constructor(opts: ListReaderOptions) {
    this.#opts = opts;
  }

  /** Read the list in `ms` (coalesced with a read already scheduled). */
  schedule(ms: number): void {
    if (this.#stopped) return;
    const due = this.#opts.now() + ms;
    // A read already due sooner covers this one; one due later is brought forward (an `online`
    // asks for its pid within 100 ms, an exit 1 s later).
    if (this.#timer !== undefined) {
      if (this.#dueAt <= due) return;
      this.#opts.timers.clearTimeout(this.#timer);
    }
    this.#dueAt = due;
    this.#timer = this.#opts.timers.setTimeout(() => {
      this.#timer = undefined;
      void this.read().catch((err: Error) => this.#opts.failed(err));
    }, ms);
  }

  /** Read the list now and apply the differences. */
  read(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading;
    }
    const { registry } = this.#opts;
    const askedAt = registry.eventSeq;
    this.#reading = this.#opts
      .list()
      .then((envs) => {
        if (this.#stopped) return;
        this.#opts.apply(registry.applySnapshot(envs, this.#opts.now(), askedAt));
        if (registry.snapshotWasStale) this.#again = true;
      })
      .finally(() => {
        this.#reading = undefined;
        if (this.#again) {
          this.#again = false;
          this.schedule(AGAIN_MS);
        }
      });
    return this.#reading;
  }

  /**
   * The generation (pm_uptime) PM2 has under each pm_id now, from a list read within `timeoutMs` and
   * applied to nothing (at shutdown, after `stop`); undefined when none came in time.
   */
  async generations(timeoutMs: number): Promise<Map<number, number> | undefined> {
    let timer: unknown;
    const late = new Promise<undefined>((resolve) => (timer = this.#opts.timers.setTimeout(() => resolve(undefined), timeoutMs)));
    try {
      const envs = await Promise.race([this.#opts.list(), late]);
      return envs && generationsOf(envs);
    } catch {
      return undefined;
    } finally {
      this.#opts.timers.clearTimeout(timer);
    }
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#opts.timers.clearTimeout(this.#timer);
  }
}
