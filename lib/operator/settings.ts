/**
 * Settings from `pm2 set pm2-scoped-intercom:KEY VALUE`, parsed once into a frozen object.
 *
 * PM2 stores every value as a string and pmx autocasts it ("7" -> 7, "true" -> true, "" -> 0),
 * so each parser accepts both forms. A bad value never stops the module: it is reported with the
 * key, the value, its type and what is accepted, and the previous good value (or the default) is
 * used instead.
 */

export type BroadcastScope = 'app' | 'namespace' | 'all' | 'off';
export type ProcChecks = 'auto' | 'off';

export interface Settings {
  /** Topics routed only to the writer of the sender's app. @default ['log4js:message'] */
  readonly log_topics: readonly string[];
  /** Who receives packets of other topics. @default 'app' */
  readonly broadcast: BroadcastScope;
  /** Instance number (the app's `instance_var`) of the process that writes. @default 0 */
  readonly writer_instance: number;
  /** Megabytes of held log packets kept in memory (whole module) while writers are away or the relay is behind; past it they go to the spool. @default 8 */
  readonly buffer_mb: number;
  /** Megabytes of held log packets kept on disk past `buffer_mb` (0: no spool, the oldest in memory are dropped instead); past it the newest are dropped. @default 256 */
  readonly spool_mb: number;
  /** Milliseconds after a writer comes online before packets are delivered to it (apps without `wait_ready`). @default 1500 */
  readonly ready_delay: number;
  /** Sends to PM2 in flight at once per target process (each writer or relay target). @default 1 */
  readonly max_inflight: number;
  /** Seconds between summary lines (drops, malformed packets) in `pm2 logs`. @default 5 */
  readonly report_interval: number;
  /**
   * `auto`: read /proc where it can be read (dying writers, reload forks); `off`: never, as on
   * macOS or Windows: every send then waits for a fence on PM2's bus (see send-guard.ts). @default 'auto'
   */
  readonly proc_checks: ProcChecks;
  /**
   * `on`: a send carries a probe that tells, if a `pm2 reload` swapped the writer meanwhile, which
   * worker PM2 handed it to (nothing written twice), whenever a reload could come before PM2 reads
   * it: while another client is connected to PM2, for apps with `max_memory_restart`, or where /proc
   * cannot tell (proc/reload-window.ts); `always`: every send; `off`: none, timing judges (about 1
   * reload in 4 wrote a line twice under load). Each probe costs PM2's daemon an error. @default 'on'
   */
  readonly reload_probe: ProbeMode;
}

export type ProbeMode = 'on' | 'always' | 'off';

export const DEFAULTS: Settings = Object.freeze({
  log_topics: Object.freeze(['log4js:message']),
  broadcast: 'app',
  writer_instance: 0,
  buffer_mb: 8,
  spool_mb: 256,
  ready_delay: 1500,
  max_inflight: 1,
  report_interval: 5,
  proc_checks: 'auto',
  reload_probe: 'on',
});

export const SETTING_KEYS = Object.keys(DEFAULTS) as (keyof Settings)[];

export interface SettingProblem {
  key: string;
  value: unknown;
  /** One line for `pm2 logs`: key, value, type, what is accepted, what is used instead. */
  message: string;
}

export interface ParsedSettings {
  settings: Settings;
  problems: SettingProblem[];
}

type Parser<T> = { accepts: string; parse(value: unknown): T | undefined };

function integer(min: number, max: number): Parser<number> {
  return {
    accepts: max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`,
    parse(value) {
      const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      return Number.isInteger(n) && n >= min && n <= max ? n : undefined;
    },
  };
}

const TOPIC = /^[^\s,]+$/;

const PARSERS: { [K in keyof Settings]: Parser<Settings[K]> } = {
  log_topics: {
    accepts: 'a comma-separated list of topics without spaces, e.g. "log4js:message,app:log"',
    parse(value) {
      if (Array.isArray(value)) value = value.join(',');
      if (typeof value !== 'string') return undefined;
      const topics = value.split(',').map((t) => t.trim()).filter((t) => t !== '');
      if (topics.length === 0 || !topics.every((t) => TOPIC.test(t))) return undefined;
      return Object.freeze([...new Set(topics)]);
    },
  },
  broadcast: {
    accepts: 'one of app, namespace, all, off',
    parse(value) {
      const v = typeof value === 'string' ? value.trim().toLowerCase() : value === false ? 'off' : undefined;
      return v === 'app' || v === 'namespace' || v === 'all' || v === 'off' ? v : undefined;
    },
  },
  writer_instance: integer(0, 1_000_000),
  buffer_mb: integer(1, 65_536),
  spool_mb: integer(0, 1_048_576),
  ready_delay: integer(0, 600_000),
  max_inflight: integer(1, 4096),
  report_interval: integer(1, 3600),
  proc_checks: {
    accepts: 'one of auto, off',
    parse(value) {
      const v = typeof value === 'string' ? value.trim().toLowerCase() : value === false ? 'off' : undefined;
      return v === 'auto' || v === 'off' ? v : undefined;
    },
  },
  reload_probe: {
    accepts: 'one of on, always, off',
    parse(value) {
      const v = typeof value === 'string' ? value.trim().toLowerCase() : value === true ? 'on' : value === false ? 'off' : undefined;
      return v === 'on' || v === 'always' || v === 'off' ? v : undefined;
    },
  },
};

export function describeValue(value: unknown): string {
  const shown = typeof value === 'string' ? JSON.stringify(value) : Array.isArray(value) ? JSON.stringify(value) : String(value);
  return `${shown} (${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value})`;
}

function formatSetting(value: unknown): string {
  return Array.isArray(value) ? value.join(',') : String(value);
}

/**
 * Parse the module's raw settings. `previous` (the last good settings, persisted across the
 * restart that `pm2 set` causes) is the fallback for a bad value; the defaults come after it.
 */
export function parseSettings(raw: Record<string, unknown>, previous: Partial<Settings> = {}): ParsedSettings {
  const problems: SettingProblem[] = [];
  const out: Record<string, unknown> = {};
  for (const key of SETTING_KEYS) {
    const parser = PARSERS[key] as Parser<unknown>;
    const fallbackPrev = previous[key] !== undefined ? parser.parse(previous[key]) : undefined;
    const fallback = fallbackPrev ?? DEFAULTS[key];
    const value = raw[key];
    if (value === undefined || value === null) {
      out[key] = DEFAULTS[key];
      continue;
    }
    const parsed = parser.parse(value);
    if (parsed === undefined) {
      const source = fallbackPrev !== undefined ? 'previous value' : 'default';
      problems.push({
        key,
        value,
        message:
          `invalid setting ${key}=${describeValue(value)}: expected ${parser.accepts}; ` +
          `using the ${source} ${formatSetting(fallback)}. ` +
          `Fix: pm2 set pm2-scoped-intercom:${key} <value>`,
      });
      out[key] = fallback;
    } else {
      out[key] = parsed;
    }
  }
  return { settings: Object.freeze(out) as unknown as Settings, problems };
}

/** Keys earlier versions had, and what replaced them (said once at start, never an error). */
export const RETIRED_KEYS: Readonly<Record<string, string>> = Object.freeze({
  buffer_max: 'buffer_max (a count of packets) is replaced by buffer_mb (memory) and spool_mb (disk) and is ignored; remove it with: pm2 unset pm2-scoped-intercom:buffer_max',
});

/** Keys the user set for this module that it does not know (a typo usually). */
export function unknownKeys(moduleConf: Record<string, unknown>): string[] {
  const known = new Set<string>(SETTING_KEYS);
  return Object.keys(moduleConf).filter((k) => !known.has(k) && !(k in RETIRED_KEYS));
}

export function formatSettings(s: Settings): string {
  return SETTING_KEYS.map((k) => `${k}=${formatSetting(s[k])}`).join(' ');
}
