/**
 * Implements: one rank's process. It joins the job over NATS, registers, heartbeats from its own thread
 * (a step holds the main thread for seconds), trains its part of the model in a nact actor through the
 * step gate, reports steps, and exits when the job ends or the coordinator says shut down.
 */
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { dispatch, spawn, start, stop as stopSystem } from 'nact';
import { escalateToJob } from '../actors/supervision.ts';
import { initBackend } from '../backend/select.ts';
import { Bus } from '../comm/bus.ts';
import { ProcessGroup } from '../comm/collectives.ts';
import type { Message, StepGoMessage, WorkerState } from '../comm/messages.ts';
import { connectNats } from '../comm/nats-transport.ts';
import { TransportTimeoutError } from '../comm/transport.ts';
import type { TrainConfig } from '../config/types.ts';
import { loadWebtextDataset, type TokenizedDataset } from '../dataset/webtext.ts';
import { GPT } from '../model/gpt.ts';
import { fullModelSlice } from '../model/params.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import * as tf from '../tf.ts';
import { restoreShard, writeShard } from '../train/checkpointing.ts';
import { AdamOptimizer } from '../train/optimizer.ts';
import { Trainer } from '../train/trainer.ts';
import { paramsForRank } from '../model/sharding.ts';
import type { RankFileRecord } from '../checkpoint/index.ts';
import { HeartbeatThread } from './heartbeat.ts';
import { serversFor } from './nats-url.ts';
import { trainPipelineRank } from './pipeline-worker.ts';
import { SUBJECTS } from './subjects.ts';
import type { WorkerEnvironment } from './worker-env.ts';

const HEARTBEAT_INTERVAL_MS = 1000;
/** A gate request unanswered this long is asked again (the job may be paused). */
const GATE_RETRY_MS = 5000;

export async function runWorker(env: WorkerEnvironment): Promise<number> {
  const log = (line: string) => process.stderr.write(`[rank ${env.rank}] ${line}\n`);
  const config = JSON.parse(readFileSync(env.configPath, 'utf8')) as TrainConfig;
  const grid = new ParallelGrid({ data: config.parallel.data, pipeline: config.parallel.pipeline, tensor: config.parallel.tensor.size });
  if (grid.world !== env.world) throw new Error(`the config's layout has ${grid.world} ranks but this job has ${env.world}`);

  // Each rank tries its own server of a cluster first, so the ranks spread over the servers.
  const servers = serversFor(env.natsUrl, env.rank);
  const transport = await connectNats({ url: servers, ...env.natsCredentials, name: `gpt-hybrid ${env.jobId} rank ${env.rank}`, log });
  if (servers.length > 1) log(`NATS: connected to ${transport.server} (servers: ${servers.join(', ')})`);
  const bus = new Bus({ jobId: env.jobId, transport, log });
  // See [Note: NATS interruptions] in coordinator-logic.ts: told once the link is back (nothing gets through before).
  let lostServer = '';
  transport.onConnectionChange((event) => {
    if (event.type === 'disconnect') lostServer = event.server;
    else bus.publish(SUBJECTS.connectionInterrupted, { kind: 'connection-interrupted', rank: env.rank, node: env.node, pid: process.pid, server: lostServer });
  });
  const system = start();
  let state: WorkerState = 'starting';
  let stepsDone = 0;
  let exitRequested: ((code: number) => void) | undefined;
  const exitCode = new Promise<number>((resolve) => (exitRequested = resolve));

  const heartbeats = new HeartbeatThread(
    { natsUrl: servers.join(','), natsCredentials: env.natsCredentials, jobId: env.jobId, rank: env.rank, intervalMs: HEARTBEAT_INTERVAL_MS },
    (error) => log(`heartbeat thread failed: ${error.message}`),
  );
  /** Shares the state with the heartbeat thread and, for changes worth telling at once, sends one now. */
  const beat = () => {
    heartbeats.update(state, stepsDone);
    bus.publish(SUBJECTS.heartbeat, { kind: 'heartbeat', rank: env.rank, step: stepsDone, state, rssMb: Math.round(process.memoryUsage().rss / 2 ** 20) });
  };

  bus.subscribe(SUBJECTS.shutdown, (message) => {
    if (message.kind !== 'shutdown') return;
    log(`shutting down: ${message.reason}`);
    exitRequested?.(message.exitCode === 0 ? 0 : 1);
  });
  // The launcher holds the other end of the IPC channel: if it dies, so do we (no orphans).
  process.on('disconnect', () => exitRequested?.(1));

  bus.publish(SUBJECTS.register, { kind: 'register', rank: env.rank, node: env.node, pid: process.pid, host: hostname() });
  beat();
  // Until the heartbeat thread is up (it compiles its sources first), and whenever this loop is free.
  const mainThreadBeats = setInterval(beat, HEARTBEAT_INTERVAL_MS);

  const reporter = grid.rankOf({ dp: 0, pp: grid.pipeline - 1, tp: 0 });
  const report = (result: { step: number; loss: number; gradNorm: number; stepMs: number; samples: number }) => {
    stepsDone = result.step;
    if (env.rank === reporter) {
      bus.publish(SUBJECTS.stepDone, {
        kind: 'step-done',
        rank: env.rank,
        step: result.step,
        loss: result.loss,
        tokens: result.samples * config.seqLen,
        stepMs: result.stepMs,
        gradNorm: result.gradNorm,
      });
    }
    beat();
  };
  /** Set by the training path once its model exists: writes this rank's checkpoint shard. */
  let shardWriter: ((folder: string, completedSteps: number) => Promise<RankFileRecord>) | undefined;
  const gate = async (step: number): Promise<StepGoMessage> => {
    for (;;) {
      try {
        const answer: Message = await bus.request(SUBJECTS.gate, { kind: 'step-ready', rank: env.rank, step }, GATE_RETRY_MS);
        if (answer.kind !== 'step-go' || answer.step !== step) throw new Error(`unexpected answer to step-ready ${step}: ${answer.kind}`);
        if (answer.save !== undefined) {
          if (shardWriter === undefined) throw new Error('asked to save a checkpoint before the model exists');
          const record = await shardWriter(answer.save, step);
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
    await initBackend(config.backend, log);
    const dataset = await loadWebtextDataset(config.data.path, { seqLen: config.seqLen, skipBadLines: config.data.skipBadLines, log: () => {} });
    state = 'ready';
    if (grid.pipeline > 1 || grid.tensor > 1) {
      await trainPipelineRank({
        config,
        grid,
        rank: env.rank,
        bus,
        dataset,
        totalSteps: env.totalSteps,
        log,
        gate,
        onStep: report,
        outDir: env.outDir,
        resume: env.resume,
        setShardWriter: (writer) => (shardWriter = writer),
      });
    } else {
      await trainDataParallelRank(dataset, report, gate);
    }
    state = 'done';
    beat();
    await bus.flush();
    return 0;
  };

  const trainDataParallelRank = async (dataset: TokenizedDataset, onStep: typeof report, askGate: typeof gate): Promise<void> => {
    const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
    const dpGroup = new ProcessGroup({ bus, name: grid.groupName('dp', env.rank), ranks: grid.dataGroup(env.rank), rank: env.rank, log });
    // A NATS publish before the peer has subscribed is lost: meet every member once before any collective.
    await dpGroup.ready();
    const held = paramsForRank(config.model, { layerRanges: [[0, config.model.numLayers]], tp: 1, tpRank: 0 });
    const optimizer = new AdamOptimizer(config.optimizer);
    const startStep = env.resume === '' ? 0 : await restoreShard(env.resume, held, model.params, optimizer, false);
    shardWriter = (folder, completedSteps) => writeShard(folder, env.rank, completedSteps, held, model.params, optimizer);
    const trainer = new Trainer({
      optimizer,
      startStep,
      config,
      model,
      dataset,
      totalSteps: env.totalSteps,
      log,
      gate: async (step) => (await askGate(step)).action,
      dataParallel: { rank: grid.coordinates(env.rank).dp, size: grid.data, allReduce: (values) => dpGroup.allReduce(values, 'sum', { inPlace: true }) },
      hooks: [{ name: 'report', afterStep: (_state, result) => onStep(result) }],
    });
    try {
      await trainer.fit();
    } finally {
      trainer.dispose();
      model.dispose();
      dpGroup.close();
    }
  };

  // The compute actor: its handler holds its mailbox for the whole run, which is why heartbeats and
  // shutdown live elsewhere. A crash is escalated to the job as a fatal message naming this rank.
  const trainerActor = spawn(
    system,
    async (actorState: unknown) => {
      exitRequested?.(await train());
      return actorState;
    },
    'trainer',
    {
      onCrash: escalateToJob({
        bus,
        rank: env.rank,
        subject: SUBJECTS.fatal,
        log,
        onFatal: () => {
          state = 'failed';
          exitRequested?.(1);
        },
      }),
    },
  );
  dispatch(trainerActor, 'run');

  const code = await exitCode;
  clearInterval(mainThreadBeats);
  await heartbeats.stop();
  await bus.flush().catch(() => undefined);
  await bus.close().catch(() => undefined);
  stopSystem(system);
  return code;
}
