/**
 * Implements: `auto-zb`, a zero-bubble schedule placed from each stage's own op times, after the
 * automatic scheduling of Qi et al., "Zero Bubble Pipeline Parallelism" (ICLR 2024), section 4.1.
 * One chunk per stage, the backward split into B and W ([Note: split backward] in ops.ts), and zb-h1's
 * memory bound: a stage holds at most P micro-batches (forwarded, not yet through their W).
 *
 * [Note: why place W from measured times] zb-h1 runs W r steps behind its B on stage r, which is
 * right when F, B and W take the same time everywhere. They do not: the last stage carries the LM head
 * (a heavy F, a light backward), so fixed W slots leave one stage idle while the other is late. Here a
 * list scheduler plays the step forward in time with the given costs: whenever a stage is free it runs
 * a B or an F whose input has arrived (and, for F, memory allows), and only when neither can run does
 * it take a pending W, the work nothing waits for. A few choices have no best answer in general (how
 * many forwards before the first B, whether B goes before a ready F, whether a W that does not fit in
 * the gap may delay an F or B), so every combination is built, each is simulated with the costs
 * (timeline.ts), and the shortest step wins; zb-h1 itself is one candidate, so the result is never
 * slower than zb-h1 under the costs given.
 */
import { meanBubble, measureBubbles } from './measure.ts';
import { checkCount, op, ScheduleError, type OpKind, type PipelineOp, type Schedule } from './ops.ts';
import { simulateTimeline, type OpDurations } from './timeline.ts';
import { buildZeroBubbleH1 } from './zero-bubble-h1.ts';

/** One stage's op times in any unit (milliseconds when measured): F, B (input gradient), W (weight gradient). */
export interface StageCosts {
  forward: number;
  backwardInput: number;
  backwardWeight: number;
}

/** F, B and W of one unit each: the paper's setting, used where no times were measured. */
export const EQUAL_COSTS: StageCosts = { forward: 1, backwardInput: 1, backwardWeight: 1 };

/** The knobs of one candidate order. */
interface Variant {
  /** Forwards a stage runs before its first B, beyond 1F1B's P - r (capped by the memory bound). */
  extraWarmup: number;
  /** When a B and an F are both ready: the B first, or alternate with the last of the two. */
  prefer: 'backward' | 'alternate';
  /** Whether a W starts in a gap it does not fit (the F or B that arrives meanwhile waits for it). */
  fill: 'eager' | 'fit';
}

export interface AutoZeroBubblePlan {
  schedule: Schedule;
  /** The simulated step time with the given costs. */
  makespan: number;
  /** The simulated bubble: mean of the stages' idle fractions. */
  bubble: number;
  /** Which candidate won, for logs: `zb-h1` or the knobs of the list scheduler. */
  variant: string;
  /** zb-h1's simulated bubble with the same costs, to compare. */
  zeroBubbleH1Bubble: number;
}

export function durationsOfCosts(costs: StageCosts): OpDurations {
  return { forward: costs.forward, backward: costs.backwardInput + costs.backwardWeight, backwardInput: costs.backwardInput, backwardWeight: costs.backwardWeight };
}

/** The mean bubble of `schedule` simulated with each stage's costs. */
export function simulatedBubble(schedule: Schedule, costs: readonly StageCosts[]): number {
  const timeline = simulateTimeline(schedule, costs.map(durationsOfCosts));
  if (!timeline.ok) throw new ScheduleError(`the ${schedule.kind} schedule stalls`);
  return meanBubble(measureBubbles(timeline.events, schedule.stages));
}

/** The auto schedule for these costs (one set per stage; omitted: equal costs). */
export function buildAutoZeroBubble(stages: number, microBatches: number, costs?: readonly StageCosts[]): Schedule {
  return planAutoZeroBubble(stages, microBatches, costs).schedule;
}

/** Builds every candidate, simulates each with the costs, keeps the shortest (the first of equals). */
export function planAutoZeroBubble(stages: number, microBatches: number, costs: readonly StageCosts[] = Array.from({ length: stages }, () => EQUAL_COSTS)): AutoZeroBubblePlan {
  checkCount(stages, 'stages');
  checkCount(microBatches, 'microBatches');
  checkCosts(costs, stages);
  const durations = costs.map(durationsOfCosts);
  const candidates: { variant: string; ops: PipelineOp[][] }[] = [{ variant: 'zb-h1', ops: buildZeroBubbleH1(stages, microBatches).ops.map((o) => [...o]) }];
  for (let extraWarmup = 0; extraWarmup < stages; extraWarmup++) {
    for (const prefer of ['backward', 'alternate'] as const) {
      for (const fill of ['eager', 'fit'] as const) {
        const variant = { extraWarmup, prefer, fill };
        candidates.push({ variant: `warm-up +${extraWarmup}, ${prefer === 'backward' ? 'B first' : 'F and B alternate'}, W ${fill === 'eager' ? 'in any gap' : 'where it fits'}`, ops: listSchedule(stages, microBatches, costs, variant) });
      }
    }
  }
  let best: Omit<AutoZeroBubblePlan, 'zeroBubbleH1Bubble'> | undefined;
  let zeroBubbleH1Bubble = Number.NaN;
  for (const candidate of candidates) {
    const schedule: Schedule = { kind: 'auto-zb', stages, microBatches, chunks: 1, ops: candidate.ops };
    const timeline = simulateTimeline(schedule, durations);
    if (!timeline.ok) throw new ScheduleError(`auto-zb: the ${candidate.variant} order stalls; this is a bug of the list scheduler`);
    const bubble = meanBubble(measureBubbles(timeline.events, stages));
    if (candidate.variant === 'zb-h1') zeroBubbleH1Bubble = bubble;
    if (best === undefined || timeline.makespan < best.makespan) best = { schedule, makespan: timeline.makespan, bubble, variant: candidate.variant };
  }
  return { ...best!, zeroBubbleH1Bubble };
}

function checkCosts(costs: readonly StageCosts[], stages: number): void {
  if (costs.length !== stages) throw new ScheduleError(`auto-zb needs the op times of all ${stages} stages, got ${costs.length}`);
  costs.forEach((cost, stage) => {
    for (const [name, value] of Object.entries(cost)) {
      if (!Number.isFinite(value) || value <= 0) throw new ScheduleError(`auto-zb: stage ${stage}'s ${name} time must be a positive number, got ${value}`);
    }
  });
}

/**
 * One candidate: the step played forward in time. The stage that is free earliest decides next, so
 * everything that could have arrived by then has been placed; a stage whose next input is not placed
 * yet waits until another stage places something.
 */
function listSchedule(stages: number, microBatches: number, costs: readonly StageCosts[], variant: Variant): PipelineOp[][] {
  const limit = Math.min(stages, microBatches);
  const forwardEnd = Array.from({ length: stages }, () => new Array<number>(microBatches).fill(Number.NaN));
  const backwardEnd = Array.from({ length: stages }, () => new Array<number>(microBatches).fill(Number.NaN));
  const nextForward = new Array<number>(stages).fill(0);
  const nextBackward = new Array<number>(stages).fill(0);
  const nextWeight = new Array<number>(stages).fill(0);
  const free = new Array<number>(stages).fill(0);
  const lastForB = new Array<OpKind | undefined>(stages).fill(undefined);
  const waiting = new Array<boolean>(stages).fill(false);
  const arrivalOf = new Array<number>(stages).fill(Infinity);
  const ops: PipelineOp[][] = Array.from({ length: stages }, () => []);
  const warmup = Array.from({ length: stages }, (_, stage) => Math.min(limit, stages - stage + variant.extraWarmup));
  let left = 3 * microBatches * stages;

  // When the input of the stage's next F / B is there (NaN: not placed yet; Infinity: no such op now).
  const forwardReady = (stage: number): number => {
    const i = nextForward[stage]!;
    if (i >= microBatches || i - nextWeight[stage]! >= limit) return Infinity;
    return stage === 0 ? 0 : forwardEnd[stage - 1]![i]!;
  };
  const backwardReady = (stage: number): number => {
    const j = nextBackward[stage]!;
    if (j >= nextForward[stage]!) return Infinity;
    return stage === stages - 1 ? forwardEnd[stage]![j]! : backwardEnd[stage + 1]![j]!;
  };
  const place = (stage: number, kind: OpKind, start: number): void => {
    const cost = costs[stage]!;
    const end = start + (kind === 'F' ? cost.forward : kind === 'B' ? cost.backwardInput : cost.backwardWeight);
    const counter = kind === 'F' ? nextForward : kind === 'B' ? nextBackward : nextWeight;
    const microBatch = counter[stage]!++;
    if (kind === 'F') forwardEnd[stage]![microBatch] = end;
    if (kind === 'B') backwardEnd[stage]![microBatch] = end;
    if (kind !== 'W') lastForB[stage] = kind;
    ops[stage]!.push(op(kind, microBatch));
    free[stage] = end;
    waiting.fill(false);
    left--;
  };

  while (left > 0) {
    // A waiting stage comes back at its known arrival, unless another placement wakes it earlier.
    let stage = -1;
    let at = Infinity;
    for (let s = 0; s < stages; s++) {
      if (ops[s]!.length === 3 * microBatches) continue;
      const time = waiting[s] ? arrivalOf[s]! : free[s]!;
      if (time < at) [stage, at] = [s, time];
    }
    if (stage < 0) throw new ScheduleError('auto-zb: every stage waits on another; this is a bug of the list scheduler');
    if (waiting[stage]) [waiting[stage], free[stage]] = [false, Math.max(free[stage]!, at)];
    const now = free[stage]!;
    const warmingUp = nextBackward[stage] === 0;
    const forwardAllowed = !warmingUp || nextForward[stage]! < warmup[stage]!;
    const f = forwardAllowed ? forwardReady(stage) : Infinity;
    const b = backwardReady(stage);
    const canForward = f <= now;
    const canBackward = b <= now;
    if (canForward && canBackward) {
      const backwardFirst = !warmingUp && (variant.prefer === 'backward' || lastForB[stage] === 'F');
      place(stage, backwardFirst ? 'B' : 'F', now);
      continue;
    }
    if (canBackward || canForward) {
      place(stage, canBackward ? 'B' : 'F', now);
      continue;
    }
    const known = [f, b].filter((time) => !Number.isNaN(time));
    const arrival = Math.min(Infinity, ...known);
    const weightPending = nextWeight[stage]! < nextBackward[stage]!;
    if (weightPending && (variant.fill === 'eager' || arrival - now >= costs[stage]!.backwardWeight)) {
      place(stage, 'W', now);
    } else if (known.length < 2) {
      waiting[stage] = true;
      arrivalOf[stage] = arrival;
    } else if (Number.isFinite(arrival)) {
      free[stage] = arrival;
    } else {
      throw new ScheduleError(`auto-zb: stage ${stage} has ops left and none it could ever run; this is a bug of the list scheduler`);
    }
  }
  return ops;
}
