import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { daemonChildren, pmIdFromEnviron } from '../../lib/proc/forks';

/** A fake /proc: the daemon (pid 1) and its children, each with stat and environ. */
function fakeProc() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-newcomers-'));
  fs.mkdirSync(path.join(root, '1', 'task', '1'), { recursive: true });
  const setChildren = (pids: number[]) => fs.writeFileSync(path.join(root, '1', 'task', '1', 'children'), pids.map((p) => `${p} `).join(''));
  const child = (pid: number, start: number, environ: string[]) => {
    fs.mkdirSync(path.join(root, String(pid)), { recursive: true });
    // 22nd field is the start time; the name may hold spaces and ')'.
    fs.writeFileSync(path.join(root, String(pid), 'stat'), `${pid} (node x) y) S 1 ${'0 '.repeat(17)}${start} 0 0`);
    fs.writeFileSync(path.join(root, String(pid), 'environ'), environ.join('\0') + '\0');
  };
  setChildren([]);
  return { root, setChildren, child };
}

const cluster = (pmId: number) => ['PATH=/bin', `pm2_env=${JSON.stringify({ pm_id: pmId, name: 'web', env: { pm_id: 99 } })}`];

describe('daemonChildren', () => {
  let root = '';
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('reports the process PM2 forked for a pm_id after the one we know (reload), not the parked old one', () => {
    const p = fakeProc();
    root = p.root;
    p.child(100, 5000, cluster(1));
    p.child(101, 5001, ['pm_id=2', 'name=worker']); // fork mode: a plain variable
    p.setChildren([100, 101]);
    const watch = daemonChildren(1, root);
    expect(watch.after(1, 100)).toBeUndefined();
    expect(watch.after(2, 101)).toBeUndefined();
    // pm2 reload: pm_id 1 is forked again; the old worker (100) is still alive, parked.
    p.child(200, 9000, cluster(1));
    p.setChildren([100, 101, 200]);
    expect(watch.after(1, 100)).toBe(200);
    expect(watch.after(2, 101)).toBeUndefined();
    // Once we know the new one, the parked old one (same pm_id, older) is no newcomer.
    expect(watch.after(1, 200)).toBeUndefined();
    p.setChildren([101, 200]);
    expect(watch.after(1, 200)).toBeUndefined();
    expect(watch.after(1, 0)).toBeUndefined(); // pid not known yet: nothing to compare with
  });

  it('forked(): false only when every process started since the known one is another pm_id\'s', () => {
    const p = fakeProc();
    root = p.root;
    p.child(100, 5000, cluster(1));
    p.child(101, 4000, ['pm_id=2']); // older: not a newcomer
    p.setChildren([100, 101]);
    const watch = daemonChildren(1, root);
    expect(watch.forked(1, 100)).toBe(false);
    p.child(150, 6000, ['pm_id=2']); // another app's process started since: still no
    p.setChildren([100, 101, 150]);
    expect(watch.forked(1, 100)).toBe(false);
    p.child(300, 7000, ['PATH=/bin']); // a new child still in exec: cannot tell
    p.setChildren([100, 101, 150, 300]);
    expect(watch.forked(1, 100)).toBeUndefined();
    p.child(300, 7000, cluster(1)); // now readable: pm_id 1 was forked again
    expect(watch.forked(1, 100)).toBe(true);
    expect(watch.forked(1, 999)).toBeUndefined(); // not a child: nothing to compare with
  });

  it('classifies a child read before its exec (the daemon\'s own environment) on a later check', () => {
    const p = fakeProc();
    root = p.root;
    p.child(100, 5000, cluster(3));
    p.child(300, 7000, ['PATH=/bin']);
    p.setChildren([100, 300]);
    const watch = daemonChildren(1, root);
    expect(watch.after(3, 100)).toBeUndefined();
    p.child(300, 7000, cluster(3));
    expect(watch.after(3, 100)).toBe(300);
  });

  it('settled(): false while a child is not told apart, also after the quick retries, until it is', () => {
    const p = fakeProc();
    root = p.root;
    p.child(100, 5000, cluster(3));
    p.setChildren([100]);
    const watch = daemonChildren(1, root);
    watch.after(3, 100);
    expect(watch.settled()).toBe(true);
    // A new child still in exec (the daemon's own environment), read more often than the quick retries.
    p.child(300, 7000, ['PATH=/bin']);
    p.setChildren([100, 300]);
    for (let i = 0; i < 30; i++) watch.after(3, 100);
    expect(watch.settled()).toBe(false);
    // Once it can be read, a later retry tells it apart.
    p.child(300, 7000, cluster(4));
    for (let i = 0; i < 300 && !watch.settled(); i++) watch.after(3, 100);
    expect(watch.settled()).toBe(true);
    expect(watch.after(4, 300)).toBeUndefined();
  });

  it('reports nothing where the children file does not exist', () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-newcomers-'));
    expect(daemonChildren(1, root).after(1, 100)).toBeUndefined();
  });

  it('reads the real daemon-style file of this process (a child of ours is seen)', async () => {
    const { spawn } = await import('node:child_process');
    const kid = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 5000)'], { env: { ...process.env, pm_id: '7' }, stdio: 'ignore' });
    await new Promise((r) => kid.once('spawn', r));
    try {
      const self = process.pid;
      if (!fs.existsSync(`/proc/${self}/task/${self}/children`)) return; // kernel without it
      const watch = daemonChildren(self);
      expect(watch.after(7, kid.pid!)).toBeUndefined();
      // Start times count clock ticks (10 ms): let one pass, so the second is later by /proc's measure.
      await new Promise((r) => setTimeout(r, 30));
      const kid2 = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 5000)'], { env: { ...process.env, pm_id: '7' }, stdio: 'ignore' });
      await new Promise((r) => kid2.once('spawn', r));
      expect(watch.after(7, kid.pid!)).toBe(kid2.pid);
      expect(watch.after(7, kid2.pid!)).toBeUndefined();
      kid2.kill('SIGKILL');
    } finally {
      kid.kill('SIGKILL');
    }
  });
});

describe('pmIdFromEnviron', () => {
  it('reads pm2_env JSON (cluster) or pm_id (fork), and nothing from other processes', () => {
    expect(pmIdFromEnviron(cluster(4).join('\0'))).toBe(4);
    expect(pmIdFromEnviron('A=1\0pm_id=12\0')).toBe(12);
    expect(pmIdFromEnviron('A=1\0pm2_env={broken\0')).toBeUndefined();
    expect(pmIdFromEnviron('PATH=/bin\0')).toBeUndefined();
  });
});
