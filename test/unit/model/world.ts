/**
 * A fake PM2 (daemon, bus, worker processes) for the delivery model test, faithful to the facts in
 * DESIGN.md: one pm_id holds one process generation at a time (a reload parks the old one as
 * `_old_<id>`, alive); `online` comes before the app runs; a send is refused ("offline") unless the
 * pm_id is online or launching; a send the daemon accepts is written by the process only if it runs
 * the app then; after a `kill -9` the daemon survives one write into the dead channel, not two.
 *
 * The relay under test sees it only through what the module sees: a `Pm2Client` (bus, list,
 * sends answered later), a `Liveness` (/proc/<pid>/stat) and `Newcomers` (the daemon's children).
 * Every world change is one method; nothing happens unless the test calls it.
 */
import type { BusHandlers, Pm2Client } from '../../../lib/intake/pm2-client';
import type { Liveness } from '../../../lib/proc/liveness';
import type { Newcomers } from '../../../lib/proc/forks';
import type { SendDone } from '../../../lib/shared/packet';
import type { Pm2Env } from '../../../lib/table/registry';
import type { FakeTimers } from '../fakes';

export const TOPIC = 'log4js:message';
export const WRITER_INSTANCE = 0;

export interface AppDef {
  readonly name: string;
  readonly namespace: string;
  readonly instanceVar: string;
  /** Its pm_ids; the instance number of the i-th is i. */
  readonly pmIds: readonly number[];
}

/** Two apps named `web` in two namespaces (the second with its own instance_var), and `api`. */
export const APPS: readonly AppDef[] = [
  { name: 'web', namespace: 'default', instanceVar: 'NODE_APP_INSTANCE', pmIds: [0, 1, 2] },
  { name: 'web', namespace: 'blue', instanceVar: 'INSTANCE_ID', pmIds: [3, 4] },
  { name: 'api', namespace: 'default', instanceVar: 'NODE_APP_INSTANCE', pmIds: [5, 6] },
];
export const SLOTS = APPS.flatMap((a) => a.pmIds).length;
export const WRITER_SLOTS = APPS.map((a) => a.pmIds[WRITER_INSTANCE]);

/** One process (one generation of a pm_id). */
export interface Proc {
  readonly pid: number;
  readonly pmId: number;
  readonly app: number;
  readonly instance: number;
  /** PM2's pm_uptime for it. */
  readonly gen: number;
  /** Order of the fork among the daemon's children (their start time). */
  readonly forkSeq: number;
  /** From when it runs the app (Infinity until PM2 said `online`, and a while after). */
  appReadyAt: number;
  /** Not exited, not killed. */
  alive: boolean;
  /** Still a child of the daemon (not reaped): a zombie after a kill until PM2 handles the exit. */
  child: boolean;
  killSeq: number | undefined;
  /** Writes into its channel after the kill, before PM2 handled the exit. */
  deadWrites: number;
  /** Sender side: its next sequence number. */
  nextSeq: number;
}

export interface Slot {
  readonly pmId: number;
  readonly app: number;
  readonly instance: number;
  status: 'online' | 'launching' | 'stopping' | 'stopped';
  proc: Proc;
  parked: Proc | undefined;
  /** World seq at which the process exited after a graceful stop (sends written before it are read before the next fork). */
  stopSeq: number | undefined;
  /** The stop that began is a restart (a new process follows at once). */
  restarting: boolean;
  /** Generations so far (PM2 resets pm2_env.instance_var after the first restart). */
  generations: number;
  /** When the last reload swapped (for the bound on its online event), and its world seq. */
  swappedAt: number | undefined;
  swapSeq: number;
}

/** A log packet an app sent, as the model knows it. */
export interface Packet {
  readonly id: number;
  readonly app: number;
  /** pid of the sending process, and its sequence number. */
  readonly sender: number;
  readonly seq: number;
  readonly data: string;
}

interface InboxEntry {
  readonly relay: number;
  readonly pmId: number;
  readonly data: unknown;
  readonly done: SendDone;
  readonly writeSeq: number;
  /** The process under the pm_id when the relay wrote the send. */
  readonly meant: Proc;
  readonly writtenAt: number;
}

interface Answer {
  readonly relay: number;
  readonly done: SendDone;
  readonly err: Error | null;
  readonly swapped: boolean | undefined;
  readonly pmId: number;
  readonly meant: Proc;
  readonly at: number;
}

interface BusItem {
  readonly kind: 'message' | 'event';
  readonly packet: unknown;
  readonly at: number;
}

interface ListRequest {
  readonly relay: number;
  readonly resolve: (envs: Pm2Env[]) => void;
  snapshot: Pm2Env[] | undefined;
  builtAt: number;
}

/** Bounds on how late the world may be (PM2 under load), so sequences stay realistic. */
export const LAG = {
  /** A bus item reaches the module at most this long after PM2 emitted it. */
  bus: 1000,
  /** A reloaded worker says `online` at most this long after the swap. */
  reloadOnline: 500,
  /** PM2 reads a send at most this long after it was written, and its answer arrives within as long. */
  send: 1000,
  /** A list answer at most this long after it was built (finding 6: longer than ready_delay, with `known`). */
  list: 800,
  listKnown: 1500,
};

export class Violation extends Error {}

export class World {
  readonly slots: Slot[] = [];
  readonly packets: Packet[] = [];
  /** Per packet id: the processes that wrote it (pids), in order. */
  readonly writtenBy = new Map<number, number[]>();
  /** Packets lost in a kill -9 window (sent before the kill, read by PM2 after it). */
  readonly killLost = new Set<number>();
  /** Packets handed to a process that did not run the app (must be sent again). */
  readonly unreadLost = new Set<number>();
  /** Per app, the last sequence number written per sender pid. */
  readonly #lastSeq = new Map<number, number>();
  readonly inbox: InboxEntry[] = [];
  readonly answers: Answer[] = [];
  readonly bus: BusItem[] = [];
  readonly lists: ListRequest[] = [];
  /** Per process: refusals answered to the relay, with when (world seq). */
  readonly #refusedAt = new Map<Proc, number>();
  /** The relay the bus and sends belong to (a module restart makes a new one). */
  relay = 0;
  handlers: BusHandlers | undefined;
  /** Called after each bus item the module handled (checks that need the moment). */
  afterBusItem: (() => void) | undefined;
  /** Answer list requests at once (while a relay starts). */
  autoList = false;
  seq = 0;
  /** `kill -9`s so far. */
  kills = 0;
  /** A big packet (near buffer_mb) was sent: drops at the bounds may happen. */
  bigSent = false;
  #nextPid = 1000;
  #forkSeq = 0;
  readonly log: string[] = [];

  constructor(readonly clock: FakeTimers, readonly settings: { ready_delay: number; max_inflight: number }, readonly known = false) {
    for (const [app, def] of APPS.entries()) {
      def.pmIds.forEach((pmId, instance) => {
        const proc = this.#fork(pmId, app, instance, 0);
        proc.appReadyAt = 0;
        this.slots[pmId] = { pmId, app, instance, status: 'online', proc, parked: undefined, stopSeq: undefined, restarting: false, generations: 1, swappedAt: undefined, swapSeq: 0 };
      });
    }
  }

  // --- what the module sees ---

  client(relay: number): Pm2Client {
    return {
      version: '7.0.4',
      source: 'bundled',
      connect: async () => {},
      close: async () => {},
      subscribe: async (h) => {
        if (relay === this.relay) this.handlers = h;
      },
      list: () =>
        new Promise<Pm2Env[]>((resolve) => {
          const req: ListRequest = { relay, resolve, snapshot: undefined, builtAt: 0 };
          if (this.autoList) resolve(this.snapshot());
          else this.lists.push(req);
        }),
      send: (pmId, _topic, data, done) => {
        const slot = this.slots[pmId];
        if (!slot) throw new Violation(`send to unknown pm_id ${pmId}`);
        const meant = slot.proc;
        const refused = this.#refusedAt.get(meant);
        if (refused !== undefined) this.fail(`a second send to pm_id ${pmId} (pid ${meant.pid}) after PM2 refused one to it (seq ${refused})`);
        this.inbox.push({ relay, pmId, data, done, writeSeq: ++this.seq, meant, writtenAt: this.clock.now });
      },
    };
  }

  readonly liveness: Liveness = {
    checksPids: true,
    isAlive: (pid) => {
      if (!(pid > 0)) return true;
      const p = this.procByPid(pid);
      return p === undefined || p.alive;
    },
    forget: () => {},
  };

  readonly newcomers: Newcomers = {
    settled: () => true,
    after: (pmId, knownPid) => {
      if (!(knownPid > 0)) return undefined;
      const known = this.#children().find((p) => p.pid === knownPid);
      const newest = this.#children()
        .filter((p) => p.pmId === pmId)
        .sort((a, b) => b.forkSeq - a.forkSeq)[0];
      if (!newest || newest.pid === knownPid || !known) return undefined;
      return newest.forkSeq > known.forkSeq ? newest.pid : undefined;
    },
    forked: (pmId, knownPid) => {
      if (!(knownPid > 0)) return undefined;
      const known = this.#children().find((p) => p.pid === knownPid);
      if (!known) return undefined;
      return this.#children().some((p) => p !== known && p.pmId === pmId && p.forkSeq > known.forkSeq);
    },
  };

  procByPid(pid: number): Proc | undefined {
    for (const p of this.#allProcs) if (p.pid === pid) return p;
    return undefined;
  }

  readonly #allProcs: Proc[] = [];

  #children(): Proc[] {
    return this.#allProcs.filter((p) => p.child);
  }

  // --- PM2's side ---

  #fork(pmId: number, app: number, instance: number, gen: number): Proc {
    const p: Proc = { pid: this.#nextPid++, pmId, app, instance, gen, forkSeq: ++this.#forkSeq, appReadyAt: Infinity, alive: true, child: true, killSeq: undefined, deadWrites: 0, nextSeq: 0 };
    this.#allProcs.push(p);
    return p;
  }

  env(slot: Slot, status: string = slot.status, forList = false): Pm2Env {
    const def = APPS[slot.app];
    const e: Pm2Env = {
      pm_id: slot.pmId,
      name: def.name,
      namespace: def.namespace,
      status,
      exec_mode: 'cluster_mode',
      // PM2 7 resets it after a restart or reload; the number stays under the app's own key.
      instance_var: slot.generations > 1 ? 'NODE_APP_INSTANCE' : def.instanceVar,
      [def.instanceVar]: slot.instance,
      pm_uptime: slot.proc.gen,
    };
    if (forList) e.pid = slot.status === 'stopped' ? 0 : slot.proc.pid;
    return e;
  }

  snapshot(): Pm2Env[] {
    return this.slots.map((s) => this.env(s, s.status, true));
  }

  #emit(kind: 'message' | 'event', packet: unknown): void {
    this.bus.push({ kind, packet, at: this.clock.now });
  }

  #event(event: string, slot: Slot, status: string): void {
    this.#emit('event', { event, process: this.env(slot, status) });
  }

  /** A process that runs the app logs `n` lines (a parked old worker too). */
  logs(pmId: number, parked: boolean, n: number, big: boolean): void {
    const slot = this.slots[pmId];
    if (slot.instance === WRITER_INSTANCE) return; // the writer writes its own lines
    const proc = parked && slot.parked ? slot.parked : slot.proc;
    parked = proc === slot.parked;
    if (!proc || !proc.alive || this.clock.now < proc.appReadyAt || (!parked && slot.status !== 'online')) return;
    const def = APPS[slot.app];
    if (big) this.bigSent = true;
    for (let i = 0; i < n; i++) {
      const id = this.packets.length;
      const data = big ? `m${id} ${BIG}` : `m${id}`;
      this.packets.push({ id, app: slot.app, sender: proc.pid, seq: proc.nextSeq++, data });
      this.#emit('message', { raw: { topic: TOPIC, data }, process: { pm_id: parked ? `_old_${pmId}` : pmId, name: def.name, namespace: def.namespace } });
    }
  }

  /** PM2 reads the oldest send and answers it (the answer reaches the module later). */
  handleSend(): boolean {
    const e = this.inbox.shift();
    if (!e) return false;
    const slot = this.slots[e.pmId];
    let err: Error | null = null;
    let swapped: boolean | undefined;
    if (slot.status !== 'online' && slot.status !== 'launching') {
      err = new Error(`Process with ID <${e.pmId}> offline.`);
    } else {
      const proc = slot.proc;
      swapped = slot.parked !== undefined; // the reload probe: does `_old_<id>` exist now?
      this.#deliverTo(proc, e);
    }
    this.answers.push({ relay: e.relay, done: e.done, err, swapped, pmId: e.pmId, meant: e.meant, at: this.clock.now });
    return true;
  }

  #deliverTo(proc: Proc, e: InboxEntry): void {
    const id = packetId(e.data);
    const packet = this.packets[id];
    if (!proc.alive) {
      proc.deadWrites++;
      if (proc.deadWrites > 1 && this.settings.max_inflight === 1) {
        this.fail(`PM2's daemon would crash: a second write into the closed channel of killed pid ${proc.pid} (pm_id ${proc.pmId})`);
      }
      if (e.meant.killSeq !== undefined && e.writeSeq < e.meant.killSeq) this.killLost.add(id);
      else this.unreadLost.add(id);
      return;
    }
    if (this.clock.now < proc.appReadyAt) {
      // Handed to a process that does not run the app yet: gone, unless the module sends it again.
      if (e.meant.killSeq !== undefined && e.writeSeq < e.meant.killSeq) this.killLost.add(id);
      else this.unreadLost.add(id);
      return;
    }
    if (packet.app !== proc.app) this.fail(`packet ${id} of app ${packet.app} written by app ${proc.app} (pid ${proc.pid})`);
    const by = this.writtenBy.get(id) ?? [];
    by.push(proc.pid);
    this.writtenBy.set(id, by);
    if (by.length > 1) this.fail(`packet ${id} written twice (pids ${by.join(', ')})`);
    if (proc.instance !== WRITER_INSTANCE) this.fail(`packet ${id} written by pid ${proc.pid}, instance ${proc.instance}, not the writer`);
    const last = this.#lastSeq.get(packet.sender) ?? -1;
    if (packet.seq < last) this.fail(`order: sender ${packet.sender} seq ${packet.seq} written after seq ${last}`);
    this.#lastSeq.set(packet.sender, Math.max(last, packet.seq));
  }

  /** The oldest answer reaches the module. */
  answer(): boolean {
    const a = this.answers.shift();
    if (!a) return false;
    if (a.err) this.#refusedAt.set(a.meant, this.seq);
    a.done(a.err, a.swapped);
    return true;
  }

  /** PM2 builds the oldest list asked for (as of now). */
  buildList(): boolean {
    const req = this.lists.find((r) => r.snapshot === undefined);
    if (!req) return false;
    req.snapshot = this.snapshot();
    req.builtAt = this.clock.now;
    return true;
  }

  /** The oldest built list reaches the module. */
  answerList(): boolean {
    const i = this.lists.findIndex((r) => r.snapshot !== undefined);
    if (i < 0) return false;
    const [req] = this.lists.splice(i, 1);
    req.resolve(req.snapshot!);
    return true;
  }

  /** Bus items reach the module, in order. */
  deliverBus(n: number): void {
    for (let i = 0; i < n && this.bus.length > 0; i++) {
      const item = this.bus.shift()!;
      if (!this.handlers) continue;
      if (item.kind === 'message') this.handlers.message(item.packet);
      else this.handlers.event(item.packet);
      this.afterBusItem?.();
    }
  }

  /** `pm2 restart` / `pm2 stop`: marked stopping (refuses sends), SIGINT (the app writes what it read). */
  stopBegin(pmId: number, restart: boolean): void {
    const slot = this.slots[pmId];
    if (slot.status !== 'online' && slot.status !== 'launching') return;
    // Known (finding 5): a reloaded worker that ends before its `online`. Unless asked to, not stopped.
    if (!this.known && slot.parked && slot.status === 'launching') return;
    slot.status = 'stopping';
    slot.restarting = restart;
    this.#event('exit', slot, 'stopping');
  }

  /** The stopping process exited: `stopped`; a restart forks the next generation at once. */
  stopEnd(pmId: number): void {
    const slot = this.slots[pmId];
    if (slot.status !== 'stopping') return;
    slot.proc.alive = false;
    slot.proc.child = false;
    slot.status = 'stopped';
    slot.stopSeq = ++this.seq;
    this.#event('exit', slot, 'stopped');
    if (slot.restarting) this.start(pmId);
    else this.#event('stop', slot, 'stopped');
  }

  /** `kill -9` of the current process: dying at once (SIGKILL pending), PM2 has not seen it yet. */
  kill(pmId: number): void {
    const slot = this.slots[pmId];
    const p = slot.proc;
    if (!p.alive || slot.status === 'stopped') return;
    // Known (finding 5): a reloaded worker that ends before its `online`. Unless asked to, not killed.
    if (!this.known && slot.parked && slot.status === 'launching') return;
    p.alive = false;
    p.killSeq = ++this.seq;
    this.kills++;
  }

  /** PM2 handles the killed process's exit: events, and the crash restart forks a new one. */
  reap(pmId: number): void {
    const slot = this.slots[pmId];
    const p = slot.proc;
    if (p.killSeq === undefined || !p.child) return;
    p.child = false;
    if (slot.status === 'stopping') {
      slot.status = 'stopped';
      this.#event('exit', slot, 'stopped');
      if (slot.restarting) this.start(pmId);
      return;
    }
    slot.status = 'stopped';
    slot.stopSeq = undefined;
    this.#event('exit', slot, 'stopped');
    this.start(pmId);
  }

  /** PM2 forks a new generation under a stopped pm_id (`launching`, no event yet). */
  start(pmId: number): void {
    const slot = this.slots[pmId];
    if (slot.status !== 'stopped' || slot.proc.child) return;
    // What the module wrote before the process exited was read while PM2 stopped it (its event
    // loop turned many times since): refused, not handed to the next process.
    if (slot.stopSeq !== undefined) {
      while (this.inbox.length > 0 && this.inbox.some((e) => e.pmId === pmId && e.writeSeq < slot.stopSeq!)) this.handleSend();
    }
    slot.stopSeq = undefined;
    slot.restarting = false;
    slot.proc = this.#fork(pmId, slot.app, slot.instance, this.clock.now);
    slot.generations++;
    slot.status = 'launching';
  }

  /** The new process is online (`online` event); its app runs `r * ready_delay` later. */
  online(pmId: number, r: number): void {
    const slot = this.slots[pmId];
    if (slot.status !== 'launching' || !slot.proc.alive) return;
    // PM2 reads what was written before a reload's swap within a turn or two of it, long before
    // the new worker can run the app (it has not even said `online`): handled now at the latest.
    if (slot.swappedAt !== undefined) {
      while (this.inbox.some((e) => e.pmId === pmId && e.writeSeq < slot.swapSeq)) this.handleSend();
    }
    slot.status = 'online';
    slot.swappedAt = undefined;
    slot.proc.appReadyAt = this.clock.now + Math.floor(r * this.settings.ready_delay);
    // Known (finding 3): a module started meanwhile takes readiness from pm_uptime (the fork), not
    // from `online`; unless asked to, the app is ready by then too.
    if (!this.known) slot.proc.appReadyAt = Math.min(slot.proc.appReadyAt, slot.proc.gen + this.settings.ready_delay);
    this.#event('online', slot, 'launching');
  }

  /**
   * `pm2 reload`: in one synchronous step PM2 stamps the new pm_uptime, parks the old worker
   * (alive, still writing) and forks the new one under the pm_id. The step takes `d` >= 1 ms,
   * during which the module runs on (its timers fire) but PM2 reads nothing.
   */
  reloadSwap(pmId: number, d: number): void {
    const slot = this.slots[pmId];
    if (slot.status !== 'online' || slot.parked || !slot.proc.alive || this.clock.now < slot.proc.appReadyAt) return;
    const stamp = this.clock.now;
    this.clock.advance(d);
    slot.parked = slot.proc;
    slot.proc = this.#fork(pmId, slot.app, slot.instance, stamp);
    slot.generations++;
    slot.status = 'launching';
    slot.swappedAt = this.clock.now;
    slot.swapSeq = ++this.seq;
  }

  /** The parked old worker gets `shutdown` and exits (after the new one is online). */
  retire(pmId: number): void {
    const slot = this.slots[pmId];
    const old = slot.parked;
    if (!old || slot.status === 'launching') return;
    // PM2 retires it once the new worker listens, many turns after the swap: what the module
    // wrote before the swap has been read (with its probe) by then.
    while (this.inbox.some((e) => e.pmId === pmId && e.writeSeq < slot.swapSeq)) this.handleSend();
    // Known (finding 4): the old worker gone before the module heard the new one's `online`.
    // Unless asked to, the module hears it first.
    if (!this.known) {
      while (this.bus.some((b) => b.kind === 'event' && isOnlineOf(b.packet, pmId))) this.deliverBus(1);
    }
    old.alive = false;
    old.child = false;
    slot.parked = undefined;
    this.#emit('event', { event: 'exit', process: { ...this.env(slot, 'stopped'), pm_id: `_old_${pmId}`, pm_uptime: old.gen } });
  }

  /** What PM2 under load still does within its bounds (LAG) before time moves on. */
  forceDue(): void {
    const now = this.clock.now;
    for (const s of this.slots) {
      if (s.swappedAt !== undefined && s.status === 'launching' && now - s.swappedAt >= LAG.reloadOnline) this.online(s.pmId, 0.5);
    }
    while (this.inbox.length > 0 && now - this.inbox[0].writtenAt >= LAG.send) this.handleSend();
    while (this.answers.length > 0 && now - this.answers[0].at >= LAG.send) this.answer();
    while (this.bus.length > 0 && now - this.bus[0].at >= LAG.bus) this.deliverBus(1);
    for (const r of this.lists) if (r.snapshot === undefined) this.buildList();
    const listLag = this.known ? LAG.listKnown : LAG.list;
    while (this.lists.some((r) => r.snapshot !== undefined && now - r.builtAt >= listLag)) this.answerList();
  }

  fail(msg: string): void {
    throw new Violation(msg);
  }
}

const BIG = 'x'.repeat(200_000);

function isOnlineOf(packet: unknown, pmId: number): boolean {
  const p = packet as { event?: string; process?: { pm_id?: unknown } };
  return p.event === 'online' && p.process?.pm_id === pmId;
}

export function packetId(data: unknown): number {
  const s = String(data);
  const sp = s.indexOf(' ');
  return Number(sp < 0 ? s.slice(1) : s.slice(1, sp));
}
