/**
 * Implements: the launcher of a multi-process job (torchrun's role): one per node. It resolves the NATS
 * server, tokenizes the data once (so workers find the cache) and verifies the checkpoint to resume; then
 * it runs the job in attempts (job-attempt.ts: on node 0 the coordinator actor, the scheduler actors and
 * the run's metrics; on every node one worker process per local rank), restarting from the last
 * checkpoint after a failure. It shuts every worker down on success, failure or Ctrl-C, and leaves no
 * process behind. A simulated job (`simulate`) runs the same: its ranks are SimulatedRanks in this
 * process over the in-process transport, so it needs no NATS server and starts no process.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { start, stop as stopSystem } from 'nact';
import { initBackend } from '../backend/select.ts';
import { loadCheckpoint, resolveCheckpoint } from '../checkpoint/index.ts';
import { latestCheckpointOfRun, newRunId, runIdOf } from '../checkpoint/run-id.ts';
import { checkModelFits } from '../checkpoint/model-fit.ts';
import { Bus } from '../comm/bus.ts';
import { LocalNetwork } from '../comm/local-transport.ts';
import { PRIVATE_SERVER_MAX_PAYLOAD } from '../comm/nats-server.ts';
import { resolveNatsCredentials, type NatsCredentialFlags, type NatsCredentials } from '../comm/nats-credentials.ts';
import { connectNats, type NatsTransport } from '../comm/nats-transport.ts';
import { launcherJobKey, writeJobKeyFile } from '../comm/job-key.ts';
import { writeOwnerOnlyFile } from '../comm/owner-only-file.ts';
import { PRIVATE_SERVER_TOKEN_FILE } from './nats-url.ts';
import type { Transport } from '../comm/transport.ts';
import type { TrainConfig } from '../config/types.ts';
import type { BatchSampler } from '../dataset/sampler.ts';
import { loadRunDatasets, type RunDatasets } from '../dataset/validation-split.ts';
import { evaluationBatches } from '../train/evaluation-plan.ts';
import { ParallelGrid } from '../parallel/grid.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import * as tf from '../tf.ts';
import type { DashboardAddress } from '../dashboard/address.ts';
import { JobView } from '../dashboard/job-view.ts';
import { startDashboard, type Dashboard } from '../dashboard/server.ts';
import { TraceCollector } from '../trace/trace-parts.ts';
import { checkStepsLeft } from '../train/checkpointing.ts';
import { globalBatchSampler, totalStepsOf } from '../train/global-batch.ts';
import type { Hook } from '../train/hooks/hook.ts';
import { keepMetricsThrough } from '../train/metrics-file.ts';
import { JobAttempt, type JobHost } from './job-attempt.ts';
import { resolveNats, serversFor, type ResolvedNats } from './nats-url.ts';
import { RestartOrders, type RestartOrder } from './node-restart.ts';
import { prepareDataPlane, type DataPlaneSettings } from './data-plane-setup.ts';
import { recordJobEnd, writeJobFile } from './job-file.ts';
import type { RankProcess } from './simulated-rank.ts';

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
  /** The address this node's workers' data planes listen on (comm.dataPlane "tcp"); default: data-plane-setup.ts. */
  dataPlaneHost?: string;
  /**
   * Run every rank in this process over the in-process transport (no NATS server, no worker process);
   * `network` lets a test inject faults; the timeouts let it see a lost message sooner.
   */
  simulate?: { network?: LocalNetwork; actionTimeoutMs?: number; receiveTimeoutMs?: number; onRank?: (rank: number, handle: RankProcess) => void };
  /** Serve the live job page there (node 0 only). */
  dashboard?: DashboardAddress;
  /** The job key's file (else $GPT_HYBRID_JOB_KEY, else one is made: one node only); comm/job-key.ts. */
  jobKeyFile?: string;
}

/** How long a restart waits for a lost NATS server to answer again (the client's own reconnect window). */
const NATS_RETURN_MS = natsReturnMs(process.env.GPT_HYBRID_NATS_RETURN_MS);

/** GPT_HYBRID_NATS_RETURN_MS: how long a launcher waits for a dropped NATS server before giving up (default 30 s). */
function natsReturnMs(text: string | undefined): number {
  if (text === undefined || text === '') return 30_000;
  const ms = Number(text);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new Error(`GPT_HYBRID_NATS_RETURN_MS=${text}: give a whole number of milliseconds`);
  return ms;
}
/** Another node: how long it waits for node 0's restart order (or its final word) after a restartable failure. */
const RESTART_ORDER_MS = 120_000;

export async function launch(given: LaunchOptions): Promise<number> {
  // The live page shows node 0's log lines and step metrics, so it hears them from the start.
  const view = given.dashboard !== undefined && given.nodeRank === 0 ? new JobView() : undefined;
  if (given.dashboard !== undefined && given.nodeRank !== 0) given.log(`--dashboard: node 0's launcher serves the job page; node ${given.nodeRank} serves none`);
  const options: LaunchOptions =
    view === undefined
      ? given
      : {
          ...given,
          hooks: [...given.hooks, view.hook],
          log: (line) => {
            given.log(line);
            view.log(line);
          },
        };
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
  // Before connecting: a job on several nodes without its key fails here, saying how to make one.
  const jobKey = launcherJobKey(options.jobKeyFile, nnodes);
  // A simulated job's messages fit what a private nats-server's do.
  const network = simulate === undefined ? undefined : (simulate.network ?? new LocalNetwork(PRIVATE_SERVER_MAX_PAYLOAD));
  const nats: ResolvedNats = network !== undefined ? { url: 'in-process', privateServer: undefined, urlCredentials: undefined } : await resolveNats(options.nats, nodeRank === 0, log);
  if (nats.urlCredentials !== undefined && options.nats !== undefined) {
    // This process shows it masked, but the shell and npm that started it keep the command line as typed.
    log('warning: the NATS login in --nats stays readable in `ps` in the processes that started this one (a shell, npm); pass it as $NATS_TOKEN (or $NATS_USER and $NATS_PASSWORD) or with --nats-token-file FILE instead');
  }

  const prepared = await prepareNode(options, jobId, nats, network);
  const { transport, natsTransport, natsCredentials, natsLogin, sampler, data, totalSteps, runId } = prepared;
  let { resumeDir, startStep } = prepared;
  const resumedFrom = resumeDir === '' ? undefined : { dir: resumeDir, step: startStep };
  const checkpointRoot = join(options.outDir, 'checkpoints');

  const configFile = join(options.outDir, nnodes > 1 ? `config.node${nodeRank}.json` : 'config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2) + '\n');
  const bus = new Bus({ jobId, transport, log, key: jobKey });
  let dataPlane: DataPlaneSettings | undefined;
  let dashboard: Dashboard | undefined;
  try {
    dataPlane = network === undefined ? prepareDataPlane({ config, nnodes, jobId, jobKey, host: options.dataPlaneHost, log }) : undefined;
    if (view !== undefined) {
      const coordinates = Array.from({ length: grid.world }, (_, rank) => grid.coordinates(rank));
      dashboard = await startDashboard(options.dashboard!, { jobId, runFolder: options.outDir, layout: grid.describe(), coordinates, totalSteps, bus, view, log });
      log(`live job page: ${dashboard.url}`);
    }
  } catch (error) {
    await bus.close().catch(() => undefined);
    await nats.privateServer?.stop();
    throw error;
  }
  const system = start();
  // Node 0 gathers every rank's timeline (the folder is shared) into trace.json as the ranks write it;
  // a resumed run's goes on after its earlier launches'.
  const traceCollector =
    nodeRank === 0
      ? new TraceCollector(options.outDir, { resumed: resumedFrom !== undefined, ...(view === undefined ? {} : { onEvents: (events) => view.traceEvents(events) }) })
      : undefined;
  const traceTimer = traceCollector === undefined ? undefined : setInterval(() => collectTrace(traceCollector, log), TRACE_COLLECT_MS).unref();

  if (network !== undefined) {
    log(`job ${jobId}: ${grid.describe()} simulated in this process (in-process transport, no worker processes)`);
  } else if (nodeRank === 0) {
    // ctl reads them here (their owner only): a client of the server without the key is refused, and a
    // private server wants its login.
    writeJobKeyFile(options.outDir, jobKey);
    if (nats.privateServer?.token !== undefined) writeOwnerOnlyFile(join(options.outDir, PRIVATE_SERVER_TOKEN_FILE), `${nats.privateServer.token}\n`);
    writeJobFile(options.outDir, {
      jobId,
      runId,
      nats: nats.url,
      world: grid.world,
      nnodes,
      layout: grid.describe(),
      parallel: { data: grid.data, pipeline: grid.pipeline, tensor: grid.tensor, order: grid.order },
      launcherPid: process.pid,
      startedAt: new Date().toISOString(),
    });
    log(`job ${jobId}: ${grid.describe()} on ${nnodes} node(s), NATS ${nats.url} (${natsLogin})`);
    log(
      // The run folder holds what ctl needs besides a login: the job id, the server and the job's key.
      `control it with: gpt-hybrid ctl ${options.outDir} status|pause|resume|checkpoint|stop` +
        (Object.keys(natsCredentials).length === 0 ? '' : ' and the same NATS credential options or variables'),
    );
  } else {
    log(`node ${nodeRank}: joining job ${jobId} at ${nats.url} (${natsLogin})`);
  }

  const job: JobHost = {
    jobId,
    runId,
    config,
    grid,
    nnodes,
    nodeRank,
    nprocPerNode,
    bus,
    system,
    transport,
    ranks:
      network !== undefined
        ? { kind: 'simulated', network, data, jobKey, actionTimeoutMs: simulate?.actionTimeoutMs, receiveTimeoutMs: simulate?.receiveTimeoutMs, onRank: simulate?.onRank }
        : { kind: 'process', natsUrl: nats.url, natsCredentials, configFile, jobKey, ...(dataPlane === undefined ? {} : { dataPlane }) },
    totalSteps,
    sampler,
    validationSamples: data.validation?.numSamples,
    hooks: options.hooks,
    outDir: options.outDir,
    checkpointRoot,
    registerTimeoutMs: options.registerTimeoutMs,
    heartbeatTimeoutMs: options.heartbeatTimeoutMs,
    log,
  };

  // Recovery across nodes: the other nodes' launchers take node 0's restart orders; see node-restart.ts.
  let attempt: JobAttempt | undefined;
  const restartOrders = nodeRank > 0 ? new RestartOrders(bus, nodeRank, () => attempt?.endForRestart()) : undefined;

  // Recovery: a rank that died or stopped answering, or a dropped NATS connection, restarts every worker
  // (on every node) from the last committed checkpoint (or the start), up to restart.max times.
  let exitCode: number;
  let endReason = '';
  let restart: RestartOrder | undefined;
  // What the launcher awaits now. Should the event loop empty while it waits (nothing left that could
  // end the wait), Node would end the process with exit 13 and no word; this says what it waited on,
  // records the end in job.json and exits 1 instead.
  let waitingOn = 'starting the job';
  const ranOutOfWork = () => {
    log(`the launcher had nothing left to wait on while ${waitingOn}: ending the job with exit 1; resume with --resume ${options.outDir}`);
    process.exitCode = 1;
    if (network === undefined && nodeRank === 0) recordJobEnd(options.outDir, { at: new Date().toISOString(), exitCode: 1, reason: `the launcher ran out of work while ${waitingOn}` });
  };
  process.once('beforeExit', ranOutOfWork);
  try {
    for (let restarts = 0; ; restarts++) {
      attempt = new JobAttempt(job, { resumeDir, startStep, restart, restarts });
      waitingOn = `running attempt ${restarts + 1} of the job`;
      const result = await attempt.run();
      attempt = undefined;
      exitCode = result.exitCode;
      endReason = result.reason;
      if (restartOrders !== undefined) {
        if (!result.restartable) break;
        log('waiting for node 0 to restart the job');
        waitingOn = "waiting for node 0's restart order";
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
        waitingOn = 'waiting for the NATS server to come back';
        if (!(await natsTransport.whenConnected(NATS_RETURN_MS))) {
          log(`giving up: no NATS server of ${nats.url} answered within ${NATS_RETURN_MS / 1000} s; start it (or another of the cluster) and resume with --resume ${options.outDir}`);
          break;
        }
      }
      // Only this run's checkpoints; before its first, the checkpoint this launch resumed from.
      const latest = (await latestCheckpointOfRun(checkpointRoot, runId, (dir, other) => log(`passing over ${dir}: a checkpoint of another run (${other})`))) ?? resumedFrom;
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
    waitingOn = 'cleaning up after the job';
    restartOrders?.close();
    if (network === undefined && nodeRank === 0) recordJobEnd(options.outDir, { at: new Date().toISOString(), exitCode, reason: endReason });
    clearInterval(traceTimer);
    await dashboard?.close();
    if (traceCollector !== undefined) log(`timeline of every rank: ${traceCollector.finish()} (open it in Perfetto or chrome://tracing)`);
    await bus.finish();
    stopSystem(system);
    await nats.privateServer?.stop();
    return exitCode;
  } finally {
    process.off('beforeExit', ranOutOfWork);
  }
}

/** How often node 0 copies the ranks' new timeline events into trace.json. */
const TRACE_COLLECT_MS = 1_000;

/** A timeline that cannot be copied (a full disk) is reported, and the job goes on. */
function collectTrace(collector: TraceCollector, log: (line: string) => void): void {
  try {
    collector.collect();
  } catch (error) {
    log(`warning: trace.json not updated: ${error instanceof Error ? error.message : String(error)}`);
  }
}

interface PreparedNode {
  transport: Transport;
  /** Set unless simulated: the restart loop waits on it after a dropped link. */
  natsTransport: NatsTransport | undefined;
  natsCredentials: NatsCredentials;
  natsLogin: string;
  data: RunDatasets;
  sampler: BatchSampler;
  totalSteps: number;
  /** The checkpoint to resume from ('' for the start), and the steps it has done. */
  resumeDir: string;
  startStep: number;
  /** The run the checkpoints belong to: the resumed checkpoint's, else a new one (run-id.ts). */
  runId: string;
}

/** Connects this node, loads the data and checks the checkpoint to resume; on failure leaves nothing open. */
async function prepareNode(options: LaunchOptions, jobId: string, nats: ResolvedNats, network: LocalNetwork | undefined): Promise<PreparedNode> {
  const { config, log, nodeRank } = options;
  let natsCredentials: NatsCredentials = {};
  let natsLogin = 'no login';
  let transport: Transport | undefined;
  let natsTransport: NatsTransport | undefined;
  try {
    if (network !== undefined) {
      transport = network.connect();
    } else {
      const privateToken = nats.privateServer?.token;
      ({ credentials: natsCredentials, description: natsLogin } =
        privateToken === undefined
          ? resolveNatsCredentials(options.natsCredentials ?? {}, nats.urlCredentials ?? {})
          : { credentials: { token: privateToken }, description: 'a token made for its private server' });
      // Before the data: refused credentials end the job at once, not after a long tokenization.
      natsTransport = await connectNats({ url: serversFor(nats.url, nodeRank), ...natsCredentials, name: `gpt-hybrid ${jobId} launcher ${nodeRank}`, log });
      transport = natsTransport;
    }
    // Tokenize here once: the workers then read the cache instead of racing to build it.
    const data = await loadRunDatasets(config, { log });
    // Refused before any worker starts: a validation set smaller than one global batch.
    if (data.validation !== undefined) evaluationBatches(config, data.validation.numSamples);
    if (network !== undefined) {
      // Simulated ranks share this process, hence its backend.
      tf.enableProdMode();
      await initBackend(config.backend, log);
    }
    const sampler = globalBatchSampler(config, data.train.numSamples);
    const totalSteps = totalStepsOf(config, sampler, options.steps);
    let resumeDir = '';
    let startStep = 0;
    let runId: string | undefined;
    // Resuming: verify the whole checkpoint once here; the workers then read only their regions of it.
    if (options.resume !== undefined) {
      resumeDir = await resolveCheckpoint(options.resume);
      const checkpoint = await loadCheckpoint(resumeDir, { verify: true });
      try {
        checkModelFits(checkpoint.manifest, options.config.model, resumeDir);
        startStep = checkpoint.manifest.dataLoader.nextStep;
        runId = runIdOf(checkpoint.manifest);
      } finally {
        checkpoint.close();
      }
      log(`resuming from ${resumeDir}: continuing after step ${startStep}`);
      checkStepsLeft(startStep, totalSteps);
      if (nodeRank === 0) keepMetricsThrough(join(options.outDir, 'metrics.jsonl'), startStep);
    }
    return { transport, natsTransport, natsCredentials, natsLogin, data, sampler, totalSteps, resumeDir, startStep, runId: runId ?? newRunId() };
  } catch (error) {
    // An open connection or a private server would keep this process alive after the error.
    await transport?.close().catch(() => undefined);
    await nats.privateServer?.stop();
    throw error;
  }
}
