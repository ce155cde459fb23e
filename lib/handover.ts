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

export const MARKER_TOPIC = 'pm2-scoped-intercom:marker';

export interface Marker {
  kind: 'stop' | 'start';
  nonce: string;
}

export function markerOf(packet: unknown): Marker | undefined {
  const raw = (packet as { raw?: { topic?: unknown; data?: unknown } } | null)?.raw;
  if (!raw || typeof raw !== 'object' || raw.topic !== MARKER_TOPIC) return undefined;
  const d = raw.data as Partial<Marker> | undefined;
  return d && (d.kind === 'stop' || d.kind === 'start') && typeof d.nonce === 'string' ? { kind: d.kind, nonce: d.nonce } : undefined;
}

export function markerPacket(kind: Marker['kind'], nonce: string): { topic: string; data: Marker } {
  return { topic: MARKER_TOPIC, data: { kind, nonce } };
}

export interface BridgeInfo {
  pid: number;
  /** The `stop` marker it waits for. */
  nonce: string;
}

export const files = {
  bridge: (dir: string) => path.join(dir, 'bridge.json'),
  handover: (dir: string, nonce: string) => path.join(dir, `handover-${nonce}.json`),
  handoverPrefix: 'handover-',
};

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value));
  fs.renameSync(tmp, file);
}

export function readBridge(dir: string): BridgeInfo | undefined {
  try {
    const info = JSON.parse(fs.readFileSync(files.bridge(dir), 'utf8')) as BridgeInfo;
    process.kill(info.pid, 0);
    return info;
  } catch {
    return undefined;
  }
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
  #onStop: (() => void) | undefined;

  arm(nonce: string, onStop: () => void): void {
    this.#nonce = nonce;
    this.#onStop = onStop;
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
        this.#onStop?.();
        return;
      }
      // Other markers go on to the start gate, which consumes them.
      handle(p);
    };
  }
}
