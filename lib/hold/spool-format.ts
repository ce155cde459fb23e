/**
 * How the spool writes a packet on disk and reads it back (pure; spool.ts does the files).
 *
 * A segment file is `<app key in hex>-<seq>.v<format>.jsonl`, one packet per line: a string
 * without a newline (log4js's serialised event) as `s<topic>\t<data>`, anything else as `j` +
 * `[topic, data]` in JSON. Reading a log4js line back is a slice, no JSON.
 */
import type { OutPacket } from '../shared/packet';

/** The file format of a segment; a newer module reads older ones, an unknown one is set aside. */
export const SPOOL_FORMAT = 1;
const SEGMENT = /^([0-9a-f]+)-(\d+)\.v(\d+)\.jsonl$/;

/** The file name of an app's segment number `seq`, in this version's format. */
export function segmentName(appKey: string, seq: number): string {
  return `${Buffer.from(appKey, 'utf8').toString('hex')}-${seq}.v${SPOOL_FORMAT}.jsonl`;
}

/** What a file name in the spool folder says, if it names a segment (of any format). */
export function parseSegmentName(name: string): { appKey: string; seq: number; format: number } | undefined {
  const m = SEGMENT.exec(name);
  if (!m) return undefined;
  return { appKey: Buffer.from(m[1], 'hex').toString('utf8'), seq: Number(m[2]), format: Number(m[3]) };
}

/** A packet as one line (with its newline); undefined when its data is not JSON (PM2 could not have sent it either). */
export function encodePacket(packet: OutPacket): string | undefined {
  const d = packet.data;
  if (typeof d === 'string' && !d.includes('\n') && !packet.topic.includes('\t')) return `s${packet.topic}\t${d}\n`;
  try {
    return `j${JSON.stringify([packet.topic, d])}\n`;
  } catch {
    return undefined;
  }
}

/** The packets of a segment's text, in order, and how many lines could not be read. */
export function decodePackets(text: string): { packets: OutPacket[]; bad: number } {
  const packets: OutPacket[] = [];
  let bad = 0;
  for (let start = 0; start < text.length; ) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    const kind = text.charCodeAt(start);
    if (kind === 0x73 /* s */) {
      const tab = text.indexOf('\t', start);
      if (tab !== -1 && tab < end) packets.push({ topic: text.slice(start + 1, tab), data: text.slice(tab + 1, end) });
      else bad++;
    } else if (kind === 0x6a /* j */) {
      try {
        const [topic, data] = JSON.parse(text.slice(start + 1, end)) as [unknown, unknown];
        if (typeof topic === 'string' && data !== undefined) packets.push({ topic, data });
        else bad++;
      } catch {
        bad++;
      }
    } else if (end > start) bad++;
    start = end + 1;
  }
  return { packets, bad };
}

/** How many packets a segment's bytes hold (its newlines), without decoding them. */
export function countLines(bytes: Buffer): number {
  let count = 0;
  for (let i = bytes.indexOf(10); i !== -1; i = bytes.indexOf(10, i + 1)) count++;
  return count;
}
