'use strict';
/**
 * A working example: two cluster apps that log with log4js `pm2: true`. With
 * pm2-scoped-intercom installed, each app's lines end up in that app's own file, each exactly
 * once. `npm run demo` starts this file in a private PM2 and checks the result.
 *
 *   pm2 install pm2-scoped-intercom                       # from the registry, once published
 *   pm2 install /absolute/path/pm2-scoped-intercom-0.3.0.tgz   # or today: `npm ci && npm pack` in a clone
 *   pm2 start ecosystem.config.js
 *
 * LOG_DIR / REPORT_DIR / LINES / RATE come from the environment of `pm2 start` (the demo sets
 * them); the defaults write next to the example app.
 */
const path = require('path');

const common = {
  script: path.join(__dirname, 'examples', 'log4js-app.js'),
  exec_mode: 'cluster', // log4js `pm2: true` is for cluster mode
  instances: 4,
  env: {
    LOG_DIR: process.env.LOG_DIR || path.join(__dirname, 'examples', 'logs'),
    REPORT_DIR: process.env.REPORT_DIR || '',
    LINES: process.env.LINES || '2000',
    RATE: process.env.RATE || '500',
  },
};

module.exports = {
  apps: [
    { name: 'api', ...common },
    // A second app: same log4js setup, its own file. Lines never cross between the two.
    { name: 'worker', ...common, instances: 3 },
  ],
};
