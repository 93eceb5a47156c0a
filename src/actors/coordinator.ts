/**
 * Implements: the job coordinator actor (node 0's launcher hosts it): bus subscriptions become events
 * for CoordinatorLogic, delivered one at a time through a nact actor's mailbox, and the logic's effects
 * are carried out here (answers, shutdown broadcast, logs, step reports).
 */
import type { StopSignal } from '../protocol/stop-signals.ts';
import { dispatch, spawn, stop, type Ref } from 'nact';
import type { Bus, ReplyContext } from '../comm/bus.ts';
import type { ActorStatus, EvaluationDoneMessage, JobState, StepDoneMessage } from '../protocol/messages.ts';
import { CoordinatorLogic, type CoordinatorEffect, type CoordinatorEvent, type CoordinatorSettings } from './coordinator-logic.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import { HandlerFailures } from './supervision.ts';

export interface CoordinatorCallbacks {
  log(line: string): void;
  onStep(report: StepDoneMessage): void;
  onEvaluation(report: EvaluationDoneMessage): void;
  /** Everything is over (success, stop or failure): the launcher cleans up and exits with this code. */
  /** `signal`: the job stopped cleanly because a launcher got it (its exit code is the signal's). */
  onFinished(exitCode: number, reason: string, restartable: boolean, signal?: StopSignal): void;
  /** The job must end: the launcher stops its own workers after a grace period (`unresponsiveRank`, if its own, at once). */
  onShutdown(reason: string, exitCode: number, unresponsiveRank?: number): void;
  /** Every rank saved its shard of the checkpoint of `step` into `folder`. */
  onCommitCheckpoint(step: number, folder: string, records: { [key: string]: unknown }[]): void;
  /** The job-level actors (the scheduler actors), told of every step the gate opens and of the job's state. */
  schedulers?: JobActors;
}

/** What the coordinator tells the job-level actors hosted beside it. */
export interface JobActors {
  startStep(step: number): void;
  /** Every rank evaluates after `step` steps (before running the next). */
  startEvaluation(step: number): void;
  jobStateChanged(state: JobState): void;
  statuses(): ActorStatus[];
}

const TICK_MS = 500;
/** Failures of the coordinator's own handling after which the job ends (a bug, not a message). */
const MAX_HANDLER_ERRORS = 20;
let coordinatorCount = 0;

export class Coordinator {
  private readonly logic: CoordinatorLogic;
  private readonly actor: Ref<CoordinatorEvent>;
  private readonly timer: NodeJS.Timeout;
  private readonly unsubscribe: (() => void)[] = [];
  /** Events whose handling threw: logged and counted, the actor keeps its state and mailbox. */
  private readonly failures: HandlerFailures;
  /** Requests that came as plain publishes (nowhere to answer), by kind: dropped and counted. */
  private readonly unanswerable = new Map<string, number>();

  constructor(parent: Parameters<typeof spawn>[0], private readonly bus: Bus, settings: CoordinatorSettings, private readonly callbacks: CoordinatorCallbacks) {
    this.logic = new CoordinatorLogic(settings, Date.now());
    this.failures = new HandlerFailures({ actor: 'coordinator', log: callbacks.log, limit: MAX_HANDLER_ERRORS, escalate: (failure) => this.escalate(failure) });
    this.actor = spawn(
      parent,
      (state: null, event: CoordinatorEvent) => {
        try {
          this.handle(event);
        } catch (error) {
          this.failures.record(`${/^[aeiou]/.test(event.type) ? 'an' : 'a'} ${event.type} event`, error);
        }
        return state;
      },
      // One per attempt of the job (a restart builds a new one); nact names must be unique among siblings.
      `coordinator-${++coordinatorCount}`,
      { initialState: null },
    );
    const on = (subject: string, toEvent: (message: Parameters<Parameters<Bus['subscribe']>[1]>[0], reply: Parameters<Parameters<Bus['subscribe']>[1]>[1]) => CoordinatorEvent | undefined) => {
      const subscription = bus.subscribe(subject, (message, reply) => {
        const event = toEvent(message, reply);
        if (event !== undefined) dispatch(this.actor, event);
      });
      this.unsubscribe.push(() => subscription.unsubscribe());
    };
    on(SUBJECTS.register, (m) => (m.kind === 'register' ? { type: 'register', rank: m.rank, node: m.node, pid: m.pid, host: m.host } : undefined));
    on(SUBJECTS.heartbeat, (m) => (m.kind === 'heartbeat' ? { type: 'heartbeat', rank: m.rank, step: m.step, state: m.state, rssMb: m.rssMb, stepMs: m.stepMs, actors: m.actors } : undefined));
    on(SUBJECTS.gate, (m, reply) => (m.kind === 'step-ready' && this.answerable(m.kind, reply) ? { type: 'step-ready', rank: m.rank, step: m.step, reply } : undefined));
    on(SUBJECTS.stepDone, (m) => (m.kind === 'step-done' ? { type: 'step-done', report: m } : undefined));
    on(SUBJECTS.evaluationDone, (m) => (m.kind === 'evaluation-done' ? { type: 'evaluation-done', report: m } : undefined));
    on(SUBJECTS.fatal, (m) => (m.kind === 'fatal' ? { type: 'fatal', rank: m.rank, reason: m.reason, restartable: m.restartable !== false } : undefined));
    on(SUBJECTS.control, (m, reply) => (m.kind === 'control' && this.answerable(m.kind, reply) ? { type: 'control', command: m.command, reply, save: m.save, signal: m.signal } : undefined));
    on(SUBJECTS.checkpointSaved, (m) => (m.kind === 'checkpoint-saved' ? { type: 'checkpoint-saved', rank: m.rank, step: m.step, record: m.record } : undefined));
    on(SUBJECTS.connectionInterrupted, (m) => (m.kind === 'connection-interrupted' ? { type: 'connection-interrupted', rank: m.rank, node: m.node, pid: m.pid, server: m.server, peer: m.peer } : undefined));
    this.timer = setInterval(() => dispatch(this.actor, { type: 'tick' }), TICK_MS);
  }

  /**
   * Whether a request can be answered: one published without a reply subject (`nats pub` rather than a
   * request) has nowhere for its answer to go, so it is dropped and counted before it reaches the logic.
   */
  private answerable(kind: string, reply: ReplyContext): boolean {
    if (reply.reply !== undefined) return true;
    const count = (this.unanswerable.get(kind) ?? 0) + 1;
    this.unanswerable.set(kind, count);
    // The first, then every power of two: a flood does not flood the log.
    if ((count & (count - 1)) === 0) {
      this.callbacks.log(`coordinator: dropped a '${kind}' message published without a reply subject (${count} so far): send it as a request, as \`gpt-hybrid ctl\` does`);
    }
    return false;
  }

  /** Events from outside the bus: local worker exits, Ctrl-C, this launcher's NATS connection dropping. */
  tell(event: CoordinatorEvent): void {
    dispatch(this.actor, event);
  }

  close(): void {
    clearInterval(this.timer);
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    stop(this.actor);
  }

  /**
   * The job's judge must not stop (the job would freeze for good), so it goes on after an event it fails
   * on; should it keep failing, the job ends non-zero through the same path as any failure (see
   * [Note: every actor survives any message] in supervision.ts).
   */
  private escalate(failure: string): void {
    try {
      this.handle({ type: 'internal-error', reason: failure });
    } catch (again) {
      this.callbacks.log(`coordinator: could not end the job cleanly: ${again instanceof Error ? again.message : String(again)}`);
      this.callbacks.onFinished(1, failure, false);
    }
  }

  /** Runs `event` through the logic, applies its effects and tells the scheduler actors of a new job state. */
  private handle(event: CoordinatorEvent): void {
    const before = this.logic.jobState;
    for (const effect of this.logic.handle(event, Date.now())) this.apply(effect);
    if (this.logic.jobState !== before) this.callbacks.schedulers?.jobStateChanged(this.logic.jobState);
  }

  private apply(effect: CoordinatorEffect): void {
    switch (effect.type) {
      case 'respond': {
        const message = effect.message;
        // The scheduler actors live here, beside the logic: their status is read as the answer leaves.
        if (message.kind === 'control-reply' && message.status !== undefined && this.callbacks.schedulers !== undefined) {
          message.status.actors = [...message.status.actors, ...this.callbacks.schedulers.statuses()];
        }
        try {
          this.bus.respond(effect.to, message);
        } catch (error) {
          // An answer that cannot leave (the bus closing) must not take the job's judge down with it.
          this.callbacks.log(`coordinator: could not answer on ${effect.to.subject}: ${error instanceof Error ? error.message : String(error)}`);
        }
        return;
      }
      case 'step-started':
        this.callbacks.schedulers?.startStep(effect.step);
        return;
      case 'evaluation-started':
        this.callbacks.schedulers?.startEvaluation(effect.step);
        return;
      case 'evaluation-done':
        this.callbacks.onEvaluation(effect.report);
        return;
      case 'shutdown':
        try {
          const { reason, exitCode, restartable, unresponsiveRank } = effect;
          this.bus.publish(SUBJECTS.shutdown, { kind: 'shutdown', reason, exitCode, restartable, ...(unresponsiveRank === undefined ? {} : { unresponsiveRank }) });
        } catch (error) {
          // The job must end all the same: a throw here would skip the 'finished' effect after it.
          this.callbacks.log(`coordinator: could not tell the other launchers that the job ends: ${error instanceof Error ? error.message : String(error)}`);
        }
        this.callbacks.onShutdown(effect.reason, effect.exitCode, effect.unresponsiveRank);
        return;
      case 'log':
        this.callbacks.log(effect.line);
        return;
      case 'step-done':
        this.callbacks.onStep(effect.report);
        return;
      case 'finished':
        this.callbacks.onFinished(effect.exitCode, effect.reason, effect.restartable === true, effect.signal);
        return;
      case 'commit-checkpoint':
        this.callbacks.onCommitCheckpoint(effect.step, effect.folder, effect.records);
        return;
    }
  }
}
