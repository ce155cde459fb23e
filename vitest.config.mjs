import { defineConfig } from 'vitest/config';
import LongestFirst from './test/support/sequencer.mjs';

// One run for the whole suite (`npm test`): unit, integration and compat files share one pool of
// workers, one packed tarball (test/support/global-setup.js) and one schedule, longest file first.
// Each integration or compat file runs its own PM2 daemon (own PM2_HOME, own sockets) and never
// looks at another's, so two files may run at once: PM2SI_WORKERS (default 2, for 2 cores) says
// how many. docs/development.md, "Where the suite's time goes" has the measurements behind this.
const workers = Number(process.env.PM2SI_WORKERS || 2);

export default defineConfig({
  test: {
    pool: 'forks',
    maxWorkers: workers,
    fileParallelism: workers > 1,
    sequence: { sequencer: LongestFirst },
    testTimeout: 180000,
    hookTimeout: 300000,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: { name: 'integration', include: ['test/integration/**/*.test.ts'], globalSetup: ['test/support/global-setup.js'] },
      },
      {
        // PM2 5.4/6.0/7.0 and Node 22/24 (test/compat/versions.js), cached outside the repo.
        extends: true,
        test: { name: 'compat', include: ['test/compat/**/*.compat.ts'], globalSetup: ['test/support/global-setup.js', 'test/compat/setup.js'] },
      },
    ],
  },
});
