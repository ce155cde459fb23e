/**
 * Small facts about the system the module runs on, each decided once. A leaf: it imports nothing
 * but Node's own modules.
 */
import os from 'node:os';
import path from 'node:path';

/** One line for `pm2 logs`. */
export type LogFn = (line: string) => void;

/** PM2's home folder, as PM2 itself finds it. */
export function pm2Home(env: NodeJS.ProcessEnv = process.env): string {
  return env.PM2_HOME || path.join(env.HOME || os.homedir(), '.pm2');
}

/**
 * Does a process of ours run under this pid? `kill(pid, 0)` tells: ESRCH, no process; EPERM, a
 * process we may not signal, so not one of ours (the module, its bridge and PM2's daemon run as one
 * user: a pid that another user's process now holds was reused).
 */
export function pidAlive(pid: number, kill: (pid: number, signal: 0) => unknown = process.kill): boolean {
  if (!(pid > 0)) return false;
  try {
    kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A finite number, or a string that is one (PM2 and environment variables give either). */
export function toNumber(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return undefined;
}
