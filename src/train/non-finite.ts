/**
 * Implements: the non-finite policy of a float32 step (config `nonFinite`): a loss or global gradient
 * norm that is NaN or infinite either stops the run with an error naming the step, or skips the update
 * and counts it. Either way the check runs before the optimizer, so the weights, the Adam moments and
 * every checkpoint written afterwards hold only finite updates.
 *
 * Every rank must reach the same decision from the same values: callers pass numbers that are already
 * reduced over the job (the data-parallel mean, the model-parallel norm), as the fp16 path MAX-reduces
 * its overflow flag, so no rank updates while another skips or stops.
 */

export type NonFinitePolicy = 'error' | 'skip';

/** A deterministic training failure: restarting from the last checkpoint would only meet it again. */
export class NonFiniteStepError extends Error {
  override name = 'NonFiniteStepError';
  readonly restartable = false;

  constructor(
    readonly step: number,
    readonly what: string,
  ) {
    super(
      `step ${step}: ${what}; the update was not applied, so the weights (and any checkpoint) stay at step ${step - 1}. ` +
        'Lower optimizer.lr, set optimizer.gradClip, or set nonFinite to "skip" to skip such steps',
    );
  }
}

/** What is not finite, in words ("the loss is NaN and the gradient norm is Infinity"), or undefined. */
export function describeNonFinite(values: { loss?: number; gradNorm?: number }): string | undefined {
  const parts: string[] = [];
  if (values.loss !== undefined && !Number.isFinite(values.loss)) parts.push(`the loss is ${values.loss}`);
  if (values.gradNorm !== undefined && !Number.isFinite(values.gradNorm)) parts.push(`the gradient norm is ${values.gradNorm}`);
  return parts.length === 0 ? undefined : parts.join(' and ');
}

/** One run's policy and its count of skipped steps. */
export class NonFiniteGuard {
  skipped = 0;
  /** Distinct steps checked (a step may be checked more than once: fp16 checks its loss early). */
  private stepsChecked = 0;
  private lastStep = -1;

  /** `log`: where skipped steps are told (give it to one rank only, so a job says it once). */
  constructor(
    readonly policy: NonFinitePolicy,
    private readonly log?: (line: string) => void,
  ) {}

  /**
   * Checks one step (1-based) before its update: undefined when every value is finite, else the
   * description of what was not, after counting and logging the skip; throws under 'error'.
   */
  check(step: number, values: { loss?: number; gradNorm?: number }): string | undefined {
    if (step !== this.lastStep) this.stepsChecked++;
    this.lastStep = step;
    const what = describeNonFinite(values);
    if (what === undefined) return undefined;
    if (this.policy === 'error') throw new NonFiniteStepError(step, what);
    this.skipped++;
    this.log?.(`step ${step}: ${what}: update skipped (nonFinite = "skip"; ${this.skipped} skipped so far)`);
    return what;
  }

  /** The end-of-run line, when anything was skipped. */
  summary(): string | undefined {
    if (this.skipped === 0) return undefined;
    return `skipped ${this.skipped} of ${this.stepsChecked} step${this.stepsChecked === 1 ? '' : 's'} whose loss or gradient norm was not finite (nonFinite = "skip")`;
  }
}
