import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { Bus } from '../../src/comm/bus.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import { SharedWeights } from '../../src/shared-weights/shared-weights.ts';
import { PipelineStage } from '../../src/stages/stage.ts';
import * as tf from '../../src/tf.ts';

before(async () => {
  await initBackend('cpu', () => {});
});

test('shared weights - several groups coexist: each sums its own parameters over its own ranks', async () => {
  const network = new LocalNetwork(4096);
  const buses = [0, 1, 2].map(() => new Bus({ jobId: 'sw', transport: network.connect(), log: () => {} }));
  // Group "a" ties parameter x between ranks 0 and 2; group "b" ties y between ranks 1 and 2.
  const members = { a: [0, 2], b: [1, 2] };
  const holdings: Record<number, string[]> = { 0: ['x'], 1: ['y'], 2: ['x', 'y'] };
  const results = await Promise.all(
    [0, 1, 2].map(async (rank) => {
      const shared = new SharedWeights();
      for (const [name, ranks] of Object.entries(members)) {
        if (!ranks.includes(rank)) continue;
        const group = new ProcessGroup({ bus: buses[rank], name: `shared.${name}`, ranks, rank, timeoutMs: 5000 });
        await group.ready();
        shared.register(group, [name === 'a' ? 'x' : 'y']);
      }
      const grads = new Map(holdings[rank].map((name) => [name, tf.tensor1d([rank + 1, 10 * (rank + 1)])]));
      await shared.reduceGradients(grads);
      return new Map([...grads].map(([name, t]) => [name, Array.from(t.dataSync())]));
    }),
  );
  assert.deepEqual(results[0].get('x'), [4, 40]);
  assert.deepEqual(results[2].get('x'), [4, 40]);
  assert.deepEqual(results[1].get('y'), [5, 50]);
  assert.deepEqual(results[2].get('y'), [5, 50]);
  for (const bus of buses) await bus.close();
});

test('stage - a missing activation is reported naming the stage, op, micro-batch and sender', async () => {
  const network = new LocalNetwork();
  const bus = new Bus({ jobId: 'miss', transport: network.connect(), log: () => {} });
  const config = resolveConfig({ model: { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, batchSize: 2, parallel: { pipeline: 2 }, numMicroBatches: 2, data: { path: 'x' } }, { checkDataFile: false });
  config.model.vocabSize = 23;
  const pipelineGroup = new ProcessGroup({ bus, name: 'pp.0', ranks: [0, 1], rank: 1, timeoutMs: 200 });
  const stage = new PipelineStage({ config, pipelineRank: 1, pipelineSize: 2, chunkLayers: [[1, 2]], pipelineGroup, stageRanks: [0, 1] });
  stage.beginStep(0);
  const batch = { inputIds: new Int32Array(16), attentionMask: new Uint8Array(16).fill(1), batch: 2, seqLen: 8, sampleIds: Int32Array.from([0, 1]) };
  await assert.rejects(stage.run({ kind: 'F', microBatch: 1, chunk: 0 }, () => batch), /stage 1 \(op F1, step 1\) got no activation of micro-batch 1 from rank 0/);
  stage.dispose();
  pipelineGroup.close();
  await bus.close();
});

test('stage - an activation of the wrong shape is refused, naming both shapes', async () => {
  const network = new LocalNetwork();
  const buses = [0, 1].map(() => new Bus({ jobId: 'shape', transport: network.connect(), log: () => {} }));
  const config = resolveConfig({ model: { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, batchSize: 2, parallel: { pipeline: 2 }, numMicroBatches: 2, data: { path: 'x' } }, { checkDataFile: false });
  config.model.vocabSize = 23;
  const groups = [0, 1].map((rank) => new ProcessGroup({ bus: buses[rank], name: 'pp.0', ranks: [0, 1], rank, timeoutMs: 2000 }));
  await Promise.all(groups.map((g) => g.ready()));
  const stage = new PipelineStage({ config, pipelineRank: 1, pipelineSize: 2, chunkLayers: [[1, 2]], pipelineGroup: groups[1], stageRanks: [0, 1] });
  stage.beginStep(0);
  groups[0].send(1, 'act.0.0.1', new Float32Array(2 * 8 * 15), [2, 8, 15]);
  const batch = { inputIds: new Int32Array(16), attentionMask: new Uint8Array(16).fill(1), batch: 2, seqLen: 8, sampleIds: Int32Array.from([0, 1]) };
  await assert.rejects(stage.run({ kind: 'F', microBatch: 0, chunk: 0 }, () => batch), /received an activation of shape \[2,8,15\] .* expected \[2,8,16\]/);
  stage.dispose();
  for (const g of groups) g.close();
  for (const bus of buses) await bus.close();
});
