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
import fs from 'node:fs';
import path from 'node:path';
import { FORMAT } from './versioned';

/** The format of handover files (see versioned.ts). */
export const HANDOVER_FORMAT = FORMAT;

export const MARKER_TOPIC = 'pm2-scoped-intercom:marker';

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

export function markerOf(packet: unknown): Marker | undefined {
  const raw = (packet as { raw?: { topic?: unknown; data?: unknown } } | null)?.raw;
  if (!raw || typeof raw !== 'object' || raw.topic !== MARKER_TOPIC) return undefined;
  const d = raw.data as Partial<Marker> | undefined;
  if (!d || (d.kind !== 'stop' && d.kind !== 'start') || typeof d.nonce !== 'string') return undefined;
  return typeof d.protocol === 'number' ? { kind: d.kind, nonce: d.nonce, protocol: d.protocol } : { kind: d.kind, nonce: d.nonce };
}

export function markerPacket(kind: Marker['kind'], nonce: string): { topic: string; data: Marker } {
  return { topic: MARKER_TOPIC, data: kind === 'start' ? { kind, nonce, protocol: PROTOCOL } : { kind, nonce } };
}

export interface BridgeInfo {
  pid: number;
  /** The `stop` marker it waits for. */
  nonce: string;
  /** The folder it writes its handover file to (0.1.0's bridge.json has none: the folder it is in). */
  dir: string;
}

export const files = {
  bridge: (dir: string) => path.join(dir, 'bridge.json'),
  handover: (dir: string, nonce: string) => path.join(dir, `handover-${nonce}.json`),
  handoverPrefix: 'handover-',
};

export function readBridge(dir: string): BridgeInfo | undefined {
  try {
    const info = JSON.parse(fs.readFileSync(files.bridge(dir), 'utf8')) as Partial<BridgeInfo>;
    if (typeof info.pid !== 'number' || typeof info.nonce !== 'string') return undefined;
    process.kill(info.pid, 0);
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
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = fs.readFileSync(path.join(procRoot, pid, 'cmdline'), 'utf8').split('\0');
    } catch {
      continue;
    }
    const at = argv.findIndex((a) => a.endsWith(`${path.sep}bridge.js`));
    if (at < 0 || !dirs.includes(argv[at + 1]) || !argv[at + 2]) continue;
    return { pid: Number(pid), nonce: argv[at + 2], dir: argv[at + 1] };
  }
  return undefined;
}

/**
 * Gate in front of the relay's bus handler for the new module: drop until our `start` marker,
 * then hold until the bridge's packets are in, then pass.
 */
export class StartGate {
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
export class StopGate {
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
