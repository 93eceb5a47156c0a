/** Test helpers: run the real `gpt-hybrid` CLI as a child process and watch its output. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const BIN = join(REPO, 'bin', 'gpt-hybrid.js');

export interface RunningCli {
  child: ChildProcess;
  output(): string;
  /** Resolves when the output matches, rejects after timeoutMs naming the pattern. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `spawner`: how the process starts (default: here; e.g. inside a network namespace, support/netns.ts). */
export type Spawner = (command: string, args: string[], options: SpawnOptions) => ChildProcess;

/**
 * GPT_HYBRID_TEST_DATA_PLANE=tcp|nats runs every `train` the tests start with that comm.dataPlane
 * (`npm run test:nats`: the real-process jobs with their tensors through the broker), except where a
 * test sets it itself (what only the direct links do: breaking one, two machines, knocking on them).
 */
function withTestDataPlane(args: string[]): string[] {
  const dataPlane = process.env.GPT_HYBRID_TEST_DATA_PLANE;
  if (dataPlane === undefined || dataPlane === '' || args[0] !== 'train' || args.some((arg) => arg.startsWith('comm.dataPlane='))) return args;
  if (dataPlane !== 'tcp' && dataPlane !== 'nats') throw new Error(`GPT_HYBRID_TEST_DATA_PLANE=${dataPlane}: use tcp or nats`);
  return [...args, '--set', `comm.dataPlane=${dataPlane}`];
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, spawner: Spawner = spawn): RunningCli {
  const child = spawner(process.execPath, [BIN, ...withTestDataPlane(args)], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const listeners = new Set<() => void>();
  const append = (chunk: Buffer) => {
    text += chunk.toString();
    for (const listener of listeners) listener();
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolveExit) =>
    child.once('exit', (code, signal) => resolveExit({ code, signal })),
  );
  return {
    child,
    output: () => text,
    exited,
    waitFor: (pattern, timeoutMs) =>
      new Promise((resolveMatch, reject) => {
        const check = () => {
          const match = text.match(pattern);
          if (match === null) return false;
          done();
          resolveMatch(match);
          return true;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${pattern} in the output within ${timeoutMs} ms; output so far:\n${text}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(listener);
        };
        const listener = () => void check();
        listeners.add(listener);
        void exited.then(() => setTimeout(() => listener(), 50));
        check();
      }),
  };
}

export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<{ code: number | null; output: string }> {
  const cli = startCli(args, env);
  const timer = setTimeout(() => cli.child.kill('SIGKILL'), timeoutMs);
  const { code } = await cli.exited;
  clearTimeout(timer);
  return { code, output: cli.output() };
}

/** A small config for end-to-end runs: the tiny GPT on the Brown sample, short sequences. */
export function writeTestConfig(overrides: Record<string, unknown> = {}): string {
  const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-e2e-'));
  const file = join(folder, 'config.json');
  writeFileSync(
    file,
    JSON.stringify({
      model: { preset: 'tiny' },
      batchSize: 4,
      seqLen: 32,
      steps: 4,
      optimizer: { lr: 3e-3 },
      data: { path: join(REPO, 'data', 'brown-sample.jsonl') },
      seed: 42,
      ...overrides,
    }),
  );
  return file;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function losses(metricsFile: string, read: (path: string) => string): number[] {
  return read(metricsFile)
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { loss?: number })
    // A validation line (val_loss, no loss) is not a step's.
    .filter((record) => record.loss !== undefined)
    .map((record) => record.loss!);
}

/** The per-step losses of `config` trained in one process with `sets` (what a layout is compared with). */
export async function singleProcessLosses(config: string, sets: string[]): Promise<number[]> {
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-reference-')), 'run');
  const { code, output } = await runCli(['train', config, '--out', out, ...sets.flatMap((set) => ['--set', set]), '--quiet']);
  assert.equal(code, 0, output);
  return losses(join(out, 'metrics.jsonl'), (path) => readFileSync(path, 'utf8'));
}

/** Losses equal within `relative` (1e-4: what the issue allows for float32 sums taken in another order). */
export function assertSameLosses(actual: number[], expected: number[], relative = 1e-4): void {
  assert.equal(actual.length, expected.length, `${actual.length} losses, expected ${expected.length}`);
  actual.forEach((loss, i) => assert.ok(Math.abs(loss - expected[i]!) <= relative * Math.abs(expected[i]!), `step ${i + 1}: ${loss} vs ${expected[i]}`));
}

/** The environment giving every launcher of a job on several nodes the same job key (comm/job-key.ts). */
export function sharedJobKey(): NodeJS.ProcessEnv {
  return { GPT_HYBRID_JOB_KEY: randomBytes(32).toString('hex') };
}
