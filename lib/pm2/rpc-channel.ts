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
import { answerError, encodeProbeCall, encodeSendCall, FrameReader, stringArg, swapAnswerOf } from './rpc-frames';
import type { SendDone } from '../shared/packet';

export interface RpcChannel {
  /** false once the connection has closed: use PM2's client instead. */
  readonly open: boolean;
  /**
   * A send is followed, in the same write, by a probe (rpc-frames.ts `swapAnswer`) where the probe
   * policy asks for one: `done`'s second argument says whether the send reached a worker that a
   * reload in progress had just forked (false also for a send the policy found beyond any reload).
   */
  send(pmId: number, topic: string, data: unknown, done: SendDone): void;
  /** How many sends went with the probe, without it, and followed by one (see ProbePolicy). */
  probeStats(): ProbeStats;
  close(): void;
}

/** Which sends carry the reload probe (proc/reload-window.ts `ReloadWindow`). */
export interface ProbePolicy {
  /** Before a write: must this send carry the probe? */
  needed(pmId: number): boolean;
  /**
   * Right after a write (whole, nothing queued): may no reload come before PM2 reads it? false:
   * a send written without the probe is followed at once by one of its own, whose `Unknown pm_id`
   * still clears it (no reload was in progress after it); otherwise its swap is in doubt (undefined).
   */
  written(): boolean;
}

export interface ProbeStats {
  probed: number;
  unprobed: number;
  followUps: number;
  /** Follow-up probes that found a reload in progress: the send's swap left to timing. */
  inDoubt: number;
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
  /** The probe was written after the send, on its own: a parked key then leaves the swap in doubt. */
  followUp?: boolean;
}

/** The most a write can hold to reach the daemon's socket as one kernel buffer (see send). */
const ONE_READ_BYTES = 32 * 1024;

/**
 * The probe's answer as the send's word: a follow-up probe that finds a reload in progress cannot
 * tell whether the swap came before the send or after it (undefined: timing judges).
 */
function probeWord(c: Call, word: boolean | undefined, stats: ProbeStats): boolean | undefined {
  if (c.followUp !== true || word !== true) return word;
  stats.inDoubt++;
  return undefined;
}

function settle(c: Call): void {
  if (c.error !== undefined && c.error !== null) c.done(new Error(c.error));
  else c.done(null, c.together ? (c.swapped ?? undefined) : undefined);
}

export interface RpcChannelOptions {
  /**
   * Follow sends with the reload probe (rpc-frames.ts; the `reload_probe` setting): true: every one;
   * a policy: those it asks for. It costs PM2's daemon an error it builds per probe (about as much
   * CPU as the send itself). @default true
   */
  probe?: boolean | ProbePolicy;
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

interface Probing {
  always: boolean;
  policy: ProbePolicy | undefined;
  stats: ProbeStats;
}

/** Writes one send, with the probe where it goes, and sets what its answer will be judged by. */
function writeSend(sock: net.Socket, w: { pmId: number; topic: string; data: unknown; id: string; c: Call }, { always, policy, stats }: Probing): void {
  const { pmId, id, c } = w;
  const probe = always || (policy !== undefined && policy.needed(pmId));
  const frames = encodeSendCall(pmId, w.topic, w.data, id, probe ? `${id}?` : undefined);
  sock.write(frames);
  const whole = sock.writableLength === 0;
  const beyondReloads = policy !== undefined && policy.written() && whole;
  if (probe) {
    stats.probed++;
    c.swapped = null;
    // The probe speaks for the send only if the daemon reads both in one read: written whole at
    // once (nothing queued in Node, no partial write) and small enough for one kernel buffer of
    // a Unix socket (one skb: up to 32 KB of pages plus a head), so no read can fall between.
    c.together = frames.length <= ONE_READ_BYTES && whole;
    return;
  }
  if (policy === undefined) return;
  stats.unprobed++;
  c.together = true;
  if (beyondReloads) {
    c.swapped = false;
    return;
  }
  // Someone else may be connected (or the write was queued): ask now whether a reload is in progress.
  c.swapped = null;
  c.followUp = true;
  stats.followUps++;
  sock.write(encodeProbeCall(pmId, `${id}?`));
}

/** The channel over a connected socket. */
function rpcChannel(sock: net.Socket, opts: RpcChannelOptions = {}): RpcChannel {
  const stats: ProbeStats = { probed: 0, unprobed: 0, followUps: 0, inDoubt: 0 };
  const probing: Probing = { always: opts.probe === undefined || opts.probe === true, policy: typeof opts.probe === 'object' ? opts.probe : undefined, stats };
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
    if (probe) c.swapped = probeWord(c, swapAnswerOf(args[0]), stats);
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
      const c: Call = { done, error: null, swapped: undefined, together: false };
      calls.set(id, c);
      writeSend(sock, { pmId, topic, data, id, c }, probing);
    },
    probeStats: () => ({ ...stats }),
    close() {
      closed();
      sock.destroy();
    },
  };
}
