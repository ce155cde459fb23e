// Longest file first, from test/support/durations.json (seconds per file, measured; see
// docs/development.md, "Where the suite's time goes"): with two workers the run ends when the last long file ends, so the long
// ones must not start last. vitest's own order needs a results cache a fresh clone lacks, and it
// runs projects one after the other.
import fs from 'node:fs';
import path from 'node:path';
import { BaseSequencer } from 'vitest/node';

const durations = JSON.parse(fs.readFileSync(new URL('./durations.json', import.meta.url), 'utf8'));

export default class LongestFirst extends BaseSequencer {
  async sort(files) {
    const root = this.ctx.config.root;
    const seconds = (spec) => durations[path.relative(root, spec.moduleId).split(path.sep).join('/')] ?? 1;
    return [...files].sort((a, b) => seconds(b) - seconds(a));
  }
}
