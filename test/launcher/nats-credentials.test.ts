/**
 * End to end over real launcher and worker processes and private nats-servers that want credentials: a
 * data-parallel-2 job logs in with a token given in its URL, and ctl with $NATS_TOKEN; a wrong or missing
 * token ends the job at once saying how to pass one; user, password and mutual TLS reach the workers and
 * ctl too. No secret shows in the output, job.json or a process's command line.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { runCli, startCli, writeTestConfig } from '../support/cli.ts';

const TOKEN = `tok${randomBytes(8).toString('hex')}`;
const PASSWORD = `pw${randomBytes(8).toString('hex')}`;
const config = writeTestConfig();
const dp2 = ['--set', 'batchSize=2', '--set', 'parallel.data=2'];
const folder = mkdtempSync(join(tmpdir(), 'gpt-hybrid-creds-e2e-'));
const read = (path: string) => readFileSync(path, 'utf8');
/** The tests' own environment must not lend the jobs a login. */
const NO_CREDENTIALS = { NATS_URL: '', NATS_TOKEN: '', NATS_USER: '', NATS_PASSWORD: '', NATS_CREDS: '', NATS_CA: '', NATS_CERT: '', NATS_KEY: '' };
const tls = (name: string) => fileURLToPath(new URL(`../comm/fixtures/tls/${name}`, import.meta.url));

async function withServer(extraConfig: string, run: (server: NatsServerHandle) => Promise<void>): Promise<void> {
  const server = await startNatsServer({ extraConfig });
  try {
    await run(server);
  } finally {
    await server.stop();
  }
}

function assertNoSecret(text: string, where: string): void {
  for (const secret of [TOKEN, PASSWORD]) assert.equal(text.includes(secret), false, `a secret shows in ${where}:\n${text}`);
}

/** What `ps` shows for a process (Linux); undefined elsewhere or once it is gone. */
function commandLine(pid: number): string | undefined {
  const file = `/proc/${pid}/cmdline`;
  return existsSync(file) ? read(file).replaceAll('\0', ' ') : undefined;
}

test('nats credentials - a token in the URL: the job trains to exit 0, its processes and files hold no token, ctl logs in with $NATS_TOKEN', async () => {
  await withServer(`authorization { token: "${TOKEN}" }`, async (server) => {
    const out = join(folder, 'token');
    const job = startCli(['train', config, '--out', out, '--steps', '2', ...dp2, '--nats', server.url.replace('nats://', `nats://${TOKEN}@`)], NO_CREDENTIALS);
    const registered = await job.waitFor(/rank 1 registered \(node 0, pid (\d+)/, 60_000);
    for (const pid of [job.child.pid!, Number(registered[1])]) {
      const shown = commandLine(pid);
      if (shown !== undefined) assertNoSecret(shown, `the command line of pid ${pid}`);
    }
    assert.match(commandLine(job.child.pid!) ?? '***@', /\*\*\*@/);
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
    assert.match(job.output(), new RegExp(`NATS ${server.url} \\(a token from the URL\\)`));
    assert.match(job.output(), /warning: the NATS login in --nats stays readable in `ps` in the processes that started this one .* \$NATS_TOKEN .* --nats-token-file FILE instead/);
    assert.match(job.output(), /done after step 2/);
    // Every connection logged in: the workers', and their heartbeat threads'.
    assert.doesNotMatch(job.output(), /could not connect|heartbeat thread failed/);
    assertNoSecret(job.output(), 'the job output');
    const jobFile = read(join(out, 'job.json'));
    assertNoSecret(jobFile, 'job.json');
    assert.equal(JSON.parse(jobFile).nats, server.url);

    // The job is over: its run folder says so without asking the server; asked by its id, a ctl that
    // logs in waits for an answer in vain, and one without the token is refused.
    const ended = await runCli(['ctl', out, 'status'], NO_CREDENTIALS);
    assert.equal(ended.code, 0, ended.output);
    assert.match(ended.output, /^job \S+  ended  exit 0  at \S+  done after step 2  last step 2  loss \d+\.\d{4}  no checkpoint\n/);
    const jobId = JSON.parse(jobFile).jobId as string;
    // The job's key is in the run folder, for its owner only; asked by id, ctl needs it given.
    const keyFile = join(out, 'job.key');
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const keyless = await runCli(['ctl', jobId, 'status', '--nats', server.url], { ...NO_CREDENTIALS, NATS_TOKEN: TOKEN });
    assert.equal(keyless.code, 1);
    assert.match(keyless.output, /no key for job \S+: the job obeys only messages signed with its key, which its launcher keeps in <run-folder>\/job\.key .*--job-key-file FILE or \$GPT_HYBRID_JOB_KEY/);
    const loggedIn = await runCli(['ctl', jobId, 'status', '--timeout', '300', '--nats', server.url, '--job-key-file', keyFile], { ...NO_CREDENTIALS, NATS_TOKEN: TOKEN });
    assert.equal(loggedIn.code, 1);
    assert.match(loggedIn.output, new RegExp(`did not answer within 300 ms at ${server.url}`));
    const refused = await runCli(['ctl', jobId, 'status', '--nats', server.url, '--job-key-file', keyFile], NO_CREDENTIALS);
    assert.equal(refused.code, 1);
    assert.match(refused.output, /The server refused our credentials: .* \(none was given\)\. To gpt-hybrid train and ctl, pass them with --nats-token-file FILE or \$NATS_TOKEN/);
    assertNoSecret(loggedIn.output + refused.output, 'the output of ctl');
  });
});

test('nats credentials - a wrong or a missing token ends the job within seconds, saying the server refused it and how to pass one', async () => {
  await withServer(`authorization { token: "${TOKEN}" }`, async (server) => {
    const wrongFile = join(folder, 'wrong-token');
    writeFileSync(wrongFile, `${PASSWORD}\n`);
    for (const [what, args] of [
      ['wrong', ['--nats-token-file', wrongFile]],
      ['missing', []],
    ] as const) {
      const started = performance.now();
      const { code, output } = await runCli(['train', config, '--out', join(folder, what), ...dp2, '--nats', server.url, ...args], NO_CREDENTIALS, 60_000);
      const seconds = (performance.now() - started) / 1000;
      assert.equal(code, 1, output);
      assert.match(output, new RegExp(`could not connect to NATS at ${server.url}: Authorization Violation\\. The server refused our credentials`));
      assert.match(output, /pass them with --nats-token-file FILE or \$NATS_TOKEN, --nats-user USER with --nats-password-file FILE or \$NATS_PASSWORD/);
      assert.equal(/none was given/.test(output), what === 'missing', output);
      // Refused at the launcher's first connection, before any worker: not after a registration timeout.
      assert.doesNotMatch(output, /registered|\[rank/);
      assert.ok(seconds < 20, `the ${what} token took ${seconds.toFixed(1)} s to fail`);
      assertNoSecret(output, `the output with a ${what} token`);
    }
  });
});

test('nats credentials - user, password and mutual TLS: the workers and ctl log in with the options and $NATS_PASSWORD', async () => {
  const serverConfig = [
    `tls { cert_file: ${JSON.stringify(tls('server.pem'))}, key_file: ${JSON.stringify(tls('server-key.pem'))}, ca_file: ${JSON.stringify(tls('ca.pem'))}, verify: true, timeout: 2 }`,
    `authorization { user: "rank", password: "${PASSWORD}" }`,
  ].join('\n');
  await withServer(serverConfig, async (server) => {
    const out = join(folder, 'tls');
    const login = ['--nats-user', 'rank', '--nats-tls-ca', tls('ca.pem'), '--nats-tls-cert', tls('client.pem'), '--nats-tls-key', tls('client-key.pem')];
    const env = { ...NO_CREDENTIALS, NATS_PASSWORD: PASSWORD };
    const job = startCli(['train', config, '--out', out, '--set', 'steps=500', ...dp2, '--nats', server.url, ...login], env);
    try {
      await job.waitFor(/step 1\/500/, 60_000);
      assert.match(job.output(), /\(a user and password from options, TLS with a CA and a client certificate\)/);
      const status = await runCli(['ctl', out, 'status', '--json', ...login], env);
      assert.equal(status.code, 0, status.output);
      assert.equal(JSON.parse(status.output).state, 'running');
      const withoutCertificate = await runCli(['ctl', out, 'status', '--nats-user', 'rank', '--nats-tls-ca', tls('ca.pem')], env);
      assert.equal(withoutCertificate.code, 1);
      assert.match(withoutCertificate.output, /The TLS handshake failed: .* \(--nats-tls-cert and --nats-tls-key, or \$NATS_CERT and \$NATS_KEY\)/);
      assert.equal((await runCli(['ctl', out, 'stop', ...login], env)).code, 0);
      const exit = await job.exited;
      assert.equal(exit.code, 0, job.output());
      assert.doesNotMatch(job.output(), /could not connect|heartbeat thread failed/);
      assertNoSecret(job.output() + read(join(out, 'job.json')), 'the job output or job.json');
    } finally {
      job.child.kill('SIGKILL');
    }
  });
});
