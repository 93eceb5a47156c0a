/**
 * Implements: the gpt-hybrid command line: parsing argv (node's util.parseArgs) into a typed command,
 * and the help text users read. Each command is one entry of COMMANDS (its options, help and how its
 * parsed values become a result), so `schedule`, `ctl` or `launch` are added as entries, not branches.
 */
import { parseArgs as parseNodeArgs } from 'node:util';
import { ConfigError } from '../config/errors.ts';
import { parseOverrides } from '../config/overrides.ts';
import { describeDefault, listKeys, TRAIN_SCHEMA } from '../config/schema.ts';
import { closestMatch } from '../config/suggest.ts';
import { BACKEND_NAMES, type BackendName } from '../backend/names.ts';
import type { NatsCredentialFlags } from '../comm/nats-credentials.ts';
import { buildSchedule, ScheduleError, SCHEDULE_KINDS, type ScheduleKind } from '../scheduler/schedules.ts';
import { MODEL_PRESETS } from '../model/config.ts';

const PROGRAM = 'gpt-hybrid';

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
}

export const CONTROL_COMMANDS = ['status', 'pause', 'resume', 'checkpoint', 'stop'] as const;
export type ControlCommandName = (typeof CONTROL_COMMANDS)[number];

export interface CtlCommand {
  command: 'ctl';
  /** A job id, or a run folder holding job.json. */
  target: string;
  action: ControlCommandName;
  /** stop --checkpoint: save a checkpoint at the step boundary where the job stops. */
  save?: boolean;
  nats?: string;
  /** Present when a NATS login or TLS option was given. */
  natsCredentials?: NatsCredentialFlags;
  timeoutMs: number;
}

export interface PlanCommand {
  command: 'plan';
  /** Absent: plan `model` with default settings. */
  configPath?: string;
  /** A model preset: replaces the config's model.preset, or alone, is what gets planned. */
  model?: string;
  sets: string[];
  json: boolean;
  /** For `parallel.data: "auto"`: the world is nnodes x nprocPerNode. */
  nnodes: number;
  nprocPerNode?: number;
}

export interface ScheduleCommand {
  command: 'schedule';
  kind: ScheduleKind;
  stages: number;
  microBatches: number;
  chunks: number;
  json: boolean;
  /** Where to write the SVG timeline. */
  svg?: string;
}

export const CHECKPOINT_ACTIONS = ['convert', 'inspect'] as const;

/** The config keys `checkpoint convert --set` takes, and the layout field each sets. */
export const CONVERT_KEYS = { 'parallel.data': 'data', 'parallel.pipeline': 'pipeline', 'parallel.tensor.size': 'tensor', numChunks: 'numChunks' } as const;

export type CheckpointCommand =
  | {
      command: 'checkpoint';
      action: 'convert';
      /** A checkpoint folder, or a run folder meaning its latest checkpoint. */
      source: string;
      out: string;
      /** Only the sizes given; the others keep the source's. */
      layout: { data?: number; pipeline?: number; tensor?: number; numChunks?: number };
    }
  | { command: 'checkpoint'; action: 'inspect'; source: string; json: boolean };

export type CliCommand =
  | TrainCommand
  | CtlCommand
  | PlanCommand
  | ScheduleCommand
  | CheckpointCommand
  | { command: 'help'; text: string }
  | { command: 'version' };

/** A command line that cannot be run: the message says what is wrong, then shows the usage. */
export class UsageError extends Error {
  override name = 'UsageError';
  /** The usage line(s) of the command concerned, also included in the message. */
  readonly usage: string;

  constructor(problem: string, usage: string) {
    super(`${problem}\n\n${usage}`);
    this.usage = usage;
  }
}

interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** The value's placeholder in help: DIR, N, KEY=VALUE. */
  placeholder?: string;
  doc: string;
}

type ParsedValues = Record<string, string | boolean | string[] | undefined>;

interface CommandSpec {
  summary: string;
  /** What follows `gpt-hybrid <name>` on the usage line. */
  usage: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** Extra help sections after the options. */
  moreHelp?: () => string;
  examples: string[];
  build(values: ParsedValues, positionals: string[], usage: string): CliCommand;
}

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', doc: 'show this help' };

/**
 * The NATS login and TLS options of train and ctl, after the `nats` CLI's variables. Secrets are given
 * by file (or variable), never as an option's value, which `ps` shows to every user of the machine.
 */
const NATS_CREDENTIAL_OPTIONS: Record<string, OptionSpec & { field: keyof NatsCredentialFlags }> = {
  'nats-token-file': { type: 'string', placeholder: 'FILE', field: 'tokenFile', doc: 'file holding the NATS token (else $NATS_TOKEN, the token itself)' },
  'nats-user': { type: 'string', placeholder: 'USER', field: 'user', doc: 'NATS user, with --nats-password-file or $NATS_PASSWORD (else $NATS_USER)' },
  'nats-password-file': { type: 'string', placeholder: 'FILE', field: 'passwordFile', doc: "file holding the NATS user's password" },
  'nats-creds': { type: 'string', placeholder: 'FILE', field: 'creds', doc: 'NATS credentials file, JWT and nkey seed (else $NATS_CREDS)' },
  'nats-tls-ca': { type: 'string', placeholder: 'FILE', field: 'tlsCa', doc: "CA that signed the NATS server's certificate (else $NATS_CA)" },
  'nats-tls-cert': { type: 'string', placeholder: 'FILE', field: 'tlsCert', doc: 'TLS client certificate, for a server that verifies clients (else $NATS_CERT)' },
  'nats-tls-key': { type: 'string', placeholder: 'FILE', field: 'tlsKey', doc: "the client certificate's key (else $NATS_KEY)" },
};

/** The NATS credential options given, or undefined when none was. */
function natsCredentialFlags(values: ParsedValues, usage: string): NatsCredentialFlags | undefined {
  const flags: NatsCredentialFlags = {};
  for (const [name, option] of Object.entries(NATS_CREDENTIAL_OPTIONS)) {
    const value = values[name] as string | undefined;
    if (value === undefined) continue;
    if (value === '') throw new UsageError(`--${name} needs a ${option.placeholder === 'USER' ? 'user name' : 'file'}, got an empty string`, usage);
    flags[option.field] = value;
  }
  return Object.keys(flags).length === 0 ? undefined : flags;
}

const COMMANDS: Record<string, CommandSpec> = {
  train: {
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
      resume: {
        type: 'string',
        placeholder: 'DIR',
        doc: 'continue from a checkpoint folder, or a run folder (its latest checkpoint);\n--steps N is then the step to stop at',
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
    ],
    build: buildTrain,
  },
  ctl: {
    summary: 'send a control message to a running job',
    usage: `<job-id|run-folder> ${CONTROL_COMMANDS.join('|')} [--checkpoint] [--nats URL] [--timeout MS]`,
    description:
      'Sends status, pause, resume, checkpoint or stop to a running job and prints its answer as JSON.\n' +
      'The job id is printed when training starts and kept in <run-folder>/job.json, which also\n' +
      'records the NATS server, so a run folder is enough (not its credentials: give ctl the same NATS\n' +
      'credential options or variables as the job). Pause and stop take effect at the next step\n' +
      'boundary; stop ends the job with exit code 0 (stop --checkpoint saves a checkpoint there first).',
    options: {
      checkpoint: { type: 'boolean', doc: 'with stop: every rank saves a checkpoint at the step where the job stops' },
      nats: { type: 'string', placeholder: 'URL', doc: "NATS server (default: the run folder's, else $NATS_URL, else nats://127.0.0.1:4222)" },
      ...NATS_CREDENTIAL_OPTIONS,
      timeout: { type: 'string', placeholder: 'MS', doc: 'how long to wait for the answer [5000]' },
    },
    examples: [`${PROGRAM} ctl runs/tiny status`, `${PROGRAM} ctl runs/tiny stop --checkpoint`, `${PROGRAM} ctl tiny-3f9a2c pause --nats nats://10.0.0.5:4222`],
    build: buildCtl,
  },
  plan: {
    summary: 'show each rank\'s layers, parameters and memory, without building the model',
    usage: '[config.json] [--model PRESET] [--set KEY=VALUE ...] [--json]',
    description:
      'Plans a training job: for every rank of the data x pipeline x tensor grid, its coordinates, layer\n' +
      'ranges, parameter share and bytes (weights, gradients, Adam state, activations), plus the whole\n' +
      "model's parameter count by Megatron's formula. Nothing is allocated, so GPT-3 plans in a blink.\n" +
      'With --model alone, plans that preset with default settings (choosing numMicroBatches and\n' +
      'batchSize a pipeline needs when not set, and saying so). The data file is not read.',
    options: {
      model: { type: 'string', placeholder: 'PRESET', doc: `model preset: ${Object.keys(MODEL_PRESETS).join(' | ')}` },
      set: { type: 'string', multiple: true, placeholder: 'KEY=VALUE', doc: 'override a config key; repeat it for several, applied in order' },
      json: { type: 'boolean', doc: 'print the plan as JSON' },
      nnodes: { type: 'string', placeholder: 'N', doc: 'nodes, for parallel.data "auto" [1]' },
      'nproc-per-node': { type: 'string', placeholder: 'N', doc: 'processes per node, for parallel.data "auto"' },
    },
    moreHelp: () => OVERRIDES_HELP,
    examples: [
      `${PROGRAM} plan --model gpt3 --set parallel.pipeline=8 --set parallel.tensor.size=8`,
      `${PROGRAM} plan tiny.json --set parallel.pipeline=2 --set numMicroBatches=4 --json`,
    ],
    build: buildPlan,
  },
  schedule: {
    summary: 'print a pipeline schedule (gpipe, 1f1b, interleaved) as a chart, JSON or SVG timeline',
    usage: `--kind ${SCHEDULE_KINDS.join('|')} --stages P --microbatches M [--chunks V] [--json] [--svg FILE]`,
    description:
      'Prints the order in which each pipeline stage runs the forward (F) and backward (B) passes of\n' +
      'the micro-batches in one step: a chart with stages as rows and time slots as columns (every op\n' +
      'one slot, . = idle), then each stage\'s bubble next to the theoretical (p - 1) / (m + p - 1)\n' +
      '(divided by the chunks for interleaved). Ops read F3 (forward of micro-batch 3) or B0.1\n' +
      '(backward of micro-batch 0 through model chunk 1). The interleaved schedule needs the\n' +
      'micro-batches to be a multiple of the stages.',
    options: {
      kind: { type: 'string', placeholder: 'KIND', doc: `${SCHEDULE_KINDS.join(' | ')}` },
      stages: { type: 'string', placeholder: 'P', doc: 'pipeline stages' },
      microbatches: { type: 'string', placeholder: 'M', doc: 'micro-batches per step' },
      chunks: { type: 'string', placeholder: 'V', doc: 'model chunks per stage (interleaved only) [1]' },
      json: { type: 'boolean', doc: 'print {"kind","stages","microbatches","chunks","ops"}; ops[s] lists\nstage s\'s ops as ["F"|"B", microbatch, chunk]' },
      svg: { type: 'string', placeholder: 'FILE', doc: 'also write the timeline as SVG (backward twice as long as forward)' },
    },
    examples: [
      `${PROGRAM} schedule --kind 1f1b --stages 4 --microbatches 8`,
      `${PROGRAM} schedule --kind interleaved --stages 4 --microbatches 8 --chunks 2 --svg interleaved.svg`,
      `${PROGRAM} schedule --kind gpipe --stages 2 --microbatches 4 --json`,
    ],
    build: buildScheduleCommand,
  },
  checkpoint: {
    summary: 'convert a checkpoint to another parallel layout, or inspect and verify one',
    usage: 'convert|inspect <checkpoint|run-folder> [--out DIR] [--set KEY=VALUE ...] [--json]',
    description:
      'convert writes the checkpoint in another data x pipeline x tensor layout, as a new run folder\n' +
      '(DIR/checkpoints/step-NNNNNN with its manifest, checksums and `latest`); DIR must not exist or be\n' +
      'empty. The layout is set with the keys train takes: --set parallel.data=D, parallel.pipeline=P,\n' +
      'parallel.tensor.size=T, numChunks=V; keys not given keep the source\'s values. Resume it with\n' +
      'train --resume DIR in that layout. (train --resume also loads any layout directly.)\n' +
      'inspect checks every file against the manifest (size, SHA-256, tensors, coverage) and prints\n' +
      'the step, layout, parameters and files; it exits 1 naming every problem when one is refused.',
    options: {
      out: { type: 'string', short: 'o', placeholder: 'DIR', doc: 'convert: the new run folder (must not exist, or be empty)' },
      set: { type: 'string', multiple: true, placeholder: 'KEY=VALUE', doc: `convert: the target layout, by the config keys\n${Object.keys(CONVERT_KEYS).join(', ')}` },
      json: { type: 'boolean', doc: 'inspect: print the report as JSON' },
    },
    examples: [
      `${PROGRAM} checkpoint inspect runs/a`,
      `${PROGRAM} checkpoint convert runs/a --out runs/b --set parallel.pipeline=1 --set parallel.tensor.size=1`,
      `${PROGRAM} checkpoint convert runs/a/checkpoints/step-000040 --out runs/b --set parallel.data=2`,
    ],
    build: buildCheckpointCommand,
  },
};

function buildCheckpointCommand(values: ParsedValues, positionals: string[], usage: string): CheckpointCommand {
  const [action, source, ...extra] = positionals;
  if (action === undefined) throw new UsageError(`checkpoint needs an action: ${CHECKPOINT_ACTIONS.join(' or ')}`, usage);
  if (!(CHECKPOINT_ACTIONS as readonly string[]).includes(action)) {
    const guess = closestMatch(action, CHECKPOINT_ACTIONS);
    throw new UsageError(`unknown checkpoint action "${action}"; ${guess === undefined ? `use ${CHECKPOINT_ACTIONS.join(' or ')}` : `did you mean "${guess}"?`}`, usage);
  }
  if (source === undefined || source === '') throw new UsageError(`checkpoint ${action} needs a checkpoint folder or a run folder`, usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; checkpoint ${action} takes one folder`, usage);
  const sets = (values.set as string[] | undefined) ?? [];
  const out = values.out as string | undefined;
  if (action === 'inspect') {
    if (out !== undefined || sets.length > 0) throw new UsageError('--out and --set belong to checkpoint convert; inspect only reads', usage);
    return { command: 'checkpoint', action: 'inspect', source, json: values.json === true };
  }
  if (values.json === true) throw new UsageError('--json belongs to checkpoint inspect', usage);
  if (out === undefined || out === '') throw new UsageError('checkpoint convert needs --out DIR, a new folder for the converted checkpoint', usage);
  checkOverrides(sets, usage);
  const layout: { data?: number; pipeline?: number; tensor?: number; numChunks?: number } = {};
  for (const { key, value, item } of parseOverrides(sets)) {
    if (!Object.hasOwn(CONVERT_KEYS, key)) {
      throw new UsageError(
        `--set ${item}: convert changes only the layout (${Object.keys(CONVERT_KEYS).join(', ')}); ${key} is set when you resume with train`,
        usage,
      );
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      throw new UsageError(`--set ${item}: ${key} must be a positive integer, got ${JSON.stringify(value)}`, usage);
    }
    layout[CONVERT_KEYS[key as keyof typeof CONVERT_KEYS]] = value;
  }
  return { command: 'checkpoint', action: 'convert', source, out, layout };
}

function buildScheduleCommand(values: ParsedValues, positionals: string[], usage: string): ScheduleCommand {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; schedule takes only options`, usage);
  const kind = values.kind as string | undefined;
  if (kind === undefined) throw new UsageError(`schedule needs --kind ${SCHEDULE_KINDS.join('|')}`, usage);
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kind)) {
    const guess = closestMatch(kind, SCHEDULE_KINDS);
    throw new UsageError(`unknown schedule kind "${kind}"; ${guess === undefined ? `use one of ${SCHEDULE_KINDS.join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const stages = positiveInteger(values.stages as string | undefined, '--stages', usage);
  const microBatches = positiveInteger(values.microbatches as string | undefined, '--microbatches', usage);
  if (stages === undefined || microBatches === undefined) throw new UsageError(`schedule needs ${stages === undefined ? '--stages P' : '--microbatches M'}`, usage);
  const command: ScheduleCommand = {
    command: 'schedule',
    kind: kind as ScheduleKind,
    stages,
    microBatches,
    chunks: positiveInteger(values.chunks as string | undefined, '--chunks', usage) ?? 1,
    json: values.json === true,
  };
  const svg = values.svg as string | undefined;
  if (svg !== undefined) {
    if (svg === '') throw new UsageError('--svg needs a file name, got an empty string', usage);
    command.svg = svg;
  }
  try {
    buildSchedule(command.kind, stages, microBatches, command.chunks);
  } catch (error) {
    if (!(error instanceof ScheduleError)) throw error;
    throw new UsageError(error.message, usage);
  }
  return command;
}

function buildPlan(values: ParsedValues, positionals: string[], usage: string): PlanCommand {
  const [configPath, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}; plan takes at most one config file`, usage);
  const model = values.model as string | undefined;
  if (configPath === undefined && model === undefined) throw new UsageError('plan needs a config file or --model PRESET', usage);
  if (model !== undefined && !Object.hasOwn(MODEL_PRESETS, model)) {
    const guess = closestMatch(model, Object.keys(MODEL_PRESETS));
    throw new UsageError(`unknown model preset "${model}"; ${guess === undefined ? `choose one of ${Object.keys(MODEL_PRESETS).join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const command: PlanCommand = {
    command: 'plan',
    sets: (values.set as string[] | undefined) ?? [],
    json: values.json === true,
    nnodes: positiveInteger(values.nnodes as string | undefined, '--nnodes', usage) ?? 1,
  };
  if (configPath !== undefined) command.configPath = configPath;
  if (model !== undefined) command.model = model;
  const nproc = positiveInteger(values['nproc-per-node'] as string | undefined, '--nproc-per-node', usage);
  if (nproc !== undefined) command.nprocPerNode = nproc;
  checkOverrides(command.sets, usage);
  return command;
}

function positiveInteger(value: string | undefined, flag: string, usage: string, minimum = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < minimum) {
    throw new UsageError(`${flag} must be ${minimum === 0 ? 'a non-negative' : 'a positive'} integer, got "${value}"`, usage);
  }
  return n;
}

/** Malformed --set items are usage errors, reported before any work. */
function checkOverrides(sets: string[], usage: string): void {
  try {
    parseOverrides(sets);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new UsageError(error.problems.map((p) => `${p.path}: ${p.message}`).join('\n'), usage);
  }
}

const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

function buildCtl(values: ParsedValues, positionals: string[], usage: string): CtlCommand {
  const [target, action, ...extra] = positionals;
  if (target === undefined || action === undefined) throw new UsageError('ctl needs a job (id or run folder) and a command', usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`, usage);
  if (!(CONTROL_COMMANDS as readonly string[]).includes(action)) {
    const guess = closestMatch(action, CONTROL_COMMANDS);
    throw new UsageError(`unknown control command "${action}"; ${guess === undefined ? `use one of ${CONTROL_COMMANDS.join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const command: CtlCommand = { command: 'ctl', target, action: action as ControlCommandName, timeoutMs: positiveInteger(values.timeout as string | undefined, '--timeout', usage) ?? 5000 };
  if (values.nats !== undefined) command.nats = values.nats as string;
  const natsCredentials = natsCredentialFlags(values, usage);
  if (natsCredentials !== undefined) command.natsCredentials = natsCredentials;
  if (values.checkpoint === true) {
    if (action !== 'stop') throw new UsageError(`--checkpoint goes with stop (a checkpoint where the job stops); for one now, use: ctl ${target} checkpoint`, usage);
    command.save = true;
  }
  return command;
}

const OVERRIDES_HELP = `Overrides (--set KEY=VALUE):
  KEY is a dotted path into the config (model.numLayers, parallel.tensor.size). VALUE is read as
  JSON when it is JSON (8, 1e-3, true, null, [..], {..}), otherwise as text (cpu, data/a.jsonl);
  quote it to force text: --set 'seed="7"'. Setting an object replaces it; null unsets a key, so
  its default applies again. --steps and --backend are applied after every --set.
  A relative data.path written in the config file is relative to the file's folder; one given
  with --set is relative to the current directory.`;

function configKeysHelp(): string {
  const keys = listKeys(TRAIN_SCHEMA);
  const width = Math.max(...keys.map((k) => k.path.length)) + 2;
  const lines = keys.flatMap(({ path, spec }) => {
    const choices = spec.kind === 'enum' ? `${spec.values.join(' | ')}: ` : '';
    const fallback = describeDefault(path);
    const text = `${choices}${spec.doc}${fallback === undefined ? '' : ` [${fallback}]`}`;
    return wrap(text, HELP_WIDTH - 2 - width).map((line, i) => `  ${(i === 0 ? path : '').padEnd(width)}${line}`);
  });
  return [
    'Config keys (JSON; all optional except data.path; [default]; model defaults are GPT-2 small\'s,',
    'a model.preset replaces them and explicit model keys win over the preset):',
    ...lines,
  ].join('\n');
}

const HELP_WIDTH = 100;

/** Splits text at spaces into lines of at most `width` characters (a longer word gets its own line). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines;
}

function usageLine(name: string): string {
  return `usage: ${PROGRAM} ${name} ${COMMANDS[name]!.usage}\nRun '${PROGRAM} ${name} --help' for details.`;
}

const GENERAL_USAGE = `usage: ${PROGRAM} <command> [options]   (commands: ${Object.keys(COMMANDS).join(', ')})\nRun '${PROGRAM} --help' for details.`;

export function generalHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length)) + 2;
  return [
    `${PROGRAM}: train GPT models with data x pipeline x tensor parallelism on TensorFlow.js.`,
    '',
    'Usage:',
    `  ${PROGRAM} <command> [options]`,
    `  ${PROGRAM} <command> --help     options, config keys and examples of one command`,
    `  ${PROGRAM} --version`,
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, spec]) => `  ${name.padEnd(width)}${spec.summary}`),
    '',
    'Examples:',
    ...Object.values(COMMANDS).map((spec) => `  ${spec.examples[0]}`),
    `  ${PROGRAM} train --help`,
  ].join('\n');
}

export function commandHelp(name: string): string {
  const spec = COMMANDS[name];
  if (spec === undefined) throw new Error(`no command "${name}"`);
  const options = { ...spec.options, help: HELP_OPTION };
  const labels = Object.entries(options).map(([long, option]) => {
    const short = option.short === undefined ? '    ' : `-${option.short}, `;
    return `${short}--${long}${option.placeholder === undefined ? '' : ` ${option.placeholder}`}`;
  });
  const width = Math.max(...labels.map((label) => label.length)) + 2;
  const optionLines = Object.values(options).flatMap((option, i) =>
    option.doc.split('\n').map((docLine, j) => `  ${(j === 0 ? labels[i]! : '').padEnd(width)}${docLine}`),
  );
  return [
    `usage: ${PROGRAM} ${name} ${spec.usage}`,
    '',
    spec.description,
    '',
    'Options:',
    ...optionLines,
    ...(spec.moreHelp === undefined ? [] : ['', spec.moreHelp()]),
    '',
    'Examples:',
    ...spec.examples.map((example) => `  ${example}`),
  ].join('\n');
}

/** Parses `argv` without the node and script entries (process.argv.slice(2)). Throws UsageError. */
export function parseCommandLine(argv: readonly string[]): CliCommand {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('no command given', GENERAL_USAGE);
  if (first === '--help' || first === '-h' || first === 'help') {
    const topic = rest[0];
    if (topic === undefined || topic.startsWith('-')) return { command: 'help', text: generalHelp() };
    if (COMMANDS[topic] === undefined) throw unknownCommand(topic);
    return { command: 'help', text: commandHelp(topic) };
  }
  if (first === '--version' || first === '-V' || first === '-v') return { command: 'version' };
  if (first.startsWith('-')) {
    throw new UsageError(`unknown option ${first}; options go after the command (e.g. ${PROGRAM} train config.json ${first})`, GENERAL_USAGE);
  }
  const spec = COMMANDS[first];
  if (spec === undefined) throw unknownCommand(first);
  return parseCommand(first, spec, rest);
}

function unknownCommand(name: string): UsageError {
  const guess = closestMatch(name, Object.keys(COMMANDS));
  const hint = guess === undefined ? `commands: ${Object.keys(COMMANDS).join(', ')}` : `did you mean "${guess}"?`;
  return new UsageError(`unknown command "${name}"; ${hint}`, GENERAL_USAGE);
}

function parseCommand(name: string, spec: CommandSpec, args: string[]): CliCommand {
  const usage = usageLine(name);
  const optionSpecs = { ...spec.options, help: HELP_OPTION };
  const nodeOptions = Object.fromEntries(
    Object.entries(optionSpecs).map(([long, option]) => [
      long,
      { type: option.type, ...(option.short === undefined ? {} : { short: option.short }), ...(option.multiple ? { multiple: true } : {}) },
    ]),
  );
  let parsed: { values: ParsedValues; positionals: string[] };
  try {
    parsed = parseNodeArgs({ args, options: nodeOptions, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (error) {
    throw new UsageError(explainParseError(error, name, Object.keys(optionSpecs)), usage);
  }
  if (parsed.values.help === true) return { command: 'help', text: commandHelp(name) };
  return spec.build(parsed.values, parsed.positionals, usage);
}

/** Options users may expect from other tools that would put a secret on the command line, and what to use. */
const SECRET_OPTIONS: Record<string, string> = {
  '--nats-token': '--nats-token-file FILE or $NATS_TOKEN',
  '--nats-password': '--nats-password-file FILE or $NATS_PASSWORD',
};

/** Rewords node's parseArgs errors (long, and written for programmers) for users. */
function explainParseError(error: unknown, command: string, optionNames: string[]): string {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message ?? String(error);
  // node names an option with a short form as '-o, --out <value>': prefer the long name.
  const long = /--([A-Za-z0-9-]+)/.exec(message)?.[1];
  const option = long === undefined ? (/'(-[^' ,]+)/.exec(message)?.[1] ?? '') : `--${long}`;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const fromFile = SECRET_OPTIONS[option];
    if (fromFile !== undefined) return `unknown option ${option} for ${command}: a secret is not given as an option's value (ps shows it to every user); use ${fromFile}`;
    const guess = closestMatch(option.replace(/^-+/, ''), optionNames);
    const hint = guess === undefined ? '' : `; did you mean --${guess}?`;
    return `unknown option ${option} for ${command}${hint}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (message.includes('does not take an argument')) return `option ${option} takes no value`;
    return `option ${option} needs a value (write ${option} VALUE or ${option}=VALUE)`;
  }
  throw error;
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
    nnodes: positiveInteger(values.nnodes as string | undefined, '--nnodes', usage) ?? 1,
    nodeRank: positiveInteger(values['node-rank'] as string | undefined, '--node-rank', usage, 0) ?? 0,
  };
  if (command.nodeRank >= command.nnodes) {
    throw new UsageError(`--node-rank ${command.nodeRank} must be below --nnodes ${command.nnodes}`, usage);
  }
  const nproc = positiveInteger(values['nproc-per-node'] as string | undefined, '--nproc-per-node', usage);
  if (nproc !== undefined) command.nprocPerNode = nproc;
  if (values.nats !== undefined) command.nats = values.nats as string;
  const natsCredentials = natsCredentialFlags(values, usage);
  if (natsCredentials !== undefined) command.natsCredentials = natsCredentials;
  const jobId = values['job-id'] as string | undefined;
  if (jobId !== undefined) {
    if (!JOB_ID_PATTERN.test(jobId)) throw new UsageError(`--job-id must be 1-64 characters of A-Z a-z 0-9 _ -, got "${jobId}"`, usage);
    command.jobId = jobId;
  }
  const resume = values.resume as string | undefined;
  if (resume !== undefined) {
    if (resume === '') throw new UsageError('--resume needs a checkpoint or run folder', usage);
    command.resume = resume;
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
  const backend = values.backend as string | undefined;
  if (backend !== undefined) {
    if (!(BACKEND_NAMES as readonly string[]).includes(backend)) {
      const guess = closestMatch(backend, BACKEND_NAMES);
      throw new UsageError(
        `--backend must be one of ${BACKEND_NAMES.join(', ')}, got "${backend}"${guess === undefined ? '' : `; did you mean ${guess}?`}`,
        usage,
      );
    }
    command.backend = backend as BackendName;
  }
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
