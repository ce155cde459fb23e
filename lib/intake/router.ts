/**
 * Pure routing: one bus `process:msg` packet + the process table + settings -> what to do.
 * No I/O, no clock: the caller delivers, holds or counts.
 */
import type { Settings } from '../operator/settings';
import { CLIENT_LOG_TOPIC, CLIENT_READY_TOPIC, EARLIER_DAEMON_PREFIX } from '../shared/protocol';
import { appKeyOf, isParkedPmId, numericPmId, type ProcessInfo, type Registry } from '../table/registry';


/** The topics routed to writers: the `log_topics` setting plus the client's own. */
export function logTopicSet(settings: Settings): ReadonlySet<string> {
  return new Set([...settings.log_topics, CLIENT_LOG_TOPIC]);
}

export type DropReason =
  | 'malformed'
  | 'no-topic'
  | 'no-data'
  | 'from-module'
  | 'unknown-sender'
  | 'writer-sends'
  | 'broadcast-off'
  | 'no-peers';

export type Route =
  /** A log packet for the writer of `appKey`; the outbox delivers or holds it. */
  | { kind: 'log'; appKey: string; senderId: number | undefined; sender: ProcessInfo | undefined }
  /** Another topic, for these peers. */
  | { kind: 'relay'; targets: number[] }
  /** `process.send('ready')` from a process (PM2's wait_ready signal). */
  | { kind: 'ready'; pmId: number }
  | { kind: 'drop'; reason: DropReason; appKey?: string };

export interface BusMessage {
  raw?: unknown;
  process?: { pm_id?: unknown; name?: unknown; namespace?: unknown };
}

export function route(msg: BusMessage, registry: Registry, settings: Settings, logTopics: ReadonlySet<string>): Route {
  const sender = msg?.process;
  if (sender === null || typeof sender !== 'object' || typeof sender.name !== 'string') {
    return { kind: 'drop', reason: 'malformed' };
  }
  const raw = msg.raw;
  const senderId = numericPmId(sender.pm_id);
  if (raw === 'ready') return senderId === undefined ? { kind: 'drop', reason: 'unknown-sender' } : { kind: 'ready', pmId: senderId };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { kind: 'drop', reason: 'malformed' };
  const { topic, data } = raw as { topic?: unknown; data?: unknown };
  if (typeof topic !== 'string' || topic === '') return { kind: 'drop', reason: 'no-topic' };
  if (topic === CLIENT_READY_TOPIC) return senderId === undefined ? { kind: 'drop', reason: 'unknown-sender' } : { kind: 'ready', pmId: senderId };
  if (data === undefined) return { kind: 'drop', reason: 'no-data' };

  const namespace = typeof sender.namespace === 'string' && sender.namespace !== '' ? sender.namespace : 'default';
  const proc = senderId === undefined ? undefined : registry.process(senderId);
  // A known sender already carries its app key: no string building per packet.
  const appKey = proc !== undefined && proc.name === sender.name && proc.namespace === namespace ? proc.appKey : appKeyOf(sender.name, namespace);
  if (proc?.isModule) return { kind: 'drop', reason: 'from-module', appKey };
  // A sender we have not seen yet (it started while we were listing) still names its app; a
  // parked `_old_<id>` worker of `pm2 reload` is still one of its app's instances, and so is a
  // sender of an earlier daemon (`_prev_<id>`, handed over across `pm2 update`).
  if (!proc && !isParkedPmId(sender.pm_id) && !fromEarlierDaemon(sender.pm_id) && senderId === undefined) {
    return { kind: 'drop', reason: 'unknown-sender', appKey };
  }
  if (!registry.app(appKey)) return { kind: 'drop', reason: 'unknown-sender', appKey };

  if (logTopics.has(topic)) {
    if (proc && proc.instance === settings.writer_instance && proc.status === 'online') {
      return { kind: 'drop', reason: 'writer-sends', appKey };
    }
    return { kind: 'log', appKey, senderId, sender: proc };
  }

  if (settings.broadcast === 'off') return { kind: 'drop', reason: 'broadcast-off', appKey };
  const targets: number[] = [];
  for (const p of registry.processes()) {
    if (p.pmId === senderId || p.isModule || p.status !== 'online') continue;
    if (settings.broadcast === 'app' ? p.appKey === appKey : settings.broadcast === 'namespace' ? p.namespace === namespace : true) {
      targets.push(p.pmId);
    }
  }
  return targets.length === 0 ? { kind: 'drop', reason: 'no-peers', appKey } : { kind: 'relay', targets };
}

function fromEarlierDaemon(id: unknown): boolean {
  return typeof id === 'string' && id.startsWith(EARLIER_DAEMON_PREFIX);
}
