/**
 * Is a process still alive (not exited, not a zombie waiting to be reaped)? Read from
 * `/proc/<pid>/stat` through a file descriptor kept open per pid: one `pread` per check.
 *
 * Why: PM2's daemon survives one failed write to a worker whose IPC channel has just closed, and
 * dies of the second (an uncaught ERR_IPC_CHANNEL_CLOSED) if it comes before the daemon has handled
 * the worker's exit. A worker that died is a zombie until the daemon reaps it, so checking before
 * every send, with one send in flight, means at most one send ever reaches a dead worker.
 * Where there is no /proc (not Linux), every process counts as alive.
 */
import fs from 'node:fs';

export interface Liveness {
  isAlive(pid: number): boolean;
  forget(pid: number): void;
}

export function procLiveness(procRoot = '/proc'): Liveness {
  if (!fs.existsSync(`${procRoot}/self/stat`)) return { isAlive: () => true, forget: () => {} };
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
      // "pid (comm) S ...": the state follows the last ')'; the name may contain ')'.
      const state = buf[buf.lastIndexOf(0x29, n - 1) + 2];
      if (state === 0x5a /* Z */ || state === 0x58 /* X */ || state === 0x78 /* x */) {
        forget(pid);
        return false;
      }
      return true;
    },
    forget,
  };
}
