// The schedules' arithmetic is torch's, operation for operation: with the C library's own results
// substituted for the few cos/pow calls where glibc is not correctly rounded (recorded in each
// fixture's `libm` by generate.py), every value of every torch fixture is torch's double on glibc,
// bit for bit. Also checks the correctly rounded cos and pow of src/schedules/libm.ts against the
// correctly rounded values recorded there (mpmath at 256 bits).

import { describe, expect, it } from 'vitest';
import cosine from './fixtures/schedules/cosine.json';
import cosineRestarts from './fixtures/schedules/cosine_restarts.json';
import cyclic from './fixtures/schedules/cyclic.json';
import exponential from './fixtures/schedules/exponential.json';
import inverseSqrt from './fixtures/schedules/inverse_sqrt.json';
import linear from './fixtures/schedules/linear.json';
import oneCycle from './fixtures/schedules/one_cycle.json';
import polynomial from './fixtures/schedules/polynomial.json';
import sequential from './fixtures/schedules/sequential.json';
import step from './fixtures/schedules/step.json';
import warmup from './fixtures/schedules/warmup.json';
import { compileSchedule, cos, pow, type Libm } from '../src/schedules/index.ts';
import { ScheduleSpecSchema } from '../src/schemas/schedule.ts';

interface Case {
  name: string;
  schedule: unknown;
  steps?: number[];
  lr: number[];
  not_bit_exact?: string;
  libm?: { cos?: [number, number, number][]; pow?: [number, number, number, number][] };
  lr_correctly_rounded?: Record<string, number>;
}

const CASES = [step, exponential, linear, polynomial, cosine, cosineRestarts, cyclic, oneCycle, sequential, warmup, inverseSqrt].flatMap(
  (f) => (f as unknown as { cases: Case[] }).cases,
).filter((c) => !c.not_bit_exact);

/** glibc's results where they are not correctly rounded, ours elsewhere: the C library torch ran on. */
function glibcLike(c: Case): Libm {
  const cosOf = new Map((c.libm?.cos ?? []).map(([x, y]) => [x, y]));
  const powOf = new Map((c.libm?.pow ?? []).map(([x, y, z]) => [`${x},${y}`, z]));
  return {
    cos: (x) => cosOf.get(x) ?? cos(x),
    pow: (x, y) => powOf.get(`${x},${y}`) ?? pow(x, y),
  };
}

function values(c: Case, libm: Libm): number[] {
  const schedule = compileSchedule(ScheduleSpecSchema.parse(c.schedule) as never, { libm });
  return (c.steps ?? c.lr.map((_, k) => k)).map((k) => schedule(k));
}

describe('torch arithmetic, bit for bit', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s equals torch on glibc with glibc’s cos/pow', (_, c) => {
    const got = values(c, glibcLike(c));
    got.forEach((v, i) => {
      if (!Object.is(v, c.lr[i])) expect.fail(`${c.name}[${i}] = ${v}, torch ${c.lr[i]}`);
    });
  });

  it('the recorded glibc deviations matter: some values differ with a correctly rounded libm', () => {
    const affected = CASES.filter((c) => c.lr_correctly_rounded);
    expect(affected.length).toBeGreaterThan(0);
    for (const c of affected) {
      const got = values(c, { cos, pow });
      for (const [i, want] of Object.entries(c.lr_correctly_rounded ?? {})) expect(Object.is(got[Number(i)], want), `${c.name}[${i}]`).toBe(true);
    }
  });
});

describe('correctly rounded cos and pow', () => {
  it('match the correctly rounded results recorded where glibc errs', () => {
    let n = 0;
    for (const c of CASES) {
      for (const [x, , cr] of c.libm?.cos ?? []) {
        expect(Object.is(cos(x), cr), `cos(${x})`).toBe(true);
        n++;
      }
      for (const [x, y, , cr] of c.libm?.pow ?? []) {
        expect(Object.is(pow(x, y), cr), `pow(${x}, ${y})`).toBe(true);
        n++;
      }
    }
    expect(n).toBeGreaterThan(50);
  });

  it('handle exact cases, ties and special arguments', () => {
    expect(pow(0.75, 34)).toBe(0.00005650448946785622); // 3^34/4^34: exactly halfway, ties to even
    expect(pow(2, 10)).toBe(1024);
    expect(pow(2, -1074)).toBe(5e-324);
    expect(pow(2, 1024)).toBe(Infinity);
    expect(pow(0.5, 1075)).toBe(0);
    expect(pow(0, 2)).toBe(0);
    expect(pow(7, 0)).toBe(1);
    expect(pow(-2, 3)).toBe(-8);
    expect(pow(0.25, 0.5)).toBe(0.5);
    expect(cos(0)).toBe(1);
    expect(cos(-0)).toBe(1);
    expect(cos(Math.PI)).toBe(-1);
    expect(cos(Math.PI / 2)).toBe(6.123233995736766e-17);
    expect(cos(Math.PI / 3)).toBe(0.5000000000000001);
    expect(cos(1e22)).toBe(0.523214785395139); // the classic large-argument case (2/π to 1280 bits)
    expect(Number.isNaN(cos(Infinity))).toBe(true);
  });
});
