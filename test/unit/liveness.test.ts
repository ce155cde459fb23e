import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { idleFrom, procLiveness } from '../../lib/proc/liveness';
import { DEFAULTS, type Settings } from '../../lib/operator/settings';
import { Relay } from '../../lib/relay';
import { Reporter } from '../../lib/operator/reporter';
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

  it('idle: a real child waiting in its event loop is idle; one busy in JS or stopped is not', async () => {
    const live = procLiveness();
    const waiting = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e8)'], { stdio: 'ignore' });
    const busy = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
    try {
      await Promise.all([waiting, busy].map((c) => new Promise((r) => c.once('spawn', r))));
      expect(live.isAlive(waiting.pid!)).toBe(true);
      expect(live.isAlive(busy.pid!)).toBe(true);
      // Bounded: a child that has not reached its loop yet is starting up, i.e. not idle.
      const deadline = Date.now() + 10_000;
      while (!live.idle!(waiting.pid!) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(live.idle!(waiting.pid!)).toBe(true);
      expect(live.idle!(busy.pid!)).toBe(false);
      waiting.kill('SIGSTOP');
      const stoppedBy = Date.now() + 10_000;
      while (live.idle!(waiting.pid!) && Date.now() < stoppedBy) await new Promise((r) => setTimeout(r, 5));
      expect(live.idle!(waiting.pid!)).toBe(false); // 'T': it reads nothing until continued
    } finally {
      waiting.kill('SIGKILL');
      busy.kill('SIGKILL');
    }
  });

  it('idleFrom: sleeping in epoll is idle; sleeping elsewhere, running or woken between two reads is not', () => {
    expect(idleFrom('S', 'do_epoll_wait', true)).toBe(true);
    expect(idleFrom('S', 'ep_poll', true)).toBe(true);
    expect(idleFrom('S', 'futex_wait_queue', true)).toBe(false); // a lock during GC: may have input unread
    expect(idleFrom('S', '0', true)).toBe(false); // woke up between the stat and wchan reads
    expect(idleFrom('R', 'do_epoll_wait', true)).toBe(false);
    expect(idleFrom('S', '0', false)).toBe(true); // a kernel that hides wait channels: the state alone
    expect(idleFrom('S', undefined, false)).toBe(true);
    expect(idleFrom('D', undefined, false)).toBe(false);
  });
});

describe('procLiveness and a fatal signal', () => {
  it('sees a real child gone at once after kill -9, before its exit is reaped', async () => {
    const live = procLiveness();
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    expect(live.isAlive(child.pid!)).toBe(true);
    // Stop it first, so it cannot run its exit yet: the kill is still seen.
    process.kill(child.pid!, 'SIGSTOP');
    process.kill(child.pid!, 'SIGKILL');
    expect(live.isAlive(child.pid!)).toBe(false);
    await new Promise((r) => child.once('exit', r));
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
