// The query-string grammar against JSON.parse, the independent reference it claims to follow.

import { describe, expect, it } from 'vitest';
import { parseQueryBoolean, parseQueryInteger, parseQueryNumber } from './query.ts';

const CANDIDATES = [
  '0', '-0', '16', '-3', '007', '0x10', '0o7', '0b11', '1e1', '1E+2', '1e-3', '2.5', '-2.50', '.5', '5.', '+1', ' 1', '1 ', '1_000',
  '', '-', 'e5', 'Infinity', '-Infinity', 'NaN', 'true', 'null', '1e999', '9007199254740991', '9007199254740993', '１', '1\n', '"1"',
];

/** What JSON.parse makes of the text as a whole, when it is a finite number written without surrounding whitespace. */
function jsonNumber(text: string): number | undefined {
  if (text.trim() !== text) return undefined; // JSON.parse skips whitespace; a query value must not carry any
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

describe('query numbers follow JSON', () => {
  it.each(CANDIDATES)('%j', (text) => {
    const want = jsonNumber(text);
    expect(parseQueryNumber(text)).toBe(want);
    const integer = want !== undefined && Number.isSafeInteger(want) && !/[.eE]/.test(text) ? want : undefined;
    expect(parseQueryInteger(text)).toBe(integer);
  });

  it('booleans: true/false/1/0 only', () => {
    expect(['true', '1', 'false', '0', 'TRUE', 'yes', '', ' 1'].map(parseQueryBoolean)).toEqual([true, true, false, false, undefined, undefined, undefined, undefined]);
  });
});
