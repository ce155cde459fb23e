/**
 * The memory bound (`buffer_mb`) and each app's share of it. The bound is the module's, but an app
 * holding less than its share (the bound split among the apps holding packets in memory) is taken
 * past it: another app's storm must not send a steady app's lines to the spool, where the storm may
 * have left no room either, nor out of memory (docs/security.md). Never past twice the bound.
 */

/** An app's part of the memory held. */
export interface Holding {
  bytes: number;
}

export class MemoryShares {
  readonly #bound: number;
  /** Bytes held in memory, across apps. */
  #bytes = 0;
  /** Apps holding packets in memory. */
  #holding = 0;

  constructor(bound: number) {
    this.#bound = bound;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Under half the bound: room to read spooled packets back. */
  get underHalf(): boolean {
    return this.#bytes < this.#bound / 2;
  }

  /** Past the bound altogether (what the spool or the oldest must make room for). */
  get full(): boolean {
    return this.#bytes > this.#bound;
  }

  /** Is this app past what memory holds for it, with `bytes` more? */
  pastBound(app: Holding, bytes: number): boolean {
    const total = this.#bytes + bytes;
    if (total <= this.#bound) return false;
    if (total > 2 * this.#bound) return true;
    const apps = this.#holding + (app.bytes > 0 ? 0 : 1);
    return app.bytes + bytes > this.#bound / apps;
  }

  /** An app's held bytes change. */
  change(app: Holding, delta: number): void {
    const before = app.bytes;
    app.bytes += delta;
    this.#bytes += delta;
    if (before <= 0 && app.bytes > 0) this.#holding++;
    else if (before > 0 && app.bytes <= 0) this.#holding--;
  }

  /** Every app's packets were taken out (at shutdown). */
  reset(apps: Iterable<Holding>): void {
    for (const a of apps) a.bytes = 0;
    this.#bytes = 0;
    this.#holding = 0;
  }
}
