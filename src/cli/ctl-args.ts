/**
 * Implements: the `ctl` command line: its options and help, and `CtlCommand`. ctl.ts runs it.
 * Apart from ctl.ts so that parsing and help load none of the command's dependencies (train's
 * include tfjs): args.ts imports every command's spec, main.ts loads ctl.ts only to run it.
 */
import { CONTROL_COMMANDS, type ControlCommand } from '../protocol/messages.ts';
import type { NatsCredentialFlags } from '../comm/nats-credentials.ts';
import { closestMatch } from '../config/suggest.ts';
import {
  natsCredentialFlags, NATS_CREDENTIAL_OPTIONS, positiveInteger, PROGRAM, UsageError,
  type CommandSpec, type ParsedValues,
} from './command-spec.ts';

export interface CtlCommand {
  command: 'ctl';
  /** A job id, or a run folder holding job.json. */
  target: string;
  action: ControlCommand;
  /** stop --checkpoint: save a checkpoint at the step boundary where the job stops. */
  save?: boolean;
  /** status --json: the answer's object instead of the table. */
  json?: boolean;
  nats?: string;
  /** Present when a NATS login or TLS option was given. */
  natsCredentials?: NatsCredentialFlags;
  /** The job key's file (else $GPT_HYBRID_JOB_KEY, else the run folder's job.key). */
  jobKeyFile?: string;
  timeoutMs: number;
}

export const CTL_SPEC: CommandSpec<CtlCommand> = {
  summary: 'send a control message to a running job',
  usage: `<job-id|run-folder> ${CONTROL_COMMANDS.join('|')} [--checkpoint] [--json] [--nats URL] [--timeout MS]`,
  description:
    'Sends status, pause, resume, checkpoint or stop to a running job and prints its answer: status as\n' +
    'a table (the job, then a row per rank; --json for the object), the others as JSON. Given a run\n' +
    'folder whose job has ended, status says how it ended.\n' +
    'The job id is printed when training starts and kept in <run-folder>/job.json, which also\n' +
    'records the NATS server, so a run folder is enough (not its credentials: give ctl the same NATS\n' +
    'credential options or variables as the job). The job obeys only messages signed with its key,\n' +
    'which ctl reads from <run-folder>/job.key (readable by its owner only), --job-key-file or\n' +
    '$GPT_HYBRID_JOB_KEY. Pause and stop take effect at the next step\n' +
    'boundary; stop ends the job with exit code 0 (stop --checkpoint saves a checkpoint there first).',
  options: {
    checkpoint: { type: 'boolean', doc: 'with stop: every rank saves a checkpoint at the step where the job stops' },
    json: { type: 'boolean', doc: 'with status: print the answer as JSON instead of a table' },
    nats: { type: 'string', placeholder: 'URL', doc: "NATS server (default: the run folder's, else $NATS_URL, else nats://127.0.0.1:4222)" },
    ...NATS_CREDENTIAL_OPTIONS,
    'job-key-file': { type: 'string', placeholder: 'FILE', doc: "the job's key (default: $GPT_HYBRID_JOB_KEY, else the run folder's job.key)" },
    timeout: { type: 'string', placeholder: 'MS', doc: 'how long to wait for the answer [5000]' },
  },
  examples: [`${PROGRAM} ctl runs/tiny status`, `${PROGRAM} ctl runs/tiny stop --checkpoint`, `${PROGRAM} ctl tiny-3f9a2c pause --nats nats://10.0.0.5:4222 --job-key-file job.key`],
  build: buildCtl,
};

function buildCtl(values: ParsedValues, positionals: string[], usage: string): CtlCommand {
  const [target, action, ...extra] = positionals;
  if (target === undefined || action === undefined) throw new UsageError('ctl needs a job (id or run folder) and a command', usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`, usage);
  if (!(CONTROL_COMMANDS as readonly string[]).includes(action)) {
    const guess = closestMatch(action, CONTROL_COMMANDS);
    throw new UsageError(`unknown control command "${action}"; ${guess === undefined ? `use one of ${CONTROL_COMMANDS.join(', ')}` : `did you mean "${guess}"?`}`, usage);
  }
  const command: CtlCommand = { command: 'ctl', target, action: action as ControlCommand, timeoutMs: positiveInteger(values.timeout as string | undefined, '--timeout', usage) ?? 5000 };
  if (values.nats !== undefined) command.nats = values.nats as string;
  const natsCredentials = natsCredentialFlags(values, usage);
  if (natsCredentials !== undefined) command.natsCredentials = natsCredentials;
  if (values.json === true) command.json = true;
  if (values['job-key-file'] !== undefined) command.jobKeyFile = values['job-key-file'] as string;
  if (values.checkpoint === true) {
    if (action !== 'stop') throw new UsageError(`--checkpoint goes with stop (a checkpoint where the job stops); for one now, use: ctl ${target} checkpoint`, usage);
    command.save = true;
  }
  return command;
}
