import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import type { AdamConfig } from '../../src/train/optimizer.ts';
import * as tf from '../../src/tf.ts';
import { AdamOptimizer, globalNorm } from '../../src/train/optimizer.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

const BASE: AdamConfig = { kind: 'adam', lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, gradClip: 0 };

/** torch.optim.Adam / AdamW on plain numbers, one parameter at a time: the reference. */
function reference(config: AdamConfig, start: number[], gradients: number[][]): number[] {
  const p = start.slice();
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  gradients.forEach((rawGrads, index) => {
    const t = index + 1;
    const norm = Math.sqrt(rawGrads.reduce((a, g) => a + g * g, 0));
    const clip = config.gradClip > 0 && norm > config.gradClip ? config.gradClip / (norm + 1e-6) : 1;
    for (let i = 0; i < p.length; i++) {
      let g = rawGrads[i] * clip;
      if (config.kind === 'adam') g += config.weightDecay * p[i];
      else p[i] *= 1 - config.lr * config.weightDecay;
      m[i] = config.beta1 * m[i] + (1 - config.beta1) * g;
      v[i] = config.beta2 * v[i] + (1 - config.beta2) * g * g;
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - config.beta2 ** t) + config.eps;
      p[i] -= (config.lr / (1 - config.beta1 ** t)) * (m[i] / denom);
    }
  });
  return p;
}

for (const config of [BASE, { ...BASE, kind: 'adamw' as const }, { ...BASE, gradClip: 0.5 }]) {
  test(`optimizer - ${config.kind}${config.gradClip ? ' with clipping' : ''} matches the torch formulas`, async () => {
    const start = [0.5, -1.5, 2];
    const gradients = [
      [0.3, -0.2, 1.0],
      [0.1, 0.4, -0.7],
      [-0.5, 0.05, 0.2],
    ];
    const params = new Map([['w', tf.variable(tf.tensor1d(start))]]);
    const optimizer = new AdamOptimizer(config);
    let lastNorm = 0;
    for (const g of gradients) {
      const grad = tf.tensor1d(g);
      lastNorm = (await optimizer.apply(params, new Map([['w', grad]]))).gradNorm;
      grad.dispose();
    }
    const expected = reference(config, start, gradients);
    const actual = Array.from(params.get('w')!.dataSync());
    actual.forEach((value, i) => assert.ok(Math.abs(value - expected[i]) < 1e-5, `element ${i}: ${value} vs ${expected[i]}`));
    assert.ok(Math.abs(lastNorm - Math.hypot(...gradients[2])) < 1e-6);
    assert.equal(optimizer.stepCount, 3);
    optimizer.dispose();
    params.get('w')!.dispose();
  });
}

test('optimizer - a missing gradient names the parameter', async () => {
  const params = new Map([['blocks.0.ln1.gamma', tf.variable(tf.ones([2]))]]);
  const optimizer = new AdamOptimizer(BASE);
  await assert.rejects(optimizer.apply(params, new Map()), /blocks\.0\.ln1\.gamma/);
  params.get('blocks.0.ln1.gamma')!.dispose();
});

test('optimizer - global norm sums over all tensors', async () => {
  const a = tf.tensor1d([3]);
  const b = tf.tensor2d([[4, 0]]);
  assert.equal(await globalNorm([a, b]), 5);
  a.dispose();
  b.dispose();
});
