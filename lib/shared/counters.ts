/**
 * The module's counters: plain numbers bumped where things happen (intake, hold, deliver) and
 * read by operator/metrics.ts once a second. A leaf: it imports nothing.
 */

export interface RecordCounters {
  /** Log records received (a batch counts its records; any other log packet 1). */
  recordsIn: number;
  /** Log records delivered to writers (as `out` counts packets). */
  recordsOut: number;
  /** Client-topic packets in a shape this version does not know (delivered as they are). */
  unknownFormat: number;
}

export interface Counters extends RecordCounters {
  in: number;
  out: number;
  relayed: number;
  /** Held now, in memory and spooled. */
  held: number;
  /** Of `held`, spooled to disk. */
  spooled: number;
  dropped: number;
  malformed: number;
  sendErrors: number;
  /** Times sending to a writer paused until it had read its backlog (deliver/pacing.ts). */
  paced: number;
}

export function newCounters(): Counters {
  return { in: 0, out: 0, relayed: 0, held: 0, spooled: 0, dropped: 0, malformed: 0, sendErrors: 0, paced: 0, recordsIn: 0, recordsOut: 0, unknownFormat: 0 };
}
