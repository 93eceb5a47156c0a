/**
 * Implements: one pipeline stage's compute: the model chunks it holds and the forward/backward of a
 * micro-batch through one chunk, with activations and their gradients exchanged with the neighbouring
 * virtual stages as tagged point-to-point messages.
 *
 * [Note: one chunk contract] Every chunk, at every tensor-parallel size and with or without activation
 * checkpointing, is a ModelChunk (src/model/chunk.ts): a backward is backwardInput, whose gradient is
 * sent upstream at once, then backwardWeight. A whole backward (B) runs both at once; a zero-bubble
 * schedule runs them as two actions, I and W, with other ops between (the saved state waits in between).
 * backwardWeight is local (every tensor-parallel collective is in the input half), so W never talks to
 * anyone. Reads of tensor values here are awaited (`data()`): a WebGPU backend cannot read synchronously.
 *
 * [Note: virtual stages] Chunk c of pipeline rank r is virtual stage v = c * P + r (interleaved 1F1B)
 * in the looped placement; activations flow v -> v + 1, i.e. to rank (r + 1) mod P, wrapping to the
 * next chunk after the last rank. In the V placement (zbv) chunk 1 comes back up, so the last rank
 * sends its chunk 0's output to itself and rank 0 ends the model (placement.ts). Virtual stage 0 holds
 * the embedding and reads tokens; the last one holds the head and the loss. Where one stage holds both
 * (the V), its two chunks share one word-embedding variable: the tied weights are one parameter there,
 * their gradients add up under its name, and no reduction between stages is needed.
 */
import type { ProcessGroup } from '../comm/collectives.ts';
import type { WirePrecision } from '../comm/tensor-wire.ts';
import type { TrainConfig } from '../config/types.ts';
import type { TokenBatch } from '../model/gpt.ts';
import { ModelChunk, type BackwardInputOptions, type ChunkSaved } from '../model/chunk.ts';
import { denseWordEmbeddingGradient, type WordEmbeddingRows } from '../model/manual/embedding.ts';
import { warmMatmulOperands } from '../backend/warm-matmul.ts';
import { gradientRows } from '../tensor-parallel/vocab-parallel.ts';
import { addGradient } from '../model/gradient-sum.ts';
import { WORD_EMBEDDING, sliceForLayers } from '../model/params.ts';
import type { DropoutContext } from '../model/dropout.ts';
import * as tf from '../tf.ts';
import { readScalar, readTensor } from '../backend/tensor-view.ts';
import { formatAction, type ComputeAction } from '../scheduler/actions.ts';
import { placeOfVirtualStage, virtualStageOf, type ChunkPlacement } from '../scheduler/placement.ts';
import { actionSliceName, flowId, wallClockMs, type TraceRecorder } from '../trace/trace.ts';

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
   * The stage's tensor-parallel group (the same stage of the other tp ranks): every chunk holds this
   * rank's shards and runs its all-reduces over it. Omitted: a group of one.
   */
  tensorGroup?: ProcessGroup;
  /** How activations and their gradients travel (wirePrecisionOf: comm.wirePrecision, float16 in fp16 mode); default float32. */
  wirePrecision?: WirePrecision;
  /** Which virtual stage each chunk holds (the schedule kind's, placement.ts); default looped. */
  placement?: ChunkPlacement;
}

export class PipelineStage {
  /** One model chunk per layer range: this rank's tensor-parallel shard of those layers. */
  readonly chunks: ModelChunk[];
  private readonly virtualStages: number;
  /** What each forward kept for its backward, by `microBatch.chunk`. */
  private readonly saved = new Map<string, ChunkSaved>();
  /** What each backward-input (I) left for its backward-weight (W), by `microBatch.chunk`. */
  private readonly awaitingWeight = new Map<string, ChunkSaved>();
  private gradSums = new Map<string, tf.Tensor>();
  /** The word embedding's gradient rows of this step's backwards, in order, merged into gradSums when read. */
  private wordEmbeddingRows: WordEmbeddingRows[] = [];
  private lossSum = 0;
  private evaluationLosses = 0;
  private computeMs = 0;
  /** How long each compute action of this step took, by kind (what auto-zb places its W's from). */
  private opMs: Record<ComputeAction['kind'], number[]> = emptyOpTimes();
  private step = 0;
  private lossScale = 1;
  /** Whether this step's weights were packed for matmul while waiting for a first activation. */
  private weightsWarmed = false;
  /** Virtual stage 0: which rows of the word embedding (this shard's) the step's lookups gathered. */
  private readonly lookedUp?: Uint8Array;
  private finals: FinalGradients | undefined;
  /** This step's forwards and weight-gradient actions so far, by chunk. */
  private forwardsDone: number[] = [];
  private inputsDone: number[] = [];
  private weightsDone: number[] = [];
  /** Whether `finals` was told the step's loss sum. */
  private lossGiven = false;

  constructor(private readonly options: StageOptions) {
    const { config, chunkLayers, pipelineSize } = options;
    this.virtualStages = pipelineSize * chunkLayers.length;
    this.chunks = chunkLayers.map(([start, end]) => new ModelChunk({
      config: config.model,
      slice: sliceForLayers(config.model, start, end),
      seed: config.seed,
      group: options.tensorGroup,
      wordEmbeddingRows: true,
    }));
    if (options.pipelineRank === 0) this.lookedUp = new Uint8Array(this.chunks[0].vocabRange.size);
    this.tieWithinStage();
  }

  /** Chunks of this stage that hold the same parameter (the V's embedding and head) use the first one's variable. */
  private tieWithinStage(): void {
    const first = new Map<string, tf.Variable>();
    for (const chunk of this.chunks) {
      for (const [name, variable] of chunk.params) {
        const owner = first.get(name);
        if (owner === undefined) first.set(name, variable);
        else chunk.shareParameter(name, owner);
      }
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
    // An id outside this shard's vocabulary range (another rank's, or none) gets no gradient here.
    for (const row of gradientRows(batch.inputIds, this.chunks[0].vocabRange)) if (row >= 0) this.lookedUp![row] = 1;
  }

  /**
   * Whether this rank's copy of `name` is the one counted in model-wide sums (the gradient norm): the
   * tied word embedding counts on virtual stage 0 only, a replicated parameter on tp rank 0 only.
   */
  countsInNorm(name: string): boolean {
    if (name === WORD_EMBEDDING && this.options.pipelineRank !== 0) return false;
    const chunk = this.chunks.find((c) => c.params.has(name));
    return chunk === undefined || chunk.shardKind(name) !== 'replicated' || chunk.tpRank === 0;
  }

  /** Every parameter this stage holds, by global name; the tied embedding appears once per chunk that holds it. */
  parameterSets(): Map<string, tf.Variable>[] {
    return this.chunks.map((chunk) => chunk.params);
  }

  /**
   * `lossScale`: the backward starts from loss x lossScale (fp16 mode's dynamic loss scale).
   * `finals`: told each gradient sum as soon as it is final for the step (overlapGradReduce).
   */
  beginStep(step: number, lossScale = 1, finals?: FinalGradients): void {
    this.step = step;
    this.lossScale = lossScale;
    this.finals = finals;
    this.forwardsDone = this.chunks.map(() => 0);
    this.inputsDone = this.chunks.map(() => 0);
    this.weightsDone = this.chunks.map(() => 0);
    this.lossGiven = false;
    this.lossSum = 0;
    this.computeMs = 0;
    this.opMs = emptyOpTimes();
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

  /** Runs one compute action; `batchOf(microBatch)` gives the tokens (every stage reads them: masks and labels). */
  async run(action: ComputeAction, batchOf: (microBatch: number) => TokenBatch): Promise<void> {
    switch (action.kind) {
      case 'F':
        return this.forward(action, batchOf(action.microBatch));
      case 'B': {
        const start = await this.backwardInput(action, batchOf(action.microBatch));
        await this.backwardWeight(action, start, batchOf(action.microBatch));
        return;
      }
      case 'I':
        this.finishCompute(action, await this.backwardInput(action, batchOf(action.microBatch)));
        return;
      case 'W':
        await this.backwardWeight(action, wallClockMs(), batchOf(action.microBatch));
        return;
    }
  }

  /** Time spent computing forwards and backwards since the step began (the complement of the bubble). */
  get stepComputeMs(): number {
    return this.computeMs;
  }

  /** The durations of this step's compute actions so far, by kind, in milliseconds. */
  get stepOpMs(): Readonly<Record<ComputeAction['kind'], readonly number[]>> {
    return this.opMs;
  }

  /**
   * Bytes of the tensors kept for backwards not yet run (saved activations, received hidden states, the
   * head's early gradients): the activation memory a schedule trades against its bubble.
   */
  get savedBytes(): number {
    const seen = new Set<number>();
    let bytes = 0;
    for (const saved of this.saved.values()) bytes += tensorBytes(saved, seen);
    for (const saved of this.awaitingWeight.values()) bytes += tensorBytes(saved, seen);
    return bytes;
  }

  /** A counter on the timeline, so a run shows each schedule's activation memory (bench/activation-peak.ts reads it). */
  private noteSaved(): void {
    this.options.trace?.counter('saved activations', wallClockMs(), { bytes: this.savedBytes });
  }

  /** Ends a compute action begun at `start` (it includes the chunk's tensor-parallel all-reduces). */
  private finishCompute(action: ComputeAction, start: number): void {
    const end = wallClockMs();
    this.computeMs += end - start;
    this.opMs[action.kind].push(end - start);
    const name = actionSliceName(action.kind, action.microBatch, action.chunk, this.chunks.length);
    this.options.trace?.record(name, 'compute', start, end, { ...this.args(action), op: TRACE_NAMES[action.kind] });
  }

  /** Adds a micro-batch's gradient (taken over) to the step's sum for that parameter. */
  private accumulate(name: string, grad: tf.Tensor): void {
    addGradient(this.gradSums, name, grad);
  }

  /** An evaluation's events name the steps before it, not a step: a step's bubble counts its own ops only. */
  private args(op: ComputeAction, evaluationAfter?: number): Record<string, number> {
    const when: Record<string, number> = evaluationAfter === undefined ? { step: this.step + 1 } : { evaluationAfterStep: evaluationAfter };
    return { ...when, microBatch: op.microBatch, chunk: op.chunk };
  }

  /** `evaluationAfter`: an evaluation's activation (its own tags, float32 whatever the wire's training precision). */
  private async send(op: ComputeAction, kind: 'act' | 'grad', to: number, virtual: number, tensor: tf.Tensor, evaluationAfter?: number): Promise<void> {
    const start = wallClockMs();
    const values = await readTensor(tensor);
    const tag = this.tag(kind, op.microBatch, virtual, evaluationAfter);
    this.options.pipelineGroup.send(to, tag, values, tensor.shape, {
      precision: evaluationAfter === undefined ? this.options.wirePrecision : 'float32',
    });
    const end = wallClockMs();
    const name = kind === 'act' ? 'send activation' : 'send gradient';
    this.options.trace?.record(name, 'comm', start, end, { ...this.args(op, evaluationAfter), to });
    this.options.trace?.flow('start', flowId(tag, this.ownRank, to), name, start, end);
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
      const dense = denseWordEmbeddingGradient(this.wordEmbeddingRows, this.chunks[0].vocabRange.size, this.options.config.model);
      this.disposeWordEmbeddingRows();
      this.accumulate(WORD_EMBEDDING, dense);
    }
    return this.gradSums;
  }

  dispose(): void {
    for (const chunk of this.chunks) chunk.dispose();
    for (const grad of this.gradSums.values()) grad.dispose();
    this.disposeWordEmbeddingRows();
    for (const held of [this.saved, this.awaitingWeight]) {
      for (const [key, saved] of held) this.chunks[Number(key.split('.')[1])].release(saved);
      held.clear();
    }
  }

  /** This stage's global rank (the ranks messages name). */
  private get ownRank(): number {
    return this.options.stageRanks[this.options.pipelineRank];
  }

  private virtualStage(chunk: number): number {
    return virtualStageOf(this.options.pipelineRank, chunk, this.options.pipelineSize, this.options.placement);
  }

  private rankOfVirtual(virtual: number): number {
    return this.options.stageRanks[placeOfVirtualStage(virtual, this.options.pipelineSize, this.options.placement).stage];
  }

  private tag(kind: 'act' | 'grad', microBatch: number, virtual: number, evaluationAfter?: number): string {
    return evaluationAfter === undefined ? `${kind}.${this.step}.${microBatch}.${virtual}` : `eval-${kind}.${evaluationAfter}.${microBatch}.${virtual}`;
  }

  /**
   * Activations and their gradients between stages always have the seed's TENSOR_SHAPE,
   * (micro-batch size, seqLen, hidden): anything else is refused before it is used.
   */
  private async receive(kind: 'act' | 'grad', op: ComputeAction, from: number, virtual: number, expectedShape: number[], evaluationAfter?: number): Promise<tf.Tensor> {
    const what = kind === 'act' ? 'activation' : 'output gradient';
    const when = evaluationAfter === undefined ? `step ${this.step + 1}` : `the evaluation after step ${evaluationAfter}`;
    const where = `stage ${this.options.pipelineRank} (op ${formatAction(op)}, ${when})`;
    const start = wallClockMs();
    const tag = this.tag(kind, op.microBatch, virtual, evaluationAfter);
    let received: { values: Float32Array; shape: number[] };
    try {
      received = await this.options.pipelineGroup.recv(from, tag);
    } catch (error) {
      throw new Error(`${where} got no ${what} of micro-batch ${op.microBatch} from rank ${from}: ${error instanceof Error ? error.message : String(error)}`);
    }
    const end = wallClockMs();
    const name = kind === 'act' ? 'receive activation' : 'receive gradient';
    this.options.trace?.record(name, 'comm', start, end, { ...this.args(op, evaluationAfter), from });
    this.options.trace?.flow('finish', flowId(tag, from, this.ownRank), name, start, end);
    const { values, shape } = received;
    if (shape.length !== expectedShape.length || shape.some((dim, i) => dim !== expectedShape[i]) || values.length !== shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`${where} received an ${what} of shape [${shape}] (${values.length} values) from rank ${from}; expected [${expectedShape}]`);
    }
    return tf.tensor(values, shape, 'float32');
  }

  private hiddenShape(batch: TokenBatch): number[] {
    return [batch.batch, batch.seqLen, this.options.config.model.hiddenSize];
  }

  /**
   * The dropout masks of this micro-batch, keyed like the single-process run's (seed, step, sample, layer,
   * site, position), so a stage drops exactly what the whole model would; none when every rate is 0.
   */
  private dropoutOf(batch: TokenBatch): { dropout?: DropoutContext } {
    const { config } = this.options;
    const { embedDropRate, attnDropRate, dropRate } = config.model;
    if (embedDropRate + attnDropRate + dropRate === 0) return {};
    return { dropout: { seed: config.seed, step: this.step, sampleIds: batch.sampleIds } };
  }

  private async forward(op: ComputeAction, batch: TokenBatch): Promise<void> {
    const virtual = this.virtualStage(op.chunk);
    const chunk = this.chunks[op.chunk];
    if (virtual === 0) this.noteLookups(batch);
    else if (!this.weightsWarmed) this.warmWeights(op);
    const hidden = virtual === 0 ? undefined : ((await this.receive('act', op, this.rankOfVirtual(virtual - 1), virtual, this.hiddenShape(batch))) as tf.Tensor3D);
    const start = wallClockMs();
    let forward: { output: tf.Tensor; saved: ChunkSaved };
    try {
      forward = await chunk.forward(batch, hidden, { lossGrad: this.lossScale, ...this.dropoutOf(batch) });
    } finally {
      hidden?.dispose();
    }
    this.finishCompute(op, start);
    this.saved.set(`${op.microBatch}.${op.chunk}`, forward.saved);
    this.noteSaved();
    this.forwardsDone[op.chunk]++;
    try {
      if (virtual === this.virtualStages - 1) this.lossSum += await readScalar(forward.output);
      else await this.send(op, 'act', this.rankOfVirtual(virtual + 1), virtual + 1, forward.output);
    } finally {
      forward.output.dispose();
    }
  }

  /** Whether a chunk of this stage holds the head, i.e. computes the loss. */
  get computesLoss(): boolean {
    return this.chunks.some((_, index) => this.virtualStage(index) === this.virtualStages - 1);
  }

  /** Starts an evaluation's loss sum; the step's own state (gradients, losses) is left alone. */
  beginEvaluation(): void {
    this.evaluationLosses = 0;
  }

  /** Sum of the losses of the evaluation's forwards so far (non-zero only on the stage with the head). */
  get evaluationLossSum(): number {
    return this.evaluationLosses;
  }

  /**
   * One forward of an evaluation (after `afterStep` steps): no dropout, no gradient; what it saved is
   * released at once, and with the head the loss is added to the evaluation's sum.
   */
  async evaluationForward(op: ComputeAction, batch: TokenBatch, afterStep: number): Promise<void> {
    const virtual = this.virtualStage(op.chunk);
    const chunk = this.chunks[op.chunk];
    const hidden = virtual === 0 ? undefined : ((await this.receive('act', op, this.rankOfVirtual(virtual - 1), virtual, this.hiddenShape(batch), afterStep)) as tf.Tensor3D);
    const start = wallClockMs();
    let output: tf.Tensor;
    try {
      const forward = await chunk.forward(batch, hidden);
      chunk.release(forward.saved);
      output = forward.output;
    } finally {
      hidden?.dispose();
    }
    this.options.trace?.record('evaluation forward', 'compute', start, wallClockMs(), this.args(op, afterStep));
    try {
      if (virtual === this.virtualStages - 1) this.evaluationLosses += await readScalar(output);
      else await this.send(op, 'act', this.rankOfVirtual(virtual + 1), virtual + 1, output, afterStep);
    } finally {
      output.dispose();
    }
  }

  /**
   * Before the step's first wait for an activation: the optimizer made new weight tensors, and packing
   * them for the wasm matmul now (warm-matmul.ts) takes it off the first micro-batch, whose results the
   * other stages wait for. Virtual stage 0's chunk computes first and waits for nothing, so it is left.
   * Only whole (tp = 1) chunks: they are the ones whose products run on the wasm fast path measured there.
   */
  private warmWeights(op: ComputeAction): void {
    this.weightsWarmed = true;
    const start = wallClockMs();
    this.chunks.forEach((chunk, index) => {
      if (chunk.tp === 1 && this.virtualStage(index) !== 0) warmMatmulOperands(chunk.rightOperandWeights());
    });
    this.options.trace?.record('pack weights', 'compute', start, wallClockMs(), this.args(op));
  }

  /**
   * The input half of a backward: backwardInput, its gradient sent upstream at once; what the weight
   * half needs waits in `awaitingWeight`. Returns when its compute began (after the gradient arrived).
   */
  private async backwardInput(action: ComputeAction, batch: TokenBatch): Promise<number> {
    const virtual = this.virtualStage(action.chunk);
    const chunk = this.chunks[action.chunk];
    const key = `${action.microBatch}.${action.chunk}`;
    const saved = this.saved.get(key);
    if (saved === undefined) throw new Error(`stage ${this.options.pipelineRank}: backward ${formatAction(action)} before its forward`);
    this.saved.delete(key);
    const last = virtual === this.virtualStages - 1;
    let inputGrad: tf.Tensor3D | undefined;
    let start = 0;
    try {
      const outputGrad = last ? undefined : ((await this.receive('grad', action, this.rankOfVirtual(virtual + 1), virtual, this.hiddenShape(batch))) as tf.Tensor3D);
      start = wallClockMs();
      try {
        inputGrad = await chunk.backwardInput(saved, outputGrad, this.backwardInputOptions(action, batch));
      } finally {
        outputGrad?.dispose();
      }
      if (inputGrad !== undefined) await this.send(action, 'grad', this.rankOfVirtual(virtual - 1), virtual - 1, inputGrad);
    } catch (error) {
      chunk.release(saved);
      throw error;
    } finally {
      inputGrad?.dispose();
    }
    this.awaitingWeight.set(key, saved);
    this.noteSaved();
    return start;
  }

  /**
   * The weight half: backwardWeight, its gradients added to the step's sums; the compute began at
   * `start`. On a chunk's last one of the step, with `finals`, each sum is handed over as soon as its
   * part is done, and the event loop runs between parts so that what was handed over moves meanwhile.
   */
  private async backwardWeight(action: ComputeAction, start: number, batch: TokenBatch): Promise<void> {
    const chunk = this.chunks[action.chunk];
    const key = `${action.microBatch}.${action.chunk}`;
    const saved = this.awaitingWeight.get(key);
    if (saved === undefined) throw new Error(`stage ${this.options.pipelineRank}: backward-weight ${formatAction(action)} before its backward-input`);
    this.awaitingWeight.delete(key);
    const finals = this.finals;
    const lastOfChunk = finals !== undefined && this.weightsDone[action.chunk] === finals.weightActionsPerChunk - 1;
    if (lastOfChunk) this.giveLossIfFinal(action.chunk);
    const early = lastOfChunk ? this.wordEmbeddingEarly(action.chunk, batch) : undefined;
    let parts: ReturnType<typeof chunk.backwardWeightParts>;
    try {
      parts = chunk.backwardWeightParts(saved, { headWordEmbedding: early });
    } catch (error) {
      chunk.release(saved);
      throw error;
    }
    let part = parts.next();
    let computeMs = 0;
    let partStart = start;
    for (; part.done !== true; part = parts.next()) {
      for (const [name, grad] of part.value) {
        this.accumulate(name, grad);
        if (lastOfChunk && this.isFinalAfter(name, action.chunk)) finals.gradientFinal(name, this.gradSums.get(name)!);
      }
      if (lastOfChunk) {
        computeMs += wallClockMs() - partStart;
        await new Promise<void>((resolve) => setImmediate(resolve));
        partStart = wallClockMs();
      }
    }
    this.weightsDone[action.chunk]++;
    // The compute's own time: the waits between parts are other work's (the trace shows them as the op's gaps).
    this.finishCompute(action, lastOfChunk ? partStart - computeMs : start);
    this.noteSaved();
    if (part.value.wordEmbeddingRows !== undefined) this.wordEmbeddingRows.push(part.value.wordEmbeddingRows);
  }

  /**
   * With `finals`, the chunk's last backward-input, all its other weight gradients done (always, unless
   * a zero-bubble schedule still holds some W back): the loss is final, the head's weight gradients are
   * computed at once so the word embedding's bucket can go, and the event loop runs between the steps.
   */
  private backwardInputOptions(action: ComputeAction, batch: TokenBatch): BackwardInputOptions {
    const finals = this.finals;
    const chunkIndex = action.chunk;
    const last = finals !== undefined && this.inputsDone[chunkIndex] === finals.weightActionsPerChunk - 1;
    this.inputsDone[chunkIndex]++;
    if (!last) return {};
    this.giveLossIfFinal(chunkIndex);
    if (this.weightsDone[chunkIndex] !== finals.weightActionsPerChunk - 1) return {};
    return { yieldToEventLoop: true, headWordEmbedding: this.wordEmbeddingEarly(chunkIndex, batch) };
  }

  /** Tells `finals` the loss sum once the head's forwards are all done (once a step). */
  private giveLossIfFinal(chunkIndex: number): void {
    const finals = this.finals!;
    if (this.lossGiven || this.virtualStage(chunkIndex) !== this.virtualStages - 1 || this.forwardsDone[chunkIndex] !== finals.weightActionsPerChunk) return;
    this.lossGiven = true;
    finals.lossFinal(this.lossSum);
  }

  /** Where the head's share of the last micro-batch's word embedding gradient goes, when it can go early. */
  private wordEmbeddingEarly(chunkIndex: number, batch: TokenBatch): ((headPart: tf.Tensor) => void) | undefined {
    const early = this.finals?.wordEmbeddingEarly;
    if (early === undefined || !this.holdsWholeWordEmbedding) return undefined;
    return (headPart) => early(this.earlyWordEmbedding(headPart), this.lookupRows(chunkIndex, batch));
  }

  /**
   * One chunk holds the lookup and the head (pipeline 1): the word embedding's gradient is tied to
   * nobody else and can go early (FinalGradients.wordEmbeddingEarly).
   */
  get holdsWholeWordEmbedding(): boolean {
    const slice = this.chunks[0].slice;
    return this.chunks.length === 1 && slice.hasEmbedding && slice.hasHead;
  }

  /**
   * The word embedding's step sum as it will be everywhere but on the rows the last micro-batch looks up:
   * the sum so far plus the head's share, which is then all the last micro-batch adds there (its lookup's
   * gradient is exactly +0 on those rows; `+ 0` turns a -0 into +0 just as adding that +0 does).
   */
  private earlyWordEmbedding(headPart: tf.Tensor): tf.Tensor {
    const sum = this.gradSums.get(WORD_EMBEDDING);
    return tf.tidy(() => {
      const canonical = tf.add(headPart, 0);
      return sum === undefined ? canonical : tf.add(sum, canonical);
    });
  }

  /** The rows of this shard's word embedding `batch` looks up, ascending. */
  private lookupRows(chunkIndex: number, batch: TokenBatch): Int32Array {
    const rows = new Set<number>();
    for (const row of gradientRows(batch.inputIds, this.chunks[chunkIndex].vocabRange)) if (row >= 0) rows.add(row);
    return Int32Array.from([...rows].sort((a, b) => a - b));
  }

  /**
   * Whether `name`'s sum is final once chunk `chunkIndex` finished its last weight action: held by that
   * chunk alone, and not the word embedding (its dense gradient is built when read, and the
   * SharedWeight reduction adds the other end's before the data-parallel one).
   */
  private isFinalAfter(name: string, chunkIndex: number): boolean {
    if (name === WORD_EMBEDDING) return false;
    return this.chunks.every((chunk, index) => index === chunkIndex || !chunk.params.has(name));
  }
}

/** Where a stage hands each gradient sum once it is final for the step (a bucketed data-parallel all-reduce). */
export interface FinalGradients {
  /** Weight-gradient actions (B or W) each chunk runs in a step: one per micro-batch. */
  weightActionsPerChunk: number;
  gradientFinal(name: string, sum: tf.Tensor): void;
  /** The step's loss sum, once the head's last forward is done (stages with the head). */
  lossFinal(lossSum: number): void;
  /**
   * Pipeline 1 only: the word embedding's sum, final except on `rows` (those the step's last lookup
   * adds to), as soon as the head's last share exists (taken over). Undefined: it waits for the end.
   */
  wordEmbeddingEarly?(sum: tf.Tensor, rows: Int32Array): void;
}

function emptyOpTimes(): Record<ComputeAction['kind'], number[]> {
  return { F: [], B: [], I: [], W: [] };
}

/** The trace's name for each compute action (the bench and the rank's bubble read `compute` spans). */
const TRACE_NAMES: Record<ComputeAction['kind'], string> = { F: 'forward', B: 'backward', I: 'backward input', W: 'backward weight' };

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
