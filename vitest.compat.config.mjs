import { defineConfig } from 'vitest/config';

// `npm run test:compat`: the module installed from its tarball into PM2 daemons of several
// versions (test/compat/versions.js). Its files are *.compat.ts, so the main suite (vitest.config.mjs,
// test/**/*.test.ts) does not pick them up.
export default defineConfig({
  test: {
    include: ['test/compat/**/*.compat.ts'],
    globalSetup: ['test/support/global-setup.js', 'test/compat/setup.js'],
    fileParallelism: false,
    testTimeout: 180000,
    hookTimeout: 300000,
    pool: 'forks',
  },
});
