// Tests: process groups over the in-process transport, many simulated ranks, each with its own Bus.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Bus } from '../../src/comm/bus.ts';
import {
  CollectiveMismatchError,
  CollectiveTimeoutError,
  ProcessGroup,
  chooseAllReduceAlgorithm,
  segmentsInFlight,
  type AllReduceAlgorithm,
} from '../../src/comm/collectives.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { toWireTensor } from '../../src/comm/tensor-wire.ts';

interface World {
  buses: Bus[];
  groups: ProcessGroup[];
  logs: string[];
  close(): Promise<void>;
}

interface WorldOptions {
  name?: string;
  timeoutMs?: number;
  algorithm?: AllReduceAlgorithm;
  /** Small by default so that any tensor above 256 floats crosses in chunks. */
  maxPayload?: number;
  segmentElements?: number;
  allReduceInFlightBytes?: number;
}

function makeWorld(size: number, options: WorldOptions = {}): World {
  const network = new LocalNetwork(options.maxPayload ?? 1024);
  const logs: string[] = [];
  const ranks = Array.from({ length: size }, (_, rank) => rank);
  const buses = ranks.map(() => new Bus({ jobId: 'collectives-test', transport: network.connect(), log: (line) => logs.push(line) }));
  const groups = ranks.map(
    (rank) =>
      new ProcessGroup({
        bus: buses[rank],
        name: options.name ?? 'world',
        ranks,
        rank,
        timeoutMs: options.timeoutMs ?? 5000,
        allReduceAlgorithm: options.algorithm,
        segmentElements: options.segmentElements,
        allReduceInFlightBytes: options.allReduceInFlightBytes,
        log: (line) => logs.push(line),
      }),
  );
  return {
    buses,
    groups,
    logs,
    async close() {
      for (const group of groups) group.close();
      await Promise.all(buses.map((bus) => bus.close()));
    },
  };
}

/** Integer-valued floats (exact in float32 sums at these sizes), different per rank, some negative. */
function integerValues(rank: number, length: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => (rank + 1) * (i + 1) - 3 * rank - (i % 7));
}

/** A small seeded generator (mulberry32) for random floats that are the same on every run. */
function seededFloats(seed: number, length: number): Float32Array {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Float32Array.from({ length }, () => (next() - 0.5) * 10 ** Math.floor(next() * 6 - 3));
}

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

const ALGORITHMS: AllReduceAlgorithm[] = ['direct', 'ring'];

describe('all-reduce', () => {
  for (const algorithm of ALGORITHMS) {
    for (const size of [1, 2, 3, 4, 8]) {
      test(`${algorithm}, ${size} rank(s): exact sums and means for lengths 0..3001, not divisible by the world`, async () => {
        const world = makeWorld(size, { algorithm });
        try {
          for (const length of [0, 1, size - 1, size + 1, 7, 3001]) {
            const inputs = world.groups.map((_, rank) => integerValues(rank, length));
            const expectedSum = Float32Array.from({ length }, (_, i) => inputs.reduce((sum, values) => sum + values[i], 0));
            const sums = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum')));
            const means = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'mean')));
            for (let rank = 0; rank < size; rank++) {
              assert.deepEqual(sums[rank], expectedSum, `sum, rank ${rank}, length ${length}`);
              assert.deepEqual(means[rank], expectedSum.map((sum) => Math.fround(sum / size)), `mean, rank ${rank}, length ${length}`);
            }
          }
          if (size > 1) assert.ok(world.buses[0].stats.chunksSent > 0, 'a 3001-float tensor must cross a 1 KB max_payload in chunks');
        } finally {
          await world.close();
        }
      });
    }

    test(`${algorithm}: max, min and int32 sums (wrapping like int32)`, async () => {
      const world = makeWorld(3, { algorithm });
      try {
        const inputs = [Float32Array.of(1, -5, 3, 0.5), Float32Array.of(2, -7, -1, 0.25), Float32Array.of(0, 4, 3, 0.75)];
        const maxima = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'max')));
        const minima = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'min')));
        const ints = [Int32Array.of(2 ** 31 - 1, 5, -9), Int32Array.of(1, 6, -10), Int32Array.of(0, 7, 11)];
        const intSums = await Promise.all(world.groups.map((group, rank) => group.allReduce(ints[rank], 'sum')));
        for (let rank = 0; rank < 3; rank++) {
          assert.deepEqual(maxima[rank], Float32Array.of(2, 4, 3, 0.75));
          assert.deepEqual(minima[rank], Float32Array.of(0, -7, -1, 0.25));
          assert.deepEqual(intSums[rank], Int32Array.of(-(2 ** 31), 18, -8));
        }
      } finally {
        await world.close();
      }
    });
  }

  test('the size rule: direct for small tensors, ring for large ones', () => {
    assert.equal(chooseAllReduceAlgorithm(10_000_000, 2), 'ring');
    assert.equal(chooseAllReduceAlgorithm(1000, 2), 'direct');
    assert.equal(chooseAllReduceAlgorithm(100, 8), 'direct');
    assert.equal(chooseAllReduceAlgorithm(10_000_000, 3), 'ring');
    assert.equal(chooseAllReduceAlgorithm(1000, 3, 1000), 'ring');
  });

  test('deterministic: repeated runs are bit-identical, every rank holds the same bits, in the documented order', async () => {
    const size = 5;
    const length = 1003;
    const inputs = Array.from({ length: size }, (_, rank) => seededFloats(rank + 11, length));
    const runOnce = async (algorithm: AllReduceAlgorithm) => {
      const world = makeWorld(size, { algorithm });
      try {
        return await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum')));
      } finally {
        await world.close();
      }
    };
    // Direct: ((x0 + x1) + x2) + ... in float32. Ring: chunk k starts at rank k and goes round the ring.
    const direct = new Float32Array(length);
    const ring = new Float32Array(length);
    for (let i = 0; i < length; i++) {
      for (let rank = 0; rank < size; rank++) direct[i] = rank === 0 ? inputs[0][i] : direct[i] + inputs[rank][i];
      let chunk = 0;
      while (chunk + 1 < size && Math.floor(((chunk + 1) * length) / size) <= i) chunk++;
      for (let step = 0; step < size; step++) {
        const rank = (chunk + step) % size;
        ring[i] = step === 0 ? inputs[rank][i] : ring[i] + inputs[rank][i];
      }
    }
    for (const [algorithm, reference] of [['direct', direct], ['ring', ring]] as const) {
      const first = await runOnce(algorithm);
      const second = await runOnce(algorithm);
      for (let rank = 0; rank < size; rank++) {
        assert.deepEqual(bitsOf(first[rank]), bitsOf(reference), `${algorithm}: rank ${rank} against the reference order`);
        assert.deepEqual(bitsOf(second[rank]), bitsOf(first[rank]), `${algorithm}: rank ${rank}, second run`);
      }
    }
    assert.notDeepEqual(bitsOf(direct), bitsOf(ring), 'the two orders should differ somewhere on random floats (else this test proves little)');
  });

  for (const algorithm of ALGORITHMS) {
    test(`${algorithm}: a tensor above the segment size is reduced in segments, exactly, direct bits unchanged`, async () => {
      const size = 3;
      const inputs = [0, 1, 2].map((rank) => integerValues(rank, 1001));
      const floats = [0, 1, 2].map((rank) => seededFloats(rank + 40, 1001));
      const segmented = makeWorld(size, { algorithm, segmentElements: 100 });
      const whole = makeWorld(size, { algorithm });
      try {
        const sums = await Promise.all(segmented.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum')));
        const expected = Float32Array.from({ length: 1001 }, (_, i) => inputs[0][i] + inputs[1][i] + inputs[2][i]);
        for (const sum of sums) assert.deepEqual(sum, expected);
        const inSegments = await Promise.all(segmented.groups.map((group, rank) => group.allReduce(floats[rank], 'mean')));
        const inOne = await Promise.all(whole.groups.map((group, rank) => group.allReduce(floats[rank], 'mean')));
        for (let rank = 1; rank < size; rank++) assert.deepEqual(bitsOf(inSegments[rank]), bitsOf(inSegments[0]));
        if (algorithm === 'direct') assert.deepEqual(bitsOf(inSegments[0]), bitsOf(inOne[0]));
        // 11 segments of at most 100 floats: every message fits a 1 KB payload whole.
        assert.equal(segmented.buses[0].stats.chunksSent, 0);
      } finally {
        await segmented.close();
        await whole.close();
      }
    });
  }

  for (const algorithm of ALGORITHMS) {
    test(`${algorithm}: segments a few at a time (the in-flight budget) give the bits of all at once`, async () => {
      const size = 3;
      const floats = [0, 1, 2].map((rank) => seededFloats(rank + 70, 1001));
      // 400-byte segments (direct: 800 bytes towards a rank, ring: 533): a 1000-byte budget runs them one at a time.
      assert.equal(segmentsInFlight(100, size, algorithm, 1000), 1);
      const windowed = makeWorld(size, { algorithm, segmentElements: 100, allReduceInFlightBytes: 1000 });
      const unbounded = makeWorld(size, { algorithm, segmentElements: 100 });
      try {
        const few = await Promise.all(windowed.groups.map((group, rank) => group.allReduce(floats[rank], 'sum')));
        const all = await Promise.all(unbounded.groups.map((group, rank) => group.allReduce(floats[rank], 'sum')));
        for (let rank = 0; rank < size; rank++) assert.deepEqual(bitsOf(few[rank]), bitsOf(all[rank]));
      } finally {
        await windowed.close();
        await unbounded.close();
      }
    });
  }

  for (const algorithm of ALGORITHMS) {
    test(`${algorithm}: inPlace writes the result into the input and returns it, same bits; without it the input is untouched`, async () => {
      const size = 3;
      const world = makeWorld(size, { algorithm, segmentElements: 100 });
      try {
        const inputs = [0, 1, 2].map((rank) => seededFloats(rank + 90, 501));
        const kept = inputs.map((values) => values.slice());
        const copied = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum')));
        for (let rank = 0; rank < size; rank++) assert.deepEqual(bitsOf(inputs[rank]), bitsOf(kept[rank]), `rank ${rank}'s input after a copying all-reduce`);
        const inPlace = await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum', { inPlace: true })));
        for (let rank = 0; rank < size; rank++) {
          assert.equal(inPlace[rank], inputs[rank], 'the input array itself comes back');
          assert.deepEqual(bitsOf(inPlace[rank]), bitsOf(copied[rank]));
        }
      } finally {
        await world.close();
      }
    });
  }

  test('all-reduce in-flight budget: 100 MB of gradient over NATS stays under max_pending towards a rank', () => {
    // 16 MB segments: ring over 2 ranks queues at most 16 MB of a segment for a rank, so two run at once.
    assert.equal(segmentsInFlight(4 * 1024 * 1024, 2, 'ring'), 2);
    assert.equal(segmentsInFlight(4 * 1024 * 1024, 2, 'direct'), 2);
    assert.equal(segmentsInFlight(4 * 1024 * 1024, 8, 'direct'), 1);
    assert.equal(segmentsInFlight(1024, 2, 'ring'), 8192);
  });

  test('two ranks: both algorithms give the same bits on random floats', async () => {
    const inputs = [seededFloats(1, 777), seededFloats(2, 777)];
    const results: Float32Array[][] = [];
    for (const algorithm of ALGORITHMS) {
      const world = makeWorld(2, { algorithm });
      results.push(await Promise.all(world.groups.map((group, rank) => group.allReduce(inputs[rank], 'sum'))));
      await world.close();
    }
    assert.deepEqual(bitsOf(results[0][0]), bitsOf(results[1][0]));
    assert.deepEqual(bitsOf(results[0][1]), bitsOf(results[1][1]));
  });

  test('ranks that all-reduce different lengths get an error naming the rank and the lengths', async () => {
    const world = makeWorld(2, { algorithm: 'direct' });
    try {
      const results = await Promise.allSettled([world.groups[0].allReduce(new Float32Array(3), 'sum'), world.groups[1].allReduce(new Float32Array(4), 'sum')]);
      for (const result of results) assert.equal(result.status, 'rejected');
      assert.match(String((results[0] as PromiseRejectedResult).reason), /from rank 1 carried 4 float32 values where rank 0 has 3 float32/);
    } finally {
      await world.close();
    }
  });

  test('int32 mean is refused with advice', async () => {
    const world = makeWorld(2);
    try {
      await assert.rejects(world.groups[0].allReduce(Int32Array.of(1), 'mean' as 'sum'), /'mean' needs float32/);
    } finally {
      await world.close();
    }
  });
});

describe('broadcast, all-gather, barrier', () => {
  for (const size of [2, 3, 4]) {
    test(`broadcast from every root, ${size} ranks`, async () => {
      const world = makeWorld(size);
      try {
        for (let root = 0; root < size; root++) {
          const payload = integerValues(root + 100, 600);
          const results = await Promise.all(world.groups.map((group, rank) => group.broadcast(rank === root ? payload : undefined, root)));
          for (const result of results) assert.deepEqual(result, payload, `root ${root}`);
        }
      } finally {
        await world.close();
      }
    });
  }

  test('all-gather returns every rank in rank order, lengths may differ', async () => {
    const world = makeWorld(4);
    try {
      const inputs = [0, 1, 2, 3].map((rank) => integerValues(rank, 300 + rank));
      // Start the calls in reverse so arrival order is not rank order.
      const pending = [3, 2, 1, 0].map((rank) => world.groups[rank].allGather(inputs[rank]));
      const results = (await Promise.all(pending)).reverse();
      for (const result of results) assert.deepEqual(result, inputs);
    } finally {
      await world.close();
    }
  });

  test('barrier resolves only after the last rank arrives', async () => {
    const world = makeWorld(3);
    try {
      let lastArrived = false;
      const early = [world.groups[0].barrier(), world.groups[1].barrier()];
      let earlyDone = false;
      void Promise.all(early).then(() => (earlyDone = true));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(earlyDone, false, 'two of three ranks passed the barrier');
      lastArrived = true;
      await Promise.all([...early, world.groups[2].barrier()]);
      assert.ok(lastArrived && earlyDone);
    } finally {
      await world.close();
    }
  });

  test('a group of one returns at once, hands back its input and sends nothing', async () => {
    const world = makeWorld(1);
    try {
      const [group] = world.groups;
      const values = Float32Array.of(1, 2, 3);
      assert.equal(await group.allReduce(values, 'mean'), values);
      assert.equal(await group.broadcast(values, 0), values);
      assert.deepEqual(await group.allGather(values), [values]);
      await group.barrier();
      assert.equal(world.buses[0].stats.sent, 0);
    } finally {
      await world.close();
    }
  });
});

describe('send and recv', () => {
  test('tags are separate streams, each in order; pieces sent before recv wait; recv before send waits', async () => {
    const world = makeWorld(3);
    try {
      const [a, b] = world.groups;
      a.send(1, 'grad', Float32Array.of(1), [1]);
      a.send(1, 'act', Float32Array.of(10, 11, 12, 13), [2, 2]);
      a.send(1, 'grad', Float32Array.of(2));
      a.send(1, 'act', Float32Array.of(20, 21, 22, 23), [2, 2]);
      const waiting = b.recv(2, 'act');
      const firstAct = await b.recv(0, 'act');
      const secondAct = await b.recv(0, 'act');
      const firstGrad = await b.recv(0, 'grad');
      const secondGrad = await b.recv(0, 'grad');
      assert.deepEqual(firstAct, { values: Float32Array.of(10, 11, 12, 13), shape: [2, 2] });
      assert.deepEqual(secondAct.values, Float32Array.of(20, 21, 22, 23));
      assert.deepEqual([firstGrad.values[0], secondGrad.values[0]], [1, 2]);
      world.groups[2].send(1, 'act', integerValues(2, 5000), [50, 100]);
      const large = await waiting;
      assert.deepEqual(large.values, integerValues(2, 5000));
      assert.deepEqual(large.shape, [50, 100]);
    } finally {
      await world.close();
    }
  });

  test('recv that nothing answers times out naming the sender, group and tag', async () => {
    const world = makeWorld(2, { name: 'pp.0', timeoutMs: 100 });
    try {
      await assert.rejects(world.groups[1].recv(0, 'act'), (error: unknown) => {
        assert.ok(error instanceof CollectiveTimeoutError);
        assert.deepEqual(error.missingRanks, [0]);
        assert.match(error.message, /recv from rank 0 tag "act" #0 in process group 'pp.0' \(rank 1\) timed out after 100 ms waiting for rank 0/);
        return true;
      });
    } finally {
      await world.close();
    }
  });
});

describe('groups, sequence numbers and failures', () => {
  test('two groups at once on the same ranks never mix their pieces', async () => {
    const network = new LocalNetwork(1024);
    const buses = [0, 1, 2, 3].map(() => new Bus({ jobId: 'two-groups', transport: network.connect() }));
    const pairs = [0, 1, 2, 3].map((rank) => new ProcessGroup({ bus: buses[rank], name: `dp.${rank % 2}`, ranks: rank % 2 === 0 ? [0, 2] : [1, 3], rank }));
    const worlds = [0, 1, 2, 3].map((rank) => new ProcessGroup({ bus: buses[rank], name: 'world', ranks: [3, 2, 1, 0], rank }));
    try {
      // Both collectives started before either is awaited, on every rank.
      const pairSums = [0, 1, 2, 3].map((rank) => pairs[rank].allReduce(Float32Array.of(rank, 10 * rank), 'sum'));
      const worldSums = [0, 1, 2, 3].map((rank) => worlds[rank].allReduce(Float32Array.of(rank + 1), 'sum'));
      assert.deepEqual(await Promise.all(pairSums), [Float32Array.of(2, 20), Float32Array.of(4, 40), Float32Array.of(2, 20), Float32Array.of(4, 40)]);
      assert.deepEqual(await Promise.all(worldSums), [0, 1, 2, 3].map(() => Float32Array.of(10)));
      assert.deepEqual(worlds[2].ranks, [0, 1, 2, 3], 'ranks are kept in ascending order');
    } finally {
      for (const group of [...pairs, ...worlds]) group.close();
      await Promise.all(buses.map((bus) => bus.close()));
    }
  });

  test('a rank one collective ahead is buffered, not mixed in; a late piece of a finished call is dropped and counted', async () => {
    const world = makeWorld(2);
    try {
      const [g0, g1] = world.groups;
      // Rank 1 runs two all-reduces before rank 0 starts its first.
      const rank1 = (async () => [await g1.allReduce(Float32Array.of(1), 'sum'), await g1.allReduce(Float32Array.of(100), 'sum')])();
      await new Promise((resolve) => setTimeout(resolve, 20));
      const rank0 = [await g0.allReduce(Float32Array.of(2), 'sum'), await g0.allReduce(Float32Array.of(200), 'sum')];
      assert.deepEqual(rank0, [Float32Array.of(3), Float32Array.of(300)]);
      assert.deepEqual(await rank1, [Float32Array.of(3), Float32Array.of(300)]);
      // A repeat of call #0 from rank 1 arrives late: it must not leak into call #2.
      world.buses[1].publish(g0.inboxSubject(0), { kind: 'collective', group: 'world', op: 'all-reduce', seq: 0, tag: '', from: 1, part: 0, tensor: toWireTensor(Float32Array.of(9999), [1]) });
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(g0.droppedPieces, 1);
      assert.match(world.logs.join('\n'), /dropped all-reduce #0 part 0 from rank 1: its call has already finished/);
      const third = await Promise.all([g0.allReduce(Float32Array.of(5), 'sum'), g1.allReduce(Float32Array.of(6), 'sum')]);
      assert.deepEqual(third, [Float32Array.of(11), Float32Array.of(11)]);
    } finally {
      await world.close();
    }
  });

  for (const algorithm of ALGORITHMS) {
    test(`${algorithm}: a silent rank makes the others time out with an error naming it`, async () => {
      const world = makeWorld(4, { name: 'dp.1', timeoutMs: 150, algorithm });
      try {
        const started = Date.now();
        const results = await Promise.allSettled([0, 1, 2].map((rank) => world.groups[rank].allReduce(Float32Array.of(rank, rank, rank, rank), 'sum')));
        assert.ok(Date.now() - started < 2000, 'the timeout must fire near its deadline');
        for (const result of results) assert.equal(result.status, 'rejected');
        const errors = results.map((result) => (result as PromiseRejectedResult).reason as CollectiveTimeoutError);
        for (const error of errors) assert.ok(error instanceof CollectiveTimeoutError, String(error));
        // Direct waits on everyone; in the ring, rank 0 waits on its left neighbour, rank 3.
        assert.deepEqual(errors[0].missingRanks, [3]);
        assert.match(errors[0].message, /^all-reduce #0 in process group 'dp.1' \(rank 0\) timed out after 150 ms waiting for rank 3:/);
      } finally {
        await world.close();
      }
    });
  }

  test('ranks calling different collectives at the same position fail fast with a mismatch error', async () => {
    const world = makeWorld(2, { timeoutMs: 5000 });
    try {
      const started = Date.now();
      const results = await Promise.allSettled([world.groups[0].allGather(Float32Array.of(1)), world.groups[1].allReduce(Float32Array.of(1), 'sum')]);
      assert.ok(Date.now() - started < 1000);
      for (const result of results) {
        assert.equal(result.status, 'rejected');
        assert.ok((result as PromiseRejectedResult).reason instanceof CollectiveMismatchError);
      }
      assert.match(String((results[0] as PromiseRejectedResult).reason), /rank 0 is in all-gather #0 but rank 1 sent a piece of all-reduce #0/);
    } finally {
      await world.close();
    }
  });

  test('closing a group fails its waits and refuses new calls', async () => {
    const world = makeWorld(2);
    try {
      const waiting = world.groups[0].allReduce(Float32Array.of(1), 'sum');
      world.groups[0].close();
      await assert.rejects(waiting, /process group 'world' was closed on rank 0/);
      await assert.rejects(world.groups[0].barrier(), /is closed: make a new one/);
    } finally {
      await world.close();
    }
  });

  test('ready() waits for members that subscribe late and names the ones that never do', async () => {
    const network = new LocalNetwork(1024);
    const buses = [0, 1, 2].map(() => new Bus({ jobId: 'ready-test', transport: network.connect() }));
    const make = (rank: number) => new ProcessGroup({ bus: buses[rank], name: 'tp.0', ranks: [0, 1, 2], rank, timeoutMs: 2000 });
    const groups = [make(0)];
    try {
      let joined = false;
      const waiting = groups[0].ready().then(() => assert.ok(joined, 'ready() resolved before rank 1 and 2 made their groups'));
      await new Promise((resolve) => setTimeout(resolve, 100));
      groups.push(make(1), make(2));
      joined = true;
      await Promise.all([waiting, groups[1].ready(), groups[2].ready()]);
      groups[2].close();
      await assert.rejects(groups[0].ready(300), /process group 'tp.0' \(rank 0\): rank 2 did not join within 300 ms/);
    } finally {
      for (const group of groups) group.close();
      await Promise.all(buses.map((bus) => bus.close()));
    }
  });

  test('bad group definitions are refused with the offending value', () => {
    const bus = new Bus({ jobId: 'bad-groups', transport: new LocalNetwork().connect() });
    assert.throws(() => new ProcessGroup({ bus, name: 'g', ranks: [0, 1], rank: 2 }), /rank 2 is not a member of \[0, 1\]/);
    assert.throws(() => new ProcessGroup({ bus, name: 'g', ranks: [0, 1, 1], rank: 0 }), /rank 1 appears twice/);
    assert.throws(() => new ProcessGroup({ bus, name: 'g', ranks: [], rank: 0 }), /non-empty/);
    assert.throws(() => new ProcessGroup({ bus, name: 'bad name', ranks: [0], rank: 0 }), /bad token/);
  });
});
