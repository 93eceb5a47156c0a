// Tests: the NATS transport and the bus over a real, private nats-server: an 8 MB tensor across NATS'
// default 1 MB max_payload, a 4 MB one whole across the private servers' 8 MiB, request/reply, timeouts,
// job isolation, authentication and clear errors, server lists, and the disconnect/reconnect events of
// a server restart.
import { after, before, test } from 'node:test';
import { connect as connectTcp, createServer, type AddressInfo, type Socket } from 'node:net';
import assert from 'node:assert/strict';
import { Bus } from '../../src/comm/bus.ts';
import { freePort, PRIVATE_SERVER_MAX_PAYLOAD, startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { connectNats, natsServerList, type NatsTransport } from '../../src/comm/nats-transport.ts';
import type { Message } from '../../src/protocol/messages.ts';
import { TransportTimeoutError } from '../../src/comm/transport.ts';
import { fromWireTensor, toWireTensor } from '../../src/comm/tensor-wire.ts';

let server: NatsServerHandle;
const opened: Array<{ close(): Promise<void> }> = [];

before(async () => {
  // NATS' own default max_payload, so that messages above it travel in chunks.
  server = await startNatsServer({ maxPayload: 1024 * 1024 });
});

after(async () => {
  for (const thing of opened) await thing.close();
  await server.stop();
});

async function transport(url = server.url): Promise<NatsTransport> {
  const connection = await connectNats({ url, name: 'gpt-hybrid test', log: () => {} });
  opened.push(connection);
  return connection;
}

async function bus(jobId = 'job-n'): Promise<Bus> {
  const created = new Bus({ jobId, transport: await transport(), log: () => {} });
  opened.push(created);
  return created;
}

test("max_payload comes from the server: 1 MiB here, PRIVATE_SERVER_MAX_PAYLOAD on a private server's default", async () => {
  assert.equal((await transport()).maxPayload, 1024 * 1024);
  const roomy = await startNatsServer();
  try {
    const connection = await connectNats({ url: roomy.url, log: () => {} });
    assert.equal(connection.maxPayload, PRIVATE_SERVER_MAX_PAYLOAD);
    await connection.close();
  } finally {
    await roomy.stop();
  }
});

test('an 8 MB tensor (2M floats) crosses a server with NATS default max_payload intact', async () => {
  const [sender, receiver] = [await bus(), await bus()];
  const values = new Float32Array(2_000_000);
  for (let i = 0; i < values.length; i++) values[i] = Math.fround(Math.sin(i) * 1000 + i);
  const arrived = new Promise<Message>((resolve) => receiver.subscribe('coll.world', (message) => resolve(message)));
  await receiver.flush();
  const started = performance.now();
  sender.publish('coll.world', { kind: 'collective', group: 'world', op: 'broadcast', seq: 0, tag: '', from: 0, part: 0, tensor: toWireTensor(values, [2000, 1000]) });
  const message = await arrived;
  const elapsedMs = performance.now() - started;
  assert.ok(sender.stats.chunksSent >= 8, `${sender.stats.chunksSent} chunks`);
  assert.equal(message.kind, 'collective');
  if (message.kind !== 'collective') return;
  assert.deepEqual(message.tensor.shape, [2000, 1000]);
  const back = fromWireTensor(message.tensor);
  assert.equal(back.length, values.length);
  assert.ok(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(Buffer.from(values.buffer)), 'bit-exact');
  assert.equal(receiver.stats.rejected.chunk, 0);
  console.log(`# 8 MB over NATS in ${sender.stats.chunksSent} chunks: ${elapsedMs.toFixed(0)} ms`);
});

test('request/reply over NATS, and no responder gives a TransportTimeoutError naming the subject', async () => {
  const [client, service] = [await bus(), await bus()];
  service.subscribe('ctl', (message, context) => {
    if (message.kind === 'control') service.respond(context, { kind: 'control-reply', ok: true, command: message.command, message: 'ack' });
  });
  await service.flush();
  const answer = await client.request('ctl', { kind: 'control', command: 'checkpoint' }, 2000);
  assert.deepEqual(answer, { kind: 'control-reply', ok: true, command: 'checkpoint', message: 'ack' });
  await assert.rejects(client.request('nobody', { kind: 'control', command: 'status' }, 200), (error: unknown) => {
    assert.ok(error instanceof TransportTimeoutError);
    assert.equal(error.subject, 'gh.job-n.nobody');
    return true;
  });
});

test('a responder that never answers times out after the deadline', async () => {
  const raw = await transport();
  raw.subscribe('silent.service', () => {});
  await raw.flush();
  const started = Date.now();
  await assert.rejects(raw.request('silent.service', new Uint8Array([1]), 150), TransportTimeoutError);
  assert.ok(Date.now() - started >= 140);
});

test('two jobs on one server never see each other', async () => {
  const [a, b] = [await bus('job-one'), await bus('job-two')];
  const seen: string[] = [];
  a.subscribe('>', (message) => seen.push(`a:${(message as { reason: string }).reason}`));
  b.subscribe('>', (message) => seen.push(`b:${(message as { reason: string }).reason}`));
  await a.flush();
  await b.flush();
  a.publish('x', { kind: 'fatal', rank: 0, reason: 'one' });
  b.publish('x', { kind: 'fatal', rank: 0, reason: 'two' });
  await a.flush();
  await b.flush();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(seen.sort(), ['a:one', 'b:two']);
});

test('a refused connection names the URL and says what to do', async () => {
  const port = await freePort();
  await assert.rejects(connectNats({ url: `nats://127.0.0.1:${port}`, timeoutMs: 1000 }), (error: unknown) => {
    assert.ok(error instanceof Error);
    assert.match(error.message, new RegExp(`could not connect to NATS at nats://127\\.0\\.0\\.1:${port}`));
    assert.match(error.message, /is a NATS server running\? start one with `nats-server` or pass --nats URL/i);
    return true;
  });
});

test('token authentication: the right token connects, a wrong one is refused clearly', async () => {
  const secured = await startNatsServer({ extraConfig: 'authorization { token: "s3cret" }' });
  try {
    const good = await connectNats({ url: secured.url, token: 's3cret', log: () => {} });
    assert.equal(good.maxPayload, PRIVATE_SERVER_MAX_PAYLOAD);
    await good.close();
    await assert.rejects(connectNats({ url: secured.url, token: 'wrong', timeoutMs: 1000 }), /could not connect to NATS at .*: Authorization Violation\. The server refused our credentials/);
    await assert.rejects(connectNats({ url: secured.url, credsFile: '/nonexistent/creds' }), /cannot read the NATS credentials file \/nonexistent\/creds/);
  } finally {
    await secured.stop();
  }
});

test('a list of servers (or one text with commas) is tried in order: a dead first server falls through to the next', async () => {
  const dead = `nats://127.0.0.1:${await freePort()}`;
  assert.deepEqual(natsServerList(` ${dead}, ${server.url} ,`), [dead, server.url]);
  assert.throws(() => natsServerList(' , '), /no NATS server in/);
  const client = await transport(`${dead},${server.url}`);
  assert.equal(`nats://${client.server}`, server.url);
});

test('the connection survives a server restart: subscriptions come back and messages flow again', async () => {
  const port = await freePort();
  let restartable = await startNatsServer({ port });
  const lines: string[] = [];
  const [sender, receiver] = await Promise.all([0, 1].map(() => connectNats({ url: restartable.url, log: (line) => lines.push(line) })));
  const events: string[] = [];
  receiver.onConnectionChange((event) => events.push(`${event.type} ${event.server}:${String(receiver.connected)}`));
  try {
    const got: number[] = [];
    receiver.subscribe('restart.test', (message) => got.push(message.data[0]));
    await receiver.flush();
    await restartable.kill();
    // The kill is seen when the client reads the closed socket: wait for that event, not a fixed time.
    const noticeBy = Date.now() + 5000;
    while (Date.now() < noticeBy && events.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(await receiver.whenConnected(100), false, 'connected while the server is down');
    restartable = await startNatsServer({ port });
    assert.equal(await receiver.whenConnected(8000), true);
    // Wait until both clients are back (the receiver's subscription is replayed on reconnect).
    const deadline = Date.now() + 8000;
    while (Date.now() < deadline && got.length === 0) {
      try {
        sender.publish('restart.test', new Uint8Array([7]));
        await sender.flush();
      } catch {
        // still reconnecting
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(got.includes(7), `no message after restart; client log: ${lines.join(' | ')}`);
    assert.ok(lines.some((line) => line.startsWith('nats: reconnected to')), lines.join(' | '));
    assert.deepEqual(events, [`disconnect 127.0.0.1:${port}:false`, `reconnect 127.0.0.1:${port}:true`]);
  } finally {
    await sender.close();
    await receiver.close();
    await restartable.stop();
  }
});

/** How often the client of `serverLostDuringReconnects` tries to reconnect before it gives up. */
const RECONNECT_ATTEMPTS = 3;

/**
 * A relay to the test's server that, once told to `hang`, drops its links and turns into a hung host: it
 * accepts every connection and never answers, so a client's reconnect attempt lasts its connection
 * timeout. `onHungConnection` hears of each such attempt.
 */
async function hangingRelay(onHungConnection: () => void = () => {}): Promise<{ url: string; hang(): void; close(): void }> {
  const sockets: Socket[] = [];
  let hung = false;
  const relay = createServer((socket) => {
    sockets.push(socket);
    if (hung) return onHungConnection();
    const upstream = connectTcp(server.port, '127.0.0.1');
    sockets.push(upstream);
    socket.pipe(upstream).pipe(socket);
  });
  await new Promise<void>((resolve, reject) => relay.once('error', reject).listen(0, '127.0.0.1', resolve));
  return {
    url: `nats://127.0.0.1:${(relay.address() as AddressInfo).port}`,
    hang: () => {
      hung = true;
      for (const socket of sockets.splice(0)) socket.destroy();
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      relay.close();
    },
  };
}

/**
 * Connects a client through a hanging relay, which then hangs until the client gives up. `during` runs on
 * the client at each reconnect attempt (numbered from 1 to RECONNECT_ATTEMPTS, the last one the client
 * makes); its promises come back.
 */
async function serverLostDuringReconnects(during: (client: NatsTransport, attempt: number) => Promise<unknown>): Promise<Array<Promise<unknown>>> {
  const started: Array<Promise<unknown>> = [];
  let client: NatsTransport | undefined;
  const relay = await hangingRelay(() => {
    const work = during(client!, started.length + 1);
    // Answered later by the test; an early rejection is no unhandled one.
    work.catch(() => undefined);
    started.push(work);
  });
  try {
    client = await connectNats({ url: relay.url, log: () => {}, timeoutMs: 800, reconnect: { waitMs: 300, maxAttempts: RECONNECT_ATTEMPTS } });
    relay.hang();
    const gaveUp = await Promise.race([client.closed().then(() => true), new Promise((resolve) => setTimeout(resolve, 15_000, false))]);
    assert.equal(gaveUp, true, 'the client never gave up reconnecting');
    assert.equal(started.length, RECONNECT_ATTEMPTS, 'reconnect attempts');
    return started;
  } finally {
    relay.close();
  }
}

/** Whether `work` settles within `ms`. */
async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([work.then(() => true, () => true), new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, false)))]);
  clearTimeout(timer);
  return settled;
}

// nats.js answers a flush waiting on a lost server only when it dials again: one asked during its last
// attempt stayed pending for good, and a process awaiting it at its end (the launcher after "giving up",
// a worker) ran out of work and Node ended it with exit 13 and none of its cleanup (issue 18 item 7).
test('a flush asked while the client reconnects settles when the client gives up, with an error saying so', async () => {
  const flushes = await serverLostDuringReconnects((client) => client.flush());
  for (const [index, flush] of flushes.entries()) assert.equal(await settlesWithin(flush, 1000), true, `flush ${index + 1} of ${flushes.length} never settled`);
  await assert.rejects(flushes.at(-1)!, /the NATS connection closed before the flush was answered/);
});

test('a close asked while the client reconnects ends when the client gives up', async () => {
  let close: Promise<void> | undefined;
  await serverLostDuringReconnects(async (client, attempt) => {
    if (attempt === RECONNECT_ATTEMPTS) close = client.close();
  });
  assert.equal(await settlesWithin(close!, 1000), true, 'close never ended');
});

test("a bus's last word (finish) waits a bounded time when the server's host no longer answers, however long the client would go on trying", async () => {
  const relay = await hangingRelay();
  // The default reconnect window: 60 tries, each lasting the 5 s connection timeout at a hung host.
  const transport = await connectNats({ url: relay.url, log: () => {} });
  const bus = new Bus({ jobId: 'job-finish', transport, log: () => {} });
  try {
    bus.subscribe('work', () => {});
    relay.hang();
    bus.publish('work', { kind: 'fatal', rank: 0, reason: 'queued while the link is down' });
    const started = performance.now();
    await bus.finish(300);
    const waited = performance.now() - started;
    assert.ok(waited < 2000, `finish took ${waited.toFixed(0)} ms`);
  } finally {
    relay.close();
    await transport.connection.close();
  }
});
