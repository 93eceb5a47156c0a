/**
 * trace.json as the run goes: the file parses after every append and after a writer is killed -9 in the
 * middle of appending; node 0 copies the ranks' parts line by line (a torn line skipped); and a real pp2
 * job whose launcher is killed -9 mid-run leaves a trace.json that parses, with both ranks' slices.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startNatsServer, type NatsServerHandle } from '../../src/comm/nats-server.ts';
import { TraceFile } from '../../src/trace/trace-file.ts';
import { TraceCollector, TracePart } from '../../src/trace/trace-parts.ts';
import type { TraceEvent } from '../../src/trace/trace.ts';
import { pidAlive, REPO, startCli, writeTestConfig } from '../support/cli.ts';
import { readTrace } from '../support/trace.ts';

const folder = () => mkdtempSync(join(tmpdir(), 'gpt-hybrid-trace-'));
const slice = (pid: number, i: number): TraceEvent => ({ name: `F${i}`, cat: 'compute', ph: 'X', ts: 1_000 + i, dur: 5, pid, tid: 0, args: { step: 1, microBatch: i } });

let server: NatsServerHandle;
before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server.stop();
});

test('TraceFile - a whole document after every commit, holding what was committed; events are held at most about a second', () => {
  const dir = folder();
  const file = new TraceFile(join(dir, 'trace.json'));
  assert.deepEqual(readTrace(dir), []);
  file.append([slice(0, 0)]);
  // The first events go in at once; the next wait for the next commit (a second later, or now).
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0']);
  file.append([slice(1, 1), slice(0, 2)]);
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0']);
  file.commit();
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0', 'F1', 'F2']);
  const eager = new TraceFile(join(dir, 'trace.json'), 0);
  for (let i = 0; i < 5; i++) {
    eager.append([slice(0, 2 * i), slice(1, 2 * i + 1)]);
    assert.deepEqual(readTrace(dir).map((e) => e.name), Array.from({ length: 2 * i + 2 }, (_, k) => `F${k}`));
  }
  eager.append([]);
  eager.close();
  assert.equal(readTrace(dir).length, 10);
});

test("TraceFile - a resumed run's trace goes on after the earlier launches' events; a file that is no such trace is kept aside and a fresh one started", () => {
  const dir = folder();
  const path = join(dir, 'trace.json');
  // An empty trace, then one with events: each launch adds its own after them.
  new TraceFile(path, 0).close();
  const second = new TraceFile(path, 0, true);
  second.append([slice(0, 0), slice(0, 1)]);
  second.close();
  const third = new TraceFile(path, 0, true);
  third.append([slice(0, 2)]);
  third.close();
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0', 'F1', 'F2']);
  // Not resumed: afresh.
  new TraceFile(path, 0).close();
  assert.deepEqual(readTrace(dir), []);
  writeFileSync(path, '{"traceEvents": [], "mine": true}');
  const over = new TraceFile(path, 0, true);
  over.append([slice(0, 3)]);
  over.close();
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F3']);
  assert.equal(readFileSync(`${path}.unreadable`, 'utf8'), '{"traceEvents": [], "mine": true}');
  // A second such file is kept beside the first.
  writeFileSync(path, 'not a trace');
  new TraceFile(path, 0, true).close();
  assert.equal(readFileSync(`${path}.unreadable`, 'utf8'), '{"traceEvents": [], "mine": true}');
  assert.equal(readFileSync(`${path}.unreadable.2`, 'utf8'), 'not a trace');
});

test('TraceFile - a writer killed -9 while adding large batches leaves a trace that parses', async () => {
  const dir = folder();
  const script = join(dir, 'writer.ts');
  writeFileSync(
    script,
    `import { TraceFile } from ${JSON.stringify(join(REPO, 'src/trace/trace-file.ts'))};\n` +
      `const file = new TraceFile(${JSON.stringify(join(dir, 'trace.json'))}, 0);\n` +
      `const event = (i: number) => ({ name: 'F' + i, cat: 'compute', ph: 'X', ts: i, dur: 1, pid: 0, tid: 0, args: { pad: 'x'.repeat(2000) } });\n` +
      `const started = Date.now();\n` +
      `for (let i = 0, told = false; ; i++) { file.append(Array.from({ length: 50 }, (_, k) => event(i * 50 + k))); if (!told && Date.now() - started > 1500) { told = true; process.stdout.write('writing\\n'); } }\n`,
  );
  const writer = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => writer.stdout.once('data', () => resolve()));
  await new Promise((resolve) => setTimeout(resolve, 300));
  writer.kill('SIGKILL');
  await new Promise((resolve) => writer.once('exit', resolve));
  const events = readTrace(dir);
  assert.ok(events.length >= 50 && events.length % 50 === 0, `${events.length} events: whole batches only`);
  assert.deepEqual(events.map((e) => e.name).slice(0, 3), ['F0', 'F1', 'F2']);
});

test('TraceCollector - copies whole lines as they come, skips a torn line, removes stale and finished parts', () => {
  const dir = folder();
  writeFileSync(join(dir, 'trace.rank7.jsonl'), `${JSON.stringify(slice(7, 0))}\n`);
  const collector = new TraceCollector(dir, { minCommitIntervalMs: 0 });
  assert.equal(existsSync(join(dir, 'trace.rank7.jsonl')), false, 'a part of an earlier launch was kept');
  const parts = [new TracePart(dir, 0), new TracePart(dir, 1)];
  parts[0].append([slice(0, 0), slice(0, 1)]);
  collector.collect();
  assert.deepEqual(readTrace(dir).map((e) => `${e.pid}:${e.name}`), ['0:F0', '0:F1']);
  // Half a line (being written): not copied until it is whole.
  appendFileSync(parts[1].path, JSON.stringify(slice(1, 0)).slice(0, 20));
  collector.collect();
  assert.equal(readTrace(dir).length, 2);
  // The worker was killed mid-line and its restart appends after it: the torn line is skipped.
  appendFileSync(parts[1].path, '\n');
  parts[1].append([slice(1, 1)]);
  parts[0].append([slice(0, 2)]);
  collector.collect();
  assert.deepEqual(readTrace(dir).map((e) => `${e.pid}:${e.name}`).sort(), ['0:F0', '0:F1', '0:F2', '1:F1']);
  assert.equal(collector.finish(), join(dir, 'trace.json'));
  assert.equal(existsSync(parts[0].path) || existsSync(parts[1].path), false);
  assert.equal(readTrace(dir).length, 4);
});

test("TraceCollector - a resumed launch first copies what a killed launch had not yet copied of its parts, each event once", () => {
  const dir = folder();
  const names = () => readTrace(dir).map((e) => `${e.pid}:${e.name}`).sort();
  // The first launch: its first batch is committed at once, the next held (events wait up to a minute here).
  const killed = new TraceCollector(dir, { minCommitIntervalMs: 60_000 });
  const parts = [new TracePart(dir, 0), new TracePart(dir, 1)];
  parts[0].append([slice(0, 0), slice(0, 1)]);
  killed.collect();
  parts[0].append([slice(0, 2)]);
  parts[1].append([slice(1, 0)]);
  killed.collect();
  parts[1].append([slice(1, 1)]);
  appendFileSync(parts[1].path, JSON.stringify(slice(1, 2)).slice(0, 20));
  assert.deepEqual(names(), ['0:F0', '0:F1']);
  // Killed -9 here: the held events and the lines it never read are only in the parts.
  const resumed = new TraceCollector(dir, { resumed: true, minCommitIntervalMs: 60_000 });
  assert.deepEqual(names(), ['0:F0', '0:F1', '0:F2', '1:F0', '1:F1']);
  assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith('trace.rank')), [], "the killed launch's parts were kept");
  // The resumed launch's workers start their parts afresh; it is killed before it commits anything.
  const next = [new TracePart(dir, 0), new TracePart(dir, 1)];
  next[0].append([slice(0, 3)]);
  resumed.collect();
  next[1].append([slice(1, 3)]);
  const third = new TraceCollector(dir, { resumed: true, minCommitIntervalMs: 0 });
  assert.deepEqual(names(), ['0:F0', '0:F1', '0:F2', '0:F3', '1:F0', '1:F1', '1:F3']);
  // A clean end leaves a trace without the note; a launch that does not resume starts afresh.
  new TracePart(dir, 0).append([slice(0, 4)]);
  third.finish();
  assert.equal(names().length, 8);
  assert.equal('otherData' in JSON.parse(readFileSync(join(dir, 'trace.json'), 'utf8')), false);
  new TracePart(dir, 0).append([slice(0, 5)]);
  new TraceCollector(dir).finish();
  assert.deepEqual(readTrace(dir), []);
});

test("TraceFile - the writer's note goes in with the events and is read back by a continuing writer; a longer or shorter one leaves a whole document", () => {
  const dir = folder();
  const path = join(dir, 'trace.json');
  const file = new TraceFile(path, 0);
  file.setOtherData({ copied: { a: 123_456_789, b: 'x'.repeat(100) } });
  file.append([slice(0, 0)]);
  file.setOtherData({ c: 1 });
  file.commit();
  assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')).otherData, { c: 1 });
  assert.deepEqual(new TraceFile(path, 0, true).continuedOtherData, { c: 1 });
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0']);
  const continued = new TraceFile(path, 0, true);
  continued.setOtherData(undefined);
  continued.append([slice(0, 1)]);
  assert.equal(readFileSync(path, 'utf8').endsWith('\n]}\n'), true);
  assert.deepEqual(readTrace(dir).map((e) => e.name), ['F0', 'F1']);
  assert.equal(new TraceFile(path, 0, true).continuedOtherData, undefined);
  // A note cut short (an old file edited by hand) is no trace of this writer's: kept aside.
  writeFileSync(path, readFileSync(path, 'utf8').replace('\n]}\n', '\n],"otherData":{"c":}\n'));
  new TraceFile(path, 0, true).close();
  assert.equal(existsSync(`${path}.unreadable`), true);
});

test('trace - kill -9 of a pp2 job\'s launcher mid-run leaves a trace.json that parses, with both ranks\' slices, and no worker', async () => {
  const config = writeTestConfig({ steps: 200 });
  const out = join(folder(), 'pp2');
  const job = startCli(['train', config, '--out', out, '--set', 'parallel.pipeline=2', '--set', 'numMicroBatches=2', '--nats', server.url]);
  try {
    await job.waitFor(/step 3\/200/, 120_000);
    // The launcher copies the ranks' new events about once a second.
    const deadline = Date.now() + 10_000;
    const ranksIn = () => new Set(readTrace(out).filter((e) => e.ph === 'X' && e.cat === 'compute').map((e) => e.pid));
    while (ranksIn().size < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    job.child.kill('SIGKILL');
    await job.exited;
    const events = readTrace(out);
    for (const rank of [0, 1]) {
      assert.ok(events.some((e) => e.pid === rank && e.ph === 'X' && /^[FB]\d+$/.test(e.name)), `no F/B slice of rank ${rank}`);
    }
    const pids = [...job.output().matchAll(/rank \d+ registered \(node \d+, pid (\d+)/g)].map((m) => Number(m[1]));
    assert.equal(pids.length, 2, job.output());
    const gone = Date.now() + 10_000;
    while (pids.some(pidAlive) && Date.now() < gone) await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(!pids.some(pidAlive), 'a worker outlived its killed launcher');
    // The document notes how far it holds each rank's part, for a resumed launch to copy the rest from.
    const { otherData } = JSON.parse(readFileSync(join(out, 'trace.json'), 'utf8')) as { otherData?: { copiedFromRankParts?: Record<string, number> } };
    const copied = otherData?.copiedFromRankParts ?? {};
    assert.deepEqual(Object.keys(copied).sort(), ['trace.rank0.jsonl', 'trace.rank1.jsonl'], JSON.stringify(otherData));
    for (const [part, bytes] of Object.entries(copied)) assert.ok(bytes > 0 && bytes <= statSync(join(out, part)).size, `${part}: ${bytes} bytes copied`);
  } finally {
    job.child.kill('SIGKILL');
  }
});
