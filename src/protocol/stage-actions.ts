/**
 * Implements: the messages between the scheduler actor and the stage actors, as actor payloads (they
 * ride in ActorMessage on `actor.stage.<rank>` and `actor.scheduler.<replica>`), and their readers:
 * everything received from another process is checked before use, and a reader throws naming the
 * first bad field.
 *
 * [Note: one action a message] The scheduler sends each action of a step as its own message, numbered
 * `index` of `count`, so a stage actor notices a message that never came (it waits on its index, then
 * fails the step naming it), runs a late or reordered one in its place, and ignores a repeated one.
 */
import { actionFromWire, type StageAction, type WireAction } from '../scheduler/actions.ts';

/** Scheduler -> stage actor: action `index` (0-based) of the `count` actions of step `step` (0-based). */
export interface StageActionPayload {
  type: 'action';
  step: number;
  index: number;
  count: number;
  action: WireAction;
}

/** Stage actor -> its replica's scheduler actor: this rank ran every action of `step`. */
export interface StepFinishedPayload {
  type: 'step-finished';
  rank: number;
  step: number;
}

/** More actions in one step than this is no schedule of ours (P x M x V x 2 x rounds stays far below). */
const MAX_ACTIONS = 1 << 20;

export interface ReceivedAction {
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
  return { step: countField(fields, 'step'), index: countField(fields, 'index', count), count, action: actionFromWire(fields.action, limits) };
}

export function readStepFinished(payload: unknown, world: number): StepFinishedPayload {
  const fields = fieldsOf(payload, 'a scheduler actor message');
  if (fields.type !== 'step-finished') throw new Error(`a scheduler actor takes 'step-finished' messages, got type ${JSON.stringify(fields.type)}`);
  return { type: 'step-finished', rank: countField(fields, 'rank', world), step: countField(fields, 'step') };
}
