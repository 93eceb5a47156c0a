/**
 * Issue 18's fault campaign: while a pp2 x tp2 job (four worker processes, a private NATS server) trains
 * 30 steps, a client of the server without the job's key sends 10,000 messages onto the job's live
 * subjects: well-formed messages of every kind (every control command, register, heartbeats, step
 * metrics, fatal, shutdown, restart orders) unsigned and signed with another key, genuine frames
 * captured from the wire and sent again (to their own subject and to others), captured frames with bits
 * flipped or cut short, and fake first chunks announcing large messages. The job must end as an
 * undisturbed run does: exit 0, the same 30 losses bit for bit, no restart, every process's peak
 * resident memory within 100 MB of the undisturbed run's, and each process saying what it ignored.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Bus } from '../../src/comm/bus.ts';
import { Chunker } from '../../src/comm/chunking.ts';
import { newJobKey } from '../../src/comm/frame-signing.ts';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';
import type { Transport } from '../../src/comm/transport.ts';
import { CONTROL_COMMANDS, type Message } from '../../src/protocol/messages.ts';
import { losses, startCli, writeTestConfig, type RunningCli } from '../support/cli.ts';

const STEPS = 30;
const MESSAGES = 10_000;
/** Stop before the last steps, so every receiver is still subscribed when the messages land. */
const LAST_ATTACK_STEP = STEPS - 3;
const MEMORY_SLACK_MB = 100;
const LAYOUT = ['parallel.pipeline=2', 'parallel.tensor.size=2', 'numMicroBatches=2'].flatMap((set) => ['--set', set]);

let server: NatsServerHandle;
const config = writeTestConfig({ steps: STEPS });
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-campaign-')), name);
const read = (path: string) => readFileSync(path, 'utf8');

before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server.stop();
});

/** Resident memory of `pid` in MiB, or 0 once it is gone. */
function residentMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? 0 : Number(match[1]) / 1024;
  } catch {
    return 0;
  }
}

/** Runs the job (started by `start`) to its end, sampling the peak memory of the launcher and of each rank. */
async function runWatched(start: () => RunningCli, during?: (job: RunningCli) => Promise<void>): Promise<{ code: number | null; output: string; peaks: Map<string, number> }> {
  const job = start();
  const peaks = new Map<string, number>();
  const sample = setInterval(() => {
    const pids: [string, number][] = [['launcher', job.child.pid!], ...[...job.output().matchAll(/rank (\d+) registered \(node \d+, pid (\d+)/g)].map((m): [string, number] => [`rank ${m[1]}`, Number(m[2])])];
    for (const [who, pid] of pids) peaks.set(who, Math.max(peaks.get(who) ?? 0, residentMb(pid)));
  }, 200);
  try {
    await during?.(job);
    const exit = await job.exited;
    return { code: exit.code, output: job.output(), peaks };
  } finally {
    clearInterval(sample);
    job.child.kill('SIGKILL');
  }
}

/** Every kind of message a job's processes obey, well-formed. */
function wellFormed(step: number): Message[] {
  return [
    ...CONTROL_COMMANDS.map((command): Message => ({ kind: 'control', command })),
    { kind: 'control', command: 'stop', save: true },
    { kind: 'register', rank: step % 4, node: 0, pid: 4242, host: 'attacker' },
    { kind: 'heartbeat', rank: step % 4, step: 999, state: 'failed', rssMb: 1 },
    { kind: 'step-ready', rank: step % 4, step },
    { kind: 'step-done', rank: 2, step: step + 1, loss: 0.001, tokens: 1, stepMs: 1, gradNorm: 0 },
    { kind: 'evaluation-done', rank: 2, step, loss: 0.5, samples: 1, elapsedMs: 1 },
    { kind: 'fatal', rank: step % 4, reason: 'forged fatal', restartable: true },
    { kind: 'shutdown', reason: 'forged shutdown', exitCode: 1 },
    { kind: 'restart', attempt: 1, resume: '', startStep: 0 },
  ];
}

test('fault campaign - 10,000 messages from a client without the key leave a pp2 x tp2 job\'s 30 losses, restarts and memory as an undisturbed run\'s', { timeout: 900_000 }, async () => {
  const undisturbedOut = outDir('undisturbed');
  const undisturbed = await runWatched(() => startCli(['train', config, '--out', undisturbedOut, ...LAYOUT, '--nats', server.url]));
  assert.equal(undisturbed.code, 0, undisturbed.output);

  const jobId = `campaign-${process.pid}`;
  const out = outDir('attacked');
  const attacker: Transport = await connectNats({ url: server.url, name: 'gpt-hybrid campaign', log: () => {} });
  const unsigned = new Bus({ jobId, transport: attacker, log: () => {} });
  const otherKey = new Bus({ jobId, transport: await connectNats({ url: server.url, name: 'gpt-hybrid campaign 2', log: () => {} }), key: newJobKey(), log: () => {} });
  const sent = new Map<string, number>();
  const count = (what: string) => sent.set(what, (sent.get(what) ?? 0) + 1);
  try {
    const attacked = await runWatched(
      () => startCli(['train', config, '--out', out, ...LAYOUT, '--nats', server.url, '--job-id', jobId]),
      async (job) => {
        // Listen to the job's traffic: its subjects, and genuine signed frames to replay and mutate.
        const prefix = `gh.${jobId}.`;
        const captured: { subject: string; data: Uint8Array }[] = [];
        const listener = attacker.subscribe(`${prefix}>`, (incoming) => {
          if (captured.length < 2000) captured.push({ subject: incoming.subject, data: Uint8Array.from(incoming.data) });
        });
        await job.waitFor(new RegExp(`step 2/${STEPS}`), 180_000);
        listener.unsubscribe();
        const subjects = [...new Set(captured.map((frame) => frame.subject.slice(prefix.length)))].sort();
        assert.ok(subjects.some((s) => s.startsWith('coord.')) && subjects.some((s) => s.startsWith('actor.stage.')), subjects.join(', '));
        const chunker = new Chunker(8 * 1024);
        let i = 0;
        const attackOver = () => new RegExp(`step ${LAST_ATTACK_STEP}/${STEPS}`).test(job.output()) || job.child.exitCode !== null;
        while (i < MESSAGES && !attackOver()) {
          for (let round = 0; round < 200 && i < MESSAGES; round++, i++) {
            const subject = subjects[i % subjects.length]!;
            const genuine = captured[(i * 7) % captured.length]!;
            switch (i % 6) {
              case 0:
              case 1: {
                const bus = i % 6 === 0 ? unsigned : otherKey;
                const messages = wellFormed(i);
                bus.publish(subject, messages[(i >> 1) % messages.length]!);
                count(i % 6 === 0 ? 'well-formed, unsigned' : 'well-formed, another key');
                break;
              }
              case 2:
                // To its own subject (every subscriber saw it) or to another (a subscriber that did not).
                attacker.publish(i % 12 === 2 ? genuine.subject : prefix + subject, genuine.data);
                count('genuine frame replayed');
                break;
              case 3: {
                const flipped = Uint8Array.from(genuine.data);
                flipped[(i * 31) % flipped.byteLength]! ^= 1 << (i % 8);
                attacker.publish(genuine.subject, flipped);
                count('genuine frame with a bit flipped');
                break;
              }
              case 4:
                attacker.publish(genuine.subject, genuine.data.subarray(0, Math.max(1, genuine.data.byteLength - 1 - (i % 64))));
                count('genuine frame cut short');
                break;
              default:
                attacker.publish(prefix + subject, chunker.frames(new Uint8Array(400 * 1024))[0]!);
                count('fake first chunk');
            }
          }
          await attacker.flush();
          await new Promise((resolve) => setTimeout(resolve, 30));
        }
        assert.equal(i, MESSAGES, `only ${i} messages went out before step ${LAST_ATTACK_STEP}: ${JSON.stringify([...sent])}`);
      },
    );
    const output = attacked.output;
    assert.equal(attacked.code, 0, output);
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), losses(join(undisturbedOut, 'metrics.jsonl'), read), 'the 30 losses, bit for bit');
    assert.doesNotMatch(output, /restart \d+ of|pause requested|stop requested|checkpoint requested|died|FAILED|uncaught|threw|crashed/i);
    assert.equal(output.match(/rank \d+ registered/g)?.length, 4, 'a worker registered twice, or a forged register was obeyed');
    // Every process dropped what reached it, by the signature, and said so.
    const ignored = [...output.matchAll(/(?:\[rank (\d)\] )?bus \S+: ignored \d+ malformed messages?, \d+ from other jobs or protocol versions, (\d+) without the job key's signature or replayed/g)];
    assert.deepEqual(ignored.map((m) => m[1] ?? 'launcher').sort(), ['0', '1', '2', '3', 'launcher'], output);
    for (const [who, peak] of attacked.peaks) {
      const before = undisturbed.peaks.get(who) ?? 0;
      assert.ok(peak <= before + MEMORY_SLACK_MB, `${who}: peak ${peak.toFixed(0)} MiB attacked, ${before.toFixed(0)} MiB undisturbed`);
    }
    assert.equal(attacked.peaks.size, 5, [...attacked.peaks.keys()].join(', '));
  } finally {
    await unsigned.close();
    await otherKey.close();
  }
});
