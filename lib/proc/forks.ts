/**
 * Has PM2 put a new process under a pm_id? Read from the daemon's list of children
 * (`/proc/<daemon>/task/<daemon>/children`, through a kept descriptor: descriptors.ts).
 *
 * Why: `pm2 reload` forks the new worker under the old pm_id (the old one parked, alive) and says
 * nothing on the bus until the new one is `online`, which can come much later; what PM2 hands it in
 * between may be lost. The fork shows in the daemon's children at once, so checking before every
 * send means only the send in flight at the fork can reach a process we did not know.
 *
 * A new child is matched to its pm_id once, from its environment (cluster workers get a `pm2_env`
 * JSON, fork-mode processes a `pm_id` variable); its start time tells it from the parked old
 * worker. Where there is no such file (not Linux, or a kernel without it), nothing is reported.
 */
import fs from 'node:fs';
import { Descriptors } from './descriptors';
import { startTime } from './stat';

export interface Newcomers {
  /** The pid of a process PM2 started for `pmId` after `knownPid` started, if there is one. */
  after(pmId: number, knownPid: number): number | undefined;
  /**
   * Has PM2 started a process for `pmId` since `knownPid`? false only when every process the
   * daemon started since then is identified as another pm_id's; undefined when that cannot be
   * told (no /proc, `knownPid` not a child, or a new child not identified yet: right after a
   * fork the daemon runs on while the child is still in exec, its environment not readable).
   */
  forked(pmId: number, knownPid: number): boolean | undefined;
  /**
   * Was every child of the daemon, at the last read, told apart by its pm_id? false while one is
   * not (in exec, or not ours to read): a process PM2 just started may then be any pm_id's.
   */
  settled(): boolean;
}

interface Child {
  /** undefined: not classified yet (or not a PM2 process we can read). */
  pmId: number | undefined;
  start: number;
  tries: number;
}

/** The pm_id PM2 gave a process, from its environment block (NUL-separated). */
export function pmIdFromEnviron(environ: string): number | undefined {
  for (const entry of environ.split('\0')) {
    if (entry.startsWith('pm_id=')) {
      const id = Number(entry.slice(6));
      if (Number.isInteger(id)) return id;
    } else if (entry.startsWith('pm2_env=')) {
      try {
        const id = (JSON.parse(entry.slice(8)) as { pm_id?: unknown }).pm_id;
        if (typeof id === 'number' && Number.isInteger(id)) return id;
      } catch {
        /* not PM2's */
      }
    }
  }
  return undefined;
}

/** Where /proc cannot be read (or `proc_checks=off`): nothing is ever reported. */
export const NO_NEWCOMERS: Newcomers = Object.freeze({ after: () => undefined, forked: () => undefined, settled: () => false });

export function daemonChildren(daemonPid: number = process.ppid, procRoot = '/proc'): Newcomers {
  const children = new Descriptors<number>(4096);
  try {
    children.open(daemonPid, `${procRoot}/${daemonPid}/task/${daemonPid}/children`);
  } catch {
    return NO_NEWCOMERS;
  }
  return new DaemonChildren(procRoot, () => children.read(daemonPid));
}

/** A child read just before its exec shows the daemon's own environment: read again, this often. */
const CLASSIFY_TRIES = 20;
/** Then once every this many reads (a slow exec under load, or a process not ours to read). */
const CLASSIFY_LATER_EVERY = 256;

/** The daemon's children as last read, each matched to its pm_id once it can be. */
class DaemonChildren implements Newcomers {
  readonly #procRoot: string;
  /** The children file as it reads now (throws when it cannot be read). */
  readonly #readList: () => Buffer | undefined;
  #lastList = Buffer.alloc(0);
  readonly #children = new Map<number, Child>();
  /** Per pm_id, its most recently started child. */
  readonly #newest = new Map<number, { pid: number; start: number }>();
  #unclassified = 0;
  /** Children past CLASSIFY_TRIES still not told apart, and reads since they were last tried. */
  #givenUp = 0;
  #sinceRetry = 0;

  constructor(procRoot: string, readList: () => Buffer | undefined) {
    this.#procRoot = procRoot;
    this.#readList = readList;
  }

  after(pmId: number, knownPid: number): number | undefined {
    if (!(knownPid > 0)) return undefined;
    this.#refresh();
    const n = this.#newest.get(pmId);
    if (!n || n.pid === knownPid) return undefined;
    const known = this.#children.get(knownPid);
    // The known process is not (or no longer) a child: the liveness check speaks for it.
    if (!known || !(n.start > known.start)) return undefined;
    return n.pid;
  }

  forked(pmId: number, knownPid: number): boolean | undefined {
    if (!(knownPid > 0)) return undefined;
    this.#refresh();
    const known = this.#children.get(knownPid);
    if (!known || Number.isNaN(known.start)) return undefined;
    let verdict: boolean | undefined = false;
    for (const [pid, c] of this.#children) {
      if (pid === knownPid || !(c.start >= known.start)) continue;
      if (c.pmId === pmId) return c.start > known.start ? true : undefined;
      if (c.pmId === undefined) verdict = undefined;
    }
    return verdict;
  }

  settled(): boolean {
    return this.#unclassified === 0 && this.#givenUp === 0;
  }

  #refresh(): void {
    let list: Buffer | undefined;
    try {
      list = this.#readList();
    } catch {
      return;
    }
    if (list === undefined) return;
    const same = list.equals(this.#lastList);
    const retryGivenUp = this.#givenUp > 0 && ++this.#sinceRetry >= CLASSIFY_LATER_EVERY;
    if (same && this.#unclassified === 0 && !retryGivenUp) return;
    if (same) {
      if (retryGivenUp) this.#sinceRetry = 0;
      for (const [pid, c] of this.#children) if (c.pmId === undefined && (retryGivenUp || c.tries < CLASSIFY_TRIES)) this.#classify(pid, c);
    } else {
      this.#lastList = Buffer.from(list);
      this.#update(this.#lastList);
    }
    this.#rebuild();
  }

  /** Forgets children gone from `list`, and classifies the new ones. */
  #update(list: Buffer): void {
    const now = new Set<number>();
    for (const word of list.toString('latin1').split(' ')) {
      const pid = Number(word);
      if (pid > 0) now.add(pid);
    }
    for (const pid of this.#children.keys()) if (!now.has(pid)) this.#children.delete(pid);
    for (const pid of now) {
      if (this.#children.has(pid)) continue;
      const c: Child = { pmId: undefined, start: NaN, tries: 0 };
      this.#children.set(pid, c);
      this.#classify(pid, c);
    }
  }

  #classify(pid: number, c: Child): void {
    c.tries++;
    try {
      c.start = startTime(fs.readFileSync(`${this.#procRoot}/${pid}/stat`));
      c.pmId = pmIdFromEnviron(fs.readFileSync(`${this.#procRoot}/${pid}/environ`, 'latin1'));
    } catch {
      c.pmId = undefined; // gone already, or not ours to read
    }
  }

  #rebuild(): void {
    this.#newest.clear();
    this.#unclassified = 0;
    this.#givenUp = 0;
    for (const [pid, c] of this.#children) {
      if (c.pmId === undefined) {
        if (c.tries < CLASSIFY_TRIES) this.#unclassified++;
        else this.#givenUp++;
        continue;
      }
      const n = this.#newest.get(c.pmId);
      if (!n || c.start > n.start) this.#newest.set(c.pmId, { pid, start: c.start });
    }
  }
}
