/**
 * Two "machines" on this one: network namespaces joined by a veth pair, each with its own address, a
 * NATS server of its own (the two clustered over the veth) and the processes a test starts in it with
 * `exec`. Needs root (`ip netns`), as the tests and CI run. Everything is removed by `close`, the
 * processes in the namespaces included.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PRIVATE_SERVER_MAX_PAYLOAD } from '../../src/comm/nats-server.ts';

export interface Machine {
  namespace: string;
  address: string;
  natsUrl: string;
  /** The NATS server of this machine (SIGKILL it to lose it). */
  nats: ChildProcess;
  /** `command` with `args` run inside the namespace. */
  spawnIn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** The server's /varz counters, read from inside the namespace. */
  natsCounters(): { inBytes: number; outBytes: number };
}

export interface MachinePair {
  machines: [Machine, Machine];
  close(): void;
}

const NATS_PORT = 4222;
const CLUSTER_PORT = 6222;
const MONITOR_PORT = 8222;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Reads `url` from inside `namespace` (node's fetch in a child there): the test process is outside it. */
function fetchIn(namespace: string, url: string): string {
  return execFileSync('ip', ['netns', 'exec', namespace, process.execPath, '-e', `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(3))`], {
    encoding: 'utf8',
    timeout: 10_000,
  });
}

export async function machinePair(): Promise<MachinePair> {
  const tag = `gh${process.pid % 100000}`;
  const subnet = `10.${200 + (process.pid % 50)}.${Math.floor(process.pid / 50) % 250}`;
  const namespaces = [`${tag}a`, `${tag}b`] as const;
  const addresses = [`${subnet}.1`, `${subnet}.2`] as const;
  const children: ChildProcess[] = [];
  const close = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const namespace of namespaces) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', namespace], { encoding: 'utf8' }).split('\n').filter((pid) => pid.trim() !== '');
        for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // Gone already.
      }
      try {
        ip('netns', 'del', namespace);
      } catch {
        // Never made.
      }
    }
  };
  try {
    for (const namespace of namespaces) ip('netns', 'add', namespace);
  } catch (error) {
    close();
    throw new Error(`cannot make network namespaces (ip netns add needs root): ${error instanceof Error ? error.message : String(error)}`);
  }
  try {
    ip('link', 'add', `${tag}x`, 'type', 'veth', 'peer', 'name', `${tag}y`);
    ip('link', 'set', `${tag}x`, 'netns', namespaces[0]);
    ip('link', 'set', `${tag}y`, 'netns', namespaces[1]);
    for (const [i, device] of [`${tag}x`, `${tag}y`].entries()) {
      ip('-n', namespaces[i]!, 'addr', 'add', `${addresses[i]}/24`, 'dev', device);
      ip('-n', namespaces[i]!, 'link', 'set', device, 'up');
      ip('-n', namespaces[i]!, 'link', 'set', 'lo', 'up');
    }
    const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-netns-'));
    const machines = namespaces.map((namespace, i): Machine => {
      const address = addresses[i]!;
      const other = addresses[1 - i]!;
      const config = join(folder, `nats-${i}.conf`);
      writeFileSync(
        config,
        [
          `listen: ${address}:${NATS_PORT}`,
          `max_payload: ${PRIVATE_SERVER_MAX_PAYLOAD}`,
          `http: ${address}:${MONITOR_PORT}`,
          `cluster { name: gpt-hybrid-two-machines, listen: ${address}:${CLUSTER_PORT}, routes: [nats://${other}:${CLUSTER_PORT}] }`,
        ].join('\n') + '\n',
      );
      const spawnIn = (command: string, args: string[], options: SpawnOptions = {}) => {
        const child = spawn('ip', ['netns', 'exec', namespace, command, ...args], options);
        children.push(child);
        return child;
      };
      const nats = spawnIn('nats-server', ['-c', config], { stdio: 'ignore' });
      return {
        namespace,
        address,
        natsUrl: `nats://${address}:${NATS_PORT}`,
        nats,
        spawnIn,
        natsCounters: () => {
          const varz = JSON.parse(fetchIn(namespace, `http://${address}:${MONITOR_PORT}/varz`)) as { in_bytes: number; out_bytes: number };
          return { inBytes: varz.in_bytes, outBytes: varz.out_bytes };
        },
      };
    }) as [Machine, Machine];
    // The cluster has formed once each server has its route to the other.
    const deadline = Date.now() + 20_000;
    for (const machine of machines) {
      for (;;) {
        let routes = 0;
        try {
          routes = (JSON.parse(fetchIn(machine.namespace, `http://${machine.address}:${MONITOR_PORT}/routez`)) as { num_routes?: number }).num_routes ?? 0;
        } catch {
          // Not listening yet.
        }
        if (routes >= 1) break;
        if (Date.now() > deadline) throw new Error(`the NATS servers of the two namespaces formed no cluster within 20 s (${machine.namespace} has no route)`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    return { machines, close };
  } catch (error) {
    close();
    throw error;
  }
}
