/**
 * The handover bridge (see handover.ts): a short-lived process the old module starts on SIGINT.
 * It listens on PM2's bus, keeps every packet after the old module's `stop` marker, and when the
 * new module's `start` marker comes, writes them to a handover file and exits.
 *
 * It never starts a PM2 daemon (it only subscribes to the bus socket), and it ends by itself:
 * when the daemon is gone (unless a `pm2 update` starts a new one: it then listens on the new
 * daemon's bus), or after `max_ms` with no new module (it then leaves its packets for the next
 * start).
 *
 * Across versions (`pm2 install` of another version): PM2 deletes the module's folder after the old
 * module exits and creates it anew for the new version. When that new folder appears, the bridge
 * moves the state file there and announces itself there too, so that a 0.1.0 module (which keeps
 * its files in the module's folder) finds both; a 0.1.0 `start` marker (no protocol) gets the
 * handover file there as well. Never while the old folder exists: PM2 is deleting it.
 *
 * argv: <state dir> <stop nonce> [max_ms] [the module's folder]
 */
import fs from 'node:fs';
import path from 'node:path';
import { Deque } from '../shared/deque';
import { files, HANDOVER_FORMAT, markerOf } from './handover';
import { createPm2Client, loadPm2, type Pm2Client } from '../pm2/pm2-client';
import { EARLIER_DAEMON_PREFIX } from '../shared/protocol';
import { pidAlive, pm2Home } from '../shared/system';
import { writeJsonAtomic } from './versioned';

const MAX_PACKETS = 500_000;
/**
 * The old module sends its stop marker as soon as it sees us listen, or gives up (and kills us)
 * after 4 s: a bridge not armed by then was abandoned (its module was killed outright), and left
 * running it would only be mistaken for the current one by the next start.
 */
const ARM_MS = 15_000;

/** How often the bus tries to connect again while the daemon is away (see `pm2 update` below). */
const BUS_RETRY_MS = 50;
/** How long a bridge waits for the new daemon of a `pm2 update` (starting one took 0.3 to 2 s). */
const NEW_DAEMON_WAIT_MS = 15_000;
/** How recent a saved process list must be for a daemon that went away to count as `pm2 update`. */
const UPDATE_DUMP_MS = 10_000;

/** Did PM2 save its process list (`pm2 save`, or `pm2 update` before it kills the daemon) just before `at`? */
function justSaved(dumpFile: string, at: number, withinMs = UPDATE_DUMP_MS): boolean {
  try {
    return at - fs.statSync(dumpFile).mtimeMs <= withinMs;
  } catch {
    return false;
  }
}

/** The bridge's command line (see the file's comment). */
interface BridgeArgs {
  /** The state folder: the bridge announces itself and writes its handover file there. */
  dir: string;
  /** The old module's `stop` marker. */
  nonce: string;
  /** How long it waits for a new module. */
  maxMs: number;
  /** The module's folder, where a 0.1.0 module looks (absent: none). */
  legacyDir: string | undefined;
}

function argsOf(argv: string[]): BridgeArgs {
  const [dir, nonce, maxArg, legacyDir] = argv;
  return { dir, nonce, maxMs: Number(maxArg) > 0 ? Number(maxArg) : 60_000, legacyDir: legacyDir || undefined };
}

/**
 * A folder's identity: only a new one (another inode) is PM2's new install. (inode and birth
 * time: a file system may give a new folder the inode of the one just deleted)
 */
function folderIdentity(d: string | undefined): string | undefined {
  try {
    const st = d ? fs.statSync(d) : undefined;
    return st ? `${st.ino}:${st.birthtimeMs}` : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The daemon the bridge listens to. `pm2 kill` stops the module too: when the daemon is gone, the
 * bridge leaves at once, writing nothing. Unless PM2 has just saved its process list: `pm2 update`
 * does that, kills the daemon, starts a new one, resurrects the apps, and only then starts the
 * modules (PM2 5.4-7.0 lib/API.js `update`): the apps' first lines would reach a bus nobody
 * listens to. So it waits for the new daemon (bounded), lets the bus connect to it, and hands
 * those lines to the new module as after any module restart.
 */
class DaemonWatch {
  readonly #home: string;
  #pid: number;
  /** Since when the daemon has been gone (0: it runs). */
  #goneSince = 0;
  /** Daemons that took over so far (`pm2 update`). */
  generation = 0;

  constructor(home: string) {
    this.#home = home;
    this.#pid = this.#pidNow();
  }

  /** Whether there was a daemon at the start (none after `pm2 kill`: nothing to bridge). */
  get found(): boolean {
    return this.#pid > 0;
  }

  /** Whether the daemon is gone for good (no new one of a `pm2 update` came, or none will). */
  gone(): boolean {
    if (pidAlive(this.#pid)) return false;
    const next = this.#pidNow();
    if (next > 0 && next !== this.#pid && pidAlive(next)) {
      this.#pid = next;
      this.#goneSince = 0;
      this.generation++;
      return false;
    }
    if (this.#goneSince === 0) {
      this.#goneSince = Date.now();
      return !justSaved(path.join(this.#home, 'dump.pm2'), this.#goneSince);
    }
    return Date.now() - this.#goneSince > NEW_DAEMON_WAIT_MS;
  }

  #pidNow(): number {
    try {
      return Number(fs.readFileSync(path.join(this.#home, 'pm2.pid'), 'utf8'));
    } catch {
      return 0;
    }
  }
}

class Bridge {
  readonly #args: BridgeArgs;
  readonly #client: Pm2Client;
  readonly #captured = new Deque<unknown>();
  #overflow = 0;
  /** How many of the captured packets (the oldest) came from an earlier daemon. */
  #earlier = 0;
  /** The old module's `stop` marker came: from now on, every packet is kept. */
  #armed = false;
  /** It announced itself (it listens). */
  #live = false;
  #done = false;
  /** The module's folder at the start, and whether PM2 has made a new one since. */
  readonly #oldFolder: string | undefined;
  #reinstalled = false;

  constructor(args: BridgeArgs, client: Pm2Client) {
    this.#args = args;
    this.#client = client;
    this.#oldFolder = folderIdentity(args.legacyDir);
  }

  start(): void {
    const daemon = new DaemonWatch(pm2Home());
    if (!daemon.found) process.exit(0);
    let generation = daemon.generation;
    const watch = setInterval(() => {
      if (daemon.gone()) return this.#finish('daemon gone', false);
      if (daemon.generation !== generation) {
        generation = daemon.generation;
        this.#earlier = this.#captured.size;
      }
      this.#watchReinstall();
    }, 100);
    watch.unref();
    setTimeout(() => this.#finish('no new module in time'), this.#args.maxMs).unref();
    setTimeout(() => {
      if (!this.#armed) this.#finish('never armed', false);
    }, ARM_MS).unref();

    this.#client
      .subscribe({ message: (p) => this.#onMessage(p), event: () => this.#announce() })
      // The daemon adds a subscriber when it accepts the connection, which can come after our
      // side says connected: say we listen at the first packet we get, or a little later.
      .then(() => setTimeout(() => this.#announce(), 100))
      .catch(() => this.#finish('could not listen'));
    // Keep running while the bus is open.
    setInterval(() => {}, 1 << 30);
  }

  #onMessage(p: unknown): void {
    const { nonce, dir, legacyDir } = this.#args;
    this.#announce();
    const m = markerOf(p, process.env.PM2SI_MODULE_NAME || undefined);
    if (m) {
      if (m.kind === 'stop' && m.nonce === nonce) this.#armed = true;
      // A module without a protocol (0.1.0) reads its handover from the module's folder.
      else if (m.kind === 'start' && this.#armed) this.#finish('handed over', true, m.protocol === undefined && legacyDir && this.#reinstalled ? legacyDir : dir);
      return;
    }
    if (!this.#armed) return;
    this.#captured.push(p);
    if (this.#captured.size > MAX_PACKETS) {
      this.#captured.shift();
      this.#overflow++;
      if (this.#earlier > 0) this.#earlier--;
    }
  }

  #announce(): void {
    if (this.#live || this.#done) return;
    this.#live = true;
    const { dir, nonce } = this.#args;
    writeJsonAtomic(files.bridge(dir), { format: HANDOVER_FORMAT, pid: process.pid, nonce, dir });
  }

  /** Once PM2 has made the module's folder anew, move the state file there and announce there too. */
  #watchReinstall(): void {
    const { dir, nonce, legacyDir } = this.#args;
    if (this.#reinstalled || !legacyDir || !this.#live) return;
    const now = folderIdentity(legacyDir);
    if (now === undefined || now === this.#oldFolder) return;
    this.#reinstalled = true;
    try {
      fs.renameSync(path.join(dir, 'state.json'), path.join(legacyDir, 'state.json'));
    } catch {
      /* none saved */
    }
    try {
      writeJsonAtomic(files.bridge(legacyDir), { format: HANDOVER_FORMAT, pid: process.pid, nonce, dir });
    } catch {
      /* the folder went again */
    }
  }

  /** Hand over what was captured (unless the daemon is gone: then nobody will take it), and exit. */
  #finish(reason: string, handOver = true, to = this.#args.dir): void {
    if (this.#done) return;
    this.#done = true;
    const { dir, nonce, legacyDir } = this.#args;
    const packets: unknown[] = [];
    for (let p = this.#captured.shift(); p !== undefined; p = this.#captured.shift()) packets.push(packets.length < this.#earlier ? fromEarlierDaemon(p) : p);
    try {
      if (handOver) writeJsonAtomic(files.handover(to, nonce), { format: HANDOVER_FORMAT, nonce, reason, overflow: this.#overflow, packets });
    } finally {
      for (const d of legacyDir ? [dir, legacyDir] : [dir]) {
        try {
          const info = JSON.parse(fs.readFileSync(files.bridge(d), 'utf8')) as { pid: number };
          if (info.pid === process.pid) fs.unlinkSync(files.bridge(d));
        } catch {
          /* not ours or gone */
        }
      }
      process.exit(0);
    }
  }
}

/**
 * A packet an earlier daemon published (before `pm2 update`): its pm_id named a process of that
 * daemon, and the new one numbers its processes anew (a resurrect fills gaps), so the id is marked
 * `_prev_<id>` and the packet is routed by its app's name alone (intake/router.ts).
 */
function fromEarlierDaemon(p: unknown): unknown {
  const proc = (p as { process?: { pm_id?: unknown } } | null)?.process;
  if (proc && typeof proc === 'object' && typeof proc.pm_id === 'number') proc.pm_id = `${EARLIER_DAEMON_PREFIX}${proc.pm_id}`;
  return p;
}

function main(): void {
  const args = argsOf(process.argv.slice(2));
  // It only listens: no RPC connection of its own for sends (rpc-channel.ts). Its bus connects
  // again within BUS_RETRY_MS when a new daemon takes over (`pm2 update`, above).
  const client = createPm2Client(loadPm2(process.env.PM2SI_DAEMON_ARGV1), { openChannel: null, busRetryMs: BUS_RETRY_MS });
  new Bridge(args, client).start();
}

main();
