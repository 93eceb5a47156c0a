/**
 * Implements: the heartbeat thread of a worker process. A training step runs synchronous tfjs code for
 * seconds at a time and holds the main thread's event loop, so heartbeats sent from there would stop
 * whenever a step is long; from this thread, with its own NATS connection, they keep their pace, and
 * stop only when the process does (killed, stopped, crashed). State and step come from the main
 * thread through shared memory.
 */
import { workerData } from 'node:worker_threads';
import { Bus } from '../comm/bus.ts';
import { connectNats } from '../comm/nats-transport.ts';
import { HEARTBEAT_SLOTS, stateFromCode, type HeartbeatThreadData } from './heartbeat.ts';
import { SUBJECTS } from '../protocol/subjects.ts';

const data = workerData as HeartbeatThreadData;
const shared = new Int32Array(data.shared);
const log = (line: string) => process.stderr.write(`[rank ${data.rank} heartbeat] ${line}\n`);
// A lost heartbeat costs nothing (the next one follows in a second): this connection's interruptions are only logged.
const transport = await connectNats({ url: data.natsUrl, ...data.natsCredentials, name: `gpt-hybrid ${data.jobId} rank ${data.rank} heartbeat`, log });
const bus = new Bus({ jobId: data.jobId, transport, log, key: Buffer.from(data.jobKey, 'hex') });
const beat = () => {
  const stepMs = Atomics.load(shared, HEARTBEAT_SLOTS.stepMs);
  bus.publish(SUBJECTS.heartbeat, {
    kind: 'heartbeat',
    rank: data.rank,
    step: Atomics.load(shared, HEARTBEAT_SLOTS.step),
    state: stateFromCode(Atomics.load(shared, HEARTBEAT_SLOTS.state)),
    rssMb: Math.round(process.memoryUsage().rss / 2 ** 20),
    ...(stepMs > 0 ? { stepMs } : {}),
  });
};
beat();
setInterval(beat, data.intervalMs);
