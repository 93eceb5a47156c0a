/**
 * Implements: remote actor references. An actor in one process addresses an actor in another by
 * `ActorAddress {rank, role}`; the message travels over the bus as an ActorMessage on the subject that
 * `actorSubject` gives (`actor.<role>.<rank>`, so `nats sub 'gh.<job>.actor.stage.>'` watches every
 * stage actor), and the receiving process checks the payload with the reader it exposed the actor with
 * and dispatches it to the local nact actor. `ref(address)` wraps a remote address in a local nact actor, so code that
 * dispatches to a Ref does not care where the actor lives. Replies ride in the payload (a reply address),
 * as in nact's own idiom: there is no hidden sender.
 */
import { dispatch, spawnStateless, stop, type ActorSystemRef, type Ref } from 'nact';
import type { Bus } from '../comm/bus.ts';
import type { ActorAddress, Message } from '../protocol/messages.ts';
import type { Subscription } from '../comm/transport.ts';

/** One subject token: an actor's role may not add tokens or wildcards to its subject. */
const ROLE_PATTERN = /^[A-Za-z0-9_-]+$/;

/** The one mapping from actor addresses to job-relative subjects: `actor.<role>.<rank>`. */
export function actorSubject(address: ActorAddress): string {
  const rank = address.rank === 'launcher' ? 'launcher' : address.rank;
  if (rank !== 'launcher' && !(Number.isSafeInteger(rank) && rank >= 0)) {
    throw new Error(`actor address rank ${String(address.rank)} must be a non-negative integer or 'launcher'`);
  }
  if (typeof address.role !== 'string' || !ROLE_PATTERN.test(address.role)) {
    throw new Error(
      `actor role ${JSON.stringify(address.role)} cannot be part of a subject: use letters, digits, '_' and '-'`,
    );
  }
  return `actor.${address.role}.${rank}`;
}

export function formatAddress(address: ActorAddress): string {
  return `${address.rank}/${address.role}`;
}

export class RemoteActors {
  private readonly exposed = new Map<string, Subscription>();
  private readonly proxies = new Map<string, Ref<unknown>>();
  /** Messages on an exposed subject that were not an ActorMessage for that address. */
  misrouted = 0;
  /** Actor messages whose payload the exposed actor's reader refused (logged, rate-limited by count). */
  malformed = 0;

  constructor(
    private readonly bus: Bus,
    private readonly system: ActorSystemRef,
    readonly self: { rank: number | 'launcher' },
    private readonly log: (line: string) => void = () => {},
  ) {}

  /**
   * Makes a local actor reachable from every process of the job at `address`: a rank exposes its own
   * actors; the launcher hosts job-level ones (schedulers) at any address. `read` checks a payload
   * (throws naming what is wrong); a refused one is counted and logged, never dispatched.
   */
  expose<T>(address: ActorAddress, actor: Ref<T>, read: (payload: unknown) => T = (payload) => payload as T): Subscription {
    if (this.self.rank !== 'launcher' && address.rank !== this.self.rank) {
      throw new Error(`cannot expose ${formatAddress(address)} from rank ${this.self.rank}: an actor is exposed by the rank it lives in`);
    }
    const subject = actorSubject(address);
    if (this.exposed.has(subject)) throw new Error(`an actor is already exposed at ${formatAddress(address)}`);
    const subscription = this.bus.subscribe(subject, (message: Message) => {
      if (message.kind !== 'actor' || message.to.rank !== address.rank || message.to.role !== address.role) {
        this.misrouted++;
        return;
      }
      let payload: T;
      try {
        payload = read(message.payload);
      } catch (error) {
        if (this.malformed++ < 10) this.log(`dropped a message to ${formatAddress(address)}: ${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      dispatch(actor, payload);
    });
    const handle: Subscription = {
      unsubscribe: () => {
        if (this.exposed.get(subject) !== handle) return;
        this.exposed.delete(subject);
        subscription.unsubscribe();
      },
    };
    this.exposed.set(subject, handle);
    return handle;
  }

  /** Sends `payload` to the actor at `address`, wherever it lives (at most once, like every bus message). */
  tell(address: ActorAddress, payload: unknown, from?: ActorAddress): void {
    const message: Message = from === undefined ? { kind: 'actor', to: address, payload } : { kind: 'actor', to: address, from, payload };
    this.bus.publish(actorSubject(address), message);
  }

  /** A local nact actor that forwards every message it gets to `address` (one per address). */
  ref<T>(address: ActorAddress): Ref<T> {
    const subject = actorSubject(address);
    let proxy = this.proxies.get(subject);
    if (proxy === undefined) {
      const target = { rank: address.rank, role: address.role };
      proxy = spawnStateless(this.system, (payload: unknown) => this.tell(target, payload), `remote-${subject.replaceAll('.', '-')}`);
      this.proxies.set(subject, proxy);
    }
    return proxy as Ref<T>;
  }

  /** Stops exposing and forwarding; the bus and the actor system stay open. */
  close(): void {
    if (this.malformed > 0) this.log(`actors: ignored ${this.malformed} actor message${this.malformed === 1 ? '' : 's'} with a malformed payload`);
    for (const handle of [...this.exposed.values()]) handle.unsubscribe();
    for (const proxy of this.proxies.values()) stop(proxy);
    this.proxies.clear();
  }
}
