// Tests the fused wasm Adam update: bit-identical to the tf-op update it replaces, for Adam with L2
// decay, AdamW, clipping and sizes with a tail shorter than 4 elements.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { registerWasmTrainingKernels, restoreStockWasmKernels } from '../../src/backend/wasm/kernels.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import type { AdamConfig } from '../../src/train/optimizer.ts';
import { ADAM_BASE, ADAM_CASES, threeAdamSteps } from './adam-steps.ts';
import { assertClose, assertNoLeak } from './compare.ts';

const SHAPES: number[][] = [[7], [33, 65], [5, 3], [4], [1]];

/** threeAdamSteps on the current backend, read synchronously (wasm and cpu can). */
async function threeSteps(config: AdamConfig): Promise<Float32Array[]> {
  const tensors = await threeAdamSteps(config, SHAPES);
  const values = tensors.map((t) => t.dataSync() as Float32Array);
  tf.dispose(tensors);
  return values;
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
  for (const [what, config] of ADAM_CASES) {
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
    await withBackend('wasm', () => assertNoLeak('adam', () => threeSteps(ADAM_BASE)));
  });
});
