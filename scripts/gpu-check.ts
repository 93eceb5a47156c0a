/**
 * Implements: the GPU machine's check of the webgpu backend, run by scripts/gpu-check.sh inside the
 * device kit: the webgpu tests, the tiny and hidden-256 configs trained for 10 steps on webgpu and on
 * wasm (losses equal within 1e-4 relative; webgpu's ms/step), a pp2 job on the one GPU against the
 * single-process run, and `npm run bench -- --json --only gpu`. Writes every figure to OUT/gpu-check.json
 * after each part (a part that hangs still leaves the others), logs progress to stderr, and exits
 * non-zero when a part failed.
 *
 * Usage: node --import tsx scripts/gpu-check.ts OUT_DIR
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(new URL('..', import.meta.url)));
const out = process.argv[2];
if (out === undefined) {
  process.stderr.write('usage: node --import tsx scripts/gpu-check.ts OUT_DIR\n');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const started = performance.now();
const say = (line: string) => process.stderr.write(`[gpu-check +${((performance.now() - started) / 1000).toFixed(0)}s] ${line}\n`);
const report: Record<string, unknown> = { started: new Date().toISOString() };
let failures = 0;
const save = () => writeFileSync(join(out, 'gpu-check.json'), JSON.stringify({ ...report, seconds: Math.round((performance.now() - started) / 1000), failures }, null, 2) + '\n');

/**
 * Runs a command from the repository root; its output is appended to OUT/logs.txt under a heading (one
 * file: the device tool brings back at most 8), and its tail goes to stderr on failure.
 */
function run(name: string, command: string, args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((done) => {
    const child = spawn(command, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      appendFileSync(join(out!, 'logs.txt'), `===== ${name} (exit ${code})\n${output}\n`);
      if (code !== 0) say(`${name} exited with ${code}; its last lines:\n${output.trim().split('\n').slice(-15).join('\n')}`);
      done({ code, output });
    });
  });
}

interface TrainRun {
  losses: number[];
  medianStepMs: number;
}

const HIDDEN_256 = { model: { numLayers: 4, hiddenSize: 256, numAttentionHeads: 4, maxPositionEmbeddings: 128 }, batchSize: 8, seqLen: 128 };

function writeConfig(name: string, overrides: Record<string, unknown>): string {
  const tiny = JSON.parse(readFileSync(join(REPO, 'examples', 'tiny.json'), 'utf8')) as Record<string, unknown>;
  const folder = mkdtempSync(join(tmpdir(), `gpu-check-${name}-`));
  const file = join(folder, 'config.json');
  writeFileSync(file, JSON.stringify({ ...tiny, data: { path: join(REPO, 'data', 'brown-sample.jsonl') }, ...overrides }));
  return file;
}

async function train(name: string, config: string, backend: string, steps: number, extra: string[] = []): Promise<TrainRun | undefined> {
  const dir = mkdtempSync(join(tmpdir(), `gpu-check-run-${name}-`));
  const { code } = await run(`train-${name}`, process.execPath, [join(REPO, 'bin', 'gpt-hybrid.js'), 'train', config, '--backend', backend, '--steps', String(steps), '--out', dir, ...extra], 240_000);
  if (code !== 0) return undefined;
  const rows = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { loss: number; step_ms: number });
  const times = rows.slice(2).map((row) => row.step_ms).sort((a, b) => a - b);
  return { losses: rows.map((row) => row.loss), medianStepMs: times[Math.floor(times.length / 2)] ?? NaN };
}

function maxRelative(a: number[], b: number[]): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  return Math.max(...a.map((value, i) => Math.abs(value - b[i]!) / Math.abs(b[i]!)));
}

/** Trains `config` on webgpu and wasm at once (the wasm run is on a CPU core; the GPU run barely uses one). */
async function parity(name: string, config: string, steps: number, tolerance: number): Promise<void> {
  say(`${name}: ${steps} steps on webgpu and on wasm ...`);
  const [gpu, cpu] = await Promise.all([train(`${name}-webgpu`, config, 'webgpu', steps), train(`${name}-wasm`, config, 'wasm', steps)]);
  const worst = gpu !== undefined && cpu !== undefined ? maxRelative(gpu.losses, cpu.losses) : null;
  const ok = worst !== null && worst <= tolerance;
  if (!ok) failures++;
  report[name] = { ok, steps, max_relative_loss_difference: worst, tolerance, webgpu: gpu, wasm: cpu };
  say(`${name}: ${ok ? 'equal' : 'NOT equal'} (max relative difference ${worst}); webgpu ${gpu?.medianStepMs} ms/step, wasm ${cpu?.medianStepMs} ms/step`);
  save();
}

say('webgpu tests ...');
// --test-force-exit: a test file that opened a Dawn GPU instance does not end by itself on every driver.
const tests = await run('tests', process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-force-exit',
  ...['webgpu-ops', 'webgpu-fused-kernels', 'webgpu-device-errors', 'webgpu-training', 'select'].map((file) => `test/backend/${file}.test.ts`)], 240_000);
const count = (label: string) => Number(tests.output.match(new RegExp(`^# ${label} (\\d+)`, 'm'))?.[1] ?? NaN);
report.tests = { ok: tests.code === 0, pass: count('pass'), fail: count('fail') };
if (tests.code !== 0) failures++;
say(`webgpu tests: ${tests.code === 0 ? 'passed' : 'FAILED'} (${count('pass')} passed, ${count('fail')} failed)`);
save();

const tiny = writeConfig('tiny', {});
const hidden256 = writeConfig('hidden256', HIDDEN_256);
await parity('tiny', tiny, 10, 1e-4);
await parity('hidden256', hidden256, 10, 1e-4);
const h256 = (report.hidden256 as { webgpu?: TrainRun }).webgpu;
report.hidden256_step_ms_target = { value: h256?.medianStepMs ?? null, target: '<= 37 (10x the prototype\'s 371 ms)', met: h256 !== undefined && h256.medianStepMs <= 37 };

say('pp2 on the one GPU: 10 steps against the single-process run ...');
const pp2 = await train('tiny-pp2-webgpu', tiny, 'webgpu', 10, ['--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2']);
const single = (report.tiny as { wasm?: TrainRun }).wasm;
const pp2Worst = pp2 !== undefined && single !== undefined ? maxRelative(pp2.losses, single.losses) : null;
report.pp2 = { ok: pp2Worst !== null && pp2Worst <= 1e-4, max_relative_loss_difference: pp2Worst, webgpu: pp2 };
if (!(report.pp2 as { ok: boolean }).ok) failures++;
say(`pp2: max relative difference ${pp2Worst}`);
save();

say('bench, section gpu ...');
const bench = await run('bench', process.execPath, ['--import', 'tsx', join(REPO, 'bench', 'index.ts'), '--json', '--only', 'gpu'], 240_000);
try {
  report.bench = JSON.parse(bench.output.trim().split('\n').pop() ?? '');
} catch {
  report.bench = { failed: `no JSON line (exit ${bench.code})` };
  failures++;
}
save();
say(`done: ${failures === 0 ? 'every part passed' : `${failures} part(s) failed`}; figures in ${join(out, 'gpu-check.json')}`);
process.exit(failures === 0 ? 0 : 1);
