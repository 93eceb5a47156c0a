/**
 * Implements: a launcher's part in the data plane (comm/data-plane.ts): whether the job's tensors go
 * over direct links (config comm.dataPlane), the job key its workers prove themselves with (made by node
 * 0's launcher, which hands it to the other nodes' launchers over the job's NATS subjects), and the
 * address this node's workers listen on.
 */
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import type { Bus } from '../comm/bus.ts';
import { DATA_PLANE_KEY_BYTES } from '../comm/data-plane.ts';
import type { TrainConfig } from '../config/types.ts';
import { SUBJECTS } from '../protocol/subjects.ts';
import { requestUntil } from '../comm/request-until.ts';

export interface DataPlaneSettings {
  /** The job key, hex. */
  key: string;
  host: string;
}

/** How long another node's launcher asks node 0's for the key (node 0 may start later). */
const KEY_WAIT_MS = 120_000;

/**
 * Undefined when the tensors go through NATS. `host`: --data-plane-host; default loopback on one node,
 * else this machine's first non-internal IPv4 address.
 */
export async function prepareDataPlane(
  bus: Bus,
  options: { config: TrainConfig; nnodes: number; nodeRank: number; host?: string; log: (line: string) => void },
): Promise<{ settings: DataPlaneSettings; close(): void } | undefined> {
  const { config, nnodes, nodeRank, log } = options;
  if (config.comm.dataPlane === 'nats') {
    log('data plane: tensors travel through NATS (comm.dataPlane "nats")');
    return undefined;
  }
  const host = options.host ?? (nnodes === 1 ? '127.0.0.1' : externalAddress());
  let key: string;
  let close = () => {};
  if (nodeRank === 0) {
    key = randomBytes(DATA_PLANE_KEY_BYTES).toString('hex');
    const subscription = bus.subscribe(SUBJECTS.dataPlaneKey, (message, context) => {
      if (message.kind === 'data-plane-key-request' && context.reply !== undefined) bus.respond(context, { kind: 'data-plane-key', key });
    });
    close = () => subscription.unsubscribe();
  } else {
    key = await requestKey(bus, nodeRank);
  }
  log(`data plane: direct TCP links between ranks, listening on ${host} (comm.dataPlane "tcp"; NATS carries control)`);
  return { settings: { key, host }, close };
}

function requestKey(bus: Bus, nodeRank: number): Promise<string> {
  return requestUntil(bus, SUBJECTS.dataPlaneKey, { kind: 'data-plane-key-request', node: nodeRank }, {
    accept: (answer) => (answer.kind === 'data-plane-key' ? answer.key : undefined),
    deadlineMs: KEY_WAIT_MS,
    attemptMs: 2000,
    pauseMs: 500,
    failure: "node 0's launcher handed out no data plane key (is it running with the same --job-id and NATS server?)",
  });
}

function externalAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === 'IPv4' && !address.internal) return address.address;
  }
  throw new Error('this machine has no non-loopback IPv4 address for the data plane: pass --data-plane-host, or set comm.dataPlane "nats"');
}
