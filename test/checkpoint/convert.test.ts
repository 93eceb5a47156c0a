// Tests: converting checkpoints to other layouts offline (src/checkpoint/convert.ts), inspecting them
// (src/checkpoint/inspect.ts), and the `checkpoint` command line (src/cli/checkpoint-args.ts), on small in-process checkpoints.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCommandLine } from '../../src/cli/args.ts';
import { UsageError } from '../../src/cli/command-spec.ts';
import { loadCheckpoint, resolveCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { convertCheckpoint } from '../../src/checkpoint/convert.ts';
import { inspectCheckpoint } from '../../src/checkpoint/inspect.ts';
import { MANIFEST_FILE } from '../../src/checkpoint/manifest.ts';
import { countParameters } from '../../src/model/params.ts';
import { paramsForRank } from '../../src/model/sharding.ts';
import { ParallelGrid } from '../../src/parallel/grid.ts';
import { partitionUniform } from '../../src/parallel/partition.ts';
import { assertRefused, syntheticValues, tinyModel, withTempDir, writeSyntheticCheckpoint } from './helpers.ts';

const SOURCE = { data: 1, pipeline: 2, tensor: 2 };

test('convert - every rank of the target layout holds exactly its shards and moments, under a new verified manifest', async () => {
  await withTempDir(async (root) => {
    const seed = 11;
    const source = await writeSyntheticCheckpoint(join(root, 'src'), 6, SOURCE, { seed });
    for (const target of [
      { data: 1, pipeline: 1, tensor: 1, numChunks: 1 },
      { data: 2, pipeline: 1, tensor: 1, numChunks: 1 },
      { data: 3, pipeline: 2, tensor: 4, numChunks: 1 },
      { data: 1, pipeline: 2, tensor: 1, numChunks: 2 },
    ]) {
      const out = join(root, `to-${target.data}-${target.pipeline}-${target.tensor}-${target.numChunks}`);
      const result = await convertCheckpoint(source.dir, out, target);
      assert.equal(result.dir, join(out, 'checkpoints', 'step-000006'));
      assert.equal(await readFile(join(out, 'checkpoints', 'latest'), 'utf8'), 'step-000006\n');
      const converted = await loadCheckpoint(await resolveCheckpoint(out), { verify: true, expectLayout: { data: target.data, pipeline: target.pipeline, tensor: target.tensor } });
      const { manifest } = converted;
      assert.equal(manifest.step, 6);
      assert.equal(manifest.seed, seed);
      assert.deepEqual(manifest.dataLoader, source.manifest.dataLoader);
      assert.deepEqual(manifest.extra.convertedFrom, { layout: source.manifest.layout, createdAt: source.manifest.createdAt });
      assert.deepEqual((manifest.config as { numChunks: number }).numChunks, target.numChunks);
      const grid = new ParallelGrid(target);
      const stages = partitionUniform(tinyModel.numLayers, target.pipeline, target.numChunks);
      for (let rank = 0; rank < grid.world; rank++) {
        const { pp, tp } = grid.coordinates(rank);
        const held = paramsForRank(tinyModel, { layerRanges: stages[pp]!, tp: target.tensor, tpRank: tp });
        const tensors = await converted.rankTensors(rank);
        assert.equal(tensors.size, 3 * held.length, `rank ${rank} of ${JSON.stringify(target)} holds other tensors`);
        assert.equal(converted.record(rank).optimizerStep, 6);
        for (const { spec, region } of held) {
          assert.deepEqual(tensors.get(spec.name), syntheticValues(spec, 'param', seed, region), `${spec.name} of rank ${rank}`);
          assert.deepEqual(tensors.get(`m.${spec.name}`), syntheticValues(spec, 'm', seed, region));
          assert.deepEqual(tensors.get(`v.${spec.name}`), syntheticValues(spec, 'v', seed, region));
        }
      }
      converted.close();
    }
  });
});

test('convert - a round trip through another layout gives back byte-identical rank files', async () => {
  await withTempDir(async (root) => {
    const source = await writeSyntheticCheckpoint(join(root, 'src'), 3, SOURCE);
    await convertCheckpoint(source.dir, join(root, 'one'), { data: 1, pipeline: 1, tensor: 1 });
    // Left out: the sizes stay those of the source given (here the single-process one).
    const back = await convertCheckpoint(join(root, 'one'), join(root, 'back'), { pipeline: 2, tensor: 2 });
    assert.deepEqual(back.manifest.layout, source.manifest.layout);
    assert.deepEqual(
      back.manifest.ranks.map((r) => [r.file, r.bytes, r.sha256]),
      source.manifest.ranks.map((r) => [r.file, r.bytes, r.sha256]),
    );
  });
});

test('convert - bad input is refused naming the problem, and nothing is written or overwritten', async () => {
  await withTempDir(async (root) => {
    const source = await writeSyntheticCheckpoint(join(root, 'src'), 2, SOURCE);
    await assertRefused(convertCheckpoint(join(root, 'missing'), join(root, 'a'), {}), 'not-found', /missing: does not exist/);
    await assertRefused(
      convertCheckpoint(source.dir, join(root, 'b'), { tensor: 3, pipeline: 5 }),
      'layout',
      /cannot convert to data 1 x pipeline 5 x tensor 3: numAttentionHeads 4 is not divisible by tensor-parallel size 3.*cannot split 4 layers over 5 pipeline stages/,
    );
    await assertRefused(convertCheckpoint(source.dir, join(root, 'c'), { data: 0 }), 'layout', /data must be a positive integer, got 0/);
    await assertRefused(convertCheckpoint(source.dir, join(source.dir, 'inside'), {}), 'invalid-argument', /is inside the source checkpoint/);

    const occupied = join(root, 'occupied');
    await mkdir(occupied);
    await writeFile(join(occupied, 'notes.txt'), 'keep me');
    await assertRefused(convertCheckpoint(source.dir, occupied, {}), 'invalid-argument', /occupied: exists and is not empty \(notes\.txt\); convert never overwrites/);
    assert.deepEqual(await readdir(occupied), ['notes.txt']);
    await writeFile(join(root, 'a-file'), 'x');
    await assertRefused(convertCheckpoint(source.dir, join(root, 'a-file'), {}), 'invalid-argument', /exists and is not a folder/);

    // Failing halfway (the model given does not match the tensors): what was written goes again.
    const halfway = join(root, 'halfway');
    await mkdir(halfway);
    for (const out of [join(root, 'e'), halfway]) {
      await assertRefused(convertCheckpoint(source.dir, out, { tensor: 1 }, { model: { ...tinyModel, hiddenSize: 16 } }), 'layout', /full shape \[.*\] in the checkpoint .* the model config differs/);
    }
    assert.deepEqual(await readdir(halfway), []);
    await rm(halfway, { recursive: true });

    // A corrupt source file: the conversion stops at the checksum and leaves no partial output.
    const rankFile = join(source.dir, 'rank-00003.safetensors');
    const bytes = await readFile(rankFile);
    bytes[bytes.length - 5]! ^= 0x40;
    await writeFile(rankFile, bytes);
    await assertRefused(convertCheckpoint(source.dir, join(root, 'd'), { tensor: 1 }), 'checksum', /rank-00003\.safetensors: SHA-256 .* differs from the manifest's/);
    const empty = join(root, 'empty');
    await mkdir(empty);
    await assertRefused(convertCheckpoint(source.dir, empty, { tensor: 1 }), 'checksum', /rank-00003/);
    assert.deepEqual(await readdir(empty), []);
    assert.deepEqual((await readdir(root)).sort(), ['a-file', 'empty', 'occupied', 'src']);
  });
});

test('inspect - sums up a sound checkpoint, and names every damaged file and uncovered tensor', async () => {
  await withTempDir(async (root) => {
    const { dir } = await writeSyntheticCheckpoint(join(root, 'run', 'checkpoints'), 4, SOURCE);
    const sound = await inspectCheckpoint(join(root, 'run'));
    assert.equal(sound.dir, dir);
    assert.deepEqual(sound.problems, []);
    assert.deepEqual(sound.parameters, { tensors: sound.parameters.tensors, elements: countParameters(tinyModel) });
    assert.equal(sound.moments, true);
    assert.deepEqual(sound.files.map((f) => [f.rank, f.problem]), [[0, undefined], [1, undefined], [2, undefined], [3, undefined]]);

    // Rank 1's file corrupt, rank 2's gone, and rank 3 no longer listing its half of a column-split weight.
    const rank1 = join(dir, 'rank-00001.safetensors');
    const bytes = await readFile(rank1);
    bytes[bytes.length - 1]! ^= 1;
    await writeFile(rank1, bytes);
    await writeFile(join(dir, 'rank-00002.safetensors'), '');
    const manifestPath = join(dir, MANIFEST_FILE);
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
    const rank3 = manifest.ranks[3];
    rank3.tensors = rank3.tensors.filter((t: { name: string }) => t.name !== 'blocks.3.mlp.fc1.weight');
    await writeFile(manifestPath, JSON.stringify(manifest));
    const damaged = await inspectCheckpoint(dir);
    assert.deepEqual(damaged.files.map((f) => f.problem === undefined), [true, false, false, true]);
    assert.match(damaged.files[1]!.problem!, /rank-00001\.safetensors: SHA-256/);
    assert.match(damaged.files[2]!.problem!, /rank-00002\.safetensors: rank 2's file has 0 bytes/);
    assert.ok(damaged.problems.some((p) => /regions of blocks\.3\.mlp\.fc1\.weight leave \d+ elements .* uncovered/.test(p)), damaged.problems.join('\n'));
    assert.equal(damaged.problems.length, 3, damaged.problems.join('\n'));

    await writeFile(manifestPath, '{"format": "gpt-hybrid-checkpoint", "version": 99}');
    await assertRefused(inspectCheckpoint(dir), 'version', /version 99 is not one this gpt-hybrid reads/);
  });
});

test('args - checkpoint convert takes the layout by the config keys train uses; inspect only reads', () => {
  assert.deepEqual(parseCommandLine(['checkpoint', 'convert', 'runs/a', '--out', 'runs/b', '--set', 'parallel.tensor.size=1', '--set', 'parallel.data=2', '--set', 'numChunks=2']), {
    command: 'checkpoint',
    action: 'convert',
    source: 'runs/a',
    out: 'runs/b',
    layout: { tensor: 1, data: 2, numChunks: 2 },
  });
  assert.deepEqual(parseCommandLine(['checkpoint', 'inspect', 'runs/a', '--json']), { command: 'checkpoint', action: 'inspect', source: 'runs/a', json: true });
  const refused: [string[], RegExp][] = [
    [['checkpoint'], /checkpoint needs an action: convert or inspect/],
    [['checkpoint', 'inpsect', 'x'], /unknown checkpoint action "inpsect"; did you mean "inspect"\?/],
    [['checkpoint', 'convert', 'x'], /checkpoint convert needs --out DIR/],
    [['checkpoint', 'convert', '--out', 'y'], /needs a checkpoint folder or a run folder/],
    [['checkpoint', 'convert', 'x', '--out', 'y', '--set', 'model.numLayers=2'], /convert changes only the layout .*; model\.numLayers is set when you resume with train/],
    [['checkpoint', 'convert', 'x', '--out', 'y', '--set', 'parallel.data=auto'], /parallel\.data must be a positive integer, got "auto"/],
    [['checkpoint', 'convert', 'x', '--out', 'y', '--set', 'parallel.pipeline=0'], /parallel\.pipeline must be a positive integer, got 0/],
    [['checkpoint', 'inspect', 'x', '--out', 'y'], /--out and --set belong to checkpoint convert/],
    [['checkpoint', 'inspect', 'x', 'z'], /unexpected argument "z"/],
  ];
  for (const [argv, pattern] of refused) {
    assert.throws(() => parseCommandLine(argv), (error: unknown) => error instanceof UsageError && pattern.test(error.message), argv.join(' '));
  }
});
