/**
 * README's settings table is what users read: it must say what the code does. Its keys, defaults
 * and accepted values are compared with lib/operator/settings.ts (SETTING_KEYS, DEFAULTS, and the `accepts`
 * text each parser reports) and with package.json `config` (what `pm2 install` writes into PM2's
 * module config), so a changed default or range fails here until the README says it too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, SETTING_KEYS, parseSettings, type Settings } from '../../lib/operator/settings';

const ROOT = path.resolve(__dirname, '..', '..');

interface Row {
  key: string;
  default: string;
  accepted: string;
}

/** The rows of the table under `## Settings` whose header is `| key | default | accepted | effect |`. */
function readmeSettings(): Row[] {
  const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = text.split(/^## /m).find((s) => s.startsWith('Settings\n'));
  if (!section) throw new Error('README has no "## Settings" section');
  const lines = section.split('\n').filter((l) => l.startsWith('|'));
  const header = cells(lines[0] ?? '');
  expect(header).toEqual(['key', 'default', 'accepted', 'effect']);
  return lines.slice(2).map((l) => {
    const [key, def, accepted] = cells(l);
    return { key: unquote(key), default: unquote(def), accepted };
  });
}

function cells(line: string): string[] {
  return line.replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
}

function unquote(cell: string): string {
  const m = /^`([^`]*)`$/.exec(cell);
  if (!m) throw new Error(`expected one \`code\` value, got ${cell}`);
  return m[1];
}

function shown(value: Settings[keyof Settings]): string {
  return Array.isArray(value) ? value.join(',') : String(value);
}

/** What a parser accepts, as the module says it in `pm2 logs` for a bad value. */
function accepts(key: keyof Settings): string {
  const { problems } = parseSettings({ [key]: {} });
  const m = /expected (.*?); using the /.exec(problems[0]?.message ?? '');
  if (!m) throw new Error(`no problem reported for ${key}={}`);
  // log_topics adds an example after its rule; the table gives the rule.
  return m[1].replace(/, e\.g\. .*$/, '');
}

describe("README's settings table", () => {
  const rows = readmeSettings();

  it('lists every setting of lib/operator/settings.ts, in the same order, and nothing else', () => {
    expect(rows.map((r) => r.key)).toEqual(SETTING_KEYS);
  });

  it('gives the defaults of lib/operator/settings.ts and of package.json config', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { config: Record<string, unknown> };
    expect(Object.keys(pkg.config)).toEqual(SETTING_KEYS);
    for (const row of rows) {
      const key = row.key as keyof Settings;
      expect(row.default, `README default of ${key}`).toBe(shown(DEFAULTS[key]));
      expect(String(pkg.config[key]), `package.json config.${key}`).toBe(shown(DEFAULTS[key]));
      // and the code reads the README's default as that default
      expect(parseSettings({ [key]: row.default }).settings[key]).toEqual(DEFAULTS[key]);
    }
  });

  it('states what each parser accepts, word for word', () => {
    for (const row of rows) expect(row.accepted, `README accepted of ${row.key}`).toBe(accepts(row.key as keyof Settings));
  });

  it('states ranges and choices the parsers hold to at their edges', () => {
    for (const row of rows) {
      const key = row.key as keyof Settings;
      const ok = (v: unknown) => parseSettings({ [key]: v }).problems.length === 0;
      const range = /^an integer from (\d+) to (\d+)$/.exec(row.accepted);
      const choices = /^one of (.+)$/.exec(row.accepted);
      if (range) {
        const [min, max] = [Number(range[1]), Number(range[2])];
        expect([ok(min), ok(max), ok(String(max)), ok(min - 1), ok(max + 1), ok(min + 0.5)], key).toEqual([true, true, true, false, false, false]);
      } else if (choices) {
        for (const c of choices[1].split(', ')) expect(ok(c), `${key}=${c}`).toBe(true);
        expect(ok('none-of-these'), key).toBe(false);
      } else {
        expect(key).toBe('log_topics');
        expect([ok('a:b,c:d'), ok('a b'), ok('')]).toEqual([true, false, false]);
      }
    }
  });
});
