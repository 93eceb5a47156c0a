// Tests: validation of every message kind, rejection reasons, and fuzzing of the decode + validate path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeAndValidate } from '../../src/comm/bus.ts';
import { encodeEnvelope } from '../../src/comm/codec.ts';
import { PROTOCOL_VERSION, type Envelope, type Message, type MessageKind } from '../../src/protocol/messages.ts';
import { toWireTensor } from '../../src/comm/tensor-wire.ts';
import { MESSAGE_KINDS, validateMessage } from '../../src/protocol/validate.ts';

const valid: { [K in MessageKind]: Extract<Message, { kind: K }> } = {
  register: { kind: 'register', rank: 1, node: 0, pid: 4242, host: 'box' },
  heartbeat: { kind: 'heartbeat', rank: 1, step: 0, state: 'ready', rssMb: 300, actors: [{ kind: 'stage', rank: 1, state: 'idle', mailbox: 0, lastAction: 'F3 (step 2)' }] },
  'step-ready': { kind: 'step-ready', rank: 2, step: 5 },
  'step-go': { kind: 'step-go', step: 5, action: 'run' },
  'evaluation-done': { kind: 'evaluation-done', rank: 2, step: 10, loss: 7.25, samples: 64, elapsedMs: 950.5 },
  'step-done': { kind: 'step-done', rank: 0, step: 6, loss: 3.25, tokens: 1024, stepMs: 812.5, gradNorm: 1.5 },
  control: { kind: 'control', command: 'pause' },
  'control-reply': {
    kind: 'control-reply', ok: true, command: 'status', message: 'running',
    status: {
      jobId: 'j', state: 'running', step: 3, totalSteps: 12, lastLoss: null, tokensPerS: 850.5,
      ranks: [{ rank: 0, state: 'training', step: 3, lastSeenMs: 120 }],
      actors: [{ kind: 'scheduler', rank: 0, state: 'paused', mailbox: 0, lastAction: 'sent step 3' }],
    },
  },
  collective: { kind: 'collective', group: 'dp.0', op: 'all-reduce', seq: 9, tag: '', from: 1, part: 2, tensor: toWireTensor(new Float32Array([1, 2, 3, 4]), [2, 2]) },
  fatal: { kind: 'fatal', rank: 3, reason: 'out of memory' },
  shutdown: { kind: 'shutdown', reason: 'rank 1 stopped answering', exitCode: 1, restartable: true, unresponsiveRank: 1 },
  actor: { kind: 'actor', to: { rank: 'launcher', role: 'scheduler' }, from: { rank: 2, role: 'stage' }, payload: { type: 'go', n: [1, 2] } },
  'checkpoint-saved': { kind: 'checkpoint-saved', rank: 1, step: 10, record: { rank: 1, file: 'rank-00001.safetensors', bytes: 100 } },
  // No rank: the launcher of node 1 (every field left is required).
  'connection-interrupted': { kind: 'connection-interrupted', node: 1, pid: 4243, server: '127.0.0.1:4222' },
  'data-plane-address-request': { kind: 'data-plane-address-request', rank: 3 },
  'data-plane-address': { kind: 'data-plane-address', rank: 3, host: '10.0.0.2', port: 40123 },
  restart: { kind: 'restart', attempt: 2, resume: '/runs/a/checkpoints/step-000004', startStep: 4 },
  'restart-ready': { kind: 'restart-ready', node: 1, attempt: 2 },
};

function envelope(message: Message, job = 'job-a'): Envelope {
  return { ...message, v: PROTOCOL_VERSION, job } as Envelope;
}

/** Decoded form, as it arrives off the wire. */
function wire(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_key, v) => (v instanceof Uint8Array ? { __bytes: [...v] } : v)), (_key, v) =>
    v !== null && typeof v === 'object' && Array.isArray(v.__bytes) ? new Uint8Array(v.__bytes) : v,
  );
}

test('a valid message of every kind passes and comes back equal', () => {
  assert.deepEqual([...MESSAGE_KINDS].sort(), Object.keys(valid).sort());
  for (const message of Object.values(valid)) {
    const result = validateMessage(wire(envelope(message)), 'job-a');
    assert.ok(result.ok, `${message.kind}: ${!result.ok ? result.detail : ''}`);
    assert.deepEqual(result.envelope, envelope(message));
  }
});

test('optional fields may be absent and NaN losses are still reported', () => {
  const { status: _status, ...withoutStatus } = valid['control-reply'];
  assert.ok(validateMessage(envelope(withoutStatus as Message)).ok);
  const { from: _from, ...withoutFrom } = valid.actor;
  assert.ok(validateMessage(envelope(withoutFrom as Message)).ok);
  const diverged = validateMessage(envelope({ ...valid['step-done'], loss: NaN, gradNorm: Infinity }));
  assert.ok(diverged.ok && Number.isNaN((diverged.envelope as { loss: number }).loss));
});

test('fields not declared by the kind are dropped', () => {
  const result = validateMessage({ ...envelope(valid.fatal), extra: 'x', constructor: 'y' });
  assert.ok(result.ok);
  assert.deepEqual(Object.keys(result.envelope).sort(), ['job', 'kind', 'rank', 'reason', 'v']);
});

function assertRejected(result: ReturnType<typeof validateMessage>, reason: string, pattern: RegExp): void {
  assert.ok(!result.ok, `expected a '${reason}' rejection`);
  assert.equal(result.reason, reason);
  assert.match(result.detail, pattern);
}

test('version, job and kind are checked first, with their own reasons', () => {
  const base = envelope(valid.heartbeat);
  assertRejected(validateMessage({ ...base, v: PROTOCOL_VERSION + 1 }), 'version', new RegExp(`protocol version number ${PROTOCOL_VERSION + 1}, this process speaks ${PROTOCOL_VERSION}`));
  assertRejected(validateMessage({ ...base, v: undefined }), 'version', /undefined/);
  assertRejected(validateMessage({ ...base, job: 'job-b' }, 'job-a'), 'job', /job "job-b", this bus serves job "job-a"/);
  assertRejected(validateMessage({ ...base, job: 7 }), 'malformed', /job must be a string/);
  assertRejected(validateMessage({ ...base, kind: 'gossip' }), 'unknown-kind', /"gossip" is not one of register, heartbeat/);
  assertRejected(validateMessage({ ...base, kind: 'toString' }), 'unknown-kind', /"toString"/);
  assertRejected(validateMessage([base]), 'malformed', /must be a map, got an array/);
  assertRejected(validateMessage(null), 'malformed', /got null/);
  assertRejected(validateMessage(new Map(Object.entries(base))), 'malformed', /must be a map, got an object/);
});

const badFields: Array<[MessageKind, Record<string, unknown>, RegExp]> = [
  ['register', { rank: -1 }, /rank must be an integer >= 0, got number -1/],
  ['register', { rank: 1.5 }, /rank must be an integer >= 0/],
  ['register', { host: 5 }, /host must be a string/],
  ['heartbeat', { state: 'sleeping' }, /state must be one of/],
  ['heartbeat', { rssMb: Infinity }, /rssMb must be a finite number >= 0/],
  ['heartbeat', { step: '3' }, /step must be an integer >= 0, got "3"/],
  ['step-ready', { step: NaN }, /step must be an integer/],
  ['step-go', { action: 'walk' }, /action must be one of 'run', 'stop'/],
  ['step-done', { tokens: -5 }, /tokens must be an integer >= 0/],
  ['step-done', { loss: '3' }, /loss must be a number/],
  ['step-done', { stepMs: -1 }, /stepMs must be a finite number >= 0/],
  ['control', { command: 'reboot' }, /command must be one of/],
  ['control-reply', { ok: 'yes' }, /ok must be a boolean/],
  ['control-reply', { status: { ...valid['control-reply'].status, ranks: [{ rank: 0, state: 'x', step: 0, lastSeenMs: 0 }] } }, /status\.ranks\[0\]\.state/],
  ['control-reply', { status: { ...valid['control-reply'].status, tokensPerS: NaN } }, /status\.tokensPerS must be a finite number/],
  ['collective', { op: 'all-to-all' }, /op must be one of/],
  ['collective', { group: '' }, /group must be a non-empty string/],
  ['collective', { tensor: { dtype: 'float32', shape: [2, 2], data: new Uint8Array(15) } }, /tensor\.data must be 16 bytes for shape \[2, 2\]/],
  ['collective', { tensor: { dtype: 'float64', shape: [1], data: new Uint8Array(2) } }, /tensor\.dtype must be one of/],
  ['collective', { tensor: { dtype: 'int32', shape: [-1], data: new Uint8Array(0) } }, /tensor\.shape\[0\] must be an integer >= 0/],
  ['collective', { tensor: { dtype: 'int32', shape: 4, data: new Uint8Array(16) } }, /tensor\.shape must be an array/],
  ['collective', { tensor: { dtype: 'int32', shape: [4], data: [0, 0, 0, 0] } }, /tensor\.data must be bytes/],
  ['collective', { tensor: null }, /tensor must be a map, got null/],
  ['fatal', { reason: undefined }, /reason must be a string, got undefined/],
  ['shutdown', { exitCode: 1.5 }, /exitCode must be an integer/],
  ['actor', { to: { rank: 'everyone', role: 'x' } }, /to\.rank must be an integer >= 0/],
  ['actor', { to: { rank: 1, role: '' } }, /to\.role must be a non-empty string/],
  ['actor', { from: 'me' }, /from must be a map/],
  ['checkpoint-saved', { record: 'file' }, /record must be a map/],
  ['step-go', { save: '' }, /save must be a non-empty string/],
  ['step-go', { evaluate: 'yes' }, /evaluate must be a boolean/],
  ['data-plane-address-request', { rank: 'me' }, /rank must be an integer >= 0/],
  ['data-plane-address', { port: 70000 }, /port must be a TCP port/],
  ['data-plane-address', { host: '' }, /host must be a non-empty string/],
  ['evaluation-done', { samples: 1.5 }, /samples must be an integer >= 0/],
  ['evaluation-done', { loss: null }, /loss must be a number/],
  ['connection-interrupted', { rank: -3 }, /rank must be an integer >= 0/],
  ['restart', { startStep: -1 }, /startStep must be an integer >= 0/],
  ['restart-ready', { attempt: 'one' }, /attempt must be an integer >= 0/],
  ['shutdown', { restartable: 1 }, /restartable must be a boolean/],
  ['shutdown', { unresponsiveRank: -1 }, /unresponsiveRank must be/],
  ['control', { save: 'yes' }, /save must be a boolean/],
];

test('a bad field of each kind is refused as malformed, naming the field', () => {
  const kindsCovered = new Set<string>();
  for (const [kind, patch, pattern] of badFields) {
    const result = validateMessage({ ...envelope(valid[kind]), ...patch });
    assert.ok(!result.ok, `${kind} ${JSON.stringify(Object.keys(patch))} should fail`);
    assert.equal(result.reason, 'malformed');
    assert.match(result.detail, pattern);
    kindsCovered.add(kind);
  }
  assert.deepEqual([...kindsCovered].sort(), [...MESSAGE_KINDS].sort());
});

test('missing fields are refused', () => {
  for (const message of Object.values(valid)) {
    for (const key of Object.keys(message)) {
      // Optional fields: an actor message's sender, a heartbeat's actors (the heartbeat thread sends none), a shutdown's extras.
      if (key === 'kind' || key === 'payload' || key === 'status' || key === 'from' || (message.kind === 'heartbeat' && key === 'actors')) continue;
      if (message.kind === 'shutdown' && (key === 'restartable' || key === 'unresponsiveRank')) continue;
      const copy: Record<string, unknown> = { ...envelope(message) };
      delete copy[key];
      const result = validateMessage(copy);
      assert.ok(!result.ok && result.reason === 'malformed', `${message.kind} without ${key}`);
      assert.match(result.detail, new RegExp(`^${key} must be`));
    }
  }
});

// ---- fuzzing --------------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomValue(random: () => number, depth = 0): unknown {
  const choice = Math.floor(random() * 16);
  switch (choice) {
    case 0: return null;
    case 1: return undefined;
    case 2: return Math.floor(random() * 2000) - 1000;
    case 3: return random() * 1e6 - 5e5;
    case 4: return [NaN, Infinity, -Infinity, -0, 2 ** 53, -(2 ** 31)][Math.floor(random() * 6)];
    case 5: return random() < 0.5;
    case 6: return ['', 'run', 'float32', 'training', '__proto__', 'constructor', 'x'.repeat(300)][Math.floor(random() * 7)];
    case 7: return new Uint8Array(Math.floor(random() * 40));
    case 8: return new Float32Array(Math.floor(random() * 8));
    case 9: return BigInt(Math.floor(random() * 1000));
    case 10: return new Date(Math.floor(random() * 1e12));
    case 11:
    case 12:
      if (depth > 3) return 1;
      return Array.from({ length: Math.floor(random() * 4) }, () => randomValue(random, depth + 1));
    default: {
      if (depth > 3) return 'deep';
      const keys = ['rank', 'shape', 'data', 'dtype', 'role', '__proto__', 'constructor', 'prototype', 'state', 'kind', 'v', 'job'];
      const value: Record<string, unknown> = {};
      for (let i = Math.floor(random() * 4); i > 0; i--) {
        Object.defineProperty(value, keys[Math.floor(random() * keys.length)], {
          value: randomValue(random, depth + 1), enumerable: true, configurable: true, writable: true,
        });
      }
      return value;
    }
  }
}

/** Replaces, deletes or adds one field somewhere in the envelope. */
function mutate(value: unknown, random: () => number): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return randomValue(random);
  const copy: Record<string, unknown> = Array.isArray(value) ? ([...value] as unknown as Record<string, unknown>) : { ...(value as object) };
  const keys = Object.keys(copy);
  const roll = random();
  if (keys.length > 0 && roll < 0.6) {
    const key = keys[Math.floor(random() * keys.length)];
    copy[key] = random() < 0.5 ? mutate(copy[key], random) : randomValue(random);
  } else if (keys.length > 0 && roll < 0.8) {
    delete copy[keys[Math.floor(random() * keys.length)]];
  } else {
    Object.defineProperty(copy, random() < 0.5 ? '__proto__' : 'extra', {
      value: randomValue(random), enumerable: true, configurable: true, writable: true,
    });
  }
  return copy;
}

const prototypeKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort();

function assertNoPollution(): void {
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeKeysBefore);
  const probe: Record<string, unknown> = {};
  for (const key of ['polluted', 'rank', 'shape', 'data', 'kind', 'role']) assert.equal(probe[key], undefined);
}

/** What a delivered message must satisfy, checked independently of the validator's own code. */
function assertDeliverable(result: ReturnType<typeof validateMessage>): void {
  if (!result.ok) return;
  const again = validateMessage(result.envelope);
  assert.ok(again.ok, 'a delivered message validates again');
  assert.deepEqual(again.envelope, result.envelope);
  assert.equal(result.envelope.v, PROTOCOL_VERSION);
  assert.ok(MESSAGE_KINDS.includes(result.envelope.kind));
  if (result.envelope.kind === 'collective') {
    const { shape, data } = result.envelope.tensor;
    assert.equal(data.byteLength, shape.reduce((a, b) => a * b, 1) * 4);
  }
}

test('fuzz: random byte strings never throw and are never delivered', () => {
  const random = rng(1);
  let delivered = 0;
  for (let i = 0; i < 4000; i++) {
    const bytes = new Uint8Array(Math.floor(random() * 64));
    for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
    // Bias half of them towards a msgpack map header so the decoder gets past the first byte.
    if (i % 2 === 0 && bytes.length > 0) bytes[0] = 0x80 | (bytes[0] & 0x0f);
    const result = decodeAndValidate(bytes, 'job-a');
    if (result.ok) delivered++;
    assertDeliverable(result);
  }
  assert.equal(delivered, 0);
  assertNoPollution();
});

test('fuzz: mutated valid envelopes never throw, and what passes is well-formed', () => {
  const random = rng(2);
  const seeds = Object.values(valid).map((message) => envelope(message));
  const outcomes = { ok: 0, rejected: 0 };
  for (let i = 0; i < 3000; i++) {
    let value: unknown = seeds[i % seeds.length];
    for (let m = 1 + Math.floor(random() * 3); m > 0; m--) value = mutate(value, random);
    let bytes: Uint8Array;
    try {
      bytes = encodeEnvelope(value as Envelope);
    } catch {
      continue; // not encodable at all: nothing could send it
    }
    if (random() < 0.3) {
      // Byte-level damage as well: flip, truncate or extend.
      bytes = bytes.slice();
      const roll = random();
      if (roll < 0.4 && bytes.length > 0) bytes[Math.floor(random() * bytes.length)] ^= 1 << Math.floor(random() * 8);
      else if (roll < 0.7) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
      else bytes = Uint8Array.from([...bytes, Math.floor(random() * 256)]);
    }
    const result = decodeAndValidate(bytes, 'job-a');
    outcomes[result.ok ? 'ok' : 'rejected']++;
    assertDeliverable(result);
    // The validator also runs on the decoded-in-memory form, where __proto__ keys may survive as own keys.
    assertDeliverable(validateMessage(value, 'job-a'));
  }
  assert.ok(outcomes.rejected > 1000, `most mutations must be refused: ${JSON.stringify(outcomes)}`);
  assert.ok(outcomes.ok > 50, `harmless mutations (extra keys, payload changes) must still pass: ${JSON.stringify(outcomes)}`);
  assertNoPollution();
});

test('fuzz: the validator never throws on arbitrary in-memory values, including hostile objects', () => {
  const random = rng(3);
  for (let i = 0; i < 3000; i++) assertDeliverable(validateMessage(randomValue(random), 'job-a'));
  const hostile = new Proxy({}, { get() { throw new Error('boom'); }, getPrototypeOf() { throw new Error('boom'); } });
  assert.equal(validateMessage(hostile).ok, false);
  const getter = { ...envelope(valid.fatal) };
  Object.defineProperty(getter, 'reason', { get() { throw new Error('boom'); }, enumerable: true });
  const result = validateMessage(getter);
  assert.ok(!result.ok && result.reason === 'malformed');
  assertNoPollution();
});

test('validate - heartbeats and status list actors, each checked', () => {
  const base = { v: PROTOCOL_VERSION, job: 'j', kind: 'heartbeat', rank: 1, step: 0, state: 'ready', rssMb: 1 };
  const actor = { kind: 'stage', rank: 1, state: 'idle', mailbox: 2, lastAction: 'B0' };
  const ok = validateMessage({ ...base, actors: [actor] });
  assert.ok(ok.ok && ok.envelope.kind === 'heartbeat' && ok.envelope.actors?.[0].mailbox === 2);
  for (const actors of [[{ ...actor, kind: 'trainer' }], [{ ...actor, mailbox: -1 }], [{ ...actor, state: 'x'.repeat(201) }], 'stage', [{ ...actor, rank: undefined }]]) {
    const bad = validateMessage({ ...base, actors });
    assert.ok(!bad.ok && bad.reason === 'malformed', JSON.stringify(actors).slice(0, 80));
  }
});

test('validate - float16 wire tensors carry 2 bytes per element', () => {
  const base = { v: PROTOCOL_VERSION, job: 'j', kind: 'collective', group: 'g', op: 'send', seq: 0, tag: 't', from: 0, part: 0 };
  assert.ok(validateMessage({ ...base, tensor: { dtype: 'float16', shape: [3], data: new Uint8Array(6) } }).ok);
  const bad = validateMessage({ ...base, tensor: { dtype: 'float16', shape: [3], data: new Uint8Array(12) } });
  assert.ok(!bad.ok && /6 bytes/.test(bad.detail));
});

test('validate - a fatal message may say a restart cannot mend it (restartable: false), as a boolean', () => {
  const base = { v: PROTOCOL_VERSION, job: 'j', kind: 'fatal', rank: 1, reason: 'step 2: the loss is NaN' };
  const deterministic = validateMessage({ ...base, restartable: false });
  assert.ok(deterministic.ok && deterministic.envelope.kind === 'fatal' && deterministic.envelope.restartable === false);
  const plain = validateMessage(base);
  assert.ok(plain.ok && !('restartable' in plain.envelope));
  const bad = validateMessage({ ...base, restartable: 'no' });
  assert.ok(!bad.ok && bad.reason === 'malformed' && /^restartable must be a boolean/.test(bad.detail));
});
