/**
 * Implements: the supervision policy of the job's actors, what each does when handling a message fails.
 *
 * [Note: every actor survives any message]
 * A message from the bus never reaches an actor's handler unchecked: the bus drops frames without the
 * job's signature, and each exposed actor's reader (RemoteActors.expose) refuses a payload that is not
 * one its handler takes, counting it as malformed. What can still make a handler throw is its own work
 * failing, and the policy depends on what the actor's state is worth afterwards:
 *
 *   actor          lives in        its handler throws                     escalates
 *   coordinator    node 0          logged, counted, state and mailbox     at the 20th failure: the job
 *                  launcher        kept (HandlerFailures)                 fails, exit 1 (never a hang)
 *   scheduler      node 0          logged, counted, state and mailbox     a step whose actions did not
 *   (per replica)  launcher        kept (HandlerFailures)                 all go out: a restart at once
 *   stage          each rank       the actor ends: its step's tensors     always: the rank's step fails,
 *                                  are half updated, so nothing more      the job restarts from its last
 *                                  runs on them                           checkpoint (the worker's fatal)
 *   shared-weight  ranks with a    the failure settles the step's        through its stage actor
 *                  tied weight     reduction, which fails the stage
 *   a rank's root  each rank       nact onCrash: escalateToJob            always: a `fatal` message
 *   compute actor
 *
 * An escalation ends in a restart (restart.max times) or a clean failure with a non-zero exit; the
 * coordinator's watchdog turns a job that stopped stepping for any other reason into the same rollback.
 */
import type { SupervisionActorFunc } from 'nact';
import type { Bus } from '../comm/bus.ts';

export interface HandlerFailureOptions {
  /** Names the actor in its log lines, e.g. `scheduler actor of replica 1`. */
  actor: string;
  log: (line: string) => void;
  /** The failure that escalates (once); omitted: none does. */
  limit?: number;
  /** Called with the failure that reached `limit`. */
  escalate?: (reason: string) => void;
}

/** The failures of an actor that goes on after its handler throws: logged (a flood only sparsely), counted, escalated at a limit. */
export class HandlerFailures {
  count = 0;

  constructor(private readonly options: HandlerFailureOptions) {}

  /** `what` names the message the handler failed on. */
  record(what: string, error: unknown): void {
    this.count++;
    const reason = error instanceof Error ? error.message : String(error);
    const { actor, limit, escalate, log } = this.options;
    // The first ones, then every power of two: a message that fails every time does not flood the log.
    if (this.count <= 3 || (this.count & (this.count - 1)) === 0) {
      log(`${actor}: handling ${what} threw (${this.count} so far; it goes on with its state): ${reason}`);
    }
    if (limit !== undefined && this.count === limit) escalate?.(`the ${actor} failed ${limit} times, last on ${what}: ${reason}`);
  }
}

export interface EscalationOptions {
  bus: Bus;
  rank: number;
  /** The job-relative subject fatal messages go to. */
  subject: string;
  log: (line: string) => void;
  /** Called after the fatal message is sent (the worker ends its process). */
  onFatal: (reason: string) => void;
}

/** A rank's compute actor crashed: it stops, and the job hears a `fatal` message naming the rank. */
export function escalateToJob(options: EscalationOptions): SupervisionActorFunc<any, any, any> {
  return (_message, error, ctx) => {
    const reason = error instanceof Error ? error.message : String(error);
    options.log(`actor crashed: ${reason}`);
    try {
      // An error that says a restart cannot mend it (NonFiniteStepError) keeps the job from retrying.
      const restartable = (error as { restartable?: unknown } | null)?.restartable === false ? { restartable: false } : {};
      options.bus.publish(options.subject, { kind: 'fatal', rank: options.rank, reason, ...restartable });
    } catch (error) {
      // The bus is already gone when the job is shutting down; the crash is logged above.
      options.log(`could not report the crash: ${error instanceof Error ? error.message : String(error)}`);
    }
    options.onFatal(reason);
    return ctx.stop;
  };
}
