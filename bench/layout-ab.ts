/**
 * Implements: `node --import tsx bench/layout-ab.ts TREE_A TREE_B [--layout pipeline|data] [--rounds N]`:
 * one of the bench's multi-process jobs on its 32-block model over a private NATS server, run through
 * the CLI of two checkouts of this project in turn, A B A B ..., on the same machine, so slow drift of
 * a shared machine hits both alike: `pipeline` (default) is pipeline 2 with 8 micro-batches, 1F1B and
 * the balanced partition; `data` is data parallel 2 on the same global batch. Prints each run's step
 * period (from step 3 on, as the bench measures) and the ratio of B's median to A's: how a change moved
 * the step of that layout as a user runs it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startNatsServer } from '../src/comm/nats-server.ts';
import { PIPELINE_JOB_MODEL, PIPELINE_MICRO_BATCHES, pipelineSets } from './pipeline.ts';
import { median } from './report.ts';
import { FIRST_MEASURED_STEP, benchConfig, stepPeriodMs, type TrainRun } from './train-runs.ts';

const args = process.argv.slice(2);
const valueOf = (flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);
const rounds = Number(valueOf('--rounds') ?? 3);
const layout = valueOf('--layout') ?? 'pipeline';
const trees = args.filter((arg, i) => !arg.startsWith('--') && !args[i - 1]?.startsWith('--')).map((tree) => resolve(tree));
if (trees.length !== 2 || !(rounds >= 1) || (layout !== 'pipeline' && layout !== 'data')) {
  process.stderr.write('usage: node --import tsx bench/layout-ab.ts TREE_A TREE_B [--layout pipeline|data] [--rounds N]  (two checkouts with node_modules)\n');
  process.exit(2);
}
const layoutSets =
  layout === 'pipeline' ? pipelineSets('1f1b', PIPELINE_MICRO_BATCHES) : ['parallel.data=2', `batchSize=${PIPELINE_JOB_MODEL.batchSize / 2}`];
const steps = FIRST_MEASURED_STEP + 4;
const config = benchConfig(PIPELINE_JOB_MODEL);
const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-ab-'));
const nats = await startNatsServer();
const periods: number[][] = [[], []];
try {
  for (let round = 0; round < rounds; round++) {
    for (const [index, tree] of trees.entries()) {
      const out = join(dir, `${index === 0 ? 'a' : 'b'}-${round}`);
      const sets = layoutSets.flatMap((set) => ['--set', set]);
      const run = spawnSync(process.execPath, [join(tree, 'bin', 'gpt-hybrid.js'), 'train', config, '--out', out, '--steps', String(steps), '--quiet', '--nats', nats.url, ...sets], {
        cwd: tree,
        encoding: 'utf8',
        timeout: 600_000,
      });
      if (run.status !== 0) throw new Error(`${tree}: train exited with ${run.status}:\n${(run.stdout + run.stderr).slice(-3000)}`);
      const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as TrainRun['metrics'][number]);
      const period = stepPeriodMs({ out, metrics, trace: [], output: '' });
      periods[index].push(period);
      process.stderr.write(`round ${round + 1} ${index === 0 ? 'A' : 'B'} (${tree}): ${period.toFixed(0)} ms/step\n`);
    }
  }
} finally {
  await nats.stop();
}
const [a, b] = periods.map(median);
process.stdout.write(`${layout}: A median ${a.toFixed(0)} ms/step, B median ${b.toFixed(0)} ms/step, B / A = ${(b / a).toFixed(4)} (${rounds} rounds, alternated)\n`);
