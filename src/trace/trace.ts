/**
 * Implements: a rank's timeline in Chrome's Trace Event format (complete "X" events; openable in
 * Perfetto or chrome://tracing): forward, backward, send, receive, all-reduce and optimizer events with
 * step, micro-batch and chunk in `args`, and counters ("C" events: the bytes of saved activations). Times
 * are wall-clock microseconds, so the ranks of a job line up on one timeline when their files are merged.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'M' | 'C';
  /** Microseconds since the epoch. */
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: Record<string, number | string>;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export class TraceRecorder {
  readonly events: TraceEvent[] = [];

  constructor(
    readonly rank: number,
    label: string,
  ) {
    this.events.push({ name: 'process_name', cat: '__metadata', ph: 'M', ts: 0, pid: rank, tid: 0, args: { name: label } });
    this.events.push({ name: 'process_sort_index', cat: '__metadata', ph: 'M', ts: 0, pid: rank, tid: 0, args: { sort_index: rank } });
  }

  /** Records an event between two wallClockMs() readings. */
  record(name: string, cat: string, startMs: number, endMs: number, args: Record<string, number | string> = {}): void {
    this.events.push({ name, cat, ph: 'X', ts: Math.round(startMs * 1000), dur: Math.max(0, Math.round((endMs - startMs) * 1000)), pid: this.rank, tid: 0, args });
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

  writePart(folder: string): void {
    writeFileSync(join(folder, `trace.rank${this.rank}.json`), JSON.stringify(this.events));
  }
}

/** Merges the ranks' parts in `folder` into one trace.json (removing the parts); returns its path, or undefined when there were none. */
export function mergeTraceParts(folder: string): string | undefined {
  const parts = readdirSync(folder).filter((name) => /^trace\.rank\d+\.json$/.test(name));
  if (parts.length === 0) return undefined;
  const events: TraceEvent[] = [];
  for (const part of parts) {
    events.push(...(JSON.parse(readFileSync(join(folder, part), 'utf8')) as TraceEvent[]));
    rmSync(join(folder, part));
  }
  const path = join(folder, 'trace.json');
  writeFileSync(path, JSON.stringify({ traceEvents: events, displayTimeUnit: 'ms' }));
  return path;
}
