// Tests: the safetensors reader under thousands of mutated files: only CheckpointError, no prototype pollution.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CheckpointError } from '../../src/checkpoint/errors.ts';
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '../../src/checkpoint/safetensors.ts';
import { concat } from './bytes.ts';

/** xorshift32: a fixed seed makes every run fuzz the same files. */
function randomSource(seed: number): (n: number) => number {
  let state = seed >>> 0 || 1;
  return (n) => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state % n;
  };
}


const SEEDS: Uint8Array[] = [
  concat(
    serializeSafetensors(
      new Map<string, TensorToWrite>([
        ['blocks.0.attn.qkv.weight', { dtype: 'F32', shape: [4, 6], data: Float32Array.from({ length: 24 }, (_, i) => i / 3) }],
        ['m.blocks.0.attn.qkv.weight', { dtype: 'F32', shape: [4, 6], data: new Float32Array(24).fill(0.5) }],
        ['step', { dtype: 'I32', shape: [], data: Int32Array.from([12]) }],
      ]),
      { format: 'gpt-hybrid-checkpoint', rank: '3' },
    ),
  ),
  concat(serializeSafetensors(new Map<string, TensorToWrite>([['a', { dtype: 'U8', shape: [3], data: Uint8Array.from([1, 2, 3]) }]]))),
];

/** Snippets that a hostile header might carry. */
const INJECTIONS = ['"__proto__"', '"constructor"', '"prototype"', '{"polluted":"yes"}', '-1', '1e309', '9007199254740993', '[]', 'null', '"F64"', '""', '{', '}', '"\\u0000"'];

function mutate(seed: Uint8Array, random: (n: number) => number): Uint8Array {
  const bytes = seed.slice();
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  switch (random(7)) {
    case 0: {
      // Flip a few random bits anywhere.
      for (let k = 1 + random(4); k > 0; k--) bytes[random(bytes.length)]! ^= 1 << random(8);
      return bytes;
    }
    case 1:
      return bytes.subarray(0, random(bytes.length));
    case 2: {
      // A wrong header length, near the real one or anywhere in 64 bits.
      const view = new DataView(bytes.buffer);
      if (random(2) === 0) view.setBigUint64(0, BigInt(Math.max(0, headerLength + random(33) - 16)), true);
      else view.setUint32(random(2) * 4, random(0xffffffff), true);
      return bytes;
    }
    case 3: {
      // Rewrite one number of the header's JSON (offsets, shapes), keeping its length when possible.
      const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
      const numbers = [...header.matchAll(/\d+/g)];
      const target = numbers[random(numbers.length)]!;
      const replacement = String(random(2) === 0 ? random(10 ** target[0].length) : random(100000));
      const text = header.slice(0, target.index) + replacement + header.slice(target.index! + target[0].length);
      return rebuild(text, bytes.subarray(8 + headerLength));
    }
    case 4: {
      // Splice a hostile snippet into the header JSON.
      const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
      const at = random(header.length);
      const text = header.slice(0, at) + INJECTIONS[random(INJECTIONS.length)] + header.slice(at + random(6));
      return rebuild(text, bytes.subarray(8 + headerLength));
    }
    case 5: {
      // Rename a key to a prototype-sensitive name.
      const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
      const keys = [...header.matchAll(/"([a-z_.0-9]+)":/g)];
      const key = keys[random(keys.length)]!;
      const name = ['__proto__', 'constructor', 'hasOwnProperty', 'toString', '__metadata__', 'dtype'][random(6)]!;
      const text = header.slice(0, key.index) + `"${name}":` + header.slice(key.index! + key[0].length);
      return rebuild(text, bytes.subarray(8 + headerLength));
    }
    default: {
      // Random bytes inserted or appended.
      const extra = Uint8Array.from({ length: 1 + random(12) }, () => random(256));
      const at = random(bytes.length + 1);
      return concat([bytes.subarray(0, at), extra, bytes.subarray(at)]);
    }
  }
}

function rebuild(headerText: string, data: Uint8Array): Uint8Array {
  const header = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

test('fuzz - 5000 mutated safetensors files: parsed and read, or refused with CheckpointError; prototypes untouched', () => {
  const prototypeNames = Object.getOwnPropertyNames(Object.prototype).sort();
  const random = randomSource(0x5afe7e45);
  let refused = 0;
  let accepted = 0;
  const problems = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const bytes = mutate(SEEDS[random(SEEDS.length)]!, random);
    try {
      const file = parseSafetensors(bytes, `mutant-${i}`);
      for (const [name, entry] of file.tensors) {
        const raw = file.bytes(name);
        assert.equal(raw.byteLength, entry.dataOffsets[1] - entry.dataOffsets[0]);
        if (entry.dtype === 'F32') assert.equal(file.float32(name).length * 4, raw.byteLength);
        if (entry.dtype === 'I32') assert.equal(file.int32(name).length * 4, raw.byteLength);
      }
      for (const value of file.metadata.values()) assert.equal(typeof value, 'string');
      accepted++;
    } catch (error) {
      if (!(error instanceof CheckpointError)) {
        assert.fail(`mutant ${i} threw ${String(error)} instead of a CheckpointError`);
      }
      assert.match(error.message, new RegExp(`^mutant-${i}: `));
      problems.add(error.problem);
      refused++;
    }
  }
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), prototypeNames);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.getPrototypeOf({}), Object.prototype);
  // The mutations reach both outcomes and both kinds of refusal, or they tested little.
  assert.ok(refused > 2500, `only ${refused} of 5000 mutants were refused`);
  assert.ok(accepted > 50, `only ${accepted} of 5000 mutants parsed`);
  assert.deepEqual([...problems].sort(), ['format', 'truncated']);
});
