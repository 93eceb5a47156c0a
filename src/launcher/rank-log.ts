/**
 * Implements: a worker's output kept per rank under the run folder, `DIR/logs/rank-N.log`, each line
 * stamped with the time it reached the launcher, while it still reaches the launcher's console unchanged.
 * The file keeps what scrolled past (a tfjs warning, a stack trace) after the job; a restarted rank
 * appends to its file after a line that marks the new attempt.
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';

export const LOGS_DIR = 'logs';

export function rankLogPath(runFolder: string, rank: number): string {
  return join(runFolder, LOGS_DIR, `rank-${rank}.log`);
}

/** Copies `streams` to their consoles and, line by line with an ISO timestamp, into the rank's file. */
export function keepRankLog(runFolder: string, rank: number, attempt: number, streams: { stdout: Readable; stderr: Readable }): void {
  mkdirSync(join(runFolder, LOGS_DIR), { recursive: true });
  const file = createWriteStream(rankLogPath(runFolder, rank), { flags: 'a' });
  // A full disk must not take the job down: the console still has every line.
  file.on('error', () => undefined);
  file.write(`${new Date().toISOString()} --- rank ${rank} starts (attempt ${attempt + 1})\n`);
  let open = 2;
  for (const [stream, console] of [
    [streams.stdout, process.stdout],
    [streams.stderr, process.stderr],
  ] as const) {
    copyLines(stream, console, file);
    stream.once('close', () => {
      if (--open === 0) file.end();
    });
  }
}

function copyLines(from: Readable, console: Writable, file: WriteStream): void {
  let partial = '';
  from.setEncoding('utf8');
  from.on('data', (chunk: string) => {
    console.write(chunk);
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    const at = new Date().toISOString();
    if (lines.length > 0) file.write(lines.map((line) => `${at} ${line}\n`).join(''));
  });
  from.on('end', () => {
    if (partial !== '') file.write(`${new Date().toISOString()} ${partial}\n`);
  });
}
