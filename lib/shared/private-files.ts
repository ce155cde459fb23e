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
 * Take group and other access off `root` (a folder) and the files directly in it whose names
 * match `names`: only what the module writes, never whatever else an operator keeps there, and
 * nothing in a folder another user owns (foreignDir). Links inside are not followed; `root` itself
 * may be the operator's link (another disk). Returns what was tightened, by name ('.' for `root`).
 */
export function tightenTree(root: string, names: RegExp): string[] {
  const out: string[] = [];
  if (foreignDir(root) !== undefined) return out;
  let real: string;
  try {
    real = nodeFs.realpathSync(root);
  } catch {
    return out; // missing
  }
  const tighten = (p: string, name: string, want: number): void => {
    let st: nodeFs.Stats;
    try {
      st = nodeFs.lstatSync(p);
    } catch {
      return;
    }
    if (st.isSymbolicLink() || (want === DIR_MODE) !== st.isDirectory()) return;
    const mode = st.mode & 0o7777;
    if ((mode & want) === mode) return;
    try {
      nodeFs.chmodSync(p, mode & want);
      out.push(name);
    } catch {
      /* not ours */
    }
  };
  tighten(real, '.', DIR_MODE);
  let entries: string[] = [];
  try {
    entries = nodeFs.readdirSync(real);
  } catch {
    return out;
  }
  for (const n of entries) if (names.test(n)) tighten(path.join(real, n), n, FILE_MODE);
  return out;
}

/**
 * The state folder and its spool folder as the module writes them: state.json, bridge.json,
 * handover files (and their temp and set-aside copies), spool segments.
 */
export function tightenStateDir(dir: string): string[] {
  return [
    ...tightenTree(dir, /^(state\.json|bridge\.json|handover-[^/]*\.json)/),
    ...tightenTree(path.join(dir, 'spool'), /^[0-9a-f]+-\d+\.v\d+\.jsonl/).map((n) => (n === '.' ? 'spool' : `spool/${n}`)),
  ];
}

/** The one line said when `tightenTree` changed something. */
export function tightenedLine(root: string, tightened: readonly string[]): string {
  const shown = tightened.slice(0, 5).join(', ');
  const more = tightened.length > 5 ? ` and ${tightened.length - 5} more` : '';
  return `made ${tightened.length} file(s)/folder(s) under ${root} private (files 0600, folders 0700; an older version wrote them readable by other users): ${shown}${more}`;
}
