'use strict';
/**
 * A private PM2 for tests, the demo and the bench: its own PM2_HOME in a temp dir, driven through
 * the real `pm2` CLI, killed at the end (`pm2 kill` with that PM2_HOME only, never ~/.pm2).
 */
const { execFile, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

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

  async jlist() {
    const out = await this.pm2(['jlist']);
    const start = out.indexOf('[');
    return JSON.parse(out.slice(start));
  }

  /** pm2 install <absolute tarball>, then wait until the module is online. */
  async install(tarball) {
    // PM2SI_PROC_CHECKS=off plays a machine without /proc (macOS, Windows): set before the
    // install, which keeps values already set.
    if (process.env.PM2SI_PROC_CHECKS) await this.pm2(['set', `${MODULE}:proc_checks`, process.env.PM2SI_PROC_CHECKS]);
    await this.pm2(['install', path.resolve(tarball)], { timeoutMs: 180000 });
    await this.waitModuleOnline();
  }

  async moduleProc() {
    const list = await this.jlist();
    return list.find((p) => p.name === MODULE);
  }

  async waitModuleOnline(timeoutMs = 30000) {
    return waitFor(
      async () => {
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

  /** `pm2 trigger pm2-scoped-intercom <action> [param]` -> the parsed reply. */
  async trigger(action, param) {
    const out = await this.pm2(['trigger', MODULE, action, ...(param === undefined ? [] : [param])], { timeoutMs: 20000 });
    const m = out.match(/\]=(.*)$/m);
    if (!m) throw new Error(`no reply to ${action}: ${out}`);
    return JSON.parse(m[1]);
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

  /** Kill the daemon and remove the temp dir (unless KEEP_SANDBOX is set, for debugging). */
  async destroy() {
    await this.kill();
    // Retries: a module (or its handover bridge) may still be writing its state as the daemon dies.
    if (!process.env.KEEP_SANDBOX) fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
}

module.exports = { Pm2Sandbox, packTarball, waitFor, processesUnder, emptyProcWorks, ROOT, MODULE, PM2_BIN };
