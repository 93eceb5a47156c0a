/**
 * Implements: the supervision policy of a rank's compute actors (nact onCrash): a crash is not
 * swallowed or retried in place; the actor stops and the job hears of it as a `fatal` message naming
 * the rank, so the coordinator stops every rank cleanly (recovery by restart comes with checkpoints).
 */
import type { SupervisionActorFunc } from 'nact';
import type { Bus } from '../comm/bus.ts';

export interface EscalationOptions {
  bus: Bus;
  rank: number;
  /** The job-relative subject fatal messages go to. */
  subject: string;
  log: (line: string) => void;
  /** Called after the fatal message is sent (the worker ends its process). */
  onFatal: (reason: string) => void;
}

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
