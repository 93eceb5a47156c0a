/**
 * Implements: one pipeline stage's compute: the model chunks it holds and the forward/backward of a
 * micro-batch through one chunk, with activations and their gradients exchanged with the neighbouring
 * virtual stages as tagged point-to-point messages.
 *
 * [Note: backward by recompute] tfjs gradients are synchronous and no tape survives an await, so a
 * backward re-runs the chunk's forward under the tape from the saved input and takes the vector-Jacobian
 * product with the received output gradient: the gradient of sum(output * dy) (activation
 * checkpointing, which the seed trains with). The input is a fresh variable so its gradient comes out too.
 *
 * [Note: virtual stages] Chunk c of pipeline rank r is virtual stage v = c * P + r (interleaved 1F1B);
 * activations flow v -> v + 1, i.e. to rank (r + 1) mod P, wrapping to the next chunk after the last
 * rank. Virtual stage 0 holds the embedding and reads tokens; the last one holds the head and the loss.
 */
import type { ProcessGroup } from '../comm/collectives.ts';
import type { TrainConfig } from '../config/types.ts';
import { GPT, type TokenBatch } from '../model/gpt.ts';
import { denseWordEmbeddingGradient, type WordEmbeddingRows } from '../model/manual/embedding.ts';
import { disposeSliceSaved, rightOperandWeights, sliceBackward, sliceForward, type SliceSaved } from '../model/manual/slice.ts';
import { warmMatmulOperands } from '../backend/warm-matmul.ts';
import { TensorParallelGPT, type TensorParallelForward } from '../tensor-parallel/tensor-parallel-gpt.ts';
import { lookupRows } from '../tensor-parallel/vocab-parallel.ts';
import { addGradient } from '../model/gradient-sum.ts';
import { WORD_EMBEDDING, sliceForLayers } from '../model/params.ts';
import * as tf from '../tf.ts';
import { formatOp, type PipelineOp } from '../scheduler/ops.ts';
import { wallClockMs, type TraceRecorder } from '../trace/trace.ts';

export interface StageOptions {
  config: TrainConfig;
  /** This stage's pipeline rank (0..P-1) and P. */
  pipelineRank: number;
  pipelineSize: number;
  /** Layer range of each chunk this stage holds ([start, end)), chunk order. */
  chunkLayers: [number, number][];
  /** Point-to-point with the other stages of this model replica (global ranks by pipeline rank). */
  pipelineGroup: ProcessGroup;
  /** Global rank of each pipeline rank of this replica. */
  stageRanks: number[];
  /** Where forward, backward, send and receive events go. */
  trace?: TraceRecorder;
  /**
   * The stage's tensor-parallel group (the same stage of the other tp ranks). Size > 1: every chunk is
   * a TensorParallelGPT shard, whose forward and backward are chains of segments with all-reduces.
   */
  tensorGroup?: ProcessGroup;
  /** fp16 mode: activations and their gradients travel as float16. */
  halfPrecisionWire?: boolean;
}

interface SavedInput {
  /** Hidden states received from the previous virtual stage (undefined at virtual stage 0). */
  hidden?: tf.Tensor3D;
  /** A tensor-parallel chunk's forward record (it owns its input and output until backward). */
  shardForward?: TensorParallelForward;
  /** Activations kept by the hand-written forward (model.checkpoint off): the backward needs no recompute. */
  activations?: SliceSaved;
}

export class PipelineStage {
  /** One model slice per chunk: whole layers, or this rank's tensor-parallel shard of them. */
  readonly chunks: (GPT | TensorParallelGPT)[];
  private readonly virtualStages: number;
  private readonly saved = new Map<string, SavedInput>();
  private gradSums = new Map<string, tf.Tensor>();
  /** The word embedding's gradient rows of this step's backwards, in order, merged into gradSums when read. */
  private wordEmbeddingRows: WordEmbeddingRows[] = [];
  private lossSum = 0;
  private computeMs = 0;
  private step = 0;
  private lossScale = 1;
  /** Whether this step's weights were packed for matmul while waiting for a first activation. */
  private weightsWarmed = false;
  /** Virtual stage 0: which rows of the word embedding (this shard's) the step's lookups gathered. */
  private readonly lookedUp?: Uint8Array;

  constructor(private readonly options: StageOptions) {
    const { config, chunkLayers, pipelineSize } = options;
    this.virtualStages = pipelineSize * chunkLayers.length;
    const group = options.tensorGroup;
    this.chunks = chunkLayers.map(([start, end]) => {
      const slice = sliceForLayers(config.model, start, end);
      return group !== undefined && group.size > 1
        ? new TensorParallelGPT({ config: config.model, slice, seed: config.seed, group })
        : new GPT(config.model, slice, config.seed);
    });
    if (options.pipelineRank === 0) {
      const first = this.chunks[0];
      this.lookedUp = new Uint8Array(first instanceof TensorParallelGPT ? first.vocabRange.size : config.model.vocabSize);
    }
  }

  /**
   * The rows of this step's word-embedding gradient that can be non-zero, ascending: those the lookups
   * gathered, since a gather's gradient is a scatter-add at its ids, exactly +0 in every other row (on
   * every backend, unsortedSegmentSum starts from zeros; the cpu one spreads an Inf or NaN of its input
   * over all rows, but a step with one is skipped or stops the run, whichever rows carried it).
   * Undefined where no chunk holds the lookup.
   */
  embeddingRowsTouched(): Int32Array | undefined {
    if (this.lookedUp === undefined) return undefined;
    const rows: number[] = [];
    this.lookedUp.forEach((flag, row) => {
      if (flag !== 0) rows.push(row);
    });
    return Int32Array.from(rows);
  }

  private noteLookups(batch: TokenBatch): void {
    const first = this.chunks[0];
    const rows = first instanceof TensorParallelGPT ? lookupRows(batch.inputIds, first.vocabRange).localIds : batch.inputIds;
    // An id outside the vocabulary gathers nothing (the scatter-add drops it).
    for (const row of rows) if (row >= 0 && row < this.lookedUp!.length) this.lookedUp![row] = 1;
  }

  /**
   * Whether this rank's copy of `name` is the one counted in model-wide sums (the gradient norm): the
   * tied word embedding counts on virtual stage 0 only, a replicated parameter on tp rank 0 only.
   */
  countsInNorm(name: string): boolean {
    if (name === WORD_EMBEDDING && this.options.pipelineRank !== 0) return false;
    const shard = this.chunks.find((chunk) => chunk.params.has(name));
    return !(shard instanceof TensorParallelGPT) || shard.shardKind(name) !== 'replicated' || shard.tpRank === 0;
  }

  /** Every parameter this stage holds, by global name; the tied embedding appears once per chunk that holds it. */
  parameterSets(): Map<string, tf.Variable>[] {
    return this.chunks.map((chunk) => chunk.params);
  }

  /** `lossScale`: the backward starts from loss x lossScale (fp16 mode's dynamic loss scale). */
  beginStep(step: number, lossScale = 1): void {
    this.step = step;
    this.lossScale = lossScale;
    this.lossSum = 0;
    this.computeMs = 0;
    this.weightsWarmed = false;
    this.lookedUp?.fill(0);
    for (const grad of this.gradSums.values()) grad.dispose();
    this.gradSums = new Map();
    this.disposeWordEmbeddingRows();
  }

  private disposeWordEmbeddingRows(): void {
    for (const rows of this.wordEmbeddingRows) rows.values.dispose();
    this.wordEmbeddingRows = [];
  }

  /** Runs one op; `batchOf(microBatch)` gives the tokens (every stage reads them: masks and labels). */
  async run(op: PipelineOp, batchOf: (microBatch: number) => TokenBatch): Promise<void> {
    if (op.kind === 'F') await this.forward(op, batchOf(op.microBatch));
    else await this.backward(op, batchOf(op.microBatch));
  }

  /** Time spent computing forwards and backwards since the step began (the complement of the bubble). */
  get stepComputeMs(): number {
    return this.computeMs;
  }

  /**
   * Bytes of the tensors kept for backwards not yet run (saved activations, received hidden states, the
   * head's early gradients): the activation memory a schedule trades against its bubble.
   */
  get savedBytes(): number {
    const seen = new Set<number>();
    let bytes = 0;
    for (const input of this.saved.values()) bytes += tensorBytes(input, seen);
    return bytes;
  }

  /** A counter on the timeline, so a run shows each schedule's activation memory (bench/activation-peak.ts reads it). */
  private noteSaved(): void {
    this.options.trace?.counter('saved activations', wallClockMs(), { bytes: this.savedBytes });
  }

  private compute<T>(op: PipelineOp, work: () => T): T {
    const start = wallClockMs();
    const result = work();
    this.finishCompute(op, start);
    return result;
  }

  /** Ends a forward or backward begun at `start` (for tensor-parallel chunks it includes their all-reduces). */
  private finishCompute(op: PipelineOp, start: number): void {
    const end = wallClockMs();
    this.computeMs += end - start;
    this.options.trace?.record(op.kind === 'F' ? 'forward' : 'backward', 'compute', start, end, this.args(op));
  }

  /** Takes over a backward's parameter gradients and sends its input gradient to the previous virtual stage. */
  private finishBackward(op: PipelineOp, virtual: number, grads: Map<string, tf.Tensor>, inputGrad: tf.Tensor | undefined): void {
    for (const [name, grad] of grads) this.accumulate(name, grad);
    if (inputGrad !== undefined) {
      this.send(op, 'grad', this.rankOfVirtual(virtual - 1), virtual - 1, inputGrad);
      inputGrad.dispose();
    }
  }

  /** Adds a micro-batch's gradient (taken over) to the step's sum for that parameter. */
  private accumulate(name: string, grad: tf.Tensor): void {
    addGradient(this.gradSums, name, grad);
  }

  private args(op: PipelineOp): Record<string, number> {
    return { step: this.step + 1, microBatch: op.microBatch, chunk: op.chunk };
  }

  private send(op: PipelineOp, kind: 'act' | 'grad', to: number, virtual: number, tensor: tf.Tensor): void {
    const start = wallClockMs();
    this.options.pipelineGroup.send(to, this.tag(kind, op.microBatch, virtual), tensor.dataSync() as Float32Array, tensor.shape, {
      half: this.options.halfPrecisionWire === true,
    });
    this.options.trace?.record(kind === 'act' ? 'send activation' : 'send gradient', 'comm', start, wallClockMs(), { ...this.args(op), to });
  }

  /** Sum of this stage's micro-batch losses in this step (non-zero only on the last virtual stage). */
  get stepLossSum(): number {
    return this.lossSum;
  }

  /**
   * Summed gradients of this step by parameter name (the tied embedding's chunk copies added together).
   * The word embedding's rows gathered so far become its dense gradient here, once per step.
   */
  get stepGradients(): Map<string, tf.Tensor> {
    if (this.wordEmbeddingRows.length > 0) {
      const dense = denseWordEmbeddingGradient(this.wordEmbeddingRows, this.options.config.model);
      this.disposeWordEmbeddingRows();
      this.accumulate(WORD_EMBEDDING, dense);
    }
    return this.gradSums;
  }

  dispose(): void {
    for (const chunk of this.chunks) chunk.dispose();
    for (const grad of this.gradSums.values()) grad.dispose();
    this.disposeWordEmbeddingRows();
    for (const input of this.saved.values()) {
      input.hidden?.dispose();
      if (input.activations !== undefined) disposeSliceSaved(input.activations);
      if (input.shardForward !== undefined) (this.chunks.find((c) => c instanceof TensorParallelGPT) as TensorParallelGPT).release(input.shardForward);
    }
  }

  private virtualStage(chunk: number): number {
    return chunk * this.options.pipelineSize + this.options.pipelineRank;
  }

  private rankOfVirtual(virtual: number): number {
    return this.options.stageRanks[virtual % this.options.pipelineSize];
  }

  private tag(kind: 'act' | 'grad', microBatch: number, virtual: number): string {
    return `${kind}.${this.step}.${microBatch}.${virtual}`;
  }

  /**
   * Activations and their gradients between stages always have the seed's TENSOR_SHAPE,
   * (micro-batch size, seqLen, hidden): anything else is refused before it is used.
   */
  private async receive(kind: 'act' | 'grad', op: PipelineOp, from: number, virtual: number, expectedShape: number[]): Promise<tf.Tensor> {
    const what = kind === 'act' ? 'activation' : 'output gradient';
    const where = `stage ${this.options.pipelineRank} (op ${formatOp(op)}, step ${this.step + 1})`;
    const start = wallClockMs();
    let received: { values: Float32Array; shape: number[] };
    try {
      received = await this.options.pipelineGroup.recv(from, this.tag(kind, op.microBatch, virtual));
    } catch (error) {
      throw new Error(`${where} got no ${what} of micro-batch ${op.microBatch} from rank ${from}: ${error instanceof Error ? error.message : String(error)}`);
    }
    this.options.trace?.record(kind === 'act' ? 'receive activation' : 'receive gradient', 'comm', start, wallClockMs(), { ...this.args(op), from });
    const { values, shape } = received;
    if (shape.length !== expectedShape.length || shape.some((dim, i) => dim !== expectedShape[i]) || values.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`${where} received an ${what} of shape [${shape}] (${values.length} values) from rank ${from}; expected [${expectedShape}]`);
    }
    return tf.tensor(values, shape, 'float32');
  }

  private hiddenShape(batch: TokenBatch): number[] {
    return [batch.batch, batch.seqLen, this.options.config.model.hiddenSize];
  }

  private async forward(op: PipelineOp, batch: TokenBatch): Promise<void> {
    const virtual = this.virtualStage(op.chunk);
    const model = this.chunks[op.chunk];
    if (virtual === 0) this.noteLookups(batch);
    else if (!this.weightsWarmed) this.warmWeights(op);
    const hidden = virtual === 0 ? undefined : ((await this.receive('act', op, this.rankOfVirtual(virtual - 1), virtual, this.hiddenShape(batch))) as tf.Tensor3D);
    if (model instanceof TensorParallelGPT) {
      const start = wallClockMs();
      const shardForward = await model.forward(batch, hidden);
      this.finishCompute(op, start);
      this.saved.set(`${op.microBatch}.${op.chunk}`, { shardForward });
      this.noteSaved();
      if (shardForward.loss !== undefined) this.lossSum += shardForward.loss;
      else this.send(op, 'act', this.rankOfVirtual(virtual + 1), virtual + 1, shardForward.hidden!);
      return;
    }
    if (!this.options.config.model.checkpoint) {
      // Keep the activations (llm.c style) so the backward skips the forward recompute (measured 1.5x on a stage).
      const { output, saved } = this.compute(op, () => sliceForward(model, batch, hidden, { lossGrad: this.lossScale }));
      hidden?.dispose();
      this.saved.set(`${op.microBatch}.${op.chunk}`, { activations: saved });
      this.noteSaved();
      if (virtual === this.virtualStages - 1) this.lossSum += output.dataSync()[0];
      else this.send(op, 'act', this.rankOfVirtual(virtual + 1), virtual + 1, output);
      output.dispose();
      return;
    }
    this.saved.set(`${op.microBatch}.${op.chunk}`, { hidden });
    this.noteSaved();
    const output = this.compute(op, () => {
      const out = tf.tidy(() => model.forward(batch, hidden, {}));
      out.dataSync();
      return out;
    });
    if (virtual === this.virtualStages - 1) {
      this.lossSum += output.dataSync()[0];
    } else {
      this.send(op, 'act', this.rankOfVirtual(virtual + 1), virtual + 1, output);
    }
    output.dispose();
  }

  /**
   * Before the step's first wait for an activation: the optimizer made new weight tensors, and packing
   * them for the wasm matmul now (warm-matmul.ts) takes it off the first micro-batch, whose results the
   * other stages wait for. Virtual stage 0's chunk computes first and waits for nothing, so it is left.
   */
  private warmWeights(op: PipelineOp): void {
    this.weightsWarmed = true;
    const start = wallClockMs();
    this.chunks.forEach((chunk, index) => {
      if (chunk instanceof GPT && this.virtualStage(index) !== 0) warmMatmulOperands(rightOperandWeights(chunk));
    });
    this.options.trace?.record('pack weights', 'compute', start, wallClockMs(), this.args(op));
  }

  private async backward(op: PipelineOp, batch: TokenBatch): Promise<void> {
    const virtual = this.virtualStage(op.chunk);
    const model = this.chunks[op.chunk];
    const key = `${op.microBatch}.${op.chunk}`;
    const saved = this.saved.get(key);
    if (saved === undefined) throw new Error(`stage ${this.options.pipelineRank}: backward ${formatOp(op)} before its forward`);
    this.saved.delete(key);
    this.noteSaved();
    const last = virtual === this.virtualStages - 1;
    const outputGrad = last ? undefined : await this.receive('grad', op, this.rankOfVirtual(virtual + 1), virtual, this.hiddenShape(batch));
    if (model instanceof TensorParallelGPT) {
      const start = wallClockMs();
      const { inputGrad, grads } = await model.backward(saved.shardForward!, outputGrad as tf.Tensor3D | undefined, this.lossScale);
      this.finishCompute(op, start);
      model.release(saved.shardForward!);
      outputGrad?.dispose();
      this.finishBackward(op, virtual, grads, inputGrad);
      return;
    }
    if (saved.activations !== undefined) {
      const { inputGrad, grads, wordEmbeddingRows } = this.compute(op, () =>
        sliceBackward(model, saved.activations!, outputGrad as tf.Tensor3D | undefined, { wordEmbeddingRows: true }),
      );
      outputGrad?.dispose();
      if (wordEmbeddingRows !== undefined) this.wordEmbeddingRows.push(wordEmbeddingRows);
      this.finishBackward(op, virtual, grads, inputGrad);
      return;
    }
    const input = saved.hidden === undefined ? undefined : tf.variable(saved.hidden, true);
    const variables = model.variables();
    const { value, grads } = this.compute(op, () => {
      const result = tf.variableGrads(() => {
        const output = model.forward(batch, input as tf.Tensor3D | undefined, {});
        // The loss itself on the last virtual stage; elsewhere the VJP with the received gradient.
        return (last ? tf.mul(output, this.lossScale) : tf.sum(tf.mul(output, outputGrad!))) as tf.Scalar;
      }, input === undefined ? variables : [...variables, input]);
      result.value.dataSync();
      return result;
    });
    value.dispose();
    outputGrad?.dispose();
    model.specs.forEach((spec, index) => this.accumulate(spec.name, grads[variables[index].name]));
    if (input !== undefined) {
      const inputGrad = grads[input.name];
      this.send(op, 'grad', this.rankOfVirtual(virtual - 1), virtual - 1, inputGrad);
      inputGrad.dispose();
      input.dispose();
    }
    saved.hidden?.dispose();
  }
}

/**
 * Bytes of the distinct tensors reachable from `value` through arrays, maps and plain objects; class
 * instances other than tensors (models, groups) are not entered, so parameters are never counted.
 */
function tensorBytes(value: unknown, seen: Set<number>): number {
  if (value instanceof tf.Tensor) {
    if (value.isDisposed || seen.has(value.id)) return 0;
    seen.add(value.id);
    return value.size * (value.dtype === 'bool' ? 1 : value.dtype === 'complex64' ? 8 : 4);
  }
  let children: Iterable<unknown>;
  if (Array.isArray(value)) children = value;
  else if (value instanceof Map) children = value.values();
  else if (typeof value === 'object' && value !== null && [Object.prototype, null].includes(Object.getPrototypeOf(value))) children = Object.values(value);
  else return 0;
  let bytes = 0;
  for (const child of children) bytes += tensorBytes(child, seen);
  return bytes;
}
