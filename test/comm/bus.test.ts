// Tests: the Bus over the in-process transport: routing, wildcards, job isolation, request/reply,
// chunked messages around max_payload, reassembly faults, rejected messages and throwing handlers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bus } from '../../src/comm/bus.ts';
import { Chunker } from '../../src/comm/chunking.ts';
import { encodeEnvelope } from '../../src/comm/codec.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { PROTOCOL_VERSION, type Envelope, type Message } from '../../src/protocol/messages.ts';
import { TransportTimeoutError } from '../../src/comm/transport.ts';
import { fromWireTensor, toWireTensor } from '../../src/comm/tensor-wire.ts';
import { eventually, settle } from '../support/eventually.ts';

function pair(network = new LocalNetwork(), jobId = 'job-a', options: { chunkTimeoutMs?: number; maxMessageBytes?: number } = {}) {
  const logs: string[] = [];
  const make = () => new Bus({ jobId, transport: network.connect(), log: (line) => logs.push(line), ...options });
  return { sender: make(), receiver: make(), logs, network };
}

function collect(bus: Bus, relative: string): Array<{ message: Message; subject: string }> {
  const got: Array<{ message: Message; subject: string }> = [];
  bus.subscribe(relative, (message, context) => got.push({ message, subject: context.subject }));
  return got;
}

const fatal = (reason: string): Message => ({ kind: 'fatal', rank: 1, reason });

test('subjects are namespaced by job and checked', () => {
  const { sender } = pair();
  assert.equal(sender.subject('control.3'), 'gh.job-a.control.3');
  assert.equal(sender.subject('coll.*.>'), 'gh.job-a.coll.*.>');
  assert.throws(() => new Bus({ jobId: 'bad.job', transport: new LocalNetwork().connect() }), /job id "bad.job" is not usable/);
  assert.throws(() => sender.publish('a..b', fatal('x')), /bad token "" at position 1/);
  assert.throws(() => sender.publish('coll.*', fatal('x')), /wildcards are allowed only when subscribing/);
  assert.throws(() => sender.subscribe('a.>.b', () => {}), /'>' may only be the last token/);
});

test('messages reach exactly the subscriptions whose subject or wildcard matches, in order', async () => {
  const { sender, receiver } = pair();
  const exact = collect(receiver, 'heartbeat.1');
  const oneToken = collect(receiver, 'heartbeat.*');
  const rest = collect(receiver, '>');
  const other = collect(receiver, 'heartbeat.2');
  for (let step = 0; step < 5; step++) sender.publish('heartbeat.1', { kind: 'heartbeat', rank: 1, step, state: 'training', rssMb: 1 });
  sender.publish('step.done', fatal('elsewhere'));
  await settle();
  assert.deepEqual(exact.map((g) => (g.message as { step: number }).step), [0, 1, 2, 3, 4]);
  assert.equal(oneToken.length, 5);
  assert.equal(rest.length, 6);
  assert.equal(rest[5].subject, 'gh.job-a.step.done');
  assert.equal(other.length, 0);
  assert.deepEqual(exact[0].message, { kind: 'heartbeat', rank: 1, step: 0, state: 'training', rssMb: 1 });
  assert.equal(sender.stats.sent, 6);
  assert.equal(receiver.stats.received, 16);
});

test('two jobs on one network never see each other, even subscribed to everything', async () => {
  const network = new LocalNetwork();
  const a = pair(network, 'job-a');
  const b = pair(network, 'job-b');
  const seenByA = collect(a.receiver, '>');
  const seenByB = collect(b.receiver, '>');
  a.sender.publish('x', fatal('from a'));
  b.sender.publish('x', fatal('from b'));
  await settle();
  assert.deepEqual(seenByA.map((g) => (g.message as { reason: string }).reason), ['from a']);
  assert.deepEqual(seenByB.map((g) => (g.message as { reason: string }).reason), ['from b']);
});

test('a message carrying another job id or version on our subject is counted, never delivered', async () => {
  const { receiver, logs, network } = pair();
  const got = collect(receiver, 'x');
  const raw = network.connect();
  const frame = (envelope: unknown) => new Chunker(network.maxPayload).wholeFrame(encodeEnvelope(envelope as Envelope));
  raw.publish('gh.job-a.x', frame({ ...fatal('forged'), v: PROTOCOL_VERSION, job: 'job-b' }));
  raw.publish('gh.job-a.x', frame({ ...fatal('future'), v: PROTOCOL_VERSION + 1, job: 'job-a' }));
  raw.publish('gh.job-a.x', frame({ kind: 'gossip', v: PROTOCOL_VERSION, job: 'job-a' }));
  raw.publish('gh.job-a.x', frame({ kind: 'fatal', rank: 'one', reason: '', v: PROTOCOL_VERSION, job: 'job-a' }));
  raw.publish('gh.job-a.x', new Uint8Array([0, 0xc1, 0xff]));
  raw.publish('gh.job-a.x', new Uint8Array([9]));
  await settle();
  assert.equal(got.length, 0);
  assert.deepEqual(receiver.stats.rejected, { version: 1, job: 1, malformed: 3, 'unknown-kind': 1, oversized: 0, chunk: 0, unsigned: 0, forged: 0, replayed: 0 });
  assert.ok(logs.some((line) => /dropped a message \(job\) on gh\.job-a\.x: message of job "job-b"/.test(line)), logs.join('\n'));
  assert.ok(logs.some((line) => /rank must be an integer/.test(line)));
});

test('rejections are logged at a bounded rate but all counted', async () => {
  const { receiver, logs, network } = pair();
  collect(receiver, 'x');
  const raw = network.connect();
  for (let i = 0; i < 200; i++) raw.publish('gh.job-a.x', new Uint8Array([9]));
  await settle();
  assert.equal(receiver.stats.rejected.malformed, 200);
  assert.ok(logs.length <= 6, `${logs.length} log lines`);
});

test('request/reply answers, and a missing responder times out naming the subject', async () => {
  const { sender, receiver } = pair();
  receiver.subscribe('control', (message, context) => {
    assert.equal(message.kind, 'control');
    receiver.respond(context, { kind: 'control-reply', ok: true, command: message.kind === 'control' ? message.command : 'status', message: 'fine' });
  });
  const answer = await sender.request('control', { kind: 'control', command: 'pause' }, 1000);
  assert.deepEqual(answer, { kind: 'control-reply', ok: true, command: 'pause', message: 'fine' });
  await assert.rejects(sender.request('nobody.home', { kind: 'control', command: 'status' }, 30), (error: unknown) => {
    assert.ok(error instanceof TransportTimeoutError);
    assert.equal(error.subject, 'gh.job-a.nobody.home');
    assert.match(error.message, /no answer on gh\.job-a\.nobody\.home within 30 ms/);
    return true;
  });
});

test('respond refuses messages that expect no reply, and requests must fit one payload', async () => {
  const { sender, receiver } = pair(new LocalNetwork(200));
  assert.throws(() => receiver.respond({ subject: 'gh.job-a.x' }, fatal('x')), /sender used publish, not request/);
  await assert.rejects(sender.request('x', fatal('y'.repeat(500)), 100), /does not fit one payload \(max_payload 200\)/);
});

/** A fatal message whose encoded envelope is exactly `size` bytes. */
function messageOfEncodedSize(size: number): Message {
  let length = size;
  for (let tries = 0; tries < 10; tries++) {
    const message = fatal('r'.repeat(Math.max(0, length)));
    const encoded = encodeEnvelope({ ...message, v: PROTOCOL_VERSION, job: 'job-a' } as Envelope).byteLength;
    if (encoded === size) return message;
    length += size - encoded;
  }
  throw new Error(`no message encodes to ${size} bytes`);
}

test('messages around max_payload arrive intact, chunked only above it', async () => {
  const maxPayload = 1000;
  const { sender, receiver } = pair(new LocalNetwork(maxPayload));
  const got = collect(receiver, 'big');
  // The whole frame adds one byte: encoded maxPayload-1 is the largest that travels whole.
  const sizes = [maxPayload - 2, maxPayload - 1, maxPayload, maxPayload + 1, 10 * maxPayload];
  const expectedChunks = [0, 0, 2, 2, Math.ceil((10 * maxPayload) / (maxPayload - 25))];
  let chunksBefore = 0;
  for (let i = 0; i < sizes.length; i++) {
    const message = messageOfEncodedSize(sizes[i]);
    sender.publish('big', message);
    assert.equal(sender.stats.chunksSent - chunksBefore, expectedChunks[i], `chunks for ${sizes[i]} bytes`);
    chunksBefore = sender.stats.chunksSent;
    await settle();
    assert.deepEqual(got.at(-1)?.message, message);
  }
  assert.equal(got.length, sizes.length);
  assert.equal(receiver.stats.rejected.chunk, 0);
});

test('a tensor larger than max_payload arrives bit-exact', async () => {
  const { sender, receiver } = pair(new LocalNetwork(4096));
  const got = collect(receiver, 'coll.dp.0');
  const values = new Float32Array(10_000).map((_, i) => Math.sin(i) * 1e3);
  sender.publish('coll.dp.0', { kind: 'collective', group: 'dp.0', op: 'all-reduce', seq: 4, tag: '', from: 1, part: 0, tensor: toWireTensor(values, [100, 100]) });
  await settle();
  const message = got[0].message;
  assert.equal(message.kind, 'collective');
  if (message.kind === 'collective') {
    assert.deepEqual(message.tensor.shape, [100, 100]);
    assert.deepEqual(fromWireTensor(message.tensor), values);
  }
});

test('lost, duplicated, reordered and foreign chunks are counted and never delivered as wrong data', async () => {
  const network = new LocalNetwork(300);
  const { receiver } = pair(network);
  const got = collect(receiver, 'x');
  const raw = network.connect();
  const chunker = new Chunker(300);
  const framesOf = (message: Message) => chunker.frames(encodeEnvelope({ ...message, v: PROTOCOL_VERSION, job: 'job-a' } as Envelope));
  const sendAll = (frames: Uint8Array[]) => frames.forEach((frame) => raw.publish('gh.job-a.x', frame));
  const frames = () => framesOf(fatal('z'.repeat(1500)));
  const lost = frames();
  sendAll([...lost.slice(0, 2), ...lost.slice(3)]);
  const duplicated = frames();
  sendAll([...duplicated.slice(0, 3), duplicated[2], ...duplicated.slice(3)]);
  const reordered = frames();
  sendAll([reordered[1], reordered[0], ...reordered.slice(2)]);
  const foreign = new Chunker(300).frames(new Uint8Array(1200).fill(0xee)).slice(0, 3);
  const target = frames();
  sendAll([target[0], foreign[1], target[1], foreign[2], ...target.slice(2)]);
  const intact = fatal('intact '.repeat(100));
  sendAll(framesOf(intact));
  await settle();
  // The target message still completes: foreign chunks belong to another (orphaned) message id.
  assert.deepEqual(got.map((g) => g.message), [fatal('z'.repeat(1500)), intact]);
  assert.equal(receiver.stats.rejected.chunk, 4);
});

test('an incomplete chunked message is dropped after chunkTimeoutMs', async () => {
  const network = new LocalNetwork(300);
  const { receiver } = pair(network, 'job-a', { chunkTimeoutMs: 30 });
  collect(receiver, 'x');
  const frames = new Chunker(300).frames(encodeEnvelope({ ...fatal('q'.repeat(1000)), v: PROTOCOL_VERSION, job: 'job-a' } as Envelope));
  const raw = network.connect();
  frames.slice(0, 2).forEach((frame) => raw.publish('gh.job-a.x', frame));
  await eventually('the incomplete message dropped', () => receiver.stats.rejected.chunk > 0);
  assert.equal(receiver.stats.rejected.chunk, 1);
});

test('a message above maxMessageBytes is refused by sender and receiver', async () => {
  const network = new LocalNetwork(300);
  const { sender, receiver } = pair(network, 'job-a', { maxMessageBytes: 1000 });
  collect(receiver, 'x');
  assert.throws(() => sender.publish('x', fatal('w'.repeat(2000))), /above maxMessageBytes 1000/);
  const unbounded = new Bus({ jobId: 'job-a', transport: network.connect() });
  unbounded.publish('x', fatal('w'.repeat(2000)));
  await settle();
  assert.equal(receiver.stats.rejected.oversized, 1);
  assert.equal(receiver.stats.received, 0);
});

test('a throwing or rejecting handler is counted and logged; the next message is still delivered', async () => {
  const { sender, receiver, logs } = pair();
  const got: string[] = [];
  receiver.subscribe('x', (message) => {
    const reason = (message as { reason: string }).reason;
    got.push(reason);
    if (reason === 'throw') throw new Error('handler exploded');
  });
  receiver.subscribe('y', async () => {
    throw new Error('async handler exploded');
  });
  sender.publish('x', fatal('throw'));
  sender.publish('y', fatal('async'));
  sender.publish('x', fatal('after'));
  await settle();
  assert.deepEqual(got, ['throw', 'after']);
  assert.equal(receiver.stats.handlerErrors, 2);
  assert.ok(logs.some((line) => /handler for fatal on gh\.job-a\.x threw: Error: handler exploded/.test(line)));
  assert.ok(logs.some((line) => /async handler exploded/.test(line)));
});

test('unsubscribe and close stop delivery; a closed bus refuses to publish', async () => {
  const { sender, receiver } = pair();
  const got = collect(receiver, 'x');
  const later: Message[] = [];
  const subscription = receiver.subscribe('x', (message) => later.push(message));
  subscription.unsubscribe();
  sender.publish('x', fatal('one'));
  await settle();
  assert.equal(got.length, 1);
  assert.equal(later.length, 0);
  await receiver.close();
  sender.publish('x', fatal('two'));
  await settle();
  assert.equal(got.length, 1);
  await sender.close();
  assert.throws(() => sender.publish('x', fatal('three')), /bus of job job-a is closed/);
});
