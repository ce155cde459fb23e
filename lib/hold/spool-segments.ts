/**
 * The spool's files: one app's segment files and the lines not yet written (AppSpool), and the
 * segments found in the spool folder at start (segmentsIn). The bounds and what a failure means
 * are the Spool's (spool.ts).
 */
import nodeFs from 'node:fs';
import path from 'node:path';
import { DIR_MODE, FILE_MODE } from '../shared/private-files';
import { parseSegmentName, segmentName, SPOOL_FORMAT } from './spool-format';

export type SpoolFs = Pick<typeof nodeFs, 'mkdirSync' | 'readdirSync' | 'readFileSync' | 'openSync' | 'writeSync' | 'ftruncateSync' | 'closeSync' | 'unlinkSync' | 'renameSync'>;

export interface Segment {
  readonly file: string;
  readonly seq: number;
  bytes: number;
  count: number;
}

/**
 * One app's part of the spool: its segment files, oldest first, and the lines not yet written.
 * It writes its own files; the Spool keeps the bounds and decides what a failure means.
 */
export class AppSpool {
  readonly key: string;
  readonly segments: Segment[] = [];
  readonly #fs: SpoolFs;
  readonly #dir: string;
  /** The open fd of the segment being appended to (the last of `segments`). */
  #fd: number | undefined;
  #nextSeq = 1;
  #pending: string[] = [];
  #pendingBytes = 0;

  constructor(key: string, fs: SpoolFs, dir: string) {
    this.key = key;
    this.#fs = fs;
    this.#dir = dir;
  }

  /** Packets on disk and about to be. */
  get count(): number {
    let n = this.#pending.length;
    for (const s of this.segments) n += s.count;
    return n;
  }

  /** Bytes on disk and about to be. */
  get bytes(): number {
    let n = this.#pendingBytes;
    for (const s of this.segments) n += s.bytes;
    return n;
  }

  get empty(): boolean {
    return this.segments.length === 0 && this.#pending.length === 0;
  }

  get pendingCount(): number {
    return this.#pending.length;
  }

  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  pendingText(): string {
    return this.#pending.join('');
  }

  /** Whether the oldest segment is the one being appended to. */
  get writingOldest(): boolean {
    return this.segments.length === 1 && this.#fd !== undefined;
  }

  /** A segment found on disk or just started: the newest so far. */
  addSegment(seg: Segment): void {
    this.segments.push(seg);
    this.#nextSeq = Math.max(this.#nextSeq, seg.seq + 1);
  }

  queue(line: string, size: number): void {
    this.#pending.push(line);
    this.#pendingBytes += size;
  }

  /** The pending lines were written to the tail segment, or taken. */
  clearPending(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /**
   * Write the pending lines into the tail segment (a new one when there is none open or it holds
   * `segmentBytes`). Throws when the disk fails; the lines then stay pending.
   */
  writePending(segmentBytes: number): void {
    if (this.#pending.length === 0) return;
    let tail = this.segments[this.segments.length - 1];
    if (this.#fd === undefined || tail === undefined || tail.bytes >= segmentBytes) {
      this.closeTail();
      this.#fs.mkdirSync(this.#dir, { recursive: true, mode: DIR_MODE });
      const seq = Math.max(this.#nextSeq, Date.now() * 1000);
      const file = path.join(this.#dir, segmentName(this.key, seq));
      this.#fd = this.#fs.openSync(file, 'a', FILE_MODE);
      tail = { file, seq, bytes: 0, count: 0 };
      this.addSegment(tail);
    }
    const written = this.#fs.writeSync(this.#fd, this.#pending.join(''));
    if (written !== this.#pendingBytes) {
      // A short write (a full disk): take the partial lines back off, so nothing is read twice.
      this.#fs.ftruncateSync(this.#fd, tail.bytes);
      throw new Error(`wrote ${written} of ${this.#pendingBytes} bytes (disk full?)`);
    }
    tail.bytes += this.#pendingBytes;
    tail.count += this.#pending.length;
    this.clearPending();
  }

  /** Close the tail segment's file: the next write starts a new segment. */
  closeTail(): void {
    if (this.#fd === undefined) return;
    try {
      this.#fs.closeSync(this.#fd);
    } catch {
      /* closed */
    }
    this.#fd = undefined;
  }
}

/**
 * The segments among the spool folder's file names, oldest first. One of an unknown format is
 * renamed aside (never deleted) and reported.
 */
export function segmentsIn(names: string[], dir: string, fs: SpoolFs, warn: (line: string) => void): { appKey: string; seq: number; file: string }[] {
  const found: { appKey: string; seq: number; file: string }[] = [];
  for (const name of names) {
    const seg = parseSegmentName(name);
    if (!seg) continue;
    const file = path.join(dir, name);
    if (seg.format === SPOOL_FORMAT) {
      found.push({ appKey: seg.appKey, seq: seg.seq, file });
      continue;
    }
    const aside = `${file}.unknown-${Date.now()}`;
    try {
      fs.renameSync(file, aside);
    } catch {
      /* leave it */
    }
    warn(`spool file ${name} has format v${seg.format}, which this version (v${SPOOL_FORMAT}) cannot read: set aside as ${path.basename(aside)}`);
  }
  return found.sort((a, b) => a.seq - b.seq);
}
