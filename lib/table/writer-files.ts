/**
 * Has a new writer configured its logger yet? Learnt from the files it has open.
 *
 * Why: an app that says nothing is taken as ready `ready_delay` ms after PM2 reports it online, a
 * guess. A writer that configures log4js later (slow imports on a busy machine, an `await` first)
 * silently drops what it is handed before, although PM2 reports each send a success: measured, a
 * held backlog delivered to such a writer is lost whole. But a log4js writer opens its appenders'
 * files in the same synchronous `configure()` call that makes it listen for log packets, and only
 * the writer opens them (log4js creates no appenders in the other instances). So the module learns
 * each app's writer-only files (open in the writer, not in another instance of the app: PM2's own
 * log files, open in every instance, drop out), and holds a later writer's packets until it has
 * opened one of them. Never earlier than `ready_delay`; at most `FILES_WAIT_MS` later.
 */
import fs from 'node:fs';

/** How long after `online` a writer that has not opened its app's files is waited for. */
export const FILES_WAIT_MS = 15_000;

/**
 * How long after `online` the writer of an app whose files are not known yet (a new app, or one
 * whose writer went before it was looked at) is waited for until it has a file of its own. An app
 * that logs to stdout only never has one: it waits this long once, and is then known to have none.
 */
export const FIRST_FILES_WAIT_MS = 5_000;

/** How many times one writer process is looked at for files of its own. */
const MAX_LOOKS = 5;

/** Regular files a process has open for writing (absolute paths), undefined where /proc cannot tell. */
export type OpenFiles = (pid: number) => Set<string> | undefined;

/** `flags:` of /proc/<pid>/fdinfo/<fd> (octal): open for writing (O_WRONLY or O_RDWR)? */
export function openForWriting(fdinfo: string): boolean {
  const m = /^flags:\s*([0-7]+)/m.exec(fdinfo);
  return m !== null && (parseInt(m[1], 8) & 3) !== 0;
}

/**
 * Only files open for writing count: a logger's appenders write, and a process that is starting
 * reads many files for a moment (seen: PM2's package.json, learnt as a writer's file because the
 * look came while it was being read; its next writer was then waited for 15 s).
 */
export function procOpenFiles(procRoot = '/proc'): OpenFiles {
  return (pid) => {
    if (!(pid > 0)) return undefined;
    let fds: string[];
    try {
      fds = fs.readdirSync(`${procRoot}/${pid}/fd`);
    } catch {
      return undefined;
    }
    const files = new Set<string>();
    for (const fd of fds) {
      try {
        const target = fs.readlinkSync(`${procRoot}/${pid}/fd/${fd}`);
        if (!target.startsWith('/') || target.startsWith('/dev/') || target.startsWith('/proc/')) continue;
        if (openForWriting(fs.readFileSync(`${procRoot}/${pid}/fdinfo/${fd}`, 'latin1'))) files.add(target);
      } catch {
        /* closed meanwhile */
      }
    }
    return files;
  };
}

function realpath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

interface Learnt {
  /** The writer process they were learnt from. */
  readonly pid: number;
  readonly files: readonly string[];
}

export class WriterFiles {
  readonly #open: OpenFiles;
  readonly #learnt = new Map<string, Learnt>();
  /** Apps whose writer had no file of its own FIRST_FILES_WAIT_MS after online (stdout only). */
  readonly #without = new Set<string>();
  /** Writers looked at (app -> pid, looks): each is read a few times at most. */
  readonly #looked = new Map<string, { pid: number; looks: number }>();

  /** Whether processes' open files can be read at all (not where /proc cannot be read). */
  readonly canTell: boolean;

  constructor(open: OpenFiles, canTell = true) {
    this.#open = open;
    this.canTell = canTell;
  }

  /**
   * Learn an app's writer-only files from its ready writer and another instance of it, once per
   * writer process (a few looks while it has none), leaving out `pm2Logs` (PM2's own log files for
   * the writer, which are per process). Returns them when it learnt some.
   */
  learn(appKey: string, writerPid: number, otherPid: number, pm2Logs: readonly string[] = []): readonly string[] | undefined {
    if (!(writerPid > 0) || !(otherPid > 0) || this.#learnt.get(appKey)?.pid === writerPid) return undefined;
    let looked = this.#looked.get(appKey);
    if (looked === undefined || looked.pid !== writerPid) this.#looked.set(appKey, (looked = { pid: writerPid, looks: 0 }));
    if (looked.looks >= MAX_LOOKS) return undefined;
    looked.looks++;
    const files = this.#learnFrom(appKey, writerPid, otherPid, pm2Logs);
    // None: it logs to stdout only, or has not configured yet (looked at again, a few times).
    return files !== undefined && files.length > 0 ? files : undefined;
  }

  /**
   * An app with nothing learnt: has this writer a file of its own (open in it, not in `otherPid`,
   * not PM2's)? If so they are learnt from it and it is true; false when it has none yet;
   * undefined when /proc cannot tell. Not limited in looks: asked while a new writer is waited for.
   */
  ownFiles(appKey: string, writerPid: number, otherPid: number, pm2Logs: readonly string[] = []): boolean | undefined {
    if (!(writerPid > 0) || !(otherPid > 0)) return undefined;
    const files = this.#learnFrom(appKey, writerPid, otherPid, pm2Logs);
    return files === undefined ? undefined : files.length > 0;
  }

  /** The writer's files that `otherPid` and PM2 do not have open, learnt if there are any; undefined where /proc cannot tell. */
  #learnFrom(appKey: string, writerPid: number, otherPid: number, pm2Logs: readonly string[]): string[] | undefined {
    const mine = this.#open(writerPid);
    const theirs = this.#open(otherPid);
    if (mine === undefined || theirs === undefined) return undefined;
    const pm2s = new Set(pm2Logs.flatMap((f) => [f, realpath(f)]));
    const files = [...mine].filter((f) => !theirs.has(f) && !pm2s.has(f));
    if (files.length > 0) {
      this.#learnt.set(appKey, { pid: writerPid, files });
      this.#without.delete(appKey);
    }
    return files;
  }

  /** The app's writer had no file of its own when waited for: it logs to stdout only. */
  markWithout(appKey: string): void {
    this.#without.add(appKey);
  }

  /** Known to have no files of its own (markWithout), and none learnt since. */
  isWithout(appKey: string): boolean {
    return this.#without.has(appKey);
  }

  /** What was learnt for an app, if anything. */
  filesOf(appKey: string): readonly string[] | undefined {
    return this.#learnt.get(appKey)?.files;
  }

  /**
   * Has this (new) writer process opened one of its app's files? undefined: nothing to go by (none
   * learnt, the process they were learnt from, or /proc cannot tell); false also while its pid is
   * not known yet.
   */
  opened(appKey: string, pid: number): boolean | undefined {
    const learnt = this.#learnt.get(appKey);
    if (learnt === undefined || learnt.pid === pid) return undefined;
    if (!(pid > 0)) return false;
    const open = this.#open(pid);
    if (open === undefined) return undefined;
    return learnt.files.some((f) => open.has(f));
  }

  forget(appKey: string): void {
    this.#learnt.delete(appKey);
    this.#without.delete(appKey);
    this.#looked.delete(appKey);
  }
}

/** Where /proc cannot be read: nothing is learnt, nothing waited for. */
export function noWriterFiles(): WriterFiles {
  return new WriterFiles(() => undefined, false);
}
