/**
 * Implements: the subject namespace of the bus. Every subject of a job lives under `gh.<jobId>.`, so two
 * jobs sharing one NATS server never see each other's traffic; relative subjects are checked here once
 * so a typo fails at the call site instead of silently matching nothing.
 */

export const SUBJECT_ROOT = 'gh';

const JOB_ID_PATTERN = /^[A-Za-z0-9_-]+$/;
/** A NATS token: no whitespace, no separator, no wildcard characters inside a literal token. */
const LITERAL_TOKEN_PATTERN = /^[^\s.*>]+$/;

export function isJobId(text: string): boolean {
  return JOB_ID_PATTERN.test(text);
}

/** Returns the job id when it is usable inside a subject, else throws naming it. */
export function checkJobId(jobId: string): string {
  if (typeof jobId !== 'string' || !isJobId(jobId)) {
    throw new Error(
      `job id ${JSON.stringify(jobId)} is not usable in a NATS subject: use only letters, digits, '_' and '-'`,
    );
  }
  return jobId;
}

/**
 * Checks a dot-separated subject: non-empty tokens without whitespace; with `allowWildcards`, a token may
 * be `*` (one token) and the last one `>` (the rest), as in NATS subscriptions.
 */
export function checkRelativeSubject(relative: string, allowWildcards: boolean): string {
  if (typeof relative !== 'string' || relative.length === 0) {
    throw new Error(`subject ${JSON.stringify(relative)} is empty: pass a dot-separated subject such as 'control.0'`);
  }
  const tokens = relative.split('.');
  tokens.forEach((token, index) => {
    const isWildcard = token === '*' || (token === '>' && index === tokens.length - 1);
    if (isWildcard && allowWildcards) return;
    if (!LITERAL_TOKEN_PATTERN.test(token)) {
      const why = isWildcard
        ? 'wildcards are allowed only when subscribing'
        : token === '>'
          ? "'>' may only be the last token"
          : 'tokens must be non-empty, without whitespace, dots or wildcard characters';
      throw new Error(`subject ${JSON.stringify(relative)} has a bad token ${JSON.stringify(token)} at position ${index}: ${why}`);
    }
  });
  return relative;
}

/** The full subject of a job-relative one: `gh.<jobId>.<relative>`. */
export function jobSubject(jobId: string, relative: string, allowWildcards = false): string {
  return `${SUBJECT_ROOT}.${checkJobId(jobId)}.${checkRelativeSubject(relative, allowWildcards)}`;
}
