/**
 * The entry PM2 runs: read settings, connect to PM2, wire the parts, shut down cleanly on
 * SIGINT/SIGTERM (deliver what can be delivered, keep what is still held for the next run).
 */
import path from 'node:path';
import { formatSettings, parseSettings, RETIRED_KEYS, unknownKeys } from './lib/operator/settings';
import { unreadBudget } from './lib/deliver/pacing';
import { Handover } from './lib/restart/handover';
import { procOpenFiles, WriterFiles } from './lib/table/writer-files';
import { GUARD_BLIND, listFailed, safetyChecks, spoolAtStart } from './lib/operator/wording';
import type { OutPacket } from './lib/shared/packet';
import { NO_LIVENESS, procLiveness, procReadable, readable } from './lib/proc/liveness';
import { daemonChildren, NO_NEWCOMERS, type Newcomers } from './lib/proc/forks';
import { daemonClients, NEVER_ALONE, ReloadWindow, type DaemonClients } from './lib/proc/reload-window';
import { createPm2Client } from './lib/pm2/pm2-client';
import { guardSends } from './lib/deliver/send-guard';
import { RateMeter, registerActions, registerProbes, startTicker, takeOverPmxInterval, type PmxLike } from './lib/operator/metrics';
import { Relay } from './lib/relay';
import { Reporter } from './lib/operator/reporter';
import { Spool } from './lib/hold/spool';
import { openState, type OpenedState } from './lib/restart/state';
import type { Settings } from './lib/operator/settings';
import type { Pm2Client } from './lib/pm2/pm2-client';
import { tightenStateDir, tightenedLine } from './lib/shared/private-files';
import { pollUntil } from './lib/shared/clock';

const NAME = 'pm2-scoped-intercom';
/** How long a shutdown delivers what it can, after the handover (all under PM2's kill_timeout). */
const DRAIN_MS = 1200;
/** Then how long the answers to sends still out are waited for, so each is judged before the state is saved (PM2's kill_timeout for the module: 8 s). */
const ANSWERS_MS = 1000;
/**
 * Then how long `pm2 list` is waited for, to judge the sends that reached a process whose `online`
 * this run did not hear (lib/deliver/replays.ts unjudged); read only if anything was delivered.
 * Every wait at its bound (bridge 4 s, marker 1 s, drain, answers, this, close 0.2 s): 7.9 s, under 8.
 */
const LIST_MS = 500;
/**
 * PM2's daemon: the module's parent, since PM2 forks its modules. bench/profile-relay.js runs the
 * module outside PM2 (PM2 cannot pass it node flags) and names the daemon here, so that the /proc
 * checks and the reload probe's window look at the daemon, as under PM2, not at the profiler.
 * Heeded only without an IPC channel, i.e. not under PM2: a module's parent is always its daemon.
 */
const DAEMON_PID = (process.send === undefined && Number(process.env.PM2_SCOPED_INTERCOM_DAEMON_PID)) || process.ppid;

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

/** Where log lines go to PM2's daemon (said at start: the compat suite checks it). */
function sendsOn(via: string | undefined): string {
  return via === 'own connection' ? 'sends on its own RPC connection' : "sends through PM2's client";
}

type Pmx = PmxLike & { initModule(opts: object): { module_conf?: Record<string, unknown> } };

/** What runs while the module relays, wired once at start. */
interface Parts {
  settings: Settings;
  reporter: Reporter;
  spool: Spool;
  /** The /proc readers run (else the send guard). */
  useProc: boolean;
  client: Pm2Client;
  relay: Relay;
  handover: Handover;
}

/** Settings: PM2's module config over what the last run saved; each problem said once. */
function readSettings(moduleConf: Record<string, unknown>, saved: OpenedState['saved']): Settings {
  const { settings, problems } = parseSettings(moduleConf, saved.settings);
  for (const p of problems) warn(p.message);
  const unknown = unknownKeys(moduleConf);
  if (unknown.length > 0) warn(`ignoring unknown setting(s) ${unknown.join(', ')}; known: ${Object.keys(settings).join(', ')}`);
  for (const key of Object.keys(moduleConf)) if (key in RETIRED_KEYS) log(RETIRED_KEYS[key]);
  return settings;
}

/**
 * The parts, connected to PM2. Without the /proc readers (dying writers, reload forks: /proc
 * missing or turned off) every send waits for a fence on PM2's bus, so PM2's daemon is never sent
 * into a closed channel twice (send-guard.ts).
 */
async function connectParts(settings: Settings, opened: OpenedState): Promise<Parts> {
  const reporter = new Reporter(log, warn);
  // Held packets past buffer_mb, kept across restarts (it may hold some from the last run).
  const spool = new Spool({ dir: path.join(opened.dir, 'spool'), maxBytes: settings.spool_mb * 1048576, warn });
  spool.load();
  const useProc = settings.proc_checks === 'auto' && procReadable();
  const newcomers = useProc ? daemonChildren(DAEMON_PID) : NO_NEWCOMERS;
  const late: { relay?: Relay } = {};
  // Unknown processes count as able to reload themselves: probed.
  const reloadsItself = (pmId: number): boolean => late.relay?.registry.process(pmId)?.memoryRestart ?? true;
  const pm2: Pm2Client = createPm2Client(undefined, { reloadProbe: reloadProbe(settings.reload_probe, useProc, () => pm2, newcomers, reloadsItself) });
  const client = useProc ? pm2 : guardSends(pm2, { post: (packet) => process.send?.(packet, undefined, undefined, () => {}) });
  await client.connect();
  const relay = new Relay({
    client,
    liveness: useProc ? procLiveness() : NO_LIVENESS,
    newcomers,
    settings,
    reporter,
    knownInstanceVars: opened.saved.instanceVars,
    globalInstanceVar: process.env.PM2_PROCESS_INSTANCE_VAR || undefined,
    spool,
    // A writer's unread backlog is bounded where /proc tells when it has read it (pacing.ts).
    unreadBudget: useProc ? unreadBudget() : 0,
    // A new writer is waited for until it opens its app's log files (writer-files.ts).
    writerFiles: useProc ? new WriterFiles(procOpenFiles()) : undefined,
    // The tests shorten how long a deleted app's held lines wait for it to come back (30 s).
    deletedGraceMs: Number(process.env.PM2SI_DELETED_GRACE_MS) || undefined,
  });
  late.relay = relay;
  const handover = new Handover({ dir: opened.dir, legacy: opened.legacy, log, warn });
  return { settings, reporter, spool, useProc, client, relay, handover };
}

/**
 * Which sends carry the reload probe: `always` every one, `off` none, `on` those a reload could
 * reach (proc/reload-window.ts), or every one where /proc cannot tell.
 */
function reloadProbe(mode: Settings['reload_probe'], useProc: boolean, client: () => Pm2Client, newcomers: Newcomers, reloadsItself: (pmId: number) => boolean): boolean | ReloadWindow {
  if (mode !== 'on' || !useProc) return mode !== 'off';
  let clients: DaemonClients | undefined;
  const connected = (): DaemonClients => {
    const c = client();
    const rpcSocket = c.rpcSocket?.();
    return rpcSocket === undefined ? NEVER_ALONE : daemonClients({ daemonPid: DAEMON_PID, rpcSocket, own: () => c.ownRpcConnections?.() ?? 0 });
  };
  return new ReloadWindow({ clients: { alone: () => (clients ??= connected()).alone() }, childrenSettled: () => newcomers.settled(), reloadsItself });
}

/** Starts relaying (taking over from the last run's bridge); returns how to save the state. */
async function start(parts: Parts, opened: OpenedState): Promise<(held?: Record<string, OutPacket[]>) => void> {
  const { relay, handover, settings } = parts;
  await relay.start({ spool: opened.saved.held, wrap: handover.gate });
  await handover.takeOver(relay);
  const save = (held?: Record<string, OutPacket[]>): void =>
    opened.file.save({ settings, instanceVars: relay.registry.instanceVars(), held });
  try {
    save();
    opened.retireLegacy();
  } catch (err) {
    warn(`cannot write ${opened.file.file}: ${(err as Error).message} (settings and held packets will not survive a restart)`);
  }
  return save;
}

function startMetrics(pmx: Pmx, parts: Parts): { meter: RateMeter; sendMetrics: (() => void) | undefined } {
  const meter = new RateMeter();
  const sendMetrics = takeOverPmxInterval();
  registerProbes(pmx, parts.relay, meter, () => parts.client.probeStats?.());
  registerActions(pmx, { relay: parts.relay, log, settingsLine: () => formatSettings(parts.settings), version: pkg.version, probeStats: () => parts.client.probeStats?.() });
  return { meter, sendMetrics };
}

/** The lines said once started (the compat suite and the tests match them word for word). */
function sayStarted(parts: Parts, started: number): void {
  const { client, relay, settings, useProc } = parts;
  log(
    `${NAME} v${pkg.version} relaying (pm2 ${client.version} from the ${client.source}, ${sendsOn(client.sendsThrough?.())}, ${relay.registry.size} processes known, started in ${Date.now() - started} ms) ` +
      `settings: ${formatSettings(settings)}`,
  );
  // Where /proc is missing (macOS, Windows, locked-down containers) the send guard runs instead.
  log(safetyChecks(useProc ? 'on' : settings.proc_checks === 'off' ? 'off' : 'unreadable', readable(`/proc/${DAEMON_PID}/task/${DAEMON_PID}/children`)));
  if (!useProc && process.env.PM2_LOG_DATE_FORMAT === '') warn(GUARD_BLIND);
  log(spoolAtStart(parts.spool));
}

/**
 * Stop sending, then wait (at most `timeoutMs`) for PM2's answers to the sends still out, so each
 * is judged before the held packets are taken for the next run: a refused one, or one that
 * reached a worker a reload had just forked, goes back into the hold buffer. Not waited for, it
 * was neither held nor judged (a chaos run lost one line so: a module restart while its writer
 * was reloaded). Returns whether every answer came.
 */
function stopSending(relay: Relay, timeoutMs: number): Promise<boolean> {
  relay.stop();
  return pollUntil(() => relay.outbox.inflight === 0, timeoutMs, 5);
}

/**
 * On SIGINT/SIGTERM: hand over to a bridge, deliver what can be delivered within DRAIN_MS, keep
 * what is still held for the next run, then exit.
 */
function onShutdown(parts: Parts, ticker: { stop(): void }, save: (held?: Record<string, OutPacket[]>) => void, file: string): (signal: string) => Promise<void> {
  const { client, relay, reporter, handover } = parts;
  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    ticker.stop();
    const handedOver = await handover.handOff();
    const drained = await relay.drain(DRAIN_MS);
    const answered = await stopSending(relay, ANSWERS_MS);
    if (!answered) warn(`stopping with ${relay.outbox.inflight} sends PM2 has not answered within ${ANSWERS_MS} ms: their lines may be lost`);
    const held = relay.heldPackets(await relay.generationsNow(LIST_MS));
    const n = Object.values(held).reduce((s, l) => s + l.length, 0);
    try {
      save(n > 0 ? held : undefined);
    } catch (err) {
      warn(`cannot save ${n} held packets to ${file}: ${(err as Error).message}`);
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
  return shutdown;
}

/**
 * A stop asked for while the module starts (`pm2 set` twice in a row, an upgrade under load) waits
 * until it has started: stopped half-way by Node's default handler, it kept neither what it had
 * restored nor what the bridge had handed it, and no bridge listened until the next start (a
 * chaos run lost about 450 lines per sender so).
 */
function deferSignals(): { take(): string | undefined } {
  let pending: string | undefined;
  const early = (signal: string) => () => {
    pending ??= signal;
  };
  const onInt = early('SIGINT');
  const onTerm = early('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    take: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      return pending;
    },
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  const signals = deferSignals();
  const pmx = require('pmx') as Pmx;
  const conf = pmx.initModule({ widget: { type: 'generic', logo: '', theme: ['#111111', '#1B2228', '#31C2F1', '#807C7C'] } });
  const moduleConf = conf.module_conf ?? {};
  const opened = openState(NAME, warn);
  // Held lines are as private as log4js's own files: what an older version left readable is not.
  const tightened = tightenStateDir(opened.dir);
  if (tightened.length > 0) log(tightenedLine(opened.dir, tightened));
  const settings = readSettings(moduleConf, opened.saved);
  const parts = await connectParts(settings, opened);
  const save = await start(parts, opened);
  const { meter, sendMetrics } = startMetrics(pmx, parts);
  sayStarted(parts, started);
  const ticker = startTicker({
    relay: parts.relay,
    reporter: parts.reporter,
    meter,
    sendMetrics,
    reportEveryMs: settings.report_interval * 1000,
    reconcileFailed: (err) => warn(listFailed(err)),
  });
  const shutdown = onShutdown(parts, ticker, save, opened.file.file);
  const pending = signals.take();
  if (pending !== undefined) await shutdown(pending);
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
