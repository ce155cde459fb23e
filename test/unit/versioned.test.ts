import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findBridge, markerOf, markerPacket, PROTOCOL } from '../../lib/restart/handover';
import { legacyStateDir, StateFile, stateDir } from '../../lib/restart/state';
import { FORMAT, readVersioned, setAsideName } from '../../lib/restart/versioned';

let dir: string;
let said: string[];
const say = (line: string) => said.push(line);

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-versioned-'));
  said = [];
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const leftovers = () => fs.readdirSync(dir).sort();

describe('readVersioned', () => {
  it('reads the current format and files without one (0.1.0)', () => {
    expect(readVersioned(write('a.json', JSON.stringify({ format: FORMAT, x: 1 })), say)).toEqual({ format: FORMAT, x: 1 });
    expect(readVersioned(write('b.json', JSON.stringify({ x: 2 })), say)).toEqual({ x: 2 });
    expect(readVersioned(write('c.json', JSON.stringify({ format: 0, x: 3 })), say)).toEqual({ format: 0, x: 3 });
    expect(said).toEqual([]);
    expect(leftovers()).toEqual(['a.json', 'b.json', 'c.json']);
  });

  it('a missing file is nothing, silently', () => {
    expect(readVersioned(path.join(dir, 'none.json'), say)).toBeUndefined();
    expect(said).toEqual([]);
  });

  it('an unknown format is set aside (renamed, not deleted) and said once', () => {
    const f = write('state.json', JSON.stringify({ format: FORMAT + 1, held: { a: [1] } }));
    expect(readVersioned(f, say)).toBeUndefined();
    expect(readVersioned(f, say)).toBeUndefined(); // now missing: not said again
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(new RegExp(`cannot read .*state\\.json: its format ${FORMAT + 1} is not one this version reads \\(up to ${FORMAT}.*set aside as .*state\\.json\\.unknown-\\d{8}T\\d{6}Z`));
    const [aside] = leftovers();
    expect(aside).toMatch(/^state\.json\.unknown-\d{8}T\d{6}Z$/);
    expect(JSON.parse(fs.readFileSync(path.join(dir, aside), 'utf8')).held).toEqual({ a: [1] });
  });

  it('formats that are not a whole number up to ours, and files that are not JSON objects, are set aside', () => {
    for (const [name, text] of [
      ['s.json', JSON.stringify({ format: '1' })],
      ['f.json', JSON.stringify({ format: 1.5 })],
      ['n.json', JSON.stringify({ format: -1 })],
      ['arr.json', '[1,2]'],
      ['null.json', 'null'],
      ['cut.json', '{"format":1,"pack'],
    ]) {
      expect(readVersioned(write(name, text), say)).toBeUndefined();
    }
    expect(said).toHaveLength(6);
    expect(leftovers().every((f) => /\.unknown-\d{8}T\d{6}Z$/.test(f))).toBe(true);
  });

  it('set-aside names carry a sortable UTC time', () => {
    expect(setAsideName('/x/state.json', new Date('2026-12-03T09:15:07.123Z'))).toBe('/x/state.json.unknown-20261203T091507Z');
  });
});

describe('StateFile', () => {
  it('writes format 1 and reads it back', () => {
    const s = new StateFile(dir);
    s.save({ settings: { buffer_max: 5 }, instanceVars: { 'a|default': 'ID' } });
    expect(JSON.parse(fs.readFileSync(s.file, 'utf8')).format).toBe(1);
    expect(s.load(say)).toEqual({ settings: { buffer_max: 5 }, instanceVars: { 'a|default': 'ID' }, held: undefined });
  });

  it('reads a 0.1.0 state (no format) and ignores fields of the wrong shape', () => {
    write('state.json', JSON.stringify({ settings: { buffer_max: 7 }, instanceVars: [], held: 'x' }));
    expect(new StateFile(dir).load(say)).toEqual({ settings: { buffer_max: 7 }, instanceVars: undefined, held: undefined });
  });

  it('a newer format: an empty state, the file set aside, one line', () => {
    write('state.json', JSON.stringify({ format: 99, settings: { buffer_max: 7 } }));
    expect(new StateFile(dir).load(say)).toEqual({});
    expect(said).toHaveLength(1);
    expect(new StateFile(dir).exists()).toBe(false);
  });
});

describe('state folders', () => {
  it('outside the module folder that pm2 install replaces', () => {
    const env = { PM2_HOME: dir };
    expect(stateDir('m', env)).toBe(path.join(dir, 'm'));
    expect(legacyStateDir('m', env)).toBe(path.join(dir, 'modules', 'm'));
  });

  it('an explicit folder has no legacy location', () => {
    const env = { PM2_HOME: dir, PM2_SCOPED_INTERCOM_STATE_DIR: '/x' };
    expect(stateDir('m', env)).toBe('/x');
    expect(legacyStateDir('m', env)).toBeUndefined();
  });
});

describe('findBridge', () => {
  const live = process.pid; // a pid that exists

  it('from bridge.json, with its own folder or (0.1.0) the folder it is in', () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    fs.mkdirSync(a);
    fs.mkdirSync(b);
    fs.writeFileSync(path.join(b, 'bridge.json'), JSON.stringify({ pid: live, nonce: 'n1' }));
    expect(findBridge([a, b], path.join(dir, 'noproc'))).toEqual({ pid: live, nonce: 'n1', dir: b });
    fs.writeFileSync(path.join(a, 'bridge.json'), JSON.stringify({ format: 1, pid: live, nonce: 'n2', dir: '/elsewhere' }));
    expect(findBridge([a, b], path.join(dir, 'noproc'))).toEqual({ pid: live, nonce: 'n2', dir: '/elsewhere' });
  });

  it('from the process table when its bridge.json was deleted with the module folder', () => {
    const proc = path.join(dir, 'proc');
    const legacy = '/pm2/modules/pm2-scoped-intercom';
    for (const [pid, argv] of [
      ['12', ['node', '/srv/app.js', legacy, 'x']],
      ['34', ['node', '/pm2/modules/pm2-scoped-intercom/node_modules/pm2-scoped-intercom/dist/lib/bridge.js', '/other', 'n0', '60000']],
      ['56', ['node', '/pm2/modules/pm2-scoped-intercom/node_modules/pm2-scoped-intercom/dist/lib/bridge.js', legacy, 'n9', '60000']],
    ] as const) {
      fs.mkdirSync(path.join(proc, pid), { recursive: true });
      fs.writeFileSync(path.join(proc, pid, 'cmdline'), `${argv.join('\0')}\0`);
    }
    fs.mkdirSync(path.join(proc, 'self'));
    expect(findBridge([path.join(dir, 'state'), legacy], proc)).toEqual({ pid: 56, nonce: 'n9', dir: legacy });
    expect(findBridge([path.join(dir, 'state')], proc)).toBeUndefined();
  });
});

describe('markers', () => {
  it('a start marker says its protocol; a 0.1.0 one has none', () => {
    const start = markerPacket('start', 'n');
    expect(markerOf({ raw: start })).toEqual({ kind: 'start', nonce: 'n', protocol: PROTOCOL });
    expect(markerOf({ raw: { topic: start.topic, data: { kind: 'start', nonce: 'n' } } })).toEqual({ kind: 'start', nonce: 'n' });
    expect(markerOf({ raw: markerPacket('stop', 'n') })).toEqual({ kind: 'stop', nonce: 'n' });
  });

  it("the bridge takes markers from the module only: an app's forged `start` would end a handover early (docs/security.md)", () => {
    const start = markerPacket('start', 'n');
    const fromModule = { raw: start, process: { pm_id: 9, name: 'pm2-scoped-intercom', namespace: 'default' } };
    const fromApp = { raw: start, process: { pm_id: 3, name: 'web', namespace: 'default' } };
    expect(markerOf(fromModule, 'pm2-scoped-intercom')).toEqual({ kind: 'start', nonce: 'n', protocol: PROTOCOL });
    expect(markerOf(fromApp, 'pm2-scoped-intercom')).toBeUndefined();
    expect(markerOf({ raw: start }, 'pm2-scoped-intercom')).toBeUndefined();
  });
});
