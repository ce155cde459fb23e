/**
 * Is a process still alive and going to stay so (not exited, not a zombie, not dying: stat.ts)?
 * Checked before every send, through a descriptor kept open per pid (descriptors.ts).
 *
 * Why: PM2's daemon dies of a second write into a closed IPC channel, and what PM2 writes into a
 * dying worker's pipe is lost although PM2 acknowledged it. A worker counts as dying from the
 * fatal signal on, since the zombie state can come hundreds of ms later with the channel still open
 * (figures: docs/architecture-notes.md). Without /proc every process counts as alive, and
 * deliver/send-guard.ts keeps PM2's daemon safe instead.
 */
import fs from 'node:fs';
import { Descriptors } from './descriptors';
import { dyingOrDead, stateOf } from './stat';

export interface Liveness {
  isAlive(pid: number): boolean;
  /**
   * Is the process idle, waiting for input, so it has read everything written into its IPC pipe
   * before now? Absent, or where it cannot be told: true (nothing to pace by).
   */
  idle?(pid: number): boolean;
  forget(pid: number): void;
  /** Whether `isAlive` can speak for a pid at all (false: it always says alive). */
  readonly checksPids?: boolean;
}

/**
 * Idle, from /proc/<pid>/stat's state and /proc/<pid>/wchan: sleeping ('S') in epoll, i.e. in its
 * event loop's wait with nothing readable (a readable IPC pipe would have woken it: its state would
 * be 'R' and its wchan "0"). A sleep elsewhere (a lock during garbage collection) is not idle.
 * Where the kernel hides wchan (unreadable, or always "0"), sleeping counts as idle. Where it shows
 * it, "0" means the process woke between the two reads: not idle.
 */
export function idleFrom(state: string, wchan: string | undefined, wchanShown: boolean): boolean {
  if (state !== 'S') return false;
  if (wchan === undefined || wchan === '' || (wchan === '0' && !wchanShown)) return true;
  return wchan.includes('epoll') || wchan.includes('ep_poll');
}

/** Where /proc cannot be read (or `proc_checks=off`): every process counts as alive. */
export const NO_LIVENESS: Liveness = Object.freeze({ isAlive: () => true, forget: () => {} });

/** Can this process read `file`? */
export function readable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Can this machine's /proc tell whether a process is dying? */
export function procReadable(procRoot = '/proc'): boolean {
  return readable(`${procRoot}/self/stat`);
}

export function procLiveness(procRoot = '/proc'): Liveness {
  return procReadable(procRoot) ? new ProcLiveness(procRoot) : NO_LIVENESS;
}

/** Liveness read from /proc/<pid>/stat (and wchan, for idle), one kept descriptor per pid and file. */
class ProcLiveness implements Liveness {
  readonly checksPids = true;
  readonly #root: string;
  readonly #stats = new Descriptors<number>();
  readonly #wchans = new Descriptors<number>(64);
  /** Whether this kernel shows wait channels (some hide them: always "0"). */
  #wchanShown = false;

  constructor(procRoot: string) {
    this.#root = procRoot;
  }

  isAlive(pid: number): boolean {
    if (!(pid > 0)) return true;
    try {
      // The path is built only to open it: this runs before every send.
      if (!this.#stats.isOpen(pid)) this.#stats.open(pid, `${this.#root}/${pid}/stat`);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'ENOENT';
    }
    let stat: Buffer | undefined;
    try {
      stat = this.#stats.read(pid);
    } catch {
      stat = undefined; // ESRCH: reaped
    }
    if (stat === undefined || stat.length === 0 || dyingOrDead(stat)) {
      this.forget(pid);
      return false;
    }
    return true;
  }

  idle(pid: number): boolean {
    let stat: Buffer | undefined;
    try {
      stat = this.#stats.read(pid);
    } catch {
      return true; // gone: the liveness check says so before the next send
    }
    if (stat === undefined || stat.length === 0) return true; // not checked yet, or nothing to go by
    const state = stateOf(stat);
    if (state !== 'S') return false;
    const wchan = this.#wchanOf(pid);
    return idleFrom(state, wchan, this.#wchanShown);
  }

  forget(pid: number): void {
    this.#stats.close(pid);
    this.#wchans.close(pid);
  }

  /** What /proc/<pid>/wchan says (undefined: cannot be read). */
  #wchanOf(pid: number): string | undefined {
    if (!this.#wchans.openOnce(pid, `${this.#root}/${pid}/wchan`)) return undefined;
    try {
      const w = (this.#wchans.read(pid) as Buffer).toString('latin1').trim();
      if (w !== '' && w !== '0') this.#wchanShown = true;
      return w;
    } catch {
      return undefined;
    }
  }
}
