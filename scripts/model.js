#!/usr/bin/env node
'use strict';
/**
 * The delivery model (test/unit/delivery-model.test.ts) with more random sequences than `npm test`
 * plays (2,000): no PM2, no build, one vitest process.
 *
 * Usage: node scripts/model.js [runs] [--seed N] [--path P] [--known] [--max-inflight N]
 *   runs            sequences to play (default 100000)
 *   --seed/--path   replay the failure a run printed (MODEL_SEED / MODEL_PATH)
 *   --known         also play the interleavings of the findings already reported (they fail)
 *   --max-inflight  the max_inflight setting (default 1)
 * Exits with vitest's code: 1 when a sequence breaks an invariant (its shrunk form is printed).
 */
const { spawnSync } = require('child_process');
const path = require('path');

const args = process.argv.slice(2);
const env = { ...process.env, MODEL_RUNS: '100000', MODEL_SEED: process.env.MODEL_SEED ?? 'random' };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--seed') env.MODEL_SEED = args[++i];
  else if (a === '--path') env.MODEL_PATH = args[++i];
  else if (a === '--known') env.MODEL_KNOWN = '1';
  else if (a === '--max-inflight') env.MODEL_MAX_INFLIGHT = args[++i];
  else if (/^\d+$/.test(a)) env.MODEL_RUNS = a;
  else {
    console.error(`unknown argument ${a}; usage: node scripts/model.js [runs] [--seed N] [--path P] [--known] [--max-inflight N]`);
    process.exit(2);
  }
}
const root = path.join(__dirname, '..');
const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', 'test/unit/delivery-model.test.ts'], { cwd: root, env, stdio: 'inherit' });
process.exit(r.status ?? 1);
