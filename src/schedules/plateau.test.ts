// ReduceLROnPlateau as a pure state machine, against sequences traced by hand through torch's rules.

import { describe, expect, it } from 'vitest';
import { plateauInit, plateauTrajectory, plateauUpdate } from './plateau.ts';
import { SCHEDULE_DEFAULTS, type PlateauSpec } from './types.ts';

const spec = (overrides: Partial<PlateauSpec>): PlateauSpec => ({ type: 'reduce_on_plateau', lr: 1, ...SCHEDULE_DEFAULTS.reduce_on_plateau, ...overrides });

describe('plateauUpdate (ReduceLROnPlateau.step)', () => {
  it.each([
    ['patience 1: the rate drops on the second bad report after the best', { patience: 1, factor: 0.5, threshold: 0 }, [1, 1, 1, 1, 0.5, 0.5, 0.5], [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]],
    ['cooldown 2: bad reports are ignored for two reports after a drop', { patience: 0, factor: 0.5, cooldown: 2 }, [1, 1, 1, 1, 1, 1], [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]],
    ['min_lr floors the rate; a zero-size reduction is skipped', { patience: 0, factor: 0.1, min_lr: 0.05 }, [1, 1, 1, 1], [1, 1, 0.1, 0.05, 0.05]],
    ['a reduction smaller than eps is skipped', { lr: 1.5e-8, patience: 0, factor: 0.5 }, [1, 1, 1], [1.5e-8, 1.5e-8, 1.5e-8, 1.5e-8]],
    ['improvements below the rel threshold are bad reports', { patience: 0, factor: 0.5, threshold: 0.1 }, [1, 0.95, 0.91, 0.8], [1, 1, 0.5, 0.25, 0.25]],
    ['abs threshold: 0.7 after 0.8 is better (0.8 − 0.1 = 0.7000000000000001)', { patience: 0, factor: 0.5, threshold: 0.1, threshold_mode: 'abs' }, [0.8, 0.7, 0.65], [1, 1, 1, 0.5]],
    ['max mode', { mode: 'max', patience: 0, factor: 0.5, threshold: 0.1, threshold_mode: 'abs' }, [0.5, 0.55, 0.7, 0.7], [1, 1, 0.5, 0.5, 0.25]],
    ['a NaN metric is a bad report', { patience: 0, factor: 0.5 }, [1, Number.NaN], [1, 1, 0.5]],
  ] as const)('%s', (_, overrides, metrics, want) => {
    expect(plateauTrajectory(spec(overrides as Partial<PlateauSpec>), metrics)).toEqual(want);
  });

  it('keeps a JSON-serialisable state that can be persisted between reports', () => {
    const s = spec({ patience: 1, cooldown: 1, factor: 0.5 });
    let live = plateauInit(s);
    let persisted = JSON.parse(JSON.stringify(live));
    expect(persisted).toEqual({ lr: 1, best: null, num_bad_epochs: 0, cooldown_counter: 0, num_reports: 0 });
    for (const m of [3, 2, 2, 2, 2, 1, 5, 5, 5]) {
      live = plateauUpdate(s, live, m);
      persisted = JSON.parse(JSON.stringify(plateauUpdate(s, persisted, m)));
      expect(persisted).toEqual(live);
    }
    expect(live).toMatchObject({ best: 1, num_reports: 9 });
  });

  it('does not mutate its input', () => {
    const s = spec({ patience: 0 });
    const state = Object.freeze(plateauInit(s));
    expect(plateauUpdate(s, plateauUpdate(s, state, 1), 1).lr).toBeCloseTo(0.1, 15);
  });
});
