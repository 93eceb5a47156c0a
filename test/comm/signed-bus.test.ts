// Tests: signed job messages (comm/frame-signing.ts) and the bus that signs and checks them: a frame
// without the job key's signature, with a wrong one, damaged or replayed is dropped and counted before
// anything reads it; fake first chunks from a client without the key reserve nothing, so a real large
// message still arrives; request and reply are signed both ways.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Bus } from '../../src/comm/bus.ts';
import { Chunker } from '../../src/comm/chunking.ts';
import { FrameSigner, newJobKey, parseJobKey, REPLY_SUBJECT, SIGNATURE_TRAILER_BYTES } from '../../src/comm/frame-signing.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { TransportTimeoutError } from '../../src/comm/transport.ts';
import type { Message } from '../../src/protocol/messages.ts';
import { settle } from '../support/eventually.ts';

const control: Message = { kind: 'control', command: 'pause' };

test('frame signing - a signed frame verifies once, on its subject; damaged, moved, foreign-key, short and replayed frames do not', () => {
  const key = newJobKey();
  const sender = new FrameSigner(key);
  const receiver = new FrameSigner(key);
  const frame = Uint8Array.from([1, 2, 3, 4, 5]);
  const reason = (result: ReturnType<FrameSigner['verify']>) => (result.ok ? 'ok' : result.reason);
  const signed = sender.sign(frame, 'gh.j.actor.stage.0');
  assert.equal(signed.byteLength, frame.byteLength + SIGNATURE_TRAILER_BYTES);
  const verified = receiver.verify(signed, 'gh.j.actor.stage.0');
  assert.ok(verified.ok);
  assert.deepEqual([...verified.payload], [1, 2, 3, 4, 5]);
  assert.equal(reason(receiver.verify(signed, 'gh.j.actor.stage.0')), 'replayed');
  // Captured for stage 0 and published to stage 1, whose bus never saw it: refused all the same.
  assert.equal(reason(new FrameSigner(key).verify(signed, 'gh.j.actor.stage.1')), 'forged');
  assert.equal(reason(new FrameSigner(key).verify(signed, REPLY_SUBJECT)), 'forged');
  const damaged = sender.sign(frame, 's');
  damaged[2]! ^= 1;
  assert.equal(reason(receiver.verify(damaged, 's')), 'forged');
  assert.equal(reason(receiver.verify(new FrameSigner(newJobKey()).sign(frame, 's'), 's')), 'forged');
  assert.equal(reason(receiver.verify(frame, 's')), 'unsigned');
  // Out of order within the window passes once; far behind the newest does not.
  const frames = Array.from({ length: 5000 }, () => sender.sign(frame, 's'));
  assert.equal(reason(receiver.verify(frames[4999]!, 's')), 'ok');
  assert.equal(reason(receiver.verify(frames[2000]!, 's')), 'ok');
  assert.equal(reason(receiver.verify(frames[2000]!, 's')), 'replayed');
  assert.equal(reason(receiver.verify(frames[10]!, 's')), 'replayed');
  assert.throws(() => parseJobKey('abc', 'job.key'), /job\.key holds no job key \(64 hex digits\)/);
});

test('signed bus - messages of the key pass; a client without it (or with another) is dropped and counted', async () => {
  const network = new LocalNetwork();
  const key = newJobKey();
  const logs: string[] = [];
  const receiver = new Bus({ jobId: 'j', transport: network.connect(), key, log: (line) => logs.push(line) });
  const got: Message[] = [];
  receiver.subscribe('coord.control', (message) => got.push(message));
  new Bus({ jobId: 'j', transport: network.connect(), key }).publish('coord.control', control);
  new Bus({ jobId: 'j', transport: network.connect() }).publish('coord.control', control);
  new Bus({ jobId: 'j', transport: network.connect(), key: newJobKey() }).publish('coord.control', control);
  await settle();
  assert.deepEqual(got, [control]);
  assert.equal(receiver.stats.rejected.forged + receiver.stats.rejected.unsigned, 2);
  assert.match(receiver.rejectionSummary()!, /2 without the job key's signature or replayed/);
  assert.ok(logs.some((line) => /dropped a message \(forged\) on gh\.j\.coord\.control: its signature is not the job key's/.test(line)), logs.join('\n'));
});

test('signed bus - a frame captured and published again is dropped as a replay', async () => {
  const network = new LocalNetwork();
  const key = newJobKey();
  const receiver = new Bus({ jobId: 'j', transport: network.connect(), key });
  const got: Message[] = [];
  receiver.subscribe('coord.control', (message) => got.push(message));
  const spy = network.connect();
  const captured: Uint8Array[] = [];
  spy.subscribe('gh.j.coord.control', (incoming) => captured.push(Uint8Array.from(incoming.data)));
  new Bus({ jobId: 'j', transport: network.connect(), key }).publish('coord.control', control);
  await settle();
  spy.publish('gh.j.coord.control', captured[0]!);
  await settle();
  assert.equal(got.length, 1);
  assert.equal(receiver.stats.rejected.replayed, 1);
});

test('signed bus - fake first chunks without the key reserve nothing: a real large message still arrives', async () => {
  const network = new LocalNetwork(1024);
  const key = newJobKey();
  const receiver = new Bus({ jobId: 'j', transport: network.connect(), key, maxMessageBytes: 64 * 1024 });
  const got: Message[] = [];
  receiver.subscribe('coord.fatal', (message) => got.push(message));
  // First chunks announcing the whole budget, as a client of the server could send them.
  const forger = network.connect();
  const chunker = new Chunker(1024);
  for (let i = 0; i < 100; i++) forger.publish('gh.j.coord.fatal', chunker.frames(new Uint8Array(60 * 1024))[0]!);
  const real: Message = { kind: 'fatal', rank: 3, reason: 'x'.repeat(20_000) };
  new Bus({ jobId: 'j', transport: network.connect(), key, maxMessageBytes: 64 * 1024 }).publish('coord.fatal', real);
  await settle();
  assert.deepEqual(got, [real]);
  assert.equal(receiver.stats.rejected.oversized + receiver.stats.rejected.chunk, 0, 'a fake chunk reached the reassembler');
  assert.ok(receiver.stats.rejected.forged >= 100);
});

test('signed bus - request and reply are signed both ways; a reply without the key is refused', async () => {
  const network = new LocalNetwork();
  const key = newJobKey();
  const coordinator = new Bus({ jobId: 'j', transport: network.connect(), key });
  coordinator.subscribe('coord.control', (message, context) => {
    if (message.kind === 'control') coordinator.respond(context, { kind: 'control-reply', ok: true, command: message.command, message: 'paused' });
  });
  const ctl = new Bus({ jobId: 'j', transport: network.connect(), key });
  const answer = await ctl.request('coord.control', control, 1000);
  assert.equal(answer.kind, 'control-reply');
  // Without the key the request never reaches the handler: no answer comes.
  await assert.rejects(new Bus({ jobId: 'j', transport: network.connect() }).request('coord.control', control, 300), TransportTimeoutError);
  // A responder without the key (it answers whatever it sees, with a frame of its own): its reply is refused.
  const impostor = network.connect();
  const unsigned = new Bus({ jobId: 'j', transport: network.connect() });
  const frame = await new Promise<Uint8Array>((resolve) => {
    const spy = network.connect();
    spy.subscribe('gh.j.coord.spy', (incoming) => resolve(Uint8Array.from(incoming.data)));
    unsigned.publish('coord.spy', { kind: 'control-reply', ok: true, command: 'stop', message: 'ok' });
  });
  impostor.subscribe('gh.j.coord.other', (incoming) => impostor.publish(incoming.reply!, frame));
  await assert.rejects(ctl.request('coord.other', control, 1000), /not signed with the job's key/);
});
