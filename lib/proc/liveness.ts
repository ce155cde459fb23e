/**
 * Is a process still alive and going to stay so (not exited, not a zombie, not dying)? Read from
 * `/proc/<pid>/stat` through a file descriptor kept open per pid: one `pread` per check.
 *
 * Why: PM2's daemon survives one failed write to a worker whose IPC channel has just closed, and
 * dies of the second (an uncaught ERR_IPC_CHANNEL_CLOSED) if it comes before the daemon has handled
 * the worker's exit. And what PM2 writes into a dying worker's pipe is lost with it, although PM2
 * acknowledged it.
 *
 * A process counts as dying from the moment a fatal signal is sent to it, not from when it becomes
 * a zombie: `kill -9`, or SIGINT to an app without a handler, marks SIGKILL pending in every thread
 * at once (stat field 31), and the kernel sets PF_EXITING (field 9) when the process starts to exit.
 * On a busy machine the time from the signal to the zombie state is hundreds of ms (measured: 446 ms
 * for a starved process, 393 ms for one freeing 6 GB), all of it with the IPC channel still open:
 * sends in that time were accepted and lost. Checked before every send with one send in flight,
 * at most the send in flight at the kill reaches a dying worker.
 * Where there is no /proc (not Linux), every process counts as alive, and send-guard.ts keeps
 * PM2's daemon safe instead.
 */
import fs from 'node:fs';

export interface Liveness {
  isAlive(pid: number): boolean;
  /**
   * Is the process idle, waiting for input, so it has read everything written into its IPC pipe
   * before now? Absent, or where it cannot be told: true (nothing to pace by).
   */
  idle?(pid: number): boolean;
  forget(pid: number): void;
}

const PF_EXITING = 0x4;
const SIGKILL_BIT = 1 << 8; // signal 9

/**
 * From the text of /proc/<pid>/stat ("pid (comm) S ppid ..."): exited (zombie, dead), exiting, or
 * sent a fatal signal. The fields follow the last ')' (the name may contain one).
 */
export function dyingOrDead(buf: Buffer, n: number): boolean {
  let i = buf.lastIndexOf(0x29, n - 1) + 2;
  const state = buf[i];
  if (state === 0x5a /* Z */ || state === 0x58 /* X */ || state === 0x78 /* x */) return true;
  // Field 3 is the state; walk to field 9 (flags) and field 31 (pending signals).
  let field = 3;
  let flags = 0;
  let pending = 0;
  for (; i < n && field <= 31; i++) {
    const c = buf[i];
    if (c === 0x20) {
      field++;
      continue;
    }
    if (field === 9) flags = flags * 10 + (c - 0x30);
    else if (field === 31) pending = pending * 10 + (c - 0x30);
  }
  // The flags word and the signal mask fit in 32 bits: read them as unsigned.
  return (flags & PF_EXITING) !== 0 || (pending & SIGKILL_BIT) !== 0;
}

/** The state letter of /proc/<pid>/stat ('R', 'S', 'D', 'T', 'Z', ...). */
export function stateOf(buf: Buffer, n: number): string {
  return String.fromCharCode(buf[buf.lastIndexOf(0x29, n - 1) + 2]);
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
  if (!procReadable(procRoot)) return NO_LIVENESS;
  const fds = new Map<number, number>();
  const wchans = new Map<number, number | null>();
  /** Whether this kernel shows wait channels (some hide them: always "0"). */
  let wchanShown = false;
  const buf = Buffer.alloc(1024);
  const close = (fd: number | null | undefined): void => {
    if (fd === undefined || fd === null) return;
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
    }
  };
  const forget = (pid: number): void => {
    close(fds.get(pid));
    fds.delete(pid);
    close(wchans.get(pid));
    wchans.delete(pid);
  };
  /** What /proc/<pid>/wchan says (undefined: cannot be read). */
  const wchanOf = (pid: number): string | undefined => {
    let fd = wchans.get(pid);
    if (fd === undefined) {
      try {
        fd = fs.openSync(`${procRoot}/${pid}/wchan`, 'r');
      } catch {
        fd = null;
      }
      wchans.set(pid, fd);
    }
    if (fd === null) return undefined;
    try {
      const n = fs.readSync(fd, buf, 0, 64, 0);
      const w = buf.toString('latin1', 0, n).trim();
      if (w !== '' && w !== '0') wchanShown = true;
      return w;
    } catch {
      return undefined;
    }
  };
  return {
    isAlive(pid) {
      if (!(pid > 0)) return true;
      let fd = fds.get(pid);
      if (fd === undefined) {
        try {
          fd = fs.openSync(`${procRoot}/${pid}/stat`, 'r');
        } catch (err) {
          return (err as NodeJS.ErrnoException).code !== 'ENOENT';
        }
        fds.set(pid, fd);
      }
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, 0);
      } catch {
        forget(pid);
        return false; // ESRCH: reaped
      }
      if (n === 0) {
        forget(pid);
        return false;
      }
      if (dyingOrDead(buf, n)) {
        forget(pid);
        return false;
      }
      return true;
    },
    idle(pid) {
      const fd = fds.get(pid);
      if (fd === undefined) return true;
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, 0);
      } catch {
        return true; // gone: the liveness check says so before the next send
      }
      if (n === 0) return true;
      const state = stateOf(buf, n);
      return state === 'S' ? idleFrom(state, wchanOf(pid), wchanShown) : false;
    },
    forget,
  };
}
