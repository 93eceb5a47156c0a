/**
 * Implements: what an actor tells an operator about itself (`ctl status` lists one per actor): its
 * kind and rank, its state, how many messages wait in its mailbox and the last action it took. nact
 * keeps no mailbox count, so each actor counts what it was sent and what it has handled.
 */
import type { ActorKind, ActorStatus } from '../protocol/messages.ts';

export type { ActorKind, ActorStatus };

/** A running tally of one actor's mailbox and state, read when a status is asked for. */
export class ActorTally {
  private sent = 0;
  private handled = 0;
  state: string;
  lastAction = '';

  constructor(
    readonly kind: ActorKind,
    readonly rank: number,
    initialState: string,
  ) {
    this.state = initialState;
  }

  /** A message was dispatched to the actor. */
  queued(): void {
    this.sent++;
  }

  /** The actor finished handling a message; `what` names it for the status. */
  done(what?: string): void {
    this.handled++;
    if (what !== undefined) this.lastAction = what;
  }

  status(): ActorStatus {
    return { kind: this.kind, rank: this.rank, state: this.state, mailbox: Math.max(0, this.sent - this.handled), lastAction: this.lastAction };
  }
}
