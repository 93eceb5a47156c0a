/**
 * Implements: when and to what auto-zb's scheduler actors switch. A job with `schedule: auto-zb` starts
 * with zb-h1 while every stage actor reports its op times with each finished step (step-finished's
 * `opMs`). The first step this attempt runs pays one-time costs (kernel warm-up, heap growth, packed
 * weights) and is not used. At the first step boundary from MEASURED_STEPS on where every rank of the
 * job has reported a later step, the costs of each stage (medians, measured-costs.ts) place the auto
 * schedule (auto-zero-bubble.ts), and every step from there on runs it.
 *
 * One switch serves every data-parallel replica's scheduler, so all replicas run the same schedule
 * from the same step: the decision for a step is taken by the first scheduler that asks and kept.
 *
 * A restarted attempt (a rolled-back job) builds a new switch: it runs zb-h1 again from its first
 * step and measures again, so the times always come from the machine as it is now.
 */
import type { TrainConfig } from '../config/types.ts';
import { planAutoZeroBubble, type StageCosts } from '../scheduler/auto-zero-bubble.ts';
import { combineCosts } from '../scheduler/measured-costs.ts';
import type { Schedule } from '../scheduler/ops.ts';
import { validateSchedule } from '../scheduler/validate.ts';
import type { StageAction } from '../scheduler/actions.ts';

/** Steps run with zb-h1 before the switch: the first pays one-time costs, the second is measured. */
export const MEASURED_STEPS = 2;

export interface AutoSchedule {
  /** The first step (0-based) that runs it. */
  fromStep: number;
  schedule: Schedule;
  costs: StageCosts[];
  /** Each stage's actions of one step, lowered like the starting schedule's. */
  actions: StageAction[][];
  /** The simulated bubble with the costs. */
  bubble: number;
  variant: string;
}

export class AutoScheduleSwitch {
  /** Measured costs by rank, one entry per measured step. */
  private readonly measured = new Map<number, StageCosts[]>();
  private firstStep: number | undefined;
  private adopted: AutoSchedule | undefined;
  /** The latest step already answered: its answer stands, whatever arrives after (every replica runs it alike). */
  private answeredThrough = -1;

  constructor(
    private readonly options: {
      config: TrainConfig;
      pipeline: number;
      /** Every rank of the job with its pipeline stage. */
      ranks: readonly { rank: number; stage: number }[];
      lower: (schedule: Schedule) => StageAction[][];
      log: (line: string) => void;
    },
  ) {}

  /** A rank finished `step`, which took these op times on it. */
  record(rank: number, step: number, opMs: StageCosts | undefined): void {
    if (opMs === undefined || this.adopted !== undefined || this.firstStep === undefined || step <= this.firstStep) return;
    const samples = this.measured.get(rank) ?? [];
    samples.push(opMs);
    this.measured.set(rank, samples);
  }

  /** The auto schedule to run at `step`, or undefined while the starting schedule runs. */
  scheduleAt(step: number): AutoSchedule | undefined {
    this.firstStep ??= step;
    if (this.adopted !== undefined) return step >= this.adopted.fromStep ? this.adopted : undefined;
    if (step <= this.answeredThrough) return undefined;
    this.answeredThrough = step;
    if (step < this.firstStep + MEASURED_STEPS || !this.options.ranks.every(({ rank }) => this.measured.has(rank))) return undefined;
    const { config, pipeline, ranks } = this.options;
    const costs = Array.from({ length: pipeline }, (_, stage) => combineCosts(ranks.filter((r) => r.stage === stage).flatMap(({ rank }) => this.measured.get(rank)!)));
    const plan = planAutoZeroBubble(pipeline, config.numMicroBatches, costs);
    const schedule = validateSchedule(plan.schedule);
    this.adopted = { fromStep: step, schedule, costs, actions: this.options.lower(schedule), bubble: plan.bubble, variant: plan.variant };
    this.options.log(
      `auto-zb: from step ${step + 1} on, the order placed from the measured op times (${describeCosts(costs)}): ` +
        `${plan.variant}, simulated bubble ${plan.bubble.toFixed(3)} (zb-h1's ${plan.zeroBubbleH1Bubble.toFixed(3)})`,
    );
    return this.adopted;
  }
}

/** `F 185/405 I 212/82 W 212/82 ms`: each kind's time on stage 0, 1, ... */
export function describeCosts(costs: readonly StageCosts[]): string {
  const list = (pick: (c: StageCosts) => number) => costs.map((c) => Number(pick(c).toPrecision(3))).join('/');
  return `F ${list((c) => c.forward)} I ${list((c) => c.backwardInput)} W ${list((c) => c.backwardWeight)} ms`;
}
