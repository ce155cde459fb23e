import { describe, expect, it } from 'vitest';
import { pidAlive, pm2Home, toNumber } from '../../lib/shared/system';

const failWith = (code: string) => () => {
  throw Object.assign(new Error(code), { code });
};

describe('pidAlive: is a process of ours under this pid', () => {
  it('yes when kill(pid, 0) succeeds', () => {
    expect(pidAlive(1234, () => true)).toBe(true);
    expect(pidAlive(process.pid)).toBe(true);
  });
  it('no when no process has the pid (ESRCH)', () => {
    expect(pidAlive(1234, failWith('ESRCH'))).toBe(false);
  });
  it("no when the process is another user's (EPERM): the pid was reused, it is not ours", () => {
    expect(pidAlive(1234, failWith('EPERM'))).toBe(false);
  });
  it('no for pids that name no single process (0, negative, NaN)', () => {
    const kill = () => true;
    expect(pidAlive(0, kill)).toBe(false);
    expect(pidAlive(-1, kill)).toBe(false);
    expect(pidAlive(NaN, kill)).toBe(false);
  });
});

describe('pm2Home', () => {
  it('PM2_HOME, else $HOME/.pm2', () => {
    expect(pm2Home({ PM2_HOME: '/x/pm2' })).toBe('/x/pm2');
    expect(pm2Home({ HOME: '/home/u' })).toBe('/home/u/.pm2');
  });
});

describe('toNumber', () => {
  it('numbers and numeric strings, nothing else', () => {
    expect(toNumber(3)).toBe(3);
    expect(toNumber('7')).toBe(7);
    expect(toNumber(' 2 ')).toBe(2);
    expect(toNumber('')).toBeUndefined();
    expect(toNumber(' ')).toBeUndefined();
    expect(toNumber('x')).toBeUndefined();
    expect(toNumber(Infinity)).toBeUndefined();
    expect(toNumber(undefined)).toBeUndefined();
    expect(toNumber(null)).toBeUndefined();
  });
});
