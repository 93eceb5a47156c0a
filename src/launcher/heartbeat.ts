/**
 * Implements: the main-thread side of a worker's heartbeats: starts the heartbeat thread
 * (heartbeat-thread.ts) and shares the rank's state and step with it through a SharedArrayBuffer.
 */
import { Worker } from 'node:worker_threads';
import { WORKER_STATES as STATES, type WorkerState } from '../protocol/messages.ts';
import type { NatsCredentials } from '../comm/nats-credentials.ts';

/** stepMs: whole milliseconds of the last step, 0 before the first. */
export const HEARTBEAT_SLOTS = { state: 0, step: 1, stepMs: 2 } as const;

export interface HeartbeatThreadData {
  natsUrl: string;
  natsCredentials: NatsCredentials;
  jobId: string;
  /** The job key, hex (the thread's own bus signs its beats). */
  jobKey: string;
  rank: number;
  intervalMs: number;
  shared: SharedArrayBuffer;
}

export function stateFromCode(code: number): WorkerState {
  return STATES[code] ?? 'failed';
}

export class HeartbeatThread {
  private readonly shared = new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
  private readonly view = new Int32Array(this.shared);
  private readonly thread: Worker;

  constructor(options: Omit<HeartbeatThreadData, 'shared'>, onError: (error: Error) => void) {
    // Worker threads do not inherit the tsx loader: register it in the thread, then load the entry.
    const tsx = import.meta.resolve('tsx/esm/api');
    const entry = new URL('./heartbeat-thread.ts', import.meta.url).href;
    const bootstrap = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(entry)}); })`;
    this.thread = new Worker(bootstrap, { eval: true, workerData: { ...options, shared: this.shared } satisfies HeartbeatThreadData });
    this.thread.on('error', onError);
    this.thread.unref();
  }

  update(state: WorkerState, step: number, stepMs: number | undefined): void {
    Atomics.store(this.view, HEARTBEAT_SLOTS.state, STATES.indexOf(state));
    Atomics.store(this.view, HEARTBEAT_SLOTS.step, step);
    Atomics.store(this.view, HEARTBEAT_SLOTS.stepMs, Math.round(stepMs ?? 0));
  }

  async stop(): Promise<void> {
    await this.thread.terminate();
  }
}
