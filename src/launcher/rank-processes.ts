/**
 * Implements: starting and reaping this node's ranks. A rank is a worker process that joins the job over
 * NATS, or in a simulated job a SimulatedRank in this process over the in-process transport; both are
 * RankProcesses, so the attempt that supervises them does not care which.
 */
import { spawn as spawnProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { LocalNetwork } from '../comm/local-transport.ts';
import type { NatsCredentials } from '../comm/nats-credentials.ts';
import type { TrainConfig } from '../config/types.ts';
import type { RunDatasets } from '../dataset/validation-split.ts';
import { keepRankLog } from './rank-log.ts';
import { SimulatedRank, type RankProcess } from './simulated-rank.ts';
import { WORKER_NODE_FLAGS, workerEnvironmentVariables } from './worker-env.ts';

const WORKER_ENTRY = fileURLToPath(new URL('./worker-main.ts', import.meta.url));

/** How a node starts its ranks, fixed for the whole job. */
export type RankHosting =
  | {
      kind: 'process';
      natsUrl: string;
      natsCredentials: NatsCredentials;
      /** The config as this launcher resolved it: a worker reads it instead of resolving its own. */
      configFile: string;
      /** The job key (hex) and the address the workers' data planes listen on; absent: tensors go through NATS. */
      dataPlane?: { key: string; host: string };
      /** What the job's messages are signed with. */
      jobKey: Buffer;
    }
  | {
      kind: 'simulated';
      network: LocalNetwork;
      /** Tokenized once by the launcher and shared, since every simulated rank lives in this process. */
      data: RunDatasets;
      jobKey: Buffer;
      actionTimeoutMs?: number;
      receiveTimeoutMs?: number;
      /** Lets a test reach a rank it started (to kill it, say). */
      onRank?: (rank: number, handle: RankProcess) => void;
    };

export interface RankStart {
  jobId: string;
  rank: number;
  world: number;
  node: number;
  config: TrainConfig;
  totalSteps: number;
  outDir: string;
  /** The checkpoint to start from, '' for the start. */
  resume: string;
  /** 0 for the first start, then one more per restart (marked in the rank's log file). */
  attempt: number;
  log: (line: string) => void;
}

export function startRank(hosting: RankHosting, start: RankStart): RankProcess {
  if (hosting.kind === 'simulated') {
    const rank = new SimulatedRank({
      network: hosting.network,
      jobId: start.jobId,
      rank: start.rank,
      world: start.world,
      config: start.config,
      totalSteps: start.totalSteps,
      outDir: start.outDir,
      resume: start.resume,
      data: hosting.data,
      jobKey: hosting.jobKey,
      log: start.log,
      actionTimeoutMs: hosting.actionTimeoutMs,
      receiveTimeoutMs: hosting.receiveTimeoutMs,
    });
    hosting.onRank?.(start.rank, rank);
    return rank;
  }
  const child = spawnProcess(process.execPath, [...WORKER_NODE_FLAGS, '--import', 'tsx', WORKER_ENTRY], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: {
      ...process.env,
      ...workerEnvironmentVariables({
        jobId: start.jobId,
        natsUrl: hosting.natsUrl,
        rank: start.rank,
        world: start.world,
        node: start.node,
        configPath: hosting.configFile,
        totalSteps: start.totalSteps,
        outDir: start.outDir,
        resume: start.resume,
        natsCredentials: hosting.natsCredentials,
        jobKey: hosting.jobKey.toString('hex'),
        ...(hosting.dataPlane === undefined ? {} : { dataPlane: hosting.dataPlane }),
      }),
    },
  });
  keepRankLog(start.outDir, start.rank, start.attempt, { stdout: child.stdout!, stderr: child.stderr! });
  return child;
}

/** Waits for every rank to exit; after `graceMs` kills the rest and waits for them too. */
export async function waitForExit(ranks: RankProcess[], graceMs: number): Promise<void> {
  const alive = () => ranks.filter((c) => c.exitCode === null && c.signalCode === null);
  const exits = () => Promise.all(alive().map((c) => new Promise((resolve) => c.once('exit', resolve))));
  const timeout = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
  await Promise.race([exits(), timeout]);
  for (const rank of alive()) rank.kill('SIGKILL');
  await exits();
}
