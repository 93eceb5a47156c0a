/**
 * Implements: the scheduler actor of one pipeline replica (one data-parallel rank's stages and their
 * tensor-parallel shards). It holds each stage's actions of a step, lowered once from the validated
 * schedule of the config's kind (actions.ts), and when the coordinator opens a step it sends every
 * stage actor of its replica that step's actions, one message each on `actor.stage.<rank>` (see
 * [Note: one action a message] in protocol/stage-actions.ts), all at once so no stage waits for its next one.
 * The stage actors answer `step-finished`; the scheduler reports `running` until all have, then
 * `waiting` (for the gate), or `paused` while the job is paused at that boundary, and `stopped` at the end.
 * Where the coordinator's gate asks for an evaluation, the scheduler sends every stage its forwards
 * over the validation data first (lowerEvaluationActions), marked as that pass.
 * With auto-zb the schedule changes once, at a step boundary (auto-schedule-switch.ts): the stages get
 * the new ops first (see [Note: a schedule changed at a step boundary] in protocol/stage-actions.ts).
 */
import { dispatch, spawn, stop, type ActorSystemRef, type Ref } from 'nact';
import type { Bus } from '../comm/bus.ts';
import type { JobState } from '../protocol/messages.ts';
import type { TrainConfig } from '../config/types.ts';
import type { ParallelGrid } from '../parallel/grid.ts';
import { actionToWire, lowerStageActions, tiedChunksOf, type StageAction } from '../scheduler/actions.ts';
import { placementOf } from '../scheduler/placement.ts';
import { buildSchedule } from '../scheduler/schedules.ts';
import { validateSchedule } from '../scheduler/validate.ts';
import { scheduleToJson, type Schedule, type ScheduleKind } from '../scheduler/ops.ts';
import type { StageCosts } from '../scheduler/auto-zero-bubble.ts';
import { ActorTally, type ActorStatus } from './actor-status.ts';
import { AutoScheduleSwitch } from './auto-schedule-switch.ts';
import { HandlerFailures } from './supervision.ts';
import { RemoteActors } from './remote.ts';
import { readStepFinished, type SchedulePayload, type StageActionPayload } from '../protocol/stage-actions.ts';

type SchedulerMessage =
  | { type: 'start-step'; step: number }
  | { type: 'start-evaluation'; step: number }
  | { type: 'step-finished'; rank: number; step: number; opMs?: StageCosts }
  | { type: 'paused'; paused: boolean }
  | { type: 'stop' };

/**
 * Each pipeline stage's actions of one step: the schedule's ops for every accumulation round, the tied
 * reduction after the last backward of the chunk holding the word embedding (virtual stage 0 on the first
 * stage, the last virtual stage on the stage with the loss) when they are on different stages, and the update.
 */
export function stageActionsOfStep(config: TrainConfig, pipeline: number): StageAction[][] {
  return lowerStages(config, pipeline, validateSchedule(buildSchedule(startingSchedule(config.schedule), pipeline, config.numMicroBatches, config.numChunks)));
}

/** The schedule a job's first steps run: auto-zb measures its op times under zb-h1 first. */
export function startingSchedule(kind: ScheduleKind): ScheduleKind {
  return kind === 'auto-zb' ? 'zb-h1' : kind;
}

/** Every stage's actions of one step of a validated schedule (the scheduler and each stage actor lower alike). */
export function lowerStages(config: TrainConfig, pipeline: number, schedule: Schedule): StageAction[][] {
  return Array.from({ length: pipeline }, (_, stage) => lowerStageOfSchedule(config, schedule, stage));
}

export function lowerStageOfSchedule(config: TrainConfig, schedule: Schedule, stage: number): StageAction[] {
  const tiedChunks = tiedChunksOf(stage, schedule.stages, schedule.chunks, placementOf(schedule.kind));
  return lowerStageActions(schedule, stage, { accumulation: config.gradientAccumulation, tiedChunks });
}

export interface SchedulerActorOptions {
  system: ActorSystemRef;
  remote: RemoteActors;
  grid: ParallelGrid;
  replica: number;
  /** Each stage's actions of one step (stageActionsOfStep), lowered once for every replica. */
  actions: StageAction[][];
  /** Every stage's actions of an evaluation (lowerEvaluationActions); omitted: the job evaluates nothing. */
  evaluation?: StageAction[];
  /** auto-zb: the switch every replica's scheduler asks which schedule a step runs. */
  autoSwitch?: AutoScheduleSwitch;
  log: (line: string) => void;
  /**
   * A step's (or an evaluation's) actions did not all go out: its stages would wait for them until their
   * action timeout, so the job is told at once (a restart).
   */
  onActionsLost?: (reason: string) => void;
}

export class SchedulerActor {
  private readonly actor: Ref<SchedulerMessage>;
  private readonly tally: ActorTally;
  private readonly actions: StageAction[][];
  /** The replica's ranks, with their pipeline stage. */
  private readonly ranks: { rank: number; stage: number }[];
  private readonly exposure: { unsubscribe(): void };
  private running: { step: number; waiting: Set<number> } | undefined;
  private paused = false;
  /** Messages its handler failed on: the actor goes on (supervision.ts). */
  readonly failures: HandlerFailures;

  constructor(private readonly options: SchedulerActorOptions) {
    const { grid, replica } = options;
    this.tally = new ActorTally('scheduler', replica, 'waiting');
    this.actions = options.actions;
    this.ranks = [];
    for (let pp = 0; pp < grid.pipeline; pp++) for (let tp = 0; tp < grid.tensor; tp++) this.ranks.push({ rank: grid.rankOf({ dp: replica, pp, tp }), stage: pp });
    this.failures = new HandlerFailures({ actor: `scheduler actor of replica ${replica}`, log: options.log });
    this.actor = spawn(
      options.system,
      (state: null, message: SchedulerMessage) => {
        try {
          this.handle(message);
        } catch (error) {
          this.failures.record(describeMessage(message), error);
          // Handled, if not well: it leaves the mailbox count.
          this.tally.done();
          if (message.type === 'start-step' || message.type === 'start-evaluation') {
            // The step cannot finish; the job rolls back (its status says so until then).
            this.tally.state = 'failed';
            const what = message.type === 'start-step' ? `step ${message.step + 1}` : `the evaluation after step ${message.step}`;
            options.onActionsLost?.(`the scheduler actor of replica ${replica} could not send every action of ${what}: ${error instanceof Error ? error.message : String(error)}`);
          }
        }
        return state;
      },
      `scheduler-${replica}`,
      { initialState: null },
    );
    this.exposure = options.remote.expose({ rank: replica, role: 'scheduler' }, this.actor, (payload) => {
      const finished = readStepFinished(payload, grid.world);
      this.tally.queued();
      return { type: 'step-finished' as const, rank: finished.rank, step: finished.step, opMs: finished.opMs };
    });
  }

  /** The coordinator opened `step` (0-based): send its actions. */
  startStep(step: number): void {
    this.tell({ type: 'start-step', step });
  }

  /** The coordinator asked every rank to evaluate after `step` steps: send the evaluation's forwards. */
  startEvaluation(step: number): void {
    this.tell({ type: 'start-evaluation', step });
  }

  /** The job was paused (true) or resumed (false): a step boundary reached while paused reports `paused`. */
  setPaused(paused: boolean): void {
    this.tell({ type: 'paused', paused });
  }

  /** The coordinator ended the job at a step boundary. */
  markStopped(): void {
    this.tell({ type: 'stop' });
  }

  status(): ActorStatus {
    return this.tally.status();
  }

  stop(): void {
    this.exposure.unsubscribe();
    stop(this.actor);
  }

  private tell(message: SchedulerMessage): void {
    this.tally.queued();
    dispatch(this.actor, message);
  }

  private handle(message: SchedulerMessage): void {
    switch (message.type) {
      case 'start-step':
        this.emit(message.step);
        this.tally.done(`sent step ${message.step + 1}`);
        return;
      case 'start-evaluation':
        this.emitEvaluation(message.step);
        this.tally.done(`sent the evaluation after step ${message.step}`);
        return;
      case 'step-finished': {
        this.options.autoSwitch?.record(message.rank, message.step, message.opMs);
        // A rank of another replica, or a late word about another step (a restarted job's old worker), changes nothing.
        const running = this.running;
        if (running !== undefined && running.step === message.step && running.waiting.delete(message.rank) && running.waiting.size === 0) {
          this.running = undefined;
          if (this.tally.state !== 'stopped') this.tally.state = this.paused ? 'paused' : 'waiting';
        }
        this.tally.done(`rank ${message.rank} finished step ${message.step + 1}`);
        return;
      }
      case 'paused':
        this.paused = message.paused;
        if (this.running === undefined && this.tally.state !== 'stopped') this.tally.state = message.paused ? 'paused' : 'waiting';
        this.tally.done(message.paused ? 'pause' : 'resume');
        return;
      case 'stop':
        this.tally.state = 'stopped';
        this.tally.done('stop');
        return;
    }
  }

  private emitEvaluation(step: number): void {
    const actions = this.options.evaluation;
    if (actions === undefined) throw new Error(`asked to evaluate after step ${step}, but the job has no validation data`);
    for (const { rank } of this.ranks) {
      actions.forEach((action, index) => {
        const payload: StageActionPayload = { type: 'action', pass: 'evaluation', step, index, count: actions.length, action: actionToWire(action) };
        this.options.remote.tell({ rank, role: 'stage' }, payload);
      });
    }
  }

  private emit(step: number): void {
    this.running = { step, waiting: new Set(this.ranks.map(({ rank }) => rank)) };
    this.tally.state = 'running';
    const auto = this.options.autoSwitch?.scheduleAt(step);
    if (auto?.fromStep === step) {
      const payload: SchedulePayload = { type: 'schedule', fromStep: step, schedule: scheduleToJson(auto.schedule), costs: auto.costs };
      for (const { rank } of this.ranks) this.options.remote.tell({ rank, role: 'stage' }, payload);
    }
    for (const { rank, stage } of this.ranks) {
      const actions = (auto?.actions ?? this.actions)[stage];
      actions.forEach((action, index) => {
        const payload: StageActionPayload = { type: 'action', step, index, count: actions.length, action: actionToWire(action) };
        this.options.remote.tell({ rank, role: 'stage' }, payload);
      });
    }
  }
}

function describeMessage(message: SchedulerMessage): string {
  switch (message.type) {
    case 'start-step':
      return `the start of step ${message.step + 1}`;
    case 'start-evaluation':
      return `the start of the evaluation after step ${message.step}`;
    case 'step-finished':
      return `rank ${message.rank}'s end of step ${message.step + 1}`;
    case 'paused':
      return message.paused ? 'a pause' : 'a resume';
    case 'stop':
      return 'the stop';
  }
}

/**
 * The scheduler actors of a job, one per pipeline replica, hosted beside the coordinator (node 0's
 * launcher): the coordinator tells them each step it opens and each change of the job's state.
 */
export class SchedulerActors {
  private readonly remote: RemoteActors;
  private readonly schedulers: SchedulerActor[];

  constructor(options: {
    system: ActorSystemRef;
    bus: Bus;
    config: TrainConfig;
    grid: ParallelGrid;
    evaluation?: StageAction[];
    log: (line: string) => void;
    onActionsLost?: (reason: string) => void;
  }) {
    this.remote = new RemoteActors(options.bus, options.system, { rank: 'launcher' }, options.log);
    const { config, grid } = options;
    const actions = stageActionsOfStep(config, grid.pipeline);
    const autoSwitch =
      config.schedule === 'auto-zb'
        ? new AutoScheduleSwitch({ config, pipeline: grid.pipeline, ranks: allRanks(grid), lower: (schedule) => lowerStages(config, grid.pipeline, schedule), log: options.log })
        : undefined;
    this.schedulers = Array.from({ length: grid.data }, (_, replica) => new SchedulerActor({ ...options, remote: this.remote, replica, actions, autoSwitch }));
  }

  startStep(step: number): void {
    for (const scheduler of this.schedulers) scheduler.startStep(step);
  }

  startEvaluation(step: number): void {
    for (const scheduler of this.schedulers) scheduler.startEvaluation(step);
  }

  jobStateChanged(state: JobState): void {
    for (const scheduler of this.schedulers) {
      if (state === 'paused' || state === 'running') scheduler.setPaused(state === 'paused');
      else if (state === 'stopping' || state === 'done' || state === 'failed') scheduler.markStopped();
    }
  }

  statuses(): ActorStatus[] {
    return this.schedulers.map((scheduler) => scheduler.status());
  }

  stop(): void {
    for (const scheduler of this.schedulers) scheduler.stop();
    this.remote.close();
  }
}

function allRanks(grid: ParallelGrid): { rank: number; stage: number }[] {
  const ranks: { rank: number; stage: number }[] = [];
  for (let dp = 0; dp < grid.data; dp++) for (let pp = 0; pp < grid.pipeline; pp++) for (let tp = 0; tp < grid.tensor; tp++) ranks.push({ rank: grid.rankOf({ dp, pp, tp }), stage: pp });
  return ranks;
}
