/**
 * Implements: measurements on recorded pipeline events, shared by the simulated stage actors and the
 * real pipeline runtime: each stage's bubble (idle time over the step's span), the activations a
 * stage holds at once (micro-batches forwarded but not yet backwarded; where the backward is split, not
 * yet through their W, which still reads them), and the theoretical bubble.
 *
 * Events are compute intervals in any time unit (simulated units, milliseconds); a runtime that also
 * records sends, receives or all-reduces passes only its forwards and backwards here.
 */
import { splitsBackward, type OpKind, type ScheduleKind } from './ops.ts';

export interface BusyInterval {
  stage: number;
  start: number;
  end: number;
}

export interface ComputeEvent extends BusyInterval {
  kind: OpKind;
  microBatch: number;
  chunk: number;
}

export interface StageBubble {
  stage: number;
  /** Time the stage computed within the window (overlapping intervals counted once). */
  busy: number;
  /** span - busy. */
  idle: number;
  /** The window's length: the same for every stage, so a stage that starts late counts as idle. */
  span: number;
  /** idle / span (0 for an empty window). */
  fraction: number;
}

/**
 * Per stage 0..stages-1: busy and idle time within `window` (default: from the first start to the
 * last end over all events, i.e. one step of the whole pipeline).
 */
export function measureBubbles(events: readonly BusyInterval[], stages: number, window?: { start: number; end: number }): StageBubble[] {
  const start = window?.start ?? Math.min(...events.map((e) => e.start));
  const end = window?.end ?? Math.max(...events.map((e) => e.end));
  const span = events.length === 0 && window === undefined ? 0 : Math.max(0, end - start);
  return Array.from({ length: stages }, (_, stage) => {
    const intervals = events
      .filter((e) => e.stage === stage)
      .map((e) => [Math.max(start, e.start), Math.min(end, e.end)] as const)
      .filter(([from, to]) => to > from)
      .sort((a, b) => a[0] - b[0]);
    let busy = 0;
    let coveredTo = -Infinity;
    for (const [from, to] of intervals) {
      if (to <= coveredTo) continue;
      busy += to - Math.max(from, coveredTo);
      coveredTo = to;
    }
    const idle = span - busy;
    return { stage, busy, idle, span, fraction: span > 0 ? idle / span : 0 };
  });
}

/** Mean of the stages' bubble fractions. */
export function meanBubble(bubbles: readonly StageBubble[]): number {
  return bubbles.length === 0 ? 0 : bubbles.reduce((sum, b) => sum + b.fraction, 0) / bubbles.length;
}

/**
 * Per stage: the most (micro-batch, chunk) pairs held at once, counting from the start of a forward to
 * the end of the op that frees its saved activations (the backward, or W where the backward is split).
 * An interleaved stage holding one micro-batch in two chunks counts 2 (each holds 1/V of the stage's layers).
 */
export function measureInFlight(events: readonly ComputeEvent[], stages: number): number[] {
  return Array.from({ length: stages }, (_, stage) => {
    const own = events.filter((e) => e.stage === stage);
    const freeing = releasingKind(own);
    // At equal times a backward's end frees before a forward's start allocates.
    const changes = own
      .filter((e) => e.kind === 'F' || e.kind === freeing)
      .map((e) => (e.kind === 'F' ? { time: e.start, delta: 1 } : { time: e.end, delta: -1 }))
      .sort((a, b) => a.time - b.time || a.delta - b.delta);
    let held = 0;
    let most = 0;
    for (const change of changes) {
      held += change.delta;
      most = Math.max(most, held);
    }
    return most;
  });
}

/** The same count from the order alone: the largest (#forwards - #backwards) over the list's prefixes. */
export function inFlightByOrder(stageOps: readonly { kind: OpKind }[]): number {
  const freeing = releasingKind(stageOps);
  let held = 0;
  let most = 0;
  for (const operation of stageOps) {
    if (operation.kind === 'F') held++;
    else if (operation.kind === freeing) held--;
    most = Math.max(most, held);
  }
  return most;
}

/** The op after which a forward's saved activations are gone: W where the backward is split, else B. */
function releasingKind(stageOps: readonly { kind: OpKind }[]): OpKind {
  return splitsBackward(stageOps) ? 'W' : 'B';
}

/**
 * The bubble fraction (idle over total time) the literature gives: (p - 1) / (m + p - 1) for GPipe and
 * 1F1B (Huang et al. 2019; p - 1 fill and drain slots around m micro-batches), divided by the chunks
 * for interleaved 1F1B (Narayanan et al. 2021: each fill or drain slot is 1/v of a stage's work).
 * For v > 1 this slightly undercounts at small m: the exact idle fraction of ideal interleaving with
 * equal op times is (p - 1) / (v m + p - 1), which it approaches as m grows (see interleavedBubble).
 */
export function theoreticalBubble(stages: number, microBatches: number, chunks = 1): number {
  return (stages - 1) / (microBatches + stages - 1) / chunks;
}

/**
 * The theoretical bubble of a schedule kind, with F, B and W of equal length where the backward is split
 * (the zero-bubble paper's setting; in units of one op of one chunk): zb-h1 idles P - 1 slots around
 * 3M of work, a third of 1F1B's (P - 1) / (M + P - 1) as M grows; zbv idles only the P - 1 forwards
 * that fill its V, around 6M (two chunks, three ops each); auto-zb is placed by simulation and never
 * slower than zb-h1, so zb-h1's figure bounds it. Exact for M >= P (zb-h1) and M >= 2P - 1
 * (zbv); with fewer micro-batches the pipeline never fills and the measured bubble is larger.
 */
export function theoreticalBubbleOf(kind: ScheduleKind, stages: number, microBatches: number, chunks = 1): number {
  switch (kind) {
    case 'gpipe':
    case '1f1b':
    case 'interleaved':
      return theoreticalBubble(stages, microBatches, chunks);
    case 'zb-h1':
    case 'auto-zb':
      return (stages - 1) / (3 * microBatches + stages - 1);
    case 'zbv':
      return (stages - 1) / (6 * microBatches + stages - 1);
  }
}

/** The formula theoreticalBubbleOf uses, as text. */
export function theoreticalBubbleFormula(kind: ScheduleKind, chunks: number): string {
  switch (kind) {
    case 'gpipe':
    case '1f1b':
      return '(p - 1) / (m + p - 1)';
    case 'interleaved':
      return `(p - 1) / (m + p - 1)${chunks > 1 ? ' / v' : ''}`;
    case 'zb-h1':
      return '(p - 1) / (3 m + p - 1) with F = B = W, for m >= p';
    case 'auto-zb':
      return "zb-h1's (p - 1) / (3 m + p - 1) with F = B = W; the measured times give its own";
    case 'zbv':
      return '(p - 1) / (6 m + p - 1) with F = B = W, for m >= 2p - 1';
  }
}

/** Idle fraction of perfect interleaving: p - 1 slots of 1/v of a stage's work around m whole ones. */
export function interleavedBubble(stages: number, microBatches: number, chunks: number): number {
  return (stages - 1) / (chunks * microBatches + stages - 1);
}
