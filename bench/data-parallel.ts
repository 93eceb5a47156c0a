/**
 * Implements: `comm_fraction_dp2`, exposed communication over step time in data parallel 2: two
 * processes each run the real Trainer on half of the global batch, with the gradient all-reduce through
 * a ProcessGroup over the data plane's direct links (as a job's ranks do by default), and record every step and every all-reduce on a timeline the way pipeline
 * ranks do (the launcher's data-parallel workers write no trace yet). The timelines are merged and read
 * like the pipeline job's (trace-analysis.ts). With overlapGradReduce every bucket is an all-reduce of
 * its own during the backward; as for any collective, what counts is what follows the last one's start.
 *
 * Run as `node --import tsx bench/data-parallel.ts --peer <config> <nats url> <job id> <rank> <out dir> <steps>`
 * it is one of the two ranks.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { Bus } from '../src/comm/bus.ts';
import { DataPlane } from '../src/comm/data-plane.ts';
import { ProcessGroup } from '../src/comm/collectives.ts';
import { connectNats } from '../src/comm/nats-transport.ts';
import { mergeTraceParts, TraceRecorder, wallClockMs, type TraceEvent } from '../src/trace/trace.ts';
import { Trainer } from '../src/train/trainer.ts';
import { runPeers } from './peers.ts';
import { exposedCommFraction } from './trace-analysis.ts';
import { setUpTraining } from './training-setup.ts';

const SCRIPT = fileURLToPath(import.meta.url);
const DATA = 2;

/** `batchSize` is the global batch: each rank trains on half of it. */
function dataParallelSets(globalBatch: number, overlapGradReduce: boolean): string[] {
  return [`parallel.data=${DATA}`, `batchSize=${globalBatch / DATA}`, `parallel.overlapGradReduce=${overlapGradReduce}`];
}

export interface DataParallelResult {
  commFraction: number;
  perRank: Record<number, number>;
  stepMs: number;
}

export async function measureDataParallel(
  options: { config: string; globalBatch: number; natsUrl: string; out: string; steps: number; overlapGradReduce?: boolean },
  say: (line: string) => void,
): Promise<DataParallelResult> {
  const overlap = options.overlapGradReduce === true;
  say(`  data parallel 2 on two processes, the Trainer with traced all-reduces${overlap ? ' in buckets during the backward (overlapGradReduce)' : ''} (${options.steps} steps) ...`);
  mkdirSync(options.out, { recursive: true });
  const job = `bench-dp-${process.pid}-${Date.now().toString(36)}`;
  await runPeers(SCRIPT, DATA, (rank) => ['--peer', options.config, options.natsUrl, job, String(rank), options.out, String(options.steps), String(options.globalBatch), String(overlap)], 300_000);
  const path = mergeTraceParts(options.out);
  if (path === undefined) throw new Error(`the data-parallel ranks wrote no trace into ${options.out}`);
  const events = (JSON.parse(readFileSync(path, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents;
  const comm = exposedCommFraction(events);
  say(`    ${comm.stepMs.toFixed(0)} ms/step, exposed communication ${Object.values(comm.perRank).map((f) => (100 * f).toFixed(1)).join('% / ')}%`);
  return { commFraction: comm.fraction, perRank: comm.perRank, stepMs: comm.stepMs };
}

async function peer(args: string[]): Promise<void> {
  const [configPath, natsUrl, job, rankText, out, stepsText, globalBatchText, overlapText] = args;
  const rank = Number(rankText);
  const { config, dataset, model } = await setUpTraining(configPath, dataParallelSets(Number(globalBatchText), overlapText === 'true'));
  const bus = new Bus({ jobId: job, transport: await connectNats({ url: natsUrl, name: `${job} rank ${rank}` }) });
  const dataPlane = await DataPlane.listen({ bus, jobId: job, rank, key: createHash('sha256').update(job).digest(), host: '127.0.0.1', log: (line) => process.stderr.write(`${line}\n`) });
  const group = new ProcessGroup({ bus, name: 'dp', ranks: [0, 1], rank, dataPlane });
  await group.ready();
  const trace = new TraceRecorder(rank, `rank ${rank}: replica ${rank}`);
  let step = 0;
  let stepStart = 0;
  const trainer = new Trainer({
    config,
    model,
    dataset,
    totalSteps: Number(stepsText),
    log: () => {},
    dataParallel: {
      rank,
      size: DATA,
      allReduce: (values) => trace.span('all-reduce data parallel', 'comm', { step }, () => group.allReduce(values, 'sum', { inPlace: true })),
    },
    hooks: [
      {
        name: 'timeline',
        beforeStep: (_state, oneBased) => {
          step = oneBased;
          stepStart = wallClockMs();
        },
        afterStep: () => trace.record('train step', 'step', stepStart, wallClockMs(), { step }),
      },
    ],
  });
  try {
    await trainer.fit();
    trace.writePart(out);
    process.stdout.write(JSON.stringify({ rank, steps: step }) + '\n');
  } finally {
    trainer.dispose();
    model.dispose();
    group.close();
    await dataPlane.close();
    await bus.close();
  }
}

if (process.argv[2] === '--peer') await peer(process.argv.slice(3));
