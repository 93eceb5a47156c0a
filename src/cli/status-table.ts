/**
 * Implements: what `ctl RUN status` prints for people: a job line (state, step of total, loss, tokens/s,
 * ETA, restarts, last checkpoint) and a row per rank (node, pid, coordinates, state, step, step time,
 * memory, heartbeat age), and
 * for a job that has ended, how it ended. The run folder, when ctl was given one, adds what the answer
 * lacks: the layout (coordinates), the step times (ETA) and the last checkpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LATEST_FILE, RUN_CHECKPOINTS_DIR } from '../checkpoint/index.ts';
import type { JobFile } from '../launcher/job-file.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import { median } from '../scheduler/measured-costs.ts';
import type { ControlReplyMessage } from '../protocol/messages.ts';

type JobStatus = NonNullable<ControlReplyMessage['status']>;

interface MetricsLine {
  step: number;
  loss?: number;
  step_ms?: number;
}

/** The run folder's metrics.jsonl lines (unreadable lines skipped: the file may be half written). */
function metricsOf(runFolder: string | undefined): MetricsLine[] {
  if (runFolder === undefined) return [];
  const path = join(runFolder, 'metrics.jsonl');
  if (!existsSync(path)) return [];
  const lines: MetricsLine[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    try {
      const parsed = JSON.parse(line) as MetricsLine;
      if (typeof parsed.step === 'number') lines.push(parsed);
    } catch {
      // A line being written, or not one.
    }
  }
  return lines;
}

export function lastCheckpoint(runFolder: string | undefined): string | undefined {
  if (runFolder === undefined) return undefined;
  const latest = join(runFolder, RUN_CHECKPOINTS_DIR, LATEST_FILE);
  return existsSync(latest) ? readFileSync(latest, 'utf8').trim() : undefined;
}

function duration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Left-aligned columns, two spaces apart. */
function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()).join('\n');
}

export function statusTable(status: JobStatus, context: { job?: JobFile; runFolder?: string }): string {
  const metrics = metricsOf(context.runFolder);
  const stepTimes = metrics.slice(-20).flatMap((line) => (typeof line.step_ms === 'number' ? [line.step_ms] : []));
  const remaining = status.totalSteps - status.step;
  const parts = [`job ${status.jobId}`, status.state, `step ${status.step}/${status.totalSteps}`];
  if (status.lastLoss !== null) parts.push(`loss ${status.lastLoss.toFixed(4)}`);
  if (status.tokensPerS !== null) parts.push(`${Math.round(status.tokensPerS)} tokens/s`);
  if (stepTimes.length > 0 && remaining > 0 && status.state === 'running') parts.push(`ETA ${duration(remaining * median(stepTimes))}`);
  if (status.restarts !== undefined) parts.push(`${status.restarts} restart${status.restarts === 1 ? '' : 's'}`);
  const checkpoint = lastCheckpoint(context.runFolder);
  parts.push(checkpoint === undefined ? 'no checkpoint yet' : `last checkpoint ${checkpoint}`);
  const parallel = context.job?.parallel;
  const grid = parallel === undefined ? undefined : new ParallelGrid(parallel);
  const rows = [['rank', 'node', 'pid', 'dp', 'pp', 'tp', 'state', 'step', 'step ms', 'memory', 'heartbeat']];
  for (const rank of status.ranks) {
    const at = grid?.coordinates(rank.rank);
    rows.push([
      String(rank.rank),
      rank.node === undefined ? '-' : String(rank.node),
      rank.pid === undefined ? '-' : String(rank.pid),
      at === undefined ? '-' : String(at.dp),
      at === undefined ? '-' : String(at.pp),
      at === undefined ? '-' : String(at.tp),
      rank.state,
      String(rank.step),
      rank.stepMs === undefined ? '-' : String(Math.round(rank.stepMs)),
      rank.rssMb === undefined ? '-' : `${rank.rssMb} MiB`,
      rank.lastSeenMs < 0 ? 'not yet' : `${(rank.lastSeenMs / 1000).toFixed(1)} s ago`,
    ]);
  }
  return `${parts.join('  ')}\n${columns(rows)}\n`;
}

/** How a job that has ended ended, from its run folder. */
export function endedSummary(job: JobFile & { ended: NonNullable<JobFile['ended']> }, runFolder: string): string {
  const metrics = metricsOf(runFolder);
  const last = metrics.at(-1);
  const parts = [`job ${job.jobId}`, job.ended.exitCode === 0 ? 'ended' : 'failed', `exit ${job.ended.exitCode}`, `at ${job.ended.at}`, job.ended.reason];
  if (last !== undefined) parts.push(`last step ${last.step}${typeof last.loss === 'number' ? `  loss ${last.loss.toFixed(4)}` : ''}`);
  const checkpoint = lastCheckpoint(runFolder);
  parts.push(checkpoint === undefined ? 'no checkpoint' : `last checkpoint ${checkpoint}`);
  return `${parts.join('  ')}\n`;
}
