/**
 * Versioned files: everything the module writes for its next start carries `format`, so a later
 * version knows what it reads and an earlier one (after a downgrade) knows what it cannot.
 *
 * Reading: no `format` (0.1.0 wrote none) and formats up to ours are read; anything else (a newer
 * format, a file that is not a JSON object) is renamed to `<file>.unknown-<time>` and reported
 * once: renamed, it is not seen again, and nothing is deleted that a newer version could still read.
 */
import fs from 'node:fs';
import { FILE_MODE } from '../shared/private-files';

/** The format this version writes. */
export const FORMAT = 1;

export function setAsideName(file: string, now: Date = new Date()): string {
  return `${file}.unknown-${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
}

/**
 * Write JSON atomically (temp file + rename), so a kill mid-write leaves the old file. The file is
 * private (0600) from its creation: a stale temp file of an earlier run is removed first, since
 * `mode` applies only to a file that is created.
 */
export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.writeFileSync(tmp, JSON.stringify(value), { mode: FILE_MODE, flag: 'wx' });
  fs.renameSync(tmp, file);
}

/**
 * The file's object, or undefined when it is missing or set aside (then `say` was told why).
 * Never throws.
 */
export function readVersioned(file: string, say: (line: string) => void, maxFormat = FORMAT): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined; // missing (or unreadable: nothing to set aside either)
  }
  let why: string;
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) why = 'it is not a JSON object';
    else {
      const format = (parsed as { format?: unknown }).format;
      if (format === undefined || (typeof format === 'number' && Number.isInteger(format) && format >= 0 && format <= maxFormat)) {
        return parsed as Record<string, unknown>;
      }
      why = `its format ${JSON.stringify(format)} is not one this version reads (up to ${maxFormat}; written by a newer version?)`;
    }
  } catch (err) {
    why = `it is not valid JSON (${(err as Error).message})`;
  }
  const aside = setAsideName(file);
  try {
    fs.renameSync(file, aside);
    say(`cannot read ${file}: ${why}; set aside as ${aside}, not used`);
  } catch (err) {
    say(`cannot read ${file}: ${why}; could not set it aside (${(err as Error).message}), not used`);
  }
  return undefined;
}
