/**
 * Pure: PM2's bus frames read without PM2's generic client (issue 29).
 *
 * PM2's daemon publishes each bus event as one amp frame on its pub socket (pm2-axon `pub-emitter`,
 * the same in PM2 5.4, 6.0 and 7.0; rpc-frames.ts has the RPC side): one byte `version << 4 | argc`,
 * then per argument a 32-bit big-endian length and its bytes; an argument is `s:` + a string,
 * `j:` + JSON, or raw bytes. A bus event is `[s:<event>, j:<packet>]`.
 *
 * Why not PM2's client: its parser (amp's stream) walks every frame header byte by byte, copies
 * each frame into a new Buffer (Buffer.concat), slices and JSON-parses every argument of every
 * event, wanted or not, and dispatches through a regular expression per listener. Here a frame is
 * cut out of the chunk it arrived in, and only the events the relay listens to are parsed: about
 * half the CPU per bus packet (figures: docs/performance.md, the storm section), and less garbage
 * in a process whose memory bound is tight. A storm is read as fast as the module gets CPU, so PM2's
 * daemon keeps less of it queued for the module.
 */

/** Bytes before an argument's own bytes: its 32-bit length. */
const LEN = 4;

/** One argument's value, as amp-message unpacks it. */
function unpack(buf: Buffer, start: number, end: number): unknown {
  if (end - start >= 2 && buf[start + 1] === 0x3a /* : */) {
    if (buf[start] === 0x6a /* j */) return JSON.parse(buf.toString('utf8', start + 2, end));
    if (buf[start] === 0x73 /* s */) return buf.toString('utf8', start + 2, end);
  }
  return buf.subarray(start, end);
}

/** The event name of a frame's first argument (`s:<event>`), undefined when it is not one. */
function eventOf(buf: Buffer, start: number, end: number): string | undefined {
  if (end - start < 2 || buf[start] !== 0x73 /* s */ || buf[start + 1] !== 0x3a) return undefined;
  return buf.toString('latin1', start + 2, end);
}

/**
 * Reads the bus's byte stream, chunk by chunk, and hands each event the relay listens to to its
 * handler, in order, with its packet parsed as PM2's client would. Other events are skipped unparsed.
 * A frame whose packet cannot be parsed is skipped and counted (`unreadable`): PM2 writes none.
 */
export class BusFrames {
  readonly #handlers: ReadonlyMap<string, (packet: unknown) => void>;
  /** The start of a frame that has not arrived whole yet. */
  #rest: Buffer | undefined;
  /** Frames skipped because their packet could not be parsed. */
  unreadable = 0;

  /** `handlers`: event name -> what gets its packet (the second argument of the frame). */
  constructor(handlers: ReadonlyMap<string, (packet: unknown) => void>) {
    this.#handlers = handlers;
  }

  /** Bytes read from the bus socket. */
  push(chunk: Buffer): void {
    const buf = this.#rest === undefined ? chunk : Buffer.concat([this.#rest, chunk]);
    this.#rest = undefined;
    let off = 0;
    for (;;) {
      const end = frameEnd(buf, off);
      if (end === undefined) break;
      this.#frame(buf, off, end);
      off = end;
    }
    // Copied, so that the chunk it came in is not kept alive by a few bytes of it.
    if (off < buf.length) this.#rest = Buffer.from(buf.subarray(off));
  }

  #frame(buf: Buffer, start: number, end: number): void {
    const argc = buf[start] & 0x0f;
    if (argc < 1) return;
    let p = start + 1;
    const firstLen = buf.readUInt32BE(p);
    const event = eventOf(buf, p + LEN, p + LEN + firstLen);
    const handler = event === undefined ? undefined : this.#handlers.get(event);
    if (handler === undefined) return;
    p += LEN + firstLen;
    let packet: unknown;
    if (argc >= 2) {
      const len = buf.readUInt32BE(p);
      try {
        packet = unpack(buf, p + LEN, p + LEN + len);
      } catch {
        this.unreadable++;
        return;
      }
    }
    handler(packet);
  }
}

/** Where the frame starting at `off` ends, or undefined when it has not arrived whole. */
export function frameEnd(buf: Buffer, off: number): number | undefined {
  if (off >= buf.length) return undefined;
  const argc = buf[off] & 0x0f;
  let p = off + 1;
  for (let i = 0; i < argc; i++) {
    if (p + LEN > buf.length) return undefined;
    p += LEN + buf.readUInt32BE(p);
    if (p > buf.length) return undefined;
  }
  return p;
}
