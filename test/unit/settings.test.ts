import { describe, expect, it } from 'vitest';
import { DEFAULTS, formatSettings, parseSettings, unknownKeys } from '../../lib/operator/settings';

describe('parseSettings', () => {
  it('gives the defaults when nothing is set', () => {
    const { settings, problems } = parseSettings({});
    expect(problems).toEqual([]);
    expect(settings).toEqual(DEFAULTS);
    expect(Object.isFrozen(settings)).toBe(true);
  });

  it('accepts strings as PM2 stores them and values as pmx autocasts them', () => {
    const fromStrings = parseSettings({ writer_instance: '2', buffer_mb: '500', broadcast: 'Namespace', log_topics: 'a:b, c:d' });
    const fromCast = parseSettings({ writer_instance: 2, buffer_mb: 500, broadcast: 'namespace', log_topics: 'a:b,c:d' });
    for (const { settings, problems } of [fromStrings, fromCast]) {
      expect(problems).toEqual([]);
      expect(settings.writer_instance).toBe(2);
      expect(settings.buffer_mb).toBe(500);
      expect(settings.broadcast).toBe('namespace');
      expect(settings.log_topics).toEqual(['a:b', 'c:d']);
    }
  });

  it('reports a bad value with key, value, type and what is accepted, and uses the default', () => {
    const { settings, problems } = parseSettings({ buffer_mb: 'lots', broadcast: 'everyone', writer_instance: -1, log_topics: 0 });
    expect(settings.buffer_mb).toBe(DEFAULTS.buffer_mb);
    expect(settings.broadcast).toBe('app');
    expect(settings.writer_instance).toBe(0);
    expect(settings.log_topics).toEqual(['log4js:message']);
    const byKey = Object.fromEntries(problems.map((p) => [p.key, p.message]));
    expect(byKey.buffer_mb).toContain('buffer_mb="lots" (string)');
    expect(byKey.buffer_mb).toContain('expected an integer from 1 to');
    expect(byKey.buffer_mb).toContain('using the default 8');
    expect(byKey.broadcast).toContain('one of app, namespace, all, off');
    expect(byKey.writer_instance).toContain('-1 (number)');
    // pmx autocasts "" to 0: still reported, never taken as a topic.
    expect(byKey.log_topics).toContain('0 (number)');
  });

  it('falls back to the previous good value before the default', () => {
    const { settings, problems } = parseSettings({ buffer_mb: '1.5' }, { buffer_mb: 777 });
    expect(settings.buffer_mb).toBe(777);
    expect(problems[0].message).toContain('using the previous value 777');
  });

  it('rejects fractional, empty and out-of-range numbers, and topics with spaces', () => {
    for (const v of ['1.5', '', ' ', 'NaN', 1e12, true]) {
      expect(parseSettings({ buffer_mb: v }).problems).toHaveLength(1);
    }
    expect(parseSettings({ max_inflight: 0 }).problems).toHaveLength(1);
    expect(parseSettings({ log_topics: 'a b' }).problems).toHaveLength(1);
    expect(parseSettings({ log_topics: ',,' }).problems).toHaveLength(1);
  });

  it('reload_probe: on, always or off (pmx casts true/false), anything else reported and the default kept', () => {
    expect(parseSettings({ reload_probe: 'OFF' }).settings.reload_probe).toBe('off');
    expect(parseSettings({ reload_probe: ' Always' }).settings.reload_probe).toBe('always');
    expect(parseSettings({ reload_probe: false }).settings.reload_probe).toBe('off');
    expect(parseSettings({ reload_probe: true }).settings.reload_probe).toBe('on');
    const { settings, problems } = parseSettings({ reload_probe: 'sometimes' });
    expect(settings.reload_probe).toBe('on');
    expect(problems[0].message).toContain('reload_probe="sometimes" (string)');
    expect(problems[0].message).toContain('one of on, always, off');
  });

  it('lists unknown keys and formats the effective settings', () => {
    expect(unknownKeys({ buffer_mb: 1, bufer_mb: 2, buffer_max: 3 })).toEqual(['bufer_mb']);
    expect(formatSettings(DEFAULTS)).toContain('log_topics=log4js:message broadcast=app writer_instance=0');
  });
});
