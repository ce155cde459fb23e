#!/usr/bin/env node
'use strict';
/**
 * How long `pm2 install <tarball>` takes, and how much it puts on disk, with `pm2` as a regular
 * dependency of the module vs. as an optional peer dependency (npm then installs no pm2 copy).
 *
 *   node test/compat/measure-install.js [--versions 7.0.4,5.4.3] [--runs 3] [--cold]
 *
 * Builds both variants from one `npm pack` of the project (only package.json differs), then for
 * each pm2 version and variant installs into a fresh private daemon. --cold gives every install an
 * empty npm cache (as on a host that never installed pm2 7), otherwise the machine's cache is used.
 */
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Pm2Sandbox, packTarball, MODULE } = require('../support/pm2-sandbox');
const { ensurePm2 } = require('./versions');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const versions = opt('--versions', '7.0.4').split(',');
const runs = Number(opt('--runs', '3'));
const cold = args.includes('--cold');

/** Rewrite package.json inside a tarball; returns the new tarball (same file name, new dir). */
function variant(tarball, edit) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-variant-'));
  execFileSync('tar', ['xzf', tarball, '-C', dir]);
  const pj = path.join(dir, 'package', 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pj, 'utf8'));
  edit(pkg);
  fs.writeFileSync(pj, `${JSON.stringify(pkg, null, 2)}\n`);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const file = path.join(out, path.basename(tarball));
  execFileSync('tar', ['czf', file, '-C', dir, 'package']);
  return file;
}

function duKb(p) {
  try {
    return Number(execFileSync('du', ['-sk', p], { encoding: 'utf8' }).split('\t')[0]);
  } catch {
    return NaN;
  }
}

async function main() {
  const base = process.env.PM2SI_TARBALL || packTarball();
  const variants = {
    dependency: variant(base, (pkg) => {
      pkg.dependencies = { ...pkg.dependencies, pm2: pkg.dependencies?.pm2 || pkg.peerDependencies?.pm2 || '^7.0.4' };
      delete pkg.peerDependencies?.pm2;
      delete pkg.peerDependenciesMeta?.pm2;
      if (pkg.dependencies.pm2.includes('||') || pkg.dependencies.pm2.startsWith('>=')) pkg.dependencies.pm2 = '^7.0.4';
    }),
    'optional-peer': variant(base, (pkg) => {
      delete pkg.dependencies?.pm2;
      pkg.peerDependencies = { ...(pkg.peerDependencies || {}), pm2: '>=5.4.0' };
      pkg.peerDependenciesMeta = { ...(pkg.peerDependenciesMeta || {}), pm2: { optional: true } };
    }),
  };
  const rows = [];
  for (const version of versions) {
    const { bin } = ensurePm2(version);
    for (let run = 1; run <= runs; run++) {
      for (const [name, tarball] of Object.entries(variants)) {
        const sb = Pm2Sandbox.create(`pm2si-measure-${version}-`, { pm2Bin: bin });
        const cache = cold ? fs.mkdtempSync(path.join(os.tmpdir(), 'pm2si-npmcache-')) : undefined;
        const saved = process.env.npm_config_cache;
        if (cache) process.env.npm_config_cache = cache;
        try {
          await sb.pm2(['ping']);
          const t0 = Date.now();
          await sb.pm2(['install', tarball], { timeoutMs: 600000 });
          const installMs = Date.now() - t0;
          await sb.waitModuleOnline(60000);
          const onlineMs = Date.now() - t0;
          const modDir = path.join(sb.home, 'modules', MODULE);
          const log = sb.moduleLog();
          const src = (log.match(/relaying \(pm2 ([^ ]+) from the (\w+)/) || []).slice(1).join(' from ');
          const hasPm2 = fs.existsSync(path.join(modDir, 'node_modules', 'pm2'));
          rows.push({ version, variant: name, run, cache: cold ? 'cold' : 'warm', installMs, onlineMs, diskMB: +(duKb(modDir) / 1024).toFixed(1), pm2Copy: hasPm2, client: src });
          console.log(JSON.stringify(rows[rows.length - 1]));
        } finally {
          if (cache) {
            if (saved === undefined) delete process.env.npm_config_cache;
            else process.env.npm_config_cache = saved;
            fs.rmSync(cache, { recursive: true, force: true });
          }
          await sb.destroy();
        }
      }
    }
  }
  console.log('\nversion  variant        cache  runs  install ms (median)  disk MB  pm2 copy  client');
  const groups = new Map();
  for (const r of rows) {
    const k = `${r.version}|${r.variant}|${r.cache}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  for (const [k, list] of groups) {
    const [version, name, c] = k.split('|');
    const ms = list.map((r) => r.installMs).sort((a, b) => a - b);
    const med = ms[Math.floor(ms.length / 2)];
    console.log(`${version.padEnd(8)} ${name.padEnd(14)} ${c.padEnd(5)} ${String(list.length).padStart(4)}  ${String(med).padStart(8)} (${ms.join(', ')})  ${String(list[0].diskMB).padStart(7)}  ${String(list[0].pm2Copy).padEnd(8)}  ${list[0].client}`);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  },
);
