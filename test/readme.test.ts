// README.md against the code: the optimizer table is the registry's (src/optim/readme-table.ts),
// and the comparison example's request, run through the Worker, answers the numbers shown.

import { describe, expect, it } from 'vitest';
import readme from '../README.md?raw';
import { optimizersTable } from '../src/optim/readme-table.ts';
import { OPTIMIZERS } from '../src/optim/registry.ts';
import { PROBLEM_NAMES } from '../src/problems/index.ts';
import { postJson } from './helpers/http.ts';

describe('README.md', () => {
  it('has the optimizer table the registry gives (run `npm run readme:optimizers` after changing an optimizer)', () => {
    expect(readme).toContain(optimizersTable());
    for (const def of OPTIMIZERS) expect(optimizersTable()).toContain(`| \`${def.name}\` | \`POST /v1/${def.name}/step\` |`);
  });

  const section = readme.slice(readme.indexOf('## Compare optimizers'), readme.indexOf('## Learning-rate schedules'));

  it('documents every problem', () => {
    for (const name of PROBLEM_NAMES) expect(section).toContain(`| \`${name}\` |`);
  });

  it('shows what the comparison example answers', async () => {
    const curl = /```sh\ncurl -s http:\/\/localhost:8787\/v1\/compare -H 'content-type: application\/json' -d '(\{[\s\S]*?\})'\n```/.exec(section);
    expect(curl).not.toBeNull();
    const shown = /```json\n([\s\S]*?)\n```/.exec(section)![1]!;
    const res = await postJson('/v1/compare', JSON.parse(curl![1]!));
    expect(res.status).toBe(200);
    const problem = JSON.parse(/^\{"problem":(\{.*?\}\}),/.exec(shown)![1]!);
    expect(res.body.problem).toEqual(problem);
    // Each run's label and final loss as shown, in order.
    const finals = [...shown.matchAll(/\{"label":"([^"]+)",[\s\S]*?"final_loss":([0-9.e-]+)/g)].map((m) => [m[1], Number(m[2])]);
    expect(finals).toHaveLength(5);
    expect(res.body.runs.map((r: { label: string; final_loss: number }) => [r.label, r.final_loss])).toEqual(finals);
    // The first run in full: hyperparams, the first three losses, final params.
    const first = res.body.runs[0];
    const shownFirst = /"hyperparams":(\{[^}]*\}),\s*"loss":\[([^…]*),…\][\s\S]*?"final_params":(\[[^\]]*\]),"steps_completed":(\d+),"stopped":null/.exec(shown)!;
    expect(first.hyperparams).toEqual(JSON.parse(shownFirst[1]!));
    expect(first.loss.slice(0, 3)).toEqual(JSON.parse(`[${shownFirst[2]}]`));
    expect(first.final_params).toEqual(JSON.parse(shownFirst[3]!));
    expect(first.steps_completed).toBe(Number(shownFirst[4]));
  });
});
