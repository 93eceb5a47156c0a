// Tests, end to end, that training the tiny example on webgpu (with this project's fused WGSL
// kernels) follows the same losses as on wasm (with its own): the CLI's run, three steps of each.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli/main.ts';
import { assertGpuHealthy } from '../../src/backend/webgpu/activate.ts';
import { startWebgpu } from './on-webgpu.ts';

const STEPS = 3;
const runs = mkdtempSync(join(tmpdir(), 'webgpu-train-'));

async function losses(backend: 'webgpu' | 'wasm'): Promise<number[]> {
  const out = join(runs, backend);
  const code = await main(['train', join(import.meta.dirname, '../../examples/tiny.json'), '--backend', backend, '--steps', String(STEPS), '--out', out]);
  assert.equal(code, 0, `train on ${backend} exited with ${code}`);
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => (JSON.parse(line) as { loss: number }).loss);
}

before(async () => {
  await startWebgpu('wasm');
});

after(() => rmSync(runs, { recursive: true, force: true }));

test('tiny example - webgpu losses match wasm\'s to 1e-5 for the first steps', async () => {
  const webgpu = await losses('webgpu');
  assertGpuHealthy();
  const wasm = await losses('wasm');
  assert.equal(webgpu.length, STEPS);
  // The matmuls sum in another order on each backend, and Adam carries that into the next steps.
  webgpu.forEach((loss, i) => assert.ok(Math.abs(loss - wasm[i]!) <= 1e-5 * Math.abs(wasm[i]!), `step ${i + 1}: webgpu ${loss}, wasm ${wasm[i]}`));
});
