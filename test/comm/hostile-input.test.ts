// Tests: hostile bytes at the bottom of the bus: msgpack that declares huge lengths, nests a million
// levels deep or uses msgpackr's extensions; chunk headers that forge their totals; and the bus counting
// and summarizing everything it refused. Nothing throws, nothing pollutes a prototype, nothing reserves
// more memory than a bound, and the decoder still works afterwards.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Bus, decodeAndValidate } from '../../src/comm/bus.ts';
import { CHUNK_HEADER_BYTES, Chunker, Reassembler, parseFrame, type ChunkHeader } from '../../src/comm/chunking.ts';
import { encodeEnvelope } from '../../src/comm/codec.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { PROTOCOL_VERSION, type Envelope } from '../../src/protocol/messages.ts';

const JOB = 'job-h';
const fatal: Envelope = { kind: 'fatal', rank: 0, reason: 'x', v: PROTOCOL_VERSION, job: JOB };
const utf8 = (text: string) => [...Buffer.from(text)];
const fixstr = (text: string) => [0xa0 | text.length, ...utf8(text)];

function repeated(bytes: number[], times: number): Uint8Array {
  const out = new Uint8Array(bytes.length * times);
  for (let i = 0; i < times; i++) out.set(bytes, i * bytes.length);
  return out;
}

const HOSTILE_MSGPACK: Record<string, Uint8Array> = {
  'a million nested arrays': repeated([0x91], 1 << 20),
  'a million nested maps': repeated([0x81, 0xa0], 1 << 19),
  'array32 of 4 G elements': Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0),
  'map32 of 4 G entries': Uint8Array.of(0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0),
  'str32 of 4 GB': Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xff, 0x41),
  'bin32 of 4 GB': Uint8Array.of(0xc6, 0xff, 0xff, 0xff, 0xff, 0x41),
  'ext32 of 4 GB': Uint8Array.of(0xc9, 0xff, 0xff, 0xff, 0xff, 0x74, 0),
  'a map of 1 M entries declared, 3 given': Uint8Array.of(0xdf, 0x00, 0x0f, 0x42, 0x40, 0xa1, 0x61, 0xc0),
  'structured-clone pointer to nothing': Uint8Array.of(0xd6, 0x70, 0, 0, 0, 9),
  'bundled strings past the end': Uint8Array.of(0xd6, 0x62, 0x7f, 0xff, 0xff, 0xff, 0xc0),
  'a RegExp that does not compile': Uint8Array.of(0xd4, 0x78, 0x00, 0x92, 0xa1, 0x28, 0xa0),
  'an Error extension': Uint8Array.of(0xd4, 0x65, 0x00, 0x93, ...fixstr('Foo'), ...fixstr('x'), 0xc0),
  'a typed array of a misaligned length': Uint8Array.of(0xc7, 4, 0x74, 10, 1, 2, 3),
  'an unknown extension': Uint8Array.of(0xd4, 0x01, 0x00),
  '__proto__ key': Uint8Array.of(0x81, ...fixstr('__proto__'), 0x81, ...fixstr('polluted'), 0xc3),
  'constructor.prototype keys': Uint8Array.of(0x81, 0xab, ...utf8('constructor'), 0x81, 0xa9, ...utf8('prototype'), 0x81, ...fixstr('polluted'), 0xc3),
  'a nil-filled array as long as its bytes': (() => {
    const bytes = new Uint8Array(5 + 500_000).fill(0xc0);
    bytes.set([0xdd, 0x00, 0x07, 0xa1, 0x20]);
    return bytes;
  })(),
};

test('hostile msgpack - refused or harmless in bounded time, no prototype polluted, and the decoder still decodes', () => {
  const good = encodeEnvelope(fatal);
  for (const [name, bytes] of Object.entries(HOSTILE_MSGPACK)) {
    const started = performance.now();
    const result = decodeAndValidate(bytes, JOB);
    const ms = performance.now() - started;
    assert.equal(result.ok, false, name);
    assert.ok(ms < 2000, `${name}: ${ms.toFixed(0)} ms`);
    assert.equal(({} as { polluted?: unknown }).polluted, undefined, name);
    assert.equal((Object.prototype as { polluted?: unknown }).polluted, undefined, name);
    // A throw deep inside msgpackr must not leave its shared state broken for the next message.
    assert.deepEqual(decodeAndValidate(good, JOB), { ok: true, envelope: fatal }, `after ${name}`);
  }
});

const header = (overrides: Partial<ChunkHeader>): ChunkHeader => ({ senderHigh: 7, senderLow: 7, counter: 1, index: 0, count: 2, totalBytes: 100, ...overrides });

test('hostile chunks - a first chunk cannot announce more than its count of chunks of its size can carry', () => {
  const drops: string[] = [];
  const reassembler = new Reassembler({ onDrop: (reason, detail) => drops.push(`${reason}: ${detail}`) });
  // 10 bytes and 2 chunks make at most 20 bytes, and more than 10.
  assert.equal(reassembler.accept(header({ totalBytes: 400 * 1024 * 1024 }), new Uint8Array(10)).status, 'dropped');
  assert.equal(reassembler.accept(header({ counter: 2, totalBytes: 10 }), new Uint8Array(10)).status, 'dropped');
  assert.equal(reassembler.accept(header({ counter: 3, count: 1, totalBytes: 11 }), new Uint8Array(10)).status, 'dropped');
  assert.equal(reassembler.pendingMessages, 0);
  assert.match(drops[0], /^chunk: message 7:7:1: 2 chunks of 10 bytes cannot make the announced 419430400 bytes$/);
  // What a real sender cuts still passes.
  const chunks = new Chunker(CHUNK_HEADER_BYTES + 10).frames(new Uint8Array(45).fill(3)).map((frame) => parseFrame(frame) as { header: ChunkHeader; bytes: Uint8Array });
  const results = chunks.map((chunk) => reassembler.accept(chunk.header, chunk.bytes));
  assert.deepEqual(results.map((r) => r.status), ['pending', 'pending', 'pending', 'pending', 'complete']);
  reassembler.dispose();
});

test('hostile chunks - incomplete messages may reserve at most maxPendingBytes; finished and dropped ones give it back', () => {
  const drops: string[] = [];
  const reassembler = new Reassembler({ maxMessageBytes: 1000, maxPendingBytes: 1500, maxSenderPendingBytes: 3000, onDrop: (reason, detail) => drops.push(`${reason}: ${detail}`) });
  const first = (counter: number) => reassembler.accept(header({ counter, count: 2, totalBytes: 1000 }), new Uint8Array(500)).status;
  assert.equal(first(1), 'pending');
  assert.equal(first(2), 'dropped');
  assert.match(drops[0], /^oversized: message 7:7:2 of 1000 bytes would bring incomplete messages to 2000 bytes, above maxPendingBytes 1500$/);
  // The first one completes: its reservation is free again.
  assert.equal(reassembler.accept(header({ counter: 1, index: 1, count: 2, totalBytes: 1000 }), new Uint8Array(500)).status, 'complete');
  assert.equal(first(3), 'pending');
  // A lost chunk drops it: free again.
  assert.equal(reassembler.accept(header({ counter: 3, index: 1, count: 2, totalBytes: 999 }), new Uint8Array(499)).status, 'dropped');
  assert.equal(first(4), 'pending');
  reassembler.dispose();
});

test('hostile chunks - one sender\'s incomplete messages take at most its own budget; another sender\'s still fit', () => {
  const drops: string[] = [];
  const reassembler = new Reassembler({ maxMessageBytes: 1000, onDrop: (reason, detail) => drops.push(`${reason}: ${detail}`) });
  const first = (senderLow: number, counter: number) => reassembler.accept(header({ senderLow, counter, count: 2, totalBytes: 600 }), new Uint8Array(300)).status;
  assert.equal(first(1, 1), 'pending');
  // Sender 1 (stalled, or sending fake first chunks) is over its budget; sender 2's real message is not starved.
  assert.equal(first(1, 2), 'dropped');
  assert.match(drops[0]!, /^oversized: message 7:1:2 of 600 bytes would bring sender 7:1's incomplete messages to 1200 bytes, above maxSenderPendingBytes 1000$/);
  assert.equal(first(2, 1), 'pending');
  assert.equal(reassembler.accept(header({ senderLow: 2, counter: 1, index: 1, count: 2, totalBytes: 600 }), new Uint8Array(300)).status, 'complete');
  // Sender 1's stalled message expires: its budget comes back.
  assert.equal(reassembler.sweep(Date.now() + reassembler.timeoutMs + 1), 1);
  assert.equal(first(1, 3), 'pending');
  reassembler.dispose();
});

test('bus - closing logs how many messages it ignored, malformed apart from other jobs and protocol versions; quoted bytes lose control codes', async () => {
  const network = new LocalNetwork(1024);
  const logs: string[] = [];
  const bus = new Bus({ jobId: JOB, transport: network.connect(), log: (line) => logs.push(line) });
  bus.subscribe('x', () => {});
  const raw = network.connect();
  const whole = (bytes: Uint8Array) => Uint8Array.of(0, ...bytes);
  raw.publish(`gh.${JOB}.x`, whole(encodeEnvelope({ ...fatal, job: 'another-job' })));
  raw.publish(`gh.${JOB}.x`, whole(encodeEnvelope({ ...fatal, v: PROTOCOL_VERSION + 1 })));
  raw.publish(`gh.${JOB}.x`, whole(encodeEnvelope({ ...fatal, v: PROTOCOL_VERSION + 1 })));
  raw.publish(`gh.${JOB}.x`, whole(HOSTILE_MSGPACK['str32 of 4 GB']));
  raw.publish(`gh.${JOB}.x`, Uint8Array.of(9));
  raw.publish(`gh.${JOB}.x`, whole(encodeEnvelope({ ...fatal, kind: '__proto__' } as unknown as Envelope)));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(bus.rejectionSummary(), 'ignored 3 malformed messages, 3 from other jobs or protocol versions (version 2, job 1, malformed 2, unknown-kind 1)');
  await bus.close();
  assert.equal(logs.at(-1), `bus ${JOB}: ignored 3 malformed messages, 3 from other jobs or protocol versions (version 2, job 1, malformed 2, unknown-kind 1)`);
  // A sender's bytes quoted in a log line (here a RegExp extension that does not compile) lose their
  // terminal control codes.
  const escape = '(\u001b[2J\u001b]0;owned\u0007';
  const bus2Logs: string[] = [];
  const bus2 = new Bus({ jobId: JOB, transport: network.connect(), log: (line) => bus2Logs.push(line) });
  bus2.subscribe('x', () => {});
  raw.publish(`gh.${JOB}.x`, whole(Uint8Array.of(0xd4, 0x78, 0x00, 0x92, ...fixstr(escape), 0xa0)));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.match(bus2Logs[0] ?? '', /dropped a message \(malformed\) on gh\.job-h\.x: undecodable msgpack .*Invalid regular expression: \/\(\?\[2J\?\]0;owned\?\//);
  assert.ok(bus2Logs.every((line) => !/[\u0000-\u001f]/.test(line)), JSON.stringify(bus2Logs));
  await bus2.close();
  // A bus that refused nothing says nothing.
  const quiet: string[] = [];
  await new Bus({ jobId: JOB, transport: network.connect(), log: (line) => quiet.push(line) }).close();
  assert.deepEqual(quiet, []);
});
