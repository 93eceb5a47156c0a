/**
 * Implements: the launcher of a multi-process job (torchrun's role): one per node. It resolves the NATS
 * server, tokenizes the data once (so workers find the cache), spawns one worker process per local rank,
 * and on node 0 hosts the coordinator actor and the scheduler actors and writes the run's metrics. It
 * shuts every worker down on success, failure or Ctrl-C, and leaves no process behind. A simulated job
 * (`simulate`) runs the same: its ranks are SimulatedRanks in this process over the in-process
 * transport, so it needs no NATS server and starts no process.
 */
import { spawn as spawnProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start, stop as stopSystem } from 'nact';
import { Bus } from '../comm/bus.ts';
import type { StepDoneMessage } from '../comm/messages.ts';
import { LocalNetwork } from '../comm/local-transport.ts';
import type { Transport } from '../comm/transport.ts';
import { initBackend } from '../backend/select.ts';
import * as tf from '../tf.ts';
import { SchedulerActors } from '../actors/scheduler-actor.ts';
import { usesStageActors } from '../actors/rank.ts';
import { SimulatedRank, type RankProcess } from './simulated-rank.ts';
import { resolveNatsCredentials, type NatsCredentialFlags, type NatsCredentials } from '../comm/nats-credentials.ts';
import { connectNats, type NatsTransport } from '../comm/nats-transport.ts';
import type { TrainConfig } from '../config/types.ts';
import type { BatchSampler } from '../dataset/sampler.ts';
import { loadWebtextDataset, type TokenizedDataset } from '../dataset/webtext.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import { globalBatchSampler, totalStepsOf } from '../train/global-batch.ts';
import type { Hook, StepResult, TrainerState } from '../train/hooks/hook.ts';
import { mergeTraceParts } from '../stages/trace.ts';
import { Coordinator } from './coordinator.ts';
import { LATEST_FILE, commitCheckpoint, loadCheckpoint, resolveCheckpoint, stepDirName, type RankFileRecord } from '../checkpoint/index.ts';
import { checkStepsLeft, manifestParts } from '../train/checkpointing.ts';
import { keepMetricsThrough } from '../train/metrics-file.ts';
import { resolveNats, serversFor } from './nats-url.ts';
import { orderRestart, RestartOrders, type RestartOrder } from './node-restart.ts';
import { SUBJECTS } from './subjects.ts';
import { WORKER_NODE_FLAGS, workerEnvironmentVariables } from './worker-env.ts';

export interface LaunchOptions {
  config: TrainConfig;
  configPath: string;
  outDir: string;
  /** 1-based step to stop after; default from the config. */
  steps?: number;
  nats?: string;
  /** Login and TLS options (files); the URL's userinfo and NATS_* variables fill in what they leave out. */
  natsCredentials?: NatsCredentialFlags;
  nnodes: number;
  nodeRank: number;
  nprocPerNode?: number;
  jobId?: string;
  hooks: Hook[];
  log: (line: string) => void;
  registerTimeoutMs?: number;
  heartbeatTimeoutMs?: number;
  /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
  resume?: string;
  /**
   * Run every rank in this process over the in-process transport (no NATS server, no worker process);
   * `network` lets a test inject faults; the timeouts let it see a lost message sooner.
   */
  simulate?: { network?: LocalNetwork; actionTimeoutMs?: number; receiveTimeoutMs?: number; onRank?: (rank: number, handle: RankProcess) => void };
}

/** Seconds the workers get to exit by themselves before they are killed. */
const GRACE_MS = 3000;
/** How long a restart waits for a lost NATS server to answer again (the client's own reconnect window). */
const NATS_RETURN_MS = 30_000;
/** Node 0: how long every other node gets to stop its workers and acknowledge a restart. */
const RESTART_ACK_MS = 60_000;
/** Another node: how long it waits for node 0's restart order (or its final word) after a restartable failure. */
const RESTART_ORDER_MS = 120_000;
/**
 * Another node whose workers all died: how long it waits for the coordinator's verdict (a restart,
 * or the end) before ending on its own; the coordinator names a silent rank within its heartbeat timeout.
 */
const VERDICT_MS = 30_000;
/** A simulated rank's heartbeats wait for every other rank's synchronous compute in this one thread. */
const SIMULATED_HEARTBEAT_TIMEOUT_MS = 600_000;
const WORKER_ENTRY = fileURLToPath(new URL('./worker-main.ts', import.meta.url));

export async function launch(options: LaunchOptions): Promise<number> {
  const { config, log, nnodes, nodeRank } = options;
  const grid = new ParallelGrid({ data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size });
  const nprocPerNode = options.nprocPerNode ?? grid.world / nnodes;
  if (!Number.isInteger(nprocPerNode) || nprocPerNode * nnodes !== grid.world) {
    throw new Error(
      `${grid.describe()} does not split into ${nnodes} node(s) x ${options.nprocPerNode ?? 'N'} processes; ` +
        'set --nproc-per-node so that nnodes x nproc-per-node equals the world size',
    );
  }
  const jobId = options.jobId ?? `${basename(options.configPath, extname(options.configPath)).replace(/[^A-Za-z0-9_-]/g, '-')}-${randomBytes(3).toString('hex')}`;
  const simulate = options.simulate;
  if (simulate !== undefined && nnodes > 1) throw new Error('a simulated job runs in one process: drop --nnodes or --simulate');
  const network = simulate === undefined ? undefined : (simulate.network ?? new LocalNetwork(8 * 1024 * 1024));
  const nats = network !== undefined ? { url: 'in-process', privateServer: undefined, urlCredentials: undefined } : await resolveNats(options.nats, nodeRank === 0, log);

  let natsCredentials: NatsCredentials = {};
  let natsLogin = 'no login';
  let transport: Transport | undefined;
  let natsTransport: NatsTransport | undefined;
  let sampler: BatchSampler;
  let dataset: TokenizedDataset;
  let totalSteps: number;
  let resumeDir = '';
  let startStep = 0;
  try {
    if (network !== undefined) {
      transport = network.connect();
    } else {
      ({ credentials: natsCredentials, description: natsLogin } = resolveNatsCredentials(options.natsCredentials ?? {}, nats.urlCredentials ?? {}));
      // Before the data: refused credentials end the job at once, not after a long tokenization.
      natsTransport = await connectNats({ url: serversFor(nats.url, nodeRank), ...natsCredentials, name: `gpt-hybrid ${jobId} launcher ${nodeRank}`, log });
      transport = natsTransport;
    }
    // Tokenize here once: the workers then read the cache instead of racing to build it.
    dataset = await loadWebtextDataset(config.data.path, { seqLen: config.seqLen, skipBadLines: config.data.skipBadLines, log });
    if (network !== undefined) {
      // Simulated ranks share this process, hence its backend.
      tf.enableProdMode();
      await initBackend(config.backend, log);
    }
    sampler = globalBatchSampler(config, dataset.numSamples);
    totalSteps = totalStepsOf(config, sampler, options.steps);
    // Resuming: verify the whole checkpoint once here; the workers then read only their regions of it.
    if (options.resume !== undefined) {
      resumeDir = await resolveCheckpoint(options.resume);
      const checkpoint = await loadCheckpoint(resumeDir, { verify: true });
      startStep = checkpoint.manifest.dataLoader.nextStep;
      checkpoint.close();
      log(`resuming from ${resumeDir}: continuing after step ${startStep}`);
      checkStepsLeft(startStep, totalSteps);
      if (nodeRank === 0) keepMetricsThrough(join(options.outDir, 'metrics.jsonl'), startStep);
    }
  } catch (error) {
    // An open connection or a private server would keep this process alive after the error.
    await transport?.close().catch(() => undefined);
    await nats.privateServer?.stop();
    throw error;
  }
  const checkpointRoot = join(options.outDir, 'checkpoints');
  let commits: Promise<void> = Promise.resolve();

  const configFile = join(options.outDir, nnodes > 1 ? `config.node${nodeRank}.json` : 'config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n');
  const bus = new Bus({ jobId, transport, log });
  const system = start();

  if (network !== undefined) {
    log(`job ${jobId}: ${grid.describe()} simulated in this process (in-process transport, no worker processes)`);
  } else if (nodeRank === 0) {
    writeFileSync(
      join(options.outDir, 'job.json'),
      JSON.stringify({ jobId, nats: nats.url, world: grid.world, nnodes, layout: grid.describe(), launcherPid: process.pid, startedAt: new Date().toISOString() }, null, 2) + '\n',
    );
    log(`job ${jobId}: ${grid.describe()} on ${nnodes} node(s), NATS ${nats.url} (${natsLogin})`);
    log(
      `control it with: gpt-hybrid ctl ${jobId} status|pause|resume|checkpoint|stop${options.nats || process.env.NATS_URL || nats.privateServer ? ` --nats ${nats.url}` : ''}` +
        (Object.keys(natsCredentials).length === 0 ? '' : ' and the same NATS credential options or variables'),
    );
  } else {
    log(`node ${nodeRank}: joining job ${jobId} at ${nats.url} (${natsLogin})`);
  }

  // Recovery across nodes: the other nodes' launchers take node 0's restart orders; see node-restart.ts.
  let endAttemptForRestart: (() => void) | undefined;
  const restartOrders = nodeRank > 0 ? new RestartOrders(bus, nodeRank, () => endAttemptForRestart?.()) : undefined;

  /**
   * One run of every local worker, from `resumeDir` (or the start) until the job ends or fails. On node 0,
   * `restart` (a restart of a multi-node job) is ordered to the other nodes once this attempt's
   * coordinator listens, before any worker starts.
   */
  const runAttempt = async (resumeDir: string, startStep: number, restart?: RestartOrder): Promise<{ exitCode: number; reason: string; restartable: boolean }> => {
    const children = new Map<number, RankProcess>();
    let finish: (result: { exitCode: number; reason: string; restartable: boolean }) => void = () => {};
    const finished = new Promise<{ exitCode: number; reason: string; restartable: boolean }>((resolve) => (finish = resolve));
    let ending = false;
    const killTimers: NodeJS.Timeout[] = [];
    const stopWorkers = (graceMs: number) => {
      killTimers.push(
        setTimeout(() => {
          for (const child of children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }, graceMs),
      );
    };

    let coordinator: Coordinator | undefined;
    let schedulers: SchedulerActors | undefined;
    let shutdownSubscription: { unsubscribe(): void } | undefined;
    if (nodeRank === 0) {
      const reporter = new StepReporter(config, totalSteps, startStep, sampler, options.hooks, log);
      // Pipeline and tensor-parallel ranks run their steps as stage actors fed by a scheduler actor per replica.
      if (usesStageActors(config)) schedulers = new SchedulerActors({ system, bus, config, grid, log });
      coordinator = new Coordinator(
        system,
        bus,
        {
          jobId,
          world: grid.world,
          totalSteps,
          startStep,
          checkpoint: { every: config.checkpoint.every, folderFor: (step) => join(checkpointRoot, `.${stepDirName(step)}.tmp-${jobId}`) },
          registerTimeoutMs: options.registerTimeoutMs ?? envMilliseconds('GPT_HYBRID_REGISTER_TIMEOUT_MS', 120_000),
          // Simulated ranks share one thread: a step of one holds every other's heartbeat.
          heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? (network !== undefined ? SIMULATED_HEARTBEAT_TIMEOUT_MS : envMilliseconds('GPT_HYBRID_HEARTBEAT_TIMEOUT_MS', 6_000)),
        },
        {
          log,
          schedulers,
          onStep: (report) => reporter.report(report),
          onShutdown: () => stopWorkers(GRACE_MS),
          onCommitCheckpoint: (step, folder, records) => {
            const parts = manifestParts(config, grid.world, step, sampler.stepsPerEpoch, records as unknown as RankFileRecord[]);
            commits = commits.then(() =>
              commitCheckpoint(checkpointRoot, step, folder, parts, { keep: config.checkpoint.keep }).then(
                ({ dir }) => log(`checkpoint of step ${step}: ${dir}`),
                (error: unknown) => log(`checkpoint of step ${step} FAILED (training goes on): ${error instanceof Error ? error.message : String(error)}`),
              ),
            );
          },
          onFinished: (exitCode, reason, restartable) => {
            ending = true;
            reporter.end();
            log(`${exitCode === 0 ? '' : 'FAILED: '}${reason}`);
            finish({ exitCode, reason, restartable });
          },
        },
      );
    } else {
      shutdownSubscription = bus.subscribe(SUBJECTS.shutdown, (message) => {
        if (message.kind !== 'shutdown' || ending) return;
        ending = true;
        log(`job ended by the coordinator: ${message.reason}`);
        stopWorkers(GRACE_MS);
        finish({ exitCode: message.exitCode, reason: message.reason, restartable: message.restartable === true });
      });
      endAttemptForRestart = () => {
        if (ending) return;
        ending = true;
        log('node 0 restarts the job');
        stopWorkers(GRACE_MS);
        finish({ exitCode: 1, reason: 'node 0 restarts the job', restartable: true });
      };
    }
    if (restart !== undefined && nodeRank === 0) {
      try {
        await orderRestart(bus, Array.from({ length: nnodes - 1 }, (_, i) => i + 1), restart, RESTART_ACK_MS);
      } catch (error) {
        const reason = `cannot restart the job: ${error instanceof Error ? error.message : String(error)}`;
        log(`FAILED: ${reason}`);
        // The nodes that did restart have workers waiting to register: end them too.
        bus.publish(SUBJECTS.shutdown, { kind: 'shutdown', reason, exitCode: 1 });
        ending = true;
        finish({ exitCode: 1, reason, restartable: false });
      }
    }

    // See [Note: NATS interruptions] in coordinator-logic.ts. The coordinator hears of its own launcher's
    // drop at once; another node's launcher tells it once its link is back.
    let lostServer = '';
    const connectionWatch = transport!.onConnectionChange((event) => {
      if (event.type === 'disconnect') lostServer = event.server;
      const interruption = { node: nodeRank, pid: process.pid, server: lostServer };
      if (coordinator !== undefined && event.type === 'disconnect') coordinator.tell({ type: 'connection-interrupted', ...interruption });
      if (coordinator === undefined && event.type === 'reconnect' && !ending) bus.publish(SUBJECTS.connectionInterrupted, { kind: 'connection-interrupted', ...interruption });
    });

    const firstRank = nodeRank * nprocPerNode;
    for (let rank = firstRank; rank < firstRank + nprocPerNode && !ending; rank++) {
      const child: RankProcess =
        network !== undefined
          ? new SimulatedRank({
              network,
              jobId,
              rank,
              world: grid.world,
              config,
              totalSteps,
              outDir: options.outDir,
              resume: resumeDir,
              dataset,
              log,
              actionTimeoutMs: simulate?.actionTimeoutMs,
              receiveTimeoutMs: simulate?.receiveTimeoutMs,
            })
          : spawnProcess(process.execPath, [...WORKER_NODE_FLAGS, '--import', 'tsx', WORKER_ENTRY], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        env: {
          ...process.env,
          ...workerEnvironmentVariables({
            jobId,
            natsUrl: nats.url,
            rank,
            world: grid.world,
            node: nodeRank,
            configPath: configFile,
            totalSteps,
            outDir: options.outDir,
            resume: resumeDir,
            natsCredentials,
          }),
        },
      });
      children.set(rank, child);
      if (network !== undefined) simulate?.onRank?.(rank, child);
      child.on('exit', (code, signal) => {
        if (coordinator !== undefined) {
          coordinator.tell({ type: 'rank-exit', rank, code, signal });
        } else if (!ending && (code !== 0 || signal !== null)) {
          const reason = `died: ${signal !== null ? `killed by ${signal}` : `exit code ${code}`} (pid ${child.pid}, node ${nodeRank})`;
          bus.publish(SUBJECTS.fatal, { kind: 'fatal', rank, reason });
        }
        const allExited = [...children.values()].every((c) => c.exitCode !== null || c.signalCode !== null);
        if (allExited && coordinator === undefined && !ending) {
          const clean = [...children.values()].every((c) => c.exitCode === 0);
          const endHere = () => {
            if (ending) return;
            ending = true;
            finish({ exitCode: clean ? 0 : 1, reason: clean ? 'done' : 'a worker failed', restartable: false });
          };
          // A death is the coordinator's to judge (it may restart the job): wait for its verdict first.
          if (clean) endHere();
          else killTimers.push(setTimeout(endHere, VERDICT_MS));
        }
      });
    }

    const onSignal = (signal: NodeJS.Signals) => {
      log(`${signal}: stopping the job`);
      if (coordinator !== undefined) {
        coordinator.tell({ type: 'interrupt', reason: `interrupted by ${signal} on node ${nodeRank}` });
      } else {
        bus.publish(SUBJECTS.fatal, { kind: 'fatal', rank: firstRank, reason: `node ${nodeRank} launcher interrupted by ${signal}` });
        ending = true;
        stopWorkers(GRACE_MS);
        finish({ exitCode: 130, reason: `interrupted by ${signal}`, restartable: false });
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    const result = await finished;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await waitForExit([...children.values()], GRACE_MS);
    for (const timer of killTimers) clearTimeout(timer);
    coordinator?.close();
    schedulers?.stop();
    shutdownSubscription?.unsubscribe();
    connectionWatch.unsubscribe();
    endAttemptForRestart = undefined;
    await commits;
    return result;
  };

  // Recovery: a rank that died or stopped answering, or a dropped NATS connection, restarts every worker
  // (on every node) from the last committed checkpoint (or the start), up to restart.max times.
  let exitCode: number;
  let restart: RestartOrder | undefined;
  for (let restarts = 0; ; restarts++) {
    const result = await runAttempt(resumeDir, startStep, restart);
    exitCode = result.exitCode;
    if (restartOrders !== undefined) {
      if (!result.restartable) break;
      log('waiting for node 0 to restart the job');
      const next = await restartOrders.next(RESTART_ORDER_MS);
      if ('ended' in next) {
        log(`job ended by the coordinator: ${next.ended}`);
        break;
      }
      ({ resume: resumeDir, startStep } = next.order);
      restartOrders.ready(next.order);
      log(`restart ${next.order.attempt}: node 0 rolls every rank back to ${resumeDir === '' ? 'the start' : `the checkpoint of step ${startStep}`}`);
      continue;
    }
    if (exitCode === 0 || !result.restartable || restarts >= config.restart.max) {
      if (result.restartable && restarts >= config.restart.max && config.restart.max > 0) {
        log(`giving up after ${restarts} restart${restarts === 1 ? '' : 's'} (restart.max = ${config.restart.max})`);
      }
      // The other nodes wait for a restart order after a restartable failure: tell them there is none.
      if (result.restartable && nnodes > 1) bus.publish(SUBJECTS.shutdown, { kind: 'shutdown', reason: result.reason, exitCode: result.exitCode });
      break;
    }
    if (natsTransport !== undefined && !natsTransport.connected) {
      log(`waiting for the NATS server to come back (up to ${NATS_RETURN_MS / 1000} s) before restarting the workers`);
      if (!(await natsTransport.whenConnected(NATS_RETURN_MS))) {
        log(`giving up: no NATS server of ${nats.url} answered within ${NATS_RETURN_MS / 1000} s; start it (or another of the cluster) and resume with --resume ${options.outDir}`);
        break;
      }
    }
    const latest = await latestCheckpoint(checkpointRoot);
    resumeDir = latest?.dir ?? '';
    startStep = latest?.step ?? 0;
    keepMetricsThrough(join(options.outDir, 'metrics.jsonl'), startStep);
    // The other nodes read the checkpoint from the shared filesystem, maybe from another working folder.
    if (nnodes > 1) restart = { attempt: restarts + 1, resume: resumeDir === '' ? '' : resolve(resumeDir), startStep };
    log(
      `restart ${restarts + 1} of ${config.restart.max}: ${result.reason}; rolling every rank back to ` +
        `${latest === undefined ? 'the start (no checkpoint yet)' : `the checkpoint of step ${startStep}`}`,
    );
  }
  restartOrders?.close();
  const trace = mergeTraceParts(options.outDir);
  if (trace !== undefined) log(`timeline of every rank: ${trace} (open it in Perfetto or chrome://tracing)`);
  await bus.flush().catch(() => undefined);
  await bus.close().catch(() => undefined);
  stopSystem(system);
  await nats.privateServer?.stop();
  return exitCode;
}

/** The newest committed checkpoint under `root` (its `latest`), or undefined when there is none yet. */
async function latestCheckpoint(root: string): Promise<{ dir: string; step: number } | undefined> {
  if (!existsSync(join(root, LATEST_FILE))) return undefined;
  const dir = await resolveCheckpoint(root);
  const checkpoint = await loadCheckpoint(dir, { verify: true });
  const step = checkpoint.manifest.dataLoader.nextStep;
  checkpoint.close();
  return { dir, step };
}

/** A timeout from the environment (for slow machines and tests), else the default. */
function envMilliseconds(name: string, fallback: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}=${text} is not a positive number of milliseconds`);
  return value;
}

/** Waits for every child to exit; after `graceMs` kills the rest and waits for them too. */
async function waitForExit(children: RankProcess[], graceMs: number): Promise<void> {
  const alive = () => children.filter((c) => c.exitCode === null && c.signalCode === null);
  const exits = () => Promise.all(alive().map((c) => new Promise((resolve) => c.once('exit', resolve))));
  const timeout = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
  await Promise.race([exits(), timeout]);
  for (const child of alive()) child.kill('SIGKILL');
  await exits();
}

/** Turns rank 0's step reports into the trainer hooks' StepResults (metrics.jsonl, progress, epochs). */
class StepReporter {
  private readonly state: TrainerState;
  private readonly started = performance.now();
  private epoch = -1;

  constructor(
    config: TrainConfig,
    totalSteps: number,
    startStep: number,
    private readonly sampler: BatchSampler,
    private readonly hooks: Hook[],
    log: (line: string) => void,
  ) {
    this.state = { config, totalSteps, startStep, stepsPerEpoch: sampler.stepsPerEpoch, metrics: {}, log };
    for (const hook of hooks) hook.beforeTrain?.(this.state);
  }

  report(report: StepDoneMessage): void {
    const epoch = this.sampler.epochOf(report.step - 1);
    if (epoch !== this.epoch) {
      if (this.epoch >= 0) for (const hook of this.hooks) hook.afterEpoch?.(this.state, this.epoch);
      this.epoch = epoch;
      for (const hook of this.hooks) hook.beforeEpoch?.(this.state, epoch);
    }
    this.state.metrics = {};
    const result: StepResult = {
      step: report.step,
      epoch,
      loss: report.loss,
      tokens: report.tokens,
      samples: this.sampler.globalBatchSize,
      stepMs: report.stepMs,
      elapsedMs: performance.now() - this.started,
      learningRate: this.state.config.optimizer.lr,
      gradNorm: report.gradNorm,
    };
    for (const hook of this.hooks) hook.afterStep?.(this.state, result);
  }

  end(): void {
    if (this.epoch >= 0) for (const hook of this.hooks) hook.afterEpoch?.(this.state, this.epoch);
    for (const hook of this.hooks) hook.afterTrain?.(this.state);
  }
}
