/**
 * The entry PM2 runs: read settings, connect to PM2, wire the parts, shut down cleanly on
 * SIGINT/SIGTERM (deliver what can be delivered, keep what is still held for the next run).
 */
import path from 'node:path';
import { formatSettings, parseSettings, RETIRED_KEYS, unknownKeys } from './lib/config';
import { unreadBudget } from './lib/backlog';
import { Handover } from './lib/handover';
import { procOpenFiles, WriterFiles } from './lib/writer-files';
import { GUARD_BLIND, listFailed, safetyChecks, spoolAtStart } from './lib/messages';
import type { OutPacket } from './lib/outbox';
import { NO_LIVENESS, procLiveness, procReadable, readable } from './lib/liveness';
import { daemonChildren, NO_NEWCOMERS } from './lib/newcomers';
import { createPm2Client } from './lib/pm2-client';
import { guardSends } from './lib/send-guard';
import { RateMeter, registerActions, registerProbes, type PmxLike } from './lib/metrics';
import { Relay } from './lib/relay';
import { Reporter } from './lib/reporter';
import { Spool } from './lib/spool';
import { openState } from './lib/state';
import { tightenStateDir, tightenedLine } from './lib/private-files';

const NAME = 'pm2-scoped-intercom';
/** How long a shutdown delivers what it can, after the handover (all under PM2's kill_timeout). */
const DRAIN_MS = 1200;
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

/** Where log lines go to PM2's daemon (said at start: the compat suite checks it). */
function sendsOn(via: string | undefined): string {
  return via === 'own connection' ? 'sends on its own RPC connection' : "sends through PM2's client";
}

async function main(): Promise<void> {
  const started = Date.now();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const pmx = require('pmx') as PmxLike & { initModule(opts: object): { module_conf?: Record<string, unknown> } };
  const conf = pmx.initModule({ widget: { type: 'generic', logo: '', theme: ['#111111', '#1B2228', '#31C2F1', '#807C7C'] } });
  const moduleConf = conf.module_conf ?? {};

  const { dir, legacy, file: state, saved, retireLegacy } = openState(NAME, warn);
  // Held lines are as private as log4js's own files: what an older version left readable is not.
  const tightened = tightenStateDir(dir);
  if (tightened.length > 0) log(tightenedLine(dir, tightened));
  const { settings, problems } = parseSettings(moduleConf, saved.settings);
  for (const p of problems) warn(p.message);
  const unknown = unknownKeys(moduleConf);
  if (unknown.length > 0) warn(`ignoring unknown setting(s) ${unknown.join(', ')}; known: ${Object.keys(settings).join(', ')}`);
  for (const key of Object.keys(moduleConf)) if (key in RETIRED_KEYS) log(RETIRED_KEYS[key]);

  const reporter = new Reporter(log, warn);
  // Held packets past buffer_mb, kept across restarts (it may hold some from the last run).
  const spool = new Spool({ dir: path.join(dir, 'spool'), maxBytes: settings.spool_mb * 1048576, warn });
  spool.load();
  // The /proc readers (dying writers, reload forks), unless /proc is missing or turned off; without
  // them every send waits for a fence on PM2's bus, so PM2's daemon is never sent into a closed
  // channel twice (send-guard.ts).
  const useProc = settings.proc_checks === 'auto' && procReadable();
  const pm2 = createPm2Client(undefined, { reloadProbe: settings.reload_probe === 'on' });
  const guarded = useProc ? undefined : guardSends(pm2, { post: (packet) => process.send?.(packet, undefined, undefined, () => {}) });
  const client = guarded ?? pm2;
  await client.connect();
  const relay = new Relay({
    client,
    liveness: useProc ? procLiveness() : NO_LIVENESS,
    newcomers: useProc ? daemonChildren() : NO_NEWCOMERS,
    settings,
    reporter,
    knownInstanceVars: saved.instanceVars,
    globalInstanceVar: process.env.PM2_PROCESS_INSTANCE_VAR || undefined,
    spool,
    // A writer's unread backlog is bounded where /proc tells when it has read it (backlog.ts).
    unreadBudget: useProc ? unreadBudget() : 0,
    // A new writer is waited for until it opens its app's log files (writer-files.ts).
    writerFiles: useProc ? new WriterFiles(procOpenFiles()) : undefined,
  });
  const handover = new Handover({ dir, legacy, log, warn });
  await relay.start({ spool: saved.held, wrap: handover.gate });
  await handover.takeOver(relay);
  const save = (held?: Record<string, OutPacket[]>): void =>
    state.save({ settings, instanceVars: relay.registry.instanceVars(), held });
  try {
    save();
    retireLegacy();
  } catch (err) {
    warn(`cannot write ${state.file}: ${(err as Error).message} (settings and held packets will not survive a restart)`);
  }

  const meter = new RateMeter();
  registerProbes(pmx, relay, meter);
  registerActions(pmx, { relay, log, settingsLine: () => formatSettings(settings), version: pkg.version });

  log(
    `${NAME} v${pkg.version} relaying (pm2 ${client.version} from the ${client.source}, ${sendsOn(client.sendsThrough?.())}, ${relay.registry.size} processes known, started in ${Date.now() - started} ms) ` +
      `settings: ${formatSettings(settings)}`,
  );
  // Where /proc is missing (macOS, Windows, locked-down containers) the send guard runs instead.
  log(safetyChecks(useProc ? 'on' : settings.proc_checks === 'off' ? 'off' : 'unreadable', readable(`/proc/${process.ppid}/task/${process.ppid}/children`)));
  if (!useProc && process.env.PM2_LOG_DATE_FORMAT === '') warn(GUARD_BLIND);
  log(spoolAtStart(spool));

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
    const handedOver = await handover.handOff();
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
