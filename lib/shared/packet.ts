/**
 * The packet a log line or a relayed message travels as, from the bus to PM2's
 * `sendDataToProcessId`, and the one PM2 call that delivers it. A leaf: it imports nothing.
 */

export interface OutPacket {
  topic: string;
  data: unknown;
  /** What it costs held in memory (estimated when it is held). */
  bytes?: number;
  /** Non-string data: its length as JSON in UTF-8 bytes, what PM2 writes into the writer's pipe (measured when it is held). */
  wire?: number;
  /** Its place in its app's order, given when it is first taken to be sent (hold/hold-buffer.ts). */
  seq?: number;
}

/**
 * Sets `bytes` (memory held: the data, the wrapper object, a queue slot and V8's string header;
 * docs/performance.md) and, for non-string data, `wire`, from one serialisation; returns `bytes`.
 */
export function sizeUp(packet: OutPacket): number {
  const d = packet.data;
  if (typeof d === 'string') return (packet.bytes = d.length + 80);
  try {
    const json = JSON.stringify(d) ?? '';
    packet.wire = Buffer.byteLength(json);
    return (packet.bytes = json.length * 2 + 80);
  } catch {
    return (packet.bytes = 1024);
  }
}

/**
 * A send's answer, called once per send, in send order. `swapped` (only from the module's own RPC
 * connection, pm2/rpc-channel.ts): whether PM2 handed the packet to a worker that a reload had
 * just forked under the pm_id; undefined when unknown.
 */
export type SendDone = (err: Error | null, swapped?: boolean) => void;
export type SendFn = (pmId: number, topic: string, data: unknown, done: SendDone) => void;
