/**
 * Implements: the messages between the scheduler actor and the stage actors, as actor payloads (they
 * ride in ActorMessage on `actor.stage.<rank>` and `actor.scheduler.<replica>`), and their readers:
 * everything received from another process is checked before use, and a reader throws naming the
 * first bad field.
 *
 * [Note: one action a message] The scheduler sends each action of a step as its own message, numbered
 * `index` of `count`, so a stage actor notices a message that never came (it waits on its index, then
 * fails the step naming it), runs a late or reordered one in its place, and ignores a repeated one.
 *
 * [Note: a schedule changed at a step boundary] auto-zb's scheduler replaces the schedule once it has
 * the stages' op times (`opMs` of step-finished). Each stage actor checks every action against its own
 * lowering, so the new ops travel to it as a `schedule` message naming the first step that runs them,
 * sent before that step's first action on the same subject (the bus keeps one sender's order on a
 * subject). The stage validates and lowers the ops itself; if the message was lost, the step's actions
 * do not match, are dropped, and the stage's wait for them fails the step like any lost action.
 */
import { actionFromWire, type StageAction, type WireAction } from '../scheduler/actions.ts';
import type { StageCosts } from '../scheduler/auto-zero-bubble.ts';
import { OP_KINDS, SCHEDULE_KINDS, type OpKind, type ScheduleJson, type ScheduleKind } from '../scheduler/ops.ts';

/**
 * Scheduler -> stage actor: action `index` (0-based) of the `count` actions of step `step` (0-based),
 * or with `pass: 'evaluation'`, of the evaluation after `step` steps (the forwards only, on the
 * validation data; train/evaluation-plan.ts).
 */
export interface StageActionPayload {
  type: 'action';
  step: number;
  index: number;
  count: number;
  action: WireAction;
  pass?: 'evaluation';
}

/** What a stage actor runs: an optimizer step, or an evaluation between two. */
export type StagePass = 'step' | 'evaluation';

/** Stage actor -> its replica's scheduler actor: this rank ran every action of `step`. */
export interface StepFinishedPayload {
  type: 'step-finished';
  rank: number;
  step: number;
  /** The step's median F, I and W times on this rank, in milliseconds (split backwards only). */
  opMs?: StageCosts;
}

/** Scheduler -> stage actor: from step `fromStep` (0-based) on, the actions are lowered from `schedule`. */
export interface SchedulePayload {
  type: 'schedule';
  fromStep: number;
  schedule: ScheduleJson;
  /** Each stage's op times (milliseconds) the schedule was placed for. */
  costs: StageCosts[];
}

/** More actions in one step than this is no schedule of ours (P x M x V x 2 x rounds stays far below). */
const MAX_ACTIONS = 1 << 20;

export interface ReceivedAction {
  pass: StagePass;
  step: number;
  index: number;
  count: number;
  action: StageAction;
}

function fieldsOf(payload: unknown, what: string): Record<string, unknown> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new Error(`${what} must be a map`);
  return payload as Record<string, unknown>;
}

function countField(fields: Record<string, unknown>, key: string, below = Number.MAX_SAFE_INTEGER): number {
  const value = fields[key];
  if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) >= below) throw new Error(`${key} must be an integer in [0, ${below}), got ${JSON.stringify(value)}`);
  return value as number;
}

export function readStageAction(payload: unknown, limits: { microBatches: number; chunks: number }): ReceivedAction {
  const fields = fieldsOf(payload, 'a stage actor message');
  if (fields.type !== 'action') throw new Error(`a stage actor takes 'action' messages, got type ${JSON.stringify(fields.type)}`);
  const count = countField(fields, 'count', MAX_ACTIONS + 1);
  if (count === 0) throw new Error('count must be at least 1');
  if (fields.pass !== undefined && fields.pass !== 'evaluation') throw new Error(`pass must be 'evaluation' or absent, got ${JSON.stringify(fields.pass)}`);
  const pass: StagePass = fields.pass === 'evaluation' ? 'evaluation' : 'step';
  return { pass, step: countField(fields, 'step'), index: countField(fields, 'index', count), count, action: actionFromWire(fields.action, limits) };
}

export function readStepFinished(payload: unknown, world: number): StepFinishedPayload {
  const fields = fieldsOf(payload, 'a scheduler actor message');
  if (fields.type !== 'step-finished') throw new Error(`a scheduler actor takes 'step-finished' messages, got type ${JSON.stringify(fields.type)}`);
  const finished: StepFinishedPayload = { type: 'step-finished', rank: countField(fields, 'rank', world), step: countField(fields, 'step') };
  if (fields.opMs !== undefined) finished.opMs = readCosts(fields.opMs, 'opMs');
  return finished;
}

/** Whether a stage actor message is a schedule (readSchedule) rather than an action (readStageAction). */
export function isSchedulePayload(payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && (payload as Record<string, unknown>).type === 'schedule';
}

/** Reads a schedule message for a pipeline of `stages` stages and `microBatches` micro-batches, one chunk each. */
export function readSchedule(payload: unknown, limits: { stages: number; microBatches: number; chunks: number }): SchedulePayload {
  const fields = fieldsOf(payload, 'a stage actor message');
  if (fields.type !== 'schedule') throw new Error(`expected a 'schedule' message, got type ${JSON.stringify(fields.type)}`);
  const fromStep = countField(fields, 'fromStep');
  const json = fieldsOf(fields.schedule, 'schedule');
  if (!(SCHEDULE_KINDS as readonly unknown[]).includes(json.kind)) throw new Error(`schedule.kind must be one of ${SCHEDULE_KINDS.join(', ')}, got ${JSON.stringify(json.kind)}`);
  const stages = countField(json, 'stages', limits.stages + 1);
  const microbatches = countField(json, 'microbatches', limits.microBatches + 1);
  const chunks = countField(json, 'chunks', limits.chunks + 1);
  if (stages !== limits.stages || microbatches !== limits.microBatches || chunks !== limits.chunks) {
    throw new Error(`the schedule is for ${stages} stages x ${microbatches} micro-batches x ${chunks} chunks, this job runs ${limits.stages} x ${limits.microBatches} x ${limits.chunks}`);
  }
  if (!Array.isArray(json.ops) || json.ops.length !== stages) throw new Error(`schedule.ops must list the ops of ${stages} stages`);
  const perStage = 3 * microbatches * chunks;
  const ops = json.ops.map((stageOps: unknown, stage) => {
    if (!Array.isArray(stageOps) || stageOps.length > perStage) throw new Error(`schedule.ops[${stage}] must be a list of at most ${perStage} ops`);
    return stageOps.map((entry: unknown, index): [OpKind, number, number] => {
      const where = `schedule.ops[${stage}][${index}]`;
      if (!Array.isArray(entry) || entry.length !== 3 || !(OP_KINDS as readonly unknown[]).includes(entry[0])) throw new Error(`${where} must be [F|B|W, micro-batch, chunk]`);
      const [kind, microBatch, chunk] = entry as [OpKind, unknown, unknown];
      if (!Number.isSafeInteger(microBatch) || (microBatch as number) < 0 || (microBatch as number) >= microbatches) throw new Error(`${where}: micro-batch ${JSON.stringify(microBatch)} is not in [0, ${microbatches})`);
      if (!Number.isSafeInteger(chunk) || (chunk as number) < 0 || (chunk as number) >= chunks) throw new Error(`${where}: chunk ${JSON.stringify(chunk)} is not in [0, ${chunks})`);
      return [kind, microBatch as number, chunk as number];
    });
  });
  if (!Array.isArray(fields.costs) || fields.costs.length !== stages) throw new Error(`costs must list the op times of ${stages} stages`);
  const costs = fields.costs.map((cost: unknown, stage) => readCosts(cost, `costs[${stage}]`));
  return { type: 'schedule', fromStep, schedule: { kind: json.kind as ScheduleKind, stages, microbatches, chunks, ops }, costs };
}

function readCosts(value: unknown, what: string): StageCosts {
  const fields = fieldsOf(value, what);
  const time = (key: string): number => {
    const v = fields[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`${what}.${key} must be a positive number of milliseconds, got ${JSON.stringify(v)}`);
    return v;
  };
  return { forward: time('forward'), backwardInput: time('backwardInput'), backwardWeight: time('backwardWeight') };
}
