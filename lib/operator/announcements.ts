/**
 * What the delivery's units announce (the hold buffer, the outbox, the writer table), said in
 * `pm2 logs`: each announcement worded (wording.ts) and given to the reporter, which says a line
 * once, sums counts and says each diagnosis once per app.
 */
import type { OutboxEvents } from '../deliver/outbox';
import type { HoldEvents } from '../hold/hold-buffer';
import type { WriterEvents } from '../table/writer-table';
import type { Reporter } from './reporter';
import type { Settings } from './settings';
import * as say from './wording';

export interface Listener {
  reporter: Reporter;
  settings: Settings;
  spool?: { readonly failure?: string; readonly dir: string };
  /** Why an app's packets wait (the writer table's account). */
  whyNoWriter(appKey: string): string;
  /** Whether the module holds, or has held, log packets of the app (else its writer is not news). */
  holds(appKey: string): boolean;
}

export function sayHoldEvents(l: Listener): HoldEvents {
  return {
    overflow: (appKey, n, why) => {
      const bound = say.overflowBound(why, l.settings, l.spool?.failure);
      l.reporter.count(say.droppedBufferFull(appKey, bound), n);
      l.reporter.diagnose(appKey, 'buffer-full', () => say.bufferFull(bound, l.whyNoWriter(appKey)));
    },
    spooling: (appKey) => l.reporter.info(say.spooling(appKey, l.settings, l.spool?.dir)),
  };
}

export function sayOutboxEvents(l: Listener): Pick<OutboxEvents, 'flushing' | 'replayed'> {
  return {
    flushing: (appKey, n, writer) => l.reporter.info(say.deliveringHeld(appKey, n, writer)),
    replayed: (pmId, n) => l.reporter.count(say.sentAgain(pmId), n),
  };
}

export function sayWriterEvents(l: Listener): Pick<WriterEvents, 'writerElected' | 'duplicateWriter' | 'writerWithoutFiles' | 'outOfService'> {
  return {
    writerElected: (key, elected) => {
      if (elected !== undefined) l.reporter.info(say.writerIs(key, elected));
      else if (l.holds(key)) l.reporter.info(say.holdingNoWriter(key, l.settings));
    },
    duplicateWriter: (key, claimants) => {
      if (l.holds(key)) l.reporter.diagnose(key, 'duplicate-writer', () => say.duplicateWriter(claimants, l.settings.writer_instance));
    },
    writerWithoutFiles: (key, writer, files, waited) => l.reporter.diagnose(key, 'files', () => say.writerWithoutFiles(writer, files, waited)),
    outOfService: (pmId, why) => l.reporter.count('refused' in why ? say.sendsRefused(why.refused) : say.sendsStopped(pmId, say.vacancy(why.vacancy))),
  };
}
