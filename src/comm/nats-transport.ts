/**
 * Implements: the Transport over a real NATS server or cluster with the maintained client
 * (`@nats-io/transport-node`). max_payload comes from the server's INFO; the client reconnects on its
 * own for a bounded time, to the same server or another of the list (tried in the order given), so a
 * server restart or a dead cluster member loses in-flight messages (the bus is at-most-once) but not the
 * connection; every disconnect and reconnect is reported to `onConnectionChange` listeners, which is
 * how the runtime learns that messages may have been lost. Handlers run in arrival order from the
 * subscription callback, on the event loop, one message at a time.
 */
import { readFileSync } from 'node:fs';
import {
  AuthorizationError,
  connect,
  credsAuthenticator,
  RequestError,
  TimeoutError,
  NoRespondersError,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import { hasLogin, NATS_CREDENTIALS_HELP, splitUrlCredentials } from './nats-credentials.ts';
import { installPayloadBuffer, recyclePayload } from './nats-payload-buffer.ts';
import { TransportTimeoutError, type ConnectionEvent, type IncomingMessage, type Subscription, type Transport } from './transport.ts';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Reconnect for about 30 s (60 tries, 500 ms apart) before giving the connection up. */
const RECONNECT_WAIT_MS = 500;
const MAX_RECONNECT_ATTEMPTS = 60;

export interface NatsTransportOptions {
  /** One server, or several (a list, or one text with commas): the first is tried first, then the next. */
  url?: string | string[];
  token?: string;
  user?: string;
  pass?: string;
  /** A NATS credentials file (JWT + nkey seed). */
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Connection name shown by the server's monitoring, e.g. `job-x rank 3`. */
  name?: string;
  /** Connection timeout; default 5000 ms. */
  timeoutMs?: number;
  /**
   * How long the client tries to reconnect before giving the connection up; default 60 tries 500 ms
   * apart: about 30 s against a server that refuses, longer against a host that no longer answers
   * (each try then lasts `timeoutMs`).
   */
  reconnect?: { waitMs: number; maxAttempts: number };
  /** Disconnects, reconnects and subscription errors; default stderr. */
  log?: (line: string) => void;
}

/** The servers of `url` (one, a list, or comma-separated), in order; throws on an empty list. */
export function natsServerList(url: string | string[]): string[] {
  const servers = (Array.isArray(url) ? url : [url]).flatMap((item) => item.split(',')).map((item) => item.trim()).filter((item) => item !== '');
  if (servers.length === 0) throw new Error(`no NATS server in ${JSON.stringify(url)}: give a URL such as ${DEFAULT_NATS_URL}, or several separated by commas`);
  return servers;
}

export async function connectNats(options: NatsTransportOptions = {}): Promise<NatsTransport> {
  // Large messages then arrive in one buffer each, not a doubling one (see nats-payload-buffer.ts).
  installPayloadBuffer();
  // The client ignores a URL's userinfo (nats://TOKEN@host): it is the login unless one is given, and
  // the servers go on without it, so it never shows in a message.
  const { servers, credentials: fromUrl } = splitUrlCredentials(natsServerList(options.url ?? DEFAULT_NATS_URL));
  const login = hasLogin(options) ? options : fromUrl;
  const where = servers.join(', ');
  const connectOptions: NodeConnectionOptions = {
    servers,
    // In the order given: the launcher spreads ranks over a cluster by rotating the list per rank.
    noRandomize: true,
    name: options.name,
    timeout: options.timeoutMs ?? 5000,
    waitOnFirstConnect: false,
    reconnect: true,
    reconnectTimeWait: options.reconnect?.waitMs ?? RECONNECT_WAIT_MS,
    maxReconnectAttempts: options.reconnect?.maxAttempts ?? MAX_RECONNECT_ATTEMPTS,
  };
  if (login.token !== undefined) connectOptions.token = login.token;
  if (login.user !== undefined) connectOptions.user = login.user;
  if (login.pass !== undefined) connectOptions.pass = login.pass;
  if (login.credsFile !== undefined) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(login.credsFile);
    } catch (error) {
      throw new Error(`cannot read the NATS credentials file ${login.credsFile}: ${(error as Error).message}`);
    }
    connectOptions.authenticator = credsAuthenticator(creds);
  }
  if (options.tls !== undefined) connectOptions.tls = { ...options.tls };
  let connection: NatsConnection;
  try {
    connection = await connect(connectOptions);
  } catch (error) {
    const cause = error instanceof Error ? error.message : String(error);
    // A TLS server that verifies clients drops one without a certificate mid-handshake: a timeout here.
    const tlsProblem = /certificate|self.signed|ssl|tls/i.test(cause) || (options.tls !== undefined && /timeout/i.test(cause));
    const advice =
      error instanceof AuthorizationError || /authoriz|authenticat/i.test(cause)
        ? `The server refused our credentials: check the token, user/password or credentials file${hasLogin(login) ? '' : ' (none was given)'}. ` +
          `To gpt-hybrid train and ctl, ${NATS_CREDENTIALS_HELP}`
        : tlsProblem
          ? 'The TLS handshake failed: check tls.caFile (--nats-tls-ca or $NATS_CA: the CA that signed the server certificate) and, when the server ' +
            'verifies clients, tls.certFile and tls.keyFile (--nats-tls-cert and --nats-tls-key, or $NATS_CERT and $NATS_KEY)'
          : 'Is a NATS server running? Start one with `nats-server` or pass --nats URL';
    throw new Error(`could not connect to NATS at ${where}: ${cause}. ${advice}`, { cause: error });
  }
  return new NatsTransport(connection, options.log ?? ((line) => process.stderr.write(line + '\n')));
}

export class NatsTransport implements Transport {
  private closing = false;
  private up = true;
  private readonly listeners = new Set<(event: ConnectionEvent) => void>();

  constructor(
    readonly connection: NatsConnection,
    private readonly log: (line: string) => void,
  ) {
    void this.watchStatus();
  }

  get maxPayload(): number {
    return this.connection.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
  }

  /** The server this client is connected to now. */
  get server(): string {
    return this.connection.getServer();
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    this.connection.publish(subject, data, reply === undefined ? undefined : { reply });
  }

  subscribe(subject: string, handler: (message: IncomingMessage) => void): Subscription {
    const subscription = this.connection.subscribe(subject, {
      callback: (error, message) => {
        if (error !== null) {
          this.log(`nats: subscription to ${subject} failed: ${error.message}`);
          return;
        }
        const incoming: IncomingMessage =
          message.reply === undefined || message.reply === ''
            ? { subject: message.subject, data: message.data }
            : { subject: message.subject, data: message.data, reply: message.reply };
        try {
          handler(incoming);
        } catch (thrown) {
          // The client would otherwise swallow it silently; say where it came from.
          this.log(`nats: handler for ${message.subject} threw: ${thrown instanceof Error ? (thrown.stack ?? thrown.message) : String(thrown)}`);
        }
      },
    });
    return { unsubscribe: () => subscription.unsubscribe() };
  }

  recycle(data: Uint8Array): void {
    recyclePayload(data);
  }

  async request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    try {
      const answer = await this.connection.request(subject, data, { timeout: timeoutMs });
      return answer.data;
    } catch (error) {
      if (isNoAnswer(error)) throw new TransportTimeoutError(subject, timeoutMs);
      throw error;
    }
  }

  flush(): Promise<void> {
    // A client that gave up reconnecting has nothing left to deliver.
    if (this.connection.isClosed()) return Promise.resolve();
    return this.untilClosed(this.connection.flush(), () => {
      throw new Error('the NATS connection closed before the flush was answered: what was published since the last flush may be lost');
    });
  }

  /**
   * `work`, or `onClosed()` once the client closes first. nats.js answers a flush (and so a drain) that
   * waits on a lost server only when it dials again: one asked during its last attempt stays pending for
   * good, and a process awaiting it at its end ran out of work and Node ended it (exit 13) without its
   * cleanup.
   */
  private untilClosed<T>(work: Promise<T>, onClosed: () => T): Promise<T> {
    // The loser of the race may still reject later: nobody waits on it then.
    work.catch(() => undefined);
    return Promise.race([work, this.connection.closed().then(onClosed)]);
  }

  /** Whether the link to a server is up now (false between a disconnect and its reconnect). */
  get connected(): boolean {
    return this.up && !this.connection.isClosed();
  }

  onConnectionChange(listener: (event: ConnectionEvent) => void): Subscription {
    this.listeners.add(listener);
    return { unsubscribe: () => this.listeners.delete(listener) };
  }

  /** Resolves true once connected (at once when connected now), false after `timeoutMs` or when the client gave up. */
  async whenConnected(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.connected) {
      if (this.connection.isClosed() || Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return true;
  }

  /** Delivers what is in flight, then closes. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.connection.isClosed()) return;
    try {
      await this.untilClosed(this.connection.drain(), () => undefined);
    } catch {
      await this.connection.close();
    }
  }

  /** Resolves when the connection is closed for good (undefined after close(), the Error after a loss). */
  closed(): Promise<void | Error> {
    return this.connection.closed();
  }

  private async watchStatus(): Promise<void> {
    let downSince = 0;
    for await (const status of this.connection.status()) {
      if (this.closing) continue;
      if (status.type === 'error') this.log(`nats: ${status.error.message}`);
      if (status.type !== 'disconnect' && status.type !== 'reconnect') continue;
      if (status.type === 'disconnect') {
        downSince = Date.now();
        this.log(`nats: disconnected from ${status.server}; reconnecting`);
      } else {
        this.log(`nats: reconnected to ${status.server} after ${((Date.now() - downSince) / 1000).toFixed(1)} s`);
      }
      this.up = status.type === 'reconnect';
      for (const listener of this.listeners) {
        try {
          listener({ type: status.type, server: status.server });
        } catch (thrown) {
          this.log(`nats: a connection listener threw: ${thrown instanceof Error ? (thrown.stack ?? thrown.message) : String(thrown)}`);
        }
      }
    }
  }
}

function isNoAnswer(error: unknown): boolean {
  if (error instanceof TimeoutError || error instanceof NoRespondersError) return true;
  if (error instanceof RequestError) {
    return error.isNoResponders() || error.cause instanceof TimeoutError || error.cause instanceof NoRespondersError;
  }
  return false;
}
