/**
 * Implements: asking on the bus until someone answers: a request repeated while nobody listens yet (a
 * peer still starting), until an answer `accept` takes or the deadline; the error names what was asked
 * and the last reason.
 */
import type { Bus } from './bus.ts';
import type { Message } from '../protocol/messages.ts';

export interface RequestUntilOptions<T> {
  /** The value in an answer, or undefined when the answer is not the one asked for. */
  accept: (answer: Message) => T | undefined;
  deadlineMs: number;
  /** How long one request waits for its answer, and the pause after a failed one. */
  attemptMs: number;
  pauseMs: number;
  /** What was asked, for the error: "rank 3 announced no data plane address". */
  failure: string;
}

export async function requestUntil<T>(bus: Bus, subject: string, message: Message, options: RequestUntilOptions<T>): Promise<T> {
  const deadline = Date.now() + options.deadlineMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const answer = await bus.request(subject, message, options.attemptMs);
      const value = options.accept(answer);
      if (value !== undefined) return value;
      last = `an answer of kind ${answer.kind}`;
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
      await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
    }
  }
  throw new Error(`${options.failure} within ${options.deadlineMs / 1000} s (${last})`);
}
