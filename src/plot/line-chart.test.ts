// The SVG line chart: well-formed XML, one polyline point per data point, scales, ticks, errors.

import { describe, expect, it } from 'vitest';
import { allElements, parseXml, textContent } from '../../test/fixtures/schedules/xml.ts';
import { ChartError, escapeXml, fitText, formatTick, renderLineChart, tickLabels, TITLE_FONT_SIZE, TITLE_MARGIN } from './line-chart.ts';

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

  it('draws many series on one shared left axis, each in its own colour, with a legend naming them', () => {
    const x = range(30);
    const series = [1, 2, 3, 4, 5].map((k) => ({ label: `run ${k}`, x, y: x.map((i) => k * 10 ** -(i / 10)) }));
    const svg = renderLineChart(series, { logY: true });
    const root = parseXml(svg);
    const lines = polylines(svg);
    expect(lines.map((l) => l.attrs['data-series'])).toEqual(['run 1', 'run 2', 'run 3', 'run 4', 'run 5']);
    expect(new Set(lines.map((l) => l.attrs.stroke)).size).toBe(5);
    expect(allElements(root).some((e) => e.attrs.class === 'axis y2-axis')).toBe(false);
    // One scale: the largest start (5) and the smallest end (1e-2.9) bound the axis, so each line's
    // first point sits higher (smaller y) the larger its start.
    const firstY = lines.map((l) => Number(l.attrs.points!.trim().split(/\s+/)[0]!.split(',')[1]));
    expect([...firstY].sort((a, b) => b - a)).toEqual(firstY);
    const legend = allElements(root).find((e) => e.attrs.class === 'legend')!;
    expect(allElements(legend).filter((e) => e.name === 'text').map(textContent)).toEqual(series.map((s) => s.label));
    expect(allElements(legend).filter((e) => e.name === 'line').map((e) => e.attrs.stroke)).toEqual(lines.map((l) => l.attrs.stroke));
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
    ['eleven series', Array.from({ length: 11 }, () => ({ label: 's', x: [0], y: [1] })), {}],
    ['two series on the right axis', [{ label: 'a', x: [0], y: [1] }, { label: 'b', x: [0], y: [1], axis: 'right' }, { label: 'c', x: [0], y: [1], axis: 'right' }], {}],
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

/** Tick labels of one axis group (`x-axis`, `y-axis`), without the axis title. */
function axisLabels(svg: string, axis: string): string[] {
  const group = allElements(parseXml(svg)).find((e) => e.name === 'g' && e.attrs.class === `axis ${axis}`)!;
  return allElements(group)
    .filter((e) => e.name === 'text' && e.attrs.class !== 'axis-label')
    .map(textContent);
}

describe('ticks', () => {
  it('a history of one or two steps gets whole-number x ticks', () => {
    for (const x of [[1], [1, 2], [0, 1, 2], [3, 4, 5, 6]]) {
      const labels = axisLabels(renderLineChart([{ label: 'lr', x, y: x.map(() => 0.1) }]), 'x-axis');
      expect(labels.length, String(x)).toBeGreaterThanOrEqual(2);
      for (const l of labels) expect(l, String(x)).toMatch(/^\d+$/);
      for (const k of x) expect(labels, String(x)).toContain(String(k)); // each step has its tick
    }
    // Fractional x values still get fractional ticks.
    expect(axisLabels(renderLineChart([{ label: 's', x: [0.5, 1], y: [1, 2] }]), 'x-axis')).toContain('0.6');
  });

  /** A label's value: `2k` → 2000, `1.5e-5` → 0.000015. */
  const valueOf = (label: string) => Number(label.replace(/k$/, 'e3').replace(/M$/, 'e6'));

  it.each([
    ['lr up to 0.001 (was 0.001 beside 8e-4)', [0, 0.001], /^(0|0\.\d+)$/],
    ['lr from 0.0002 to 0.0011', [0.0002, 0.0011], /^(0|0\.\d+)$/],
    ['up to 15,000 (was 5000 beside 10k)', [0, 15_000], /^(0|\d+(\.\d+)?k)$/],
    ['up to 3 million', [0, 3e6], /^(0|\d+(\.\d+)?M)$/],
    ['below 0.001', [1e-5, 5e-5], /^(0|\d(\.\d+)?e-\d+)$/],
    ['around 1', [0.5, 2], /^\d+(\.\d+)?$/],
  ])('one notation per linear axis: %s', (_, y, notation) => {
    const labels = axisLabels(renderLineChart([{ label: 's', x: [0, 1], y }]), 'y-axis');
    expect(labels.length).toBeGreaterThanOrEqual(3);
    for (const l of labels) expect(l, labels.join(' ')).toMatch(notation);
    // The labels still say the right numbers: evenly spaced, covering the data.
    const values = labels.map(valueOf);
    const step = values[1]! - values[0]!;
    values.forEach((v, i) => expect(v).toBeCloseTo(values[0]! + i * step, 12));
    expect(values[0]).toBeLessThanOrEqual(y[0]!);
    expect(values.at(-1)).toBeGreaterThanOrEqual(y[1]!);
  });

  it('one notation per log axis', () => {
    const plain = axisLabels(renderLineChart([{ label: 's', x: [0, 1], y: [0.001, 0.1] }], { logY: true }), 'y-axis');
    expect(plain).toEqual(['0.001', '0.002', '0.005', '0.01', '0.02', '0.05', '0.1']);
    const powers = axisLabels(renderLineChart([{ label: 's', x: [0, 1], y: [2e-5, 1e-3] }], { logY: true }), 'y-axis');
    expect(powers).toEqual(['10⁻⁵', '2×10⁻⁵', '5×10⁻⁵', '10⁻⁴', '2×10⁻⁴', '5×10⁻⁴', '10⁻³']);
  });

  it('tickLabels keeps an axis in one notation', () => {
    expect(tickLabels([0, 0.0005, 0.001], 0.0005)).toEqual(['0', '0.0005', '0.001']);
    expect(tickLabels([5000, 10000, 15000], 5000)).toEqual(['5k', '10k', '15k']);
    expect(tickLabels([-2e-4, 0, 2e-4], 2e-4)).toEqual(['-2e-4', '0', '2e-4']);
  });
});

// Advance widths of Helvetica Bold (Adobe's AFM metrics, thousandths of an em), an independent
// measure of what a browser draws for the title (system sans-serif bold fonts are no wider);
// ideographs and emoji are one em.
const HELVETICA_BOLD: Record<string, number> = { W: 944, M: 833, A: 722, m: 889, w: 778, a: 556, i: 278, '0': 556, ' ': 278, '…': 1000 };
const drawnWidth = (text: string, size: number) => [...text].reduce((w, ch) => w + (HELVETICA_BOLD[ch] ?? 1000) / 1000, 0) * size;

describe('titles', () => {
  it.each([
    ['W'.repeat(200)],
    ['M'.repeat(200)],
    ['m'.repeat(200)],
    ['a i '.repeat(100)],
    ['0'.repeat(200)],
    ['学习率'.repeat(60)],
    ['😀'.repeat(150)],
    ['AWwm'.repeat(50)],
  ])('a long title is cut with an ellipsis inside the image: %s', (title) => {
    for (const width of [200, 800, 4000]) {
      const svg = renderLineChart([{ label: 's', x: [0, 1], y: [1, 2] }], { title, width });
      const root = parseXml(svg);
      expect(allElements(root).find((e) => e.name === 'title')?.text).toBe(title); // the full title stays available
      const shown = textContent(allElements(root).find((e) => e.attrs.class === 'title')!);
      if (drawnWidth(title, TITLE_FONT_SIZE) > width - 2 * TITLE_MARGIN) expect(shown.endsWith('…'), `${width}: ${shown}`).toBe(true);
      expect(drawnWidth(shown, TITLE_FONT_SIZE), `${width}: ${shown}`).toBeLessThanOrEqual(width - 2 * TITLE_MARGIN);
      expect(title.startsWith(shown.replace(/…$/, '').trimEnd()), shown).toBe(true);
    }
  });

  it('a title that fits is left alone', () => {
    expect(fitText('cosine (lr=0.1, total_steps=100, min_lr=0)', 768, 16)).toBe('cosine (lr=0.1, total_steps=100, min_lr=0)');
  });
});

describe('escapeXml', () => {
  it('escapes the five XML specials', () => {
    expect(escapeXml(`<a href="x">&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
  });
});
