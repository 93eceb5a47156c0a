/**
 * The model's pieces on webgpu (tfjs' stock kernels, and this project's where registered) against the
 * cpu backend: a whole small GPT's loss and every gradient through autodiff, the LM head's
 * cross-entropy over more than 2^24 logits (where a flattened gather picked wrong labels on webgpu),
 * and the embedding gradient of a shard that owns none of a micro-batch's ids (an empty scatter-add
 * failed there). Runs on Dawn's OpenGL ES backend over Mesa where there is no GPU.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '../../src/tf.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import { lmHeadCrossEntropy } from '../../src/model/manual/primitives.ts';
import { denseWordEmbeddingGradient } from '../../src/model/manual/embedding.ts';
import type { GPTConfig } from '../../src/model/config.ts';
import { assertClose, randomValues } from './compare.ts';
import { onWebgpuAndCpu, startWebgpu } from './on-webgpu.ts';
import { tinyGptIds, tinyGptLoss, tinyGptParams, type TinyGptShape } from './tiny-gpt.ts';

before(async () => {
  await startWebgpu();
});

describe('webgpu against cpu', () => {
  test('gpt - a small GPT\'s loss and every parameter gradient (autodiff) match cpu', async () => {
    const shape: TinyGptShape = { vocab: 29, hidden: 16, heads: 2, layers: 2, seqLen: 8, batch: 3 };
    const params = tinyGptParams(shape, 100);
    const ids = tinyGptIds(shape, 7);
    const names = [...params.keys()];
    const [webgpu, cpu] = await onWebgpuAndCpu(() => {
      const tensors = names.map((name) => tf.tensor(params.get(name)!.values, params.get(name)!.shape));
      const lossOf = (...values: tf.Tensor[]) => tinyGptLoss(shape, new Map(names.map((name, i) => [name, values[i]!])), tf.tensor2d(ids, [shape.batch, shape.seqLen], 'int32'));
      const { value, grads } = tf.valueAndGrads(lossOf)(tensors);
      return [value, ...grads];
    });
    assertClose(webgpu[0]!, cpu[0]!, 'loss', 1e-5);
    names.forEach((name, i) => assertClose(webgpu[i + 1]!, cpu[i + 1]!, `d loss / d ${name}`, 2e-4));
  });

  test('lm head - cross-entropy over 400 rows x 50304 words (past 2^24 logits): losses and gradients match cpu', async () => {
    const [rows, hidden, vocab] = [400, 8, 50304];
    assert.ok(rows * vocab > 2 ** 24);
    const labels = Int32Array.from({ length: rows }, (_, i) => (i * 7919 + 50000) % vocab);
    const [webgpu, cpu] = await onWebgpuAndCpu(() => {
      const normed = tf.tensor2d(randomValues(rows * hidden, 11), [rows, hidden]);
      const words = tf.tensor2d(randomValues(vocab * hidden, 12).map((v) => v * 4), [vocab, hidden]);
      const { losses, dNormed, dWordEmbedding } = lmHeadCrossEntropy(normed, words, tf.tensor1d(labels, 'int32'), 1 / rows);
      return [losses, dNormed, dWordEmbedding];
    });
    // Every row's loss: a label picked from the wrong column would be off by whole units.
    assertClose(webgpu[0]!, cpu[0]!, 'per-row losses', 1e-5);
    assertClose(webgpu[1]!, cpu[1]!, 'd normed', 1e-4);
    assertClose(webgpu[2]!, cpu[2]!, 'd word embedding', 1e-4);
  });

  test('embedding - a shard\'s dense word gradient from parts of which one owns no ids matches cpu', async () => {
    const config = { hiddenSize: 2 } as GPTConfig;
    const compute = () => {
      const owned = { ids: Int32Array.from([3, 1]), values: tf.tensor2d([1, 2, 3, 4], [2, 2]) };
      const none = { ids: new Int32Array(0), values: tf.zeros([0, 2]) as tf.Tensor2D };
      return [denseWordEmbeddingGradient([none, owned], 5, config), denseWordEmbeddingGradient([owned, none], 5, config)];
    };
    const [webgpu, cpu] = await onWebgpuAndCpu(compute);
    for (const i of [0, 1]) assert.deepEqual([...webgpu[i]!.values], [...cpu[i]!.values]);
    assert.deepEqual([...cpu[0]!.values], [0, 0, 3, 4, 0, 0, 1, 2, 0, 0]);
  });

  test('addN - eight tensors at once (nine storage buffers, over WebGPU\'s default limit of eight) match cpu', async () => {
    const [webgpu, cpu] = await onWebgpuAndCpu(() => [tf.addN(Array.from({ length: 8 }, (_, i) => tf.tensor1d(randomValues(5, 30 + i))))]);
    assertClose(webgpu[0]!, cpu[0]!, 'sum of eight', 1e-6);
  });

  test('memory - the LM head\'s cross-entropy leaves no tensors behind on webgpu', async () => {
    await withBackend('webgpu', async () => {
      const inputs = [tf.tensor2d(randomValues(12, 1), [3, 4]), tf.tensor2d(randomValues(12, 2), [3, 4]), tf.tensor1d([1, 0, 2], 'int32')] as const;
      const before = tf.memory().numTensors;
      const { losses, dNormed, dWordEmbedding } = lmHeadCrossEntropy(inputs[0], inputs[1], inputs[2], 1 / 3);
      await losses.data();
      tf.dispose([losses, dNormed, dWordEmbedding]);
      assert.equal(tf.memory().numTensors, before);
      tf.dispose([...inputs]);
    });
  });
});
