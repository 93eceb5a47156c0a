/**
 * Implements: the one rule of every command that writes a new folder from a checkpoint (convert,
 * export, import): the folder is new or empty, so nothing already saved is overwritten.
 */
import { readdir, stat } from 'node:fs/promises';
import { CheckpointError } from './errors.ts';

/** Throws naming the problem unless `out` is absent or an empty folder; returns whether it existed. */
export async function refuseNonEmptyFolder(out: string, command: string): Promise<boolean> {
  let entries: string[];
  try {
    if (!(await stat(out)).isDirectory()) throw new CheckpointError('invalid-argument', out, `exists and is not a folder; ${command} writes a new folder: choose another --out`);
    entries = await readdir(out);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  if (entries.length > 0) {
    throw new CheckpointError('invalid-argument', out, `exists and is not empty (${entries.slice(0, 3).join(', ')}${entries.length > 3 ? ', ...' : ''}); ${command} never overwrites: choose a new --out folder`);
  }
  return true;
}
