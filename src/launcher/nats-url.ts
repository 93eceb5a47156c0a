/**
 * Implements: where the job's NATS server is: --nats, else $NATS_URL, else the default local one; and,
 * only when neither was given and nothing answers at the default, a private nats-server for this job.
 */
import { DEFAULT_NATS_URL } from '../comm/nats-transport.ts';
import { portAnswers, startNatsServer, type NatsServerHandle } from '../comm/nats-server.ts';

export interface ResolvedNats {
  url: string;
  /** Set when this launcher started the server; stop it when the job ends. */
  privateServer?: NatsServerHandle;
}

export async function resolveNats(explicit: string | undefined, mayStartServer: boolean, log: (line: string) => void): Promise<ResolvedNats> {
  const given = explicit ?? process.env.NATS_URL;
  if (given !== undefined && given !== '') return { url: given };
  const { hostname, port } = new URL(DEFAULT_NATS_URL);
  if (await portAnswers(hostname, Number(port))) return { url: DEFAULT_NATS_URL };
  if (!mayStartServer) {
    throw new Error(`no NATS server answers at ${DEFAULT_NATS_URL}; give every node the job's server with --nats URL`);
  }
  log(`no NATS server answers at ${DEFAULT_NATS_URL}: starting a private nats-server for this job`);
  const server = await startNatsServer();
  log(`private NATS server at ${server.url}`);
  return { url: server.url, privateServer: server };
}
