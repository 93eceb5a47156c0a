// Tests reading a tensor's values on the training path: lent straight from the wasm heap, read
// from the backend on cpu.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { readRows, readScalar, readTensorCopy, withValues } from '../../src/backend/tensor-view.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import * as tf from '../../src/tf.ts';

before(async () => {
  await initBackend('wasm', () => {});
});

for (const backend of ['wasm', 'cpu'] as const) {
  test(`tensor view - ${backend}: the view holds the tensor's values and readRows gathers rows, -0 included`, async () => {
    await withBackend(backend, async () => {
      const values = Float32Array.from({ length: 7 * 5 }, (_, i) => (i === 11 ? -0 : Math.sin(i) * 1e-3));
      // A computed tensor (not just uploaded values): what a gradient is.
      const tensor = tf.tidy(() => tf.mul(tf.tensor2d(values, [7, 5]), 1));
      const lent = await withValues(tensor, (view) => view.slice());
      assert.ok(Buffer.from(lent.buffer).equals(Buffer.from((tensor.dataSync() as Float32Array).slice().buffer)));
      const rows = await readRows(tensor, Int32Array.from([0, 2, 6]));
      assert.deepEqual(rows.length, 15);
      const gathered = tf.tidy(() => tf.gather(tensor, tf.tensor1d([0, 2, 6], 'int32')).dataSync() as Float32Array);
      assert.ok(Buffer.from(rows.buffer).equals(Buffer.from(gathered.slice().buffer)));
      assert.ok(Object.is(rows[6], -0), 'row 2, column 1 is -0');
      const ints = tf.tensor1d([1], 'int32');
      await assert.rejects(withValues(ints, () => 0), /dtype int32, expected float32/);
      const copy = await readTensorCopy(tensor);
      copy.fill(7);
      assert.ok(Buffer.from((tensor.dataSync() as Float32Array).slice().buffer).equals(Buffer.from(lent.buffer)), 'the copy is the caller\'s to overwrite');
      assert.equal(await readScalar(tf.scalar(2.5)), 2.5);
      await assert.rejects(readScalar(tensor), /shape \[7, 5\], expected one value/);
      tf.dispose([tensor, ints]);
    });
  });
}
