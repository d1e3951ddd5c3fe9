// A small, dependency-free SVG line chart: series over a shared x axis (several on the left y axis,
// at most one on its own right-hand y axis), linear or log y scales, ticks, labels, a legend and a
// title. Pure: series in, SVG string out. Used for learning-rate schedules, hosted histories and
// optimizer comparisons (one line per run).

/** One line of the chart. `x` and `y` have the same length; every value must be finite. */
export interface Series {
  /** Legend label and `data-series` attribute. */
  label: string;
  x: readonly number[];
  y: readonly number[];
  /**
   * Which y axis the series uses (default: `right` for the second of exactly two series, else
   * `left`). Any number of series share the left axis; at most one is on the right.
   */
  axis?: 'left' | 'right';
  /** Stroke colour (CSS colour); defaults to a palette colour. */
  color?: string;
}

export interface LineChartOptions {
  /** Image size in pixels (default 800 × 450). */
  width?: number;
  height?: number;
  /** Title above the plot area. */
  title?: string;
  /** Axis labels (defaults: "x", the left series' label, the right series' label). */
  xLabel?: string;
  yLabel?: string;
  y2Label?: string;
  /** Logarithmic left / right y axis: every value on it must then be > 0. */
  logY?: boolean;
  logY2?: boolean;
  /** Stretch the linear y axes to include 0 (default false). */
  includeZero?: boolean;
}

/** Invalid chart input (mismatched lengths, non-finite values, non-positive values on a log axis, …). */
export class ChartError extends RangeError {
  constructor(message: string) {
    super(message);
    this.name = 'ChartError';
  }
}

/** Line colours in order (the first two are the lr/loss pair's); distinguishable, none pale. */
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be185d', '#4d7c0f', '#1e293b', '#a16207'];
/** Most series in one chart. */
export const MAX_SERIES = PALETTE.length;
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';
/** Plottable magnitudes: beyond them the scale arithmetic (span, nice bounds, 10^e) over- or underflows. */
export const MAX_MAGNITUDE = 1e300;
export const MIN_MAGNITUDE = 1e-300;
/** Most ticks on one axis (a guard; nice steps give about 5 to 15). */
const MAX_TICKS = 200;
/** Title size and the space kept free on each side of it, in pixels. */
export const TITLE_FONT_SIZE = 16;
export const TITLE_MARGIN = 16;
/** Series with at most this many points also get a dot per point. */
const MARKER_LIMIT = 60;
const SUPERSCRIPT: Record<string, string> = { '-': '⁻', '0': '⁰', '1': '¹', '2': '²', '3': '³', '4': '⁴', '5': '⁵', '6': '⁶', '7': '⁷', '8': '⁸', '9': '⁹' };

/** Escapes text for XML content and attribute values. */
export function escapeXml(text: string): string {
  return text
    .replace(XML_FORBIDDEN, '\uFFFD')
    .replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] as string);
}

/** Characters XML 1.0 cannot carry: C0 controls but tab/LF/CR, lone surrogates, U+FFFE and U+FFFF. */
const XML_FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** Coordinates with at most 2 decimals, without trailing zeros. */
function px(v: number): string {
  return String(Math.round(v * 100) / 100);
}

interface Scale {
  /** Data value → pixel. */
  map(v: number): number;
  ticks: Array<{ value: number; label: string }>;
}

/** A "nice" step (1, 2 or 5 × 10^n) giving about `count` intervals over `span`. */
function niceStep(span: number, count: number): number {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** Decimal places needed to show multiples of `step` exactly. */
function decimalsFor(step: number): number {
  return Math.max(0, Math.min(20, -Math.floor(Math.log10(step) + 1e-9)));
}

const UNITS = [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]] as const;

/** `v` as mantissa and power of ten, the mantissa to the precision of `step`: 2.5e-5. */
function scientific(v: number, step: number): string {
  const exp = Math.floor(Math.log10(Math.abs(v)));
  const mantissa = +(v / 10 ** exp).toFixed(Math.max(0, decimalsFor(step / 10 ** exp)));
  return mantissa === 1 ? `1e${exp}` : `${mantissa}e${exp}`;
}

/**
 * Labels for the ticks of one linear axis (multiples of `step`), all in one notation so an axis
 * never mixes `0.001` with `8e-4` or `5000` with `10k`: decimals when the largest tick is in
 * [0.001, 10⁴); one unit (k, M, G, T) chosen by the largest tick for integer ticks up to 10¹⁵;
 * mantissa-exponent otherwise (1.5e-5).
 */
export function tickLabels(values: readonly number[], step: number): string[] {
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  if (max >= 1e-3 && max < 1e4) return values.map((v) => (v === 0 ? '0' : String(+v.toFixed(decimalsFor(step)))));
  if (max >= 1e4 && max < 1e15 && Number.isInteger(step)) {
    const [unit, size] = UNITS.find(([, size]) => max >= size)!;
    return values.map((v) => (v === 0 ? '0' : `${+(v / size).toFixed(decimalsFor(step / size))}${unit}`));
  }
  return values.map((v) => (v === 0 ? '0' : scientific(v, step)));
}

/** Short tick label for `v`, a multiple of `step`, as the only tick of an axis: 0.001, 0.25, 1.5e-5, 20k, 3M. */
export function formatTick(v: number, step: number): string {
  return tickLabels([v], step)[0]!;
}

const superscript = (n: number) => String(n).replace(/./g, (c) => SUPERSCRIPT[c] ?? c);

/**
 * Labels for log-axis ticks m·10^e (m = 1, 2 or 5), in one notation: plain decimals when every tick
 * is in [0.001, 10⁴), otherwise powers of ten with superscripts (10⁻³, 2×10⁻⁴).
 */
function logTickLabels(ticks: ReadonlyArray<{ m: number; e: number }>): string[] {
  if (ticks.every(({ e }) => e >= -3 && e <= 3)) return ticks.map(({ m, e }) => String(+(m * 10 ** e).toFixed(Math.max(0, -e))));
  return ticks.map(({ m, e }) => (m === 1 ? `10${superscript(e)}` : `${m}×10${superscript(e)}`));
}

function extent(values: readonly number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

/**
 * Linear scale over [lo, hi] mapped to [p0, p1], extended to nice tick bounds when `nice`. With
 * `integer` (every value is a whole number, e.g. steps) ticks fall on whole numbers only.
 */
function linearScale(lo: number, hi: number, p0: number, p1: number, nice: boolean, count: number, integer = false): Scale {
  if (lo === hi) {
    const pad = integer ? 1 : lo === 0 ? 1 : Math.abs(lo) / 2;
    lo -= pad;
    hi += pad;
  }
  const step = integer ? Math.max(1, niceStep(hi - lo, count)) : niceStep(hi - lo, count);
  if (nice) {
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
  }
  const values: number[] = [];
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.min(Math.floor(hi / step + 1e-9), first + MAX_TICKS);
  for (let i = first; i <= last; i++) {
    const value = i * step;
    values.push(Math.abs(value) < step * 1e-9 ? 0 : value);
  }
  const labels = tickLabels(values, step);
  const k = (p1 - p0) / (hi - lo);
  return { map: (v) => p0 + (v - lo) * k, ticks: values.map((value, i) => ({ value, label: labels[i]! })) };
}

/** Log10 scale over [lo, hi] (both > 0), extended to whole decades. */
function logScale(lo: number, hi: number, p0: number, p1: number): Scale {
  let e0 = Math.floor(Math.log10(lo));
  let e1 = Math.ceil(Math.log10(hi));
  if (e0 === e1) {
    e0 -= 1;
    e1 += 1;
  }
  const decades = e1 - e0;
  const every = Math.max(1, Math.ceil(decades / 8));
  const marks: Array<{ m: number; e: number }> = [];
  for (let e = e0; e <= e1; e++) {
    if ((e - e0) % every === 0) marks.push({ m: 1, e });
    if (decades <= 2 && e < e1) for (const m of [2, 5]) marks.push({ m, e });
  }
  const labels = logTickLabels(marks);
  const k = (p1 - p0) / (e1 - e0);
  return { map: (v) => p0 + (Math.log10(v) - e0) * k, ticks: marks.map(({ m, e }, i) => ({ value: m * 10 ** e, label: labels[i]! })) };
}

function checkSeries(s: Series, log: boolean) {
  if (s.x.length !== s.y.length) throw new ChartError(`series "${s.label}": x has ${s.x.length} values but y has ${s.y.length}`);
  if (s.x.length === 0) throw new ChartError(`series "${s.label}" is empty`);
  for (let i = 0; i < s.y.length; i++) {
    const x = s.x[i] as number;
    const y = s.y[i] as number;
    if (!Number.isFinite(x) || !Number.isFinite(y)) throw new ChartError(`series "${s.label}" has a non-finite value at index ${i}`);
    for (const v of [x, y]) {
      const a = Math.abs(v);
      if (a > MAX_MAGNITUDE || (a !== 0 && a < MIN_MAGNITUDE)) {
        throw new ChartError(`series "${s.label}" has ${v} at index ${i}; values must be 0 or between ${MIN_MAGNITUDE} and ${MAX_MAGNITUDE} in magnitude`);
      }
    }
    if (log && y <= 0) throw new ChartError(`series "${s.label}" has y = ${y} <= 0 at x = ${x}; a log scale needs every value > 0`);
  }
}

/**
 * Width of `content` in ems, erring on the wide side, so text cut to fit does fit whatever font the
 * viewer substitutes: wide ideographs and emoji 1 em, capitals and m/w about 0.8–0.95, most
 * lowercase and digits 0.62, narrow punctuation 0.35.
 */
export function textWidthEm(content: string): number {
  let em = 0;
  for (const ch of content) {
    const cp = ch.codePointAt(0)!;
    if (isWide(cp)) em += 1;
    else if ('mwMW@%'.includes(ch)) em += 0.95;
    else if (ch >= 'A' && ch <= 'Z') em += 0.8;
    else if (" il.,:;'|!()[]{}".includes(ch)) em += 0.35;
    else if (cp < 0x80) em += 0.62;
    else em += 0.8;
  }
  return em;
}

/** East Asian wide and full-width characters, and emoji and other astral symbols. */
function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    cp >= 0x1f000
  );
}

/** `content`, or its start with an ellipsis, no wider than `maxWidth` pixels at `fontSize` (by textWidthEm). */
export function fitText(content: string, maxWidth: number, fontSize: number): string {
  const max = maxWidth / fontSize;
  if (textWidthEm(content) <= max) return content;
  const chars = [...content];
  let width = textWidthEm('…');
  let n = 0;
  while (n < chars.length && width + textWidthEm(chars[n]!) <= max) width += textWidthEm(chars[n++]!);
  return `${chars.slice(0, n).join('').trimEnd()}…`;
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${px(x)}" y="${px(y)}"${attrs ? ' ' + attrs : ''}>${escapeXml(content)}</text>`;
}

/**
 * Renders one or two series as a standalone SVG document (no scripts, fonts or other external
 * resources). Each series is one `<polyline>` with exactly one point per data point, tagged
 * `class="series" data-series="<label>" data-points="<n>"`; no downsampling (100 000 points make
 * about 1.5 MB of SVG). Series with few points also get a dot per point.
 *
 * @param series one series (left axis) or two (the second, or the one with `axis: 'right'`, on a
 *   right-hand axis with its own scale).
 * @param options size, title, axis labels, log scales.
 * @returns the SVG text (UTF-8, with an XML declaration).
 * @throws {ChartError} for empty or mismatched series, non-finite values or magnitudes outside
 *   [1e-300, 1e300] (other than 0), or values <= 0 on a log axis.
 * @example renderLineChart([{ label: 'lr', x: [0, 1, 2], y: [0.1, 0.05, 0.025] }], { title: 'decay', logY: true })
 */
export function renderLineChart(series: readonly Series[], options: LineChartOptions = {}): string {
  if (series.length === 0 || series.length > MAX_SERIES) throw new ChartError(`a chart has 1 to ${MAX_SERIES} series, got ${series.length}`);
  const placed = series.map((s, i) => ({
    ...s,
    axis: s.axis ?? (i === 1 && series.length === 2 ? 'right' : 'left'),
    color: s.color ?? PALETTE[i] ?? '#000',
  }));
  const lefts = placed.filter((s) => s.axis === 'left');
  const left = lefts[0];
  const right = placed.find((s) => s.axis === 'right');
  if (!left || placed.filter((s) => s.axis === 'right').length > 1) {
    throw new ChartError('at least one series goes on the left axis and at most one on the right');
  }
  for (const s of lefts) checkSeries(s, options.logY === true);
  if (right) checkSeries(right, options.logY2 === true);

  const width = options.width ?? 800;
  const height = options.height ?? 450;
  const title = options.title ?? '';
  const margin = { top: title ? 48 : 20, right: right ? 76 : 28, bottom: 56, left: 80 };
  const plot = { x0: margin.left, x1: width - margin.right, y0: height - margin.bottom, y1: margin.top };
  const yTickCount = Math.max(2, Math.round((plot.y0 - plot.y1) / 60));
  const xTickCount = Math.max(2, Math.round((plot.x1 - plot.x0) / 110));

  const [xLo, xHi] = extent(placed.flatMap((s) => [...extent(s.x)]));
  const integerX = placed.every((s) => s.x.every((v) => Number.isInteger(v)));
  const xScale = linearScale(xLo, xHi, plot.x0, plot.x1, false, xTickCount, integerX);
  const yScaleOf = (on: ReadonlyArray<(typeof placed)[number]>, log: boolean): Scale => {
    let [lo, hi] = extent(on.flatMap((s) => [...extent(s.y)]));
    if (log) return logScale(lo, hi, plot.y0, plot.y1);
    if (options.includeZero) {
      lo = Math.min(lo, 0);
      hi = Math.max(hi, 0);
    }
    return linearScale(lo, hi, plot.y0, plot.y1, true, yTickCount);
  };
  const yLeft = yScaleOf(lefts, options.logY === true);
  const yRight = right ? yScaleOf([right], options.logY2 === true) : undefined;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="${escapeXml(FONT)}" font-size="12" role="img"${title ? ' aria-labelledby="chart-title"' : ''}>`,
  );
  if (title) out.push(`<title id="chart-title">${escapeXml(title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  // Centred, and cut with an ellipsis to the width less a margin, so no renderer clips either end.
  if (title) out.push(text(width / 2, 28, fitText(title, width - 2 * TITLE_MARGIN, TITLE_FONT_SIZE), `class="title" text-anchor="middle" font-size="${TITLE_FONT_SIZE}" font-weight="600" fill="#111827"`));

  // Grid and left axis ticks.
  out.push('<g class="grid" stroke="#e5e7eb" stroke-width="1">');
  for (const t of yLeft.ticks) out.push(`<line x1="${px(plot.x0)}" x2="${px(plot.x1)}" y1="${px(yLeft.map(t.value))}" y2="${px(yLeft.map(t.value))}"/>`);
  for (const t of xScale.ticks) out.push(`<line x1="${px(xScale.map(t.value))}" x2="${px(xScale.map(t.value))}" y1="${px(plot.y0)}" y2="${px(plot.y1)}"/>`);
  out.push('</g>');

  out.push('<g class="axis x-axis" fill="#374151" stroke="#374151">');
  out.push(`<line x1="${px(plot.x0)}" x2="${px(plot.x1)}" y1="${px(plot.y0)}" y2="${px(plot.y0)}"/>`);
  for (const t of xScale.ticks) {
    const x = xScale.map(t.value);
    out.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${px(plot.y0)}" y2="${px(plot.y0 + 5)}"/>`);
    out.push(text(x, plot.y0 + 19, t.label, 'stroke="none" text-anchor="middle"'));
  }
  out.push(text((plot.x0 + plot.x1) / 2, height - 14, options.xLabel ?? 'x', 'class="axis-label" stroke="none" text-anchor="middle" font-size="13"'));
  out.push('</g>');

  const yAxis = (scale: Scale, x: number, side: 1 | -1, label: string, color: string, cls: string) => {
    out.push(`<g class="axis ${cls}" fill="${color}" stroke="${color}">`);
    out.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${px(plot.y0)}" y2="${px(plot.y1)}"/>`);
    for (const t of scale.ticks) {
      const y = scale.map(t.value);
      out.push(`<line x1="${px(x)}" x2="${px(x + 5 * side)}" y1="${px(y)}" y2="${px(y)}"/>`);
      out.push(text(x + 8 * side, y + 4, t.label, `stroke="none" text-anchor="${side === -1 ? 'end' : 'start'}"`));
    }
    const lx = side === -1 ? 18 : width - 14;
    const ly = (plot.y0 + plot.y1) / 2;
    out.push(text(lx, ly, label, `class="axis-label" stroke="none" text-anchor="middle" font-size="13" transform="rotate(${side === -1 ? -90 : 90} ${px(lx)} ${px(ly)})"`));
    out.push('</g>');
  };
  // With a right axis each axis takes its series' colour; several series share a neutral left axis.
  yAxis(yLeft, plot.x0, -1, options.yLabel ?? left.label, right && lefts.length === 1 ? left.color : '#374151', 'y-axis');
  if (right && yRight) yAxis(yRight, plot.x1, 1, options.y2Label ?? right.label, right.color, 'y2-axis');

  for (const s of placed) {
    const scale = s.axis === 'left' ? yLeft : (yRight as Scale);
    const coords: string[] = new Array(s.x.length);
    for (let i = 0; i < s.x.length; i++) coords[i] = `${px(xScale.map(s.x[i] as number))},${px(scale.map(s.y[i] as number))}`;
    out.push(
      `<polyline class="series" data-series="${escapeXml(s.label)}" data-points="${s.x.length}" fill="none" stroke="${escapeXml(s.color)}" ` +
        `stroke-width="2" stroke-linejoin="round" stroke-linecap="round" points="${coords.join(' ')}"/>`,
    );
    if (s.x.length <= MARKER_LIMIT) {
      out.push(`<g class="markers" fill="${escapeXml(s.color)}">`);
      for (const c of coords) {
        const [cx, cy] = c.split(',');
        out.push(`<circle cx="${cx}" cy="${cy}" r="2.5"/>`);
      }
      out.push('</g>');
    }
  }

  if (placed.length > 1) {
    // Top right inside the plot, on a translucent white box; labels cut to fit a third of the plot.
    const maxText = Math.max(60, (plot.x1 - plot.x0) / 3 - 40);
    const labels = placed.map((s) => fitText(s.label, maxText, 12));
    const boxWidth = 40 + Math.max(...labels.map((l) => textWidthEm(l) * 12));
    const x = plot.x1 - boxWidth - 6;
    out.push('<g class="legend" font-size="12">');
    out.push(`<rect x="${px(x - 6)}" y="${px(plot.y1 + 4)}" width="${px(boxWidth + 6)}" height="${px(placed.length * 18 + 8)}" fill="#ffffff" fill-opacity="0.85" stroke="#e5e7eb"/>`);
    placed.forEach((s, i) => {
      const y = plot.y1 + 20 + i * 18;
      out.push(`<line x1="${px(x)}" x2="${px(x + 22)}" y1="${px(y - 4)}" y2="${px(y - 4)}" stroke="${escapeXml(s.color)}" stroke-width="2"/>`);
      out.push(text(x + 28, y, labels[i]!, 'fill="#111827"'));
    });
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
