/**
 * Implements: one member's contribution to the sum of a tied gradient, and the sum. A contribution is
 * the whole gradient, or (a 2-D parameter whose gradient is exactly +0 outside a few rows: the first
 * stage's word embedding) only those rows with their indices. The sum is the direct all-reduce's,
 * bit for bit: the contributions added in group order, acc = x0 then acc[i] = x_k[i] + acc[i] (for
 * two members the ring gives the same bits: one addition commutes), a row contribution standing for
 * its whole tensor with +0 in the other rows, and every member computes the same bits from the same
 * contributions.
 *
 * [Note: x + 0] Where only one member's gradient is non-zero the sum is x + 0: x itself, except that
 * -0 becomes +0. So a whole gradient travels with the list of places where it holds -0 (almost always
 * none; its sender finds them while it waits anyway): a member adding a few rows to it then has the
 * sum everywhere else without a pass over its 12.9M elements, on the step's critical path.
 */
import { combineInto } from '../comm/reduce-ops.ts';

/** Some rows (ascending, distinct) of a [length / cols, cols] parameter, `values` row after row. */
export interface RowsContribution {
  kind: 'rows';
  rows: Int32Array;
  values: Float32Array;
  cols: number;
}

/** A whole gradient: its values in pieces at consecutive offsets, and where it holds -0 (see the note). */
export interface WholeContribution {
  kind: 'whole';
  pieces: Float32Array[];
  negativeZeros: number[];
}

export type Contribution = RowsContribution | WholeContribution;

/** Indices travel as float32 values: exact below 2^24. */
const MAX_EXACT_INDEX = 2 ** 24;
const NEGATIVE_ZERO_BITS = 0x8000_0000;

/** Whether sending `rowCount` rows (with their indices) of a [length / cols, cols] parameter moves fewer values than all of it. */
export function rowsAreSmaller(rowCount: number, cols: number, length: number): boolean {
  return rowCount * (cols + 1) < length && length / cols <= MAX_EXACT_INDEX;
}

/** Where `values` holds -0, ascending (an integer compare per element: no float arithmetic, NaN included). */
export function negativeZerosOf(values: Float32Array): number[] {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const found: number[] = [];
  for (let i = 0; i < bits.length; i++) if (bits[i] === NEGATIVE_ZERO_BITS) found.push(i);
  return found;
}

/** The rows' wire form, [rows, 1 + cols]: each row's index, then its values. */
export function packRows(rows: Int32Array, values: Float32Array, cols: number): { values: Float32Array; shape: number[] } {
  const packed = new Float32Array(rows.length * (cols + 1));
  for (let k = 0; k < rows.length; k++) {
    packed[k * (cols + 1)] = rows[k];
    packed.set(values.subarray(k * cols, (k + 1) * cols), k * (cols + 1) + 1);
  }
  return { values: packed, shape: [rows.length, cols + 1] };
}

/** Reads `packRows`' form back, checking it against the parameter this member holds ([length / cols, cols]). */
export function unpackRows(packed: Float32Array, shape: number[], length: number, cols: number, from: string): RowsContribution {
  if (shape.length !== 2 || shape[1] !== cols + 1 || packed.length !== shape[0] * (cols + 1)) {
    throw new Error(`tied gradient rows from ${from} have shape [${shape}]; expected [rows, ${cols + 1}] for a parameter of ${cols} columns`);
  }
  const count = shape[0];
  const rows = new Int32Array(count);
  const values = new Float32Array(count * cols);
  const rowCount = length / cols;
  for (let k = 0; k < count; k++) {
    const row = packed[k * (cols + 1)];
    if (!Number.isInteger(row) || row < 0 || row >= rowCount || (k > 0 && row <= rows[k - 1])) {
      throw new Error(`tied gradient rows from ${from}: row index ${row} at position ${k} is not an ascending row of 0..${rowCount - 1}`);
    }
    rows[k] = row;
    values.set(packed.subarray(k * (cols + 1) + 1, (k + 1) * (cols + 1)), k * cols);
  }
  return { kind: 'rows', rows, values, cols };
}

/** Ascending flat indices as float32 pairs (index / 2^24, index % 2^24), both exact, shape [count, 2]. */
export function packIndices(indices: readonly number[]): { values: Float32Array; shape: number[] } {
  const packed = new Float32Array(indices.length * 2);
  indices.forEach((index, k) => {
    packed[2 * k] = Math.floor(index / MAX_EXACT_INDEX);
    packed[2 * k + 1] = index % MAX_EXACT_INDEX;
  });
  return { values: packed, shape: [indices.length, 2] };
}

export function unpackIndices(packed: Float32Array, shape: number[], length: number, from: string): number[] {
  if (shape.length !== 2 || shape[1] !== 2 || packed.length !== shape[0] * 2) throw new Error(`tied gradient -0 places from ${from} have shape [${shape}]; expected [count, 2]`);
  const indices: number[] = [];
  for (let k = 0; k < shape[0]; k++) {
    const index = packed[2 * k] * MAX_EXACT_INDEX + packed[2 * k + 1];
    if (!Number.isInteger(index) || index < 0 || index >= length || (k > 0 && index <= indices[k - 1])) {
      throw new Error(`tied gradient -0 places from ${from}: ${index} at position ${k} is not an ascending index of 0..${length - 1}`);
    }
    indices.push(index);
  }
  return indices;
}

/**
 * The sum of one member's rows and another's whole gradient (in either order: one addition commutes),
 * written over the whole contribution's pieces, which the caller gives up, and returned as those
 * pieces: a row element is the two values added, any other element x + 0, which only changes -0.
 */
export function sumRowsAndWhole(rows: RowsContribution, whole: WholeContribution, length: number): Float32Array[] {
  const total = whole.pieces.reduce((n, piece) => n + piece.length, 0);
  if (total !== length) throw new Error(`a tied gradient of ${total} values was added to one of ${length}`);
  const { cols, values } = rows;
  const at = pieceCursor(whole.pieces);
  for (const i of whole.negativeZeros) {
    const { piece, offset } = at(i);
    piece[offset] = 0;
  }
  // The -0 places just became +0; in the rows the sum needs the value itself.
  const negativeZeros = new Set(whole.negativeZeros);
  const inRows = pieceCursor(whole.pieces);
  for (let k = 0; k < rows.rows.length; k++) {
    const start = rows.rows[k] * cols;
    if (start + cols > length) throw new Error(`tied gradient row ${rows.rows[k]} is outside a gradient of ${length / cols} rows`);
    for (let j = 0; j < cols; j++) {
      const i = start + j;
      const { piece, offset } = inRows(i);
      piece[offset] = values[k * cols + j] + (negativeZeros.size > 0 && negativeZeros.has(i) ? -0 : piece[offset]);
    }
  }
  return whole.pieces;
}

/** Finds flat index i among consecutive pieces; the indices asked must not decrease. */
function pieceCursor(pieces: readonly Float32Array[]): (i: number) => { piece: Float32Array; offset: number } {
  let index = 0;
  let start = 0;
  return (i) => {
    while (i >= start + pieces[index].length) start += pieces[index++].length;
    return { piece: pieces[index], offset: i - start };
  };
}

/** The sum in group order of any contributions (see the file's note), as a new flat array of `length`. */
export function sumInGroupOrder(contributions: readonly Contribution[], length: number): Float32Array {
  const acc = new Float32Array(length);
  contributions.forEach((contribution, index) => {
    // A row contribution's other rows are exactly +0, as its member's gradient holds them.
    const values = contribution.kind === 'rows' ? scatterRows(new Float32Array(length), contribution) : concat(contribution.pieces, length);
    if (index === 0) acc.set(values);
    else combineInto(acc, 0, values, 'sum');
  });
  return acc;
}

function scatterRows(target: Float32Array, contribution: RowsContribution): Float32Array {
  const { rows, values, cols } = contribution;
  for (let k = 0; k < rows.length; k++) target.set(values.subarray(k * cols, (k + 1) * cols), rows[k] * cols);
  return target;
}

function concat(pieces: readonly Float32Array[], length: number): Float32Array {
  const flat = new Float32Array(length);
  let offset = 0;
  for (const piece of pieces) {
    if (offset + piece.length > length) throw new Error(`a tied gradient of more than ${length} values`);
    flat.set(piece, offset);
    offset += piece.length;
  }
  if (offset !== length) throw new Error(`a tied gradient of ${offset} values was added to one of ${length}`);
  return flat;
}
