// PM2 7 on Node 24: daemon, apps and module (test/compat/node-versions.ts).
import { nodeVersionSuites } from './node-versions';
import { ALL_NODES } from './versions.js';

nodeVersionSuites(ALL_NODES.find((v: string) => v.startsWith('24.'))!);
