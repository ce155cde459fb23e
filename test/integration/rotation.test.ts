/**
 * Issue 26: log4js rotates its files by size (`maxLogSize`, `backups`) in the app's writer only.
 * A 4-instance cluster app (`pm2: true`) logs numbered lines as fast as it can into a file appender
 * that rotates every 16 KB; every line of every sender must be found exactly once across the
 * rotated files, none of another app, and each sender's lines in order.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { judge, formatJudgement } from '../support/judge.js';
import { logApp, logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { Pm2Sandbox } from '../support/pm2-sandbox.js';

const tarball = (inject('tarball' as never) as string | undefined) ?? process.env.PM2SI_TARBALL!;

const MAX_SIZE = 16 * 1024;
const BACKUPS = 60;
const INSTANCES = 4;
const LINES = 4000;

/** The app's file and its backups (streamroller: name.log, name.log.1 newest, ... oldest), oldest first. */
function rotatedFiles(file: string): string[] {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const backups = fs
    .readdirSync(dir)
    .map((f) => ({ f, n: f.startsWith(`${base}.`) ? Number(f.slice(base.length + 1)) : NaN }))
    .filter((x) => Number.isInteger(x.n) && x.n > 0)
    .sort((a, b) => b.n - a.n)
    .map((x) => path.join(dir, x.f));
  return [...backups, file];
}

describe('log4js rotation by size with one writer per app', () => {
  let sb: InstanceType<typeof Pm2Sandbox>;

  beforeAll(async () => {
    sb = Pm2Sandbox.create('pm2si-rotation-');
    await sb.install(tarball);
  });

  afterAll(async () => {
    await sb?.destroy();
  });

  it(`${INSTANCES} instances x ${LINES} lines flat out, maxLogSize ${MAX_SIZE}: every line once across the rotated files`, async () => {
    await sb.start([
      logApp(sb.work, {
        name: 'rot',
        instances: INSTANCES,
        lines: LINES,
        rate: 0,
        env: { LOG_MAX_SIZE: String(MAX_SIZE), LOG_BACKUPS: String(BACKUPS) },
      }),
    ]);
    const file = logFile(sb.work, 'rot');
    await waitSendersDone(sb.work, 'rot', INSTANCES, 90000);
    // Backups are renamed while the writer rotates: wait until the whole set stops changing.
    await waitQuiet([file, `${file}.1`], 2000);

    const files = rotatedFiles(file);
    const sizes = files.map((f) => fs.statSync(f).size);
    console.log(`${files.length} files: ${files.map((f, i) => `${path.basename(f)} ${sizes[i]}`).join(', ')}`);
    // It did rotate, many times, and kept every backup (fewer than BACKUPS were needed).
    expect(files.length).toBeGreaterThanOrEqual(8);
    expect(files.length).toBeLessThan(BACKUPS + 1);
    // streamroller rolls before a write once the file has reached maxLogSize: a file ends at most
    // one write past it (the writer writes one line per write here).
    for (const size of sizes) expect(size).toBeLessThan(MAX_SIZE + 100);

    const all = path.join(sb.work, 'rot-all.log');
    fs.writeFileSync(all, files.map((f) => fs.readFileSync(f, 'utf8')).join(''));
    const r = judge({ apps: [{ tag: 'rot', file: all }], reportDir: reportDirOf(sb.work) });
    console.log(formatJudgement(r));
    expect(r.rot).toMatchObject({ senders: INSTANCES, sent: INSTANCES * LINES, written: INSTANCES * LINES, missing: 0, duplicated: 0, foreign: 0, outOfOrder: 0 });
    const status = await sb.trigger('status');
    expect(status.counters).toMatchObject({ dropped: 0 });
  });
});
