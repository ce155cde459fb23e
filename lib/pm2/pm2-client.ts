/**
 * The only file that talks to the `pm2` package. The rest of the module depends on the small
 * `Pm2Client` interface below, so tests can fake it.
 *
 * Which pm2: under PM2 the module runs inside the daemon's own ProcessContainerFork.js, so the
 * daemon's installation is found next to `process.argv[1]`; its client speaks exactly the
 * daemon's protocol whatever its version (5.4, 6.0 and 7.0 are tested: docs/compat.md). `pm2` is
 * an optional peer dependency of the package, so `pm2 install` puts no second copy of PM2 into
 * the module; a `pm2` that can be required (a dev checkout, or a user who installed one) is the
 * fallback, outside PM2 or for a layout we do not recognise.
 *
 * What differs between PM2 versions is absorbed here, so the rest of the module sees one
 * behaviour (see `normalizeEvents`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SendFn } from '../shared/packet';
import { openRpcChannel, type ProbePolicy, type ProbeStats, type RpcChannel } from './rpc-channel';
import type { Pm2Env } from '../table/registry';

export interface BusHandlers {
  /** `process:msg` packets: { raw, process: { pm_id, name, namespace } }. */
  message(packet: unknown): void;
  /** `process:event` packets: { event, process: pm2_env }. */
  event(packet: unknown): void;
  /** `log:PM2` packets: lines of the daemon's own console ({ data }); see send-guard.ts. */
  pm2Log?(packet: unknown): void;
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
  /** What `send` goes through now: the module's own RPC connection (rpc-channel.ts) or PM2's client. */
  sendsThrough?(): 'own connection' | 'PM2 client';
  /** The daemon's RPC socket path, once connected. */
  rpcSocket?(): string | undefined;
  /** How many connections to the daemon's RPC socket are this client's own now (PM2's client, ours). */
  ownRpcConnections?(): number;
  /** The reload probe's counts on the own connection (undefined without one). */
  probeStats?(): ProbeStats | undefined;
  close(): Promise<void>;
}

interface Pm2Api {
  connect(cb: (err: Error | null) => void): void;
  disconnect(cb?: () => void): void;
  list(cb: (err: Error | null, list: { pm2_env?: Pm2Env; pid?: number }[]) => void): void;
  launchBus(
    cb: (err: Error | null, bus: { on(event: string, fn: (packet: unknown) => void): void }, sock?: { set?(name: string, value: unknown): unknown }) => void,
  ): void;
  Client: {
    executeRemote(method: string, packet: unknown, cb: (err: Error | null, res?: unknown) => void): void;
    /** Where the daemon's RPC socket is (PM2 5.4, 6.0, 7.0: `$PM2_HOME/rpc.sock`). */
    rpc_socket_file?: unknown;
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

/**
 * Load the daemon's own pm2 (found from `argv1`), else a `pm2` that `req` can find.
 * `req` is there for tests.
 */
export function loadPm2(argv1: string | undefined = process.argv[1], req: (id: string) => unknown = require): LoadedPm2 {
  // Without this the API prints a line per call, and under a module's inherited PM2_USAGE=CLI an
  // error path can end in process.exit.
  process.env.PM2_PROGRAMMATIC = 'true';
  delete process.env.PM2_USAGE;
  const root = daemonPm2Root(argv1);
  if (root) {
    try {
      const api = req(root) as Pm2Api;
      const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
      return { api, version, source: 'daemon' };
    } catch {
      /* fall back to our own */
    }
  }
  let api: Pm2Api;
  try {
    api = req('pm2') as Pm2Api;
  } catch (err) {
    throw new Error(
      `cannot load pm2: this process was not started by a PM2 daemon we recognise (script ${argv1 ?? 'unknown'}), ` +
        `and no \`pm2\` package can be required from here (it is an optional peer dependency). ` +
        `Run the module with \`pm2 install pm2-scoped-intercom\`, or install pm2 next to it. (${(err as Error).message})`,
    );
  }
  const version = (req('pm2/package.json') as { version: string }).version;
  return { api, version, source: 'bundled' };
}

type EventPacket = { event?: unknown; process?: Record<string, unknown> } & Record<string, unknown>;

/**
 * One `online` per process generation (pm_id + PM2's pm_uptime), at the earliest sign of it.
 *
 * PM2 6 and 7 announce a (re)started process with `online` (still `launching`) and then
 * `start` / `restart` / `reload`. PM2 5 (and 6/7 with `PM2_ENABLE_GIT_PARSING=true`) first say
 * `start` / `restart` / `reload` with status `online` and emit `online` only after scanning the
 * app's folder with git (vizion): tens of ms to seconds later, when the writer may long have been
 * taking packets. So: on a `start` / `restart` / `reload` of an online generation not yet
 * announced, pass a copy of it as `online` first; pass a later `online` of an already announced
 * generation on no more (it would restart the readiness wait of a working writer).
 * Everything else, including packets without a numeric pm_id and pm_uptime, passes unchanged.
 */
export function normalizeEvents(forward: (packet: unknown) => void): (packet: unknown) => void {
  const announced = new Map<number, number>(); // pm_id -> pm_uptime announced online
  return (packet) => {
    if (packet === null || typeof packet !== 'object') return forward(packet);
    const p = packet as EventPacket;
    const env = p.process;
    const id = env?.pm_id;
    const generation = env?.pm_uptime;
    if (typeof p.event !== 'string' || typeof id !== 'number' || typeof generation !== 'number') return forward(packet);
    if (p.event === 'online') {
      if (announced.get(id) === generation) return;
      announced.set(id, generation);
      return forward(packet);
    }
    if ((p.event === 'start' || p.event === 'restart' || p.event === 'reload') && env?.status === 'online' && announced.get(id) !== generation) {
      announced.set(id, generation);
      forward({ ...p, event: 'online' });
    } else if (p.event === 'delete') {
      announced.delete(id);
    }
    return forward(packet);
  };
}

export interface Pm2ClientOptions {
  /**
   * Open the relay's own connection for `sendDataToProcessId` (rpc-channel.ts); undefined: send
   * through PM2's client. @default openRpcChannel (PM2SI_OWN_RPC=0 turns it off)
   */
  openChannel?: ((address: string) => Promise<RpcChannel | undefined>) | null;
  /** Follow sends on the own connection with the reload probe (rpc-channel.ts): all, none, or as a policy asks. @default true */
  reloadProbe?: boolean | ProbePolicy;
  /**
   * How often the bus tries to connect again once the daemon has gone (PM2's axon socket retries by
   * itself, backing off from 100 ms to 5 s). Set: every this many ms. @default axon's
   */
  busRetryMs?: number;
}

/** The daemon's RPC socket path as PM2's client knows it (PM2 5.4, 6.0, 7.0: `$PM2_HOME/rpc.sock`). */
function rpcSocketOf(api: Pm2Api): string | undefined {
  const address = api.Client.rpc_socket_file;
  return typeof address === 'string' && address !== '' ? address : undefined;
}

export function createPm2Client(loaded: LoadedPm2 = loadPm2(), opts: Pm2ClientOptions = {}): Pm2Client {
  const { api } = loaded;
  const probe = opts.reloadProbe ?? true;
  const openChannel =
    opts.openChannel !== undefined ? opts.openChannel : process.env.PM2SI_OWN_RPC === '0' ? null : (address: string) => openRpcChannel(address, { probe });
  let channel: RpcChannel | undefined;
  return {
    version: loaded.version,
    source: loaded.source,
    connect: async () => {
      await new Promise<void>((resolve, reject) => {
        api.connect((err) => (err ? reject(err) : resolve()));
      });
      // The same socket PM2's client uses; without one we know, PM2's client sends.
      const address = rpcSocketOf(api);
      if (openChannel && address !== undefined) channel = await openChannel(address);
    },
    list: () =>
      new Promise((resolve, reject) => {
        // pm2_env has no pid; the list entry does: carry it over (the liveness check needs it).
        api.list((err, list) =>
          err ? reject(err) : resolve((list ?? []).map((p) => (p.pm2_env ? Object.assign(p.pm2_env, { pid: p.pid }) : {}))),
        );
      }),
    subscribe: (handlers) =>
      new Promise((resolve, reject) => {
        api.launchBus((err, bus, sock) => {
          if (err) return reject(err);
          if (opts.busRetryMs !== undefined && typeof sock?.set === 'function') {
            sock.set('retry timeout', opts.busRetryMs);
            sock.set('retry max timeout', opts.busRetryMs);
          }
          bus.on('process:msg', handlers.message);
          bus.on('process:event', normalizeEvents(handlers.event));
          if (handlers.pm2Log) bus.on('log:PM2', handlers.pm2Log);
          resolve();
        });
      }),
    // Our own connection while it is open (rpc-channel.ts), else straight to the daemon's RPC
    // through PM2's client: the API wrapper adds nothing here but a print per send.
    send: (pmId, topic, data, done) => {
      if (channel !== undefined && channel.open) channel.send(pmId, topic, data, done);
      else api.Client.executeRemote('sendDataToProcessId', { id: pmId, topic, data }, (err: Error | null) => done(err));
    },
    sendsThrough: () => (channel !== undefined && channel.open ? 'own connection' : 'PM2 client'),
    rpcSocket: () => rpcSocketOf(api),
    ownRpcConnections: () => 1 + (channel !== undefined && channel.open ? 1 : 0),
    probeStats: () => channel?.probeStats(),
    close: () =>
      new Promise((resolve) => {
        channel?.close();
        api.disconnect(() => resolve());
      }),
  };
}
