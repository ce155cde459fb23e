/**
 * Pure: PM2's RPC wire format for the one call the relay makes per log line,
 * `sendDataToProcessId`, encoded and its answers read without PM2's generic client.
 *
 * PM2's client and daemon talk axon req/rep over amp frames (pm2-axon, axon-rpc, amp, amp-message:
 * the same in PM2 5.4, 6.0 and 7.0): a frame is one byte `version << 4 | argc`, then per argument a
 * 32-bit big-endian length and its bytes; an argument is `j:` + JSON or `s:` + a string. A call is
 * `[j:{"type":"call","method":M,"args":[...]}, s:<id>]`; its answer `[j:{"args":[...]}, s:<id>]`,
 * or `[j:{"error":...,"stack":...}, s:<id>]` when the method failed.
 *
 * Why not PM2's client: per line it JSON-encodes the call into a string, copies it into a Buffer
 * through the deprecated `new Buffer()` (a deprecation check each time), copies it again into the
 * frame, and decodes every answer whole. sendDataToProcessId answers with the whole packet echoed
 * back (`{ success: true, data: packet }`), so that decode parses every log line a second time for
 * nothing (figures: docs/architecture-notes.md).
 */

/** amp's version nibble (amp 0.3: `version << 4 | argc`). */
const AMP_VERSION = 1;

const CALL_HEAD = 'j:{"type":"call","method":"sendDataToProcessId","args":[';
const CALL_TAIL = ']}';

/**
 * The frame of `sendDataToProcessId({ id, topic, data })` with call id `id`, as PM2's client writes
 * it; with `probeId`, followed in the same buffer by the frame of `unmonitor("_old_<pmId>")` (see
 * `swapAnswer`).
 */
export function encodeSendCall(pmId: number, topic: string, data: unknown, id: string, probeId?: string): Buffer {
  const body = CALL_HEAD + JSON.stringify({ id: pmId, topic, data }) + CALL_TAIL;
  const probe = probeId === undefined ? undefined : PROBE_HEAD + pmId + PROBE_TAIL;
  const size = frameSize(body, id) + (probe === undefined ? 0 : frameSize(probe, probeId as string));
  const buf = Buffer.allocUnsafe(size);
  const off = writeFrame(buf, 0, body, id);
  if (probe !== undefined) writeFrame(buf, off, probe, probeId as string);
  return buf;
}

/** The probe's frame alone (`unmonitor("_old_<pmId>")`), written after a send it follows. */
export function encodeProbeCall(pmId: number, id: string): Buffer {
  const probe = PROBE_HEAD + pmId + PROBE_TAIL;
  const buf = Buffer.allocUnsafe(frameSize(probe, id));
  writeFrame(buf, 0, probe, id);
  return buf;
}

/**
 * The probe that tells which process a send reached. `pm2 reload` (soft or hard, PM2 5.4 to 7.0,
 * lib/God/Reload.js) moves the old worker to the key `_old_<pm_id>` and forks the new one under
 * `pm_id` in one synchronous step, and drops the key once the old worker is gone. `unmonitor` of
 * that key answers `Unknown pm_id` (a plain Error: nothing logged) unless the key exists, and
 * otherwise only sets `_km_monitored = false` on the parked old worker. The daemon reads both frames
 * of one small write together and runs both calls in the same turn (amp's parser emits every frame
 * of a chunk synchronously, both methods are synchronous), so no reload step can come between
 * them: the probe's answer says whether the send went to a worker forked by a reload in progress.
 */
const PROBE_HEAD = 'j:{"type":"call","method":"unmonitor","args":["_old_';
const PROBE_TAIL = '"]}';

function frameSize(body: string, id: string): number {
  return 1 + 4 + Buffer.byteLength(body) + 4 + Buffer.byteLength(id) + 2;
}

/** Writes a two-argument frame `[body, s:<id>]` at `off`; returns where it ends. */
function writeFrame(buf: Buffer, off: number, body: string, id: string): number {
  buf[off] = (AMP_VERSION << 4) | 2;
  const bodyLen = buf.write(body, off + 5);
  buf.writeUInt32BE(bodyLen, off + 1);
  let p = off + 5 + bodyLen;
  const idLen = Buffer.byteLength(id) + 2;
  buf.writeUInt32BE(idLen, p);
  p += 4;
  buf.write('s:', p, 'latin1');
  buf.write(id, p + 2);
  return p + idLen;
}

/**
 * What the probe's answer says: true when `_old_<pm_id>` existed (a reload was in progress: the send
 * went to the new worker), false when PM2 answered `Unknown pm_id`, undefined for anything else
 * (a daemon without `unmonitor`: the caller judges as without a probe).
 */
export function swapAnswer(error: string | undefined): boolean | undefined {
  if (error === undefined) return true;
  return error === 'Unknown pm_id' ? false : undefined;
}

const UNKNOWN_HEAD = Buffer.from('j:{"error":"Unknown pm_id"');

/** `swapAnswer` of a probe's answer frame argument; its usual answer told from its first bytes. */
export function swapAnswerOf(arg: Buffer): boolean | undefined {
  if (arg.length >= UNKNOWN_HEAD.length && arg.compare(UNKNOWN_HEAD, 0, UNKNOWN_HEAD.length, 0, UNKNOWN_HEAD.length) === 0) return false;
  return swapAnswer(answerError(arg));
}

/**
 * Splits a byte stream into amp frames and hands each frame's arguments (views into the stream's
 * bytes: valid only during the call) to `onFrame`. A frame may span chunks.
 */
export class FrameReader {
  readonly #onFrame: (args: Buffer[]) => void;
  /** An incomplete frame carried over from the last chunk. */
  #rest: Buffer | undefined;

  constructor(onFrame: (args: Buffer[]) => void) {
    this.#onFrame = onFrame;
  }

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.#rest !== undefined) {
      buf = Buffer.concat([this.#rest, chunk]);
      this.#rest = undefined;
    }
    let off = 0;
    while (off < buf.length) {
      const end = frameEnd(buf, off);
      if (end < 0) break;
      const argc = buf[off] & 0xf;
      const args = new Array<Buffer>(argc);
      let p = off + 1;
      for (let i = 0; i < argc; i++) {
        const len = buf.readUInt32BE(p);
        args[i] = buf.subarray(p + 4, p + 4 + len);
        p += 4 + len;
      }
      off = end;
      this.#onFrame(args);
    }
    // Copied: `chunk` belongs to the socket's reader and may be reused.
    if (off < buf.length) this.#rest = Buffer.from(buf.subarray(off));
  }
}

/** Where the frame starting at `off` ends, or -1 if `buf` does not hold all of it yet. */
function frameEnd(buf: Buffer, off: number): number {
  const argc = buf[off] & 0xf;
  let p = off + 1;
  for (let i = 0; i < argc; i++) {
    if (p + 4 > buf.length) return -1;
    p += 4 + buf.readUInt32BE(p);
    if (p > buf.length) return -1;
  }
  return p;
}

/** An `s:` argument's string (a call id). */
export function stringArg(arg: Buffer): string {
  return arg.toString('utf8', 2);
}

const ARGS_HEAD = Buffer.from('j:{"args":');

/**
 * What an answer's first argument says: undefined when the call succeeded, else the daemon's error
 * message. A success (`{"args":[...]}`, what PM2's daemon writes) is told from its first bytes
 * without parsing the echoed packet; anything else is parsed.
 */
export function answerError(arg: Buffer): string | undefined {
  if (arg.length >= ARGS_HEAD.length && arg.compare(ARGS_HEAD, 0, ARGS_HEAD.length, 0, ARGS_HEAD.length) === 0) return undefined;
  let answer: unknown;
  try {
    answer = JSON.parse(arg.toString('utf8', 2));
  } catch {
    return `unreadable answer from PM2: ${arg.toString('utf8', 0, Math.min(arg.length, 80))}`;
  }
  if (answer !== null && typeof answer === 'object') {
    const a = answer as { error?: unknown; args?: unknown };
    if ('error' in a) return String(a.error);
    if (Array.isArray(a.args)) return undefined;
  }
  return `unexpected answer from PM2: ${arg.toString('utf8', 0, Math.min(arg.length, 80))}`;
}
