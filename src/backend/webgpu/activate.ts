/**
 * Implements: starting tfjs' stock webgpu backend (`@tensorflow/tfjs-backend-webgpu`, optional) on the
 * adapter Dawn found, and watching its device so that a GPU failure stops training with a clear
 * error instead of leaving wrong numbers in tensors.
 *
 * Why a device watch: WebGPU reports an out-of-memory buffer, a binding over the adapter's limit or a
 * lost device asynchronously, as events; the failing dispatch simply does not run and its output
 * holds zeros or stale values. Every read on the training path goes through `readTensor`, which calls
 * `assertGpuHealthy` after the read, so no value computed after a failure is ever used.
 */
import * as tf from '../../tf.ts';
import { findGpuAdapter } from './dawn.ts';
import { registerWebgpuTrainingKernels } from './kernels.ts';

export interface WebgpuStarted {
  description: string;
  software: boolean;
  /** The largest buffer one kernel may bind: a bigger tensor cannot be computed on. */
  maxBindingBytes: number;
}

/**
 * Dispatches the stock backend records before it submits them (its default: 15). A submit is the
 * largest part of an op's cost when ops are small (a profile on llvmpipe: 0.23 -> 0.16 ms an op at 64);
 * the bench's gpu section measures the step at both, side by side.
 */
export const SUBMIT_BATCH = 64;

let started: WebgpuStarted | undefined;
let failure: string | undefined;
let maxBindingBytes = 0;

/** Throws the first error the GPU device reported (out of memory, over a limit, lost), if any. */
export function assertGpuHealthy(): void {
  if (failure !== undefined) throw new Error(failure);
}

/** The adapter the webgpu backend runs on, once started. */
export function webgpuAdapter(): WebgpuStarted | undefined {
  return started;
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}

function firstLine(message: string): string {
  return (message.split('\n').find((line) => line.trim() !== '') ?? message).trim().replace(/\.$/, '');
}

function describeDeviceError(error: GPUError): string {
  if (error instanceof GPUOutOfMemoryError || /out of memory/i.test(error.message)) {
    return `GPU out of memory (${firstLine(error.message)}): shrink the micro-batch, the sequence length or the model, or spread it over more pipeline stages or tensor shards.`;
  }
  const overLimit = /binding size|maxStorageBufferBindingSize|maxBufferSize/i.test(error.message);
  const advice = overLimit
    ? `a tensor is larger than this adapter binds at once (${mib(maxBindingBytes)}): shrink the micro-batch, sequence length or vocabulary per shard (tensor parallelism splits the LM head)`
    : 'this is a bug in a GPU kernel or in the backend; run with --backend wasm to go on';
  return `GPU error: ${firstLine(error.message)}: ${advice}.`;
}

/** Starts the webgpu backend (once per process) and makes it current; returns why not where it cannot. */
export async function activateWebgpu(allowSoftware: boolean): Promise<string | undefined> {
  if (started !== undefined) {
    if (started.software && !allowSoftware) return `only a software adapter (${started.description}) was started in this process`;
    return (await tf.setBackend('webgpu')) ? undefined : 'tf.setBackend(\'webgpu\') failed (see the warning above)';
  }
  let backendPackage: { WebGPUBackend: new (device: GPUDevice, info?: GPUAdapterInfo) => tf.KernelBackend };
  try {
    const specifier = '@tensorflow/tfjs-backend-webgpu';
    backendPackage = await import(specifier);
  } catch (error) {
    const notInstalled = (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND';
    return `@tensorflow/tfjs-backend-webgpu ${notInstalled ? 'is not installed (npm install @tensorflow/tfjs-backend-webgpu at the version of @tensorflow/tfjs-core)' : `failed to load: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`}`;
  }
  const found = await findGpuAdapter(allowSoftware);
  if ('reasons' in found) return found.reasons.join('; ');
  const { adapter } = found;
  const limits = adapter.limits;
  maxBindingBytes = limits.maxStorageBufferBindingSize;
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      // Timestamps let the trace show GPU time; the limits are the adapter's, not WebGPU's small defaults.
      requiredFeatures: adapter.features.has('timestamp-query') ? ['timestamp-query'] : [],
      requiredLimits: {
        maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
        maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
        maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
        maxBufferSize: limits.maxBufferSize,
        maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
        maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
        // WebGPU's default is 8: the stock AddN or Concat of 8 tensors binds 9 buffers and fails validation.
        maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
      },
    });
  } catch (error) {
    return `the adapter ${found.description} refused a device: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
  }
  device.addEventListener('uncapturederror', (event) => {
    failure ??= describeDeviceError((event as GPUUncapturedErrorEvent).error);
  });
  void device.lost.then((info) => {
    if (info.reason !== 'destroyed') failure ??= `the GPU device was lost (${info.message || info.reason}): the driver reset or the GPU failed; restart the job (it resumes from its last checkpoint).`;
  });
  const backend = new backendPackage.WebGPUBackend(device, adapter.info);
  // The package registers a factory of its own when it is imported after navigator.gpu exists (e.g. a
  // second process-wide adapter search); that one asks for a core adapter only and watches nothing.
  if (tf.findBackendFactory('webgpu') != null) tf.removeBackend('webgpu');
  if (!tf.registerBackend('webgpu', () => backend)) return 'tfjs refused to register the webgpu backend';
  registerWebgpuTrainingKernels();
  if (!(await tf.setBackend('webgpu'))) return 'tf.setBackend(\'webgpu\') failed (see the warning above)';
  tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', SUBMIT_BATCH);
  started = { description: found.description, software: found.software, maxBindingBytes };
  return undefined;
}
