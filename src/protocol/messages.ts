/**
 * Implements: every message that crosses the bus, as one discriminated union on `kind`, with the
 * protocol version. Everything decoded is checked by `validateMessage` (validate.ts) before use; a
 * message of another version, an unknown kind or a malformed field is counted and dropped, never used.
 *
 * Tensors travel as `WireTensor`: dtype, shape and raw little-endian bytes.
 */
import type { StopSignal } from './stop-signals.ts';

/** 2: stage actions travel as actor messages (the step gate carries none), actor subjects are `actor.<role>.<rank>`, heartbeats list actors. */
export const PROTOCOL_VERSION = 2;

/** float16: float32 values sent as IEEE halves (the fp16 mode's activations and gradients); decoded to float32. */
export type WireDType = 'float32' | 'int32' | 'float16' | 'bfloat16';

export interface WireTensor {
  dtype: WireDType;
  shape: number[];
  /** Little-endian element bytes; length = product(shape) x 4 (x 2 for float16). */
  data: Uint8Array;
}

/** Where an actor lives: its role and its rank (a process rank; a scheduler's data-parallel replica; or 'launcher'). */
export interface ActorAddress {
  rank: number | 'launcher';
  role: string;
}

export const ACTOR_KINDS = ['stage', 'scheduler', 'shared-weight'] as const;
export type ActorKind = (typeof ACTOR_KINDS)[number];

/** What an actor tells an operator about itself (`ctl status` lists one per actor). */
export interface ActorStatus {
  kind: ActorKind;
  /** The process rank of a stage or SharedWeight actor; the data-parallel replica of a scheduler. */
  rank: number;
  state: string;
  /** Messages sent to the actor and not handled yet. */
  mailbox: number;
  /** The last action or message handled ('' before the first). */
  lastAction: string;
}

// Each list is the one source of its names, its type derived from it: validate.ts checks received
// messages against it and the CLI's ctl offers CONTROL_COMMANDS, so nothing can accept a name the
// other side refuses.
export const WORKER_STATES = ['starting', 'ready', 'training', 'paused', 'stopping', 'done', 'failed'] as const;
export type WorkerState = (typeof WORKER_STATES)[number];

export const CONTROL_COMMANDS = ['status', 'pause', 'resume', 'checkpoint', 'stop'] as const;
export type ControlCommand = (typeof CONTROL_COMMANDS)[number];

export const JOB_STATES = ['starting', 'running', 'paused', 'stopping', 'done', 'failed'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** A worker announces itself once its process and transport are up. */
export interface RegisterMessage {
  kind: 'register';
  rank: number;
  node: number;
  pid: number;
  host: string;
}

/** Periodic liveness and progress of one rank. */
export interface HeartbeatMessage {
  kind: 'heartbeat';
  rank: number;
  /** Last completed optimizer step (0 before the first). */
  step: number;
  state: WorkerState;
  rssMb: number;
  /** How long the rank's last step took, ms (absent before its first). */
  stepMs?: number;
  /** The rank's actors (sent from the rank's main loop; the heartbeat thread's beats omit them). */
  actors?: ActorStatus[];
}

/** A rank asks, before each step, whether to run it (the step gate that makes pause/stop land on step boundaries). */
export interface StepReadyMessage {
  kind: 'step-ready';
  rank: number;
  /** The 0-based step about to run. */
  step: number;
}

export interface StepGoMessage {
  kind: 'step-go';
  step: number;
  action: 'run' | 'stop';
  /** Save this rank's shard into this (temporary checkpoint) folder before going on. */
  save?: string;
  /** Evaluate on the validation data (after the save) before the step, or before stopping (train/evaluation-plan.ts). */
  evaluate?: boolean;
}

/** A rank wrote its shard of a checkpoint; `record` is its RankFileRecord (src/checkpoint/manifest.ts), checked when the checkpoint loads. */
export interface CheckpointSavedMessage {
  kind: 'checkpoint-saved';
  rank: number;
  /** Optimizer steps the checkpoint holds. */
  step: number;
  record: { [key: string]: unknown };
}

/** What a rank reports after an optimizer step; rank 0's loss is the global mean. */
export interface StepDoneMessage {
  kind: 'step-done';
  rank: number;
  /** 1-based. */
  step: number;
  loss: number;
  tokens: number;
  stepMs: number;
  gradNorm: number;
  /** The update was skipped (fp16 overflow, or a non-finite loss or norm under nonFinite "skip"). */
  skipped?: boolean;
  /** Skipped because the loss or gradient norm was not finite. */
  nonFinite?: boolean;
  /** fp16 mode: the loss scale the step used. */
  lossScale?: number;
  /** Resident memory of the reporting rank's process, MiB. */
  rssMb?: number;
}

/** A replica's loss stage after an evaluation: the validation loss over every replica (train/evaluation-plan.ts). */
export interface EvaluationDoneMessage {
  kind: 'evaluation-done';
  rank: number;
  /** 1-based: the steps done when it ran. */
  step: number;
  loss: number;
  samples: number;
  elapsedMs: number;
}

export interface ControlMessage {
  kind: 'control';
  command: ControlCommand;
  /** With `stop`: every rank saves a checkpoint at the step boundary where the job stops. */
  save?: boolean;
  /** With `stop`: the signal a launcher got, passed on to node 0; the job ends with its exit code. */
  signal?: StopSignal;
}

export interface RankStatus {
  rank: number;
  state: WorkerState;
  step: number;
  /** Milliseconds since the last heartbeat; -1 before the rank registered. */
  lastSeenMs: number;
  /** Where it runs, once registered: its node and process id. */
  node?: number;
  pid?: number;
  /** From its latest heartbeat: resident memory (MiB) and its last step's time (ms). */
  rssMb?: number;
  stepMs?: number;
}

export interface ControlReplyMessage {
  kind: 'control-reply';
  ok: boolean;
  command: ControlCommand;
  message: string;
  status?: {
    jobId: string;
    state: JobState;
    step: number;
    totalSteps: number;
    lastLoss: number | null;
    tokensPerS: number | null;
    /** Times this launch has rolled the job back and restarted it. */
    restarts?: number;
    ranks: RankStatus[];
    /** Every actor of the job: stage and SharedWeight actors of each rank, the scheduler of each replica. */
    actors: ActorStatus[];
  };
}

/**
 * One piece of a collective or point-to-point transfer. `seq` numbers the collective calls of a group
 * so a late or repeated piece can never be mixed into the wrong call.
 */
export interface CollectiveMessage {
  kind: 'collective';
  /** Group name, e.g. 'dp.0' or 'world'. */
  group: string;
  op: 'send' | 'broadcast' | 'all-reduce' | 'all-gather' | 'reduce-scatter';
  seq: number;
  /** User tag for send/recv; '' for collectives. */
  tag: string;
  from: number;
  /** Which part of the operation (ring step, chunk index…); meaning is op-specific. */
  part: number;
  tensor: WireTensor;
}

/** A fatal problem in one rank: the job stops and names it. */
export interface FatalMessage {
  kind: 'fatal';
  rank: number;
  reason: string;
  /** false: the failure is deterministic (a non-finite loss), so a restart from a checkpoint would only repeat it. */
  restartable?: boolean;
}

/**
 * A process's NATS connection dropped and came back: messages sent to or by it meanwhile may be lost (the
 * bus is at-most-once), so the coordinator rolls the job back to its last checkpoint instead of letting
 * a receive wait for them.
 */
export interface ConnectionInterruptedMessage {
  kind: 'connection-interrupted';
  /** The rank whose worker lost its connection; absent: the launcher of `node`. */
  rank?: number;
  node: number;
  pid: number;
  /** The server it lost. */
  server: string;
  /** Set when what broke is the data plane link (comm/data-plane.ts) to this rank, not a NATS connection. */
  peer?: number;
}

/** A rank asks `rank` where its data plane listens (comm/data-plane.ts). */
export interface DataPlaneAddressRequestMessage {
  kind: 'data-plane-address-request';
  rank: number;
}

export interface DataPlaneAddressMessage {
  kind: 'data-plane-address';
  rank: number;
  host: string;
  port: number;
}

/** The coordinator tells every rank to end now (after a failure or at the end of the job). */
export interface ShutdownMessage {
  kind: 'shutdown';
  reason: string;
  exitCode: number;
  /** A failure a restart from the last checkpoint may mend: the other nodes' launchers wait for node 0's `restart`. */
  restartable?: boolean;
  /** A rank that stopped answering: its launcher kills it at once (a frozen process takes no grace to exit). */
  unresponsiveRank?: number;
}

/**
 * Node 0's launcher to another node's (a request, repeated until answered): stop your workers and start
 * them again from `resume` (a checkpoint folder, '' for the start) as restart `attempt`.
 */
export interface RestartMessage {
  kind: 'restart';
  attempt: number;
  resume: string;
  /** Optimizer steps the checkpoint holds (0 from the start). */
  startStep: number;
}

/** The answer to `restart`: node `node`'s old workers are gone and the new ones are starting. */
export interface RestartReadyMessage {
  kind: 'restart-ready';
  node: number;
  attempt: number;
}

/** Delivery to an actor in another process (remote actor reference). */
export interface ActorMessage {
  kind: 'actor';
  to: ActorAddress;
  from?: ActorAddress;
  /** The actor's own message; validated by the receiving actor. */
  payload: unknown;
}

export type Message =
  | RegisterMessage
  | HeartbeatMessage
  | StepReadyMessage
  | StepGoMessage
  | StepDoneMessage
  | EvaluationDoneMessage
  | ControlMessage
  | ControlReplyMessage
  | CollectiveMessage
  | FatalMessage
  | ShutdownMessage
  | ActorMessage
  | CheckpointSavedMessage
  | ConnectionInterruptedMessage
  | DataPlaneAddressRequestMessage
  | DataPlaneAddressMessage
  | RestartMessage
  | RestartReadyMessage;

export type MessageKind = Message['kind'];

/** On the wire every message carries the protocol version and the job id. */
export type Envelope = Message & { v: number; job: string };
