import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.js'],
    // Integration files each run a PM2 daemon with several apps: one at a time on 2 cores.
    fileParallelism: false,
    testTimeout: 180000,
    hookTimeout: 240000,
    pool: 'forks',
  },
});
