import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DIR_MODE, FILE_MODE, foreignDir, mkdirPrivate, tightenStateDir, tightenTree, tightenedLine } from '../../lib/shared/private-files';
import { Spool } from '../../lib/hold/spool';
import { openState, StateFile } from '../../lib/restart/state';
import { writeJsonAtomic } from '../../lib/restart/versioned';

let dir: string;
let umask: number;
const modeOf = (p: string) => fs.statSync(p).mode & 0o777;
const isRoot = process.getuid?.() === 0;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-private-'));
  // The most permissive umask a host may have: the modes must not depend on it.
  umask = process.umask(0);
});
afterEach(() => {
  process.umask(umask);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Every file and folder under `root` with its mode, to compare against the bounds. */
function modes(root: string): Record<string, number> {
  const out: Record<string, number> = {};
  const visit = (p: string) => {
    const st = fs.lstatSync(p);
    out[path.relative(root, p) || '.'] = st.mode & 0o777;
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) visit(path.join(p, n));
  };
  visit(root);
  return out;
}

describe('created private (umask 0)', () => {
  it('mkdirPrivate makes every missing folder 0700', () => {
    mkdirPrivate(path.join(dir, 'a', 'b'));
    expect(modeOf(path.join(dir, 'a'))).toBe(DIR_MODE);
    expect(modeOf(path.join(dir, 'a', 'b'))).toBe(DIR_MODE);
  });

  it('writeJsonAtomic writes 0600, also over an older 0644 file and a stale 0666 temp file', () => {
    const f = path.join(dir, 'x.json');
    fs.writeFileSync(f, '{}', { mode: 0o644 });
    fs.writeFileSync(`${f}.${process.pid}.tmp`, 'stale', { mode: 0o666 });
    writeJsonAtomic(f, { a: 1 });
    expect(modeOf(f)).toBe(FILE_MODE);
    expect(JSON.parse(fs.readFileSync(f, 'utf8'))).toEqual({ a: 1 });
    expect(fs.readdirSync(dir)).toEqual(['x.json']);
    writeJsonAtomic(path.join(dir, 'y.json'), { b: 2 });
    expect(modeOf(path.join(dir, 'y.json'))).toBe(FILE_MODE);
  });

  it('writeJsonAtomic does not write through a link planted at its temp name', () => {
    const f = path.join(dir, 'x.json');
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'keep');
    fs.symlinkSync(victim, `${f}.${process.pid}.tmp`);
    writeJsonAtomic(f, { a: 1 });
    expect(fs.readFileSync(victim, 'utf8')).toBe('keep');
    expect(modeOf(f)).toBe(FILE_MODE);
  });

  it('the state file and its folder', () => {
    const state = new StateFile(path.join(dir, 'state'));
    state.save({ held: { 'a\u0000default': [{ topic: 't', data: 'secret' }] } });
    expect(modes(dir)).toEqual({ '.': 0o700, state: DIR_MODE, 'state/state.json': FILE_MODE });
  });

  it('spool segments and the spool folder (and its missing parent)', () => {
    const spool = new Spool({ dir: path.join(dir, 'home', 'spool'), maxBytes: 1 << 20, segmentBytes: 200, chunkBytes: 1, warn: () => {} });
    spool.load();
    for (let i = 0; i < 20; i++) expect(spool.append('a', { topic: 'log4js:message', data: `line ${i} ${'x'.repeat(50)}` })).toBe(true);
    spool.close();
    const m = modes(path.join(dir, 'home'));
    expect(Object.keys(m).length).toBeGreaterThan(4);
    for (const [p, mode] of Object.entries(m)) {
      expect({ p, mode }).toEqual({ p, mode: fs.statSync(path.join(dir, 'home', p)).isDirectory() ? DIR_MODE : FILE_MODE });
    }
  });
});

describe('tightenStateDir', () => {
  it('takes group and other access off what an older version wrote, and says what; nothing else is touched', () => {
    fs.chmodSync(dir, 0o755);
    fs.mkdirSync(path.join(dir, 'spool'), { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'state.json'), '{}', { mode: 0o644 });
    fs.writeFileSync(path.join(dir, 'handover-0123456789abcdef.json.unknown-20261207T000000Z'), '{}', { mode: 0o644 });
    fs.writeFileSync(path.join(dir, 'spool', '61-1.v1.jsonl'), 'sx\ty\n', { mode: 0o666 });
    fs.writeFileSync(path.join(dir, 'bridge.json'), '{}', { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'an operator\'s', { mode: 0o644 });
    fs.mkdirSync(path.join(dir, 'other'), { mode: 0o755 });
    const outside = path.join(os.tmpdir(), `pm2si-outside-${process.pid}`);
    fs.writeFileSync(outside, 'not ours to change', { mode: 0o644 });
    fs.symlinkSync(outside, path.join(dir, 'state.json.link'));
    try {
      const t = tightenStateDir(dir);
      expect(t.sort()).toEqual(['.', 'handover-0123456789abcdef.json.unknown-20261207T000000Z', 'spool', 'spool/61-1.v1.jsonl', 'state.json']);
      expect(modes(dir)).toMatchObject({ '.': 0o700, spool: 0o700, 'state.json': 0o600, 'spool/61-1.v1.jsonl': 0o600, 'bridge.json': 0o600, 'notes.txt': 0o644, other: 0o755 });
      expect(modeOf(outside)).toBe(0o644); // a link is not followed
      expect(tightenStateDir(dir)).toEqual([]); // said once: the next start finds nothing to tighten
      expect(tightenedLine(dir, t)).toContain(`made 5 file(s)/folder(s) under ${dir} private`);
    } finally {
      fs.rmSync(outside, { force: true });
    }
  });

  it('a missing folder: nothing', () => {
    expect(tightenStateDir(path.join(dir, 'none'))).toEqual([]);
  });

  it("a spool folder that is the operator's link (another disk) is tightened where it points", () => {
    const disk = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-disk-'));
    try {
      fs.chmodSync(disk, 0o755);
      fs.writeFileSync(path.join(disk, '61-1.v1.jsonl'), 'sx\ty\n', { mode: 0o644 });
      fs.symlinkSync(disk, path.join(dir, 'spool'));
      expect(tightenStateDir(dir).sort()).toEqual(['spool', 'spool/61-1.v1.jsonl']);
      expect(modeOf(disk)).toBe(0o700);
    } finally {
      fs.rmSync(disk, { recursive: true, force: true });
    }
  });

  it.skipIf(process.getuid?.() !== 0)("nothing in another user's folder is changed", () => {
    fs.writeFileSync(path.join(dir, 'state.json'), '{}', { mode: 0o644 });
    fs.chmodSync(dir, 0o755);
    fs.chownSync(dir, 65534, 65534);
    expect(tightenTree(dir, /^state\.json/)).toEqual([]);
    expect(modeOf(path.join(dir, 'state.json'))).toBe(0o644);
  });
});

describe('foreignDir', () => {
  const uid = process.getuid?.() ?? 0;

  it('ours, or missing: usable', () => {
    expect(foreignDir(dir, uid)).toBeUndefined();
    expect(foreignDir(path.join(dir, 'missing'), uid)).toBeUndefined();
  });

  it("another user's folder, or a link another user made, is not", () => {
    expect(foreignDir(dir, uid + 1)).toMatch(new RegExp(`is owned by uid ${uid}, not by this user \\(uid ${uid + 1}\\)`));
    const link = path.join(dir, 'link');
    fs.symlinkSync(os.tmpdir(), link);
    expect(foreignDir(link, uid + 1)).toMatch(/is a symbolic link owned by uid/);
    fs.writeFileSync(path.join(dir, 'file'), '');
    expect(foreignDir(path.join(dir, 'file'), uid)).toMatch(/is not a folder/);
  });

  it.skipIf(!isRoot)("the spool does not read nor write a folder another user owns (planted lines are not delivered)", () => {
    const spoolDir = path.join(dir, 'spool');
    fs.mkdirSync(spoolDir, { mode: 0o777 });
    fs.writeFileSync(path.join(spoolDir, `${Buffer.from('a').toString('hex')}-1.v1.jsonl`), 'slog4js:message\tplanted\n');
    fs.chownSync(spoolDir, 65534, 65534);
    const warn: string[] = [];
    const spool = new Spool({ dir: spoolDir, maxBytes: 1 << 20, warn: (l) => warn.push(l) });
    spool.load();
    expect(spool.count).toBe(0);
    expect(spool.append('a', { topic: 't', data: 'secret' })).toBe(false);
    expect(spool.failure).toMatch(/not using the spool folder: .* is owned by uid 65534/);
    expect(warn).toHaveLength(1);
  });

  it.skipIf(!isRoot)("the state folder of another user is not read: this run keeps its state in a private folder of its own", () => {
    const foreign = path.join(dir, 'state');
    fs.mkdirSync(foreign, { mode: 0o777 });
    fs.writeFileSync(path.join(foreign, 'state.json'), JSON.stringify({ format: 1, held: { 'a\u0000default': [{ topic: 't', data: 'planted' }] } }));
    fs.chownSync(foreign, 65534, 65534);
    const before = process.env.PM2_SCOPED_INTERCOM_STATE_DIR;
    process.env.PM2_SCOPED_INTERCOM_STATE_DIR = foreign;
    const said: string[] = [];
    try {
      const s = openState('pm2si-test', (l) => said.push(l));
      expect(s.saved).toEqual({});
      expect(s.dir).not.toBe(foreign);
      expect(modeOf(s.dir)).toBe(DIR_MODE);
      expect(said.join('\n')).toMatch(/not using the state folder .* is owned by uid 65534/);
      fs.rmSync(s.dir, { recursive: true, force: true });
    } finally {
      if (before === undefined) delete process.env.PM2_SCOPED_INTERCOM_STATE_DIR;
      else process.env.PM2_SCOPED_INTERCOM_STATE_DIR = before;
    }
  });
});
