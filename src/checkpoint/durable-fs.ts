/**
 * Implements: the durable file operations a crash-safe checkpoint is built from. A rename is atomic, but
 * only durable once the directory holding it is fsynced; file contents are durable only once the file is
 * fsynced. So: write + fsync every file, fsync its directory, rename, fsync the parent.
 */
import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** What was written: enough to check the file later. */
export interface WrittenFile {
  bytes: number;
  /** Lowercase hex SHA-256 of the whole file. */
  sha256: string;
}

/** Writes the chunks in order to a new file (replacing any), fsyncs it, and returns its size and SHA-256. */
export async function writeFileDurably(path: string, chunks: readonly Uint8Array[]): Promise<WrittenFile> {
  const hash = createHash('sha256');
  let bytes = 0;
  const handle = await open(path, 'w');
  try {
    for (const chunk of chunks) {
      // The kernel may accept fewer bytes than asked; loop until the chunk is all written.
      let written = 0;
      while (written < chunk.byteLength) {
        const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
        written += bytesWritten;
      }
      hash.update(chunk);
      bytes += chunk.byteLength;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** fsync a directory, making the renames and creations inside it durable. */
export async function syncDirectory(path: string): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch (error) {
    // Some platforms (Windows) cannot open or fsync a directory; the rename is still atomic there.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF') throw error;
  } finally {
    await handle?.close();
  }
}

/** Replaces `path` with `contents` atomically: readers see the old or the new file, never a partial one. */
export async function replaceFileAtomically(path: string, contents: string, token: string): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.tmp-${token}`);
  try {
    await writeFileDurably(temporary, [new TextEncoder().encode(contents)]);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

/** A hash update takes at most 2 GiB - 1 bytes ("data is too long"): larger files go in pieces. */
const HASH_CHUNK_BYTES = 1 << 30;

export function sha256Hex(bytes: Uint8Array): string {
  const hash = createHash('sha256');
  for (let offset = 0; offset < bytes.byteLength; offset += HASH_CHUNK_BYTES) hash.update(bytes.subarray(offset, offset + HASH_CHUNK_BYTES));
  return hash.digest('hex');
}
