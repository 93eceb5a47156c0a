/**
 * Under data parallelism a checkpoint holds one copy of each shard: the ranks of data-parallel replica 0
 * write files, the others only report in (their values are the same). Resuming it into data 1 and data 2
 * continues the run with the uninterrupted run's losses.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCheckpoint } from '../../src/checkpoint/index.ts';
import { assertSameLosses, losses, runCli, writeTestConfig } from '../support/cli.ts';

const read = (path: string) => readFileSync(path, 'utf8');
const offline = { NATS_URL: 'nats://127.0.0.1:1' };

test('dp2 x pp2 - the checkpoint holds replica 0\'s files alone; resumed into data 2 and data 1 it gives the uninterrupted losses', async () => {
  const root = mkdtempSync(join(tmpdir(), 'gpt-hybrid-dp-copies-'));
  const config = writeTestConfig({ steps: 6, batchSize: 2 });
  const layout = ['--simulate', '--set', 'parallel.data=2', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2'];
  const whole = await runCli(['train', config, '--out', join(root, 'whole'), '--quiet', '--set', 'checkpoint.every=4', ...layout], offline);
  assert.equal(whole.code, 0, whole.output);
  const dir = join(root, 'whole', 'checkpoints', 'step-000004');
  const checkpoint = await loadCheckpoint(dir, { verify: true });
  try {
    assert.equal(checkpoint.manifest.layout.world, 4);
    // Ranks are tp-dp-pp: rank = dp + 2 pp, so replica 0 is ranks 0 and 2.
    assert.deepEqual(checkpoint.manifest.ranks.map((r) => r.rank), [0, 2]);
  } finally {
    checkpoint.close();
  }
  assert.equal(existsSync(join(dir, 'rank-00001.safetensors')), false);
  const expected = losses(join(root, 'whole', 'metrics.jsonl'), read).slice(4);
  for (const [name, sets] of [['data2', layout], ['data1', ['--simulate', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'batchSize=4']]] as const) {
    const resumed = await runCli(['train', config, '--out', join(root, name), '--resume', dir, '--quiet', ...sets], offline);
    assert.equal(resumed.code, 0, resumed.output);
    assertSameLosses(losses(join(root, name, 'metrics.jsonl'), read).slice(-2), expected);
  }
});
