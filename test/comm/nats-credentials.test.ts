// Tests: where a NATS login comes from (options, a URL's userinfo, the `nats` CLI's variables) and in
// which order, how it reaches workers (their environment), masked URLs, and errors that name where a
// secret came from but never the secret; and the transport logging in with a URL's token.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { maskNatsUrl, natsCredentialVariables, resolveNatsCredentials, splitUrlCredentials } from '../../src/comm/nats-credentials.ts';
import { startNatsServer } from '../../src/comm/nats-server.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';

const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-creds-'));
const file = (name: string, text: string) => {
  const path = join(folder, name);
  writeFileSync(path, text);
  return path;
};
const NO_ENV = {};

test('nats credentials - a URL\'s userinfo is a token or a user and password, percent-decoded, and leaves the URL', () => {
  assert.deepEqual(splitUrlCredentials(['nats://s3cret@h:4222']), { servers: ['nats://h:4222'], credentials: { token: 's3cret' } });
  assert.deepEqual(splitUrlCredentials(['nats://rank:p%40ss@h:1', 'tls://rank:p%40ss@g:2']), {
    servers: ['nats://h:1', 'tls://g:2'],
    credentials: { user: 'rank', pass: 'p@ss' },
  });
  assert.deepEqual(splitUrlCredentials(['tok@h:1']), { servers: ['h:1'], credentials: { token: 'tok' } });
  assert.deepEqual(splitUrlCredentials(['nats://h:1', 'h:2']), { servers: ['nats://h:1', 'h:2'], credentials: {} });
  for (const servers of [['nats://a@h:1', 'nats://b@g:2'], ['nats://a@h:1', 'nats://g:2']]) {
    assert.throws(
      () => splitUrlCredentials(servers),
      (error: Error) => /NATS URLs carry different credentials|some NATS URLs carry credentials/.test(error.message) && !/\ba@/.test(error.message),
    );
  }
});

test('nats credentials - masking shows *** for every URL\'s userinfo and leaves other URLs alone', () => {
  assert.equal(maskNatsUrl('nats://tok@h:4222,nats://u:p@g:1,nats://k:2'), 'nats://***@h:4222,nats://***@g:1,nats://k:2');
  assert.equal(maskNatsUrl('tok@h:1'), '***@h:1');
  assert.equal(maskNatsUrl('nats://u:p@ss@h:1'), 'nats://***@h:1');
});

test('nats credentials - options win over the URL, the URL over the environment; TLS files come from options or variables', () => {
  const tokenFile = file('token', 'from-file\n');
  const ca = file('ca.pem', 'x');
  const env = { NATS_TOKEN: 'from-env', NATS_CA: ca, NATS_CERT: file('cert.pem', 'x'), NATS_KEY: file('key.pem', 'x') };
  const fromUrl = { user: 'u', pass: 'p' };

  const fromOptions = resolveNatsCredentials({ tokenFile }, fromUrl, env);
  assert.equal(fromOptions.credentials.token, 'from-file', 'the trailing line break is not part of the token');
  assert.equal(fromOptions.credentials.user, undefined);
  assert.deepEqual(fromOptions.credentials.tls, { caFile: ca, certFile: env.NATS_CERT, keyFile: env.NATS_KEY });
  assert.equal(fromOptions.description, 'a token from options, TLS with a CA and a client certificate');

  assert.deepEqual(resolveNatsCredentials({}, fromUrl, { NATS_TOKEN: 'from-env' }), { credentials: fromUrl, description: 'a user and password from the URL' });
  assert.deepEqual(resolveNatsCredentials({}, {}, { NATS_TOKEN: 'from-env' }), { credentials: { token: 'from-env' }, description: 'a token from the environment' });
  assert.deepEqual(resolveNatsCredentials({ user: 'rank' }, {}, { NATS_PASSWORD: 'pw', NATS_TOKEN: 'ignored' }).credentials, { user: 'rank', pass: 'pw' });
  assert.deepEqual(resolveNatsCredentials({}, {}, { NATS_TOKEN: '' }), { credentials: {}, description: 'no login' });
});

test('nats credentials - what the launcher sets for its workers reads back the same, and drops inherited variables it did not choose', () => {
  const credentials = { user: 'rank', pass: 'pw', tls: { caFile: file('ca2.pem', 'x') } };
  const variables = natsCredentialVariables(credentials);
  assert.equal(variables.NATS_TOKEN, undefined);
  assert.ok('NATS_TOKEN' in variables, 'an inherited NATS_TOKEN must be overridden (spawn drops undefined)');
  const workerEnv = { ...{ NATS_TOKEN: 'inherited' }, ...variables };
  const defined = Object.fromEntries(Object.entries(workerEnv).filter(([, value]) => value !== undefined));
  assert.deepEqual(resolveNatsCredentials({}, {}, defined).credentials, credentials);
});

test('nats credentials - bad combinations and unreadable files are refused naming the option or variable, never the secret', () => {
  const refused = (run: () => unknown, pattern: RegExp) =>
    assert.throws(run, (error: Error) => pattern.test(error.message) && !error.message.includes('topsecret'), pattern.source);
  refused(() => resolveNatsCredentials({ tokenFile: join(folder, 'missing') }, {}, NO_ENV), /--nats-token-file .*missing: cannot read it \(ENOENT\)/);
  refused(() => resolveNatsCredentials({ tokenFile: file('empty', '\n') }, {}, NO_ENV), /--nats-token-file .*empty is empty/);
  refused(() => resolveNatsCredentials({ user: 'rank' }, {}, NO_ENV), /--nats-user needs a password: --nats-password-file FILE or \$NATS_PASSWORD/);
  refused(() => resolveNatsCredentials({ passwordFile: file('pw', 'topsecret') }, {}, NO_ENV), /--nats-password-file goes with --nats-user USER/);
  refused(() => resolveNatsCredentials({}, {}, { NATS_USER: 'rank' }), /\$NATS_USER needs \$NATS_PASSWORD/);
  refused(() => resolveNatsCredentials({}, {}, { NATS_TOKEN: 'topsecret', NATS_USER: 'u', NATS_PASSWORD: 'topsecret' }), /NATS login from the environment: a token and a user and password; give one way to log in/);
  refused(() => resolveNatsCredentials({ tlsCert: file('c.pem', 'x') }, {}, NO_ENV), /needs its key .* --nats-tls-cert and --nats-tls-key/);
  refused(() => resolveNatsCredentials({}, {}, { NATS_CREDS: join(folder, 'no.creds') }), /\$NATS_CREDS .*no\.creds: cannot read it/);
});

test('nats credentials - the transport logs in with the token of a URL and names no secret when refused', async () => {
  const server = await startNatsServer({ extraConfig: 'authorization { token: "topsecret" }' });
  try {
    const withToken = server.url.replace('nats://', 'nats://topsecret@');
    const transport = await connectNats({ url: withToken, timeoutMs: 2000, log: () => {} });
    assert.equal(transport.server.includes('topsecret'), false);
    await transport.close();
    const wrong = server.url.replace('nats://', 'nats://guess@');
    await assert.rejects(connectNats({ url: wrong, timeoutMs: 2000, log: () => {} }), (error: Error) => {
      assert.match(error.message, /Authorization Violation\. The server refused our credentials: check the token, user\/password or credentials file\. To gpt-hybrid train and ctl, pass them with --nats-token-file/);
      assert.equal(error.message.includes('guess'), false, error.message);
      return true;
    });
    await assert.rejects(connectNats({ url: server.url, timeoutMs: 2000, log: () => {} }), /credentials file \(none was given\)\./);
  } finally {
    await server.stop();
  }
});
