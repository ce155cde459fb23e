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
  const buf = Buffer.alloc(1024);
  const forget = (pid: number): void => {
    const fd = fds.get(pid);
    if (fd === undefined) return;
    fds.delete(pid);
    try {
      fs.closeSync(fd);
    } catch {
      /* already closed */
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
    forget,
  };
}
