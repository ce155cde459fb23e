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
    it('File rotation by size (maxsize) on the one writer: every line once across the rotated files', async () => {
      await suite.sandbox().start([suite.app('w-rot', { lines: 2000, env: { MAX_SIZE: '40000' } })]);
      await waitSendersDone(suite.sandbox().work, 'w-rot', 4, 120000);
      const dir = path.dirname(logFile(suite.sandbox().work, 'w-rot'));
      const files = () => fs.readdirSync(dir).filter((f) => /^w-rot\d*\.log$/.test(f)).map((f) => path.join(dir, f));
      const lineCount = () => files().reduce((n, f) => n + fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length, 0);
      await waitFor(() => lineCount() >= 8000, { timeoutMs: 120000, every: 200, what: '8000 lines across the w-rot files' });
      await waitQuiet(files(), 2000, 120000);
      // winston names them w-rot.log, w-rot1.log, w-rot2.log, ...: judge them as one file.
      const all = path.join(suite.sandbox().work, 'w-rot.all');
      const parts = files();
      fs.writeFileSync(all, parts.map((f) => fs.readFileSync(f, 'utf8')).join(''));
      const r = judge({ apps: [{ tag: 'w-rot', file: all }], reportDir: reportDirOf(suite.sandbox().work) });
      console.log(`winston with File maxsize rotation (${parts.length} files):\n${formatJudgement(r)}`);
      expect(parts.length).toBeGreaterThan(2);
      expect(r['w-rot'], JSON.stringify(r['w-rot'].missingBySender)).toMatchObject({ senders: 4, sent: 8000, written: 8000, missing: 0, duplicated: 0, foreign: 0 });
    });
  },
});
