import { describe, expect, it } from 'vitest';
import { electWriter } from '../../lib/table/election';
import { appKeyOf, Registry } from '../../lib/table/registry';
import { cluster, env } from './fakes';

const NOW = 100_000;

describe('Registry', () => {
  it('groups processes by name and namespace', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applySnapshot([...cluster('api', 2, 0), ...cluster('api', 2, 2, { namespace: 'staging' }), env({ pm_id: 4, name: 'worker', exec_mode: 'fork_mode', NODE_APP_INSTANCE: 0 })], NOW);
    expect(r.app(appKeyOf('api', 'default'))!.pmIds).toEqual(new Set([0, 1]));
    expect(r.app(appKeyOf('api', 'staging'))!.pmIds).toEqual(new Set([2, 3]));
    expect(r.process(4)!.clusterMode).toBe(false);
  });

  it('knows which apps PM2 may reload by itself (max_memory_restart, in bytes), also after an event changes it', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applySnapshot([...cluster('api', 2, 0, { max_memory_restart: 209715200 }), ...cluster('web', 1, 2)], NOW);
    expect(r.process(0)!.memoryRestart).toBe(true);
    expect(r.process(2)!.memoryRestart).toBe(false);
    r.applyEvent('online', env({ pm_id: 2, name: 'web', NODE_APP_INSTANCE: 0, max_memory_restart: 1048576 }), NOW);
    expect(r.process(2)!.memoryRestart).toBe(true);
  });

  it('takes a process that has run for longer than ready_delay as ready, a fresh one only later', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applySnapshot([env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 5000 }), env({ pm_id: 1, name: 'b', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 10 })], NOW);
    expect(r.process(0)!.readyAt).toBe(NOW - 4000);
    // pm_uptime is the fork; its `online` (from which ready_delay counts) came later, so a young
    // process counts from now (the delivery model found a line lost to a writer started 100 ms
    // before the module and taken ready 100 ms before its app ran).
    expect(r.process(1)!.readyAt).toBe(NOW + 1000);
  });

  it('counts ready_delay from now for a process first seen less than twice ready_delay after its fork', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applySnapshot([env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 1500 }), env({ pm_id: 1, name: 'b', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 2000 })], NOW);
    expect(r.process(0)!.readyAt).toBe(NOW + 1000);
    expect(r.process(1)!.readyAt).toBe(NOW - 1000);
  });

  it('follows online, exit and stop events; an online event starts a new ready delay', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applySnapshot(cluster('a', 2, 0, { pm_uptime: 0 }), NOW);
    expect(r.applyEvent('exit', env({ pm_id: 0, name: 'a', status: 'stopping', NODE_APP_INSTANCE: 0 }), NOW)).toEqual([{ kind: 'offline', proc: r.process(0) }]);
    expect(r.process(0)!.readyAt).toBe(Infinity);
    expect(r.applyEvent('exit', env({ pm_id: 0, name: 'a', status: 'stopped', NODE_APP_INSTANCE: 0 }), NOW)).toEqual([]);
    const ch = r.applyEvent('online', env({ pm_id: 0, name: 'a', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: NOW }), NOW);
    expect(ch[0].kind).toBe('online');
    expect(r.process(0)!.status).toBe('online');
    expect(r.process(0)!.readyAt).toBe(NOW + 1000);
    expect(r.process(0)!.startedAt).toBe(NOW);
  });

  it('a wait_ready app is ready at its online event (PM2 sends it only after "ready")', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applyEvent('online', env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0, wait_ready: true }), NOW);
    expect(r.process(0)!.readyAt).toBe(NOW);
  });

  it('markReady (process.send("ready")) cuts the delay short', () => {
    const r = new Registry({ readyDelay: 1000 });
    r.applyEvent('online', env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0 }), NOW);
    expect(r.markReady(0, NOW + 5)!.readyAt).toBe(NOW + 5);
  });

  it('ignores parked _old_ workers of a reload', () => {
    const r = new Registry({ readyDelay: 0 });
    expect(r.applyEvent('exit', env({ pm_id: '_old_3', name: 'a', NODE_APP_INSTANCE: 0 }), NOW)).toEqual([]);
    expect(r.size).toBe(0);
  });

  it('remembers a custom instance_var after PM2 resets it to NODE_APP_INSTANCE on restart', () => {
    const r = new Registry({ readyDelay: 0 });
    r.applySnapshot([env({ pm_id: 0, name: 'a', instance_var: 'INSTANCE_ID', INSTANCE_ID: 0 }), env({ pm_id: 1, name: 'a', instance_var: 'INSTANCE_ID', INSTANCE_ID: 1 })], NOW);
    // After `pm2 restart 0`: instance_var says NODE_APP_INSTANCE, the number is still under INSTANCE_ID.
    r.applyEvent('online', env({ pm_id: 0, name: 'a', instance_var: 'NODE_APP_INSTANCE', INSTANCE_ID: 0 }), NOW);
    expect(r.process(0)!.instance).toBe(0);
    expect(r.app(appKeyOf('a', 'default'))!.instanceVar).toBe('INSTANCE_ID');
    expect(r.instanceVars()).toEqual({ [appKeyOf('a', 'default')]: 'INSTANCE_ID' });
  });

  it('uses an instance_var remembered by an earlier run of the module', () => {
    const key = appKeyOf('a', 'default');
    const r = new Registry({ readyDelay: 0, knownInstanceVars: { [key]: 'INSTANCE_ID' } });
    r.applySnapshot([env({ pm_id: 0, name: 'a', instance_var: 'NODE_APP_INSTANCE', INSTANCE_ID: 0 })], NOW);
    expect(r.process(0)!.instance).toBe(0);
  });

  it('honours the daemon-wide PM2_PROCESS_INSTANCE_VAR', () => {
    const r = new Registry({ readyDelay: 0, globalInstanceVar: 'MY_ID' });
    r.applySnapshot([env({ pm_id: 0, name: 'a', MY_ID: 0, NODE_APP_INSTANCE: 5 })], NOW);
    expect(r.process(0)!.instance).toBe(0);
  });

  it('reports processes and apps gone from a fresh list (PM2 has no delete event)', () => {
    const r = new Registry({ readyDelay: 0 });
    r.applySnapshot([...cluster('a', 2, 0), ...cluster('b', 1, 2)], NOW);
    const ch = r.applySnapshot(cluster('a', 2, 0), NOW);
    expect(ch.map((c) => c.kind)).toEqual(['removed', 'app-removed']);
    expect(r.app(appKeyOf('b', 'default'))).toBeUndefined();
  });
});

describe('electWriter', () => {
  const r = new Registry({ readyDelay: 0 });
  r.applySnapshot([...cluster('a', 3, 0, { pm_uptime: 0 })], NOW);

  it('picks the online, ready process numbered writer_instance', () => {
    expect(electWriter(r.processesOf(r.app(appKeyOf('a', 'default'))!), 0, NOW).writer!.pmId).toBe(0);
    expect(electWriter(r.processesOf(r.app(appKeyOf('a', 'default'))!), 2, NOW).writer!.pmId).toBe(2);
  });

  it('has no writer when no process carries the number, and says when one will be ready', () => {
    const r2 = new Registry({ readyDelay: 1000 });
    r2.applyEvent('online', env({ pm_id: 7, name: 'a', NODE_APP_INSTANCE: 0 }), NOW);
    const e = electWriter(r2.processesOf(r2.app(appKeyOf('a', 'default'))!), 0, NOW);
    expect(e.writer).toBeUndefined();
    expect(e.readyAt).toBe(NOW + 1000);
    expect(electWriter(r2.processesOf(r2.app(appKeyOf('a', 'default'))!), 3, NOW).claimants).toEqual([]);
  });

  it('with duplicate numbers, the lowest pm_id wins and all claimants are listed', () => {
    const r3 = new Registry({ readyDelay: 0 });
    r3.applySnapshot([env({ pm_id: 5, name: 'a', NODE_APP_INSTANCE: 0, pm_uptime: 0 }), env({ pm_id: 2, name: 'a', NODE_APP_INSTANCE: 0, pm_uptime: 0 })], NOW);
    const e = electWriter(r3.processesOf(r3.app(appKeyOf('a', 'default'))!), 0, NOW);
    expect(e.writer!.pmId).toBe(2);
    expect(e.claimants.map((p) => p.pmId)).toEqual([2, 5]);
  });
});

describe('apps that announce readiness', () => {
  it('after one announcement, a new writer waits for its own (or the fallback), not ready_delay', () => {
    const r = new Registry({ readyDelay: 1000, announceTimeout: 30000 });
    r.applyEvent('online', env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0 }), NOW);
    expect(r.markReady(0, NOW + 10)!.readyAt).toBe(NOW + 10);
    r.applyEvent('exit', env({ pm_id: 0, name: 'a', status: 'stopped', NODE_APP_INSTANCE: 0 }), NOW + 20);
    r.applyEvent('online', env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0 }), NOW + 30);
    expect(r.process(0)!.readyAt).toBe(NOW + 30 + 30000);
    expect(r.markReady(0, NOW + 2500)!.readyAt).toBe(NOW + 2500);
  });

  describe('a list asked for before later events (PM2 answers it in its own time)', () => {
    it('does not remove an app that came online after it was asked for, and says it was stale', () => {
      const r = new Registry({ readyDelay: 1000 });
      r.applySnapshot(cluster('old', 2, 0), NOW);
      const askedAt = r.eventSeq;
      r.applyEvent('online', env({ pm_id: 2, name: 'fresh', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: NOW }), NOW);
      r.applyEvent('online', env({ pm_id: 3, name: 'fresh', status: 'launching', NODE_APP_INSTANCE: 1, pm_uptime: NOW }), NOW);
      // The list PM2 built before the new app started: without it, and without pm_id 1 (deleted meanwhile).
      const ch = r.applySnapshot(cluster('old', 1, 0), NOW + 10, askedAt);
      expect(r.app(appKeyOf('fresh', 'default'))!.pmIds).toEqual(new Set([2, 3]));
      expect(r.process(2)!.status).toBe('online');
      expect(ch.map((c) => `${c.kind} ${'proc' in c ? c.proc.pmId : c.app.key}`)).toEqual(['removed 1']);
      expect(r.snapshotWasStale).toBe(true);
      // Asked for after those events, the list is the truth again.
      const ch2 = r.applySnapshot([...cluster('old', 1, 0), ...cluster('fresh', 1, 2, { pm_uptime: NOW, pid: 4242 })], NOW + 20, r.eventSeq);
      expect(r.snapshotWasStale).toBe(false);
      expect(ch2.map((c) => `${c.kind} ${'proc' in c ? c.proc.pmId : c.app.key}`)).toEqual(['removed 3']);
      expect(r.process(2)!.pid).toBe(4242);
    });

    it('keeps what a later event said of a listed process, learning only the pid of the same generation', () => {
      const r = new Registry({ readyDelay: 1000 });
      r.applySnapshot([env({ pm_id: 0, name: 'a', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 5000, pid: 100 })], NOW);
      const askedAt = r.eventSeq;
      r.applyEvent('online', env({ pm_id: 0, name: 'a', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: NOW }), NOW);
      expect(r.process(0)!.pid).toBe(0);
      // Older generation in the list: nothing learnt from it.
      r.applySnapshot([env({ pm_id: 0, name: 'a', status: 'stopping', NODE_APP_INSTANCE: 0, pm_uptime: NOW - 5000, pid: 100 })], NOW + 5, askedAt);
      expect(r.process(0)).toMatchObject({ status: 'online', pid: 0, startedAt: NOW, readyAt: NOW + 1000 });
      // The new generation already in it (PM2 built it after the fork): its pid is learnt.
      r.applySnapshot([env({ pm_id: 0, name: 'a', status: 'launching', NODE_APP_INSTANCE: 0, pm_uptime: NOW, pid: 200 })], NOW + 6, askedAt);
      expect(r.process(0)).toMatchObject({ status: 'online', pid: 200, readyAt: NOW + 1000 });
    });

    it('does not take back into service a process found unreachable after it was asked for (a reload may have swapped it)', () => {
      const r = new Registry({ readyDelay: 1000 });
      r.applySnapshot(cluster('a', 1, 0, { pm_uptime: NOW - 5000, pid: 100 }), NOW);
      const askedAt = r.eventSeq;
      expect(r.markUnreachable(0)).toBeDefined();
      const ch = r.applySnapshot(cluster('a', 1, 0, { pm_uptime: NOW - 5000, pid: 100 }), NOW + 5, askedAt);
      expect(ch).toEqual([]);
      expect(r.process(0)).toMatchObject({ status: 'unreachable', readyAt: Infinity });
      expect(r.snapshotWasStale).toBe(true);
      // Asked for after it: the list is the truth again.
      r.applySnapshot(cluster('a', 1, 0, { pm_uptime: NOW - 5000, pid: 100 }), NOW + 10, r.eventSeq);
      expect(r.process(0)).toMatchObject({ status: 'online', readyAt: NOW + 1010 });
    });

    it('does not bring back a process deleted after it was asked for', () => {
      const r = new Registry({ readyDelay: 1000 });
      r.applySnapshot(cluster('a', 2, 0), NOW);
      const askedAt = r.eventSeq;
      r.applyEvent('delete', env({ pm_id: 1, name: 'a', NODE_APP_INSTANCE: 1 }), NOW);
      r.applySnapshot(cluster('a', 2, 0), NOW + 5, askedAt);
      expect(r.process(1)).toBeUndefined();
      expect(r.snapshotWasStale).toBe(true);
    });
  });
});
