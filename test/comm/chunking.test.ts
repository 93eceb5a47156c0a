// Tests: chunk frames and the reassembler: sizes around the limit, lost/duplicated/reordered/foreign
// chunks, bounds on total size, and the timeout for incomplete messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHUNK_HEADER_BYTES, Chunker, Reassembler, parseFrame, type ChunkHeader } from '../../src/comm/chunking.ts';
import { eventually } from '../support/eventually.ts';

const MAX_PAYLOAD = 100;
const CHUNK_BYTES = MAX_PAYLOAD - CHUNK_HEADER_BYTES;

function payload(length: number, seed = 1): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 7) & 0xff;
  return bytes;
}

type Chunk = { header: ChunkHeader; bytes: Uint8Array };

function chunksOf(chunker: Chunker, bytes: Uint8Array): Chunk[] {
  return chunker.frames(bytes).map((frame) => {
    const parsed = parseFrame(frame);
    assert.equal(parsed.type, 'chunk');
    return parsed as Chunk & { type: 'chunk' };
  });
}

function feed(reassembler: Reassembler, chunks: Chunk[]): Uint8Array[] {
  const complete: Uint8Array[] = [];
  for (const chunk of chunks) {
    const result = reassembler.accept(chunk.header, chunk.bytes);
    if (result.status === 'complete') complete.push(result.bytes);
  }
  return complete;
}

test('messages around the limit: whole up to max_payload, chunked above, every frame fits', () => {
  const chunker = new Chunker(MAX_PAYLOAD);
  // A whole frame adds one type byte, so the largest whole message is max_payload - 1.
  for (const [length, frames] of [[0, 1], [MAX_PAYLOAD - 2, 1], [MAX_PAYLOAD - 1, 1], [MAX_PAYLOAD, 2], [MAX_PAYLOAD + 1, 2], [10 * MAX_PAYLOAD, Math.ceil((10 * MAX_PAYLOAD) / CHUNK_BYTES)]]) {
    const bytes = payload(length);
    const out = chunker.frames(bytes);
    assert.equal(out.length, frames, `${length} bytes`);
    for (const frame of out) assert.ok(frame.byteLength <= MAX_PAYLOAD);
    const reassembler = new Reassembler();
    const parsed = out.map(parseFrame);
    if (frames === 1) {
      assert.equal(parsed[0].type, 'whole');
      assert.deepEqual((parsed[0] as { bytes: Uint8Array }).bytes, bytes);
    } else {
      const complete = feed(reassembler, parsed as Array<Chunk & { type: 'chunk' }>);
      assert.deepEqual(complete, [bytes]);
      assert.equal(reassembler.pendingMessages, 0);
    }
  }
});

test('each message gets its own id and interleaved messages from two senders both complete', () => {
  const alice = new Chunker(MAX_PAYLOAD);
  const bob = new Chunker(MAX_PAYLOAD);
  const a1 = chunksOf(alice, payload(450, 1));
  const a2 = chunksOf(alice, payload(300, 2));
  const b1 = chunksOf(bob, payload(500, 3));
  assert.notEqual(a1[0].header.counter, a2[0].header.counter);
  const interleaved: Chunk[] = [];
  for (let i = 0; i < 7; i++) for (const list of [a1, b1, a2]) if (list[i] !== undefined) interleaved.push(list[i]);
  const reassembler = new Reassembler();
  const complete = feed(reassembler, interleaved);
  assert.equal(complete.length, 3);
  assert.deepEqual(new Set(complete.map((b) => b.length)), new Set([450, 300, 500]));
  assert.deepEqual(complete.find((b) => b.length === 500), payload(500, 3));
  assert.equal(reassembler.droppedMessages, 0);
});

function dropsOf(run: (reassembler: Reassembler) => Uint8Array[]): { complete: Uint8Array[]; drops: string[]; reassembler: Reassembler } {
  const drops: string[] = [];
  const reassembler = new Reassembler({ onDrop: (reason, detail) => drops.push(`${reason}: ${detail}`) });
  return { complete: run(reassembler), drops, reassembler };
}

test('a lost chunk drops the message once, and the next message still arrives', () => {
  const chunker = new Chunker(MAX_PAYLOAD);
  const lossy = chunksOf(chunker, payload(600));
  const next = chunksOf(chunker, payload(400, 9));
  const { complete, drops } = dropsOf((r) => feed(r, [...lossy.slice(0, 3), ...lossy.slice(4), ...next]));
  assert.deepEqual(complete, [payload(400, 9)]);
  assert.equal(drops.length, 1);
  assert.match(drops[0], /^chunk: .*expected chunk 3\/8.*got chunk 4\/8/);
});

test('a lost first chunk counts the orphaned rest as one dropped message', () => {
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  const { complete, drops } = dropsOf((r) => feed(r, chunks.slice(1)));
  assert.deepEqual(complete, []);
  assert.equal(drops.length, 1);
  assert.match(drops[0], /chunk 1\/8 .* arrived without its earlier chunks/);
});

test('a duplicated chunk never yields wrong data', () => {
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  const { complete, drops } = dropsOf((r) => feed(r, [...chunks.slice(0, 3), chunks[2], ...chunks.slice(3)]));
  assert.deepEqual(complete, []);
  assert.equal(drops.length, 1);
});

test('reordered chunks never yield wrong data', () => {
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  const reordered = [chunks[0], chunks[2], chunks[1], ...chunks.slice(3)];
  const { complete, drops } = dropsOf((r) => feed(r, reordered));
  assert.deepEqual(complete, []);
  assert.equal(drops.length, 1);
});

test('a foreign chunk claiming the same message id with another count or total is refused', () => {
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  const forged = { header: { ...chunks[1].header, totalBytes: 601 }, bytes: chunks[1].bytes };
  const { complete, drops } = dropsOf((r) => feed(r, [chunks[0], forged, ...chunks.slice(1)]));
  assert.deepEqual(complete, []);
  assert.equal(drops.length, 1);
  assert.match(drops[0], /of 600 bytes, got chunk 1\/8 of 601 bytes/);
});

test('chunks carrying more or fewer bytes than announced are refused', () => {
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  const padded = chunks.map((c, i) => (i === 2 ? { header: c.header, bytes: payload(CHUNK_BYTES + 5) } : c));
  assert.match(dropsOf((r) => feed(r, padded)).drops[0] ?? '', /carry more than the announced 600 bytes/);
  const short = chunks.map((c, i) => (i === 2 ? { header: c.header, bytes: c.bytes.subarray(1) } : c));
  assert.match(dropsOf((r) => feed(r, short)).drops[0] ?? '', /carry 599 bytes, announced 600/);
});

test('headers out of range and totals above maxMessageBytes are refused before buffering', () => {
  const header: ChunkHeader = { senderHigh: 1, senderLow: 2, counter: 3, index: 0, count: 4, totalBytes: 1000 };
  const drops: string[] = [];
  const reassembler = new Reassembler({ maxMessageBytes: 999, onDrop: (reason) => drops.push(reason) });
  assert.equal(reassembler.accept(header, payload(10)).status, 'dropped');
  assert.equal(reassembler.accept({ ...header, counter: 4, count: 0, totalBytes: 10 }, payload(10)).status, 'dropped');
  assert.equal(reassembler.accept({ ...header, counter: 5, index: 4, totalBytes: 10 }, payload(10)).status, 'dropped');
  assert.deepEqual(drops, ['oversized', 'chunk', 'chunk']);
  assert.equal(reassembler.pendingBytes, 0);
  reassembler.dispose();
});

test('an incomplete message is dropped after the timeout and its memory released', () => {
  let now = 1000;
  const drops: string[] = [];
  const reassembler = new Reassembler({ timeoutMs: 30_000, now: () => now, onDrop: (_reason, detail) => drops.push(detail) });
  const chunks = chunksOf(new Chunker(MAX_PAYLOAD), payload(600));
  feed(reassembler, chunks.slice(0, 5));
  assert.equal(reassembler.pendingBytes, 5 * CHUNK_BYTES);
  now += 29_999;
  assert.equal(reassembler.sweep(), 0);
  now += 1;
  assert.equal(reassembler.sweep(), 1);
  assert.equal(reassembler.pendingBytes, 0);
  assert.match(drops[0], /incomplete after 30000 ms: got 5 of 8 chunks/);
  // A straggler of the expired message is discarded without counting it twice.
  assert.deepEqual(feed(reassembler, chunks.slice(5)), []);
  assert.equal(drops.length, 1);
  reassembler.dispose();
});

test('the sweep runs on its own timer', async () => {
  const drops: string[] = [];
  const reassembler = new Reassembler({ timeoutMs: 40, onDrop: (_reason, detail) => drops.push(detail) });
  feed(reassembler, chunksOf(new Chunker(MAX_PAYLOAD), payload(600)).slice(0, 2));
  await eventually('the sweep timer dropping the incomplete message', () => drops.length > 0);
  assert.equal(drops.length, 1);
  assert.equal(reassembler.pendingMessages, 0);
  reassembler.dispose();
});

test('frames that are empty, of unknown type or shorter than the chunk header are reported as bad', () => {
  assert.deepEqual(parseFrame(new Uint8Array(0)), { type: 'bad', detail: 'empty payload' });
  assert.match((parseFrame(new Uint8Array([7, 1])) as { detail: string }).detail, /unknown frame type 7/);
  assert.match((parseFrame(new Uint8Array([1, 0, 0])) as { detail: string }).detail, /shorter than its 25-byte header/);
  assert.throws(() => new Chunker(CHUNK_HEADER_BYTES), /max_payload 25 is too small/);
});

test('chunk frames are self-contained copies: later changes to the source do not leak in', () => {
  const source = payload(300);
  const frames = new Chunker(MAX_PAYLOAD).frames(source);
  source.fill(0);
  const complete = feed(new Reassembler(), frames.map((f) => parseFrame(f) as Chunk & { type: 'chunk' }));
  assert.deepEqual(complete, [payload(300)]);
});
