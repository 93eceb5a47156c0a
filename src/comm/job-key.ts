/**
 * Implements: where a job's key (frame-signing.ts) comes from and where it is kept. Node 0's launcher of
 * a one-node job makes one, unless `--job-key-file FILE` or $GPT_HYBRID_JOB_KEY gives it; a job on
 * several nodes needs the same key on every node from one of those (torchrun's rendezvous settings play
 * the same part: nothing the server's other clients can ask for). Node 0 keeps it in the run folder as
 * `job.key`, readable by its owner only, where `ctl RUN` reads it; workers get it in their environment,
 * never on a command line.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { newJobKey, parseJobKey } from './frame-signing.ts';
import { readOwnerOnlyFile, writeOwnerOnlyFile } from './owner-only-file.ts';

export const JOB_KEY_FILE = 'job.key';
export const JOB_KEY_VARIABLE = 'GPT_HYBRID_JOB_KEY';

/** The key a file or the environment gives; undefined when neither does. */
export function givenJobKey(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Buffer | undefined {
  if (file !== undefined) return readJobKeyFile(file);
  const hex = env[JOB_KEY_VARIABLE];
  return hex === undefined || hex === '' ? undefined : parseJobKey(hex, `$${JOB_KEY_VARIABLE}`);
}

/** A launcher's key: given, else made (one node only: other nodes could not know it). */
export function launcherJobKey(file: string | undefined, nnodes: number): Buffer {
  const given = givenJobKey(file);
  if (given !== undefined) return given;
  if (nnodes > 1) {
    throw new Error(
      `a job on ${nnodes} nodes signs its messages with one key that every node's launcher must have: make one ` +
        `(openssl rand -hex 32 > job.key; chmod 600 job.key), copy it to every node, and pass --job-key-file job.key (or set $${JOB_KEY_VARIABLE}) on each`,
    );
  }
  return newJobKey();
}

export function readJobKeyFile(path: string): Buffer {
  if (!existsSync(path)) throw new Error(`no job key file ${path}`);
  return parseJobKey(readOwnerOnlyFile(path), path);
}

/** `RUN/job.key`, readable by its owner only. */
export function writeJobKeyFile(runFolder: string, key: Buffer): string {
  const path = join(runFolder, JOB_KEY_FILE);
  writeOwnerOnlyFile(path, `${key.toString('hex')}\n`);
  return path;
}
