import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Descriptors } from '../../lib/proc/descriptors';

describe('Descriptors: files kept open, read again from their start', () => {
  let dir = '';
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  const tmp = () => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-fds-')));

  it('reads what the file holds now through the descriptor opened first', () => {
    const file = path.join(tmp(), 'f');
    fs.writeFileSync(file, 'one');
    const fds = new Descriptors<number>(4);
    expect(fds.read(1)).toBeUndefined(); // not open
    fds.open(1, file);
    expect(fds.read(1)!.toString()).toBe('one');
    fs.writeFileSync(file, 'a longer text than the buffer'); // same inode: the kept fd sees it
    expect(fds.read(1)!.toString()).toBe('a longer text than the buffer');
    fds.close(1);
    expect(fds.isOpen(1)).toBe(false);
    expect(fds.read(1)).toBeUndefined();
  });

  it('open throws and keeps nothing; openOnce remembers the failure until close', () => {
    const d = tmp();
    const fds = new Descriptors<number>();
    expect(() => fds.open(1, path.join(d, 'missing'))).toThrow(/ENOENT/);
    expect(fds.isOpen(1)).toBe(false);
    expect(fds.openOnce(2, path.join(d, 'late'))).toBe(false);
    fs.writeFileSync(path.join(d, 'late'), 'x');
    expect(fds.openOnce(2, path.join(d, 'late'))).toBe(false); // not tried again
    fds.close(2);
    expect(fds.openOnce(2, path.join(d, 'late'))).toBe(true);
    expect(fds.read(2)!.toString()).toBe('x');
  });

  it('reads a real /proc file of this process', () => {
    tmp();
    const fds = new Descriptors<string>();
    fds.open('self', '/proc/self/stat');
    expect(fds.read('self')!.toString('latin1')).toMatch(/^\d+ \(.*\) [A-Za-z] /);
    fds.close('self');
  });
});
