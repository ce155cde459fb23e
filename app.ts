/**
 * The entry PM2 runs: read settings, connect to PM2, wire the parts, shut down cleanly on
 * SIGINT/SIGTERM (deliver what can be delivered, keep what is still held for the next run).
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { formatSettings, parseSettings, RETIRED_KEYS, unknownKeys } from './lib/config';
import { files, findBridge, markerPacket, readBridge, StartGate, StopGate } from './lib/handover';
import type { OutPacket } from './lib/outbox';
import { createPm2Client } from './lib/pm2-client';
import { listFailed } from './lib/messages';
import { RateMeter, registerActions, registerProbes, type PmxLike } from './lib/metrics';
import { Relay } from './lib/relay';
import { Reporter } from './lib/reporter';
import { Spool } from './lib/spool';
import { legacyStateDir, StateFile, stateDir } from './lib/state';
import { readVersioned } from './lib/versioned';

const NAME = 'pm2-scoped-intercom';
/**
 * Shutdown steps, all under PM2's kill_timeout (package.json `apps`: 8000 ms). The bridge loads
 * pm2's API: on a loaded 2-core machine that took over 2 s (seen in the upgrade test).
 */
const BRIDGE_START_MS = 4000;
const MARKER_ECHO_MS = 1000;
const DRAIN_MS = 1200;
/** How long a new module waits for the bridge's packets. */
const HANDOVER_WAIT_MS = 3000;
const RECONCILE_EVERY_MS = 30_000;

// eslint-disable-next-line @typescript-eslint/no-var-requires
const pkg = require('../package.json') as { version: string };

function stamp(): string {
  return new Date().toISOString();
}

const log = (line: string): void => {
  process.stdout.write(`${stamp()} ${line}\n`);
};
const warn = (line: string): void => {
  process.stderr.write(`${stamp()} ${line}\n`);
};

async function main(): Promise<void> {
  const started = Date.now();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pmx = require('pmx') as PmxLike & { initModule(opts: object): { module_conf?: Record<string, unknown> } };
  const conf = pmx.initModule({ widget: { type: 'generic', logo: '', theme: ['#111111', '#1B2228', '#31C2F1', '#807C7C'] } });
  const moduleConf = conf.module_conf ?? {};

  const dir = stateDir(NAME);
  // 0.1.0 kept its files in the module's folder: read what it left there, once.
  const legacy = legacyStateDir(NAME);
  const dirs = legacy ? [dir, legacy] : [dir];
  const state = new StateFile(dir);
  const legacyState = legacy && !state.exists() ? new StateFile(legacy) : undefined;
  const saved = legacyState?.exists() ? legacyState.load(warn) : state.load(warn);
  const { settings, problems } = parseSettings(moduleConf, saved.settings);
  for (const p of problems) warn(p.message);
  const unknown = unknownKeys(moduleConf);
  if (unknown.length > 0) warn(`ignoring unknown setting(s) ${unknown.join(', ')}; known: ${Object.keys(settings).join(', ')}`);
  for (const key of Object.keys(moduleConf)) if (key in RETIRED_KEYS) log(RETIRED_KEYS[key]);

  const reporter = new Reporter(log, warn);
  // Held packets past buffer_mb, kept across restarts (it may hold some from the last run).
  const spool = new Spool({ dir: path.join(dir, 'spool'), maxBytes: settings.spool_mb * 1048576, warn });
  spool.load();
  const client = createPm2Client();
  await client.connect();
  const relay = new Relay({
    client,
    settings,
    reporter,
    knownInstanceVars: saved.instanceVars,
    globalInstanceVar: process.env.PM2_PROCESS_INSTANCE_VAR || undefined,
    spool,
  });
  // A bridge left by the previous run holds what the bus carried while no module listened.
  const bridge = findBridge(dirs);
  const startNonce = crypto.randomBytes(8).toString('hex');
  const startGate = new StartGate(startNonce, bridge !== undefined);
  const stopGate = new StopGate();
  let inner: (p: unknown) => void = () => {};
  await relay.start({
    spool: saved.held,
    wrap: (handle) => {
      inner = handle;
      return stopGate.wrap(startGate.wrap(handle));
    },
  });
  for (const f of dirs.flatMap((d) => leftoverHandovers(d, bridge?.nonce))) relayHandover(relay, f, warn);
  if (bridge) {
    process.send?.(markerPacket('start', startNonce));
    const f = files.handover(bridge.dir, bridge.nonce);
    const arrived = await waitUntil(() => fs.existsSync(f), HANDOVER_WAIT_MS);
    // Our own copy of the marker may come after the bridge's: until it does, what we receive
    // is the bridge's to hand over, and after it, ours.
    const sawOwnMarker = await waitUntil(() => startGate.sawMarker, HANDOVER_WAIT_MS);
    if (arrived) relayHandover(relay, f, log);
    else warn(`the handover bridge (pid ${bridge.pid}) sent nothing within ${HANDOVER_WAIT_MS} ms: packets sent while the module restarted may be lost`);
    if (!sawOwnMarker) warn(`the start marker did not come back within ${HANDOVER_WAIT_MS} ms: ${startGate.dropped} packets received before it were skipped`);
    startGate.open(inner);
  }
  const save = (held?: Record<string, OutPacket[]>): void =>
    state.save({ settings, instanceVars: relay.registry.instanceVars(), held });
  try {
    save();
    if (legacyState?.exists()) fs.unlinkSync(legacyState.file);
  } catch (err) {
    warn(`cannot write ${state.file}: ${(err as Error).message} (settings and held packets will not survive a restart)`);
  }

  const meter = new RateMeter();
  registerProbes(pmx, relay, meter);
  registerActions(pmx, { relay, log, settingsLine: () => formatSettings(settings), version: pkg.version });

  log(
    `${NAME} v${pkg.version} relaying (pm2 ${client.version} from the ${client.source}, ${relay.registry.size} processes known, started in ${Date.now() - started} ms) ` +
      `settings: ${formatSettings(settings)}`,
  );
  // Where /proc is missing (macOS, Windows, locked-down containers) the two safety checks are off.
  const procOk = (f: string): boolean => {
    try {
      fs.accessSync(f, fs.constants.R_OK);
      return true;
    } catch {
      return false;
    }
  };
  log(
    `safety checks: dying writers ${procOk('/proc/self/stat') ? 'on (/proc/<pid>/stat)' : 'OFF (no /proc): a kill -9 of a busy writer can put two sends into its closed channel'}; ` +
      `reload forks ${procOk(`/proc/${process.ppid}/task/${process.ppid}/children`) ? 'on (/proc/<daemon>/task/<daemon>/children)' : 'OFF (no /proc children): a reload can hand a new writer packets before the module knows'}`,
  );
  log(`spool: ${spool.failure ?? `${spool.dir}${spool.count > 0 ? `, ${spool.count} log packets from the last run` : ''}`}`);

  let seconds = 0;
  const timer = setInterval(() => {
    seconds++;
    meter.sample(relay.counters, Date.now());
    relay.tick();
    if (seconds % settings.report_interval === 0) reporter.flush();
    if ((seconds * 1000) % RECONCILE_EVERY_MS === 0) {
      relay.reconcile().catch((err: Error) => warn(listFailed(err)));
    }
  }, 1000);

  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    // Keep relaying until a bridge listens, then cut the stream at our own marker.
    const stopNonce = crypto.randomBytes(8).toString('hex');
    let handedOver = false;
    let bridgePid: number | undefined;
    try {
      bridgePid = spawnBridge(dir, stopNonce, legacy);
      if (await waitUntil(() => readBridge(dir)?.nonce === stopNonce, BRIDGE_START_MS)) {
        stopGate.arm(stopNonce);
        process.send?.(markerPacket('stop', stopNonce));
        handedOver = await waitUntil(() => stopGate.stopped, MARKER_ECHO_MS);
      }
    } catch (err) {
      warn(`could not start the handover bridge: ${(err as Error).message}`);
    }
    if (!handedOver) {
      stopGate.arm('none');
      // A bridge that got no stop marker would only mislead the next start (it hands over nothing).
      if (bridgePid) {
        try {
          process.kill(bridgePid, 'SIGTERM');
        } catch {
          /* never started */
        }
      }
    }
    const drained = await relay.drain(DRAIN_MS);
    relay.stop();
    const held = relay.heldPackets();
    const n = Object.values(held).reduce((s, l) => s + l.length, 0);
    try {
      save(n > 0 ? held : undefined);
    } catch (err) {
      warn(`cannot save ${n} held packets to ${state.file}: ${(err as Error).message}`);
    }
    reporter.flush();
    log(
      `${signal}: stopping; ${handedOver ? 'a bridge listens until the next start' : 'NO bridge: packets sent until the next start are lost'}; ` +
        `delivered everything deliverable: ${drained ? 'yes' : 'no (time ran out)'}; ${n} held log packets kept for the next start`,
    );
    await Promise.race([client.close(), new Promise((r) => setTimeout(r, 200))]);
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
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

function spawnBridge(dir: string, nonce: string, legacy: string | undefined): number | undefined {
  fs.mkdirSync(dir, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, PM2SI_DAEMON_ARGV1: process.argv[1] };
  delete env.PM2_USAGE;
  const child = spawn(process.execPath, [path.join(__dirname, 'lib', 'bridge.js'), dir, nonce, '60000', legacy ?? ''], { detached: true, stdio: 'ignore', env });
  child.unref();
  return child.pid;
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

function relayHandover(relay: Relay, file: string, say: (line: string) => void): void {
  // A format this version does not know is set aside (and said), not relayed and not deleted.
  const h = readVersioned(file, warn) as { packets?: unknown[]; overflow?: number; reason?: string } | undefined;
  if (!h) return;
  try {
    const packets = Array.isArray(h.packets) ? h.packets : [];
    for (const p of packets) relay.handleMessage(p);
    say(`relayed ${packets.length} packets the handover bridge received while the module restarted (${h.reason ?? 'unknown'}${h.overflow ? `, ${h.overflow} lost to its bound` : ''})`);
  } catch (err) {
    warn(`could not read the handover file ${file}: ${(err as Error).message}`);
  }
  try {
    fs.unlinkSync(file);
  } catch {
    /* gone */
  }
}

// A bug in one packet's path must not take the relay down (its restart loses what the bus
// carries meanwhile): say it and carry on, unless errors keep coming.
let recentErrors: number[] = [];
process.on('uncaughtException', (err) => {
  const now = Date.now();
  recentErrors = recentErrors.filter((t) => now - t < 60_000);
  recentErrors.push(now);
  warn(`internal error (${recentErrors.length} in the last minute): ${err && err.stack ? err.stack : String(err)}`);
  if (recentErrors.length > 20) process.exit(1);
});
process.on('unhandledRejection', (err) => {
  warn(`internal error (unhandled rejection): ${err instanceof Error ? err.stack : String(err)}`);
});

main().catch((err: Error) => {
  warn(`${NAME} could not start: ${err && err.stack ? err.stack : String(err)}`);
  process.exit(1);
});
