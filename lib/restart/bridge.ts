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
import { createPm2Client, loadPm2 } from '../pm2/pm2-client';
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

function main(): void {
  const [dir, nonce, maxArg, legacyDir] = process.argv.slice(2);
  const maxMs = Number(maxArg) > 0 ? Number(maxArg) : 60_000;
  // It only listens: no RPC connection of its own for sends (rpc-channel.ts). Its bus connects
  // again within BUS_RETRY_MS when a new daemon takes over (`pm2 update`, below).
  const client = createPm2Client(loadPm2(process.env.PM2SI_DAEMON_ARGV1), { openChannel: null, busRetryMs: BUS_RETRY_MS });
  const captured = new Deque<unknown>();
  let overflow = 0;
  let armed = false;
  let done = false;
  let live = false;
  const announce = (): void => {
    if (live || done) return;
    live = true;
    writeJsonAtomic(files.bridge(dir), { format: HANDOVER_FORMAT, pid: process.pid, nonce, dir });
  };
  // The module's folder as it is now: only a new one (another inode) is PM2's new install.
  // (inode and birth time: a file system may give a new folder the inode of the one just deleted)
  const inodeOf = (d: string | undefined): string | undefined => {
    try {
      const st = d ? fs.statSync(d) : undefined;
      return st ? `${st.ino}:${st.birthtimeMs}` : undefined;
    } catch {
      return undefined;
    }
  };
  const oldFolder = inodeOf(legacyDir);
  let reinstalled = false;
  const watchReinstall = (): void => {
    if (reinstalled || !legacyDir || !live) return;
    const now = inodeOf(legacyDir);
    if (now === undefined || now === oldFolder) return;
    reinstalled = true;
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
  };

  /** Hand over what was captured (unless the daemon is gone: then nobody will take it), and exit. */
  const finish = (reason: string, handOver = true, to = dir): void => {
    if (done) return;
    done = true;
    const packets: unknown[] = [];
    for (let p = captured.shift(); p !== undefined; p = captured.shift()) packets.push(p);
    try {
      if (handOver) writeJsonAtomic(files.handover(to, nonce), { format: HANDOVER_FORMAT, nonce, reason, overflow, packets });
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
  };

  const home = pm2Home();
  const daemonPidNow = (): number => {
    try {
      return Number(fs.readFileSync(path.join(home, 'pm2.pid'), 'utf8'));
    } catch {
      return 0;
    }
  };
  let daemonPid = daemonPidNow();
  if (!(daemonPid > 0)) process.exit(0); // no daemon (pm2 kill): nothing to bridge
  /** Since when the daemon has been gone (0: it runs). */
  let goneSince = 0;
  // `pm2 kill` stops the module too: when the daemon is gone, leave at once, writing nothing.
  // Unless PM2 has just saved its process list: `pm2 update` does that, kills the daemon, starts a
  // new one, resurrects the apps, and only then starts the modules (PM2 5.4-7.0 lib/API.js
  // `update`): the apps' first lines would reach a bus nobody listens to. So wait for the new
  // daemon (bounded), let the bus connect to it, and hand those lines to the new module as after
  // any module restart.
  const watch = setInterval(() => {
    if (!pidAlive(daemonPid)) {
      const next = daemonPidNow();
      if (next > 0 && next !== daemonPid && pidAlive(next)) {
        daemonPid = next;
        goneSince = 0;
      } else if (goneSince === 0) {
        goneSince = Date.now();
        if (!justSaved(path.join(home, 'dump.pm2'), goneSince)) return finish('daemon gone', false);
      } else if (Date.now() - goneSince > NEW_DAEMON_WAIT_MS) return finish('daemon gone', false);
    }
    watchReinstall();
  }, 100);
  watch.unref();
  setTimeout(() => finish('no new module in time'), maxMs).unref();
  setTimeout(() => {
    if (!armed) finish('never armed', false);
  }, ARM_MS).unref();

  client
    .subscribe({
      message: (p) => {
        announce();
        const m = markerOf(p, process.env.PM2SI_MODULE_NAME || undefined);
        if (m) {
          if (m.kind === 'stop' && m.nonce === nonce) armed = true;
          // A module without a protocol (0.1.0) reads its handover from the module's folder.
          else if (m.kind === 'start' && armed) finish('handed over', true, m.protocol === undefined && legacyDir && reinstalled ? legacyDir : dir);
          return;
        }
        if (!armed) return;
        captured.push(p);
        if (captured.size > MAX_PACKETS) {
          captured.shift();
          overflow++;
        }
      },
      event: () => announce(),
    })
    // The daemon adds a subscriber when it accepts the connection, which can come after our
    // side says connected: say we listen at the first packet we get, or a little later.
    .then(() => setTimeout(announce, 100))
    .catch(() => finish('could not listen'));
  // Keep running while the bus is open.
  setInterval(() => {}, 1 << 30);
}

main();
