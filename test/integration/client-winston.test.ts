/**
 * pm2-scoped-intercom/winston end to end: real winston 3 apps in cluster mode whose File transport
 * sits inside IntercomTransport; plus size rotation on the one writer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { clientLoggerSuite } from '../support/client-suite';
import { judge, formatJudgement } from '../support/judge.js';
import { logFile, reportDirOf, waitQuiet, waitSendersDone } from '../support/apps.js';
import { ROOT, waitFor } from '../support/pm2-sandbox.js';

clientLoggerSuite({
  logger: 'winston',
  prefix: 'w-',
  fixture: path.join(ROOT, 'test', 'fixtures', 'winston-app.js'),
  more: (suite) => {
    /** Start `name` (4 instances x `lines`, flat out) with File maxsize `maxSize`; judge the rotated files as one. */
    async function rotationRun(name: string, lines: number, maxSize: number) {
      await suite.sandbox().start([suite.app(name, { lines, env: { MAX_SIZE: String(maxSize) } })]);
      await waitSendersDone(suite.sandbox().work, name, 4, 120000);
      const dir = path.dirname(logFile(suite.sandbox().work, name));
      const re = new RegExp(`^${name}\\d*\\.log$`);
      const files = () => fs.readdirSync(dir).filter((f) => re.test(f)).map((f) => path.join(dir, f));
      const lineCount = () => files().reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length, 0);
      await waitFor(() => lineCount() >= 4 * lines, { timeoutMs: 120000, every: 200, what: `${4 * lines} lines across the ${name} files` });
      await waitQuiet(files(), 2000, 120000);
      // winston names them <name>.log, <name>1.log, <name>2.log, ...: judge them as one file.
      const all = path.join(suite.sandbox().work, `${name}.all`);
      const parts = files();
      fs.writeFileSync(all, parts.map((f) => fs.readFileSync(f, 'utf8')).join(''));
      const r = judge({ apps: [{ tag: name, file: all }], reportDir: reportDirOf(suite.sandbox().work) });
      console.log(`winston with File maxsize ${maxSize} rotation (${parts.length} files):\n${formatJudgement(r)}`);
      return { parts, r: r[name] };
    }

    // At defaults the senders batch: the writer's File transport gets hundreds of records per turn.
    // Before the adapter's rotation guards (client/winston.ts), winston lost up to 16 KB at each
    // rotation here and the line count never reached 4 x lines.
    it('File rotation by size (maxsize) on the one writer: every line once across the rotated files', async () => {
      const { parts, r } = await rotationRun('w-rot', 2000, 40000);
      expect(parts.length).toBeGreaterThan(2);
      expect(r, JSON.stringify(r.missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    });

    it('maxsize under the File transport\'s 32 KB of buffers, 24,000 lines flat out: every line once', async () => {
      const { parts, r } = await rotationRun('w-rot-small', 6000, 20000);
      expect(parts.length).toBeGreaterThan(10);
      expect(r, JSON.stringify(r.missingBySender)).toMatchObject({ senders: 4, sent: 24000, written: 24000, missing: 0, duplicated: 0, foreign: 0 });
    });
  },
});
