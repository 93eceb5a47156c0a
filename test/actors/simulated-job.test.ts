/**
 * Whole jobs as simulated actors: every rank's stage, scheduler and SharedWeight actors in this process
 * over the in-process transport (launch with `simulate`), the same code as worker processes. Parity
 * with the single-process run through the CLI (no NATS server reachable, no worker process), and faults
 * injected into the in-process transport: each is noticed and the job rolls back to its last
 * checkpoint (here: the start) and ends with the losses of an undisturbed run, or shrugs it off.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { LocalNetwork, type FaultRule, type InjectedFault } from '../../src/comm/local-transport.ts';
import { Bus } from '../../src/comm/bus.ts';
import { newJobKey } from '../../src/comm/frame-signing.ts';
import { SUBJECTS } from '../../src/protocol/subjects.ts';
import { loadConfig } from '../../src/config/load.ts';
import { launch } from '../../src/launcher/launch.ts';
import * as tf from '../../src/tf.ts';
import type { RankProcess } from '../../src/launcher/simulated-rank.ts';
import { assertSameLosses, losses, runCli, singleProcessLosses, writeTestConfig } from '../support/cli.ts';

const configFile = writeTestConfig();
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-sim-')), name);
const newOutDir = (name: string) => {
  const dir = outDir(name);
  mkdirSync(dir);
  return dir;
};
const read = (path: string) => readFileSync(path, 'utf8');
let reference: number[];

before(async () => {
  reference = await singleProcessLosses(configFile, ['batchSize=8']);
  assert.equal(reference.length, 4);
});

test('simulate - dp2 x pp2 x tp2 in one process, no NATS server, equals the single-process run', async () => {
  const out = outDir('sim');
  const sets = ['parallel.data=2', 'parallel.pipeline=2', 'parallel.tensor.size=2', 'numMicroBatches=2', 'batchSize=4'].flatMap((s) => ['--set', s]);
  // Nothing listens on port 1: a job that needed NATS would fail to connect.
  const { code, output } = await runCli(['train', configFile, '--simulate', '--out', out, ...sets], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(code, 0, output);
  assert.match(output, /simulated in this process/);
  assert.doesNotMatch(output, /pid \d+, node/, 'a worker process registered');
  assert.equal((output.match(/rank \d+ registered/g) ?? []).length, 8);
  assertSameLosses(losses(join(out, 'metrics.jsonl'), read), reference);
});

interface SimulatedRun {
  code: number;
  losses: number[];
  lines: string[];
}

const PIPELINE_2 = ['parallel.pipeline=2', 'numMicroBatches=4', 'batchSize=8'];
const DATA_2_PIPELINE_2_TENSOR_2 = ['parallel.data=2', 'parallel.pipeline=2', 'parallel.tensor.size=2', 'numMicroBatches=2', 'batchSize=4'];

/** A job on the reference's global batch (pipeline 2 unless `layout` says otherwise) simulated with `faults` injected. */
async function simulatePipeline(
  faults: (network: LocalNetwork, jobId: string) => void,
  options: { onRank?: (rank: number, handle: RankProcess) => void; layout?: string[]; afterStep?: (network: LocalNetwork, jobId: string, step: number) => void; jobKeyFile?: string } = {},
): Promise<SimulatedRun> {
  const config = loadConfig(configFile, [...(options.layout ?? PIPELINE_2), 'restart.max=2']);
  const network = new LocalNetwork(8 * 1024 * 1024);
  const jobId = `sim-${Math.random().toString(16).slice(2, 8)}`;
  faults(network, jobId);
  const byStep = new Map<number, number>();
  const lines: string[] = [];
  const code = await launch({
    config,
    configPath: configFile,
    outDir: newOutDir('faults'),
    nnodes: 1,
    nodeRank: 0,
    jobId,
    hooks: [
      {
        name: 'collect',
        afterStep: (_state, result) => {
          byStep.set(result.step, result.loss);
          options.afterStep?.(network, jobId, result.step);
        },
      },
    ],
    log: (line) => lines.push(line),
    simulate: { network, actionTimeoutMs: 2_000, receiveTimeoutMs: 4_000, onRank: options.onRank },
    ...(options.jobKeyFile === undefined ? {} : { jobKeyFile: options.jobKeyFile }),
  });
  return { code, losses: [...byStep.keys()].sort((a, b) => a - b).map((step) => byStep.get(step)!), lines };
}

const stageActions = (jobId: string): Pick<FaultRule, 'subject'> => ({ subject: `gh.${jobId}.actor.stage.*` });

test('simulate faults - dp2 x pp2 x tp2: a lost action message is noticed by its stage actor and the job rolls back', async () => {
  const run = await simulatePipeline((network, jobId) => network.injectFault({ ...stageActions(jobId), skip: 60, effect: { kind: 'drop' } }), { layout: DATA_2_PIPELINE_2_TENSOR_2 });
  assert.equal(run.code, 0, run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /got no action \d+ of step \d+ from its scheduler/.test(line)), run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /^restart 1 of 2: .*rolling every rank back to the start/.test(line)), run.lines.join('\n'));
  assertSameLosses(run.losses, reference);
});

test('simulate faults - control and gate messages published (not requested) with the key, or sent without it, are dropped and counted; the job goes on', { timeout: 120_000 }, async () => {
  const strangers: Bus[] = [];
  const key = newJobKey();
  const keyFile = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-key-')), 'job.key');
  writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
  const run = await simulatePipeline(() => {}, {
    jobKeyFile: keyFile,
    afterStep: (network, jobId, step) => {
      if (step !== 1) return;
      // One holds the key but publishes where a request is due; the other lacks the key: it may request all it likes.
      strangers.push(new Bus({ jobId, transport: network.connect(), key }), new Bus({ jobId, transport: network.connect() }));
      for (const stranger of strangers) {
        for (const command of ['status', 'pause', 'stop', 'checkpoint'] as const) stranger.publish(SUBJECTS.control, { kind: 'control', command });
        stranger.publish(SUBJECTS.gate, { kind: 'step-ready', rank: 0, step: 1 });
      }
      void strangers[1]!.request(SUBJECTS.control, { kind: 'control', command: 'stop' }, 500).catch(() => undefined);
      strangers[1]!.publish(SUBJECTS.register, { kind: 'register', rank: 1, node: 0, pid: 1, host: 'x' });
    },
  });
  for (const stranger of strangers) await stranger.close();
  assert.equal(run.code, 0, run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /dropped a 'control' message published without a reply subject \(1 so far\)/.test(line)), run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /dropped a 'step-ready' message published without a reply subject/.test(line)), run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /dropped a message \((unsigned|forged)\) on gh\.\S+\.coord\.control/.test(line)), run.lines.join('\n'));
  assert.ok(!run.lines.some((line) => /^restart|paused|crashed|faulted/i.test(line)), run.lines.join('\n'));
  assertSameLosses(run.losses, reference);
});

test('simulate faults - repeated, reordered and late action messages change nothing', async () => {
  const faults: InjectedFault[] = [];
  const run = await simulatePipeline((network, jobId) => {
    faults.push(network.injectFault({ ...stageActions(jobId), skip: 3, times: 4, effect: { kind: 'duplicate' } }));
    faults.push(network.injectFault({ ...stageActions(jobId), skip: 12, times: 3, effect: { kind: 'reorder' } }));
    faults.push(network.injectFault({ ...stageActions(jobId), skip: 40, times: 2, effect: { kind: 'delay', ms: 30 } }));
  });
  assert.equal(run.code, 0, run.lines.join('\n'));
  assert.deepEqual(faults.map((fault) => fault.fired), [4, 3, 2]);
  assert.ok(!run.lines.some((line) => /^restart/.test(line)), run.lines.join('\n'));
  assertSameLosses(run.losses, reference);
});

test('simulate faults - a lost activation fails the receive that waits for it; the job rolls back', async () => {
  // Point-to-point activations and gradients travel on the pipeline group's collective subject.
  const run = await simulatePipeline((network, jobId) => network.injectFault({ subject: `gh.${jobId}.coll.pp.>`, skip: 10, effect: { kind: 'drop' } }));
  assert.equal(run.code, 0, run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /^restart 1 of 2: .*got no (activation|output gradient)/.test(line)), run.lines.join('\n'));
  assertSameLosses(run.losses, reference);
});

test('simulate faults - a rank killed mid-run is restarted with every other from the start', async () => {
  let rank1: RankProcess | undefined;
  let killed = false;
  const tensorsBefore = tf.memory().numTensors;
  const run = await simulatePipeline(() => {}, {
    onRank: (rank, handle) => {
      if (rank === 1 && !killed) rank1 = handle;
    },
    // After step 2 of the first attempt: mid-run however fast the machine (a timer could fire after the end).
    afterStep: (_network, _jobId, step) => {
      if (step !== 2 || killed) return;
      killed = true;
      rank1!.kill('SIGKILL');
    },
  });
  assert.equal(run.code, 0, run.lines.join('\n'));
  assert.ok(run.lines.some((line) => /^restart 1 of 2: rank 1 .*died: killed by SIGKILL/.test(line)), run.lines.join('\n'));
  assertSameLosses(run.losses, reference);
  // The killed attempt's stages were disposed, not left holding their tensors.
  assert.equal(tf.memory().numTensors, tensorsBefore);
});
