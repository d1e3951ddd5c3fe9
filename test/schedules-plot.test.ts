// The SVG plot endpoints: content type, well-formed XML, one plotted point per step, labels, log scale.

import { describe, expect, it } from 'vitest';
import { allElements, parseXml, textContent, type XmlElement } from './fixtures/schedules/xml.ts';
import { call, postJson } from './helpers/http.ts';

async function svg(method: 'GET' | 'POST', path: string, body?: unknown) {
  const res = await call(method, path, body);
  const text = await res.text();
  expect(res.status, text.slice(0, 300)).toBe(200);
  expect(res.headers.get('content-type')).toBe('image/svg+xml; charset=utf-8');
  const root = parseXml(text);
  return { text, root, elements: allElements(root) };
}

function series(elements: XmlElement[]): XmlElement[] {
  return elements.filter((e) => e.name === 'polyline' && e.attrs.class === 'series');
}

function texts(elements: XmlElement[]): string[] {
  return elements.filter((e) => e.name === 'text').map(textContent);
}

describe('POST /v1/schedules/plot', () => {
  it('returns a well-formed SVG line chart with one point per step', async () => {
    const { root, elements } = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'cosine', lr: 0.1, total_steps: 100 }, steps: { start: 0, stop: 250 } });
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    const [line, ...others] = series(elements);
    expect(others).toHaveLength(0);
    expect(line?.attrs['data-points']).toBe('250');
    expect(line?.attrs.points?.trim().split(/\s+/)).toHaveLength(250);
    expect(texts(elements)).toEqual(expect.arrayContaining(['step', 'learning rate', 'cosine (lr=0.1, total_steps=100, min_lr=0)', '0', '0.1', '100', '200']));
  });

  it('uses no external resources', async () => {
    const { text, elements } = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'step', lr: 1, step_size: 10 } });
    expect(elements.some((e) => ['image', 'script', 'foreignObject', 'use', 'a'].includes(e.name))).toBe(false);
    expect(text).not.toMatch(/href|url\(|@import|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  it('plots the default 100 steps, and 0..len(metrics) for reduce_on_plateau', async () => {
    const step = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'step', lr: 1, step_size: 10 } });
    expect(series(step.elements)[0]?.attrs['data-points']).toBe('100');
    const plateau = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'reduce_on_plateau', lr: 1, patience: 1 }, metrics: [3, 2, 2, 2, 2, 2, 1] });
    expect(series(plateau.elements)[0]?.attrs['data-points']).toBe('8');
  });

  it('draws a log y axis with decade ticks', async () => {
    const { elements } = await svg('POST', '/v1/schedules/plot', {
      schedule: { type: 'one_cycle', max_lr: 0.1, total_steps: 1000 },
      steps: { start: 0, stop: 1000 },
      log_scale: true,
    });
    expect(series(elements)[0]?.attrs['data-points']).toBe('1000');
    expect(texts(elements)).toEqual(expect.arrayContaining(['10⁻⁷', '10⁻⁵', '10⁻³']));
  });

  it('plots steps near 2^53 and rates a hair apart (found by fuzzing: a minute of CPU, then a 500)', async () => {
    for (const body of [
      { schedule: { type: 'constant', lr: 0.1 }, steps: [Number.MAX_SAFE_INTEGER] },
      { schedule: { type: 'cosine', lr: 1, min_lr: 1 - 2 ** -52, total_steps: 10 }, steps: { start: 0, stop: 20 } },
    ]) {
      const r = await call('POST', '/v1/schedules/plot', body);
      expect(r.status, JSON.stringify(body)).toBe(200);
      expect(await r.text()).toContain('data-points=');
    }
  });

  it('refuses a log scale when some lr is 0, naming log_scale', async () => {
    const r = await postJson('/v1/schedules/plot', { schedule: { type: 'warmup_linear', lr: 0.1, warmup_steps: 10, total_steps: 100 }, log_scale: true });
    expect(r.status).toBe(422);
    expect(r.type).toBe('application/problem+json');
    expect(r.body.errors[0].field).toBe('log_scale');
    expect(r.body.detail).toMatch(/lr\(0\) = 0/);
  });

  it('escapes a custom title and honours the size', async () => {
    const title = `lr <warm-up> & "decay" 'fast'`;
    const { root, elements } = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'constant', lr: 1 }, title, width: 640, height: 300 });
    expect(root.attrs.width).toBe('640');
    expect(root.attrs.height).toBe('300');
    expect(elements.find((e) => e.name === 'title')?.text).toBe(title);
  });

  it('plots 100 000 points without downsampling', async () => {
    const { elements, text } = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'cyclic', base_lr: 0.001, max_lr: 0.01, step_size_up: 500 }, steps: { start: 0, stop: 100_000 } });
    const line = series(elements)[0];
    expect(line?.attrs['data-points']).toBe('100000');
    expect(line?.attrs.points?.trim().split(/\s+/)).toHaveLength(100_000);
    expect(text.length).toBeLessThan(3_000_000);
  });

  it('plots the points of an explicit step list in the given order', async () => {
    const { elements } = await svg('POST', '/v1/schedules/plot', { schedule: { type: 'exponential', lr: 1, gamma: 0.5 }, steps: [0, 10, 5] });
    const points = series(elements)[0]?.attrs.points?.trim().split(/\s+/) ?? [];
    expect(points).toHaveLength(3);
    const xs = points.map((p) => Number(p.split(',')[0]));
    expect(xs[0]).toBeLessThan(xs[2] as number);
    expect(xs[2]).toBeLessThan(xs[1] as number);
  });
});

describe('GET /v1/schedules/{type}/plot', () => {
  it('plots from query parameters', async () => {
    const { elements } = await svg('GET', '/v1/schedules/multistep/plot?lr=0.1&milestones=30,80&steps=0:120&title=MultiStepLR');
    expect(series(elements)[0]?.attrs['data-points']).toBe('120');
    expect(texts(elements)).toContain('MultiStepLR');
  });

  it('plots sequential from a JSON schedule, on a log scale', async () => {
    const spec = { schedules: [{ type: 'linear', lr: 0.1, start_factor: 0.01, total_steps: 10 }, { type: 'cosine', lr: 0.1, total_steps: 90, min_lr: 1e-4 }], milestones: [10] };
    const { elements } = await svg('GET', `/v1/schedules/sequential/plot?schedule=${encodeURIComponent(JSON.stringify(spec))}&steps=0:100&log_scale=1`);
    expect(series(elements)[0]?.attrs['data-points']).toBe('100');
    expect(texts(elements)).toContain('sequential (linear → cosine; milestones 10)');
  });
});
