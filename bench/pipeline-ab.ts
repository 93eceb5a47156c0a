/**
 * Implements: `node --import tsx bench/pipeline-ab.ts TREE_A TREE_B [--rounds N]`: the bench's
 * pipeline-2 job (its 32-block model, 8 micro-batches, 1F1B, balanced partition, over a private NATS
 * server) run by two checkouts of this project in turn, A B A B ..., on the same machine, so slow
 * drift of a shared machine hits both alike. Prints each run's step period (from step 3 on, as the
 * bench measures) and the ratio of B's median to A's: how a change moved the pipeline step.
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
const roundsIndex = args.indexOf('--rounds');
const rounds = roundsIndex < 0 ? 3 : Number(args[roundsIndex + 1]);
const trees = args.filter((arg, i) => !arg.startsWith('--') && i !== roundsIndex + 1).map((tree) => resolve(tree));
if (trees.length !== 2 || !(rounds >= 1)) {
  process.stderr.write('usage: node --import tsx bench/pipeline-ab.ts TREE_A TREE_B [--rounds N]  (two checkouts with node_modules)\n');
  process.exit(2);
}
const steps = FIRST_MEASURED_STEP + 4;
const config = benchConfig(PIPELINE_JOB_MODEL);
const dir = mkdtempSync(join(tmpdir(), 'gpt-hybrid-ab-'));
const nats = await startNatsServer();
const periods: number[][] = [[], []];
try {
  for (let round = 0; round < rounds; round++) {
    for (const [index, tree] of trees.entries()) {
      const out = join(dir, `${index === 0 ? 'a' : 'b'}-${round}`);
      const sets = pipelineSets('1f1b', PIPELINE_MICRO_BATCHES).flatMap((set) => ['--set', set]);
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
process.stdout.write(`A median ${a.toFixed(0)} ms/step, B median ${b.toFixed(0)} ms/step, B / A = ${(b / a).toFixed(4)} (${rounds} rounds, alternated)\n`);
