/**
 * Implements: one attempt of a job on this node, from a checkpoint (or the start) until the job ends or
 * fails. On node 0 it hosts the coordinator actor and the scheduler actors and commits the checkpoints
 * they collect; on another node it follows the coordinator's shutdown and node 0's restart orders. Then
 * it starts this node's ranks, reports their deaths, Ctrl-C and dropped NATS links, waits for the
 * verdict and leaves no rank behind. The launcher's restart loop runs one attempt after another.
 */
import { join } from 'node:path';
import type { ActorSystemRef } from 'nact';
import { Coordinator } from '../actors/coordinator.ts';
import { SchedulerActors } from '../actors/scheduler-actor.ts';
import type { Bus } from '../comm/bus.ts';
import type { Transport } from '../comm/transport.ts';
import { commitCheckpoint, stepDirName, type RankFileRecord } from '../checkpoint/index.ts';
import type { TrainConfig } from '../config/types.ts';
import type { BatchSampler } from '../dataset/sampler.ts';
import type { ParallelGrid } from '../parallel/grid.ts';
import { STOP_SIGNALS, stopExitCode, type StopSignal } from '../protocol/stop-signals.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import { manifestParts } from '../checkpoint/manifest-parts.ts';
import type { Hook } from '../train/hooks/hook.ts';
import { orderRestart, type RestartOrder } from './node-restart.ts';
import { startRank, waitForExit, type RankHosting } from './rank-processes.ts';
import type { RankProcess } from './simulated-rank.ts';
import { StepReporter } from './step-reporter.ts';
import { lowerEvaluationActions } from '../scheduler/actions.ts';
import { evaluationDue, evaluationMicroBatchCount } from '../train/evaluation-plan.ts';

/** How long the workers get to exit by themselves before they are killed. */
const GRACE_MS = 3000;
/** How long another node's launcher waits for node 0 to take a stop signal it passes on. */
const PASS_ON_TIMEOUT_MS = 10_000;
/** Node 0: how long every other node gets to stop its workers and acknowledge a restart. */
const RESTART_ACK_MS = 60_000;
/**
 * Another node whose workers all died: how long it waits for the coordinator's verdict (a restart,
 * or the end) before ending on its own; the coordinator names a silent rank within its heartbeat timeout.
 */
const VERDICT_MS = 30_000;
/** A simulated rank's heartbeats wait for every other rank's synchronous compute in this one thread. */
const SIMULATED_HEARTBEAT_TIMEOUT_MS = 600_000;

export interface AttemptResult {
  exitCode: number;
  reason: string;
  restartable: boolean;
}

/** What one node's launcher holds for the whole job, the same for every attempt. */
export interface JobHost {
  jobId: string;
  /** The run its checkpoints belong to (checkpoint/run-id.ts). */
  runId: string;
  config: TrainConfig;
  grid: ParallelGrid;
  nnodes: number;
  nodeRank: number;
  nprocPerNode: number;
  bus: Bus;
  system: ActorSystemRef;
  transport: Transport;
  ranks: RankHosting;
  totalSteps: number;
  sampler: BatchSampler;
  /** Samples of the validation data; undefined: the job evaluates nothing. */
  validationSamples?: number;
  hooks: Hook[];
  outDir: string;
  checkpointRoot: string;
  registerTimeoutMs?: number;
  heartbeatTimeoutMs?: number;
  log: (line: string) => void;
}

export interface AttemptStart {
  /** The checkpoint every rank starts from, '' for the start. */
  resumeDir: string;
  startStep: number;
  /**
   * Node 0, a restart of a multi-node job: ordered to the other nodes once this attempt's coordinator
   * listens, before any worker starts.
   */
  restart?: RestartOrder;
  /** Restarts before this attempt, for the job's status. */
  restarts: number;
}

export class JobAttempt {
  private readonly children = new Map<number, RankProcess>();
  private readonly killTimers: NodeJS.Timeout[] = [];
  private ending = false;
  /** The first stop signal this launcher got; a second quits at once. */
  private stopSignal: StopSignal | undefined;
  private finish: (result: AttemptResult) => void = () => {};
  private readonly finished = new Promise<AttemptResult>((resolve) => (this.finish = resolve));
  private coordinator: Coordinator | undefined;
  private schedulers: SchedulerActors | undefined;
  private shutdownSubscription: { unsubscribe(): void } | undefined;
  // Commits run one after another; the attempt waits for the last before it returns.
  private commits: Promise<void> = Promise.resolve();

  constructor(
    private readonly job: JobHost,
    private readonly from: AttemptStart,
  ) {}

  private get firstRank(): number {
    return this.job.nodeRank * this.job.nprocPerNode;
  }

  async run(): Promise<AttemptResult> {
    const { job } = this;
    if (job.nodeRank === 0) this.hostCoordinator();
    else this.followCoordinator();
    if (this.from.restart !== undefined && job.nodeRank === 0) await this.orderRestart(this.from.restart);
    const connectionWatch = this.watchConnection();
    this.startRanks();

    const onSignal = (signal: StopSignal) => this.interrupt(signal);
    for (const signal of STOP_SIGNALS) process.on(signal, onSignal);

    const result = await this.finished;
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
    await waitForExit([...this.children.values()], GRACE_MS);
    for (const timer of this.killTimers) clearTimeout(timer);
    this.coordinator?.close();
    this.schedulers?.stop();
    this.shutdownSubscription?.unsubscribe();
    connectionWatch.unsubscribe();
    await this.commits;
    return result;
  }

  /** Another node: node 0 restarts the job, so this attempt stops its workers and ends as restartable. */
  endForRestart(): void {
    if (this.ending) return;
    this.ending = true;
    this.job.log('node 0 restarts the job');
    this.stopWorkers(GRACE_MS);
    this.finish({ exitCode: 1, reason: 'node 0 restarts the job', restartable: true });
  }

  /** Node 0: the coordinator judges the job; the scheduler actors feed the stage actors. */
  private hostCoordinator(): void {
    const { config, grid, log, system, bus, sampler } = this.job;
    const reporter = new StepReporter(config, this.job.totalSteps, this.from.startStep, sampler, this.job.hooks, log);
    const validationSamples = this.job.validationSamples;
    const evaluation =
      validationSamples === undefined ? undefined : lowerEvaluationActions(config.numChunks, evaluationMicroBatchCount(config, validationSamples), config.numMicroBatches);
    // A step whose actions could not all go out rolls the job back at once (supervision.ts).
    const onActionsLost = (reason: string) => this.coordinator?.tell({ type: 'internal-error', reason, restartable: true });
    this.schedulers = new SchedulerActors({ system, bus, config, grid, evaluation, log, onActionsLost });
    this.coordinator = new Coordinator(
      system,
      bus,
      {
        jobId: this.job.jobId,
        world: grid.world,
        totalSteps: this.job.totalSteps,
        startStep: this.from.startStep,
        restarts: this.from.restarts,
        stall: { factor: config.restart.stallFactor, minMs: config.restart.stallMinMs },
        ...(validationSamples === undefined ? {} : { evaluateAfter: (steps: number) => evaluationDue(config, steps, this.job.totalSteps) }),
        checkpoint: { every: config.checkpoint.every, folderFor: (step) => join(this.job.checkpointRoot, `.${stepDirName(step)}.tmp-${this.job.jobId}`) },
        registerTimeoutMs: this.job.registerTimeoutMs ?? envMilliseconds('GPT_HYBRID_REGISTER_TIMEOUT_MS', 120_000),
        // Simulated ranks share one thread: a step of one holds every other's heartbeat.
        heartbeatTimeoutMs:
          this.job.heartbeatTimeoutMs ?? (this.job.ranks.kind === 'simulated' ? SIMULATED_HEARTBEAT_TIMEOUT_MS : envMilliseconds('GPT_HYBRID_HEARTBEAT_TIMEOUT_MS', 6_000)),
      },
      {
        log,
        schedulers: this.schedulers,
        onStep: (report) => reporter.report(report),
        onEvaluation: (report) => reporter.reportEvaluation(report),
        onShutdown: (_reason, _exitCode, unresponsiveRank) => this.stopWorkers(GRACE_MS, unresponsiveRank),
        onCommitCheckpoint: (step, folder, records) => {
          // Data-parallel replicas other than 0 report in without a file (worker.ts): the manifest lists the files.
          const files = records.filter((record) => typeof record.file === 'string') as unknown as RankFileRecord[];
          const parts = manifestParts(config, grid.world, step, sampler.stepsPerEpoch, files, this.job.runId);
          this.commits = this.commits.then(() =>
            commitCheckpoint(this.job.checkpointRoot, step, folder, parts, { keep: config.checkpoint.keep }).then(
              ({ dir }) => log(`checkpoint of step ${step}: ${dir}`),
              (error: unknown) => log(`checkpoint of step ${step} FAILED (training goes on): ${error instanceof Error ? error.message : String(error)}`),
            ),
          );
        },
        onFinished: (exitCode, reason, restartable, signal) => {
          this.ending = true;
          reporter.end();
          // Stopped by a signal as asked (checkpoint saved, exit code 128 + its number): not a failure.
          log(`${exitCode === 0 || signal !== undefined ? '' : 'FAILED: '}${reason}`);
          this.finish({ exitCode, reason, restartable });
        },
      },
    );
  }

  /** Another node: the coordinator's shutdown ends this attempt with the coordinator's verdict. */
  private followCoordinator(): void {
    this.shutdownSubscription = this.job.bus.subscribe(SUBJECTS.shutdown, (message) => {
      if (message.kind !== 'shutdown' || this.ending) return;
      this.ending = true;
      this.job.log(`job ended by the coordinator: ${message.reason}`);
      this.stopWorkers(GRACE_MS, message.unresponsiveRank);
      this.finish({ exitCode: message.exitCode, reason: message.reason, restartable: message.restartable === true });
    });
  }

  private async orderRestart(restart: RestartOrder): Promise<void> {
    const { bus, nnodes, log } = this.job;
    try {
      await orderRestart(bus, Array.from({ length: nnodes - 1 }, (_, i) => i + 1), restart, RESTART_ACK_MS);
    } catch (error) {
      const reason = `cannot restart the job: ${error instanceof Error ? error.message : String(error)}`;
      log(`FAILED: ${reason}`);
      // The nodes that did restart have workers waiting to register: end them too.
      bus.publish(SUBJECTS.shutdown, { kind: 'shutdown', reason, exitCode: 1 });
      this.ending = true;
      this.finish({ exitCode: 1, reason, restartable: false });
    }
  }

  /**
   * See [Note: NATS interruptions] in actors/coordinator-logic.ts. The coordinator hears of its own launcher's
   * drop at once; another node's launcher tells it once its link is back.
   */
  private watchConnection(): { unsubscribe(): void } {
    const { bus, nodeRank } = this.job;
    let lostServer = '';
    return this.job.transport.onConnectionChange((event) => {
      if (event.type === 'disconnect') lostServer = event.server;
      const interruption = { node: nodeRank, pid: process.pid, server: lostServer };
      if (this.coordinator !== undefined && event.type === 'disconnect') this.coordinator.tell({ type: 'connection-interrupted', ...interruption });
      if (this.coordinator === undefined && event.type === 'reconnect' && !this.ending) bus.publish(SUBJECTS.connectionInterrupted, { kind: 'connection-interrupted', ...interruption });
    });
  }

  private startRanks(): void {
    const { job } = this;
    for (let rank = this.firstRank; rank < this.firstRank + job.nprocPerNode && !this.ending; rank++) {
      const child = startRank(job.ranks, {
        jobId: job.jobId,
        rank,
        world: job.grid.world,
        node: job.nodeRank,
        config: job.config,
        totalSteps: job.totalSteps,
        outDir: job.outDir,
        resume: this.from.resumeDir,
        attempt: this.from.restarts,
        log: job.log,
      });
      this.children.set(rank, child);
      child.on('exit', (code, signal) => this.rankExited(rank, child, code, signal));
    }
  }

  private rankExited(rank: number, child: RankProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const { bus, nodeRank } = this.job;
    if (this.coordinator !== undefined) {
      this.coordinator.tell({ type: 'rank-exit', rank, code, signal });
    } else if (!this.ending && (code !== 0 || signal !== null)) {
      const reason = `died: ${signal !== null ? `killed by ${signal}` : `exit code ${code}`} (pid ${child.pid}, node ${nodeRank})`;
      bus.publish(SUBJECTS.fatal, { kind: 'fatal', rank, reason });
    }
    const children = [...this.children.values()];
    const allExited = children.every((c) => c.exitCode !== null || c.signalCode !== null);
    if (allExited && this.coordinator === undefined && !this.ending) {
      const clean = children.every((c) => c.exitCode === 0);
      const endHere = () => {
        if (this.ending) return;
        this.ending = true;
        const signal = this.stopSignal;
        if (clean && signal !== undefined) this.finish({ exitCode: stopExitCode(signal), reason: `stopped by ${signal}`, restartable: false });
        else this.finish({ exitCode: clean ? 0 : 1, reason: clean ? 'done' : 'a worker failed', restartable: false });
      };
      // A death is the coordinator's to judge (it may restart the job): wait for its verdict first.
      if (clean) endHere();
      else this.killTimers.push(setTimeout(endHere, VERDICT_MS));
    }
  }

  /**
   * SIGTERM or SIGINT at this launcher (its workers ignore them, worker.ts): the first stops the job at
   * the next step boundary with a checkpoint, on node 0 through its coordinator, elsewhere passed on to
   * it as a `stop` control; the second quits at once.
   */
  private interrupt(signal: StopSignal): void {
    const { bus, nodeRank, log } = this.job;
    const again = this.stopSignal !== undefined;
    this.stopSignal ??= signal;
    if (this.coordinator !== undefined) {
      this.coordinator.tell({ type: 'signal', signal, where: `node ${nodeRank}` });
      return;
    }
    if (!again) {
      log(`${signal}: asking node 0 to stop the job at the next step boundary with a checkpoint (${signal} again quits at once)`);
      bus.request(SUBJECTS.control, { kind: 'control', command: 'stop', save: true, signal }, PASS_ON_TIMEOUT_MS).catch((error: unknown) => {
        log(`${signal}: node 0 did not take the stop (${error instanceof Error ? error.message : String(error)}); quitting this node now`);
        this.quitNow(signal);
      });
      return;
    }
    this.quitNow(signal);
  }

  /** Ends this node's part at once: the coordinator hears of it as a fatal error of this node's first rank. */
  private quitNow(signal: StopSignal): void {
    const { bus, nodeRank } = this.job;
    if (this.ending) return;
    bus.publish(SUBJECTS.fatal, { kind: 'fatal', rank: this.firstRank, reason: `node ${nodeRank} launcher quit on ${signal}` });
    this.ending = true;
    this.stopWorkers(GRACE_MS);
    this.finish({ exitCode: stopExitCode(signal), reason: `quit on ${signal}`, restartable: false });
  }

  /**
   * Workers get `graceMs` to exit by themselves after the shutdown, then are killed. One that stopped
   * answering (frozen, or stuck outside the event loop) would only use up the grace: it is killed at once.
   */
  private stopWorkers(graceMs: number, unresponsiveRank?: number): void {
    const unresponsive = unresponsiveRank === undefined ? undefined : this.children.get(unresponsiveRank);
    if (unresponsive !== undefined && unresponsive.exitCode === null && unresponsive.signalCode === null) {
      this.job.log(`killing rank ${unresponsiveRank} (pid ${unresponsive.pid}): it stopped answering`);
      unresponsive.kill('SIGKILL');
    }
    this.killTimers.push(
      setTimeout(() => {
        for (const child of this.children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }, graceMs),
    );
  }
}

/** A timeout from the environment (for slow machines and tests), else the default. */
function envMilliseconds(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}=${text} is not a positive number of milliseconds`);
  return value;
}
