/**
 * Implements: CheckpointError, the one error a bad, missing or mismatched checkpoint produces. It names the
 * file and the problem, carries a machine-readable `problem` kind (so a caller can tell a checksum failure
 * from a layout mismatch without matching on text), and says what to do next.
 */

export type CheckpointProblem =
  /** The safetensors header or layout is malformed (length, JSON, offsets, dtype, shape). */
  | 'format'
  /** A file is shorter or longer than the manifest or its own header says. */
  | 'truncated'
  /** A rank file's SHA-256 differs from the manifest's. */
  | 'checksum'
  /** A rank file named by the manifest does not exist. */
  | 'missing-rank'
  /** A rank file is larger than one buffer of this Node holds. */
  | 'too-large'
  /** manifest.json is missing, not JSON, or lacks a field. */
  | 'manifest'
  /** The manifest's format version is not one this code reads. */
  | 'version'
  /** The checkpoint's layout or model differs from what the caller expects. */
  | 'layout'
  /** No checkpoint where one was asked for (empty run dir, dangling `latest`). */
  | 'not-found'
  /** A caller passed inconsistent tensors or records to a writer. */
  | 'invalid-argument';

export class CheckpointError extends Error {
  override name = 'CheckpointError';

  constructor(
    readonly problem: CheckpointProblem,
    /** The file or directory the problem is in. */
    readonly file: string,
    detail: string,
    options: { cause?: unknown } = {},
  ) {
    super(`${file}: ${detail}`, options.cause === undefined ? undefined : { cause: options.cause });
  }
}
