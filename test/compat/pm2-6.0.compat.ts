// PM2 6.0 as daemon and CLI (test/compat/pm2-versions.ts).
import { pm2VersionSuite } from './pm2-versions';
import { ALL_VERSIONS } from './versions.js';

pm2VersionSuite(ALL_VERSIONS.find((v: string) => v.startsWith('6.0.'))!);
