/**
 * Implements: the public surface of the data path: tokenizer, loose-JSON reader, WebtextDataset loader with its
 * token cache, and the batch sampler. The Brown converter (brown.ts) is used by scripts/ only.
 */
export { EOS_TOKEN_ID, GPT2_VOCAB_SIZE, decode, encode, encodePrefix } from './tokenizer.ts';
export { LooseJsonError, parseLooseJson, readLooseJson, type LooseJsonRecord, type LooseJsonResult } from './loose-json.ts';
export { loadWebtextDataset, type LoadWebtextOptions, type TokenizedDataset, type WebtextDataset } from './webtext.ts';
export { TokenCacheError } from './token-cache.ts';
export { epochPermutation } from './shuffle.ts';
export {
  BatchSampler,
  gatherBatch,
  microBatches,
  rankSlice,
  type Batch,
  type BatchSamplerOptions,
  type RankSliceOptions,
} from './sampler.ts';
