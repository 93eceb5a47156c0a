/**
 * Implements: a job's one trace.json from its ranks' timelines as they run. Each worker appends its
 * flushed events to its own part, `trace.rankN.jsonl` (one event a line, appended: several processes
 * cannot share one positioned writer, and a restarted worker simply continues its part); node 0's
 * launcher follows the parts (`collect`, about once a second) and adds whole lines to trace.json (which
 * is a whole document at every moment: trace-file.ts), so a launcher killed mid-run leaves a trace.json
 * that parses, and `finish` removes the parts. How far each part was copied is committed with the events
 * (trace.json's note), so a launch that resumes a killed one first copies the rest of its parts, each
 * event once, before they go.
 */
import { appendFileSync, closeSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TraceFile, type TraceOtherData } from './trace-file.ts';
import type { TraceEvent, TraceSink } from './trace.ts';

const PART = /^trace\.rank\d+\.jsonl$/;
/** trace.json's note (otherData) of how many bytes of each part it holds. */
const COPIED_NOTE = 'copiedFromRankParts';

/** A worker's sink: appends to its rank's part in the run folder. */
export class TracePart implements TraceSink {
  readonly path: string;

  constructor(folder: string, rank: number) {
    this.path = join(folder, `trace.rank${rank}.jsonl`);
  }

  append(events: readonly TraceEvent[]): void {
    appendFileSync(this.path, events.map((event) => `${JSON.stringify(event)}\n`).join(''));
  }
}

export class TraceCollector {
  private readonly file: TraceFile;
  private readonly onEvents: ((events: readonly TraceEvent[]) => void) | undefined;
  /** Bytes of each part already copied (whole lines only). */
  private readonly copied = new Map<string, number>();

  /**
   * Parts left by an earlier launch in this folder belong to its trace, not this one's. `resumed`: this
   * launch resumes the run, so trace.json goes on after the earlier launches' events, and what they had
   * not yet copied of their parts is copied first (else it starts afresh).
   * `onEvents`: told each batch copied (the live job page draws the latest steps from them);
   * `minCommitIntervalMs`: how long trace.json may lag behind the parts at least (trace-file.ts).
   */
  constructor(
    private readonly folder: string,
    options: { resumed?: boolean; onEvents?: (events: readonly TraceEvent[]) => void; minCommitIntervalMs?: number } = {},
  ) {
    this.file = new TraceFile(join(folder, 'trace.json'), options.minCommitIntervalMs, options.resumed === true);
    const earlier = this.parts();
    if (options.resumed === true && earlier.length > 0) {
      for (const [name, offset] of Object.entries(copiedOffsets(this.file.continuedOtherData))) if (earlier.includes(name)) this.copied.set(name, offset);
      this.copyNewLines(undefined);
    }
    this.removeParts(earlier);
    this.onEvents = options.onEvents;
  }

  get path(): string {
    return this.file.path;
  }

  /** Copies the parts' complete new lines into trace.json. */
  collect(): void {
    this.copyNewLines(this.onEvents);
  }

  private copyNewLines(onEvents: ((events: readonly TraceEvent[]) => void) | undefined): void {
    for (const name of this.parts()) {
      const path = join(this.folder, name);
      const from = this.copied.get(name) ?? 0;
      const size = statSync(path).size;
      if (size <= from) continue;
      const bytes = Buffer.alloc(size - from);
      const fd = openSync(path, 'r');
      try {
        readSync(fd, bytes, 0, bytes.length, from);
      } finally {
        closeSync(fd);
      }
      const complete = bytes.lastIndexOf(0x0a) + 1;
      if (complete === 0) continue;
      const events = bytes
        .subarray(0, complete)
        .toString('utf8')
        .split('\n')
        .flatMap((line) => parsedEvent(line) ?? []);
      // The note goes into the file with these events, whenever they are committed.
      this.copied.set(name, from + complete);
      this.noteCopied();
      this.file.append(events);
      onEvents?.(events);
    }
  }

  private noteCopied(): void {
    this.file.setOtherData(this.copied.size === 0 ? undefined : { [COPIED_NOTE]: Object.fromEntries(this.copied) });
  }

  /** The last lines, then the parts go; returns trace.json's path. */
  finish(): string {
    this.collect();
    this.removeParts(this.parts());
    this.file.close();
    return this.file.path;
  }

  /**
   * The events copied so far go in with how far each part was copied before the parts go (a kill before
   * the removal copies nothing twice), then the note is cleared (new parts start from their beginning).
   */
  private removeParts(names: readonly string[]): void {
    this.file.commit();
    for (const name of names) rmSync(join(this.folder, name));
    this.copied.clear();
    this.noteCopied();
    this.file.commit();
  }

  private parts(): string[] {
    return readdirSync(this.folder).filter((name) => PART.test(name));
  }
}

/** The bytes of each part in the trace, from its note; a note of another shape counts as none. */
function copiedOffsets(otherData: TraceOtherData | undefined): Record<string, number> {
  const copied = otherData?.[COPIED_NOTE];
  if (typeof copied !== 'object' || copied === null) return {};
  return Object.fromEntries(Object.entries(copied).filter((entry): entry is [string, number] => PART.test(entry[0]) && Number.isSafeInteger(entry[1]) && entry[1] >= 0));
}

/** A line a worker killed mid-write left torn is skipped: the rest of its part is still good. */
function parsedEvent(line: string): TraceEvent | undefined {
  if (line === '') return undefined;
  try {
    return JSON.parse(line) as TraceEvent;
  } catch {
    return undefined;
  }
}
