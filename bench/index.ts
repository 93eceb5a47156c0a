/**
 * Implements: `npm run bench [-- --json] [--quick] [--only SECTIONS] [--keep]`: every speed figure of
 * issue 7 measured side by side in one run on this machine, each with its target. Progress goes to
 * stderr; the table, then (with --json) one JSON object as the last line, go to stdout.
 *
 * Sections (--only takes a comma list): compute (matmul, step efficiency), memory (200 steps),
 * transport (NATS, TCP, all-reduce), pipeline (concurrency, pipeline 2, bubble, activation peak),
 * data (data parallel 2), gpu (webgpu matmul and step rates, and PyTorch's step on the same GPU: only
 * where a hardware adapter exists; --gpu-software runs it small on a software adapter, to check it). Multi-process runs use a private nats-server, so other jobs on the machine's
 * default server do not share it. --quick runs every section with fewer steps (to check the bench
 * itself; its figures are not the targets' conditions). --keep keeps the run folders.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as tf from '../src/tf.ts';
import { initBackend } from '../src/backend/select.ts';
import { startNatsServer, type NatsServerHandle } from '../src/comm/nats-server.ts';
import { firstStagePeak, measureActivationPeak } from './activation-peak.ts';
import { measureDataParallel, type DataParallelResult } from './data-parallel.ts';
import { measureGpuMatmulGflops, measureGpuStep, measureTorchStep, type GpuBenchModel } from './gpu.ts';
import { activateBackend } from '../src/backend/select.ts';
import { findGpuAdapter } from '../src/backend/webgpu/dawn.ts';
import { SUBMIT_BATCH } from '../src/backend/webgpu/activate.ts';
import { measureMatmulGflops } from './matmul.ts';
import { measureMemory } from './memory.ts';
import { pipelineFigures, PIPELINE_JOB_MODEL, PIPELINE_MICRO_BATCHES, PIPELINE_STAGES, type PipelineResult } from './pipeline.ts';
import { measurePipelineRounds, overRounds } from './pipeline-rounds.ts';
import type { ScheduleKind } from '../src/scheduler/ops.ts';
import { median, reportJson, reportTable, round, type Figure, type Target } from './report.ts';
import { measureTrainingStep } from './step.ts';
import { measureTransport } from './transport.ts';
import { FIRST_MEASURED_STEP, benchConfig, type BenchModel } from './train-runs.ts';

const SECTIONS = ['compute', 'memory', 'transport', 'pipeline', 'data', 'gpu'] as const;
type Section = (typeof SECTIONS)[number];

const args = process.argv.slice(2);
const json = args.includes('--json');
const quick = args.includes('--quick');
const keep = args.includes('--keep');
const gpuSoftware = args.includes('--gpu-software');
const onlyIndex = args.indexOf('--only');
const only = onlyIndex < 0 ? [...SECTIONS] : (args[onlyIndex + 1] ?? '').split(',');
for (const section of only) {
  if (!(SECTIONS as readonly string[]).includes(section)) {
    process.stderr.write(`bench: unknown section '${section}' after --only; choose from ${SECTIONS.join(', ')}\n`);
    process.exit(2);
  }
}
const runs = (section: Section) => only.includes(section);
const say = (line: string) => process.stderr.write(line + '\n');

/** The model of the single-process step figure (the LM head is most of its FLOPs). */
const STEP_MODEL = { numLayers: 4, hiddenSize: 256, numAttentionHeads: 4, maxPositionEmbeddings: 128 };
/**
 * The demo's model and batch (examples/tiny.json: the tiny preset, hidden 64): the LM head is ~93% of
 * its FLOPs, so this figure shows what the element-wise work over [tokens, 50304] logits and Adam over
 * 3.4M parameters cost next to thin matmuls.
 */
const TINY = JSON.parse(readFileSync(new URL('../examples/tiny.json', import.meta.url), 'utf8')) as { model: BenchModel['model']; batchSize: number; seqLen: number };
const JOB_MODEL = PIPELINE_JOB_MODEL;
const ZERO_BUBBLE_SCHEDULES: ScheduleKind[] = ['zb-h1', 'zbv', 'auto-zb'];
const PIPELINE_SCHEDULES: ScheduleKind[] = ['1f1b', ...ZERO_BUBBLE_SCHEDULES];
const MICRO_BATCHES = PIPELINE_MICRO_BATCHES;
const JOB_STEPS = quick ? FIRST_MEASURED_STEP + 1 : FIRST_MEASURED_STEP + 4;
const MEMORY = quick ? { warmup: 2, steps: 20 } : { warmup: 5, steps: 200 };

const TARGETS: Record<string, Target> = {
  step_efficiency: { op: '>=', value: 0.55 },
  step_efficiency_tiny: { op: '>=', value: 0.55 },
  pipeline_efficiency: { op: '>=', value: 0.9 },
  comm_fraction: { op: '<=', value: 0.05 },
  comm_fraction_pp2: { op: '<=', value: 0.03 },
  comm_fraction_dp2: { op: '<=', value: 0.05 },
  nats_gbps: { op: '>=', value: 0.8 },
  p2p_vs_tcp: { op: '>=', value: 0.8 },
  allreduce_ratio: { op: '<=', value: 1.5 },
  bubble_ratio: { op: '<=', value: 1.15 },
  tensor_growth: { op: '==', value: 0 },
  rss_growth_mb: { op: '<=', value: 100 },
  activation_peak_ratio: { op: '<=', value: PIPELINE_STAGES / MICRO_BATCHES },
  pipeline_efficiency_zb: { op: '>=', value: 0.95 },
  bubble_zb_over_1f1b: { op: '<=', value: 0.5 },
  activation_peak_ratio_zb: { op: '<=', value: 1.1 },
  gpu_step_efficiency: { op: '>=', value: 0.3 },
  gpu_vs_torch: { op: '<=', value: 4 },
};

/**
 * The GPU section's models: hidden 256 (the compute section's step model) and the gpt2-small preset at
 * batch 8 x 1024, the issue's measure; small stand-ins on a software adapter.
 */
const GPU_MODELS: GpuBenchModel[] = gpuSoftware
  ? [{ key: '_h256', model: { numLayers: 2, hiddenSize: 64, numAttentionHeads: 2, maxPositionEmbeddings: 64 }, batchSize: 2, seqLen: 64 }]
  : [
    { key: '_h256', model: STEP_MODEL, batchSize: 8, seqLen: 128 },
    { key: '', model: { preset: 'gpt2-small' }, batchSize: 8, seqLen: 1024 },
  ];

const figures: Figure[] = [];
const details: Record<string, unknown> = { quick, cpus: cpus().length, loadavg_start: loadavg().map((x) => round(x, 2)) };
const figure = (key: string, value: number | null, note: string, digits = 3) =>
  figures.push({ key, value: value === null ? null : round(value, digits), target: TARGETS[key], note });
/**
 * Shows and records the 1-minute load average as each section starts: the figures are only as good as
 * the machine is quiet (it also carries the bench's own previous runs for a minute or so).
 */
const sectionLoad: Record<string, number> = {};
details.section_loadavg = sectionLoad;
const startSection = (section: Section, line: string) => {
  sectionLoad[section] = round(loadavg()[0], 2);
  say(`[${section}] (load average ${sectionLoad[section]} on ${cpus().length} cores) ${line}`);
};
const failed = (keys: string[], error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  say(`  FAILED: ${message}`);
  for (const key of keys) figure(key, null, `failed: ${message.split('\n')[0]}`);
  process.exitCode = 1;
};

/** Numbers rounded for the JSON's details; other values as they are. */
function roundAll<T extends object>(values: T): T {
  return Object.fromEntries(Object.entries(values).map(([key, value]) => [key, typeof value === 'number' ? round(value) : value])) as T;
}

const started = performance.now();
const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-bench-'));
let nats: NatsServerHandle | undefined;
let configFolder: string | undefined;
try {
  if (runs('compute')) {
    tf.enableProdMode();
    details.backend = await initBackend(undefined, say);
    startSection('compute', 'dense 2-D matmul 1024x1024x1024 ...');
    const matmulBefore = await measureMatmulGflops(1024);
    say(`  ${matmulBefore.toFixed(1)} GFLOP/s`);
    say('  a training step: GPT 4 layers, hidden 256, 4 heads, vocab 50304, batch 8 x 128 tokens ...');
    const step = await measureTrainingStep({ model: STEP_MODEL, batchSize: 8, seqLen: 128, onProgress: say });
    say(`  ${step.stepMs.toFixed(0)} ms/step, ${step.stepGflops.toFixed(1)} model GFLOP/s`);
    say(`  a training step of examples/tiny.json: tiny preset (hidden 64), batch ${TINY.batchSize} x ${TINY.seqLen} tokens ...`);
    const tiny = await measureTrainingStep({ model: TINY.model, batchSize: TINY.batchSize, seqLen: TINY.seqLen, runs: 5, onProgress: say });
    say(`  ${tiny.stepMs.toFixed(0)} ms/step, ${tiny.stepGflops.toFixed(1)} model GFLOP/s`);
    // Again after the steps, so that a machine growing busier during the run shows in both numbers.
    const matmul = (matmulBefore + (await measureMatmulGflops(1024))) / 2;
    figure('matmul_gflops', matmul, 'dense 2-D matmul 1024^3, backend GFLOP/s', 2);
    figure('step_gflops', step.stepGflops, 'model GFLOP/s of a single-process step (4 layers, hidden 256, batch 8 x 128)', 2);
    figure('step_efficiency', step.stepGflops / matmul, 'step_gflops / matmul_gflops');
    figure('step_gflops_tiny', tiny.stepGflops, `the same for examples/tiny.json (tiny preset, hidden 64, batch ${TINY.batchSize} x ${TINY.seqLen})`, 2);
    figure('step_efficiency_tiny', tiny.stepGflops / matmul, 'step_gflops_tiny / matmul_gflops');
    details.step_ms = round(step.stepMs, 1);
    details.step_ms_tiny = round(tiny.stepMs, 1);
  }

  if (runs('memory')) {
    startSection('memory', `tensors and resident memory over ${MEMORY.steps} steps`);
    try {
      const memory = await measureMemory(MEMORY, say);
      figure('tensor_growth', memory.tensorGrowth, `tf tensors after ${memory.steps} steps minus before (tiny config, real Trainer)`, 0);
      figure('rss_growth_mb', memory.rssGrowthMb, `resident MB after ${memory.steps} steps minus before`, 1);
      details.memory = roundAll({ ...memory, warmup: MEMORY.warmup });
    } catch (error) {
      failed(['tensor_growth', 'rss_growth_mb'], error);
    }
  }

  if (runs('transport') || runs('pipeline') || runs('data')) {
    nats = await startNatsServer();
    say(`private NATS server for the multi-process runs: ${nats.url}; run folders under ${dir}`);
  }

  if (runs('transport')) {
    startSection('transport', 'point-to-point and all-reduce between two processes');
    try {
      const transport = await measureTransport({ natsUrl: nats!.url, rounds: quick ? 2 : 9, serverPid: nats!.process.pid }, say);
      figure('nats_gbps', transport.natsGbps, '4 MB tensors rank to rank through Bus + ProcessGroup over NATS, GB/s');
      figure('nats_vs_tcp', transport.natsVsTcp, `nats_gbps over raw TCP loopback (${transport.tcpGbps.toFixed(2)} GB/s)`);
      figure('p2p_gbps', transport.p2pGbps, '4 MB tensors rank to rank through Bus + ProcessGroup over the data plane (direct TCP links), GB/s');
      figure('p2p_vs_tcp', transport.p2pVsTcp, 'p2p_gbps over raw TCP loopback in the same run (target >= 0.8)');
      figure('allreduce_ratio', transport.allReduceRatio, `all-reduce of 10M float32 over 2 ranks / one send of its bytes (${transport.allReduceMs.toFixed(0)} / ${transport.oneSendMs.toFixed(0)} ms)`);
      details.transport = roundAll(transport);
    } catch (error) {
      failed(['nats_gbps', 'nats_vs_tcp', 'p2p_gbps', 'p2p_vs_tcp', 'allreduce_ratio'], error);
    }
  }

  const jobConfig = benchConfig(JOB_MODEL);
  configFolder = dirname(jobConfig);
  details.job_model = { ...JOB_MODEL, microBatches: MICRO_BATCHES, steps: JOB_STEPS, measured: `steps ${FIRST_MEASURED_STEP} on` };
  let commPp2: number | null = null;
  let commDp2: number | null = null;
  if (runs('pipeline')) {
    const rounds = quick ? 1 : 2;
    startSection('pipeline', `${JOB_MODEL.model.numLayers} layers, hidden ${JOB_MODEL.model.hiddenSize}, batch ${JOB_MODEL.batchSize} x ${JOB_MODEL.seqLen}: ${rounds} round(s) of one process alone, two at once, pipeline 2 with ${PIPELINE_SCHEDULES.join(', ')}`);
    try {
      const job = { config: jobConfig, dir, steps: JOB_STEPS, microBatches: MICRO_BATCHES, natsUrl: nats!.url };
      const measured = await measurePipelineRounds({ ...job, schedules: PIPELINE_SCHEDULES, rounds }, say);
      const perRound = (schedule: ScheduleKind) => measured.map((round) => pipelineFigures(round.runs.get(schedule)!, MICRO_BATCHES, round.aloneMs, round.concurrency, schedule));
      const concurrency = overRounds(measured.map((round) => round.concurrency));
      figure('concurrency', concurrency.mean, `two single-process trainings at once: throughput over 2x one alone (${concurrency.note})`);
      const oneFOneB = perRound('1f1b');
      const speedup = overRounds(oneFOneB.map((f) => f.pp2Speedup));
      const efficiency = overRounds(oneFOneB.map((f) => f.pipelineEfficiency));
      const stepMs = overRounds(oneFOneB.map((f) => f.stepMs));
      const aloneMs = overRounds(measured.map((round) => round.aloneMs));
      figure('pp2_speedup', speedup.mean, `single-process step / pipeline 2 step (${aloneMs.mean.toFixed(0)} / ${stepMs.mean.toFixed(0)} ms), m=${MICRO_BATCHES}, 1F1B (${speedup.note})`);
      figure('pipeline_efficiency', efficiency.mean, `pp2_speedup / (2 x concurrency x m / (m + p - 1)), per round (${efficiency.note})`);
      const last = oneFOneB[oneFOneB.length - 1]!;
      const bubble1f1b = overRounds(oneFOneB.map((f) => f.shape.bubble));
      figure('bubble_ratio', overRounds(oneFOneB.map((f) => f.bubbleRatio)).mean, `measured 1F1B bubble ${bubble1f1b.mean.toFixed(3)} / theory ${last.theoreticalBubble.toFixed(3)} (imbalance alone: ${last.replayedBubble.toFixed(3)})`);
      figure('bubble_1f1b', bubble1f1b.mean, `1F1B's measured bubble fraction, mean of the stages' (${bubble1f1b.note})`);
      commPp2 = overRounds(oneFOneB.map((f) => f.commFraction)).mean;
      figure('comm_fraction_pp2', commPp2, 'pipeline 2: exposed communication / step time (worst rank)');
      // The best zero-bubble schedule is the one a user would pick, the fastest (mean step time over the
      // rounds): both its figures come from it, beside zb-h1's memory and 1F1B's. The bubble alone would
      // mislead: a schedule can idle less within its window and still take longer a step.
      const zeroBubble = ZERO_BUBBLE_SCHEDULES.map((schedule) => ({ schedule, figures: perRound(schedule) }));
      const bubbleOf = (figures: PipelineResult[]) => overRounds(figures.map((f) => f.shape.bubble));
      const stepOf = (figures: PipelineResult[]) => overRounds(figures.map((f) => f.stepMs)).mean;
      const best = zeroBubble.reduce((a, b) => (stepOf(b.figures) < stepOf(a.figures) ? b : a));
      figure('bubble_zb', bubbleOf(best.figures).mean, `the measured bubble of the fastest zero-bubble schedule, ${best.schedule} (${zeroBubble.map((z) => `${z.schedule} ${bubbleOf(z.figures).mean.toFixed(3)} at ${stepOf(z.figures).toFixed(0)} ms`).join(', ')}; 1f1b at ${stepMs.mean.toFixed(0)} ms; ${bubbleOf(best.figures).note})`);
      figure('bubble_zb_over_1f1b', bubbleOf(best.figures).mean / bubble1f1b.mean, 'bubble_zb / bubble_1f1b');
      const efficiencyZb = overRounds(best.figures.map((f) => f.pipelineEfficiency));
      figure('pipeline_efficiency_zb', efficiencyZb.mean, `pipeline_efficiency of ${best.schedule} (${efficiencyZb.note})`);
      const zbH1Peak = firstStagePeak(measured[0]!.runs.get('zb-h1')!.trace, 'zb-h1');
      const oneFOneBPeak = firstStagePeak(measured[0]!.runs.get('1f1b')!.trace, '1F1B');
      figure('activation_peak_ratio_zb', zbH1Peak / oneFOneBPeak, `zb-h1's first-stage peak of saved activations / 1F1B's (${(zbH1Peak / 2 ** 20).toFixed(1)} / ${(oneFOneBPeak / 2 ** 20).toFixed(1)} MiB)`);
      details.concurrency = { aloneStepMs: measured.map((r) => round(r.aloneMs, 1)), pairStepMs: measured.map((r) => r.pairMs.map((ms) => round(ms, 1))) };
      details.pipeline = {
        rounds,
        stepMs: round(stepMs.mean, 1),
        ideal: round(last.ideal),
        stageComputeMs: last.shape.busyMs.map((ms) => round(ms, 1)),
        balanceBound: round(last.shape.balanceBound),
        bubbles: last.shape.bubbles.map((b) => round(b)),
        replayedBubble: round(last.replayedBubble),
        commFractionPerRank: roundAll(last.commPerRank),
        commFractionByEvent: roundAll(last.commByName),
        bySchedule: Object.fromEntries(PIPELINE_SCHEDULES.map((schedule) => {
          const figures = perRound(schedule);
          return [schedule, {
            stepMs: figures.map((f) => round(f.stepMs, 1)),
            bubble: figures.map((f) => round(f.shape.bubble)),
            theoreticalBubble: round(figures[0]!.theoreticalBubble),
            replayedBubble: figures.map((f) => round(f.replayedBubble)),
            efficiency: figures.map((f) => round(f.pipelineEfficiency)),
          }];
        })),
      };
      try {
        const peak = await measureActivationPeak({ ...job, oneFOneB: measured[0]!.runs.get('1f1b')! }, say);
        figure('activation_peak_ratio', peak.ratio, `first stage's saved activations at peak, 1F1B / GPipe (${(peak.oneFOneBBytes / 2 ** 20).toFixed(1)} / ${(peak.gpipeBytes / 2 ** 20).toFixed(1)} MiB)`);
      } catch (error) {
        failed(['activation_peak_ratio'], error);
      }
    } catch (error) {
      failed(['concurrency', 'pp2_speedup', 'pipeline_efficiency', 'bubble_ratio', 'bubble_1f1b', 'comm_fraction_pp2', 'bubble_zb', 'bubble_zb_over_1f1b', 'pipeline_efficiency_zb', 'activation_peak_ratio_zb', 'activation_peak_ratio'].filter((key) => !figures.some((f) => f.key === key)), error);
    }
  }

  if (runs('data')) {
    startSection('data', `data parallel 2, global batch ${JOB_MODEL.batchSize} x ${JOB_MODEL.seqLen}`);
    try {
      // Both modes, alternating, so each sees the same machine: the default's figure, the other's beside it.
      const runsOf: { overlap: DataParallelResult[]; after: DataParallelResult[] } = { overlap: [], after: [] };
      for (let round = 0; round < (quick ? 1 : 3); round++) {
        for (const overlapGradReduce of [true, false]) {
          const result = await measureDataParallel({ config: jobConfig, globalBatch: JOB_MODEL.batchSize, natsUrl: nats!.url, dir: join(dir, `dp2-round${round}`), steps: JOB_STEPS, overlapGradReduce }, say);
          runsOf[overlapGradReduce ? 'overlap' : 'after'].push(result);
        }
      }
      commDp2 = median(runsOf.overlap.map((r) => r.commFraction));
      const overlapMs = median(runsOf.overlap.map((r) => r.stepMs));
      const afterMs = median(runsOf.after.map((r) => r.stepMs));
      const summary = (r: DataParallelResult) => ({ stepMs: round(r.stepMs, 1), commFraction: round(r.commFraction, 3), byName: roundAll(r.byName) });
      figure('comm_fraction_dp2', commDp2, `data 2 job: exposed all-reduce time / step time (worst rank, overlapGradReduce; ${overlapMs.toFixed(0)} ms/step, after the backward ${afterMs.toFixed(0)} ms/step)`);
      details.data = {
        overlap: runsOf.overlap.map(summary),
        after_backward: runsOf.after.map(summary),
        step_ms_overlap_over_after: round(overlapMs / afterMs, 3),
      };
    } catch (error) {
      failed(['comm_fraction_dp2'], error);
    }
  }
  if (runs('gpu')) {
    const found = await findGpuAdapter(gpuSoftware);
    if ('reasons' in found) {
      say(`[gpu] no GPU adapter (${found.reasons.join('; ')}): no gpu figures`);
      details.gpu = { skipped: found.reasons.join('; ') };
    } else {
      startSection('gpu', `webgpu on ${found.description}`);
      try {
        await activateBackend('webgpu');
        const n = gpuSoftware ? 256 : 4096;
        const matmul = await measureGpuMatmulGflops(n);
        say(`  matmul ${n}^3: ${matmul.toFixed(0)} GFLOP/s`);
        figure('gpu_matmul_gflops', matmul, `webgpu float32 matmul ${n}^3, GFLOP/s (8 queued, one read)`, 1);
        const gpuDetails: Record<string, unknown> = { adapter: found.description, matmul_n: n };
        for (const model of GPU_MODELS) {
          const name = model.key === '' ? 'gpt2-small' : `hidden ${(model.model as { hiddenSize: number }).hiddenSize}`;
          say(`  a training step of ${name}, batch ${model.batchSize} x ${model.seqLen} ...`);
          const ours = await measureGpuStep(model, gpuSoftware ? 2 : 3, say);
          say(`  ${ours.stepMs.toFixed(1)} ms/step, ${ours.stepGflops.toFixed(0)} model GFLOP/s`);
          figure(`gpu_step_gflops${model.key}`, ours.stepGflops, `model GFLOP/s of a webgpu training step, ${name}, batch ${model.batchSize} x ${model.seqLen} (${ours.stepMs.toFixed(1)} ms)`, 1);
          figure(`gpu_step_efficiency${model.key}`, ours.stepGflops / matmul, `gpu_step_gflops${model.key} / gpu_matmul_gflops`);
          gpuDetails[`step_ms${model.key}`] = round(ours.stepMs, 1);
          if (model.key === '_h256') {
            // The same step with the stock backend's submit batch: what SUBMIT_BATCH buys here.
            tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', 15);
            const stockBatch = await measureGpuStep(model, gpuSoftware ? 2 : 3, say);
            tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', SUBMIT_BATCH);
            say(`  with the stock submit batch of 15 dispatches (ours: ${SUBMIT_BATCH}): ${stockBatch.stepMs.toFixed(1)} ms/step`);
            gpuDetails[`step_ms${model.key}_submit_batch_15`] = round(stockBatch.stepMs, 1);
          }
          if (gpuSoftware) continue; // PyTorch runs on CUDA only: nothing to compare with on a software adapter.
          try {
            const torch = await measureTorchStep(model, 5, say);
            say(`  PyTorch eager float32 on ${torch.device}: ${torch.stepMs.toFixed(1)} ms/step`);
            figure(`gpu_vs_torch${model.key}`, ours.stepMs / torch.stepMs, `our step / PyTorch eager float32 (TF32 off) step on the same GPU (${ours.stepMs.toFixed(1)} / ${torch.stepMs.toFixed(1)} ms)`, 2);
            gpuDetails[`torch_step_ms${model.key}`] = round(torch.stepMs, 1);
          } catch (error) {
            failed([`gpu_vs_torch${model.key}`], error);
          }
        }
        details.gpu = gpuDetails;
      } catch (error) {
        failed(['gpu_matmul_gflops', 'gpu_step_gflops', 'gpu_step_efficiency', 'gpu_vs_torch'].filter((key) => !figures.some((f) => f.key === key)), error);
      }
    }
  }

  if (runs('pipeline') && runs('data')) {
    const both = commPp2 === null || commDp2 === null ? null : Math.max(commPp2, commDp2);
    figure('comm_fraction', both, 'the larger of comm_fraction_pp2 and comm_fraction_dp2');
  }
} finally {
  await nats?.stop();
  if (configFolder !== undefined) rmSync(configFolder, { recursive: true, force: true });
  if (keep) say(`run folders kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}

details.loadavg_end = loadavg().map((x) => round(x, 2));
details.seconds = round((performance.now() - started) / 1000, 1);
say(`bench took ${details.seconds} s`);
process.stdout.write('\n' + reportTable(figures) + '\n');
if (json) process.stdout.write(JSON.stringify(reportJson(figures, details)) + '\n');
// A process holding a Dawn GPU instance (section gpu) does not end by itself on every driver.
if ((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu !== undefined) process.exit();
