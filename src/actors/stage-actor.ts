/**
 * Implements: the stage actor of a rank: it owns the rank's pipeline stage (its chunks, their tensors
 * and optimizer state, through the step executor) and runs the actions its scheduler actor sends, one
 * message each (see [Note: one action a message] in protocol/stage-actions.ts), in order, from its mailbox.
 * The rank's driver opens each step (`runStep`) once the coordinator's gate lets it, so actions sent
 * ahead wait until then (a checkpoint being saved at the boundary reads the weights undisturbed); the
 * step's last action, OPTIMIZER_STEP, settles it, and the actor tells its scheduler the step is done.
 */
import { dispatch, spawn, stop, type ActorSystemRef, type Ref } from 'nact';
import { formatAction, sameAction, type StageAction } from '../scheduler/actions.ts';
import type { PipelineStepResult } from '../stages/pipeline-step.ts';
import { ActorTally, type ActorStatus } from './actor-status.ts';
import type { RemoteActors } from './remote.ts';
import { readStageAction, type ReceivedAction, type StepFinishedPayload } from '../protocol/stage-actions.ts';

/** How long a stage waits for the next action of an open step before it says the message was lost. */
export const DEFAULT_ACTION_TIMEOUT_MS = 120_000;

/** What the stage actor drives: the rank's PipelineStepExecutor (stages/pipeline-step.ts). */
export interface StepExecutor {
  begin(step: number): void;
  execute(action: StageAction): Promise<PipelineStepResult | undefined>;
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
  /** The first step this actor will run (0, or a resumed checkpoint's): actions of earlier ones are stale. */
  firstStep: number;
  actionTimeoutMs?: number;
  log: (line: string) => void;
}

type StageMessage =
  | ({ type: 'action' } & ReceivedAction)
  | { type: 'run-step' }
  | { type: 'timeout'; step: number; index: number }
  | { type: 'task'; label: string; run: () => Promise<unknown>; settle: (error: unknown, value?: unknown) => void };

interface OpenStep {
  step: number;
  next: number;
  resolve: (result: PipelineStepResult) => void;
  reject: (error: Error) => void;
}

export class StageActor {
  private readonly actor: Ref<StageMessage>;
  private readonly tally: ActorTally;
  private readonly pending = new Map<string, ReceivedAction>();
  /** Steps below this one are over: their actions are stale repeats. */
  private firstOpenStep: number;
  private open: OpenStep | undefined;
  /** A step asked for whose 'run-step' message is still in the mailbox. */
  private requested: Omit<OpenStep, 'next'> | undefined;
  /** Set by a failure or stop: the actor takes no more work. */
  private ended: Error | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly exposure: { unsubscribe(): void };
  /** Actions received twice (or after their step) and ignored. */
  duplicates = 0;

  constructor(private readonly options: StageActorOptions) {
    this.tally = new ActorTally('stage', options.rank, 'idle');
    this.firstOpenStep = options.firstStep;
    const limits = {
      microBatches: Math.max(1, ...options.expected.map((a) => (a.kind === 'F' || a.kind === 'B' ? a.microBatch + 1 : 0))),
      chunks: Math.max(1, ...options.expected.map((a) => (a.kind === 'F' || a.kind === 'B' ? a.chunk + 1 : 0))),
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
    this.exposure = options.remote.expose({ rank: options.rank, role: 'stage' }, this.actor, (payload) => {
      const action = readStageAction(payload, limits);
      this.checkExpected(action);
      this.tally.queued();
      return { type: 'action' as const, ...action };
    });
  }

  /** Opens `step` (0-based) and resolves with its result when its OPTIMIZER_STEP has run. */
  runStep(step: number): Promise<PipelineStepResult> {
    return new Promise((resolve, reject) => {
      if (this.ended !== undefined) return reject(this.ended);
      if (this.open !== undefined || this.requested !== undefined) return reject(new Error(`stage ${this.options.rank}: step ${step + 1} opened while another step runs`));
      this.requested = { step, resolve, reject };
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
    const expected = this.options.expected;
    if (received.count !== expected.length) throw new Error(`a step of stage actor ${this.options.rank} has ${expected.length} actions, not ${received.count}`);
    if (!sameAction(received.action, expected[received.index])) {
      throw new Error(`action ${received.index} of a step of stage actor ${this.options.rank} is ${formatAction(expected[received.index])}, not ${formatAction(received.action)}`);
    }
    if (received.step > this.firstOpenStep + 1) throw new Error(`step ${received.step + 1} is not the running or the next step of stage actor ${this.options.rank}`);
  }

  private async handle(message: StageMessage): Promise<void> {
    if (this.ended !== undefined) {
      if (message.type === 'task') message.settle(this.ended);
      this.tally.done();
      return;
    }
    switch (message.type) {
      case 'action': {
        const key = `${message.step}.${message.index}`;
        const past = message.step < this.firstOpenStep || (this.open?.step === message.step && message.index < this.open.next);
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
        this.options.executor.begin(requested.step);
        this.tally.state = 'running';
        this.tally.done(`open step ${requested.step + 1}`);
        break;
      }
      case 'task': {
        if (this.open !== undefined) {
          message.settle(new Error(`stage actor of rank ${this.options.rank}: cannot ${message.label} while step ${this.open.step + 1} runs`));
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
        if (open === undefined || open.step !== message.step || open.next !== message.index) return;
        throw new Error(
          `stage actor of rank ${this.options.rank} got no action ${message.index} of step ${message.step + 1} from its scheduler within ` +
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
      const key = `${open.step}.${open.next}`;
      const received = this.pending.get(key);
      if (received === undefined) {
        this.timer = setTimeout(() => dispatch(this.actor, { type: 'timeout', step: open.step, index: open.next }), this.timeoutMs);
        return;
      }
      this.pending.delete(key);
      const what = formatAction(received.action);
      const last = open.next + 1 === received.count;
      // Checked before it runs: an update must never run in the middle of a step.
      if (last !== (received.action.kind === 'OPTIMIZER_STEP')) {
        throw new Error(`stage actor of rank ${this.options.rank}: action ${received.index} of ${received.count} of step ${open.step + 1} is ${what}; a step ends with OPTIMIZER_STEP, and only there`);
      }
      this.tally.lastAction = `${what} (step ${open.step + 1})`;
      const result = await this.options.executor.execute(received.action);
      if (this.open !== open) return;
      open.next++;
      if (!last) continue;
      this.open = undefined;
      this.firstOpenStep = open.step + 1;
      for (const stale of [...this.pending.keys()]) if (Number(stale.split('.')[0]) <= open.step) this.pending.delete(stale);
      this.tally.state = 'idle';
      open.resolve(result!);
      try {
        const finished: StepFinishedPayload = { type: 'step-finished', rank: this.options.rank, step: open.step };
        this.options.remote.tell({ rank: this.options.replica, role: 'scheduler' }, finished);
      } catch (error) {
        // The scheduler's view is all that is lost (the bus closes as the rank ends); the step did finish.
        this.options.log(`stage actor: could not tell the scheduler step ${open.step + 1} finished: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
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
