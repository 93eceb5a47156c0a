/**
 * Implements: secrets a job keeps in its run folder for `ctl` (its key, its private server's login):
 * files only their owner can read, made so before the secret is written, and refused when others could
 * read them.
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';

export function writeOwnerOnlyFile(path: string, text: string): void {
  // `mode` applies only to a new file: an old one is narrowed first, then written.
  writeFileSync(path, '', { mode: 0o600 });
  chmodSync(path, 0o600);
  writeFileSync(path, text);
}

export function readOwnerOnlyFile(path: string): string {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) throw new Error(`${path} can be read by other users (mode ${mode.toString(8)}): chmod 600 ${path}`);
  return readFileSync(path, 'utf8');
}
