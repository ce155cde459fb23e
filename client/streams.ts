/**
 * What the winston and pino adapters share at shutdown: delivering what is on its way, then ending
 * the streams their writer writes to.
 */
import type { Channel, DrainOptions } from './index';

/** Anything that can be ended and watched: a Writable, a winston transport, a pino destination. */
export interface EndableLike {
  end?(...args: unknown[]): unknown;
  once?(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** End `s` and wait until it has finished (or closed, or failed), at most `timeoutMs`. */
export function endStream(s: EndableLike, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const state = s as { writableFinished?: boolean; destroyed?: boolean };
    if (state.writableFinished || state.destroyed) {
      resolve();
      return;
    }
    const timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      resolve();
    }
    s.once?.('finish', done);
    s.once?.('close', done);
    s.once?.('error', done);
    try {
      s.end?.();
    } catch {
      done();
    }
  });
}

/**
 * An adapter's shutdown: still writing (and sending) while what is on its way comes in, then
 * `stop` taking records, close the channel and `end` what the writer writes to.
 */
export async function drainThenEnd<T>(channel: Channel<T>, opts: DrainOptions, stop: () => void, end: () => Promise<unknown>): Promise<void> {
  await channel.drain(opts);
  stop();
  channel.close();
  await end();
}
