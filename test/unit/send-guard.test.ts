import { describe, expect, it } from 'vitest';
import { FENCE_RETRY_MS, guardSends } from '../../lib/deliver/send-guard';
import { FENCE_TOPIC } from '../../lib/shared/protocol';
import { FakeClient, FakeTimers } from './fakes';

const CLOSED = 'Error [ERR_IPC_CHANNEL_CLOSED]: Channel closed\n    at target.send (node:internal/child_process:753:16)\n    at God.sendDataToProcessId\n';

/** A guarded FakeClient whose sends PM2 answers by hand; fences are collected, echoed on demand. */
async function setup() {
  const inner = new FakeClient();
  inner.autoAnswer = false;
  const timers = new FakeTimers();
  const posted: string[] = [];
  const guarded = guardSends(inner, { post: (p) => posted.push(p.data.nonce), timers, runId: 'r' });
  const messages: unknown[] = [];
  const events: unknown[] = [];
  const logs: unknown[] = [];
  await guarded.subscribe({ message: (p) => messages.push(p), event: (p) => events.push(p), pm2Log: (p) => logs.push(p) });
  const h = inner.handlers!;
  const echo = (nonce = posted[posted.length - 1]) => h.message({ raw: { topic: FENCE_TOPIC, data: { nonce } }, process: { pm_id: 9, name: 'pm2-scoped-intercom' } });
  const pm2Error = (text = CLOSED) => h.pm2Log!({ process: { pm_id: 'PM2' }, data: text });
  const results: (string | null)[] = [];
  const send = (pmId: number, line: string) => guarded.send(pmId, 'log4js:message', line, (err) => results.push(err ? `${line}: ${err.message}` : null));
  return { inner, timers, posted, guarded, messages, events, logs, h, echo, pm2Error, results, send };
}

describe('send guard (no /proc): one send at a time, each confirmed by a fence on the bus', () => {
  it('sends the next packet only after the fence of the previous one came back', async () => {
    const s = await setup();
    s.send(1, 'a');
    s.send(2, 'b');
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['a']);
    s.inner.answer(1);
    expect(s.posted).toEqual(['r:1']);
    expect(s.results).toEqual([]); // not done before the fence
    expect(s.inner.pending).toEqual([]);
    s.echo();
    expect(s.results).toEqual([null]);
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['b']);
    s.inner.answer(1);
    s.echo();
    expect(s.results).toEqual([null, null]);
    expect(s.messages).toEqual([]); // fences are not relayed
  });

  it('a channel error logged by PM2 before the fence fails the send and blocks the pm_id until PM2 reports its exit', async () => {
    const s = await setup();
    s.send(3, 'a');
    s.inner.answer(1); // PM2 answers success: the write fails later, as an error event
    s.pm2Error();
    s.echo();
    expect(s.results).toEqual(['a: Channel closed: PM2 could not write to pm_id 3 (its IPC channel had closed)']);
    expect(s.guarded.guard()).toMatchObject({ caught: 1, blocked: [3] });
    // A second write into the closed channel would kill PM2's daemon: refused without sending
    // (and answered later, never inside the caller's send).
    s.send(3, 'b');
    expect(s.inner.pending).toEqual([]);
    expect(s.results).toHaveLength(1);
    await Promise.resolve();
    expect(s.results[1]).toMatch(/^b: Process with ID <3> offline/);
    // Other pm_ids go on.
    s.send(4, 'c');
    expect(s.inner.pending.map((p) => p.packet.pmId)).toEqual([4]);
    s.inner.answer(1);
    s.echo();
    expect(s.results[2]).toBeNull();
    // PM2 handled the exit: its table no longer holds the closed channel.
    s.h.event({ event: 'exit', process: { pm_id: 3 } });
    expect(s.events).toHaveLength(1);
    s.send(3, 'd');
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['d']);
  });

  it('other lines of PM2 and error lines while nothing is in flight do not fail a send', async () => {
    const s = await setup();
    s.pm2Error(); // someone else's
    s.send(1, 'a');
    s.inner.answer(1);
    s.pm2Error('Stopping app:web id:4\n');
    s.echo();
    expect(s.results).toEqual([null]);
    expect(s.logs).toHaveLength(2);
  });

  it('an error line read before PM2 answered still counts for the send in flight', async () => {
    const s = await setup();
    s.send(1, 'a');
    s.pm2Error(); // the bus socket was read before the RPC answer
    s.inner.answer(1);
    s.echo();
    expect(s.results[0]).toMatch(/Channel closed/);
  });

  it('a refused send (PM2 says offline) is done at once, without a fence', async () => {
    const s = await setup();
    s.send(1, 'a');
    s.send(2, 'b');
    s.inner.answer(1, new Error('Process with ID <1> offline.'));
    expect(s.posted).toEqual([]);
    expect(s.results).toEqual(['a: Process with ID <1> offline.']);
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['b']);
  });

  it('a fence lost on the way is posted again; a stale echo is ignored', async () => {
    const s = await setup();
    s.send(1, 'a');
    s.inner.answer(1);
    s.timers.advance(FENCE_RETRY_MS);
    expect(s.posted).toEqual(['r:1', 'r:2']);
    s.echo('r:1');
    expect(s.results).toEqual([]);
    s.echo('r:2');
    expect(s.results).toEqual([null]);
    expect(s.guarded.guard().fenceRetries).toBe(1);
  });

  it('a new process under a pm_id (PM2 logs "starting" in the step that forks it): the send in flight goes on, nothing more until it is online', async () => {
    const s = await setup();
    s.send(13, 'a');
    s.inner.answer(1);
    s.echo(); // 'a' went to the old process: its fence came back before the line
    s.send(13, 'b');
    s.inner.answer(1);
    s.pm2Error('App [web:13] starting in -cluster mode-\n');
    s.echo();
    expect(s.results).toEqual([null, null]); // 'b' is the one in doubt: the outbox judges it
    s.send(13, 'c');
    expect(s.inner.pending).toEqual([]);
    await Promise.resolve();
    expect(s.results[2]).toMatch(/^c: Process with ID <13> offline/);
    expect(s.guarded.guard()).toMatchObject({ swaps: 1, blocked: [13] });
    s.send(14, 'd'); // other pm_ids go on
    expect(s.inner.pending.map((p) => p.packet.pmId)).toEqual([14]);
    s.inner.answer(1);
    s.echo();
    s.h.event({ event: 'online', process: { pm_id: 13 } });
    s.send(13, 'e');
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['e']);
  });

  it('names with colons and fork mode are read too', async () => {
    const s = await setup();
    s.pm2Error('App [api:v2:7] starting in -fork mode-\n');
    expect(s.guarded.guard().blocked).toEqual([7]);
  });
});

describe('send guard: what an app can forge (docs/security.md)', () => {
  it("an app's own `log:PM2` packets (process.send({ type: 'log:PM2', data })) neither fail a send nor block another app's writer", async () => {
    const s = await setup();
    // PM2 emits a message with `type` and `data` under the type, naming the app as its process.
    const forged = (text: string) => s.h.pm2Log!({ at: 1, data: text, process: { pm_id: 5, name: 'evil', namespace: 'default' } });
    s.send(3, 'a');
    s.inner.answer(1);
    forged(CLOSED);
    forged('App [web:3] starting in -cluster mode-\n');
    s.echo();
    expect(s.results).toEqual([null]);
    expect(s.guarded.guard()).toMatchObject({ caught: 0, blocked: [], swaps: 0 });
    s.send(3, 'b');
    expect(s.inner.pending.map((p) => p.packet.data)).toEqual(['b']);
  });

  it('a fence nonce cannot be guessed from the pid and the time', async () => {
    const inner = new FakeClient();
    inner.autoAnswer = false;
    const posted: string[] = [];
    const t0 = Date.now();
    const guarded = guardSends(inner, { post: (p) => posted.push(p.data.nonce), timers: new FakeTimers() });
    const t1 = Date.now();
    const results: (Error | null)[] = [];
    await guarded.subscribe({ message: () => {}, event: () => {} });
    guarded.send(1, 'log4js:message', 'a', (err) => results.push(err));
    inner.answer(1);
    expect(posted).toHaveLength(1);
    // Every nonce an app that knows the module's pid could send around that time: none is taken.
    for (let t = t0; t <= t1; t++) {
      for (let seq = 1; seq <= 3; seq++) {
        inner.handlers!.message({ raw: { topic: FENCE_TOPIC, data: { nonce: `${process.pid}-${t.toString(36)}:${seq}` } }, process: { pm_id: 5, name: 'evil' } });
      }
    }
    expect(results).toEqual([]);
    inner.handlers!.message({ raw: { topic: FENCE_TOPIC, data: { nonce: posted[0] } }, process: { pm_id: 9, name: 'pm2-scoped-intercom' } });
    expect(results).toEqual([null]);
  });
});
