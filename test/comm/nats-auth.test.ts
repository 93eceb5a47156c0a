// Tests: the NATS transport's credentials against private nats-servers: user and password, TLS with a
// server certificate from a test CA (caFile), and mutual TLS (certFile, keyFile); the right credentials
// connect and carry messages, wrong or missing ones are refused with a message that says what to check.
// (Tokens are covered in nats-transport.test.ts.) The certificates in fixtures/tls are for tests only.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { connectNats, type NatsTransportOptions } from '../../src/comm/nats-transport.ts';

const TLS = fileURLToPath(new URL('./fixtures/tls/', import.meta.url));
const tlsFile = (name: string) => join(TLS, name);

async function withServer(config: string, run: (server: NatsServerHandle) => Promise<void>): Promise<void> {
  const server = await startNatsServer({ extraConfig: config });
  try {
    await run(server);
  } finally {
    await server.stop();
  }
}

/** Connects, sends one message to itself and closes: the connection carries traffic, not just a handshake. */
async function roundTrip(options: NatsTransportOptions): Promise<void> {
  const transport = await connectNats({ timeoutMs: 2000, log: () => {}, ...options });
  try {
    const received = new Promise<Uint8Array>((resolve) => transport.subscribe('auth.echo', (message) => resolve(message.data)));
    await transport.flush();
    transport.publish('auth.echo', Uint8Array.of(1, 2, 3));
    assert.deepEqual([...(await received)], [1, 2, 3]);
  } finally {
    await transport.close();
  }
}

test('nats auth - user and password: the right pair connects, a wrong password or none is refused naming the credentials', async () => {
  await withServer('authorization { user: "rank", password: "s3cret" }', async (server) => {
    await roundTrip({ url: server.url, user: 'rank', pass: 's3cret' });
    for (const wrong of [{ user: 'rank', pass: 'guess' }, {}]) {
      await assert.rejects(roundTrip({ url: server.url, ...wrong }), /could not connect to NATS at .*: Authorization Violation\. The server refused our credentials: check the token, user\/password or credentials file/);
    }
  });
});

const TLS_ADVICE = 'The TLS handshake failed: check tls\\.caFile .* tls\\.certFile and tls\\.keyFile';

const serverTls = (verify: boolean) =>
  `tls { cert_file: ${JSON.stringify(tlsFile('server.pem'))}, key_file: ${JSON.stringify(tlsFile('server-key.pem'))}, ca_file: ${JSON.stringify(tlsFile('ca.pem'))}, verify: ${verify}, timeout: 2 }`;

test('nats auth - TLS: a client that trusts the test CA (caFile) connects; one that does not is refused', async () => {
  await withServer(serverTls(false), async (server) => {
    await roundTrip({ url: server.url, tls: { caFile: tlsFile('ca.pem') } });
    for (const tls of [{}, undefined]) {
      await assert.rejects(roundTrip({ url: server.url, ...(tls === undefined ? {} : { tls }) }), new RegExp(`could not connect to NATS at .*: unable to verify the first certificate\\. ${TLS_ADVICE}`));
    }
    await assert.rejects(roundTrip({ url: server.url, tls: { caFile: '/nonexistent/ca.pem' } }), /could not connect to NATS at .*\/nonexistent\/ca\.pem/);
  });
});

test('nats auth - mutual TLS: the client certificate (certFile, keyFile) is required and accepted', async () => {
  await withServer(serverTls(true), async (server) => {
    await roundTrip({ url: server.url, tls: { caFile: tlsFile('ca.pem'), certFile: tlsFile('client.pem'), keyFile: tlsFile('client-key.pem') } });
    await assert.rejects(roundTrip({ url: server.url, tls: { caFile: tlsFile('ca.pem') } }), new RegExp(`could not connect to NATS at .*\\. ${TLS_ADVICE}`));
  });
});
