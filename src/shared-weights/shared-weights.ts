/**
 * Implements: tied parameters held by several ranks (the seed's PipelineSharedModuleWrapper; Megatron's
 * embedding group): the word embedding of the first pipeline stage and the LM head of the last. Each
 * registered group of ranks and parameter names gets identical initial values (a broadcast from the
 * group's first rank) and, every step before the optimizer, the sum of all its copies' gradients, so the
 * copies stay bit-identical. Several groups can coexist; a group of one rank does nothing.
 */
import type { ProcessGroup } from '../comm/collectives.ts';
import * as tf from '../tf.ts';

interface SharedGroup {
  group: ProcessGroup;
  names: string[];
}

export class SharedWeights {
  private readonly groups: SharedGroup[] = [];

  register(group: ProcessGroup, names: string[]): void {
    if (names.length === 0) throw new Error(`shared weights of group ${group.name}: no parameter names given`);
    this.groups.push({ group, names: [...names] });
  }

  /** Makes every copy equal to the first rank's (they already are when initialized from the same seed). */
  async synchronizeValues(params: Map<string, tf.Variable>): Promise<void> {
    for (const { group, names } of this.groups) {
      if (group.size === 1) continue;
      const flat = flatten(names, (name) => requireTensor(params, name, group));
      const root = group.ranks[0];
      const values = await group.broadcast(group.rank === root ? flat : undefined, root);
      unflatten(names, values, (name, tensor) => {
        params.get(name)!.assign(tensor);
        tensor.dispose();
      }, params);
    }
  }

  /** Replaces each registered gradient by the sum over the group's copies. */
  async reduceGradients(grads: Map<string, tf.Tensor>): Promise<void> {
    for (const { group, names } of this.groups) {
      if (group.size === 1) continue;
      const summed = await group.allReduce(flatten(names, (name) => requireTensor(grads, name, group)), 'sum');
      unflatten(names, summed, (name, tensor) => {
        grads.get(name)!.dispose();
        grads.set(name, tensor);
      }, grads);
    }
  }
}

function requireTensor<T extends tf.Tensor>(map: Map<string, T>, name: string, group: ProcessGroup): T {
  const tensor = map.get(name);
  if (tensor === undefined) throw new Error(`shared parameter ${name} of group ${group.name} is not held by rank ${group.rank}`);
  return tensor;
}

function flatten(names: string[], get: (name: string) => tf.Tensor): Float32Array {
  const tensors = names.map(get);
  const flat = new Float32Array(tensors.reduce((n, t) => n + t.size, 0));
  let offset = 0;
  for (const tensor of tensors) {
    flat.set(tensor.dataSync() as Float32Array, offset);
    offset += tensor.size;
  }
  return flat;
}

function unflatten(names: string[], flat: Float32Array, put: (name: string, tensor: tf.Tensor) => void, shapes: Map<string, tf.Tensor>): void {
  let offset = 0;
  for (const name of names) {
    const like = shapes.get(name)!;
    put(name, tf.tensor(flat.subarray(offset, offset + like.size), like.shape, 'float32'));
    offset += like.size;
  }
}
