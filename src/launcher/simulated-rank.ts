/**
 * Implements: a rank of a simulated job (`train --simulate`): the rank's runRank in this process over
 * the in-process transport, behind the few parts of a child process the launcher uses (pid, exit
 * code or signal, the 'exit' event, kill), so the launcher supervises, restarts and stops simulated
 * ranks with the code it uses for worker processes.
 */
import { EventEmitter } from 'node:events';
import type { LocalNetwork } from '../comm/local-transport.ts';
import type { TrainConfig } from '../config/types.ts';
import type { RunDatasets } from '../dataset/validation-split.ts';
import { runRank } from './worker.ts';

/** What the launcher needs of a rank it started: a worker process or a simulated rank. */
export interface RankProcess {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals): boolean;
  on(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this;
  once(event: 'exit', listener: (code: number | null, signal: NodeJS.Signals | null) => void): this;
}

export interface SimulatedRankOptions {
  network: LocalNetwork;
  jobId: string;
  rank: number;
  world: number;
  config: TrainConfig;
  totalSteps: number;
  outDir: string;
  resume: string;
  data: RunDatasets;
  jobKey: Buffer;
  log: (line: string) => void;
  actionTimeoutMs?: number;
  receiveTimeoutMs?: number;
}

export class SimulatedRank extends EventEmitter implements RankProcess {
  readonly pid = process.pid;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private exitNow: ((code: number) => void) | undefined;

  constructor(options: SimulatedRankOptions) {
    super();
    const { network, rank } = options;
    runRank({
      jobId: options.jobId,
      rank,
      world: options.world,
      node: 0,
      totalSteps: options.totalSteps,
      outDir: options.outDir,
      resume: options.resume,
      config: options.config,
      transport: network.connect(),
      jobKey: options.jobKey,
      log: (line) => options.log(`[rank ${rank}] ${line}`),
      data: options.data,
      backendReady: true,
      onExitHandle: (exit) => (this.exitNow = exit),
      actionTimeoutMs: options.actionTimeoutMs,
      receiveTimeoutMs: options.receiveTimeoutMs,
    }).then(
      (code) => this.exited(code, null),
      (error: unknown) => {
        options.log(`[rank ${rank}] failed: ${error instanceof Error ? error.message : String(error)}`);
        this.exited(1, null);
      },
    );
  }

  /**
   * Ends the rank: its runRank fails what its actors wait on (its stage unwinds and is disposed) and
   * returns; synchronous compute already running finishes first (it cannot be interrupted).
   */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    this.signalCode = signal;
    this.exitNow?.(1);
    return true;
  }

  private exited(code: number, signal: NodeJS.Signals | null): void {
    if (this.exitCode !== null) return;
    this.exitCode = this.signalCode === null ? code : null;
    this.emit('exit', this.exitCode, this.signalCode ?? signal);
  }
}
