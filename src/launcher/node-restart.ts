/**
 * Implements: recovery across nodes. Node 0's launcher decides every restart (it hosts the coordinator
 * and finds the checkpoint); the launcher of every other node must stop its workers and start them
 * again from that checkpoint. Core NATS may lose a message, so the order is a request that node 0
 * repeats until each node answers, and a node answers only once its old workers are gone, so none of
 * them can speak to the coordinator of the next attempt.
 */
import type { Bus, ReplyContext } from '../comm/bus.ts';
import type { RestartMessage } from '../protocol/messages.ts';
import { TransportTimeoutError } from '../comm/transport.ts';
import { SUBJECTS } from '../protocol/subjects.ts';

export type RestartOrder = Omit<RestartMessage, 'kind'>;

/** One try of the request; a node still stopping its workers answers a later one. */
const TRY_MS = 5000;
/** Pause before asking again a node whose launcher has no subscription yet (no responders). */
const RETRY_PAUSE_MS = 500;

const subjectOf = (node: number) => `${SUBJECTS.restart}.${node}`;

/** Node 0: orders `nodes` to restart; resolves when all are ready, rejects naming those silent for `timeoutMs`. */
export async function orderRestart(bus: Bus, nodes: number[], order: RestartOrder, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const silent: number[] = [];
  await Promise.all(
    nodes.map(async (node) => {
      while (Date.now() < deadline) {
        const started = Date.now();
        try {
          const answer = await bus.request(subjectOf(node), { kind: 'restart', ...order }, Math.max(1, Math.min(TRY_MS, deadline - started)));
          if (answer.kind === 'restart-ready' && answer.node === node && answer.attempt === order.attempt) return;
        } catch (error) {
          if (!(error instanceof TransportTimeoutError)) throw error;
        }
        // No responders answers at once: do not spin.
        const spent = Date.now() - started;
        if (spent < RETRY_PAUSE_MS) await new Promise((resolve) => setTimeout(resolve, RETRY_PAUSE_MS - spent));
      }
      silent.push(node);
    }),
  );
  if (silent.length > 0) {
    throw new Error(
      `node${silent.length > 1 ? 's' : ''} ${silent.sort((a, b) => a - b).join(', ')} did not answer restart ${order.attempt} within ${timeoutMs / 1000} s: ` +
        'is its launcher still running (same --job-id and NATS server)?',
    );
  }
}

/**
 * Another node: the restart orders for this node, and node 0's final word. `onOrder` is told of a new
 * order at once, so a running attempt whose shutdown message was lost ends now.
 */
export class RestartOrders {
  private pending: { order: RestartOrder; reply: ReplyContext } | undefined;
  private acknowledged = 0;
  private final: string | undefined;
  private wake: () => void = () => {};
  private readonly subscriptions: { unsubscribe(): void }[];

  constructor(
    private readonly bus: Bus,
    private readonly node: number,
    onOrder: (order: RestartOrder) => void,
  ) {
    this.subscriptions = [
      bus.subscribe(subjectOf(node), (message, reply) => {
        if (message.kind !== 'restart') return;
        const { kind: _kind, ...order } = message;
        // Our answer was lost and node 0 asks again: the restart is done already.
        if (order.attempt <= this.acknowledged) return this.answer(reply, order.attempt);
        this.pending = { order, reply };
        onOrder(order);
        this.wake();
      }),
      bus.subscribe(SUBJECTS.shutdown, (message) => {
        if (message.kind !== 'shutdown' || message.restartable === true) return;
        this.final = message.reason;
        this.wake();
      }),
    ];
  }

  /** The next order, or undefined when node 0 ended the job instead or nothing came within `timeoutMs`. */
  async next(timeoutMs: number): Promise<{ order: RestartOrder } | { ended: string }> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending === undefined && this.final === undefined && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (this.pending !== undefined) return { order: this.pending.order };
    return { ended: this.final ?? `node 0 ordered no restart within ${timeoutMs / 1000} s: is its launcher still running?` };
  }

  /** Tells node 0 that this node's old workers are gone (its new ones start now). */
  ready(order: RestartOrder): void {
    const reply = this.pending?.order.attempt === order.attempt ? this.pending.reply : undefined;
    this.acknowledged = Math.max(this.acknowledged, order.attempt);
    this.pending = undefined;
    if (reply !== undefined) this.answer(reply, order.attempt);
  }

  close(): void {
    for (const subscription of this.subscriptions) subscription.unsubscribe();
  }

  private answer(reply: ReplyContext, attempt: number): void {
    this.bus.respond(reply, { kind: 'restart-ready', node: this.node, attempt });
  }
}
