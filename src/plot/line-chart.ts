// A small, dependency-free SVG line chart: one or two series over a shared x axis (the second on
// its own right-hand y axis), linear or log y scales, ticks, labels and a title. Pure: series in,
// SVG string out. Used for learning-rate schedules, and meant for loss/lr histories too.

/** One line of the chart. `x` and `y` have the same length; every value must be finite. */
export interface Series {
  /** Legend label and `data-series` attribute. */
  label: string;
  x: readonly number[];
  y: readonly number[];
  /** Which y axis the series uses (default `left`). At most one series per axis. */
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

const PALETTE = ['#2563eb', '#dc2626'];
const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';
/** Plottable magnitudes: beyond them the scale arithmetic (span, nice bounds, 10^e) over- or underflows. */
export const MAX_MAGNITUDE = 1e300;
export const MIN_MAGNITUDE = 1e-300;
/** Most ticks on one axis (a guard; nice steps give about 5 to 15). */
const MAX_TICKS = 200;
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

/** Short tick label for `v`, a multiple of `step`: 0.001, 0.25, 1.5e-5, 20k, 3M. */
export function formatTick(v: number, step: number): string {
  if (v === 0) return '0';
  const abs = Math.abs(v);
  if (abs >= 1e4 && abs < 1e15 && Number.isInteger(v)) {
    for (const [unit, size] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]] as const) {
      if (abs >= size) return `${+(v / size).toFixed(decimalsFor(step / size))}${unit}`;
    }
  }
  if (abs >= 1e-3 && abs < 1e4) return String(+v.toFixed(decimalsFor(step)));
  const exp = Math.floor(Math.log10(abs));
  const mantissa = +(v / 10 ** exp).toFixed(Math.max(0, decimalsFor(step / 10 ** exp)));
  return mantissa === 1 ? `1e${exp}` : `${mantissa}e${exp}`;
}

/** 10^e written with superscripts: 10⁻³. */
function powerOfTen(e: number): string {
  if (e >= 0 && e <= 3) return String(10 ** e);
  return `10${String(e).replace(/./g, (c) => SUPERSCRIPT[c] ?? c)}`;
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

/** Linear scale over [lo, hi] mapped to [p0, p1], extended to nice tick bounds when `nice`. */
function linearScale(lo: number, hi: number, p0: number, p1: number, nice: boolean, count: number): Scale {
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) / 2;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo, count);
  if (nice) {
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil(hi / step) * step;
  }
  const ticks: Scale['ticks'] = [];
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.min(Math.floor(hi / step + 1e-9), first + MAX_TICKS);
  for (let i = first; i <= last; i++) {
    const value = i * step;
    ticks.push({ value, label: formatTick(Math.abs(value) < step * 1e-9 ? 0 : value, step) });
  }
  const k = (p1 - p0) / (hi - lo);
  return { map: (v) => p0 + (v - lo) * k, ticks };
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
  const ticks: Scale['ticks'] = [];
  for (let e = e0; e <= e1; e++) {
    if ((e - e0) % every === 0) ticks.push({ value: 10 ** e, label: powerOfTen(e) });
    if (decades <= 2 && e < e1) {
      for (const m of [2, 5]) ticks.push({ value: m * 10 ** e, label: formatTick(m * 10 ** e, 10 ** e) });
    }
  }
  const k = (p1 - p0) / (e1 - e0);
  return { map: (v) => p0 + (Math.log10(v) - e0) * k, ticks };
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

/** `content` shortened with an ellipsis to about `maxWidth` pixels at `fontSize` (average glyph ≈ 0.56 em). */
function fit(content: string, maxWidth: number, fontSize: number): string {
  const max = Math.max(4, Math.floor(maxWidth / (fontSize * 0.56)));
  return content.length <= max ? content : `${content.slice(0, max - 1)}…`;
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
  if (series.length === 0 || series.length > 2) throw new ChartError(`a chart has 1 or 2 series, got ${series.length}`);
  const placed = series.map((s, i) => ({ ...s, axis: s.axis ?? (i === 1 ? 'right' : 'left'), color: s.color ?? PALETTE[i] ?? '#000' }));
  const left = placed.find((s) => s.axis === 'left');
  const right = placed.find((s) => s.axis === 'right');
  if (!left || placed.filter((s) => s.axis === 'left').length > 1 || placed.filter((s) => s.axis === 'right').length > 1) {
    throw new ChartError('one series goes on the left axis and at most one on the right');
  }
  checkSeries(left, options.logY === true);
  if (right) checkSeries(right, options.logY2 === true);

  const width = options.width ?? 800;
  const height = options.height ?? 450;
  const title = options.title ?? '';
  const margin = { top: title ? 48 : 20, right: right ? 76 : 28, bottom: 56, left: 80 };
  const plot = { x0: margin.left, x1: width - margin.right, y0: height - margin.bottom, y1: margin.top };
  const yTickCount = Math.max(2, Math.round((plot.y0 - plot.y1) / 60));
  const xTickCount = Math.max(2, Math.round((plot.x1 - plot.x0) / 110));

  const [xLo, xHi] = extent(placed.flatMap((s) => [...extent(s.x)]));
  const xScale = linearScale(xLo, xHi, plot.x0, plot.x1, false, xTickCount);
  const yScaleOf = (s: (typeof placed)[number], log: boolean): Scale => {
    let [lo, hi] = extent(s.y);
    if (log) return logScale(lo, hi, plot.y0, plot.y1);
    if (options.includeZero) {
      lo = Math.min(lo, 0);
      hi = Math.max(hi, 0);
    }
    return linearScale(lo, hi, plot.y0, plot.y1, true, yTickCount);
  };
  const yLeft = yScaleOf(left, options.logY === true);
  const yRight = right ? yScaleOf(right, options.logY2 === true) : undefined;

  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="${escapeXml(FONT)}" font-size="12" role="img"${title ? ' aria-labelledby="chart-title"' : ''}>`,
  );
  if (title) out.push(`<title id="chart-title">${escapeXml(title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  if (title) out.push(text(width / 2, 28, fit(title, width - 32, 16), 'class="title" text-anchor="middle" font-size="16" font-weight="600" fill="#111827"'));

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
  yAxis(yLeft, plot.x0, -1, options.yLabel ?? left.label, right ? left.color : '#374151', 'y-axis');
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

  if (right) {
    out.push('<g class="legend" font-size="12">');
    placed.forEach((s, i) => {
      const y = plot.y1 + 14 + i * 18;
      const x = plot.x1 - 150;
      out.push(`<line x1="${px(x)}" x2="${px(x + 22)}" y1="${px(y - 4)}" y2="${px(y - 4)}" stroke="${escapeXml(s.color)}" stroke-width="2"/>`);
      out.push(text(x + 28, y, s.label, 'fill="#111827"'));
    });
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
