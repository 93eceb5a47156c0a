// Tests backend selection: wasm is chosen here (tfjs-node cannot install on these machines, and the
// only WebGPU adapter is a software one, which is never chosen unasked) and logged with the reasons,
// repeated calls are harmless, an unavailable explicit preference is a clear error, an explicit
// webgpu runs on the software adapter and says so, and the wasm binaries are found from any working
// directory.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import * as tf from '../../src/tf.ts';
import { initBackend } from '../../src/backend/select.ts';
import { WASM_TRAINING_KERNELS, wasmTrainingKernelsRegistered } from '../../src/backend/wasm/kernels.ts';
import { withBackend } from '../../src/backend/with-backend.ts';

describe('backend selection', () => {
  test('select - with no preference picks wasm, logs one line, installs the training kernels', async () => {
    const lines: string[] = [];
    const chosen = await initBackend(undefined, (line) => lines.push(line));
    assert.equal(chosen, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^backend: wasm\b/);
    assert.match(lines[0]!, /skipped tensorflow \(@tensorflow\/tfjs-node-gpu: .*@tensorflow\/tfjs-node: /);
    assert.match(lines[0]!, /; webgpu \(no Vulkan loader|; webgpu \(Vulkan/, 'webgpu was tried before wasm and skipped with its reason');
    assert.ok(wasmTrainingKernelsRegistered());
  });

  test('select - a second call is harmless: same backend, kernels registered once, tensors still usable', async () => {
    const x = tf.tensor([1, 2, 3]);
    const again = await initBackend(undefined, () => {});
    assert.equal(again, 'wasm');
    assert.equal(await initBackend('wasm', () => {}), 'wasm');
    assert.ok(wasmTrainingKernelsRegistered());
    for (const kernel of WASM_TRAINING_KERNELS) assert.equal(tf.getKernel(kernel.kernelName, 'wasm'), kernel);
    assert.deepEqual([...x.dataSync()], [1, 2, 3]);
    x.dispose();
  });

  test('select - concurrent calls both resolve to the same backend', async () => {
    const results = await Promise.all([initBackend(undefined, () => {}), initBackend('wasm', () => {})]);
    assert.deepEqual(results, ['wasm', 'wasm']);
  });

  test('select - an unavailable explicit tensorflow preference is an error saying why and what to do', async () => {
    await assert.rejects(initBackend('tensorflow', () => {}), (error: Error) => {
      assert.match(error.message, /'tensorflow' was requested but is unavailable/);
      assert.match(error.message, /@tensorflow\/tfjs-node-gpu: /);
      assert.match(error.message, /Install @tensorflow\/tfjs-node/);
      return true;
    });
    assert.equal(tf.getBackend(), 'wasm', 'a failed request leaves the current backend in place');
  });

  test('select - an unknown backend name is an error naming the choices', async () => {
    await assert.rejects(initBackend('metal' as 'cpu', () => {}), /Unknown backend 'metal': expected one of tensorflow, webgpu, wasm, cpu/);
  });

  test('select - explicit cpu, then back to wasm', async () => {
    const lines: string[] = [];
    assert.equal(await initBackend('cpu', (line) => lines.push(line)), 'cpu');
    assert.equal(tf.getBackend(), 'cpu');
    assert.equal(await initBackend('wasm', (line) => lines.push(line)), 'wasm');
    assert.deepEqual(lines.map((line) => line.split(' ')[1]), ['cpu', 'wasm']);
  });

  test('select - explicit webgpu starts on the software adapter, logs it, computes, and goes back to wasm', async () => {
    const lines: string[] = [];
    assert.equal(await initBackend('webgpu', (line) => lines.push(line)), 'webgpu');
    assert.equal(tf.getBackend(), 'webgpu');
    assert.match(lines[0]!, /^backend: webgpu \(as requested\) on .*llvmpipe.*\(OpenGL ES.*a software adapter: correct but slow, for tests\)/);
    const product = tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([5, 6, 7, 8], [2, 2]));
    assert.deepEqual([...(await product.data())], [19, 22, 43, 50]);
    product.dispose();
    assert.equal(await initBackend(undefined, () => {}), 'wasm', 'a started software adapter is still not chosen unasked');
  });

  test('withBackend - runs on the named backend and restores the previous one', async () => {
    await initBackend('wasm', () => {});
    const inside = await withBackend('cpu', () => tf.getBackend());
    assert.equal(inside, 'cpu');
    assert.equal(tf.getBackend(), 'wasm');
    await assert.rejects(withBackend('cpu', () => {
      throw new Error('boom');
    }), /boom/);
    assert.equal(tf.getBackend(), 'wasm');
  });

  test('select - wasm starts from another working directory', async () => {
    const selectUrl = new URL('../../src/backend/select.ts', import.meta.url).href;
    const tsxUrl = import.meta.resolve('tsx');
    const script = `const { initBackend } = await import(${JSON.stringify(selectUrl)});` +
      'const lines = []; const name = await initBackend(undefined, (l) => lines.push(l));' +
      'process.stdout.write("RESULT " + name + "\\n");';
    const { stdout } = await promisify(execFile)(process.execPath,
      ['--import', tsxUrl, '--input-type=module', '--eval', script], { cwd: tmpdir(), timeout: 60_000 });
    assert.match(stdout, /^RESULT wasm$/m);
  });
});
