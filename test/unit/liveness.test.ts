import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { procLiveness } from '../../lib/liveness';
import { DEFAULTS, type Settings } from '../../lib/config';
import { Relay } from '../../lib/relay';
import { Reporter } from '../../lib/reporter';
import { cluster, FakeClient, flush } from './fakes';

describe('procLiveness', () => {
  it('sees a real child alive, then dead once it has exited', async () => {
    const live = procLiveness();
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    expect(live.isAlive(child.pid!)).toBe(true);
    expect(live.isAlive(child.pid!)).toBe(true); // through the kept fd
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    expect(live.isAlive(child.pid!)).toBe(false);
  });

  it('takes a zombie (exited, not yet reaped) as dead, and a name with ")" in it is parsed right', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-proc-'));
    const stat = (pid: number, text: string) => {
      fs.mkdirSync(path.join(root, String(pid)), { recursive: true });
      fs.writeFileSync(path.join(root, String(pid), 'stat'), text);
    };
    fs.mkdirSync(path.join(root, 'self'));
    fs.writeFileSync(path.join(root, 'self', 'stat'), '1 (x) S');
    stat(10, '10 (node) S 1 10 10 0 -1');
    stat(11, '11 (node) Z 1 11 11 0 -1');
    stat(12, '12 (we) ird) R 1 12');
    const live = procLiveness(root);
    expect(live.isAlive(10)).toBe(true);
    expect(live.isAlive(11)).toBe(false);
    expect(live.isAlive(12)).toBe(true);
    expect(live.isAlive(13)).toBe(false); // no such process
    expect(live.isAlive(0)).toBe(true); // unknown pid: nothing to go by
    fs.rmSync(root, { recursive: true, force: true });
  });
});

describe('Relay with a dead writer', () => {
  it('sends nothing to a process that has exited: the packet is held and the writer taken out of service', async () => {
    const client = new FakeClient();
    client.procs = cluster('web', 2, 0, { pm_uptime: 0 }).map((e, i) => ({ ...e, pid: 1000 + i }));
    let writerAlive = true;
    const lines: string[] = [];
    const relay = new Relay({
      client,
      settings: { ...DEFAULTS, ready_delay: 0 } as Settings,
      reporter: new Reporter((l) => lines.push(l), (l) => lines.push(l)),
      liveness: { isAlive: (pid) => pid !== 1000 || writerAlive, forget: () => {} },
    });
    await relay.start();
    client.msg(1, 'web', { topic: 'log4js:message', data: 'a' });
    for (let i = 0; i < 5; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['a']);
    writerAlive = false;
    client.msg(1, 'web', { topic: 'log4js:message', data: 'b' });
    client.msg(1, 'web', { topic: 'log4js:message', data: 'c' });
    for (let i = 0; i < 5; i++) await flush();
    expect(client.sent.map((s) => s.data)).toEqual(['a']);
    expect(relay.counters.held).toBe(2);
    expect(relay.status().find((r) => r.name === 'web')!.writer_ready).toBe(false);
  });
});
