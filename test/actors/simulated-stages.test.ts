// Tests: simulated stage actors (one per stage, in-process transport, fake compute) running every
// schedule of the range to the end: each op once, inputs before use, no deadlock; held
// activations (1F1B <= P - rank, GPipe M) and measured bubbles against the theory; a few runs in real
// milliseconds; deadlocks and deadlines reported with each stage's state.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PipelineStallError, runStageActors, VirtualClock, type StageActorsRun } from '../../src/actors/simulated-stages.ts';
import {
  build1F1B,
  buildGPipe,
  buildInterleaved,
  dependencyOf,
  formatOp,
  interleavedBubble,
  measureBubbles,
  measureInFlight,
  parseOp,
  simulateTimeline,
  theoreticalBubble,
  type Schedule,
  type TimedOp,
} from '../../src/scheduler/schedules.ts';
import { allSchedules, zeroBubbleSchedules } from '../scheduler/helpers.ts';
import { placementOf } from '../../src/scheduler/placement.ts';

const describeSchedule = (s: Schedule) => `${s.kind} P=${s.stages} M=${s.microBatches} V=${s.chunks}`;

/** Every op of the schedule ran exactly once, on its stage, in the stage's order, after its input was made. */
function assertRanCorrectly(schedule: Schedule, run: StageActorsRun): void {
  const name = describeSchedule(schedule);
  const byKey = new Map<string, TimedOp>();
  for (const event of run.events) {
    const key = `${event.stage}:${formatOp(event)}`;
    assert.ok(!byKey.has(key), `${name}: ${key} ran twice`);
    byKey.set(key, event);
  }
  const expected = schedule.ops.reduce((sum, ops) => sum + ops.length, 0);
  assert.equal(run.events.length, expected, `${name}: ${run.events.length} ops ran, the schedule has ${expected}`);
  schedule.ops.forEach((stageOps, stage) => {
    let previousEnd = -Infinity;
    for (const operation of stageOps) {
      const event = byKey.get(`${stage}:${formatOp(operation)}`);
      assert.ok(event !== undefined, `${name}: stage ${stage} never ran ${formatOp(operation)}`);
      assert.ok(event.start >= previousEnd, `${name}: stage ${stage} started ${formatOp(operation)} before its previous op ended`);
      assert.ok(event.end > event.start, `${name}: stage ${stage} ${formatOp(operation)} took no time`);
      previousEnd = event.end;
      const dependency = dependencyOf(operation, stage, schedule.stages, schedule.chunks, placementOf(schedule.kind));
      if (dependency === null) continue;
      const input = byKey.get(`${dependency.stage}:${formatOp(dependency.op)}`);
      assert.ok(input !== undefined && input.end <= event.start, `${name}: stage ${stage} started ${formatOp(operation)} at ${event.start} before ${formatOp(dependency.op)} on stage ${dependency.stage} ended (${input?.end})`);
    }
  });
}

describe('stage actors, virtual clock', () => {
  test('simulate - every schedule with P <= 8, M <= 16, V <= 4: each op once, dependencies respected, no deadlock, same times as the timeline', async (t) => {
    let runs = 0;
    let messages = 0;
    const started = performance.now();
    for (const schedule of allSchedules()) {
      const run = await runStageActors(schedule, { deadlineMs: 10_000 });
      assertRanCorrectly(schedule, run);
      // The actors, exchanging real bus messages, take exactly the times the pure simulation predicts.
      const timeline = simulateTimeline(schedule);
      assert.ok(timeline.ok);
      assert.deepEqual(run.events, timeline.events, describeSchedule(schedule));
      const crossings = schedule.microBatches * (schedule.stages * schedule.chunks - 1) * 2;
      assert.equal(run.messages, crossings, `${describeSchedule(schedule)}: one activation and one gradient per virtual-stage boundary and micro-batch`);
      runs++;
      messages += run.messages;
    }
    assert.equal(runs, 424);
    t.diagnostic(`${runs} simulated runs, ${messages} messages, ${((performance.now() - started) / 1000).toFixed(1)} s`);
  });

  test('simulate - zb-h1 and zbv for every P <= 8, M <= 16: each op once, W after its B without a message, the V turned on the last stage, same times as the timeline', async () => {
    let runs = 0;
    for (const schedule of zeroBubbleSchedules()) {
      const run = await runStageActors(schedule, { deadlineMs: 10_000 });
      assertRanCorrectly(schedule, run);
      const timeline = simulateTimeline(schedule);
      assert.ok(timeline.ok);
      assert.deepEqual(run.events, timeline.events, describeSchedule(schedule));
      // W sends nothing; the V's turn on the last stage is a message to itself, like any other boundary.
      assert.equal(run.messages, schedule.microBatches * (schedule.stages * schedule.chunks - 1) * 2, describeSchedule(schedule));
      runs++;
    }
    assert.equal(runs, 256);
  });

  test('simulate - 1F1B holds at most P - rank micro-batches on stage rank (exactly min(P - rank, M)); GPipe holds all M', async () => {
    for (const [stages, microBatches] of [[4, 8], [8, 16], [3, 2], [5, 5], [2, 16]] as const) {
      const oneFOneB = await runStageActors(build1F1B(stages, microBatches));
      assert.deepEqual(measureInFlight(oneFOneB.events, stages), Array.from({ length: stages }, (_, rank) => Math.min(stages - rank, microBatches)), `1f1b P=${stages} M=${microBatches}`);
      const gpipe = await runStageActors(buildGPipe(stages, microBatches));
      assert.deepEqual(measureInFlight(gpipe.events, stages), new Array(stages).fill(microBatches), `gpipe P=${stages} M=${microBatches}`);
    }
  });

  test('simulate - measured bubble of GPipe and 1F1B equals (p - 1) / (m + p - 1) on every stage, for F:B = 1:2 and 1:1', async () => {
    for (const durations of [{ forward: 1, backward: 2 }, { forward: 1, backward: 1 }]) {
      for (const [stages, microBatches] of [[2, 4], [4, 8], [4, 16], [8, 8], [8, 16]] as const) {
        for (const schedule of [buildGPipe(stages, microBatches), build1F1B(stages, microBatches)]) {
          const run = await runStageActors(schedule, { durations });
          for (const bubble of measureBubbles(run.events, stages)) {
            assert.ok(Math.abs(bubble.fraction - theoreticalBubble(stages, microBatches)) < 1e-12, `${describeSchedule(schedule)} stage ${bubble.stage}: ${bubble.fraction}`);
          }
          assert.equal(run.makespan, (microBatches + stages - 1) * (durations.forward + durations.backward));
        }
      }
    }
  });

  test('simulate - interleaved bubble: exactly (p - 1) / (v m + p - 1); the issue\'s (p - 1) / (m + p - 1) / v within 0.01 for m >= 4p', async () => {
    for (const [stages, microBatches, chunks] of [[2, 8, 2], [2, 16, 4], [4, 16, 2], [4, 16, 4], [8, 32, 2], [4, 8, 2]] as const) {
      const run = await runStageActors(buildInterleaved(stages, microBatches, chunks));
      for (const bubble of measureBubbles(run.events, stages)) {
        assert.ok(Math.abs(bubble.fraction - interleavedBubble(stages, microBatches, chunks)) < 1e-12, `P=${stages} M=${microBatches} V=${chunks} stage ${bubble.stage}: ${bubble.fraction}`);
        if (microBatches >= 4 * stages) {
          assert.ok(Math.abs(bubble.fraction - theoreticalBubble(stages, microBatches, chunks)) < 0.01, `P=${stages} M=${microBatches} V=${chunks}: ${bubble.fraction} vs ${theoreticalBubble(stages, microBatches, chunks)}`);
        }
      }
      // Interleaving shrinks the bubble compared to 1F1B on the same pipeline.
      const plain = await runStageActors(build1F1B(stages, microBatches));
      if (chunks > 1) assert.ok(measureBubbles(run.events, stages)[0]!.fraction < measureBubbles(plain.events, stages)[0]!.fraction);
    }
  });

  test('simulate - a deadlocked schedule is reported at once, naming what each stage waits for', async () => {
    const ops = ['F0 B0 F1 B1', 'F0 F1 B0 B1'].map((line) => line.split(' ').map(parseOp));
    const started = performance.now();
    await assert.rejects(
      runStageActors({ kind: '1f1b', stages: 2, microBatches: 2, chunks: 1, ops }),
      (error: unknown) =>
        error instanceof PipelineStallError &&
        /deadlocked/.test(error.message) &&
        /stage 0: ran 1 of 4 ops; B0 waits for the gradient from B0 on stage 1/.test(error.message) &&
        /stage 1: ran 1 of 4 ops; F1 waits for the activation from F1 on stage 0/.test(error.message),
    );
    assert.ok(performance.now() - started < 1000);
  });

  test('simulate - a backward on the last stage before its forward fails that stage by name', async () => {
    const ops = [['F0', 'B0'], ['B0', 'F0']].map((line) => line.map(parseOp));
    await assert.rejects(runStageActors({ kind: '1f1b', stages: 2, microBatches: 1, chunks: 1, ops }), /stage 1 failed: stage 1: B0 runs before its forward on this stage/);
  });
});

describe('stage actors, real clock', () => {
  test('simulate - real millisecond delays (F 1-2 ms, B twice): each op once, dependencies respected, within the deadline', async () => {
    for (const [schedule, forward] of [[build1F1B(4, 8), 2], [buildInterleaved(2, 4, 2), 1], [buildGPipe(3, 3), 3], [buildInterleaved(4, 8, 3), 1]] as const) {
      const started = performance.now();
      const run = await runStageActors(schedule, { clock: 'real', durations: { forward, backward: 2 * forward }, deadlineMs: 10_000 });
      assertRanCorrectly(schedule, run);
      assert.ok(performance.now() - started < 5000, `${describeSchedule(schedule)} took ${performance.now() - started} ms`);
      // Timer granularity only adds time: the run can be no shorter than the ideal makespan.
      const ideal = simulateTimeline(schedule, { forward, backward: 2 * forward });
      assert.ok(ideal.ok && run.makespan >= ideal.makespan - 1, `${describeSchedule(schedule)}: ${run.makespan} ms < ideal ${ideal.ok && ideal.makespan}`);
    }
  });

  test('simulate - a hang in real time ends at the deadline with each stage\'s state', async () => {
    const ops = ['F0 B0 F1 B1', 'F0 F1 B0 B1'].map((line) => line.split(' ').map(parseOp));
    const started = performance.now();
    await assert.rejects(
      runStageActors({ kind: '1f1b', stages: 2, microBatches: 2, chunks: 1, ops }, { clock: 'real', deadlineMs: 300 }),
      (error: unknown) => error instanceof PipelineStallError && /did not finish within 300 ms/.test(error.message) && /stage 0: ran 1 of 4 ops; B0 waits/.test(error.message),
    );
    assert.ok(performance.now() - started < 2000);
  });
});

describe('VirtualClock', () => {
  test('clock - wakes the earliest sleepers together, in the order they slept, and only when advanced', async () => {
    const clock = new VirtualClock();
    const woke: string[] = [];
    void clock.sleep(2).then(() => woke.push(`a@${clock.now()}`));
    void clock.sleep(1).then(() => woke.push(`b@${clock.now()}`));
    void clock.sleep(1).then(() => woke.push(`c@${clock.now()}`));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(woke, []);
    clock.advance();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(woke, ['b@1', 'c@1']);
    clock.advance();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(woke, ['b@1', 'c@1', 'a@2']);
    assert.equal(clock.pending, 0);
  });
});
