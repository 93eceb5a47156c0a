/** Implements: the worker process entry: reads its environment, runs the rank, exits with its code. */
import { runWorker } from './worker.ts';
import { readWorkerEnvironment } from './worker-env.ts';

try {
  process.exitCode = await runWorker(readWorkerEnvironment());
} catch (error) {
  process.stderr.write(`worker failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
// The NATS client and timers may keep the loop alive; the job is over for this rank.
setTimeout(() => process.exit(), 200).unref();
