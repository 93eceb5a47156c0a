/**
 * A GPU error never becomes a wrong number: once the device reports one (here a tensor larger than
 * the adapter binds at once), every later read on the training path fails with the reason and what to
 * shrink, instead of handing out the zeros a dispatch that did not run leaves. Its own file: the
 * failure is sticky for the process, as it must be.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../../src/tf.ts';
import { activateBackend } from '../../src/backend/select.ts';
import { readScalar, readTensor } from '../../src/backend/tensor-view.ts';
import { webgpuAdapter } from '../../src/backend/webgpu/activate.ts';

test('webgpu errors - a tensor over the binding limit fails its read and every read after it, naming what to shrink', async () => {
  await activateBackend('webgpu');
  assert.equal(await readScalar(tf.add(tf.scalar(1), 1)), 2, 'reads work before the error');
  const floats = webgpuAdapter()!.maxBindingBytes / 4 + 1024;
  const tooBig = tf.add(tf.fill([floats], 1.5), 1);
  await assert.rejects(readTensor(tooBig), /GPU error: .*larger than the maximum storage buffer binding size.*: a tensor is larger than this adapter binds at once \(\d+ MiB\): shrink the micro-batch/);
  await assert.rejects(readScalar(tf.add(tf.scalar(1), 1)), /GPU error: /, 'a later, small read fails too');
});
