/**
 * Implements: an in-process Transport: every LocalTransport made from one LocalNetwork sees the others'
 * messages, like clients of one NATS server. Delivery is asynchronous (a microtask later) and in order,
 * as over a socket, so code that works here does not rely on synchronous delivery.
 */
import { TransportTimeoutError, subjectMatches, type ConnectionEvent, type IncomingMessage, type Subscription, type Transport } from './transport.ts';

interface LocalSubscriber {
  pattern: string;
  handler: (message: IncomingMessage) => void;
  owner: LocalTransport;
}

export class LocalNetwork {
  private readonly subscribers = new Set<LocalSubscriber>();
  private inboxCounter = 0;

  constructor(readonly maxPayload = 1024 * 1024) {}

  connect(): LocalTransport {
    return new LocalTransport(this);
  }

  /** @internal */
  add(subscriber: LocalSubscriber): void {
    this.subscribers.add(subscriber);
  }

  /** @internal */
  remove(subscriber: LocalSubscriber): void {
    this.subscribers.delete(subscriber);
  }

  /** @internal */
  deliver(message: IncomingMessage): void {
    const targets = [...this.subscribers].filter((s) => subjectMatches(s.pattern, message.subject));
    queueMicrotask(() => {
      for (const target of targets) {
        // Each receiver gets its own copy, as over a socket: nobody shares a sender's buffer.
        if (this.subscribers.has(target)) target.handler({ ...message, data: message.data.slice() });
      }
    });
  }

  /** @internal */
  newInbox(): string {
    return `_INBOX.local.${++this.inboxCounter}`;
  }
}

export class LocalTransport implements Transport {
  private readonly own = new Set<LocalSubscriber>();
  private closed = false;

  constructor(private readonly network: LocalNetwork) {}

  get maxPayload(): number {
    return this.network.maxPayload;
  }

  publish(subject: string, data: Uint8Array, reply?: string): void {
    this.checkOpen();
    if (data.byteLength > this.maxPayload) {
      throw new Error(`payload of ${data.byteLength} bytes on ${subject} exceeds max_payload ${this.maxPayload}`);
    }
    this.network.deliver({ subject, data, reply });
  }

  subscribe(subject: string, handler: (message: IncomingMessage) => void): Subscription {
    this.checkOpen();
    const subscriber: LocalSubscriber = { pattern: subject, handler, owner: this };
    this.own.add(subscriber);
    this.network.add(subscriber);
    return {
      unsubscribe: () => {
        this.own.delete(subscriber);
        this.network.remove(subscriber);
      },
    };
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const inbox = this.network.newInbox();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        subscription.unsubscribe();
        reject(new TransportTimeoutError(subject, timeoutMs));
      }, timeoutMs);
      const subscription = this.subscribe(inbox, (message) => {
        clearTimeout(timer);
        subscription.unsubscribe();
        resolve(message.data);
      });
      this.publish(subject, data, inbox);
    });
  }

  async flush(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
  }

  onConnectionChange(_listener: (event: ConnectionEvent) => void): Subscription {
    return { unsubscribe: () => {} };
  }

  async close(): Promise<void> {
    for (const subscriber of this.own) this.network.remove(subscriber);
    this.own.clear();
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('transport is closed');
  }
}
