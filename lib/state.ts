/**
 * What the module keeps across its own restarts (`pm2 set` restarts it): the last good settings
 * (the fallback for a bad new value), each app's instance_var (PM2 forgets it on restart), and
 * the log packets still held at shutdown (delivered by the next run).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Settings } from './config';
import type { OutPacket } from './outbox';

export interface SavedState {
  settings?: Partial<Settings>;
  instanceVars?: Record<string, string>;
  held?: Record<string, OutPacket[]>;
}

/** `$PM2_HOME/modules/<name>` when PM2 installed us there, else a folder in the temp dir. */
export function stateDir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.PM2_SCOPED_INTERCOM_STATE_DIR) return env.PM2_SCOPED_INTERCOM_STATE_DIR;
  const home = env.PM2_HOME || path.join(env.HOME || os.homedir(), '.pm2');
  const moduleDir = path.join(home, 'modules', name);
  if (fs.existsSync(moduleDir)) return moduleDir;
  return path.join(os.tmpdir(), `${name}-${Buffer.from(home).toString('hex').slice(-16)}`);
}

export class StateFile {
  readonly file: string;

  constructor(dir: string) {
    this.file = path.join(dir, 'state.json');
  }

  load(): SavedState {
    try {
      const parsed = JSON.parse(fs.readFileSync(this.file, 'utf8')) as unknown;
      return parsed !== null && typeof parsed === 'object' ? (parsed as SavedState) : {};
    } catch {
      return {};
    }
  }

  /** Write atomically (temp file + rename) so a kill mid-write leaves the old state. */
  save(state: SavedState): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(state));
    fs.renameSync(tmp, this.file);
  }
}
