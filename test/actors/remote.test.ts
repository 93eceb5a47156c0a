// Tests: remote actor references. In process: address-to-subject mapping, delivery to the exposed nact
// actor, proxies, misrouting and errors. Across processes: this file re-runs itself as a child worker
// (GH_REMOTE_CHILD=1) that exposes an actor; the parent tells it a message over a real NATS server and
// gets the answer back at its own exposed actor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn as spawnProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dispatch, spawnStateless, start, stop, type ActorSystemRef } from 'nact';
import { RemoteActors, actorSubject } from '../../src/actors/remote.ts';
import { Bus } from '../../src/comm/bus.ts';
import { LocalNetwork } from '../../src/comm/local-transport.ts';
import type { ActorAddress } from '../../src/protocol/messages.ts';
import { startNatsServer } from '../../src/comm/nats-server.ts';
import { connectNats } from '../../src/comm/nats-transport.ts';

interface EchoRequest {
  type: 'echo';
  text: string;
  replyTo: ActorAddress;
}
interface EchoAnswer {
  text: string;
  pid: number;
}

const ECHO: ActorAddress = { rank: 1, role: 'echo' };
const PROBE: ActorAddress = { rank: 0, role: 'probe' };

/** The worker side: exposes an echo actor at rank 1 and answers to whatever reply address it is given. */
async function runChild(): Promise<void> {
  const transport = await connectNats({ url: process.env.GH_NATS_URL, name: 'remote-test child' });
  const bus = new Bus({ jobId: process.env.GH_JOB_ID ?? '', transport });
  const system = start();
  const remote = new RemoteActors(bus, system, { rank: 1 });
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const echo = spawnStateless(system, (message: EchoRequest | { type: 'exit' }) => {
    if (message.type === 'exit') return finish();
    remote.tell(message.replyTo, { text: message.text.toUpperCase(), pid: process.pid } satisfies EchoAnswer, ECHO);
  });
  remote.expose(ECHO, echo);
  await bus.flush();
  process.stdout.write('ready\n');
  await finished;
  remote.close();
  stop(system);
  await bus.close();
}

function localPair(): { a: RemoteActors; b: RemoteActors; systems: ActorSystemRef[]; buses: Bus[] } {
  const network = new LocalNetwork();
  const buses = [0, 1].map(() => new Bus({ jobId: 'job-r', transport: network.connect(), log: () => {} }));
  const systems = [start(), start()];
  return { a: new RemoteActors(buses[0], systems[0], { rank: 0 }), b: new RemoteActors(buses[1], systems[1], { rank: 1 }), systems, buses };
}

function receiver<T>(system: ActorSystemRef): { ref: ReturnType<typeof spawnStateless>; next: () => Promise<T> } {
  const waiting: Array<(value: T) => void> = [];
  const queued: T[] = [];
  const ref = spawnStateless(system, (message: T) => {
    const resolve = waiting.shift();
    if (resolve) resolve(message);
    else queued.push(message);
  });
  return {
    ref,
    next: () => (queued.length > 0 ? Promise.resolve(queued.shift() as T) : new Promise<T>((resolve) => waiting.push(resolve))),
  };
}

if (process.env.GH_REMOTE_CHILD === '1') {
  await runChild();
} else {
  test('addresses map to one subject each, and bad addresses are refused', () => {
    assert.equal(actorSubject({ rank: 3, role: 'stage' }), 'actor.stage.3');
    assert.equal(actorSubject({ rank: 'launcher', role: 'scheduler' }), 'actor.scheduler.launcher');
    assert.throws(() => actorSubject({ rank: 1, role: 'a.b' }), /actor role "a.b" cannot be part of a subject/);
    assert.throws(() => actorSubject({ rank: -1, role: 'x' }), /rank -1 must be a non-negative integer or 'launcher'/);
  });

  test('in process: tell reaches the exposed actor, proxies forward, and replies ride in the payload', async () => {
    const { a, b, systems, buses } = localPair();
    const echo = spawnStateless(systems[1], (message: EchoRequest) => b.tell(message.replyTo, { text: message.text.toUpperCase(), pid: 0 }));
    b.expose(ECHO, echo);
    const probe = receiver<EchoAnswer>(systems[0]);
    a.expose(PROBE, probe.ref);
    a.tell(ECHO, { type: 'echo', text: 'direct', replyTo: PROBE } satisfies EchoRequest);
    assert.deepEqual(await probe.next(), { text: 'DIRECT', pid: 0 });
    dispatch(a.ref<EchoRequest>(ECHO), { type: 'echo', text: 'through a ref', replyTo: PROBE });
    assert.deepEqual(await probe.next(), { text: 'THROUGH A REF', pid: 0 });
    assert.equal(a.ref(ECHO), a.ref({ ...ECHO }), 'one proxy per address');
    a.close();
    b.close();
    systems.forEach((system) => stop(system));
    await Promise.all(buses.map((bus) => bus.close()));
  });

  test('in process: exposing is checked, misrouted messages are counted, close stops delivery', async () => {
    const { a, b, systems, buses } = localPair();
    const probe = receiver<unknown>(systems[1]);
    assert.throws(() => b.expose({ rank: 0, role: 'x' }, probe.ref), /cannot expose 0\/x from rank 1/);
    const handle = b.expose(ECHO, probe.ref);
    assert.throws(() => b.expose(ECHO, probe.ref), /already exposed at 1\/echo/);
    buses[0].publish(actorSubject(ECHO), { kind: 'fatal', rank: 0, reason: 'not for an actor' });
    buses[0].publish(actorSubject(ECHO), { kind: 'actor', to: { rank: 1, role: 'other' }, payload: 1 });
    a.tell(ECHO, 'counted after the two misrouted ones');
    assert.equal(await probe.next(), 'counted after the two misrouted ones');
    assert.equal(b.misrouted, 2);
    handle.unsubscribe();
    b.expose(ECHO, probe.ref).unsubscribe();
    a.tell(ECHO, 'nobody listens');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(buses[1].stats.received, 3);
    systems.forEach((system) => stop(system));
    await Promise.all(buses.map((bus) => bus.close()));
  });

  test('across processes over NATS: the parent tells a child actor and gets its answer back', async () => {
    const server = await startNatsServer();
    const jobId = `remote-${process.pid}`;
    const child = spawnProcess(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
      env: { ...process.env, GH_REMOTE_CHILD: '1', GH_NATS_URL: server.url, GH_JOB_ID: jobId },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let childErrors = '';
    child.stderr?.on('data', (chunk: Buffer) => (childErrors += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const bus = new Bus({ jobId, transport: await connectNats({ url: server.url, log: () => {} }), log: () => {} });
    const system = start();
    try {
      const lines = createInterface({ input: child.stdout! });
      const ready = new Promise<void>((resolve, reject) => {
        lines.on('line', (line) => line === 'ready' && resolve());
        child.once('exit', (code) => reject(new Error(`child exited with ${code} before it was ready: ${childErrors}`)));
      });
      await ready;
      const remote = new RemoteActors(bus, system, { rank: 0 });
      const probe = receiver<EchoAnswer>(system);
      remote.expose(PROBE, probe.ref);
      await bus.flush();
      remote.tell(ECHO, { type: 'echo', text: 'hello from rank 0', replyTo: PROBE } satisfies EchoRequest, PROBE);
      const answer = await probe.next();
      assert.deepEqual(answer, { text: 'HELLO FROM RANK 0', pid: child.pid });
      dispatch(remote.ref<EchoRequest | { type: 'exit' }>(ECHO), { type: 'echo', text: 'via ref', replyTo: PROBE });
      assert.equal((await probe.next()).text, 'VIA REF');
      remote.tell(ECHO, { type: 'exit' });
      await bus.flush();
      assert.equal(await exited, 0, childErrors);
      remote.close();
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      stop(system);
      await bus.close();
      await server.stop();
    }
  });
}
