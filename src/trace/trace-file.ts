/**
 * Implements: trace.json written as the run goes, a whole JSON document at every moment. A write into
 * the file in place is not enough: a process killed with SIGKILL in the middle of a large write leaves
 * it half done (Linux stops a write between pages when a fatal signal is pending), and the document cut
 * there does not parse. So new events are added to a copy of the file (the kernel's copy), whose closing
 * brackets they overwrite, and the copy is renamed over trace.json: a reader, or a kill at any moment,
 * finds the previous document or the next one, never a mix.
 *
 * Copying costs time in proportion to the file, so events are held and added at most once a second, and
 * less often as the file grows (a copy may take at most a twentieth of the time between two).
 */
import { closeSync, copyFileSync, existsSync, openSync, readSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import type { TraceEvent, TraceSink } from './trace.ts';

const HEAD = Buffer.from('{"displayTimeUnit":"ms","traceEvents":[\n');
const TAIL = Buffer.from('\n]}\n');
export const MIN_COMMIT_INTERVAL_MS = 1_000;
/** Time between commits, as a multiple of what the last commit took. */
const COMMIT_COST_FACTOR = 20;

export class TraceFile implements TraceSink {
  /** Where the closing brackets begin: the next events go there. */
  private end = HEAD.length;
  private empty = true;
  private pending: string[] = [];
  private lastCommitAt = -Infinity;
  private lastCommitMs = 0;

  /**
   * `minCommitIntervalMs`: how long events may be held at least (0: added at every append).
   * `continueExisting`: a resumed run's events go after those of the launches before it (their times are
   * the clock's, so they follow in order) when `path` holds a trace this class wrote; otherwise, and
   * without it, the file starts afresh (one that does not read as such a trace is kept aside first).
   */
  constructor(
    readonly path: string,
    private readonly minCommitIntervalMs = MIN_COMMIT_INTERVAL_MS,
    continueExisting = false,
  ) {
    if (continueExisting && this.continueFile()) return;
    writeFileSync(path, Buffer.concat([HEAD, TAIL]));
  }

  /** Whether the file at `path` is a whole trace of this class's making, now continued. */
  private continueFile(): boolean {
    let size: number;
    try {
      size = statSync(this.path).size;
    } catch {
      return false;
    }
    const fd = openSync(this.path, 'r');
    const head = Buffer.alloc(HEAD.length);
    const tail = Buffer.alloc(TAIL.length);
    try {
      if (size >= HEAD.length + TAIL.length) {
        readSync(fd, head, 0, HEAD.length, 0);
        readSync(fd, tail, 0, TAIL.length, size - TAIL.length);
      }
    } finally {
      closeSync(fd);
    }
    if (!head.equals(HEAD) || !tail.equals(TAIL)) {
      // Kept, never over an earlier one.
      let aside = `${this.path}.unreadable`;
      for (let n = 2; existsSync(aside); n++) aside = `${this.path}.unreadable.${n}`;
      renameSync(this.path, aside);
      return false;
    }
    this.end = size - TAIL.length;
    this.empty = size === HEAD.length + TAIL.length;
    return true;
  }

  append(events: readonly TraceEvent[]): void {
    for (const event of events) this.pending.push(JSON.stringify(event));
    const held = performance.now() - this.lastCommitAt;
    if (this.minCommitIntervalMs === 0 || held >= Math.max(this.minCommitIntervalMs, COMMIT_COST_FACTOR * this.lastCommitMs)) this.commit();
  }

  /** Puts the held events into trace.json now. */
  commit(): void {
    if (this.pending.length === 0) return;
    const started = performance.now();
    const body = Buffer.from((this.empty ? '' : ',\n') + this.pending.join(',\n'));
    const next = `${this.path}.tmp`;
    copyFileSync(this.path, next);
    const fd = openSync(next, 'r+');
    try {
      writeSync(fd, Buffer.concat([body, TAIL]), 0, body.length + TAIL.length, this.end);
    } finally {
      closeSync(fd);
    }
    renameSync(next, this.path);
    this.end += body.length;
    this.empty = false;
    this.pending = [];
    this.lastCommitAt = performance.now();
    this.lastCommitMs = this.lastCommitAt - started;
  }

  close(): void {
    this.commit();
  }
}
