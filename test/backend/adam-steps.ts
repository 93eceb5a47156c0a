/**
 * Implements: the Adam parity tests' workload, shared by the wasm and webgpu kernel tests: three
 * updates of seeded random parameters by seeded random gradients, and the configurations compared.
 */
import * as tf from '../../src/tf.ts';
import type { AdamConfig } from '../../src/train/optimizer.ts';
import { AdamOptimizer } from '../../src/train/optimizer.ts';
import { randomValues } from './compare.ts';

export const ADAM_BASE: AdamConfig = { kind: 'adam', lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, gradClip: 0 };

/** Every variant the fused updates must match: L2 decay, decoupled decay, clipping, none. */
export const ADAM_CASES: ReadonlyArray<[string, AdamConfig]> = [
  ['adam with L2 decay', ADAM_BASE],
  ['adamw', { ...ADAM_BASE, kind: 'adamw' }],
  ['adam with clipping', { ...ADAM_BASE, gradClip: 0.5 }],
  ['adam without decay', { ...ADAM_BASE, weightDecay: 0 }],
];

/**
 * Three updates of parameters of `shapes`; copies of the parameters and moments after them (the
 * caller's to dispose). With `restart`, the state after the first update is read out and loaded into
 * a fresh optimizer, as a checkpoint's save and restore do.
 */
export async function threeAdamSteps(config: AdamConfig, shapes: number[][], restart = false): Promise<tf.Tensor[]> {
  const params = new Map(shapes.map((shape, i) => [`p${i}`, tf.tidy(() => tf.variable(tf.tensor(randomValues(shape.reduce((x, y) => x * y, 1), 10 + i), shape)))]));
  let optimizer = new AdamOptimizer(config);
  try {
    for (let step = 0; step < 3; step++) {
      if (restart && step === 1) {
        const moments = new Map<string, { m: Float32Array; v: Float32Array }>();
        for (const [name, { m, v }] of optimizer.state().moments) moments.set(name, { m: (await m.data()) as Float32Array, v: (await v.data()) as Float32Array });
        const stepCount = optimizer.stepCount;
        optimizer.dispose();
        optimizer = new AdamOptimizer(config);
        optimizer.loadState(stepCount, moments, params);
      }
      const grads = new Map([...params].map(([name, p], i) => [name, tf.tidy(() => tf.mul(tf.tensor(randomValues(p.size, 100 * step + i), p.shape), 3))]));
      await optimizer.apply(params, grads);
      tf.dispose([...grads.values()]);
    }
    const moments = [...optimizer.state().moments.values()].flatMap(({ m, v }) => [m, v]);
    return [...params.values(), ...moments].map((t) => t.clone());
  } finally {
    optimizer.dispose();
    tf.dispose([...params.values()]);
  }
}
