/**
 * Implements: a run folder's job.json: what node 0's launcher records of a multi-process job when it
 * starts (its id, NATS server, layout) and, once it ended, how (`ctl status` reads it then). Written
 * whole to a temporary name and renamed, so a reader never sees half of it.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const JOB_FILE = 'job.json';

export interface JobFile {
  jobId: string;
  /** The run its checkpoints record (checkpoint/run-id.ts); older files lack it. */
  runId?: string;
  /** The server URL(s), without any login. */
  nats: string;
  world: number;
  nnodes: number;
  /** grid.describe(), e.g. "data 1 x pipeline 2 x tensor 1 (order tp-dp-pp)". */
  layout: string;
  /** The grid's sizes and order (older files lack them). */
  parallel?: { data: number; pipeline: number; tensor: number; order: string };
  launcherPid: number;
  startedAt: string;
  /** Set when the job ended: when, its exit code, and why. */
  ended?: { at: string; exitCode: number; reason: string };
}

export function writeJobFile(runFolder: string, job: JobFile): void {
  const path = join(runFolder, JOB_FILE);
  writeFileSync(`${path}.tmp`, JSON.stringify(job, null, 2) + '\n');
  renameSync(`${path}.tmp`, path);
}

/** Adds how the job ended to the folder's job.json (for `ctl status` after it); nothing when there is none. */
export function recordJobEnd(runFolder: string, ended: NonNullable<JobFile['ended']>): void {
  const started = readJobFile(runFolder);
  if (started !== undefined) writeJobFile(runFolder, { ...started, ended });
}

/** The folder's job.json; undefined when there is none; an error naming the file when it is not one. */
export function readJobFile(runFolder: string): JobFile | undefined {
  const path = join(runFolder, JOB_FILE);
  if (!existsSync(path)) return undefined;
  let job: Partial<JobFile>;
  try {
    job = JSON.parse(readFileSync(path, 'utf8')) as Partial<JobFile>;
  } catch (error) {
    throw new Error(`${path} is not JSON (${error instanceof Error ? error.message : String(error)}): give the job id instead`);
  }
  if (typeof job.jobId !== 'string' || typeof job.nats !== 'string') throw new Error(`${path} names no job id or NATS server: give the job id instead`);
  return job as JobFile;
}
