/**
 * Batches from the package's client. A sender's client packs the records of a short
 * time into one packet on the client topic:
 *
 *   { topic: 'pm2-scoped-intercom:log', data: { ch: 'pino', b: [record, record, ...] } }
 *
 * beside the single-record form `{ ch, r }` of 0.1.0/0.2.0 clients. The relay carries either as
 * one unit (one send, held, replayed and spooled whole), exactly as before: nothing here changes a
 * packet. This file only tells how many records a packet carries (for the counters) and notices
 * packets on the client topic in a shape this version does not know (a newer client, a broken
 * sender): those are still delivered as they are (the writer's client may know them), counted as
 * one record each, and said once in `pm2 logs`.
 *
 * The client sends batches only to a module whose installed package.json says
 * `pm2ScopedIntercom.batch >= 1` (see client/index.ts moduleBatchFormat).
 */
import type { RecordCounters } from '../shared/counters';
import { CLIENT_LOG_TOPIC } from '../shared/protocol';

export type ClientPacketShape = 'single' | 'batch' | 'unknown';

/** What a client-topic packet's data is: one record, a batch, or something this version does not know. */
export function shapeOf(data: unknown): ClientPacketShape {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return 'unknown';
  const d = data as { ch?: unknown; r?: unknown; b?: unknown };
  if (typeof d.ch !== 'string') return 'unknown';
  if (Array.isArray(d.b)) return 'batch';
  if ('r' in d && d.b === undefined) return 'single';
  return 'unknown';
}

export interface BatchWatchDeps {
  counters: RecordCounters;
  /** Said once per module run. */
  warn(line: string): void;
  /** Counted into the periodic summary. */
  count(what: string, n?: number): void;
}

/** Counts the records of each log packet as it comes in, and says once what it does not understand. */
export class BatchWatch {
  readonly #deps: BatchWatchDeps;
  #said = false;

  constructor(deps: BatchWatchDeps) {
    this.#deps = deps;
  }

  /** A log packet arrived (before it is pushed to the outbox). Never throws. */
  seen(topic: string, data: unknown): void {
    const c = this.#deps.counters;
    if (topic !== CLIENT_LOG_TOPIC) {
      c.recordsIn++;
      return;
    }
    const shape = shapeOf(data);
    if (shape === 'batch') {
      c.recordsIn += (data as { b: unknown[] }).b.length;
      return;
    }
    c.recordsIn++;
    if (shape === 'single') return;
    c.unknownFormat++;
    this.#deps.count(`packets on ${CLIENT_LOG_TOPIC} in a format this version does not know, delivered as they are`);
    if (this.#said) return;
    this.#said = true;
    this.#deps.warn(
      `a packet on ${CLIENT_LOG_TOPIC} has a shape this module version does not know (${describe(data)}); ` +
        `it is delivered to the writer as it is and counted as one record (this is said once). ` +
        `A client newer than the module? Upgrade the module: pm2 install pm2-scoped-intercom`,
    );
  }
}

function describe(data: unknown): string {
  if (data === null || typeof data !== 'object') return `data is ${data === null ? 'null' : typeof data}`;
  if (Array.isArray(data)) return 'data is an array';
  const keys = Object.keys(data).slice(0, 6);
  return `data has the fields ${keys.length > 0 ? keys.join(', ') : '(none)'}`;
}
