import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { GPT } from '../../src/model/gpt.ts';
import { denseWordEmbeddingGradient, type WordEmbeddingRows } from '../../src/model/manual/embedding.ts';
import { sliceBackward, sliceForward } from '../../src/model/manual/slice.ts';
import { WORD_EMBEDDING, sliceForLayers } from '../../src/model/params.ts';
import * as tf from '../../src/tf.ts';
import { tinyBatch, tinyConfig } from './helpers.ts';

after(async () => {
  await initBackend('cpu', () => {});
});

/**
 * A first pipeline stage's micro-batches, each backward run twice from the same forward: once with the
 * dense word-embedding gradient, once with its rows. The rows merged once must equal the dense
 * gradients added in micro-batch order bit for bit (a pipeline stage relies on it), and every other
 * gradient must be the same tensor values either way.
 */
for (const backend of ['cpu', 'wasm'] as const) {
  test(`word-embedding rows - merged rows equal the dense gradients added in order, bit for bit (${backend})`, async () => {
    await initBackend(backend, () => {});
    const config = tinyConfig({ numLayers: 2, vocabSize: 41, maxPositionEmbeddings: 10 });
    const first = new GPT(config, sliceForLayers(config, 0, 1), 5);
    const batches = [tinyBatch(config, 2, 8, 5), tinyBatch(config, 1, 8), tinyBatch(config, 2, 8, 3)];
    let dense: tf.Tensor | undefined;
    const rows: WordEmbeddingRows[] = [];
    for (const [index, batch] of batches.entries()) {
      const outputGrad = tf.randomNormal([batch.batch, batch.seqLen, config.hiddenSize], 0, 1, 'float32', 11 + index) as tf.Tensor3D;
      const a = sliceForward(first, batch, undefined);
      const withDense = sliceBackward(first, a.saved, outputGrad);
      const b = sliceForward(first, batch, undefined);
      const withRows = sliceBackward(first, b.saved, outputGrad, { wordEmbeddingRows: true });
      assert.ok(withRows.wordEmbeddingRows !== undefined, 'rows asked for on a first stage');
      assert.equal(withRows.grads.has(WORD_EMBEDDING), false, 'no dense word-embedding entry next to the rows');
      assert.equal(new Set(withRows.wordEmbeddingRows.ids).size, withRows.wordEmbeddingRows.ids.length, 'distinct row ids');
      assert.ok(withRows.wordEmbeddingRows.ids.every((id) => id >= 0 && id < config.vocabSize), 'row ids inside the vocabulary');
      for (const [name, grad] of withRows.grads) assert.deepEqual(grad.dataSync(), withDense.grads.get(name)!.dataSync(), `${name} on micro-batch ${index}`);
      const step = withDense.grads.get(WORD_EMBEDDING)!;
      if (dense === undefined) {
        dense = step;
      } else {
        const sum = tf.add(dense, step);
        tf.dispose([dense, step]);
        dense = sum;
      }
      rows.push(withRows.wordEmbeddingRows);
      tf.dispose([outputGrad, a.output, b.output, ...[...withDense.grads].filter(([name]) => name !== WORD_EMBEDDING).map(([, g]) => g), ...withRows.grads.values()]);
    }
    const merged = denseWordEmbeddingGradient(rows, config.vocabSize, config);
    assert.deepEqual(merged.shape, [config.vocabSize, config.hiddenSize]);
    // Bit for bit, +0 and -0 told apart: the same float32 words.
    assert.deepEqual(new Uint32Array(merged.dataSync().buffer.slice(0)), new Uint32Array(dense!.dataSync().buffer.slice(0)));
    tf.dispose([merged, dense!, ...rows.map((r) => r.values)]);
    first.dispose();
  });
}
