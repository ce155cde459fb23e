/**
 * The module's files hold apps' log lines (spool segments, held packets in state.json, handover
 * files) and are kept as private as log4js keeps the log files themselves (its file appender
 * creates them 0600): files 0600, folders 0700, created so (never chmodded after, which would leave
 * a window). Files an older version wrote with the default modes are tightened once at start.
 */
import nodeFs from 'node:fs';
import path from 'node:path';

/** Mode of every file the module writes. */
export const FILE_MODE = 0o600;
/** Mode of every folder the module creates. */
export const DIR_MODE = 0o700;

/** Create a folder (and its missing parents) that only this user can enter. */
export function mkdirPrivate(dir: string, fs: Pick<typeof nodeFs, 'mkdirSync'> = nodeFs): void {
  fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE });
}

/**
 * Why `dir` must not hold this user's lines: it is a link another user made, or a folder another
 * user owns (who could read what is written there, or plant files the module would read back as
 * held lines). Undefined when it is ours, or missing (then we create it). Where there are no uids
 * (Windows) nothing is checked.
 */
export function foreignDir(dir: string, uid: number | undefined = process.getuid?.()): string | undefined {
  if (uid === undefined) return undefined;
  let link: nodeFs.Stats;
  try {
    link = nodeFs.lstatSync(dir);
  } catch {
    return undefined;
  }
  if (link.isSymbolicLink() && link.uid !== uid) return `${dir} is a symbolic link owned by uid ${link.uid}, not by this user (uid ${uid})`;
  let st: nodeFs.Stats;
  try {
    st = nodeFs.statSync(dir);
  } catch (err) {
    return `${dir} cannot be followed: ${(err as Error).message}`;
  }
  if (!st.isDirectory()) return `${dir} is not a folder`;
  if (st.uid !== uid) return `${dir} is owned by uid ${st.uid}, not by this user (uid ${uid})`;
  return undefined;
}

/**
 * Take group and other access off `root` and everything under it that this user owns (links are
 * not followed). Returns what was tightened, as paths relative to `root` ('.' for itself).
 */
export function tightenTree(root: string): string[] {
  const out: string[] = [];
  try {
    root = nodeFs.realpathSync(root); // the folder itself may be a link (an operator's, checked by foreignDir)
  } catch {
    return out;
  }
  const visit = (p: string): void => {
    let st: nodeFs.Stats;
    try {
      st = nodeFs.lstatSync(p);
    } catch {
      return;
    }
    if (st.isSymbolicLink()) return;
    const dir = st.isDirectory();
    const mode = st.mode & 0o7777;
    const want = dir ? mode & DIR_MODE : mode & FILE_MODE;
    if (want !== mode) {
      try {
        nodeFs.chmodSync(p, want);
        out.push(path.relative(root, p) || '.');
      } catch {
        /* not ours: foreignDir says so for the folder itself */
      }
    }
    if (!dir) return;
    let names: string[] = [];
    try {
      names = nodeFs.readdirSync(p);
    } catch {
      return;
    }
    for (const n of names) visit(path.join(p, n));
  };
  visit(root);
  return out;
}

/** The one line said when `tightenTree` changed something. */
export function tightenedLine(root: string, tightened: readonly string[]): string {
  const shown = tightened.slice(0, 5).join(', ');
  const more = tightened.length > 5 ? ` and ${tightened.length - 5} more` : '';
  return `made ${tightened.length} file(s)/folder(s) under ${root} private (files 0600, folders 0700; an older version wrote them readable by other users): ${shown}${more}`;
}
