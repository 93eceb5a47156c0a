// Tests: schedule values (format/parse, JSON), the three builders against hand-written orders and
// their defining rules, the validator's verdicts and pictures, partitionUniform and the bubble formula.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  build1F1B,
  buildGPipe,
  buildInterleaved,
  buildSchedule,
  formatOp,
  interleavedBubble,
  op,
  parseOp,
  scheduleFromJson,
  ScheduleError,
  scheduleToJson,
  ScheduleValidationError,
  theoreticalBubble,
  validateSchedule,
  type PipelineOp,
  type Schedule,
} from '../../src/scheduler/schedules.ts';
import { partitionUniform } from '../../src/parallel/partition.ts';
import { allSchedules } from './helpers.ts';

const text = (ops: readonly PipelineOp[]) => ops.map(formatOp).join(' ');
const parse = (line: string) => line.split(' ').map(parseOp);

describe('ops', () => {
  test('ops - print as F3 / B0.1 and parse back', () => {
    assert.equal(formatOp(op('F', 3)), 'F3');
    assert.equal(formatOp(op('B', 0, 1)), 'B0.1');
    assert.deepEqual(parseOp('B0.1'), { kind: 'B', microBatch: 0, chunk: 1 });
    assert.deepEqual(parseOp('F12'), { kind: 'F', microBatch: 12, chunk: 0 });
    for (const kind of ['F', 'B'] as const) {
      for (const chunk of [0, 1, 3]) for (const microBatch of [0, 7, 15]) assert.deepEqual(parseOp(formatOp(op(kind, microBatch, chunk))), op(kind, microBatch, chunk));
    }
  });

  test('ops - unreadable ops are refused with the text quoted', () => {
    for (const bad of ['X1', 'F', 'F-1', 'B1.', 'f1', 'F1.2.3']) assert.throws(() => parseOp(bad), (e: unknown) => e instanceof ScheduleError && e.message.includes(JSON.stringify(bad)));
  });

  test('ops - JSON form round-trips, with ops[s] as [kind, microbatch, chunk]', () => {
    const schedule = buildInterleaved(2, 4, 2);
    const json = scheduleToJson(schedule);
    assert.deepEqual(Object.keys(json), ['kind', 'stages', 'microbatches', 'chunks', 'ops']);
    assert.deepEqual(json.ops[1]![0], ['F', 0, 0]);
    assert.deepEqual(scheduleFromJson(JSON.parse(JSON.stringify(json))), schedule);
  });
});

describe('builders', () => {
  test('gpipe - all forwards, then all backwards in ascending micro-batch order', () => {
    const schedule = buildGPipe(3, 4);
    assert.equal(schedule.ops.length, 3);
    for (const stageOps of schedule.ops) assert.equal(text(stageOps), 'F0 F1 F2 F3 B0 B1 B2 B3');
  });

  test('1f1b - Megatron order for 4 stages and 8 micro-batches, written by hand', () => {
    const schedule = build1F1B(4, 8);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7');
    assert.equal(text(schedule.ops[1]!), 'F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7');
    assert.equal(text(schedule.ops[2]!), 'F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7');
    assert.equal(text(schedule.ops[3]!), 'F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7');
  });

  test('1f1b - fewer micro-batches than stages: warm-up is capped at M', () => {
    const schedule = build1F1B(4, 2);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 B0 B1');
    assert.equal(text(schedule.ops[2]!), 'F0 F1 B0 B1');
    assert.equal(text(schedule.ops[3]!), 'F0 B0 F1 B1');
  });

  test('1f1b - for every P <= 8, M <= 16: min(P - rank - 1, M) warm-up forwards, then strict F/B alternation, then backwards', () => {
    for (let stages = 1; stages <= 8; stages++) {
      for (let microBatches = 1; microBatches <= 16; microBatches++) {
        build1F1B(stages, microBatches).ops.forEach((stageOps, rank) => {
          const warmup = Math.min(stages - rank - 1, microBatches);
          const expected: string[] = [];
          for (let i = 0; i < warmup; i++) expected.push(`F${i}`);
          for (let i = 0; i < microBatches - warmup; i++) expected.push(`F${warmup + i}`, `B${i}`);
          for (let i = microBatches - warmup; i < microBatches; i++) expected.push(`B${i}`);
          assert.equal(text(stageOps), expected.join(' '), `P=${stages} M=${microBatches} rank ${rank}`);
        });
      }
    }
  });

  test('interleaved - 2 stages, 4 micro-batches, 2 chunks, worked out by hand from Megatron\'s rules', () => {
    // rank 0: warm-up 2(2-0-1) + (2-1)2 = 4; rank 1: 0 + 2 = 2; total 8 per stage.
    // k-th forward: chunk (k div 2) mod 2, micro-batch (k div 4) * 2 + k mod 2.
    const schedule = buildInterleaved(2, 4, 2);
    assert.equal(text(schedule.ops[0]!), 'F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3');
    assert.equal(text(schedule.ops[1]!), 'F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3');
  });

  test('interleaved - M == P: every forward in the warm-up (Megatron\'s special case)', () => {
    const schedule = buildInterleaved(2, 2, 2);
    for (const stageOps of schedule.ops) assert.equal(text(stageOps), 'F0 F1 F0.1 F1.1 B0.1 B1.1 B0 B1');
  });

  test('interleaved - the k-th forward is on chunk (k div P) mod V; backwards visit chunks in reverse; warm-up as Megatron', () => {
    for (const [stages, microBatches, chunks] of [[4, 8, 2], [2, 8, 4], [8, 16, 3], [3, 9, 2]] as const) {
      const schedule = buildInterleaved(stages, microBatches, chunks);
      schedule.ops.forEach((stageOps, rank) => {
        const forwards = stageOps.filter((o) => o.kind === 'F');
        const backwards = stageOps.filter((o) => o.kind === 'B');
        assert.equal(forwards.length, microBatches * chunks);
        forwards.forEach((o, k) => assert.equal(o.chunk, Math.floor(k / stages) % chunks, `P=${stages} rank ${rank} forward ${k}`));
        backwards.forEach((o, k) => assert.equal(o.chunk, chunks - 1 - (Math.floor(k / stages) % chunks), `P=${stages} rank ${rank} backward ${k}`));
        const total = microBatches * chunks;
        const warmup = Math.min((stages - rank - 1) * 2 + (chunks - 1) * stages, total);
        // The first backward follows the warm-up and one steady-state forward, if any forward is left.
        assert.equal(stageOps.findIndex((o) => o.kind === 'B'), warmup < total ? warmup + 1 : total, `P=${stages} rank ${rank}`);
      });
    }
  });

  test('interleaved - M not a multiple of P is refused with the numbers and the nearest good values', () => {
    assert.throws(
      () => buildInterleaved(4, 6, 2),
      (e: unknown) => e instanceof ScheduleError && /6 micro-batches over 4 stages leaves 2 over; use 4 or 8 micro-batches/.test(e.message),
    );
    assert.throws(() => buildInterleaved(4, 3, 2), /use 4 micro-batches/);
  });

  test('buildSchedule - dispatches by kind; chunks other than 1 only for interleaved; counts must be positive', () => {
    assert.deepEqual(buildSchedule('gpipe', 2, 3), buildGPipe(2, 3));
    assert.deepEqual(buildSchedule('1f1b', 2, 3, 1), build1F1B(2, 3));
    assert.deepEqual(buildSchedule('interleaved', 2, 4, 2), buildInterleaved(2, 4, 2));
    assert.throws(() => buildSchedule('1f1b', 2, 4, 2), /1f1b schedule runs one model chunk per stage, got chunks = 2/);
    assert.throws(() => buildSchedule('gpipe', 0, 4), /stages must be an integer >= 1, got 0/);
    assert.throws(() => buildSchedule('1f1b', 2, 1.5), /microBatches must be an integer >= 1, got 1.5/);
    assert.throws(() => buildSchedule('interleaved', 2, 4, 0), /chunks must be an integer >= 1, got 0/);
    assert.throws(() => buildSchedule('zigzag' as never, 2, 4), /unknown schedule kind "zigzag"/);
  });
});

describe('validateSchedule', () => {
  test('validate - every schedule the builders make for P <= 8, M <= 16, V <= 4 is valid', () => {
    let count = 0;
    for (const schedule of allSchedules()) {
      validateSchedule(schedule);
      count++;
    }
    assert.equal(count, 2 * 8 * 16 + 4 * (16 + 8 + 5 + 4 + 3 + 2 + 2 + 2));
  });

  const custom = (ops: string[], microBatches = 2, chunks = 1): Schedule => ({ kind: '1f1b', stages: ops.length, microBatches, chunks, ops: ops.map(parse) });

  function assertInvalid(schedule: Schedule, problem: RegExp, marked: string[]): ScheduleValidationError {
    let caught: unknown;
    assert.throws(() => validateSchedule(schedule), (e: unknown) => ((caught = e), e instanceof ScheduleValidationError));
    const error = caught as ScheduleValidationError;
    assert.match(error.message, problem);
    for (const cell of marked) assert.ok(error.grid.includes(`>${cell}<`), `expected ${cell} marked in\n${error.grid}`);
    assert.equal((error.grid.match(/>[FB]\d+(\.\d+)?</g) ?? []).length, marked.length, error.grid);
    return error;
  }

  test('validate - a backward before its forward is named, and marked in the step x stage grid', () => {
    const error = assertInvalid(custom(['F0 F1 B0 B1', 'F0 B1 F1 B0']), /stage 1 step 1: B1 comes before its forward \(step 2\)/, ['B1']);
    assert.match(error.grid, /^ +Stage 0 Stage 1\nStep 00: F0 +F0\nStep 01: F1 +>B1<\n/);
  });

  test('validate - a missing op, a repeated op, and values out of range are all listed', () => {
    assertInvalid(custom(['F0 F1 B0 B1', 'F0 F1 B0']), /stage 1 never runs B1/, []);
    assertInvalid(custom(['F0 F1 B0 B1 B1', 'F0 F1 B0 B1']), /stage 0 step 4: B1 repeats the op of step 3/, ['B1']);
    // F2 stands where F1 should: out of range, so B1 then lacks its forward and F1 never runs.
    assertInvalid(custom(['F0 F1 B0 B1', 'F0 F2 B0 B1']), /micro-batch 2, outside 0..1[^]*B1 comes before its forward[^]*stage 1 never runs F1/, ['F2', 'B1']);
    assertInvalid(custom(['F0 F1 B0 B1', 'F0 F1 B0 B1.1']), /chunk 1, outside 0..0[^]*stage 1 never runs B1/, ['B1.1']);
    assert.throws(() => validateSchedule({ ...buildGPipe(2, 2), stages: 3 }), /op lists for 2 stages, but says stages = 3/);
  });

  test('validate - a deadlock is found by simulation and each stuck op is marked with what it waits for', () => {
    // Stage 0 wants the gradient of micro-batch 0 before sending micro-batch 1; stage 1 wants micro-batch 1 first.
    assertInvalid(
      custom(['F0 B0 F1 B1', 'F0 F1 B0 B1']),
      /deadlock: stage 0 step 1 B0 waits for B0 on stage 1[^]*deadlock: stage 1 step 1 F1 waits for F1 on stage 0/,
      ['B0', 'F1'],
    );
  });

  test('validate - interleaved: a chunk-1 forward before the chunk-0 forward of the last stage deadlocks', () => {
    const good = buildInterleaved(2, 2, 2);
    // Stage 0 runs F0.1 (virtual stage 2) first, which needs F0 from stage 1 (virtual stage 1), which needs stage 0's F0.
    const ops = good.ops.map((stageOps) => [...stageOps]);
    ops[0] = parse('F0.1 F0 F1 F1.1 B0.1 B1.1 B0 B1');
    assertInvalid({ ...good, ops }, /deadlock: stage 0 step 0 F0.1 waits for F0 on stage 1/, ['F0.1', 'F0']);
  });
});

describe('partitionUniform', () => {
  /** ColossalAI's partition_uniform, restated: per chunk, the later ranks take the remainder. */
  function colossalReference(numItems: number, pipelineSize: number, numChunks: number): [number, number][][] {
    const parts: [number, number][][] = Array.from({ length: pipelineSize }, () => []);
    const perChunk = numItems / numChunks;
    for (let chunk = 0; chunk < numChunks; chunk++) {
      let base = chunk * perChunk;
      const size = Math.floor(perChunk / pipelineSize);
      const left = pipelineSize - (perChunk % pipelineSize);
      for (let rank = 0; rank < pipelineSize; rank++) {
        const start = base;
        base += size + (rank >= left ? 1 : 0);
        parts[rank]!.push([start, base]);
      }
    }
    return parts;
  }

  test('partition - equals ColossalAI wherever ColossalAI accepts the numbers (layers divisible by chunks)', () => {
    let compared = 0;
    for (let pipelineSize = 1; pipelineSize <= 8; pipelineSize++) {
      for (let numChunks = 1; numChunks <= 4; numChunks++) {
        for (let numLayers = pipelineSize * numChunks; numLayers <= 48; numLayers++) {
          if (numLayers % numChunks !== 0) continue;
          assert.deepEqual(partitionUniform(numLayers, pipelineSize, numChunks), colossalReference(numLayers, pipelineSize, numChunks), `${numLayers} layers, pp ${pipelineSize}, ${numChunks} chunks`);
          compared++;
        }
      }
    }
    assert.ok(compared > 300);
  });

  test('partition - any count: virtual stages c P + r take consecutive layers, floor or ceil of L / (P V) each', () => {
    for (let pipelineSize = 1; pipelineSize <= 8; pipelineSize++) {
      for (let numChunks = 1; numChunks <= 4; numChunks++) {
        for (let numLayers = pipelineSize * numChunks; numLayers <= 40; numLayers++) {
          const parts = partitionUniform(numLayers, pipelineSize, numChunks);
          let next = 0;
          const low = Math.floor(numLayers / (pipelineSize * numChunks));
          for (let virtualStage = 0; virtualStage < pipelineSize * numChunks; virtualStage++) {
            const [start, end] = parts[virtualStage % pipelineSize]![Math.floor(virtualStage / pipelineSize)]!;
            assert.equal(start, next);
            assert.ok(end - start === low || end - start === low + 1, `${numLayers}/${pipelineSize}/${numChunks}: virtual stage ${virtualStage} has ${end - start}`);
            next = end;
          }
          assert.equal(next, numLayers);
        }
      }
    }
  });

  test('partition - examples: the GPT-2 small 12 layers over 4 stages x 2 chunks; 10 over 4 (later stages get more)', () => {
    assert.deepEqual(partitionUniform(12, 4, 2), [[[0, 1], [6, 7]], [[1, 2], [7, 8]], [[2, 4], [8, 10]], [[4, 6], [10, 12]]]);
    assert.deepEqual(partitionUniform(10, 4), [[[0, 2]], [[2, 4]], [[4, 7]], [[7, 10]]]);
    assert.deepEqual(partitionUniform(4, 1), [[[0, 4]]]);
  });

  test('partition - fewer layers than parts is refused, naming both', () => {
    assert.throws(() => partitionUniform(7, 4, 2), (e: unknown) => e instanceof ScheduleError && /cannot split 7 layers over 4 pipeline stages x 2 chunks = 8 parts/.test(e.message));
    assert.throws(() => partitionUniform(4, 0), /pipelineSize must be an integer >= 1, got 0/);
  });
});

describe('theoreticalBubble', () => {
  test('bubble - (p - 1) / (m + p - 1), divided by the chunks for interleaved', () => {
    assert.equal(theoreticalBubble(1, 8), 0);
    assert.equal(theoreticalBubble(4, 8), 3 / 11);
    assert.equal(theoreticalBubble(2, 4), 1 / 5);
    assert.equal(theoreticalBubble(4, 8, 2), 3 / 22);
    assert.equal(interleavedBubble(4, 8, 2), 3 / 19);
    assert.equal(interleavedBubble(4, 8, 1), theoreticalBubble(4, 8, 1));
  });
});
