/**
 * Which process writes an app's files: its online process whose instance number equals the
 * `writer_instance` setting. Pure.
 */
import type { ProcessInfo } from './registry';

export interface Election {
  /** The process to deliver log packets to now, if any. */
  writer?: ProcessInfo;
  /** Online processes numbered `writer_instance`: more than one means duplicate numbers. */
  claimants: ProcessInfo[];
  /** When the first claimant that is online but not yet ready becomes ready (epoch ms). */
  readyAt?: number;
}

export function electWriter(procs: Iterable<ProcessInfo>, writerInstance: number, now: number): Election {
  const claimants: ProcessInfo[] = [];
  for (const p of procs) {
    if (p.instance === writerInstance && p.status === 'online' && !p.isModule) claimants.push(p);
  }
  // Lowest pm_id wins, so the choice is stable and the same whatever order PM2 reported.
  claimants.sort((a, b) => a.pmId - b.pmId);
  let writer: ProcessInfo | undefined;
  let readyAt: number | undefined;
  for (const p of claimants) {
    if (p.readyAt <= now) {
      writer = p;
      break;
    }
    if (p.readyAt !== Infinity && (readyAt === undefined || p.readyAt < readyAt)) readyAt = p.readyAt;
  }
  return writer ? { writer, claimants } : { claimants, readyAt };
}
