import { describe, expect, it } from 'vitest';
import type { OutPacket } from '../../lib/shared/packet';
import { countLines, decodePackets, encodePacket, parseSegmentName, segmentName, SPOOL_FORMAT } from '../../lib/hold/spool-format';

describe('spool format: a packet as a line and back', () => {
  it('writes a log4js string as a slice line (`s<topic>\\t<data>`), no JSON', () => {
    const line = encodePacket({ topic: 'log4js:message', data: '{"startTime":"2026","data":["hi"]}' });
    expect(line).toBe('slog4js:message\t{"startTime":"2026","data":["hi"]}\n');
  });

  it('writes anything else as JSON (`j[topic, data]`): objects, strings with a newline, topics with a tab', () => {
    expect(encodePacket({ topic: 't', data: { a: 1 } })).toBe('j["t",{"a":1}]\n');
    expect(encodePacket({ topic: 't', data: 'two\nlines' })).toBe('j["t","two\\nlines"]\n');
    expect(encodePacket({ topic: 'a\tb', data: 'x' })).toBe('j["a\\tb","x"]\n');
  });

  it('refuses data that is not JSON (undefined), and every line it writes is exactly one line', () => {
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    expect(encodePacket({ topic: 't', data: loop })).toBeUndefined();
    expect(encodePacket({ topic: 't', data: 10n })).toBeUndefined();
    for (const data of ['a', 'a\nb', { m: 'x\ny' }, [1, 2], 3, null, '']) {
      const line = encodePacket({ topic: 't', data }) as string;
      expect(line.endsWith('\n')).toBe(true);
      expect(line.indexOf('\n')).toBe(line.length - 1);
    }
  });

  it('reads back what it wrote, in order, equal in topic and data', () => {
    const packets: OutPacket[] = [
      { topic: 'log4js:message', data: 'plain' },
      { topic: 'pm2-scoped-intercom:log', data: { ch: 'default', r: { msg: 'a\nb', n: 1 } } },
      { topic: 'log4js:message', data: 'two\nlines' },
      { topic: 'a\tb', data: 'x' },
      { topic: 'log4js:message', data: '{"data":["\\t tab"]}' },
      { topic: 't', data: '' },
      { topic: 't', data: null },
      { topic: 't', data: 0 },
    ];
    const text = packets.map((p) => encodePacket(p)).join('');
    expect(decodePackets(text)).toEqual({ packets, bad: 0 });
    expect(countLines(Buffer.from(text))).toBe(packets.length);
  });

  it('reads a last line without its newline (a write cut short) and skips unreadable lines, counted', () => {
    const text = 'st\tone\nxgarbage\nsno-tab\nj[1,"number topic"]\nj{not json\nj["t"]\n\nst\ttwo';
    expect(decodePackets(text)).toEqual({
      packets: [
        { topic: 't', data: 'one' },
        { topic: 't', data: 'two' },
      ],
      bad: 5,
    });
    expect(decodePackets('')).toEqual({ packets: [], bad: 0 });
  });
});

describe('spool format: segment file names', () => {
  it('names a segment by app key (hex), sequence and format, and reads the name back', () => {
    const name = segmentName('default\u0000api', 1765000000000123);
    expect(name).toBe(`${Buffer.from('default\u0000api').toString('hex')}-1765000000000123.v${SPOOL_FORMAT}.jsonl`);
    expect(parseSegmentName(name)).toEqual({ appKey: 'default\u0000api', seq: 1765000000000123, format: SPOOL_FORMAT });
    expect(parseSegmentName(segmentName('ünï/c\u00f8de', 7))).toEqual({ appKey: 'ünï/c\u00f8de', seq: 7, format: SPOOL_FORMAT });
  });

  it('reads the format of any version, and ignores files that are not segments', () => {
    expect(parseSegmentName('61-5.v9.jsonl')).toEqual({ appKey: 'a', seq: 5, format: 9 });
    for (const other of ['61-5.v1.jsonl.unknown-17', 'state.json', '61-x.v1.jsonl', 'zz-5.v1.jsonl', '61-5.jsonl']) {
      expect(parseSegmentName(other)).toBeUndefined();
    }
  });
});
