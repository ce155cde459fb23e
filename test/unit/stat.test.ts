import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dyingOrDead, numericField, startTime, stateOf } from '../../lib/proc/stat';

/** A real stat line of this process, with the state, flags (field 9) and pending signals (field 31) set. */
function stat(state: string, flags: number, pending: number, name = 'node'): Buffer {
  const real = fs.readFileSync('/proc/self/stat', 'latin1');
  const fields = real.slice(real.lastIndexOf(')') + 2).trim().split(' ');
  fields[0] = state;
  fields[6] = String(flags);
  fields[28] = String(pending);
  return Buffer.from(`4242 (${name}) ${fields.join(' ')}\n`, 'latin1');
}

describe('dyingOrDead', () => {
  const dying = (b: Buffer) => dyingOrDead(b);

  it('a running or sleeping process is alive; a zombie is dead', () => {
    expect(dying(stat('S', 0x400000, 0))).toBe(false);
    expect(dying(stat('R', 0x400040, 0))).toBe(false);
    expect(dying(stat('Z', 0x40840c, 0))).toBe(true);
  });

  it('a process sent SIGKILL (kill -9, or a fatal SIGINT without handler) is dying before it is a zombie', () => {
    // Seen on a starved process right after kill -9: state R, flags unchanged, SIGKILL pending.
    expect(dying(stat('R', 0x400000, 256))).toBe(true);
    // Other pending signals (SIGINT to an app with a handler: 2) are not fatal.
    expect(dying(stat('S', 0x400000, 2))).toBe(false);
  });

  it('a process in its exit path (PF_EXITING) is dying: its fds close before it is a zombie', () => {
    expect(dying(stat('R', 0x40040c, 0))).toBe(true);
    expect(dying(stat('D', 0x4, 0))).toBe(true);
  });

  it('reads the fields after the last ")" of the name', () => {
    expect(dying(stat('S', 0x400000, 0, 'a) Z 4 4'))).toBe(false);
    expect(dying(stat('R', 0x400000, 256, 'we) S 0'))).toBe(true);
  });

  it('a line cut short (flags and signals missing) is alive by its state', () => {
    expect(dying(Buffer.from('10 (node) S 1 10 10 0 -1'))).toBe(false);
    expect(dying(Buffer.from('11 (node) Z 1 11 11 0 -1'))).toBe(true);
  });
});

describe('stat fields', () => {
  it('stateOf: the letter after the last ")" of the name', () => {
    expect(stateOf(Buffer.from('12 (we) ird) R 1 12'))).toBe('R');
    expect(stateOf(stat('T', 0, 0, 'x) S (y'))).toBe('T');
  });

  it('numericField: fields numbered as in proc(5); NaN when missing or not decimal', () => {
    const line = Buffer.from('7 (a b) S 1 70 71 0 -1 4194560 9\n');
    expect(numericField(line, 4)).toBe(1);
    expect(numericField(line, 6)).toBe(71);
    expect(numericField(line, 9)).toBe(4194560);
    expect(numericField(line, 10)).toBe(9); // the last field, before the newline
    expect(numericField(line, 8)).toBeNaN(); // -1: not a decimal of digits
    expect(numericField(line, 11)).toBeNaN(); // past the end
  });

  it('startTime: field 22, also of this very process', () => {
    expect(startTime(Buffer.from(`100 (node x) y) S 1 ${'0 '.repeat(17)}5000 0 0`))).toBe(5000);
    expect(startTime(Buffer.from('100 (node) S 1 2 3'))).toBeNaN();
    const own = fs.readFileSync('/proc/self/stat');
    const expected = Number(own.toString('latin1').slice(own.lastIndexOf(')') + 2).split(' ')[19]);
    expect(startTime(own)).toBe(expected);
    expect(expected).toBeGreaterThan(0);
  });
});
