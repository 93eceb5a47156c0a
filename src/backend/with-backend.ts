/**
 * Implements: running a function on a given backend and switching back afterwards, so tests can
 * compute the same thing on `wasm` and on `cpu` and compare.
 *
 * Tensors belong to the backend they were made on; using one under another backend moves its
 * data. Pass plain arrays into `fn` and return plain arrays out of it.
 */
import * as tf from '../tf.ts';
import type { BackendName } from './names.ts';
import { activateBackend } from './select.ts';

export async function withBackend<T>(name: BackendName, fn: () => T | Promise<T>): Promise<T> {
  const previous = tf.engine().backendName;
  await activateBackend(name);
  try {
    return await fn();
  } finally {
    if (previous != null && previous !== name && !(await tf.setBackend(previous))) {
      // Not thrown: it would hide fn's own error, and the backend worked a moment ago.
      console.error(`withBackend: could not switch back to backend '${previous}' after running on '${name}'.`);
    }
  }
}
