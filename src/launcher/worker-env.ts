/**
 * Implements: how a launcher tells a worker process who it is, like torchrun's RANK / WORLD_SIZE
 * variables: one environment variable per fact, read and checked in one place. NATS credentials travel
 * the same way, under the `nats` CLI's names (NATS_TOKEN, NATS_CREDS, ...), never in argv.
 */
import { parseJobKey } from '../comm/frame-signing.ts';
import { JOB_KEY_VARIABLE } from '../comm/job-key.ts';
import { natsCredentialVariables, resolveNatsCredentials, type NatsCredentials } from '../comm/nats-credentials.ts';

export interface WorkerEnvironment {
  jobId: string;
  natsUrl: string;
  rank: number;
  world: number;
  node: number;
  /** The resolved config (JSON file written by the launcher). */
  configPath: string;
  totalSteps: number;
  /** The run folder on this node (traces go there). */
  outDir: string;
  /** A verified checkpoint folder to start from; empty: a fresh start. */
  resume: string;
  /** What the launcher logs in to NATS with. */
  natsCredentials: NatsCredentials;
  /** The direct data plane (comm/data-plane.ts): the job key and the address to listen on; absent: tensors go through NATS. */
  dataPlane?: { key: string; host: string };
  /** The key the job's messages are signed with (comm/frame-signing.ts), hex. */
  jobKey: string;
}

const NAMES = {
  jobId: 'GPT_HYBRID_JOB_ID',
  natsUrl: 'GPT_HYBRID_NATS_URL',
  rank: 'GPT_HYBRID_RANK',
  world: 'GPT_HYBRID_WORLD_SIZE',
  node: 'GPT_HYBRID_NODE_RANK',
  configPath: 'GPT_HYBRID_CONFIG',
  totalSteps: 'GPT_HYBRID_TOTAL_STEPS',
  outDir: 'GPT_HYBRID_OUT_DIR',
  resume: 'GPT_HYBRID_RESUME',
} as const;

/** The job key travels like a NATS secret: in the environment, never in argv. */
const DATA_PLANE_KEY = 'GPT_HYBRID_DATA_PLANE_KEY';
const DATA_PLANE_HOST = 'GPT_HYBRID_DATA_PLANE_HOST';

/** The worker's variables; credential variables not in use are undefined, so inherited ones are dropped. */
export function workerEnvironmentVariables(env: WorkerEnvironment): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = natsCredentialVariables(env.natsCredentials);
  for (const [key, name] of Object.entries(NAMES)) out[name] = String(env[key as keyof typeof NAMES]);
  out[JOB_KEY_VARIABLE] = env.jobKey;
  out[DATA_PLANE_KEY] = env.dataPlane?.key;
  out[DATA_PLANE_HOST] = env.dataPlane?.host;
  return out;
}

export function readWorkerEnvironment(source: NodeJS.ProcessEnv = process.env): WorkerEnvironment {
  const text = (key: keyof typeof NAMES): string => {
    const value = source[NAMES[key]];
    if (value === undefined || value === '') {
      throw new Error(`${NAMES[key]} is not set: worker processes are started by \`gpt-hybrid train\`, not by hand`);
    }
    return value;
  };
  const integer = (key: keyof typeof NAMES): number => {
    const value = Number(text(key));
    if (!Number.isInteger(value) || value < 0) throw new Error(`${NAMES[key]}=${source[NAMES[key]]} is not a non-negative integer`);
    return value;
  };
  const env = {
    jobId: text('jobId'),
    natsUrl: text('natsUrl'),
    rank: integer('rank'),
    world: integer('world'),
    node: integer('node'),
    configPath: text('configPath'),
    totalSteps: integer('totalSteps'),
    outDir: text('outDir'),
    resume: source[NAMES.resume] ?? '',
    natsCredentials: resolveNatsCredentials({}, {}, source).credentials,
    jobKey: parseJobKey(source[JOB_KEY_VARIABLE] ?? '', `$${JOB_KEY_VARIABLE} (set by the launcher)`).toString('hex'),
    ...dataPlaneOf(source),
  };
  if (env.rank >= env.world) throw new Error(`${NAMES.rank}=${env.rank} is not below ${NAMES.world}=${env.world}`);
  return env;
}

function dataPlaneOf(source: NodeJS.ProcessEnv): Pick<WorkerEnvironment, 'dataPlane'> {
  const key = source[DATA_PLANE_KEY];
  const host = source[DATA_PLANE_HOST];
  if ((key === undefined || key === '') && (host === undefined || host === '')) return {};
  if (key === undefined || !/^[0-9a-f]{64}$/.test(key)) throw new Error(`${DATA_PLANE_KEY} must be 64 hex digits (the job key its launcher made)`);
  if (host === undefined || host === '') throw new Error(`${DATA_PLANE_HOST} is not set but ${DATA_PLANE_KEY} is: the launcher sets both`);
  return { dataPlane: { key, host } };
}

/**
 * Node flags of every worker process. A fresh process starts with a small old space, so V8 runs a full
 * collection every ~14 MB of message buffers; receiving tensors is mostly allocation, and that GC was
 * the largest cost left in the NATS transfer (bench transport: 0.50 -> ~0.7 GB/s with 64 MB).
 */
export const WORKER_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];
