/**
 * Implements: the model chunk, the one unit of training compute every schedule calls: a range of
 * layers, with or without the embedding and the head, sharded over a tensor-parallel group of size T
 * (Megatron 1-D; T = 1 is the same code with the collectives skipped). Its contract:
 *
 *   forward(batch, input)        -> output (hidden states, or with the head the loss) + saved
 *   backwardInput(saved, dy)     -> the input's gradient, to send upstream at once
 *   backwardWeight(saved)        -> the parameters' gradients (callable later, after other forwards)
 *   release(saved)               -> frees a forward nobody will take backward
 *
 * It runs the hand-written forward and backward (src/model/manual/) as chains of local synchronous
 * pieces with the all-reduces between them (collective-steps.ts): saved activations are plain tensors
 * kept from the forward, so a backward needs no tape (and, by default, no recompute). With `checkpoint` (activation
 * checkpointing) the forward keeps only its input, and the backward first re-runs the forward keeping
 * the activations. Each rank holds its shard of every parameter (sharding.ts decides the regions), an
 * exact slice of the single-process model's deterministic init.
 */
import * as tf from '../tf.ts';
import type { GPTConfig } from './config.ts';
import type { DropoutContext } from './dropout.ts';
import type { TokenBatch } from './gpt.ts';
import { addGradient } from './gradient-sum.ts';
import { attentionBias } from './layers.ts';
import { BLOCK_PARAM_NAMES, blockBackwardInputSteps, blockBackwardWeight, blockForwardSteps, type BlockParams, type BlockSaved, type BlockWeightWork } from './manual/block.ts';
import { embeddingBackward, embeddingForwardSteps, embeddingRowsBackward, type EmbeddingSaved, type WordEmbeddingRows } from './manual/embedding.ts';
import { headBackwardInputSteps, headBackwardWeight, headForwardSteps, releaseHead, type HeadGrads, type HeadSaved, type HeadWeightWork } from './manual/head.ts';
import { POSITION_EMBEDDING, WORD_EMBEDDING, blockParamName, initialValues, paramsForSlice, type ModelSlice, type ParamSpec } from './params.ts';
import { shardKind, shardRegion, tensorParallelProblems, type ShardKind } from './sharding.ts';
import { SINGLE_RANK_GROUP, runOverGroup, type CollectiveSteps, type TensorParallelGroup } from '../tensor-parallel/collective-steps.ts';
import type { VocabRange } from '../tensor-parallel/vocab-parallel.ts';

export interface ModelChunkOptions {
  config: GPTConfig;
  slice: ModelSlice;
  seed: number;
  /** The tp group; this rank holds shard `group.groupRank` of `group.size`. Omitted: a group of one. */
  group?: TensorParallelGroup;
  /** Activation checkpointing: keep only the input from forward to backward. Default config.checkpoint. */
  checkpoint?: boolean;
  /**
   * With the embedding but not the head: the word embedding's gradient comes as rows (WordEmbeddingRows),
   * not as a dense entry, so a pipeline's first stage keeps a micro-batch's rows instead of a vocab x hidden tensor.
   */
  wordEmbeddingRows?: boolean;
}

export interface ChunkForwardOptions {
  /** With the head: the gradient of the objective with respect to the loss (fp16's loss scale; default 1). */
  lossGrad?: number;
  dropout?: DropoutContext;
}

/** The parameter reads and layout a chunk's steps need: a ModelChunk, or the single-process GPT. */
export interface ChunkModel {
  readonly config: GPTConfig;
  readonly slice: ModelSlice;
  param(name: string): tf.Tensor;
}

/** Where this rank's shards sit: its vocabulary rows and its index in the tp group. */
export interface ShardLayout {
  vocabRange: VocabRange;
  tpRank: number;
}

/** The activations one forward keeps for its backward. */
export interface ChunkActivations {
  embedding?: EmbeddingSaved;
  /** One per layer of the chunk, in layer order. */
  blocks: BlockSaved[];
  /** The head's norm and logits' gradient (the loss is the objective, so dLogits comes with the forward). */
  head?: HeadSaved;
}

/** What backwardWeight needs, left by backwardInput. */
interface WeightWork {
  head?: HeadWeightWork;
  /** The head's weight gradients when backwardInput computed them already (BackwardInputOptions.headWordEmbedding). */
  headGrads?: HeadGrads;
  /** Per layer, from the last layer down. */
  blocks: { layer: number; work: BlockWeightWork }[];
  /** The embedding's saved ids and the gradient of its output. */
  embedding?: { saved: EmbeddingSaved; dy: tf.Tensor3D };
}

/** One micro-batch through a chunk, from forward to backwardWeight. Owned by the chunk; pass it back. */
export interface ChunkSaved {
  readonly batch: TokenBatch;
  readonly options: ChunkForwardOptions;
  /**
   * Where this forward is in its life: a backward of a released forward (or a second one) must fail,
   * not recompute (with checkpointing nothing else would tell) and add its gradients twice.
   */
  stage: 'forward' | 'input-done' | 'ended';
  /** Checkpointing: the input kept for the recompute (a chunk without the embedding). */
  input?: tf.Tensor3D;
  activations?: ChunkActivations;
  weightWork?: WeightWork;
}

/** The gradients of one micro-batch: this rank's shard of each parameter, by global name in the parameter table's order. */
export interface ChunkGradients {
  grads: Map<string, tf.Tensor>;
  wordEmbeddingRows?: WordEmbeddingRows;
}

export class ModelChunk implements ChunkModel {
  /** The FULL parameter specs of the chunk, in the parameter table's order. */
  readonly specs: ParamSpec[];
  /** This rank's shard of each, by global name. */
  readonly params: Map<string, tf.Variable>;
  readonly tp: number;
  readonly tpRank: number;
  readonly vocabRange: VocabRange;
  private readonly group: TensorParallelGroup;
  private readonly checkpoint: boolean;

  constructor(private readonly options: ModelChunkOptions) {
    const { config, slice, seed } = options;
    this.group = options.group ?? SINGLE_RANK_GROUP;
    this.tp = this.group.size;
    this.tpRank = this.group.groupRank;
    this.checkpoint = options.checkpoint ?? config.checkpoint;
    const problems = tensorParallelProblems(config, this.tp);
    if (config.hiddenSize % config.numAttentionHeads !== 0) problems.push(`hiddenSize ${config.hiddenSize} is not divisible by numAttentionHeads ${config.numAttentionHeads}`);
    if (problems.length > 0) throw new Error(`model chunk: the model does not split over ${this.tp} tensor-parallel ranks: ${problems.join('; ')}`);
    this.vocabRange = { start: this.tpRank * (config.vocabSize / this.tp), size: config.vocabSize / this.tp };
    this.specs = paramsForSlice(config, slice);
    // Unnamed variables: tfjs variable names are process-global, and tests hold several chunks at once.
    this.params = new Map(
      this.specs.map((spec) => {
        const region = shardRegion(spec, this.tp, this.tpRank, config.numAttentionHeads);
        return [spec.name, tf.tidy(() => tf.variable(tf.tensor(initialValues(spec, seed, region), region.size, 'float32'), true))];
      }),
    );
  }

  get config(): GPTConfig {
    return this.options.config;
  }

  get slice(): ModelSlice {
    return this.options.slice;
  }

  param(name: string): tf.Variable {
    const value = this.params.get(name);
    if (value === undefined) throw new Error(`parameter ${name} is not held by this chunk (layers ${this.slice.startLayer}-${this.slice.endLayer})`);
    return value;
  }

  /** How a parameter splits over the tp group (column, row, vocab or replicated). */
  shardKind(name: string): ShardKind {
    const spec = this.specs.find((s) => s.name === name);
    if (spec === undefined) throw new Error(`parameter ${name} is not held by this chunk`);
    return shardKind(spec);
  }

  /**
   * The weights the forward multiplies from the right with activations (every block's linear weights,
   * the tied word embedding with the head): what warm-matmul.ts packs ahead of a step.
   */
  rightOperandWeights(): tf.Tensor[] {
    const weights: tf.Tensor[] = [];
    for (let layer = this.slice.startLayer; layer < this.slice.endLayer; layer++) {
      for (const local of BLOCK_PARAM_NAMES) if (local.endsWith('.weight')) weights.push(this.param(blockParamName(layer, local)));
    }
    if (this.slice.hasHead) weights.push(this.param(WORD_EMBEDDING));
    return weights;
  }

  /**
   * One micro-batch's forward: token ids in when the chunk holds the embedding, else `input` [B, T, H]
   * (the caller keeps ownership); out the loss (scalar) with the head, else hidden states [B, T, H],
   * identical on every tp rank. Every rank of the tp group must make the same calls in the same order.
   */
  async forward(batch: TokenBatch, input?: tf.Tensor3D, options: ChunkForwardOptions = {}): Promise<{ output: tf.Tensor; saved: ChunkSaved }> {
    const { output, activations } = await runOverGroup(this.group, chunkForwardSteps(this, this.layout(), batch, input, options));
    const saved: ChunkSaved = { batch, options, stage: 'forward' };
    if (this.checkpoint) {
      releaseActivations(activations);
      if (input !== undefined) saved.input = tf.clone(input);
    } else {
      saved.activations = activations;
    }
    return { output, saved };
  }

  /**
   * The gradient of the forward's input for `outputGrad`, the gradient of its output (required without
   * the head; the caller keeps it); with the head, of the loss times the forward's `lossGrad`. Undefined
   * for a chunk holding the embedding. Leaves in `saved` what backwardWeight needs.
   */
  async backwardInput(saved: ChunkSaved, outputGrad?: tf.Tensor3D, options: BackwardInputOptions = {}): Promise<tf.Tensor3D | undefined> {
    if (saved.stage === 'input-done') throw new Error('model chunk: backwardInput called twice for one forward');
    if (saved.stage === 'ended') throw new Error('model chunk: backwardInput after release() or backwardWeight; pass the saved state of a forward not yet taken back');
    saved.stage = 'input-done';
    if (saved.activations === undefined) {
      // Activation checkpointing: recompute the forward, this time keeping what the backward reads.
      const recomputed = await runOverGroup(this.group, chunkForwardSteps(this, this.layout(), saved.batch, saved.input, saved.options));
      recomputed.output.dispose();
      saved.input?.dispose();
      saved.input = undefined;
      saved.activations = recomputed.activations;
    }
    const activations = saved.activations;
    saved.activations = undefined;
    const { inputGrad, work } = await runOverGroup(this.group, chunkBackwardInputSteps(this, activations, outputGrad, options.headWordEmbedding), {
      yieldToEventLoop: options.yieldToEventLoop,
    });
    saved.weightWork = work;
    return inputGrad;
  }

  /** This micro-batch's parameter gradients (the caller owns them), after its backwardInput. Ends `saved`. */
  backwardWeight(saved: ChunkSaved): ChunkGradients {
    return collectWeightParts(this, this.backwardWeightParts(saved));
  }

  /**
   * backwardWeight a part at a time (chunkBackwardWeightParts): each yielded map holds parameters whose
   * gradient for this micro-batch is complete. Ends `saved`.
   */
  backwardWeightParts(saved: ChunkSaved, options: WeightPartsOptions = {}): Generator<Map<string, tf.Tensor>, { wordEmbeddingRows?: WordEmbeddingRows }, void> {
    const work = saved.weightWork;
    if (work === undefined) throw new Error('model chunk: backwardWeight before backwardInput (or twice, or after release()); run backwardInput on this forward first');
    saved.weightWork = undefined;
    saved.stage = 'ended';
    return chunkBackwardWeightParts(this, work, this.options.wordEmbeddingRows === true, options);
  }

  /** Frees what a forward or a backwardInput kept, whatever state it is in. */
  release(saved: ChunkSaved): void {
    saved.stage = 'ended';
    saved.input?.dispose();
    saved.input = undefined;
    if (saved.activations !== undefined) releaseActivations(saved.activations);
    saved.activations = undefined;
    if (saved.weightWork !== undefined) releaseWeightWork(saved.weightWork);
    saved.weightWork = undefined;
  }

  /**
   * Uses `variable` (another chunk's, of the same stage) for parameter `name` instead of its own copy,
   * which it frees: two chunks of one stage holding the tied word embedding keep one value that way.
   */
  shareParameter(name: string, variable: tf.Variable): void {
    const own = this.param(name);
    if (own === variable) return;
    if (own.shape.length !== variable.shape.length || own.shape.some((dim, i) => dim !== variable.shape[i])) {
      throw new Error(`model chunk: cannot share ${name} of shape [${variable.shape}] for its own [${own.shape}]`);
    }
    own.dispose();
    this.params.set(name, variable);
  }

  dispose(): void {
    // A shared variable is disposed by whichever chunk gets there first.
    for (const variable of this.params.values()) if (!variable.isDisposed) variable.dispose();
    this.params.clear();
  }

  private layout(): ShardLayout {
    return { vocabRange: this.vocabRange, tpRank: this.tpRank };
  }
}

/** A block's parameter tensors by local name. */
export function blockParamsOf(model: ChunkModel, layer: number): BlockParams {
  return new Map(BLOCK_PARAM_NAMES.map((local) => [local, model.param(blockParamName(layer, local))]));
}

/**
 * The forward of a chunk's layers as collective steps: the output (loss or hidden states) and the
 * activations. The caller keeps ownership of `hiddenIn`.
 */
export function* chunkForwardSteps(
  model: ChunkModel, layout: ShardLayout, batch: TokenBatch, hiddenIn: tf.Tensor3D | undefined, options: ChunkForwardOptions,
): CollectiveSteps<{ output: tf.Tensor; activations: ChunkActivations }> {
  const { config, slice } = model;
  if (!slice.hasEmbedding && hiddenIn === undefined) {
    throw new Error(`the chunk of layers ${slice.startLayer}-${slice.endLayer} has no embedding and needs hidden states from the previous stage`);
  }
  const bias = attentionBias(batch.attentionMask, batch.batch, batch.seqLen);
  const activations: ChunkActivations = { blocks: [] };
  let x = hiddenIn;
  let done = false;
  try {
    if (slice.hasEmbedding) {
      const embedded = yield* embeddingForwardSteps(
        model.param(WORD_EMBEDDING), model.param(POSITION_EMBEDDING), batch.inputIds, batch.batch, batch.seqLen, layout.vocabRange, config, options.dropout,
      );
      activations.embedding = embedded.saved;
      x = embedded.y;
    }
    for (let layer = slice.startLayer; layer < slice.endLayer; layer++) {
      const out = yield* blockForwardSteps(blockParamsOf(model, layer), x!, bias, config, { dropout: options.dropout, layer, tpRank: layout.tpRank });
      activations.blocks.push(out.saved);
      if (x !== hiddenIn) x!.dispose();
      x = out.y;
    }
    let output: tf.Tensor = x!;
    if (slice.hasHead) {
      const head = yield* headForwardSteps(
        model.param(WORD_EMBEDDING), model.param('norm.gamma'), model.param('norm.beta'), x!, batch.inputIds, layout.vocabRange, config, options.lossGrad ?? 1,
      );
      if (x !== hiddenIn) x!.dispose();
      activations.head = head.saved;
      output = head.loss;
    }
    done = true;
    return { output, activations };
  } finally {
    bias.dispose();
    if (!done) {
      releaseActivations(activations);
      if (x !== hiddenIn) x?.dispose();
    }
  }
}

/** The input-gradient half of the backward, as collective steps. Consumes `activations`. */
function* chunkBackwardInputSteps(
  model: ChunkModel, activations: ChunkActivations, outputGrad: tf.Tensor3D | undefined, headWordEmbedding?: (headPart: tf.Tensor) => void,
): CollectiveSteps<{ inputGrad?: tf.Tensor3D; work: WeightWork }> {
  const { config, slice } = model;
  const work: WeightWork = { blocks: [] };
  let dy: tf.Tensor3D | undefined;
  let done = false;
  try {
    if (activations.head !== undefined) {
      const head = activations.head;
      activations.head = undefined;
      const back = yield* headBackwardInputSteps(head, model.param(WORD_EMBEDDING), model.param('norm.gamma'), config);
      work.head = back.work;
      dy = back.dx;
      if (headWordEmbedding !== undefined) {
        // Its weight gradients now rather than in the weight half: the word embedding's share can go at once.
        work.headGrads = headBackwardWeight(work.head);
        work.head = undefined;
        headWordEmbedding(work.headGrads.dWordEmbedding);
      }
    } else if (outputGrad !== undefined) {
      dy = tf.clone(outputGrad);
    } else {
      throw new Error(`the chunk of layers ${slice.startLayer}-${slice.endLayer} has no head and needs the gradient of its output`);
    }
    if (activations.blocks.length !== slice.endLayer - slice.startLayer) {
      throw new Error(`${activations.blocks.length} saved blocks for layers ${slice.startLayer}-${slice.endLayer}; pass the saved state of this chunk's forward`);
    }
    const expected = activations.blocks[0]!;
    if (dy.shape[0] !== expected.batch || dy.shape[1] !== expected.seqLen || dy.shape[2] !== config.hiddenSize) {
      throw new Error(`the output gradient has shape [${dy.shape}]; the chunk's output was [${expected.batch},${expected.seqLen},${config.hiddenSize}]`);
    }
    for (let layer = slice.endLayer - 1; layer >= slice.startLayer; layer--) {
      const blockSaved = activations.blocks.pop()!;
      const upstream: tf.Tensor3D = dy;
      const back: { dx: tf.Tensor3D; work: BlockWeightWork } = yield* blockBackwardInputSteps(blockParamsOf(model, layer), blockSaved, upstream, config, layer);
      work.blocks.push({ layer, work: back.work });
      upstream.dispose();
      dy = back.dx;
    }
    let inputGrad: tf.Tensor3D | undefined;
    if (activations.embedding !== undefined) {
      work.embedding = { saved: activations.embedding, dy: dy! };
      activations.embedding = undefined;
    } else {
      inputGrad = dy!;
    }
    done = true;
    return { inputGrad, work };
  } finally {
    if (!done) {
      dy?.dispose();
      releaseActivations(activations);
      releaseWeightWork(work);
    }
  }
}

/**
 * The weight-gradient half's parts gathered: every parameter's gradient by global name, in the
 * parameter table's order (the tied word embedding's two shares already added by the parts).
 */
function collectWeightParts(model: { specs: ParamSpec[] }, parts: ReturnType<typeof chunkBackwardWeightParts>): ChunkGradients {
  const grads = new Map<string, tf.Tensor>();
  let part = parts.next();
  for (; part.done !== true; part = parts.next()) for (const [name, grad] of part.value) addGradient(grads, name, grad);
  const rows = part.value.wordEmbeddingRows;
  const ordered = new Map<string, tf.Tensor>();
  for (const spec of model.specs) {
    if (rows !== undefined && spec.name === WORD_EMBEDDING) continue;
    const grad = grads.get(spec.name);
    if (grad === undefined) throw new Error(`model chunk: no gradient computed for ${spec.name}`);
    ordered.set(spec.name, grad);
  }
  return rows === undefined ? { grads: ordered } : { grads: ordered, wordEmbeddingRows: rows };
}

export interface BackwardInputOptions {
  /** Let the event loop run between the backward's steps (see runOverGroup). */
  yieldToEventLoop?: boolean;
  /**
   * Compute the head's weight gradients in this half and show its share of the word embedding's at
   * once (the caller must not keep or dispose it); backwardWeight then skips that work.
   */
  headWordEmbedding?: (headPart: tf.Tensor) => void;
}

export interface WeightPartsOptions {
  /** Shown the head's share of the word embedding's gradient as soon as it exists (the caller must not keep or dispose it). */
  headWordEmbedding?: (headPart: tf.Tensor) => void;
}

/**
 * The weight-gradient half one part at a time (the head, each block from the last, the embedding), each
 * part's gradients complete for this micro-batch, so a caller can hand them on (a data-parallel
 * all-reduce bucket) and yield between parts. The tied word embedding's head gradient waits for the
 * lookup's and comes out as their sum, added in the single-process order. Consumes `work`.
 */
function* chunkBackwardWeightParts(
  model: ChunkModel, work: WeightWork, wordEmbeddingRows: boolean, options: WeightPartsOptions = {},
): Generator<Map<string, tf.Tensor>, { wordEmbeddingRows?: WordEmbeddingRows }, void> {
  const { config, slice } = model;
  let headWordEmbedding: tf.Tensor | undefined;
  try {
    if (work.head !== undefined || work.headGrads !== undefined) {
      const early = work.headGrads !== undefined;
      const head = work.headGrads ?? headBackwardWeight(work.head!);
      work.head = undefined;
      work.headGrads = undefined;
      headWordEmbedding = head.dWordEmbedding;
      if (!early) options.headWordEmbedding?.(headWordEmbedding);
      yield new Map([['norm.gamma', head.dGamma], ['norm.beta', head.dBeta]]);
    }
    while (work.blocks.length > 0) {
      const { layer, work: blockWork } = work.blocks.shift()!;
      const part = new Map<string, tf.Tensor>();
      for (const [local, grad] of blockBackwardWeight(blockWork)) addGradient(part, blockParamName(layer, local), grad);
      yield part;
    }
    let rows: WordEmbeddingRows | undefined;
    const last = new Map<string, tf.Tensor>();
    if (headWordEmbedding !== undefined) last.set(WORD_EMBEDDING, headWordEmbedding);
    headWordEmbedding = undefined;
    if (work.embedding !== undefined) {
      const { saved, dy } = work.embedding;
      work.embedding = undefined;
      try {
        if (wordEmbeddingRows && !slice.hasHead) {
          const embedding = embeddingRowsBackward(saved, dy, config);
          rows = embedding.dWordEmbeddingRows;
          addGradient(last, POSITION_EMBEDDING, embedding.dPositionEmbedding);
        } else {
          const embedding = embeddingBackward(saved, dy, config);
          addGradient(last, WORD_EMBEDDING, embedding.dWordEmbedding);
          addGradient(last, POSITION_EMBEDDING, embedding.dPositionEmbedding);
        }
      } finally {
        tf.dispose([saved as unknown as tf.TensorContainer, dy]);
      }
    }
    if (last.size > 0) yield last;
    return rows === undefined ? {} : { wordEmbeddingRows: rows };
  } finally {
    headWordEmbedding?.dispose();
    releaseWeightWork(work);
  }
}

export function releaseActivations(activations: ChunkActivations): void {
  if (activations.head !== undefined) releaseHead(activations.head);
  tf.dispose([activations.embedding, ...activations.blocks] as unknown as tf.TensorContainer);
  activations.blocks = [];
  activations.embedding = undefined;
  activations.head = undefined;
}

function releaseWeightWork(work: WeightWork): void {
  if (work.head !== undefined) releaseHead(work.head);
  if (work.headGrads !== undefined) tf.dispose([work.headGrads.dWordEmbedding, work.headGrads.dGamma, work.headGrads.dBeta]);
  work.headGrads = undefined;
  tf.dispose([work.embedding, ...work.blocks.map((b) => b.work)] as unknown as tf.TensorContainer);
  work.blocks = [];
  work.head = undefined;
  work.embedding = undefined;
}
