// Tests: a completed message's buffer handed back to the reassembler carries the next message, and
// through the bus, tensors already delivered stay intact while later chunked messages reuse memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bus } from '../../src/comm/bus.ts';
import { Chunker, Reassembler, parseFrame, type ChunkHeader } from '../../src/comm/chunking.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';

const MAX_PAYLOAD = 64;

function assemble(reassembler: Reassembler, chunker: Chunker, bytes: Uint8Array): Uint8Array {
  let complete: Uint8Array | undefined;
  for (const frame of chunker.frames(bytes)) {
    const parsed = parseFrame(frame) as { type: 'chunk'; header: ChunkHeader; bytes: Uint8Array };
    assert.equal(parsed.type, 'chunk');
    const result = reassembler.accept(parsed.header, parsed.bytes);
    if (result.status === 'complete') complete = result.bytes;
  }
  assert.ok(complete !== undefined, 'the message did not complete');
  return complete;
}

const filled = (length: number, value: number) => new Uint8Array(length).fill(value);

test('reassembler - a recycled buffer carries the next message that fits; a larger one or none recycled gets fresh memory', () => {
  const chunker = new Chunker(MAX_PAYLOAD);
  const reassembler = new Reassembler();
  const first = assemble(reassembler, chunker, filled(500, 1));
  const unrecycled = assemble(reassembler, chunker, filled(500, 2));
  assert.notEqual(unrecycled.buffer, first.buffer);
  reassembler.recycle(first);
  const second = assemble(reassembler, chunker, filled(300, 3));
  assert.equal(second.buffer, first.buffer, 'the smaller message reuses the recycled memory');
  assert.deepEqual(second, filled(300, 3));
  reassembler.recycle(second);
  const larger = assemble(reassembler, chunker, filled(900, 4));
  assert.notEqual(larger.buffer, first.buffer, 'a message larger than the spare gets its own buffer');
  assert.deepEqual(larger, filled(900, 4));
  // Only memory the reassembler allocated itself comes back.
  const foreign = filled(2000, 9);
  reassembler.recycle(foreign);
  assert.notEqual(assemble(reassembler, chunker, filled(100, 5)).buffer, foreign.buffer);
  assert.deepEqual(foreign, filled(2000, 9));
});

test('bus - tensors delivered earlier stay intact while later chunked pieces arrive', async () => {
  const network = new LocalNetwork(256);
  const buses = [0, 1].map(() => new Bus({ jobId: 'recycle', transport: network.connect(), log: () => {} }));
  const groups = buses.map((bus, rank) => new ProcessGroup({ bus, name: 'pair', ranks: [0, 1], rank, timeoutMs: 5000 }));
  try {
    await Promise.all(groups.map((group) => group.ready()));
    const tensors = [1, 2, 3, 4].map((k) => Float32Array.from({ length: 200 - 10 * k }, (_, i) => k * 1000 + i));
    const received: Float32Array[] = [];
    for (const tensor of tensors) {
      groups[0].send(1, 'data', tensor);
      received.push((await groups[1].recv(0, 'data')).values);
    }
    assert.deepEqual(received, tensors);
  } finally {
    for (const group of groups) group.close();
    await Promise.all(buses.map((bus) => bus.close()));
  }
});
