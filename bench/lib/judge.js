'use strict';
/**
 * Judges one run from the lines it added to the log file and what each sender reports.
 * A line is "r<id> <pid> <seq> <sendMs>[ <writeMs>]".
 */
const fs = require('fs');
const path = require('path');

function readReports(dir, id) {
  const out = [];
  for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    if (!f.startsWith(`${id}-`) || !f.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
    } catch {
      /* being written */
    }
  }
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function summarise(values) {
  if (values.length === 0) return null;
  const s = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, mean: sum / s.length, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s[s.length - 1] };
}

/**
 * @param {{ id: number, chunks: [string, number][], reports: object[], hop: (report) => boolean }} o
 *   hop: whether a sender's lines cross a process boundary to be written (their latency counts)
 */
function judgeRun({ id, chunks, reports, hop }) {
  const tag = `r${id}`;
  const byPid = new Map(reports.map((r) => [String(r.pid), r]));
  const seen = new Set();
  let written = 0;
  let hopWritten = 0;
  let duplicated = 0;
  let foreign = 0;
  let maxWrite = 0;
  const writeLat = [];
  const seenLat = [];
  for (const [text, at] of chunks) {
    let start = 0;
    for (let end = text.indexOf('\n'); end >= 0; start = end + 1, end = text.indexOf('\n', start)) {
      const parts = text.slice(start, end).split(' ');
      if (parts[0] !== tag || parts.length < 4 || !byPid.has(parts[1])) {
        foreign++;
        continue;
      }
      const key = `${parts[1]} ${parts[2]}`;
      if (seen.has(key)) {
        duplicated++;
        continue;
      }
      seen.add(key);
      written++;
      const sentAt = Number(parts[3]);
      const writtenAt = parts.length > 4 ? Number(parts[4]) : NaN;
      if (writtenAt > maxWrite) maxWrite = writtenAt;
      if (hop(byPid.get(parts[1]))) {
        hopWritten++;
        if (!Number.isNaN(writtenAt)) writeLat.push(writtenAt - sentAt);
        seenLat.push(at - sentAt);
      }
    }
  }
  let sent = 0;
  let hopSent = 0;
  let first = Infinity;
  let lastSent = 0;
  for (const r of reports) {
    sent += r.sent;
    if (hop(r)) hopSent += r.sent;
    if (r.first < first) first = r.first;
    if (r.last > lastSent) lastSent = r.last;
  }
  return {
    sent,
    hopSent,
    written,
    hopWritten,
    lost: sent - written,
    duplicated,
    foreign,
    first,
    lastSent,
    maxWriteStamp: maxWrite || null,
    latencyWrite: summarise(writeLat),
    latencySeen: summarise(seenLat),
  };
}

module.exports = { readReports, judgeRun, summarise, percentile };
