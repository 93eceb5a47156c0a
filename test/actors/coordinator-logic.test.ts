import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ControlReplyMessage, StepGoMessage } from '../../src/protocol/messages.ts';
import { CoordinatorLogic, type CoordinatorEffect, type CoordinatorSettings } from '../../src/actors/coordinator-logic.ts';

const SETTINGS: CoordinatorSettings = {
  jobId: 'job1',
  world: 2,
  totalSteps: 3,
  startStep: 0,
  registerTimeoutMs: 10_000,
  heartbeatTimeoutMs: 5_000,
};

function started(settings = SETTINGS) {
  const logic = new CoordinatorLogic(settings, 0);
  for (let rank = 0; rank < settings.world; rank++) logic.handle({ type: 'register', rank, node: 0, pid: 100 + rank, host: 'h' }, 1);
  return logic;
}

const reply = (rank: number) => ({ subject: 'gate', reply: `inbox.${rank}` });
const answers = (effects: CoordinatorEffect[]) =>
  effects.filter((e) => e.type === 'respond' && e.message.kind === 'step-go').map((e) => (e as { message: StepGoMessage }).message.action);
const control = (logic: CoordinatorLogic, command: 'status' | 'pause' | 'resume' | 'stop' | 'checkpoint', now = 10, save?: boolean) => {
  const effects = logic.handle({ type: 'control', command, reply: { subject: 'ctl', reply: 'x' }, save }, now);
  const response = effects.find((e) => e.type === 'respond' && e.message.kind === 'control-reply');
  return { effects, reply: (response as { message: ControlReplyMessage }).message };
};

test('coordinator - the gate opens only when every rank has asked, then runs to the last step and stops', () => {
  const logic = started();
  for (let step = 0; step <= 3; step++) {
    assert.deepEqual(answers(logic.handle({ type: 'step-ready', rank: 0, step, reply: reply(0) }, 5)), []);
    const opened = answers(logic.handle({ type: 'step-ready', rank: 1, step, reply: reply(1) }, 5));
    assert.deepEqual(opened, step < 3 ? ['run', 'run'] : ['stop', 'stop']);
  }
  assert.equal(logic.jobState, 'stopping');
  assert.deepEqual(logic.handle({ type: 'rank-exit', rank: 0, code: 0, signal: null }, 6), []);
  const finished = logic.handle({ type: 'rank-exit', rank: 1, code: 0, signal: null }, 6);
  assert.deepEqual(finished.filter((e) => e.type === 'finished').map((e) => (e as { exitCode: number }).exitCode), [0]);
});

test('coordinator - evaluations: the gate asks for one where due (and at the last step), never at the step the run starts from nor where it stops early, and the scheduler actors are told', () => {
  const gates = (settings: CoordinatorSettings, stopBefore?: number) => {
    const logic = started(settings);
    const seen: { step: number; evaluate: boolean; started: boolean }[] = [];
    for (let step = settings.startStep; step <= settings.totalSteps; step++) {
      if (step === stopBefore) control(logic, 'stop');
      logic.handle({ type: 'step-ready', rank: 0, step, reply: reply(0) }, 5);
      const effects = logic.handle({ type: 'step-ready', rank: 1, step, reply: reply(1) }, 5);
      const go = effects.filter((e) => e.type === 'respond' && e.message.kind === 'step-go').map((e) => (e as { message: StepGoMessage }).message);
      assert.equal(go.length, 2);
      assert.equal(go[0].evaluate, go[1].evaluate);
      seen.push({ step, evaluate: go[0].evaluate === true, started: effects.some((e) => e.type === 'evaluation-started' && e.step === step) });
      if (go[0].action === 'stop') break;
    }
    for (const gate of seen) assert.equal(gate.started, gate.evaluate, `step ${gate.step}: the scheduler actors must be told exactly when the ranks are`);
    return seen.filter((gate) => gate.evaluate).map((gate) => gate.step);
  };
  const every2 = { ...SETTINGS, totalSteps: 5, evaluateAfter: (steps: number) => steps % 2 === 0 || steps === 5 };
  assert.deepEqual(gates(every2), [2, 4, 5]);
  assert.deepEqual(gates({ ...every2, startStep: 2 }), [4, 5], 'a resumed run evaluated its start step already');
  assert.deepEqual(gates(every2, 4), [2], 'a stop at the boundary after step 4, where one was due, ends the run without it');
  assert.deepEqual(gates(SETTINGS), [], 'a job without validation data never evaluates');
});

test('coordinator - pause holds the gate, status still answers, resume releases it', () => {
  const logic = started();
  assert.equal(control(logic, 'pause').reply.ok, true);
  logic.handle({ type: 'step-ready', rank: 0, step: 0, reply: reply(0) }, 5);
  assert.deepEqual(answers(logic.handle({ type: 'step-ready', rank: 1, step: 0, reply: reply(1) }, 5)), []);
  const status = control(logic, 'status').reply;
  assert.equal(status.status?.state, 'paused');
  assert.equal(status.status?.ranks.length, 2);
  // A rank whose gate request timed out asks again: still held, and answered once, at the new address.
  assert.deepEqual(answers(logic.handle({ type: 'step-ready', rank: 1, step: 0, reply: { subject: 'gate', reply: 'again' } }, 6)), []);
  const resumed = control(logic, 'resume');
  assert.deepEqual(answers(resumed.effects), ['run', 'run']);
  assert.ok(resumed.effects.some((e) => e.type === 'respond' && e.to.reply === 'again'));
});

test('coordinator - stop answers the next gate with stop and finishes with exit 0', () => {
  const logic = started();
  assert.match(control(logic, 'stop').reply.message, /next step boundary/);
  logic.handle({ type: 'step-ready', rank: 0, step: 0, reply: reply(0) }, 5);
  assert.deepEqual(answers(logic.handle({ type: 'step-ready', rank: 1, step: 0, reply: reply(1) }, 5)), ['stop', 'stop']);
  logic.handle({ type: 'rank-exit', rank: 0, code: 0, signal: null }, 6);
  const end = logic.handle({ type: 'rank-exit', rank: 1, code: 0, signal: null }, 6);
  assert.ok(end.some((e) => e.type === 'finished' && e.exitCode === 0 && /stopped/.test(e.reason)));
});

test('coordinator - a dead rank fails the job naming it, and the others are told to shut down', () => {
  const logic = started();
  const effects = logic.handle({ type: 'rank-exit', rank: 1, code: null, signal: 'SIGKILL' }, 7);
  const shutdown = effects.find((e) => e.type === 'shutdown');
  assert.ok(shutdown && shutdown.type === 'shutdown' && shutdown.exitCode === 1);
  assert.match(shutdown.reason, /rank 1 \(pid 101, node 0\) died: killed by SIGKILL/);
  assert.equal(logic.jobState, 'failed');
  assert.deepEqual(logic.handle({ type: 'rank-exit', rank: 0, code: 0, signal: null }, 8), []);
});

test('coordinator - a silent rank and a missing rank are named', () => {
  const silent = started();
  // Before its first step a rank loading its model gets three times the heartbeat timeout.
  assert.deepEqual(silent.handle({ type: 'tick' }, 5_500).filter((e) => e.type === 'shutdown'), []);
  for (const rank of [0, 1]) silent.handle({ type: 'step-ready', rank, step: 0, reply: reply(rank) }, 6_000);
  silent.handle({ type: 'heartbeat', rank: 0, step: 1, state: 'training' }, 11_000);
  const effects = silent.handle({ type: 'tick' }, 11_500);
  assert.ok(effects.some((e) => e.type === 'shutdown' && /rank 1 .* stopped answering: no heartbeat for 5\.5 s/.test(e.reason)));
  // Its launcher kills it at once rather than waiting for a frozen process to exit.
  assert.equal(effects.find((e) => e.type === 'shutdown')?.unresponsiveRank, 1);
  const loading = started();
  assert.ok(loading.handle({ type: 'tick' }, 16_000).some((e) => e.type === 'shutdown' && /stopped answering/.test(e.reason)));

  const missing = new CoordinatorLogic({ ...SETTINGS, world: 3, heartbeatTimeoutMs: 60_000 }, 0);
  missing.handle({ type: 'register', rank: 1, node: 0, pid: 5, host: 'h' }, 1);
  assert.deepEqual(missing.handle({ type: 'tick' }, 9_000), []);
  const late = missing.handle({ type: 'tick' }, 10_001);
  assert.ok(late.some((e) => e.type === 'shutdown' && /ranks 0, 2 did not register within 10 s/.test(e.reason)));
});

test('coordinator - status reports step, loss and throughput; checkpoint is acknowledged', () => {
  const logic = started();
  logic.handle({ type: 'step-done', report: { kind: 'step-done', rank: 0, step: 1, loss: 9.5, tokens: 512, stepMs: 1000, gradNorm: 1 } }, 9);
  const status = control(logic, 'status').reply.status!;
  assert.equal(status.step, 1);
  assert.equal(status.lastLoss, 9.5);
  assert.equal(status.tokensPerS, 512);
  assert.equal(control(logic, 'checkpoint').reply.ok, false, 'a job without checkpoint settings cannot save');
});

test('coordinator - checkpoints: periodic and requested saves ride on the gate, and commit once every rank saved', () => {
  const logic = new CoordinatorLogic({ ...SETTINGS, totalSteps: 5, checkpoint: { every: 2, folderFor: (step) => `tmp-${step}` } }, 0);
  for (const rank of [0, 1]) logic.handle({ type: 'register', rank, node: 0, pid: 10 + rank, host: 'h' }, 1);
  const gate = (step: number) => {
    logic.handle({ type: 'step-ready', rank: 0, step, reply: reply(0) }, 2);
    return logic.handle({ type: 'step-ready', rank: 1, step, reply: reply(1) }, 2).filter((e) => e.type === 'respond').map((e) => (e as { message: StepGoMessage }).message.save);
  };
  assert.deepEqual(gate(0), [undefined, undefined], 'nothing to save before the first step');
  assert.deepEqual(gate(1), [undefined, undefined]);
  assert.deepEqual(gate(2), ['tmp-2', 'tmp-2']);
  assert.deepEqual(logic.handle({ type: 'checkpoint-saved', rank: 1, step: 2, record: { rank: 1 } }, 3), []);
  const commit = logic.handle({ type: 'checkpoint-saved', rank: 0, step: 2, record: { rank: 0 } }, 3);
  assert.deepEqual(commit, [{ type: 'commit-checkpoint', step: 2, folder: 'tmp-2', records: [{ rank: 0 }, { rank: 1 }] }]);
  assert.equal(control(logic, 'checkpoint').reply.ok, true);
  assert.deepEqual(gate(3), ['tmp-3', 'tmp-3'], 'a requested save at the next boundary');
  for (const rank of [0, 1]) logic.handle({ type: 'checkpoint-saved', rank, step: 3, record: { rank } }, 4);
  assert.deepEqual(gate(4), ['tmp-4', 'tmp-4']);
  for (const rank of [0, 1]) logic.handle({ type: 'checkpoint-saved', rank, step: 4, record: { rank } }, 4);
  assert.deepEqual(gate(5), ['tmp-5', 'tmp-5'], 'the end of the run is saved too');
});

test('coordinator - duplicate rank claims and step disagreement fail loudly', () => {
  const logic = started();
  const twice = logic.handle({ type: 'register', rank: 0, node: 1, pid: 999, host: 'other' }, 2);
  assert.ok(twice.some((e) => e.type === 'shutdown' && /registered twice/.test(e.reason)));
  const skew = started();
  skew.handle({ type: 'step-ready', rank: 0, step: 0, reply: reply(0) }, 5);
  const effects = skew.handle({ type: 'step-ready', rank: 1, step: 2, reply: reply(1) }, 5);
  assert.ok(effects.some((e) => e.type === 'shutdown' && /disagree/.test(e.reason)));
});

test('coordinator - a done heartbeat counts as a clean exit (ranks on other nodes), the later exit is no news', () => {
  const logic = started();
  for (const rank of [0, 1]) logic.handle({ type: 'step-ready', rank, step: 3, reply: reply(rank) }, 5);
  assert.deepEqual(logic.handle({ type: 'heartbeat', rank: 0, step: 3, state: 'done' }, 6), []);
  assert.deepEqual(logic.handle({ type: 'rank-exit', rank: 0, code: 0, signal: null }, 6), []);
  const end = logic.handle({ type: 'heartbeat', rank: 1, step: 3, state: 'done' }, 7);
  assert.ok(end.some((e) => e.type === 'finished' && e.exitCode === 0));
});

test('coordinator - the run answer opens the step for the scheduler actors; a held gate opens none', () => {
  const logic = new CoordinatorLogic(SETTINGS, 0);
  for (const rank of [0, 1]) logic.handle({ type: 'register', rank, node: 0, pid: 10 + rank, host: 'h' }, 1);
  logic.handle({ type: 'step-ready', rank: 0, step: 0, reply: reply(0) }, 2);
  const effects = logic.handle({ type: 'step-ready', rank: 1, step: 0, reply: reply(1) }, 2);
  assert.deepEqual(effects.filter((e) => e.type === 'step-started'), [{ type: 'step-started', step: 0 }]);
  // Every rank has its answer before the scheduler actors send the step's actions.
  assert.ok(effects.findIndex((e) => e.type === 'step-started') > effects.findLastIndex((e) => e.type === 'respond'));
  logic.handle({ type: 'control', command: 'pause', reply: reply(9) }, 3);
  logic.handle({ type: 'step-ready', rank: 0, step: 1, reply: reply(0) }, 4);
  const held = logic.handle({ type: 'step-ready', rank: 1, step: 1, reply: reply(1) }, 4);
  assert.equal(held.filter((e) => e.type === 'step-started').length, 0);
  assert.equal(logic.jobState, 'paused');
  const resumed = logic.handle({ type: 'control', command: 'resume', reply: reply(9) }, 5);
  assert.deepEqual(resumed.filter((e) => e.type === 'step-started'), [{ type: 'step-started', step: 1 }]);
});

test('coordinator - status lists each rank\'s actors from its latest heartbeat', () => {
  const logic = new CoordinatorLogic(SETTINGS, 0);
  for (const rank of [0, 1]) logic.handle({ type: 'register', rank, node: 0, pid: 10 + rank, host: 'h' }, 1);
  const actor = (rank: number, state: string) => ({ kind: 'stage' as const, rank, state, mailbox: 0, lastAction: '' });
  logic.handle({ type: 'heartbeat', rank: 1, step: 0, state: 'training', actors: [actor(1, 'running')] }, 2);
  logic.handle({ type: 'heartbeat', rank: 0, step: 0, state: 'training', actors: [actor(0, 'idle')] }, 2);
  // A beat without the list (the heartbeat thread's) keeps the last one.
  logic.handle({ type: 'heartbeat', rank: 1, step: 0, state: 'training' }, 3);
  const [answer] = logic.handle({ type: 'control', command: 'status', reply: reply(9) }, 3);
  const status = ((answer as { message: { status: { actors: unknown[] } } }).message).status;
  assert.deepEqual(status.actors, [actor(0, 'idle'), actor(1, 'running')]);
});

test('coordinator - stop with a save: the last gate says stop and carries the folder, then the checkpoint commits', () => {
  const logic = new CoordinatorLogic({ ...SETTINGS, totalSteps: 50, checkpoint: { every: 0, folderFor: (step) => `tmp-${step}` } }, 0);
  for (const rank of [0, 1]) logic.handle({ type: 'register', rank, node: 0, pid: 10 + rank, host: 'h' }, 1);
  const gate = (step: number) => {
    logic.handle({ type: 'step-ready', rank: 0, step, reply: reply(0) }, 2);
    return logic.handle({ type: 'step-ready', rank: 1, step, reply: reply(1) }, 2);
  };
  gate(0);
  gate(1);
  const asked = control(logic, 'stop', 10, true);
  assert.equal(asked.reply.ok, true);
  assert.match(asked.reply.message, /stopping at the next step boundary \(after step \d+\), saving a checkpoint there/);
  const last = gate(2).filter((e) => e.type === 'respond').map((e) => (e as { message: StepGoMessage }).message);
  assert.deepEqual(last.map((m) => [m.action, m.save]), [['stop', 'tmp-2'], ['stop', 'tmp-2']]);
  for (const rank of [0, 1]) {
    const effects = logic.handle({ type: 'checkpoint-saved', rank, step: 2, record: { rank } }, 3);
    if (rank === 1) assert.deepEqual(effects, [{ type: 'commit-checkpoint', step: 2, folder: 'tmp-2', records: [{ rank: 0 }, { rank: 1 }] }]);
  }
  assert.equal(control(logic, 'stop', 11, true).reply.ok, false, 'too late once the job is stopping');
  const plain = started();
  assert.match(control(plain, 'stop', 10, true).reply.message, /cannot save checkpoints/);
  assert.notEqual(plain.jobState, 'stopping', 'a refused stop --checkpoint does not stop the job');
});

test('coordinator - a stop signal: the next gate stops with a checkpoint, the job finishes with the signal\'s exit code (not failed); a second quits at once', () => {
  const withCheckpoints = () => {
    const logic = new CoordinatorLogic({ ...SETTINGS, totalSteps: 50, checkpoint: { every: 0, folderFor: (step) => `tmp-${step}` } }, 0);
    for (const rank of [0, 1]) logic.handle({ type: 'register', rank, node: 0, pid: 10 + rank, host: 'h' }, 1);
    return logic;
  };
  const gate = (logic: CoordinatorLogic, step: number) => {
    logic.handle({ type: 'step-ready', rank: 0, step, reply: reply(0) }, 2);
    return logic.handle({ type: 'step-ready', rank: 1, step, reply: reply(1) }, 2);
  };
  const logic = withCheckpoints();
  gate(logic, 0);
  gate(logic, 1);
  const heard = logic.handle({ type: 'signal', signal: 'SIGTERM', where: 'node 0' }, 3);
  assert.ok(heard.some((e) => e.type === 'log' && /SIGTERM at node 0: stopping at the next step boundary, saving a checkpoint there \(SIGTERM again quits at once\)/.test(e.line)));
  const last = gate(logic, 2).filter((e) => e.type === 'respond').map((e) => (e as { message: StepGoMessage }).message);
  assert.deepEqual(last.map((m) => [m.action, m.save]), [['stop', 'tmp-2'], ['stop', 'tmp-2']]);
  logic.handle({ type: 'rank-exit', rank: 0, code: 0, signal: null }, 4);
  const finished = logic.handle({ type: 'rank-exit', rank: 1, code: 0, signal: null }, 4).find((e) => e.type === 'finished');
  assert.deepEqual(finished && { ...finished, reason: undefined }, { type: 'finished', exitCode: 143, reason: undefined, signal: 'SIGTERM' });
  assert.match((finished as { reason: string }).reason, /^stopped by SIGTERM after step \d+$/);

  // Passed on by another node's launcher as a control; then a second signal quits without waiting for a boundary.
  const other = withCheckpoints();
  gate(other, 0);
  const passed = other.handle({ type: 'control', command: 'stop', save: true, signal: 'SIGINT', reply: { subject: 'ctl', reply: 'x' } }, 3);
  assert.ok(passed.some((e) => e.type === 'log' && /SIGINT at a launcher: stopping/.test(e.line)));
  const quit = other.handle({ type: 'signal', signal: 'SIGINT', where: 'node 1' }, 4);
  assert.deepEqual(quit.find((e) => e.type === 'finished'), { type: 'finished', exitCode: 130, reason: 'quit at once on a second stop signal (SIGINT at node 1)', restartable: false });
});

test('coordinator - a NATS interruption while running rolls back (restartable), named; while stopping it is only logged', () => {
  const running = started();
  const effects = running.handle({ type: 'connection-interrupted', rank: 1, node: 0, pid: 101, server: '127.0.0.1:4222' }, 5);
  const finished = effects.find((e) => e.type === 'finished');
  assert.ok(finished?.type === 'finished' && finished.restartable === true && finished.exitCode === 1);
  assert.match(finished.reason, /the NATS connection of rank 1 was interrupted \(127\.0\.0\.1:4222: server restart\?\); messages may be lost/);
  assert.ok(effects.some((e) => e.type === 'shutdown'));

  const launcher = started();
  const own = launcher.handle({ type: 'connection-interrupted', node: 0, pid: 1, server: 's' }, 5);
  assert.ok(own.some((e) => e.type === 'finished' && e.restartable === true && /of the launcher of node 0 was interrupted/.test(e.reason)));

  // Before every rank registered, a lost registration would otherwise wait for the registration timeout.
  const starting = new CoordinatorLogic(SETTINGS, 0);
  assert.ok(starting.handle({ type: 'connection-interrupted', rank: 0, node: 0, pid: 7, server: 's' }, 1).some((e) => e.type === 'finished' && e.restartable === true));

  const stale = started();
  assert.deepEqual(
    stale.handle({ type: 'connection-interrupted', rank: 1, node: 0, pid: 999, server: 's' }, 5).map((e) => e.type),
    ['log'],
    'a worker of an earlier attempt no longer speaks for its rank',
  );

  const stopping = started();
  for (const rank of [0, 1]) stopping.handle({ type: 'step-ready', rank, step: 3, reply: reply(rank) }, 5);
  assert.equal(stopping.jobState, 'stopping');
  assert.deepEqual(stopping.handle({ type: 'connection-interrupted', rank: 0, node: 0, pid: 100, server: 's' }, 6).map((e) => e.type), ['log']);
});

test('coordinator - the watchdog: no step for stallFactor x the median step time (at least stallMinMs) rolls the job back; a pause is no stall', () => {
  const settings: CoordinatorSettings = { ...SETTINGS, totalSteps: 100, heartbeatTimeoutMs: 1e9, stall: { factor: 10, minMs: 3_000 } };
  const failures = (effects: CoordinatorEffect[]) => effects.filter((e) => e.type === 'finished') as { reason: string; restartable?: boolean }[];
  const run = () => {
    const logic = started(settings);
    let now = 10;
    for (let step = 0; step < 3; step++) {
      for (const rank of [0, 1]) logic.handle({ type: 'step-ready', rank, step, reply: reply(rank) }, now);
      now += 400;
      logic.handle({ type: 'step-done', report: { kind: 'step-done', rank: 1, step: step + 1, loss: 1, tokens: 1, stepMs: 400, gradNorm: 1 } }, now);
    }
    for (const rank of [0, 1]) logic.handle({ type: 'step-ready', rank, step: 3, reply: reply(rank) }, now);
    return { logic, now };
  };
  // Step 4 never ends: 10 x 400 ms = 4 s (above the 3 s floor) later it is a stuck job, rolled back.
  const stuck = run();
  assert.deepEqual(failures(stuck.logic.handle({ type: 'tick' }, stuck.now + 3_900)), []);
  const failed = failures(stuck.logic.handle({ type: 'tick' }, stuck.now + 4_100));
  assert.equal(failed.length, 1);
  assert.equal(failed[0]!.restartable, true);
  assert.match(failed[0]!.reason, /^no step finished for 4\.1 s \(watchdog: 10 x the median step time 400 ms, at least 3 s\): the job is stuck$/);
  // Paused for a minute, then resumed: the clock starts again at the resume.
  const paused = run();
  control(paused.logic, 'pause', paused.now);
  paused.logic.handle({ type: 'step-done', report: { kind: 'step-done', rank: 1, step: 4, loss: 1, tokens: 1, stepMs: 400, gradNorm: 1 } }, paused.now + 400);
  for (const rank of [0, 1]) paused.logic.handle({ type: 'step-ready', rank, step: 4, reply: reply(rank) }, paused.now + 400);
  assert.equal(paused.logic.jobState, 'paused');
  assert.deepEqual(failures(paused.logic.handle({ type: 'tick' }, paused.now + 60_000)), []);
  control(paused.logic, 'resume', paused.now + 60_000);
  assert.deepEqual(failures(paused.logic.handle({ type: 'tick' }, paused.now + 63_000)), []);
  assert.equal(failures(paused.logic.handle({ type: 'tick' }, paused.now + 64_500)).length, 1);
  // Without a watchdog setting nothing fires.
  const none = new CoordinatorLogic({ ...settings, stall: undefined }, 0);
  assert.deepEqual(failures(none.handle({ type: 'tick' }, 1e9)).filter((f) => /watchdog/.test(f.reason)), []);
});

test("coordinator - the job's own actors failing: a scheduler that lost a step's actions rolls the job back (restartable); the coordinator's own repeated failure ends it for good", () => {
  for (const restartable of [true, false]) {
    const logic = started();
    const reason = restartable ? 'the scheduler actor of replica 0 could not send every action of step 1: the bus is closed' : 'the coordinator failed 20 times';
    const effects = logic.handle({ type: 'internal-error', reason, ...(restartable ? { restartable } : {}) }, 5);
    const finished = effects.find((e) => e.type === 'finished');
    assert.deepEqual(finished, { type: 'finished', exitCode: 1, reason, restartable });
    assert.equal(logic.jobState, 'failed');
    assert.deepEqual(logic.handle({ type: 'internal-error', reason, restartable }, 6), [], 'a second failure after the end is no news');
  }
});
