/**
 * The live table of PM2 processes, grouped by app (name + namespace).
 *
 * Built from `pm2.list()` at start, kept current from the bus's `process:event` packets and
 * reconciled with a fresh list now and then (PM2 emits no event when a process is deleted).
 * Pure: it is fed pm2_env-like records and a clock value, it never calls PM2 itself.
 */

import { toNumber } from '../shared/system';
import { DEFAULT_INSTANCE_VAR, InstanceVars } from './instance-vars';

export { DEFAULT_INSTANCE_VAR };

/** The fields of a pm2_env (as in `pm2.list()[i].pm2_env` or a bus `process:event`) we read. */
export type Pm2Env = Record<string, unknown>;

export interface ProcessInfo {
  readonly pmId: number;
  readonly appKey: string;
  readonly name: string;
  readonly namespace: string;
  /** `pm2_env[instance_var]`, undefined when PM2 assigned none. */
  instance: number | undefined;
  status: string;
  clusterMode: boolean;
  isModule: boolean;
  waitReady: boolean;
  /** Its app has `max_memory_restart`: PM2's daemon may reload it by itself (reload-window.ts). */
  memoryRestart: boolean;
  /** Epoch ms when this process (its current generation) came online. */
  onlineSince: number;
  /** Epoch ms from which it may receive log packets; Infinity while it must not. */
  readyAt: number;
  /** PM2's `pm_uptime`: when the daemon launched this generation (its clock, epoch ms). */
  startedAt: number;
  /** The OS pid of this generation, 0 until a `pm2 list` has told it. */
  pid: number;
  /** PM2's own log files for this process (out, error, combined): open in it, not the app's. */
  pm2Logs: readonly string[];
  /** `Registry.eventSeq` of the last bus event about it (0 or absent: none since it was listed). */
  eventSeq?: number;
}

/** The log files PM2 itself opens in a process (its pm2_env's pm_*_log_path). */
function pm2LogsOf(env: Pm2Env): string[] {
  const out: string[] = [];
  for (const k of ['pm_out_log_path', 'pm_err_log_path', 'pm_log_path']) {
    const v = env[k];
    if (typeof v === 'string' && v !== '') out.push(v);
  }
  return out;
}

export interface AppInfo {
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  /** The app's own instance_var, remembered: PM2 resets pm2_env.instance_var on restart. */
  instanceVar: string;
  /**
   * The app says when its writer listens (`process.send('ready')` or the client's ready topic):
   * its next writers are waited for, not guessed with `ready_delay`.
   */
  announces: boolean;
  readonly pmIds: Set<number>;
}

export function appKeyOf(name: string, namespace: string | undefined): string {
  return `${namespace ?? 'default'}\u0000${name}`;
}

export function splitAppKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('\u0000');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export function formatAppKey(key: string): string {
  const { namespace, name } = splitAppKey(key);
  return `${name} (namespace ${namespace})`;
}

/** Only numeric ids are live processes; `_old_<id>` is a worker parked by `pm2 reload`. */
export function numericPmId(id: unknown): number | undefined {
  return typeof id === 'number' && Number.isInteger(id) ? id : undefined;
}

export function isParkedPmId(id: unknown): boolean {
  return typeof id === 'string' && id.startsWith('_old_');
}

/** Per pm_id in a `pm2 list`, the generation PM2 has under it (its pm_uptime). */
export function generationsOf(envs: readonly Pm2Env[]): Map<number, number> {
  const gens = new Map<number, number>();
  for (const env of envs) {
    const id = numericPmId(env.pm_id);
    const startedAt = toNumber(env.pm_uptime);
    if (id !== undefined && startedAt !== undefined) gens.set(id, startedAt);
  }
  return gens;
}

export type TableChange =
  | { kind: 'online'; proc: ProcessInfo }
  | { kind: 'offline'; proc: ProcessInfo }
  | { kind: 'removed'; proc: ProcessInfo }
  | { kind: 'app-removed'; app: AppInfo };

export interface RegistryOptions {
  /** Delay after `online` before an app without `wait_ready` is taken to listen. */
  readyDelay: number;
  /** The daemon's PM2_PROCESS_INSTANCE_VAR, which overrides every app's instance_var. */
  globalInstanceVar?: string;
  /** For apps that announce readiness: how long to wait for the announcement. @default 30000 */
  announceTimeout?: number;
  /** instance_var per app key remembered from an earlier run (see AppInfo.instanceVar). */
  knownInstanceVars?: Record<string, string>;
}

export class Registry {
  readonly #procs = new Map<number, ProcessInfo>();
  readonly #apps = new Map<string, AppInfo>();
  /** Bus events applied so far: a snapshot asked for at `eventSeq` n predates events n+1, n+2... */
  #eventSeq = 0;
  /** pm_ids deleted by an event, with its `eventSeq`: an older snapshot must not bring them back. */
  readonly #deleted = new Map<number, number>();
  #staleSnapshot = false;
  readonly #opts: RegistryOptions;
  readonly #instanceVars: InstanceVars;

  constructor(opts: RegistryOptions) {
    this.#opts = opts;
    this.#instanceVars = new InstanceVars(opts.knownInstanceVars, opts.globalInstanceVar);
  }

  get size(): number {
    return this.#procs.size;
  }

  process(pmId: number): ProcessInfo | undefined {
    return this.#procs.get(pmId);
  }

  app(key: string): AppInfo | undefined {
    return this.#apps.get(key);
  }

  apps(): IterableIterator<AppInfo> {
    return this.#apps.values();
  }

  processesOf(app: AppInfo): ProcessInfo[] {
    const out: ProcessInfo[] = [];
    for (const id of app.pmIds) {
      const p = this.#procs.get(id);
      if (p) out.push(p);
    }
    return out;
  }

  processes(): IterableIterator<ProcessInfo> {
    return this.#procs.values();
  }

  /** instance_var per app key, to persist across the module's own restarts. */
  instanceVars(): Record<string, string> {
    return this.#instanceVars.toJSON();
  }

  /** How many bus events have been applied: pass it to `applySnapshot` for a list asked for now. */
  get eventSeq(): number {
    return this.#eventSeq;
  }

  /** Whether the last `applySnapshot` skipped processes that events had told of since it was asked for. */
  get snapshotWasStale(): boolean {
    return this.#staleSnapshot;
  }

  /**
   * Replace the table with a fresh `pm2.list()`. Processes that are gone are reported removed;
   * processes already known keep their readiness (the list has no event history).
   *
   * `askedAt` is `eventSeq` when the list was asked for. PM2 answers a list in its own time (long
   * on a busy machine), and events keep coming meanwhile: what an event said after `askedAt` wins.
   * Such a process is neither removed (an app just started would lose its packets as coming from
   * an unknown app) nor changed (only a pid the event did not carry is learnt, for the same
   * generation), and a process deleted after `askedAt` is not brought back. Then
   * `snapshotWasStale` is true: ask again.
   */
  applySnapshot(envs: Pm2Env[], now: number, askedAt = Infinity): TableChange[] {
    const changes: TableChange[] = [];
    const seen = new Set<number>();
    const newer = (p: ProcessInfo | undefined): boolean => p !== undefined && (p.eventSeq ?? 0) > askedAt;
    let stale = false;
    for (const env of envs) {
      const id = numericPmId(env.pm_id);
      if (id === undefined) continue;
      if ((this.#deleted.get(id) ?? -1) > askedAt) {
        stale = true;
        continue;
      }
      seen.add(id);
      const before = this.#procs.get(id);
      if (newer(before)) {
        stale = true;
        const pid = toNumber(env.pid);
        if (before!.pid === 0 && pid !== undefined && pid > 0 && toNumber(env.pm_uptime) === before!.startedAt) before!.pid = pid;
        continue;
      }
      const startedBefore = before?.startedAt ?? 0;
      const online = env.status === 'online';
      const p = this.#upsert(env, id);
      // A generation no event told us of yet (a reload seen launching, or online before its event).
      const newGeneration = before !== undefined && p.startedAt > startedBefore;
      if (!before && online) {
        // First sight: a writer that has run for long is ready at once (a module restart must not
        // hold its packets); pm_uptime is its fork and its `online` came later, so a young one
        // (under twice ready_delay) counts from now.
        const uptime = toNumber(env.pm_uptime);
        p.onlineSince = uptime !== undefined && uptime <= now - 2 * this.#opts.readyDelay ? uptime : now;
        p.readyAt = p.onlineSince + (p.waitReady ? 0 : this.#opts.readyDelay);
        changes.push({ kind: 'online', proc: p });
      } else if (before && online && (p.readyAt === Infinity || newGeneration)) {
        this.#markOnline(p, now);
        changes.push({ kind: 'online', proc: p });
      } else if (!online && (p.readyAt !== Infinity || newGeneration)) {
        p.readyAt = Infinity;
        changes.push({ kind: 'offline', proc: p });
      }
    }
    for (const [id, p] of [...this.#procs]) {
      if (seen.has(id)) continue;
      if (newer(p)) stale = true;
      else changes.push(...this.#remove(id));
    }
    for (const [id, seq] of this.#deleted) if (seq <= askedAt) this.#deleted.delete(id);
    this.#staleSnapshot = stale;
    return changes;
  }

  /** Apply one bus `process:event` packet ({ event, process: pm2_env }). */
  applyEvent(event: string, env: Pm2Env, now: number): TableChange[] {
    const id = numericPmId(env.pm_id);
    if (id === undefined) return []; // parked `_old_` workers never become writers
    const seq = ++this.#eventSeq;
    if (event === 'delete') {
      this.#deleted.set(id, seq);
      return this.#remove(id);
    }
    this.#deleted.delete(id);
    const before = this.#procs.get(id);
    const startedBefore = before?.startedAt ?? 0;
    const p = this.#upsert(env, id);
    p.eventSeq = seq;
    if (event === 'online') {
      // The `online` packet still says `launching`; the event itself is what counts. It carries
      // no pid: the new generation's pid comes with the next `pm2 list`.
      p.status = 'online';
      p.pid = 0;
      this.#markOnline(p, now);
      return [{ kind: 'online', proc: p }];
    }
    if (p.status !== 'online' || event === 'exit' || event === 'stop') {
      if (p.status === 'online') p.status = 'stopping';
      const wasUsable = before !== undefined && before.readyAt !== Infinity;
      p.readyAt = Infinity;
      // A generation we had not heard of going away (a reloaded worker dying before its `online`)
      // is news: what it was handed is judged against it, not against the one after it.
      const unheardOf = before !== undefined && p.startedAt > startedBefore;
      return wasUsable || !before || unheardOf ? [{ kind: 'offline', proc: p }] : [];
    }
    return [];
  }

  /**
   * A send to this process failed, or it was found vacated: take it out of service until PM2 says it
   * is online again. Counted as an event: a list asked for before it is older than what it found.
   */
  markUnreachable(pmId: number): ProcessInfo | undefined {
    const p = this.#procs.get(pmId);
    if (p && p.readyAt !== Infinity) {
      p.readyAt = Infinity;
      p.status = 'unreachable';
      p.eventSeq = ++this.#eventSeq;
      return p;
    }
    return undefined;
  }

  /** The app announced readiness itself (`process.send('ready')`). */
  markReady(pmId: number, now: number): ProcessInfo | undefined {
    const p = this.#procs.get(pmId);
    const app = p && this.#apps.get(p.appKey);
    if (app) app.announces = true;
    if (p && p.status === 'online' && p.readyAt > now) {
      p.readyAt = now;
      return p;
    }
    return undefined;
  }

  #markOnline(p: ProcessInfo, now: number): void {
    p.onlineSince = now;
    const announces = this.#apps.get(p.appKey)?.announces === true;
    const wait = p.waitReady ? 0 : announces ? Math.max(this.#opts.readyDelay, this.#opts.announceTimeout ?? 30_000) : this.#opts.readyDelay;
    p.readyAt = now + wait;
  }

  #upsert(env: Pm2Env, id: number): ProcessInfo {
    const name = String(env.name ?? '');
    const namespace = typeof env.namespace === 'string' && env.namespace !== '' ? env.namespace : 'default';
    const key = appKeyOf(name, namespace);
    let app = this.#apps.get(key);
    if (!app) {
      app = { key, name, namespace, instanceVar: DEFAULT_INSTANCE_VAR, announces: false, pmIds: new Set() };
      this.#apps.set(key, app);
    }
    app.instanceVar = this.#instanceVars.of(key, env);
    const instance = toNumber(env[app.instanceVar]);
    const status = String(env.status ?? 'unknown');
    let p = this.#procs.get(id);
    if (p && p.appKey !== key) {
      this.#remove(id);
      p = undefined;
    }
    const pid = toNumber(env.pid) ?? 0;
    if (!p) {
      p = processOf(env, id, app, instance, status, pid);
      this.#procs.set(id, p);
      app.pmIds.add(id);
    } else {
      if (instance !== undefined) p.instance = instance;
      p.status = status;
      p.clusterMode = env.exec_mode === 'cluster_mode';
      p.waitReady = env.wait_ready === true || env.wait_ready === 'true';
      p.memoryRestart = memoryRestartOf(env);
      if (pid !== 0) p.pid = pid;
      const logs = pm2LogsOf(env);
      if (logs.length > 0) p.pm2Logs = logs;
      const started = toNumber(env.pm_uptime);
      if (started !== undefined) p.startedAt = started;
    }
    return p;
  }

  #remove(id: number): TableChange[] {
    const p = this.#procs.get(id);
    if (!p) return [];
    this.#procs.delete(id);
    const changes: TableChange[] = [{ kind: 'removed', proc: p }];
    const app = this.#apps.get(p.appKey);
    if (app) {
      app.pmIds.delete(id);
      if (app.pmIds.size === 0) {
        this.#apps.delete(app.key);
        changes.push({ kind: 'app-removed', app });
      }
    }
    return changes;
  }
}

/** A process first seen, from its pm2_env: not ready until PM2 says it is online. */
/** PM2 keeps `max_memory_restart` in bytes; absent (or unset, 0) when the app has none. */
function memoryRestartOf(env: Pm2Env): boolean {
  const v = env.max_memory_restart;
  return v !== undefined && v !== null && v !== 0 && v !== '0' && v !== '';
}

function processOf(env: Pm2Env, pmId: number, app: AppInfo, instance: number | undefined, status: string, pid: number): ProcessInfo {
  return {
    pmId,
    appKey: app.key,
    name: app.name,
    namespace: app.namespace,
    instance,
    status,
    clusterMode: env.exec_mode === 'cluster_mode',
    isModule: env.pmx_module === true || env.pmx_module === 'true',
    waitReady: env.wait_ready === true || env.wait_ready === 'true',
    memoryRestart: memoryRestartOf(env),
    onlineSince: 0,
    readyAt: Infinity,
    startedAt: toNumber(env.pm_uptime) ?? 0,
    pid,
    pm2Logs: pm2LogsOf(env),
  };
}
