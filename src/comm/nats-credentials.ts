/**
 * Implements: what a NATS client logs in with (a token, a user and password, or a credentials file,
 * plus TLS files), gathered from command-line options, a URL's userinfo and the environment variables
 * the `nats` CLI reads; their hand-over to worker processes through the environment (never argv); and
 * URLs with their userinfo masked for printing. Secrets never enter an error message or a log line:
 * those name where a secret came from, not what it is.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export interface NatsCredentials {
  token?: string;
  user?: string;
  pass?: string;
  /** A NATS credentials file (JWT + nkey seed). */
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}

/**
 * The command line's credential options. Secrets come only from files (or the environment, or the
 * URL): a token or password given as an option's value would show in `ps` on every machine.
 */
export interface NatsCredentialFlags {
  tokenFile?: string;
  user?: string;
  passwordFile?: string;
  creds?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The `nats` CLI's names, read by `train` and `ctl` and set by the launcher for its workers. */
export const NATS_CREDENTIAL_VARIABLES = {
  token: 'NATS_TOKEN',
  user: 'NATS_USER',
  pass: 'NATS_PASSWORD',
  credsFile: 'NATS_CREDS',
  caFile: 'NATS_CA',
  certFile: 'NATS_CERT',
  keyFile: 'NATS_KEY',
} as const;

export const NATS_CREDENTIALS_HELP =
  'pass them with --nats-token-file FILE or $NATS_TOKEN, --nats-user USER with --nats-password-file FILE or $NATS_PASSWORD, ' +
  '--nats-creds FILE or $NATS_CREDS, or in the URL (nats://TOKEN@host:4222, nats://USER:PASSWORD@host:4222)';

const VAR = NATS_CREDENTIAL_VARIABLES;

/** Whether `credentials` name a way to log in (TLS files alone do not). */
export function hasLogin(credentials: NatsCredentials): boolean {
  return credentials.token !== undefined || credentials.user !== undefined || credentials.credsFile !== undefined;
}

/** Where `scheme://userinfo@host` has its userinfo: [start, end) of it, or undefined. */
function userinfoSpan(server: string): [number, number] | undefined {
  const start = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(server)?.[0].length ?? 0;
  // The last @ before the host: an unencoded @ in a password stays in the userinfo.
  const slash = server.indexOf('/', start);
  const at = server.lastIndexOf('@', slash === -1 ? server.length : slash);
  return at < start ? undefined : [start, at];
}

/** `text` (one URL, or several separated by commas) with every URL's userinfo shown as `***`. */
export function maskNatsUrl(text: string): string {
  return text
    .split(',')
    .map((server) => {
      const span = userinfoSpan(server);
      return span === undefined ? server : `${server.slice(0, span[0])}***${server.slice(span[1])}`;
    })
    .join(',');
}

/**
 * The servers without their userinfo, and the login that userinfo gave (`TOKEN@` or `USER:PASSWORD@`,
 * percent-decoded), which the NATS client would otherwise ignore. Every server must give the same one
 * (or none): the client logs in to all of them alike.
 */
export function splitUrlCredentials(servers: readonly string[]): { servers: string[]; credentials: NatsCredentials } {
  let credentials: NatsCredentials = {};
  let first: string | undefined;
  const bare = servers.map((server) => {
    const span = userinfoSpan(server);
    if (span === undefined) return server;
    const userinfo = server.slice(span[0], span[1]);
    if (first !== undefined && userinfo !== first) {
      throw new Error(`the NATS URLs carry different credentials (${maskNatsUrl(servers.join(','))}): give them once, with options or variables (${NATS_CREDENTIALS_HELP})`);
    }
    first = userinfo;
    const colon = userinfo.indexOf(':');
    const decode = (part: string) => {
      try {
        return decodeURIComponent(part);
      } catch {
        throw new Error(`the credentials in the NATS URL ${maskNatsUrl(server)} are not valid percent-encoding: encode reserved characters (%40 for @)`);
      }
    };
    if (userinfo !== '') credentials = colon === -1 ? { token: decode(userinfo) } : { user: decode(userinfo.slice(0, colon)), pass: decode(userinfo.slice(colon + 1)) };
    return server.slice(0, span[0]) + server.slice(span[1] + 1);
  });
  if (servers.some((server) => userinfoSpan(server) === undefined) && first !== undefined) {
    throw new Error(`some NATS URLs carry credentials and others do not (${maskNatsUrl(servers.join(','))}): give them once, with options or variables (${NATS_CREDENTIALS_HELP})`);
  }
  return { servers: bare, credentials };
}

/**
 * The credentials to log in with and a description safe to print. The login (token, user and password,
 * or credentials file) comes from the first source that gives one: the options, then the URL's
 * userinfo, then the environment; each TLS file from its option, else its variable. Files are checked
 * (readable) here, so a wrong path fails before anything starts.
 */
export function resolveNatsCredentials(
  flags: NatsCredentialFlags,
  fromUrl: NatsCredentials,
  env: NodeJS.ProcessEnv = process.env,
): { credentials: NatsCredentials; description: string } {
  const variable = (name: string) => (env[name] === '' ? undefined : env[name]);
  if (flags.passwordFile !== undefined && flags.user === undefined) throw new Error('--nats-password-file goes with --nats-user USER');
  const logins: { source: string; login: NatsCredentials }[] = [
    {
      source: 'options',
      login: {
        ...(flags.tokenFile === undefined ? {} : { token: readSecret(flags.tokenFile, '--nats-token-file') }),
        ...(flags.user === undefined
          ? {}
          : {
              user: flags.user,
              pass:
                flags.passwordFile !== undefined
                  ? readSecret(flags.passwordFile, '--nats-password-file')
                  : (variable(VAR.pass) ?? missing(`--nats-user needs a password: --nats-password-file FILE or $${VAR.pass}`)),
            }),
        ...(flags.creds === undefined ? {} : { credsFile: checkedFile(flags.creds, '--nats-creds') }),
      },
    },
    { source: 'the URL', login: fromUrl },
    {
      source: 'the environment',
      login: {
        ...(variable(VAR.token) === undefined ? {} : { token: variable(VAR.token) }),
        ...(variable(VAR.user) === undefined ? {} : { user: variable(VAR.user), pass: variable(VAR.pass) ?? missing(`$${VAR.user} needs $${VAR.pass}`) }),
        ...(variable(VAR.credsFile) === undefined ? {} : { credsFile: checkedFile(variable(VAR.credsFile)!, `$${VAR.credsFile}`) }),
      },
    },
  ];
  const chosen = logins.find(({ login }) => hasLogin(login));
  const credentials: NatsCredentials = { ...chosen?.login };
  if (chosen !== undefined) {
    const kinds = [credentials.token && 'a token', credentials.user !== undefined && 'a user and password', credentials.credsFile && 'a credentials file'].filter(Boolean);
    if (kinds.length > 1) throw new Error(`NATS login from ${chosen.source}: ${kinds.join(' and ')}; give one way to log in, not several`);
  }
  const tlsFile = (flag: string | undefined, flagName: string, name: string) =>
    flag !== undefined ? checkedFile(flag, flagName) : variable(name) === undefined ? undefined : checkedFile(variable(name)!, `$${name}`);
  const tls = {
    caFile: tlsFile(flags.tlsCa, '--nats-tls-ca', VAR.caFile),
    certFile: tlsFile(flags.tlsCert, '--nats-tls-cert', VAR.certFile),
    keyFile: tlsFile(flags.tlsKey, '--nats-tls-key', VAR.keyFile),
  };
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new Error(`a TLS client certificate needs its key and the key its certificate: give both --nats-tls-cert and --nats-tls-key (or $${VAR.certFile} and $${VAR.keyFile})`);
  }
  const tlsParts = Object.entries(tls).filter(([, file]) => file !== undefined);
  if (tlsParts.length > 0) credentials.tls = Object.fromEntries(tlsParts);
  const login =
    chosen === undefined
      ? 'no login'
      : `${credentials.token !== undefined ? 'a token' : credentials.user !== undefined ? 'a user and password' : 'a credentials file'} from ${chosen.source}`;
  const tlsText = tlsParts.length === 0 ? '' : `, TLS with ${[tls.caFile && 'a CA', tls.certFile && 'a client certificate'].filter(Boolean).join(' and ')}`;
  return { credentials, description: login + tlsText };
}

/**
 * The workers' environment variables for `credentials`: every variable is named, those not in use as
 * undefined, so an inherited one the launcher did not choose is dropped (spawn skips undefined).
 */
export function natsCredentialVariables(credentials: NatsCredentials): Record<string, string | undefined> {
  return {
    [VAR.token]: credentials.token,
    [VAR.user]: credentials.user,
    [VAR.pass]: credentials.pass,
    [VAR.credsFile]: credentials.credsFile,
    [VAR.caFile]: credentials.tls?.caFile,
    [VAR.certFile]: credentials.tls?.certFile,
    [VAR.keyFile]: credentials.tls?.keyFile,
  };
}

function missing(problem: string): never {
  throw new Error(problem);
}

/** The file's absolute path (workers and threads may resolve it elsewhere), once it is known readable. */
function checkedFile(path: string, what: string): string {
  const absolute = resolve(path);
  try {
    accessSync(absolute, constants.R_OK);
  } catch (error) {
    throw new Error(`${what} ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  return absolute;
}

/** A secret kept in a file, without the line break editors add. */
function readSecret(path: string, what: string): string {
  const secret = readFileSync(checkedFile(path, what), 'utf8').replace(/[\r\n]+$/, '');
  if (secret === '') throw new Error(`${what} ${path} is empty`);
  return secret;
}

/**
 * When this process's command line holds a URL's userinfo (`--nats nats://TOKEN@host`), shows it masked
 * in `ps` from now on; the client never sees it there (the login is taken out of the URL).
 */
export function maskProcessTitle(): void {
  const argv = [process.argv[0]!, ...process.execArgv, ...process.argv.slice(1)];
  const masked = argv.map((arg) => (arg.includes('@') ? maskNatsUrl(arg) : arg));
  if (masked.some((arg, i) => arg !== argv[i])) process.title = masked.join(' ');
}
