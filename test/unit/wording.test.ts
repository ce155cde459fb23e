/**
 * What the operator reads in `pm2 logs` and in the status action, in one place: each line's
 * wording, and the facts it must name (app, pm_id, the setting to change, the fix).
 */
import { describe, expect, it } from 'vitest';
import { electWriter } from '../../lib/table/election';
import * as say from '../../lib/operator/wording';
import { appKeyOf, Registry } from '../../lib/table/registry';
import { formatStatusTable, statusRow } from '../../lib/operator/status';
import { cluster, env } from './fakes';

const WEB = appKeyOf('web', 'default');
const BOUNDS = { buffer_mb: 8, spool_mb: 256 };

function table(envs = cluster('web', 3, 0, { pm_uptime: 0 })) {
  const registry = new Registry({ readyDelay: 1000 });
  registry.applySnapshot(envs, 100_000);
  const app = registry.app(WEB);
  const procs = app ? registry.processesOf(app) : [];
  return { app, procs, e: electWriter(procs, 0, 100_000) };
}

describe('operator lines', () => {
  it('name the app by name and namespace, and the writer by pm_id and instance', () => {
    const { procs } = table();
    expect(say.writerIs(WEB, procs[0])).toBe('app=web (namespace default) writer is pm_id=0 (instance 0)');
    expect(say.holdingNoWriter(WEB, BOUNDS)).toBe('app=web (namespace default) has no ready writer: holding its log packets (up to buffer_mb=8 in memory, then spool_mb=256 on disk)');
    expect(say.deliveringHeld(WEB, 40, 0)).toBe('app=web (namespace default) delivering 40 held log packets to writer pm_id=0');
    expect(say.appDeleted(WEB, 7)).toBe('app=web (namespace default) was deleted: dropped 7 log packets it held');
    expect(say.goneSpooled(appKeyOf('gone', 'default'), 1)).toBe('app=gone (namespace default) is gone: dropped 1 log packets it had spooled');
    expect(say.goneHeldAtShutdown(appKeyOf('gone', 'default'), 2)).toBe('app=gone (namespace default) is gone: dropped 2 log packets held at the last shutdown');
    expect(say.restoredHeld(3)).toBe('restored 3 log packets held at the last shutdown');
    expect(say.spooling(WEB, BOUNDS, '/x/spool')).toBe('app=web (namespace default) held log packets pass buffer_mb=8: the newer ones go to the spool on disk (/x/spool, up to spool_mb=256)');
    expect(say.listFailed(new Error('boom'))).toBe('could not re-read the process list: boom');
  });

  it('count phrases say what happened to the packets', () => {
    expect(say.sendsStopped(0, 'exited (pid 1000)')).toBe('sends stopped before they went out: pm_id 0 exited (pid 1000); packets kept');
    expect(say.sendsRefused('Process with ID <0> offline.')).toBe('sends refused by PM2 (target offline), packets kept');
    expect(say.sendsRefused(`x${'y'.repeat(100)}`)).toBe(`sends refused by PM2 (x${'y'.repeat(79)}), packets kept`);
    expect(say.sentAgain(3)).toBe('log packets sent again: PM2 had handed them to a restarted process (pm_id 3) before it listened');
    expect(say.DROP_PHRASE['no-topic']).toBe('malformed packets skipped (no topic)');
    expect(say.DROP_PHRASE['broadcast-off']).toBe('non-log packets not relayed (broadcast=off)');
  });

  it('the hold buffer names the bound that was passed, and why there is no spool', () => {
    expect(say.overflowBound('memory', { buffer_mb: 1, spool_mb: 0 }, undefined)).toBe('buffer_mb=1 full, the oldest dropped');
    expect(say.overflowBound('memory', { buffer_mb: 1, spool_mb: 5 }, 'EACCES')).toBe('buffer_mb=1 full, the oldest dropped (no spool: EACCES)');
    const bound = say.overflowBound('spool', BOUNDS, undefined);
    expect(bound).toBe('buffer_mb=8 and spool_mb=256 full, the newest dropped');
    expect(say.droppedBufferFull(WEB, bound)).toBe(`log packets dropped: hold buffer full (${bound}) for web (namespace default)`);
    expect(say.bufferFull(bound, 'Its writer is pm_id 0.')).toBe(`more log packets waited than the hold buffer takes (${bound}). Its writer is pm_id 0.`);
  });
});

describe('diagnoses', () => {
  it('why an app has no writer: deleted, none online, not ready, or no process with the writer number', () => {
    expect(say.whyNoWriter(undefined, [], undefined, 0)).toBe('No process of this app is known to PM2 (deleted?).');
    const ready = table();
    expect(say.whyNoWriter(ready.app, ready.procs, ready.e, 0)).toBe('Its writer is pm_id 0.');
    const fresh = table(cluster('web', 2, 0, { pm_uptime: 99_990 }));
    expect(say.whyNoWriter(fresh.app, fresh.procs, fresh.e, 0)).toBe('Its writer pm_id 0 is online but not ready yet.');
    const stopped = table(cluster('web', 2, 0, { status: 'stopped' }));
    expect(say.whyNoWriter(stopped.app, stopped.procs, stopped.e, 0)).toBe('No process of the app is online: start it (pm2 start web).');
    // Instance 0 stopped (pm2 stop <id>) while the others run: said so, not the namespace guess below.
    const writerStopped = table(cluster('web', 3, 0, { pm_uptime: 0 }).map((e) => (e.NODE_APP_INSTANCE === 0 ? { ...e, status: 'stopped' } : e)));
    expect(say.whyNoWriter(writerStopped.app, writerStopped.procs, writerStopped.e, 0)).toBe(
      'Its instance 0 (pm_id 0) is stopped, not online: its packets wait until it is (pm2 start 0, or its restart).',
    );
    const renumbered = table(cluster('web', 2, 0, { pm_uptime: 0 }).map((e) => ({ ...e, NODE_APP_INSTANCE: Number(e.NODE_APP_INSTANCE) + 2 })));
    const why = say.whyNoWriter(renumbered.app, renumbered.procs, renumbered.e, 0);
    expect(why).toContain('No online process has NODE_APP_INSTANCE=0 (online instances are numbered 2, 3).');
    expect(why).toContain('pm2 set pm2-scoped-intercom:writer_instance <n>');
    expect(say.heldTooLong(12, 5400, why)).toBe(`12 log packets have waited 5 s for a writer. ${why}`);
  });

  it('a writer that sends: the fix names the app\'s instance_var for log4js and for the client', () => {
    const own = say.writerSends('INSTANCE_ID', 0);
    expect(own).toContain('(the process with INSTANCE_ID=0)');
    expect(own).toContain("pm2: true and pm2InstanceVar: 'INSTANCE_ID' (the app's instance_var).");
    expect(own).toContain("pass instanceVar: 'INSTANCE_ID' and writerInstance: 0.");
    expect(say.writerSends(undefined, 1)).toContain("pm2: true (and no pm2InstanceVar, or pm2InstanceVar equal to the app's instance_var). With pm2-scoped-intercom/client (winston, pino): pass instanceVar: 'NODE_APP_INSTANCE' and writerInstance: 1.");
  });

  it('two claimants: both pm_ids, the one that receives, and the fix', () => {
    const { procs } = table([env({ pm_id: 3, name: 'web', NODE_APP_INSTANCE: 0 }), env({ pm_id: 5, name: 'web', NODE_APP_INSTANCE: 0 })]);
    const d = say.duplicateWriter(procs, 0);
    expect(d).toMatch(/^2 online processes claim instance 0 \(pm_ids 3, 5\); only pm_id 3 receives log packets/);
    expect(d).toContain('then pm2 reload the app.');
  });

  it('a fork-mode sender: cluster mode or disableClustering', () => {
    expect(say.forkModeSender(4)).toMatch(/^log packets come from pm_id=4, a fork-mode process\. .*exec_mode: 'cluster'.*disableClustering: true/);
  });
});

describe('status rows', () => {
  it('a row names the writer (or the claimant not ready yet) and the app\'s counts; the table shows them', () => {
    const ready = table();
    const row = statusRow(WEB, ready.app, ready.procs, ready.e, { held: 2, inflight: 1, forwarded: 9, dropped: 0 }, undefined);
    expect(row).toEqual({ namespace: 'default', name: 'web', instances: 3, online: 3, instance_var: 'NODE_APP_INSTANCE', writer_pm_id: 0, writer_instance: 0, writer_ready: true, held: 2, in_flight: 1, forwarded: 9, dropped: 0, last_problem: null });
    const fresh = table(cluster('web', 2, 0, { pm_uptime: 99_990 }));
    const waiting = statusRow(WEB, fresh.app, fresh.procs, fresh.e, { held: 0, inflight: 0, forwarded: 0, dropped: 0 }, 'held: 5 log packets');
    expect(waiting).toMatchObject({ writer_pm_id: 0, writer_ready: false, last_problem: 'held: 5 log packets' });
    const lines = formatStatusTable([row, waiting]).split('\n');
    expect(lines[0]).toMatch(/^namespace\s+name\s+inst\s+online\s+writer\s+held\s+inflight\s+forwarded\s+dropped\s+last problem$/);
    expect(lines[1]).toMatch(/^default\s+web\s+3\s+3\s+0#0\s+2\s+1\s+9\s+0\s+-$/);
    expect(lines[2]).toMatch(/0#0 \(not ready\)\s+0\s+0\s+0\s+0\s+held: 5 log packets$/);
  });
});

describe('start-up lines', () => {
  it('say which /proc checks are off and what that risks, and where the spool is', () => {
    expect(say.safetyChecks('on', true)).toBe('safety checks: dying writers on (/proc/<pid>/stat); reload forks on (/proc/<daemon>/task/<daemon>/children)');
    expect(say.safetyChecks('on', false)).toBe('safety checks: dying writers on (/proc/<pid>/stat); reload forks OFF (no /proc children): a reload can hand a new writer packets before the module knows');
    expect(say.safetyChecks('unreadable')).toBe(
      "safety checks: /proc not readable: dying writers and reload forks are not seen; send guard on: one send at a time, each confirmed on PM2's bus, so a closed channel is never written twice (PM2's daemon stays up)",
    );
    expect(say.safetyChecks('off')).toMatch(/^safety checks: \/proc turned off \(proc_checks=off\): .*send guard on/);
    expect(say.spoolAtStart({ dir: '/s', count: 0 })).toBe('spool: /s');
    expect(say.spoolAtStart({ dir: '/s', count: 9 })).toBe('spool: /s, 9 log packets from the last run');
    expect(say.spoolAtStart({ failure: 'cannot write /s (EACCES)', dir: '/s', count: 0 })).toBe('spool: cannot write /s (EACCES)');
  });
});
