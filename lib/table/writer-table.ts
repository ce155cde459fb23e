/**
 * The writer table: which process each app's log packets go to now, and whether a process may be
 * sent to at all. It caches each app's elected writer (the hot path reads it), arms a timer for a
 * writer that becomes ready later, and announces every change (`WriterEvents`): it never calls the
 * outbox, the reporter or the relay. Before every send the outbox asks it (`SendGate`) whether the
 * target is still the process we know: the /proc checks (liveness, forks) are made here and nowhere else.
 */
import type { Timers } from '../shared/clock';
import type { Settings } from '../operator/settings';
import { electWriter, type Election } from './election';
import type { Liveness } from '../proc/liveness';
import type { Vacancy } from '../proc/vacancy';
import type { Newcomers } from '../proc/forks';
import type { AppInfo, ProcessInfo, Registry } from './registry';
import { FILES_WAIT_MS, FIRST_FILES_WAIT_MS, noWriterFiles, type WriterFiles } from './writer-files';

/** What the outbox asks the writer table: may I send to this target, and did it change? */
export interface SendGate {
  /** The pm_id of the app's ready writer, if any. */
  writerOf(appKey: string): number | undefined;
  /** The generation (PM2's pm_uptime) of the process behind a pm_id: what a new target stands for. */
  generationOf(pmId: number): number;
  /** Checked before every send: undefined when the pm_id may be sent to, else why not. */
  vacancy(pmId: number): Vacancy | undefined;
  /**
   * Asked when an answer came late: has PM2 started a new process for this pm_id since the one we
   * send to? false: no, so PM2 handled the send before any reload swapped it; undefined: unknown.
   */
  forkedSince(pmId: number): boolean | undefined;
  /**
   * Asked when a writer's unread backlog is at its bound (pacing.ts): is the process idle in its
   * event loop now, so it has read everything PM2 wrote into its pipe before?
   */
  caughtUp(pmId: number): boolean;
}

/** Why an app's packets wait, as the table knows it. */
export interface WriterWait {
  app: AppInfo | undefined;
  procs: readonly ProcessInfo[];
  election: Election | undefined;
  /** The elected writer is online but has not opened these files yet (its logger is not configured). */
  unopened: readonly string[] | undefined;
  writerInstance: number;
}

/** What the writer table announces; the relay acts on it and words it. */
export interface WriterEvents {
  /** The app's ready writer changed; `elected`: the process elected (perhaps not ready yet), if any. */
  writerElected(appKey: string, elected: ProcessInfo | undefined): void;
  /** Several online processes claim the writer's instance number. */
  duplicateWriter(appKey: string, claimants: readonly ProcessInfo[]): void;
  /** The writer had not opened the app's files `waitedMs` after it came online: it is taken anyway. */
  writerWithoutFiles(appKey: string, writer: ProcessInfo, files: readonly string[], waitedMs: number): void;
  /** A process was taken out of service: found vacated before a send, or PM2 refused a send (its message). */
  outOfService(pmId: number, why: { vacancy: Vacancy } | { refused: string }): void;
  /** Read `pm2 list` again in `ms` (coalesced). */
  reconcileSoon(ms: number): void;
  /** Something changed for the app (its writer came, went, or became ready): send what can go. */
  changed(appKey: string): void;
}

export interface WritersOptions {
  registry: Registry;
  settings: Pick<Settings, 'writer_instance'>;
  events: WriterEvents;
  timers: Timers;
  now(): number;
  liveness: Liveness;
  newcomers: Newcomers;
  /** Each app's writer-only files, so a new writer is waited for until it opens one. */
  files?: WriterFiles;
}

/** How often a new writer is looked at while it has not opened its app's files yet. */
const FILES_POLL_MS = 100;

export class Writers implements SendGate {
  readonly #registry: Registry;
  readonly #settings: WritersOptions['settings'];
  readonly #events: WriterEvents;
  readonly #timers: Timers;
  readonly #now: () => number;
  readonly #liveness: Liveness;
  readonly #newcomers: Newcomers;
  readonly #files: WriterFiles;
  /** The ready writer of each app, recomputed on every table change (the hot path reads it). */
  readonly #writer = new Map<string, number | undefined>();
  readonly #readyTimers = new Map<string, unknown>();

  constructor(opts: WritersOptions) {
    this.#registry = opts.registry;
    this.#settings = opts.settings;
    this.#events = opts.events;
    this.#timers = opts.timers;
    this.#now = opts.now;
    this.#liveness = opts.liveness;
    this.#newcomers = opts.newcomers;
    this.#files = opts.files ?? noWriterFiles();
  }

  writerOf(appKey: string): number | undefined {
    return this.#writer.get(appKey);
  }

  generationOf(pmId: number): number {
    return this.#registry.process(pmId)?.startedAt ?? 0;
  }

  // --- the /proc checks (liveness.ts, forks.ts) ---

  vacancy(pmId: number): Vacancy | undefined {
    const proc = this.#registry.process(pmId);
    if (proc === undefined) return undefined;
    if (!this.#liveness.isAlive(proc.pid)) return { kind: 'exited', pid: proc.pid };
    const newPid = this.#newcomers.after(pmId, proc.pid);
    return newPid === undefined ? undefined : { kind: 'replaced', pid: proc.pid, newPid };
  }

  caughtUp(pmId: number): boolean {
    const proc = this.#registry.process(pmId);
    return proc === undefined || (this.#liveness.idle?.(proc.pid) ?? true);
  }

  forkedSince(pmId: number): boolean | undefined {
    const proc = this.#registry.process(pmId);
    return proc === undefined ? undefined : this.#newcomers.forked(pmId, proc.pid);
  }

  /** The process left the table: its /proc descriptor is closed. */
  removed(proc: ProcessInfo): void {
    this.#liveness.forget(proc.pid);
  }

  // --- out of service ---

  /** The outbox found this process vacated before a send. */
  vacated(pmId: number, v: Vacancy): void {
    // A replacement says `online` soon, and the list tells its pid meanwhile; an exit is read
    // after PM2 has handled it.
    this.#outOfService(pmId, { vacancy: v }, v.kind === 'exited' ? 1000 : 200);
  }

  /** PM2 refused a send to this process. */
  refused(pmId: number, err: Error): void {
    const msg = err && err.message ? err.message : String(err);
    this.#outOfService(pmId, { refused: msg }, /unknown/.test(msg) ? 0 : 1000);
  }

  /** Nothing more goes to this process until PM2 says it is online again; its app's packets wait. */
  #outOfService(pmId: number, why: { vacancy: Vacancy } | { refused: string }, reconcileInMs: number): void {
    // Last chance to learn the app's files from the writer that goes (alive in a reload, parked
    // by PM2; still open at PM2's "Stopping app" line), before its successor is judged by them.
    const going = this.#registry.process(pmId);
    if (going !== undefined && this.#writer.get(going.appKey) === pmId) this.learnFiles(going.appKey);
    const proc = this.#registry.markUnreachable(pmId);
    this.#events.outOfService(pmId, why);
    this.#events.reconcileSoon(reconcileInMs);
    if (proc) this.update(proc.appKey);
  }

  // --- election ---

  elect(appKey: string): Election | undefined {
    const app = this.#registry.app(appKey);
    if (!app) return undefined;
    return electWriter(this.#registry.processesOf(app), this.#settings.writer_instance, this.#now());
  }

  /** Recompute an app's writer, say so if it changed, and send what waits. */
  update(appKey: string): void {
    const e = this.elect(appKey);
    if (!e) return;
    const before = this.#writer.get(appKey);
    const opening = e.writer !== undefined && (this.#pidUnknown(e.writer) || this.#notConfiguredYet(appKey, e.writer));
    const writer = opening ? undefined : e.writer?.pmId;
    const had = this.#writer.has(appKey);
    this.#writer.set(appKey, writer);
    // Learnt as early as possible: a reload seconds after the app started must find them known.
    if (writer !== undefined && writer !== before) this.learnFiles(appKey);
    this.#clearReadyTimer(appKey);
    const recheckAt = opening ? this.#now() + FILES_POLL_MS : writer === undefined ? e.readyAt : undefined;
    if (recheckAt !== undefined) {
      this.#readyTimers.set(
        appKey,
        this.#timers.setTimeout(() => {
          this.#readyTimers.delete(appKey);
          this.update(appKey);
        }, Math.max(0, recheckAt - this.#now())),
      );
    }
    if (before !== writer && (had || writer !== undefined)) this.#events.writerElected(appKey, e.writer);
    if (e.claimants.length > 1) this.#events.duplicateWriter(appKey, e.claimants);
    this.#events.changed(appKey);
  }

  /**
   * A writer whose pid no `pm2 list` has told yet (PM2's `online` event carries none) cannot be
   * checked before a send (liveness.ts, forks.ts): killed with `kill -9` and restarted meanwhile, its
   * pm_id would hand the line to a process that does not run the app yet. Waited for, with a list
   * read asked for, up to FILES_WAIT_MS after it came online (then as before).
   */
  #pidUnknown(p: ProcessInfo): boolean {
    if (this.#liveness.checksPids !== true || p.pid > 0 || this.#now() - p.onlineSince >= FILES_WAIT_MS) return false;
    this.#events.reconcileSoon(FILES_POLL_MS);
    return true;
  }

  /**
   * A writer that has not opened any of its app's files yet (writer-files.ts) has not configured
   * its logger: wait for it, up to FILES_WAIT_MS after it came online. Apps that say when they are
   * ready are taken at their word.
   */
  #notConfiguredYet(appKey: string, p: ProcessInfo): boolean {
    const app = this.#registry.app(appKey);
    if (app === undefined || app.announces || p.waitReady) return false;
    const opened = this.#files.opened(appKey, p.pid);
    if (opened === undefined) return this.#firstNotConfigured(appKey, app, p);
    if (opened !== false) return false;
    const waited = this.#now() - p.onlineSince;
    if (waited < FILES_WAIT_MS) return true;
    this.#events.writerWithoutFiles(appKey, p, this.#files.filesOf(appKey) ?? [], waited);
    return false;
  }

  /**
   * Nothing learnt of the app's files (a new app, or its writer went before it was looked at): the
   * writer counts as configured once it has a file of its own, compared with another instance of
   * the app (measured: a new app's writer taken at ready_delay before it had configured log4js lost
   * the first line a sender sent, at load ~20). An app without one (stdout only) is waited for
   * FIRST_FILES_WAIT_MS once, then known to have none. Where /proc cannot tell, or the app has no
   * other instance, ready_delay alone, as before.
   */
  #firstNotConfigured(appKey: string, app: AppInfo, p: ProcessInfo): boolean {
    if (this.#files.filesOf(appKey) !== undefined || this.#files.isWithout(appKey)) return false;
    const other = this.#siblingOf(app, p.pmId);
    if (other === undefined || !(p.pid > 0)) {
      // Its pid or its siblings' not listed yet (PM2's events carry none, and a busy daemon lists
      // late): wait for them, as for its files, where /proc can tell and it has a sibling.
      const waiting = this.#files.canTell && this.#registry.processesOf(app).some((q) => q.pmId !== p.pmId && q.status === 'online' && !q.isModule);
      return waiting && this.#now() - p.onlineSince < FIRST_FILES_WAIT_MS;
    }
    const own = this.#files.ownFiles(appKey, p.pid, other.pid, p.pm2Logs);
    if (own !== false) return false;
    if (this.#now() - p.onlineSince < FIRST_FILES_WAIT_MS) return true;
    this.#files.markWithout(appKey);
    return false;
  }

  /**
   * Learn an app's writer-only files from its ready writer and another of its instances (once per
   * writer process, a few looks at most). Called every second, when a writer becomes ready, and
   * when it goes out of service.
   */
  learnFiles(appKey: string): void {
    const pmId = this.#writer.get(appKey);
    const w = pmId === undefined ? undefined : this.#registry.process(pmId);
    const app = this.#registry.app(appKey);
    if (w === undefined || app === undefined || !(w.pid > 0)) return;
    const other = this.#siblingOf(app, w.pmId);
    if (other !== undefined) this.#files.learn(appKey, w.pid, other.pid, w.pm2Logs);
  }

  /** Another online instance of the app with a known pid, to compare a writer's files with. */
  #siblingOf(app: AppInfo, pmId: number): ProcessInfo | undefined {
    for (const p of this.#registry.processesOf(app)) {
      if (p.pmId !== pmId && p.status === 'online' && p.pid > 0) return p;
    }
    return undefined;
  }

  /**
   * The facts behind an app's wait (worded by operator/wording.ts `whyHeld`): the election, and the
   * files its elected writer has not opened yet when that is what it waits for.
   */
  waitOf(appKey: string): WriterWait {
    const app = this.#registry.app(appKey);
    const election = this.elect(appKey);
    const unopened = election?.writer !== undefined && this.#writer.get(appKey) === undefined ? (this.#files.filesOf(appKey) ?? []) : undefined;
    return { app, procs: app ? this.#registry.processesOf(app) : [], election, unopened, writerInstance: this.#settings.writer_instance };
  }

  /** The app was deleted. */
  forget(appKey: string): void {
    this.#writer.delete(appKey);
    this.#files.forget(appKey);
    this.#clearReadyTimer(appKey);
  }

  stop(): void {
    for (const t of this.#readyTimers.values()) this.#timers.clearTimeout(t);
    this.#readyTimers.clear();
  }

  #clearReadyTimer(appKey: string): void {
    const t = this.#readyTimers.get(appKey);
    if (t === undefined) return;
    this.#timers.clearTimeout(t);
    this.#readyTimers.delete(appKey);
  }
}
