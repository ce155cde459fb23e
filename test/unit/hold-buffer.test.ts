/** The hold buffer on its own: order when sent packets come back, memory shares. */
import { describe, expect, it } from 'vitest';
import { HoldBuffer } from '../../lib/hold/hold-buffer';
import { newCounters } from '../../lib/shared/counters';
import type { OutPacket } from '../../lib/shared/packet';

const pkt = (data: string): OutPacket => ({ topic: 'log4js:message', data });
const drain = (h: HoldBuffer, key: string): string[] => {
  const out: string[] = [];
  for (let p = h.take(key); p !== undefined; p = h.take(key)) out.push(String(p.data));
  return out;
};

function setup() {
  const counters = newCounters();
  const hold = new HoldBuffer({ bufferBytes: 1 << 20, counters, events: { overflow: () => {} } });
  return { hold, counters };
}

describe('HoldBuffer: sent packets that come back keep their place', () => {
  it('a refused send of a restored backlog goes before the rest of that backlog (chaos run: a line written 20-150 s late)', () => {
    const { hold, counters } = setup();
    hold.restore('web', ['r0', 'r1', 'r2', 'r3'].map(pkt));
    hold.push('web', pkt('n0'));
    const first = hold.take('web')!;
    expect(first.data).toBe('r0');
    hold.putBack('web', [first]); // PM2 refused it
    expect(drain(hold, 'web')).toEqual(['r0', 'r1', 'r2', 'r3', 'n0']);
    expect(counters.held).toBe(0);
  });

  it('in-flight sends answered one by one come back in send order, after older replays and before what was never sent', () => {
    const { hold } = setup();
    for (const d of ['a', 'b', 'c', 'd', 'e', 'f']) hold.push('web', pkt(d));
    const [a, b, c, d] = [hold.take('web')!, hold.take('web')!, hold.take('web')!, hold.take('web')!];
    hold.putBack('web', [d]); // answers arrive out of the order they are put back in
    hold.putBack('web', [c]);
    hold.putBack('web', [a, b]); // a replay of older, answered sends
    expect(drain(hold, 'web')).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  });

  it('a packet taken again keeps its first place', () => {
    const { hold } = setup();
    for (const d of ['a', 'b', 'c']) hold.push('web', pkt(d));
    const a = hold.take('web')!;
    const b = hold.take('web')!;
    hold.putBack('web', [a]);
    const again = hold.take('web')!;
    expect(again.data).toBe('a');
    hold.putBack('web', [b, again]);
    expect(drain(hold, 'web')).toEqual(['a', 'b', 'c']);
  });
});
