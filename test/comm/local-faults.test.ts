// Tests: fault injection on the in-process transport: drop, delay, duplicate and reorder, chosen by
// subject, predicate, skip and times; removal; request/reply under faults; rules leave other subjects
// alone; and delivery with no rule stays as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalNetwork, type LocalTransport } from '../../src/comm/local-transport.ts';
import { TransportTimeoutError } from '../../src/comm/transport.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);
/** Every microtask delivery so far has run (delays aside). */
const drain = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What `transport` receives on `pattern`, as "subject:text". */
function listen(transport: LocalTransport, pattern: string): string[] {
  const got: string[] = [];
  transport.subscribe(pattern, (message) => got.push(`${message.subject}:${decoder.decode(message.data)}`));
  return got;
}

function setup() {
  const network = new LocalNetwork();
  const sender = network.connect();
  const receiver = network.connect();
  const send = (subject: string, ...texts: string[]) => texts.forEach((text) => sender.publish(subject, bytes(text)));
  return { network, sender, receiver, send };
}

test('with no rule, every receiver gets its own copy of each message, a microtask later, in order', async () => {
  const { network, sender, send } = setup();
  const first = network.connect();
  const second = network.connect();
  const seen: Uint8Array[] = [];
  const a = listen(first, 'x.>');
  second.subscribe('x.y', (message) => seen.push(message.data));
  const payload = bytes('p');
  sender.publish('x.y', payload);
  send('x.z', '1', '2');
  assert.deepEqual(a, [], 'delivery is asynchronous');
  await Promise.resolve();
  assert.deepEqual(a, ['x.y:p', 'x.z:1', 'x.z:2']);
  assert.equal(seen.length, 1);
  assert.notEqual(seen[0]!.buffer, payload.buffer, 'a copy, not the sender buffer');
});

test('drop: the first matching message never arrives; later ones and other subjects do', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const fault = network.injectFault({ subject: 'grad.*', effect: { kind: 'drop' } });
  send('grad.0', 'a', 'b');
  send('act.0', 'c');
  send('grad.1', 'd');
  await drain();
  assert.deepEqual(got, ['grad.0:b', 'act.0:c', 'grad.1:d']);
  assert.equal(fault.fired, 1);
});

test('delay: the message arrives after ms; later messages on its subject and others overtake it', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const arrived: number[] = [];
  receiver.subscribe('slow', () => arrived.push(performance.now()));
  const fault = network.injectFault({ subject: 'slow', effect: { kind: 'delay', ms: 15 } });
  const sent = performance.now();
  send('slow', 'late', 'next');
  send('other', 'o');
  await drain();
  assert.deepEqual(got, ['slow:next', 'other:o'], 'nothing waits for the delayed message');
  assert.equal(fault.fired, 1);
  await sleep(25);
  assert.deepEqual(got, ['slow:next', 'other:o', 'slow:late']);
  assert.ok(arrived[1]! - sent >= 14, `arrived ${arrived[1]! - sent} ms after publish, wanted >= 15`);
});

test('delay keeps what was sent even if the sender reuses its buffer after publish', async () => {
  const { network, sender, receiver } = setup();
  const got = listen(receiver, 'late');
  network.injectFault({ subject: 'late', effect: { kind: 'delay', ms: 1 } });
  const buffer = bytes('old');
  sender.publish('late', buffer);
  buffer.set(bytes('new'));
  await sleep(10);
  assert.deepEqual(got, ['late:old']);
});

test('duplicate: the message arrives twice in a row at every receiver, each a separate copy', async () => {
  const { network, receiver, send } = setup();
  const other = network.connect();
  const got = listen(receiver, '>');
  const copies: Uint8Array[] = [];
  other.subscribe('dup', (message) => copies.push(message.data));
  const fault = network.injectFault({ subject: 'dup', effect: { kind: 'duplicate' } });
  send('dup', 'a', 'b');
  send('else', 'e');
  await drain();
  assert.deepEqual(got, ['dup:a', 'dup:a', 'dup:b', 'else:e']);
  assert.equal(copies.length, 3);
  assert.notEqual(copies[0]!.buffer, copies[1]!.buffer);
  assert.equal(fault.fired, 1);
});

test('reorder: the message is delivered right after the next matching one; other subjects keep their place', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const fault = network.injectFault({ subject: 'seq', effect: { kind: 'reorder' } });
  send('seq', 'a');
  send('other', 'o');
  send('seq', 'b', 'c');
  await drain();
  assert.deepEqual(got, ['other:o', 'seq:b', 'seq:a', 'seq:c']);
  assert.equal(fault.fired, 1, 'the releasing message is not counted');
});

test('reorder with times 2: each affected message waits for its own next one', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'seq');
  const fault = network.injectFault({ subject: 'seq', times: 2, effect: { kind: 'reorder' } });
  send('seq', 'a', 'b', 'c', 'd', 'e');
  await drain();
  assert.deepEqual(got, ['seq:b', 'seq:a', 'seq:d', 'seq:c', 'seq:e']);
  assert.equal(fault.fired, 2);
});

test('reorder: a held message waits for the next message that passes the predicate too', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'seq');
  network.injectFault({ subject: 'seq', where: (m) => m.data[0] !== 'x'.charCodeAt(0), effect: { kind: 'reorder' } });
  send('seq', 'a', 'x1', 'x2', 'b');
  await drain();
  assert.deepEqual(got, ['seq:x1', 'seq:x2', 'seq:b', 'seq:a']);
});

test('removing a reorder rule delivers what it holds; removing is idempotent', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'seq');
  const fault = network.injectFault({ subject: 'seq', effect: { kind: 'reorder' } });
  send('seq', 'a');
  await drain();
  assert.deepEqual(got, [], 'held until a next message or removal');
  fault.remove();
  fault.remove();
  send('seq', 'b');
  await drain();
  assert.deepEqual(got, ['seq:a', 'seq:b']);
});

test('skip lets the first matching messages through, times bounds how many are affected', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const fault = network.injectFault({ subject: 'n', skip: 2, times: 2, effect: { kind: 'drop' } });
  send('n', '0', '1', '2', '3', '4', '5');
  await drain();
  assert.deepEqual(got, ['n:0', 'n:1', 'n:4', 'n:5']);
  assert.equal(fault.fired, 2);
});

test('times Infinity affects every matching message until removed', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'n');
  const fault = network.injectFault({ subject: 'n', times: Infinity, effect: { kind: 'drop' } });
  send('n', '0', '1', '2');
  fault.remove();
  send('n', '3');
  await drain();
  assert.deepEqual(got, ['n:3']);
  assert.equal(fault.fired, 3);
});

test('the predicate chooses among messages whose subject matches; skip counts only those', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const seen: string[] = [];
  const fault = network.injectFault({
    subject: 'coll.>',
    where: (message) => {
      seen.push(message.subject);
      return decoder.decode(message.data).startsWith('step3');
    },
    skip: 1,
    effect: { kind: 'drop' },
  });
  send('coll.ring.0', 'step3-a', 'step2', 'step3-b', 'step3-c');
  send('ctl', 'step3-d');
  await drain();
  assert.deepEqual(got, ['coll.ring.0:step3-a', 'coll.ring.0:step2', 'coll.ring.0:step3-c', 'ctl:step3-d']);
  assert.equal(fault.fired, 1);
  assert.ok(!seen.includes('ctl'), 'the predicate only sees messages whose subject matches');
});

test('a rule removed before any message affects none', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'n');
  const fault = network.injectFault({ subject: 'n', effect: { kind: 'drop' } });
  fault.remove();
  send('n', 'a');
  await drain();
  assert.deepEqual(got, ['n:a']);
  assert.equal(fault.fired, 0);
});

test('a rule on one subject leaves other subjects alone, wildcards as NATS reads them', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, '>');
  const fault = network.injectFault({ subject: 'a.*', times: Infinity, effect: { kind: 'drop' } });
  send('a.b.c', '1');
  send('a', '2');
  send('b.x', '3');
  send('a.x', '4');
  send('ab.x', '5');
  await drain();
  assert.deepEqual(got, ['a.b.c:1', 'a:2', 'b.x:3', 'ab.x:5']);
  assert.equal(fault.fired, 1);
});

test('with several rules the first injected that affects a message is the only one', async () => {
  const { network, receiver, send } = setup();
  const got = listen(receiver, 'n');
  const duplicate = network.injectFault({ subject: 'n', effect: { kind: 'duplicate' } });
  const drop = network.injectFault({ subject: 'n', effect: { kind: 'drop' } });
  send('n', 'a', 'b');
  await drain();
  assert.deepEqual(got, ['n:a', 'n:a'], 'b was the drop rule\'s first message: it did not count a');
  assert.deepEqual([duplicate.fired, drop.fired], [1, 1]);
});

test('request/reply works under faults on other subjects and under a delay; a lost request or reply times out', async () => {
  const { network, sender, receiver } = setup();
  receiver.subscribe('svc.echo', (message) => receiver.publish(message.reply!, message.data));
  network.injectFault({ subject: 'svc.other', times: Infinity, effect: { kind: 'drop' } });
  assert.equal(decoder.decode(await sender.request('svc.echo', bytes('hi'), 200)), 'hi');

  const delay = network.injectFault({ subject: 'svc.echo', effect: { kind: 'delay', ms: 5 } });
  assert.equal(decoder.decode(await sender.request('svc.echo', bytes('late'), 200)), 'late');
  assert.equal(delay.fired, 1);

  network.injectFault({ subject: 'svc.echo', effect: { kind: 'drop' } });
  await assert.rejects(sender.request('svc.echo', bytes('lost'), 20), TransportTimeoutError);

  const lostReply = network.injectFault({ subject: '_INBOX.>', effect: { kind: 'drop' } });
  await assert.rejects(sender.request('svc.echo', bytes('no answer'), 20), TransportTimeoutError);
  assert.equal(lostReply.fired, 1);
  assert.equal(decoder.decode(await sender.request('svc.echo', bytes('again'), 200)), 'again');
});

test('a bad rule is refused', () => {
  const network = new LocalNetwork();
  assert.throws(() => network.injectFault({ subject: 'n', skip: -1, effect: { kind: 'drop' } }), /skip must be a whole number/);
  assert.throws(() => network.injectFault({ subject: 'n', times: 0, effect: { kind: 'drop' } }), /times must be a whole number/);
  assert.throws(() => network.injectFault({ subject: 'n', times: 1.5, effect: { kind: 'drop' } }), /times must be a whole number/);
  assert.throws(() => network.injectFault({ subject: 'n', effect: { kind: 'delay', ms: Number.NaN } }), /delay must be/);
});
