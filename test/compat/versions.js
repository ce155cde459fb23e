'use strict';
/**
 * The PM2 versions the compat suite runs as daemon and CLI, each installed once into the
 * git-ignored cache `.compat/pm2-<version>/` with the ordinary npm client.
 *
 * PM2_COMPAT_VERSIONS="5.4.3,7.0.4" narrows the list (e.g. to rerun one version).
 */
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { ROOT } = require('../support/pm2-sandbox');

const ALL_VERSIONS = ['5.4.3', '6.0.14', '7.0.4'];
const CACHE = path.join(ROOT, '.compat');

function versions() {
  const only = (process.env.PM2_COMPAT_VERSIONS || '').split(',').map((s) => s.trim()).filter(Boolean);
  return only.length > 0 ? only : ALL_VERSIONS;
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

module.exports = { ALL_VERSIONS, versions, pm2Paths, ensurePm2, CACHE };
