/**
 * Implements: a launcher's part in the data plane (comm/data-plane.ts): whether the job's tensors go
 * over direct links (config comm.dataPlane), the key its workers prove themselves with (derived from the
 * job key, which every launcher of the job holds: nothing is handed out), and the address this node's
 * workers listen on.
 */
import { hkdfSync } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { DATA_PLANE_KEY_BYTES } from '../comm/data-plane.ts';
import type { TrainConfig } from '../config/types.ts';

export interface DataPlaneSettings {
  /** The data plane's key, hex. */
  key: string;
  host: string;
}

/**
 * Undefined when the tensors go through NATS. `host`: --data-plane-host; default loopback on one node,
 * else this machine's first non-internal IPv4 address.
 */
export function prepareDataPlane(options: {
  config: TrainConfig;
  nnodes: number;
  jobId: string;
  jobKey: Uint8Array;
  host?: string;
  log: (line: string) => void;
}): DataPlaneSettings | undefined {
  const { config, nnodes, log } = options;
  if (config.comm.dataPlane === 'nats') {
    log('data plane: tensors travel through NATS (comm.dataPlane "nats")');
    return undefined;
  }
  const host = options.host ?? (nnodes === 1 ? '127.0.0.1' : externalAddress());
  log(`data plane: direct TCP links between ranks, listening on ${host} (comm.dataPlane "tcp"; NATS carries control)`);
  return { key: dataPlaneKey(options.jobKey, options.jobId), host };
}

/**
 * The data plane's key: its own (a link's proof is then no bus signature of anything), the same on every
 * node because it derives from the job key, and another for each job id (jobs that share a key file).
 */
export function dataPlaneKey(jobKey: Uint8Array, jobId: string): string {
  return Buffer.from(hkdfSync('sha256', jobKey, new Uint8Array(0), `gpt-hybrid data plane of job ${jobId}`, DATA_PLANE_KEY_BYTES)).toString('hex');
}

function externalAddress(): string {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) if (address.family === 'IPv4' && !address.internal) return address.address;
  }
  throw new Error('this machine has no non-loopback IPv4 address for the data plane: pass --data-plane-host, or set comm.dataPlane "nats"');
}
