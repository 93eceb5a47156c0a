/**
 * Implements: starting a private `nats-server` process on a free loopback port (for the launcher when no
 * server answers, and for tests that must stop, kill or restart a server), a cluster of them with routes
 * between every pair, and probing whether one answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as connectTcp, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServerHandle {
  url: string;
  port: number;
  process: ChildProcess;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its folder. */
  stop(): Promise<void>;
  /** Kills the server at once (SIGKILL: no goodbye to its clients, like a crash) and removes its folder. */
  kill(): Promise<void>;
  /** The login the server wants, when it was started with one. */
  token?: string;
}

export interface StartNatsServerOptions {
  /** Default: a free loopback port. */
  port?: number;
  /** Bytes; default PRIVATE_SERVER_MAX_PAYLOAD (the server's own default is 1 MiB). */
  maxPayload?: number;
  /** How long to wait for the port to answer. */
  timeoutMs?: number;
  /** Extra lines for the server's config file (e.g. `cluster { ... }`). */
  extraConfig?: string;
  /**
   * The server goes away with this process, even when it is killed (SIGKILL leaves no chance to stop
   * it): a launcher's private server. nats-server has no parent-death option, so a shell starts it and
   * waits on a pipe from this process; the pipe closes when this process ends, however it ends.
   */
  diesWithParent?: boolean;
  /** Clients must log in with this token (kept in the server's config file, readable by its owner only, never on its command line). */
  token?: string;
}

/**
 * The guard of a server that dies with its parent: it prints the server's pid, waits for its stdin (the
 * parent's pipe) to close, then stops the server and removes its folder. 127: no nats-server on the PATH.
 */
const PARENT_GUARD = 'command -v nats-server >/dev/null || exit 127; nats-server -c "$1" & server=$!; echo "$server"; cat >/dev/null; kill "$server" 2>/dev/null; wait "$server"; rm -rf "\${1%/*}"';

/**
 * max_payload of the servers started here: 8 MiB, the most NATS advises (above it the server warns),
 * instead of its 1 MiB default, so a tensor up to 8 MB travels as one message, not in chunks that the
 * sender copies out and the receiver copies back in. Measured in the transport bench (4 MB tensors,
 * two processes, 2 cores): the server's CPU per megabyte fell from about 1.7 to 1.1 ms. A job given a
 * server (--nats, or one answering at the default URL) gets that server's max_payload.
 */
export const PRIVATE_SERVER_MAX_PAYLOAD = 8 * 1024 * 1024;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Whether something accepts TCP connections at host:port within `timeoutMs`. */
export function portAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTcp({ host, port });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export async function startNatsServer(options: StartNatsServerOptions = {}): Promise<NatsServerHandle> {
  const port = options.port ?? (await freePort());
  const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-nats-'));
  const configPath = join(folder, 'nats.conf');
  // nats-server 2.9 has no command-line flag for max_payload: it goes in a config file.
  const lines = [`listen: 127.0.0.1:${port}`];
  lines.push(`max_payload: ${options.maxPayload ?? PRIVATE_SERVER_MAX_PAYLOAD}`);
  if (options.extraConfig !== undefined) lines.push(options.extraConfig);
  if (options.token !== undefined) lines.push(`authorization { token: ${JSON.stringify(options.token)} }`);
  writeFileSync(configPath, lines.join('\n') + '\n', { mode: 0o600 });
  const guarded = options.diesWithParent === true;
  const child = guarded
    ? spawn('sh', ['-c', PARENT_GUARD, 'sh', configPath], { stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn('nats-server', ['-c', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  // The guard's pid line: the server itself, to kill at once like a crash.
  let serverPid: number | undefined;
  child.stdout?.on('data', (chunk: Buffer) => {
    serverPid ??= Number.parseInt(chunk.toString(), 10);
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  while (Date.now() < deadline) {
    const failed = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
    if (failed !== undefined) {
      rmSync(folder, { recursive: true, force: true });
      const missing = (failed as NodeJS.ErrnoException).code === 'ENOENT';
      throw new Error(
        missing
          ? 'nats-server is not installed: install it (Debian: apt-get install nats-server) or pass --nats URL of a running server'
          : `could not start nats-server: ${failed.message}`,
      );
    }
    if (child.exitCode === 127 && guarded) {
      rmSync(folder, { recursive: true, force: true });
      throw new Error('nats-server is not installed: install it (Debian: apt-get install nats-server) or pass --nats URL of a running server');
    }
    if (child.exitCode !== null) break;
    if (await portAnswers('127.0.0.1', port, 200)) {
      const removeFolder = () => rmSync(folder, { recursive: true, force: true });
      if (!guarded) {
        return { url: `nats://127.0.0.1:${port}`, port, process: child, stop: () => stopProcess(child).then(removeFolder), kill: () => stopProcess(child, 'SIGKILL').then(removeFolder), ...tokenOf(options) };
      }
      const killServer = () => {
        if (serverPid === undefined) return;
        try {
          process.kill(serverPid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      };
      // Closing the pipe is the guard's signal to stop the server (SIGTERM) and end.
      const stopGuarded = async (signal: NodeJS.Signals) => {
        if (signal === 'SIGKILL') killServer();
        const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.stdin?.end();
        // The guard stops the server and ends; should it not, both are killed.
        const timer = setTimeout(() => {
          killServer();
          child.kill('SIGKILL');
        }, 5000);
        await exited;
        clearTimeout(timer);
        removeFolder();
      };
      return { url: `nats://127.0.0.1:${port}`, port, process: child, stop: () => stopGuarded('SIGTERM'), kill: () => stopGuarded('SIGKILL'), ...tokenOf(options) };
    }
  }
  child.kill('SIGKILL');
  rmSync(folder, { recursive: true, force: true });
  throw new Error(`nats-server did not start on 127.0.0.1:${port}: ${stderr.trim() || 'no output'}`);
}

/**
 * `size` servers on free loopback ports, each with routes to all the others (one cluster), resolved once
 * every server sees a route to every other one, so a message published on any server reaches
 * subscribers on all of them.
 */
export async function startNatsCluster(size: number, options: { timeoutMs?: number } = {}): Promise<NatsServerHandle[]> {
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ cluster: await freePort(), monitor: await freePort() })));
  const servers: NatsServerHandle[] = [];
  try {
    for (const [i, { cluster, monitor }] of ports.entries()) {
      const routes = ports.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p.cluster}`);
      const extraConfig = [
        `http: 127.0.0.1:${monitor}`,
        `cluster { name: gpt-hybrid, listen: 127.0.0.1:${cluster}, routes: [${routes.join(', ')}] }`,
      ].join('\n');
      servers.push(await startNatsServer({ extraConfig, timeoutMs: options.timeoutMs }));
    }
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    for (const { monitor } of ports) {
      for (;;) {
        const routes = await fetch(`http://127.0.0.1:${monitor}/routez`)
          .then((r) => r.json() as Promise<{ num_routes?: number }>)
          .then((body) => body.num_routes ?? 0, () => 0);
        if (routes >= size - 1) break;
        if (Date.now() > deadline) throw new Error(`the NATS cluster did not form: a server has ${routes} of ${size - 1} routes`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    return servers;
  } catch (error) {
    await Promise.all(servers.map((server) => server.stop()));
    throw error;
  }
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}

function tokenOf(options: StartNatsServerOptions): { token?: string } {
  return options.token === undefined ? {} : { token: options.token };
}
