'use strict';
/**
 * Judges log files by what each sender says it sent. A line is "<tag> <pid> <seq>"; a sender's
 * report (REPORT_DIR/<tag>-<pid>.json) says { tag, pid, sent }. For each app:
 *   sent        lines its senders say they sent
 *   written     lines of its own in its file
 *   missing     sent lines not in its file (senders in `excludePids` are not counted: they died)
 *   duplicated  extra copies of a line
 *   foreign     lines of another app (or unreadable lines) in its file
 *   outOfOrder  lines written (first copy) after a later line of the same sender
 */
const fs = require('fs');
const path = require('path');

function readReports(reportDir) {
  const out = [];
  if (!fs.existsSync(reportDir)) return out;
  for (const f of fs.readdirSync(reportDir)) {
    if (!f.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(fs.readFileSync(path.join(reportDir, f), 'utf8')));
    } catch {
      /* being written */
    }
  }
  return out;
}

/**
 * @param {{ apps: { tag: string, file: string }[], reportDir: string, excludePids?: number[] }} opts
 */
function judge({ apps, reportDir, excludePids = [] }) {
  const reports = readReports(reportDir);
  const excluded = new Set(excludePids.map(Number));
  const result = {};
  for (const app of apps) {
    const seen = new Map(); // "pid seq" -> count
    let written = 0;
    let foreign = 0;
    let duplicated = 0;
    let outOfOrder = 0;
    const lastSeq = new Map(); // pid -> highest seq written so far
    const text = fs.existsSync(app.file) ? fs.readFileSync(app.file, 'utf8') : '';
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const parts = line.split(' ');
      if (parts.length !== 3 || parts[0] !== app.tag) {
        foreign++;
        continue;
      }
      written++;
      const key = `${parts[1]} ${parts[2]}`;
      const n = (seen.get(key) || 0) + 1;
      seen.set(key, n);
      if (n > 1) duplicated++;
      else {
        const seq = Number(parts[2]);
        if (seq < (lastSeq.get(parts[1]) ?? -1)) outOfOrder++;
        else lastSeq.set(parts[1], seq);
      }
    }
    let sent = 0;
    let missing = 0;
    const missingBySender = {};
    /** Per sender, the missing lines as [first, last] runs of seq numbers, with when they were due. */
    const missingRanges = [];
    for (const r of reports) {
      if (r.tag !== app.tag) continue;
      sent += r.sent;
      if (excluded.has(Number(r.pid))) continue;
      let m = 0;
      let run;
      for (let i = 0; i < r.sent; i++) {
        if (seen.has(`${r.pid} ${i}`)) {
          run = undefined;
          continue;
        }
        m++;
        if (run) {
          run.last = i;
          if (run.dueAt !== undefined) run.lastDueAt = Math.round(r.startedAt + (i * 1000) / r.rate);
        } else {
          const dueAt = r.rate > 0 && r.startedAt ? Math.round(r.startedAt + (i * 1000) / r.rate) : undefined;
          run = { pid: r.pid, instance: r.instance, first: i, last: i, dueAt, lastDueAt: dueAt };
          missingRanges.push(run);
        }
      }
      if (m > 0) missingBySender[`${r.pid}(instance ${r.instance})`] = m;
      missing += m;
    }
    result[app.tag] = { sent, written, missing, duplicated, foreign, outOfOrder, senders: reports.filter((r) => r.tag === app.tag).length, missingBySender, missingRanges };
  }
  return result;
}

/** A table for people: one row per app. */
function formatJudgement(result) {
  const head = ['app', 'senders', 'sent', 'written', 'missing', 'duplicated', 'foreign'];
  const rows = Object.entries(result).map(([tag, r]) => [tag, r.senders, r.sent, r.written, r.missing, r.duplicated, r.foreign].map(String));
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padStart(i === 0 ? 0 : w[i]).padEnd(i === 0 ? w[i] : 0)).join('  ')).join('\n');
}

module.exports = { judge, formatJudgement, readReports };
