import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PlacementError, place, type PlacedTensor } from './placement.ts';

/** A layout from (name, shape) pairs, offsets in order. */
function layout(...specs: Array<[string, number[]]>): PlacedTensor[] {
  let offset = 0;
  return specs.map(([name, shape]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const t = { name, shape, offset, size };
    offset += size;
    return t;
  });
}

const names = (shards: ReturnType<typeof place>) => shards.map((s) => s.pieces.map((p) => p.name));

describe('placement: whole tensors where they fit', () => {
  it('cuts on tensor boundaries nearest the balanced cut', () => {
    const l = layout(['a', [3]], ['b', [3]], ['c', [3]], ['d', [3]]);
    expect(names(place(l, { capacity: 6 }))).toEqual([['a', 'b'], ['c', 'd']]);
    expect(place(l, { capacity: 6 }).map((s) => [s.start, s.end])).toEqual([[0, 6], [6, 12]]);
    // Four shards asked for: one tensor each.
    expect(names(place(l, { capacity: 100, shards: 4 }))).toEqual([['a'], ['b'], ['c'], ['d']]);
  });

  it('prefers a tensor boundary to a split even when the balance is worse', () => {
    // 10 + 2 elements over two shards of 10: the only boundary inside the window [2, 10] is 10.
    const l = layout(['w', [5, 2]], ['b', [2]]);
    expect(names(place(l, { capacity: 10, shards: 2 }))).toEqual([['w'], ['b']]);
  });

  it('one shard holds a model that fits', () => {
    const l = layout(['w', [4, 4]], ['b', [4]]);
    const [only, ...rest] = place(l, { capacity: 1000 });
    expect(rest).toEqual([]);
    expect(only).toEqual({
      start: 0,
      end: 20,
      pieces: [
        { tensor: 0, name: 'w', from: 0, to: 16, shape: [4, 4] },
        { tensor: 1, name: 'b', from: 0, to: 4, shape: [4] },
      ],
    });
  });
});

describe('placement: tensors larger than a shard are split on row boundaries', () => {
  it('an embedding of 10 rows of 4 over shards of 16 elements', () => {
    const shards = place(layout(['embed', [10, 4]]), { capacity: 16 });
    // 40 elements need 3 shards. First cut: balanced at ceil(40 / 3) = 14, rows at 12 and 16 equally
    // near, the lower taken. Second: balanced at 12 + ceil(28 / 2) = 26, rows at 24 and 28: 24.
    expect(shards.map((s) => [s.start, s.end])).toEqual([[0, 12], [12, 24], [24, 40]]);
    expect(shards.flatMap((s) => s.pieces)).toEqual([
      { tensor: 0, name: 'embed[0:12]', from: 0, to: 12, shape: [3, 4] },
      { tensor: 0, name: 'embed[12:24]', from: 12, to: 24, shape: [3, 4] },
      { tensor: 0, name: 'embed[24:40]', from: 24, to: 40, shape: [4, 4] },
    ]);
  });

  it('a vector splits anywhere', () => {
    const shards = place(layout(['v', [10]]), { capacity: 4 });
    expect(shards.map((s) => s.pieces.map((p) => [p.name, p.shape]))).toEqual([[['v[0:4]', [4]]], [['v[4:7]', [3]]], [['v[7:10]', [3]]]]);
  });

  it('a row larger than a shard, or a whole tensor with wholeTensors, cannot be placed', () => {
    expect(() => place(layout(['w', [2, 8]]), { capacity: 4 })).toThrow(PlacementError);
    expect(() => place(layout(['w', [2, 8]]), { capacity: 4 })).toThrow('a row of tensor w (8 elements) is larger than one shard (4 elements)');
    expect(() => place(layout(['w', [2, 4]]), { capacity: 4, wholeTensors: true })).toThrow('tensor w (8 elements) is larger than one shard (4 elements)');
  });

  it('too few shards asked for is an error naming the least', () => {
    expect(() => place(layout(['w', [10]]), { capacity: 4, shards: 2 })).toThrow('2 shards of at most 4 elements cannot hold these 10 elements (at least 3)');
    expect(() => place(layout(['w', [2, 5]]), { capacity: 10, shards: 3 })).toThrow('3 shards for 2 rows: each shard needs at least one whole row');
  });

  it('rows can force one more shard than the balanced count', () => {
    // 3 rows of 3 over shards of 4: each shard holds at most one row.
    const shards = place(layout(['w', [3, 3]]), { capacity: 4 });
    expect(shards.map((s) => [s.start, s.end])).toEqual([[0, 3], [3, 6], [6, 9]]);
  });
});

describe('placement: a 100M-parameter model', () => {
  it('28 shards of at most 4,194,304 elements; only the embedding (larger than a shard) is split', () => {
    // A GPT-like layout: a 50,000 × 1,024 embedding (51.2M) and 48 layers of 1,024 × 1,024 + 1,024.
    const specs: Array<[string, number[]]> = [['embed.weight', [50_000, 1_024]]];
    for (let i = 0; i < 48; i++) specs.push([`h.${i}.weight`, [1_024, 1_024]], [`h.${i}.bias`, [1_024]]);
    const l = layout(...specs);
    const size = l.reduce((a, t) => a + t.size, 0);
    expect(size).toBe(51_200_000 + 48 * 1_049_600);
    const shards = place(l, { capacity: 4_194_304 });
    // 101,580,800 elements need 25 shards of 4,194,304 by count. With every layer whole: the
    // embedding fills 12 shards (4,096 rows each) and leaves 848 rows (868,352 elements), beside which
    // 3 layers (3 × 1,049,600) fit; the other 45 layers go 3 to a shard (a 4th weight would make
    // 4,197,376 > 4,194,304): 12 + 1 + 15 = 28 at the fewest (the cuts then balance the 28).
    expect(Math.ceil(size / 4_194_304)).toBe(25);
    expect(shards.length).toBe(28);
    // Asked for 25, the layers are split where the count requires.
    const tight = place(l, { capacity: 4_194_304, shards: 25 });
    expect(tight.length).toBe(25);
    for (const s of tight) expect(s.end - s.start).toBeLessThanOrEqual(4_194_304);
    for (const s of shards) expect(s.end - s.start).toBeLessThanOrEqual(4_194_304);
    const split = new Set(shards.flatMap((s) => s.pieces.filter((p) => p.name.includes('[')).map((p) => l[p.tensor]!.name)));
    expect([...split]).toEqual(['embed.weight']);
  });
});

describe('placement: invariants over random layouts', () => {
  const tensorArb = fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 0, maxLength: 3 });
  it('contiguous ranges within capacity; pieces cover each range in order on row boundaries', () => {
    fc.assert(
      fc.property(fc.array(tensorArb, { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 40 }), fc.option(fc.integer({ min: 1, max: 12 })), fc.boolean(), (shapes, capacity, shardsWanted, whole) => {
        const l = layout(...shapes.map((s, i) => [`t${i}`, s] as [string, number[]]));
        const size = l.reduce((a, t) => a + t.size, 0);
        // Independently: the explicit set of legal cuts, the fewest shards (greedy) and the most.
        const legal = new Set<number>([0, size]);
        for (const t of l) {
          if (t.size === 0) continue;
          const unit = whole ? t.size : t.shape.length >= 2 ? t.size / t.shape[0]! : 1;
          for (let c = t.offset; c <= t.offset + t.size; c += unit) legal.add(c);
        }
        const sorted = [...legal].sort((a, b) => a - b);
        // The default count: cuts only at tensor ends, but inside tensors larger than a shard.
        const preferred = new Set<number>([0, size]);
        for (const t of l) {
          if (t.size === 0) continue;
          const unit = whole || t.size <= capacity ? t.size : t.shape.length >= 2 ? t.size / t.shape[0]! : 1;
          for (let c = t.offset; c <= t.offset + t.size; c += unit) preferred.add(c);
        }
        const pref = [...preferred].sort((a, b) => a - b);
        const tooBig = l.some((t) => t.size > 0 && (whole ? t.size : t.shape.length >= 2 ? t.size / t.shape[0]! : 1) > capacity);
        let fewest = 0;
        if (!tooBig) for (let at = 0; at < size; fewest++) at = Math.max(...sorted.filter((c) => c <= at + capacity));
        const most = sorted.length - 1;
        let fewestWhole = 0;
        if (!tooBig) for (let at = 0; at < size; fewestWhole++) at = Math.max(...pref.filter((c) => c <= at + capacity));
        const wanted = shardsWanted ?? fewestWhole;
        const possible = size === 0 || (!tooBig && wanted >= fewest && wanted <= most);
        let shards;
        try {
          shards = place(l, { capacity, shards: shardsWanted ?? undefined, wholeTensors: whole });
        } catch (e) {
          if (!(e instanceof PlacementError)) throw e;
          expect(possible).toBe(false);
          return;
        }
        expect(possible).toBe(true);
        expect(shards.length).toBe(size === 0 ? 1 : wanted);
        let at = 0;
        const seen = new Map<number, number>(); // tensor → next element expected
        for (const s of shards) {
          expect(s.start).toBe(at);
          expect(s.end - s.start).toBeLessThanOrEqual(capacity);
          if (size > 0) expect(s.end).toBeGreaterThan(s.start);
          let e = s.start;
          for (const p of s.pieces) {
            const t = l[p.tensor]!;
            expect(t.offset + p.from).toBe(e);
            expect(p.from).toBe(seen.get(p.tensor) ?? 0);
            seen.set(p.tensor, p.to);
            expect(p.shape.reduce((a, b) => a * b, 1)).toBe(p.to - p.from);
            const row = t.size === 0 ? 1 : t.shape.length >= 2 ? t.size / t.shape[0]! : 1;
            expect(p.from % row).toBe(0);
            expect(p.to % row).toBe(0);
            if (whole) expect([p.from, p.to]).toEqual([0, t.size]);
            expect(p.name).toBe(p.from === 0 && p.to === t.size ? t.name : `${t.name}[${p.from}:${p.to}]`);
            e = t.offset + p.to;
          }
          expect(e).toBe(s.end);
          at = s.end;
        }
        expect(at).toBe(size);
        // Every tensor placed completely (empty ones exactly once).
        l.forEach((t, i) => expect(seen.get(i)).toBe(t.size));
      }),
      { numRuns: 2000 },
    );
  });
});
