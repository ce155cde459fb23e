/**
 * The fields of `/proc/<pid>/stat` ("pid (comm) S ppid ..."), read from its bytes without making
 * strings, since liveness.ts reads it before every send. Fields are numbered as in proc(5); they
 * follow the last ')' (the process name may contain one, and spaces).
 */

const PF_EXITING = 0x4;
const SIGKILL_BIT = 1 << 8; // signal 9

/** Offset of field 3 (the state letter). */
function stateAt(stat: Buffer): number {
  return stat.lastIndexOf(0x29) + 2;
}

/** The state letter ('R', 'S', 'D', 'T', 'Z', ...). */
export function stateOf(stat: Buffer): string {
  return String.fromCharCode(stat[stateAt(stat)]);
}

/** Field `k` (4 or later) as a number; NaN when the line ends before it or it is not decimal. */
export function numericField(stat: Buffer, k: number): number {
  let i = stateAt(stat);
  for (let field = 3; field < k; i++) {
    if (i >= stat.length || stat[i] === 0x0a) return NaN;
    if (stat[i] === 0x20) field++;
  }
  let value = NaN;
  for (; i < stat.length && stat[i] !== 0x20 && stat[i] !== 0x0a; i++) {
    const digit = stat[i] - 0x30;
    if (digit < 0 || digit > 9) return NaN;
    value = (Number.isNaN(value) ? 0 : value) * 10 + digit;
  }
  return value;
}

/** Field 22: when the process started, in clock ticks since boot (NaN when unreadable). */
export function startTime(stat: Buffer): number {
  return numericField(stat, 22);
}

/**
 * Exited (zombie, dead), exiting (PF_EXITING in field 9) or sent a fatal signal (SIGKILL pending,
 * field 31): a process that is going away although its IPC channel may still be open.
 */
export function dyingOrDead(stat: Buffer): boolean {
  const state = stat[stateAt(stat)];
  if (state === 0x5a /* Z */ || state === 0x58 /* X */ || state === 0x78 /* x */) return true;
  // The flags word and the signal mask fit in 32 bits: read them as unsigned.
  return (numericField(stat, 9) & PF_EXITING) !== 0 || (numericField(stat, 31) & SIGKILL_BIT) !== 0;
}
