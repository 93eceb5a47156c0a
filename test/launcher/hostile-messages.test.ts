/**
 * End to end: thousands of hostile payloads published onto the live subjects of a running pipeline-2
 * job (its coordinator's and every rank's collective inboxes, learned by listening to the job's traffic)
 * while it trains. The job must finish with exit 0 and the losses of an undisturbed run, bit for bit, no
 * worker may crash or restart, and every process must say at the end how many messages it ignored; the
 * coordinator's count must match, payload for payload, what was sent to it. Strangers also connect to
 * every worker's data plane listener (garbage, a forged proof, a message before any proof): each is
 * refused and counted, and the job's tensors keep their links.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { encodeValue } from '../../src/comm/codec.ts';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { FrameSigner, newJobKey } from '../../src/comm/frame-signing.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';
import { SUBJECT_ROOT } from '../../src/comm/subjects.ts';
import { HostilePayloads, type Verdict } from '../support/hostile-payloads.ts';
import { losses, runCli, startCli, writeTestConfig } from '../support/cli.ts';

const STEPS = 16;
/** Stop sending before the job's last steps, so every receiver is still subscribed when the payloads land. */
const LAST_ATTACK_STEP = STEPS - 2;
const MAX_PAYLOADS = 8000;
/** Sent as fast as the server takes them, so a fast machine cannot finish the job first; the rest paced. */
const BURST = 2000;
const ROUND = 100;

let server: NatsServerHandle;
const config = writeTestConfig({ steps: STEPS, parallel: { pipeline: 2 }, numMicroBatches: 2 });
const outDir = (name: string) => join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-hostile-')), name);
const read = (path: string) => readFileSync(path, 'utf8');

before(async () => {
  server = await startNatsServer();
});

after(async () => {
  await server.stop();
});

/** The TCP ports process `pid` listens on (a worker: its data plane's). */
function listeningPorts(pid: number): number[] {
  return execFileSync('ss', ['-tlnpH'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => Number(line.trim().split(/\s+/)[3]!.split(':').at(-1)));
}

/**
 * Three connections without the job key, each refused by the listener at once: garbage (a length no
 * proof can have), a forged proof after the challenge, a message frame before any proof. Not awaited:
 * the job's own output says what it refused.
 */
function knockWithoutTheKey(port: number): void {
  const frame = (type: number, body: Uint8Array) => Buffer.concat([Buffer.from(Uint32Array.of(1 + body.byteLength).buffer), Buffer.of(type), body]);
  const attempts: ((socket: Socket) => void)[] = [
    (socket) => socket.write(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(252)])),
    (socket) => socket.once('data', () => socket.write(frame(2, encodeValue({ kind: 'data-plane-proof', job: 'x', from: 0, to: 1, proof: randomBytes(32) })))),
    (socket) => socket.write(frame(0, randomBytes(64))),
  ];
  for (const attempt of attempts) {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    attempt(socket);
  }
}

/** `[rank r] bus <job>: ignored N malformed messages, M from other jobs …` lines by process ('launcher' or the rank). */
function ignoredCounts(output: string, jobId: string): Map<string, { malformed: number; other: number }> {
  const counts = new Map<string, { malformed: number; other: number }>();
  const pattern = new RegExp(`^(?:\\[rank (\\d+)\\] )?bus ${jobId}: ignored (\\d+) malformed messages?, (\\d+) from other jobs or protocol versions`, 'gm');
  for (const match of output.matchAll(pattern)) counts.set(match[1] ?? 'launcher', { malformed: Number(match[2]), other: Number(match[3]) });
  return counts;
}

test('hostile messages - a live pipeline-2 job under thousands of hostile payloads finishes with the undisturbed losses and reports what it ignored', async () => {
  const undisturbed = outDir('undisturbed');
  const clean = await runCli(['train', config, '--out', undisturbed, '--nats', server.url, '--quiet']);
  assert.equal(clean.code, 0, clean.output);
  assert.doesNotMatch(clean.output, /ignored \d+ malformed/, 'an undisturbed job refuses nothing');

  const jobId = `hostile-${process.pid}`;
  const out = outDir('attacked');
  // An insider: the payloads are signed with the job's key, so they reach the decoders and validators
  // (without the key they would all be dropped at the signature; signed-bus.test.ts and the fault campaign test that).
  const key = newJobKey();
  const signer = new FrameSigner(key);
  const job = startCli(['train', config, '--out', out, '--nats', server.url, '--job-id', jobId, '--set', 'comm.dataPlane=tcp'], { GPT_HYBRID_JOB_KEY: key.toString('hex') });
  const attacker = await connectNats({ url: server.url, name: 'gpt-hybrid hostile test', log: () => {} });
  try {
    // The subjects the job's processes listen on are the ones its traffic goes to.
    const prefix = `${SUBJECT_ROOT}.${jobId}.`;
    const subjects = new Set<string>();
    const listener = attacker.subscribe(`${prefix}>`, (message) => subjects.add(message.subject.slice(prefix.length)));
    await job.waitFor(new RegExp(`step 2/${STEPS}`), 120_000);
    listener.unsubscribe();
    // Collective pieces travel over the data plane, but every rank still listens on its groups' inboxes
    // (`coll.<group>.<rank>`, beside the `coll-ready.` subjects their hellos used): attack those too.
    for (const subject of [...subjects]) if (subject.startsWith('coll-ready.')) subjects.add(`coll.${subject.slice('coll-ready.'.length)}`);
    const targets = [...subjects].sort();
    const workers = [...job.output().matchAll(/rank (\d+) registered \(node \d+, pid (\d+)/g)].map((match) => Number(match[2]));
    const ports = workers.flatMap(listeningPorts);
    assert.equal(ports.length, 2, `the workers' data plane listeners: ${ports.join(', ')}`);
    for (const port of ports) knockWithoutTheKey(port);
    assert.ok(targets.some((s) => s.startsWith('coord.')) && targets.some((s) => s.startsWith('coll.')), `subjects seen: ${targets.join(', ')}`);

    const payloads = new HostilePayloads(jobId, 'hostile messages');
    const toCoordinator: Record<Verdict, number> = { malformed: 0, 'other-job-or-version': 0 };
    const kinds = new Map<string, number>();
    let sent = 0;
    while (sent < MAX_PAYLOADS && !new RegExp(`step ${LAST_ATTACK_STEP}/${STEPS}`).test(job.output()) && job.child.exitCode === null) {
      for (let i = 0; i < ROUND; i++, sent++) {
        const subject = targets[sent % targets.length]!;
        // The launcher's subjects (the coordinator's, the scheduler actors') get whole frames only, so its
        // count is exact; ranks also get forged chunks.
        const coordinator = subject.startsWith('coord.') || subject.startsWith('actor.scheduler.');
        const payload = payloads.next(subject, !coordinator);
        if (coordinator) toCoordinator[payload.verdict!]++;
        kinds.set(payload.what, (kinds.get(payload.what) ?? 0) + 1);
        attacker.publish(prefix + subject, signer.sign(payload.frame, prefix + subject));
      }
      await attacker.flush();
      if (sent >= BURST) await new Promise((resolve) => setTimeout(resolve, 40));
    }
    assert.ok(sent >= 2000, `only ${sent} payloads went out before step ${LAST_ATTACK_STEP}`);
    assert.doesNotMatch(job.output(), /done after step/, 'the job ended before the payloads were all out');

    const exit = await job.exited;
    const output = job.output();
    assert.equal(exit.code, 0, output);
    assert.deepEqual(losses(join(out, 'metrics.jsonl'), read), losses(join(undisturbed, 'metrics.jsonl'), read));
    assert.doesNotMatch(output, /actor crashed|restart \d+ of|died|FAILED|uncaught|handler for .* threw/i);
    assert.equal(output.match(/rank \d+ registered/g)?.length, 2, 'a worker registered twice: it was restarted');

    const counts = ignoredCounts(output, jobId);
    assert.deepEqual([...counts.keys()].sort(), ['0', '1', 'launcher'], output);
    const coordinator = counts.get('launcher')!;
    assert.deepEqual(coordinator, { malformed: toCoordinator.malformed, other: toCoordinator['other-job-or-version'] }, `sent ${sent}: ${JSON.stringify([...kinds])}`);
    for (const rank of ['0', '1']) {
      const { malformed, other } = counts.get(rank)!;
      assert.ok(malformed > 100 && other > 100, `rank ${rank}: ${malformed} malformed, ${other} other`);
      assert.match(output, new RegExp(`\\[rank ${rank}\\] data plane: [1-9]\\d* messages sent and [1-9]\\d* received over direct links, 3 refused`));
    }
    assert.equal(({} as { polluted?: unknown }).polluted, undefined);
  } finally {
    job.child.kill('SIGKILL');
    await attacker.close();
  }
});
