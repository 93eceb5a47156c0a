/**
 * Implements: finding a WebGPU adapter in Node through Dawn's bindings (the optional npm package
 * `webgpu`): a hardware one through Vulkan, or, only when asked for, Dawn's OpenGL ES backend on
 * Mesa's software rasterizer (llvmpipe), which is how every CPU machine tests the webgpu path.
 *
 * Why the checks before Dawn is asked: Dawn prints its own warnings to stderr when the Vulkan loader
 * or libEGL is missing, and every worker of every job on a CPU machine would print them when the
 * backend is chosen automatically; looking for the loader first keeps those runs quiet and lets the
 * error name the Debian package to install.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What Dawn was asked for and what it found. */
export interface GpuAdapterFound {
  adapter: GPUAdapter;
  /** llvmpipe, lavapipe, SwiftShader or a fallback adapter: correct, slow, for tests. */
  software: boolean;
  /** One line naming the adapter and the API under it, for the log. */
  description: string;
}

const SOFTWARE_ADAPTERS = /llvmpipe|lavapipe|softpipe|swiftshader/i;

/** Debian's packages that Dawn's OpenGL ES backend needs on a machine without a GPU. */
export const GLES_PACKAGES = 'libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri libegl-dev';

/** Whether the dynamic linker can find `library` (in LD_LIBRARY_PATH or its cache), without loading it. */
export function sharedLibraryFound(library: string): boolean {
  for (const dir of (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean)) {
    if (existsSync(join(dir, library))) return true;
  }
  try {
    // The cache names every library ldconfig knows; its strings are NUL-terminated.
    return readFileSync('/etc/ld.so.cache').includes(`${library}\0`);
  } catch {
    return ['/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu'].some((dir) => existsSync(join(dir, library)));
  }
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

let dawn: DawnModule | undefined;

async function loadDawn(): Promise<DawnModule> {
  if (dawn === undefined) {
    // A variable specifier: the package is optional.
    const specifier = 'webgpu';
    dawn = (await import(specifier)) as DawnModule;
    // tfjs' webgpu backend names GPUBufferUsage, GPUMapMode and the like as globals, as in a browser.
    for (const [name, value] of Object.entries(dawn.globals)) {
      if (!(name in globalThis)) Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
    }
  }
  return dawn;
}

/**
 * tfjs' webgpu backend checks `navigator.gpu` before it starts (as in a browser): Node 20 has no
 * navigator, Node 21+ one without `gpu`.
 */
function exposeAsNavigatorGpu(gpu: GPU): void {
  const existing = (globalThis as { navigator?: object }).navigator;
  if (existing === undefined) {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  } else {
    Object.defineProperty(existing, 'gpu', { value: gpu, configurable: true, writable: true });
  }
}

function describe(adapter: GPUAdapter, api: string): { description: string; software: boolean } {
  const info = adapter.info;
  const name = [info.vendor, info.architecture, info.device].filter((part) => part !== '').join(' ') || 'unnamed adapter';
  const software = SOFTWARE_ADAPTERS.test(`${info.device} ${info.description} ${info.architecture}`) || (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return { description: `${name} (${api}${info.description === '' ? '' : `: ${info.description}`})`, software };
}

/**
 * A hardware adapter through Vulkan, else (with `allowSoftware`) Dawn's OpenGL ES backend on a software
 * rasterizer. Returns the reasons nothing was found instead of an adapter.
 */
export async function findGpuAdapter(allowSoftware: boolean): Promise<GpuAdapterFound | { reasons: string[] }> {
  const reasons: string[] = [];
  let module: DawnModule;
  try {
    module = await loadDawn();
  } catch (error) {
    const notInstalled = (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND';
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    return { reasons: [`the npm package webgpu (Dawn) ${notInstalled ? 'is not installed (npm install webgpu @tensorflow/tfjs-backend-webgpu)' : `failed to load: ${message}`}`] };
  }
  if (sharedLibraryFound('libvulkan.so.1')) {
    const gpu = module.create([]);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (adapter !== null) {
      const { description, software } = describe(adapter, 'Vulkan');
      if (!software) {
        exposeAsNavigatorGpu(gpu);
        return { adapter, software, description };
      }
      reasons.push(`Vulkan offers only a software adapter (${description})`);
    } else {
      reasons.push('Vulkan found no adapter (no GPU driver: on NVIDIA, the driver\'s Vulkan ICD, e.g. VK_DRIVER_FILES=.../nvidia_icd.json)');
    }
  } else {
    reasons.push('no Vulkan loader (libvulkan.so.1: Debian package libvulkan1) and so no hardware adapter');
  }
  if (!allowSoftware) return { reasons };
  if (!sharedLibraryFound('libEGL.so')) {
    reasons.push(`no libEGL.so for Dawn's OpenGL ES backend (apt-get install ${GLES_PACKAGES})`);
    return { reasons };
  }
  // Mesa reads this when EGL starts: no display server, render into nothing.
  process.env.EGL_PLATFORM ??= 'surfaceless';
  const gpu = module.create(['backend=opengles']);
  const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' } as GPURequestAdapterOptions);
  if (adapter === null) {
    reasons.push(`Dawn's OpenGL ES backend found no adapter (is Mesa installed? apt-get install ${GLES_PACKAGES})`);
    return { reasons };
  }
  const { description } = describe(adapter, 'OpenGL ES');
  exposeAsNavigatorGpu(gpu);
  return { adapter, software: true, description };
}
