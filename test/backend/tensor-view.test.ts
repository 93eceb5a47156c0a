// Tests reading a tensor's values without copying it: straight from the wasm heap, and the same
// through dataSync on cpu.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { readRows, valuesView } from '../../src/backend/tensor-view.ts';
import { withBackend } from '../../src/backend/with-backend.ts';
import * as tf from '../../src/tf.ts';

before(async () => {
  await initBackend('wasm', () => {});
});

for (const backend of ['wasm', 'cpu'] as const) {
  test(`tensor view - ${backend}: the view holds the tensor's values and readRows gathers rows, -0 included`, async () => {
    await withBackend(backend, () => {
      const values = Float32Array.from({ length: 7 * 5 }, (_, i) => (i === 11 ? -0 : Math.sin(i) * 1e-3));
      // A computed tensor (not just uploaded values): what a gradient is.
      const tensor = tf.tidy(() => tf.mul(tf.tensor2d(values, [7, 5]), 1));
      const view = valuesView(tensor);
      assert.ok(Buffer.from(view.slice().buffer).equals(Buffer.from((tensor.dataSync() as Float32Array).slice().buffer)));
      const rows = readRows(tensor, Int32Array.from([0, 2, 6]));
      assert.deepEqual(rows.length, 15);
      const gathered = tf.tidy(() => tf.gather(tensor, tf.tensor1d([0, 2, 6], 'int32')).dataSync() as Float32Array);
      assert.ok(Buffer.from(rows.buffer).equals(Buffer.from(gathered.slice().buffer)));
      assert.ok(Object.is(rows[6], -0), 'row 2, column 1 is -0');
      const ints = tf.tensor1d([1], 'int32');
      assert.throws(() => valuesView(ints), /dtype int32, expected float32/);
      tf.dispose([tensor, ints]);
    });
  });
}
