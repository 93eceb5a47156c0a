/**
 * The data plane (comm/data-plane.ts): real TCP links between ranks, addresses and the bus' other
 * traffic over the in-process transport. Process groups give the same bits over it as over the bus and
 * send nothing through the bus but their hellos; connections from outside the job (garbage, a wrong key,
 * another job's proof, a frame before the proof) are refused and counted, and the job's traffic goes
 * on; a link that breaks is reported, one that ends cleanly is not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { Bus } from '../../src/comm/bus.ts';
import { encodeValue } from '../../src/comm/codec.ts';
import { ProcessGroup } from '../../src/comm/collectives.ts';
import { DataPlane } from '../../src/comm/data-plane.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { newJobKey } from '../../src/comm/frame-signing.ts';
import { dataPlaneKey } from '../../src/launcher/data-plane-setup.ts';
import { eventually } from '../support/eventually.ts';

interface Ranks {
  buses: Bus[];
  planes: DataPlane[];
  groups: ProcessGroup[];
  broken: string[];
  logs: string[];
  close(): Promise<void>;
}

async function ranksWithDataPlanes(size: number, keys: Uint8Array[] = [], jobId = 'data-plane-test'): Promise<Ranks> {
  const network = new LocalNetwork(64 * 1024);
  const key = randomBytes(32);
  const logs: string[] = [];
  const broken: string[] = [];
  const ranks = Array.from({ length: size }, (_, rank) => rank);
  const buses = ranks.map(() => new Bus({ jobId, transport: network.connect(), log: (line) => logs.push(line) }));
  const planes = await Promise.all(
    ranks.map((rank) =>
      DataPlane.listen({ bus: buses[rank], jobId, rank, key: keys[rank] ?? key, host: '127.0.0.1', log: (line) => logs.push(line), onBroken: (peer, reason) => broken.push(`${rank}<-${peer}: ${reason}`) }),
    ),
  );
  const groups = ranks.map((rank) => new ProcessGroup({ bus: buses[rank], name: 'world', ranks, rank, timeoutMs: 5000, dataPlane: planes[rank], log: (line) => logs.push(line) }));
  await Promise.all(groups.map((group) => group.ready()));
  return {
    buses,
    planes,
    groups,
    broken,
    logs,
    async close() {
      for (const group of groups) group.close();
      await Promise.all(planes.map((plane) => plane.close()));
      await Promise.all(buses.map((bus) => bus.close()));
    },
  };
}

test('data plane - sends, large tensors and all-reduces go over the direct links, bit for bit what the bus gives', async () => {
  const world = await ranksWithDataPlanes(3);
  try {
    const sentBefore = world.buses.map((bus) => bus.stats.sent);
    // 8 MB: far above the bus' 64 KB payloads, one frame on a link.
    const big = Float32Array.from({ length: 2 * 1024 * 1024 }, (_, i) => Math.sin(i) * 1e3);
    world.groups[0].send(2, 'act.0.0.1', big, [2, 1024, 1024]);
    const received = await world.groups[2].recv(0, 'act.0.0.1');
    assert.deepEqual(received.shape, [2, 1024, 1024]);
    assert.ok(Buffer.from(received.values.buffer, received.values.byteOffset, received.values.byteLength).equals(Buffer.from(big.buffer)));

    const inputs = [0, 1, 2].map((rank) => Float32Array.from({ length: 300_000 }, (_, i) => Math.cos(i * (rank + 1)) / (rank + 1)));
    const overLinks = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank].slice(), 'sum', { algorithm: 'ring' })));
    const direct = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank].slice(), 'sum', { algorithm: 'direct' })));
    assert.deepEqual(world.buses.map((bus) => bus.stats.sent), sentBefore, 'a piece went through the bus');
    assert.ok(world.planes.every((plane) => plane.stats.sent > 0 && plane.stats.received > 0));

    // The same collectives over the bus alone: the same bits.
    const network = new LocalNetwork(64 * 1024);
    const buses = [0, 1, 2].map(() => new Bus({ jobId: 'data-plane-test', transport: network.connect(), log: () => {} }));
    const plain = [0, 1, 2].map((rank) => new ProcessGroup({ bus: buses[rank], name: 'world', ranks: [0, 1, 2], rank, timeoutMs: 5000, log: () => {} }));
    try {
      const overBus = await Promise.all(plain.map((group, rank) => group.allReduce(inputs[rank].slice(), 'sum', { algorithm: 'ring' })));
      for (let rank = 0; rank < 3; rank++) {
        assert.deepEqual(overLinks[rank], overBus[rank]);
        assert.deepEqual(overLinks[rank], overLinks[0], 'ranks disagree');
        assert.deepEqual(direct[rank], direct[0]);
      }
    } finally {
      for (const group of plain) group.close();
      await Promise.all(buses.map((bus) => bus.close()));
    }
    assert.deepEqual(world.broken, []);
  } finally {
    await world.close();
  }
  assert.equal(world.broken.length, 0, `a clean end was reported as a broken link: ${world.broken.join('; ')}`);
});

/** Connects to `plane` and runs `conversation` on the raw socket; resolves when the listener closes it. */
function stranger(plane: DataPlane, conversation: (socket: Socket, challenge: Promise<Buffer>) => void): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(plane.address.port, plane.address.host);
    const challenge = new Promise<Buffer>((resolveChallenge) => socket.once('data', (chunk: Buffer) => resolveChallenge(chunk.subarray(5))));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
    conversation(socket, challenge);
  });
}

function frame(type: number, body: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + body.byteLength);
  out.writeUInt32LE(1 + body.byteLength, 0);
  out[4] = type;
  out.set(body, 5);
  return out;
}

test('data plane - connections from outside the job are refused and counted, and the job\'s links go on', async () => {
  const world = await ranksWithDataPlanes(2);
  try {
    const target = world.planes[1];
    const before = target.stats.rejected;
    // Garbage, a frame too large for a proof, a message before the proof, a wrong key, another job's proof.
    await stranger(target, (socket) => socket.write(randomBytes(64)));
    await stranger(target, (socket) => socket.write(frame(2, randomBytes(4096))));
    await stranger(target, (socket) => socket.write(frame(0, randomBytes(32))));
    await stranger(target, (socket, challenge) =>
      void challenge.then(() => socket.write(frame(2, encodeValue({ kind: 'data-plane-proof', job: 'data-plane-test', from: 0, to: 1, proof: randomBytes(32) })))),
    );
    await stranger(target, (socket, challenge) =>
      void challenge.then(() => socket.write(frame(2, encodeValue({ kind: 'data-plane-proof', job: 'another-job', from: 0, to: 1, proof: randomBytes(32) })))),
    );
    assert.equal(target.stats.rejected - before, 5);
    assert.equal(world.logs.filter((line) => /refused a connection/.test(line)).length, 5);
    assert.ok(world.logs.some((line) => /a wrong proof for rank 0/.test(line)));
    assert.ok(world.logs.some((line) => /the proof is for job "another-job"/.test(line)));
    // The job's own link still carries its messages.
    const values = Float32Array.from({ length: 1000 }, (_, i) => i);
    world.groups[0].send(1, 'after', values);
    assert.deepEqual((await world.groups[1].recv(0, 'after')).values, values);
    assert.deepEqual(world.broken, []);
  } finally {
    await world.close();
  }
});

test('data plane - a rank with another key cannot link: its tensors go through the bus (logged), still correct', async () => {
  const world = await ranksWithDataPlanes(2, [randomBytes(32), randomBytes(32)]);
  try {
    assert.ok(world.logs.some((line) => /cannot reach rank 1 .*its tensors go through NATS/.test(line)), world.logs.join('\n'));
    const values = Float32Array.from({ length: 5000 }, (_, i) => i / 7);
    world.groups[0].send(1, 'fallback', values);
    assert.deepEqual((await world.groups[1].recv(0, 'fallback')).values, values);
    assert.equal(world.planes[0].stats.sent, 0);
  } finally {
    await world.close();
  }
});

test('data plane - a link that breaks while the job runs is reported naming the peer; a rank waiting on it times out', async () => {
  const world = await ranksWithDataPlanes(2);
  try {
    const sockets = (world.planes[1] as unknown as { incoming: Set<Socket> }).incoming;
    assert.equal(sockets.size, 1);
    for (const socket of sockets) socket.destroy();
    await eventually(() => `both ends reporting the break (${world.broken.join('; ')})`, () => world.broken.length >= 2);
    assert.equal(world.broken.length, 2, world.broken.join('; '));
    assert.ok(world.broken.some((line) => line.startsWith('1<-0')) && world.broken.some((line) => line.startsWith('0<-1')));
  } finally {
    await world.close();
  }
});

test("data plane - its key derives from the job key and id: every launcher of a job agrees without a word, another job's differs (another key, or the same key file and another id), and it is not the job key", () => {
  const jobKey = newJobKey();
  const key = dataPlaneKey(jobKey, 'job-a');
  assert.match(key, /^[0-9a-f]{64}$/);
  assert.equal(dataPlaneKey(Buffer.from(jobKey), 'job-a'), key);
  assert.notEqual(dataPlaneKey(newJobKey(), 'job-a'), key);
  assert.notEqual(dataPlaneKey(jobKey, 'job-b'), key);
  assert.notEqual(key, jobKey.toString('hex'));
});
