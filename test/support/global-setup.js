'use strict';
// Pack the module once per test run; integration tests install this tarball.
const { packTarball } = require('./pm2-sandbox');

module.exports = async function setup({ provide }) {
  if (process.env.PM2SI_TARBALL) return;
  const file = packTarball();
  process.env.PM2SI_TARBALL = file;
  if (provide) provide('tarball', file);
};
