'use strict';
/** pidusage-style reads of /proc: CPU time and resident memory of given pids (Linux only). */
const fs = require('fs');
const { execFileSync } = require('child_process');

let tck = 100;
try {
  tck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* the usual value */
}

/** { user, system } CPU time of a process in microseconds, or undefined if it is gone. */
function cpuSplit(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces: split after its closing parenthesis.
  // rest[0] is field 3 (state): utime is field 14, stime field 15.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { user: (Number(rest[11]) * 1e6) / tck, system: (Number(rest[12]) * 1e6) / tck };
}

/**
 * Kernel round trips of a process: read-type and write-type syscalls (/proc/<pid>/io syscr, syscw:
 * every read/pread/recv and write/writev/send) and context switches, voluntary (it waited: an
 * empty socket, epoll) and not (preempted), from /proc/<pid>/status. Undefined if it is gone.
 */
function syscallCounts(pid) {
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const num = (text, key) => Number((new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(text) || [])[1]);
    return { reads: num(io, 'syscr'), writes: num(io, 'syscw'), voluntary: num(st, 'voluntary_ctxt_switches'), preempted: num(st, 'nonvoluntary_ctxt_switches') };
  } catch {
    return undefined;
  }
}

/** utime + stime of a process in microseconds, or undefined if it is gone. */
function cpuMicros(pid) {
  const c = cpuSplit(pid);
  return c === undefined ? undefined : c.user + c.system;
}

/** Machine-wide CPU time (all cores) in microseconds: { busy, total, steal } from /proc/stat. */
function machineCpu() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line;
  const toUs = (t) => (t * 1e6) / tck;
  return { busy: toUs(user + nice + system + irq + softirq + steal), total: toUs(line.slice(0, 8).reduce((a, b) => a + b, 0)), steal: toUs(steal || 0), idle: toUs(idle + iowait) };
}

/** Sum of cpuMicros over pids (pids that are gone count 0). */
function cpuMicrosAll(pids) {
  const out = {};
  for (const pid of pids) out[pid] = cpuMicros(pid) ?? 0;
  return out;
}

function cpuDelta(before, after) {
  let sum = 0;
  for (const pid of Object.keys(after)) sum += Math.max(0, after[pid] - (before[pid] ?? 0));
  return sum;
}

/** VmRSS in bytes, or undefined if the process is gone. */
function rssBytes(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Samples VmRSS of named pids every `every` ms; `peaks()` gives the highest seen per name since
 * the last `reset()`.
 */
class RssSampler {
  constructor(every = 50) {
    this.every = every;
    this.pids = {};
    this.peak = {};
    this.samples = 0;
    this.timer = setInterval(() => this.sample(), every);
    this.timer.unref();
  }

  watch(name, pid) {
    this.pids[name] = pid;
    this.sample();
  }

  unwatch(name) {
    delete this.pids[name];
  }

  sample() {
    this.samples++;
    for (const [name, pid] of Object.entries(this.pids)) {
      const rss = rssBytes(pid);
      if (rss !== undefined && !(rss <= (this.peak[name] ?? 0))) this.peak[name] = rss;
    }
  }

  reset() {
    this.peak = {};
    this.sample();
  }

  peaks() {
    this.sample();
    return { ...this.peak };
  }

  stop() {
    clearInterval(this.timer);
  }
}

module.exports = { syscallCounts, machineCpu, cpuSplit, cpuMicros, cpuMicrosAll, cpuDelta, rssBytes, alive, RssSampler, CLK_TCK: tck };
