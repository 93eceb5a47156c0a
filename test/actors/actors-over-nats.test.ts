/**
 * The actors of a real job, as an operator sees them: worker processes and a private NATS server, a
 * `nats sub`-like subscriber on the stage actors' subjects counting the scheduler's action messages,
 * and `ctl status` listing every actor, with the scheduler reporting `paused` after `ctl pause`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { newJobKey } from '../../src/comm/frame-signing.ts';
import { Bus } from '../../src/comm/bus.ts';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';
import { runCli, startCli, writeTestConfig } from '../support/cli.ts';
import { eventually } from '../support/eventually.ts';

let server: NatsServerHandle;
before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server.stop();
});

test('actors - pipeline 2 x 8 micro-batches: the scheduler sends each stage actor one message per action; ctl status lists every actor; pause reaches the scheduler', async () => {
  const jobId = `actors-${process.pid}`;
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-actors-')), 'run');
  // The watcher reads the job's signed messages, so it holds the job's key (given to the launcher in its environment).
  const key = newJobKey();
  const watcher = new Bus({ jobId, transport: await connectNats({ url: server.url, name: 'actor watcher' }), log: () => {}, key });
  /** Compute actions seen per step and stage actor, and every action's (micro-batch, chunk) naming. */
  const computeByStep = new Map<number, number>();
  const subjects = new Set<string>();
  watcher.subscribe('actor.stage.>', (message, context) => {
    if (message.kind !== 'actor') return;
    subjects.add(context.subject);
    const payload = message.payload as { type: string; step: number; action: { kind: string; microBatch?: number; chunk?: number } };
    assert.equal(message.to.role, 'stage');
    assert.equal(context.subject, `gh.${jobId}.actor.stage.${message.to.rank}`);
    if (payload.action.kind === 'F' || payload.action.kind === 'B') {
      assert.ok(Number.isInteger(payload.action.microBatch) && Number.isInteger(payload.action.chunk), JSON.stringify(payload));
      computeByStep.set(payload.step, (computeByStep.get(payload.step) ?? 0) + 1);
    }
  });
  await watcher.flush();
  const sets = ['steps=500', 'parallel.pipeline=2', 'numMicroBatches=8', 'batchSize=8'].flatMap((s) => ['--set', s]);
  const job = startCli(['train', writeTestConfig(), '--out', out, '--job-id', jobId, '--nats', server.url, ...sets], { GPT_HYBRID_JOB_KEY: key.toString('hex') });
  try {
    await job.waitFor(/step 3\/500/, 90_000);
    // Steps 1 and 2 are complete: 2 stages x 8 micro-batches x (F and B) actions each (the watcher's own
    // connection may hear the last of them a moment after the launcher printed the step).
    await eventually(
      () => `the watcher hearing every compute action of steps 1 and 2 (${[0, 1].map((step) => computeByStep.get(step) ?? 0).join(' and ')} of ${2 * 8 * 2} each)`,
      () => [0, 1].every((step) => (computeByStep.get(step) ?? 0) >= 2 * 8 * 2),
      10_000,
    );
    assert.deepEqual([...subjects].sort(), [`gh.${jobId}.actor.stage.0`, `gh.${jobId}.actor.stage.1`]);

    const ctl = async (command: string) => {
      const { code, output } = await runCli(['ctl', out, command, ...(command === 'status' ? ['--json'] : [])]);
      assert.equal(code, 0, output);
      return JSON.parse(output);
    };
    await ctl('pause');
    let status = await ctl('status');
    for (let i = 0; i < 40 && status.state !== 'paused'; i++) {
      await new Promise((r) => setTimeout(r, 250));
      status = await ctl('status');
    }
    assert.equal(status.state, 'paused', JSON.stringify(status));
    const kinds = (status.actors as { kind: string; rank: number; state: string }[]).map((a) => `${a.kind}.${a.rank}:${a.state}`).sort();
    // Every rank's stage actor and (first and last stage) SharedWeight actor, idle at the boundary, and the replica's scheduler, paused.
    assert.deepEqual(kinds, ['scheduler.0:paused', 'shared-weight.0:idle', 'shared-weight.1:idle', 'stage.0:idle', 'stage.1:idle']);
    assert.ok(status.actors.every((a: { mailbox: number }) => a.mailbox === 0), JSON.stringify(status.actors));
    await ctl('resume');
    await job.waitFor(new RegExp(`step ${status.step + 1}/500`), 60_000);
    await ctl('stop');
    const exit = await job.exited;
    assert.equal(exit.code, 0, job.output());
  } finally {
    job.child.kill('SIGKILL');
    await watcher.close();
  }
});
