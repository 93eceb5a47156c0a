/** Test helpers: the ranks of one tensor-parallel group in one process, over the in-process transport. */
import { resolveTinyConfig } from '../support/tiny-train-config.ts';
import { Bus } from '../../src/comm/bus.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import type { TrainConfig } from '../../src/config/types.ts';
import type { TokenizedDataset } from '../../src/dataset/webtext.ts';
import { fullModelSlice, type ModelSlice } from '../../src/model/params.ts';
import { ModelChunk } from '../../src/model/chunk.ts';

export const SEQ_LEN = 8;
export const VOCAB = 24;

/** 32 samples of ids below VOCAB, every token real. */
export const dataset: TokenizedDataset = (() => {
  const numSamples = 32;
  const inputIds = new Int32Array(numSamples * SEQ_LEN);
  for (let i = 0; i < inputIds.length; i++) inputIds[i] = (i * 7 + Math.floor(i / SEQ_LEN) * 5) % VOCAB;
  return { inputIds, attentionMask: new Uint8Array(inputIds.length).fill(1), numSamples, seqLen: SEQ_LEN };
})();

/** The brief's tiny model: 2 layers, hidden 16, 4 heads, MLP ratio 4, vocabulary 24, no dropout. */
export function tinyConfig(overrides: Record<string, unknown> = {}): TrainConfig {
  return resolveTinyConfig({ model: { numLayers: 2, hiddenSize: 16, numAttentionHeads: 4, maxPositionEmbeddings: 16, mlpRatio: 4 }, seqLen: SEQ_LEN, steps: 3, seed: 5, vocabSize: VOCAB }, overrides);
}

export interface TensorParallelRanks {
  models: ModelChunk[];
  groups: ProcessGroup[];
  close(): Promise<void>;
}

/** A tp group of ranks 0..tp-1, each with its own bus on one in-process network. */
export function makeGroups(tp: number, timeoutMs = 20_000): { groups: ProcessGroup[]; close(): Promise<void> } {
  const network = new LocalNetwork(64 * 1024);
  const ranks = Array.from({ length: tp }, (_, rank) => rank);
  const buses = ranks.map(() => new Bus({ jobId: 'tp', transport: network.connect(), log: () => {} }));
  const groups = ranks.map((rank) => new ProcessGroup({ bus: buses[rank], name: 'tp.0', ranks, rank, timeoutMs }));
  return {
    groups,
    async close() {
      for (const group of groups) group.close();
      for (const bus of buses) await bus.close();
    },
  };
}

/** A tp group whose every rank holds its shard of `slice`, as a model chunk. */
export function makeTensorParallelRanks(config: TrainConfig, tp: number, slice: ModelSlice = fullModelSlice(config.model), checkpoint = false): TensorParallelRanks {
  const { groups, close } = makeGroups(tp);
  const models = groups.map((group) => new ModelChunk({ config: config.model, slice, seed: config.seed, group, checkpoint }));
  return {
    models,
    groups,
    async close() {
      for (const model of models) model.dispose();
      await close();
    },
  };
}
