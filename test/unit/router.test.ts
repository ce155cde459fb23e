import { describe, expect, it } from 'vitest';
import { DEFAULTS, type Settings } from '../../lib/operator/settings';
import { appKeyOf, Registry } from '../../lib/table/registry';
import { logTopicSet, route } from '../../lib/intake/router';
import { CLIENT_LOG_TOPIC } from '../../lib/shared/protocol';
import { cluster, env } from './fakes';

function setup(over: Partial<Settings> = {}) {
  const settings = { ...DEFAULTS, ...over } as Settings;
  const r = new Registry({ readyDelay: 0 });
  r.applySnapshot(
    [
      ...cluster('web', 3, 0, { pm_uptime: 0 }),
      ...cluster('api', 2, 3, { pm_uptime: 0 }),
      ...cluster('web', 2, 5, { namespace: 'blue', pm_uptime: 0 }),
      env({ pm_id: 9, name: 'pm2-scoped-intercom', exec_mode: 'fork_mode', pmx_module: true }),
    ],
    0,
  );
  return { settings, r, topics: logTopicSet(settings) };
}
const log = (data = 'x') => ({ topic: 'log4js:message', data });

describe('route', () => {
  it('sends a log packet to its own app (name + namespace) for the writer', () => {
    const { settings, r, topics } = setup();
    expect(route({ raw: log(), process: { pm_id: 2, name: 'web', namespace: 'default' } }, r, settings, topics)).toMatchObject({ kind: 'log', appKey: appKeyOf('web', 'default'), senderId: 2, sender: { pmId: 2 } });
    expect(route({ raw: log(), process: { pm_id: 6, name: 'web', namespace: 'blue' } }, r, settings, topics)).toMatchObject({ kind: 'log', appKey: appKeyOf('web', 'blue'), senderId: 6, sender: { pmId: 6 } });
  });

  it('routes the client topic and configured topics like log4js packets', () => {
    const { settings, r, topics } = setup({ log_topics: ['app:log'] });
    expect(route({ raw: { topic: CLIENT_LOG_TOPIC, data: 1 }, process: { pm_id: 1, name: 'web' } }, r, settings, topics).kind).toBe('log');
    expect(route({ raw: { topic: 'app:log', data: 1 }, process: { pm_id: 1, name: 'web' } }, r, settings, topics).kind).toBe('log');
    // log4js:message is now an ordinary topic.
    expect(route({ raw: log(), process: { pm_id: 1, name: 'web' } }, r, settings, topics).kind).toBe('relay');
  });

  it('never routes a log packet of the writer itself (its log4js is misconfigured)', () => {
    const { settings, r, topics } = setup();
    expect(route({ raw: log(), process: { pm_id: 0, name: 'web' } }, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'writer-sends' });
  });

  it('a sender of an earlier daemon (handed over across pm2 update, _prev_<id>) logs to its app, whatever that pm_id is now', () => {
    const { settings, r, topics } = setup();
    // pm_id 0 is web's writer in this daemon; in the earlier one it was a sender (a resurrect numbers anew).
    expect(route({ raw: log(), process: { pm_id: '_prev_0', name: 'web' } }, r, settings, topics)).toMatchObject({ kind: 'log', appKey: appKeyOf('web', 'default'), senderId: undefined });
    expect(route({ raw: log(), process: { pm_id: '_prev_4', name: 'web', namespace: 'blue' } }, r, settings, topics)).toMatchObject({ kind: 'log', appKey: appKeyOf('web', 'blue') });
    expect(route({ raw: log(), process: { pm_id: '_prev_4', name: 'gone' } }, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'unknown-sender' });
  });

  it('a parked _old_ worker of a reload still logs to its app', () => {
    const { settings, r, topics } = setup();
    expect(route({ raw: log(), process: { pm_id: '_old_1', name: 'web' } }, r, settings, topics)).toMatchObject({ kind: 'log', senderId: undefined });
  });

  it('skips packets from modules and from apps nobody knows', () => {
    const { settings, r, topics } = setup();
    expect(route({ raw: log(), process: { pm_id: 9, name: 'pm2-scoped-intercom' } }, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'from-module' });
    expect(route({ raw: log(), process: { pm_id: 42, name: 'ghost' } }, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'unknown-sender' });
  });

  it('counts malformed packets by kind', () => {
    const { settings, r, topics } = setup();
    const p = { pm_id: 1, name: 'web' };
    const cases: [unknown, string][] = [
      ['hello', 'malformed'],
      [42, 'malformed'],
      [null, 'malformed'],
      [[1, 2], 'malformed'],
      [{ foo: 1 }, 'no-topic'],
      [{ topic: '', data: 1 }, 'no-topic'],
      [{ topic: 5, data: 1 }, 'no-topic'],
      [{ topic: 'log4js:message' }, 'no-data'],
    ];
    for (const [raw, reason] of cases) expect(route({ raw, process: p }, r, settings, topics)).toMatchObject({ kind: 'drop', reason });
    expect(route({ raw: log() } as never, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'malformed' });
    expect(route(null as never, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'malformed' });
  });

  it('recognises readiness announcements', () => {
    const { settings, r, topics } = setup();
    expect(route({ raw: 'ready', process: { pm_id: 1, name: 'web' } }, r, settings, topics)).toEqual({ kind: 'ready', pmId: 1 });
  });

  it.each([
    ['app', [0, 2]],
    ['namespace', [0, 2, 3, 4]],
    ['all', [0, 2, 3, 4, 5, 6]],
  ] as const)('broadcast=%s relays other topics to %j, never to the sender or modules', (broadcast, targets) => {
    const { settings, r, topics } = setup({ broadcast });
    const got = route({ raw: { topic: 'cache:clear', data: {} }, process: { pm_id: 1, name: 'web' } }, r, settings, topics);
    expect(got.kind).toBe('relay');
    expect((got as { targets: number[] }).targets.sort()).toEqual(targets);
  });

  it('broadcast=off relays nothing', () => {
    const { settings, r, topics } = setup({ broadcast: 'off' });
    expect(route({ raw: { topic: 'x', data: 1 }, process: { pm_id: 1, name: 'web' } }, r, settings, topics)).toMatchObject({ kind: 'drop', reason: 'broadcast-off' });
  });
});
