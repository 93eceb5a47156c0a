/**
 * Implements: the Transport over a real NATS server with the maintained client (`@nats-io/transport-node`).
 * max_payload comes from the server's INFO; the client reconnects on its own for a bounded time, so a
 * server restart loses in-flight messages (the bus is at-most-once) but not the connection. Handlers run
 * in arrival order from the subscription callback, on the event loop, one message at a time.
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
import { TransportTimeoutError, type IncomingMessage, type Subscription, type Transport } from './transport.ts';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Reconnect for about 30 s (60 tries, 500 ms apart) before giving the connection up. */
const RECONNECT_WAIT_MS = 500;
const MAX_RECONNECT_ATTEMPTS = 60;

export interface NatsTransportOptions {
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
  /** Disconnects, reconnects and subscription errors; default stderr. */
  log?: (line: string) => void;
}

export async function connectNats(options: NatsTransportOptions = {}): Promise<NatsTransport> {
  const servers = options.url ?? DEFAULT_NATS_URL;
  const where = Array.isArray(servers) ? servers.join(', ') : servers;
  const connectOptions: NodeConnectionOptions = {
    servers,
    name: options.name,
    timeout: options.timeoutMs ?? 5000,
    waitOnFirstConnect: false,
    reconnect: true,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    maxReconnectAttempts: MAX_RECONNECT_ATTEMPTS,
  };
  if (options.token !== undefined) connectOptions.token = options.token;
  if (options.user !== undefined) connectOptions.user = options.user;
  if (options.pass !== undefined) connectOptions.pass = options.pass;
  if (options.credsFile !== undefined) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(options.credsFile);
    } catch (error) {
      throw new Error(`cannot read the NATS credentials file ${options.credsFile}: ${(error as Error).message}`);
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
        ? 'The server refused our credentials: check the token, user/password or credentials file'
        : tlsProblem
          ? 'The TLS handshake failed: check tls.caFile (the CA that signed the server certificate) and, when the server verifies clients, tls.certFile and tls.keyFile'
          : 'Is a NATS server running? Start one with `nats-server` or pass --nats URL';
    throw new Error(`could not connect to NATS at ${where}: ${cause}. ${advice}`, { cause: error });
  }
  return new NatsTransport(connection, options.log ?? ((line) => process.stderr.write(line + '\n')));
}

export class NatsTransport implements Transport {
  private closing = false;

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
    return this.connection.flush();
  }

  /** Delivers what is in flight, then closes. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.connection.isClosed()) return;
    try {
      await this.connection.drain();
    } catch {
      await this.connection.close();
    }
  }

  /** Resolves when the connection is closed for good (undefined after close(), the Error after a loss). */
  closed(): Promise<void | Error> {
    return this.connection.closed();
  }

  private async watchStatus(): Promise<void> {
    for await (const status of this.connection.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error') {
        if (!this.closing) this.log(`nats: ${status.type} ${'server' in status ? String(status.server) : ''}`.trim());
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
