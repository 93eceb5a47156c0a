/**
 * Implements: Adam as the seed uses it (torch.optim.Adam with weight_decay: L2 added to the gradient)
 * and AdamW (decoupled decay) as an option, with optional clipping by global gradient norm.
 *
 * Written here rather than taken from tf.train.adam because that one has no weight decay, and because
 * the state must be addressable by parameter name: a pipeline stage or tensor shard updates only its
 * own parameters, and checkpoints store moments per global name.
 */
import * as tf from '../tf.ts';
import { readTensor } from '../backend/tensor-view.ts';
import type { OptimizerConfig } from '../config/types.ts';
import { ADAM_UPDATE, ADAM_UPDATE_PACKED, SUM_OF_SQUARES, type AdamUpdateAttrs } from '../backend/kernel-names.ts';

export interface OptimizerStepResult {
  /** Global L2 norm of the gradients before clipping. */
  gradNorm: number;
}

export type AdamConfig = Pick<OptimizerConfig, 'kind' | 'lr' | 'beta1' | 'beta2' | 'eps' | 'weightDecay' | 'gradClip'>;

export class AdamOptimizer {
  /**
   * Each parameter's moments: apart, or packed as one tensor [2, ...shape] (m then v) where the backend
   * has the packed update (webgpu: a dispatch fewer per parameter). Converted when the backend changes.
   */
  private readonly moments = new Map<string, Moments>();
  /** The moments state() unpacked, alive until the next apply, loadState or dispose. */
  private unpacked: tf.Tensor[] = [];
  /** Number of updates applied so far (torch's `state['step']`). */
  stepCount = 0;

  /** The schedule's keys are the caller's: each update gets its learning rate (train/lr-schedule.ts), lr is the default. */
  constructor(readonly config: AdamConfig) {}

  /**
   * Applies one update. `grads` maps parameter names to gradients (ownership stays with the caller).
   * Parameters are visited in `params` order so the arithmetic is the same on every run.
   */
  async apply(
    params: Map<string, tf.Variable>,
    grads: Map<string, tf.Tensor>,
    options: { learningRate?: number; /** The model-wide norm when these params are only part of the model (a pipeline stage). */ gradNorm?: number } = {},
  ): Promise<OptimizerStepResult> {
    const { beta1, beta2, eps, weightDecay, gradClip, kind } = this.config;
    const learningRate = options.learningRate ?? this.config.lr;
    const gradNorm = options.gradNorm ?? (await globalNorm([...params.keys()].map((name) => requireGrad(grads, name))));
    const clipScale = gradClip > 0 && gradNorm > gradClip ? gradClip / (gradNorm + 1e-6) : 1;
    this.stepCount += 1;
    const biasCorrection1 = 1 - beta1 ** this.stepCount;
    const biasCorrection2 = 1 - beta2 ** this.stepCount;
    const stepSize = learningRate / biasCorrection1;
    const packed = tf.getKernel(ADAM_UPDATE_PACKED, tf.getBackend()) !== undefined;
    const fused = !packed && tf.getKernel(ADAM_UPDATE, tf.getBackend()) !== undefined;
    const attrs: AdamUpdateAttrs = {
      clip: clipScale,
      l2: kind === 'adam' ? weightDecay : 0,
      decay: kind === 'adam' || weightDecay === 0 ? 1 : 1 - learningRate * weightDecay,
      beta1, oneMinusBeta1: 1 - beta1, beta2, oneMinusBeta2: 1 - beta2,
      sqrtBiasCorrection2: Math.sqrt(biasCorrection2), eps, stepSize,
    };
    this.releaseUnpacked();
    for (const [name, param] of params) {
      tf.tidy(() => {
        let grad = requireGrad(grads, name);
        if (packed) {
          const moments = this.packedMoments(name, param);
          // Two dispatches instead of ~14 kernels; the same float32 operations (backend/webgpu/adam.ts).
          const [nextParam, nextMoments] = tf.engine().runKernel(ADAM_UPDATE_PACKED, { param, grad, moments }, { ...attrs }) as tf.Tensor[];
          moments.assign(nextMoments!);
          param.assign(nextParam!);
          return;
        }
        const { m, v } = this.splitMoments(name, param);
        if (fused) {
          // One pass instead of ~14 kernels; the same float32 operations (backend/wasm/adam.ts).
          const [nextParam, nextM, nextV] = tf.engine().runKernel(ADAM_UPDATE, { param, grad, m, v }, { ...attrs }) as tf.Tensor[];
          m.assign(nextM!);
          v.assign(nextV!);
          param.assign(nextParam!);
          return;
        }
        if (clipScale !== 1) grad = tf.mul(grad, clipScale);
        let value: tf.Tensor = param;
        if (weightDecay !== 0) {
          if (kind === 'adam') grad = tf.add(grad, tf.mul(param, weightDecay));
          else value = tf.mul(param, 1 - learningRate * weightDecay);
        }
        const nextM = tf.add(tf.mul(m, beta1), tf.mul(grad, 1 - beta1));
        const nextV = tf.add(tf.mul(v, beta2), tf.mul(tf.square(grad), 1 - beta2));
        m.assign(nextM);
        v.assign(nextV);
        // torch's form: denom = sqrt(v) / sqrt(bias_correction2) + eps; p -= lr / bias_correction1 * m / denom.
        const denom = tf.add(tf.div(tf.sqrt(nextV), Math.sqrt(biasCorrection2)), eps);
        param.assign(tf.sub(value, tf.mul(tf.div(nextM, denom), stepSize)));
      });
    }
    return { gradNorm };
  }

  /**
   * Optimizer state by parameter name, for checkpoints. Packed moments are unpacked into tensors this
   * optimizer owns until its next apply, loadState or dispose: copy them to keep them longer.
   */
  state(): { step: number; moments: Map<string, { m: tf.Tensor; v: tf.Tensor }> } {
    const moments = new Map<string, { m: tf.Tensor; v: tf.Tensor }>();
    for (const [name, stored] of this.moments) {
      if ('m' in stored) {
        moments.set(name, stored);
        continue;
      }
      const [m, v] = tf.tidy(() => tf.unstack(stored.packed).map((half) => tf.keep(half)));
      this.unpacked.push(m!, v!);
      moments.set(name, { m: m!, v: v! });
    }
    return { step: this.stepCount, moments };
  }

  /** Restores moments and the step counter saved by a checkpoint (replacing any there are). */
  loadState(step: number, moments: Map<string, { m: Float32Array; v: Float32Array }>, shapes: Map<string, tf.Tensor>): void {
    this.dispose();
    this.stepCount = step;
    for (const [name, { m, v }] of moments) {
      const like = shapes.get(name);
      if (like === undefined) throw new Error(`checkpoint holds Adam moments for ${name}, which this model does not have`);
      this.moments.set(name, {
        m: tf.tidy(() => tf.variable(tf.tensor(m, like.shape, 'float32'), false)),
        v: tf.tidy(() => tf.variable(tf.tensor(v, like.shape, 'float32'), false)),
      });
    }
  }

  dispose(): void {
    this.releaseUnpacked();
    for (const stored of this.moments.values()) tf.dispose(Object.values(stored));
    this.moments.clear();
  }

  private releaseUnpacked(): void {
    tf.dispose(this.unpacked);
    this.unpacked = [];
  }

  /** The parameter's moments apart (zeros before its first update), unpacking packed ones. */
  private splitMoments(name: string, like: tf.Tensor): SplitMoments {
    const stored = this.moments.get(name);
    if (stored !== undefined && 'm' in stored) return stored;
    const split: SplitMoments = stored === undefined
      ? { m: tf.keep(tf.variable(tf.zerosLike(like), false)), v: tf.keep(tf.variable(tf.zerosLike(like), false)) }
      : (() => {
        const [m, v] = tf.unstack(stored.packed);
        return { m: tf.keep(tf.variable(m!, false)), v: tf.keep(tf.variable(v!, false)) };
      })();
    stored?.packed.dispose();
    this.moments.set(name, split);
    return split;
  }

  /** The parameter's moments packed [2, ...shape] (zeros before its first update), packing split ones. */
  private packedMoments(name: string, like: tf.Tensor): tf.Variable {
    const stored = this.moments.get(name);
    if (stored !== undefined && 'packed' in stored) return stored.packed;
    const packed = tf.keep(tf.variable(stored === undefined ? tf.zeros([2, ...like.shape]) : tf.stack([stored.m, stored.v]), false));
    if (stored !== undefined) tf.dispose([stored.m, stored.v]);
    this.moments.set(name, { packed });
    return packed;
  }
}

interface SplitMoments {
  m: tf.Variable;
  v: tf.Variable;
}

type Moments = SplitMoments | { packed: tf.Variable };

function requireGrad(grads: Map<string, tf.Tensor>, name: string): tf.Tensor {
  const grad = grads.get(name);
  if (grad === undefined) throw new Error(`no gradient for parameter ${name}: the backward pass did not reach it`);
  return grad;
}

/** L2 norm over all gradients, summed in the given order. */
export async function globalNorm(tensors: tf.Tensor[]): Promise<number> {
  return Math.sqrt(await sumOfSquares(tensors));
}

/**
 * Sum of squares of every element, per tensor in float32 and over tensors in the given order. Read
 * asynchronously: a GPU backend cannot read a tensor synchronously (and one value per tensor is all
 * that crosses).
 */
export async function sumOfSquares(tensors: tf.Tensor[]): Promise<number> {
  if (tensors.length === 0) return 0;
  const squares = tf.getKernel(SUM_OF_SQUARES, tf.getBackend()) !== undefined
    // One call instead of two kernels per tensor (backend/wasm/sum-of-squares.ts); its float64 sums are rounded to float32.
    ? (tf.engine().runKernel(SUM_OF_SQUARES, Object.fromEntries(tensors.map((t, i) => [String(i), t])), {}) as tf.Tensor)
    : tf.tidy(() => tf.stack(tensors.map((t) => tf.sum(tf.square(t)))));
  let values: Float32Array;
  try {
    values = await readTensor(squares);
  } finally {
    squares.dispose();
  }
  let total = 0;
  for (const value of values) total += value;
  return total;
}
