/**
 * pm2-scoped-intercom/pino end to end: real pino apps in cluster mode logging to
 * intercomDestination (on the writer: a pino.destination SonicBoom of the app's file). The restart
 * runs with instance_var INSTANCE_ID, which PM2 7 resets in process.env.instance_var on restart:
 * the client's instanceVar option keeps the writer a writer.
 */
import path from 'node:path';
import { clientLoggerSuite } from '../support/client-suite';
import { ROOT } from '../support/pm2-sandbox.js';

clientLoggerSuite({ logger: 'pino', prefix: 'p-', fixture: path.join(ROOT, 'test', 'fixtures', 'pino-app.js'), restartInstanceVar: 'INSTANCE_ID' });
