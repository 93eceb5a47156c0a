/**
 * Implements: choosing the tfjs compute backend at start: `tensorflow` (tfjs-node-gpu, then
 * tfjs-node: optional packages whose install downloads libtensorflow), else `webgpu` on a hardware
 * adapter (Dawn's Node bindings; a software one only when asked for by name), else `wasm` (XNNPACK,
 * SIMD; with this project's training kernels installed), else `cpu` (pure JS, ~40x slower on
 * matmul). The first backend that loads wins; the reasons the better ones failed are logged.
 */
import { createRequire } from 'node:module';
import { dirname, sep } from 'node:path';
import * as tf from '../tf.ts';
import { BACKEND_NAMES, type BackendName } from './names.ts';
import { registerWasmTrainingKernels } from './wasm/kernels.ts';
import { activateWebgpu, webgpuAdapter } from './webgpu/activate.ts';

const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];

const WHAT_TO_DO: Record<BackendName, string> = {
  tensorflow: 'Install @tensorflow/tfjs-node (or @tensorflow/tfjs-node-gpu on a CUDA machine) where its install ' +
    'script can download libtensorflow, or ask for \'wasm\' or \'cpu\' (or no preference, to take the best available).',
  webgpu: 'Install the optional packages webgpu and @tensorflow/tfjs-backend-webgpu (npm install); on a GPU machine ' +
    'the Vulkan loader (Debian: libvulkan1) and the GPU driver\'s Vulkan ICD; on a machine without a GPU, Mesa\'s OpenGL ES ' +
    '(apt-get install libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri libegl-dev). Or ask for \'wasm\'.',
  wasm: 'Check that @tensorflow/tfjs-backend-wasm is installed with its dist/*.wasm files, or ask for \'cpu\'.',
  cpu: 'Install @tensorflow/tfjs-backend-cpu (npm install).',
};

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!;
}

async function activateTensorflow(): Promise<string | undefined> {
  const reasons: string[] = [];
  for (const packageName of TENSORFLOW_PACKAGES) {
    try {
      // A variable specifier: these packages are optional and usually absent.
      await import(packageName);
    } catch (error) {
      const notInstalled = (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND';
      reasons.push(`${packageName}: ${notInstalled ? 'not installed' : firstLine(error)}`);
      continue;
    }
    if (tf.findBackendFactory('tensorflow') == null) {
      reasons.push(`${packageName} loaded but registered no 'tensorflow' backend with this copy of ` +
        `@tensorflow/tfjs-core (versions differ? keep them equal so npm installs one copy)`);
      continue;
    }
    if (await tf.setBackend('tensorflow')) return undefined;
    reasons.push(`${packageName}: tf.setBackend('tensorflow') failed (see the warning above)`);
  }
  return reasons.join('; ');
}

async function activateWasm(): Promise<string | undefined> {
  let wasmPackage: { setWasmPaths(prefix: string): void };
  try {
    wasmPackage = await import('@tensorflow/tfjs-backend-wasm');
  } catch (error) {
    return `@tensorflow/tfjs-backend-wasm: ${firstLine(error)}`;
  }
  // Point the loader at the package's own .wasm files so it works from any working directory.
  const alreadyStarted = tf.engine().registry['wasm'] !== undefined;
  if (!alreadyStarted) {
    try {
      const entry = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm');
      wasmPackage.setWasmPaths(dirname(entry) + sep);
    } catch (error) {
      return `@tensorflow/tfjs-backend-wasm: cannot set the .wasm location: ${firstLine(error)}`;
    }
  }
  // Installed before the backend starts or after: the engine looks kernels up per op.
  registerWasmTrainingKernels();
  const before = { exception: process.listeners('uncaughtException'), rejection: process.listeners('unhandledRejection') };
  const started = await tf.setBackend('wasm');
  // Emscripten's runtime adds process handlers that rethrow, which makes Node print the whole minified
  // wasm glue (one line of ~100 kB) above any uncaught error: remove them, the error alone is clearer.
  for (const listener of process.listeners('uncaughtException')) if (!before.exception.includes(listener)) process.off('uncaughtException', listener);
  for (const listener of process.listeners('unhandledRejection')) if (!before.rejection.includes(listener)) process.off('unhandledRejection', listener);
  if (!started) {
    return 'tf.setBackend(\'wasm\') failed (see the warning above: usually the .wasm binary was not found)';
  }
  return undefined;
}

async function activateCpu(): Promise<string | undefined> {
  try {
    await import('@tensorflow/tfjs-backend-cpu');
  } catch (error) {
    return `@tensorflow/tfjs-backend-cpu: ${firstLine(error)}`;
  }
  return (await tf.setBackend('cpu')) ? undefined : 'tf.setBackend(\'cpu\') failed (see the warning above)';
}

/** Each backend's start; `requested` when the user named it (webgpu then accepts a software adapter). */
const ACTIVATE: Record<BackendName, (requested: boolean) => Promise<string | undefined>> = {
  tensorflow: activateTensorflow,
  webgpu: activateWebgpu,
  wasm: activateWasm,
  cpu: activateCpu,
};

/** Makes `name` the current backend, or throws saying why it is unavailable and what to do. */
export async function activateBackend(name: BackendName): Promise<void> {
  if (!(name in ACTIVATE)) {
    throw new Error(`Unknown backend '${String(name)}': expected one of ${BACKEND_NAMES.join(', ')}.`);
  }
  const reason = await ACTIVATE[name](true);
  if (reason !== undefined) {
    throw new Error(`Backend '${name}' was requested but is unavailable: ${reason}. ${WHAT_TO_DO[name]}`);
  }
}

// Serializes concurrent calls: two interleaved setBackend calls would race.
let pending: Promise<unknown> = Promise.resolve();

/**
 * Picks and activates the compute backend, logs one line naming it (and why better ones were
 * skipped), and returns its name. With `preferred`, that backend or an error. Safe to call again.
 */
export function initBackend(
  preferred?: BackendName,
  log: (line: string) => void = console.error,
): Promise<BackendName> {
  const result = pending.then(() => chooseBackend(preferred, log));
  pending = result.catch(() => undefined);
  return result;
}

async function chooseBackend(preferred: BackendName | undefined, log: (line: string) => void): Promise<BackendName> {
  if (preferred !== undefined) {
    await activateBackend(preferred);
    log(`backend: ${preferred} (as requested)${note(preferred)}`);
    return preferred;
  }
  const skipped: string[] = [];
  for (const name of BACKEND_NAMES) {
    const reason = await ACTIVATE[name](false);
    if (reason === undefined) {
      const why = skipped.length > 0 ? `; skipped ${skipped.join('; ')}` : '';
      log(`backend: ${name}${note(name)}${why}`);
      return name;
    }
    skipped.push(`${name} (${reason})`);
  }
  throw new Error(`No tfjs backend could be started: ${skipped.join('; ')}. ${WHAT_TO_DO.cpu}`);
}

function note(name: BackendName): string {
  if (name === 'webgpu') {
    const adapter = webgpuAdapter()!;
    return ` on ${adapter.description}${adapter.software ? ' (a software adapter: correct but slow, for tests)' : ''}`;
  }
  return name === 'wasm' ? wasmNote() : '';
}

function wasmNote(): string {
  return ' with the project\'s wasm kernels (UnsortedSegmentSum; faster BatchMatMul, Transpose, Slice, SplitV, Sum; fused softmax cross-entropy, Adam, sum of squares, LayerNorm and GELU)';
}
