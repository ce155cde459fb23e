'use strict';
// Pack the module once per test run; integration and compat tests install this tarball. Both
// projects list this setup: the first packs, the second finds PM2SI_TARBALL set and shares it.
// The pack folder is removed at the end of the run.
const fs = require('fs');
const path = require('path');
const { packTarball } = require('./pm2-sandbox');

module.exports = async function setup({ provide }) {
  if (process.env.PM2SI_TARBALL) {
    if (provide) provide('tarball', process.env.PM2SI_TARBALL);
    return undefined;
  }
  const file = packTarball();
  process.env.PM2SI_TARBALL = file;
  // Sandboxes may keep a copy of their install of this tarball here (Pm2Sandbox.install).
  process.env.PM2SI_PACK_DIR = path.dirname(file);
  if (provide) provide('tarball', file);
  return function teardown() {
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
    delete process.env.PM2SI_TARBALL;
    delete process.env.PM2SI_PACK_DIR;
  };
};
