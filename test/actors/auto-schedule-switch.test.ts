/**
 * auto-zb's switch on the scheduler side: zb-h1 until every rank has reported a step after the first,
 * then one order for every replica from the same step, placed from the stages' median times; a step
 * already answered keeps its answer when a measurement arrives late.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AutoScheduleSwitch, describeCosts } from '../../src/actors/auto-schedule-switch.ts';
import { lowerStages } from '../../src/actors/scheduler-actor.ts';
import { resolveTinyConfig } from '../support/tiny-train-config.ts';

const config = resolveTinyConfig({ model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, steps: 6, seed: 1, vocabSize: 24 }, { parallel: { pipeline: 2 }, numMicroBatches: 4, batchSize: 4, schedule: 'auto-zb' });
// Two replicas of two stages: ranks 0 and 1 are stage 0, ranks 2 and 3 stage 1.
const ranks = [{ rank: 0, stage: 0 }, { rank: 1, stage: 0 }, { rank: 2, stage: 1 }, { rank: 3, stage: 1 }];
const times = (forward: number, backwardInput: number, backwardWeight: number) => ({ forward, backwardInput, backwardWeight });

test('auto-schedule switch - zb-h1 until every rank reported a measured step; one answer per step for every replica; medians per stage', () => {
  const lines: string[] = [];
  const autoSwitch = new AutoScheduleSwitch({ config, pipeline: 2, ranks, lower: (schedule) => lowerStages(config, 2, schedule), log: (line) => lines.push(line) });
  assert.equal(autoSwitch.scheduleAt(0), undefined);
  // The first step's times pay one-time costs and are left out.
  for (const { rank } of ranks) autoSwitch.record(rank, 0, times(1000, 1000, 1000));
  assert.equal(autoSwitch.scheduleAt(1), undefined);
  autoSwitch.record(0, 1, times(200, 50, 150));
  autoSwitch.record(1, 1, times(220, 50, 150));
  autoSwitch.record(2, 1, times(100, 50, 200));
  // Rank 3's report is late: step 2 runs zb-h1 in every replica, even when it arrives before the second asks.
  assert.equal(autoSwitch.scheduleAt(2), undefined);
  autoSwitch.record(3, 1, times(100, 50, 200));
  assert.equal(autoSwitch.scheduleAt(2), undefined);
  const first = autoSwitch.scheduleAt(3);
  assert.ok(first !== undefined);
  assert.equal(first.fromStep, 3);
  assert.equal(autoSwitch.scheduleAt(3), first);
  assert.equal(autoSwitch.scheduleAt(4), first);
  assert.deepEqual(first.costs, [times(210, 50, 150), times(100, 50, 200)]);
  assert.equal(first.actions.length, 2);
  assert.equal(first.schedule.kind, 'auto-zb');
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^auto-zb: from step 4 on, the order placed from the measured op times \(F 210\/100 I 50\/50 W 150\/200 ms\): .*simulated bubble 0\.\d+ \(zb-h1's 0\.\d+\)$/);
  assert.equal(describeCosts(first.costs), 'F 210/100 I 50/50 W 150/200 ms');
});

test('auto-schedule switch - a resumed attempt measures from its own first step', () => {
  const autoSwitch = new AutoScheduleSwitch({ config, pipeline: 2, ranks, lower: (schedule) => lowerStages(config, 2, schedule), log: () => {} });
  assert.equal(autoSwitch.scheduleAt(10), undefined);
  for (const { rank } of ranks) autoSwitch.record(rank, 10, times(1, 1, 1));
  assert.equal(autoSwitch.scheduleAt(11), undefined);
  for (const { rank } of ranks) autoSwitch.record(rank, 11, times(1, 1, 1));
  assert.equal(autoSwitch.scheduleAt(12)?.fromStep, 12);
});
