/**
 * Implements: where the job's NATS servers are: --nats, else $NATS_URL, else the default local one (a
 * URL, or the URLs of a cluster separated by commas); only when neither was given and nothing answers at
 * the default, a private nats-server for this job; and which server of a cluster each process tries first.
 * Credentials in the URL (nats://TOKEN@host) are taken out of it here, so the URL the job prints, writes
 * to job.json and hands to its workers holds none.
 */
import { randomBytes } from 'node:crypto';
import { splitUrlCredentials, type NatsCredentials } from '../comm/nats-credentials.ts';
import { DEFAULT_NATS_URL, natsServerList } from '../comm/nats-transport.ts';
import { portAnswers, startNatsServer, type NatsServerHandle } from '../comm/nats-server.ts';

/** In the run folder: the login of the private server node 0's launcher started (ctl reads it there). */
export const PRIVATE_SERVER_TOKEN_FILE = 'nats.token';

export interface ResolvedNats {
  /** One URL, or several separated by commas (a cluster), as given less any userinfo. */
  url: string;
  /** The login the URL's userinfo gave, when it had one. */
  urlCredentials?: NatsCredentials;
  /** Set when this launcher started the server; stop it when the job ends. */
  privateServer?: NatsServerHandle;
}

export async function resolveNats(explicit: string | undefined, mayStartServer: boolean, log: (line: string) => void): Promise<ResolvedNats> {
  const given = explicit ?? process.env.NATS_URL;
  if (given !== undefined && given !== '') {
    const { servers, credentials } = splitUrlCredentials(natsServerList(given));
    return { url: servers.join(','), ...(Object.keys(credentials).length === 0 ? {} : { urlCredentials: credentials }) };
  }
  const { hostname, port } = new URL(DEFAULT_NATS_URL);
  if (await portAnswers(hostname, Number(port))) return { url: DEFAULT_NATS_URL };
  if (!mayStartServer) {
    throw new Error(`no NATS server answers at ${DEFAULT_NATS_URL}; give every node the job's server with --nats URL`);
  }
  log(`no NATS server answers at ${DEFAULT_NATS_URL}: starting a private nats-server for this job`);
  // Gone with this launcher, even after SIGKILL: nothing of the job may outlive it. Its login is made
  // here: the job's processes get it like any other (their environment), ctl from the run folder.
  const server = await startNatsServer({ diesWithParent: true, token: randomBytes(24).toString('hex') });
  log(`private NATS server at ${server.url}`);
  return { url: server.url, privateServer: server };
}

/**
 * The servers of `url` in the order process `index` (a rank, or a launcher's node rank) tries them: the
 * list rotated by `index`, so the processes of a job spread over the servers of a cluster (and not all
 * on the first), and each fails over to the others, in order, when its server dies.
 */
export function serversFor(url: string, index: number): string[] {
  const servers = natsServerList(url);
  const shift = index % servers.length;
  return [...servers.slice(shift), ...servers.slice(0, shift)];
}
