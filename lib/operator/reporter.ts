/**
 * What the module says in `pm2 logs`: plain lines, never one per packet. Diagnoses are said once
 * per app and problem; counts (drops, malformed packets) are summed and said at most once per
 * `report_interval`.
 */
import { formatAppKey } from '../table/registry';
import type { LogFn } from '../shared/system';

export class Reporter {
  readonly #log: LogFn;
  readonly #warn: LogFn;
  readonly #said = new Map<string, string>();
  readonly #pending = new Map<string, number>();
  /** The last problem said (or said again) per app, `kind: text`. */
  readonly #lastProblem = new Map<string, string>();

  constructor(log: LogFn, warn: LogFn) {
    this.#log = log;
    this.#warn = warn;
  }

  info(line: string): void {
    this.#log(line);
  }

  warn(line: string): void {
    this.#warn(line);
  }

  /**
   * A problem of one app, said once per (app, kind) until `forget` is called for the app. `text`
   * may be a function: it is then worked out only when the problem is first said.
   */
  diagnose(appKey: string, kind: string, text: string | (() => string)): void {
    const id = `${appKey}\u0001${kind}`;
    const said = this.#said.get(id);
    if (said !== undefined) {
      this.#lastProblem.set(appKey, said);
      return;
    }
    const t = typeof text === 'function' ? text() : text;
    this.#said.set(id, `${kind}: ${t}`);
    this.#lastProblem.set(appKey, `${kind}: ${t}`);
    this.#warn(`DIAGNOSIS ${kind} app=${formatAppKey(appKey)}: ${t}`);
  }

  lastProblem(appKey: string): string | undefined {
    return this.#lastProblem.get(appKey);
  }

  forget(appKey: string): void {
    this.#lastProblem.delete(appKey);
    for (const id of this.#said.keys()) if (id.startsWith(`${appKey}\u0001`)) this.#said.delete(id);
  }

  /** Count something to summarise later (`what` is the phrase, e.g. "malformed packets skipped (no-topic)"). */
  count(what: string, n = 1): void {
    this.#pending.set(what, (this.#pending.get(what) ?? 0) + n);
  }

  /** Counts wait for the next report. */
  get waiting(): boolean {
    return this.#pending.size > 0;
  }

  /** Say the counts gathered since the last flush, in one line; nothing if there are none. */
  flush(): void {
    if (this.#pending.size === 0) return;
    const parts = [...this.#pending].map(([what, n]) => `${n} ${what}`);
    this.#pending.clear();
    this.#warn(`since the last report: ${parts.join('; ')}`);
  }
}
