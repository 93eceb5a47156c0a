/**
 * Implements: a record of the stock tfjs wasm kernels we replace, so that our replacements can
 * fall back to them (shapes they do not speed up) and benchmarks/tests can restore them.
 */
import * as tf from '../../tf.ts';
import type { KernelConfig, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '../../tf.ts';

const stockKernels = new Map<string, KernelConfig>();
/** Stock setupFuncs run at backend start only for kernels registered then; track our own runs. */
const setUpFor = new Map<string, WeakSet<object>>();

/** Remembers the stock kernel currently registered under `kernelName` unless it is `ours`. */
export function rememberStockKernel(kernelName: string, ours: KernelConfig): void {
  if (stockKernels.has(kernelName)) return;
  const current = tf.getKernel(kernelName, 'wasm');
  if (current !== undefined && current !== ours) stockKernels.set(kernelName, current);
}

export function stockKernel(kernelName: string): KernelConfig | undefined {
  return stockKernels.get(kernelName);
}

/** Runs the stock wasm kernel, first running its setupFunc for this backend if we have not. */
export function runStockKernel(
  kernelName: string,
  args: { inputs: NamedTensorInfoMap; backend: object; attrs?: NamedAttrMap },
): TensorInfo {
  const stock = stockKernels.get(kernelName);
  if (stock === undefined) {
    throw new Error(`runStockKernel: no stock wasm '${kernelName}' kernel was recorded; ` +
      `import '@tensorflow/tfjs-backend-wasm' before registering the replacement kernels.`);
  }
  setUpStockKernel(kernelName, args.backend);
  return stock.kernelFunc(args as Parameters<KernelConfig['kernelFunc']>[0]) as TensorInfo;
}

/**
 * Runs the stock kernel's setupFunc for `backend` once. Needed even while ours is registered:
 * other stock kernels call the stock Transpose directly (reductions over inner axes do), and
 * its setup only runs for kernels registered when the backend starts.
 */
export function setUpStockKernel(kernelName: string, backend: object): void {
  const stock = stockKernels.get(kernelName);
  if (stock?.setupFunc === undefined) return;
  let done = setUpFor.get(kernelName);
  if (done === undefined) setUpFor.set(kernelName, done = new WeakSet());
  if (done.has(backend)) return;
  stock.setupFunc(backend as Parameters<NonNullable<KernelConfig['setupFunc']>>[0]);
  done.add(backend);
}
