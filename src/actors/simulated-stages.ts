/**
 * Implements: simulated stage actors. One async actor per pipeline stage, all in this process, each
 * with its own Bus over one LocalNetwork (the in-process transport) and its own ProcessGroup member,
 * runs its list of a schedule in order the way a real stage does: it waits for its input as a message
 * (the activation from the previous virtual stage for F, the gradient from the next virtual stage for
 * B; a W needs only its own B), "computes" by sleeping (forward t, backward 2t by default, B and W half
 * of it each where the backward is split), records the op's start and end, and sends its output on. No tensors, no tfjs: what is tested is the schedule and the messaging, namely
 * that every op runs once, inputs arrive before use, nothing deadlocks, and the measured bubble and
 * held activations are what the theory says.
 *
 * Time comes from a Clock. `VirtualClock` makes runs deterministic and instant: time moves only when
 * every actor is blocked (on a sleep or a message), to the earliest pending wake-up. The in-process
 * transport delivers in microtasks, so "every microtask has run" (a setImmediate turn later) means
 * every message sent has been delivered; if then nobody sleeps and the run is not finished, it is
 * deadlocked, and the error names the op each stage waits on. With the real clock the sleeps are
 * milliseconds and a wall-clock deadline catches a hang.
 */
import { Bus } from '../comm/bus.ts';
import { ProcessGroup } from '../comm/collectives.ts';
import { LocalNetwork } from '../comm/local-transport.ts';
import { dependencyOf, formatOp, splitsBackward, type PipelineOp, type Schedule } from '../scheduler/ops.ts';
import { placementOf, placeOfVirtualStage, virtualStageOf } from '../scheduler/placement.ts';
import { DEFAULT_DURATIONS, durationOf, type OpDurations, type TimedOp } from '../scheduler/timeline.ts';

export interface Clock {
  now(): number;
  sleep(duration: number): Promise<void>;
}

/** Wall-clock milliseconds since the clock was made. */
export class RealClock implements Clock {
  private readonly origin = performance.now();
  now(): number {
    return performance.now() - this.origin;
  }
  sleep(duration: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, duration));
  }
}

/** Simulated time that moves only when `advance()` is called (see the file comment). */
export class VirtualClock implements Clock {
  private time = 0;
  private order = 0;
  private sleepers: { at: number; order: number; wake: () => void }[] = [];

  now(): number {
    return this.time;
  }

  sleep(duration: number): Promise<void> {
    if (!(duration >= 0)) throw new Error(`VirtualClock.sleep needs a duration >= 0, got ${duration}`);
    return new Promise((wake) => this.sleepers.push({ at: this.time + duration, order: this.order++, wake }));
  }

  get pending(): number {
    return this.sleepers.length;
  }

  /** Moves to the earliest wake-up time and wakes every sleeper due then, in the order they slept. */
  advance(): void {
    if (this.sleepers.length === 0) return;
    const at = Math.min(...this.sleepers.map((s) => s.at));
    const due = this.sleepers.filter((s) => s.at === at).sort((a, b) => a.order - b.order);
    this.sleepers = this.sleepers.filter((s) => s.at !== at);
    this.time = at;
    for (const sleeper of due) sleeper.wake();
  }
}

export interface StageActorsOptions {
  /** Op durations in clock units (virtual units, or milliseconds with the real clock); default F 1, B 2. */
  durations?: OpDurations;
  /** 'virtual' (default): deterministic, instant; 'real': setTimeout sleeps of `durations` ms. */
  clock?: 'virtual' | 'real';
  /** Wall-clock limit of the whole run; default 30 s. */
  deadlineMs?: number;
  /** Largest message the in-process transport accepts (tests of chunking use small values). */
  maxPayload?: number;
}

export interface StageActorsRun {
  /** Every executed op, sorted by start time then stage. */
  events: TimedOp[];
  /** Time from the first start to the last end. */
  makespan: number;
  /** Activation and gradient messages sent between stages. */
  messages: number;
}

/** The run could not finish: a deadlock, a deadline, or a stage that failed; names each stage's state. */
export class PipelineStallError extends Error {
  override name = 'PipelineStallError';
}

const JOB_ID = 'pipeline-sim';
const GROUP = 'pp';

/** The tag of the message that carries the input of `operation` on virtual stage `virtualStage`. */
function inputTag(operation: PipelineOp, virtualStage: number): string {
  return `${operation.kind === 'F' ? 'act' : 'grad'}.${operation.microBatch}.${virtualStage}`;
}

/** What an input message carries: enough to check it is the one expected (a real stage checks shapes). */
function payloadOf(operation: PipelineOp, virtualStage: number): Float32Array {
  return Float32Array.of(operation.kind === 'F' ? 1 : 2, operation.microBatch, virtualStage);
}

/**
 * Runs one stage actor per stage of `schedule` until every op has run; resolves with the recorded ops,
 * rejects with PipelineStallError on a deadlock (virtual clock), the deadline, or a failing stage.
 */
export async function runStageActors(schedule: Schedule, options: StageActorsOptions = {}): Promise<StageActorsRun> {
  const { stages, chunks, ops } = schedule;
  const durations = options.durations ?? DEFAULT_DURATIONS;
  const deadlineMs = options.deadlineMs ?? 30_000;
  const virtual = (options.clock ?? 'virtual') === 'virtual';
  const clock: Clock = virtual ? new VirtualClock() : new RealClock();
  const network = new LocalNetwork(options.maxPayload);
  const logs: string[] = [];
  const ranks = Array.from({ length: stages }, (_, rank) => rank);
  const buses = ranks.map(() => new Bus({ jobId: JOB_ID, transport: network.connect(), log: (line) => logs.push(line) }));
  // Every member subscribes in its constructor, before any stage sends: no ready() round needed here.
  const groups = ranks.map((rank) => new ProcessGroup({ bus: buses[rank]!, name: GROUP, ranks, rank, timeoutMs: deadlineMs, log: (line) => logs.push(line) }));
  const events: TimedOp[] = [];
  const state = ranks.map(() => ({ step: 0, waiting: '', done: false }));
  let messages = 0;

  const placement = placementOf(schedule.kind);
  const runStage = async (stage: number): Promise<void> => {
    const group = groups[stage]!;
    const split = splitsBackward(ops[stage]!);
    const done = new Set<string>();
    for (const operation of ops[stage]!) {
      const here = virtualStageOf(stage, operation.chunk, stages, placement);
      const dependency = dependencyOf(operation, stage, stages, chunks, placement);
      const local = dependency !== null && (operation.kind === 'W' || (operation.kind === 'B' && here === stages * chunks - 1));
      if (local) {
        // The last virtual stage starts its backward from its own loss, and a W from its own B: no message.
        if (!done.has(formatOp(dependency.op))) {
          const what = operation.kind === 'W' ? 'its B on this stage' : 'its forward on this stage, which computes the loss';
          throw new Error(`stage ${stage}: ${formatOp(operation)} runs before ${what}`);
        }
      } else if (dependency !== null) {
        state[stage]!.waiting = `${formatOp(operation)} waits for the ${operation.kind === 'F' ? 'activation' : 'gradient'} from ${formatOp(dependency.op)} on stage ${dependency.stage}`;
        const received = await group.recv(dependency.stage, inputTag(operation, here));
        const expected = payloadOf(operation, here);
        if (received.values.length !== expected.length || received.values.some((value, i) => value !== expected[i])) {
          throw new Error(`stage ${stage}: ${formatOp(operation)} received [${[...received.values].join(', ')}], expected [${[...expected].join(', ')}]`);
        }
      }
      state[stage]!.waiting = `${formatOp(operation)} is computing`;
      const start = clock.now();
      await clock.sleep(durationOf(operation, durations, split));
      const end = clock.now();
      events.push({ stage, kind: operation.kind, microBatch: operation.microBatch, chunk: operation.chunk, start, end });
      done.add(formatOp(operation));
      const next = operation.kind === 'F' ? here + 1 : here - 1;
      if (operation.kind !== 'W' && next >= 0 && next < stages * chunks) {
        const to = placeOfVirtualStage(next, stages, placement);
        const output = { kind: operation.kind, microBatch: operation.microBatch, chunk: to.chunk };
        group.send(to.stage, inputTag(output, next), payloadOf(output, next));
        messages++;
      }
      state[stage]!.step++;
    }
    state[stage]!.done = true;
    state[stage]!.waiting = 'finished';
  };

  const describeStages = () =>
    state.map((s, stage) => `  stage ${stage}: ran ${s.step} of ${ops[stage]!.length} ops; ${s.done ? 'finished' : s.waiting || 'not started'}`).join('\n');

  let finished = false;
  let deadlineTimer: NodeJS.Timeout | undefined;
  try {
    const all = Promise.all(ranks.map((stage) => runStage(stage).catch((error: unknown) => {
      throw new PipelineStallError(`stage ${stage} failed: ${(error as Error)?.message ?? String(error)}\n${describeStages()}`);
    })));
    all.then(() => (finished = true), () => (finished = true));
    const deadline = new Promise<never>((_, reject) => {
      deadlineTimer = setTimeout(
        () => reject(new PipelineStallError(`the ${schedule.kind} pipeline did not finish within ${deadlineMs} ms:\n${describeStages()}`)),
        deadlineMs,
      );
    });
    const watches: Promise<unknown>[] = [all, deadline];
    if (clock instanceof VirtualClock) watches.push(driveVirtualClock(clock, () => finished, () => new PipelineStallError(`the ${schedule.kind} pipeline deadlocked at simulated time ${clock.now()}: every stage waits for a message nobody will send\n${describeStages()}`)));
    await Promise.race(watches);
  } finally {
    clearTimeout(deadlineTimer);
    for (const group of groups) group.close();
    await Promise.all(buses.map((bus) => bus.close()));
  }
  events.sort((a, b) => a.start - b.start || a.stage - b.stage);
  const makespan = events.length === 0 ? 0 : Math.max(...events.map((e) => e.end)) - Math.min(...events.map((e) => e.start));
  return { events, makespan, messages };
}

/** Advances the clock whenever every microtask has run; rejects when nothing can move any more. */
async function driveVirtualClock(clock: VirtualClock, finished: () => boolean, stalled: () => Error): Promise<void> {
  for (;;) {
    await new Promise((resolve) => setImmediate(resolve));
    if (finished()) return;
    if (clock.pending === 0) throw stalled();
    clock.advance();
  }
}
