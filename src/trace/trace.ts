/**
 * Implements: a rank's timeline in Chrome's Trace Event format (complete "X" events; openable in
 * Perfetto or chrome://tracing): compute slices named by action and micro-batch (`F3`, `B3.1` for chunk 1,
 * `W3`), send, receive, all-reduce and optimizer events with step, micro-batch and chunk in `args`, flow
 * arrows from each pipeline send to its receive, and counters ("C" events: the bytes of saved
 * activations). Times are wall-clock microseconds, so the ranks of a job line up on one timeline.
 *
 * A recorder given a sink hands its events over on every `flush()` (once a step) and forgets them, so a
 * run's timeline is on disk as it goes and memory does not grow with the run; without a sink (tests, the
 * in-process helpers) it keeps them all in `events`.
 */
import { createHash } from 'node:crypto';

export interface TraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'M' | 'C' | 's' | 'f';
  /** Microseconds since the epoch. */
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  /** Flow events: the id a send and its receive share. */
  id?: number;
  /** Flow end: binds to the slice enclosing `ts`. */
  bp?: 'e';
  args?: Record<string, number | string>;
}

/** Where a recorder's events go when flushed (trace-file.ts: a job's rank part, or a process's trace.json). */
export interface TraceSink {
  append(events: readonly TraceEvent[]): void;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** A compute slice's name: its action and micro-batch, and the chunk when a stage holds several. */
export function actionSliceName(kind: string, microBatch: number, chunk: number, chunks: number): string {
  return chunks > 1 ? `${kind}${microBatch}.${chunk}` : `${kind}${microBatch}`;
}

/**
 * The id that joins a message's send to its receive across processes: both ends know the message's tag
 * and its two ranks. 48 bits of a hash, so a run's ids stay distinct (and exact in JSON numbers).
 */
export function flowId(tag: string, from: number, to: number): number {
  return createHash('sha1').update(`${tag}:${from}>${to}`).digest().readUIntBE(0, 6);
}

export class TraceRecorder {
  /** Events not yet flushed (all of them when there is no sink). */
  readonly events: TraceEvent[] = [];

  constructor(
    readonly rank: number,
    label: string,
    private readonly sink?: TraceSink,
  ) {
    this.events.push({ name: 'process_name', cat: '__metadata', ph: 'M', ts: 0, pid: rank, tid: 0, args: { name: label } });
    this.events.push({ name: 'process_sort_index', cat: '__metadata', ph: 'M', ts: 0, pid: rank, tid: 0, args: { sort_index: rank } });
  }

  /** Records an event between two wallClockMs() readings. */
  record(name: string, cat: string, startMs: number, endMs: number, args: Record<string, number | string> = {}): void {
    this.events.push({ name, cat, ph: 'X', ts: Math.round(startMs * 1000), dur: Math.max(0, Math.round((endMs - startMs) * 1000)), pid: this.rank, tid: 0, args });
  }

  /**
   * One end of an arrow between a send slice and its receive slice (recorded with the same start and
   * end): placed inside the slice, so Perfetto binds the arrow to it.
   */
  flow(end: 'start' | 'finish', id: number, name: string, startMs: number, endMs: number): void {
    const ts = Math.round(((startMs + endMs) / 2) * 1000);
    this.events.push({ name, cat: 'flow', ph: end === 'start' ? 's' : 'f', ...(end === 'finish' ? { bp: 'e' as const } : {}), id, ts, pid: this.rank, tid: 0 });
  }

  /** A counter's values at `atMs` (wallClockMs); Perfetto draws one track per counter name. */
  counter(name: string, atMs: number, values: Record<string, number>): void {
    this.events.push({ name, cat: 'counter', ph: 'C', ts: Math.round(atMs * 1000), pid: this.rank, tid: 0, args: values });
  }

  /** Times an async piece of work as one event. */
  async span<T>(name: string, cat: string, args: Record<string, number | string>, work: () => Promise<T>): Promise<T> {
    const start = wallClockMs();
    try {
      return await work();
    } finally {
      this.record(name, cat, start, wallClockMs(), args);
    }
  }

  /** Hands the events recorded since the last flush to the sink; a no-op without one. */
  flush(): void {
    if (this.sink === undefined || this.events.length === 0) return;
    this.sink.append(this.events);
    this.events.length = 0;
  }
}
