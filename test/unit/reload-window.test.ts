import { describe, expect, it } from 'vitest';
import { acceptedOn, daemonClients, ReloadWindow, SETTLE_MS } from '../../lib/proc/reload-window';

const RPC = '/home/u/.pm2/rpc.sock';
/** A /proc/net/unix table: the listener, `n` accepted connections, and other sockets. */
function table(n: number): string {
  const rows = ['Num       RefCount Protocol Flags    Type St Inode Path', `0000000000000000: 00000002 00000000 00010000 0001 01 1135645 ${RPC}`];
  rows.push('0000000000000000: 00000002 00000000 00010000 0001 01 1135644 /home/u/.pm2/pub.sock');
  rows.push('0000000000000000: 00000003 00000000 00000000 0001 03 1135195 /home/u/.pm2/pub.sock');
  rows.push('0000000000000000: 00000003 00000000 00000000 0001 03 1135199');
  for (let i = 0; i < n; i++) rows.push(`0000000000000000: 00000003 00000000 00000000 0001 03 11352${i}0 ${RPC}`);
  return rows.join('\n') + '\n';
}

function fakeDaemon() {
  const d = { fds: 30, rpcConnections: 2, own: 2, t: 0, scans: 0, readable: true };
  const clients = daemonClients({
    daemonPid: 1,
    rpcSocket: RPC,
    own: () => d.own,
    now: () => d.t,
    fdCount: () => (d.readable ? d.fds : undefined),
    unixTable: () => {
      d.scans++;
      return table(d.rpcConnections);
    },
  });
  return { d, clients };
}

describe('reload window: who else is connected to PM2', () => {
  it('counts the connections accepted on the RPC socket, not its listener nor other sockets', () => {
    expect(acceptedOn(table(0), RPC)).toBe(0);
    expect(acceptedOn(table(3), RPC)).toBe(3);
    expect(acceptedOn(table(3), '/home/u/.pm2/pub.sock')).toBe(1);
  });

  it('is alone only once two scans SETTLE_MS apart found nobody else at the same descriptor count', () => {
    const { d, clients } = fakeDaemon();
    expect(clients.alone()).toBe(false);
    d.t += SETTLE_MS / 2;
    expect(clients.alone()).toBe(false);
    d.t += SETTLE_MS / 2;
    expect(clients.alone()).toBe(true);
    const scans = d.scans;
    // Then one descriptor count per check, no scan.
    for (let i = 0; i < 100; i++) expect(clients.alone()).toBe(true);
    expect(d.scans).toBe(scans);
  });

  it('a new connection (the CLI) ends it at once; it comes back only after the client has gone and two scans agree', () => {
    const { d, clients } = fakeDaemon();
    d.t = 0;
    clients.alone();
    d.t = SETTLE_MS;
    expect(clients.alone()).toBe(true);
    d.t += SETTLE_MS;
    d.fds++;
    d.rpcConnections++;
    expect(clients.alone()).toBe(false);
    // While it stays, the same count is not scanned again.
    const scans = d.scans;
    for (let i = 1; i <= 10; i++) {
      d.t += SETTLE_MS;
      expect(clients.alone()).toBe(false);
    }
    expect(d.scans).toBe(scans);
    d.fds--;
    d.rpcConnections--;
    expect(clients.alone()).toBe(false);
    d.t += SETTLE_MS;
    expect(clients.alone()).toBe(true);
  });

  it('a descriptor closing is a change too (a client that came while another file closed is not missed)', () => {
    const { d, clients } = fakeDaemon();
    clients.alone();
    d.t = SETTLE_MS;
    expect(clients.alone()).toBe(true);
    d.fds--;
    expect(clients.alone()).toBe(false);
  });

  it('a client present from the start (pm2-logrotate, PM2 Plus) keeps it closed; a count it cannot read too', () => {
    const { d, clients } = fakeDaemon();
    d.rpcConnections = 3;
    for (let i = 0; i < 5; i++) {
      d.t += SETTLE_MS;
      expect(clients.alone()).toBe(false);
    }
    d.rpcConnections = 2;
    d.fds--;
    clients.alone();
    d.t += SETTLE_MS;
    expect(clients.alone()).toBe(true);
    d.readable = false;
    expect(clients.alone()).toBe(false);
  });

  it('our own channel closed: one own connection less, so a third party is not taken for it', () => {
    const { d, clients } = fakeDaemon();
    d.own = 1; // the channel closed, a CLI connected: still two connections
    for (let i = 0; i < 5; i++) {
      d.t += SETTLE_MS;
      expect(clients.alone()).toBe(false);
    }
  });
});

describe('reload window: which sends carry the probe', () => {
  const window = (alone: boolean[], settled = true, itself = false) =>
    new ReloadWindow({ clients: { alone: () => alone.shift() ?? false }, childrenSettled: () => settled, reloadsItself: () => itself });

  it('probes until a check after a write finds the module alone, then not, until a check finds someone', () => {
    const w = window([false, true, true, false]);
    expect(w.needed(1)).toBe(true);
    expect(w.written()).toBe(false);
    expect(w.needed(1)).toBe(true);
    expect(w.written()).toBe(true);
    expect(w.needed(1)).toBe(false);
    expect(w.written()).toBe(true);
    expect(w.needed(1)).toBe(false);
    expect(w.written()).toBe(false);
    expect(w.needed(1)).toBe(true);
  });

  it('always probes an app PM2 reloads by itself (max_memory_restart), and while a new child is not told apart', () => {
    const itself = window([true, true], true, true);
    itself.written();
    expect(itself.needed(1)).toBe(true);
    const unsettled = window([true, true], false);
    unsettled.written();
    expect(unsettled.needed(1)).toBe(true);
  });
});
