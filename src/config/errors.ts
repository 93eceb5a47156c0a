/**
 * Implements: ConfigError, the one error a bad configuration produces.
 * Every problem found is collected first and reported together, one per line, so a user fixes a
 * config in one edit instead of one re-run per mistake (Megatron's argument checks work the same way).
 */

/** One thing wrong with a configuration: where (`model.hiddenSize`, or '' for the whole config) and what. */
export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: readonly ConfigProblem[];
  /** The config file the problems were found in, when there was one. */
  readonly source?: string;

  constructor(problems: readonly ConfigProblem[], options: { source?: string; cause?: unknown } = {}) {
    super(formatProblems(problems, options.source), options.cause === undefined ? undefined : { cause: options.cause });
    this.problems = problems;
    if (options.source !== undefined) this.source = options.source;
  }
}

function formatProblems(problems: readonly ConfigProblem[], source: string | undefined): string {
  const where = source === undefined ? 'configuration' : `configuration ${source}`;
  const count = problems.length === 1 ? '1 problem; fix it' : `${problems.length} problems; fix them`;
  const lines = problems.map((p) => (p.path === '' ? `  ${p.message}` : `  ${p.path}: ${p.message}`));
  return [`invalid ${where} (${count} and run again):`, ...lines].join('\n');
}
