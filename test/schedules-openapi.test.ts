// The schedule routes and the schedule spec union in the generated OpenAPI document.

import { describe, expect, it } from 'vitest';
import { getJson } from './helpers/http.ts';

const TYPES = ['constant', 'step', 'multistep', 'exponential', 'linear', 'polynomial', 'cosine', 'cosine_restarts', 'cyclic', 'one_cycle', 'warmup_cosine', 'warmup_linear', 'inverse_sqrt', 'sequential', 'reduce_on_plateau'];

describe('openapi.json', async () => {
  const doc = (await getJson('/openapi.json')).body;
  const schemas = doc.components.schemas;

  it('lists the four schedule routes under the Schedules tag', () => {
    expect(doc.paths['/v1/schedules/evaluate'].post.tags).toEqual(['Schedules']);
    expect(doc.paths['/v1/schedules/plot'].post.responses['200'].content['image/svg+xml']).toBeDefined();
    expect(doc.paths['/v1/schedules/{type}'].get.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['type', 'steps', 'lr', 'milestones', 'schedule']));
    expect(doc.paths['/v1/schedules/{type}/plot'].get.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['log_scale', 'width']));
    for (const path of ['/v1/schedules/evaluate', '/v1/schedules/plot']) expect(doc.paths[path].post.responses['422'].content['application/problem+json']).toBeDefined();
  });

  it('documents ScheduleSpec as a discriminated union of every type', () => {
    const spec = schemas.ScheduleSpec;
    expect(spec.discriminator.propertyName).toBe('type');
    expect(Object.keys(spec.discriminator.mapping).sort()).toEqual([...TYPES].sort());
    expect(spec.oneOf).toHaveLength(15);
    const step = schemas.StepScheduleSpec;
    expect(Object.keys(step.discriminator.mapping)).not.toContain('reduce_on_plateau');
    expect(step.oneOf).toHaveLength(14);
  });

  it('names each variant <PascalType>Schedule', () => {
    const pascal = (t: string) => t.split('_').map((w) => w[0]?.toUpperCase() + w.slice(1)).join('');
    for (const type of TYPES) expect(schemas.ScheduleSpec.discriminator.mapping[type]).toBe(`#/components/schemas/${pascal(type)}Schedule`);
  });

  it('documents each variant with a description naming the torch class, defaults and bounds', () => {
    for (const ref of Object.values<string>(schemas.ScheduleSpec.discriminator.mapping)) {
      const variant = schemas[ref.replace('#/components/schemas/', '')];
      expect(variant.additionalProperties).toBe(false);
      expect(variant.description).toBeTruthy();
      for (const [name, prop] of Object.entries<{ description?: string }>(variant.properties)) if (name !== 'type') expect(prop.description, `${ref}.${name}`).toBeTruthy();
    }
    expect(schemas.CosineSchedule.description).toContain('CosineAnnealingLR');
    expect(schemas.CosineSchedule.properties.total_steps).toMatchObject({ type: 'integer', minimum: 1 });
    expect(schemas.CosineSchedule.properties.total_steps.description).toContain('T_max');
    expect(schemas.CosineSchedule.properties.min_lr).toMatchObject({ default: 0, minimum: 0 });
    expect(schemas.CosineRestartsSchedule.properties.period.description).toContain('T_0');
    expect(schemas.CosineRestartsSchedule.properties.period_mult).toMatchObject({ default: 1, minimum: 1 });
    expect(schemas.CyclicSchedule.properties.step_size_up).toMatchObject({ default: 2000, minimum: 1 });
    expect(schemas.OneCycleSchedule.properties.final_div_factor).toMatchObject({ default: 10000, exclusiveMinimum: 0 });
    expect(schemas.ReduceOnPlateauSchedule.properties.factor).toMatchObject({ default: 0.1, exclusiveMaximum: 1 });
    expect(schemas.LinearSchedule.properties.start_factor.default).toBeCloseTo(1 / 3, 15);
  });

  it('documents the recursion of sequential by reference', () => {
    expect(schemas.SequentialSchedule.properties.schedules.items.$ref).toBe('#/components/schemas/StepScheduleSpec');
    expect(schemas.SequentialSchedule.description).toMatch(/len\(milestones\) = len\(schedules\) − 1/);
  });

  it('documents the steps limit', () => {
    expect(JSON.stringify(schemas.Steps)).toContain('100000');
  });
});
