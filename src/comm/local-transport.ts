/**
 * Implements: an in-process Transport: every LocalTransport made from one LocalNetwork sees the others'
 * messages, like clients of one NATS server. Delivery is asynchronous (a microtask later) and in order,
 * as over a socket, so code that works here does not rely on synchronous delivery. Whole jobs run on it
 * when simulated in one process, so it also injects faults for tests (`LocalNetwork.injectFault`): a
 * message can be dropped, delivered late, delivered twice or overtaken by the next one, chosen by
 * subject, predicate and count with no randomness, to show that a job detects each. With no fault
 * injected, delivery is the plain path above (one check of an empty list).
 */
import { TransportTimeoutError, subjectMatches, type ConnectionEvent, type IncomingMessage, type Subscription, type Transport } from './transport.ts';

interface LocalSubscriber {
  pattern: string;
  handler: (message: IncomingMessage) => void;
  owner: LocalTransport;
}

/**
 * What an injected fault does to each message it affects. Receivers are chosen when the message is
 * published, as a server routes it on arrival; one that unsubscribes before delivery gets nothing.
 * - `drop`: never delivered, to any receiver.
 * - `delay`: delivered `ms` milliseconds later. It holds nothing else back: later messages, on its own
 *   subject as well as on others, go out as usual and overtake it, so on one subject a delay changes
 *   the order (a message published 1 ms after a 5 ms delay arrives first).
 * - `duplicate`: delivered twice in a row, each time to every receiver, each receiver its own copy.
 * - `reorder`: held back until the next message that matches the rule (its `subject` and `where`; it
 *   need not be one the rule would affect, and it is not counted as one) is published, then delivered
 *   right after that message: a, b become b, a. That next message itself goes on as usual (another
 *   rule may still affect it; the held one follows wherever that message's place in the order was,
 *   so if that message is dropped or delayed the held one goes out at once). With `times` > 1 each
 *   affected message waits for its own next one: a, b, c, d become b, a, d, c. A held message that
 *   no later message releases stays held until the rule is removed.
 */
export type FaultEffect = { kind: 'drop' } | { kind: 'delay'; ms: number } | { kind: 'duplicate' } | { kind: 'reorder' };

/**
 * Which published messages a fault affects. A message matches when its subject matches `subject` and
 * `where` (if given) returns true; the first `skip` matching messages go through untouched, the next
 * `times` are affected, and then the rule is spent and takes itself out. No randomness: the same
 * messages in the same order are always affected the same way. When several rules are injected, a
 * message is offered to them in the order they were injected and the first that affects it is the
 * only one: later rules neither affect nor count it (a held `reorder` is still released by it).
 */
export interface FaultRule {
  /** Subject pattern, NATS wildcards allowed (`*` one token, `>` the rest). */
  subject: string;
  /** Further test of a message whose subject matches. It sees the sender's buffer: it must not modify `data`. */
  where?: (message: IncomingMessage) => boolean;
  /** Matching messages let through before the first one affected (default 0). */
  skip?: number;
  /** Matching messages affected after the skipped ones (default 1; `Infinity` for every one). */
  times?: number;
  effect: FaultEffect;
}

/** A fault in place on a LocalNetwork: how many messages it has affected so far, and how to take it out. */
export interface InjectedFault {
  /** Messages affected so far (dropped, delayed, duplicated or held back); at most the rule's `times`. */
  readonly fired: number;
  /**
   * Takes the rule out: later messages go through untouched. Messages it already delayed still arrive
   * when due; one it holds back (`reorder`) is delivered now, as if published at this point. Idempotent.
   */
  remove(): void;
}

interface HeldMessage {
  message: IncomingMessage;
  targets: LocalSubscriber[];
}

class ActiveFault implements InjectedFault {
  fired = 0;
  skipped = 0;
  held: HeldMessage | undefined;

  constructor(
    readonly rule: FaultRule & { skip: number; times: number },
    private readonly network: LocalNetwork,
  ) {}

  matches(message: IncomingMessage): boolean {
    return subjectMatches(this.rule.subject, message.subject) && (this.rule.where?.(message) ?? true);
  }

  get spent(): boolean {
    return this.fired >= this.rule.times;
  }

  remove(): void {
    this.network.removeFault(this);
  }
}

export class LocalNetwork {
  private readonly subscribers = new Set<LocalSubscriber>();
  private readonly faults: ActiveFault[] = [];
  private inboxCounter = 0;

  constructor(readonly maxPayload = 1024 * 1024) {}

  connect(): LocalTransport {
    return new LocalTransport(this);
  }

  /**
   * Makes the messages `rule` selects be dropped, delayed, duplicated or reordered (see FaultRule and
   * FaultEffect), from the next publish on. For tests: to show that a job notices a lost, late,
   * duplicated or out-of-order message. Replies are messages too: a rule on `_INBOX.>` affects them.
   */
  injectFault(rule: FaultRule): InjectedFault {
    const skip = rule.skip ?? 0;
    const times = rule.times ?? 1;
    if (!Number.isInteger(skip) || skip < 0) throw new Error(`fault rule on ${rule.subject}: skip must be a whole number >= 0, got ${skip}`);
    if (!(Number.isInteger(times) || times === Infinity) || times < 1) {
      throw new Error(`fault rule on ${rule.subject}: times must be a whole number >= 1 or Infinity, got ${times}`);
    }
    const { effect } = rule;
    if (effect.kind === 'delay' && !(Number.isFinite(effect.ms) && effect.ms >= 0)) {
      throw new Error(`fault rule on ${rule.subject}: delay must be a finite number of ms >= 0, got ${effect.ms}`);
    }
    if (!['drop', 'delay', 'duplicate', 'reorder'].includes(effect.kind)) {
      throw new Error(`fault rule on ${rule.subject}: unknown effect ${String((effect as { kind: unknown }).kind)}`);
    }
    const fault = new ActiveFault({ ...rule, skip, times }, this);
    this.faults.push(fault);
    return fault;
  }

  /** @internal */
  removeFault(fault: ActiveFault): void {
    const index = this.faults.indexOf(fault);
    if (index < 0) return;
    this.faults.splice(index, 1);
    if (fault.held) {
      this.send(fault.held.message, fault.held.targets);
      fault.held = undefined;
    }
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
    if (this.faults.length === 0) this.send(message, targets);
    else this.deliverWithFaults(message, targets);
  }

  /** @internal */
  newInbox(): string {
    return `_INBOX.local.${++this.inboxCounter}`;
  }

  private send(message: IncomingMessage, targets: LocalSubscriber[]): void {
    queueMicrotask(() => {
      for (const target of targets) {
        // Each receiver gets its own copy, as over a socket: nobody shares a sender's buffer.
        if (this.subscribers.has(target)) target.handler({ ...message, data: message.data.slice() });
      }
    });
  }

  private deliverWithFaults(message: IncomingMessage, targets: LocalSubscriber[]): void {
    let claimant: ActiveFault | undefined;
    const released: HeldMessage[] = [];
    for (const fault of this.faults.slice()) {
      if (claimant && !fault.held) continue;
      if (!fault.matches(message)) continue;
      if (fault.held) {
        // The next matching message releases the held one; it is not a message this rule affects.
        released.push(fault.held);
        fault.held = undefined;
        if (fault.spent) this.removeFault(fault);
        continue;
      }
      if (fault.skipped < fault.rule.skip) {
        fault.skipped++;
        continue;
      }
      fault.fired++;
      claimant = fault;
      // A spent reorder rule stays until the next matching message releases what it holds.
      if (fault.spent && fault.rule.effect.kind !== 'reorder') this.removeFault(fault);
    }
    const effect = claimant?.rule.effect;
    // Whatever outlives this call is copied now: the sender may reuse its buffer once publish returns.
    const kept = () => ({ ...message, data: message.data.slice() });
    if (effect === undefined) this.send(message, targets);
    else if (effect.kind === 'duplicate') {
      this.send(message, targets);
      this.send(message, targets);
    } else if (effect.kind === 'delay') {
      const late = kept();
      setTimeout(() => this.send(late, targets), effect.ms);
    } else if (effect.kind === 'reorder') claimant!.held = { message: kept(), targets };
    // effect.kind === 'drop': nothing goes out.
    for (const held of released) this.send(held.message, held.targets);
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
