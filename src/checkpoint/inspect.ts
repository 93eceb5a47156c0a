/**
 * Implements: checking a checkpoint completely without loading it into a model (`gpt-hybrid checkpoint
 * inspect`): the manifest, every rank file (size, SHA-256, safetensors header against the manifest's
 * records), that every tensor's regions cover it, and that the ranks agree on the optimizer step. Each
 * problem is collected with the file it is in, so one run names all of them, not just the first.
 */
import { join } from 'node:path';
import { Checkpoint, firstMomentName, readManifest, resolveCheckpoint, secondMomentName } from './checkpoint.ts';
import { CheckpointError } from './errors.ts';
import { MANIFEST_FILE, type CheckpointManifest } from './manifest.ts';
import { optimizerStepOf, planRegionReads } from './reshard.ts';

export interface RankFileReport {
  rank: number;
  file: string;
  bytes: number;
  sha256: string;
  tensors: number;
  /** Why the file is refused; absent when it checks out. */
  problem?: string;
}

export interface CheckpointReport {
  /** The checkpoint directory the path resolved to. */
  dir: string;
  manifest: CheckpointManifest;
  /** Distinct parameters (Adam moments not counted) and their elements in the full, unsharded model. */
  parameters: { tensors: number; elements: number };
  /** Whether the checkpoint holds Adam moments for every parameter (absent before the first step). */
  moments: boolean;
  files: RankFileReport[];
  /** Everything that makes the checkpoint unusable; empty when it is complete and intact. */
  problems: string[];
}

/**
 * The report of the checkpoint at `path` (a checkpoint, or a run folder meaning its latest). Throws
 * CheckpointError only when there is no manifest to report on (nothing there, or manifest.json damaged).
 */
export async function inspectCheckpoint(path: string): Promise<CheckpointReport> {
  const dir = await resolveCheckpoint(path);
  const manifest = await readManifest(dir);
  const checkpoint = new Checkpoint(dir, manifest);
  const problems: string[] = [];
  const files: RankFileReport[] = [];
  for (const record of manifest.ranks) {
    const report: RankFileReport = { rank: record.rank, file: record.file, bytes: record.bytes, sha256: record.sha256, tensors: record.tensors.length };
    try {
      await checkpoint.openRank(record.rank);
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      report.problem = error.message;
      problems.push(error.message);
    } finally {
      // One file in memory at a time: the report needs no tensor data.
      checkpoint.close();
    }
    files.push(report);
  }

  const shapes = new Map<string, number[]>();
  for (const record of manifest.ranks) for (const tensor of record.tensors) if (!shapes.has(tensor.name)) shapes.set(tensor.name, tensor.fullShape);
  for (const [name, fullShape] of shapes) {
    try {
      planRegionReads(manifest, { name, fullShape }, dir);
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      problems.push(error.message);
    }
  }
  try {
    optimizerStepOf(manifest, join(dir, MANIFEST_FILE));
  } catch (error) {
    if (!(error instanceof CheckpointError)) throw error;
    problems.push(error.message);
  }

  const momentNames = new Set([...shapes.keys()].flatMap((name) => [firstMomentName(name), secondMomentName(name)]));
  const parameterNames = [...shapes.keys()].filter((name) => !momentNames.has(name));
  const elements = parameterNames.reduce((n, name) => n + shapes.get(name)!.reduce((a, b) => a * b, 1), 0);
  const moments = parameterNames.length > 0 && parameterNames.every((name) => shapes.has(firstMomentName(name)) && shapes.has(secondMomentName(name)));
  return { dir, manifest, parameters: { tensors: parameterNames.length, elements }, moments, files, problems };
}
