/**
 * A new writer is waited for until it opens its app's log files (writer-files.ts): the files are
 * learnt from the app's previous writer (open there, not in another instance), and a restarted
 * writer gets its held packets once it has opened one of them, never before `ready_delay`, at most
 * FILES_WAIT_MS after it came online.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULTS, type Settings } from '../../lib/operator/settings';
import { Relay } from '../../lib/relay';
import { Reporter } from '../../lib/operator/reporter';
import { FILES_WAIT_MS, FIRST_FILES_WAIT_MS, procOpenFiles, WriterFiles } from '../../lib/table/writer-files';
import { cluster, env, FakeClient, FakeTimers, flush } from './fakes';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const PM2_LOGS = ['/home/u/.pm2/pm2.log', '/home/u/.pm2/logs/web-out.log'];

describe('WriterFiles', () => {
  it('learns the files only the writer has open, and tells whether a new writer has opened one', () => {
    const open = new Map<number, Set<string>>([
      [100, new Set([...PM2_LOGS, '/var/log/web/app.log', '/var/log/web/errors.log'])],
      [101, new Set(PM2_LOGS)],
      [200, new Set(PM2_LOGS)],
    ]);
    const files = new WriterFiles((pid) => open.get(pid));
    expect(files.opened('web', 200)).toBeUndefined(); // nothing learnt: nothing to go by
    expect(files.learn('web', 100, 101)).toEqual(['/var/log/web/app.log', '/var/log/web/errors.log']);
    expect(files.opened('web', 100)).toBeUndefined(); // the writer they were learnt from
    expect(files.opened('web', 200)).toBe(false);
    expect(files.opened('web', 0)).toBe(false); // its pid not known yet
    open.get(200)!.add('/var/log/web/errors.log');
    expect(files.opened('web', 200)).toBe(true);
    expect(files.opened('web', 300)).toBeUndefined(); // /proc cannot tell
    files.forget('web');
    expect(files.opened('web', 200)).toBeUndefined();
  });

  it('leaves out PM2\'s own log files of the writer (per process: web-out-0.log is not in instance 1)', () => {
    const open = new Map<number, Set<string>>([
      [100, new Set(['/home/u/.pm2/logs/web-out-0.log', '/home/u/.pm2/logs/web-error-0.log', '/var/log/web/app.log'])],
      [101, new Set(['/home/u/.pm2/logs/web-out-1.log', '/home/u/.pm2/logs/web-error-1.log'])],
      [200, new Set(['/home/u/.pm2/logs/web-out-0.log', '/home/u/.pm2/logs/web-error-0.log'])],
    ]);
    const files = new WriterFiles((pid) => open.get(pid));
    expect(files.learn('web', 100, 101, ['/home/u/.pm2/logs/web-out-0.log', '/home/u/.pm2/logs/web-error-0.log'])).toEqual(['/var/log/web/app.log']);
    expect(files.opened('web', 200)).toBe(false); // PM2 opened its logs; log4js has not configured yet
  });

  it('a writer that logs to stdout only teaches nothing, and is looked at a few times only', () => {
    let looks = 0;
    const files = new WriterFiles((pid) => {
      looks++;
      return new Set(pid === 100 ? PM2_LOGS : PM2_LOGS);
    });
    for (let i = 0; i < 20; i++) expect(files.learn('web', 100, 101)).toBeUndefined();
    expect(looks).toBeLessThanOrEqual(10);
    expect(files.filesOf('web')).toBeUndefined();
  });

  it('procOpenFiles reads a real process\'s open files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-files-'));
    const file = path.join(dir, 'open.log');
    const fd = fs.openSync(file, 'a');
    // Open for reading only (as a starting process reads its package.json): not a writer's file.
    const read = path.join(dir, 'package.json');
    fs.writeFileSync(read, '{}');
    const rfd = fs.openSync(read, 'r');
    try {
      const mine = procOpenFiles()(process.pid);
      expect(mine?.has(fs.realpathSync(file))).toBe(true);
      expect(mine?.has(fs.realpathSync(read))).toBe(false);
      expect([...(mine ?? [])].some((f) => f.startsWith('/dev/'))).toBe(false);
      expect(procOpenFiles()(0)).toBeUndefined();
    } finally {
      fs.closeSync(fd);
      fs.closeSync(rfd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A relay over app `web` (pm_ids 0..2, pids 100..102, ready_delay 1 s) whose processes have the
 * files `open` says open; `forkedUnder(0)` tells the pid of a new process under pm_id 0, if any;
 * `onlineAt` their pm_uptime (-1: online just now).
 */
function relayOver(open: Map<number, Set<string>>, forkedUnder: (pmId: number) => number | undefined = () => undefined, onlineAt = 0) {
  const settings = { ...DEFAULTS, ready_delay: 1000 } as Settings;
  const client = new FakeClient();
  const timers = new FakeTimers();
  client.procs = cluster('web', 3, 0, { pm_uptime: onlineAt < 0 ? timers.now : onlineAt }).map((p, i) => ({ ...p, pid: 100 + i }));
  const lines: string[] = [];
  const reporter = new Reporter((l) => lines.push(l), (l) => lines.push(l));
  const relay = new Relay({
    client,
    settings,
    reporter,
    timers,
    now: () => timers.now,
    preciseNow: () => timers.now,
    newcomers: { after: forkedUnder, forked: () => undefined },
    liveness: { isAlive: () => true, forget: () => {} },
    writerFiles: new WriterFiles((pid) => open.get(pid)),
  });
  return { relay, client, timers, lines };
}

describe('Relay with writer files', () => {
  async function setup() {
    const open = new Map<number, Set<string>>([
      [100, new Set([...PM2_LOGS, '/var/log/web/app.log'])],
      [101, new Set(PM2_LOGS)],
      [102, new Set(PM2_LOGS)],
    ]);
    const { relay, client, timers, lines } = relayOver(open);
    await relay.start();
    // The app logs through the module: the tick learns /var/log/web/app.log from pid 100 (not
    // open in pid 101).
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-before' });
    for (let i = 0; i < 10; i++) await flush();
    relay.tick();
    client.sent.length = 0;
    timers.advance(1000);
    return { relay, client, timers, lines, open };
  }
  const logs = (client: FakeClient, from: number, to: number) => {
    for (let i = from; i < to; i++) client.msg(1, 'web', { topic: 'log4js:message', data: `web-${i}` });
  };
  /** The writer (pm_id 0) restarts as pid 200; `pm2 list` tells its pid. */
  async function restartWriter(client: FakeClient, timers: FakeTimers) {
    client.event('exit', env({ pm_id: 0, name: 'web', status: 'stopping', NODE_APP_INSTANCE: 0, pm_uptime: 0 }));
    client.procs[0] = { ...client.procs[0], pid: 200, pm_uptime: timers.now };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: timers.now }));
    timers.advance(150); // the list read after `online` tells the pid
    for (let i = 0; i < 10; i++) await flush();
  }

  it('holds a restarted writer\'s packets past ready_delay until it opens its app\'s log file', async () => {
    const { client, timers, lines, open } = await setup();
    open.set(200, new Set(PM2_LOGS)); // the new process runs, log4js not configured yet
    await restartWriter(client, timers);
    logs(client, 0, 20);
    timers.advance(2000); // past ready_delay: log4js is not configured yet
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent).toHaveLength(0);
    open.set(200, new Set([...PM2_LOGS, '/var/log/web/app.log'])); // configure() opened it
    timers.advance(100);
    for (let i = 0; i < 60; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(Array.from({ length: 20 }, (_, i) => `web-${i}`));
    expect(lines.join('\n')).not.toMatch(/has not opened/);
  });

  it('a writer that never opens them gets its packets FILES_WAIT_MS after online, with one line saying why', async () => {
    const { relay, client, timers, lines, open } = await setup();
    await restartWriter(client, timers);
    open.set(200, new Set(PM2_LOGS));
    logs(client, 0, 5);
    timers.advance(FILES_WAIT_MS - 500);
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent).toHaveLength(0);
    timers.advance(1000);
    for (let i = 0; i < 30; i++) await flush();
    expect(client.sent).toHaveLength(5);
    relay.tick();
    expect(lines.filter((l) => /pm_id 0 \(pid 200\) has not opened \/var\/log\/web\/app\.log/.test(l))).toHaveLength(1);
  });
});

describe('Relay with writer files: learnt from the writer that goes', () => {
  it('a reload seconds after the app started: the files are learnt from the parked old writer, and the new one is held until it opens them', async () => {
    // At its election the writer has not configured log4js yet: nothing to learn then.
    const open = new Map<number, Set<string>>([
      [100, new Set(PM2_LOGS)],
      [101, new Set(PM2_LOGS)],
      [102, new Set(PM2_LOGS)],
      [200, new Set(PM2_LOGS)],
    ]);
    let forked: number | undefined;
    const { relay, client, timers, lines } = relayOver(open, (pmId) => (pmId === 0 ? forked : undefined));
    await relay.start();
    timers.advance(1000);
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-first' });
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['web-first']);
    open.get(100)!.add('/var/log/web/app.log'); // configured now; no periodic look has run since
    // `pm2 reload`: the new worker (pid 200) is forked under pm_id 0, the old one parked, alive.
    forked = 200;
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-0' });
    for (let i = 0; i < 10; i++) await flush();
    client.procs[0] = { ...client.procs[0], pid: 200, pm_uptime: timers.now };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: timers.now }));
    timers.advance(150);
    for (let i = 0; i < 10; i++) await flush();
    forked = undefined;
    timers.advance(2000); // past ready_delay; the new worker has not configured log4js yet
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['web-first']);
    open.get(200)!.add('/var/log/web/app.log');
    timers.advance(100);
    for (let i = 0; i < 60; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['web-first', 'web-0']);
    expect(lines.join('\n')).not.toMatch(/has not opened/);
  });
});

describe('Relay with writer files: a new app, nothing learnt yet', () => {
  const sent = (client: FakeClient) => client.sent.map((x) => x.data);
  const settle = async () => {
    for (let i = 0; i < 30; i++) await flush();
  };

  it('its writer, slower to configure log4js than ready_delay, is held until it has a file of its own', async () => {
    const open = new Map<number, Set<string>>([
      [100, new Set(PM2_LOGS)],
      [101, new Set(PM2_LOGS)],
      [102, new Set(PM2_LOGS)],
    ]);
    const { relay, client, timers, lines } = relayOver(open, undefined, -1);
    await relay.start();
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-0' }); // a sibling logs at once
    timers.advance(2500); // past ready_delay (1 s): the writer has not configured log4js yet
    await settle();
    expect(sent(client)).toEqual([]);
    open.get(100)!.add('/var/log/web/app.log');
    timers.advance(100);
    await settle();
    expect(sent(client)).toEqual(['web-0']);
    expect(lines.join('\n')).not.toMatch(/has not opened/);
  });

  it('an app that logs to stdout only waits FIRST_FILES_WAIT_MS once; its restarted writer then only ready_delay', async () => {
    const open = new Map<number, Set<string>>([
      [100, new Set(PM2_LOGS)],
      [101, new Set(PM2_LOGS)],
      [102, new Set(PM2_LOGS)],
      [200, new Set(PM2_LOGS)],
    ]);
    const { relay, client, timers } = relayOver(open, undefined, -1);
    await relay.start();
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-0' });
    timers.advance(FIRST_FILES_WAIT_MS - 200);
    await settle();
    expect(sent(client)).toEqual([]);
    timers.advance(300);
    await settle();
    expect(sent(client)).toEqual(['web-0']);
    // The writer restarts: nothing to wait for now but ready_delay.
    client.event('exit', env({ pm_id: 0, name: 'web', status: 'stopping', NODE_APP_INSTANCE: 0, pm_uptime: 0 }));
    client.procs[0] = { ...client.procs[0], pid: 200, pm_uptime: timers.now };
    client.event('online', env({ pm_id: 0, name: 'web', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: timers.now }));
    timers.advance(150);
    await settle();
    client.msg(1, 'web', { topic: 'log4js:message', data: 'web-1' });
    timers.advance(1000);
    await settle();
    expect(sent(client)).toEqual(['web-0', 'web-1']);
  });
});

describe('Relay with writer files: a new app whose pids are not listed yet', () => {
  it("holds a new app's writer past ready_delay while PM2's list (the pids) is late, then until it opens a file of its own", async () => {
    const open = new Map<number, Set<string>>([
      [300, new Set(PM2_LOGS)],
      [301, new Set(PM2_LOGS)],
    ]);
    const { relay, client, timers } = relayOver(open);
    await relay.start();
    // A busy daemon answers lists late: the next one is held back until `release`.
    let release: () => void = () => {};
    const listNow = client.list.bind(client);
    client.list = () => new Promise((r) => (release = () => void listNow().then(r)));
    const app = cluster('news', 2, 3, { pm_uptime: timers.now }).map((p, i) => ({ ...p, pid: 300 + i }));
    client.procs.push(...app);
    for (const p of app) client.event('online', env({ ...p, status: 'launching', pid: undefined }));
    for (let i = 0; i < 5; i++) client.msg(4, 'news', { topic: 'log4js:message', data: `news-${i}` });
    timers.advance(2000); // past ready_delay (1 s): the pids are not known yet
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent).toHaveLength(0);
    release(); // the list tells the pids; the writer has not configured log4js yet
    for (let i = 0; i < 10; i++) await flush();
    timers.advance(200);
    for (let i = 0; i < 10; i++) await flush();
    expect(client.sent).toHaveLength(0);
    open.get(300)!.add('/var/log/news/app.log');
    timers.advance(200);
    for (let i = 0; i < 30; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['news-0', 'news-1', 'news-2', 'news-3', 'news-4']);
  });
});
