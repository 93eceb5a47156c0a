/**
 * Implements: the bench's helper processes: `node --import tsx <script> <args>` children that print one
 * JSON object as their last stdout line, run one at a time or as the ranks of a job, each under a
 * deadline, killed (never left behind) when it passes or when a sibling fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { WORKER_NODE_FLAGS } from '../src/launcher/worker-env.ts';
import { REPO } from '../test/support/cli.ts';

export interface PeerResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The last stdout line as JSON (undefined when there is none or it does not parse). */
  json: Record<string, unknown> | undefined;
}

function runNode(script: string, args: string[], children: ChildProcess[]): Promise<PeerResult> {
  const child = spawn(process.execPath, [...WORKER_NODE_FLAGS, '--import', 'tsx', script, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-8000)));
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      const last = stdout.trim().split('\n').at(-1) ?? '';
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(last) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/**
 * Runs `argsOf(rank)` for every rank at once; resolves with every rank's output (its last line parsed),
 * or throws naming the first rank that failed (the others are killed) or the deadline.
 */
export async function runPeers(script: string, world: number, argsOf: (rank: number) => string[], timeoutMs: number): Promise<PeerResult[]> {
  const children: ChildProcess[] = [];
  const killAll = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const timer = setTimeout(killAll, timeoutMs);
  try {
    const results = await Promise.all(
      Array.from({ length: world }, (_, rank) =>
        runNode(script, argsOf(rank), children).then((result) => {
          if (result.code !== 0 || result.json === undefined) {
            killAll();
            const why = result.code === null ? `was killed (deadline ${timeoutMs} ms)` : `exited with ${result.code}`;
            throw new Error(`${script} rank ${rank} ${why}:\n${result.stderr.slice(-3000)}${result.stdout.slice(-1000)}`);
          }
          return result;
        }),
      ),
    );
    return results;
  } finally {
    clearTimeout(timer);
    killAll();
  }
}

/** One process; its last line's JSON. */
export async function runChild(script: string, args: string[], timeoutMs: number): Promise<Record<string, unknown>> {
  return (await runPeers(script, 1, () => args, timeoutMs))[0].json!;
}
