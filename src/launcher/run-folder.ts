/**
 * Implements: one run, one folder. A run folder that already holds a run (steps in metrics.jsonl, a
 * checkpoint, a job's job.json) is not silently trained into by a new run: its metrics and checkpoints
 * would mix with the new run's, and a restart could roll the new run back to the old run's checkpoint.
 * `--resume` continues it; `--overwrite` removes the earlier run's files first (only those a run
 * writes: anything else a person keeps there stays).
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { RUN_CHECKPOINTS_DIR, STEP_DIR_PATTERN } from '../checkpoint/index.ts';
import { JOB_KEY_FILE } from '../comm/job-key.ts';
import { JOB_FILE } from './job-file.ts';
import { PRIVATE_SERVER_TOKEN_FILE } from './nats-url.ts';
import { LOGS_DIR } from './rank-log.ts';

/** What a run leaves in its folder (trace parts and per-node configs matched by pattern). */
const RUN_FILES = ['metrics.jsonl', 'config.json', 'trace.json', JOB_FILE, JOB_KEY_FILE, PRIVATE_SERVER_TOKEN_FILE, 'tb', LOGS_DIR, RUN_CHECKPOINTS_DIR];
const RUN_FILE_PATTERNS = [/^trace\.rank\d+\.jsonl$/, /^trace\.json\.tmp$/, /^config\.node\d+\.json$/, /^job\.json\.tmp$/, /^run\.lock\.\d+$/];

/**
 * What of an earlier run `folder` holds, for a message ("12 lines in metrics.jsonl, 2 checkpoints"),
 * and whether it can be resumed (it has a checkpoint); undefined: no run.
 */
export function earlierRunIn(folder: string): { holds: string; resumable: boolean } | undefined {
  if (!existsSync(folder)) return undefined;
  const found: string[] = [];
  const metrics = join(folder, 'metrics.jsonl');
  if (existsSync(metrics)) {
    const lines = readFileSync(metrics, 'utf8').split('\n').filter((line) => line.trim() !== '').length;
    if (lines > 0) found.push(`${lines} line${lines === 1 ? '' : 's'} in metrics.jsonl`);
  }
  const checkpoints = join(folder, RUN_CHECKPOINTS_DIR);
  const steps = existsSync(checkpoints) ? readdirSync(checkpoints).filter((name) => STEP_DIR_PATTERN.test(name)).length : 0;
  if (steps > 0) found.push(`${steps} checkpoint${steps === 1 ? '' : 's'}`);
  if (existsSync(join(folder, JOB_FILE))) found.push(JOB_FILE);
  return found.length === 0 ? undefined : { holds: found.join(', '), resumable: steps > 0 };
}

/** Removes what an earlier run wrote into `folder`. */
export function removeEarlierRun(folder: string): void {
  for (const name of readdirSync(folder)) {
    if (RUN_FILES.includes(name) || RUN_FILE_PATTERNS.some((pattern) => pattern.test(name))) rmSync(join(folder, name), { recursive: true, force: true });
  }
}
