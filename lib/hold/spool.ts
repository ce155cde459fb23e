/**
 * The disk side of the hold buffer (a disk-assisted queue, as rsyslog has): when the log packets
 * held in memory pass `buffer_mb`, an app's newer packets are appended to files under the module's
 * folder instead of being dropped, and read back in order when memory has room again.
 *
 * Per app, a list of segment files `<app key in hex>-<seq>.v1.jsonl`, one packet per line: a
 * string without a newline (log4js's serialised event) as `s<topic>\t<data>`, anything else as
 * `j` + `[topic, data]` in JSON. Reading a log4js line back is a slice, no JSON. Appends are buffered and written in chunks; a whole segment is read
 * back at once and its file removed. The files outlive the module: a restart (`pm2 set`, an
 * upgrade) finds them and goes on from the oldest. Bounded by `spool_mb` in bytes on disk.
 *
 * A disk that fails (unwritable folder, full disk) is reported once and the spool turns itself
 * off: the caller then drops, as it would without a spool. Never a throw to the caller.
 */
import nodeFs from 'node:fs';
import path from 'node:path';
import type { OutPacket } from '../shared/packet';
import { DIR_MODE, FILE_MODE, foreignDir } from '../shared/private-files';

/** The file format of a segment; a newer module reads older ones, an unknown one is set aside. */
export const SPOOL_FORMAT = 1;
const SEGMENT = /^([0-9a-f]+)-(\d+)\.v(\d+)\.jsonl$/;
/** The longest file name most file systems take (ext4, xfs, btrfs, apfs, ntfs: 255). */
const MAX_FILE_NAME = 255;
/** `-<seq>.v<format>.jsonl` at most (seq: microseconds, 17 digits for centuries yet). */
const MAX_SUFFIX = 32;

export type SpoolFs = Pick<typeof nodeFs, 'mkdirSync' | 'readdirSync' | 'readFileSync' | 'openSync' | 'writeSync' | 'ftruncateSync' | 'closeSync' | 'unlinkSync' | 'renameSync'>;

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

interface Segment {
  readonly file: string;
  readonly seq: number;
  bytes: number;
  count: number;
}

interface AppSpool {
  readonly key: string;
  readonly segments: Segment[];
  /** The segment being appended to (last of `segments`), its open fd and unwritten lines. */
  fd: number | undefined;
  pending: string[];
  pendingBytes: number;
  nextSeq: number;
  /** Bytes on disk and about to be (its part of `spool_mb`). */
  bytes: number;
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
    const a = this.#apps.get(appKey);
    if (!a) return 0;
    let n = a.pending.length;
    for (const s of a.segments) n += s.count;
    return n;
  }

  has(appKey: string): boolean {
    return this.#apps.has(appKey);
  }

  /**
   * Whether this app's packets can be spooled: its file names (the app key in hex) fit in a file
   * name (255 bytes on common file systems). A longer one keeps that app in memory, not every app
   * off the disk.
   */
  takes(appKey: string): boolean {
    return Buffer.byteLength(appKey) * 2 + MAX_SUFFIX <= MAX_FILE_NAME;
  }

  appKeys(): string[] {
    return [...this.#apps.keys()];
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
    const found: { key: string; seq: number; file: string }[] = [];
    for (const name of names) {
      const m = SEGMENT.exec(name);
      if (!m) continue;
      const file = path.join(this.dir, name);
      if (Number(m[3]) !== SPOOL_FORMAT) {
        const aside = `${file}.unknown-${Date.now()}`;
        try {
          this.#fs.renameSync(file, aside);
        } catch {
          /* leave it */
        }
        this.#warn(`spool file ${name} has format v${m[3]}, which this version (v${SPOOL_FORMAT}) cannot read: set aside as ${path.basename(aside)}`);
        continue;
      }
      found.push({ key: Buffer.from(m[1], 'hex').toString('utf8'), seq: Number(m[2]), file });
    }
    found.sort((a, b) => a.seq - b.seq);
    for (const f of found) {
      let text: Buffer;
      try {
        text = this.#fs.readFileSync(f.file);
      } catch {
        continue;
      }
      let count = 0;
      for (let i = text.indexOf(10); i !== -1; i = text.indexOf(10, i + 1)) count++;
      const a = this.#app(f.key);
      a.segments.push({ file: f.file, seq: f.seq, bytes: text.length, count });
      a.nextSeq = Math.max(a.nextSeq, f.seq + 1);
      this.#bytes += text.length;
      a.bytes += text.length;
      this.#count += count;
    }
  }

  /** Append a packet behind everything spooled for its app. false: full or failed (not kept). */
  append(appKey: string, packet: OutPacket): boolean {
    if (this.#failed || !this.takes(appKey)) return false;
    let line: string;
    const d = packet.data;
    if (typeof d === 'string' && !d.includes('\n') && !packet.topic.includes('\t')) line = `s${packet.topic}\t${d}\n`;
    else {
      try {
        line = `j${JSON.stringify([packet.topic, d])}\n`;
      } catch {
        return false; // not JSON: cannot be spooled (PM2 could not have sent it either)
      }
    }
    const size = Buffer.byteLength(line);
    if (this.#bytes + size > this.#maxBytes && !this.#withinShare(appKey, size)) return false;
    const a = this.#app(appKey);
    a.pending.push(line);
    a.pendingBytes += size;
    a.bytes += size;
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
    let out: OutPacket[];
    const seg = a.segments[0];
    if (seg !== undefined) {
      if (a.segments.length === 1 && a.fd !== undefined) {
        // The oldest segment is the one being written: write what is buffered, start a new one.
        this.#write(a);
        this.#closeTail(a);
      }
      let text = '';
      try {
        text = this.#fs.readFileSync(seg.file, 'utf8');
      } catch (err) {
        if (seg.count > 0) this.#warn(`cannot read spool file ${seg.file}: ${(err as Error).message}; its ${seg.count} packets are lost`);
      }
      out = this.#parse(text);
      try {
        this.#fs.unlinkSync(seg.file);
      } catch {
        /* gone already */
      }
      a.segments.shift();
      this.#bytes -= seg.bytes;
      a.bytes -= seg.bytes;
      this.#count -= seg.count;
    } else {
      // Nothing on disk: the buffered lines are the oldest.
      out = this.#parse(a.pending.join(''));
      this.#bytes -= a.pendingBytes;
      a.bytes -= a.pendingBytes;
      this.#count -= a.pending.length;
      a.pending = [];
      a.pendingBytes = 0;
    }
    if (a.segments.length === 0 && a.pending.length === 0) this.#forget(a);
    return out;
  }

  /** Drop everything spooled for an app (app deleted, operator). Returns how many packets. */
  drop(appKey: string): number {
    const a = this.#apps.get(appKey);
    if (!a) return 0;
    const n = this.countOf(appKey);
    for (const s of a.segments) {
      try {
        this.#fs.unlinkSync(s.file);
      } catch {
        /* gone */
      }
      this.#bytes -= s.bytes;
    }
    this.#bytes -= a.pendingBytes;
    this.#count -= n;
    a.segments.length = 0;
    a.pending = [];
    a.pendingBytes = 0;
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
      this.#closeTail(a);
    }
  }

  #app(key: string): AppSpool {
    let a = this.#apps.get(key);
    if (!a) {
      a = { key, segments: [], fd: undefined, pending: [], pendingBytes: 0, nextSeq: 1, bytes: 0 };
      this.#apps.set(key, a);
    }
    return a;
  }

  /**
   * Past `spool_mb`, an app that holds less than its share of it (the bound split among the apps
   * that spool) is still taken: another app's storm must not fill the disk for everyone (the
   * outbox shares memory the same way). The disk then passes the bound by those shares, never
   * beyond twice the bound.
   */
  #withinShare(appKey: string, size: number): boolean {
    if (this.#bytes + size > 2 * this.#maxBytes) return false;
    const a = this.#apps.get(appKey);
    const apps = this.#apps.size + (a === undefined ? 1 : 0);
    return (a?.bytes ?? 0) + size <= this.#maxBytes / apps;
  }

  #forget(a: AppSpool): void {
    this.#closeTail(a);
    this.#apps.delete(a.key);
  }

  #closeTail(a: AppSpool): void {
    if (a.fd === undefined) return;
    try {
      this.#fs.closeSync(a.fd);
    } catch {
      /* closed */
    }
    a.fd = undefined;
  }

  /** Write an app's buffered lines into its tail segment (a new one when it is full). */
  #write(a: AppSpool): void {
    if (a.pending.length === 0 || this.#failed) return;
    try {
      let tail = a.segments[a.segments.length - 1];
      if (a.fd === undefined || tail === undefined || tail.bytes >= this.#segmentBytes) {
        this.#closeTail(a);
        this.#fs.mkdirSync(this.dir, { recursive: true, mode: DIR_MODE });
        const seq = Math.max(a.nextSeq, Date.now() * 1000);
        a.nextSeq = seq + 1;
        const file = path.join(this.dir, `${Buffer.from(a.key, 'utf8').toString('hex')}-${seq}.v${SPOOL_FORMAT}.jsonl`);
        a.fd = this.#fs.openSync(file, 'a', FILE_MODE);
        tail = { file, seq, bytes: 0, count: 0 };
        a.segments.push(tail);
      }
      const text = a.pending.join('');
      const written = this.#fs.writeSync(a.fd, text);
      if (written !== a.pendingBytes) {
        // A short write (a full disk): take the partial lines back off, so nothing is read twice.
        this.#fs.ftruncateSync(a.fd, tail.bytes);
        throw new Error(`wrote ${written} of ${a.pendingBytes} bytes (disk full?)`);
      }
      tail.bytes += a.pendingBytes;
      tail.count += a.pending.length;
      a.pending = [];
      a.pendingBytes = 0;
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

  #parse(text: string): OutPacket[] {
    const out: OutPacket[] = [];
    let bad = 0;
    for (let start = 0; start < text.length; ) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const kind = text.charCodeAt(start);
      if (kind === 0x73 /* s */) {
        const tab = text.indexOf('\t', start);
        if (tab !== -1 && tab < end) out.push({ topic: text.slice(start + 1, tab), data: text.slice(tab + 1, end) });
        else bad++;
      } else if (kind === 0x6a /* j */) {
        try {
          const [topic, data] = JSON.parse(text.slice(start + 1, end)) as [unknown, unknown];
          if (typeof topic === 'string' && data !== undefined) out.push({ topic, data });
          else bad++;
        } catch {
          bad++;
        }
      } else if (end > start) bad++;
      start = end + 1;
    }
    if (bad > 0) this.#warn(`skipped ${bad} unreadable lines in the spool`);
    return out;
  }
}
