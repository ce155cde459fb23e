/**
 * A send answered with an error inside the call itself (the send guard refuses a pm_id it knows
 * is closed or being replaced): the outbox takes the target out of service and stops, instead of
 * sending the same packet again in the same loop for ever.
 */
import { describe, expect, it } from 'vitest';
import { newCounters, Outbox, type SendFn } from '../../lib/outbox';

describe('outbox with a send that answers at once', () => {
  it('a synchronous refusal takes the target out of service after one try; nothing is lost', () => {
    let tries = 0;
    const send: SendFn = (_pmId, _topic, _data, done) => {
      tries++;
      if (tries > 100) throw new Error('the outbox kept sending to a refused target');
      done(new Error('Process with ID <1> offline'));
    };
    let writer: number | undefined = 1;
    const errors: number[] = [];
    const counters = newCounters();
    const outbox = new Outbox({
      send,
      writerOf: () => writer,
      onSendError: (pmId) => {
        errors.push(pmId);
        writer = undefined; // what the relay does: the process is out of service
      },
      onOverflow: () => {},
      generationOf: () => 1,
      vacated: () => undefined,
      onVacated: () => {},
      now: () => 0,
      counters,
      bufferBytes: 1 << 20,
      maxInflight: 1,
    });
    for (let i = 0; i < 5; i++) outbox.pushLog('app', { topic: 'log4js:message', data: `line ${i}` });
    expect(tries).toBe(1);
    expect(errors).toEqual([1]);
    expect(outbox.held('app')).toBe(5);
    expect(counters.dropped).toBe(0);
  });
});
