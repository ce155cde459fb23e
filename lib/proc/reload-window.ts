/**
 * When does a send need the reload probe (rpc-frames.ts)? Only while a `pm2 reload` could swap its
 * writer before PM2 handles it. Read from /proc.
 *
 * Why: the probe makes PM2's daemon build an Error per send, about doubling its CPU per relayed
 * line, for an event that only a client of the daemon's RPC socket can ask for (the CLI, the API, a
 * module such as pm2-logrotate, PM2 Plus's agent), apart from `max_memory_restart`, which the daemon
 * runs by itself (those apps are always probed). PM2's API (the CLI too) looks its targets up with
 * `getMonitorData` and waits for the answer before it asks for a reload (API.js `_operate`, PM2 5.4
 * to 7.0), and the daemon reads a new connection from the turn after the one that accepted it, so a
 * client accepted after a send was written asks for a reload two turns later at the earliest, while
 * the send is read in the next turn at the latest. So a send written whole, after which /proc shows
 * nobody but the module connected to the daemon, cannot meet a reload's swap: it needs no probe.
 * (A client of its own making that asks for a reload as its very first call could, in one turn of
 * the daemon's in a million; PM2's API never does.)
 *
 * How: the number of descriptors the daemon holds (the size `stat` gives /proc/<daemon>/fd, Linux
 * 6.2 and later: one fstat, ~4 us), read after every write, against the count at which
 * /proc/<daemon>/net/unix showed no connection to the RPC socket but the module's own (an accepted
 * connection is listed there with the socket's path). Any change, up or down, ends that until two
 * scans SETTLE_MS apart agree again; a short-lived file the daemon opens (it reads /proc for
 * `pm2 list`) only costs a few probes.
 */
import fs from 'node:fs';

/** A count seen without other clients is trusted once two scans this far apart agree. */
export const SETTLE_MS = 100;

export interface DaemonClientsOptions {
  daemonPid: number;
  /** The daemon's RPC socket path (PM2's `rpc.sock`). */
  rpcSocket: string;
  /** How many connections to the RPC socket are the module's own right now. */
  own: () => number;
  now?: () => number;
  procRoot?: string;
  /** Seams for tests: the daemon's descriptor count (undefined: cannot tell), its unix socket table. */
  fdCount?: () => number | undefined;
  unixTable?: () => string | undefined;
}

/** Is nobody but the module connected to PM2's daemon right now? false whenever /proc cannot tell. */
export interface DaemonClients {
  alone(): boolean;
}

export const NEVER_ALONE: DaemonClients = Object.freeze({ alone: () => false });

/** Connections accepted on `socketPath` in a /proc/net/unix table (the listener itself not counted). */
export function acceptedOn(table: string, socketPath: string): number {
  let n = 0;
  for (const line of table.split('\n')) {
    // Num RefCount Protocol Flags Type St Inode [Path]: the path is the rest of the line.
    const m = /^\s*[0-9a-f]+: [0-9A-F]+ [0-9A-F]+ [0-9A-F]+ [0-9A-F]+ ([0-9A-F]+) \d+ (.*)$/.exec(line);
    // St 01 is a socket that is not connected: the listener; any other state is a client's.
    if (m !== null && m[2] === socketPath && m[1] !== '01') n++;
  }
  return n;
}

export function daemonClients(opts: DaemonClientsOptions): DaemonClients {
  const root = opts.procRoot ?? '/proc';
  let fdCount = opts.fdCount;
  if (fdCount === undefined) {
    let dir: number;
    try {
      dir = fs.openSync(`${root}/${opts.daemonPid}/fd`, 'r');
      // A kernel before 6.2 gives the directory a size of 0: it cannot tell.
      if (fs.fstatSync(dir).size === 0) return NEVER_ALONE;
    } catch {
      return NEVER_ALONE;
    }
    fdCount = () => {
      try {
        return fs.fstatSync(dir).size;
      } catch {
        return undefined;
      }
    };
  }
  const unixTable =
    opts.unixTable ??
    (() => {
      try {
        return fs.readFileSync(`${root}/${opts.daemonPid}/net/unix`, 'latin1');
      } catch {
        return undefined;
      }
    });
  return new ClientsFromProc(fdCount, () => {
    const table = unixTable();
    return table === undefined ? undefined : acceptedOn(table, opts.rpcSocket) - opts.own();
  }, opts.now ?? Date.now);
}

class ClientsFromProc implements DaemonClients {
  readonly #fdCount: () => number | undefined;
  /** Connections to the RPC socket that are not the module's (undefined: cannot tell). */
  readonly #others: () => number | undefined;
  readonly #now: () => number;
  /** The descriptor count at which two scans agreed that nobody else is connected. */
  #aloneAt: number | undefined = undefined;
  /** A first scan's finding of nobody else, at this count. */
  #candidate: { count: number; at: number } | undefined = undefined;
  /** A count at which a scan found someone else: not scanned again until it changes. */
  #busyAt: number | undefined = undefined;
  #lastScan = -Infinity;

  constructor(fdCount: () => number | undefined, others: () => number | undefined, now: () => number) {
    this.#fdCount = fdCount;
    this.#others = others;
    this.#now = now;
  }

  alone(): boolean {
    const n = this.#fdCount();
    if (n === undefined) return false;
    if (n === this.#aloneAt) return true;
    this.#aloneAt = undefined;
    if (n === this.#busyAt) return false;
    const now = this.#now();
    if (now - this.#lastScan >= SETTLE_MS / 2) this.#scan(n, now);
    return this.#aloneAt === n;
  }

  #scan(n: number, now: number): void {
    this.#lastScan = now;
    const others = this.#others();
    // Something opened or closed during the scan: it says nothing about `n`.
    if (this.#fdCount() !== n) return;
    if (others !== 0) {
      this.#candidate = undefined;
      this.#busyAt = others === undefined ? undefined : n;
      return;
    }
    this.#busyAt = undefined;
    const c = this.#candidate;
    if (c !== undefined && c.count === n && now - c.at >= SETTLE_MS) {
      this.#aloneAt = n;
      this.#candidate = undefined;
    } else if (c === undefined || c.count !== n) {
      this.#candidate = { count: n, at: now };
    }
  }
}

export interface ReloadWindowOptions {
  clients: DaemonClients;
  /** Has every process the daemon started lately been told apart (forks.ts `settled`)? */
  childrenSettled: () => boolean;
  /** Can the daemon reload this pm_id by itself (its app has `max_memory_restart`)? */
  reloadsItself: (pmId: number) => boolean;
}

/** The probe policy of the module's RPC channel (rpc-channel.ts `ProbePolicy`). */
export class ReloadWindow {
  readonly #opts: ReloadWindowOptions;
  /** What the last check after a write found. */
  #alone = false;

  constructor(opts: ReloadWindowOptions) {
    this.#opts = opts;
  }

  /** Before a write: must this send carry the probe? */
  needed(pmId: number): boolean {
    return !this.#alone || !this.#opts.childrenSettled() || this.#opts.reloadsItself(pmId);
  }

  /** Right after a write: is nobody else connected? (If not, a send written without the probe is followed by one.) */
  written(): boolean {
    this.#alone = this.#opts.clients.alone();
    return this.#alone;
  }
}
