/**
 * Implements: the timeline of a schedule under given op durations, by discrete-event simulation: every
 * stage runs its ops in order, each as soon as the stage is free and the op's input exists (the
 * dependency rule of ops.ts), with zero communication time. This is what ideal stage actors would do,
 * so it gives bubbles and in-flight counts without running any, and it finds deadlocks: when no stage
 * can start its next op, the schedule cannot complete.
 */
import { dependencyOf, formatOp, splitsBackward, type PipelineOp, type Schedule } from './ops.ts';
import { placementOf } from './placement.ts';

export interface OpDurations {
  /** Duration of one forward of one chunk; default 1. */
  forward: number;
  /** Duration of one whole backward of one chunk; default 2 (a backward computes two matmuls per forward one). */
  backward: number;
  /** Where the backward is split (B and W ops): B's part, the input gradient; default half of `backward`. */
  backwardInput?: number;
  /** W's part, the parameters' gradients; default half of `backward`. */
  backwardWeight?: number;
}

export const DEFAULT_DURATIONS: OpDurations = { forward: 1, backward: 2 };

/** How long `operation` takes in a list of ops that does (or does not) split its backwards. */
export function durationOf(operation: Pick<PipelineOp, 'kind'>, durations: OpDurations, split: boolean): number {
  switch (operation.kind) {
    case 'F':
      return durations.forward;
    case 'B':
      return split ? (durations.backwardInput ?? durations.backward / 2) : durations.backward;
    case 'W':
      return durations.backwardWeight ?? durations.backward / 2;
  }
}

/** One executed op: where, what, and when (any time unit: simulated units or milliseconds). */
export interface TimedOp {
  stage: number;
  kind: PipelineOp['kind'];
  microBatch: number;
  chunk: number;
  start: number;
  end: number;
}

/** Where a stuck schedule stopped: per stage, how many ops ran and the op it waits on (if any). */
export interface Stall {
  /** Ops each stage completed before the stall. */
  completed: number[];
  /** Per stage: its next op and what that op waits for, or null when the stage finished. */
  waiting: ({ op: PipelineOp; needs: string } | null)[];
}

export type TimelineResult = { ok: true; events: TimedOp[]; makespan: number } | { ok: false; events: TimedOp[]; stall: Stall };

const key = (stage: number, operation: PipelineOp) => `${stage}:${operation.kind}${operation.microBatch}.${operation.chunk}`;

/**
 * Runs the schedule with the given durations, one set for every stage or a set per stage (stages whose
 * layers or head differ take different times; ops whose inputs are never produced stall, they do not
 * throw). Events come out sorted by start time, then stage.
 */
export function simulateTimeline(schedule: Schedule, durations: OpDurations | readonly OpDurations[] = DEFAULT_DURATIONS): TimelineResult {
  const { stages, chunks, ops } = schedule;
  const placement = placementOf(schedule.kind);
  const split = ops.map((stageOps) => splitsBackward(stageOps));
  if (isPerStage(durations) && durations.length !== stages) throw new Error(`durations for ${durations.length} stages, but the schedule has ${stages}`);
  const durationsOf = (stage: number): OpDurations => (isPerStage(durations) ? durations[stage]! : durations);
  const finishedAt = new Map<string, number>();
  const position = new Array<number>(stages).fill(0);
  const freeAt = new Array<number>(stages).fill(0);
  const events: TimedOp[] = [];
  let remaining = ops.reduce((sum, stageOps) => sum + stageOps.length, 0);
  // Each round starts, on every stage, the next op whose input is done; op times are positive, so a
  // round that starts nothing means every stage waits on an op that will never finish.
  while (remaining > 0) {
    let progressed = false;
    for (let stage = 0; stage < stages; stage++) {
      while (position[stage]! < ops[stage]!.length) {
        const operation = ops[stage]![position[stage]!]!;
        const dependency = dependencyOf(operation, stage, stages, chunks, placement);
        const ready = dependency === null ? 0 : finishedAt.get(key(dependency.stage, dependency.op));
        if (ready === undefined) break;
        const start = Math.max(freeAt[stage]!, ready);
        const end = start + durationOf(operation, durationsOf(stage), split[stage]!);
        finishedAt.set(key(stage, operation), end);
        freeAt[stage] = end;
        events.push({ stage, kind: operation.kind, microBatch: operation.microBatch, chunk: operation.chunk, start, end });
        position[stage]!++;
        remaining--;
        progressed = true;
      }
    }
    if (!progressed) break;
  }
  events.sort((a, b) => a.start - b.start || a.stage - b.stage);
  if (remaining === 0) return { ok: true, events, makespan: Math.max(0, ...freeAt) };
  const waiting = ops.map((stageOps, stage) => {
    const next = stageOps[position[stage]!];
    if (next === undefined) return null;
    const dependency = dependencyOf(next, stage, stages, chunks, placement)!;
    return { op: next, needs: `${formatOp(dependency.op)} on stage ${dependency.stage}` };
  });
  return { ok: false, events, stall: { completed: [...position], waiting } };
}

function isPerStage(durations: OpDurations | readonly OpDurations[]): durations is readonly OpDurations[] {
  return Array.isArray(durations);
}
