/**
 * Implements: the `train` command line: its options and help, `TrainCommand`, and the flags turned into
 * config overrides (trainOverrides). train.ts runs it.
 * Apart from train.ts so that parsing and help load none of the command's dependencies (train's
 * include tfjs): args.ts imports every command's spec, main.ts loads train.ts only to run it.
 */
import { isIP } from 'node:net';
import { BACKEND_NAMES, type BackendName } from '../backend/names.ts';
import type { NatsCredentialFlags } from '../comm/nats-credentials.ts';
import { parseDashboardAddress, type DashboardAddress } from '../dashboard/address.ts';
import {
  backendOption, checkOverrides, natsCredentialFlags, NATS_CREDENTIAL_OPTIONS, positiveInteger, PROGRAM, UsageError,
  type CommandSpec, type ParsedValues,
} from './command-spec.ts';
import { configKeysHelp, OVERRIDES_HELP } from './help.ts';

export interface TrainCommand {
  command: 'train';
  configPath: string;
  /** Absent: the caller picks `runs/<config basename>-<timestamp>`. */
  out?: string;
  steps?: number;
  /** `key=value` items in the order given. */
  sets: string[];
  backend?: BackendName;
  quiet: boolean;
  /** NATS server URL given on the command line (else NATS_URL, else the default; see launcher). */
  nats?: string;
  /** Present when a NATS login or TLS option was given. */
  natsCredentials?: NatsCredentialFlags;
  nnodes: number;
  nodeRank: number;
  /** Absent: world size / nnodes. */
  nprocPerNode?: number;
  /** Absent: generated; required on every node when nnodes > 1. */
  jobId?: string;
  /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
  resume?: string;
  /** Every rank's actors in this one process over the in-process transport: no worker process, no NATS server. */
  simulate: boolean;
  /** The address this node's workers' data planes listen on (comm.dataPlane "tcp"). */
  dataPlaneHost?: string;
  /** Where node 0's launcher serves the live job page. */
  dashboard?: DashboardAddress;
  /** Remove an earlier run's files from --out before training (without it such a folder is refused). */
  overwrite: boolean;
  /** The job key's file (every node's the same; comm/job-key.ts). */
  jobKeyFile?: string;
}

export const TRAIN_SPEC: CommandSpec<TrainCommand> = {
  summary: 'train the model a JSON config describes',
  usage: '<config.json> [--out DIR] [--steps N] [--set KEY=VALUE ...] [--backend NAME] [--quiet]',
  description:
    'Trains the GPT model described by <config.json>. The whole config (file plus --set overrides)\n' +
    'is checked before any work starts, and every problem is listed at once.',
  options: {
    out: {
      type: 'string',
      short: 'o',
      placeholder: 'DIR',
      doc: 'where checkpoints, logs and metrics go\n(default: runs/<config name>-<timestamp>)',
    },
    steps: { type: 'string', placeholder: 'N', doc: 'run N optimizer steps; replaces epochs/steps of the config' },
    set: {
      type: 'string',
      multiple: true,
      placeholder: 'KEY=VALUE',
      doc: 'override a config key; repeat it for several, applied in order',
    },
    backend: {
      type: 'string',
      placeholder: 'NAME',
      doc: `compute backend: ${BACKEND_NAMES.join(' | ')}\n(default: the config's backend, else the fastest installed)`,
    },
    quiet: { type: 'boolean', short: 'q', doc: 'no per-step progress; errors and the final summary still print' },
    nats: {
      type: 'string',
      placeholder: 'URL',
      doc:
        "NATS server of the job, or a cluster's servers separated by commas (default:\n$NATS_URL, else nats://127.0.0.1:4222; when that does not answer, a private\nnats-server is started); nats://TOKEN@host or nats://USER:PASSWORD@host\nlogs in with the URL's credentials",
    },
    ...NATS_CREDENTIAL_OPTIONS,
    nnodes: { type: 'string', placeholder: 'N', doc: 'nodes taking part; one launcher per node [1]' },
    'node-rank': { type: 'string', placeholder: 'K', doc: 'this node, 0..nnodes-1; node 0 coordinates the job [0]' },
    'nproc-per-node': { type: 'string', placeholder: 'N', doc: 'worker processes on this node [world size / nnodes]' },
    'job-id': { type: 'string', placeholder: 'ID', doc: 'job id ([A-Za-z0-9_-]); the same on every node (required with --nnodes > 1)' },
    'job-key-file': {
      type: 'string',
      placeholder: 'FILE',
      doc: "the key the job's messages are signed with (64 hex digits, mode 600;\nelse $GPT_HYBRID_JOB_KEY; one node makes its own); the same file on\nevery node with --nnodes > 1",
    },
    'max-restarts': { type: 'string', placeholder: 'N', doc: 'restarts from the last checkpoint before the job fails (config restart.max)' },
    'data-plane-host': {
      type: 'string',
      placeholder: 'ADDRESS',
      doc: 'where this node\'s workers listen for tensor links: an address of the\ninterface the other nodes reach [127.0.0.1 on one node, else the\nfirst non-loopback IPv4 address]',
    },
    overwrite: {
      type: 'boolean',
      doc: 'train a new run in an --out folder that holds an earlier run, removing that\nrun\'s metrics, checkpoints, trace and logs first (without it, or --resume,\nsuch a folder is refused)',
    },
    resume: {
      type: 'string',
      placeholder: 'DIR',
      doc: 'continue from a checkpoint folder, or a run folder (its latest checkpoint);\n--steps N is then the step to stop at',
    },
    dashboard: {
      type: 'string',
      placeholder: '[HOST:]PORT',
      doc: 'serve a live page of the job (loss, lr, throughput, ranks, timeline, log;\npause, resume, checkpoint, stop) from node 0\'s launcher; 127.0.0.1 unless\na HOST is given (then with a token, printed at start); PORT 0 picks one',
    },
    simulate: {
      type: 'boolean',
      doc: 'run every rank\'s actors of the layout in this one process (simulated actors):\nno worker processes, no NATS server; the same losses as the real job',
    },
  },
  moreHelp: () => `${OVERRIDES_HELP}\n\n${configKeysHelp()}`,
  examples: [
    `${PROGRAM} train tiny.json`,
    `${PROGRAM} train tiny.json --steps 20 --backend wasm --out runs/smoke`,
    `${PROGRAM} train tiny.json --set model.numLayers=8 --set optimizer.lr=1e-3`,
    `${PROGRAM} train gpt2.json --set parallel.pipeline=2 --set numMicroBatches=4 --set parallel.tensor.size=2`,
    `${PROGRAM} train tiny.json --set data.path=other.jsonl --set epochs=null --set steps=100`,
    `${PROGRAM} train tiny.json --out runs/a --steps 40 --set checkpoint.every=10`,
    `${PROGRAM} train tiny.json --out runs/a --steps 60 --resume runs/a`,
    `${PROGRAM} train tiny.json --simulate --set parallel.pipeline=2 --set numMicroBatches=4`,
    `${PROGRAM} train tiny.json --set parallel.pipeline=2 --dashboard 8080`,
  ],
  build: buildTrain,
};

const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Launcher options a scheduler may set in the environment instead of argv: ours (GPT_HYBRID_*) first,
 * then torchrun's (PET_*, what its elastic agent reads; PET_RDZV_ID is its job id). An option given on
 * the command line wins over both.
 */
const LAUNCHER_ENVIRONMENT: Record<string, readonly string[]> = {
  nnodes: ['GPT_HYBRID_NNODES', 'PET_NNODES'],
  'node-rank': ['GPT_HYBRID_NODE_RANK', 'PET_NODE_RANK'],
  'nproc-per-node': ['GPT_HYBRID_NPROC_PER_NODE', 'PET_NPROC_PER_NODE'],
  'max-restarts': ['GPT_HYBRID_MAX_RESTARTS', 'PET_MAX_RESTARTS'],
  'job-id': ['GPT_HYBRID_JOB_ID', 'PET_RDZV_ID'],
};

function fromEnvironment(option: string): { variable: string; value: string } | undefined {
  for (const variable of LAUNCHER_ENVIRONMENT[option] ?? []) {
    const value = process.env[variable];
    if (value !== undefined && value !== '') return { variable, value };
  }
  return undefined;
}

/** A whole-number launcher option: the flag, else its environment variable, else undefined. */
function launcherSetting(values: ParsedValues, option: string, usage: string, minimum = 1): number | undefined {
  const flag = values[option] as string | undefined;
  if (flag !== undefined) return positiveInteger(flag, `--${option}`, usage, minimum);
  const given = fromEnvironment(option);
  return given === undefined ? undefined : positiveInteger(given.value, `$${given.variable} (for --${option})`, usage, minimum);
}

function buildTrain(values: ParsedValues, positionals: string[], usage: string): TrainCommand {
  const [configPath, ...extra] = positionals;
  if (configPath === undefined || configPath === '') throw new UsageError('train needs a config file', usage);
  if (extra.length > 0) {
    const looksLikeOverride = extra.find((arg) => arg.includes('='));
    const hint =
      looksLikeOverride === undefined
        ? 'train takes one config file'
        : `each override needs its own --set: --set ${looksLikeOverride}`;
    throw new UsageError(`unexpected argument${extra.length > 1 ? 's' : ''} ${extra.map((a) => JSON.stringify(a)).join(' ')}; ${hint}`, usage);
  }
  const command: TrainCommand = {
    command: 'train',
    configPath,
    sets: (values.set as string[] | undefined) ?? [],
    quiet: values.quiet === true,
    simulate: values.simulate === true,
    overwrite: values.overwrite === true,
    nnodes: launcherSetting(values, 'nnodes', usage) ?? 1,
    nodeRank: launcherSetting(values, 'node-rank', usage, 0) ?? 0,
  };
  if (command.nodeRank >= command.nnodes) {
    throw new UsageError(`--node-rank ${command.nodeRank} must be below --nnodes ${command.nnodes}`, usage);
  }
  const nproc = launcherSetting(values, 'nproc-per-node', usage);
  if (nproc !== undefined) command.nprocPerNode = nproc;
  const maxRestarts = launcherSetting(values, 'max-restarts', usage, 0);
  // After the --set items: an explicit launcher option wins over the config, as torchrun's does.
  if (maxRestarts !== undefined) command.sets = [...command.sets, `restart.max=${maxRestarts}`];
  if (values.nats !== undefined) command.nats = values.nats as string;
  const natsCredentials = natsCredentialFlags(values, usage);
  if (natsCredentials !== undefined) command.natsCredentials = natsCredentials;
  const jobId = (values['job-id'] as string | undefined) ?? fromEnvironment('job-id')?.value;
  if (jobId !== undefined) {
    if (!JOB_ID_PATTERN.test(jobId)) throw new UsageError(`--job-id must be 1-64 characters of A-Z a-z 0-9 _ -, got "${jobId}"`, usage);
    command.jobId = jobId;
  }
  if (values['job-key-file'] !== undefined) command.jobKeyFile = values['job-key-file'] as string;
  const dataPlaneHost = values['data-plane-host'] as string | undefined;
  if (dataPlaneHost !== undefined) {
    if (!isIP(dataPlaneHost)) throw new UsageError(`--data-plane-host must be an IP address of this machine, got "${dataPlaneHost}"`, usage);
    command.dataPlaneHost = dataPlaneHost;
  }
  const dashboard = values.dashboard as string | undefined;
  if (dashboard !== undefined) {
    const address = parseDashboardAddress(dashboard);
    if (address === undefined) throw new UsageError(`--dashboard takes [HOST:]PORT (e.g. 8080, 0.0.0.0:8080, [::1]:0), got "${dashboard}"`, usage);
    command.dashboard = address;
  }
  const resume = values.resume as string | undefined;
  if (resume !== undefined) {
    if (resume === '') throw new UsageError('--resume needs a checkpoint or run folder', usage);
    command.resume = resume;
  }
  if (command.overwrite && command.resume !== undefined) {
    throw new UsageError('--overwrite starts a new run and --resume continues one: give one of them', usage);
  }
  if (command.simulate && (command.nnodes > 1 || command.nprocPerNode !== undefined || command.nats !== undefined || command.natsCredentials !== undefined)) {
    throw new UsageError('--simulate runs the whole job in this process: drop --nnodes, --nproc-per-node and the NATS options', usage);
  }
  if (command.nnodes > 1 && command.jobId === undefined) {
    throw new UsageError('--nnodes > 1 needs --job-id ID, the same on every node, so the launchers find each other', usage);
  }

  const out = values.out as string | undefined;
  if (out !== undefined) {
    if (out === '') throw new UsageError('--out needs a folder, got an empty string', usage);
    command.out = out;
  }
  const steps = values.steps as string | undefined;
  if (steps !== undefined) {
    const n = /^[0-9]+$/.test(steps) ? Number(steps) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--steps must be a positive integer, got "${steps}"`, usage);
    command.steps = n;
  }
  const backend = backendOption(values.backend as string | undefined, usage);
  if (backend !== undefined) command.backend = backend;
  checkOverrides(command.sets, usage);
  return command;
}

/**
 * The train command's overrides for loadConfig: its --set items, then --backend and --steps as
 * overrides, so flags win. --steps unsets epochs because a config may bound the run by only one.
 */
export function trainOverrides(command: TrainCommand): string[] {
  const sets = [...command.sets];
  if (command.backend !== undefined) sets.push(`backend=${command.backend}`);
  if (command.steps !== undefined) sets.push('epochs=null', `steps=${command.steps}`);
  return sets;
}
