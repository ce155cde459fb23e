/**
 * What the module and the package's client (client/) say to each other over PM2's bus: the
 * topics, and the batch format. One declaration for both sides. A leaf: it imports nothing.
 */

/** The package's (and so the module's) name: `pm2 install` names the module after it. */
export const MODULE_NAME = 'pm2-scoped-intercom';
/** The client's log packets, routed to the writer of the sender's app like log4js's. */
export const CLIENT_LOG_TOPIC = 'pm2-scoped-intercom:log';
/** A writer's "I listen" announcement (the client's `ready`). */
export const CLIENT_READY_TOPIC = 'pm2-scoped-intercom:ready';
/** The handover markers a stopping and a starting module put on the bus (restart/handover.ts). */
export const MARKER_TOPIC = 'pm2-scoped-intercom:marker';
/** The send guard's fence, echoed back by PM2's bus (deliver/send-guard.ts). */
export const FENCE_TOPIC = 'pm2-scoped-intercom:fence';
/** A handed-over packet's pm_id, when an earlier daemon published it (restart/bridge.ts). */
export const EARLIER_DAEMON_PREFIX = '_prev_';
/** The newest batch format this version reads and writes (package.json `pm2ScopedIntercom.batch`). */
export const BATCH_FORMAT = 1;

/** How many log records a packet carries: a client batch's length, else 1. O(1). */
export function recordsOf(packet: { topic: string; data: unknown }): number {
  if (packet.topic !== CLIENT_LOG_TOPIC) return 1;
  const b = (packet.data as { b?: unknown } | null)?.b;
  return Array.isArray(b) ? b.length : 1;
}
