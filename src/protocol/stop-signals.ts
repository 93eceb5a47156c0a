/**
 * Implements: the signals that stop a job at the next step boundary with a checkpoint (SIGTERM, what a
 * cluster scheduler or a cloud sends before preempting a machine, and Ctrl-C's SIGINT), and the exit
 * code a job so stopped ends with: 128 + the signal's number (143, 130), what a shell reports for a
 * process the signal ended, so a scheduler sees the job ended because it was asked to.
 */
import { constants } from 'node:os';

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

export function stopExitCode(signal: StopSignal): number {
  return 128 + constants.signals[signal];
}
