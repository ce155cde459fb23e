/**
 * No gap while the module restarts (`pm2 set` restarts it): PM2's bus keeps no packet for a
 * listener that is not there, so a short-lived bridge listens from the old module's shutdown until
 * the new module listens.
 *
 * The stream is cut exactly with markers that travel the bus itself (everyone sees one order):
 *   old module: spawns the bridge, waits until it listens, sends marker `stop`, relays everything
 *               before its own `stop` marker and nothing after;
 *   bridge:     keeps every packet after `stop` until it sees a `start` marker, writes them to a
 *               handover file and exits;
 *   new module: listens, sends marker `start`, ignores what came before its marker (the bridge
 *               has it), relays the handover file first, then what came after its marker.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MARKER_TOPIC } from '../shared/protocol';
import { pidAlive, type LogFn } from '../shared/system';
import { mkdirPrivate } from '../shared/private-files';
import { FORMAT, readVersioned } from './versioned';

/**
 * Timings, all under PM2's kill_timeout (package.json `apps`: 8000 ms) on the stop side. The bridge
 * loads pm2's API, which can take seconds on a loaded machine (docs/architecture-notes.md).
 */
const BRIDGE_START_MS = 4000;
const MARKER_ECHO_MS = 1000;
/** How long a new module waits for the bridge's packets. */
const HANDOVER_WAIT_MS = 3000;

/** The format of handover files (see versioned.ts). */
export const HANDOVER_FORMAT = FORMAT;

/** A marker the module posts on the bus to cut the stream at a restart (see the file's comment). */
export interface Marker {
  kind: 'stop' | 'start';
  nonce: string;
  /**
   * On `start`: the handover protocol of the new module. 2 (since the state folder moved out of
   * the module's folder): it reads the handover from the bridge's own folder. Absent (0.1.0): it
   * reads it from the module's folder.
   */
  protocol?: number;
}

/** This version's handover protocol (see Marker.protocol). */
export const PROTOCOL = 2;

/**
 * The marker a bus packet carries, if any. `from`: only from a process of that name (PM2 names the
 * sender; an app cannot): any app can put the marker topic on the bus, and the bridge ends its
 * handover at the first `start` it sees.
 */
export function markerOf(packet: unknown, from?: string): Marker | undefined {
  const p = packet as { raw?: { topic?: unknown; data?: unknown }; process?: { name?: unknown } } | null;
  const raw = p?.raw;
  if (!raw || typeof raw !== 'object' || raw.topic !== MARKER_TOPIC) return undefined;
  if (from !== undefined && p?.process?.name !== from) return undefined;
  const d = raw.data as Partial<Marker> | undefined;
  if (!d || (d.kind !== 'stop' && d.kind !== 'start') || typeof d.nonce !== 'string') return undefined;
  return typeof d.protocol === 'number' ? { kind: d.kind, nonce: d.nonce, protocol: d.protocol } : { kind: d.kind, nonce: d.nonce };
}

/** The packet to `process.send` for a marker (a `start` one says this version's protocol). */
export function markerPacket(kind: Marker['kind'], nonce: string): { topic: string; data: Marker } {
  return { topic: MARKER_TOPIC, data: kind === 'start' ? { kind, nonce, protocol: PROTOCOL } : { kind, nonce } };
}

/** A running bridge, as its bridge.json (or its command line) tells it. */
export interface BridgeInfo {
  pid: number;
  /** The `stop` marker it waits for. */
  nonce: string;
  /** The folder it writes its handover file to (0.1.0's bridge.json has none: the folder it is in). */
  dir: string;
}

/** The files bridges and modules exchange in a state folder. */
export const files = {
  bridge: (dir: string) => path.join(dir, 'bridge.json'),
  handover: (dir: string, nonce: string) => path.join(dir, `handover-${nonce}.json`),
  handoverPrefix: 'handover-',
};

/**
 * A nonce as bridges have them (random hex: 16 digits): it becomes part of a file name, so never
 * one with a path in it (a bridge found in the process table can be any local user's process).
 */
function plainNonce(nonce: unknown): nonce is string {
  return typeof nonce === 'string' && /^[\w-]{1,64}$/.test(nonce);
}

/** The bridge announced in `dir`, if its process still runs. */
export function readBridge(dir: string): BridgeInfo | undefined {
  try {
    const info = JSON.parse(fs.readFileSync(files.bridge(dir), 'utf8')) as Partial<BridgeInfo>;
    if (typeof info.pid !== 'number' || !plainNonce(info.nonce)) return undefined;
    if (!pidAlive(info.pid)) return undefined;
    return { pid: info.pid, nonce: info.nonce, dir: typeof info.dir === 'string' ? info.dir : dir };
  } catch {
    return undefined;
  }
}

/**
 * The running bridge that writes to one of `dirs`: from its bridge.json, else from the process
 * table. `pm2 install` deletes the module's folder after stopping the old version, and with it
 * the bridge.json of a 0.1.0 bridge (which kept its files there); the bridge itself still runs,
 * named by its command line `node .../bridge.js <dir> <nonce> ...` (Linux /proc; elsewhere such
 * a bridge is not found and its packets are lost, as they were before).
 */
export function findBridge(dirs: string[], procRoot = '/proc'): BridgeInfo | undefined {
  for (const d of dirs) {
    const info = readBridge(d);
    if (info) return info;
  }
  let pids: string[] = [];
  try {
    pids = fs.readdirSync(procRoot).filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  const uid = process.getuid?.();
  for (const pid of pids) {
    let argv: string[];
    try {
      // Only this user's processes: anyone can start one named like a bridge.
      if (uid !== undefined && fs.statSync(path.join(procRoot, pid)).uid !== uid) continue;
      argv = fs.readFileSync(path.join(procRoot, pid, 'cmdline'), 'utf8').split('\0');
    } catch {
      continue;
    }
    const at = argv.findIndex((a) => a.endsWith(`${path.sep}bridge.js`));
    if (at < 0 || !dirs.includes(argv[at + 1]) || !plainNonce(argv[at + 2])) continue;
    return { pid: Number(pid), nonce: argv[at + 2], dir: argv[at + 1] };
  }
  return undefined;
}

/**
 * Gate in front of the relay's bus handler for the new module: drop until our `start` marker,
 * then hold until the bridge's packets are in, then pass.
 */
class StartGate {
  #state: 'before' | 'holding' | 'open';
  readonly #nonce: string;
  readonly #held: unknown[] = [];
  #dropped = 0;

  constructor(nonce: string, bridged: boolean) {
    this.#nonce = nonce;
    this.#state = bridged ? 'before' : 'open';
  }

  get dropped(): number {
    return this.#dropped;
  }

  get sawMarker(): boolean {
    return this.#state !== 'before';
  }

  /** Wrap the relay's handler. */
  wrap(handle: (p: unknown) => void): (p: unknown) => void {
    return (p) => {
      const m = markerOf(p);
      if (m) {
        if (m.kind === 'start' && m.nonce === this.#nonce && this.#state === 'before') this.#state = 'holding';
        return;
      }
      if (this.#state === 'open') handle(p);
      else if (this.#state === 'holding') this.#held.push(p);
      else this.#dropped++;
    };
  }

  /** The bridge's packets are in (or will not come): relay what waited, then pass. */
  open(handle: (p: unknown) => void): void {
    this.#state = 'open';
    for (const p of this.#held.splice(0)) handle(p);
  }
}

/** Gate for the old module: pass until our `stop` marker comes back, then drop. */
class StopGate {
  #stopped = false;
  #nonce: string | undefined;

  /** From now on, our `stop` marker (`nonce`) ends what passes. */
  arm(nonce: string): void {
    this.#nonce = nonce;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  wrap(handle: (p: unknown) => void): (p: unknown) => void {
    return (p) => {
      if (this.#stopped) return;
      const m = markerOf(p);
      if (m && m.kind === 'stop' && m.nonce === this.#nonce) {
        this.#stopped = true;
        return;
      }
      // Other markers go on to the start gate, which consumes them.
      handle(p);
    };
  }
}

export interface HandoverOptions {
  /** The state folder (where bridges announce themselves and leave their handover files). */
  dir: string;
  /** 0.1.0's folder (the module's own), also searched for a bridge and leftovers. */
  legacy?: string;
  log: LogFn;
  warn: LogFn;
}

/**
 * Both sides of a module restart, for app.ts: `gate` goes in front of the relay's bus handler,
 * `takeOver` (after the relay listens) relays what the last run's bridge kept, `handOff` (at
 * shutdown) starts this run's bridge and cuts the stream at our `stop` marker.
 */
export class Handover {
  readonly #dir: string;
  readonly #legacy: string | undefined;
  readonly #dirs: string[];
  readonly #log: LogFn;
  readonly #warn: LogFn;
  /** A bridge left by the previous run: it holds what the bus carried while no module listened. */
  readonly #bridge: BridgeInfo | undefined;
  readonly #startNonce = crypto.randomBytes(8).toString('hex');
  readonly #startGate: StartGate;
  readonly #stopGate = new StopGate();
  /** The relay's own handler, behind the gates. */
  #handle: (packet: unknown) => void = () => {};

  constructor(opts: HandoverOptions) {
    this.#dir = opts.dir;
    this.#legacy = opts.legacy;
    this.#dirs = opts.legacy ? [opts.dir, opts.legacy] : [opts.dir];
    this.#log = opts.log;
    this.#warn = opts.warn;
    this.#bridge = findBridge(this.#dirs);
    this.#startGate = new StartGate(this.#startNonce, this.#bridge !== undefined);
  }

  /** Put the gates in front of the relay's bus handler (Relay.start's `wrap`). */
  readonly gate = (handle: (packet: unknown) => void): ((packet: unknown) => void) => {
    this.#handle = handle;
    return this.#stopGate.wrap(this.#startGate.wrap(handle));
  };

  /**
   * Start side, once the relay listens: relay what bridges that ended without a new module left,
   * then (if the last run's bridge runs) send our `start` marker, relay its handover file, and open
   * the gate: what waited behind it follows.
   */
  async takeOver(relay: { handleMessage(packet: unknown): void }): Promise<void> {
    const bridge = this.#bridge;
    for (const f of this.#dirs.flatMap((d) => leftoverHandovers(d, bridge?.nonce))) this.#replay(relay, f, this.#warn);
    if (!bridge) return;
    process.send?.(markerPacket('start', this.#startNonce));
    const f = files.handover(bridge.dir, bridge.nonce);
    const arrived = await waitUntil(() => fs.existsSync(f), HANDOVER_WAIT_MS);
    // Our own copy of the marker may come after the bridge's: until it does, what we receive
    // is the bridge's to hand over, and after it, ours.
    const sawOwnMarker = await waitUntil(() => this.#startGate.sawMarker, HANDOVER_WAIT_MS);
    if (arrived) this.#replay(relay, f, this.#log);
    else this.#warn(`the handover bridge (pid ${bridge.pid}) sent nothing within ${HANDOVER_WAIT_MS} ms: packets sent while the module restarted may be lost`);
    if (!sawOwnMarker) this.#warn(`the start marker did not come back within ${HANDOVER_WAIT_MS} ms: ${this.#startGate.dropped} packets received before it were skipped`);
    this.#startGate.open(this.#handle);
  }

  /**
   * Stop side: keep relaying until a bridge listens, then cut the stream at our own `stop` marker.
   * Returns whether a bridge listens until the next start (else the gate is shut now).
   */
  async handOff(): Promise<boolean> {
    const stopNonce = crypto.randomBytes(8).toString('hex');
    let handedOver = false;
    let bridgePid: number | undefined;
    try {
      bridgePid = this.#spawnBridge(stopNonce);
      if (await waitUntil(() => readBridge(this.#dir)?.nonce === stopNonce, BRIDGE_START_MS)) {
        this.#stopGate.arm(stopNonce);
        process.send?.(markerPacket('stop', stopNonce));
        handedOver = await waitUntil(() => this.#stopGate.stopped, MARKER_ECHO_MS);
      }
    } catch (err) {
      this.#warn(`could not start the handover bridge: ${(err as Error).message}`);
    }
    if (!handedOver) {
      this.#stopGate.arm('none');
      // A bridge that got no stop marker would only mislead the next start (it hands over nothing).
      if (bridgePid) {
        try {
          process.kill(bridgePid, 'SIGTERM');
        } catch {
          /* never started */
        }
      }
    }
    return handedOver;
  }

  #spawnBridge(nonce: string): number | undefined {
    mkdirPrivate(this.#dir);
    // The bridge takes markers from processes of the module's name only (PM2 sets `name` in its env).
    const env: NodeJS.ProcessEnv = { ...process.env, PM2SI_DAEMON_ARGV1: process.argv[1], PM2SI_MODULE_NAME: process.env.name || 'pm2-scoped-intercom' };
    delete env.PM2_USAGE;
    const child = spawn(process.execPath, [path.join(__dirname, 'bridge.js'), this.#dir, nonce, '60000', this.#legacy ?? ''], { detached: true, stdio: 'ignore', env });
    child.unref();
    return child.pid;
  }

  /** Relay a handover file's packets and delete it. */
  #replay(relay: { handleMessage(packet: unknown): void }, file: string, say: LogFn): void {
    // A format this version does not know is set aside (and said), not relayed and not deleted.
    const h = readVersioned(file, this.#warn) as { packets?: unknown[]; overflow?: number; reason?: string } | undefined;
    if (!h) return;
    try {
      const packets = Array.isArray(h.packets) ? h.packets : [];
      for (const p of packets) relay.handleMessage(p);
      say(`relayed ${packets.length} packets the handover bridge received while the module restarted (${h.reason ?? 'unknown'}${h.overflow ? `, ${h.overflow} lost to its bound` : ''})`);
    } catch (err) {
      this.#warn(`could not read the handover file ${file}: ${(err as Error).message}`);
    }
    try {
      fs.unlinkSync(file);
    } catch {
      /* gone */
    }
  }
}

/** Handover files of bridges that ended without a new module (their packets are still owed). */
function leftoverHandovers(dir: string, current: string | undefined): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.startsWith(files.handoverPrefix) && f.endsWith('.json') && f !== path.basename(files.handover(dir, current ?? '')))
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

function waitUntil(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const poll = (): void => {
      if (check()) return resolve(true);
      if (Date.now() >= deadline) return resolve(false);
      setTimeout(poll, 5);
    };
    poll();
  });
}
