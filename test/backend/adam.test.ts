// Tests the fused wasm Adam update: bit-identical to the tf-op update it replaces, for Adam with L2
// decay, AdamW, clipping and sizes with a tail shorter than 4 elements.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { registerWasmTrainingKernels, restoreStockWasmKernels } from '../../src/backend/wasm/kernels.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import type { OptimizerConfig } from '../../src/config/types.ts';
import { AdamOptimizer } from '../../src/train/optimizer.ts';
import { assertClose, assertNoLeak, randomValues } from './compare.ts';

const SHAPES: number[][] = [[7], [33, 65], [5, 3], [4], [1]];
const BASE: OptimizerConfig = { kind: 'adam', lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, gradClip: 0 };

/** Three updates of random parameters with random gradients; the parameters and moments after them. */
async function threeSteps(config: OptimizerConfig): Promise<Float32Array[]> {
  const params = new Map(SHAPES.map((shape, i) => [`p${i}`, tf.tidy(() => tf.variable(tf.tensor(randomValues(shape.reduce((x, y) => x * y, 1), 10 + i), shape)))]));
  const optimizer = new AdamOptimizer(config);
  try {
    for (let step = 0; step < 3; step++) {
      const grads = new Map([...params].map(([name, p], i) => [name, tf.tidy(() => tf.mul(tf.tensor(randomValues(p.size, 100 * step + i), p.shape), 3))]));
      await optimizer.apply(params, grads);
      tf.dispose([...grads.values()]);
    }
    const moments = [...optimizer.state().moments.values()].flatMap(({ m, v }) => [m, v]);
    return [...params.values(), ...moments].map((t) => t.dataSync() as Float32Array);
  } finally {
    optimizer.dispose();
    tf.dispose([...params.values()]);
  }
}

function assertSameBits(actual: Float32Array[], expected: Float32Array[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: tensor count`);
  actual.forEach((values, t) => {
    const a = new Int32Array(values.buffer, values.byteOffset, values.length);
    const e = new Int32Array(expected[t]!.buffer, expected[t]!.byteOffset, expected[t]!.length);
    const at = a.findIndex((bits, i) => bits !== e[i]);
    assert.equal(at, -1, `${what}: tensor ${t} element ${at} is ${values[at]}, the tf ops give ${expected[t]![at]}`);
  });
}

before(async () => {
  await initBackend('wasm', () => {});
});

describe('wasm Adam update', () => {
  const configs: Array<[string, OptimizerConfig]> = [
    ['adam with L2 decay', BASE],
    ['adamw', { ...BASE, kind: 'adamw' }],
    ['adam with clipping', { ...BASE, gradClip: 0.5 }],
    ['adam without decay', { ...BASE, weightDecay: 0 }],
  ];
  for (const [what, config] of configs) {
    test(`${what} - the fused kernel gives the bits of the tf-op update`, async () => {
      const fused = await withBackend('wasm', () => threeSteps(config));
      restoreStockWasmKernels();
      try {
        const ops = await withBackend('wasm', () => threeSteps(config));
        assertSameBits(fused, ops, what);
      } finally {
        registerWasmTrainingKernels();
      }
      // The cpu backend sums the gradient norm in another order, so clipping may differ in the last bit.
      const cpu = await withBackend('cpu', () => threeSteps(config));
      cpu.forEach((values, t) => assertClose({ shape: [values.length], values: fused[t]! }, { shape: [values.length], values }, `${what} against cpu, tensor ${t}`, 1e-6));
    });
  }

  test('memory - updates leave no tensors behind', async () => {
    await withBackend('wasm', () => assertNoLeak('adam', () => threeSteps(BASE)));
  });
});
