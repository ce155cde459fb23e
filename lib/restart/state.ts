/**
 * What the module keeps across its own restarts (`pm2 set` restarts it, `pm2 install` replaces
 * it): the last good settings (the fallback for a bad new value), each app's instance_var (PM2
 * forgets it on restart), and the log packets still held at shutdown (delivered by the next run).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Settings } from '../operator/settings';
import type { OutPacket } from '../shared/packet';
import { foreignDir, mkdirPrivate } from '../shared/private-files';
import { pm2Home } from '../shared/system';
import { FORMAT, readVersioned, writeJsonAtomic } from './versioned';

export interface SavedState {
  settings?: Partial<Settings>;
  instanceVars?: Record<string, string>;
  held?: Record<string, OutPacket[]>;
}

/**
 * `$PM2_HOME/<name>`, beside (not in) `$PM2_HOME/modules/<name>`: `pm2 install` of another
 * version deletes the module's folder after stopping it and before starting the new version, so
 * nothing the two versions hand each other may live there.
 */
export function stateDir(name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.PM2_SCOPED_INTERCOM_STATE_DIR) return env.PM2_SCOPED_INTERCOM_STATE_DIR;
  const home = pm2Home(env);
  if (fs.existsSync(home)) return path.join(home, name);
  return path.join(os.tmpdir(), `${name}-${Buffer.from(home).toString('hex').slice(-16)}`);
}

/**
 * Where 0.1.0 kept its files (the module's own folder): read once by a newer version, and where
 * the bridge leaves a handover for a 0.1.0 that takes over (a downgrade). Undefined when the
 * state folder was set explicitly.
 */
export function legacyStateDir(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.PM2_SCOPED_INTERCOM_STATE_DIR) return undefined;
  return path.join(pm2Home(env), 'modules', name);
}

export class StateFile {
  readonly file: string;

  constructor(dir: string) {
    this.file = path.join(dir, 'state.json');
  }

  /** What the last run saved; {} when nothing (or nothing readable: `say` hears why). */
  load(say: (line: string) => void = () => {}): SavedState {
    const v = readVersioned(this.file, say);
    if (!v) return {};
    const obj = (x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? x : undefined);
    return {
      settings: obj(v.settings) as SavedState['settings'],
      instanceVars: obj(v.instanceVars) as SavedState['instanceVars'],
      held: obj(v.held) as SavedState['held'],
    };
  }

  exists(): boolean {
    return fs.existsSync(this.file);
  }

  /** Write atomically, so a kill mid-write leaves the old state. */
  save(state: SavedState): void {
    mkdirPrivate(path.dirname(this.file));
    writeJsonAtomic(this.file, { format: FORMAT, ...state });
  }
}

export interface OpenedState {
  /** The state folder (`stateDir`). */
  dir: string;
  /** 0.1.0's folder (`legacyStateDir`). */
  legacy: string | undefined;
  file: StateFile;
  /** What the last run saved: from this version's file, or 0.1.0's when that is all there is. */
  saved: SavedState;
  /** After this run's file is written: 0.1.0's is read once, then removed. */
  retireLegacy(): void;
}

/** This run's state file and what the last run left (`say` hears what could not be read). */
export function openState(name: string, say: (line: string) => void): OpenedState {
  let dir = stateDir(name);
  const foreign = foreignDir(dir);
  if (foreign) {
    // Another user's folder: what is there is not read (planted lines would reach the apps' logs)
    // and nothing is written there (they could read it). A private folder of this run instead.
    const own = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
    say(`not using the state folder ${foreign}: held log packets and settings are kept in ${own} for this run only (lost at the next restart); give the folder to this user`);
    dir = own;
  }
  // 0.1.0 kept its files in the module's folder: read what it left there, once.
  const legacy = legacyStateDir(name);
  const file = new StateFile(dir);
  const legacyFile = legacy && !file.exists() ? new StateFile(legacy) : undefined;
  const saved = legacyFile?.exists() ? legacyFile.load(say) : file.load(say);
  return {
    dir,
    legacy,
    file,
    saved,
    retireLegacy: () => {
      if (legacyFile?.exists()) fs.unlinkSync(legacyFile.file);
    },
  };
}
