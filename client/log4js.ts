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
 * each event is serialised as log4js does it for its own cluster mode (`loggingEvent.serialise()`)
 * and sent, in batches, to the writer, which deserialises it (`LoggingEvent.deserialise`) and hands
 * it to the same appenders. Senders never create the wrapped appenders (so never open the files).
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
const open = new Map<string, Channel<string>>();

let eventClass: LoggingEventClass | undefined;

/**
 * log4js's LoggingEvent class: the one the running log4js uses (found in the require cache, as
 * the log4js that is loading this appender has loaded it), else `log4js/lib/LoggingEvent`.
 */
function loggingEventClass(): LoggingEventClass {
  if (eventClass) return eventClass;
  for (const id of Object.keys(require.cache)) {
    if (/[\\/]log4js[\\/]lib[\\/]LoggingEvent\.js$/.test(id)) {
      const c = require.cache[id]?.exports as LoggingEventClass | undefined;
      if (c && typeof c.deserialise === 'function') return (eventClass = c);
    }
  }
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return (eventClass = require('log4js/lib/LoggingEvent') as LoggingEventClass);
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

/** log4js's custom appender entry point: called on every process (with `disableClustering: true`). */
export function configure(
  config: IntercomAppenderConfig,
  _layouts?: unknown,
  findAppender?: (name: string) => AppenderFn | false | undefined,
  _levels?: unknown,
): AppenderFn {
  if (!config || !Array.isArray(config.appenders) || config.appenders.length === 0 || !config.appenders.every((a) => typeof a === 'string')) {
    throw new TypeError(`pm2-scoped-intercom/log4js: expected \`appenders\` to be a non-empty array of appender names, got \`${JSON.stringify(config?.appenders)}\` (${typeof config?.appenders})`);
  }
  if (typeof findAppender !== 'function') throw new TypeError('pm2-scoped-intercom/log4js: configure() must be called by log4js (findAppender missing)');
  const names = config.appenders;
  const channelName = config.channel ?? `log4js:${names.join(',')}`;

  // A second log4js.configure(): the previous appender of this channel stops receiving now (its
  // shutdown still drains); records on their way are taken by this one.
  open.get(channelName)?.close();

  let inner: AppenderFn[] | undefined;
  /** Created on first use: at once on the writer, in a sender only if a record cannot be sent. */
  const appenders = (): AppenderFn[] => {
    if (!inner) {
      inner = names.map((n) => {
        const a = findAppender(n);
        if (typeof a !== 'function') throw new Error(`pm2-scoped-intercom/log4js: appender "${n}" (in appenders) is not defined in the log4js config`);
        return a;
      });
      // log4js shuts every appender down at once: the wrapped ones wait until this one has
      // taken what is still on its way.
      for (const a of inner) {
        const own = a.shutdown;
        if (typeof own === 'function') a.shutdown = (done) => void drained.then(() => own.call(a, done));
      }
    }
    return inner;
  };
  const writeEvent = (event: LoggingEventLike): void => {
    for (const a of appenders()) a(event);
  };

  let finishDrain: () => void = () => {};
  const drained = new Promise<void>((resolve) => (finishDrain = resolve));

  const { appenders: _names, type: _type, quietMs, timeoutMs, ...opts } = config;
  const channel = openChannel<string>(
    (serialised) => {
      if (typeof serialised !== 'string') return;
      writeEvent(loggingEventClass().deserialise(serialised));
    },
    { ...opts, channel: channelName },
  );
  open.set(channelName, channel);
  if (channel.isWriter) appenders();

  const appender: AppenderFn = (event) => {
    if (channel.isWriter) writeEvent(event);
    else channel.send(serialiseEvent(event));
  };
  appender.shutdown = (done) => {
    channel
      .drain({ quietMs, timeoutMs })
      .then(() => {
        channel.close();
        if (open.get(channelName) === channel) open.delete(channelName);
        finishDrain();
        done();
      })
      .catch((err: Error) => {
        finishDrain();
        done(err);
      });
  };
  Object.defineProperty(appender, 'role', { value: channel.role as Role, enumerable: false });
  return appender;
}

export { LOG_TOPIC, READY_TOPIC, detect, isWriter, announceReady } from './index';
export type { Role, Placement, ClientOptions } from './index';
