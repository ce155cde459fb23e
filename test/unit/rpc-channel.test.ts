import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { answerError, encodeSendCall, FrameReader, stringArg, swapAnswer, swapAnswerOf } from '../../lib/pm2/rpc-frames';
import { openRpcChannel, type RpcChannel } from '../../lib/pm2/rpc-channel';
import { createPm2Client, type LoadedPm2 } from '../../lib/pm2/pm2-client';

// PM2's own message codec (the one its client and daemon use), to check ours against.
const requireHere = createRequire(__filename);
const Message = requireHere(requireHere.resolve('amp-message', { paths: [path.dirname(requireHere.resolve('pm2/package.json'))] })) as new (
  args: unknown,
) => { args: unknown[]; toBuffer(): Buffer };

const LINE = JSON.stringify({ startTime: '2026-12-03T15:00:00.000Z', categoryName: 'default', data: ['a "quoted" line, \\ and é ✓'], level: { levelStr: 'INFO' } });

describe('amp: the sendDataToProcessId frame', () => {
  it('is byte for byte what PM2 client writes (string data, object data)', () => {
    for (const data of [LINE, { ch: 'pino', b: [{ msg: 'x' }, { msg: 'ü' }] }]) {
      const ours = encodeSendCall(3, 'log4js:message', data, '4242:17');
      const pm2s = new Message([{ type: 'call', method: 'sendDataToProcessId', args: [{ id: 3, topic: 'log4js:message', data }] }, '4242:17']).toBuffer();
      expect(ours.equals(pm2s)).toBe(true);
      expect(new Message(ours).args).toEqual([{ type: 'call', method: 'sendDataToProcessId', args: [{ id: 3, topic: 'log4js:message', data }] }, '4242:17']);
    }
  });

  it('appends the probe frame: unmonitor("_old_<pm_id>"), as PM2 client would write it', () => {
    const both = encodeSendCall(3, 't', LINE, '1:0', '1:0?');
    const send = new Message([{ type: 'call', method: 'sendDataToProcessId', args: [{ id: 3, topic: 't', data: LINE }] }, '1:0']).toBuffer();
    const probe = new Message([{ type: 'call', method: 'unmonitor', args: ['_old_3'] }, '1:0?']).toBuffer();
    expect(both.equals(Buffer.concat([send, probe]))).toBe(true);
    expect(swapAnswer(undefined)).toBe(true);
    expect(swapAnswer('Unknown pm_id')).toBe(false);
    expect(swapAnswer('method "unmonitor" does not exist')).toBeUndefined();
    const arg = (obj: unknown) => new FrameArgs(new Message([obj, 'x']).toBuffer()).first;
    expect(swapAnswerOf(arg({ error: 'Unknown pm_id', stack: 'Error: Unknown pm_id\n    at Monitor (ActionMethods.js:848)' }))).toBe(false);
    expect(swapAnswerOf(arg({ args: [{ success: true, pm_id: '_old_3' }] }))).toBe(true);
    expect(swapAnswerOf(arg({ error: 'method "unmonitor" does not exist' }))).toBeUndefined();
  });

  it('reads frames split anywhere across chunks, and several in one chunk', () => {
    const frames = [0, 1, 2].map((i) => new Message([{ args: [{ success: true, data: { id: i, data: LINE } }] }, `id:${i}`]).toBuffer());
    const all = Buffer.concat(frames);
    for (let cut = 1; cut < all.length; cut += 7) {
      const seen: string[] = [];
      const reader = new FrameReader((args) => seen.push(`${stringArg(args[1])} ${answerError(args[0]) ?? 'ok'}`));
      reader.push(Buffer.from(all.subarray(0, cut)));
      reader.push(Buffer.from(all.subarray(cut)));
      expect(seen).toEqual(['id:0 ok', 'id:1 ok', 'id:2 ok']);
    }
  });

  it('tells a success from its first bytes, and reads the daemon\'s errors', () => {
    const arg = (obj: unknown) => new FrameArgs(new Message([obj, 'x']).toBuffer()).first;
    expect(answerError(arg({ args: [{ success: true, data: { id: 1 } }] }))).toBeUndefined();
    expect(answerError(arg({ error: 'Process with ID <4> offline.', stack: 'Error: ...' }))).toBe('Process with ID <4> offline.');
    expect(answerError(arg({ error: { code: 1 } }))).toBe('[object Object]');
    expect(answerError(Buffer.from('j:{not json'))).toMatch(/^unreadable answer from PM2/);
    expect(answerError(Buffer.from('j:[1]'))).toMatch(/^unexpected answer from PM2/);
  });
});

class FrameArgs {
  first: Buffer = Buffer.alloc(0);
  constructor(frame: Buffer) {
    new FrameReader((args) => (this.first = Buffer.from(args[0]))).push(frame);
  }
}

/**
 * A stand-in for PM2's daemon RPC socket: answers sendDataToProcessId calls as `answer` says, with
 * PM2's codec, and `unmonitor` as PM2's daemon does (`Unknown pm_id` unless the key is in `parked`,
 * the `_old_<pm_id>` keys of reloads in progress). `calls`: the sendDataToProcessId calls.
 */
function fakeDaemon(answer: (call: { method: string; args: { id: number }[] }, reply: (obj: unknown) => void) => void) {
  const parked = new Set<string>();
  const probes: unknown[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-rpc-'));
  const file = path.join(dir, 'rpc.sock');
  const socks: net.Socket[] = [];
  const calls: unknown[] = [];
  const server = net.createServer((sock) => {
    socks.push(sock);
    const reader = new FrameReader((args) => {
      const msg = new Message(Buffer.concat([Buffer.from([0x12]), ...args.flatMap((a) => [u32(a.length), a])])).args;
      const id = msg[1];
      const call = msg[0] as { method: string; args: { id: number }[] };
      const reply = (obj: unknown) => sock.write(new Message([obj, id]).toBuffer());
      if (call.method === 'unmonitor') {
        probes.push(call.args[0]);
        const key = String(call.args[0]);
        return reply(parked.has(key) ? { args: [{ success: true, pm_id: key }] } : { error: 'Unknown pm_id', stack: 'Error: Unknown pm_id\n    at Monitor' });
      }
      calls.push(call);
      answer(call, reply);
    });
    sock.on('data', (c: Buffer) => reader.push(c));
  });
  return {
    file,
    calls,
    probes,
    parked,
    listen: () => new Promise<void>((r) => server.listen(file, r)),
    dropConnections: () => socks.forEach((s) => s.destroy()),
    close: () => {
      socks.forEach((s) => s.destroy());
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

const sendAll = (ch: RpcChannel, ids: number[], data: unknown = LINE) =>
  Promise.all(ids.map((id) => new Promise<string>((r) => ch.send(id, 'log4js:message', data, (err, swapped) => r(err ? err.message : `ok ${swapped}`)))));

describe('rpc-channel: the relay\'s own connection to the daemon', () => {
  let cleanup: (() => void)[] = [];
  afterEach(() => {
    cleanup.forEach((f) => f());
    cleanup = [];
  });

  it('sends calls PM2 reads as sendDataToProcessId, and matches each answer to its call', async () => {
    const held: (() => void)[] = [];
    const d = fakeDaemon((call, reply) => {
      const id = call.args[0].id;
      // Answered out of order: the second call first.
      const r = () => reply(id === 9 ? { error: `Process with ID <${id}> offline.` } : { args: [{ success: true, data: call.args[0] }] });
      if (id === 1) held.push(r);
      else {
        r();
        held.forEach((f) => f());
      }
    });
    await d.listen();
    const ch = (await openRpcChannel(d.file))!;
    cleanup.push(() => ch.close(), d.close);
    expect(await sendAll(ch, [1, 2, 9])).toEqual(['ok false', 'ok false', 'Process with ID <9> offline.']);
    expect(d.calls).toEqual([1, 2, 9].map((id) => ({ type: 'call', method: 'sendDataToProcessId', args: [{ id, topic: 'log4js:message', data: LINE }] })));
  });

  it('follows each send with the probe in the same write, and says what it answered', async () => {
    const d = fakeDaemon((call, reply) => reply({ args: [{ success: true, data: call.args[0] }] }));
    await d.listen();
    const ch = (await openRpcChannel(d.file))!;
    cleanup.push(() => ch.close(), d.close);
    expect(await sendAll(ch, [1, 2])).toEqual(['ok false', 'ok false']);
    expect(d.probes).toEqual(['_old_1', '_old_2']);
    // A reload of pm_id 2 in progress: the worker under 2 is the new one.
    d.parked.add('_old_2');
    expect(await sendAll(ch, [1, 2])).toEqual(['ok false', 'ok true']);
    // Too big for one read of the daemon: the probe cannot speak for the send.
    expect(await sendAll(ch, [2], 'x'.repeat(40 * 1024))).toEqual(['ok undefined']);
  });

  it('with the probe off (reload_probe=off): the send alone, and no word on a swap', async () => {
    const d = fakeDaemon((call, reply) => reply({ args: [{ success: true, data: call.args[0] }] }));
    await d.listen();
    d.parked.add('_old_2');
    const ch = (await openRpcChannel(d.file, { probe: false }))!;
    cleanup.push(() => ch.close(), d.close);
    expect(await sendAll(ch, [1, 2])).toEqual(['ok undefined', 'ok undefined']);
    expect(d.probes).toEqual([]);
    expect(d.calls).toHaveLength(2);
  });

  it('with a probe policy: the probe only where it asks; a send it clears says "not swapped", one it cannot clear is followed by a probe', async () => {
    const d = fakeDaemon((call, reply) => reply({ args: [{ success: true, data: call.args[0] }] }));
    await d.listen();
    const asked: number[] = [];
    let need = true;
    let alone = true;
    const policy = { needed: (pmId: number) => (asked.push(pmId), need), written: () => alone };
    const ch = (await openRpcChannel(d.file, { probe: policy }))!;
    cleanup.push(() => ch.close(), d.close);
    // Asked for: in the same write, as always.
    d.parked.add('_old_2');
    expect(await sendAll(ch, [1, 2])).toEqual(['ok false', 'ok true']);
    expect(d.probes).toEqual(['_old_1', '_old_2']);
    // Not asked for, and nobody else came meanwhile: no probe, the send reached the worker we knew.
    need = false;
    expect(await sendAll(ch, [1, 1])).toEqual(['ok false', 'ok false']);
    expect(d.probes).toHaveLength(2);
    // Not asked for, but someone came: a probe follows; no reload in progress clears the send,
    // a reload in progress leaves it to timing (undefined).
    alone = false;
    expect(await sendAll(ch, [1, 2])).toEqual(['ok false', 'ok undefined']);
    expect(d.probes).toEqual(['_old_1', '_old_2', '_old_1', '_old_2']);
    expect(asked).toEqual([1, 2, 1, 1, 1, 2]);
    expect(ch.probeStats()).toEqual({ probed: 2, unprobed: 4, followUps: 2, inDoubt: 1 });
  });

  it('answers what is out with an error when the connection closes, and refuses later sends', async () => {
    const d = fakeDaemon(() => {}); // never answers
    await d.listen();
    const ch = (await openRpcChannel(d.file))!;
    cleanup.push(() => ch.close(), d.close);
    const out = sendAll(ch, [1, 2]);
    await new Promise((r) => setTimeout(r, 50));
    d.dropConnections();
    expect(await out).toEqual(['the connection to PM2 closed before PM2 answered', 'the connection to PM2 closed before PM2 answered']);
    expect(ch.open).toBe(false);
    expect(await sendAll(ch, [3])).toEqual(['the connection to PM2 is closed']);
  });

  it('is undefined where nothing listens', async () => {
    expect(await openRpcChannel(path.join(os.tmpdir(), `pm2si-none-${process.pid}.sock`))).toBeUndefined();
  });

  it('createPm2Client sends through it while it is open, through PM2\'s client once it has closed', async () => {
    const d = fakeDaemon((call, reply) => reply({ args: [{ success: true, data: call.args[0] }] }));
    await d.listen();
    cleanup.push(d.close);
    const remote: unknown[] = [];
    const api = {
      connect: (cb: (err: Error | null) => void) => cb(null),
      disconnect: (cb?: () => void) => cb?.(),
      Client: {
        rpc_socket_file: d.file,
        executeRemote: (method: string, packet: unknown, cb: (err: Error | null) => void) => {
          remote.push(packet);
          cb(null);
        },
      },
    };
    const c = createPm2Client({ api, version: '7.0.4', source: 'daemon' } as unknown as LoadedPm2, {});
    await c.connect();
    const send = (id: number) => new Promise<Error | null>((r) => c.send(id, 't', 'x', r));
    expect(c.sendsThrough?.()).toBe('own connection');
    expect(await send(1)).toBeNull();
    expect(d.calls).toHaveLength(1);
    expect(d.probes).toEqual(['_old_1']);
    expect(remote).toEqual([]);
    d.dropConnections();
    await new Promise((r) => setTimeout(r, 50));
    expect(c.sendsThrough?.()).toBe('PM2 client');
    expect(await send(2)).toBeNull();
    expect(remote).toEqual([{ id: 2, topic: 't', data: 'x' }]);
    await c.close();
    // Turned off (PM2SI_OWN_RPC=0 does this): PM2's client only.
    const off = createPm2Client({ api, version: '7.0.4', source: 'daemon' } as unknown as LoadedPm2, { openChannel: null });
    await off.connect();
    expect(await new Promise((r) => off.send(3, 't', 'y', r))).toBeNull();
    expect(remote).toHaveLength(2);
    expect(d.calls).toHaveLength(1);
  });
});
