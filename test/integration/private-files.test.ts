/**
 * Issue 28: the lines the module holds are as private as log4js keeps the log files (0600). After
 * a spill to disk and a module restart with held lines, everything the module and its handover
 * bridge wrote under $PM2_HOME is a file of at most 0600 or a folder of at most 0700, although
 * PM2's daemon (and so the module) runs with umask 000 here: the modes are given at creation, not
 * left to the umask. What an older version left readable is tightened at start, and said once.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { logApp, waitSendersDone } from '../support/apps.js';
import { MODULE, Pm2Sandbox, waitFor } from '../support/pm2-sandbox.js';
import { settleAndJudge, writerProc } from '../support/scenario.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

type Row = { name: string; held: number; dropped: number; forwarded: number };

describe('private files', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;
  let stateDir: string;
  /** Every path the module's files were seen at, with the widest mode seen (sampled while it ran). */
  const seen = new Map<string, { mode: number; dir: boolean }>();

  /** Read the modes of everything under the module's folders in $PM2_HOME now. */
  const sample = () => {
    const roots = [stateDir, path.join(sb.home, 'modules', MODULE)];
    const visit = (p: string, ours: boolean) => {
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch {
        return; // gone meanwhile
      }
      const name = path.basename(p);
      // In PM2's module folder (npm's install) only what the module and its bridge write there.
      const mine = ours || /^(state\.json|bridge\.json|handover-.*)/.test(name);
      if (mine) {
        const prev = seen.get(p);
        seen.set(p, { mode: (prev?.mode ?? 0) | (st.mode & 0o777), dir: st.isDirectory() });
      }
      if (st.isDirectory() && !(p.endsWith('node_modules'))) {
        let names: string[] = [];
        try {
          names = fs.readdirSync(p);
        } catch {
          return;
        }
        for (const n of names) visit(path.join(p, n), ours);
      }
    };
    visit(roots[0], true);
    visit(roots[1], false);
  };
  const wider = () => [...seen].filter(([, s]) => (s.mode & 0o077) !== 0 || (!s.dir && (s.mode & 0o100) !== 0)).map(([p, s]) => `${path.relative(sb.home, p)} ${s.mode.toString(8)}`);
  /** Sample every 20 ms while `fn` runs. */
  const sampling = async <T>(fn: () => Promise<T>): Promise<T> => {
    const timer = setInterval(sample, 20);
    try {
      return await fn();
    } finally {
      clearInterval(timer);
      sample();
    }
  };
  const row = async (name: string): Promise<Row> => (await sb.trigger('status')).apps.find((a: Row) => a.name === name);
  const restartWith = async (key: string, value: string) => {
    const starts = () => sb.moduleLog().split('\n').filter((l) => / relaying \(pm2/.test(l));
    const before = starts().length;
    await sb.pm2(['set', `${MODULE}:${key}`, value]);
    await waitFor(() => starts().length > before && starts().pop()!.includes(` ${key}=${value} `), { timeoutMs: 60000, what: `the module to restart with ${key}=${value}` });
  };

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-private-');
    stateDir = path.join(sb.home, MODULE);
    // The daemon (and every process it starts) gets umask 000: default modes would be 0666/0777.
    await new Promise<void>((resolve, reject) =>
      execFile('sh', ['-c', 'umask 000 && exec "$0" "$@"', sb.node, sb.pm2Bin, 'ping'], { env: sb.env, cwd: sb.work }, (err) => (err ? reject(err) : resolve())),
    );
    // What an older version left: its folders 0755, its files 0644.
    fs.mkdirSync(path.join(stateDir, 'spool'), { recursive: true });
    fs.chmodSync(stateDir, 0o755);
    fs.chmodSync(path.join(stateDir, 'spool'), 0o755);
    fs.writeFileSync(path.join(stateDir, 'state.json'), JSON.stringify({ format: 1 }));
    fs.chmodSync(path.join(stateDir, 'state.json'), 0o644);
    await sb.install(tarball);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it('what an older version left readable is made private at start, and that is said once', async () => {
    const said = () => sb.moduleLog().split('\n').filter((l) => / private \(files 0600, folders 0700/.test(l));
    expect(said()).toHaveLength(1);
    expect(said()[0]).toMatch(new RegExp(`made 3 file\\(s\\)/folder\\(s\\) under ${stateDir} private .*: (\\.|spool|state\\.json), (\\.|spool|state\\.json), (\\.|spool|state\\.json)$`));
    sample();
    expect(wider()).toEqual([]);
    await restartWith('report_interval', '2');
    expect(said()).toHaveLength(1);
  });

  it('after a spill to disk and a module restart with held lines: every file <= 0600, every folder <= 0700, no line lost', async () => {
    await restartWith('buffer_mb', '1');
    const go = path.join(sb.work, 'spill.go');
    await sb.start([logApp(sb.work, { name: 'spill', instances: 4, lines: 20000, rate: 0, env: { WAIT_FOR_FILE: go } })]);
    const w = await writerProc(sb, 'spill');
    await sb.pm2(['stop', String(w.pm_id)]);
    fs.writeFileSync(go, '');
    await sampling(async () => {
      await waitSendersDone(sb.work, 'spill', 3, 180000);
      await waitFor(async () => (await sb.trigger('status')).counters.spooled > 20000 && (await row('spill')).held >= 59000, { timeoutMs: 120000, every: 500, what: 'the burst to be held, mostly on disk' });
      // A restart with held lines: the state file keeps what memory held, a bridge listens meanwhile.
      await restartWith('buffer_mb', '2');
    });
    const segments = [...seen.keys()].filter((p) => p.endsWith('.jsonl'));
    const bridgeFiles = [...seen.keys()].filter((p) => /(bridge|handover-[0-9a-f]+)\.json$/.test(p));
    console.log(`seen: ${seen.size} paths, ${segments.length} spool segments, bridge/handover files: ${bridgeFiles.map((p) => path.relative(sb.home, p)).join(', ')}`);
    expect(segments.length).toBeGreaterThan(5);
    expect(bridgeFiles.length).toBeGreaterThan(0);
    expect(sb.moduleLog()).toMatch(/spool: \/\S+, \d+ log packets from the last run|restored \d+ log packets held at the last shutdown/);
    expect(wider()).toEqual([]);
    await sampling(async () => {
      await sb.pm2(['start', String(w.pm_id)]);
      const r = await settleAndJudge(sb, 'spill', { timeoutMs: 240000 });
      expect(r).toMatchObject({ sent: 80000, missing: 0, duplicated: 0, foreign: 0 });
    });
    expect(wider()).toEqual([]);
  });
});
