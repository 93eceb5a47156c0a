// Tests: the NATS login and TLS options of train and ctl on the command line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseCommandLine } from '../../src/cli/args.ts';
import type { CtlCommand } from '../../src/cli/ctl-args.ts';
import type { TrainCommand } from '../../src/cli/train-args.ts';

const TLS = ['--nats-tls-ca', 'ca.pem', '--nats-tls-cert', 'c.pem', '--nats-tls-key', 'k.pem'];

test('nats credential options - train and ctl take the same ones; absent when none is given', () => {
  const train = parseCommandLine(['train', 'c.json', '--nats-user', 'rank', '--nats-password-file', 'pw', ...TLS]) as TrainCommand;
  assert.deepEqual(train.natsCredentials, { user: 'rank', passwordFile: 'pw', tlsCa: 'ca.pem', tlsCert: 'c.pem', tlsKey: 'k.pem' });
  const ctl = parseCommandLine(['ctl', 'runs/a', 'status', '--nats-token-file', 't', '--nats-creds', 'x.creds']) as CtlCommand;
  assert.deepEqual(ctl.natsCredentials, { tokenFile: 't', creds: 'x.creds' });
  assert.equal('natsCredentials' in parseCommandLine(['train', 'c.json']), false);
  assert.throws(() => parseCommandLine(['ctl', 'j', 'status', '--nats-token-file', '']), /--nats-token-file needs a file, got an empty string/);
  assert.throws(() => parseCommandLine(['train', 'c.json', '--nats-user=']), /--nats-user needs a user name/);
  // No option takes a secret itself: `ps` would show it.
  for (const args of [['--nats-token', 's3cret'], ['--nats-token=s3cret']]) {
    assert.throws(
      () => parseCommandLine(['train', 'c.json', ...args]),
      (error: Error) => /unknown option --nats-token for train: a secret is not given as an option's value .* use --nats-token-file FILE or \$NATS_TOKEN/.test(error.message) && !error.message.includes('s3cret'),
    );
  }
  assert.throws(() => parseCommandLine(['ctl', 'j', 'status', '--nats-password', 'pw']), /use --nats-password-file FILE or \$NATS_PASSWORD/);
});
