// Runs examples/curl.sh against wrangler dev and checks what each of its calls printed.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { baseUrl, describeRun, findExecutable, requireTool, ROOT, run } from './helpers.ts';

const outDir = mkdtempSync(join(tmpdir(), 'adam-api-curl-'));
afterAll(() => rmSync(outDir, { recursive: true, force: true }));

interface Section {
  title: string;
  command: string;
  text: string;
  status: number;
}

/** Splits the script's output into its `== title` sections: command line, printed body, status. */
function sections(stdout: string): Map<string, Section> {
  const out = new Map<string, Section>();
  for (const chunk of stdout.split(/^== /m).slice(1)) {
    const [title = '', ...rest] = chunk.split('\n');
    const body = rest.join('\n');
    const status = /^-> HTTP (\d{3})$/m.exec(body);
    const command = /^\$ curl.*$/m.exec(body)?.[0] ?? '';
    out.set(title, { title, command, text: body, status: status ? Number(status[1]) : 0 });
  }
  return out;
}

/** The last line of a section that is a JSON object, parsed. */
function json(section: Section | undefined): any {
  expect(section, 'section missing from the output').toBeDefined();
  const lines = section!.text.split('\n').filter((l) => l.startsWith('{') && l.endsWith('}'));
  expect(lines.length, `no JSON body in section "${section!.title}"`).toBeGreaterThan(0);
  return JSON.parse(lines.at(-1)!);
}

describe('examples/curl.sh', () => {
  test('runs every operation against wrangler dev and gets the documented answers', async (ctx) => {
    const bash = requireTool(ctx, 'bash', findExecutable('bash'), 'install bash');
    requireTool(ctx, 'curl', findExecutable('curl'), 'install curl (apt-get install curl)');

    const result = await run(bash, [join(ROOT, 'examples', 'curl.sh')], { env: { ADAM_API: baseUrl(), OUT_DIR: outDir }, timeoutMs: 120_000 });
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('All calls answered as expected.');

    const s = sections(result.stdout);
    const get = (title: string) => {
      const section = s.get(title);
      expect(section, `no section "${title}" in:\n${result.stdout}`).toBeDefined();
      return section!;
    };
    // Every printed command is a real curl command against the server under test.
    for (const section of s.values()) expect(section.command).toContain(baseUrl());

    // Service.
    expect(json(get('service info and links')).links.step).toBe('/v1/adam/step');
    expect(json(get('health'))).toEqual({ status: 'ok' });
    const spec = JSON.parse(readFileSync(join(outDir, 'openapi.json'), 'utf8'));
    expect(spec.openapi).toMatch(/^3\.1\./);
    expect(Object.keys(spec.paths)).toContain('/v1/optimizers/{id}/step');

    // Stateless steps: the README's numbers, then the same trajectory continued from the returned state.
    const first = json(get('one Adam step (fresh state)'));
    expect(first.params).toEqual([0.9900000009999999, -1.9900000005, 2.990000000333333]);
    expect(first.state.step).toBe(1);
    const second = json(get('second step, fed back the returned params and state'));
    expect(second.state.step).toBe(2);
    expect(second.params[0]).toBeLessThan(first.params[0]);
    expect(second.params[1]).toBeGreaterThan(first.params[1]);
    const named = json(get('AdamW with named tensors (a state_dict-like object)'));
    expect(Object.keys(named.params).sort()).toEqual(['fc.bias', 'fc.weight']);
    expect(named.state.m['fc.weight']).toHaveLength(2);
    const invalid = json(get('an invalid request: a problem+json answer naming the field'));
    expect(invalid).toMatchObject({ type: 'urn:adam-api:problem:validation-error', status: 422 });
    expect(invalid.errors[0]).toMatchObject({ field: 'hyperparams.lr', pointer: '/hyperparams/lr' });

    // Schedules.
    expect(json(get('evaluate a cosine schedule at steps 0, 50, 100'))).toEqual({ steps: [0, 50, 100], lr: [0.1, 0.05000000000000004, 0] });
    expect(json(get('the same schedule as a GET with query parameters'))).toEqual({ steps: [0, 50, 100], lr: [0.1, 0.05000000000000004, 0] });
    const multistep = json(get('multistep schedule, GET form with a range of steps'));
    expect(multistep.steps).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    expect(multistep.lr[2]).toBe(0.1);
    expect(multistep.lr[3]).toBeCloseTo(0.01, 15);
    expect(multistep.lr[8]).toBeCloseTo(0.001, 15);
    for (const file of ['one_cycle.svg', 'cosine.svg', 'history.svg']) {
      const svg = readFileSync(join(outDir, file), 'utf8');
      expect(svg, file).toMatch(/<svg[\s>]/);
      expect(svg, file).toContain('</svg>');
    }

    // Hosted optimizer lifecycle.
    const create = get('create a hosted optimizer (the token is shown only once)');
    const created = json(create);
    expect(created.id).toMatch(/^[0-9a-f]{64}$/);
    expect(created.token).toEqual(expect.any(String));
    expect(created.step).toBe(0);
    expect(create.text).toMatch(new RegExp(`^location: /v1/optimizers/${created.id}\\r?$`, 'im'));
    const createdTag = /^etag: ("[^"]+")\r?$/im.exec(create.text)?.[1];
    expect(createdTag).toBeDefined();

    const stepped = get('step with an Idempotency-Key');
    expect(json(stepped)).toMatchObject({ step: 1, lr: 0.1 });
    const steppedTag = /^etag: ("[^"]+")\r?$/im.exec(stepped.text)?.[1];
    expect(steppedTag).toBeDefined();
    expect(steppedTag).not.toBe(createdTag);
    const replay = get('retry with the same key: replayed, not applied twice');
    expect(json(replay)).toEqual({ ...json(stepped), replayed: true });
    expect(replay.text).toMatch(/^idempotent-replayed: true\r?$/im);
    const secondHosted = json(get('a second step, only if the optimizer is still at step 1 (If-Match)'));
    expect(secondHosted.step).toBe(2);

    expect(json(get('current params'))).toEqual({ step: 2, params: secondHosted.params });
    expect(json(get('metadata: step, hyperparameters, next lr, shapes'))).toMatchObject({ id: created.id, step: 2, shapes: { w: [2], b: [] }, size: 3 });
    const snapshot = JSON.parse(readFileSync(join(outDir, 'state.json'), 'utf8'));
    expect(snapshot).toMatchObject({ id: created.id, step: 2, params: secondHosted.params });
    expect(Object.keys(snapshot.m).sort()).toEqual(['b', 'w']);
    expect(json(get('restore the snapshot (PUT it back)'))).toMatchObject({ id: created.id, step: 2 });
    expect(json(get('change the learning rate'))).toMatchObject({ hyperparams: { lr: 0.05 }, next_lr: 0.05 });
    const history = json(get('loss and learning rate per step'));
    expect(history.entries.map((e: { step: number; loss: number }) => [e.step, e.loss])).toEqual([
      [1, 0.75],
      [2, 0.5],
    ]);
    expect(json(get('a wrong token is refused'))).toMatchObject({ type: 'urn:adam-api:problem:unauthorized', status: 401 });
    expect(get('delete the optimizer').status).toBe(204);
    expect(json(get('it is gone'))).toMatchObject({ type: 'urn:adam-api:problem:not-found', status: 404 });

    // The script checked each status itself; the printed statuses agree.
    expect([...s.values()].every((x) => x.status >= 200)).toBe(true);
  });

  test('stops with a non-zero exit code when the server is not there', async (ctx) => {
    const bash = requireTool(ctx, 'bash', findExecutable('bash'), 'install bash');
    requireTool(ctx, 'curl', findExecutable('curl'), 'install curl (apt-get install curl)');
    // Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    const result = await run(bash, [join(ROOT, 'examples', 'curl.sh')], { env: { ADAM_API: 'http://127.0.0.1:9', OUT_DIR: outDir }, timeoutMs: 30_000 });
    expect(result.code, describeRun(result)).not.toBe(0);
    expect(result.stdout).not.toContain('All calls answered as expected.');
  });
});
