// Tests: the coordinator actor's supervision policy. An event whose handling throws (here the step
// reporter, on every step-done) is logged and counted, and the actor keeps its state and mailbox: it
// still answers ctl status with the steps done; after 20 such failures the job ends non-zero through the
// usual failure path instead of hanging.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { start, stop } from 'nact';
import { Coordinator } from '../../src/actors/coordinator.ts';
import { Bus } from '../../src/comm/bus.ts';
import { newJobKey } from '../../src/comm/frame-signing.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import { SUBJECTS } from '../../src/protocol/subjects.ts';
import { settle } from '../support/eventually.ts';

test('coordinator supervision - a throwing event handler is logged and counted, the actor goes on; 20 of them end the job with exit 1', async () => {
  const network = new LocalNetwork();
  const key = newJobKey();
  const system = start();
  const logs: string[] = [];
  const finished: { exitCode: number; reason: string }[] = [];
  const states: string[] = [];
  const coordinatorBus = new Bus({ jobId: 'sup', transport: network.connect(), key, log: () => {} });
  const coordinator = new Coordinator(
    system,
    coordinatorBus,
    { jobId: 'sup', world: 1, totalSteps: 100, startStep: 0, registerTimeoutMs: 60_000, heartbeatTimeoutMs: 60_000 },
    {
      log: (line) => logs.push(line),
      onStep: () => {
        throw new Error('the step reporter broke');
      },
      onEvaluation: () => {},
      onFinished: (exitCode, reason) => finished.push({ exitCode, reason }),
      onShutdown: () => {},
      onCommitCheckpoint: () => {},
      schedulers: { startStep: () => {}, startEvaluation: () => {}, jobStateChanged: (state) => states.push(state), statuses: () => [] },
    },
  );
  const rank = new Bus({ jobId: 'sup', transport: network.connect(), key, log: () => {} });
  try {
    rank.publish(SUBJECTS.register, { kind: 'register', rank: 0, node: 0, pid: 1, host: 'h' });
    const stepDone = (step: number) => rank.publish(SUBJECTS.stepDone, { kind: 'step-done', rank: 0, step, loss: 1, tokens: 1, stepMs: 1, gradNorm: 1 });
    stepDone(1);
    stepDone(2);
    await settle();
    assert.ok(logs.some((line) => line === 'coordinator: handling a step-done event threw (2 so far; it goes on with its state): the step reporter broke'), logs.join('\n'));
    const answer = await rank.request(SUBJECTS.control, { kind: 'control', command: 'status' }, 2000);
    assert.equal(answer.kind, 'control-reply');
    assert.equal(answer.kind === 'control-reply' ? answer.status?.step : undefined, 2, 'the actor lost its state');
    assert.equal(finished.length, 0);
    for (let step = 3; step <= 20; step++) stepDone(step);
    await settle(100);
    assert.deepEqual(finished.map((f) => f.exitCode), [1]);
    assert.match(finished[0]!.reason, /^the coordinator failed 20 times, last on a step-done event: the step reporter broke$/);
    // Ended like any failure: the scheduler actors are told, so they stop sending steps.
    assert.equal(states.at(-1), 'failed');
  } finally {
    coordinator.close();
    await rank.close();
    await coordinatorBus.close();
    stop(system);
  }
});

test("coordinator supervision - a failure whose shutdown message cannot leave (the bus closed) still ends the job: the attempt never waits for ever", async () => {
  const network = new LocalNetwork();
  const system = start();
  const finished: { exitCode: number; reason: string; restartable: boolean }[] = [];
  const shutdowns: string[] = [];
  const logs: string[] = [];
  const bus = new Bus({ jobId: 'sup2', transport: network.connect(), key: newJobKey(), log: () => {} });
  const coordinator = new Coordinator(
    system,
    bus,
    { jobId: 'sup2', world: 1, totalSteps: 10, startStep: 0, registerTimeoutMs: 60_000, heartbeatTimeoutMs: 60_000 },
    {
      log: (line) => logs.push(line),
      onStep: () => {},
      onEvaluation: () => {},
      onFinished: (exitCode, reason, restartable) => finished.push({ exitCode, reason, restartable }),
      onShutdown: (reason) => shutdowns.push(reason),
      onCommitCheckpoint: () => {},
    },
  );
  try {
    await bus.close();
    coordinator.tell({ type: 'internal-error', reason: 'the scheduler actor of replica 0 could not send every action of step 1: the bus is closed', restartable: true });
    await settle();
    assert.deepEqual(finished.map((f) => [f.exitCode, f.restartable]), [[1, true]], logs.join('\n'));
    assert.equal(shutdowns.length, 1, 'the local workers are stopped all the same');
    assert.ok(logs.some((line) => /could not tell the other launchers that the job ends/.test(line)), logs.join('\n'));
  } finally {
    coordinator.close();
    stop(system);
  }
});
