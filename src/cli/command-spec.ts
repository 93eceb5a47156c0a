/**
 * Implements: what every command's command line is made of: the `CommandSpec` each command fills in
 * (options, help, and how parsed values become a command), `UsageError`, the NATS login options
 * train and ctl share, and the small validators the command builders use.
 *
 * Why apart from args.ts: the command files (train-args.ts, ctl-args.ts, ...) need these and args.ts
 * needs the command files; kept in args.ts, the two would import each other.
 */
import { BACKEND_NAMES, type BackendName } from '../backend/names.ts';
import { ConfigError } from '../config/errors.ts';
import { closestMatch } from '../config/suggest.ts';
import { parseOverrides } from '../config/overrides.ts';
import type { NatsCredentialFlags } from '../comm/nats-credentials.ts';

export const PROGRAM = 'gpt-hybrid';

/** A command line that cannot be run: the message says what is wrong, then shows the usage. */
export class UsageError extends Error {
  override name = 'UsageError';
  /** The usage line(s) of the command concerned, also included in the message. */
  readonly usage: string;

  constructor(problem: string, usage: string) {
    super(`${problem}\n\n${usage}`);
    this.usage = usage;
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** The value's placeholder in help: DIR, N, KEY=VALUE. */
  placeholder?: string;
  doc: string;
}

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

/** One command: its help, its options, and `build`, which turns parsed values into the command `C`. */
export interface CommandSpec<C = unknown> {
  summary: string;
  /** What follows `gpt-hybrid <name>` on the usage line. */
  usage: string;
  description: string;
  options: Record<string, OptionSpec>;
  /** Extra help sections after the options. */
  moreHelp?: () => string;
  examples: string[];
  build(values: ParsedValues, positionals: string[], usage: string): C;
}

export const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', doc: 'show this help' };

/**
 * The NATS login and TLS options of train and ctl, after the `nats` CLI's variables. Secrets are given
 * by file (or variable), never as an option's value, which `ps` shows to every user of the machine.
 */
export const NATS_CREDENTIAL_OPTIONS: Record<string, OptionSpec & { field: keyof NatsCredentialFlags }> = {
  'nats-token-file': { type: 'string', placeholder: 'FILE', field: 'tokenFile', doc: 'file holding the NATS token (else $NATS_TOKEN, the token itself)' },
  'nats-user': { type: 'string', placeholder: 'USER', field: 'user', doc: 'NATS user, with --nats-password-file or $NATS_PASSWORD (else $NATS_USER)' },
  'nats-password-file': { type: 'string', placeholder: 'FILE', field: 'passwordFile', doc: "file holding the NATS user's password" },
  'nats-creds': { type: 'string', placeholder: 'FILE', field: 'creds', doc: 'NATS credentials file, JWT and nkey seed (else $NATS_CREDS)' },
  'nats-tls-ca': { type: 'string', placeholder: 'FILE', field: 'tlsCa', doc: "CA that signed the NATS server's certificate (else $NATS_CA)" },
  'nats-tls-cert': { type: 'string', placeholder: 'FILE', field: 'tlsCert', doc: 'TLS client certificate, for a server that verifies clients (else $NATS_CERT)' },
  'nats-tls-key': { type: 'string', placeholder: 'FILE', field: 'tlsKey', doc: "the client certificate's key (else $NATS_KEY)" },
};

/** The NATS credential options given, or undefined when none was. */
export function natsCredentialFlags(values: ParsedValues, usage: string): NatsCredentialFlags | undefined {
  const flags: NatsCredentialFlags = {};
  for (const [name, option] of Object.entries(NATS_CREDENTIAL_OPTIONS)) {
    const value = values[name] as string | undefined;
    if (value === undefined) continue;
    if (value === '') throw new UsageError(`--${name} needs a ${option.placeholder === 'USER' ? 'user name' : 'file'}, got an empty string`, usage);
    flags[option.field] = value;
  }
  return Object.keys(flags).length === 0 ? undefined : flags;
}

/** An option's value as an integer >= `minimum` (1 unless given), or undefined when it was not given. */
export function positiveInteger(value: string | undefined, flag: string, usage: string, minimum = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < minimum) {
    throw new UsageError(`${flag} must be ${minimum === 0 ? 'a non-negative' : 'a positive'} integer, got "${value}"`, usage);
  }
  return n;
}

/** A --backend value: one of the backend names (suggesting the closest), or undefined when not given. */
export function backendOption(value: string | undefined, usage: string): BackendName | undefined {
  if (value === undefined) return undefined;
  if ((BACKEND_NAMES as readonly string[]).includes(value)) return value as BackendName;
  const guess = closestMatch(value, BACKEND_NAMES);
  throw new UsageError(`--backend must be one of ${BACKEND_NAMES.join(', ')}, got "${value}"${guess === undefined ? '' : `; did you mean ${guess}?`}`, usage);
}

/** Malformed --set items are usage errors, reported before any work. */
export function checkOverrides(sets: string[], usage: string): void {
  try {
    parseOverrides(sets);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new UsageError(error.problems.map((p) => `${p.path}: ${p.message}`).join('\n'), usage);
  }
}
