import assert from 'node:assert/strict';
import { test } from 'node:test';
import { actionFromWire, actionToWire, formatAction, lowerStageActions, tiedChunksOf } from '../../src/scheduler/actions.ts';
import { buildSchedule, formatOp } from '../../src/scheduler/schedules.ts';

test('actions - a stage\'s step: every round\'s ops renumbered, the tied reduction after the last backward of the tied chunk, the update last', () => {
  const schedule = buildSchedule('1f1b', 2, 2);
  const first = lowerStageActions(schedule, 0, { accumulation: 2, tiedChunks: [0] }).map(formatAction);
  const ops = schedule.ops[0].map(formatOp);
  const shifted = schedule.ops[0].map((op) => formatOp({ ...op, microBatch: op.microBatch + 2 }));
  assert.deepEqual(first, [...ops, ...shifted, 'REDUCE_TIED', 'OPTIMIZER_STEP']);
  assert.deepEqual(lowerStageActions(schedule, 1, { accumulation: 1, tiedChunks: [] }).map(formatAction), [...schedule.ops[1].map(formatOp), 'OPTIMIZER_STEP']);
});

test('actions - interleaved: the reduction follows the last backward of the tied chunk, not the stage\'s last op', () => {
  const schedule = buildSchedule('interleaved', 2, 4, 2);
  const last = lowerStageActions(schedule, 1, { accumulation: 1, tiedChunks: [1] });
  const reduceAt = last.findIndex((a) => a.kind === 'REDUCE_TIED');
  const lastTiedBackward = last.findLastIndex((a) => a.kind === 'B' && a.chunk === 1);
  assert.equal(reduceAt, lastTiedBackward + 1);
  assert.ok(last.slice(reduceAt + 1).some((a) => a.kind === 'B' && a.chunk === 0), 'the chunk-0 backwards that follow overlap the transfer');
  assert.throws(() => lowerStageActions(buildSchedule('1f1b', 2, 2), 0, { accumulation: 1, tiedChunks: [3] }), /holds tied chunks 3 but its schedule runs no backward of them/);
});

test('actions - travel as maps and are read back checked against the stage\'s limits', () => {
  const limits = { microBatches: 4, chunks: 2 };
  const all = [
    { kind: 'F', microBatch: 3, chunk: 1 },
    { kind: 'B', microBatch: 0, chunk: 0 },
    { kind: 'I', microBatch: 2, chunk: 1 },
    { kind: 'W', microBatch: 3, chunk: 0 },
    { kind: 'REDUCE_TIED' },
    { kind: 'OPTIMIZER_STEP' },
  ] as const;
  for (const action of all) assert.deepEqual(actionFromWire(actionToWire(action), limits), action);
  assert.throws(() => actionFromWire({ kind: 'X', microBatch: 0, chunk: 0 }, limits), /kind "X" is not one of F, B, I, W, REDUCE_TIED, OPTIMIZER_STEP/);
  assert.throws(() => actionFromWire({ kind: 'I', microBatch: 4, chunk: 0 }, limits), /action I: micro-batch 4 is not in \[0, 4\)/);
  assert.throws(() => actionFromWire({ kind: 'W', microBatch: 0 }, limits), /action W: chunk undefined/);
  assert.throws(() => actionFromWire({ kind: 'F', microBatch: 4, chunk: 0 }, limits), /micro-batch 4 is not in \[0, 4\)/);
  assert.throws(() => actionFromWire({ kind: 'B', microBatch: 1, chunk: 2 }, limits), /chunk 2 is not in \[0, 2\)/);
  assert.throws(() => actionFromWire({ kind: 'F', microBatch: 1.5, chunk: 0 }, limits), /micro-batch 1.5/);
  assert.throws(() => actionFromWire(['F', 0, 0], limits), /must be a map/);
});

test('actions - zb-h1 lowers B to I (backward-input) and W to W; the tied reduction follows the tied chunk\'s last W, after its last I', () => {
  const schedule = buildSchedule('zb-h1', 4, 8);
  for (let stage = 0; stage < 4; stage++) {
    const actions = lowerStageActions(schedule, stage, { accumulation: 2, tiedChunks: stage === 0 || stage === 3 ? [0] : [] });
    assert.equal(actions.filter((a) => a.kind === 'B').length, 0, 'a split schedule runs no whole backward');
    assert.equal(actions.filter((a) => a.kind === 'I').length, 16);
    assert.equal(actions.filter((a) => a.kind === 'W').length, 16);
    const expected = [0, 1].flatMap((round) => schedule.ops[stage].map((op) => formatOp({ ...op, microBatch: op.microBatch + 8 * round }).replace(/^B/, 'I')));
    assert.deepEqual(actions.filter((a) => a.kind !== 'REDUCE_TIED' && a.kind !== 'OPTIMIZER_STEP').map(formatAction), expected);
    const reduceAt = actions.findIndex((a) => a.kind === 'REDUCE_TIED');
    if (stage === 0 || stage === 3) {
      assert.equal(actions[reduceAt - 1].kind, 'W');
      assert.equal(reduceAt, actions.findLastIndex((a) => a.kind === 'W') + 1);
    } else {
      assert.equal(reduceAt, -1);
    }
    assert.equal(actions.at(-1)!.kind, 'OPTIMIZER_STEP');
  }
});

test('actions - zbv: stage 0 holds both ends of the V, so no stage reduces the tied embedding; every B is an I with its W after it', () => {
  assert.deepEqual([0, 1, 2, 3].map((stage) => tiedChunksOf(stage, 4, 2, 'v')), [[], [], [], []]);
  assert.deepEqual([0, 1, 2, 3].map((stage) => tiedChunksOf(stage, 4, 2)), [[0], [], [], [1]]);
  const schedule = buildSchedule('zbv', 4, 8, 2);
  for (let stage = 0; stage < 4; stage++) {
    const actions = lowerStageActions(schedule, stage, { accumulation: 1, tiedChunks: tiedChunksOf(stage, 4, 2, 'v') });
    assert.deepEqual(actions.filter((a) => !['F', 'I', 'W'].includes(a.kind)).map(formatAction), ['OPTIMIZER_STEP']);
    actions.forEach((action, index) => {
      if (action.kind !== 'W') return;
      assert.ok(actions.slice(0, index).some((a) => a.kind === 'I' && a.microBatch === action.microBatch && a.chunk === action.chunk));
    });
  }
});
