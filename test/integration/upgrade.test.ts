/**
 * Issue 15: `pm2 install` of another version over a running module, while apps log, loses and
 * repeats nothing, and keeps the settings made with `pm2 set`.
 *
 * `pm2 install <tgz>` of an installed module stops it (SIGINT: the handover bridge starts), then
 * deletes `$PM2_HOME/modules/<name>` and runs npm there before it starts the new version, so
 * everything the two versions exchange must live outside that folder.
 *
 * Versions used:
 *   - "0.0.9": the current tree packed with an older version number (the same code, a real
 *     older version for npm and PM2);
 *   - the current tarball (vitest's globalSetup packs it);
 *   - 0.1.0 as released at 429606a (test/fixtures/released/), which kept its files in the
 *     module's folder: upgrading from it (its stream is handed over; what it held at its stop is
 *     lost with the folder) and going back to it (nothing lost).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { logApp, logFile } from '../support/apps.js';
import { MODULE, Pm2Sandbox, ROOT, waitFor } from '../support/pm2-sandbox.js';
import { endStream, linesIn, settleAndJudge, stopEnv } from '../support/scenario.js';

const current = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;
const released = path.join(ROOT, 'test', 'fixtures', 'released', `${MODULE}-0.1.0.tgz`);
const LINES = 4500; // per instance at most: 15 s at RATE, well past the install's gap; ended 1,200 lines after the install (endStream)
const RATE = 300; // lines per second per instance

/** The built tree (dist/, as globalSetup's pack left it) packed as another version. */
function packAs(version: string, dest: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-pkg-'));
  try {
    fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
    for (const f of ['README.md', 'LICENSE', 'CHANGELOG.md']) if (fs.existsSync(path.join(ROOT, f))) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    pkg.version = version;
    delete pkg.scripts; // dist/ is built already
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2));
    const out = execFileSync('npm', ['pack', '--silent', '--pack-destination', dest], { cwd: dir, encoding: 'utf8' });
    return path.join(dest, out.trim().split('\n').pop()!.trim());
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('pm2 install over a running module (upgrade and downgrade)', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let older: string;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-upgrade-');
    fs.mkdirSync(path.join(sb.dir, 'tmp'));
    older = packAs('0.0.9', sb.dir);
    await install(older);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  const startLines = () => (sb.moduleLog().match(/ v\d+\.\d+\.\d+\S* relaying /g) ?? []).length;

  /**
   * `pm2 install <tgz>`, then wait for the new module's start line. TMPDIR: PM2 backs the old
   * version up to `os.tmpdir()/<name>` first, which other PM2s on this machine share.
   */
  async function install(tarball: string) {
    const before = startLines();
    await sb.pm2(['install', tarball], { timeoutMs: 180000, env: { TMPDIR: path.join(sb.dir, 'tmp') } });
    await waitFor(() => startLines() > before, { timeoutMs: 30000, what: `the module installed from ${path.basename(tarball)} to start` });
    return sb.waitModuleOnline();
  }

  async function installMidStream(tag: string, tarball: string) {
    const before = sb.moduleLogMark();
    await sb.start([logApp(sb.work, { name: tag, instances: 4, lines: LINES, rate: RATE, env: stopEnv(sb, tag) })]);
    await waitFor(() => linesIn(logFile(sb.work, tag)) >= 1200, { timeoutMs: 60000, what: `${tag} to be mid-stream` });
    await install(tarball);
    await endStream(sb, tag, 1200);
    const r = await settleAndJudge(sb, tag);
    console.log(`${tag}: sent ${r.sent}, missing ${r.missing}, duplicated ${r.duplicated}, foreign ${r.foreign}`);
    return { r, log: sb.moduleLog(before) };
  }

  it('upgrade: 0.0.9 -> current mid-stream loses nothing and keeps a pm2 set setting', async () => {
    await sb.pm2(['set', `${MODULE}:report_interval`, '7']);
    await waitFor(() => /report_interval=7/.test(sb.moduleLog()), { timeoutMs: 30000, what: 'the module to restart with the setting' });
    const { r, log } = await installMidStream('upgraded', current);
    expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    expect(r.senders).toBe(4);
    // The bridge carried the install's gap (a non-empty handover proves the stream ran through it).
    expect(log).toMatch(/relayed [1-9]\d* packets the handover bridge received while the module restarted \(handed over\)/);
    expect(log).toMatch(/ relaying .*report_interval=7/);
    expect((await sb.trigger('status')).settings).toMatch(/report_interval=7/);
  });

  it('downgrade: current -> 0.0.9 mid-stream loses nothing', async () => {
    const { r, log } = await installMidStream('downgraded', older);
    expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    expect(log).toMatch(/v0\.0\.9 relaying .*report_interval=7/);
    expect(log).toMatch(/relayed [1-9]\d* packets the handover bridge received/);
  });

  it('downgrade to the released 0.1.0 (files in the module folder): the stream is handed over', async () => {
    await install(current);
    const { r, log } = await installMidStream('to-released', released);
    expect(r).toMatchObject({ missing: 0, duplicated: 0, foreign: 0 });
    expect(log).toMatch(/relayed [1-9]\d* packets the handover bridge received/);
  });

  it('upgrade from the released 0.1.0: its bridge is found although PM2 deleted its folder', async () => {
    const { r, log } = await installMidStream('from-released', current);
    // 0.1.0 saved what it still held at its stop (when it was behind) in the module's folder,
    // which PM2 deletes: those packets, and only those, are lost. It says how many.
    const stop = /SIGINT: stopping; (a bridge listens|NO bridge).*; (\d+) held log packets kept/.exec(log);
    expect(r).toMatchObject({ duplicated: 0, foreign: 0 });
    expect(log).toMatch(/ relaying .*report_interval=7/);
    if (stop === null) {
      // 0.1.0 did not get to say how it stopped: on a loaded machine its drain outlasts PM2's
      // kill_timeout and PM2 kills it (seen at load 15). What it held dies with it; nothing this
      // version can recover, and nothing may be duplicated or foreign (checked above).
      expect(fs.readFileSync(path.join(sb.home, 'pm2.log'), 'utf8'), '0.1.0 neither said how it stopped nor was killed by PM2').toMatch(/still alive after \d+ms, sending SIGKILL/);
      console.log('from-released: 0.1.0 was killed by PM2 before it said how it stopped');
      return;
    }
    const kept = Number(stop![2]);
    console.log(`from-released: 0.1.0 stopped with ${stop![1]}, ${kept} held packets (lost with its folder)`);
    // 0.1.0 waits only 2 s for its bridge: on a loaded machine it may start none, and then what
    // apps sent during the install is lost too (nothing this version can recover).
    if (stop![1] === 'NO bridge') return;
    expect(r.missing).toBeLessThanOrEqual(kept);
    expect(log).toMatch(/relayed [1-9]\d* packets the handover bridge received/);
  });
});
