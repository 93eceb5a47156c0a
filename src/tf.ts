/**
 * Implements: the one way this project imports TensorFlow.js: the tfjs-core API, with every gradient
 * registered.
 *
 * Why: in Node, `@tensorflow/tfjs-core` resolves to a bundle that registers no gradients (its ESM
 * files that do cannot be loaded by Node's resolver), so tf.grads fails with "gradient function not
 * found". The `@tensorflow/tfjs` package's Node bundle registers them, into the same global registry.
 */
import '@tensorflow/tfjs';

export * from '@tensorflow/tfjs-core';
