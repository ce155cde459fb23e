/**
 * The only file that talks to the `pm2` package. The rest of the module depends on the small
 * `Pm2Client` interface below, so tests can fake it.
 *
 * Which pm2: under PM2 the module runs inside the daemon's own ProcessContainerFork.js, so the
 * daemon's installation is found next to `process.argv[1]`; its client speaks exactly the
 * daemon's protocol whatever its version. The package's own `pm2` dependency is the fallback
 * (outside PM2, or a layout we do not recognise).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SendFn } from './outbox';
import type { Pm2Env } from './registry';

export interface BusHandlers {
  /** `process:msg` packets: { raw, process: { pm_id, name, namespace } }. */
  message(packet: unknown): void;
  /** `process:event` packets: { event, process: pm2_env }. */
  event(packet: unknown): void;
}

export interface Pm2Client {
  /** Version of the pm2 package used to talk to the daemon. */
  readonly version: string;
  /** Where it was loaded from: 'daemon' (the host's own pm2) or 'bundled'. */
  readonly source: 'daemon' | 'bundled';
  connect(): Promise<void>;
  /** Every process's pm2_env, as `pm2 list` sees them. */
  list(): Promise<Pm2Env[]>;
  subscribe(handlers: BusHandlers): Promise<void>;
  send: SendFn;
  close(): Promise<void>;
}

interface Pm2Api {
  connect(cb: (err: Error | null) => void): void;
  disconnect(cb?: () => void): void;
  list(cb: (err: Error | null, list: { pm2_env?: Pm2Env }[]) => void): void;
  launchBus(cb: (err: Error | null, bus: { on(event: string, fn: (packet: unknown) => void): void }) => void): void;
  Client: {
    executeRemote(method: string, packet: unknown, cb: (err: Error | null, res?: unknown) => void): void;
  };
}

export interface LoadedPm2 {
  api: Pm2Api;
  version: string;
  source: 'daemon' | 'bundled';
}

/** The root of the pm2 installation that started this process, if it is one. */
export function daemonPm2Root(argv1: string | undefined): string | undefined {
  if (!argv1 || !/ProcessContainer/.test(path.basename(argv1))) return undefined;
  let dir = path.dirname(argv1);
  for (let i = 0; i < 3; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'pm2') return dir;
    } catch {
      /* not here: go up */
    }
    dir = path.dirname(dir);
  }
  return undefined;
}

export function loadPm2(argv1: string | undefined = process.argv[1]): LoadedPm2 {
  // Without this the API prints a line per call, and under a module's inherited PM2_USAGE=CLI an
  // error path can end in process.exit.
  process.env.PM2_PROGRAMMATIC = 'true';
  delete process.env.PM2_USAGE;
  const root = daemonPm2Root(argv1);
  if (root) {
    try {
      const api = require(root) as Pm2Api;
      const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
      return { api, version, source: 'daemon' };
    } catch {
      /* fall back to our own */
    }
  }
  const api = require('pm2') as Pm2Api;
  const version = (require('pm2/package.json') as { version: string }).version;
  return { api, version, source: 'bundled' };
}

export function createPm2Client(loaded: LoadedPm2 = loadPm2()): Pm2Client {
  const { api } = loaded;
  return {
    version: loaded.version,
    source: loaded.source,
    connect: () =>
      new Promise((resolve, reject) => {
        api.connect((err) => (err ? reject(err) : resolve()));
      }),
    list: () =>
      new Promise((resolve, reject) => {
        api.list((err, list) => (err ? reject(err) : resolve((list ?? []).map((p) => p.pm2_env ?? {}))));
      }),
    subscribe: (handlers) =>
      new Promise((resolve, reject) => {
        api.launchBus((err, bus) => {
          if (err) return reject(err);
          bus.on('process:msg', handlers.message);
          bus.on('process:event', handlers.event);
          resolve();
        });
      }),
    // Straight to the daemon's RPC: the API wrapper adds nothing here but a print per send.
    send: (pmId, topic, data, done) => {
      api.Client.executeRemote('sendDataToProcessId', { id: pmId, topic, data }, done);
    },
    close: () =>
      new Promise((resolve) => {
        api.disconnect(() => resolve());
      }),
  };
}
