import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend } from '../../src/backend/select.ts';
import { Bus } from '../../src/comm/bus.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { resolveConfig } from '../../src/config/resolve.ts';
import { packIndices, packRows, sumInGroupOrder, sumRowsAndWhole, unpackIndices, unpackRows } from '../../src/shared-weights/contributions.ts';
import { SharedWeights, type ReductionOptions } from '../../src/shared-weights/shared-weights.ts';
import { PipelineStage } from '../../src/stages/stage.ts';
import { TraceRecorder } from '../../src/trace/trace.ts';
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

/** The bytes of a float32 array, so -0 and +0 (and NaN payloads) count as different. */
const bytesOf = (values: Float32Array | tf.Tensor) => Buffer.from(new Uint8Array((values instanceof tf.Tensor ? (values.dataSync() as Float32Array) : values).slice().buffer));

/**
 * The tied gradients of a first and a last stage: the first's +0 outside `rows`; both with -0 in
 * untouched and touched places (x + 0 and -0 + -0 are where a careless sum goes wrong).
 */
function tiedGradients(vocab: number, cols: number, rows: number[]): { first: Float32Array; last: Float32Array; untouched: number } {
  const first = new Float32Array(vocab * cols);
  const last = new Float32Array(vocab * cols);
  for (let i = 0; i < last.length; i++) last[i] = Math.sin(i * 12.9898) * 1e-3;
  for (const row of rows) for (let j = 0; j < cols; j++) first[row * cols + j] = Math.cos((row * cols + j) * 78.233) * 1e-2;
  const untouched = [...Array(vocab).keys()].find((row) => !rows.includes(row))!;
  last[untouched * cols] = -0; // untouched: the sum is +0
  last[rows[0] * cols] = -0; // touched, first -0 too: the sum stays -0
  first[rows[0] * cols] = -0;
  last[rows[0] * cols + 1] = -0; // touched, first non-zero
  first[rows[1] * cols] = -0; // touched, last non-zero
  return { first, last, untouched };
}

/** Two ranks of an embedding group over the in-process transport. */
async function pairGroup(name: string): Promise<{ groups: ProcessGroup[]; close: () => Promise<void> }> {
  const network = new LocalNetwork(4096);
  const buses = [0, 1].map(() => new Bus({ jobId: name, transport: network.connect(), log: () => {} }));
  const groups = [0, 1].map((rank) => new ProcessGroup({ bus: buses[rank], name: `embedding.${name}`, ranks: [0, 1], rank, timeoutMs: 5000 }));
  await Promise.all(groups.map((g) => g.ready()));
  return {
    groups,
    close: async () => {
      for (const g of groups) g.close();
      for (const bus of buses) await bus.close();
    },
  };
}

test('shared weights - the first stage sends only its rows, and both stages get the all-reduce\'s bits, -0 included', async () => {
  const vocab = 40;
  const cols = 8;
  const rows = [2, 7, 17, 39];
  const { first, last, untouched } = tiedGradients(vocab, cols, rows);
  const { groups, close } = await pairGroup('sparse');
  // Today's reduction, both algorithms (two ranks: the same bits).
  const reference = await Promise.all([first, last].map((values, rank) => groups[rank].allReduce(values.slice(), 'sum', { algorithm: 'direct' })));
  const ring = await Promise.all([first, last].map((values, rank) => groups[rank].allReduce(values.slice(), 'sum', { algorithm: 'ring' })));
  assert.deepEqual(bytesOf(ring[0]), bytesOf(reference[0]));
  assert.ok(Object.is(reference[0][rows[0] * cols], -0) && Object.is(reference[0][untouched * cols], 0), 'the -0 cases are there');
  // Small pieces and early budget: several pieces, some held back until the peer reads, a row across two.
  const traces = [0, 1].map((rank) => new TraceRecorder(rank, `rank ${rank}`));
  const sent: number[] = [];
  const original = groups[0].send.bind(groups[0]);
  groups[0].send = (to, tag, values, shape, options) => {
    sent.push(values.length);
    original(to, tag, values, shape, options);
  };
  const results = await Promise.all(
    [first, last].map(async (values, rank) => {
      const shared = new SharedWeights({ pieceElements: 60, earlyElements: 150 });
      shared.register(groups[rank], ['wte']);
      const grads = new Map<string, tf.Tensor>([['wte', tf.tensor2d(values, [vocab, cols])]]);
      const options: ReductionOptions = { rowsTouched: (name) => (rank === 0 && name === 'wte' ? Int32Array.from(rows) : undefined), trace: traces[rank], step: 0 };
      // The last stage starts first, as it does after its last backward.
      if (rank === 1) shared.startReduction(grads, options);
      await shared.reduceGradients(grads, options);
      return grads.get('wte')!;
    }),
  );
  for (const result of results) {
    assert.deepEqual(result.shape, [vocab, cols]);
    assert.deepEqual(bytesOf(result), bytesOf(reference[0]));
  }
  // Rank 0 sent its 4 rows with their indices (and two empty 'reading' / '-0' messages), not 320 values.
  assert.deepEqual(sent.filter((n) => n > 0), [rows.length * (cols + 1)]);
  for (const [rank, peer] of [[0, 1], [1, 0]]) {
    const names = traces[rank].events.filter((e) => e.ph === 'X').map((e) => [e.name, e.args?.to ?? e.args?.from, e.args?.step]);
    assert.deepEqual(names, [['send tied gradient', peer, 1], ['receive tied gradient', peer, 1]]);
  }
  await close();
});

test('shared weights - two whole gradients (no rows known) still sum to the all-reduce\'s bits, in one piece or several', async () => {
  const { first, last } = tiedGradients(12, 5, [1, 4]);
  first[0] = -0;
  const { groups, close } = await pairGroup('dense');
  const reference = await Promise.all([first, last].map((values, rank) => groups[rank].allReduce(values.slice(), 'sum')));
  for (const pieceElements of [1000, 7]) {
    const results = await Promise.all(
      [first, last].map(async (values, rank) => {
        const shared = new SharedWeights({ pieceElements, earlyElements: 20 });
        shared.register(groups[rank], ['wte']);
        const grads = new Map<string, tf.Tensor>([['wte', tf.tensor2d(values, [12, 5])]]);
        await shared.reduceGradients(grads);
        return grads.get('wte')!;
      }),
    );
    for (const result of results) assert.deepEqual(bytesOf(result), bytesOf(reference[0]), `pieces of ${pieceElements}`);
  }
  await close();
});

test('shared weights - contributions: rows and -0 places survive the wire; the fast and the general sum agree bit for bit', () => {
  const cols = 3;
  const rows = Int32Array.from([0, 5, 6]);
  const values = Float32Array.from([1, -0, 2, 3, -0, 5, -6, 7, 8]);
  const packed = packRows(rows, values, cols);
  assert.deepEqual(packed.shape, [3, 4]);
  const back = unpackRows(packed.values, packed.shape, 7 * cols, cols, 'test');
  assert.deepEqual([...back.rows], [...rows]);
  assert.deepEqual(bytesOf(back.values), bytesOf(values));
  assert.throws(() => unpackRows(packed.values, packed.shape, 6 * cols, cols, 'rank 9'), /rank 9: row index 6 at position 2 is not an ascending row of 0\.\.5/);
  assert.throws(() => unpackRows(Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0]), [2, 4], 7 * cols, cols, 'test'), /not an ascending row/);
  // Indices past 2^24 (a float32's exact integers) travel as pairs.
  const far = [0, 7, 2 ** 24 + 3, 3 * 2 ** 24 + 1];
  const indices = packIndices(far);
  assert.deepEqual(unpackIndices(indices.values, indices.shape, 2 ** 26, 'test'), far);
  assert.throws(() => unpackIndices(indices.values, indices.shape, 2 ** 25, 'test'), /is not an ascending index/);

  const whole = Float32Array.from({ length: 7 * cols }, (_, i) => (i % 4 === 0 ? -0 : i - 10));
  const negativeZeros = [...whole.keys()].filter((i) => Object.is(whole[i], -0));
  const general = sumInGroupOrder([back, { kind: 'whole', pieces: [whole.slice()], negativeZeros }], whole.length);
  const reversed = sumInGroupOrder([{ kind: 'whole', pieces: [whole.slice()], negativeZeros }, back], whole.length);
  assert.deepEqual(bytesOf(reversed), bytesOf(general));
  // Pieces cut inside a row.
  const pieces = [whole.slice(0, 4), whole.slice(4, 16), whole.slice(16)];
  const fast = sumRowsAndWhole(back, { kind: 'whole', pieces, negativeZeros }, whole.length);
  const joined = new Float32Array(whole.length);
  let offset = 0;
  for (const piece of fast) {
    joined.set(piece, offset);
    offset += piece.length;
  }
  assert.deepEqual(bytesOf(joined), bytesOf(general));
  // Untouched -0 becomes +0 (x + 0); touched -0 + -0 stays -0.
  assert.ok(Object.is(general[4], 0) && Object.is(general[8], 0) && Object.is(general[16], -0) && general[1] === -9);
});

test('stage - the first stage reports the embedding rows its lookups gathered, per tensor-parallel shard', async () => {
  const config = resolveConfig({ model: { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 4, batchSize: 2, parallel: { pipeline: 2 }, numMicroBatches: 2, data: { path: 'x' } }, { checkDataFile: false });
  config.model.vocabSize = 24;
  const batch = { inputIds: Int32Array.from([5, 3, 5, 20, 0, 3, 3, 13]), attentionMask: new Uint8Array(8).fill(1), batch: 2, seqLen: 4, sampleIds: Int32Array.from([0, 1]) };
  const network = new LocalNetwork();
  // Ranks 0 and 1: the first stage's two tensor-parallel shards (the second stage, ranks 2 and 3, is not needed for a forward).
  const buses = [0, 1].map(() => new Bus({ jobId: 'rows', transport: network.connect(), log: () => {} }));
  const tensorGroups = [0, 1].map((rank) => new ProcessGroup({ bus: buses[rank], name: 'tp.0', ranks: [0, 1], rank, timeoutMs: 5000 }));
  await Promise.all(tensorGroups.map((g) => g.ready()));
  const stages = [0, 1].map((rank) => {
    const pipelineGroup = new ProcessGroup({ bus: buses[rank], name: `pp.${rank}`, ranks: [rank, rank + 2], rank });
    return new PipelineStage({ config, pipelineRank: 0, pipelineSize: 2, chunkLayers: [[0, 1]], pipelineGroup, stageRanks: [rank, rank + 2], tensorGroup: tensorGroups[rank] });
  });
  const whole = new PipelineStage({ config, pipelineRank: 0, pipelineSize: 2, chunkLayers: [[0, 1]], pipelineGroup: new ProcessGroup({ bus: buses[0], name: 'pp.9', ranks: [0, 2], rank: 0 }), stageRanks: [0, 2] });
  const last = new PipelineStage({ config, pipelineRank: 1, pipelineSize: 2, chunkLayers: [[1, 2]], pipelineGroup: new ProcessGroup({ bus: buses[0], name: 'pp.8', ranks: [0, 2], rank: 0 }), stageRanks: [0, 2] });
  assert.equal(last.embeddingRowsTouched(), undefined);
  for (const stage of [...stages, whole]) stage.beginStep(0);
  assert.deepEqual([...whole.embeddingRowsTouched()!], []);
  await Promise.all([...stages, whole].map((stage) => stage.run({ kind: 'F', microBatch: 0, chunk: 0 }, () => batch)));
  assert.deepEqual([...whole.embeddingRowsTouched()!], [0, 3, 5, 13, 20]);
  // Shard 0 owns ids 0..11, shard 1 ids 12..23 (local rows 0..11); an id a shard does not own sends no gradient to any of its rows.
  assert.deepEqual([...stages[0].embeddingRowsTouched()!], [0, 3, 5]);
  assert.deepEqual([...stages[1].embeddingRowsTouched()!], [1, 8]);
  whole.beginStep(1);
  assert.deepEqual([...whole.embeddingRowsTouched()!], []);
  for (const stage of [...stages, whole, last]) stage.dispose();
  for (const g of tensorGroups) g.close();
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
