'use strict';
/**
 * A private PM2 for tests, the demo and the bench: its own PM2_HOME in a temp dir, driven through
 * the real `pm2` CLI, killed at the end (`pm2 kill` with that PM2_HOME only, never ~/.pm2).
 */
const { execFile, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const rpc = require('./pm2-rpc');

const ROOT = path.resolve(__dirname, '..', '..');
const PM2_BIN = require.resolve('pm2/bin/pm2', { paths: [ROOT] });
const MODULE = 'pm2-scoped-intercom';
/** PM2_HOME -> { bin: the pm2 CLI script that runs its daemon, node: the node that runs it }. */
const live = new Map();

function killSync(home, pm2Bin = PM2_BIN, node = process.execPath) {
  try {
    execFileSync(node, [pm2Bin, 'kill'], { env: sandboxEnv(home, {}, node), stdio: 'ignore', timeout: 20000 });
  } catch {
    /* already gone */
  }
}

// Last resort: a test runner that dies still takes its daemons with it.
process.on('exit', () => {
  for (const [home, { bin, node }] of live) killSync(home, bin, node);
});

/**
 * The environment of the pm2 CLI (and so of its daemon, the apps and the module). With another
 * `node` than the one running the tests, its folder comes first on PATH: PM2 runs everything on
 * the node that runs it, and whatever a child finds as `node` is the same one.
 */
function sandboxEnv(home, extra = {}, node = process.execPath) {
  const env = { ...process.env, PM2_HOME: home, ...extra };
  if (node !== process.execPath) env.PATH = `${path.dirname(node)}${path.delimiter}${process.env.PATH || ''}`;
  // Our own variables must not leak into the apps PM2 starts.
  delete env.PM2_USAGE;
  delete env.PM2_PROGRAMMATIC;
  return env;
}

/** Can this machine run a process with an empty /proc (`unshare --mount`, root or user namespaces)? */
function emptyProcWorks() {
  try {
    execFileSync('unshare', ['--mount', 'sh', '-c', 'mount -t tmpfs none /proc && test ! -e /proc/self'], { stdio: 'ignore', timeout: 10000 });
    return true;
  } catch {
    return false;
  }
}

/** Pids of processes whose command line names `dir` (Linux /proc; [] elsewhere). */
function processesUnder(dir) {
  let pids = [];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  return pids.filter((pid) => {
    try {
      return Number(pid) !== process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
    } catch {
      return false;
    }
  });
}

/** Child pids of a process (Linux /proc; [] elsewhere or when it is gone). */
function childrenOf(pid) {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .flatMap((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/))
      .map(Number)
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}

/** Poll `check` until it returns a truthy value, at most `timeoutMs`. */
async function waitFor(check, { timeoutMs = 30000, every = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** `npm pack` the project (prepack builds dist/) into `dest`; returns the tarball's absolute path. */
function packTarball(dest = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-pack-'))) {
  const out = execFileSync('npm', ['pack', '--silent', '--pack-destination', dest], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const name = out.trim().split('\n').pop().trim();
  const file = path.join(dest, name);
  if (!fs.existsSync(file)) throw new Error(`npm pack did not produce ${file}: ${out}`);
  return file;
}

class Pm2Sandbox {
  /**
   * @param {string} [prefix]
   * @param {{ pm2Bin?: string, node?: string, env?: Record<string, string> }} [opts]  pm2Bin: path
   *   to another pm2 CLI script (bin/pm2) to run as daemon and CLI (default: the project's own
   *   pm2); node: the node binary that runs the CLI, so the daemon, apps and module too (default:
   *   process.execPath); env: more variables for every pm2 command (the daemon inherits them)
   */
  static create(prefix = 'pm2si-', opts = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    return new Pm2Sandbox(dir, opts);
  }

  /**
   * `emptyProc`: run the pm2 CLI, and so the daemon it starts, the apps and the module, with an
   * empty /proc (a tmpfs over it in a private mount namespace): how the module sees macOS, Windows
   * or a locked-down container. Needs `unshare` and the right to mount (see `emptyProcWorks`).
   */
  constructor(dir, { pm2Bin = PM2_BIN, node = process.execPath, env = {}, emptyProc = false } = {}) {
    this.dir = dir;
    this.emptyProc = emptyProc;
    this.pm2Bin = pm2Bin;
    this.node = node;
    this.extraEnv = env;
    this.home = path.join(dir, 'pm2');
    this.work = path.join(dir, 'work');
    fs.mkdirSync(this.home, { recursive: true });
    fs.mkdirSync(this.work, { recursive: true });
    live.set(this.home, { bin: this.pm2Bin, node: this.node });
  }

  get env() {
    return sandboxEnv(this.home, this.extraEnv, this.node);
  }

  /** Run the pm2 CLI; resolves with stdout, rejects with stdout+stderr on a non-zero exit. */
  pm2(args, { timeoutMs = 120000, env = {} } = {}) {
    return new Promise((resolve, reject) => {
      const [cmd, argv] = this.emptyProc
        ? ['unshare', ['--mount', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" "$@"', this.node, this.pm2Bin, ...args]]
        : [this.node, [this.pm2Bin, ...args]];
      execFile(cmd, argv, { env: { ...this.env, ...env }, cwd: this.work, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`pm2 ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
        else resolve(stdout);
      });
    });
  }

  /** `pm2 jlist`, asked on the daemon's socket (pm2-rpc.js: a CLI run costs 0.3 s of CPU). */
  async jlist() {
    return rpc.jlist(this.home);
  }

  /**
   * pm2 install <absolute tarball>, then wait until the module is online.
   *
   * The tarball globalSetup packed for this run goes through `pm2 install` in the first sandbox
   * that needs it: what that leaves in PM2_HOME (modules/ and module_conf.json) is kept in the
   * pack folder, and a later sandbox on the project's own pm2 and node, with no daemon yet, gets
   * a copy and starts its daemon, which launches the installed module as at a reboot (about 6 s
   * less a sandbox, docs/development.md, "Where the suite's time goes"). Tests of `pm2 install` itself install other tarballs,
   * other PM2 versions or over a running module, which always take the real path.
   */
  async install(tarball) {
    tarball = path.resolve(tarball);
    const template = this.#templateFor(tarball);
    if (template && fs.existsSync(template)) {
      for (const f of fs.readdirSync(template)) fs.cpSync(path.join(template, f), path.join(this.home, f), { recursive: true });
      await this.pm2(['ping']);
      await this.waitModuleOnline();
      return;
    }
    // PM2SI_PROC_CHECKS=off plays a machine without /proc (macOS, Windows): set before the
    // install, which keeps values already set.
    if (process.env.PM2SI_PROC_CHECKS) await this.pm2(['set', `${MODULE}:proc_checks`, process.env.PM2SI_PROC_CHECKS]);
    await this.pm2(['install', tarball], { timeoutMs: 180000 });
    await this.waitModuleOnline();
    if (template && !fs.existsSync(template)) {
      // Copy, then rename: another worker may be doing the same.
      const tmp = fs.mkdtempSync(`${template}.tmp-`);
      fs.cpSync(path.join(this.home, 'modules'), path.join(tmp, 'modules'), { recursive: true });
      fs.copyFileSync(path.join(this.home, 'module_conf.json'), path.join(tmp, 'module_conf.json'));
      try {
        fs.renameSync(tmp, template);
      } catch {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    }
  }

  /** Where a copy of this install may be kept, or undefined when this install must be real. */
  #templateFor(tarball) {
    const packed = process.env.PM2SI_PACK_DIR;
    if (!packed || path.dirname(tarball) !== packed || process.env.PM2SI_PROC_CHECKS) return undefined;
    if (this.pm2Bin !== PM2_BIN || this.node !== process.execPath) return undefined;
    // Only into an empty PM2_HOME: no daemon yet, no module settings made.
    if (fs.readdirSync(this.home).length > 0) return undefined;
    return path.join(packed, `pm2-home-${path.basename(tarball)}`);
  }

  async moduleProc() {
    const list = await this.jlist();
    return list.find((p) => p.name === MODULE);
  }

  async waitModuleOnline(timeoutMs = 30000) {
    return waitFor(
      async () => {
        // The log first: each `pm2 jlist` is a CLI run (0.5 to 1 s on a busy machine).
        if (!this.moduleLog().includes('relaying')) return undefined;
        const m = await this.moduleProc();
        return m && m.pm2_env.status === 'online' && this.moduleLog().includes('relaying') ? m : undefined;
      },
      { timeoutMs, every: 200, what: 'the module to be online' },
    );
  }

  /**
   * Everything the module wrote to `pm2 logs` (stdout, then stderr); with `since` (a `moduleLogMark()`),
   * only what each file got after it. (Not `moduleLog().slice(length)`: stdout comes first, so its
   * new lines would be cut by stderr's length.)
   */
  moduleLog(since) {
    return this.#moduleLogTexts()
      .map((text, i) => text.slice(since ? since[i] : 0))
      .join('');
  }

  /** Where the module's log files end now, for `moduleLog(since)`. */
  moduleLogMark() {
    return this.#moduleLogTexts().map((text) => text.length);
  }

  /** The module's stdout and stderr files in `pm2 logs`, in that order ('' where there is none). */
  #moduleLogTexts() {
    return [`${MODULE}-out.log`, `${MODULE}-error.log`].map((f) => {
      const p = path.join(this.home, 'logs', f);
      return fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '';
    });
  }

  /** Write an ecosystem file for `apps` and `pm2 start` it. */
  async start(apps, name = `eco-${Date.now()}`) {
    const file = path.join(this.work, `${name}.config.js`);
    fs.writeFileSync(file, `module.exports = ${JSON.stringify({ apps }, null, 2)};\n`);
    await this.pm2(['start', file]);
    return file;
  }

  /** `pm2 trigger pm2-scoped-intercom <action> [param]` -> the reply (asked as the CLI does: pm2-rpc.js). */
  async trigger(action, param) {
    return rpc.trigger(this.home, MODULE, action, param);
  }

  async kill() {
    let pid = 0;
    try {
      pid = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8'));
    } catch {
      /* no daemon */
    }
    if (pid > 0) {
      await this.pm2(['kill'], { timeoutMs: 30000 }).catch(() => killSync(this.home, this.pm2Bin, this.node));
      // `pm2 kill` returns before the daemon has exited: wait for it (bounded).
      await waitFor(
        () => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        },
        { timeoutMs: 15000, every: 50, what: `the PM2 daemon (pid ${pid}) to exit` },
      ).catch(() => {});
      // Then for anything still running from this PM2_HOME (the module's handover bridge leaves
      // by itself once the daemon is gone): it may still write into the folder.
      await waitFor(() => processesUnder(this.home).length === 0, { timeoutMs: 10000, every: 50, what: `processes of ${this.home} to exit` }).catch(() => {});
    }
    live.delete(this.home);
  }

  /**
   * SIGKILL the daemon (only if /proc says it is this sandbox's: its title names PM2_HOME), every
   * process below it and every process whose command line names PM2_HOME, then wait (bounded) until
   * they are gone. False where it cannot tell (no /proc, not our daemon): then `kill()` does it.
   */
  async #killHard() {
    let daemon = 0;
    try {
      daemon = Number(fs.readFileSync(path.join(this.home, 'pm2.pid'), 'utf8'));
    } catch {
      /* no daemon */
    }
    if (!fs.existsSync('/proc/self/stat')) return false;
    let title = '';
    try {
      title = fs.readFileSync(`/proc/${daemon}/cmdline`, 'utf8');
    } catch {
      daemon = 0; // gone already (pm2-runtime's daemon ends with it): `pm2 kill` would start one
    }
    if (daemon > 0 && !title.includes(this.home)) return false;
    const pids = new Set(processesUnder(this.home).map(Number));
    const below = (pid) => {
      pids.add(pid);
      for (const child of childrenOf(pid)) if (!pids.has(child)) below(child);
    };
    if (daemon > 0) below(daemon);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const gone = (pid) => {
      try {
        // A zombie (killed, not reaped yet) is gone for our purpose.
        return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return true;
      }
    };
    await waitFor(() => [...pids].every(gone), { timeoutMs: 15000, every: 20, what: `the processes of ${this.home} to die` }).catch(() => {});
    live.delete(this.home);
    return true;
  }

  /**
   * Kill the daemon and remove the temp dir (unless KEEP_SANDBOX is set, for debugging). At the
   * end of a test nothing is judged any more, so where it can (Linux) it does not wait for
   * `pm2 kill` to stop every app and the module gracefully (5 to 8 s a sandbox, measured in
   * docs/development.md, "Where the suite's time goes"): SIGKILL to the daemon and everything under it.
   */
  async destroy() {
    if (!(await this.#killHard())) await this.kill();
    // Retries: a module (or its handover bridge) may still be writing its state as the daemon dies.
    if (!process.env.KEEP_SANDBOX) fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
}

module.exports = { Pm2Sandbox, packTarball, waitFor, processesUnder, emptyProcWorks, ROOT, MODULE, PM2_BIN };
