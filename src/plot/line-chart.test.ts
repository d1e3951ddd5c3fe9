// The SVG line chart: well-formed XML, one polyline point per data point, scales, ticks, errors.

import { describe, expect, it } from 'vitest';
import { allElements, parseXml, textContent } from '../../test/fixtures/schedules/xml.ts';
import { ChartError, escapeXml, formatTick, renderLineChart } from './line-chart.ts';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function polylines(svg: string) {
  return allElements(parseXml(svg)).filter((e) => e.name === 'polyline');
}

describe('renderLineChart', () => {
  it('draws one polyline with one point per data point, axes, labels and a title', () => {
    const x = range(500);
    const svg = renderLineChart([{ label: 'lr', x, y: x.map((k) => 0.1 * 0.99 ** k) }], { title: 'decay', xLabel: 'step', yLabel: 'learning rate' });
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    const [line, ...rest] = polylines(svg);
    expect(rest).toHaveLength(0);
    expect(line?.attrs['data-points']).toBe('500');
    expect(line?.attrs.points?.trim().split(/\s+/)).toHaveLength(500);
    const texts = allElements(root).filter((e) => e.name === 'text').map(textContent);
    expect(texts).toEqual(expect.arrayContaining(['decay', 'step', 'learning rate', '0', '0.1']));
    expect(allElements(root).find((e) => e.name === 'title')?.text).toBe('decay');
  });

  it('escapes text and stays well-formed', () => {
    const title = `<b>&"quotes" 'n' </b>]]>`;
    const svg = renderLineChart([{ label: 'a<b', x: [0, 1], y: [1, 2] }], { title, xLabel: '&', yLabel: '"y"' });
    const root = parseXml(svg);
    expect(allElements(root).find((e) => e.name === 'title')?.text).toBe(title);
    expect(svg).not.toContain('<b>');
  });

  it('uses decades on a log axis', () => {
    const x = range(4);
    const svg = renderLineChart([{ label: 'lr', x, y: [1e-1, 1e-3, 1e-5, 1e-7] }], { logY: true });
    const labels = allElements(parseXml(svg)).filter((e) => e.name === 'text').map(textContent);
    expect(labels).toEqual(expect.arrayContaining(['10⁻⁷', '10⁻⁵', '10⁻³', '10⁻¹']));
  });

  it('puts a second series on a right axis with a legend', () => {
    const x = range(50);
    const svg = renderLineChart(
      [
        { label: 'loss', x, y: x.map((k) => 2 / (1 + k)) },
        { label: 'lr', x, y: x.map(() => 1e-3) },
      ],
      { logY: true, xLabel: 'step' },
    );
    const lines = polylines(svg);
    expect(lines.map((l) => [l.attrs['data-series'], l.attrs['data-points']])).toEqual([['loss', '50'], ['lr', '50']]);
    const classes = allElements(parseXml(svg)).map((e) => e.attrs.class);
    expect(classes).toEqual(expect.arrayContaining(['axis y-axis', 'axis y2-axis', 'legend']));
  });

  it('plots the extreme magnitudes it accepts', () => {
    for (const y of [[0, 1e300], [1e-300, 2e-300], [-1e300, 1e300], [1e-300, 1e300]]) {
      for (const logY of [false, y[0] as number > 0]) {
        const svg = renderLineChart([{ label: 's', x: [0, 2 ** 53 - 1], y }], { logY });
        expect(svg).not.toMatch(/NaN|Infinity/);
        parseXml(svg);
      }
    }
  });

  it('handles a single point and a constant series', () => {
    for (const svg of [renderLineChart([{ label: 'lr', x: [7], y: [0.5] }]), renderLineChart([{ label: 'lr', x: [0, 1, 2], y: [0, 0, 0] }])]) {
      expect(svg).not.toContain('NaN');
      expect(polylines(svg)).toHaveLength(1);
    }
  });

  it.each([
    ['no series', [], {}],
    ['three series', [0, 1, 2].map(() => ({ label: 's', x: [0], y: [1] })), {}],
    ['mismatched lengths', [{ label: 's', x: [0, 1], y: [1] }], {}],
    ['an empty series', [{ label: 's', x: [], y: [] }], {}],
    ['a non-finite value', [{ label: 's', x: [0, 1], y: [1, Number.POSITIVE_INFINITY] }], {}],
    ['zero on a log axis', [{ label: 's', x: [0, 1], y: [0, 1] }], { logY: true }],
    ['a huge value', [{ label: 's', x: [0, 1], y: [0, 1.7e308] }], {}],
    ['a subnormal value', [{ label: 's', x: [0, 1], y: [0, 5e-324] }], {}],
  ] as const)('rejects %s', (_, series, options) => {
    expect(() => renderLineChart(series as never, options)).toThrow(ChartError);
  });
});

describe('formatTick', () => {
  it.each([
    [0, 1, '0'],
    [0.001, 0.001, '0.001'],
    [0.25, 0.05, '0.25'],
    [0.30000000000000004, 0.1, '0.3'],
    [2.5e-5, 5e-6, '2.5e-5'],
    [1e-7, 1e-7, '1e-7'],
    [250, 50, '250'],
    [20000, 5000, '20k'],
    [10500, 500, '10.5k'],
    [1500000, 500000, '1.5M'],
    [16000000, 2000000, '16M'],
  ])('%d (step %d) → %s', (v, step, want) => {
    expect(formatTick(v, step)).toBe(want);
  });
});

describe('escapeXml', () => {
  it('escapes the five XML specials', () => {
    expect(escapeXml(`<a href="x">&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
  });
});
