// The committed TypeScript types (clients/typescript/schema.d.ts) must be exactly what
// `npm run client:ts` (openapi-typescript) generates from the committed openapi.yaml, and must
// compile on their own: skipLibCheck hides errors inside .d.ts files, and an unresolvable type there
// silently turns into `any`.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, test } from 'vitest';
import { generate } from '../../clients/typescript/generate.ts';
import { ROOT } from './helpers.ts';

const SCHEMA = join(ROOT, 'clients', 'typescript', 'schema.d.ts');

describe('clients/typescript/schema.d.ts', () => {
  test('is what `npm run client:ts` generates from the current openapi.yaml', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['client:ts']).toBe('node clients/typescript/generate.ts');

    const generated = await generate();
    const committed = readFileSync(SCHEMA, 'utf8');
    if (committed !== generated) {
      const a = committed.split('\n');
      const b = generated.split('\n');
      const line = a.findIndex((l, i) => l !== b[i]);
      const at = line === -1 ? Math.min(a.length, b.length) : line;
      expect.fail(
        'clients/typescript/schema.d.ts is stale: run `npm run client:ts` and commit the result.\n' +
          `first difference at line ${at + 1}:\n  committed: ${a[at] ?? '(end of file)'}\n  generated: ${b[at] ?? '(end of file)'}`,
      );
    }
  });

  test('type-checks on its own with skipLibCheck off', () => {
    const program = ts.createProgram([SCHEMA], { strict: true, noEmit: true, skipLibCheck: false, types: [], target: ts.ScriptTarget.ES2022, lib: ['lib.es2022.d.ts'] });
    const diagnostics = ts.getPreEmitDiagnostics(program).filter((d) => d.file?.fileName === SCHEMA);
    const messages = diagnostics.map((d) => {
      const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
      return `schema.d.ts:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(messages).toEqual([]);
  });
});
