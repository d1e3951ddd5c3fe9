// Generates clients/typescript/schema.d.ts from openapi.yaml with openapi-typescript (`npm run client:ts`).
// `--check` writes nothing and exits 1 when the committed file differs from what would be generated.
//
// Two settings differ from the openapi-typescript CLI's defaults:
// - defaultNonNullable: false. The spec's schemas serve requests and responses alike, and a field
//   with a default (hyperparams.beta1, …) is optional in a request; the CLI default would require it.
// - A schema that contains arrays of itself (Tensor: a number or an array of tensors) is emitted as
//   `number | TensorArray` with `interface TensorArray extends Array<Tensor>`. The CLI emits
//   `components["schemas"]["Tensor"][]` inside the `components` interface, which TypeScript cannot
//   resolve (TS2502, hidden by skipLibCheck), so every tensor silently became `any`.

import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import ts from 'typescript';

const ROOT = join(import.meta.dirname, '..', '..');
const SPEC = join(ROOT, 'openapi.yaml');
const OUTPUT = join(import.meta.dirname, 'schema.d.ts');

const COMPONENT = /^#\/components\/schemas\/([^/]+)(\/.*)?$/;
const unescapePointer = (s: string) => s.replace(/~1/g, '/').replace(/~0/g, '~');

/** Component name → name of the interface standing for "array of that component". */
const recursiveArrays = new Map<string, string>();

export async function generate(): Promise<string> {
  recursiveArrays.clear();
  const ast = await openapiTS(new URL(`file://${SPEC}`), {
    defaultNonNullable: false,
    silent: true,
    transform(schemaObject, options) {
      // An array whose items are the very component it sits in: refer to a named interface instead.
      const owner = COMPONENT.exec(options.path ?? '');
      const items = 'items' in schemaObject ? schemaObject.items : undefined;
      if (!owner || schemaObject.type !== 'array' || !items || Array.isArray(items) || !('$ref' in items)) return undefined;
      const name = unescapePointer(owner[1]!);
      if (items.$ref !== `#/components/schemas/${owner[1]}`) return undefined;
      const alias = `${name.replace(/[^A-Za-z0-9_$]/g, '_')}Array`;
      recursiveArrays.set(name, alias);
      return ts.factory.createTypeReferenceNode(alias);
    },
  });
  let out = `${COMMENT_HEADER}${astToString(ast)}`;
  for (const [name, alias] of recursiveArrays) {
    out +=
      `/** An array of \`components["schemas"][${JSON.stringify(name)}]\` (an interface, so that TypeScript can express the recursion). */\n` +
      `export interface ${alias} extends Array<components["schemas"][${JSON.stringify(name)}]> {}\n`;
  }
  return out;
}

if (import.meta.main) {
  const generated = await generate();
  const target = relative(process.cwd(), OUTPUT);
  if (process.argv.includes('--check')) {
    let committed = '';
    try {
      committed = readFileSync(OUTPUT, 'utf8');
    } catch {
      // missing: stale
    }
    if (committed !== generated) {
      console.error(`${target} is stale: run \`npm run client:ts\` and commit the result.`);
      process.exit(1);
    }
    console.log(`${target} is up to date with openapi.yaml.`);
  } else {
    writeFileSync(OUTPUT, generated);
    console.log(`wrote ${target} from openapi.yaml`);
  }
}
