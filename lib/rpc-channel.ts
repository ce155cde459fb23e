/**
 * The relay's own connection to PM2's RPC socket, for `sendDataToProcessId` only (the wire format
 * is amp.ts). PM2's daemon serves any number of RPC connections; this one carries the log lines,
 * PM2's own client everything else (list, bus, ...).
 *
 * Why: per relayed line, PM2's generic client costs more CPU than the relay's own work (amp.ts says
 * what it does twice). Same calls, same answers, same order: the daemon cannot tell the difference.
 *
 * If the connection closes while sends are out, each of them is answered with an error: the
 * outbox keeps those packets for the process's next generation, as for a send PM2 refused. (PM2's
 * own client never answers them: the app's queue would wait forever.) Later sends go through PM2's
 * client, which reconnects by itself.
 */
import net from 'node:net';
import { answerError, encodeSendCall, FrameReader, stringArg } from './amp';

export interface RpcChannel {
  /** false once the connection has closed: use PM2's client instead. */
  readonly open: boolean;
  send(pmId: number, topic: string, data: unknown, done: (err: Error | null) => void): void;
  close(): void;
}

/** Connect to the daemon's RPC socket (a Unix socket path, or a Windows pipe); undefined if it fails. */
export function openRpcChannel(address: string, timeoutMs = 3000): Promise<RpcChannel | undefined> {
  return new Promise((resolve) => {
    const sock = net.createConnection(address);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(undefined);
    }, timeoutMs);
    sock.once('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(rpcChannel(sock));
    });
  });
}

/** The channel over a connected socket (exported for tests). */
export function rpcChannel(sock: net.Socket): RpcChannel {
  // Call ids: unique on this connection (the daemon answers each call with its id).
  const prefix = `pm2si-${process.pid}:`;
  let next = 0;
  const waiting = new Map<string, (err: Error | null) => void>();
  let open = true;
  const reader = new FrameReader((args) => {
    if (args.length < 2) return;
    const id = stringArg(args[args.length - 1]);
    const done = waiting.get(id);
    if (done === undefined) return;
    waiting.delete(id);
    const error = answerError(args[0]);
    done(error === undefined ? null : new Error(error));
  });
  sock.on('data', (chunk: Buffer) => reader.push(chunk));
  const closed = (): void => {
    if (!open) return;
    open = false;
    const out = [...waiting.values()];
    waiting.clear();
    for (const done of out) done(new Error('the connection to PM2 closed before PM2 answered'));
  };
  sock.on('error', closed);
  sock.on('close', closed);
  // The bus and PM2's client keep the module alive, not this.
  sock.unref();
  return {
    get open() {
      return open;
    },
    send(pmId, topic, data, done) {
      if (!open) {
        // Not written: PM2 never had it (as a refused send).
        process.nextTick(done, new Error('the connection to PM2 is closed'));
        return;
      }
      const id = prefix + next++;
      const frame = encodeSendCall(pmId, topic, data, id);
      waiting.set(id, done);
      sock.write(frame);
    },
    close() {
      closed();
      sock.destroy();
    },
  };
}
