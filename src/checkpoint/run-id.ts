/**
 * Implements: the run id every checkpoint records (manifest `extra.runId`), so that a run only ever
 * rolls back to its own checkpoints: a restart looks for the newest checkpoint of its run in the run
 * folder and passes over any other (a second run started in the same folder, a copied-in checkpoint).
 * A resumed run keeps the id of the checkpoint it continues; a fresh run gets a new one.
 */
import { randomBytes } from 'node:crypto';
import { listCheckpoints, loadCheckpoint, readManifest } from './checkpoint.ts';
import type { CheckpointManifest } from './manifest.ts';

export function newRunId(): string {
  return `run-${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${randomBytes(4).toString('hex')}`;
}

/** The run a checkpoint belongs to; undefined for one written before runs had ids (or imported). */
export function runIdOf(manifest: CheckpointManifest): string | undefined {
  const id = manifest.extra.runId;
  return typeof id === 'string' ? id : undefined;
}

/**
 * The newest checkpoint of run `runId` under `root`, verified (every rank file's size and hash), with
 * the steps it holds; undefined when the run has none there yet. Others' checkpoints are reported to
 * `skipped` and left alone.
 */
export async function latestCheckpointOfRun(root: string, runId: string, skipped: (dir: string, otherRun: string) => void): Promise<{ dir: string; step: number } | undefined> {
  for (const { dir } of (await listCheckpoints(root)).reverse()) {
    const owner = runIdOf(await readManifest(dir));
    if (owner !== runId) {
      skipped(dir, owner ?? 'no run id');
      continue;
    }
    const checkpoint = await loadCheckpoint(dir, { verify: true });
    const step = checkpoint.manifest.dataLoader.nextStep;
    checkpoint.close();
    return { dir, step };
  }
  return undefined;
}
