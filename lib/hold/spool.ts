/**
 * The disk side of the hold buffer (a disk-assisted queue, as rsyslog has): when the log packets
 * held in memory pass `buffer_mb`, an app's newer packets are appended to files under the module's
 * folder instead of being dropped, and read back in order when memory has room again.
 *
 * Per app, a list of segment files, one packet per line (spool-format.ts says how). Appends are
 * buffered and written in chunks; a whole segment is read back at once and its file removed. The
 * files outlive the module: a restart (`pm2 set`, an upgrade) finds them and goes on from the
 * oldest. Bounded by `spool_mb` in bytes on disk.
 *
 * A disk that fails (unwritable folder, full disk) is reported once and the spool turns itself
 * off: the caller then drops, as it would without a spool. Never a throw to the caller.
 */
import nodeFs from 'node:fs';
import type { OutPacket } from '../shared/packet';
import { DIR_MODE, foreignDir } from '../shared/private-files';
import { countLines, decodePackets, encodePacket } from './spool-format';
import { AppSpool, segmentsIn, type Segment, type SpoolFs } from './spool-segments';

export type { SpoolFs } from './spool-segments';

/** The longest file name most file systems take (ext4, xfs, btrfs, apfs, ntfs: 255). */
const MAX_FILE_NAME = 255;
/** `-<seq>.v<format>.jsonl` at most (seq: microseconds, 17 digits for centuries yet). */
const MAX_SUFFIX = 32;


export interface SpoolOptions {
  dir: string;
  /** Bytes on disk at the most (`spool_mb`); 0 turns the spool off. */
  maxBytes: number;
  /** Bytes per segment file. @default 1 MiB */
  segmentBytes?: number;
  /** Appends gathered before a write. @default 64 KiB */
  chunkBytes?: number;
  /** Said once when the spool fails or finds something it cannot read. */
  warn: (line: string) => void;
  fs?: SpoolFs;
}


export class Spool {
  readonly dir: string;
  readonly #fs: SpoolFs;
  readonly #maxBytes: number;
  readonly #segmentBytes: number;
  readonly #chunkBytes: number;
  readonly #warn: (line: string) => void;
  readonly #apps = new Map<string, AppSpool>();
  #bytes = 0;
  #count = 0;
  #failed: string | undefined;

  constructor(opts: SpoolOptions) {
    this.dir = opts.dir;
    this.#fs = opts.fs ?? nodeFs;
    this.#maxBytes = opts.maxBytes;
    this.#segmentBytes = opts.segmentBytes ?? 1 << 20;
    this.#chunkBytes = opts.chunkBytes ?? 64 << 10;
    this.#warn = opts.warn;
    if (this.#maxBytes <= 0) this.#failed = 'off (spool_mb=0)';
  }

  /** Why the spool does not work (undefined while it does). */
  get failure(): string | undefined {
    return this.#failed;
  }

  /** Bytes on disk (and about to be), across apps. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Packets spooled, across apps. */
  get count(): number {
    return this.#count;
  }

  /** Packets spooled for one app. */
  countOf(appKey: string): number {
    return this.#apps.get(appKey)?.count ?? 0;
  }

  has(appKey: string): boolean {
    return this.#apps.has(appKey);
  }

  appKeys(): string[] {
    return [...this.#apps.keys()];
  }

  /**
   * Whether this app's packets can be spooled: its file names (the app key in hex) fit in a file
   * name (255 bytes on common file systems). A longer one keeps that app in memory, not every app
   * off the disk.
   */
  takes(appKey: string): boolean {
    return Buffer.byteLength(appKey) * 2 + MAX_SUFFIX <= MAX_FILE_NAME;
  }

  /**
   * Find the segments an earlier run left, oldest first per app. Unknown formats are renamed
   * aside (never deleted) and reported once.
   */
  load(): void {
    if (this.#failed) return;
    let names: string[];
    try {
      this.#fs.mkdirSync(this.dir, { recursive: true, mode: DIR_MODE });
      names = this.#fs.readdirSync(this.dir);
    } catch (err) {
      this.#fail(`cannot use the spool folder ${this.dir}: ${(err as Error).message}`);
      return;
    }
    // Another user's folder (or a link they made): its files are not read back as this user's lines.
    const foreign = foreignDir(this.dir);
    if (foreign) {
      this.#fail(`not using the spool folder: ${foreign}`);
      return;
    }
    for (const f of segmentsIn(names, this.dir, this.#fs, this.#warn)) this.#adopt(f.appKey, f.file, f.seq);
  }

  /** Append a packet behind everything spooled for its app. false: full or failed (not kept). */
  append(appKey: string, packet: OutPacket): boolean {
    if (this.#failed || !this.takes(appKey)) return false;
    const line = encodePacket(packet);
    if (line === undefined) return false; // not JSON: cannot be spooled (PM2 could not have sent it either)
    const size = Buffer.byteLength(line);
    if (this.#bytes + size > this.#maxBytes && !this.#withinShare(appKey, size)) return false;
    const a = this.#app(appKey);
    a.queue(line, size);
    this.#bytes += size;
    this.#count++;
    if (a.pendingBytes >= this.#chunkBytes) this.#write(a);
    return true;
  }

  /**
   * The oldest spooled packets of an app (one segment, in order), removed from the spool; []
   * when there are none. What is still buffered for writing is taken without touching the disk.
   */
  take(appKey: string): OutPacket[] {
    const a = this.#apps.get(appKey);
    if (!a) return [];
    const seg = a.segments[0];
    const out = seg !== undefined ? this.#takeSegment(a, seg) : this.#takePending(a);
    if (a.empty) this.#forget(a);
    return out;
  }

  /** Drop everything spooled for an app (app deleted, operator). Returns how many packets. */
  drop(appKey: string): number {
    const a = this.#apps.get(appKey);
    if (!a) return 0;
    const n = a.count;
    for (const s of a.segments) {
      try {
        this.#fs.unlinkSync(s.file);
      } catch {
        /* gone */
      }
    }
    this.#bytes -= a.bytes;
    this.#count -= n;
    this.#forget(a);
    return n;
  }

  /** Write every buffered append to disk (at shutdown, and now and then). */
  flush(): void {
    for (const a of this.#apps.values()) this.#write(a);
  }

  /** Flush and close the files (the segments stay for the next start). */
  close(): void {
    for (const a of this.#apps.values()) {
      this.#write(a);
      a.closeTail();
    }
  }

  #app(key: string): AppSpool {
    let a = this.#apps.get(key);
    if (!a) {
      a = new AppSpool(key, this.#fs, this.dir);
      this.#apps.set(key, a);
    }
    return a;
  }

  /** A segment an earlier run left: counted now, read back in its turn. */
  #adopt(appKey: string, file: string, seq: number): void {
    let text: Buffer;
    try {
      text = this.#fs.readFileSync(file);
    } catch {
      return;
    }
    const count = countLines(text);
    this.#app(appKey).addSegment({ file, seq, bytes: text.length, count });
    this.#bytes += text.length;
    this.#count += count;
  }

  /** The oldest segment's packets; its file is removed. */
  #takeSegment(a: AppSpool, seg: Segment): OutPacket[] {
    if (a.writingOldest) {
      // The oldest segment is the one being written: write what is buffered, start a new one.
      this.#write(a);
      a.closeTail();
    }
    let text = '';
    try {
      text = this.#fs.readFileSync(seg.file, 'utf8');
    } catch (err) {
      if (seg.count > 0) this.#warn(`cannot read spool file ${seg.file}: ${(err as Error).message}; its ${seg.count} packets are lost`);
    }
    const out = this.#decode(text);
    try {
      this.#fs.unlinkSync(seg.file);
    } catch {
      /* gone already */
    }
    a.segments.shift();
    this.#bytes -= seg.bytes;
    this.#count -= seg.count;
    return out;
  }

  /** Nothing on disk: the buffered lines are the oldest. */
  #takePending(a: AppSpool): OutPacket[] {
    const out = this.#decode(a.pendingText());
    this.#bytes -= a.pendingBytes;
    this.#count -= a.pendingCount;
    a.clearPending();
    return out;
  }

  /**
   * Past `spool_mb`, an app that holds less than its share of it (the bound split among the apps
   * that spool) is still taken: another app's storm must not fill the disk for everyone (memory is
   * shared the same way, hold/shares.ts). The disk then stays within twice the bound.
   */
  #withinShare(appKey: string, size: number): boolean {
    if (this.#bytes + size > 2 * this.#maxBytes) return false;
    const a = this.#apps.get(appKey);
    const apps = this.#apps.size + (a === undefined ? 1 : 0);
    return (a?.bytes ?? 0) + size <= this.#maxBytes / apps;
  }

  #forget(a: AppSpool): void {
    a.closeTail();
    this.#apps.delete(a.key);
  }

  /** Write an app's buffered lines to disk; a disk that fails turns the spool off. */
  #write(a: AppSpool): void {
    if (this.#failed) return;
    try {
      a.writePending(this.#segmentBytes);
    } catch (err) {
      // The lines stay buffered in memory (still counted): nothing already taken is lost.
      this.#fail(`cannot write to the spool folder ${this.dir}: ${(err as Error).message}`);
    }
  }

  #fail(why: string): void {
    if (this.#failed) return;
    this.#failed = why;
    this.#warn(`${why}. Held log packets past buffer_mb are dropped (counted) instead of spooled to disk.`);
  }

  #decode(text: string): OutPacket[] {
    const { packets, bad } = decodePackets(text);
    if (bad > 0) this.#warn(`skipped ${bad} unreadable lines in the spool`);
    return packets;
  }
}
