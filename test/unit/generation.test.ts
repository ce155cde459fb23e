/**
 * Which process got a send PM2 handled around a `pm2 reload` swap (lib/deliver/generation.ts
 * reachedNewGeneration). PM2 swaps the process under a pm_id in one synchronous step: it stamps
 * the new pm_uptime U (whole ms), forks (several ms), and only then is the new process there, so a
 * send is handled before the step (old process) or after it (new process), never inside.
 */
import { describe, expect, it } from 'vitest';
import { reachedNewGeneration, RecentSends } from '../../lib/deliver/generation';

const U = 1_000_000;

describe('reachedNewGeneration', () => {
  it('no replacement: never', () => {
    expect(reachedNewGeneration(U, U + 50, Infinity)).toBe(false);
  });

  it('answered before the swap could have ended: the old process had it', () => {
    expect(reachedNewGeneration(U - 5, U - 0.2, U)).toBe(false);
    expect(reachedNewGeneration(U - 0.3, U + 0.9, U)).toBe(false);
  });

  it('written after the stamp: the new process had it', () => {
    expect(reachedNewGeneration(U + 1, U + 9, U)).toBe(true);
    expect(reachedNewGeneration(U + 3, U + 3.2, U)).toBe(true);
  });

  it('written before and answered after the swap: the daemon was in the swap when it arrived, so the new process had it', () => {
    // The case seen missing a line before: sent 6 ms before the stamp, handled after the fork.
    expect(reachedNewGeneration(U - 6, U + 8, U)).toBe(true);
  });

  it('... unless no new process existed when the answer was read: the old process had it, the answer was read late', () => {
    expect(reachedNewGeneration(U - 0.1, U + 4, U, true)).toBe(false);
  });

  it('with the probe\'s word (a reload\'s swap seen or not when PM2 handled it): that word, whatever the timing', () => {
    expect(reachedNewGeneration(U - 6, U + 8, U, false, false)).toBe(false);
    expect(reachedNewGeneration(U - 0.1, U + 4, U, true, true)).toBe(true);
    // The clear cases stay clear: answered before the stamp, written after it.
    expect(reachedNewGeneration(U - 5, U - 0.2, U, false, true)).toBe(false);
    expect(reachedNewGeneration(U + 1, U + 9, U, false, false)).toBe(true);
  });
});

describe('RecentSends', () => {
  const sent = (app: string, data: string, sentAt: number, answeredAt: number, beforeAnyFork = false, swapped?: boolean) => ({
    packet: { topic: 'log4js:message', data },
    app,
    sentAt,
    answeredAt,
    beforeAnyFork,
    swapped,
  });

  it('gives back, per app in send order, only what the new generation received', () => {
    const r = new RecentSends<string>();
    r.remember(sent('a', 'a1', U - 50, U - 40)); // answered before the swap: the old process
    r.remember(sent('b', 'b1', U - 6, U + 8)); // in the swap: the new one
    r.remember(sent('a', 'a2', U + 2, U + 3)); // after the stamp: the new one
    r.remember(sent('a', 'a3', U + 4, U + 5));
    r.remember(sent('b', 'b2', U - 6, U + 8, true)); // no fork yet when answered: the old one
    const back = r.reachedBy(U);
    expect([...back.keys()]).toEqual(['b', 'a']);
    expect(back.get('a')!.map((p) => p.data)).toEqual(['a2', 'a3']);
    expect(back.get('b')!.map((p) => p.data)).toEqual(['b1']);
    expect(r.reachedBy(U).size).toBe(0); // taken out: judged once
  });

  it('forgets sends answered more than 2 s before the newest', () => {
    const r = new RecentSends<string>();
    r.remember(sent('a', 'old', U - 3000, U - 2999));
    r.remember(sent('a', 'new', U + 1, U + 2));
    expect(r.reachedBy(U - 5000).get('a')!.map((p) => p.data)).toEqual(['new']);
  });

  it('clear() forgets everything (a dead target is not judged)', () => {
    const r = new RecentSends<string>();
    r.remember(sent('a', 'x', U + 1, U + 2));
    r.clear();
    expect(r.reachedBy(U).size).toBe(0);
  });
});
