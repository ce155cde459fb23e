/**
 * `pm2-scoped-intercom/log4js`: a log4js appender that gives each PM2 cluster app one writer,
 * on the client's batched path. Your existing appenders stay; one entry wraps them:
 *
 *   log4js.configure({
 *     appenders: {
 *       file: { type: 'file', filename: 'logs/api.log' },
 *       intercom: { type: 'pm2-scoped-intercom/log4js', appenders: ['file'] },
 *     },
 *     categories: { default: { appenders: ['intercom'], level: 'info' } },
 *     disableClustering: true, // instead of pm2: true: every process runs its appenders (this one)
 *   });
 *
 * On the app's writer (and outside PM2 cluster mode) events go to the wrapped appenders (file,
 * dateFile, anything: log4js creates them there, through `findAppender`); on the other instances
 * each event is sent, in batches, to the writer, which makes a LoggingEvent of it again and hands
 * it to the same appenders. Senders never create the wrapped appenders (so never open the files).
 *
 * On the wire an event whose data and context are plain values (strings, finite numbers,
 * booleans, null: most log calls) is a small object of its fields; any other event is
 * `loggingEvent.serialise()`, read back with `LoggingEvent.deserialise`, as log4js's own cluster
 * mode does (it keeps Errors, cycles, undefined, NaN). flatted, which those use, costs more than ten
 * times the plain form (figures: docs/architecture-notes.md).
 *
 * Does not load log4js itself: log4js loads this file and passes what it needs to `configure`.
 */
import { jsonSafe, openChannel, type Channel, type ChannelOptions, type Role } from './index';

/** What log4js hands an appender: its LoggingEvent (only what is used here). */
export interface LoggingEventLike {
  categoryName: string;
  level: unknown;
  data: unknown[];
  context?: Record<string, unknown>;
  serialise(): string;
  constructor: unknown;
}

/** An event as it travels: its plain fields, or log4js's own serialisation (`s`). */
export type WireEvent = PlainEvent | { s: string };

export interface PlainEvent {
  /** startTime, epoch ms. */
  t: number;
  /** categoryName. */
  c: string;
  /** level.levelStr. */
  l: string;
  d: unknown[];
  /** context, when not empty. */
  x?: Record<string, unknown>;
  p: number;
  /** The call-site fields (enableCallStack), when set. */
  loc?: Record<string, unknown>;
}

const LOCATION_KEYS = ['fileName', 'lineNumber', 'columnNumber', 'callStack', 'className', 'functionName', 'functionAlias', 'callerName'];

interface LevelsLike {
  getLevel(level: string): unknown;
}

interface LoggingEventClass {
  deserialise(serialised: string): LoggingEventLike;
  new (categoryName: string, level: unknown, data: unknown[], context?: unknown, location?: unknown, error?: unknown): LoggingEventLike;
}

export type AppenderFn = ((event: LoggingEventLike) => void) & { shutdown?: (done: (err?: Error) => void) => void };

/** The appender's entry in `log4js.configure({ appenders })`. */
export interface IntercomAppenderConfig extends Omit<ChannelOptions, 'process' | 'onWarning'> {
  type?: unknown;
  /** Names of the appenders (in the same config) that write, on the writer only. Required. */
  appenders: string[];
  /**
   * Channel name; two intercom appenders of one app need different names.
   * @default 'log4js:' + the wrapped appenders' names joined with ','
   */
  channel?: string;
  /** The writer waits this long for quiet at `log4js.shutdown()`. @default 300 */
  quietMs?: number;
  /** ...at most this long. @default 1200 */
  timeoutMs?: number;
}

/** Open appenders per channel name, so a second `log4js.configure()` takes over the channel. */
const open = new Map<string, Channel<WireEvent>>();

let eventClass: LoggingEventClass | undefined;
let levelsModule: LevelsLike | undefined;

/** A module of the running log4js (found in the require cache), else required by name. */
function log4jsModule<T>(file: string, test: (m: T | undefined) => boolean): T {
  const re = new RegExp(`[\\\\/]log4js[\\\\/]lib[\\\\/]${file}\\.js$`);
  for (const id of Object.keys(require.cache)) {
    if (re.test(id)) {
      const m = require.cache[id]?.exports as T | undefined;
      if (test(m)) return m as T;
    }
  }
  return require(`log4js/lib/${file}`) as T;
}

/**
 * log4js's LoggingEvent class: the one the running log4js uses (found in the require cache, as
 * the log4js that is loading this appender has loaded it), else `log4js/lib/LoggingEvent`.
 */
function loggingEventClass(): LoggingEventClass {
  return (eventClass ??= log4jsModule<LoggingEventClass>('LoggingEvent', (m) => typeof m?.deserialise === 'function'));
}

function isPlain(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

/** The event as it travels (see the file's comment). */
export function toWireEvent(event: LoggingEventLike): WireEvent {
  for (const v of event.data) if (!isPlain(v)) return { s: serialiseEvent(event) };
  const ctx = event.context;
  let x: Record<string, unknown> | undefined;
  if (ctx) {
    for (const k in ctx) {
      if (!isPlain(ctx[k])) return { s: serialiseEvent(event) };
      x = ctx;
    }
  }
  const e = event as unknown as Record<string, unknown> & { startTime?: unknown; level?: { levelStr?: unknown }; pid?: unknown };
  const level = e.level?.levelStr;
  if (typeof level !== 'string' || !(e.startTime instanceof Date)) return { s: serialiseEvent(event) };
  const out: PlainEvent = { t: e.startTime.getTime(), c: event.categoryName, l: level, d: event.data, p: typeof e.pid === 'number' ? e.pid : 0 };
  if (x) out.x = x;
  for (const k of LOCATION_KEYS) {
    const v = e[k];
    if (v !== undefined) (out.loc ??= {})[k] = v;
  }
  return out;
}

/** A LoggingEvent of the running log4js again, from what a sender sent. */
export function fromWireEvent(w: unknown, levels?: LevelsLike): LoggingEventLike | undefined {
  const Ctor = loggingEventClass();
  if (typeof w === 'string') return Ctor.deserialise(w);
  if (w === null || typeof w !== 'object') return undefined;
  if (typeof (w as { s?: unknown }).s === 'string') return Ctor.deserialise((w as { s: string }).s);
  const p = w as PlainEvent;
  if (!Array.isArray(p.d) || typeof p.c !== 'string') return undefined;
  const lv = (levels ?? (levelsModule ??= log4jsModule<LevelsLike>('levels', (m) => typeof m?.getLevel === 'function'))).getLevel(p.l);
  const event = new Ctor(p.c, lv, p.d, p.x ?? {});
  const target = event as unknown as Record<string, unknown>;
  target.startTime = new Date(p.t);
  target.pid = p.p;
  if (p.loc) for (const k of LOCATION_KEYS) if (p.loc[k] !== undefined) target[k] = p.loc[k];
  return event;
}

/** The event as a string the writer can deserialise; values serialise() cannot carry are made safe. */
export function serialiseEvent(event: LoggingEventLike): string {
  try {
    return event.serialise();
  } catch {
    // flatted handles cycles and Errors; a BigInt (or a throwing toJSON) is what is left.
    const Ctor = event.constructor as LoggingEventClass;
    const copy = new Ctor(event.categoryName, event.level, event.data.map((d) => safeValue(d)), jsonSafe(event.context ?? {}));
    Object.assign(copy, { startTime: (event as unknown as { startTime?: unknown }).startTime, pid: (event as unknown as { pid?: unknown }).pid });
    return copy.serialise();
  }
}

function safeValue(d: unknown): unknown {
  if (d instanceof Error) return d;
  try {
    return jsonSafe(d);
  } catch {
    return String(d);
  }
}

type FindAppender = (name: string) => AppenderFn | false | undefined;

/** log4js's custom appender entry point: called on every process (with `disableClustering: true`). */
export function configure(config: IntercomAppenderConfig, _layouts?: unknown, findAppender?: FindAppender, levels?: unknown): AppenderFn {
  checkConfig(config, findAppender);
  const names = config.appenders;
  const channelName = config.channel ?? `log4js:${names.join(',')}`;

  // A second log4js.configure(): the previous appender of this channel stops receiving now (its
  // shutdown still drains); records on their way are taken by this one.
  open.get(channelName)?.close();

  let finishDrain: () => void = () => {};
  const drained = new Promise<void>((resolve) => (finishDrain = resolve));
  const wrapped = new WrappedAppenders(names, findAppender, drained);

  const { appenders: _names, type: _type, quietMs, timeoutMs, ...opts } = config;
  const lv = levels && typeof (levels as LevelsLike).getLevel === 'function' ? (levels as LevelsLike) : undefined;
  const channel = openChannel<WireEvent>(
    (w) => {
      const event = fromWireEvent(w, lv);
      if (event) wrapped.write(event);
    },
    { ...opts, channel: channelName },
  );
  open.set(channelName, channel);
  if (channel.isWriter) wrapped.get();

  const appender: AppenderFn = (event) => {
    if (channel.isWriter) wrapped.write(event);
    else channel.send(toWireEvent(event));
  };
  appender.shutdown = shutdownOf(channel, { quietMs, timeoutMs }, finishDrain);
  Object.defineProperty(appender, 'role', { value: channel.role as Role, enumerable: false });
  return appender;
}

function checkConfig(config: IntercomAppenderConfig, findAppender: FindAppender | undefined): asserts findAppender is FindAppender {
  if (!config || !Array.isArray(config.appenders) || config.appenders.length === 0 || !config.appenders.every((a) => typeof a === 'string')) {
    throw new TypeError(`pm2-scoped-intercom/log4js: expected \`appenders\` to be a non-empty array of appender names, got \`${JSON.stringify(config?.appenders)}\` (${typeof config?.appenders})`);
  }
  if (typeof findAppender !== 'function') throw new TypeError('pm2-scoped-intercom/log4js: configure() must be called by log4js (findAppender missing)');
}

/** The appenders this one wraps, created on first use: at once on the writer, in a sender only if a record cannot be sent. */
class WrappedAppenders {
  readonly #names: string[];
  readonly #find: FindAppender;
  readonly #drained: Promise<void>;
  #inner: AppenderFn[] | undefined;

  constructor(names: string[], find: FindAppender, drained: Promise<void>) {
    this.#names = names;
    this.#find = find;
    this.#drained = drained;
  }

  get(): AppenderFn[] {
    if (this.#inner) return this.#inner;
    this.#inner = this.#names.map((n) => {
      const a = this.#find(n);
      if (typeof a !== 'function') throw new Error(`pm2-scoped-intercom/log4js: appender "${n}" (in appenders) is not defined in the log4js config`);
      return a;
    });
    // log4js shuts every appender down at once: the wrapped ones wait until this one has
    // taken what is still on its way.
    for (const a of this.#inner) {
      const own = a.shutdown;
      if (typeof own === 'function') a.shutdown = (done) => void this.#drained.then(() => own.call(a, done));
    }
    return this.#inner;
  }

  write(event: LoggingEventLike): void {
    for (const a of this.get()) a(event);
  }
}

/** log4js's shutdown of this appender: drain the channel, close it, then let the wrapped appenders shut down. */
function shutdownOf(channel: Channel<WireEvent>, drain: { quietMs?: number; timeoutMs?: number }, finishDrain: () => void): NonNullable<AppenderFn['shutdown']> {
  return (done) => {
    channel
      .drain(drain)
      .then(() => {
        channel.close();
        if (open.get(channel.name) === channel) open.delete(channel.name);
        finishDrain();
        done();
      })
      .catch((err: Error) => {
        finishDrain();
        done(err);
      });
  };
}

export { LOG_TOPIC, READY_TOPIC, detect, isWriter, announceReady } from './index';
export type { Role, Placement, ClientOptions } from './index';
