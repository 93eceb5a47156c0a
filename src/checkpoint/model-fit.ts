/**
 * Implements: the check, before a resume loads anything, that a checkpoint holds exactly the parameters
 * of the model being resumed. Each rank reads only its own regions, so without it a checkpoint of a
 * deeper model loads silently into a shallower one (its extra layers ignored), and a wider one fails on
 * a worker after the run folder was already taken over; like a strict state-dict load in PyTorch,
 * missing, unexpected and misshapen parameters are refused together, named.
 */
import { wholeModelParams } from '../model/sharding.ts';
import type { GPTConfig } from '../model/config.ts';
import { firstMomentName, secondMomentName } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';
import type { CheckpointManifest } from './manifest.ts';

const LISTED = 4;

export function checkModelFits(manifest: CheckpointManifest, model: GPTConfig, source: string): void {
  const expected = new Map(wholeModelParams(model).map(({ spec }) => [spec.name, spec.shape.join(',')]));
  const moments = new Set([...expected.keys()].flatMap((name) => [firstMomentName(name), secondMomentName(name)]));
  const held = new Map<string, string>();
  for (const rank of manifest.ranks) for (const tensor of rank.tensors) if (!moments.has(tensor.name)) held.set(tensor.name, tensor.fullShape.join(','));
  const missing = [...expected.keys()].filter((name) => !held.has(name));
  const unexpected = [...held.keys()].filter((name) => !expected.has(name));
  const misshapen = [...expected].filter(([name, shape]) => held.has(name) && held.get(name) !== shape).map(([name, shape]) => `${name} [${held.get(name)}], the model's [${shape}]`);
  const problems = [
    missing.length > 0 ? `lacks ${listed(missing)}` : '',
    unexpected.length > 0 ? `holds ${listed(unexpected)}, which the model lacks` : '',
    misshapen.length > 0 ? `has ${listed(misshapen)}` : '',
  ].filter((problem) => problem !== '');
  if (problems.length === 0) return;
  throw new CheckpointError(
    'layout',
    source,
    `the checkpoint is of another model than the config's (${problems.join('; ')}): resume with the model settings it was trained with (its manifest.json's config.model)`,
  );
}

function listed(items: readonly string[]): string {
  return items.length <= LISTED ? items.join(', ') : `${items.slice(0, LISTED).join(', ')} and ${items.length - LISTED} more`;
}
