// Tests: large NATS messages are collected in one right-sized buffer per message (not the client's
// doubling one), the parser patch is in force with the installed client, a buffer handed back takes a
// later message, and values a reader kept stay intact while later messages arrive.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Bus } from '../../src/comm/bus.ts';
import type { Message } from '../../src/protocol/messages.ts';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { payloadBufferActive, payloadBufferStats } from '../../src/comm/nats-payload-buffer.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';
import { fromWireTensor, toWireTensor } from '../../src/comm/tensor-wire.ts';

let server: NatsServerHandle;
const opened: Array<{ close(): Promise<void> }> = [];

before(async () => {
  server = await startNatsServer();
});

after(async () => {
  for (const thing of opened) await thing.close();
  await server.stop();
});

async function bus(): Promise<Bus> {
  const created = new Bus({ jobId: 'job-p', transport: await connectNats({ url: server.url, log: () => {} }), log: () => {} });
  opened.push(created);
  return created;
}

/** `count` float32 values, different for every `seed`. */
function values(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.fround(seed * 1000 + Math.sin(i + seed));
  return out;
}

function sameBits(a: Float32Array | Int32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Subscribes, then returns a function that resolves with the next `n` messages. */
async function inbox(receiver: Bus, subject: string): Promise<(n: number) => Promise<Message[]>> {
  const arrived: Message[] = [];
  const waiters: Array<() => void> = [];
  receiver.subscribe(subject, (message) => {
    arrived.push(message);
    for (const wake of waiters.splice(0)) wake();
  });
  await receiver.flush();
  return async (n) => {
    while (arrived.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
    return arrived.splice(0, n);
  };
}

test("the client's parser has the fields the patch relies on (an upgrade that changes them fails here)", async () => {
  await bus();
  assert.equal(payloadBufferActive(), true);
});

test('4 MB tensors cross the 8 MiB private server whole, bit-exact, each in one buffer, reused once handed back', async () => {
  const [sender, receiver] = [await bus(), await bus()];
  const next = await inbox(receiver, 'coll.p2p');
  const before = { ...payloadBufferStats };
  const sent = [1, 2, 3, 4].map((seed) => values(1024 * 1024, seed));
  const kept: Float32Array[] = [];
  for (const [i, tensor] of sent.entries()) {
    sender.publish('coll.p2p', { kind: 'collective', group: 'g', op: 'send', seq: i, tag: 't', from: 0, part: 0, tensor: toWireTensor(tensor, [tensor.length]) });
    const [message] = await next(1);
    assert.equal(message.kind, 'collective');
    if (message.kind !== 'collective') return;
    kept.push(fromWireTensor(message.tensor) as Float32Array);
  }
  assert.equal(sender.stats.chunksSent, 0, 'a 4 MB message fits 8 MiB: no chunks');
  assert.ok(payloadBufferStats.presized - before.presized >= 4, `presized ${payloadBufferStats.presized - before.presized} of 4 messages`);
  // Collective pieces are decoded into values of their own, so each message's buffer takes the next one.
  assert.ok(payloadBufferStats.reused - before.reused >= 3, `reused ${payloadBufferStats.reused - before.reused} buffers for 4 messages`);
  // Every tensor kept by the reader is still what was sent, after later messages reused the memory.
  for (const [i, tensor] of sent.entries()) assert.ok(sameBits(kept[i], tensor), `tensor ${i} changed after later messages arrived`);
});

test('a message whose decoded value holds a view into its bytes keeps them: later messages do not overwrite it', async () => {
  const [sender, receiver] = [await bus(), await bus()];
  const next = await inbox(receiver, 'actor.x');
  const first = Buffer.alloc(2 * 1024 * 1024, 7);
  const second = Buffer.alloc(2 * 1024 * 1024, 9);
  // A Buffer travels as msgpack bin, which decodes to a view into the received bytes.
  sender.publish('actor.x', { kind: 'actor', to: { rank: 1, role: 'a' }, payload: { bytes: first } });
  const [a] = await next(1);
  sender.publish('actor.x', { kind: 'actor', to: { rank: 1, role: 'a' }, payload: { bytes: second } });
  const [b] = await next(1);
  const bytesOf = (message: Message) => (message as { payload: { bytes: Uint8Array } }).payload.bytes;
  // The premise: the decoded payload is a view into the message's bytes, not a copy.
  assert.ok(bytesOf(a).byteOffset > 0, 'expected a view into the received message');
  assert.ok(Buffer.from(bytesOf(a)).equals(first), 'the first payload changed when the second arrived');
  assert.ok(Buffer.from(bytesOf(b)).equals(second));
});
