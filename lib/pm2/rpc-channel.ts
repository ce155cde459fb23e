/**
 * The relay's own connection to PM2's RPC socket, for `sendDataToProcessId` only (the wire format
 * is rpc-frames.ts). PM2's daemon serves any number of RPC connections; this one carries the log lines,
 * PM2's own client everything else (list, bus, ...).
 *
 * Why: per relayed line, PM2's generic client costs more CPU than the relay's own work (rpc-frames.ts says
 * what it does twice). Same calls, same answers, same order: the daemon cannot tell the difference.
 *
 * If the connection closes while sends are out, each of them is answered with an error: the
 * outbox keeps those packets for the process's next generation, as for a send PM2 refused. (PM2's
 * own client never answers them: the app's queue would wait forever.) Later sends go through PM2's
 * client, which reconnects by itself.
 */
import net from 'node:net';
import { answerError, encodeSendCall, FrameReader, stringArg, swapAnswerOf } from './rpc-frames';
import type { SendDone } from '../shared/packet';

export interface RpcChannel {
  /** false once the connection has closed: use PM2's client instead. */
  readonly open: boolean;
  /**
   * Each send is followed, in the same write, by a probe (rpc-frames.ts `swapAnswer`): `done`'s second
   * argument says whether the send reached a worker that a reload in progress had just forked.
   */
  send(pmId: number, topic: string, data: unknown, done: SendDone): void;
  close(): void;
}

const CLOSED = 'the connection to PM2 closed before PM2 answered';

/** A send out, and what PM2 has answered so far (null: not yet). */
interface Call {
  readonly done: SendDone;
  /** The send's error message; undefined: accepted. */
  error: string | undefined | null;
  /** The probe's word (rpc-frames.ts `swapAnswer`). */
  swapped: boolean | undefined | null;
  /** Whether send and probe reached the daemon in one piece (else the probe says nothing). */
  together: boolean;
}

/** The most a write can hold to reach the daemon's socket as one kernel buffer (see send). */
const ONE_READ_BYTES = 32 * 1024;

function settle(c: Call): void {
  if (c.error !== undefined && c.error !== null) c.done(new Error(c.error));
  else c.done(null, c.together ? (c.swapped ?? undefined) : undefined);
}

export interface RpcChannelOptions {
  /**
   * Follow each send with the reload probe (rpc-frames.ts; the `reload_probe` setting). It costs PM2's
   * daemon an error it builds per send (about as much CPU as the send itself). @default true
   */
  probe?: boolean;
}

/** Connect to the daemon's RPC socket (a Unix socket path, or a Windows pipe); undefined if it fails. */
export function openRpcChannel(address: string, opts: RpcChannelOptions = {}, timeoutMs = 3000): Promise<RpcChannel | undefined> {
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
      resolve(rpcChannel(sock, opts));
    });
  });
}

/** The channel over a connected socket. */
function rpcChannel(sock: net.Socket, opts: RpcChannelOptions = {}): RpcChannel {
  const probe = opts.probe !== false;
  // Call ids: unique on this connection (the daemon answers each call with its id).
  const prefix = `pm2si-${process.pid}:`;
  let next = 0;
  /** Sends out, by call id; the probe's call id is the send's plus `?`. */
  const calls = new Map<string, Call>();
  let open = true;
  const reader = new FrameReader((args) => {
    if (args.length < 2) return;
    const id = stringArg(args[args.length - 1]);
    const probe = id.endsWith('?');
    const key = probe ? id.slice(0, -1) : id;
    const c = calls.get(key);
    if (c === undefined) return;
    if (probe) c.swapped = swapAnswerOf(args[0]);
    else c.error = answerError(args[0]);
    // Done once both are answered (PM2 answers them in order; a test's fake may not).
    if (c.error === null || c.swapped === null) return;
    calls.delete(key);
    settle(c);
  });
  sock.on('data', (chunk: Buffer) => reader.push(chunk));
  const closed = (): void => {
    if (!open) return;
    open = false;
    const out = [...calls.values()];
    calls.clear();
    for (const c of out) {
      if (c.error === null) c.error = CLOSED;
      if (c.swapped === null) c.swapped = undefined;
      settle(c);
    }
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
      const c: Call = { done, error: null, swapped: probe ? null : undefined, together: probe };
      calls.set(id, c);
      const frames = encodeSendCall(pmId, topic, data, id, probe ? `${id}?` : undefined);
      sock.write(frames);
      // The probe speaks for the send only if the daemon reads both in one read: written whole at
      // once (nothing queued in Node, no partial write) and small enough for one kernel buffer of
      // a Unix socket (one skb: up to 32 KB of pages plus a head), so no read can fall between.
      if (probe && (frames.length > ONE_READ_BYTES || sock.writableLength > 0)) c.together = false;
    },
    close() {
      closed();
      sock.destroy();
    },
  };
}
