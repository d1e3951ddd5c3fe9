// Runs the Python examples (examples/python, on the adam_api package of clients/python) against
// wrangler dev: the tour of every operation, the linear-regression fit (with numpy when importable,
// and in plain Python), the binary wire (raw float32 and safetensors, standard library only; with
// torch), several worker processes training one model through one accumulating optimizer, a PyTorch
// model trained with HostedOptimizer, and the client's error for a problem+json
// answer. The package's own tests run in python-package.test.ts.

import { join } from 'node:path';
import { describe, expect, test, type TestContext } from 'vitest';
import { baseUrl, describeRun, findExecutable, requireTool, ROOT, run } from './helpers.ts';

const EXAMPLES = join(ROOT, 'examples', 'python');
const PACKAGE = join(ROOT, 'clients', 'python');
const THRESHOLD = 0.02;

const python = (ctx: TestContext) =>
  requireTool(ctx, 'python3', findExecutable('python3', '/usr/bin/python3'), 'install Python 3 (apt-get install python3); the examples need only its standard library');

/** Runs a Python snippet or script isolated (-I: no user site, no PYTHON* variables) and writing no bytecode (-B). */
const py = (exe: string, args: string[]) => run(exe, ['-I', '-B', ...args], { timeoutMs: 120_000 });

/** A Python that imports torch (Debian's python3-torch is for /usr/bin/python3), or undefined. */
async function torchPython(): Promise<string | undefined> {
  const candidates = [...new Set([findExecutable('python3'), findExecutable('/usr/bin/python3')].filter((x): x is string => x !== undefined))];
  for (const exe of candidates) if ((await py(exe, ['-c', 'import torch'])).code === 0) return exe;
  return undefined;
}

function finalLoss(stdout: string): number {
  const match = /^final loss: ([0-9.eE+-]+)/m.exec(stdout);
  expect(match, `no "final loss" line in:\n${stdout}`).not.toBeNull();
  return Number(match![1]);
}

describe('examples/python', () => {
  test('quickstart.py: every client method, checked', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'quickstart.py'), '--base-url', baseUrl()]);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('quickstart: all checks passed');
    expect(result.stdout).not.toContain('FAILED');
  });

  test('linear_regression.py fits y = 3x - 2: the final loss is below the threshold', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'linear_regression.py'), '--base-url', baseUrl(), '--threshold', String(THRESHOLD)]);
    expect(result.code, describeRun(result)).toBe(0);
    const loss = finalLoss(result.stdout);
    expect(loss).toBeLessThan(THRESHOLD);
    // It printed the loss along the way, and the loss fell.
    const losses = [...result.stdout.matchAll(/^step +(\d+) +loss ([0-9.]+)/gm)].map((m) => Number(m[2]));
    expect(losses.length).toBeGreaterThanOrEqual(5);
    expect(losses[0]!).toBeGreaterThan(1);
    expect(losses.at(-1)!).toBeCloseTo(loss, 6);
    const fitted = /^fitted: w = ([0-9.+-]+), b = ([0-9.+-]+)/m.exec(result.stdout);
    expect(Number(fitted?.[1])).toBeCloseTo(3, 1);
    expect(Number(fitted?.[2])).toBeCloseTo(-2, 1);
  });

  test('linear_regression.py without numpy (plain-Python gradients) reaches the same loss', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'linear_regression.py'), '--base-url', baseUrl(), '--no-numpy', '--every', '50']);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('gradients with plain Python');
    expect(finalLoss(result.stdout)).toBeLessThan(THRESHOLD);
  });

  test('linear_regression.py exits non-zero when the loss is not below the threshold', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'linear_regression.py'), '--base-url', baseUrl(), '--steps', '3', '--threshold', '0.001']);
    expect(result.code, describeRun(result)).toBe(1);
    expect(result.stderr).toContain('FAILED: final loss');
  });

  test('accumulate.py: four worker processes train one model through one optimizer, equal to single-process training bit for bit', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'accumulate.py'), '--base-url', baseUrl(), '--workers', '4', '--steps', '5']);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('4 worker processes trained 5 steps');
    expect(result.stdout).toContain('equal single-process training with the averaged gradients, bit for bit');
    expect(result.stdout).toContain('accumulate: all checks passed');
  });

  test('binary.py: uploads in raw parts, raw float32 steps equal JSON steps, a safetensors checkpoint moves to another optimizer', async (ctx) => {
    const exe = python(ctx);
    const result = await py(exe, [join(EXAMPLES, 'binary.py'), '--base-url', baseUrl()]);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('raw and JSON steps gave the same bits at every step');
    expect(result.stdout).toContain('checkpoint PUT into a second optimizer');
    expect(result.stdout).toContain('binary: all checks passed');
    expect(result.stdout).not.toContain('FAILED');
  });

  test('binary.py with torch: to_torch on a server checkpoint trains on in torch exactly as the server does; from_torch PUTs back', async (ctx) => {
    const exe = requireTool(ctx, 'a python3 that imports torch', await torchPython(), 'apt-get install python3-torch (.ci/run installs it)');
    const result = await py(exe, [join(EXAMPLES, 'binary.py'), '--base-url', baseUrl(), '--require-torch']);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain("torch: 5 steps after to_torch equal the server's, bit for bit");
    expect(result.stdout).toContain("torch: from_torch equals the server's checkpoint, tensor for tensor");
    expect(result.stdout).toContain('binary: all checks passed');
  });

  test('pytorch.py: a model trained with HostedOptimizer and a server-side warm-up + cosine equals torch.optim.AdamW + LambdaLR at every step', async (ctx) => {
    const exe = requireTool(ctx, 'a python3 that imports torch', await torchPython(), 'apt-get install python3-torch (.ci/run installs it)');
    const result = await py(exe, [join(EXAMPLES, 'pytorch.py'), '--base-url', baseUrl(), '--steps', '20']);
    expect(result.code, describeRun(result)).toBe(0);
    expect(result.stdout).toContain('identical to torch.optim.AdamW + LambdaLR at every one of 20 steps');
    expect(result.stdout).toContain('state_dict: a local AdamW loaded from the hosted state takes the same next step');
  });

  test('the client raises AdamApiError carrying the problem+json', async (ctx) => {
    const exe = python(ctx);
    const snippet = [
      'import json, sys',
      `sys.path.insert(0, ${JSON.stringify(PACKAGE)})`,
      'from adam_api import AdamApi, AdamApiError',
      'api = AdamApi(sys.argv[1])',
      'out = {}',
      'for name, call in [',
      '    ("invalid", lambda: api.step([1.0], [0.1], hyperparams={"lr": -1})),',
      '    ("unknown", lambda: api.optimizer("0" * 64, "token").info()),',
      ']:',
      '    try:',
      '        call()',
      '        out[name] = None',
      '    except AdamApiError as err:',
      '        out[name] = {"status": err.status, "type": err.type, "problem": err.problem, "message": str(err)}',
      'try:',
      '    api.step([float("nan")], [0.1])',
      '    out["nan"] = "sent"',
      'except ValueError:',
      '    out["nan"] = "refused locally"',
      'print(json.dumps(out))',
    ].join('\n');
    const result = await py(exe, ['-c', snippet, baseUrl()]);
    expect(result.code, describeRun(result)).toBe(0);
    const out = JSON.parse(result.stdout);
    expect(out.invalid).toMatchObject({ status: 422, type: 'urn:adam-api:problem:validation-error' });
    expect(out.invalid.problem.errors[0].field).toBe('hyperparams.lr');
    expect(out.invalid.message).toContain('422');
    expect(out.invalid.message).toContain('hyperparams.lr');
    expect(out.unknown.status).toBeGreaterThanOrEqual(400);
    expect(out.unknown.status).toBeLessThan(500);
    expect(out.unknown.problem.status).toBe(out.unknown.status);
    expect(out.nan).toBe('refused locally');
  });
});
