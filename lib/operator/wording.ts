/**
 * What the module says about apps in `pm2 logs`: every line, count phrase and diagnosis the relay
 * and the outbox give rise to, worded in one place (plain functions of what they report). Counts
 * are summed by the reporter (`reporter.count(phrase, n)`), diagnoses said once per app and kind.
 */
import { FILES_WAIT_MS } from '../table/writer-files';
import type { Settings } from './settings';
import type { Election } from '../table/election';
import { DEFAULT_INSTANCE_VAR, formatAppKey, type AppInfo, type ProcessInfo } from '../table/registry';
import type { DropReason } from '../intake/router';
import type { Vacancy } from '../proc/vacancy';
import type { WriterWait } from '../table/writer-table';

/** The hold buffer's bounds, as the operator set them. */
export type Bounds = Pick<Settings, 'buffer_mb' | 'spool_mb'>;

// --- packets the router drops (count phrases) ---

export const DROP_PHRASE: Readonly<Record<DropReason, string>> = {
  malformed: 'malformed packets skipped (not an object with topic and data)',
  'no-topic': 'malformed packets skipped (no topic)',
  'no-data': 'malformed packets skipped (no data)',
  'from-module': 'packets from PM2 modules ignored',
  'unknown-sender': 'packets from unknown processes skipped',
  'writer-sends': 'log packets sent by a writer itself skipped',
  'broadcast-off': 'non-log packets not relayed (broadcast=off)',
  'no-peers': 'non-log packets with no peer to relay to',
};

/** Log packets whose data the module cannot serialise (nested deeper than its stack allows). */
export const UNSERIALISABLE = 'log packets skipped: data nested too deeply to serialise';

/** Packets of other topics whose data the module cannot serialise. */
export const UNSERIALISABLE_RELAY = 'packets not relayed: data nested too deeply to serialise';

/** Relayed packets dropped because too much waited for one target process. */
export function relayOverflow(bufferMb: number): string {
  return `relayed packets dropped: more than buffer_mb=${bufferMb} waited for one process`;
}

// --- an app's writer ---

export function writerIs(appKey: string, writer: ProcessInfo): string {
  return `app=${formatAppKey(appKey)} writer is pm_id=${writer.pmId} (instance ${writer.instance})`;
}

export function holdingNoWriter(appKey: string, bounds: Bounds): string {
  return `app=${formatAppKey(appKey)} has no ready writer: holding its log packets (up to buffer_mb=${bounds.buffer_mb} in memory, then spool_mb=${bounds.spool_mb} on disk)`;
}

/** Why an app's held packets wait (the end of the `held` and `buffer-full` diagnoses). */
export function whyNoWriter(app: AppInfo | undefined, procs: readonly ProcessInfo[], e: Election | undefined, writerInstance: number): string {
  if (!app) return 'No process of this app is known to PM2 (deleted?).';
  if (e?.writer) return `Its writer is pm_id ${e.writer.pmId}.`;
  if (e && e.claimants.length > 0) return `Its writer pm_id ${e.claimants[0].pmId} is online but not ready yet.`;
  const numbers = procs.filter((p) => !p.isModule && p.status === 'online').map((p) => p.instance);
  if (numbers.length === 0) return `No process of the app is online: start it (pm2 start ${app.name}).`;
  const down = procs.find((p) => !p.isModule && p.instance === writerInstance);
  if (down) {
    return `Its instance ${writerInstance} (pm_id ${down.pmId}) is ${down.status}, not online: its packets wait until it is (pm2 start ${down.pmId}, or its restart).`;
  }
  return (
    `No online process has ${app.instanceVar}=${writerInstance} (online instances are numbered ${numbers.map((n) => (n === undefined ? '?' : n)).join(', ')}). ` +
    `PM2 numbers instances per app name across namespaces, so an app name reused in a second namespace gets no instance ${writerInstance}. ` +
    `Fix: give the app a name of its own in each namespace, or pm2 set pm2-scoped-intercom:writer_instance <n> if your log4js writer is another number.`
  );
}

/** Why an app's packets wait (the end of the `held` and `buffer-full` diagnoses). */
export function whyHeld(w: WriterWait): string {
  if (w.unopened !== undefined && w.election?.writer !== undefined) return writerNotConfigured(w.election.writer, w.unopened);
  return whyNoWriter(w.app, w.procs, w.election, w.writerInstance);
}

/** Why packets wait for a writer that is online and past `ready_delay` (writer-files.ts). */
export function writerNotConfigured(writer: ProcessInfo, files: readonly string[]): string {
  return `Its writer pm_id ${writer.pmId} is online but has not opened ${files[0] ?? 'its log files'} yet (its logger is not configured yet): waited for, up to ${FILES_WAIT_MS / 1000} s after online.`;
}

/** Diagnosis `files`: a new writer never opened the files its app's writers write (writer-files.ts). */
export function writerWithoutFiles(writer: ProcessInfo, files: readonly string[], waitedMs: number): string {
  return (
    `its new writer pm_id ${writer.pmId} (pid ${writer.pid}) has not opened ${files.slice(0, 3).join(', ')}${files.length > 3 ? ', ...' : ''} ` +
    `${Math.round(waitedMs / 1000)} s after PM2 reported it online (its last writer had); delivering to it anyway. ` +
    `If its logger writes elsewhere now, ignore this; if it configures log4js later than that, let it say process.send('ready') once configured.`
  );
}

/** Diagnosis `held`. */
export function heldTooLong(count: number, waitedMs: number, why: string): string {
  return `${count} log packets have waited ${Math.round(waitedMs / 1000)} s for a writer. ${why}`;
}

/** Diagnosis `duplicate-writer`. */
export function duplicateWriter(claimants: readonly ProcessInfo[], writerInstance: number): string {
  return `${claimants.length} online processes claim instance ${writerInstance} (pm_ids ${claimants.map((p) => p.pmId).join(', ')}); only pm_id ${claimants[0].pmId} receives log packets, the others write their own lines too. Fix: give each instance its own number (do not set the app's instance_var to a variable that your env fixes), then pm2 reload the app.`;
}

/** Diagnosis `fork-mode`. */
export function forkModeSender(pmId: number): string {
  return `log packets come from pm_id=${pmId}, a fork-mode process. log4js's pm2 mode is meant for cluster mode: start the app with exec_mode: 'cluster', or use disableClustering: true in log4js for a single fork instance.`;
}

/** Diagnosis `writer-sends`. */
export function writerSends(instanceVar: string | undefined, writerInstance: number): string {
  const writerVar = instanceVar ?? DEFAULT_INSTANCE_VAR;
  return (
    `its writer (the process with ${writerVar}=${writerInstance}) sends log packets instead of writing them, so nobody writes this app's files. ` +
    `Fix: in log4js.configure use pm2: true` +
    (writerVar !== DEFAULT_INSTANCE_VAR ? ` and pm2InstanceVar: '${writerVar}' (the app's instance_var).` : ` (and no pm2InstanceVar, or pm2InstanceVar equal to the app's instance_var).`) +
    ` With pm2-scoped-intercom/client (winston, pino): pass instanceVar: '${writerVar}' and writerInstance: ${writerInstance}.`
  );
}

// --- sends ---

/** What a target found before a send was (part of `sendsStopped`). */
export function vacancy(v: Vacancy): string {
  return v.kind === 'exited' ? `exited (pid ${v.pid})` : `is a new process (pid ${v.newPid}, was ${v.pid}): a reload`;
}

/** Count phrase: a target found exited or replaced before a send (`why` says which). */
export function sendsStopped(pmId: number, why: string): string {
  return `sends stopped before they went out: pm_id ${pmId} ${why}; packets kept`;
}

/** Count phrase: PM2 refused a send. */
export function sendsRefused(message: string): string {
  return `sends refused by PM2 (${/offline/.test(message) ? 'target offline' : message.slice(0, 80)}), packets kept`;
}

/** Count phrase: packets PM2 handed to a restarted process before it listened. */
export function sentAgain(pmId: number): string {
  return `log packets sent again: PM2 had handed them to a restarted process (pm_id ${pmId}) before it listened`;
}

export function deliveringHeld(appKey: string, count: number, writer: number): string {
  return `app=${formatAppKey(appKey)} delivering ${count} held log packets to writer pm_id=${writer}`;
}

// --- the hold buffer ---

/** Which bound was passed and what went (part of the overflow count phrase and diagnosis). */
export function overflowBound(why: 'memory' | 'spool', bounds: Bounds, spoolFailure: string | undefined): string {
  return why === 'spool'
    ? `buffer_mb=${bounds.buffer_mb} and spool_mb=${bounds.spool_mb} full, the newest dropped`
    : `buffer_mb=${bounds.buffer_mb} full, the oldest dropped${spoolFailure ? ` (no spool: ${spoolFailure})` : ''}`;
}

/** Count phrase: dropped past the bounds. */
export function droppedBufferFull(appKey: string, bound: string): string {
  return `log packets dropped: hold buffer full (${bound}) for ${formatAppKey(appKey)}`;
}

/** Diagnosis `buffer-full`. */
export function bufferFull(bound: string, why: string): string {
  return `more log packets waited than the hold buffer takes (${bound}). ${why}`;
}

export function spooling(appKey: string, bounds: Bounds, dir: string | undefined): string {
  return `app=${formatAppKey(appKey)} held log packets pass buffer_mb=${bounds.buffer_mb}: the newer ones go to the spool on disk (${dir}, up to spool_mb=${bounds.spool_mb})`;
}

export function appDeleted(appKey: string, count: number): string {
  return `app=${formatAppKey(appKey)} was deleted: dropped ${count} log packets it held`;
}

export function goneSpooled(appKey: string, count: number): string {
  return `app=${formatAppKey(appKey)} is gone: dropped ${count} log packets it had spooled`;
}

export function goneHeldAtShutdown(appKey: string, count: number): string {
  return `app=${formatAppKey(appKey)} is gone: dropped ${count} log packets held at the last shutdown`;
}

export function restoredHeld(count: number): string {
  return `restored ${count} log packets held at the last shutdown`;
}

// --- the process list ---

export function listFailed(err: Error): string {
  return `could not re-read the process list: ${err.message}`;
}

// --- at start ---

/**
 * Which checks keep sends safe: with /proc (`'on'`), `dying` (liveness.ts) always and `forks`
 * (forks.ts) where the daemon's children can be read; without it (`'off'` by the
 * `proc_checks` setting, or `'unreadable'`), the send guard (send-guard.ts).
 */
export function safetyChecks(proc: 'on' | 'off' | 'unreadable', forks = false): string {
  if (proc === 'on') {
    return `safety checks: dying writers on (/proc/<pid>/stat); reload forks ${forks ? 'on (/proc/<daemon>/task/<daemon>/children)' : 'OFF (no /proc children): a reload can hand a new writer packets before the module knows'}`;
  }
  return (
    `safety checks: /proc ${proc === 'off' ? 'turned off (proc_checks=off)' : 'not readable'}: dying writers and reload forks are not seen; ` +
    `send guard on: one send at a time, each confirmed on PM2's bus, so a closed channel is never written twice (PM2's daemon stays up)`
  );
}

/** PM2 puts its console on the bus only when PM2_LOG_DATE_FORMAT is a non-empty string. */
export const GUARD_BLIND =
  'PM2_LOG_DATE_FORMAT is empty: PM2 does not put its own log lines on the bus, so the send guard cannot see a failed write; set PM2_LOG_DATE_FORMAT or run where /proc is readable';

export function spoolAtStart(spool: { failure?: string; dir: string; count: number }): string {
  return `spool: ${spool.failure ?? `${spool.dir}${spool.count > 0 ? `, ${spool.count} log packets from the last run` : ''}`}`;
}
