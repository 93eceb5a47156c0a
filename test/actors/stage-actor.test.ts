/**
 * The stage actor's mailbox logic with a recording executor instead of a model: actions run in index
 * order whatever order they arrive in, repeats and stale ones are ignored, a step opens only when the
 * driver opens it, a missing action fails the step naming it, bad payloads are dropped, and work
 * between steps waits for the step in flight. The scheduler actor's messages are checked too.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { start, stop, type ActorSystemRef } from 'nact';
import { RemoteActors } from '../../src/actors/remote.ts';
import { SchedulerActor, stageActionsOfStep } from '../../src/actors/scheduler-actor.ts';
import { StageActor, type StageActorOptions, type StepExecutor } from '../../src/actors/stage-actor.ts';
import type { SchedulePayload, StageActionPayload } from '../../src/protocol/stage-actions.ts';
import { lowerStageOfSchedule } from '../../src/actors/scheduler-actor.ts';
import { buildAutoZeroBubble, scheduleToJson } from '../../src/scheduler/schedules.ts';
import { Bus } from '../../src/comm/bus.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { ParallelGrid } from '../../src/parallel/grid.ts';
import { actionToWire, formatAction, type StageAction } from '../../src/scheduler/actions.ts';
import { lowerEvaluationActions } from '../../src/scheduler/actions.ts';
import { resolveTinyConfig } from '../support/tiny-train-config.ts';
import { settle } from '../support/eventually.ts';

const F = (microBatch: number): StageAction => ({ kind: 'F', microBatch, chunk: 0 });
const B = (microBatch: number): StageAction => ({ kind: 'B', microBatch, chunk: 0 });
const STEP_END: StageAction = { kind: 'OPTIMIZER_STEP' };

class RecordingExecutor implements StepExecutor {
  readonly log: string[] = [];
  opMs: { forward: number; backwardInput: number; backwardWeight: number } | undefined;
  begin(step: number): void {
    this.log.push(`begin ${step}`);
  }
  async execute(action: StageAction) {
    this.log.push(formatAction(action));
    return action.kind === 'OPTIMIZER_STEP' ? { loss: 1, gradNorm: 0, samples: 4, ...(this.opMs === undefined ? {} : { opMs: this.opMs }) } : undefined;
  }
  beginEvaluation(step: number): void {
    this.log.push(`evaluate ${step}`);
  }
  async finishEvaluation() {
    this.log.push('evaluated');
    return { loss: 2.5, samples: 8 };
  }
}

interface Harness {
  actor: StageActor;
  executor: RecordingExecutor;
  /** Sends action `index` of `actions` of `step`, as the scheduler would (or any payload). */
  send(step: number, index: number, actions: readonly StageAction[], pass?: 'evaluation'): void;
  sendRaw(payload: unknown): void;
  finished: { rank: number; step: number }[];
  remote: RemoteActors;
  close(): Promise<void>;
}

/** A stage actor (rank 3, replica 0) expecting `expected` each step, and a scheduler's end of the bus. */
function harness(expected: readonly StageAction[], actionTimeoutMs = 10_000, adopt?: StageActorOptions['adopt'], expectedEvaluation?: readonly StageAction[]): Harness {
  const network = new LocalNetwork();
  const buses = [0, 1].map(() => new Bus({ jobId: 'stage-actor', transport: network.connect(), log: () => {} }));
  const systems: ActorSystemRef[] = [start(), start()];
  const scheduler = new RemoteActors(buses[0], systems[0], { rank: 'launcher' });
  const rank = new RemoteActors(buses[1], systems[1], { rank: 3 });
  const finished: { rank: number; step: number }[] = [];
  buses[0].subscribe('actor.scheduler.0', (message) => {
    if (message.kind === 'actor') finished.push(message.payload as { rank: number; step: number });
  });
  const executor = new RecordingExecutor();
  const actor = new StageActor({
    system: systems[1], remote: rank, rank: 3, replica: 0, executor, expected, firstStep: 0, actionTimeoutMs, log: () => {},
    ...(adopt === undefined ? {} : { adopt }),
    ...(expectedEvaluation === undefined ? {} : { expectedEvaluation }),
  });
  return {
    actor,
    executor,
    finished,
    remote: rank,
    send: (step, index, actions, pass) => {
      const payload: StageActionPayload = { type: 'action', step, index, count: actions.length, action: actionToWire(actions[index]), ...(pass === undefined ? {} : { pass }) };
      scheduler.tell({ rank: 3, role: 'stage' }, payload);
    },
    sendRaw: (payload) => scheduler.tell({ rank: 3, role: 'stage' }, payload),
    close: async () => {
      actor.stop();
      for (const system of systems) stop(system);
      for (const bus of buses) await bus.close();
    },
  };
}

const ONE_F_ONE_B = [F(0), F(1), B(0), B(1), STEP_END];
const SHORT = [F(0), B(0), STEP_END];

test('stage actor - actions sent ahead, reordered and repeated run once each, in order, after the step opens', async () => {
  const actions = ONE_F_ONE_B;
  const h = harness(actions);
  try {
    for (const index of [2, 0, 4, 1, 0, 3, 2]) h.send(0, index, actions);
    await settle();
    assert.deepEqual(h.executor.log, [], 'an action ran before the driver opened the step');
    const result = await h.actor.runStep(0);
    assert.equal(result.loss, 1);
    assert.deepEqual(h.executor.log, ['begin 0', 'F0', 'F1', 'B0', 'B1', 'OPTIMIZER_STEP']);
    assert.equal(h.actor.duplicates, 2);
    // A repeat of the finished step is stale; the next step's actions wait for their step.
    h.send(0, 1, actions);
    h.send(1, 0, actions);
    await settle();
    assert.equal(h.actor.duplicates, 3);
    assert.equal(h.executor.log.length, 6);
    assert.deepEqual(h.finished, [{ type: 'step-finished', rank: 3, step: 0 }]);
    assert.deepEqual(h.actor.status(), { kind: 'stage', rank: 3, state: 'idle', mailbox: 1, lastAction: 'OPTIMIZER_STEP (step 1)' });
  } finally {
    await h.close();
  }
});

test('stage actor - an evaluation between steps: its forwards, sent with the next step\'s actions, run in its own pass; a backward in it, or one from a job without validation data, is refused; a repeat after it is stale', async () => {
  const evaluation = lowerEvaluationActions(1, 4, 2);
  assert.deepEqual(evaluation.map(formatAction), ['F0', 'F1', 'F2', 'F3']);
  const h = harness(SHORT, 10_000, undefined, evaluation);
  try {
    for (let index = 0; index < SHORT.length; index++) h.send(0, index, SHORT);
    await h.actor.runStep(0);
    // The scheduler sends the evaluation after step 1 and step 2's actions at once, interleaved.
    for (let index = evaluation.length - 1; index >= 0; index--) {
      h.send(1, index, evaluation, 'evaluation');
      if (index < SHORT.length) h.send(1, index, SHORT);
    }
    h.sendRaw({ type: 'action', pass: 'evaluation', step: 1, index: 1, count: 4, action: { kind: 'B', microBatch: 1, chunk: 0 } });
    h.sendRaw({ type: 'action', pass: 'training', step: 1, index: 1, count: 4, action: { kind: 'F', microBatch: 1, chunk: 0 } });
    await settle();
    assert.equal(h.remote.malformed, 2);
    const result = await h.actor.runEvaluation(1);
    assert.deepEqual(result, { loss: 2.5, samples: 8 });
    await h.actor.runStep(1);
    assert.deepEqual(h.executor.log, ['begin 0', 'F0', 'B0', 'OPTIMIZER_STEP', 'evaluate 1', 'F0', 'F1', 'F2', 'F3', 'evaluated', 'begin 1', 'F0', 'B0', 'OPTIMIZER_STEP']);
    // Step-finished goes to the scheduler for steps only.
    await settle();
    assert.deepEqual(h.finished.map((f) => f.step), [0, 1]);
    const before = h.actor.duplicates;
    h.send(1, 2, evaluation, 'evaluation');
    await settle();
    assert.equal(h.actor.duplicates, before + 1);
  } finally {
    await h.close();
  }
  const without = harness(SHORT);
  try {
    without.send(0, 0, evaluation, 'evaluation');
    await settle();
    assert.equal(without.remote.malformed, 1);
  } finally {
    await without.close();
  }
});

test('stage actor - a zero-bubble step: its I and W actions, lowered as the scheduler lowers zb-h1, arrive over the bus and run in order; an I where the lowering has W is dropped', async () => {
  const config = resolveTinyConfig({ model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, steps: 2, seed: 1, vocabSize: 24 }, { parallel: { pipeline: 2 }, numMicroBatches: 2, batchSize: 4, schedule: 'zb-h1' });
  const actions = stageActionsOfStep(config, 2)[1];
  assert.deepEqual(actions.map(formatAction), ['F0', 'I0', 'F1', 'I1', 'W0', 'W1', 'REDUCE_TIED', 'OPTIMIZER_STEP']);
  const h = harness(actions);
  try {
    h.sendRaw({ type: 'action', step: 0, index: 4, count: actions.length, action: { kind: 'I', microBatch: 0, chunk: 0 } });
    await settle();
    assert.equal(h.remote.malformed, 1);
    for (let index = actions.length - 1; index >= 0; index--) h.send(0, index, actions);
    await h.actor.runStep(0);
    assert.deepEqual(h.executor.log, ['begin 0', ...actions.map(formatAction)]);
  } finally {
    await h.close();
  }
});

test('stage actor - auto-zb: a schedule message takes effect at its step (the actions checked against the stage\'s own lowering of it), one too late or malformed is dropped; step-finished carries the op times', async () => {
  const config = resolveTinyConfig({ model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, steps: 3, seed: 1, vocabSize: 24 }, { parallel: { pipeline: 2 }, numMicroBatches: 4, batchSize: 4, schedule: 'auto-zb' });
  const start = stageActionsOfStep(config, 2)[1];
  // Costs where the last stage's W's belong elsewhere than zb-h1 puts them.
  const schedule = buildAutoZeroBubble(2, 4, [{ forward: 200, backwardInput: 50, backwardWeight: 150 }, { forward: 100, backwardInput: 50, backwardWeight: 200 }]);
  const next = lowerStageOfSchedule(config, schedule, 1);
  assert.notDeepEqual(next.map(formatAction), start.map(formatAction));
  const h = harness(start, 10_000, { kind: 'auto-zb', stages: 2, microBatches: 4, chunks: 1, lower: (s) => lowerStageOfSchedule(config, s, 1) });
  const costs = [{ forward: 200, backwardInput: 50, backwardWeight: 150 }, { forward: 100, backwardInput: 50, backwardWeight: 200 }];
  const message = (fromStep: number): SchedulePayload => ({ type: 'schedule', fromStep, schedule: scheduleToJson(schedule), costs });
  try {
    h.executor.opMs = { forward: 1, backwardInput: 2, backwardWeight: 3 };
    for (let index = 0; index < start.length; index++) h.send(0, index, start);
    await h.actor.runStep(0);
    // Step 0's actions are in: a schedule from step 0 comes too late; a broken one never counts.
    h.sendRaw(message(0));
    h.sendRaw({ ...message(1), costs: [costs[0]] });
    // Stage 1's ops backwards: every W before its B.
    h.sendRaw({ ...message(1), schedule: { ...scheduleToJson(schedule), ops: [schedule.ops[0]!, [...schedule.ops[1]!].reverse()].map((ops) => ops.map((o) => [o.kind, o.microBatch, o.chunk])) } });
    await settle();
    assert.equal(h.remote.malformed, 3);
    const adopted = () => h.actor.adopted;
    assert.equal(adopted(), undefined);
    h.sendRaw(message(1));
    // An action of step 1 as zb-h1 lowered it no longer fits.
    const differs = start.findIndex((action, index) => formatAction(action) !== formatAction(next[index]!));
    h.send(1, differs, start);
    await settle();
    assert.equal(h.remote.malformed, 4);
    for (let index = 0; index < next.length; index++) h.send(1, index, next);
    await h.actor.runStep(1);
    await settle();
    assert.deepEqual(h.executor.log.slice(start.length + 1), ['begin 1', ...next.map(formatAction)]);
    assert.equal(adopted()?.fromStep, 1);
    assert.deepEqual(adopted()?.costs, costs);
    assert.deepEqual(h.finished.map((f) => (f as { opMs?: unknown }).opMs), [h.executor.opMs, h.executor.opMs]);
  } finally {
    await h.close();
  }
});

test('stage actor - a schedule message to a stage whose job runs one schedule is dropped', async () => {
  const h = harness(SHORT);
  try {
    h.sendRaw({ type: 'schedule', fromStep: 1, schedule: scheduleToJson(buildAutoZeroBubble(2, 1)), costs: [] });
    await settle();
    assert.equal(h.remote.malformed, 1);
  } finally {
    await h.close();
  }
});

test('stage actor - a missing action fails the step, naming the action and the step; a failed actor takes no more work', async () => {
  const actions = SHORT;
  const h = harness(actions, 150);
  try {
    h.send(0, 0, actions);
    h.send(0, 2, actions);
    await assert.rejects(h.actor.runStep(0), /rank 3 got no action 1 of step 1 from its scheduler within 0\.15 s: the message was lost/);
    assert.equal(h.actor.status().state, 'failed');
    await assert.rejects(h.actor.runStep(1), /got no action 1 of step 1/);
    await assert.rejects(h.actor.between('save checkpoint of step 1', async () => 'saved'), /got no action 1 of step 1/);
  } finally {
    await h.close();
  }
});

test('stage actor - malformed payloads, and actions its schedule does not have, are dropped and counted, never run', async () => {
  const h = harness(SHORT);
  try {
    const bad = [
      { type: 'action', step: 0, index: 0, count: 3, action: { kind: 'X' } },
      { type: 'action', step: 0, index: 0, count: 3, action: { kind: 'F', microBatch: 9, chunk: 0 } },
      { type: 'action', step: 0, index: 3, count: 3, action: { kind: 'OPTIMIZER_STEP' } },
      // Well-formed, but not what this stage's schedule runs there: an early update, another count, a far step.
      { type: 'action', step: 0, index: 0, count: 3, action: { kind: 'OPTIMIZER_STEP' } },
      { type: 'action', step: 0, index: 1, count: 2, action: { kind: 'B', microBatch: 0, chunk: 0 } },
      { type: 'action', step: 7, index: 0, count: 3, action: { kind: 'F', microBatch: 0, chunk: 0 } },
      { type: 'reset' },
      'F0',
    ];
    for (const payload of bad) h.sendRaw(payload);
    await settle();
    assert.equal(h.remote.malformed, bad.length);
    assert.deepEqual(h.executor.log, []);
    assert.equal(h.actor.status().mailbox, 0);
  } finally {
    await h.close();
  }
});

test('stage actor - 10,000 mutated payloads on its subject leave it as it was: each is dropped and counted, or is a repeat of the real action; the step after runs exactly', async () => {
  const actions = ONE_F_ONE_B;
  const h = harness(actions);
  try {
    // Seeded: the same flood every run.
    let seed = 12345;
    const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)];
    const oddValues = [-1, 0, 1, 2, 4, 5, 1e9, 0.5, NaN, null, undefined, 'F', '0', [], {}, true];
    const fields = ['type', 'step', 'index', 'count', 'action', 'pass', 'extra'];
    const actionFields = ['kind', 'microBatch', 'chunk'];
    for (let i = 0; i < 10_000; i++) {
      const index = Math.floor(random() * actions.length);
      const payload: Record<string, unknown> = { type: 'action', step: 0, index, count: actions.length, action: { ...actionToWire(actions[index]) } };
      // One to three fields of the payload or of its action set to an odd value (or removed).
      for (let changes = 1 + Math.floor(random() * 3); changes > 0; changes--) {
        // Copied: an object set in two places must not come to hold itself.
        if (random() < 0.5) payload[pick(fields)] = structuredClone(pick(oddValues));
        else if (typeof payload.action === 'object' && payload.action !== null) (payload.action as Record<string, unknown>)[pick(actionFields)] = structuredClone(pick([...oddValues, 'B', 'W', 'OPTIMIZER_STEP', 'REDUCE_TIED']));
      }
      h.sendRaw(payload);
    }
    await settle();
    assert.ok(h.remote.malformed > 9000, `only ${h.remote.malformed} of 10,000 refused`);
    assert.deepEqual(h.executor.log, [], 'a mutated payload ran');
    for (let index = 0; index < actions.length; index++) h.send(0, index, actions);
    await h.actor.runStep(0);
    assert.deepEqual(h.executor.log, ['begin 0', ...actions.map(formatAction)]);
    assert.equal(h.actor.status().state, 'idle');
  } finally {
    await h.close();
  }
});

test('stage actor - a step whose last action is not OPTIMIZER_STEP fails before it runs', async () => {
  const actions = [F(0), B(0)];
  const h = harness(actions);
  try {
    h.send(0, 0, actions);
    h.send(0, 1, actions);
    await assert.rejects(h.actor.runStep(0), /a step ends with OPTIMIZER_STEP, and only there/);
    assert.deepEqual(h.executor.log, ['begin 0', 'F0']);
  } finally {
    await h.close();
  }
});

test('stage actor - work between steps runs in mailbox order and is refused while a step runs', async () => {
  const h = harness([F(0), STEP_END]);
  try {
    assert.equal(await h.actor.between('save checkpoint of step 0', async () => 'saved'), 'saved');
    assert.equal(h.actor.status().lastAction, 'save checkpoint of step 0');
    const running = h.actor.runStep(0);
    await assert.rejects(h.actor.between('save checkpoint of step 0', async () => 'saved'), /cannot save checkpoint of step 0 while step 1 runs/);
    const actions = [F(0), STEP_END];
    h.send(0, 0, actions);
    h.send(0, 1, actions);
    await running;
    assert.equal(h.actor.status().mailbox, 0);
  } finally {
    await h.close();
  }
});

test('stage actor - stopping rejects the step asked for or running, so no driver waits for ever', async () => {
  for (const sendFirst of [false, true]) {
    const h = harness(SHORT);
    try {
      const running = h.actor.runStep(0);
      if (sendFirst) {
        h.send(0, 0, SHORT);
        await settle();
      }
      h.actor.stop();
      await assert.rejects(running, /stage actor of rank 3 stopped/);
    } finally {
      await h.close();
    }
  }
});

/** A scheduler actor's side of the bus (the launcher's), and a watcher of every stage actor's subject. */
function schedulerBus(jobId: string) {
  const network = new LocalNetwork();
  const bus = new Bus({ jobId, transport: network.connect(), log: () => {} });
  const watch = new Bus({ jobId, transport: network.connect(), log: () => {} });
  const system = start();
  const remote = new RemoteActors(bus, system, { rank: 'launcher' });
  return {
    system,
    remote,
    /** Every stage action sent, with the rank it went to. */
    onStageMessage: (seen: (rank: number, payload: StageActionPayload) => void) =>
      watch.subscribe('actor.stage.*', (message) => void (message.kind === 'actor' && seen(message.to.rank as number, message.payload as StageActionPayload))),
    close: async (scheduler: SchedulerActor) => {
      scheduler.stop();
      stop(system);
      await bus.close();
      await watch.close();
    },
  };
}

test('scheduler actor - sends each stage actor of its replica one message per action of the opened step', async () => {
  const config = resolveTinyConfig({ model: { numLayers: 4, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, steps: 2, seed: 1, vocabSize: 24 }, { parallel: { pipeline: 2, data: 2, tensor: { size: 2 } }, numMicroBatches: 4, batchSize: 16 });
  const grid = new ParallelGrid({ data: 2, pipeline: 2, tensor: 2 });
  const world = schedulerBus('sched');
  const { system, remote } = world;
  const seen = new Map<number, StageActionPayload[]>();
  world.onStageMessage((rank, payload) => seen.set(rank, [...(seen.get(rank) ?? []), payload]));
  const lowered = stageActionsOfStep(config, 2);
  const scheduler = new SchedulerActor({ system, remote, grid, replica: 1, actions: lowered, log: () => {} });
  try {
    scheduler.startStep(5);
    await settle();
    // Replica 1: ranks with dp = 1 (tp fastest, then dp, pp outermost).
    const ranks = [...seen.keys()].sort((a, b) => a - b);
    assert.deepEqual(ranks, [2, 3, 6, 7]);
    for (const rank of ranks) {
      const stage = grid.coordinates(rank).pp;
      const payloads = seen.get(rank)!;
      assert.deepEqual(payloads.map((p) => p.index), lowered[stage].map((_, i) => i));
      assert.ok(payloads.every((p) => p.step === 5 && p.count === lowered[stage].length));
      // 4 forwards and 4 backwards, then (1F1B ends both stages with a backward) the tied reduction and the update.
      assert.equal(payloads.filter((p) => p.action.kind === 'F' || p.action.kind === 'B').length, 8);
      assert.deepEqual(payloads.slice(-3).map((p) => p.action.kind), ['B', 'REDUCE_TIED', 'OPTIMIZER_STEP']);
    }
    assert.equal(scheduler.status().state, 'running');
    for (const rank of ranks) remote.tell({ rank: 1, role: 'scheduler' }, { type: 'step-finished', rank, step: 5 });
    scheduler.setPaused(true);
    await settle();
    assert.equal(scheduler.status().state, 'paused');
  } finally {
    await world.close(scheduler);
  }
});

test('scheduler actor - a step whose actions could not all be sent is logged, counted and escalated at once; the actor keeps its state and sends the next step whole', async () => {
  const config = resolveTinyConfig({ model: { numLayers: 2, hiddenSize: 16, numAttentionHeads: 2, maxPositionEmbeddings: 16 }, seqLen: 8, steps: 2, seed: 1, vocabSize: 24 }, { parallel: { pipeline: 2, data: 1, tensor: { size: 1 } }, numMicroBatches: 2, batchSize: 4 });
  const grid = new ParallelGrid({ data: 1, pipeline: 2, tensor: 1 });
  const world = schedulerBus('sched-fail');
  const { system, remote } = world;
  // The third send of the first step throws, as a publish on a closing bus does.
  let sends = 0;
  const tell = remote.tell.bind(remote);
  remote.tell = (address, payload, from) => {
    if (++sends === 3) throw new Error('the bus is closed');
    tell(address, payload, from);
  };
  const sent: StageActionPayload[] = [];
  world.onStageMessage((_rank, payload) => sent.push(payload));
  const logs: string[] = [];
  const lost: string[] = [];
  const lowered = stageActionsOfStep(config, 2);
  const scheduler = new SchedulerActor({ system, remote, grid, replica: 0, actions: lowered, log: (line) => logs.push(line), onActionsLost: (reason) => lost.push(reason) });
  try {
    scheduler.setPaused(true);
    scheduler.startStep(0);
    await settle();
    assert.equal(scheduler.failures.count, 1);
    assert.deepEqual(lost, ['the scheduler actor of replica 0 could not send every action of step 1: the bus is closed']);
    assert.deepEqual(logs, ['scheduler actor of replica 0: handling the start of step 1 threw (1 so far; it goes on with its state): the bus is closed']);
    assert.equal(scheduler.status().state, 'failed', 'until the job rolls back, its status says the step cannot finish');
    sent.length = 0;
    scheduler.startStep(1);
    await settle();
    assert.equal(sent.length, lowered[0].length + lowered[1].length, 'the next step was not sent whole');
    assert.ok(sent.every((payload) => payload.step === 1));
    for (const rank of [0, 1]) remote.tell({ rank: 0, role: 'scheduler' }, { type: 'step-finished', rank, step: 1 });
    await settle();
    // The pause asked before the failure still holds at the boundary.
    assert.equal(scheduler.status().state, 'paused');
    assert.equal(scheduler.status().mailbox, 0);
    assert.equal(lost.length, 1);
  } finally {
    await world.close(scheduler);
  }
});
