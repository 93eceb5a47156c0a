/**
 * Implements: `gpt-hybrid train`: config, backend, data, model, trainer with the seed's hooks, and the
 * run folder (the resolved config, metrics.jsonl). Single process for now; parallel layouts are refused
 * here until the launcher exists.
 */
import { STOP_SIGNALS, stopExitCode, type StopSignal } from '../protocol/stop-signals.ts';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { initBackend } from '../backend/select.ts';
import { loadConfig } from '../config/load.ts';
import type { TrainConfig } from '../config/types.ts';
import { loadRunDatasets } from '../dataset/validation-split.ts';
import { GPT } from '../model/gpt.ts';
import { countParameters, fullModelSlice } from '../model/params.ts';
import * as tf from '../tf.ts';
import { LogMetricByEpochHook } from '../train/hooks/log-by-epoch.ts';
import { LogMetricByStepHook } from '../train/hooks/log-by-step.ts';
import { LossHook } from '../train/hooks/loss.ts';
import { TensorBoardHook } from '../train/hooks/tensorboard.ts';
import { ThroughputHook } from '../train/hooks/throughput.ts';
import { checkStepsLeft, restoreCheckpoint } from '../train/checkpointing.ts';
import { keepMetricsThrough } from '../train/metrics-file.ts';
import { resolveCheckpoint, runFolderOf } from '../checkpoint/index.ts';
import { newRunId } from '../checkpoint/run-id.ts';
import { AdamOptimizer } from '../train/optimizer.ts';
import { Trainer } from '../train/trainer.ts';
import { launch } from '../launcher/launch.ts';
import { TraceFile } from '../trace/trace-file.ts';
import { TraceRecorder } from '../trace/trace.ts';
import { maskProcessTitle } from '../comm/nats-credentials.ts';
import { earlierRunIn, removeEarlierRun } from '../launcher/run-folder.ts';
import { lockRunFolder, RunFolderInUseError, type RunLock } from '../launcher/run-lock.ts';
import { PROGRAM, UsageError } from './command-spec.ts';
import { trainOverrides, type TrainCommand } from './train-args.ts';

export async function runTrain(command: TrainCommand): Promise<number> {
  maskProcessTitle();
  const log = (line: string) => {
    if (!command.quiet) process.stdout.write(`${line}\n`);
  };
  const worldSize = command.nprocPerNode === undefined ? undefined : command.nprocPerNode * command.nnodes;
  const config = loadConfig(command.configPath, trainOverrides(command), worldSize === undefined ? {} : { worldSize });
  if (config.fp16 !== undefined && config.parallel.pipeline * config.parallel.tensor.size === 1) {
    throw new Error(
      'fp16 mode sends activations and their gradients between pipeline stages as float16 under a dynamic loss scale; ' +
        'this layout has no pipeline or tensor parallelism: remove fp16, or set parallel.pipeline > 1',
    );
  }
  const resumeFrom = command.resume === undefined ? undefined : await resolveCheckpoint(command.resume);
  // A resumed run goes on in the run folder its checkpoint belongs to, unless told otherwise.
  const outDir = resolve(
    command.out ??
      (resumeFrom === undefined ? undefined : runFolderOf(resumeFrom)) ??
      join('runs', `${basename(command.configPath, extname(command.configPath)).replace(/[^A-Za-z0-9_-]/g, '-')}-${timestamp()}`),
  );
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) {
    throw new UsageError(`--out ${outDir} is a file, not a folder: give a folder for the run (made when missing)`, `${PROGRAM} train <config.json> --out DIR`);
  }
  // A start that fails (bad data, no server, a worker that cannot start) leaves no run folder behind
  // unless it was there before: an empty one would only be mistaken for a run. Node 0's launcher judges
  // (it writes the metrics); another node's folder may hold its workers' logs of steps that ran.
  const createdOutDir = !existsSync(outDir) && command.nodeRank === 0;
  mkdirSync(outDir, { recursive: true });
  // Node 0 holds the folder while the job runs (run-lock.ts), before it judges what is in it: a running
  // job's files are never overwritten, continued or mixed with by a second start.
  let lock: RunLock | undefined;
  try {
    lock = command.nodeRank === 0 ? lockRunFolder(outDir) : undefined;
  } catch (error) {
    if (error instanceof RunFolderInUseError) throw new UsageError(error.message, `${PROGRAM} train <config.json> --out DIR`);
    throw error;
  }
  let code: number | undefined;
  try {
    // Node 0 judges: the other nodes' launchers share its folder and write into it only once it runs.
    const earlier = command.nodeRank === 0 && command.resume === undefined ? earlierRunIn(outDir) : undefined;
    if (earlier !== undefined) {
      if (!command.overwrite) {
        const resume = earlier.resumable ? `continue it with --resume ${outDir}, ` : 'it has no checkpoint to continue from: ';
        throw new UsageError(
          `${outDir} already holds a run (${earlier.holds}): ${resume}replace it with --overwrite, or give another --out`,
          `${PROGRAM} train <config.json> --out DIR [--resume DIR | --overwrite]`,
        );
      }
      removeEarlierRun(outDir);
      log(`--overwrite: removed the earlier run's files (${earlier.holds}) from ${outDir}`);
    }
    code = await trainInFolder(command, config, outDir, resumeFrom, log);
    return code;
  } finally {
    lock?.release();
    if (createdOutDir && code !== 0) removeIfNothingRan(outDir, log);
  }
}

async function trainInFolder(command: TrainCommand, config: TrainConfig, outDir: string, resumeFrom: string | undefined, log: (line: string) => void): Promise<number> {
  const metricsPath = join(outDir, 'metrics.jsonl');
  // A resumed run appends to the metrics of the run it continues: the lines after the checkpoint's step
  // go only once the checkpoint has been verified (by the restore, or the launcher), so a resume that
  // cannot start drops nothing.
  if (command.nodeRank === 0 && (resumeFrom === undefined || !existsSync(metricsPath))) writeFileSync(metricsPath, '');
  log(`run folder: ${outDir}`);
  const hooks = [
    new LossHook(),
    new ThroughputHook(),
    new LogMetricByStepHook({ metricsPath, progressBar: command.quiet ? false : undefined, stream: command.quiet ? devNull() : undefined }),
    new TensorBoardHook(join(outDir, 'tb')),
    new LogMetricByEpochHook(),
  ];
  // The live page controls the job through its coordinator: a one-rank job with a page runs as a launched job of one worker.
  if (config.parallel.data * config.parallel.pipeline * config.parallel.tensor.size > 1 || command.nnodes > 1 || command.simulate || command.dashboard !== undefined) {

    return launch({
      config,
      configPath: command.configPath,
      outDir,
      steps: command.steps,
      nats: command.nats,
      natsCredentials: command.natsCredentials,
      nnodes: command.nnodes,
      nodeRank: command.nodeRank,
      nprocPerNode: command.nprocPerNode,
      jobId: command.jobId,
      ...(command.dataPlaneHost === undefined ? {} : { dataPlaneHost: command.dataPlaneHost }),
      hooks: command.nodeRank === 0 ? hooks : [],
      log,
      resume: command.resume,
      ...(command.simulate ? { simulate: {} } : {}),
      ...(command.dashboard === undefined ? {} : { dashboard: command.dashboard }),
      ...(command.jobKeyFile === undefined ? {} : { jobKeyFile: command.jobKeyFile }),
    });
  }
  // Prod mode skips tfjs' debug-time checks and its banner suggesting tfjs-node.
  tf.enableProdMode();
  await initBackend(config.backend, log);

  const { train: dataset, validation } = await loadRunDatasets(config, { log, onProgress: progressPrinter('tokenizing', command.quiet) });

  const model = new GPT(config.model, fullModelSlice(config.model), config.seed);
  const m = config.model;
  log(
    `model: ${m.numLayers} layers, hidden ${m.hiddenSize}, ${m.numAttentionHeads} heads, vocab ${m.vocabSize}: ` +
      `${(countParameters(m) / 1e6).toFixed(2)}M parameters`,
  );
  // SIGTERM (preemption) and Ctrl-C stop after the step in flight, with a checkpoint of it (trainer.ts);
  // the run then exits with the signal's code. A second signal quits at once.
  const abort = new AbortController();
  let stopSignal: StopSignal | undefined;
  const onSignal = (signal: StopSignal) => {
    if (stopSignal !== undefined) process.exit(stopExitCode(signal));
    stopSignal = signal;
    log(`\n${signal}: stopping after this step with a checkpoint (${signal} again quits at once)`);
    abort.abort();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  const optimizer = new AdamOptimizer(config.optimizer);
  let startStep = 0;
  let runId: string | undefined;
  if (command.resume !== undefined) {
    const restored = await restoreCheckpoint(command.resume, config, model, optimizer);
    startStep = restored.nextStep;
    runId = restored.runId;
    log(`resumed from ${restored.dir}: continuing after step ${startStep}`);
  }
  const checkpoint = { target: { root: join(outDir, 'checkpoints'), keep: config.checkpoint.keep, runId: runId ?? newRunId() }, every: config.checkpoint.every };
  // The timeline a multi-process job writes per rank, here for the one process: on disk step by step.
  const traceFile = new TraceFile(join(outDir, 'trace.json'), undefined, command.resume !== undefined);
  const trace = new TraceRecorder(0, 'rank 0: single process', traceFile);
  const trainer = new Trainer({ config, model, dataset, validation, log, signal: abort.signal, hooks, startStep, checkpoint, optimizer, trace });
  try {
    checkStepsLeft(startStep, trainer.state.totalSteps);
    if (command.resume !== undefined) keepMetricsThrough(metricsPath, startStep);
    // Only now: a resume refused above leaves the config of the run it would have continued.
    writeFileSync(join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    log(
      `training ${startStep > 0 ? `steps ${startStep + 1} to ${trainer.state.totalSteps}` : `${trainer.state.totalSteps} steps`} (${trainer.state.stepsPerEpoch} per epoch), ` +
        `global batch ${trainer.sampler.globalBatchSize} x ${config.seqLen} tokens`,
    );
    const result = await trainer.fit();
    const last = result.losses.at(-1);
    const how = result.stopped ? `stopped${stopSignal === undefined ? '' : ` by ${stopSignal}`}` : 'done';
    log(`${how} after step ${startStep + result.stepsDone}${last === undefined ? '' : `, last loss ${last.toFixed(4)}`}; metrics in ${metricsPath}`);
    return result.stopped ? stopExitCode(stopSignal ?? 'SIGINT') : 0;
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
    trace.flush();
    traceFile.close();
    log(`timeline: ${traceFile.path} (open it in Perfetto or chrome://tracing)`);
    trainer.dispose();
    model.dispose();
  }
}

/** Removes a run folder this command made when no step was recorded in it and no checkpoint saved. */
function removeIfNothingRan(outDir: string, log: (line: string) => void): void {
  const metrics = join(outDir, 'metrics.jsonl');
  const stepsRecorded = existsSync(metrics) && readFileSync(metrics, 'utf8').trim() !== '';
  if (stepsRecorded || existsSync(join(outDir, 'checkpoints'))) return;
  rmSync(outDir, { recursive: true, force: true });
  log(`removed the run folder ${outDir}: the run ended before its first step`);
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
}

function progressPrinter(label: string, quiet: boolean): ((done: number, total: number) => void) | undefined {
  if (quiet) return undefined;
  const tty = process.stdout.isTTY === true;
  let lastPercent = -1;
  return (done, total) => {
    const percent = total === 0 ? 100 : Math.floor((100 * done) / total);
    if (tty) {
      process.stdout.write(`\r${label} ${done}/${total} lines (${percent}%)\x1b[K${done === total ? '\n' : ''}`);
    } else if (percent >= lastPercent + 25 || done === total) {
      process.stdout.write(`${label} ${done}/${total} lines (${percent}%)\n`);
      lastPercent = percent;
    }
  };
}

function devNull(): NodeJS.WriteStream {
  return { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;
}
