/**
 * Implements: the stage actor of a rank: it owns the rank's pipeline stage (its chunks, their tensors
 * and optimizer state, through the step executor) and runs the actions its scheduler actor sends, one
 * message each (see [Note: one action a message] in protocol/stage-actions.ts), in order, from its mailbox.
 * The rank's driver opens each step (`runStep`) once the coordinator's gate lets it, so actions sent
 * ahead wait until then (a checkpoint being saved at the boundary reads the weights undisturbed); the
 * step's last action, OPTIMIZER_STEP, settles it, and the actor tells its scheduler the step is done.
 * Between two steps the driver may open an evaluation (`runEvaluation`): its forward actions come from
 * the scheduler marked as that pass, are checked against the evaluation's own list, and when the last
 * has run the executor reports the validation loss.
 * An auto-zb job's scheduler may send a new schedule for the steps from a boundary on ([Note: a
 * schedule changed at a step boundary] in protocol/stage-actions.ts): from that step the actor checks
 * the actions against its own lowering of it.
 */
import { dispatch, spawn, stop, type ActorSystemRef, type Ref } from 'nact';
import { formatAction, sameAction, type StageAction } from '../scheduler/actions.ts';
import type { StageCosts } from '../scheduler/auto-zero-bubble.ts';
import { scheduleFromJson, type Schedule, type ScheduleKind } from '../scheduler/ops.ts';
import { validateSchedule } from '../scheduler/validate.ts';
import type { PipelineStepResult } from '../stages/pipeline-step.ts';
import { ActorTally, type ActorStatus } from './actor-status.ts';
import type { RemoteActors } from './remote.ts';
import { isSchedulePayload, readSchedule, readStageAction, type ReceivedAction, type StagePass, type StepFinishedPayload } from '../protocol/stage-actions.ts';
import type { StageEvaluation } from '../stages/pipeline-step.ts';

/** How long a stage waits for the next action of an open step before it says the message was lost. */
export const DEFAULT_ACTION_TIMEOUT_MS = 120_000;

/** What the stage actor drives: the rank's PipelineStepExecutor (stages/pipeline-step.ts). */
export interface StepExecutor {
  begin(step: number): void;
  execute(action: StageAction): Promise<PipelineStepResult | undefined>;
  /** Opens the evaluation after `step` steps: the forwards `execute` runs next are of the validation data. */
  beginEvaluation(step: number): void;
  /** After the evaluation's last forward: its loss (on the stage that computes it), summed over the replicas. */
  finishEvaluation(): Promise<StageEvaluation>;
}

export interface StageActorOptions {
  system: ActorSystemRef;
  remote: RemoteActors;
  rank: number;
  /** The data-parallel replica: its scheduler actor hears of every finished step. */
  replica: number;
  executor: StepExecutor;
  /**
   * This stage's actions of one step, lowered from the config's schedule as the scheduler lowers them:
   * an action message that is not the one expected at its index (or counts another number) is dropped.
   */
  expected: readonly StageAction[];
  /** This stage's actions of an evaluation (lowerEvaluationActions); omitted: evaluation messages are refused. */
  expectedEvaluation?: readonly StageAction[];
  /** The first step this actor will run (0, or a resumed checkpoint's): actions of earlier ones are stale. */
  firstStep: number;
  /**
   * Where the job's schedule may change at a step boundary (auto-zb): the kind and shape a new one must
   * have, and this stage's lowering of it. Omitted: a schedule message is refused.
   */
  adopt?: { kind: ScheduleKind; stages: number; microBatches: number; chunks: number; lower: (schedule: Schedule) => StageAction[] };
  actionTimeoutMs?: number;
  log: (line: string) => void;
}

/** A schedule this stage took from its scheduler, and from which step on it runs. */
export interface AdoptedSchedule {
  fromStep: number;
  schedule: Schedule;
  /** Each stage's op times (milliseconds) it was placed for. */
  costs: StageCosts[];
}

type StageMessage =
  | ({ type: 'action' } & ReceivedAction)
  | { type: 'schedule'; fromStep: number }
  | { type: 'run-step' }
  | { type: 'timeout'; pass: StagePass; step: number; index: number }
  | { type: 'task'; label: string; run: () => Promise<unknown>; settle: (error: unknown, value?: unknown) => void };

interface OpenStep {
  pass: StagePass;
  step: number;
  next: number;
  resolve: (result: PipelineStepResult | StageEvaluation) => void;
  reject: (error: Error) => void;
}

export class StageActor {
  private readonly actor: Ref<StageMessage>;
  private readonly tally: ActorTally;
  private readonly pending = new Map<string, ReceivedAction>();
  /** Steps below this one are over: their actions are stale repeats. */
  private firstOpenStep: number;
  /** Evaluations after fewer steps than this are over (an evaluation after s steps comes before step s + 1). */
  private firstOpenEvaluation: number;
  private open: OpenStep | undefined;
  /** A step asked for whose 'run-step' message is still in the mailbox. */
  private requested: Omit<OpenStep, 'next'> | undefined;
  /** Set by a failure or stop: the actor takes no more work. */
  private ended: Error | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly exposure: { unsubscribe(): void };
  /** Actions received twice (or after their step) and ignored. */
  duplicates = 0;
  /** The expected actions of a step: those of the last entry whose `fromStep` is not after it. */
  private readonly eras: { fromStep: number; actions: readonly StageAction[] }[];
  /** The latest step of an action accepted so far: a schedule can only change after it. */
  private latestActionStep = -1;
  private adoptedSchedule: AdoptedSchedule | undefined;

  constructor(private readonly options: StageActorOptions) {
    this.tally = new ActorTally('stage', options.rank, 'idle');
    this.firstOpenStep = options.firstStep;
    this.firstOpenEvaluation = options.firstStep;
    this.eras = [{ fromStep: 0, actions: options.expected }];
    const known = [...options.expected, ...(options.expectedEvaluation ?? [])];
    const limits = {
      microBatches: Math.max(1, ...known.map((a) => (a.kind === 'F' || a.kind === 'B' ? a.microBatch + 1 : 0))),
      chunks: Math.max(1, ...known.map((a) => (a.kind === 'F' || a.kind === 'B' ? a.chunk + 1 : 0))),
    };
    this.actor = spawn(
      options.system,
      async (state: null, message: StageMessage) => {
        try {
          await this.handle(message);
        } catch (error) {
          this.fail(error instanceof Error ? error : new Error(String(error)));
        }
        return state;
      },
      `stage-${options.rank}`,
      { initialState: null },
    );
    this.exposure = options.remote.expose({ rank: options.rank, role: 'stage' }, this.actor, (payload): StageMessage => {
      // Taken here, as it arrives, so the actions after it on the bus are checked against it.
      if (isSchedulePayload(payload)) {
        const fromStep = this.adopt(payload);
        this.tally.queued();
        return { type: 'schedule', fromStep };
      }
      const action = readStageAction(payload, limits);
      this.checkExpected(action);
      this.tally.queued();
      return { type: 'action' as const, ...action };
    });
  }

  /** Opens `step` (0-based) and resolves with its result when its OPTIMIZER_STEP has run. */
  runStep(step: number): Promise<PipelineStepResult> {
    return this.request('step', step) as Promise<PipelineStepResult>;
  }

  /** Opens the evaluation after `step` steps and resolves with its result when its last forward has run. */
  runEvaluation(step: number): Promise<StageEvaluation> {
    return this.request('evaluation', step) as Promise<StageEvaluation>;
  }

  private request(pass: StagePass, step: number): Promise<PipelineStepResult | StageEvaluation> {
    return new Promise((resolve, reject) => {
      if (this.ended !== undefined) return reject(this.ended);
      const what = pass === 'step' ? `step ${step + 1}` : `the evaluation after step ${step}`;
      if (this.open !== undefined || this.requested !== undefined) return reject(new Error(`stage ${this.options.rank}: ${what} opened while another step runs`));
      this.requested = { pass, step, resolve, reject };
      this.tally.queued();
      dispatch(this.actor, { type: 'run-step' });
    });
  }

  /**
   * Runs `run` in the actor's mailbox order, between steps (a checkpoint shard is written this way, so
   * nothing the actor runs can touch the weights while they are read); `label` names it in the status.
   */
  between<T>(label: string, run: () => Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.ended !== undefined) return reject(this.ended);
      this.tally.queued();
      dispatch(this.actor, { type: 'task', label, run, settle: (error, value) => (error === undefined ? resolve(value as T) : reject(error)) });
    });
  }

  /** The schedule taken from the scheduler at a step boundary, if any (auto-zb). */
  get adopted(): AdoptedSchedule | undefined {
    return this.adoptedSchedule;
  }

  /** Its mailbox counts the actions that arrived and wait for their turn too. */
  status(): ActorStatus {
    const status = this.tally.status();
    return { ...status, mailbox: status.mailbox + this.pending.size };
  }

  /** Stops the actor; a step asked for or running is rejected (the rank is ending). */
  stop(): void {
    if (this.ended === undefined) this.end(new Error(`stage actor of rank ${this.options.rank} stopped`));
    this.exposure.unsubscribe();
    stop(this.actor);
  }

  /**
   * Throws (the message is dropped and counted as malformed) unless `received` is this stage's action
   * at its index, of a step that is running or next: nothing else could come from its scheduler.
   */
  private checkExpected(received: ReceivedAction): void {
    const expected = received.pass === 'step' ? this.eras.findLast((era) => era.fromStep <= received.step)!.actions : this.options.expectedEvaluation;
    if (expected === undefined) throw new Error(`stage actor ${this.options.rank} has no validation data: it runs no evaluation`);
    if (received.count !== expected.length) throw new Error(`a step of stage actor ${this.options.rank} has ${expected.length} actions, not ${received.count}`);
    if (!sameAction(received.action, expected[received.index])) {
      throw new Error(`action ${received.index} of a step of stage actor ${this.options.rank} is ${formatAction(expected[received.index])}, not ${formatAction(received.action)}`);
    }
    if (received.step > this.firstOpenStep + 1) throw new Error(`step ${received.step + 1} is not the running or the next step of stage actor ${this.options.rank}`);
    if (received.pass === 'step') this.latestActionStep = Math.max(this.latestActionStep, received.step);
  }

  /**
   * Checks a schedule message (throws, and it is dropped, unless it fits this job and changes steps no
   * action has arrived for) and lowers this stage's part; returns the step it starts at.
   */
  private adopt(payload: unknown): number {
    const adopt = this.options.adopt;
    if (adopt === undefined) throw new Error(`stage actor ${this.options.rank} runs one schedule; it takes no schedule message`);
    const received = readSchedule(payload, adopt);
    if (received.schedule.kind !== adopt.kind) throw new Error(`the job runs ${adopt.kind}, not ${received.schedule.kind}`);
    const last = this.eras.at(-1)!.fromStep;
    if (received.fromStep < this.firstOpenStep || received.fromStep <= this.latestActionStep || received.fromStep <= last) {
      throw new Error(`a schedule from step ${received.fromStep + 1} comes too late for stage actor ${this.options.rank}: its actions of step ${Math.max(this.latestActionStep, this.firstOpenStep, last) + 1} are already in`);
    }
    const schedule = validateSchedule(scheduleFromJson(received.schedule));
    this.eras.push({ fromStep: received.fromStep, actions: adopt.lower(schedule) });
    this.adoptedSchedule = { fromStep: received.fromStep, schedule, costs: received.costs };
    return received.fromStep;
  }

  private async handle(message: StageMessage): Promise<void> {
    if (this.ended !== undefined) {
      if (message.type === 'task') message.settle(this.ended);
      this.tally.done();
      return;
    }
    switch (message.type) {
      case 'schedule':
        this.tally.done(`schedule from step ${message.fromStep + 1}`);
        return;
      case 'action': {
        const key = pendingKey(message.pass, message.step, message.index);
        const firstOpen = message.pass === 'step' ? this.firstOpenStep : this.firstOpenEvaluation;
        const open = this.open;
        const past = message.step < firstOpen || (open?.pass === message.pass && open.step === message.step && message.index < open.next);
        if (past || this.pending.has(key)) {
          this.duplicates++;
          this.tally.done();
          return;
        }
        this.pending.set(key, message);
        this.tally.done();
        break;
      }
      case 'run-step': {
        const requested = this.requested;
        this.requested = undefined;
        if (requested === undefined) return;
        // Opened here, in mailbox order, so no action runs before the executor knows its step.
        this.open = { ...requested, next: 0 };
        if (requested.pass === 'step') {
          this.options.executor.begin(requested.step);
          this.tally.state = 'running';
          this.tally.done(`open step ${requested.step + 1}`);
        } else {
          this.options.executor.beginEvaluation(requested.step);
          this.tally.state = 'evaluating';
          this.tally.done(`open the evaluation after step ${requested.step}`);
        }
        break;
      }
      case 'task': {
        if (this.open !== undefined) {
          message.settle(new Error(`stage actor of rank ${this.options.rank}: cannot ${message.label} while ${describeOpen(this.open)} runs`));
          this.tally.done();
          return;
        }
        try {
          message.settle(undefined, await message.run());
        } catch (error) {
          message.settle(error);
        }
        this.tally.done(message.label);
        return;
      }
      case 'timeout': {
        const open = this.open;
        if (open === undefined || open.pass !== message.pass || open.step !== message.step || open.next !== message.index) return;
        throw new Error(
          `stage actor of rank ${this.options.rank} got no action ${message.index} of ${describeOpen(open)} from its scheduler within ` +
            `${Number((this.timeoutMs / 1000).toFixed(3))} s: the message was lost (the job rolls back to its last checkpoint)`,
        );
      }
    }
    await this.drain();
  }

  private get timeoutMs(): number {
    return this.options.actionTimeoutMs ?? DEFAULT_ACTION_TIMEOUT_MS;
  }

  /** Runs the open step's actions that have arrived, in index order; arms the lost-message timer when one is missing. */
  private async drain(): Promise<void> {
    clearTimeout(this.timer);
    for (;;) {
      const open = this.open;
      if (open === undefined) return;
      const key = pendingKey(open.pass, open.step, open.next);
      const received = this.pending.get(key);
      if (received === undefined) {
        this.timer = setTimeout(() => dispatch(this.actor, { type: 'timeout', pass: open.pass, step: open.step, index: open.next }), this.timeoutMs);
        return;
      }
      this.pending.delete(key);
      const what = formatAction(received.action);
      const last = open.next + 1 === received.count;
      // Checked before it runs: an update must never run in the middle of a step, nor in an evaluation.
      if (open.pass === 'step' ? last !== (received.action.kind === 'OPTIMIZER_STEP') : received.action.kind !== 'F') {
        const rule = open.pass === 'step' ? 'a step ends with OPTIMIZER_STEP, and only there' : 'an evaluation runs forwards only';
        throw new Error(`stage actor of rank ${this.options.rank}: action ${received.index} of ${received.count} of ${describeOpen(open)} is ${what}; ${rule}`);
      }
      this.tally.lastAction = `${what} (${describeOpen(open)})`;
      const result = await this.options.executor.execute(received.action);
      if (this.open !== open) return;
      open.next++;
      if (!last) continue;
      if (open.pass === 'evaluation') {
        const evaluation = await this.options.executor.finishEvaluation();
        if (this.open !== open) return;
        this.open = undefined;
        this.firstOpenEvaluation = open.step + 1;
        this.dropPendingThrough('evaluation', open.step);
        this.tally.state = 'idle';
        open.resolve(evaluation);
        continue;
      }
      this.open = undefined;
      this.firstOpenStep = open.step + 1;
      // The evaluation after s steps comes before step s + 1: once that step ran, it is over too.
      this.firstOpenEvaluation = Math.max(this.firstOpenEvaluation, open.step + 1);
      this.dropPendingThrough('step', open.step);
      this.dropPendingThrough('evaluation', open.step);
      this.tally.state = 'idle';
      open.resolve(result!);
      try {
        const finished: StepFinishedPayload = { type: 'step-finished', rank: this.options.rank, step: open.step, ...(result!.opMs === undefined ? {} : { opMs: result!.opMs }) };
        this.options.remote.tell({ rank: this.options.replica, role: 'scheduler' }, finished);
      } catch (error) {
        // The scheduler's view is all that is lost (the bus closes as the rank ends); the step did finish.
        this.options.log(`stage actor: could not tell the scheduler step ${open.step + 1} finished: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }

  private dropPendingThrough(pass: StagePass, step: number): void {
    for (const [key, action] of this.pending) if (action.pass === pass && action.step <= step) this.pending.delete(key);
  }

  private fail(error: Error): void {
    if (this.ended === undefined) this.options.log(`stage actor: ${error.message}`);
    this.end(error);
    this.tally.state = 'failed';
  }

  /** A failed or stopped actor takes no more work: what waits on it is rejected, what arrived is dropped. */
  private end(error: Error): void {
    this.ended ??= error;
    clearTimeout(this.timer);
    this.pending.clear();
    for (const waiting of [this.open, this.requested]) waiting?.reject(error);
    this.open = undefined;
    this.requested = undefined;
  }
}

function pendingKey(pass: StagePass, step: number, index: number): string {
  return `${pass}.${step}.${index}`;
}

function describeOpen(open: Pick<OpenStep, 'pass' | 'step'>): string {
  return open.pass === 'step' ? `step ${open.step + 1}` : `the evaluation after step ${open.step}`;
}
