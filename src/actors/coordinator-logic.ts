/**
 * Implements: the job coordinator's behaviour as a pure state machine (events in, effects out; the
 * clock is an argument), so it is tested without processes, NATS or nact. The nact actor in
 * coordinator.ts only feeds it events and carries out its effects.
 *
 * [Note: the step gate] Before each step every rank asks `step-ready`; the coordinator answers all of
 * them at once when the last one has asked: `run`, or `stop` when a stop was requested or the last step
 * is done. Holding the answers is how `pause` lands on a step boundary, and asking once more after the
 * last step is how ranks say they finished. Where an evaluation is due at that boundary
 * (train/evaluation-plan.ts), the answer says `evaluate` and the scheduler actors send its forwards.
 */
import { stopExitCode, type StopSignal } from '../protocol/stop-signals.ts';
import type { ReplyContext } from '../comm/bus.ts';
import { median } from '../scheduler/measured-costs.ts';
import type {
  ActorStatus,
  ControlCommand,
  ControlReplyMessage,
  EvaluationDoneMessage,
  JobState,
  Message,
  RankStatus,
  StepDoneMessage,
  StepGoMessage,
  WorkerState,
} from '../protocol/messages.ts';

export interface CoordinatorSettings {
  jobId: string;
  world: number;
  totalSteps: number;
  /** First step of this run (0 unless resuming). */
  startStep: number;
  /** Ranks that have not registered by then fail the job. */
  registerTimeoutMs: number;
  /**
   * A registered rank silent for this long fails the job; until its first step-ready (while it loads
   * its backend, data and model, with every rank of the node doing the same) it gets three times that.
   */
  heartbeatTimeoutMs: number;
  /**
   * Checkpoints: every `every` steps (0: only when asked) and after the last step when `every` > 0;
   * `folderFor(step)` is the temporary folder the ranks write their shards into.
   */
  checkpoint?: { every: number; folderFor: (step: number) => string };
  /** Whether the job evaluates after this many steps (evaluation-plan.ts's evaluationDue); omitted: never. */
  evaluateAfter?: (completedSteps: number) => boolean;
  /** Restarts before this attempt (its status says how often the job was rolled back). */
  restarts?: number;
  /**
   * The watchdog: a running job whose last step finished more than `factor` x the median step time ago
   * (and at least `minMs`) is stuck (a deadlock, a lost message nobody waits on with a timeout): it fails
   * restartable, as a silent rank does. Absent: no watchdog.
   */
  stall?: { factor: number; minMs: number };
}

export type CoordinatorEvent =
  | { type: 'register'; rank: number; node: number; pid: number; host: string }
  | { type: 'heartbeat'; rank: number; step: number; state: WorkerState; rssMb?: number; stepMs?: number; actors?: ActorStatus[] }
  | { type: 'step-ready'; rank: number; step: number; reply: ReplyContext }
  | { type: 'step-done'; report: StepDoneMessage }
  | { type: 'evaluation-done'; report: EvaluationDoneMessage }
  /** `save` with `stop`: save a checkpoint at the step boundary where the job stops. */
  | { type: 'control'; command: ControlCommand; reply: ReplyContext; save?: boolean; signal?: StopSignal }
  | { type: 'rank-exit'; rank: number; code: number | null; signal: string | null }
  /** `restartable` false: a deterministic failure (a non-finite loss) that a restart would only repeat. */
  | { type: 'fatal'; rank: number; reason: string; restartable?: boolean }
  | { type: 'checkpoint-saved'; rank: number; step: number; record: { [key: string]: unknown } }
  /** A launcher (node 0's own, or another passing it on as a `stop` control) got SIGTERM or SIGINT. */
  | { type: 'signal'; signal: StopSignal; where: string }
  /** A NATS connection of a worker (`rank`) or of the launcher of `node` dropped: messages may be lost. */
  | { type: 'connection-interrupted'; rank?: number; node: number; pid: number; server: string; peer?: number }
  | { type: 'tick' }
  /**
   * The job's own actors failed: the coordinator again and again (the job ends, cleanly and non-zero), or
   * a scheduler that could not send a step's actions (`restartable`: the job rolls back and goes on).
   */
  | { type: 'internal-error'; reason: string; restartable?: boolean };

export type CoordinatorEffect =
  | { type: 'respond'; to: ReplyContext; message: Message }
  /** The gate let every rank run `step` (0-based): the scheduler actors send its actions. */
  | { type: 'step-started'; step: number }
  /** The gate asked every rank to evaluate after `step` steps: the scheduler actors send the evaluation's forwards. */
  | { type: 'evaluation-started'; step: number }
  | { type: 'evaluation-done'; report: EvaluationDoneMessage }
  /** `restartable`: the other nodes' launchers wait for node 0's restart order instead of exiting. */
  | { type: 'shutdown'; reason: string; exitCode: number; restartable: boolean; unresponsiveRank?: number }
  | { type: 'log'; line: string }
  | { type: 'step-done'; report: StepDoneMessage }
  /** `restartable`: a rank died or stopped answering (a restart from the last checkpoint may mend it). */
  | { type: 'finished'; exitCode: number; reason: string; restartable?: boolean; signal?: StopSignal }
  /** Every rank wrote its shard of the checkpoint of `step` into `folder`: commit it. */
  | { type: 'commit-checkpoint'; step: number; folder: string; records: { [key: string]: unknown }[] };

interface RankRecord {
  node: number;
  pid: number;
  host: string;
  state: WorkerState;
  step: number;
  lastSeen: number;
  exited: boolean;
  /** Has asked for its first step (past its start-up). */
  started: boolean;
  /** Its actors as its latest heartbeat from the main loop listed them. */
  actors: ActorStatus[];
  rssMb?: number;
  stepMs?: number;
}

export class CoordinatorLogic {
  private readonly ranks = new Map<number, RankRecord>();
  private readonly waiting = new Map<number, ReplyContext>();
  private gateStep = -1;
  private state: JobState = 'starting';
  private paused = false;
  private stopRequested = false;
  /** The signal that asked the job to stop: the clean end then has its exit code; a second one quits at once. */
  private stopSignal: StopSignal | undefined;
  private failure: { reason: string } | undefined;
  private lastLoss: number | null = null;
  private tokensPerS: number | null = null;
  private stepsDone: number;
  private finished = false;
  private readonly startedAt: number;
  /** When the step in flight began (the gate opened, or the last step finished); undefined between steps. */
  private stepClock: number | undefined;
  /** The latest step times, for the watchdog's expected step time. */
  private readonly recentStepMs: number[] = [];
  private checkpointRequested = false;
  private saving: { step: number; folder: string; records: Map<number, { [key: string]: unknown }> } | undefined;

  constructor(
    readonly settings: CoordinatorSettings,
    now: number,
  ) {
    this.startedAt = now;
    this.stepsDone = settings.startStep;
  }

  get jobState(): JobState {
    return this.state;
  }

  handle(event: CoordinatorEvent, now: number): CoordinatorEffect[] {
    if (this.finished) return event.type === 'control' ? [this.controlReply(event.command, event.reply, false, 'the job has ended', now)] : [];
    switch (event.type) {
      case 'register':
        return this.onRegister(event, now);
      case 'heartbeat':
        return this.onHeartbeat(event, now);
      case 'step-ready':
        return this.onStepReady(event, now);
      case 'step-done':
        return this.onStepDone(event.report, now);
      case 'evaluation-done':
        return [{ type: 'evaluation-done', report: event.report }];
      case 'control':
        if (event.command === 'stop' && event.signal !== undefined) {
          return [...this.onSignal(event.signal, 'a launcher'), this.controlReply(event.command, event.reply, true, `${event.signal} passed on`, now)];
        }
        return this.onControl(event.command, event.reply, now, event.save === true);
      case 'rank-exit':
        return this.onRankExit(event);
      case 'fatal':
        return this.fail(`rank ${event.rank} failed: ${event.reason}`, 1, event.restartable !== false);
      case 'checkpoint-saved':
        return this.onCheckpointSaved(event);
      case 'signal':
        return this.onSignal(event.signal, event.where);
      case 'connection-interrupted':
        return this.onConnectionInterrupted(event);
      case 'tick':
        return this.onTick(now);
      case 'internal-error':
        return this.fail(event.reason, 1, event.restartable === true);
    }
  }

  private onRegister(event: Extract<CoordinatorEvent, { type: 'register' }>, now: number): CoordinatorEffect[] {
    if (!this.validRank(event.rank)) return [{ type: 'log', line: `ignored registration of rank ${event.rank}: the world has ${this.settings.world} ranks` }];
    const known = this.ranks.get(event.rank);
    if (known !== undefined && known.pid !== event.pid) {
      return this.fail(`rank ${event.rank} registered twice (pids ${known.pid} and ${event.pid}): two workers claim one rank`);
    }
    if (known !== undefined) return [];
    this.ranks.set(event.rank, { node: event.node, pid: event.pid, host: event.host, state: 'ready', step: 0, lastSeen: now, exited: false, started: false, actors: [] });
    const effects: CoordinatorEffect[] = [{ type: 'log', line: `rank ${event.rank} registered (node ${event.node}, pid ${event.pid}, ${event.host})` }];
    if (this.ranks.size === this.settings.world) {
      this.state = 'running';
      effects.push({ type: 'log', line: `all ${this.settings.world} ranks registered in ${((now - this.startedAt) / 1000).toFixed(1)} s` });
    }
    return effects;
  }

  private onHeartbeat(event: Extract<CoordinatorEvent, { type: 'heartbeat' }>, now: number): CoordinatorEffect[] {
    const record = this.ranks.get(event.rank);
    if (record === undefined) return [];
    record.lastSeen = now;
    record.state = event.state;
    record.step = event.step;
    if (event.actors !== undefined) record.actors = event.actors;
    if (event.rssMb !== undefined) record.rssMb = event.rssMb;
    if (event.stepMs !== undefined) record.stepMs = event.stepMs;
    // A worker's last word before a clean exit; remote ranks' process exits are not seen here.
    if (event.state === 'done' && !record.exited) return this.onRankExit({ type: 'rank-exit', rank: event.rank, code: 0, signal: null });
    return [];
  }

  private onStepReady(event: Extract<CoordinatorEvent, { type: 'step-ready' }>, now: number): CoordinatorEffect[] {
    const record = this.ranks.get(event.rank);
    if (record === undefined) return [{ type: 'log', line: `step-ready from unregistered rank ${event.rank} ignored` }];
    record.lastSeen = now;
    record.started = true;
    if (this.gateStep !== event.step) {
      if (this.waiting.size > 0) {
        return this.fail(`ranks disagree on the step: rank ${event.rank} is at step ${event.step}, others at ${this.gateStep}`);
      }
      this.gateStep = event.step;
    }
    // A rank re-asking (its request timed out while the job was paused) replaces its old reply address.
    this.waiting.set(event.rank, event.reply);
    return this.openGateIfReady();
  }

  private openGateIfReady(): CoordinatorEffect[] {
    if (this.waiting.size < this.settings.world || this.ranks.size < this.settings.world) return [];
    const finishedAll = this.gateStep >= this.settings.totalSteps;
    if (this.paused && !this.stopRequested && !finishedAll) {
      this.state = 'paused';
      return [];
    }
    const action = this.stopRequested || finishedAll ? 'stop' : 'run';
    const save = this.checkpointDue(finishedAll);
    // Not where the run starts (its predecessor evaluated there), nor where it stops early.
    const evaluate = this.gateStep > this.settings.startStep && (action === 'run' || finishedAll) && this.settings.evaluateAfter?.(this.gateStep) === true;
    const effects: CoordinatorEffect[] = [...this.waiting].map(([, to]) => {
      const message: StepGoMessage = { kind: 'step-go', step: this.gateStep, action };
      if (save !== undefined) message.save = save;
      if (evaluate) message.evaluate = true;
      return { type: 'respond' as const, to, message };
    });
    if (evaluate) effects.push({ type: 'evaluation-started', step: this.gateStep });
    if (save !== undefined) effects.push({ type: 'log', line: `saving a checkpoint of step ${this.gateStep}` });
    else if (action === 'stop' && this.checkpointRequested) {
      const why = this.saving !== undefined ? `the checkpoint of step ${this.saving.step} is still being saved` : `no step has run since step ${this.gateStep}`;
      effects.push({ type: 'log', line: `no checkpoint saved at step ${this.gateStep}: ${why}` });
    }
    this.waiting.clear();
    if (action === 'stop') {
      this.state = 'stopping';
      effects.push({
        type: 'log',
        line: finishedAll ? `all ranks finished step ${this.gateStep}` : `stopping at step ${this.gateStep} as requested`,
      });
    } else {
      this.state = 'running';
      effects.push({ type: 'step-started', step: this.gateStep });
    }
    return effects;
  }

  /** The folder the ranks save into at this gate, when a checkpoint is due (a step boundary past the start). */
  private checkpointDue(finishedAll: boolean): string | undefined {
    const settings = this.settings.checkpoint;
    if (settings === undefined || this.gateStep <= this.settings.startStep || this.saving !== undefined) return undefined;
    const periodic = settings.every > 0 && (this.gateStep % settings.every === 0 || finishedAll);
    if (!periodic && !this.checkpointRequested) return undefined;
    this.checkpointRequested = false;
    const folder = settings.folderFor(this.gateStep);
    this.saving = { step: this.gateStep, folder, records: new Map() };
    return folder;
  }

  private onCheckpointSaved(event: Extract<CoordinatorEvent, { type: 'checkpoint-saved' }>): CoordinatorEffect[] {
    const saving = this.saving;
    if (saving === undefined || saving.step !== event.step) {
      return [{ type: 'log', line: `ignored a checkpoint shard of step ${event.step} from rank ${event.rank}: no checkpoint of that step is being saved` }];
    }
    saving.records.set(event.rank, event.record);
    if (saving.records.size < this.settings.world) return [];
    this.saving = undefined;
    const records = [...saving.records.entries()].sort(([a], [b]) => a - b).map(([, record]) => record);
    return [{ type: 'commit-checkpoint', step: saving.step, folder: saving.folder, records }];
  }

  private onStepDone(report: StepDoneMessage, now: number): CoordinatorEffect[] {
    this.stepClock = now;
    this.recentStepMs.push(report.stepMs);
    if (this.recentStepMs.length > RECENT_STEPS) this.recentStepMs.shift();
    this.stepsDone = Math.max(this.stepsDone, report.step);
    this.lastLoss = report.loss;
    this.tokensPerS = report.tokens / (report.stepMs / 1000);
    return [{ type: 'step-done', report }];
  }

  /**
   * [Note: NATS interruptions] Core NATS is at-most-once: while a connection is down (a server restart,
   * a dead cluster member), a tensor or a gate answer sent to or by that process may be gone, and the
   * receive waiting for it would only fail at its timeout (minutes). Nothing tells which messages were
   * lost, so the whole job rolls back to its last checkpoint, which replays bit-identically. Once every
   * rank is stopping nothing that matters can be lost any more.
   */
  private onConnectionInterrupted(event: Extract<CoordinatorEvent, { type: 'connection-interrupted' }>): CoordinatorEffect[] {
    const who = event.rank === undefined ? `the launcher of node ${event.node}` : `rank ${event.rank}`;
    const record = event.rank === undefined ? undefined : this.ranks.get(event.rank);
    if (record !== undefined && record.pid !== event.pid) {
      return [{ type: 'log', line: `ignored a NATS interruption of ${who} from pid ${event.pid}: the rank is now pid ${record.pid}` }];
    }
    if (this.state === 'stopping') {
      const unsaved = this.saving === undefined ? '' : `; the checkpoint of step ${this.saving.step} may not be committed`;
      return [{ type: 'log', line: `the NATS connection of ${who} was interrupted (${event.server}) while the job was stopping${unsaved}` }];
    }
    if (event.peer !== undefined) return this.fail(`the data plane link between rank ${event.rank} and rank ${event.peer} broke (${event.server}); tensors may be lost`, 1, true);
    return this.fail(`the NATS connection of ${who} was interrupted (${event.server}: server restart?); messages may be lost`, 1, true);
  }

  /**
   * SIGTERM (preemption) or SIGINT (Ctrl-C) at a launcher: the first is `stop` with a checkpoint at the
   * next step boundary, and the job then ends with the signal's exit code, not as a failure; a second
   * quits at once.
   */
  private onSignal(signal: StopSignal, where: string): CoordinatorEffect[] {
    if (this.stopSignal !== undefined) return this.fail(`quit at once on a second stop signal (${signal} at ${where})`, stopExitCode(signal));
    this.stopSignal = signal;
    // Unlike `ctl stop --checkpoint`, a signal stops the job even where no checkpoint can be saved.
    const refused = this.checkpointRefusal();
    const effects = this.beginStop(refused === undefined);
    return [{ type: 'log', line: `${signal} at ${where}: stopping at the next step boundary, ${refused ?? 'saving a checkpoint there'} (${signal} again quits at once)` }, ...effects];
  }

  /** Why no checkpoint can be saved where the job stops, or undefined. */
  private checkpointRefusal(): string | undefined {
    if (this.settings.checkpoint === undefined) return 'this job cannot save checkpoints';
    if (this.state === 'stopping') return `the job is already stopping after step ${this.stepsDone}: too late to save a checkpoint there`;
    return undefined;
  }

  /** Stops at the next step boundary (with a checkpoint there when `save`): the answers to the ranks waiting now. */
  private beginStop(save: boolean): CoordinatorEffect[] {
    if (save) this.checkpointRequested = true;
    this.stopRequested = true;
    return this.openGateIfReady();
  }

  private onControl(command: ControlCommand, reply: ReplyContext, now: number, save = false): CoordinatorEffect[] {
    switch (command) {
      case 'status':
        return [this.controlReply(command, reply, true, `job ${this.settings.jobId} is ${this.state}`, now)];
      case 'pause': {
        if (this.stopRequested) return [this.controlReply(command, reply, false, 'a stop is already under way', now)];
        this.paused = true;
        const effects = this.openGateIfReady();
        const held = this.state === 'paused';
        return [
          { type: 'log', line: 'pause requested' },
          ...effects,
          this.controlReply(command, reply, true, held ? `paused before step ${this.gateStep + 1}` : `pausing after step ${this.stepsDone + 1}`, now),
        ];
      }
      case 'resume': {
        const wasPaused = this.paused;
        this.paused = false;
        // A pause is no stall: the watchdog counts from the resume.
        if (this.stepClock !== undefined) this.stepClock = now;
        const effects = this.openGateIfReady();
        return [
          { type: 'log', line: 'resume requested' },
          ...effects,
          this.controlReply(command, reply, true, wasPaused ? 'resumed' : 'the job was not paused', now),
        ];
      }
      case 'stop': {
        const refused = save ? this.checkpointRefusal() : undefined;
        if (refused !== undefined) return [this.controlReply(command, reply, false, refused, now)];
        const effects = this.beginStop(save);
        const saving = save ? ', saving a checkpoint there' : '';
        return [
          { type: 'log', line: `stop requested${saving}` },
          ...effects,
          this.controlReply(command, reply, true, `stopping at the next step boundary (after step ${this.stepsDone + (this.state === 'stopping' ? 0 : 1)})${saving}`, now),
        ];
      }
      case 'checkpoint':
        if (this.settings.checkpoint === undefined) {
          return [this.controlReply(command, reply, false, 'this job cannot save checkpoints', now)];
        }
        this.checkpointRequested = true;
        return [
          { type: 'log', line: 'checkpoint requested' },
          this.controlReply(command, reply, true, `a checkpoint will be saved at the next step boundary (after step ${this.stepsDone + 1})`, now),
        ];
    }
  }

  private onRankExit(event: Extract<CoordinatorEvent, { type: 'rank-exit' }>): CoordinatorEffect[] {
    const record = this.ranks.get(event.rank);
    // Its 'done' heartbeat already counted this clean exit.
    if (record?.exited === true && event.code === 0) return [];
    if (record !== undefined) record.exited = true;
    const how = event.signal !== null ? `killed by ${event.signal}` : `exit code ${event.code}`;
    const expected = this.state === 'stopping' && event.code === 0;
    if (!expected) {
      const pid = record === undefined ? '' : ` (pid ${record.pid}, node ${record.node})`;
      return this.fail(`rank ${event.rank}${pid} died: ${how}`, 1, true);
    }
    const allExited = [...this.ranks.values()].every((r) => r.exited) && this.ranks.size === this.settings.world;
    if (!allExited) return [];
    this.finished = true;
    this.state = this.failure === undefined ? 'done' : 'failed';
    if (this.stopSignal !== undefined) {
      return [{ type: 'finished', exitCode: stopExitCode(this.stopSignal), reason: `stopped by ${this.stopSignal} after step ${this.stepsDone}`, signal: this.stopSignal }];
    }
    return [{ type: 'finished', exitCode: 0, reason: this.stopRequested ? `stopped after step ${this.stepsDone}` : `done after step ${this.stepsDone}` }];
  }

  private onTick(now: number): CoordinatorEffect[] {
    if (this.ranks.size < this.settings.world && now - this.startedAt > this.settings.registerTimeoutMs) {
      const missing = [];
      for (let rank = 0; rank < this.settings.world; rank++) if (!this.ranks.has(rank)) missing.push(rank);
      return this.fail(
        `rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not register within ${this.settings.registerTimeoutMs / 1000} s: ` +
          'are their launchers running with the same --job-id and NATS server?',
      );
    }
    const stalled = this.stalledFor(now);
    if (stalled !== undefined) return this.fail(stalled, 1, true);
    for (const [rank, record] of this.ranks) {
      const silent = now - record.lastSeen;
      const allowed = record.started ? this.settings.heartbeatTimeoutMs : 3 * this.settings.heartbeatTimeoutMs;
      if (!record.exited && silent > allowed) {
        return this.fail(`rank ${rank} (pid ${record.pid}, node ${record.node}) stopped answering: no heartbeat for ${(silent / 1000).toFixed(1)} s`, 1, true, rank);
      }
    }
    return [];
  }

  /** The watchdog's verdict: why the job is stuck, or undefined. Only while a step is in flight, never paused or stopping. */
  private stalledFor(now: number): string | undefined {
    const stall = this.settings.stall;
    if (stall === undefined || this.stepClock === undefined || this.state !== 'running' || this.stopRequested || this.recentStepMs.length < 2) return undefined;
    const usual = median(this.recentStepMs);
    const limit = Math.max(stall.factor * usual, stall.minMs);
    const waited = now - this.stepClock;
    if (waited <= limit) return undefined;
    return `no step finished for ${(waited / 1000).toFixed(1)} s (watchdog: ${stall.factor} x the median step time ${Math.round(usual)} ms, at least ${stall.minMs / 1000} s): the job is stuck`;
  }

  private fail(reason: string, exitCode = 1, restartable = false, unresponsiveRank?: number): CoordinatorEffect[] {
    if (this.failure !== undefined) return [];
    this.failure = { reason };
    this.finished = true;
    this.state = 'failed';
    return [
      { type: 'log', line: `job failed: ${reason}` },
      { type: 'shutdown', reason, exitCode, restartable, ...(unresponsiveRank === undefined ? {} : { unresponsiveRank }) },
      { type: 'finished', exitCode, reason, restartable },
    ];
  }

  private validRank(rank: number): boolean {
    return Number.isInteger(rank) && rank >= 0 && rank < this.settings.world;
  }

  private controlReply(command: ControlCommand, to: ReplyContext, ok: boolean, message: string, now: number): CoordinatorEffect {
    const ranks: RankStatus[] = [];
    for (let rank = 0; rank < this.settings.world; rank++) {
      const record = this.ranks.get(rank);
      ranks.push(
        record === undefined
          ? { rank, state: 'starting', step: 0, lastSeenMs: -1 }
          : {
              rank,
              state: record.state,
              step: record.step,
              lastSeenMs: Math.round(now - record.lastSeen),
              node: record.node,
              pid: record.pid,
              ...(record.rssMb === undefined ? {} : { rssMb: record.rssMb }),
              ...(record.stepMs === undefined ? {} : { stepMs: record.stepMs }),
            },
      );
    }
    const reply: ControlReplyMessage = {
      kind: 'control-reply',
      ok,
      command,
      message,
      status: {
        jobId: this.settings.jobId,
        state: this.state,
        step: this.stepsDone,
        totalSteps: this.settings.totalSteps,
        lastLoss: this.lastLoss,
        tokensPerS: this.tokensPerS,
        restarts: this.settings.restarts ?? 0,
        ranks,
        actors: [...this.ranks.keys()].sort((a, b) => a - b).flatMap((rank) => this.ranks.get(rank)!.actors),
      },
    };
    return { type: 'respond', to, message: reply };
  }
}

/** Step times the watchdog's median is taken over. */
const RECENT_STEPS = 20;
