import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GridError, ParallelGrid, type Axis, type GridCoordinates, type GroupAxes } from '../../src/parallel/grid.ts';

const AXES: readonly Axis[] = ['tp', 'dp', 'pp'];
const ORDERS = ['tp-dp-pp', 'tp-pp-dp', 'dp-tp-pp', 'dp-pp-tp', 'pp-tp-dp', 'pp-dp-tp'];
const SIZES = [1, 2, 3, 4];

interface Case {
  grid: ParallelGrid;
  /** Coordinates of each rank, from nested loops in the written order (outermost loop = slowest axis). */
  reference: GridCoordinates[];
}

function bruteForce(sizes: Record<Axis, number>, order: string): GridCoordinates[] {
  const [fast, middle, slow] = order.split('-') as Axis[];
  const ranks: GridCoordinates[] = [];
  for (let s = 0; s < sizes[slow!]; s++)
    for (let m = 0; m < sizes[middle!]; m++)
      for (let f = 0; f < sizes[fast!]; f++) {
        const c = { dp: 0, pp: 0, tp: 0 };
        c[slow!] = s;
        c[middle!] = m;
        c[fast!] = f;
        ranks.push(c);
      }
  return ranks;
}

function* allCases(): Generator<Case> {
  for (const order of ORDERS)
    for (const data of SIZES)
      for (const pipeline of SIZES)
        for (const tensor of SIZES) {
          const grid = new ParallelGrid({ data, pipeline, tensor, order });
          yield { grid, reference: bruteForce({ dp: data, pp: pipeline, tp: tensor }, order) };
        }
}

/** Reference group of `rank` along `axes`: ranks equal on every other axis, ordered by rank. */
function referenceGroup(reference: GridCoordinates[], axes: readonly Axis[], rank: number): number[] {
  const fixed = AXES.filter((a) => !axes.includes(a));
  const me = reference[rank]!;
  return reference.flatMap((c, r) => (fixed.every((a) => c[a] === me[a]) ? [r] : []));
}

const sizeOf = (grid: ParallelGrid, axis: Axis) => ({ tp: grid.tensor, dp: grid.data, pp: grid.pipeline })[axis];

test('grid - rank <-> coordinates round trip against the brute-force enumeration, all sizes 1..4 and all 6 orders', () => {
  let grids = 0;
  for (const { grid, reference } of allCases()) {
    grids++;
    assert.equal(grid.world, reference.length, grid.describe());
    for (let rank = 0; rank < grid.world; rank++) {
      assert.deepEqual(grid.coordinates(rank), reference[rank], `${grid.describe()} rank ${rank}`);
      assert.equal(grid.rankOf(reference[rank]!), rank, `${grid.describe()} rank ${rank}`);
      for (const axis of AXES) assert.equal(grid.coordinate(axis, rank), reference[rank]![axis]);
    }
  }
  assert.equal(grids, 6 * 64);
});

test('grid - every group kind partitions the world into groups of the right size, equal to the reference', () => {
  const kinds: GroupAxes[] = ['tp', 'dp', 'pp', 'tp-pp', 'tp-dp', 'dp-pp', 'tp-dp-pp'];
  for (const { grid, reference } of allCases()) {
    for (const kind of kinds) {
      const axes = kind.split('-') as Axis[];
      const expectedSize = axes.reduce((n, a) => n * sizeOf(grid, a), 1);
      const groups = grid.allGroups(kind);
      assert.equal(groups.length, grid.world / expectedSize, `${grid.describe()} ${kind}`);
      const seen = new Set<number>();
      const names = new Set<string>();
      groups.forEach((group, index) => {
        assert.equal(group.length, expectedSize, `${grid.describe()} ${kind} group ${index}`);
        for (const rank of group) {
          assert.ok(!seen.has(rank), `${grid.describe()} ${kind}: rank ${rank} in two groups`);
          seen.add(rank);
          assert.deepEqual(grid.group(kind, rank), group);
          assert.deepEqual(group, referenceGroup(reference, axes, rank), `${grid.describe()} ${kind} rank ${rank}`);
          assert.equal(grid.groupIndex(kind, rank), index);
          assert.equal(grid.groupName(kind, rank), grid.groupName(kind, group[0]!));
        }
        const name = grid.groupName(kind, group[0]!);
        assert.match(name, /^[a-z0-9.-]+$/);
        names.add(name);
      });
      assert.equal(seen.size, grid.world, `${grid.describe()} ${kind}: groups miss ranks`);
      assert.equal(names.size, groups.length, `${grid.describe()} ${kind}: group names collide`);
      // Numbered by lowest rank, so the numbering is the same whichever rank asks.
      const firsts = groups.map((g) => g[0]!);
      assert.deepEqual(firsts, [...firsts].sort((a, b) => a - b));
    }
  }
});

test('grid - single-axis groups run in the order of that axis coordinate; named helpers agree', () => {
  for (const { grid } of allCases()) {
    for (let rank = 0; rank < grid.world; rank++) {
      assert.deepEqual(grid.tensorGroup(rank), grid.group('tp', rank));
      assert.deepEqual(grid.dataGroup(rank), grid.group('dp', rank));
      assert.deepEqual(grid.pipelineGroup(rank), grid.group('pp', rank));
      for (const axis of AXES) {
        grid.group(axis, rank).forEach((member, i) => assert.equal(grid.coordinate(axis, member), i));
      }
    }
  }
});

test('grid - tensor-parallel ranks are adjacent whenever tp varies fastest (the default order)', () => {
  for (const { grid } of allCases()) {
    if (grid.axes[0] !== 'tp') continue;
    for (let rank = 0; rank < grid.world; rank++) {
      const start = rank - (rank % grid.tensor);
      assert.deepEqual(grid.tensorGroup(rank), Array.from({ length: grid.tensor }, (_, i) => start + i));
    }
  }
  assert.equal(new ParallelGrid({ data: 2, pipeline: 2, tensor: 2 }).order, 'tp-dp-pp');
});

test('grid - Megatron layout for tp 2, pp 4, dp 2 in the default order', () => {
  const grid = new ParallelGrid({ data: 2, pipeline: 4, tensor: 2 });
  assert.deepEqual(grid.allGroups('tp'), [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]);
  assert.deepEqual(grid.allGroups('dp'), [[0, 2], [1, 3], [4, 6], [5, 7], [8, 10], [9, 11], [12, 14], [13, 15]]);
  assert.deepEqual(grid.allGroups('pp'), [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]);
  assert.deepEqual(grid.allGroups('tp-pp'), [[0, 1, 4, 5, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15]]);
  assert.deepEqual(grid.allEmbeddingGroups(), [[0, 12], [1, 13], [2, 14], [3, 15]]);
  assert.deepEqual(grid.coordinates(13), { dp: 0, pp: 3, tp: 1 });
  assert.equal(grid.groupName('dp', 5), 'dp.3');
  assert.equal(grid.groupName('pp-tp', 6), 'tp-pp.1');
  assert.equal(grid.embeddingGroupName(14), 'embedding.2');
});

test('grid - pipeline neighbours and first/last stage follow the pp coordinate', () => {
  for (const { grid, reference } of allCases()) {
    for (let rank = 0; rank < grid.world; rank++) {
      const c = reference[rank]!;
      const previous = c.pp === 0 ? undefined : reference.findIndex((o) => o.dp === c.dp && o.tp === c.tp && o.pp === c.pp - 1);
      const next = c.pp === grid.pipeline - 1 ? undefined : reference.findIndex((o) => o.dp === c.dp && o.tp === c.tp && o.pp === c.pp + 1);
      assert.equal(grid.previousStage(rank), previous, `${grid.describe()} rank ${rank}`);
      assert.equal(grid.nextStage(rank), next, `${grid.describe()} rank ${rank}`);
      assert.equal(grid.isFirstStage(rank), c.pp === 0);
      assert.equal(grid.isLastStage(rank), c.pp === grid.pipeline - 1);
    }
  }
});

test('grid - embedding group is the first and last stage of the same (dp, tp), one rank when pipeline = 1', () => {
  for (const { grid, reference } of allCases()) {
    const covered = new Set<number>();
    for (let rank = 0; rank < grid.world; rank++) {
      const c = reference[rank]!;
      const first = reference.findIndex((o) => o.dp === c.dp && o.tp === c.tp && o.pp === 0);
      const last = reference.findIndex((o) => o.dp === c.dp && o.tp === c.tp && o.pp === grid.pipeline - 1);
      const expected = grid.pipeline === 1 ? [first] : [first, last];
      const group = grid.embeddingGroup(rank);
      assert.deepEqual(group, expected, `${grid.describe()} rank ${rank}`);
      assert.equal(grid.inEmbeddingGroup(rank), group.includes(rank));
      assert.match(grid.embeddingGroupName(rank), /^embedding\.[0-9]+$/);
      assert.equal(grid.embeddingGroupName(rank), grid.embeddingGroupName(first));
      for (const r of group) covered.add(r);
    }
    const all = grid.allEmbeddingGroups();
    assert.equal(all.length, grid.data * grid.tensor);
    assert.deepEqual(new Set(all.flat()), covered);
    assert.equal(all.flat().length, covered.size, `${grid.describe()}: embedding groups overlap`);
  }
});

test('grid - describe, toJSON and node helpers', () => {
  const grid = new ParallelGrid({ data: 2, pipeline: 2, tensor: 2 });
  assert.equal(grid.describe(), 'world 8 = data 2 x pipeline 2 x tensor 2 (order tp-dp-pp)');
  const other = new ParallelGrid({ data: 3, pipeline: 1, tensor: 4, order: 'pp-dp-tp' });
  assert.deepEqual(other.toJSON(), { data: 3, pipeline: 1, tensor: 4, order: 'pp-dp-tp' });
  assert.deepEqual(new ParallelGrid(JSON.parse(JSON.stringify(other))).toJSON(), other.toJSON());
  assert.deepEqual(
    Array.from({ length: 8 }, (_, r) => [grid.nodeOf(r, 4), grid.localRank(r, 4)]),
    [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3]],
  );
  assert.equal(grid.nodeOf(7, 8), 0);
  assert.equal(grid.nodeOf(7, 1), 7);
});

test('grid - invalid sizes, orders, ranks, coordinates and group kinds are errors naming the value', () => {
  const bad = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof GridError && pattern.test(e.message));
  const make = (spec: object) => () => new ParallelGrid(spec as never);
  bad(make({ data: 0, pipeline: 1, tensor: 1 }), /data size must be a positive integer, got 0/);
  bad(make({ data: 1, pipeline: -2, tensor: 1 }), /pipeline size .* got -2/);
  bad(make({ data: 1, pipeline: 1, tensor: 1.5 }), /tensor size .* got 1\.5/);
  bad(make({ data: Number.NaN, pipeline: 1, tensor: 1 }), /data size .* got NaN/);
  bad(make({ data: '2', pipeline: 1, tensor: 1 }), /data size .* got '2'/);
  bad(make({ pipeline: 1, tensor: 1 }), /data size .* got undefined/);
  bad(make({ data: 1, pipeline: 1, tensor: 1, order: 'tp-tp-pp' }), /order 'tp-tp-pp' must name tp, dp and pp once each/);
  bad(make({ data: 1, pipeline: 1, tensor: 1, order: 'tp-dp' }), /order 'tp-dp'/);
  bad(make({ data: 1, pipeline: 1, tensor: 1, order: 'tp-dp-pp-cp' }), /order 'tp-dp-pp-cp'/);
  bad(make({ data: 1, pipeline: 1, tensor: 1, order: 'TP-DP-PP' }), /order 'TP-DP-PP'/);
  bad(make({ data: 1, pipeline: 1, tensor: 1, order: 3 }), /order 3/);

  const grid = new ParallelGrid({ data: 2, pipeline: 3, tensor: 2 });
  for (const rank of [-1, 12, 1.5, Number.NaN]) {
    bad(() => grid.coordinates(rank), new RegExp(`rank ${String(rank).replace('.', '\\.')} is outside the grid \\(valid: 0\\.\\.11\\)`));
    bad(() => grid.tensorGroup(rank), /is outside the grid/);
    bad(() => grid.nextStage(rank), /is outside the grid/);
    bad(() => grid.embeddingGroup(rank), /is outside the grid/);
    bad(() => grid.nodeOf(rank, 2), /is outside the grid/);
  }
  bad(() => grid.rankOf({ dp: 0, pp: 3, tp: 0 }), /pp coordinate 3 is outside pipeline size 3 \(valid: 0\.\.2\)/);
  bad(() => grid.rankOf({ dp: -1, pp: 0, tp: 0 }), /dp coordinate -1 is outside data size 2/);
  bad(() => grid.rankOf({ dp: 0, pp: 0, tp: 0.5 }), /tp coordinate 0\.5 is outside tensor size 2/);
  bad(() => grid.rankOf({ dp: 0, pp: 0 } as GridCoordinates), /tp coordinate undefined/);
  bad(() => grid.group('cp' as GroupAxes, 0), /group kind 'cp'/);
  bad(() => grid.allGroups('tp-tp' as GroupAxes), /group kind 'tp-tp'/);
  bad(() => grid.groupName('' as GroupAxes, 0), /group kind ''/);
  bad(() => grid.size('ep' as Axis), /unknown grid axis 'ep'/);
  bad(() => grid.nodeOf(0, 5), /nprocPerNode 5 must be a positive integer dividing world 12/);
  bad(() => grid.localRank(0, 0), /nprocPerNode 0/);
});
