/**
 * The start side of a module restart without a running bridge: what bridges that ended without
 * a new module left is relayed first, then the gate passes everything (the markers aside).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { files, Handover, markerPacket } from '../../lib/restart/handover';
import { FORMAT } from '../../lib/restart/versioned';

describe('Handover (no bridge running)', () => {
  it('relays leftover handover files once, in their order, then passes what the bus brings', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-unit-handover-'));
    const packets = [{ raw: { topic: 'log4js:message', data: 'left-1' } }, { raw: { topic: 'log4js:message', data: 'left-2' } }];
    fs.writeFileSync(files.handover(dir, 'abc'), JSON.stringify({ format: FORMAT, nonce: 'abc', reason: 'timeout', overflow: 0, packets }));
    const lines: string[] = [];
    const handled: unknown[] = [];
    const handover = new Handover({ dir, log: (l) => lines.push(l), warn: (l) => lines.push(l) });
    const onBus = handover.gate((p) => handled.push(p));
    await handover.takeOver({ handleMessage: (p) => handled.push(p) });
    expect(handled).toEqual(packets);
    expect(fs.existsSync(files.handover(dir, 'abc'))).toBe(false);
    expect(lines).toEqual(['relayed 2 packets the handover bridge received while the module restarted (timeout)']);
    onBus({ raw: markerPacket('start', 'other') });
    onBus({ raw: { topic: 'log4js:message', data: 'new' } });
    expect(handled).toHaveLength(3);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
