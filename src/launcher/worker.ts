/**
 * Implements: one rank's process. It joins the job over NATS and runs the rank (runRank): registers,
 * heartbeats (from its own thread in a worker process: a step holds the main thread for seconds),
 * spawns the rank's actors, opens each step the coordinator's gate lets run, reports steps, and ends
 * when the job ends or the coordinator says shut down. A simulated job (simulated-rank.ts) runs every
 * rank's runRank in one process over the in-process transport.
 */
import { writingRanks } from '../checkpoint/manifest.ts';
import { STOP_SIGNALS } from '../protocol/stop-signals.ts';
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { dispatch, spawn, start, stop as stopSystem } from 'nact';
import { RemoteActors } from '../actors/remote.ts';
import { spawnRank, type RankActors } from '../actors/rank.ts';
import { escalateToJob } from '../actors/supervision.ts';
import { initBackend } from '../backend/select.ts';
import { Bus } from '../comm/bus.ts';
import { ProcessGroup } from '../comm/collectives.ts';
import { DataPlane } from '../comm/data-plane.ts';
import type { Message, StepGoMessage, WorkerState } from '../protocol/messages.ts';
import { connectNats } from '../comm/nats-transport.ts';
import { TransportTimeoutError } from '../comm/transport.ts';
import type { TrainConfig } from '../config/types.ts';
import { loadRunDatasets, type RunDatasets } from '../dataset/validation-split.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import * as tf from '../tf.ts';
import type { RankFileRecord } from '../checkpoint/index.ts';
import { HeartbeatThread } from './heartbeat.ts';
import { serversFor } from './nats-url.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import type { NatsCredentials } from '../comm/nats-credentials.ts';
import type { Transport } from '../comm/transport.ts';
import type { WorkerEnvironment } from './worker-env.ts';
import { lossStageOf, placementOf } from '../scheduler/placement.ts';

const HEARTBEAT_INTERVAL_MS = 1000;
/** A gate request unanswered this long is asked again (the job may be paused). */
const GATE_RETRY_MS = 5000;
/** How long a rank waits before it reports a broken data plane link (see its use). */
const BROKEN_LINK_REPORT_MS = 2000;
/** How long an ending rank waits for its driver to unwind after failing what it waited on. */
const DRIVER_UNWIND_MS = 5000;

export async function runWorker(env: WorkerEnvironment): Promise<number> {
  const log = (line: string) => process.stderr.write(`[rank ${env.rank}] ${line}\n`);
  const config = JSON.parse(readFileSync(env.configPath, 'utf8')) as TrainConfig;
  // Each rank tries its own server of a cluster first, so the ranks spread over the servers.
  const servers = serversFor(env.natsUrl, env.rank);
  const transport = await connectNats({ url: servers, ...env.natsCredentials, name: `gpt-hybrid ${env.jobId} rank ${env.rank}`, log });
  if (servers.length > 1) log(`NATS: connected to ${transport.server} (servers: ${servers.join(', ')})`);
  let exitNow: ((code: number) => void) | undefined;
  // The launcher holds the other end of the IPC channel: if it dies, so do we (no orphans).
  process.on('disconnect', () => exitNow?.(1));
  // Stop signals are the launcher's to act on (it stops the job at a step boundary with a checkpoint,
  // job-attempt.ts); a terminal's Ctrl-C reaches every process of its group, workers included.
  for (const signal of STOP_SIGNALS) process.on(signal, () => log(`${signal}: left to the launcher, which stops the job`));
  const { dataPlane, jobKey, ...rankEnv } = env;
  return runRank({
    ...rankEnv,
    jobKey: Buffer.from(jobKey, 'hex'),
    config,
    transport,
    log,
    heartbeatThread: { natsUrl: servers.join(','), natsCredentials: env.natsCredentials },
    ...(dataPlane === undefined ? {} : { dataPlane: { key: Buffer.from(dataPlane.key, 'hex'), host: dataPlane.host } }),
    onExitHandle: (exit) => (exitNow = exit),
  });
}

export interface RunRankOptions {
  jobId: string;
  rank: number;
  world: number;
  node: number;
  totalSteps: number;
  outDir: string;
  resume: string;
  config: TrainConfig;
  /** The rank's own connection (the bus built on it is closed when the rank ends). */
  transport: Transport;
  /** What the job's messages are signed with. */
  jobKey: Buffer;
  log: (line: string) => void;
  /** Worker processes: heartbeats from a thread of their own with its own connection; absent: from this loop. */
  heartbeatThread?: { natsUrl: string; natsCredentials: NatsCredentials };
  /** Already tokenized (the simulated job loads them once for every rank); absent: read from the cache. */
  data?: RunDatasets;
  /** The process's backend is already set up (simulated ranks share the launcher's); absent: set it up. */
  backendReady?: boolean;
  /** Receives the function that ends the rank at once with a code (a lost launcher, a killed simulated rank). */
  onExitHandle?: (exit: (code: number) => void) => void;
  /** Direct links for tensors (comm/data-plane.ts): the job key and the address to listen on; absent: through the bus. */
  dataPlane?: { key: Uint8Array; host: string };
  /** The stage actor's wait for a missing action, and process groups' receive timeout (tests shorten them). */
  actionTimeoutMs?: number;
  receiveTimeoutMs?: number;
}

export async function runRank(options: RunRankOptions): Promise<number> {
  const env = options;
  const { config, log, transport } = options;
  const grid = new ParallelGrid({ data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size });
  if (grid.world !== env.world) throw new Error(`the config's layout has ${grid.world} ranks but this job has ${env.world}`);
  const bus = new Bus({ jobId: env.jobId, transport, log, key: options.jobKey });
  // See [Note: NATS interruptions] in actors/coordinator-logic.ts: told once the link is back (nothing gets through before).
  let lostServer = '';
  transport.onConnectionChange((event) => {
    if (event.type === 'disconnect') lostServer = event.server;
    else bus.publish(SUBJECTS.connectionInterrupted, { kind: 'connection-interrupted', rank: env.rank, node: env.node, pid: process.pid, server: lostServer });
  });
  // See [Note: data plane links] in comm/data-plane.ts: a broken link loses pieces, like a dropped NATS connection.
  const dataPlane =
    options.dataPlane === undefined
      ? undefined
      : await DataPlane.listen({
          bus,
          jobId: env.jobId,
          rank: env.rank,
          key: options.dataPlane.key,
          host: options.dataPlane.host,
          log,
          // Told after a moment: when the peer died, its launcher's word of the death (the clearer reason) comes first.
          onBroken: (peer, reason) =>
            setTimeout(() => {
              if (!ending) bus.publish(SUBJECTS.connectionInterrupted, { kind: 'connection-interrupted', rank: env.rank, node: env.node, pid: process.pid, server: reason, peer });
            }, BROKEN_LINK_REPORT_MS).unref(),
        });
  const system = start();
  const remote = new RemoteActors(bus, system, { rank: env.rank }, log);
  let rankActors: RankActors | undefined;
  let driverRun: Promise<number> | undefined;
  /** The rank is ending (its exit code is known). */
  let ending = false;
  let state: WorkerState = 'starting';
  let stepsDone = 0;
  /** How long this rank's last step took (heartbeats carry it to `ctl status` and the live page). */
  let lastStepMs: number | undefined;
  let exitRequested: ((code: number) => void) | undefined;
  const exitCode = new Promise<number>((resolve) => (exitRequested = resolve));
  options.onExitHandle?.((code) => exitRequested?.(code));

  const heartbeats =
    options.heartbeatThread === undefined
      ? undefined
      : new HeartbeatThread(
          { ...options.heartbeatThread, jobId: env.jobId, jobKey: options.jobKey.toString('hex'), rank: env.rank, intervalMs: HEARTBEAT_INTERVAL_MS },
          (error) => log(`heartbeat thread failed: ${error.message}`),
        );
  /** Shares the state with the heartbeat thread and, for changes worth telling at once, sends one now (with the rank's actors). */
  const beat = () => {
    heartbeats?.update(state, stepsDone, lastStepMs);
    const actors = rankActors?.statuses() ?? [];
    const rssMb = Math.round(process.memoryUsage().rss / 2 ** 20);
    bus.publish(SUBJECTS.heartbeat, { kind: 'heartbeat', rank: env.rank, step: stepsDone, state, rssMb, ...(lastStepMs === undefined ? {} : { stepMs: Math.round(lastStepMs) }), actors });
  };

  bus.subscribe(SUBJECTS.shutdown, (message) => {
    if (message.kind !== 'shutdown') return;
    log(`shutting down: ${message.reason}`);
    exitRequested?.(message.exitCode === 0 ? 0 : 1);
  });
  bus.publish(SUBJECTS.register, { kind: 'register', rank: env.rank, node: env.node, pid: process.pid, host: hostname() });
  beat();
  // Until the heartbeat thread is up (it compiles its sources first), and whenever this loop is free.
  const mainThreadBeats = setInterval(beat, HEARTBEAT_INTERVAL_MS);

  // The stage holding the head computes the loss: the last one, or the first in zbv's V.
  const reporter = grid.rankOf({ dp: 0, pp: lossStageOf(grid.pipeline, config.numChunks, placementOf(config.schedule)), tp: 0 });
  const report = (result: { step: number; loss: number; gradNorm: number; stepMs: number; samples: number; skipped?: boolean; nonFinite?: string; lossScale?: number }) => {
    stepsDone = result.step;
    lastStepMs = result.stepMs;
    if (env.rank === reporter) {
      bus.publish(SUBJECTS.stepDone, {
        kind: 'step-done',
        rank: env.rank,
        step: result.step,
        loss: result.loss,
        tokens: result.samples * config.seqLen,
        stepMs: result.stepMs,
        gradNorm: result.gradNorm,
        ...(result.skipped === true ? { skipped: true, ...(result.nonFinite === undefined ? {} : { nonFinite: true }) } : {}),
        ...(result.lossScale === undefined ? {} : { lossScale: result.lossScale }),
        rssMb: Math.round(process.memoryUsage.rss() / 2 ** 20),
      });
    }
    beat();
  };
  /** The reporting rank tells the coordinator a validation loss (every replica's, already reduced). */
  const reportEvaluation = (result: { step: number; loss: number; samples: number; elapsedMs: number }) => {
    if (env.rank !== reporter) return;
    bus.publish(SUBJECTS.evaluationDone, { kind: 'evaluation-done', rank: env.rank, step: result.step, loss: result.loss, samples: result.samples, elapsedMs: result.elapsedMs });
  };
  const writesShard = writingRanks(grid).includes(env.rank);
  /** Set by the training path once its model exists: writes this rank's checkpoint shard. */
  let shardWriter: ((folder: string, completedSteps: number) => Promise<RankFileRecord>) | undefined;
  const gate = async (step: number): Promise<StepGoMessage> => {
    for (;;) {
      try {
        const answer: Message = await bus.request(SUBJECTS.gate, { kind: 'step-ready', rank: env.rank, step }, GATE_RETRY_MS);
        if (answer.kind !== 'step-go' || answer.step !== step) throw new Error(`unexpected answer to step-ready ${step}: ${answer.kind}`);
        if (answer.save !== undefined) {
          if (shardWriter === undefined) throw new Error('asked to save a checkpoint before the model exists');
          // One copy of each shard (manifest.ts writingRanks): another replica holds the same values and only says it is there.
          const record = writesShard ? await shardWriter(answer.save, step) : { rank: env.rank, replica: grid.coordinates(env.rank).dp };
          bus.publish(SUBJECTS.checkpointSaved, { kind: 'checkpoint-saved', rank: env.rank, step, record: record as unknown as { [key: string]: unknown } });
        }
        state = answer.action === 'run' ? 'training' : 'stopping';
        beat();
        return answer;
      } catch (error) {
        if (!(error instanceof TransportTimeoutError)) throw error;
        state = 'paused';
        beat();
      }
    }
  };

  const train = async (): Promise<number> => {
    tf.enableProdMode();
    if (options.backendReady !== true) await initBackend(config.backend, log);
    const data = options.data ?? (await loadRunDatasets(config, { log: () => {} }));
    state = 'ready';
    await drivePipelineRank(data);
    state = 'done';
    beat();
    await bus.flush();
    return 0;
  };

  /** Opens every step the gate lets run in the rank's stage actor, which runs the scheduler's actions. */
  const drivePipelineRank = async (data: RunDatasets): Promise<void> => {
    const actors = await spawnRank({
      config,
      grid,
      rank: env.rank,
      bus,
      system,
      remote,
      dataset: data.train,
      validation: data.validation,
      dataPlane,
      log,
      resume: env.resume,
      totalSteps: env.totalSteps,
      actionTimeoutMs: options.actionTimeoutMs,
      receiveTimeoutMs: options.receiveTimeoutMs,
      traceFolder: env.outDir,
    });
    rankActors = actors;
    shardWriter = (folder, completedSteps) => actors.writeShard(folder, completedSteps);
    try {
      for (let step = actors.startStep; ; step++) {
        const go = await gate(step);
        if (go.evaluate === true) {
          const started = performance.now();
          const evaluation = await actors.evaluate(step);
          if (evaluation.loss !== undefined) reportEvaluation({ step, loss: evaluation.loss, samples: evaluation.samples, elapsedMs: performance.now() - started });
        }
        if (go.action === 'stop' || step >= env.totalSteps) break;
        const started = performance.now();
        const result = await actors.runStep(step);
        report({ ...result, step: step + 1, stepMs: performance.now() - started });
      }
      await actors.finish();
    } finally {
      rankActors = undefined;
      actors.dispose();
    }
  };


  const escalate = escalateToJob({
    bus,
    rank: env.rank,
    subject: SUBJECTS.fatal,
    log,
    onFatal: () => {
      state = 'failed';
      exitRequested?.(1);
    },
  });
  // The rank's driver: it asks the gate before each step and opens the step in the stage actor,
  // holding its own mailbox for the run, which is why
  // heartbeats and shutdown live elsewhere. A crash is escalated to the job as a fatal message naming
  // this rank.
  const driverActor = spawn(
    system,
    async (actorState: unknown) => {
      driverRun = train();
      exitRequested?.(await driverRun);
      return actorState;
    },
    'driver',
    {
      // A driver failing because the rank is ending (its actors aborted) is no news for the job.
      onCrash: (message, error, context, child) => (ending ? context.stop : escalate(message, error, context, child)),
    },
  );
  dispatch(driverActor, 'run');

  const code = await exitCode;
  ending = true;
  if (rankActors !== undefined) {
    // Ended before the run did: fail what the driver waits on, and give it a moment to dispose its stage.
    rankActors.abort();
    await Promise.race([driverRun?.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, DRIVER_UNWIND_MS).unref())]);
  }
  clearInterval(mainThreadBeats);
  await heartbeats?.stop();
  remote.close();
  if (dataPlane !== undefined) {
    await dataPlane.close().catch(() => undefined);
    const { sent, received, rejected } = dataPlane.stats;
    log(`data plane: ${sent} messages sent and ${received} received over direct links${rejected === 0 ? '' : `, ${rejected} refused`}`);
  }
  await bus.finish();
  stopSystem(system);
  return code;
}
