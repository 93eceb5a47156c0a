/**
 * TensorBoard event files (train/tensorboard-events.ts, train/hooks/tensorboard.ts): the TFRecord framing
 * against a known CRC32C, and whole runs through the CLI read back with every CRC checked (a flipped byte
 * is caught): a single-process run's scalars, its resumption in a file of its own (whose START drops
 * the steps trained again, as TensorBoard does), and a simulated
 * pipeline job's fp16 loss scale, all equal to metrics.jsonl's numbers at float32 precision.
 */
import assert from 'node:assert/strict';
import { crc32c } from '@aws-crypto/crc32c';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { decodeEvent, encodeEvent, FILE_VERSION, frameRecord, maskedCrc32c, readEvents, readRecords, type TensorBoardEvent } from '../../src/train/tensorboard-events.ts';
import { runCli, writeTestConfig } from '../support/cli.ts';

test('framing - CRC32C of "123456789" is 0xe3069283, masked 0xc78ab0e5; a record is length, its CRC, data, its CRC', () => {
  const data = Buffer.from('123456789');
  assert.equal(crc32c(data) >>> 0, 0xe3069283);
  // ((crc >>> 15) | (crc << 17)) + 0xa282ead8, worked out by hand.
  assert.equal(maskedCrc32c(data), 0xc78ab0e5);
  const record = frameRecord(data);
  assert.equal(record.length, 8 + 4 + 9 + 4);
  assert.deepEqual([...record.subarray(0, 8)], [9, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(record.readUInt32LE(8), maskedCrc32c(record.subarray(0, 8)));
  assert.equal(record.subarray(12, 21).toString(), '123456789');
  assert.equal(record.readUInt32LE(21), 0xc78ab0e5);
  assert.deepEqual(readRecords(Buffer.concat([record, frameRecord(new Uint8Array())])).map((r) => Buffer.from(r).toString()), ['123456789', '']);

  for (const event of [
    { wallTime: 1.5e9 + 0.25, step: 2 ** 40, scalars: [{ tag: 'train/loss', value: 0.5 }] },
    { wallTime: 1, step: 7, start: true, scalars: [] },
    { wallTime: 2, step: 0, fileVersion: FILE_VERSION, scalars: [] },
  ] satisfies TensorBoardEvent[]) {
    assert.deepEqual(decodeEvent(encodeEvent(event)), event);
  }
});

type MetricsLine = { step: number; loss?: number; lr?: number; grad_norm?: number; loss_scale?: number; tokens_per_s?: number; val_loss?: number; val_ppl?: number };

/** "step tag" → value at float32 precision, what TensorBoard gets of each metrics.jsonl line. */
function expectedScalars(metricsFile: string): Map<string, number> {
  const expected = new Map<string, number>();
  const lines = readFileSync(metricsFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as MetricsLine);
  for (const m of lines) {
    const pairs: [string, number | undefined][] =
      m.loss === undefined
        ? [['val/loss', m.val_loss], ['val/ppl', m.val_ppl]]
        : [['train/loss', m.loss], ['train/lr', m.lr], ['train/grad_norm', m.grad_norm], ['train/loss_scale', m.loss_scale], ['train/tokens_per_s', m.tokens_per_s]];
    for (const [tag, value] of pairs) if (value !== undefined) expected.set(`${m.step} ${tag}`, Math.fround(value));
  }
  return expected;
}

/** The events files of a run in the order TensorBoard reads them, each checked and decoded. */
function eventFiles(runDir: string): { name: string; bytes: Buffer; events: TensorBoardEvent[] }[] {
  return readdirSync(join(runDir, 'tb'))
    .sort()
    .map((name) => {
      const bytes = readFileSync(join(runDir, 'tb', name));
      return { name, bytes, events: readEvents(bytes) };
    });
}

/**
 * Every scalar of the files as TensorBoard keeps them: each file opens with its version and a START at
 * the first step it trains (`starts`, one a file), which drops what earlier files hold of that step on.
 */
function scalarsOf(files: { events: TensorBoardEvent[] }[], starts: number[]): Map<string, number> {
  assert.equal(files.length, starts.length);
  const scalars = new Map<string, number>();
  files.forEach(({ events }, i) => {
    assert.deepEqual(events.slice(0, 2).map(({ fileVersion, start, step, scalars }) => ({ fileVersion, start, step, scalars: scalars.length })), [
      { fileVersion: FILE_VERSION, start: undefined, step: 0, scalars: 0 },
      { fileVersion: undefined, start: true, step: starts[i], scalars: 0 },
    ]);
    for (const key of scalars.keys()) if (Number(key.split(' ')[0]) >= starts[i]!) scalars.delete(key);
    for (const event of events.slice(2)) {
      assert.ok(Math.abs(event.wallTime - Date.now() / 1000) < 600, `wall time ${event.wallTime}`);
      assert.ok(event.scalars.length > 0 && event.start === undefined && event.fileVersion === undefined);
      for (const { tag, value } of event.scalars) scalars.set(`${event.step} ${tag}`, value);
    }
  });
  return scalars;
}

const sorted = (map: Map<string, number>) => [...map].sort(([a], [b]) => a.localeCompare(b));
const configFile = writeTestConfig({ batchSize: 4, seqLen: 16 });
const train = async (args: string[]) => {
  const { code, output } = await runCli(['train', configFile, '--quiet', ...args], { NATS_URL: 'nats://127.0.0.1:1' });
  assert.equal(code, 0, output);
};

test('run - a single-process run writes every step and evaluation of metrics.jsonl as scalars, CRCs checked; a resumed run adds a file of its own', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-tb-')), 'run');
  await train(['--out', out, '--set', 'steps=4', '--set', 'data.validFraction=0.1', '--set', 'eval.every=2', '--set', 'eval.batches=1', '--set', 'checkpoint.every=2']);
  const [file, ...others] = eventFiles(out);
  assert.equal(others.length, 0);
  assert.match(file!.name, new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
  const expected = expectedScalars(join(out, 'metrics.jsonl'));
  // 4 steps x loss, lr, grad norm, tokens/s (no fp16: no loss scale), 2 evaluations x loss, ppl.
  assert.equal(expected.size, 4 * 4 + 2 * 2);
  assert.deepEqual(sorted(scalarsOf([file!], [1])), sorted(expected));

  // A flipped bit anywhere is caught: in a length, a length's CRC, data, a data CRC.
  const lengths = readRecords(file!.bytes).map((data) => data.length);
  const second = 12 + lengths[0]! + 4;
  for (const [at, what] of [[second, /length CRC mismatch in the record at byte/], [second + 9, /length CRC mismatch/], [second + 12 + 3, /data CRC mismatch/], [file!.bytes.length - 1, /data CRC mismatch/]] as const) {
    const flipped = Buffer.from(file!.bytes);
    flipped[at] ^= 0x10;
    assert.throws(() => readRecords(flipped), what, `byte ${at}`);
  }
  assert.throws(() => readRecords(file!.bytes.subarray(0, file!.bytes.length - 2)), /file ends at/);

  // Resumed at step 2: steps 3 and 4 and the evaluation after 4 are trained again, in a second file.
  await train(['--out', out, '--resume', join(out, 'checkpoints', 'step-000002'), '--steps', '6', '--set', 'data.validFraction=0.1', '--set', 'eval.every=2', '--set', 'eval.batches=1']);
  const files = eventFiles(out);
  assert.equal(files.length, 2);
  assert.equal(files[0]!.name, file!.name, 'the first run\'s file is the one TensorBoard reads first');
  assert.deepEqual([...new Set(files[1]!.events.slice(2).map((e) => e.step))], [3, 4, 5, 6]);
  const resumed = expectedScalars(join(out, 'metrics.jsonl'));
  assert.equal(resumed.size, 6 * 4 + 3 * 2);
  assert.deepEqual(sorted(scalarsOf(files, [1, 3])), sorted(resumed));
});

test('run - a simulated pipeline 2 fp16 job writes through the launcher the same scalars as metrics.jsonl, the loss scale among them', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'gpt-hybrid-tb-')), 'pp2');
  await train(['--out', out, '--simulate', '--set', 'steps=3', '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--set', 'fp16.mode=naive']);
  const expected = expectedScalars(join(out, 'metrics.jsonl'));
  assert.equal([...expected.keys()].filter((key) => key.endsWith(' train/loss_scale')).length, 3);
  assert.deepEqual(sorted(scalarsOf(eventFiles(out), [1])), sorted(expected));
});
