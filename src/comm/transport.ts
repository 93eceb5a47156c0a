/**
 * Implements: the byte-moving interface every messaging layer sits on (nats.js' `Transport` idea):
 * subject-addressed publish/subscribe and request/reply of raw payloads no larger than `maxPayload`.
 * Two implementations: NATS (nats-transport.ts) and in-process (local-transport.ts, for tests and
 * single-process debugging). Encoding, chunking and validation live above it (bus.ts).
 */

export interface IncomingMessage {
  subject: string;
  data: Uint8Array;
  /** Present when the sender expects an answer (request/reply). */
  reply?: string;
}

export interface Subscription {
  unsubscribe(): void;
}

/**
 * The link to the messaging server went down (`disconnect`: whatever was in flight, either way, may be
 * lost) or came back (`reconnect`, to `server`, which may be another server of the cluster).
 */
export interface ConnectionEvent {
  type: 'disconnect' | 'reconnect';
  server: string;
}

export interface Transport {
  /** Largest payload one publish may carry (the NATS server's max_payload; 1 MiB by default). */
  readonly maxPayload: number;
  publish(subject: string, data: Uint8Array, reply?: string): void;
  /** Subject may use NATS wildcards (`*` one token, `>` the rest). Handlers run in arrival order. */
  subscribe(subject: string, handler: (message: IncomingMessage) => void): Subscription;
  /** One answer or a TransportTimeoutError naming the subject after `timeoutMs`. */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Resolves when everything published so far has reached the server (no-op in process). */
  flush(): Promise<void>;
  /**
   * Hands back the data of a delivered message once nothing refers to it, its decoded values included;
   * the transport may collect a later message in that memory. Optional: a transport without it lets go.
   */
  recycle?(data: Uint8Array): void;
  /** Calls `listener` on every disconnect and reconnect (never in process: that link cannot drop). */
  onConnectionChange(listener: (event: ConnectionEvent) => void): Subscription;
  close(): Promise<void>;
}

export class TransportTimeoutError extends Error {
  override name = 'TransportTimeoutError';
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
  ) {
    super(`no answer on ${subject} within ${timeoutMs} ms: is the receiving rank alive and subscribed?`);
  }
}

/** Whether a concrete subject matches a subscription pattern with NATS wildcards. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const want = pattern.split('.');
  const have = subject.split('.');
  for (let i = 0; i < want.length; i++) {
    if (want[i] === '>') return have.length > i;
    if (i >= have.length) return false;
    if (want[i] !== '*' && want[i] !== have[i]) return false;
  }
  return want.length === have.length;
}
