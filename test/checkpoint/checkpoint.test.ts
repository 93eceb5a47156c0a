// Tests: checkpoint directories (src/checkpoint/checkpoint.ts): round trip, atomic commit, prune, resolve, and refusal of damaged ones.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFile, readdir, mkdir, rm, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import {
  beginCheckpoint,
  commitCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  pruneCheckpoints,
  resolveCheckpoint,
  writeRankShard,
} from '../../src/checkpoint/checkpoint.ts';
import { assertRefused, rankParams, syntheticValues, tinyModel, withTempDir, writeSyntheticCheckpoint } from './helpers.ts';

const LAYOUT = { data: 2, pipeline: 2, tensor: 2 };

test('checkpoint - round trip: every rank file holds its shards and moments, the manifest its layout, regions and checksums', async () => {
  await withTempDir(async (root) => {
    const { dir, manifest } = await writeSyntheticCheckpoint(root, 12, LAYOUT, { seed: 5 });
    assert.equal(dir, join(root, 'step-000012'));
    assert.deepEqual((await readdir(root)).sort(), ['latest', 'step-000012']);
    assert.equal(await readFile(join(root, 'latest'), 'utf8'), 'step-000012\n');
    assert.deepEqual((await readdir(dir)).sort(), [
      'manifest.json',
      ...Array.from({ length: 8 }, (_, r) => `rank-0000${r}.safetensors`),
    ]);
    const checkpoint = await loadCheckpoint(await resolveCheckpoint(root), { verify: true, expectLayout: { ...LAYOUT, order: 'tp-dp-pp' } });
    assert.deepEqual(checkpoint.manifest, manifest);
    assert.equal(checkpoint.manifest.step, 12);
    assert.equal(checkpoint.manifest.seed, 5);
    assert.deepEqual(checkpoint.manifest.layout, { data: 2, pipeline: 2, tensor: 2, order: 'tp-dp-pp', world: 8 });
    assert.deepEqual(checkpoint.manifest.dataLoader, { nextStep: 12, epoch: 0, stepInEpoch: 12 });
    assert.deepEqual(checkpoint.manifest.rng, { kind: 'counter', seed: 5 });
    const { params } = rankParams(tinyModel, LAYOUT);
    for (let rank = 0; rank < 8; rank++) {
      const record = checkpoint.record(rank);
      assert.match(record.sha256, /^[0-9a-f]{64}$/);
      assert.equal(record.optimizerStep, 12);
      assert.equal(record.tensors.length, params[rank]!.length * 3);
      const saved = await checkpoint.rankTensors(rank);
      for (const { spec, region } of params[rank]!) {
        const entry = record.tensors.find((t) => t.name === spec.name)!;
        assert.deepEqual(entry, { name: spec.name, dtype: 'F32', fullShape: spec.shape, region });
        assert.deepEqual(saved.get(spec.name), syntheticValues(spec, 'param', 5, region), spec.name);
        assert.deepEqual(saved.get(`m.${spec.name}`), syntheticValues(spec, 'm', 5, region));
        assert.deepEqual(saved.get(`v.${spec.name}`), syntheticValues(spec, 'v', 5, region));
      }
      const file = await checkpoint.openRank(rank);
      assert.equal(file.metadata.get('rank'), String(rank));
      assert.equal(file.metadata.get('optimizerStep'), '12');
    }
  });
});

test('checkpoint - a crash between writing rank files and the rename leaves the previous latest loadable and no half checkpoint visible', async () => {
  await withTempDir(async (root) => {
    await writeSyntheticCheckpoint(root, 10, LAYOUT);
    const crash = new Error('simulated crash before the rename');
    await assert.rejects(writeSyntheticCheckpoint(root, 20, LAYOUT, { commit: { beforeRename: () => Promise.reject(crash) } }), crash);
    // The rank files and even the manifest of step 20 exist, but only under the temporary name.
    const entries = (await readdir(root)).sort();
    assert.deepEqual(entries.filter((e) => !e.startsWith('.')), ['latest', 'step-000010']);
    const leftover = entries.find((e) => e.startsWith('.step-000020.tmp-'));
    assert.ok(leftover !== undefined, `expected a leftover temporary directory in ${entries}`);
    assert.equal(await resolveCheckpoint(root), join(root, 'step-000010'));
    assert.deepEqual((await listCheckpoints(root)).map((c) => c.step), [10]);
    const previous = await loadCheckpoint(await resolveCheckpoint(root));
    assert.equal(previous.manifest.step, 10);
    // A crash before any manifest: a temporary directory of rank files only.
    const orphan = await beginCheckpoint(root, 30, 'other');
    await writeRankShard(orphan, 0, new Map([['w', { values: new Float32Array(2), shape: [2] }]]), { step: 30, optimizerStep: 30 });
    await assertRefused(loadCheckpoint(orphan), 'not-found', /no manifest\.json: not a checkpoint directory, or one whose commit never finished/);
    // The next commit succeeds and cleans up both leftovers.
    await writeSyntheticCheckpoint(root, 20, LAYOUT);
    assert.deepEqual((await readdir(root)).sort(), ['latest', 'step-000010', 'step-000020']);
    assert.equal(await resolveCheckpoint(root), join(root, 'step-000020'));
  });
});

test('checkpoint - re-committing a step replaces it, and prune keeps the newest and never the one latest names', async () => {
  await withTempDir(async (root) => {
    for (const step of [1, 2, 3, 4]) await writeSyntheticCheckpoint(root, step, { data: 1, pipeline: 1, tensor: 1 });
    assert.deepEqual((await listCheckpoints(root)).map((c) => c.step), [1, 2, 3, 4]);
    // A run resumed from step 1 commits step 2 again: latest names what was committed last, even with newer steps present.
    await writeSyntheticCheckpoint(root, 2, { data: 1, pipeline: 1, tensor: 1 }, { seed: 99 });
    assert.equal((await loadCheckpoint(join(root, 'step-000002'))).manifest.seed, 99);
    assert.equal(await resolveCheckpoint(root), join(root, 'step-000002'));
    const removed = await pruneCheckpoints(root, 2);
    assert.deepEqual(removed, [join(root, 'step-000001')]);
    assert.deepEqual((await listCheckpoints(root)).map((c) => c.step), [2, 3, 4]);
    await writeSyntheticCheckpoint(root, 5, { data: 1, pipeline: 1, tensor: 1 }, { commit: { keep: 1 } });
    assert.deepEqual((await readdir(root)).sort(), ['latest', 'step-000005']);
    await assert.rejects(pruneCheckpoints(root, 0), /checkpoint\.keep must be an integer >= 1, got 0/);
    assert.deepEqual(await pruneCheckpoints(root, Infinity), []);
  });
});

test('checkpoint - resolveCheckpoint takes a checkpoint, a run dir, or a run dir with checkpoints/, and names what is wrong otherwise', async () => {
  await withTempDir(async (runDir) => {
    await assertRefused(resolveCheckpoint(runDir), 'not-found', /neither a checkpoint \(no manifest\.json\) nor a run directory with a 'latest' pointer/);
    await assertRefused(resolveCheckpoint(join(runDir, 'absent')), 'not-found', /absent: does not exist/);
    const root = join(runDir, 'checkpoints');
    const { dir } = await writeSyntheticCheckpoint(root, 7, { data: 1, pipeline: 1, tensor: 1 });
    assert.equal(await resolveCheckpoint(dir), dir);
    assert.equal(await resolveCheckpoint(root), dir);
    assert.equal(await resolveCheckpoint(runDir), dir);
    await writeFile(join(root, 'latest'), '../../etc\n');
    await assertRefused(resolveCheckpoint(runDir), 'not-found', /names "\.\.\/\.\.\/etc", not a step-NNNNNN directory/);
    await writeFile(join(root, 'latest'), 'step-000009\n');
    await assertRefused(resolveCheckpoint(runDir), 'not-found', /names step-000009, which has no manifest\.json; pass one of the checkpoints present instead: .*step-000007/);
  });
});

test('checkpoint - damaged checkpoints are refused with the reason', async () => {
  await withTempDir(async (root) => {
    const layout = { data: 1, pipeline: 2, tensor: 2 };
    const { dir } = await writeSyntheticCheckpoint(root, 3, layout);
    const rankFile = join(dir, 'rank-00002.safetensors');
    const manifestPath = join(dir, 'manifest.json');
    const pristineRank = await readFile(rankFile);
    const pristineManifest = await readFile(manifestPath, 'utf8');
    const restore = async (): Promise<void> => {
      await writeFile(rankFile, pristineRank);
      await writeFile(manifestPath, pristineManifest);
    };

    // A flipped byte in the data: same size, different SHA-256.
    const flipped = Buffer.from(pristineRank);
    flipped[flipped.length - 3]! ^= 0x10;
    await writeFile(rankFile, flipped);
    await assertRefused(loadCheckpoint(dir), 'checksum', /rank-00002\.safetensors: SHA-256 [0-9a-f]{64} differs from the manifest's [0-9a-f]{64}: the file is corrupt/);
    // Without up-front verification the damage is still caught when the rank opens its file.
    const lazy = await loadCheckpoint(dir, { verify: false });
    await assertRefused(lazy.openRank(2), 'checksum', /differs from the manifest's/);
    await restore();

    await truncate(rankFile, pristineRank.length - 100);
    await assertRefused(loadCheckpoint(dir), 'truncated', /rank 2's file has \d+ bytes but the manifest says \d+: the file is truncated or damaged/);
    await restore();

    await rm(rankFile);
    await assertRefused(loadCheckpoint(dir), 'missing-rank', /rank-00002\.safetensors: rank 2's file is missing from the checkpoint/);
    await restore();

    // Above 2 GiB (sparse, its size in the manifest): read whole and checked, where fs.readFile threw a
    // RangeError naming no file.
    const big = 2 ** 31 + 4096;
    await truncate(rankFile, big);
    const bigManifest = JSON.parse(pristineManifest) as { ranks: { file: string; bytes: number }[] };
    bigManifest.ranks.find((record) => record.file === 'rank-00002.safetensors')!.bytes = big;
    await writeFile(manifestPath, JSON.stringify(bigManifest));
    await assertRefused(loadCheckpoint(dir), 'checksum', /rank-00002\.safetensors: SHA-256 [0-9a-f]{64} differs from the manifest's/);
    await restore();

    // A bad header length or garbage header, with the manifest's checksum updated to match: the format check catches it.
    const withHeader = async (mutateFile: (bytes: Buffer) => void): Promise<void> => {
      const bytes = Buffer.from(pristineRank);
      mutateFile(bytes);
      await writeFile(rankFile, bytes);
      const { createHash } = await import('node:crypto');
      const manifest = JSON.parse(pristineManifest);
      manifest.ranks[2].sha256 = createHash('sha256').update(bytes).digest('hex');
      await writeFile(manifestPath, JSON.stringify(manifest));
    };
    await withHeader((bytes) => bytes.writeBigUInt64LE(BigInt(bytes.length), 0));
    await assertRefused(loadCheckpoint(dir), 'truncated', /rank-00002\.safetensors: header length \d+ runs past the end of the \d+-byte file/);
    await withHeader((bytes) => bytes.write('{"a": ###', 8, 'latin1'));
    await assertRefused(loadCheckpoint(dir), 'format', /rank-00002\.safetensors: the header is not JSON/);
    await restore();

    const manifest = JSON.parse(pristineManifest);
    await writeFile(manifestPath, JSON.stringify({ ...manifest, version: 2 }));
    await assertRefused(loadCheckpoint(dir), 'version', /checkpoint format version 2 is not one this gpt-hybrid reads \(it reads version 1\)/);
    await writeFile(manifestPath, '{"format": "gpt-hybrid-checkpoint", "vers');
    await assertRefused(loadCheckpoint(dir), 'manifest', /manifest\.json: is not JSON/);
    await writeFile(manifestPath, JSON.stringify({ ...manifest, ranks: manifest.ranks.slice(1) }));
    await assertRefused(loadCheckpoint(dir), 'manifest', /ranks no file for rank 0 of world 4/);
    const escaping = structuredClone(manifest);
    escaping.ranks[0].file = '../../outside.safetensors';
    await writeFile(manifestPath, JSON.stringify(escaping));
    await assertRefused(loadCheckpoint(dir), 'manifest', /ranks\[0\]\.file must look like rank-00000\.safetensors/);
    await restore();

    await assertRefused(
      loadCheckpoint(dir, { expectLayout: { data: 1, pipeline: 1, tensor: 2 } }),
      'layout',
      /the checkpoint's layout differs: pipeline 2 \(expected 1\); load it into this layout by resharding/,
    );
    assert.equal((await loadCheckpoint(dir, { expectLayout: layout })).manifest.step, 3);
  });
});

test('checkpoint - commit refuses a missing or mis-sized rank file, and writers refuse inconsistent tensors', async () => {
  await withTempDir(async (root) => {
    const tmp = await beginCheckpoint(root, 1);
    const record = await writeRankShard(tmp, 0, new Map([['w', { values: Float32Array.from([1, 2]), shape: [2] }]]), { step: 1, optimizerStep: 1 });
    const parts = {
      layout: { data: 1, pipeline: 2, tensor: 1, order: 'tp-dp-pp', world: 2 },
      seed: 1,
      dataLoader: { nextStep: 1, epoch: 0, stepInEpoch: 1 },
      config: null,
    };
    await assertRefused(commitCheckpoint(root, 1, tmp, { ...parts, ranks: [record] }), 'invalid-argument', /cannot commit checkpoint step-000001: no file for rank 1 of world 2/);
    await assertRefused(
      commitCheckpoint(root, 1, tmp, { ...parts, ranks: [record, { ...record, rank: 1, file: 'rank-00001.safetensors' }] }),
      'missing-rank',
      /rank-00001\.safetensors: rank 1's file is missing; cannot commit checkpoint step-000001/,
    );
    const handle = await open(join(tmp, 'rank-00001.safetensors'), 'w');
    await handle.close();
    await assertRefused(
      commitCheckpoint(root, 1, tmp, { ...parts, ranks: [record, { ...record, rank: 1, file: 'rank-00001.safetensors' }] }),
      'truncated',
      /rank 1's file has 0 bytes, its record says \d+/,
    );
    assert.deepEqual(await listCheckpoints(root), []);
    const bad = (tensor: object): Promise<unknown> => writeRankShard(tmp, 0, new Map([['w', tensor as never]]), { step: 1, optimizerStep: 1 });
    await assertRefused(bad({ values: new Float32Array(3), shape: [2] }), 'invalid-argument', /tensor w: 3 values for shape \[2\]/);
    await assertRefused(bad({ values: new Float32Array(2), region: { begin: [0], size: [2] } }), 'invalid-argument', /a region needs the fullShape/);
    await assertRefused(bad({ values: new Float32Array(2), region: { begin: [3], size: [2] }, fullShape: [4] }), 'invalid-argument', /runs outside full shape \[4\]/);
    await assertRefused(bad({ values: [1, 2], shape: [2] }), 'invalid-argument', /values must be a Float32Array or Int32Array/);
    await mkdir(join(root, 'unrelated'));
    assert.deepEqual(await listCheckpoints(root), []);
  });
});
