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
 *
 * The writer may keep a note of its own progress in the same document, in the format's `otherData`
 * object after the events: committed with them in one rename, so after a kill the note always tells
 * exactly which events the file holds (trace-parts.ts keeps how far it copied each rank's part there).
 */
import { closeSync, copyFileSync, existsSync, ftruncateSync, openSync, readSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import type { TraceEvent, TraceSink } from './trace.ts';

const HEAD = Buffer.from('{"displayTimeUnit":"ms","traceEvents":[\n');
const TAIL = Buffer.from('\n]}\n');
const OTHER_DATA_OPENING = '\n],"otherData":';
/** The tail is found in this much of the file's end (the note is small: a few numbers a rank). */
const MAX_TAIL_BYTES = 1 << 20;
export const MIN_COMMIT_INTERVAL_MS = 1_000;
/** Time between commits, as a multiple of what the last commit took. */
const COMMIT_COST_FACTOR = 20;

export type TraceOtherData = Record<string, unknown>;

export class TraceFile implements TraceSink {
  /** Where the tail (closing brackets, and the note) begins: the next events go there. */
  private end = HEAD.length;
  private empty = true;
  private pending: string[] = [];
  private lastCommitAt = -Infinity;
  private lastCommitMs = 0;
  private tail = TAIL;
  /** The note changed since the last commit. */
  private tailChanged = false;
  /** The note of the trace this one continues (undefined: none, or a fresh file). */
  readonly continuedOtherData: TraceOtherData | undefined;

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
    const continued = continueExisting ? this.continueFile() : undefined;
    if (continued !== undefined) {
      this.continuedOtherData = continued.otherData;
      return;
    }
    writeFileSync(path, Buffer.concat([HEAD, TAIL]));
  }

  /** The file at `path`, when it is a whole trace of this class's making, now continued (with its note). */
  private continueFile(): { otherData: TraceOtherData | undefined } | undefined {
    let size: number;
    try {
      size = statSync(this.path).size;
    } catch {
      return undefined;
    }
    const fd = openSync(this.path, 'r');
    const head = Buffer.alloc(HEAD.length);
    const end = Buffer.alloc(Math.max(0, Math.min(MAX_TAIL_BYTES, size - HEAD.length)));
    try {
      if (size >= HEAD.length + TAIL.length) {
        readSync(fd, head, 0, HEAD.length, 0);
        readSync(fd, end, 0, end.length, size - end.length);
      }
    } finally {
      closeSync(fd);
    }
    // Events are one line each with no raw line break in them, so the tail is the file's last two lines.
    const tailAt = end.lastIndexOf(0x0a, end.length - 2);
    const tail = tailAt < 0 ? undefined : parseTail(end.subarray(tailAt));
    if (!head.equals(HEAD) || tail === undefined) {
      // Kept, never over an earlier one.
      let aside = `${this.path}.unreadable`;
      for (let n = 2; existsSync(aside); n++) aside = `${this.path}.unreadable.${n}`;
      renameSync(this.path, aside);
      return undefined;
    }
    this.end = size - (end.length - tailAt);
    this.empty = this.end === HEAD.length;
    this.tail = Buffer.from(end.subarray(tailAt));
    return { otherData: tail.otherData };
  }

  /** Sets the note kept after the events (undefined: none); it goes into the file with the next commit. */
  setOtherData(otherData: TraceOtherData | undefined): void {
    const tail = otherData === undefined ? TAIL : Buffer.from(`${OTHER_DATA_OPENING}${JSON.stringify(otherData)}}\n`);
    if (tail.equals(this.tail)) return;
    this.tail = tail;
    this.tailChanged = true;
  }

  append(events: readonly TraceEvent[]): void {
    for (const event of events) this.pending.push(JSON.stringify(event));
    const held = performance.now() - this.lastCommitAt;
    if (this.minCommitIntervalMs === 0 || held >= Math.max(this.minCommitIntervalMs, COMMIT_COST_FACTOR * this.lastCommitMs)) this.commit();
  }

  /** Puts the held events into trace.json now. */
  commit(): void {
    if (this.pending.length === 0 && !this.tailChanged) return;
    const started = performance.now();
    const body = this.pending.length === 0 ? Buffer.alloc(0) : Buffer.from((this.empty ? '' : ',\n') + this.pending.join(',\n'));
    const next = `${this.path}.tmp`;
    copyFileSync(this.path, next);
    const fd = openSync(next, 'r+');
    try {
      writeSync(fd, Buffer.concat([body, this.tail]), 0, body.length + this.tail.length, this.end);
      // A shorter note than the last one leaves the end of the old one behind.
      ftruncateSync(fd, this.end + body.length + this.tail.length);
    } finally {
      closeSync(fd);
    }
    renameSync(next, this.path);
    this.end += body.length;
    this.empty &&= body.length === 0;
    this.pending = [];
    this.tailChanged = false;
    this.lastCommitAt = performance.now();
    this.lastCommitMs = this.lastCommitAt - started;
  }

  close(): void {
    this.commit();
  }
}

/** The closing brackets, alone or after the note; undefined when `tail` is neither. */
function parseTail(tail: Buffer): { otherData: TraceOtherData | undefined } | undefined {
  if (tail.equals(TAIL)) return { otherData: undefined };
  const text = tail.toString('utf8');
  if (!text.startsWith(OTHER_DATA_OPENING) || !text.endsWith('}\n')) return undefined;
  try {
    const otherData = JSON.parse(text.slice(OTHER_DATA_OPENING.length, -2)) as unknown;
    return typeof otherData === 'object' && otherData !== null && !Array.isArray(otherData) ? { otherData: otherData as TraceOtherData } : undefined;
  } catch {
    return undefined;
  }
}
