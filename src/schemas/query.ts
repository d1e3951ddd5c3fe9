// One rule for query strings, on every route that takes them:
// - each parameter at most once (a repeated key is a 422 naming it; lists are comma-separated);
// - an unknown name is a 422 naming it, whatever the name (`__proto__` and `constructor` too);
// - integers in decimal digits only, as JSON writes them (`16`, `-3`; not `0x10`, `1e1`, ` 16`,
//   `+16` or `016`), and other numbers as JSON writes them (`0.001`, `1e-3`; not `.5`, `Infinity`);
// - booleans `true`/`false`, or `1`/`0` as curl users write them.
// Routes declare their query with `strictQuery({...})` and the field builders below, so the rule,
// its error messages and the OpenAPI parameters come from one place.

import { z } from '@hono/zod-openapi';
import { describeValue } from '../tensors/tree.ts';

/** JSON's integer grammar: the only spelling a query integer may take. */
export const INTEGER_TEXT = /^-?(0|[1-9][0-9]*)$/;
/** JSON's number grammar: the only spelling a query number may take. */
export const NUMBER_TEXT = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

export const INTEGER_RULE = 'must be an integer in decimal digits (e.g. 100)';
export const NUMBER_RULE = 'must be a number written as in JSON (e.g. 0.001 or 1e-3)';
export const BOOLEAN_RULE = 'must be true, false, 1 or 0';

/** A query integer (JSON grammar, safe range), or undefined when `text` is not one. */
export function parseQueryInteger(text: string): number | undefined {
  if (!INTEGER_TEXT.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A finite query number (JSON grammar), or undefined when `text` is not one. */
export function parseQueryNumber(text: string): number | undefined {
  if (!NUMBER_TEXT.test(text)) return undefined;
  const n = Number(text);
  return Number.isFinite(n) ? n : undefined;
}

/** A query boolean, or undefined. */
export function parseQueryBoolean(text: string): boolean | undefined {
  return text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : undefined;
}

/** The validator hands a repeated key over as an array of its values: that is an error on the key. */
function once(value: unknown, ctx: z.RefinementCtx): unknown {
  if (!Array.isArray(value)) return value;
  ctx.addIssue({ code: 'custom', input: value, message: `is given ${value.length} times; give it once` });
  return z.NEVER;
}

const got = (text: string) => `got ${describeValue(text)}`;

interface Doc {
  description: string;
  example?: string;
}

function integerIn(min: number, max: number) {
  return z.preprocess(
    once,
    z.string().transform((text, ctx) => {
      const n = parseQueryInteger(text);
      if (n === undefined) ctx.addIssue({ code: 'custom', message: `${INTEGER_RULE}, ${got(text)}` });
      else if (n < min || n > max) ctx.addIssue({ code: 'custom', message: `must be between ${min} and ${max}, got ${n}` });
      else return n;
      return z.NEVER;
    }),
  );
}

const integerDoc = ({ min, max, description, example }: Doc & { min: number; max: number }) => ({
  type: 'integer',
  minimum: min,
  maximum: max,
  description,
  ...(example === undefined ? {} : { example }),
});

/** An integer parameter in [min, max], `default` when absent. */
export function queryInteger(options: Doc & { min: number; max: number; default: number }) {
  return integerIn(options.min, options.max)
    .default(options.default)
    .openapi({ ...integerDoc(options), default: options.default } as never);
}

/** An optional integer parameter in [min, max]. */
export function queryOptionalInteger(options: Doc & { min: number; max: number }) {
  return integerIn(options.min, options.max).optional().openapi(integerDoc(options) as never);
}

/** A boolean parameter: `true`/`false`, or `1`/`0`. */
export function queryBoolean({ default: fallback, description }: Doc & { default: boolean }) {
  return z
    .preprocess(
      once,
      z.string().transform((text, ctx) => {
        const b = parseQueryBoolean(text);
        if (b !== undefined) return b;
        ctx.addIssue({ code: 'custom', message: `${BOOLEAN_RULE}, ${got(text)}` });
        return z.NEVER;
      }),
    )
    .default(fallback)
    .openapi({ type: 'string', enum: ['true', 'false', '1', '0'], default: String(fallback), description } as never);
}

/** One of a few names. */
export function queryEnum<const T extends readonly [string, ...string[]]>(values: T, { default: fallback, description }: Doc & { default: T[number] }) {
  return z
    .preprocess(
      once,
      z.string().transform((text, ctx) => {
        if ((values as readonly string[]).includes(text)) return text as T[number];
        ctx.addIssue({ code: 'custom', message: `must be one of ${values.join(', ')}, ${got(text)}` });
        return z.NEVER;
      }),
    )
    .default(fallback as never)
    .openapi({ type: 'string', enum: [...values], default: fallback, description } as never);
}

/** Free text (or text a handler parses itself, such as a list), given at most once. */
export function queryText({ description, example }: Doc) {
  return z
    .preprocess(once, z.string().optional())
    .openapi({ type: 'string', description, ...(example === undefined ? {} : { example }) } as never);
}

/**
 * A route's query: exactly these parameters, each at most once. Unknown names, prototype-ish ones
 * included, are 422s naming them (the validation hook calls them unknown query parameters).
 */
export function strictQuery<Shape extends z.ZodRawShape>(shape: Shape) {
  return z.object(shape).strict();
}

/** An optional number parameter (JSON grammar, finite). */
export function queryOptionalNumber({ description, example }: Doc) {
  return z
    .preprocess(
      once,
      z.string().transform((text, ctx) => {
        const n = parseQueryNumber(text);
        if (n !== undefined) return n;
        ctx.addIssue({ code: 'custom', message: `${NUMBER_RULE}, ${got(text)}` });
        return z.NEVER;
      }),
    )
    .optional()
    .openapi({ type: 'number', description, ...(example === undefined ? {} : { example }) } as never);
}

/** An optional boolean parameter: `true`/`false`, or `1`/`0`. */
export function queryOptionalBoolean({ description }: Doc) {
  return z
    .preprocess(
      once,
      z.string().transform((text, ctx) => {
        const b = parseQueryBoolean(text);
        if (b !== undefined) return b;
        ctx.addIssue({ code: 'custom', message: `${BOOLEAN_RULE}, ${got(text)}` });
        return z.NEVER;
      }),
    )
    .optional()
    .openapi({ type: 'string', enum: ['true', 'false', '1', '0'], description } as never);
}

/** An optional parameter naming one of a few values. */
export function queryOptionalEnum<const T extends readonly [string, ...string[]]>(values: T, { description }: Doc) {
  return z
    .preprocess(
      once,
      z.string().transform((text, ctx) => {
        if ((values as readonly string[]).includes(text)) return text as T[number];
        ctx.addIssue({ code: 'custom', message: `must be one of ${values.join(', ')}, ${got(text)}` });
        return z.NEVER;
      }),
    )
    .optional()
    .openapi({ type: 'string', enum: [...values], description } as never);
}

/**
 * Adam's hyperparameters and the dtype as query parameters: for bodies that carry only tensors
 * (safetensors), where JSON bodies have `hyperparams` and `dtype` fields.
 */
export const hyperparamQueryShape = (what: string) => ({
  lr: queryOptionalNumber({ description: `${what}: learning rate (torch \`lr\`).` }),
  beta1: queryOptionalNumber({ description: `${what}: torch \`betas[0]\`.` }),
  beta2: queryOptionalNumber({ description: `${what}: torch \`betas[1]\`.` }),
  eps: queryOptionalNumber({ description: `${what}: torch \`eps\`.` }),
  weight_decay: queryOptionalNumber({ description: `${what}: torch \`weight_decay\`.` }),
  decoupled_weight_decay: queryOptionalBoolean({ description: `${what}: \`true\` for AdamW.` }),
  amsgrad: queryOptionalBoolean({ description: `${what}: torch \`amsgrad\`.` }),
  maximize: queryOptionalBoolean({ description: `${what}: torch \`maximize\`.` }),
  dtype: queryOptionalEnum(['float32', 'float64'], { description: `${what}: \`float32\` or \`float64\` (default: float64 if any params tensor is F64, else float32).` }),
});
