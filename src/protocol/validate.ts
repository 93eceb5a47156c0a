/**
 * Implements: the check every decoded message passes before use. It rebuilds the envelope from the fields
 * its kind declares (extra keys are dropped, so nothing unexpected reaches a handler), never throws on any
 * input, and names the first bad field. Loss and gradient norm may be NaN/Infinity: a diverged step must
 * still be reported rather than dropped as malformed.
 */
import { STOP_SIGNALS } from './stop-signals.ts';
import {
  CONTROL_COMMANDS,
  JOB_STATES,
  PROTOCOL_VERSION,
  WORKER_STATES,
  type ActorAddress,
  type Envelope,
  type Message,
  type MessageKind,
  type RankStatus,
  type StepGoMessage,
  ACTOR_KINDS,
  type ActorStatus,
  type WireTensor,
} from './messages.ts';

export type RejectReason = 'version' | 'job' | 'malformed' | 'unknown-kind';

export type ValidationResult =
  | { ok: true; envelope: Envelope }
  | { ok: false; reason: RejectReason; detail: string };

const COLLECTIVE_OPS = ['send', 'broadcast', 'all-reduce', 'all-gather', 'reduce-scatter'] as const;
const STEP_ACTIONS = ['run', 'stop'] as const;
const MAX_TENSOR_RANK = 32;

/** Thrown inside the validator only; turned into a `malformed` result at the top. */
class FieldError extends Error {}

type Fields = Record<string, unknown>;

function isRecord(value: unknown): value is Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function field(record: Fields, key: string): unknown {
  // Own properties only: an inherited `toString` or `constructor` is not a field of the message.
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}

function fail(path: string, want: string, value: unknown): never {
  throw new FieldError(`${path} must be ${want}, got ${describe(value)}`);
}

function record(value: unknown, path: string): Fields {
  if (!isRecord(value)) fail(path, 'a map', value);
  return value;
}

function string(value: unknown, path: string, nonEmpty = false): string {
  if (typeof value !== 'string' || (nonEmpty && value.length === 0)) fail(path, nonEmpty ? 'a non-empty string' : 'a string', value);
  return value;
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') fail(path, 'a boolean', value);
  return value;
}

function count(value: unknown, path: string, minimum = 0): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) {
    fail(path, `an integer >= ${minimum}`, value);
  }
  return value;
}

function integer(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(path, 'an integer', value);
  return value;
}

function finite(value: unknown, path: string, minimum = -Infinity): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < minimum) {
    fail(path, minimum === -Infinity ? 'a finite number' : `a finite number >= ${minimum}`, value);
  }
  return value;
}

function anyNumber(value: unknown, path: string): number {
  if (typeof value !== 'number') fail(path, 'a number', value);
  return value;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], path: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    fail(path, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  }
  return value as T;
}

function nullable<T>(value: unknown, path: string, check: (value: unknown, path: string) => T): T | null {
  return value === null ? null : check(value, path);
}

/** More actors than this on one rank, or text longer than this in a status, is no status of ours. */
const MAX_ACTORS = 1024;
const MAX_STATUS_TEXT = 200;

function actorStatuses(value: unknown, path: string): ActorStatus[] {
  if (!Array.isArray(value) || value.length > MAX_ACTORS) fail(path, `an array of at most ${MAX_ACTORS} actor statuses`, value);
  return value.map((entry: unknown, i: number): ActorStatus => {
    const fields = record(entry, `${path}[${i}]`);
    const text = (key: string) => {
      const got = string(field(fields, key), `${path}[${i}].${key}`);
      if (got.length > MAX_STATUS_TEXT) fail(`${path}[${i}].${key}`, `at most ${MAX_STATUS_TEXT} characters`, got);
      return got;
    };
    return {
      kind: oneOf(field(fields, 'kind'), ACTOR_KINDS, `${path}[${i}].kind`),
      rank: count(field(fields, 'rank'), `${path}[${i}].rank`),
      state: text('state'),
      mailbox: count(field(fields, 'mailbox'), `${path}[${i}].mailbox`),
      lastAction: text('lastAction'),
    };
  });
}

function actorAddress(value: unknown, path: string): ActorAddress {
  const fields = record(value, path);
  const rank = field(fields, 'rank');
  return {
    rank: rank === 'launcher' ? 'launcher' : count(rank, `${path}.rank`),
    role: string(field(fields, 'role'), `${path}.role`, true),
  };
}

export function wireTensor(value: unknown, path: string): WireTensor {
  const fields = record(value, path);
  const dtype = oneOf(field(fields, 'dtype'), ['float32', 'int32', 'float16', 'bfloat16'] as const, `${path}.dtype`);
  const rawShape = field(fields, 'shape');
  if (!Array.isArray(rawShape) || rawShape.length > MAX_TENSOR_RANK) fail(`${path}.shape`, `an array of at most ${MAX_TENSOR_RANK} sizes`, rawShape);
  const shape: number[] = [];
  let size = 1;
  for (let axis = 0; axis < rawShape.length; axis++) {
    const dim = count(rawShape[axis], `${path}.shape[${axis}]`);
    shape.push(dim);
    size *= dim;
  }
  const data = field(fields, 'data');
  if (!(data instanceof Uint8Array)) fail(`${path}.data`, 'bytes', data);
  const bytes = size * (dtype === 'float16' || dtype === 'bfloat16' ? 2 : 4);
  if (data.byteLength !== bytes) {
    fail(`${path}.data`, `${bytes} bytes for shape [${shape.join(', ')}] of ${dtype}`, data);
  }
  return { dtype, shape, data };
}

function rankStatus(value: unknown, path: string): RankStatus {
  const fields = record(value, path);
  return {
    rank: count(field(fields, 'rank'), `${path}.rank`),
    state: oneOf(field(fields, 'state'), WORKER_STATES, `${path}.state`),
    step: count(field(fields, 'step'), `${path}.step`),
    // -1: not registered yet (a status asked while the job starts).
    lastSeenMs: finite(field(fields, 'lastSeenMs'), `${path}.lastSeenMs`, -1),
    ...(field(fields, 'node') === undefined ? {} : { node: count(field(fields, 'node'), `${path}.node`) }),
    ...(field(fields, 'pid') === undefined ? {} : { pid: count(field(fields, 'pid'), `${path}.pid`) }),
    ...(field(fields, 'rssMb') === undefined ? {} : { rssMb: finite(field(fields, 'rssMb'), `${path}.rssMb`, 0) }),
    ...(field(fields, 'stepMs') === undefined ? {} : { stepMs: finite(field(fields, 'stepMs'), `${path}.stepMs`, 0) }),
  };
}

function controlStatus(value: unknown, path: string): NonNullable<Extract<Message, { kind: 'control-reply' }>['status']> {
  const fields = record(value, path);
  const ranks = field(fields, 'ranks');
  if (!Array.isArray(ranks)) fail(`${path}.ranks`, 'an array', ranks);
  return {
    jobId: string(field(fields, 'jobId'), `${path}.jobId`),
    state: oneOf(field(fields, 'state'), JOB_STATES, `${path}.state`),
    step: count(field(fields, 'step'), `${path}.step`),
    totalSteps: count(field(fields, 'totalSteps'), `${path}.totalSteps`),
    lastLoss: nullable(field(fields, 'lastLoss'), `${path}.lastLoss`, anyNumber),
    tokensPerS: nullable(field(fields, 'tokensPerS'), `${path}.tokensPerS`, finite),
    ...(field(fields, 'restarts') === undefined ? {} : { restarts: count(field(fields, 'restarts'), `${path}.restarts`) }),
    ranks: ranks.map((entry, index) => rankStatus(entry, `${path}.ranks[${index}]`)),
    actors: actorStatuses(field(fields, 'actors'), `${path}.actors`),
  };
}

/** One reader per kind: takes the decoded map, returns the message with exactly its declared fields. */
const readers: { [K in MessageKind]: (f: Fields) => Extract<Message, { kind: K }> } = {
  register: (f) => ({
    kind: 'register',
    rank: count(field(f, 'rank'), 'rank'),
    node: count(field(f, 'node'), 'node'),
    pid: count(field(f, 'pid'), 'pid'),
    host: string(field(f, 'host'), 'host'),
  }),
  heartbeat: (f) => ({
    kind: 'heartbeat',
    rank: count(field(f, 'rank'), 'rank'),
    step: count(field(f, 'step'), 'step'),
    state: oneOf(field(f, 'state'), WORKER_STATES, 'state'),
    rssMb: finite(field(f, 'rssMb'), 'rssMb', 0),
    ...(field(f, 'stepMs') === undefined ? {} : { stepMs: finite(field(f, 'stepMs'), 'stepMs', 0) }),
    ...(field(f, 'actors') === undefined ? {} : { actors: actorStatuses(field(f, 'actors'), 'actors') }),
  }),
  'step-ready': (f) => ({
    kind: 'step-ready',
    rank: count(field(f, 'rank'), 'rank'),
    step: count(field(f, 'step'), 'step'),
  }),
  'step-go': (f) => {
    const message: StepGoMessage = {
      kind: 'step-go',
      step: count(field(f, 'step'), 'step'),
      action: oneOf(field(f, 'action'), STEP_ACTIONS, 'action'),
    };
    const save = field(f, 'save');
    if (save !== undefined) message.save = string(save, 'save', true);
    const evaluate = field(f, 'evaluate');
    if (evaluate !== undefined) message.evaluate = boolean(evaluate, 'evaluate');
    return message;
  },
  'checkpoint-saved': (f) => ({
    kind: 'checkpoint-saved',
    rank: count(field(f, 'rank'), 'rank'),
    step: count(field(f, 'step'), 'step'),
    record: { ...record(field(f, 'record'), 'record') },
  }),
  'step-done': (f) => ({
    kind: 'step-done',
    rank: count(field(f, 'rank'), 'rank'),
    step: count(field(f, 'step'), 'step'),
    loss: anyNumber(field(f, 'loss'), 'loss'),
    tokens: count(field(f, 'tokens'), 'tokens'),
    stepMs: finite(field(f, 'stepMs'), 'stepMs', 0),
    gradNorm: anyNumber(field(f, 'gradNorm'), 'gradNorm'),
    ...(field(f, 'skipped') === undefined ? {} : { skipped: boolean(field(f, 'skipped'), 'skipped') }),
    ...(field(f, 'nonFinite') === undefined ? {} : { nonFinite: boolean(field(f, 'nonFinite'), 'nonFinite') }),
    ...(field(f, 'lossScale') === undefined ? {} : { lossScale: finite(field(f, 'lossScale'), 'lossScale', 0) }),
    ...(field(f, 'rssMb') === undefined ? {} : { rssMb: finite(field(f, 'rssMb'), 'rssMb', 0) }),
  }),
  'evaluation-done': (f) => ({
    kind: 'evaluation-done',
    rank: count(field(f, 'rank'), 'rank'),
    step: count(field(f, 'step'), 'step'),
    loss: anyNumber(field(f, 'loss'), 'loss'),
    samples: count(field(f, 'samples'), 'samples'),
    elapsedMs: finite(field(f, 'elapsedMs'), 'elapsedMs', 0),
  }),
  control: (f) => {
    const save = field(f, 'save');
    const signal = field(f, 'signal');
    return {
      kind: 'control',
      command: oneOf(field(f, 'command'), CONTROL_COMMANDS, 'command'),
      ...(save === undefined ? {} : { save: boolean(save, 'save') }),
      ...(signal === undefined ? {} : { signal: oneOf(signal, STOP_SIGNALS, 'signal') }),
    };
  },
  'control-reply': (f) => {
    const status = field(f, 'status');
    return {
      kind: 'control-reply',
      ok: boolean(field(f, 'ok'), 'ok'),
      command: oneOf(field(f, 'command'), CONTROL_COMMANDS, 'command'),
      message: string(field(f, 'message'), 'message'),
      ...(status === undefined || status === null ? {} : { status: controlStatus(status, 'status') }),
    };
  },
  collective: (f) => ({
    kind: 'collective',
    group: string(field(f, 'group'), 'group', true),
    op: oneOf(field(f, 'op'), COLLECTIVE_OPS, 'op'),
    seq: count(field(f, 'seq'), 'seq'),
    tag: string(field(f, 'tag'), 'tag'),
    from: count(field(f, 'from'), 'from'),
    part: count(field(f, 'part'), 'part'),
    tensor: wireTensor(field(f, 'tensor'), 'tensor'),
  }),
  fatal: (f) => {
    const restartable = field(f, 'restartable');
    return {
      kind: 'fatal',
      rank: count(field(f, 'rank'), 'rank'),
      reason: string(field(f, 'reason'), 'reason'),
      ...(restartable === undefined ? {} : { restartable: boolean(restartable, 'restartable') }),
    };
  },
  'connection-interrupted': (f) => {
    const rank = field(f, 'rank');
    const peer = field(f, 'peer');
    return {
      kind: 'connection-interrupted',
      ...(rank === undefined ? {} : { rank: count(rank, 'rank') }),
      node: count(field(f, 'node'), 'node'),
      pid: count(field(f, 'pid'), 'pid'),
      server: string(field(f, 'server'), 'server'),
      ...(peer === undefined ? {} : { peer: count(peer, 'peer') }),
    };
  },
  'data-plane-address-request': (f) => ({ kind: 'data-plane-address-request', rank: count(field(f, 'rank'), 'rank') }),
  'data-plane-address': (f) => {
    const port = count(field(f, 'port'), 'port');
    if (port < 1 || port > 65535) fail('port', 'a TCP port in [1, 65535]', port);
    return { kind: 'data-plane-address', rank: count(field(f, 'rank'), 'rank'), host: string(field(f, 'host'), 'host', true), port };
  },
  shutdown: (f) => {
    const restartable = field(f, 'restartable');
    const unresponsiveRank = field(f, 'unresponsiveRank');
    return {
      kind: 'shutdown',
      reason: string(field(f, 'reason'), 'reason'),
      exitCode: integer(field(f, 'exitCode'), 'exitCode'),
      ...(restartable === undefined ? {} : { restartable: boolean(restartable, 'restartable') }),
      ...(unresponsiveRank === undefined ? {} : { unresponsiveRank: count(unresponsiveRank, 'unresponsiveRank') }),
    };
  },
  restart: (f) => ({
    kind: 'restart',
    attempt: count(field(f, 'attempt'), 'attempt'),
    resume: string(field(f, 'resume'), 'resume'),
    startStep: count(field(f, 'startStep'), 'startStep'),
  }),
  'restart-ready': (f) => ({
    kind: 'restart-ready',
    node: count(field(f, 'node'), 'node'),
    attempt: count(field(f, 'attempt'), 'attempt'),
  }),
  actor: (f) => {
    const from = field(f, 'from');
    return {
      kind: 'actor',
      to: actorAddress(field(f, 'to'), 'to'),
      ...(from === undefined || from === null ? {} : { from: actorAddress(from, 'from') }),
      payload: field(f, 'payload'),
    };
  },
};

export const MESSAGE_KINDS = Object.keys(readers) as MessageKind[];

/**
 * Checks a decoded value against the protocol. With `expectedJob`, an envelope of another job is
 * rejected with reason 'job'.
 */
export function validateMessage(raw: unknown, expectedJob?: string): ValidationResult {
  try {
    if (!isRecord(raw)) return { ok: false, reason: 'malformed', detail: `message must be a map, got ${describe(raw)}` };
    const version = field(raw, 'v');
    if (version !== PROTOCOL_VERSION) {
      return { ok: false, reason: 'version', detail: `protocol version ${describe(version)}, this process speaks ${PROTOCOL_VERSION}` };
    }
    const job = field(raw, 'job');
    if (typeof job !== 'string') return { ok: false, reason: 'malformed', detail: `job must be a string, got ${describe(job)}` };
    if (expectedJob !== undefined && job !== expectedJob) {
      return { ok: false, reason: 'job', detail: `message of job ${describe(job)}, this bus serves job ${describe(expectedJob)}` };
    }
    const kind = field(raw, 'kind');
    if (typeof kind !== 'string' || !Object.hasOwn(readers, kind)) {
      return { ok: false, reason: 'unknown-kind', detail: `kind ${describe(kind)} is not one of ${MESSAGE_KINDS.join(', ')}` };
    }
    const message = readers[kind as MessageKind](raw);
    return { ok: true, envelope: { ...message, v: PROTOCOL_VERSION, job } };
  } catch (error) {
    const detail = error instanceof FieldError ? error.message : `validator failed: ${String(error)}`;
    return { ok: false, reason: 'malformed', detail };
  }
}
