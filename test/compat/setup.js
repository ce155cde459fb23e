'use strict';
// Global setup of the compat suite (after test/support/global-setup.js packed the tarball):
// install every PM2 version under test into .compat/ (once; later runs reuse the cache).
const { execFile } = require('child_process');
const path = require('path');
const { versions, pm2Paths, CACHE } = require('./versions');
const { ROOT } = require('../support/pm2-sandbox');
const fs = require('fs');

function installed(version) {
  try {
    return JSON.parse(fs.readFileSync(path.join(pm2Paths(version).root, 'package.json'), 'utf8')).version === version;
  } catch {
    return false;
  }
}

module.exports = async function setup() {
  const missing = versions().filter((v) => !installed(v));
  await Promise.all(
    missing.map(
      (v) =>
        new Promise((resolve, reject) => {
          const args = ['install', '--prefix', path.join(CACHE, `pm2-${v}`), `pm2@${v}`, '--no-save', '--no-audit', '--no-fund', '--loglevel=error'];
          execFile('npm', args, { cwd: ROOT, timeout: 300000 }, (err, _out, stderr) => {
            if (err || !installed(v)) reject(new Error(`npm ${args.join(' ')} failed: ${err ? err.message : 'not installed'}\n${stderr}`));
            else resolve();
          });
        }),
    ),
  );
};
