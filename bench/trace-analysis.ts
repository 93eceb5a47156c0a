/**
 * Implements: figures read from a job's merged trace.json (src/trace/trace.ts): exposed communication
 * over step time, each pipeline stage's bubble against the theory's window, how evenly the stages'
 * compute is split, and a counter's peak (the saved activations of a stage).
 *
 * Exposed communication is the time a rank spends on communication that is not waiting for another
 * rank's compute: a send's whole span (encoding and publishing block the rank); of a receive, the part
 * after the matching send began (encode, wire, decode); of an all-reduce, the part after the last member
 * entered it (the k-th of that name on each rank being one collective: buckets run in order), less what
 * of it the rank spent computing (a bucket reduced while the backward goes on is hidden behind it).
 * Waiting for a slower peer is the bubble's or the imbalance's, not communication's.
 *
 * Per-step values are summarized by their median over the measured steps: on a shared machine one step
 * slowed by someone else's work should not move the figure.
 */
import { meanBubble, measureBubbles } from '../src/scheduler/measure.ts';
import { dependencyOf, op, type OpKind, type Schedule, type ScheduleKind } from '../src/scheduler/ops.ts';
import { placementOf } from '../src/scheduler/placement.ts';
import type { TraceEvent } from '../src/trace/trace.ts';
import { median } from './report.ts';
import { FIRST_MEASURED_STEP } from './train-runs.ts';

type Span = TraceEvent & { dur: number };

/** A stage's compute spans by their `op` (stage.ts), and the op kind each replays as. */
const COMPUTE_OPS = new Map([['forward', 'F'], ['backward', 'B'], ['backward input', 'B'], ['backward weight', 'W']]);
const opOf = (e: TraceEvent): string => String(e.args?.op ?? '');
const isComputeOp = (e: TraceEvent): boolean => e.cat === 'compute' && COMPUTE_OPS.has(opOf(e));

function spans(events: readonly TraceEvent[]): Span[] {
  return events.filter((e): e is Span => e.ph === 'X' && e.dur !== undefined && typeof e.args?.step === 'number');
}

function stepOf(event: TraceEvent): number {
  return event.args!.step as number;
}

/** Steps present in the trace from `fromStep` on (1-based), ascending. */
function measuredSteps(all: readonly Span[], fromStep: number): number[] {
  return [...new Set(all.map(stepOf))].filter((step) => step >= fromStep).sort((a, b) => a - b);
}

export interface CommFraction {
  /** Max over ranks of the median (over measured steps) of exposed communication / step time. */
  fraction: number;
  /** Per rank (pid). */
  perRank: Record<number, number>;
  /** The worst rank's exposed communication by event name (fractions of step time, medians over steps). */
  byName: Record<string, number>;
  /** Median step time (max over ranks of each rank's span of the step), milliseconds. */
  stepMs: number;
}

/** `fromStep`: the first step counted (the first ones pay one-time costs). */
export function exposedCommFraction(events: readonly TraceEvent[], fromStep = FIRST_MEASURED_STEP): CommFraction {
  const all = spans(events);
  const steps = measuredSteps(all, fromStep);
  if (steps.length === 0) throw new Error(`the trace has no events of step ${fromStep} or later: run more steps`);
  const ranks = [...new Set(all.map((e) => e.pid))].sort((a, b) => a - b);
  const fractions = new Map<number, number[]>(ranks.map((rank) => [rank, []]));
  const named = new Map<number, Map<string, number[]>>(ranks.map((rank) => [rank, new Map()]));
  const stepsMs: number[] = [];
  for (const step of steps) {
    const inStep = all.filter((e) => stepOf(e) === step);
    const stepUs = Math.max(...ranks.map((rank) => windowOf(inStep.filter((e) => e.pid === rank))));
    stepsMs.push(stepUs / 1000);
    const sendsFor = sendQueues(inStep);
    const entries = collectiveEntries(inStep);
    for (const rank of ranks) {
      const byName = new Map<string, number>();
      const computing = inStep.filter((e) => e.pid === rank && e.cat === 'compute');
      for (const event of inStep.filter((e) => e.pid === rank && e.cat === 'comm')) {
        byName.set(event.name, (byName.get(event.name) ?? 0) + exposedPart(event, sendsFor, entries, computing) / Math.max(stepUs, 1));
      }
      fractions.get(rank)!.push([...byName.values()].reduce((a, b) => a + b, 0));
      for (const [name, fraction] of byName) named.get(rank)!.set(name, [...(named.get(rank)!.get(name) ?? []), fraction]);
    }
  }
  const perRank: Record<number, number> = {};
  for (const rank of ranks) perRank[rank] = median(fractions.get(rank)!);
  const worst = ranks.reduce((a, b) => (perRank[b] > perRank[a] ? b : a));
  const byName: Record<string, number> = {};
  for (const [name, values] of named.get(worst)!) byName[name] = median(values);
  return { fraction: perRank[worst], perRank, byName, stepMs: median(stepsMs) };
}

function windowOf(events: readonly Span[]): number {
  if (events.length === 0) return 0;
  return Math.max(...events.map((e) => e.ts + e.dur)) - Math.min(...events.map((e) => e.ts));
}

/** Sends by (kind, micro-batch, from, to), in time order: NATS keeps one publisher's order, so the k-th receive matches the k-th send. */
function sendQueues(inStep: readonly Span[]): Map<string, Span[]> {
  const queues = new Map<string, Span[]>();
  for (const send of inStep.filter((e) => e.name.startsWith('send ')).sort((a, b) => a.ts - b.ts)) {
    const key = `${send.name.slice('send '.length)}/${send.args!.microBatch}/${send.pid}/${send.args!.to}`;
    queues.set(key, [...(queues.get(key) ?? []), send]);
  }
  return queues;
}

/**
 * For each collective span (not a send or receive), when the last member entered that collective: the
 * k-th span of a name on one rank meets the k-th of that name on the others.
 */
function collectiveEntries(inStep: readonly Span[]): Map<Span, number> {
  // By name, then by rank, each rank's spans in time order.
  const byName = new Map<string, Map<number, Span[]>>();
  for (const event of [...inStep].filter((e) => e.cat === 'comm' && !e.name.startsWith('send ') && !e.name.startsWith('receive ')).sort((a, b) => a.ts - b.ts)) {
    const byRank = byName.get(event.name) ?? new Map<number, Span[]>();
    byName.set(event.name, byRank);
    byRank.set(event.pid, [...(byRank.get(event.pid) ?? []), event]);
  }
  const entries = new Map<Span, number>();
  for (const byRank of byName.values()) {
    const perRank = [...byRank.values()];
    for (const events of perRank) {
      events.forEach((event, k) => entries.set(event, Math.max(...perRank.map((other) => other[k]?.ts ?? event.ts))));
    }
  }
  return entries;
}

/** Microseconds of [start, end) not covered by any of `busy`. */
function uncovered(start: number, end: number, busy: readonly Span[]): number {
  let covered = 0;
  let cursor = start;
  for (const span of [...busy].sort((a, b) => a.ts - b.ts)) {
    const from = Math.max(cursor, span.ts);
    const to = Math.min(end, span.ts + span.dur);
    if (to > from) {
      covered += to - from;
      cursor = to;
    }
  }
  return Math.max(0, end - start - covered);
}

function exposedPart(event: Span, sendsFor: Map<string, Span[]>, entries: Map<Span, number>, computing: readonly Span[]): number {
  const end = event.ts + event.dur;
  if (event.name.startsWith('send ')) return event.dur;
  if (event.name.startsWith('receive ')) {
    const key = `${event.name.slice('receive '.length)}/${event.args!.microBatch}/${event.args!.from}/${event.pid}`;
    const send = sendsFor.get(key)?.shift();
    // No matching send in the trace (it belongs to another step): count the whole wait.
    return send === undefined ? event.dur : Math.max(0, end - Math.max(event.ts, send.ts));
  }
  // A collective: from the moment the last member entered it, less this rank's compute meanwhile.
  const lastEntry = Math.max(event.ts, entries.get(event) ?? event.ts);
  return lastEntry >= end ? 0 : uncovered(lastEntry, end, computing);
}

export interface PipelineShape {
  /** Median over measured steps of each stage's idle fraction within the step's window (first compute to last, over all stages). */
  bubbles: number[];
  /** Mean of the stages' bubbles. */
  bubble: number;
  /** Median compute time per step of each stage, milliseconds. */
  busyMs: number[];
  /** Sum of the stages' compute over the largest: the speed-up the split itself allows, before any bubble. */
  balanceBound: number;
}

/** Stage of an event = its pid (rank): true for a job of one pipeline without data or tensor parallelism. */
export function pipelineShape(events: readonly TraceEvent[], stages: number, fromStep = FIRST_MEASURED_STEP): PipelineShape {
  const compute = spans(events).filter((e) => isComputeOp(e));
  const steps = measuredSteps(compute, fromStep);
  if (steps.length === 0) throw new Error(`the trace has no forward or backward of step ${fromStep} or later`);
  const perStep = steps.map((step) => measureBubbles(compute.filter((e) => stepOf(e) === step).map((e) => ({ stage: e.pid, start: e.ts, end: e.ts + e.dur })), stages));
  const bubbles = Array.from({ length: stages }, (_, stage) => median(perStep.map((step) => step[stage].fraction)));
  const busy = Array.from({ length: stages }, (_, stage) => median(perStep.map((step) => step[stage].busy / 1000)));
  return {
    bubbles,
    bubble: bubbles.reduce((a, b) => a + b, 0) / stages,
    busyMs: busy,
    balanceBound: busy.reduce((a, b) => a + b, 0) / Math.max(...busy),
  };
}

/**
 * The mean bubble the schedule would have if every op took the time it took in the trace and
 * communication cost nothing (per step, then the median): what the stages' imbalance alone leaves.
 * The measured bubble over this one is what the runtime (messages, waits, scheduling) adds.
 */
export function replayedBubble(events: readonly TraceEvent[], schedule: Schedule, fromStep = FIRST_MEASURED_STEP): number {
  const compute = spans(events).filter((e) => isComputeOp(e));
  const steps = measuredSteps(compute, fromStep);
  if (steps.length === 0) throw new Error(`the trace has no forward or backward of step ${fromStep} or later`);
  const opKey = (stage: number, kind: string, microBatch: number, chunk: number) => `${stage}:${kind}${microBatch}.${chunk}`;
  return median(
    steps.map((step) => {
      const took = new Map<string, number>();
      for (const e of compute.filter((c) => stepOf(c) === step)) {
        took.set(opKey(e.pid, COMPUTE_OPS.get(opOf(e))!, e.args!.microBatch as number, e.args!.chunk as number), e.dur);
      }
      // Each stage runs its list in order, every op as soon as the stage is free and its input is done.
      const end = new Map<string, number>();
      const intervals: { stage: number; start: number; end: number }[] = [];
      const next = schedule.ops.map(() => 0);
      for (let progressed = true; progressed; ) {
        progressed = false;
        schedule.ops.forEach((ops, stage) => {
          for (; next[stage] < ops.length; next[stage]++) {
            const op = ops[next[stage]];
            const dependency = dependencyOf(op, stage, schedule.stages, schedule.chunks, placementOf(schedule.kind));
            const ready = dependency === null ? 0 : end.get(opKey(dependency.stage, dependency.op.kind, dependency.op.microBatch, dependency.op.chunk));
            if (ready === undefined) return;
            const duration = took.get(opKey(stage, op.kind, op.microBatch, op.chunk));
            if (duration === undefined) throw new Error(`step ${step} of the trace has no ${op.kind}${op.microBatch} on stage ${stage}`);
            const start = Math.max(ready, intervals.filter((i) => i.stage === stage).reduce((latest, i) => Math.max(latest, i.end), 0));
            end.set(opKey(stage, op.kind, op.microBatch, op.chunk), start + duration);
            intervals.push({ stage, start, end: start + duration });
            progressed = true;
          }
        });
      }
      return meanBubble(measureBubbles(intervals, schedule.stages));
    }),
  );
}

/**
 * The order each stage ran its ops in `step` (1-based), as a schedule: what an auto-zb job ran after
 * its switch, which no builder can rebuild without the op times it was placed from. Stage = pid.
 */
export function scheduleInTrace(events: readonly TraceEvent[], kind: ScheduleKind, stages: number, microBatches: number, step = FIRST_MEASURED_STEP): Schedule {
  const compute = spans(events).filter((e) => isComputeOp(e) && stepOf(e) === step);
  const ops = Array.from({ length: stages }, (_, stage) =>
    compute
      .filter((e) => e.pid === stage)
      .sort((a, b) => a.ts - b.ts)
      .map((e) => op(COMPUTE_OPS.get(opOf(e))! as OpKind, e.args!.microBatch as number, e.args!.chunk as number)),
  );
  return { kind, stages, microBatches, chunks: 1, ops };
}

/** The largest value of a counter's `field` on one rank, or undefined when that counter never appears. */
export function counterPeak(events: readonly TraceEvent[], name: string, pid: number, field: string): number | undefined {
  const values = events.filter((e) => e.ph === 'C' && e.name === name && e.pid === pid).map((e) => Number(e.args?.[field]));
  return values.length === 0 ? undefined : Math.max(...values);
}
