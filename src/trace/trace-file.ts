/**
 * Implements: trace.json written as the run goes and valid JSON after every write. The file always ends
 * in the document's closing brackets; each append overwrites them with the new events followed by the
 * brackets again, in one positioned write, so a process killed at any moment (kill -9 included) leaves
 * a trace that parses and opens, holding everything appended before.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { TraceEvent, TraceSink } from './trace.ts';

const HEAD = Buffer.from('{"displayTimeUnit":"ms","traceEvents":[\n');
const TAIL = '\n]}\n';

export class TraceFile implements TraceSink {
  private readonly fd: number;
  /** Where the closing brackets begin: the next append writes there. */
  private end = HEAD.length;
  private empty = true;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
    writeSync(this.fd, Buffer.concat([HEAD, Buffer.from(TAIL)]), 0, HEAD.length + TAIL.length, 0);
  }

  append(events: readonly TraceEvent[]): void {
    if (events.length === 0) return;
    const body = Buffer.from((this.empty ? '' : ',\n') + events.map((event) => JSON.stringify(event)).join(',\n'));
    const tail = Buffer.from(TAIL);
    writeSync(this.fd, Buffer.concat([body, tail]), 0, body.length + tail.length, this.end);
    this.end += body.length;
    this.empty = false;
  }

  close(): void {
    closeSync(this.fd);
  }
}
