/**
 * Implements: forward-with-saved-activations and the hand-written backward over a GPT slice (a whole
 * model or one pipeline stage's layers), so a backward needs no forward recompute and no tape: the
 * saved activations are plain tensors that survive awaits. Same math as GPT.forward / GPT.loss.
 */
import * as tf from '../../tf.ts';
import { addGradient } from '../gradient-sum.ts';
import type { GPT, TokenBatch } from '../gpt.ts';
import { POSITION_EMBEDDING, WORD_EMBEDDING, blockParamName } from '../params.ts';
import { blockParamsOf, chunkForwardSteps, releaseActivations, type ChunkActivations, type ChunkForwardOptions } from '../chunk.ts';
import { runLocally } from '../../tensor-parallel/collective-steps.ts';
import { blockBackward } from './block.ts';
import { headBackwardInputSteps, headBackwardWeight } from './head.ts';
import { embeddingBackward, embeddingRowsBackward, type WordEmbeddingRows } from './embedding.ts';

/** What sliceBackward needs from sliceForward; sliceBackward disposes it. */
export interface SliceSaved extends ChunkActivations {
  /** Shape of the hidden states between stages, [B, T, H]. */
  hiddenShape: [number, number, number];
}

export type SliceForwardOptions = ChunkForwardOptions;

/**
 * This slice's forward (GPT.forward's contract) on one process: the model chunk's forward steps run
 * without a group. Token ids in when it holds the embedding, else `hiddenIn` [B, T, H]; out the loss
 * (scalar) when it holds the head, else hidden states. The caller keeps ownership of `hiddenIn`.
 */
export function sliceForward(model: GPT, batch: TokenBatch, hiddenIn: tf.Tensor3D | undefined, options: SliceForwardOptions = {}): { output: tf.Tensor; saved: SliceSaved } {
  const layout = { vocabRange: { start: 0, size: model.config.vocabSize }, tpRank: 0 };
  const { output, activations } = runLocally(chunkForwardSteps(model, layout, batch, hiddenIn, options));
  return { output, saved: { ...activations, hiddenShape: [batch.batch, batch.seqLen, model.config.hiddenSize] } };
}

/**
 * The backward of sliceForward. `outputGrad` [B, T, H] is the gradient of the hidden states this slice
 * sent on (required without the head); with the head the objective is the loss (times the forward's
 * `lossGrad`), whose logits' gradient the forward already computed.
 * Returns every parameter's gradient by global name in `model.specs` order, and the gradient of
 * `hiddenIn` when the slice has no embedding. Disposes `saved` as it goes (peak memory falls layer by
 * layer); the caller keeps ownership of `outputGrad`.
 * With `wordEmbeddingRows` and a slice that has the embedding but not the head, the word embedding's
 * gradient comes as rows (`wordEmbeddingRows`) instead of a dense entry of `grads`.
 */
export function sliceBackward(model: GPT, saved: SliceSaved, outputGrad?: tf.Tensor3D, options: SliceBackwardOptions = {}): SliceBackwardResult {
  const parts = sliceBackwardParts(model, saved, outputGrad, options);
  for (;;) {
    const part = parts.next();
    if (part.done === true) return part.value;
  }
}

export interface SliceBackwardOptions {
  wordEmbeddingRows?: boolean;
}

export interface SliceBackwardResult {
  inputGrad?: tf.Tensor3D;
  grads: Map<string, tf.Tensor>;
  wordEmbeddingRows?: WordEmbeddingRows;
}

/**
 * sliceBackward one part at a time (the head, each block, the embedding), for a caller that wants to
 * act between them (a data-parallel trainer starting the all-reduce of gradients already final). Each
 * step yields the gradients that became final in it, by name; they are the tensors the result returns,
 * still owned by the backward until it ends. The generator's return value is sliceBackward's result.
 */
export function* sliceBackwardParts(
  model: GPT, saved: SliceSaved, outputGrad?: tf.Tensor3D, options: SliceBackwardOptions = {},
): Generator<ReadonlyMap<string, tf.Tensor>, SliceBackwardResult, void> {
  const { config, slice } = model;
  const finalOf = (names: readonly string[]): ReadonlyMap<string, tf.Tensor> => new Map(names.map((name) => [name, grads.get(name)!]));
  const grads = new Map<string, tf.Tensor>();
  const addGrad = (name: string, grad: tf.Tensor) => addGradient(grads, name, grad);
  let dy: tf.Tensor3D;
  if (saved.head !== undefined) {
    const head = saved.head;
    saved.head = undefined;
    const back = runLocally(headBackwardInputSteps(head, model.param(WORD_EMBEDDING), model.param('norm.gamma'), config));
    const headGrads = headBackwardWeight(back.work);
    addGrad(WORD_EMBEDDING, headGrads.dWordEmbedding);
    addGrad('norm.gamma', headGrads.dGamma);
    addGrad('norm.beta', headGrads.dBeta);
    dy = back.dx;
    // The tied word embedding also gets the lookup's gradient when this slice holds the embedding.
    yield finalOf(slice.hasEmbedding ? ['norm.gamma', 'norm.beta'] : [WORD_EMBEDDING, 'norm.gamma', 'norm.beta']);
  } else if (outputGrad !== undefined) {
    const [b, t, h] = saved.hiddenShape;
    if (outputGrad.shape.length !== 3 || outputGrad.shape[0] !== b || outputGrad.shape[1] !== t || outputGrad.shape[2] !== h) {
      throw new Error(`sliceBackward: outputGrad has shape [${outputGrad.shape}]; the slice's output was [${saved.hiddenShape}]`);
    }
    dy = tf.clone(outputGrad);
  } else {
    throw new Error(`sliceBackward: the slice of layers ${slice.startLayer}-${slice.endLayer} has no head and needs the gradient of its output`);
  }
  if (saved.blocks.length !== slice.endLayer - slice.startLayer) {
    throw new Error(`sliceBackward: ${saved.blocks.length} saved blocks for layers ${slice.startLayer}-${slice.endLayer}; pass the saved activations of this slice's forward`);
  }
  for (let layer = slice.endLayer - 1; layer >= slice.startLayer; layer--) {
    const blockSaved = saved.blocks[layer - slice.startLayer]!;
    const params = blockParamsOf(model, layer);
    const { dx, grads: blockGrads } = blockBackward(params, blockSaved, dy, config);
    dy.dispose();
    dy = dx;
    for (const [local, grad] of blockGrads) addGrad(blockParamName(layer, local), grad);
    yield finalOf([...blockGrads.keys()].map((local) => blockParamName(layer, local)));
  }
  let inputGrad: tf.Tensor3D | undefined;
  let wordEmbeddingRows: WordEmbeddingRows | undefined;
  if (saved.embedding !== undefined && options.wordEmbeddingRows === true && !slice.hasHead) {
    const embedding = embeddingRowsBackward(saved.embedding, dy, config);
    tf.dispose(saved.embedding as unknown as tf.TensorContainer);
    dy.dispose();
    wordEmbeddingRows = embedding.dWordEmbeddingRows;
    addGrad(POSITION_EMBEDDING, embedding.dPositionEmbedding);
  } else if (saved.embedding !== undefined) {
    const embedding = embeddingBackward(saved.embedding, dy, config);
    tf.dispose(saved.embedding as unknown as tf.TensorContainer);
    dy.dispose();
    addGrad(WORD_EMBEDDING, embedding.dWordEmbedding);
    addGrad(POSITION_EMBEDDING, embedding.dPositionEmbedding);
  } else {
    inputGrad = dy;
  }
  if (saved.embedding !== undefined) yield finalOf(wordEmbeddingRows === undefined ? [WORD_EMBEDDING, POSITION_EMBEDDING] : [POSITION_EMBEDDING]);
  const ordered = new Map<string, tf.Tensor>();
  for (const spec of model.specs) {
    if (wordEmbeddingRows !== undefined && spec.name === WORD_EMBEDDING) continue;
    const grad = grads.get(spec.name);
    if (grad === undefined) throw new Error(`sliceBackward: no gradient computed for ${spec.name}`);
    ordered.set(spec.name, grad);
  }
  return { inputGrad, grads: ordered, ...(wordEmbeddingRows === undefined ? {} : { wordEmbeddingRows }) };
}

/** Forward with saved activations and the manual backward of a whole model: the trainer's variableGrads. */
export function modelLossAndGrads(model: GPT, batch: TokenBatch, options: SliceForwardOptions = {}): { loss: tf.Scalar; grads: Map<string, tf.Tensor> } {
  if (!model.slice.hasEmbedding || !model.slice.hasHead) throw new Error('modelLossAndGrads needs the full model; use sliceForward/sliceBackward on a stage');
  const { output, saved } = sliceForward(model, batch, undefined, options);
  const { grads } = sliceBackward(model, saved);
  return { loss: output as tf.Scalar, grads };
}

/** Frees saved activations that will not be used (e.g. a forward-only evaluation). */
export function disposeSliceSaved(saved: SliceSaved): void {
  releaseActivations(saved);
}
